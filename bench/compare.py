"""``python -m bench.compare REFERENCE_RUN NEW_RUN``: do two runs give the same records?

Matches records by (method, mask, image_id) and reports, per metric, the largest absolute
difference and where it is. ``make run`` calls it against the committed ``results/quick`` so a
user sees at once whether their machine reproduces the published records; CI calls it with
``--strict`` (exit 1 when ids differ or a difference exceeds the tolerance).

Tolerances (stated here once and printed): PSNR 0.01 dB, SSIM 1e-4, NME 1e-4. Records of the
same code on the same thread count are bit-identical; across thread counts float reduction
order moves PSNR by ~1e-9 dB (README, "Reproducibility").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Optional

TOLERANCES = {"psnr": 0.01, "ssim": 1e-4, "nme": 1e-4}


def _records(run_dir: str) -> dict:
    p = os.path.join(run_dir, "records.jsonl")
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{run_dir} has no records.jsonl (not a finished run)")
    out = {}
    with open(p) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                out[(r["method"], r["mask"], r["image_id"])] = r
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{p}:{n}: not a record ({e})") from None
    return out


def compare(reference: str, new: str) -> dict:
    """Largest |difference| per metric between two runs' records, and the ids on one side only.

    Returns:
        ``{"n": matched, "only_reference": [...], "only_new": [...],
        "max_diff": {metric: (value, key)}, "ok": bool}``.
    """
    a, b = _records(reference), _records(new)
    common = sorted(set(a) & set(b))
    max_diff: dict = {}
    for m in TOLERANCES:
        diffs = []
        for k in common:
            x, y = a[k].get(m), b[k].get(m)
            if x is None and y is None:
                continue
            diffs.append((math.inf if x is None or y is None else abs(float(x) - float(y)), k))
        max_diff[m] = max(diffs, key=lambda t: t[0], default=(0.0, None))
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    ok = not only_a and not only_b and all(max_diff[m][0] <= TOLERANCES[m] for m in TOLERANCES)
    return {"n": len(common), "only_reference": only_a, "only_new": only_b, "max_diff": max_diff, "ok": ok}


def format_result(res: dict, reference: str, new: str) -> str:
    lines = [f"records of {new} vs {reference}: {res['n']} matched"]
    for m, (d, k) in res["max_diff"].items():
        where = "" if k is None else f" ({k[0]}, {k[1]}, {k[2]})"
        lines.append(f"  max |d {m}| = {d:.3g}{where}  tolerance {TOLERANCES[m]:g}")
    if res["only_reference"] or res["only_new"]:
        only_ref, only_new = len(res["only_reference"]), len(res["only_new"])
        lines.append(f"  ids only in the reference: {only_ref}, only in the new run: {only_new}")
    lines.append("  AGREE within tolerance" if res["ok"] else "  DIFFER beyond tolerance")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    p.add_argument("reference")
    p.add_argument("new")
    p.add_argument("--strict", action="store_true", help="exit 1 when the runs differ beyond tolerance")
    a = p.parse_args(argv)
    try:
        res = compare(a.reference, a.new)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_result(res, a.reference, a.new))
    return 1 if (a.strict and not res["ok"]) else 0


if __name__ == "__main__":
    sys.exit(main())
