"""``python -m bench.paired RUN_DIR BASE METHOD [METHOD ...]``: per-image paired differences
(method - base) of PSNR, SSIM and NME with 95% Student-t intervals, per mask, from the records.

Paired on the same images and masks, these are far tighter than the difference of two
independent means in the main tables. Writes ``paired_<base>.md`` into RUN_DIR and prints it.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

from tabulate import tabulate

from bench.report import load_records
from facefill_core.metrics import mean_ci


def paired_table(records: list[dict], base: str, methods: list[str]) -> str:
    by = defaultdict(dict)
    for r in records:
        by[(r["mask"], r["image_id"])][r["method"]] = r
    masks = sorted({r["mask"] for r in records}, key=["centre", "left", "right", "random", "pattern"].index)
    out = []
    for metric, digits in (("psnr", 2), ("ssim", 4), ("nme", 4)):
        rows = []
        for m in methods:
            row = [f"{m} - {base}"]
            for k in masks:
                d = [
                    v[m][metric] - v[base][metric]
                    for (mk, _), v in by.items()
                    if mk == k and m in v and base in v and v[m][metric] is not None and v[base][metric] is not None
                ]
                mean, half, n = mean_ci(d)
                wins = sum(1 for x in d if (x < 0 if metric == "nme" else x > 0))
                row.append(f"{mean:+.{digits}f} ± {half:.{digits}f} ({wins}/{n})")
            rows.append(row)
        out += [
            f"### {metric.upper()} difference (wins / images)",
            "",
            tabulate(rows, ["paired difference"] + masks, tablefmt="github"),
            "",
        ]
    return "\n".join(out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or not os.path.isdir(argv[0]):
        print("usage: python -m bench.paired RUN_DIR BASE METHOD [METHOD ...]", file=sys.stderr)
        return 2
    text = paired_table(load_records(argv[0]), argv[1], argv[2:])
    with open(os.path.join(argv[0], f"paired_{argv[1]}.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
