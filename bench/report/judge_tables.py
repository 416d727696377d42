"""The judges' sections of a run's ``tables.md`` (:mod:`facefill_core.judges`): hole-only PSNR /
SSIM and the known pixels' change, Face Mesh NME (failures counted), identity similarity, KID /
FID per (method, mask) computed here once per run from the saved outputs, and the rank
agreement of the metrics' orderings of the methods per mask."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
from tabulate import tabulate

# record field -> (title, digits, higher is better)
JUDGE_METRICS = {
    "hole_psnr": ("Hole-only PSNR (dB, the hole's pixels only), higher is better", 2, True),
    "hole_ssim": ("Hole-only SSIM (the SSIM map averaged over the hole's pixels), higher is better", 4, True),
    "known_changed_mean_abs": (
        "Known pixels changed (mean |result - original| outside the hole, 0-255 levels)",
        2,
        False,
    ),
    "mesh_nme": (
        "Face Mesh NME (468 MediaPipe points vs the undamaged image, / mesh inter-ocular distance), lower is better",
        4,
        False,
    ),
    "identity": ("Identity similarity (FaceNet cosine, original vs result), higher is better", 4, True),
}
# metrics whose orderings of the methods are compared (rank agreement); + : higher is better
RANKED = (
    ("psnr", True),
    ("ssim", True),
    ("hole_psnr", True),
    ("hole_ssim", True),
    ("nme", False),
    ("mesh_nme", False),
    ("identity", True),
    ("kid", False),
)


def _cell(s, digits) -> str:
    m, h, n = s
    if n == 0:
        return "n/a"
    return f"{m:.{digits}f}" if not np.isfinite(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def run_outputs(run_dir: str) -> dict:
    """``{(method, mask): uint8 (n, 64, 64, 3)}``: every saved output of a run, all shards and
    seed replicates of a cell stacked (file-name order)."""
    d = os.path.join(run_dir, "outputs")
    out = defaultdict(list)
    if not os.path.isdir(d):
        return {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".npy") and not fn.startswith("."):
            parts = fn[: -len(".npy")].split("__")
            if len(parts) >= 3:
                out[(parts[0], parts[1])].append(np.load(os.path.join(d, fn)))
    return {k: np.concatenate(v) for k, v in out.items()}


def distribution_scores(run_dir: str, manifest: dict, subsets: int = 100) -> dict:
    """KID (mean, std over subsets, subset size) and FID per (method, mask): Inception features
    of the completions vs of the run's undamaged test images. Empty without outputs.

    Raises:
        ValueError: the Inception file differs from the one in the run's manifest.
    """
    from facefill_core.data import load_test_set
    from facefill_core.judges import check_judge_files
    from facefill_core.judges.features import InceptionFeatures, fid, kid

    outs = run_outputs(run_dir)
    if not outs:
        return {}
    check_judge_files({k: v for k, v in (manifest.get("judges") or {}).items() if k == "kid"})
    cfg, data = manifest.get("config", {}), manifest.get("data", {})
    ts = load_test_set(cfg["data"], cfg["n_images"], tuple(data["box"]) if data.get("box") else cfg.get("box"))
    net = InceptionFeatures()
    ref = net(ts.images)
    scores = {}
    for key, images in sorted(outs.items()):
        f = net(images)
        if min(len(f), len(ref)) < 2:  # KID/FID need two samples a side: a 1-image run has no score
            nan = float("nan")
            scores[key] = {"kid": nan, "kid_std": nan, "kid_subset": 0, "fid": nan, "n": len(f), "n_ref": len(ref)}
            continue
        k_mean, k_std, size = kid(f, ref, subsets=subsets)
        scores[key] = {
            "kid": k_mean,
            "kid_std": k_std,
            "kid_subset": size,
            "fid": fid(f, ref),
            "n": len(f),
            "n_ref": len(ref),
        }
    return scores


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok])[0])


def rank_agreement(methods, masks, stats, dist: dict) -> list[str]:
    """Per mask, the Spearman correlation of the methods' orderings under each pair of metrics
    (cell means; signs aligned so that +1 means both metrics rank the methods alike)."""
    out = []
    for k in masks:
        cols = {}
        for metric, higher in RANKED:
            if metric == "kid":
                vals = [dist.get((m, k), {}).get("kid", np.nan) for m in methods]
            else:
                vals = [
                    stats[(m, k)][metric][0]
                    if (m, k) in stats and metric in stats[(m, k)] and stats[(m, k)][metric][2]
                    else np.nan
                    for m in methods
                ]
            vals = np.array(vals, float) * (1 if higher else -1)
            if np.isfinite(vals).sum() >= 3:
                cols[metric] = vals
        if len(cols) < 2:
            continue
        names = list(cols)
        rows = [[a] + [f"{_spearman(cols[a], cols[b]):+.2f}" for b in names] for a in names]
        out += [
            f"### {k} ({sum(1 for m in methods if (m, k) in stats)} methods)",
            "",
            tabulate(rows, ["metric"] + names, tablefmt="github", disable_numparse=True),
            "",
        ]
    if not out:
        return []
    return [
        "## Which judges agree: rank correlation of the methods' orderings per mask",
        "",
        "Spearman's rho between the orderings of the methods by their cell means under two metrics, "
        "signs aligned (+1: the two metrics rank the methods alike, -1: in reverse). kid: KID over "
        "the cell's completions.",
        "",
    ] + out


def judge_sections(run_dir: str, methods, masks, stats, manifest: dict) -> list[str]:
    """The markdown of the judges' tables (and ``tables/<metric>.csv``, ``tables/kid_fid.csv``)."""
    import csv

    md = []
    for key, (title, digits, _) in JUDGE_METRICS.items():
        if not any(key in stats[c] and stats[c][key][2] for c in stats):
            continue
        rows = [[m] + [_cell(stats[(m, k)][key], digits) if (m, k) in stats else "" for k in masks] for m in methods]
        md += [f"## {title}", "", tabulate(rows, ["method"] + masks, tablefmt="github"), ""]
        if key == "mesh_nme":
            fails = [
                (m, k, stats[(m, k)]["mesh_failures"])
                for m in methods
                for k in masks
                if (m, k) in stats and stats[(m, k)].get("mesh_failures")
            ]
            md += [
                "Face Mesh failures (no face found on the result or the original; counted, not averaged): "
                + f"{fails if fails else 'none'}.",
                "",
            ]
        with open(os.path.join(run_dir, "tables", f"{key}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method", "mask", "mean", "ci95_half_width", "n"])
            w.writerows([m, k, *stats[(m, k)][key]] for m in methods for k in masks if (m, k) in stats)
    dist = {}
    if "kid" in ((manifest.get("config") or {}).get("metrics") or ()):
        dist = distribution_scores(run_dir, manifest)
    if dist:
        n_ref = next(iter(dist.values()))["n_ref"]
        kid_rows = [
            [m]
            + [
                f"{dist[(m, k)]['kid'] * 1e3:.1f} ± {dist[(m, k)]['kid_std'] * 1e3:.1f}" if (m, k) in dist else ""
                for k in masks
            ]
            for m in methods
        ]
        fid_rows = [[m] + [f"{dist[(m, k)]['fid']:.1f}" if (m, k) in dist else "" for k in masks] for m in methods]
        some = next(iter(dist.values()))
        md += [
            "## KID x 1000 (Inception-v3 features, completions vs the undamaged test images), lower is better",
            "",
            tabulate(kid_rows, ["method"] + masks, tablefmt="github"),
            "",
            f"Mean ± standard deviation over 100 random subsets of {some['kid_subset']} images per set; each "
            f"cell compares its {some['n']} completions (images x seeds) with the {n_ref} undamaged test images. "
            "At this size KID is the primary distribution figure; FID (below) is biased upwards at small N.",
            "",
            "## FID (same features; biased at small N, for reference only), lower is better",
            "",
            tabulate(fid_rows, ["method"] + masks, tablefmt="github"),
            "",
        ]
        with open(os.path.join(run_dir, "tables", "kid_fid.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method", "mask", "kid", "kid_std_over_subsets", "kid_subset_size", "fid", "n", "n_reference"])
            w.writerows(
                [m, k, d["kid"], d["kid_std"], d["kid_subset"], d["fid"], d["n"], d["n_ref"]]
                for (m, k), d in sorted(dist.items())
            )
    return md + rank_agreement(methods, masks, stats, dist)
