"""``python -m bench.studies.heldout RUN_DIR``: held-out PSNR curves of a CE / GFC training run, and
"train until it stops improving".

Held-out set: embedded **test** images 256-319 (never trained on; disjoint from the images
``make run`` evaluates, 0-7; but **inside the paper preset's 0-499**: a paper-preset table on
``embedded`` evaluates these 64 images too, so its CE/GFC rows had their checkpoint chosen on
64 of its 500 images), each with the four thesis masks (seed 0). Every checkpoint the trainer
writes (``checkpoint.pt``, every ``--checkpoint-every`` iterations) is snapshotted as
``snapshots/iter_NNNNNN.pt`` and scored.

Plateau rule (stated once here, printed in the CSV's companion): for every mask, the PSNR gain
over the last quarter of training, ``mean(last two points) - PSNR at 3/4 of the iterations``, is
under ``--min-gain`` (0.1 dB), and at least ``--min-iters`` iterations ran. With ``--watch PID``
the script follows a running trainer, and once the rule holds it sends SIGINT (the trainer
saves a checkpoint and exits 130).

GFC's input fills the hole with uniform noise; an under-trained GFC passes part of it through
(the coloured speckle in early grids). ``noise_l1`` measures that: the mean |difference| (0-1
range) inside the hole between two completions of the same image with two different noise
draws. A model that has learnt to ignore the noise scores near 0 (CE has no noise input: empty).

The shipped CE/GFC weights are the snapshot with the highest mean held-out PSNR over the four
masks (early stopping on the held-out set; ``best_snapshot``), from a run stopped by the rule.

``--select`` names what the rule and the choice look at: ``mean`` (the four masks; the default,
for the all-mask models and for GFC trained on random squares, whose training holes match no
single evaluation mask) or one mask (``centre`` for a Context Encoder trained on the centre hole
only: the plateau is judged and the snapshot chosen on the centre mask alone; the other masks
are still scored and plotted).

Writes ``heldout.csv`` (iter, mask, psnr, ssim, noise_l1) and ``heldout.png`` into RUN_DIR.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import sys
import time
from typing import Optional

import numpy as np

MASKS = ("centre", "left", "right", "random")
HELDOUT_START, HELDOUT_N = 256, 64


def _snapshot(run_dir: str) -> Optional[int]:
    """Copy ``checkpoint.pt`` to ``snapshots/iter_N.pt`` when it holds a new iteration."""
    import torch

    ck = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.isfile(ck):
        return None
    try:
        it = int(torch.load(ck, map_location="cpu", weights_only=True)["iter"])
    except Exception:  # noqa: BLE001 - being replaced right now; next poll
        return None
    snap_dir = os.path.join(run_dir, "snapshots")
    os.makedirs(snap_dir, exist_ok=True)
    dst = os.path.join(snap_dir, f"iter_{it:06d}.pt")
    if it > 0 and not os.path.exists(dst):
        tmp = dst + ".tmp"
        shutil.copyfile(ck, tmp)
        os.replace(tmp, dst)
        return it
    return None


def _load_curve(path: str) -> dict:
    curve: dict = {}
    if os.path.isfile(path):
        with open(path) as f:
            for r in csv.DictReader(f):
                noise = float(r["noise_l1"]) if r.get("noise_l1") not in (None, "") else float("nan")
                curve.setdefault(int(r["iter"]), {})[r["mask"]] = (float(r["psnr"]), float(r["ssim"]), noise)
    return curve


class HeldOut:
    """The fixed held-out images and masks, loaded once."""

    def __init__(self, threads: int = 1) -> None:
        import torch

        from facefill_core.config import MaskConfig
        from facefill_core.data import FaceDataset
        from facefill_core.masks import make_masks

        torch.set_num_threads(threads)
        self.images, _ = FaceDataset("embedded").load("test", HELDOUT_N, start=HELDOUT_START)
        self.holes = {m: make_masks(MaskConfig(m, seed=0), HELDOUT_N) for m in MASKS}

    def score(self, snapshot: str, kind: str) -> dict:
        from facefill_core.imaging import to_unit_range
        from facefill_core.inpainters import build
        from facefill_core.metrics import psnr, ssim
        from facefill_core.training import export_checkpoint

        weights = snapshot[: -len(".pt")] + ".weights.pt"
        if not os.path.exists(weights):
            export_checkpoint(snapshot, weights)
        inp = build(kind, weights=weights)
        out = {}
        t = to_unit_range(self.images).clamp(0, 1)
        for m, h in self.holes.items():
            ids = list(range(HELDOUT_START, HELDOUT_START + HELDOUT_N))
            p = to_unit_range(inp.inpaint(self.images, h, image_indices=ids)).clamp(0, 1)
            noise = float("nan")
            if kind == "gfc":  # the same images with another noise draw in the hole
                q = to_unit_range(inp.inpaint(self.images, h, image_indices=[i + 10**6 for i in ids])).clamp(0, 1)
                noise = float(((p - q).abs() * h).sum() / (h.sum() * 3))
            out[m] = (float(np.mean(psnr(p, t))), float(np.mean(ssim(p, t))), noise)
        return out


SELECT = ("mean", *MASKS)


def _check_select(select: str) -> None:
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")


def plateau_gain(curve: dict, select: str = "mean") -> dict:
    """Per mask (only ``select`` unless it is ``mean``): PSNR gain over the last quarter of the
    iterations so far (NaN if too short)."""
    _check_select(select)
    its = sorted(curve)
    gains = {}
    for m in MASKS if select == "mean" else (select,):
        pts = [(i, curve[i][m][0]) for i in its if m in curve[i]]
        if len(pts) < 4:
            gains[m] = float("nan")
            continue
        last = pts[-1][0]
        q = min(pts, key=lambda p: abs(p[0] - 0.75 * last))
        gains[m] = float(np.mean([p[1] for p in pts[-2:]]) - q[1])
    return gains


def best_snapshot(curve: dict, select: str = "mean") -> int:
    """The iteration with the highest held-out PSNR: the mean over the four masks (``select``
    ``mean``, every mask scored) or on the one mask ``select`` names; ties go to the earliest.

    Raises:
        ValueError: an unknown ``select``, or no snapshot scored on what it names.
    """
    _check_select(select)
    masks = MASKS if select == "mean" else (select,)
    full = [i for i in curve if all(m in curve[i] for m in masks)]
    if not full:
        raise ValueError(f"no snapshot scored on {'every mask' if select == 'mean' else select}")
    return max(full, key=lambda i: (float(np.mean([curve[i][m][0] for m in masks])), -i))


def figure(curve: dict, title: str, select: str = "mean"):
    """The held-out curves (PSNR per mask against the training iteration) with the best snapshot
    (:func:`best_snapshot` under ``select``: the one that ships) marked by a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = sorted(curve)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for m in MASKS:
        xs = [i for i in its if m in curve[i]]
        ax.plot(xs, [curve[i][m][0] for i in xs], marker=".", label=m)
    try:
        best = best_snapshot(curve, select)
    except ValueError:  # no snapshot scored on every mask yet
        best = None
    if best is not None:
        what = "mean over masks" if select == "mean" else select
        ax.axvline(best, color="black", ls="--", lw=1, label=f"best snapshot, shipped\n(iter {best}, {what})")
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"held-out PSNR (dB), {HELDOUT_N} images")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)  # off the data
    fig.tight_layout()
    return fig


def plot(curve: dict, path: str, title: str, select: str = "mean") -> None:
    """:func:`figure` written to ``path`` (PNG, atomically)."""
    import matplotlib.pyplot as plt

    fig = figure(curve, title, select)
    fig.savefig(path + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def update(run_dir: str, kind: str, held: HeldOut, select: str = "mean") -> dict:
    """Score every snapshot not yet in heldout.csv; rewrite the CSV and the plot (the best
    snapshot under ``select`` marked)."""
    path = os.path.join(run_dir, "heldout.csv")
    curve = _load_curve(path)
    snap_dir = os.path.join(run_dir, "snapshots")
    snaps = sorted(
        f for f in os.listdir(snap_dir) if f.startswith("iter_") and f.endswith(".pt") and "weights" not in f
    )
    for f in snaps:
        it = int(f[5:11])
        if it not in curve:
            curve[it] = held.score(os.path.join(snap_dir, f), kind)
            cells = ", ".join(
                f"{m} {v[0]:.2f}" + (f" (noise {v[2]:.3f})" if np.isfinite(v[2]) else "") for m, v in curve[it].items()
            )
            print(f"{kind} iter {it}: {cells}", flush=True)
    with open(path + ".tmp", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["iter", "mask", "psnr", "ssim", "noise_l1"])
        for it in sorted(curve):
            for m, (p, s, n) in curve[it].items():
                w.writerow([it, m, f"{p:.4f}", f"{s:.5f}", "" if not np.isfinite(n) else f"{n:.5f}"])
    os.replace(path + ".tmp", path)
    plot(curve, os.path.join(run_dir, "heldout.png"), f"{kind}: held-out PSNR per mask", select)
    return curve


def _report(curve: dict, gains: dict, done: bool, select: str = "mean") -> None:
    print(f"after {max(curve)} iters, gain over the last quarter: "
          + ", ".join(f"{m} {g:+.2f} dB" for m, g in gains.items())
          + (" -> plateau" if done else ""), flush=True)  # fmt: skip
    masks = MASKS if select == "mean" else (select,)
    full = [i for i in curve if all(m in curve[i] for m in masks)]
    if full:
        what = "mean held-out PSNR over the masks" if select == "mean" else f"held-out PSNR on the {select} mask"
        print(f"best snapshot ({what}): iteration {best_snapshot(curve, select)}", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.heldout", description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--kind", choices=["ce", "gfc"], required=True)
    p.add_argument(
        "--watch", type=int, default=None, metavar="PID", help="follow this trainer; SIGINT it at the plateau"
    )
    p.add_argument("--min-gain", type=float, default=0.1, help="dB over the last quarter (default 0.1)")
    p.add_argument("--min-iters", type=int, default=2000)
    p.add_argument("--poll-s", type=float, default=30.0)
    p.add_argument(
        "--select",
        choices=SELECT,
        default="mean",
        help="what the plateau rule and the best snapshot look at: mean over the four masks, or one mask",
    )
    a = p.parse_args(argv)
    while a.watch is not None and not os.path.isdir(a.run_dir) and os.path.exists(f"/proc/{a.watch}"):
        time.sleep(5)  # the trainer creates it once its imports are done
    if not os.path.isdir(a.run_dir):
        print(f"error: {a.run_dir} is not a directory", file=sys.stderr)
        return 2
    held = HeldOut()
    reported = None  # the last iteration whose gains were printed
    while True:
        _snapshot(a.run_dir)
        curve = update(a.run_dir, a.kind, held, a.select) if os.path.isdir(os.path.join(a.run_dir, "snapshots")) else {}
        gains = plateau_gain(curve, a.select)
        last = max(curve) if curve else 0
        done = last >= a.min_iters and all(np.isfinite(g) and g < a.min_gain for g in gains.values())
        if curve and last != reported:
            reported = last
            _report(curve, gains, done, a.select)
        if a.watch is None:
            return 0
        alive = os.path.exists(f"/proc/{a.watch}")
        if done and alive:
            os.kill(a.watch, signal.SIGINT)
            print(f"plateau reached at {last} iterations: stopped trainer {a.watch}", flush=True)
            return 0
        if not alive:  # the trainer ended on its own: score its last checkpoint too
            _snapshot(a.run_dir)
            curve = update(a.run_dir, a.kind, held, a.select)
            if curve and max(curve) != reported:
                gains = plateau_gain(curve, a.select)
                _report(curve, gains, all(np.isfinite(g) and g < a.min_gain for g in gains.values()), a.select)
            return 0
        time.sleep(a.poll_s)


if __name__ == "__main__":
    sys.exit(main())
