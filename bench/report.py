"""``python -m bench.report RUN_DIR``: tables and figures from a run's records alone.

Writes ``tables.md``, ``tables/{psnr,ssim,nme,seconds}.csv`` and ``figures/`` (one grid per
mask: rows = images, columns = original, masked, each method; and a PSNR/SSIM bar chart).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import defaultdict

import numpy as np
from tabulate import tabulate

from facefill_core.metrics import mean_ci

METRICS = (
    ("psnr", "PSNR (dB), higher is better", 2),
    ("ssim", "SSIM, higher is better", 4),
    ("nme", "Landmark NME (dlib 68 points vs the undamaged image), lower is better", 4),
)
REFERENCE = os.path.join(os.path.dirname(__file__), "reference_numbers.json")
NOTES = [
    "Cells: mean ± half-width of the 95% Student-t confidence interval over images.",
    "gfc: trained without GFC's semantic parsing loss (no face-parsing network is available here).",
    "ce, gfc: one model each, trained over all four masks on the embedded train split.",
    "si-ld has the same z trajectories as si (its count loss has no gradient); it only changes which candidate wins.",
]


def load_records(run_dir: str) -> list[dict]:
    """The merged ``records.jsonl`` when present, else the per-unit files of a running run."""
    p = os.path.join(run_dir, "records.jsonl")
    if os.path.exists(p):
        with open(p) as f:
            return [json.loads(line) for line in f if line.strip()]
    return load_unit_records(run_dir)


def load_unit_records(run_dir: str) -> list[dict]:
    """Every finished unit's records (``records/*.jsonl``), in file-name order."""
    rec_dir = os.path.join(run_dir, "records")
    out = []
    for fn in sorted(os.listdir(rec_dir)):
        if fn.endswith(".jsonl") and not fn.startswith("."):
            with open(os.path.join(rec_dir, fn)) as f:
                out.extend(json.loads(line) for line in f if line.strip())
    return out


def _order(values, preferred):
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def aggregate(records: list[dict]) -> tuple[list, list, dict]:
    from facefill_core.inpainters import REGISTRY
    from facefill_core.masks import MASK_KINDS

    methods = _order({r["method"] for r in records}, list(REGISTRY))
    masks = _order({r["mask"] for r in records}, list(MASK_KINDS))
    groups = defaultdict(list)
    for r in records:
        groups[(r["method"], r["mask"])].append(r)
    stats = {}
    for key, rs in groups.items():
        s = {m: mean_ci([r[m] for r in rs]) for m, _, _ in METRICS}
        s["seconds"] = mean_ci([r["seconds"] for r in rs])
        s["nme_failures"] = sum(1 for r in rs if r["nme"] is None)
        s["n"] = len(rs)
        stats[key] = s
    return methods, masks, stats


def _cell(s, digits):
    m, h, n = s
    if n == 0:
        return "n/a"
    return f"{m:.{digits}f}" if not np.isfinite(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def build_report(run_dir: str) -> dict:
    records = load_records(run_dir)
    if not records:
        raise ValueError(f"no records in {run_dir}")
    methods, masks, stats = aggregate(records)
    manifest_p = os.path.join(run_dir, "manifest.json")
    manifest = json.load(open(manifest_p)) if os.path.exists(manifest_p) else {}
    refs = json.load(open(REFERENCE)).get("rows", {}) if os.path.exists(REFERENCE) else {}
    os.makedirs(os.path.join(run_dir, "tables"), exist_ok=True)
    md = ["# Results", ""]
    cfg = manifest.get("config", {})
    machine = manifest.get("machine", {})
    if cfg:
        md += [
            f"Data `{cfg.get('data')}`, {cfg.get('n_images')} test images, preset `{cfg.get('preset')}` "
            f"(latent search: {cfg.get('candidates')} candidates x {cfg.get('iters')} iterations, "
            f"lambda {cfg.get('prior_weight')}), seed {cfg.get('seed')}. Machine: "
            f"{machine.get('cpu_count')} CPUs, GPUs {machine.get('cuda_devices')}.",
            "",
        ]
    for metric, title, digits in METRICS:
        header = ["method"] + masks
        rows = [[m] + [_cell(stats[(m, k)][metric], digits) if (m, k) in stats else "" for k in masks] for m in methods]
        for label, vals in refs.items():
            if metric in vals:
                rows.append([f"{label} (thesis, CelebA)"] + [str(vals[metric].get(k, "")) for k in masks])
        md += [f"## {title}", "", tabulate(rows, header, tablefmt="github"), ""]
        if metric == "nme":
            fails = [
                (m, k, stats[(m, k)]["nme_failures"])
                for m in methods
                for k in masks
                if (m, k) in stats and stats[(m, k)]["nme_failures"]
            ]
            md += [f"NME reference failures (counted, not averaged): {fails if fails else 'none'}.", ""]
        with open(os.path.join(run_dir, "tables", f"{metric}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["method", "mask", "mean", "ci95_half_width", "n"] + (["nme_failures"] if metric == "nme" else [])
            )
            for m in methods:
                for k in masks:
                    if (m, k) in stats:
                        mean, half, n = stats[(m, k)][metric]
                        w.writerow(
                            [m, k, f"{mean:.6f}", f"{half:.6f}", n]
                            + ([stats[(m, k)]["nme_failures"]] if metric == "nme" else [])
                        )
    header = ["method"] + masks
    rows = [[m] + [f"{stats[(m, k)]['seconds'][0]:.3f}" if (m, k) in stats else "" for k in masks] for m in methods]
    md += [
        "## Seconds per image (wall time of the method on its worker)",
        "",
        tabulate(rows, header, tablefmt="github"),
        "",
    ]
    with open(os.path.join(run_dir, "tables", "seconds.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "mask", "seconds_per_image"])
        for m in methods:
            for k in masks:
                if (m, k) in stats:
                    w.writerow([m, k, f"{stats[(m, k)]['seconds'][0]:.4f}"])
    if not refs:
        md += [
            "The thesis's published CelebA numbers are not included: fill `bench/reference_numbers.json` "
            "to print them as reference rows.",
            "",
        ]
    md += ["Notes:", ""] + [f"- {n}" for n in NOTES] + [""]
    tmp = os.path.join(run_dir, "tables.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(md))
    os.replace(tmp, os.path.join(run_dir, "tables.md"))
    make_figures(run_dir, methods, masks, stats)
    return stats


def make_figures(run_dir: str, methods, masks, stats, rows: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.workers import unit_outputs

    fig_dir = os.path.join(run_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    outputs = os.path.join(run_dir, "outputs")
    manifest = (
        json.load(open(os.path.join(run_dir, "manifest.json")))
        if os.path.exists(os.path.join(run_dir, "manifest.json"))
        else {}
    )
    originals = None
    if manifest and os.path.isdir(outputs):
        from facefill_core.data import FaceDataset

        cfg = manifest["config"]
        box = tuple(cfg["box"]) if cfg.get("box") else None
        originals, _ = FaceDataset(cfg["data"], box=box).load_uint8("test", min(rows, cfg["n_images"]))
    for mask in masks:
        if originals is None:
            break
        n = len(originals)
        hole_p = os.path.join(run_dir, "masks", f"{mask}.npy")
        holes = np.load(hole_p)[:n] if os.path.exists(hole_p) else np.zeros((n, 64, 64), np.uint8)
        cols = [("original", originals), ("masked", np.where(holes[..., None] > 0, 255, originals).astype(np.uint8))]
        for m in methods:
            imgs = np.zeros_like(originals)
            for fn in sorted(os.listdir(outputs)) if os.path.isdir(outputs) else []:
                if fn.startswith(f"{m}__{mask}__") and fn.endswith(".npy"):
                    a, b = fn[: -len(".npy")].rsplit("__", 1)[1].split("-")
                    out = unit_outputs(run_dir, fn[: -len(".npy")])
                    for j, i in enumerate(range(int(a), int(b))):
                        if i < n:
                            imgs[i] = out[j]
            cols.append((m, imgs))
        fig, axes = plt.subplots(n, len(cols), figsize=(1.1 * len(cols), 1.1 * n + 0.3), squeeze=False)
        for c, (name, imgs) in enumerate(cols):
            for r in range(n):
                ax = axes[r, c]
                ax.imshow(imgs[r], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(name, fontsize=7)
        fig.suptitle(f"mask: {mask}", fontsize=8)
        fig.tight_layout(pad=0.2)
        fig.savefig(os.path.join(fig_dir, f"grid_{mask}.png"), dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    width = 0.8 / max(1, len(methods))
    for ax, metric in zip(axes, ("psnr", "ssim")):
        for j, m in enumerate(methods):
            vals = [stats[(m, k)][metric][0] if (m, k) in stats else np.nan for k in masks]
            errs = [stats[(m, k)][metric][1] if (m, k) in stats else np.nan for k in masks]
            errs = [0 if not np.isfinite(e) else e for e in errs]
            ax.bar(np.arange(len(masks)) + j * width, vals, width, yerr=errs, label=m, capsize=1.5)
        ax.set_xticks(np.arange(len(masks)) + width * (len(methods) - 1) / 2)
        ax.set_xticklabels(masks)
        ax.set_title(metric.upper())
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(fig_dir, "bars_psnr_ssim.png"), dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: python -m bench.report RUN_DIR (a directory holding records/ or records.jsonl)", file=sys.stderr)
        return 2
    try:
        build_report(argv[0])
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(os.path.join(argv[0], "tables.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
