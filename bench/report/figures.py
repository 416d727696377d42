"""A run's figures, from its directory alone (``figures/``), drawn for a paper: one colour per
method (:func:`method_colours`), legends off the data, units and "95% CI, n = N" on the axes, one
hole colour (:data:`HOLE_RGB`) wherever a hole is shown.

* ``grid_<mask>.png``: every image of the run (pages of :data:`GRID_ROWS` rows:
  ``grid_<mask>.png``, ``grid_<mask>_2.png``, ...): rows = images (their ids), columns =
  original, masked input, each method with its PSNR in the cell.
* ``bars_psnr_ssim.png``: PSNR, SSIM and landmark NME per method and mask with 95% intervals.
* ``landmarks_<mask>.png`` (the thesis's Fig. 5): each method's completed face with three sets of
  dlib points: the reference (the damaged input's, what Ld compares with), the result's, and
  the original's, with a colour key.
* ``trajectory_<mask>.png`` (the thesis's Fig. 3): the completion of a few images at chosen
  iterations of the latent search, decoded from the recorded trajectory by the workers
  (``trajectories/<uid>.npz``, see :func:`trajectory_snapshots`).
* ``sweep_<name>.png`` when the run swept a parameter: PSNR, NME and the feature-scale error
  against the swept value, per method and mask; the landmark margin as paired differences
  against the 3 px variant (same images, mean and 95% interval of the per-image difference).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

SNAPSHOT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)  # of the iterations; 0 = the random start
POINT_STYLES = (  # (name, colour, marker): drawn in this order
    ("original", "#00c000", "+"),
    ("reference (damaged input)", "#00a0ff", "x"),
    ("result", "#ff2020", "."),
)
HOLE_RGB = (255, 0, 255)  # the hole's colour in every figure and in report.html
GRID_ROWS = 16  # images per grid page
PSNR_BOX = dict(boxstyle="square,pad=0.12", fc="black", ec="none", alpha=0.6)  # a grid cell's PSNR label
SWEEP_BASELINE = {"margin": 3.0}  # swept parameters drawn as paired differences against this value
UNITS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (1 = identical)",
    "nme": "NME (fraction of outer-eye-corner distance)",
    "scale": "feature-scale error (|log| size ratio)",
}


def method_colours(labels: Sequence[str]) -> dict:
    """One distinct colour per label, stable in ``labels``' order: matplotlib's ``tab20`` dark
    shades first, then its light shades (so the first ten differ in hue), then evenly spaced
    hues beyond twenty.

    Example:
        >>> c = method_colours([f"m{i}" for i in range(12)])
        >>> len(set(c.values()))
        12
    """
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    palette = [matplotlib.colors.to_hex(tab20[i]) for i in list(range(0, 20, 2)) + list(range(1, 20, 2))]
    extra = len(labels) - len(palette)
    if extra > 0:
        hsv = matplotlib.colormaps["hsv"]
        palette += [matplotlib.colors.to_hex(hsv(i / extra)) for i in range(extra)]
    return {m: palette[i] for i, m in enumerate(labels)}


def _n_text(ns: Sequence[int]) -> str:
    """``"n = 8"`` or ``"n = 6-8"`` over the groups drawn."""
    ns = sorted({int(n) for n in ns if n})
    if not ns:
        return "n = 0"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"


def paint_holes(images: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` images with the hole (bool ``(N, H, W)``) in :data:`HOLE_RGB`."""
    return np.where(holes[..., None], np.array(HOLE_RGB, np.uint8), images).astype(np.uint8)


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


def _finish(
    plt, fig, path: str, rows: int, cols: int, scale: float = 1.1, dpi: int = 110, bottom_in: float = 0.0
) -> None:
    top = 1.0 - 0.25 / (scale * rows + 0.4)  # the title's own band, above the column labels
    bottom = bottom_in / (scale * rows + 0.4)  # a key's own band below the images
    fig.tight_layout(pad=0.2, rect=(0, bottom, 1, top))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# -- figures ---------------------------------------------------------------------------------
def _record_index(records: Sequence[dict]) -> dict:
    """(method, mask, image index) -> the record of seed replicate 0 (the one whose outputs the
    figures draw)."""
    return {(r["method"], r["mask"], r["image_index"]): r for r in records if not r.get("replicate")}


def grid_figure(
    run_dir: str,
    labels: Sequence[str],
    mask: str,
    originals: np.ndarray,
    records: Sequence[dict] = (),
    ids: Optional[Sequence[str]] = None,
    page_rows: int = GRID_ROWS,
) -> list[str]:
    """``grid_<mask>.png`` (then ``grid_<mask>_2.png``, ...): every image in ``originals`` with
    its id, its masked input (hole in :data:`HOLE_RGB`) and each method's completion with the
    record's PSNR; returns the paths written."""
    plt = _plt()
    n = len(originals)
    holes = load_holes(run_dir, mask, n, originals.shape[1:3])
    cols = [("original", originals), ("masked", paint_holes(originals, holes))]
    cols += [(m, method_outputs(run_dir, m, mask, n, originals)) for m in labels]
    rec = _record_index(records)
    ids = list(ids) if ids is not None else [str(i) for i in range(n)]
    paths = []
    for page, first in enumerate(range(0, n, page_rows)):
        rows = list(range(first, min(n, first + page_rows)))
        pages = (n + page_rows - 1) // page_rows
        title = f"mask: {mask}   (hole in magenta; number: PSNR of the image in dB)"
        if pages > 1:
            title += f"   page {page + 1}/{pages}"
        fig, axes = _image_axes(plt, len(rows), len(cols), title, scale=1.25)
        for c, (name, imgs) in enumerate(cols):
            for r, i in enumerate(rows):
                ax = axes[r, c]
                ax.imshow(imgs[i], interpolation="nearest")
                got = rec.get((name, mask, i))
                if got is not None and got.get("psnr") is not None:
                    ax.text(0.97, 0.03, f"{got['psnr']:.1f}", transform=ax.transAxes, ha="right", va="bottom",
                            fontsize=5.5, color="white", bbox=PSNR_BOX)  # fmt: skip
                if c == 0:
                    ax.set_ylabel(ids[i], fontsize=5)
            axes[0, c].set_title(name, fontsize=6)
        suffix = "" if page == 0 else f"_{page + 1}"
        path = os.path.join(run_dir, "figures", f"grid_{mask}{suffix}.png")
        _finish(plt, fig, path, len(rows), len(cols), scale=1.25)
        paths.append(path)
    return paths


def bars_figure(run_dir: str, labels: Sequence[str], masks: Sequence[str], stats: dict) -> str:
    """``bars_psnr_ssim.png``: mean and 95% interval of PSNR, SSIM and NME per method and mask,
    one colour per method (:func:`method_colours`), the legend beside the panels."""
    plt = _plt()
    colours = method_colours(labels)
    metrics = [m for m in ("psnr", "ssim", "nme") if any(m in s for s in stats.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1.6, 3.6), squeeze=False)
    width = 0.8 / max(1, len(labels))
    for ax, metric in zip(axes[0], metrics):
        ns = []
        for j, m in enumerate(labels):
            got = [stats.get((m, k), {}).get(metric, (np.nan, np.nan, 0)) for k in masks]
            vals = [g[0] for g in got]
            errs = [g[1] if np.isfinite(g[1]) else 0 for g in got]
            ns += [g[2] for g in got]
            ax.bar(
                np.arange(len(masks)) + j * width, vals, width, yerr=errs, label=m, color=colours[m],
                capsize=1.2, error_kw=dict(lw=0.6),
            )  # fmt: skip
        ax.set_xticks(np.arange(len(masks)) + width * (len(labels) - 1) / 2)
        ax.set_xticklabels(masks)
        ax.set_xlabel("mask")
        ax.set_ylabel(UNITS[metric])
        better = "lower is better" if metric == "nme" else "higher is better"
        ax.set_title(f"{metric.upper()}, {better}\nmean, 95% CI, {_n_text(ns)}", fontsize=9)
        ax.grid(axis="y", lw=0.3, alpha=0.5)
        ax.set_axisbelow(True)
        if metric == "ssim":
            ax.set_ylim(0, 1)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, title="method", title_fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    path = os.path.join(run_dir, "figures", "bars_psnr_ssim.png")
    fig.savefig(path, dpi=150)
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


def landmark_figure(
    run_dir: str, labels: Sequence[str], mask: str, originals: np.ndarray, box, rows: int = 3, width: int = 6
) -> str:
    """``landmarks_<mask>.png``: each method's result with the reference, result and original
    points (the first panel: the damaged input, hole in :data:`HOLE_RGB`, with the reference and
    original points), ``width`` panels a row so a face stays legible at page width, a colour
    key below."""
    from matplotlib.lines import Line2D

    plt = _plt()
    n = min(rows, len(originals))
    images = originals[:n]
    holes = load_holes(run_dir, mask, n, images.shape[1:3])
    outs = {m: method_outputs(run_dir, m, mask, n, images) for m in labels}
    pts = landmark_points(images, holes, outs, box)
    damaged = paint_holes(images, holes)  # shown in the hole colour; the points are the grey input's
    panels = [("damaged input", damaged, None)] + [(m, outs[m], m) for m in labels]
    width = min(width, len(panels))
    per_image = (len(panels) + width - 1) // width
    grid_rows = n * per_image
    fig, axes = _image_axes(plt, grid_rows, width, f"mask: {mask}   dlib's 68 points", scale=1.6)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        for p, (name, imgs, key) in enumerate(panels):
            ax = axes[i * per_image + p // width, p % width]
            ax.set_axis_on()
            ax.imshow(imgs[i], interpolation="nearest")
            sets = [("original", pts["original"][i]), ("reference (damaged input)", pts["reference"][i])]
            if key is not None:
                sets.append(("result", pts[key][i]))
            for sname, xy in sets:
                colour, marker = next((c_, m_) for s_, c_, m_ in POINT_STYLES if s_ == sname)
                ax.scatter(xy[:, 0], xy[:, 1], s=12, c=colour, marker=marker, linewidths=0.8)
            ax.set_xlim(-0.5, imgs.shape[2] - 0.5)
            ax.set_ylim(imgs.shape[1] - 0.5, -0.5)
            ax.set_title(name if p else f"image {i}: {name}", fontsize=7)
    key = [
        Line2D([], [], ls="", marker=mk, color=col, markersize=7, markeredgewidth=1.5, label=name)
        for name, col, mk in POINT_STYLES
    ]
    fig.legend(handles=key, loc="lower center", ncol=3, fontsize=8, frameon=False)
    path = os.path.join(run_dir, "figures", f"landmarks_{mask}.png")
    _finish(plt, fig, path, grid_rows, width, scale=1.6, dpi=150, bottom_in=0.35)
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


def _paired(records_ix: dict, label: str, base: str, mask: str, metric: str, n: int) -> tuple[float, float, int]:
    """Mean and 95% half-width of ``label - base`` over the images both have (paired)."""
    from facefill_core.metrics import mean_ci

    diffs = []
    for i in range(n):
        a, b = records_ix.get((label, mask, i)), records_ix.get((base, mask, i))
        if a is not None and b is not None and a.get(metric) is not None and b.get(metric) is not None:
            diffs.append(a[metric] - b[metric])
    return mean_ci(diffs)


def sweep_figures(
    run_dir: str, labels: Sequence[str], masks: Sequence[str], stats: dict, records: Sequence[dict] = ()
) -> list[str]:
    """``sweep_<name>.png`` for each swept parameter: rows = PSNR, NME, feature-scale error;
    columns = masks; one line (mean, 95% interval) per method and other swept values. A
    parameter of :data:`SWEEP_BASELINE` (the margin) whose baseline value ran is drawn as the
    paired difference of each value against the baseline (per image, same search), so the
    image-to-image spread that all values share cancels."""
    from bench.harness.sweep import PARAMS, format_value, parse_label

    variants = {m: parse_label(m) for m in labels}
    names = [n for n in PARAMS if any(n in v.sweep_values() for v in variants.values())]
    paths = []
    metrics = [("psnr", "PSNR (dB)"), ("nme", "NME"), ("scale", "feature-scale error")]
    rix = _record_index(records)
    n_img = 1 + max((r["image_index"] for r in records), default=-1)
    for name in names:
        plt = _plt()
        lines = defaultdict(list)  # (method, other params) -> [(value, label)]
        for m, v in variants.items():
            vals = v.sweep_values()
            if name in vals:
                rest = tuple((k, x) for k, x in v.params if k != name)
                lines[(v.method, rest)].append((vals[name], m))
        base_value = SWEEP_BASELINE.get(name)
        paired = (
            bool(records)
            and base_value is not None
            and all(any(x == base_value for x, _ in pts) for pts in lines.values())
        )
        tags = {
            key: key[0] + ("" if not key[1] else f" [{','.join(f'{k}={format_value(x)}' for k, x in key[1])}]")
            for key in lines
        }
        colours = method_colours(list(tags.values()))
        fig, axes = plt.subplots(
            len(metrics), len(masks), figsize=(2.8 * len(masks) + 1.8, 2.2 * len(metrics)), squeeze=False
        )
        for c, mask in enumerate(masks):
            for r, (metric, title) in enumerate(metrics):
                ax = axes[r, c]
                ns = []
                for key, pts in lines.items():
                    pts = sorted(pts)
                    xs = [x for x, _ in pts]
                    if paired:
                        base = next(lab for x, lab in pts if x == base_value)
                        got = [_paired(rix, lab, base, mask, metric, n_img) for _, lab in pts]
                    else:
                        got = [stats.get((lab, mask), {}).get(metric, (np.nan, np.nan, 0)) for _, lab in pts]
                    ys = [g[0] for g in got]
                    es = [g[1] if np.isfinite(g[1]) else 0.0 for g in got]
                    ns += [g[2] for g in got]
                    ax.errorbar(
                        xs, ys, yerr=es, marker="o", ms=3, capsize=2, lw=1, label=tags[key], color=colours[tags[key]]
                    )
                if paired:
                    ax.axhline(0.0, color="#555", lw=0.6, ls="--")
                ax.tick_params(labelsize=6)
                ax.grid(lw=0.3, alpha=0.5)
                if r == 0:
                    ax.set_title(f"mask: {mask}", fontsize=8)
                if c == 0:
                    unit = f"{title}\n{'difference vs ' + format_value(base_value) + ' px' if paired else 'mean'}"
                    ax.set_ylabel(unit + f"\n95% CI, {_n_text(ns)}", fontsize=6.5)
                if r == len(metrics) - 1:
                    ax.set_xlabel(f"{name} ({PARAMS[name].help})", fontsize=7)
        handles, names_ = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names_, loc="center right", fontsize=6.5, frameon=False)
        if paired:
            fig.suptitle(
                f"{name}: paired per-image difference against {name} = {format_value(base_value)} (same images)",
                fontsize=8,
            )
        fig.tight_layout(rect=(0, 0, 1 - 1.7 / fig.get_figwidth(), 0.97 if paired else 1))
        path = os.path.join(run_dir, "figures", f"sweep_{name}.png")
        fig.savefig(path, dpi=130)
        plt.close(fig)
        paths.append(path)
    return paths


def make_figures(
    run_dir: str, labels: Sequence[str], masks: Sequence[str], stats: dict, rows: Optional[int] = None
) -> list[str]:
    """Every figure of a run (see the module docstring); returns the paths written. ``rows``:
    the images in the grids (None: all of the run's); the landmark figure draws at most 4."""
    from bench.report.tables import load_records

    os.makedirs(os.path.join(run_dir, "figures"), exist_ok=True)
    try:
        records = load_records(run_dir)
    except OSError:
        records = []
    paths = [bars_figure(run_dir, labels, masks, stats)]
    paths += sweep_figures(run_dir, labels, masks, stats, records)
    n_run = _manifest(run_dir).get("config", {}).get("n_images") or 1 + max(
        (r["image_index"] for r in records), default=-1
    )
    originals = load_originals(run_dir, n_run if rows is None else rows)
    if originals is None:
        return paths
    ids = {r["image_index"]: r.get("image_id", str(r["image_index"])) for r in records}
    id_list = [ids.get(i, str(i)) for i in range(len(originals))]
    box = _box(_manifest(run_dir))
    for mask in masks:
        paths += grid_figure(run_dir, labels, mask, originals, records, id_list)
        paths.append(landmark_figure(run_dir, labels, mask, originals, box))
        p = trajectory_figure(run_dir, labels, mask, originals)
        if p:
            paths.append(p)
    return paths
