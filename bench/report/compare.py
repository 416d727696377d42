"""``python -m bench.compare REFERENCE_RUN NEW_RUN``: do two runs give the same results?

Records are keyed by (method, mask, image_id, replicate). First the checks that fail whatever
the numerics: an empty side, a duplicated key, a method, mask, image or replicate on one side
only, a NaN PSNR/SSIM/NME on either side, or a value present on one side and missing on the
other. Then one of two comparisons, chosen from the manifests and printed with the reason:

* **exact**: both manifests say the numerics were pinned and the package versions are the same.
  Every record's PSNR, SSIM and NME must be equal bit for bit.
* **noise band**: otherwise (numerics free, a GPU, other versions). A record of a latent
  search is then only as reproducible as its seed, so per method x mask x metric the paired
  difference of the per-image means over seeds (new - reference, over the images of both) must
  lie within the band: the largest of the metric's tolerance (PSNR 0.01 dB, SSIM 1e-4, NME 1e-4),
  the paired t-interval's half-width, and, when a run has seed replicates, the interval of a
  difference of two means that is seed noise alone. Intervals are at 95% jointly (Bonferroni
  over the cells compared). See docs/statistics.md.

``make run`` calls it against the committed ``results/quick``; CI calls it with ``--strict``
(exit 1 when anything above fails). Exit 2: a run that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter, defaultdict
from typing import Optional

import numpy as np

from facefill_core.stats import cell_stats, paired_stats

TOLERANCES = {"psnr": 0.01, "ssim": 1e-4, "nme": 1e-4}
METRICS = tuple(TOLERANCES)
FAMILY_CONFIDENCE = 0.95  # joint confidence of all the noise-band intervals of one comparison


def _key(r: dict) -> tuple:
    return r["method"], r["mask"], r["image_id"], int(r.get("replicate", 0) or 0)


def fmt_key(k: tuple) -> str:
    return f"({k[0]}, {k[1]}, {k[2]}, replicate {k[3]})"


def load_run(run_dir: str) -> tuple[list, dict]:
    """The records (in file order) and the manifest (empty when absent) of a run.

    Raises:
        FileNotFoundError: no ``records.jsonl``.
        ValueError: a line that is not a record.
    """
    p = os.path.join(run_dir, "records.jsonl")
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{run_dir} has no records.jsonl (not a finished run)")
    records = []
    with open(p) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                _key(r)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{p}:{n}: not a record ({type(e).__name__}: {e})") from None
            records.append(r)
    manifest = {}
    mp = os.path.join(run_dir, "manifest.json")
    if os.path.isfile(mp):
        try:
            with open(mp) as f:
                manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{mp}: not JSON ({e})") from None
    return records, manifest


def numerics_pinned(manifest: dict) -> bool:
    """Whether a run's manifest says its numerics were pinned: ``machine.numerics.pinned`` (what
    :func:`bench.harness.numerics.run_report` measured; False on a GPU), else ``machine.numerics_pinned``,
    ``numerics.pinned``, ``numerics == "pinned"`` or the config's ``numerics``."""
    machine = manifest.get("machine") or {}
    if isinstance(machine.get("numerics"), dict) and "pinned" in machine["numerics"]:
        return bool(machine["numerics"]["pinned"])
    if "numerics_pinned" in machine:
        return bool(machine["numerics_pinned"])
    num = manifest.get("numerics")
    if isinstance(num, dict) and "pinned" in num:
        return bool(num["pinned"])
    if isinstance(num, str):
        return num == "pinned"
    cfg_num = (manifest.get("config") or {}).get("numerics")
    return cfg_num is True or cfg_num == "pinned"


def choose_mode(ref_manifest: dict, new_manifest: dict) -> tuple[str, str]:
    """``("exact" | "noise band", why)``."""
    pinned = numerics_pinned(ref_manifest), numerics_pinned(new_manifest)
    if not all(pinned):
        which = [name for name, p in zip(("reference", "new run"), pinned) if not p]
        return "noise band", f"numerics not pinned in the {' and the '.join(which)}"
    va, vb = ref_manifest.get("versions"), new_manifest.get("versions")
    if not va or not vb:
        return "noise band", "a manifest records no package versions"
    if va != vb:
        diff = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
        shown = ", ".join(f"{k} {va.get(k)} vs {vb.get(k)}" for k in diff[:4])
        return "noise band", f"package versions differ ({shown})"
    return "exact", "both runs pinned their numerics and used the same package versions"


def _bad(v) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def check_records(ref: list, new: list) -> list[str]:
    """The failures that do not depend on the numerics, one line each."""
    fails = []
    for side, recs in (("reference", ref), ("new run", new)):
        if not recs:
            fails.append(f"the {side} has no records")
        dup = [(k, c) for k, c in Counter(_key(r) for r in recs).items() if c > 1]
        if dup:
            k, c = dup[0]
            fails.append(f"the {side} has {len(dup)} duplicated key(s), e.g. {fmt_key(k)} x{c}")
    if not ref or not new:
        return fails
    a, b = {_key(r): r for r in ref}, {_key(r): r for r in new}
    named = set()  # sides whose missing records a method/mask/image/replicate line already names
    for i, what in ((0, "method"), (1, "mask"), (2, "image"), (3, "replicate")):
        sa, sb = {k[i] for k in a}, {k[i] for k in b}
        for side, only in (("reference", sa - sb), ("new run", sb - sa)):
            if only:
                shown = ", ".join(str(x) for x in sorted(only, key=str)[:5])
                more = f" and {len(only) - 5} more" if len(only) > 5 else ""
                fails.append(f"{what}(s) only in the {side}: {shown}{more}")
                named.add(side)
    for side, only in (("reference", set(a) - set(b)), ("new run", set(b) - set(a))):
        if only and side not in named:  # e.g. one image missing for one method only
            fails.append(f"{len(only)} record(s) only in the {side}, e.g. {fmt_key(sorted(only, key=str)[0])}")
    for side, recs in (("reference", a), ("new run", b)):
        for m in METRICS:
            nan = sorted((k for k, r in recs.items() if _bad(r.get(m))), key=str)
            if nan:
                fails.append(f"NaN {m} in the {side}: {len(nan)} record(s), e.g. {fmt_key(nan[0])}")
    for m in METRICS:
        one = sorted((k for k in set(a) & set(b) if (a[k].get(m) is None) != (b[k].get(m) is None)), key=str)
        if one:
            side = "reference" if a[one[0]].get(m) is None else "new run"
            fails.append(
                f"{m} missing on one side: {len(one)} record(s), e.g. {fmt_key(one[0])} has none in the {side}"
            )
    return fails


def exact_diffs(ref: list, new: list) -> dict:
    """Per metric: ``(records that differ, max |difference|, its key)`` over the common keys."""
    a, b = {_key(r): r for r in ref}, {_key(r): r for r in new}
    out = {}
    for m in METRICS:
        n, worst, where = 0, 0.0, None
        for k in sorted(set(a) & set(b), key=str):
            x, y = a[k].get(m), b[k].get(m)
            if x is None or y is None or _bad(x) or _bad(y):
                continue  # reported by check_records
            if x != y:
                n += 1
                if abs(x - y) >= worst:
                    worst, where = abs(x - y), k
        out[m] = (n, worst, where)
    return out


def noise_band(ref: list, new: list) -> list[dict]:
    """Per (method, mask, metric) present on both sides: the paired difference new - reference
    of per-image means over seeds, its band (module docstring) and whether it lies within."""
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for side, recs in ((0, ref), (1, new)):
        for r in recs:
            for m in METRICS:
                values[(r["method"], r["mask"], m)][side].setdefault(r["image_id"], []).append(r.get(m))
    cells = [c for c in sorted(values) if 0 in values[c] and 1 in values[c]]
    conf = 1 - (1 - FAMILY_CONFIDENCE) / max(1, len(cells))
    from scipy import stats as sps

    out = []
    for method, mask, m in cells:
        va, vb = values[(method, mask, m)][0], values[(method, mask, m)][1]
        p = paired_stats(vb, va, confidence=conf)
        seeds = [cell_stats(v) for v in (va, vb)]
        seed_band = float("nan")
        dof = sum(s.n_values - s.n_images for s in seeds)  # within-image degrees of freedom
        if dof > 0 and p.n_images > 0:
            pooled = sum((s.n_values - s.n_images) * s.seed_sd**2 for s in seeds if s.n_values > s.n_images) / dof
            se = math.sqrt(pooled * sum(1.0 / (p.n_images * max(1, s.n_seeds)) for s in seeds))
            seed_band = float(sps.t.ppf(0.5 + conf / 2, dof) * se)
        band = max(
            TOLERANCES[m],
            p.half_width if np.isfinite(p.half_width) else 0.0,
            seed_band if np.isfinite(seed_band) else 0.0,
        )
        ok = bool(np.isfinite(p.mean)) and abs(p.mean) <= band
        out.append(
            dict(method=method, mask=mask, metric=m, diff=p.mean, band=band, paired=p, seed_band=seed_band, ok=ok)
        )
    return out


def compare(reference: str, new: str) -> dict:
    """Everything :func:`format_result` prints: ``mode``, ``why``, ``failures`` (lines),
    ``n`` (common records), ``exact`` or ``cells`` (noise band), and ``ok``.

    Raises:
        FileNotFoundError, ValueError: a run that cannot be read.
    """
    ref, ref_m = load_run(reference)
    new_recs, new_m = load_run(new)
    mode, why = choose_mode(ref_m, new_m)
    failures = check_records(ref, new_recs)
    n = len({_key(r) for r in ref} & {_key(r) for r in new_recs})
    res = {"mode": mode, "why": why, "failures": failures, "n": n, "exact": None, "cells": None}
    if mode == "exact":
        res["exact"] = exact_diffs(ref, new_recs)
        for m, (count, worst, where) in res["exact"].items():
            if count:
                failures.append(f"{m}: {count} record(s) not identical, max |d| {worst:.3g} at {fmt_key(where)}")
    else:
        res["cells"] = noise_band(ref, new_recs)
        for c in res["cells"]:
            if not c["ok"]:
                failures.append(
                    f"{c['metric']} {c['method']}/{c['mask']}: mean difference {c['diff']:+.4g} outside the band "
                    f"±{c['band']:.4g} ({c['paired'].n_images} images, seeds new|reference "
                    f"{c['paired'].n_seeds_a}|{c['paired'].n_seeds_b})"
                )
    res["ok"] = not failures
    return res


def format_result(res: dict, reference: str, new: str) -> str:
    lines = [f"records of {new} vs {reference}: {res['n']} matched by (method, mask, image, replicate)"]
    lines.append(f"  comparison: {res['mode']} ({res['why']})")
    if res["exact"] is not None:
        for m, (count, worst, _) in res["exact"].items():
            lines.append(f"  {m}: {count} record(s) differ, max |d| = {worst:.3g}")
    if res["cells"]:
        conf = 1 - (1 - FAMILY_CONFIDENCE) / len(res["cells"])
        lines.append(
            f"  {len(res['cells'])} method x mask x metric cells, each interval at {conf:.4%} "
            f"({FAMILY_CONFIDENCE:.0%} jointly); tolerances {', '.join(f'{m} {t:g}' for m, t in TOLERANCES.items())}"
        )
        for m in METRICS:
            cs = [c for c in res["cells"] if c["metric"] == m and np.isfinite(c["diff"])]
            if cs:
                w = max(cs, key=lambda c: abs(c["diff"]) / c["band"])
                lines.append(
                    f"  {m}: largest difference relative to its band: {w['method']}/{w['mask']} "
                    f"{w['diff']:+.4g} (band ±{w['band']:.4g})"
                )
    lines += [f"  FAIL {f}" for f in res["failures"]]
    if res["ok"]:
        lines.append("  AGREE: identical records" if res["mode"] == "exact" else "  AGREE within the noise band")
    else:
        lines.append(f"  DIFFER: {len(res['failures'])} failure(s)")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    p.add_argument("reference")
    p.add_argument("new")
    p.add_argument("--strict", action="store_true", help="exit 1 when the runs differ or a check fails")
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
