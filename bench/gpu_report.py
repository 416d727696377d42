"""The report of ``python -m bench.gpu_check``: whether two sets of records agree, the
projected paper-preset wall time, the measured choices for a GPU run, and ``report.{json,md}``."""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

LATENT_PSNR_TOL = 0.5  # dB, per image, when the winning candidate differs
FF_PSNR_TOL, FF_SSIM_TOL = 1e-3, 1e-4  # feed-forward nets: float tolerance
PAPER = {"images": 500, "masks": 4, "candidates": 64, "iters": 1000}


PROJECTION_NOTE = (
    "\nHours on 1 and 4 devices. Latent methods: the fastest fp32 time per candidate-step measured above, "
    "scaled to K = 64 and 1000 steps; other methods: bench.run's per-image seconds; 4 devices = 1/4 "
    "(one actor each, units spread evenly); start-up and metrics excluded.\n"
)


def _methods():
    from facefill_core.methods import METHODS

    return METHODS


def agreement(a: list[dict], b: list[dict], label: str, strict: bool = False) -> list[dict]:
    """Per method: do records ``a`` and ``b`` (same methods, masks, images) agree? ``strict``
    (mixed precision, where the records themselves must stay put): latent methods need every
    image's PSNR within the tolerance, winner or not."""
    key = lambda r: (r["method"], r["mask"], r["image_index"])  # noqa: E731
    bb = {key(r): r for r in b}
    rows = []
    for method in dict.fromkeys(r["method"] for r in a):
        pairs = [(r, bb[key(r)]) for r in a if r["method"] == method and key(r) in bb]
        if not pairs:
            continue
        fam = pairs[0][0]["family"]
        dp = np.array([abs(x["psnr"] - y["psnr"]) for x, y in pairs])
        ds = np.array([abs(x["ssim"] - y["ssim"]) for x, y in pairs])
        same = [x["winner"] == y["winner"] for x, y in pairs]
        if fam == "classical":
            ok, rule = bool(dp.max() == 0 and ds.max() == 0), "equal"
        elif fam == "feedforward":
            ok, rule = bool(dp.max() <= FF_PSNR_TOL and ds.max() <= FF_SSIM_TOL), f"|dPSNR|<={FF_PSNR_TOL}"
        else:
            ok = all((s and not strict) or d <= LATENT_PSNR_TOL for s, d in zip(same, dp))
            rule = ("" if strict else "same winner or ") + f"|dPSNR|<={LATENT_PSNR_TOL}"
        rows.append(
            {"compare": label, "method": method, "family": fam, "n": len(pairs), "max_dpsnr": float(dp.max()),
             "max_dssim": float(ds.max()), "same_winners": int(sum(same)) if fam == "latent" else None,
             "rule": rule, "ok": bool(ok)}
        )  # fmt: skip
    return rows


def projection(steps: list[dict], e2e: Optional[dict]) -> Optional[dict]:
    """Paper preset wall time: latent methods from the fastest fp32 step per image (scaled to
    K = 64 and 1000 steps), the other methods from ``bench.run``'s per-image seconds; 4 devices
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
        f"`python -m bench.gpu_check` ({rep['size']} sizes), torch {rep['torch']}, {rep['threads']} torch "
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
                                                          "same_winners", "rule", "ok"])),
        ("Landmarks: torch cascade vs C++", _table(rep.get("landmarks"), ["device", "batch", "mean_abs_px",
            "median_abs_px", "max_abs_px", "cpp_img_per_s", "torch_img_per_s", "ok"])),
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
