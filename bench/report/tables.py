"""``python -m bench.report RUN_DIR``: tables and figures from a run's records alone.

Writes ``tables.md`` (PSNR, SSIM, NME, feature-scale error per method label x mask, the scale
error per facial region, the thesis's published numbers as labelled reference rows, seconds),
``tables/{psnr,ssim,nme,scale,scale_regions,thesis_reference,seconds}.csv``, ``figures/``
(:mod:`bench.report.figures`) and ``report.html`` (:mod:`bench.report.page`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import defaultdict

import numpy as np
from tabulate import tabulate

from bench.harness.numerics import describe as describe_numerics
from bench.report.judge_tables import JUDGE_METRICS, judge_sections
from facefill_core.metrics import mean_ci
from facefill_core.stats import cell_stats

METRICS = (
    ("psnr", "PSNR (dB, whole image: known pixels included), higher is better", 2),
    ("ssim", "SSIM (whole image: known pixels included), higher is better", 4),
    ("nme", "Landmark NME (dlib 68 points vs the undamaged image), lower is better", 4),
    ("scale", "Feature-scale error (mean over eyes, brows, nose, mouth, jaw of |log| size ratio), lower is better", 4),
)
REGIONS = ("eyes", "brows", "nose", "mouth", "jaw")
REGION_KEYS = tuple(f"scale_{r}" for r in REGIONS) + ("scale", "scale_signed")
# the thesis's Tables 1-2 (copied from ../shared/reference so a clean clone has them)
REFERENCE = os.path.join(os.path.dirname(__file__), "reference", "thesis_tables.json")
THESIS_METHODS = {"SI": "si", "Ours": "si-ld", "CE": "ce", "GFC": "gfc"}  # thesis column -> our method
REFERENCE_NOTE = (
    "Reference rows (`... (thesis, CelebA)`) are the thesis's published Tables 1-2, printed beside ours "
    "and never part of our statistics; they are not comparable number for number: the thesis measured "
    "real CelebA photos with its own full-size models, we measure synthetic embedded faces with the "
    "smaller models trained here, so compare the order of the methods per mask, not the values."
)
NOTES = [
    "Cells: mean over images and seed replicates ± half-width of the 95% Student-t interval over the "
    "images' means over seeds; it covers both the choice of images and the optimizer's seed noise "
    "(docs/statistics.md). Deterministic methods run once per image.",
    "Feature scale: per region, the region's centroid size (RMS distance of its dlib points to their "
    "centroid; eyes and brows per side) over the inter-pupil distance, result vs undamaged image; "
    "|log| of the ratio, so 0.1 is about 10% too big or too small. Signed: mean of the signed log "
    "ratios (+: features too big for the face).",
    "A label `method[name=value]` is a sweep's variant of a method (`--sweep`).",
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
    """Per (method label, mask) and metric: ``(mean, ci95_half_width, n_images)`` over images and
    seed replicates (:func:`facefill_core.stats.cell_stats`; missing or None values are failures,
    counted, never averaged), and under ``"cells"`` the full :class:`~facefill_core.stats.CellStats`
    (seed spread, noise share); the NME failures, the record count ``n``, ``n_images`` and
    ``n_seeds``."""
    from bench.harness.sweep import sort_key
    from facefill_core.inpainters import REGISTRY
    from facefill_core.masks import MASK_KINDS

    methods = sorted({r["method"] for r in records}, key=lambda m: sort_key(m, list(REGISTRY)))
    masks = _order({r["mask"] for r in records}, list(MASK_KINDS))
    groups = defaultdict(list)
    for r in records:
        groups[(r["method"], r["mask"])].append(r)
    stats = {}
    for key, rs in groups.items():
        by_image: dict = defaultdict(list)
        for r in rs:
            by_image[r["image_id"]].append(r)
        cells = {
            m: cell_stats({i: [r.get(m) for r in ri] for i, ri in by_image.items()})
            for m in ("psnr", "ssim", "nme") + REGION_KEYS + tuple(JUDGE_METRICS)
        }
        s = {m: c.as_tuple() for m, c in cells.items()}
        s["cells"] = cells
        s["seconds"] = mean_ci([r["seconds"] for r in rs])
        s["nme_failures"] = sum(1 for r in rs if r["nme"] is None)
        s["mesh_failures"] = sum(1 for r in rs if "mesh_nme" in r and r["mesh_nme"] is None)
        s["n"] = len(rs)
        s["n_images"] = len(by_image)
        s["n_seeds"] = len({r.get("replicate", 0) for r in rs})
        stats[key] = s
    return methods, masks, stats


def _cell(s, digits):
    m, h, n = s
    if n == 0:
        return "n/a"
    return f"{m:.{digits}f}" if not np.isfinite(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def thesis_rows(path: str = REFERENCE) -> dict:
    """The thesis's published numbers: ``{"SI (thesis, CelebA)": {"method": "si", "psnr": {mask:
    value}, "ssim": {...}}, ...}``, in the thesis's column order. Empty when the file is absent."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = json.load(f).get("rows", {})
    out = {}
    for label, vals in rows.items():
        short = label.split(" (")[0]
        out[f"{short} (thesis, CelebA)"] = {"method": THESIS_METHODS.get(short), **vals}
    return out


def _write_csv(path: str, header: list, rows: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _metric_csv(run_dir, metric, methods, masks, stats) -> None:
    """``tables/<metric>.csv``: ``n`` counts the finite values (images x seeds), ``n_images`` the
    images, ``n_seeds`` the seed replicates; ``seed_sd`` and ``noise_share`` as in
    :class:`facefill_core.stats.CellStats` (empty when the cell has one seed)."""
    extra = ["nme_failures"] if metric == "nme" else []
    rows = []
    for m in methods:
        for k in masks:
            if (m, k) in stats:
                c = stats[(m, k)]["cells"][metric]
                rows.append(
                    [m, k, f"{c.mean:.6f}", f"{c.half_width:.6f}", c.n_values]
                    + ([stats[(m, k)]["nme_failures"]] if extra else [])
                    + [c.n_images, c.n_seeds, _num(c.seed_sd), _num(c.noise_share)]
                )
    _write_csv(
        os.path.join(run_dir, "tables", f"{metric}.csv"),
        ["method", "mask", "mean", "ci95_half_width", "n"] + extra + ["n_images", "n_seeds", "seed_sd", "noise_share"],
        rows,
    )


def _num(x: float) -> str:
    return f"{x:.6f}" if np.isfinite(x) else ""


def _seed_section(methods, masks, stats) -> list[str]:
    """The seed spread of every cell measured over 2 or more seeds: pooled within-image SD and
    the share of the interval's variance that is optimizer noise, per metric."""
    rows = []
    for m in methods:
        for k in masks:
            if (m, k) not in stats or stats[(m, k)]["n_seeds"] < 2:
                continue
            cells = stats[(m, k)]["cells"]
            row = [m, k, cells["psnr"].n_images, cells["psnr"].n_seeds]
            for metric, digits in (("psnr", 2), ("ssim", 4), ("nme", 4)):
                c = cells[metric]
                row += [f"{c.seed_sd:.{digits}f}", f"{c.noise_share:.0%}" if np.isfinite(c.noise_share) else "n/a"]
            rows.append(row)
    if not rows:
        return []
    header = ["method", "mask", "images", "seeds"]
    header += [f"{metric} {what}" for metric in ("PSNR", "SSIM", "NME") for what in ("seed SD", "noise share")]
    return [
        "## Seed spread (per image, pooled over images) and the optimizer's share of each interval",
        "",
        tabulate(rows, header, tablefmt="github"),
        "",
        "Seed SD: the pooled within-image standard deviation of a record over seed replicates. Noise "
        "share: seed variance / seeds over the variance of the image means, the part of the cell's "
        "interval that is the optimizer's noise rather than the choice of images (docs/statistics.md).",
        "",
    ]


def _scale_region_section(run_dir, methods, masks, stats) -> list[str]:
    """Per region: a markdown table (rows = method x mask) and ``tables/scale_regions.csv``."""
    cols = list(REGIONS) + ["all", "signed"]
    keys = list(REGION_KEYS)
    rows, csv_rows = [], []
    for m in methods:
        for k in masks:
            if (m, k) not in stats or stats[(m, k)]["scale"][2] == 0:
                continue
            rows.append([m, k] + [_cell(stats[(m, k)][key], 3) for key in keys])
            for name, key in zip(cols, keys):
                mean, half, n = stats[(m, k)][key]
                csv_rows.append([m, k, name, f"{mean:.6f}", f"{half:.6f}", n])
    if not rows:
        return []
    _write_csv(
        os.path.join(run_dir, "tables", "scale_regions.csv"),
        ["method", "mask", "region", "mean", "ci95_half_width", "n"],
        csv_rows,
    )
    return [
        "## Feature-scale error by region (|log| size ratio; signed: + too big), lower is better",
        "",
        tabulate(rows, ["method", "mask"] + cols, tablefmt="github"),
        "",
    ]


def build_report(run_dir: str) -> dict:
    """``tables.md``, ``tables/*.csv``, ``figures/`` and ``report.html`` of a run from its records; returns the
    statistics per (method label, mask)."""
    from bench.report.figures import make_figures
    from bench.report.page import build_report_page, provenance_markdown

    records = load_records(run_dir)
    if not records:
        raise ValueError(f"no records in {run_dir}")
    methods, masks, stats = aggregate(records)
    manifest_p = os.path.join(run_dir, "manifest.json")
    manifest = json.load(open(manifest_p)) if os.path.exists(manifest_p) else {}
    refs = thesis_rows()
    os.makedirs(os.path.join(run_dir, "tables"), exist_ok=True)
    md = ["# Results", ""]
    cfg = manifest.get("config", {})
    machine = manifest.get("machine", {})
    if cfg:
        sweep = cfg.get("sweep") or ()
        md += [
            f"Data `{cfg.get('data')}`, {cfg.get('n_images')} test images, preset `{cfg.get('preset')}` "
            f"(latent search: {cfg.get('candidates')} candidates x {cfg.get('iters')} iterations, "
            f"lambda {cfg.get('prior_weight')}), seed {cfg.get('seed')}. Machine: "
            f"{machine.get('cpu_count')} CPUs, GPUs {machine.get('cuda_devices')}."
            + (f" Numerics: {describe_numerics(machine['numerics'])}." if machine.get("numerics") else "")
            + (f" Sweep: {'; '.join(f'{n} = {list(v)}' for n, v in sweep)}." if sweep else ""),
            "",
        ]
    md += provenance_markdown(run_dir)  # the same fields as report.html's provenance
    for metric, title, digits in METRICS:
        if metric == "scale" and not any(stats[key]["scale"][2] for key in stats):
            continue  # records from before the scale error existed
        header = ["method"] + masks
        rows = [[m] + [_cell(stats[(m, k)][metric], digits) if (m, k) in stats else "" for k in masks] for m in methods]
        ref_rows = [
            [label] + [f"{vals[metric][k]:g}" if k in vals[metric] else "" for k in masks]
            for label, vals in refs.items()
            if metric in vals
        ]
        md += [f"## {title}", "", tabulate(rows + ref_rows, header, tablefmt="github"), ""]
        if ref_rows and metric == "psnr":
            mapping = ", ".join(f"{label.split(' (')[0]} = `{vals['method']}`" for label, vals in refs.items())
            md += [f"{REFERENCE_NOTE} Thesis columns and our methods: {mapping}.", ""]
        if metric == "nme":
            fails = [
                (m, k, stats[(m, k)]["nme_failures"])
                for m in methods
                for k in masks
                if (m, k) in stats and stats[(m, k)]["nme_failures"]
            ]
            md += [f"NME reference failures (counted, not averaged): {fails if fails else 'none'}.", ""]
        _metric_csv(run_dir, metric, methods, masks, stats)
    md += _seed_section(methods, masks, stats)
    md += judge_sections(run_dir, methods, masks, stats, manifest)  # hole, mesh, identity, KID/FID, agreement
    md += _scale_region_section(run_dir, methods, masks, stats)
    if refs:
        _write_csv(
            os.path.join(run_dir, "tables", "thesis_reference.csv"),
            ["reference", "our_method", "metric", "mask", "value"],
            [
                [label, vals["method"], metric, k, v]
                for label, vals in refs.items()
                for metric in ("psnr", "ssim")
                for k, v in vals.get(metric, {}).items()
            ],
        )
    header = ["method"] + masks
    rows = [[m] + [f"{stats[(m, k)]['seconds'][0]:.3f}" if (m, k) in stats else "" for k in masks] for m in methods]
    md += [
        "## Seconds per image (wall time of the method on its worker)",
        "",
        tabulate(rows, header, tablefmt="github"),
        "",
    ]
    _write_csv(
        os.path.join(run_dir, "tables", "seconds.csv"),
        ["method", "mask", "seconds_per_image"],
        [[m, k, f"{stats[(m, k)]['seconds'][0]:.4f}"] for m in methods for k in masks if (m, k) in stats],
    )
    md += ["Notes:", ""] + [f"- {n}" for n in NOTES] + [""]
    tmp = os.path.join(run_dir, "tables.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(md))
    os.replace(tmp, os.path.join(run_dir, "tables.md"))
    make_figures(run_dir, methods, masks, stats)
    build_report_page(run_dir, records, methods, masks)  # report.html, last: it shows the figures
    return stats


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("error: usage: python -m bench.report RUN_DIR", file=sys.stderr)
        return 2
    run_dir = argv[0]
    if not os.path.isdir(run_dir):
        print(f"error: {run_dir} is not a run directory", file=sys.stderr)
        return 2
    has_units = os.path.isdir(os.path.join(run_dir, "records")) and any(
        f.endswith(".jsonl") and not f.startswith(".") for f in os.listdir(os.path.join(run_dir, "records"))
    )
    if not os.path.isfile(os.path.join(run_dir, "records.jsonl")) and not has_units:
        print(f"error: {run_dir} holds no records (records.jsonl or records/*.jsonl)", file=sys.stderr)
        return 2
    try:
        build_report(run_dir)
    except (ValueError, KeyError, OSError) as e:  # json.JSONDecodeError is a ValueError
        print(
            f"error: {run_dir}: records cannot be read ({type(e).__name__}: {' '.join(str(e).split())})",
            file=sys.stderr,
        )
        return 2
    print(os.path.join(argv[0], "tables.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
