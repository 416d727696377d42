"""A run's figures, from its directory alone (``figures/``):

* ``grid_<mask>.png``: rows = images; columns = original, masked input, each method.
* ``bars_psnr_ssim.png``: PSNR and SSIM per method and mask with 95% intervals.
* ``landmarks_<mask>.png`` (the thesis's Fig. 5): each method's completed face with three sets of
  dlib points: the reference (the damaged input's, what Ld compares with), the result's, and
  the original's.
* ``trajectory_<mask>.png`` (the thesis's Fig. 3): the completion of a few images at chosen
  iterations of the latent search, decoded from the recorded trajectory by the workers
  (``trajectories/<uid>.npz``, see :func:`trajectory_snapshots`).
* ``sweep_<name>.png`` when the run swept a parameter: PSNR, NME and the feature-scale error
  against the swept value, per method and mask.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

SNAPSHOT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)  # of the iterations; 0 = the random start
POINT_STYLES = (  # (name, colour, marker): drawn in this order
    ("original", "#2ca02c", "+"),
    ("reference (damaged input)", "#1f77b4", "x"),
    ("result", "#d62728", "."),
)


# -- trajectories (computed on the workers) -----------------------------------------------------
def snapshot_steps(iters: int, fractions: Sequence[float] = SNAPSHOT_FRACTIONS) -> list[int]:
    """Iterations to draw: ``round(f * iters)`` for each fraction, unique and sorted.

    Example:
        >>> snapshot_steps(100)
        [0, 10, 25, 50, 100]
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must be in [0, 1], got {list(fractions)}")
    return sorted({int(round(f * iters)) for f in fractions})


def trajectory_snapshots(G, trajectory, z_final, images, holes, steps: Sequence[int]) -> np.ndarray:
    """The completion at chosen iterations of the candidate the search finally chose.

    Args:
        G: the search's generator (its device is used).
        trajectory: ``(iters + 1, B*K, z_dim)`` latents per step (``record_trajectory=True``).
        z_final: ``(B, z_dim)`` the chosen latents (``InpaintResult.z``); the chosen candidate of
            each image is the one whose last trajectory row equals it.
        images: ``(B, 3, H, W)`` in [-1, 1]; holes: ``(B, 1, H, W)``, 1 = missing.
        steps: iterations to decode (0 = the random start).

    Returns:
        uint8 ``(S, B, H, W, 3)``: known pixels of the input, hole of ``G(z_step)``.
    """
    import torch

    from facefill_core.inpaint import composite
    from facefill_core.landmarks import to_uint8_nhwc

    t, bk, zd = trajectory.shape
    b = images.shape[0]
    if bk % b or z_final.shape != (b, zd):
        raise ValueError(f"trajectory {tuple(trajectory.shape)} does not match z_final {tuple(z_final.shape)}")
    if any(s < 0 or s >= t for s in steps):
        raise ValueError(f"steps must be in [0, {t - 1}], got {list(steps)}")
    k = bk // b
    last = trajectory[-1].reshape(b, k, zd)
    chosen = (last - z_final[:, None].to(last.dtype)).abs().sum(-1).argmin(1)
    rows = torch.arange(b) * k + chosen
    dev = next(G.parameters()).device
    out = []
    with torch.no_grad():
        for s in steps:
            g = G(trajectory[s, rows].to(dev)).cpu().to(images.dtype)
            out.append(to_uint8_nhwc(composite(images.cpu(), g, holes.cpu())))
    return np.stack(out)


# -- helpers ---------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _manifest(run_dir: str) -> dict:
    p = os.path.join(run_dir, "manifest.json")
    return json.load(open(p)) if os.path.exists(p) else {}


def _box(manifest: dict) -> Optional[tuple]:
    box = manifest.get("data", {}).get("box") or manifest.get("config", {}).get("box")
    return tuple(box) if box else None


def load_originals(run_dir: str, n: int) -> Optional[np.ndarray]:
    """The run's first ``n`` test images, uint8 ``(n, H, W, 3)``; None without a manifest."""
    man = _manifest(run_dir)
    if not man:
        return None
    from facefill_core.data import FaceDataset

    cfg = man["config"]
    box = tuple(cfg["box"]) if cfg.get("box") else None
    images, _ = FaceDataset(cfg["data"], box=box).load_uint8("test", min(n, cfg["n_images"]))
    return images


def load_holes(run_dir: str, mask: str, n: int, shape: tuple) -> np.ndarray:
    p = os.path.join(run_dir, "masks", f"{mask}.npy")
    return np.load(p)[:n].astype(bool) if os.path.exists(p) else np.zeros((n,) + shape, bool)


def method_outputs(run_dir: str, label: str, mask: str, n: int, like: np.ndarray) -> np.ndarray:
    """Outputs of images ``0..n-1`` for one method label and mask (zeros where missing)."""
    out = np.zeros_like(like[:n])
    d = os.path.join(run_dir, "outputs")
    for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if not fn.endswith(".npy") or fn.startswith("."):
            continue
        parts = fn[: -len(".npy")].rsplit("__", 2)
        if len(parts) != 3 or parts[0] != label or parts[1] != mask:
            continue
        a, b = (int(v) for v in parts[2].split("-"))
        if a >= n:
            continue
        arr = np.load(os.path.join(d, fn))
        out[a : min(b, n)] = arr[: min(b, n) - a]
    return out


def _image_axes(plt, rows: int, cols: int, title: str, scale: float = 1.1):
    """A grid of image axes with the title in its own band above the column labels."""
    fig, axes = plt.subplots(rows, cols, figsize=(scale * cols, scale * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8, y=0.995)
    return fig, axes


def _finish(plt, fig, path: str, rows: int, cols: int, scale: float = 1.1, dpi: int = 110) -> None:
    top = 1.0 - 0.25 / (scale * rows + 0.4)  # the title's own band, above the column labels
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, top))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# -- figures ---------------------------------------------------------------------------------
def grid_figure(run_dir: str, labels: Sequence[str], mask: str, originals: np.ndarray) -> str:
    """``grid_<mask>.png``: original, masked input and each method per image."""
    plt = _plt()
    n = len(originals)
    holes = load_holes(run_dir, mask, n, originals.shape[1:3])
    cols = [("original", originals), ("masked", np.where(holes[..., None], 255, originals).astype(np.uint8))]
    cols += [(m, method_outputs(run_dir, m, mask, n, originals)) for m in labels]
    fig, axes = _image_axes(plt, n, len(cols), f"mask: {mask}")
    for c, (name, imgs) in enumerate(cols):
        for r in range(n):
            axes[r, c].imshow(imgs[r], interpolation="nearest")
        axes[0, c].set_title(name, fontsize=6)
    path = os.path.join(run_dir, "figures", f"grid_{mask}.png")
    _finish(plt, fig, path, n, len(cols))
    return path


def bars_figure(run_dir: str, labels: Sequence[str], masks: Sequence[str], stats: dict) -> str:
    """``bars_psnr_ssim.png``: mean and 95% interval per method and mask."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    width = 0.8 / max(1, len(labels))
    for ax, metric in zip(axes, ("psnr", "ssim")):
        for j, m in enumerate(labels):
            vals = [stats[(m, k)][metric][0] if (m, k) in stats else np.nan for k in masks]
            errs = [stats[(m, k)][metric][1] if (m, k) in stats else np.nan for k in masks]
            errs = [0 if not np.isfinite(e) else e for e in errs]
            ax.bar(np.arange(len(masks)) + j * width, vals, width, yerr=errs, label=m, capsize=1.5)
        ax.set_xticks(np.arange(len(masks)) + width * (len(labels) - 1) / 2)
        ax.set_xticklabels(masks)
        ax.set_title(metric.upper())
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = os.path.join(run_dir, "figures", "bars_psnr_ssim.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def landmark_points(images: np.ndarray, holes: np.ndarray, outputs: dict, box, predictor=None) -> dict:
    """dlib's unrounded points for the overlay: ``original``, ``reference`` (the damaged input,
    hole set to mid grey as the search sees it) and one entry per method output.

    Args:
        images: uint8 ``(N, H, W, 3)``; holes: bool ``(N, H, W)``; outputs: label -> uint8 like
            ``images``.

    Returns:
        name -> ``float32 (N, 68, 2)``.
    """
    from facefill_core.landmarks import LandmarkPredictor

    p = predictor or LandmarkPredictor(num_threads=1)
    damaged = np.where(holes[..., None], 128, images).astype(np.uint8)
    pts = {
        "original": p.predict(images, box=box, rounded=False),
        "reference": p.predict(damaged, box=box, rounded=False),
    }
    for label, out in outputs.items():
        pts[label] = p.predict(np.ascontiguousarray(out), box=box, rounded=False)
    return pts


def landmark_figure(run_dir: str, labels: Sequence[str], mask: str, originals: np.ndarray, box, rows: int = 4) -> str:
    """``landmarks_<mask>.png``: each method's result with the reference, result and original
    points (the first column: the damaged input with the reference and original points)."""
    plt = _plt()
    n = min(rows, len(originals))
    images = originals[:n]
    holes = load_holes(run_dir, mask, n, images.shape[1:3])
    outs = {m: method_outputs(run_dir, m, mask, n, images) for m in labels}
    pts = landmark_points(images, holes, outs, box)
    damaged = np.where(holes[..., None], 128, images).astype(np.uint8)
    cols = [("damaged input", damaged, None)] + [(m, outs[m], m) for m in labels]
    fig, axes = _image_axes(plt, n, len(cols), f"mask: {mask}   + original   x reference   . result", scale=2.0)
    for c, (name, imgs, key) in enumerate(cols):
        for r in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[r], interpolation="nearest")
            sets = [("original", pts["original"][r]), ("reference (damaged input)", pts["reference"][r])]
            if key is not None:
                sets.append(("result", pts[key][r]))
            for sname, xy in sets:
                colour, marker = next((c_, m_) for s_, c_, m_ in POINT_STYLES if s_ == sname)
                ax.scatter(xy[:, 0], xy[:, 1], s=9, c=colour, marker=marker, linewidths=0.7)
            ax.set_xlim(-0.5, imgs.shape[2] - 0.5)
            ax.set_ylim(imgs.shape[1] - 0.5, -0.5)
        axes[0, c].set_title(name, fontsize=6)
    path = os.path.join(run_dir, "figures", f"landmarks_{mask}.png")
    _finish(plt, fig, path, n, len(cols), scale=2.0, dpi=120)
    return path


def save_trajectory(run_dir: str, uid: str, snapshots: dict) -> None:
    """Write a unit's snapshots (``steps``, uint8 ``images (S, B, H, W, 3)``, ``image_index``)
    atomically to ``trajectories/<uid>.npz``."""
    d = os.path.join(run_dir, "trajectories")
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{uid}.npz.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, steps=snapshots["steps"], images=snapshots["images"], image_index=snapshots["image_index"])
    os.replace(tmp, os.path.join(d, f"{uid}.npz"))


def load_trajectories(run_dir: str, mask: str) -> dict:
    """label -> (steps, uint8 (S, B, H, W, 3), image indices) of the recorded snapshots."""
    d = os.path.join(run_dir, "trajectories")
    out = {}
    for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if not fn.endswith(".npz") or fn.startswith("."):
            continue
        parts = fn[: -len(".npz")].rsplit("__", 2)
        if len(parts) == 3 and parts[1] == mask and parts[0] not in out:
            with np.load(os.path.join(d, fn)) as z:
                out[parts[0]] = (z["steps"].tolist(), z["images"], z["image_index"].tolist())
    return out


def trajectory_figure(
    run_dir: str, labels: Sequence[str], mask: str, originals: Optional[np.ndarray], per_method: int = 2
) -> Optional[str]:
    """``trajectory_<mask>.png``: rows = method x image, columns = the recorded iterations and
    the original. None when no trajectory was recorded for this mask."""
    trajs = load_trajectories(run_dir, mask)
    order = [m for m in labels if m in trajs]
    if not order:
        return None
    plt = _plt()
    per = per_method if len(order) <= 6 else 1
    rows = [(m, j) for m in order for j in range(min(per, len(trajs[m][2])))]
    steps = sorted({s for m in order for s in trajs[m][0]})
    ncols = len(steps) + 1
    fig, axes = _image_axes(plt, len(rows), ncols, f"mask: {mask}   completion over the latent search")
    for r, (m, j) in enumerate(rows):
        m_steps, imgs, idx = trajs[m]
        for c, s in enumerate(steps):
            if s in m_steps:
                axes[r, c].imshow(imgs[m_steps.index(s), j], interpolation="nearest")
            if r == 0:
                axes[r, c].set_title(f"iter {s}", fontsize=6)
        if originals is not None and idx[j] < len(originals):
            axes[r, -1].imshow(originals[idx[j]], interpolation="nearest")
        axes[r, 0].set_ylabel(f"{m}\nimage {idx[j]}", fontsize=5)
    axes[0, -1].set_title("original", fontsize=6)
    path = os.path.join(run_dir, "figures", f"trajectory_{mask}.png")
    _finish(plt, fig, path, len(rows), ncols)
    return path


def sweep_figures(run_dir: str, labels: Sequence[str], masks: Sequence[str], stats: dict) -> list[str]:
    """``sweep_<name>.png`` for each swept parameter: rows = PSNR, NME, feature-scale error;
    columns = masks; one line (mean, 95% interval) per method and other swept values."""
    from bench.sweep import PARAMS, format_value, parse_label

    variants = {m: parse_label(m) for m in labels}
    names = [n for n in PARAMS if any(n in v.sweep_values() for v in variants.values())]
    paths = []
    metrics = [("psnr", "PSNR (dB)"), ("nme", "NME"), ("scale", "feature-scale error")]
    for name in names:
        plt = _plt()
        lines = defaultdict(list)  # (method, other params) -> [(value, label)]
        for m, v in variants.items():
            vals = v.sweep_values()
            if name in vals:
                rest = tuple((k, x) for k, x in v.params if k != name)
                lines[(v.method, rest)].append((vals[name], m))
        fig, axes = plt.subplots(
            len(metrics), len(masks), figsize=(2.6 * len(masks), 2.1 * len(metrics)), squeeze=False
        )
        for c, mask in enumerate(masks):
            for r, (metric, title) in enumerate(metrics):
                ax = axes[r, c]
                for (method, rest), pts in lines.items():
                    pts = sorted(pts)
                    xs = [x for x, _ in pts]
                    got = [stats.get((lab, mask), {}).get(metric, (np.nan, np.nan, 0)) for _, lab in pts]
                    ys = [g[0] for g in got]
                    es = [g[1] if np.isfinite(g[1]) else 0.0 for g in got]
                    tag = method + ("" if not rest else f" [{','.join(f'{k}={format_value(x)}' for k, x in rest)}]")
                    ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, lw=1, label=tag)
                ax.tick_params(labelsize=6)
                if r == 0:
                    ax.set_title(f"mask: {mask}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(title, fontsize=7)
                if r == len(metrics) - 1:
                    ax.set_xlabel(f"{name} ({PARAMS[name].help})", fontsize=7)
        axes[0, 0].legend(fontsize=6)
        fig.tight_layout()
        path = os.path.join(run_dir, "figures", f"sweep_{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def make_figures(run_dir: str, labels: Sequence[str], masks: Sequence[str], stats: dict, rows: int = 6) -> list[str]:
    """Every figure of a run (see the module docstring); returns the paths written."""
    os.makedirs(os.path.join(run_dir, "figures"), exist_ok=True)
    paths = [bars_figure(run_dir, labels, masks, stats)]
    paths += sweep_figures(run_dir, labels, masks, stats)
    originals = load_originals(run_dir, rows)
    if originals is None:
        return paths
    box = _box(_manifest(run_dir))
    for mask in masks:
        paths.append(grid_figure(run_dir, labels, mask, originals))
        paths.append(landmark_figure(run_dir, labels, mask, originals, box))
        p = trajectory_figure(run_dir, labels, mask, originals)
        if p:
            paths.append(p)
    return paths
