"""``python -m bench.paired RUN_DIR BASE METHOD [METHOD ...] [--base-run OTHER_RUN]``: paired
differences (method - base) of PSNR, SSIM and NME per mask over images x seed replicates, with
95% Student-t intervals, from the records. With ``--base-run``, BASE's records come from
OTHER_RUN (labelled ``BASE@OTHER_RUN``'s directory name), so one method can be paired with
itself across two runs on the same images, masks and seeds: two priors (``--weights-dcgan``),
two versions, two presets.

Per image, each side's value is its mean over that image's seed replicates (a deterministic
method has one); the difference of the two is taken on the same image and mask, and the interval
is over images (:func:`facefill_core.stats.paired_stats`; docs/statistics.md). The image's own
difficulty cancels, the optimizer's seed noise of both methods stays in the spread. Each cell
states its images and seeds and whether the interval excludes zero. Writes ``paired_<base>.md``
into RUN_DIR and prints it.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from typing import Optional

from tabulate import tabulate

from bench.report.tables import load_records
from facefill_core.stats import PairedStats, paired_stats

METRICS = (("psnr", 2, "higher"), ("ssim", 4, "higher"), ("nme", 4, "lower"))


def by_image(records: list[dict], metric: str) -> dict:
    """``{(method, mask): {image_id: [value per replicate]}}`` (None for a failed value)."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[(r["method"], r["mask"])][r["image_id"]].append(r.get(metric))
    return out


def paired(records: list[dict], base: str, methods: list[str]) -> dict:
    """``{(metric, method, mask): PairedStats}`` of ``method - base`` for every mask both have."""
    masks = sorted({r["mask"] for r in records})
    out = {}
    for metric, _, _ in METRICS:
        values = by_image(records, metric)
        for m in methods:
            for k in masks:
                if (m, k) in values and (base, k) in values:
                    out[(metric, m, k)] = paired_stats(values[(m, k)], values[(base, k)])
    return out


def format_cell(p: PairedStats, digits: int, better: str) -> str:
    """``+0.41 ± 0.30, 6/8 wins, 8 img x 5|5 seeds, excludes 0``."""
    if p.n_images == 0:
        return "n/a"
    wins = sum(1 for d in p.differences if (d < 0 if better == "lower" else d > 0))
    verdict = "excludes 0" if p.excludes_zero else "includes 0"
    return (
        f"{p.mean:+.{digits}f} ± {p.half_width:.{digits}f}, {wins}/{p.n_images} wins, "
        f"{p.n_images} img x {p.n_seeds_a}|{p.n_seeds_b} seeds, {verdict}"
    )


def paired_table(records: list[dict], base: str, methods: list[str]) -> str:
    """The markdown tables, one per metric: rows ``method - base``, columns masks."""
    from facefill_core.masks import MASK_KINDS

    found = {r["mask"] for r in records}
    masks = [k for k in MASK_KINDS if k in found] + sorted(found - set(MASK_KINDS))
    res = paired(records, base, methods)
    out = [
        f"Paired differences (method - {base}) per mask: per image, the mean over its seed replicates "
        "of each side; the interval is the 95% Student-t interval over images (seeds: method|base).",
        "",
    ]
    for metric, digits, better in METRICS:
        rows = [
            [f"{m} - {base}"]
            + [format_cell(res[(metric, m, k)], digits, better) if (metric, m, k) in res else "" for k in masks]
            for m in methods
        ]
        out += [
            f"### {metric.upper()} difference ({better} is better; wins / images)",
            "",
            tabulate(rows, ["paired difference"] + masks, tablefmt="github"),
            "",
        ]
    return "\n".join(out)


def _load(run_dir: str) -> "list[dict] | str":
    """The run's records, or the one-line error."""
    if not os.path.isdir(run_dir):
        return f"error: {run_dir} is not a run directory"
    try:
        return load_records(run_dir)
    except (OSError, ValueError, KeyError) as e:
        return f"error: {run_dir}: records cannot be read ({type(e).__name__}: {e})"


def _missing(run_dir: str, records: list[dict], wanted: list[str]) -> Optional[str]:
    present = {r["method"] for r in records}
    missing = [m for m in wanted if m not in present]
    if missing:
        return f"error: {run_dir} has no records of {', '.join(missing)} (has: {', '.join(sorted(present))})"
    return None


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    base_run = None
    if "--base-run" in argv:
        i = argv.index("--base-run")
        if i + 1 >= len(argv):
            print("error: --base-run needs a run directory", file=sys.stderr)
            return 2
        base_run = argv[i + 1]
        del argv[i : i + 2]
    if len(argv) < 3:
        print(
            "error: usage: python -m bench.paired RUN_DIR BASE METHOD [METHOD ...] [--base-run OTHER_RUN]",
            file=sys.stderr,
        )
        return 2
    run_dir, base, methods = argv[0], argv[1], argv[2:]
    records = _load(run_dir)
    if isinstance(records, str):
        print(records, file=sys.stderr)
        return 2
    err = _missing(run_dir, records, methods if base_run else [base, *methods])
    if err is None and base_run is not None:
        other = _load(base_run)
        if isinstance(other, str):
            print(other, file=sys.stderr)
            return 2
        err = _missing(base_run, other, [base])
        label = f"{base}@{os.path.basename(os.path.normpath(base_run))}"
        records = records + [dict(r, method=label) for r in other if r["method"] == base]
        base = label
    if err:
        print(err, file=sys.stderr)
        return 2
    text = paired_table(records, base, methods)
    with open(os.path.join(run_dir, f"paired_{base}.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
