"""The report of ``python -m bench.gpu.check``: whether two sets of records agree, the
projected paper-preset wall time, the measured choices for a GPU run, and ``report.{json,md}``."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Optional

import numpy as np

LATENT_PSNR_TOL = 0.5  # dB, per image, when the winning candidate differs
LATENT_SAME_PSNR_TOL = 0.05  # dB, per image, same winning candidate: the same z up to float error
FF_PSNR_TOL, FF_SSIM_TOL = 1e-3, 1e-4  # feed-forward nets: float tolerance
# px, torch cascade vs C++ per coordinate on the battery's faces (drawn from the DCGAN prior), near
# the error measured on CPU: mean 0.0028-0.0092, 99th percentile 0.062-0.22 px. The max is a tail
# statistic of the faces drawn: where a feature sits on a threshold a tree leaf differs, and on an
# early cascade level that moves many points of that face (one face of 256 had 52-58 of its 136
# coordinates over 0.6 px in each of the two high draws below); over six draws of 256 faces from the
# shipped prior (2-core AMD EPYC) the max was 0.42, 0.48, 0.56, 1.05, 1.57 and 2.28 px (faces from
# the 3,000-iteration prior: 0.33-1.03). tests/test_landmarks_torch.py bounds its own faces at
# 0.006 / 0.12 / 0.6.
LANDMARK_MEAN_TOL, LANDMARK_P99_TOL, LANDMARK_MAX_TOL = 0.015, 0.3, 2.5
PAPER = {"images": 500, "masks": 4, "candidates": 64, "iters": 1000}


PROJECTION_NOTE = (
    "\nHours on 1 and 4 devices. Latent methods: the fastest fp32 time per candidate-step measured above, "
    "scaled to K = 64 and 1000 steps; other methods: bench.harness.run's per-image seconds; 4 devices = 1/4 "
    "(one actor each, units spread evenly); start-up and metrics excluded.\n"
)


def _methods():
    from facefill_core.methods import METHODS

    return METHODS


def _sides(label: str) -> tuple[str, str]:
    parts = label.split(" vs ")
    return (parts[0], parts[1]) if len(parts) == 2 else ("a", "b")


def _key(r: dict) -> tuple:
    return (r["method"], r["mask"], r["image_index"])


def _finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))


def _gap(x, y) -> float:
    """``|x - y|``, NaN when either is missing or not finite (a NaN gap fails every rule)."""
    return abs(x - y) if _finite(x) and _finite(y) else float("nan")


def _missing(a: list[dict], b: list[dict], label: str) -> dict[str, str]:
    """Per method, one line naming every (mask, image) that is not paired exactly once: present on
    one side only, or recorded twice on one side."""
    names = _sides(label)
    counts = [Counter(_key(r) for r in recs) for recs in (a, b)]
    out: dict[str, list[str]] = {}
    for k in dict.fromkeys(list(counts[0]) + list(counts[1])):
        n = (counts[0][k], counts[1][k])
        if n == (1, 1):
            continue
        where = [f"{n[i]}x in {names[i]}" if n[i] else f"not in {names[i]}" for i in (0, 1) if n[i] != 1]
        out.setdefault(k[0], []).append(f"{k[1]} #{k[2]} " + ", ".join(where))
    return {m: f"{len(v)} unpaired: " + "; ".join(v) for m, v in out.items()}


def agreement(a: list[dict], b: list[dict], label: str, strict: bool = False) -> list[dict]:
    """Per method: do records ``a`` and ``b`` (same methods, masks, images) agree? ``label`` names
    the two sides (``"cpu vs cuda"``). Classical fills must be equal (PSNR, SSIM and NME); feed-forward
    nets within float tolerance; latent methods per image within :data:`LATENT_SAME_PSNR_TOL` when
    both chose the same candidate and :data:`LATENT_PSNR_TOL` when not; ``strict`` (mixed precision,
    where the records themselves must stay put) applies :data:`LATENT_PSNR_TOL` whatever the winner.
    A non-finite PSNR or SSIM fails, and so does a method with any (mask, image) that is not paired
    exactly once (missing on one side or duplicated): ``missing`` names them in one line."""
    missing = _missing(a, b, label)
    bb = {_key(r): r for r in b}
    rows = []
    for method in dict.fromkeys([r["method"] for r in a] + [r["method"] for r in b]):
        pairs = [(r, bb[_key(r)]) for r in a if r["method"] == method and _key(r) in bb]
        fam = (pairs[0][0] if pairs else next(r for r in a + b if r["method"] == method))["family"]
        finite = all(_finite(x[f]) and _finite(y[f]) for x, y in pairs for f in ("psnr", "ssim"))
        dp = np.array([_gap(x["psnr"], y["psnr"]) for x, y in pairs] or [np.nan])
        ds = np.array([_gap(x["ssim"], y["ssim"]) for x, y in pairs] or [np.nan])
        dn = [abs(x["nme"] - y["nme"]) for x, y in pairs if _finite(x["nme"]) and _finite(y["nme"])]
        same_nme_none = all((x["nme"] is None) == (y["nme"] is None) for x, y in pairs)
        same = [x["winner"] == y["winner"] for x, y in pairs]
        if fam == "classical":
            ok, rule = bool(dp.max() == 0 and ds.max() == 0 and max(dn, default=0) == 0 and same_nme_none), "equal"
        elif fam == "feedforward":
            ok, rule = bool(dp.max() <= FF_PSNR_TOL and ds.max() <= FF_SSIM_TOL), f"abs dPSNR<={FF_PSNR_TOL}"
        else:
            tol = [LATENT_SAME_PSNR_TOL if s and not strict else LATENT_PSNR_TOL for s in same]
            ok = bool(pairs) and all(d <= t for d, t in zip(dp, tol))
            same_rule = "" if strict else f"<={LATENT_SAME_PSNR_TOL} same winner, else"
            rule = f"abs dPSNR{same_rule}<={LATENT_PSNR_TOL}"
        rows.append(
            {"compare": label, "method": method, "family": fam, "n": len(pairs), "max_dpsnr": float(dp.max()),
             "max_dssim": float(ds.max()), "max_dnme": max(dn, default=None),
             "same_winners": int(sum(same)) if fam == "latent" else None, "rule": rule,
             "missing": missing.get(method), "ok": bool(ok and finite and pairs and method not in missing)}
        )  # fmt: skip
    return rows


def landmark_parity_ok(d: np.ndarray) -> bool:
    """Whether ``d``, the absolute per-coordinate differences (px) between the torch cascade and the
    C++ extension, is within the measured error: mean, 99th percentile and max each bounded."""
    d = np.asarray(d, dtype=np.float64)
    return bool(
        d.size
        and np.isfinite(d).all()
        and d.mean() <= LANDMARK_MEAN_TOL
        and np.percentile(d, 99) <= LANDMARK_P99_TOL
        and d.max() <= LANDMARK_MAX_TOL
    )


def projection(steps: list[dict], e2e: Optional[dict]) -> Optional[dict]:
    """Paper preset wall time: latent methods from the fastest fp32 step per image (scaled to
    K = 64 and 1000 steps), the other methods from ``bench.harness.run``'s per-image seconds; 4 devices
    = 1 / 4 (one actor each, units spread evenly; start-up excluded)."""
    if not steps or not e2e:
        return None
    per_image = {}
    for m, info in _methods().items():
        if info.family == "latent":
            rows = [r for r in steps if r["method"] == m and r.get("precision") == "fp32"]
            if not rows:
                return None
            best = min(rows, key=lambda r: r["ms_per_step"] / (r["B"] * r["K"]))
            per_image[m] = best["ms_per_step"] / 1000 / best["B"] * PAPER["candidates"] / best["K"] * PAPER["iters"]
        elif m in e2e["seconds_per_image"]:
            per_image[m] = e2e["seconds_per_image"][m]
    one = PAPER["images"] * PAPER["masks"] * sum(per_image.values())
    return {"seconds_per_image": per_image, "wall_h_1": one / 3600, "wall_h_4": one / 4 / 3600}


def _backend(r: dict) -> str:
    if r["backend"] != "cpp":
        return r["backend"]
    return f"cpp ({r['overlap_threads'] or 'all'} thread{'' if r['overlap_threads'] == 1 else 's'})"


def choices(steps: list[dict], mixed: list[dict]) -> list[dict]:
    """The measured answers for a GPU run, per latent method: the B x K per step with the least
    time per candidate-step, the fastest landmark backend at the largest B x K, and autocast's
    speed-up and whether its records stayed within tolerance."""
    per = lambda r: r["ms_per_step"] / (r["B"] * r["K"])  # noqa: E731
    ok = [r for r in steps if "error" not in r]
    out = []
    for m in dict.fromkeys(r["method"] for r in ok):
        fp32 = [r for r in ok if r["method"] == m and r["precision"] == "fp32"]
        big = max(r["B"] * r["K"] for r in fp32)
        best, fastest = min(fp32, key=per), min((r for r in fp32 if r["B"] * r["K"] == big), key=per)
        speedup = None
        for a in (r for r in ok if r["method"] == m and r["precision"] != "fp32"):
            same = [r for r in fp32 if (r["B"], r["K"], r["backend"]) == (a["B"], a["K"], a["backend"])]
            speedup = same[0]["ms_per_step"] / a["ms_per_step"] if same else None
        within = next((r["ok"] for r in mixed if r["method"] == m), None)
        out.append({"method": m, "best_BxK": f"{best['B']}x{best['K']}", "fastest_backend": _backend(fastest),
                    "autocast_speedup": speedup, "autocast_within_tol": within})  # fmt: skip
    return out


def _table(rows: Optional[list[dict]], cols: list[str], fmt: str = ".3g") -> str:
    from tabulate import tabulate

    if not rows:
        return "not measured\n"
    return tabulate([[r.get(c) for c in cols] for r in rows], cols, tablefmt="github", floatfmt=fmt) + "\n"


def write_report(rep: dict, out_dir: str) -> str:
    """``report.json`` (everything) and ``report.md`` (the tables) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(rep, f, indent=1, sort_keys=True)
    cuda = rep["cuda_half_run"]
    lines = [
        f"# gpu-check: {rep['device']}\n",
        f"`python -m bench.gpu.check` ({rep['size']} sizes), torch {rep['torch']}, {rep['threads']} torch "
        f"thread(s) of {rep['cpu_count']} cores (load average {rep.get('load_avg', float('nan')):.1f} at the end), "
        f"{rep['wall_s']} s. {rep['platform']}\n",
        "**CUDA half: run.**\n"
        if cuda
        else "**CUDA half: not run (no CUDA device visible); every GPU figure is not measured. "
        "This is the CPU half at small sizes.**\n",
    ]
    for name, err in rep["errors"].items():
        lines.append(f"**Section {name} failed:** `{err}`\n")
    proj = rep.get("projection")
    sections = [
        ("Records: CPU vs CUDA", _table(rep["agreement"], ["method", "family", "n", "max_dpsnr", "max_dssim",
                                                          "max_dnme", "same_winners", "rule", "missing", "ok"])),
        ("Landmarks: torch cascade vs C++", _table(rep.get("landmarks"), ["device", "batch", "mean_abs_px",
            "median_abs_px", "p99_abs_px", "max_abs_px", "cpp_img_per_s", "torch_img_per_s", "ok"])),
        ("Latent-search step", _table(rep.get("steps"), ["method", "B", "K", "backend", "overlap_threads",
            "precision", "ms_per_step", "peak_mem_mib", "landmark_wait_share", "error"])),
        ("Mixed precision vs fp32 (centre mask)", _table(rep.get("mixed_precision"), ["method", "n", "max_dpsnr",
            "max_dssim", "same_winners", "ok"])),
        ("Choices, as measured here", _table(rep.get("choices"), ["method", "best_BxK", "fastest_backend",
            "autocast_speedup", "autocast_within_tol"])),
        ("Training", _table(rep.get("training"), ["model", "batch", "iters", "its_per_s"])),
        ("End to end", _table([rep["end_to_end"]] if rep.get("end_to_end") else None,
                              ["command", "wall_s", "records"])),
        ("Projected paper preset (500 images x 4 masks x all methods)",
         _table([proj] if proj else None, ["wall_h_1", "wall_h_4"]) + PROJECTION_NOTE
         + ("" if cuda else "\nThese are CPU figures of this machine (1 and 4 CPU workers), not GPU figures.\n")),
    ]  # fmt: skip
    for title, body in sections:
        lines += [f"## {title}\n", body]
    if not cuda:
        lines.insert(3, "Records on CPU only: the CPU-vs-CUDA agreement was not measured.\n")
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))
    return out_dir
