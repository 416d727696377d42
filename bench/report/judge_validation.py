"""``python -m bench.report.judge_validation [RUN_DIR] [--out results/judges]``: the validation study of
the independent judges (:mod:`facefill_core.judges`), written to ``OUT/validation.{md,json}``.

1. Face Mesh NME: an image against itself shifted by k px must give about k / IOD (embedded test
   images); its rank agreement (Spearman) with dlib's NME over every record of RUN_DIR (the stored
   uint8 completions vs the undamaged originals); si-ld, si-ld+, si-ldsoft re-judged against si
   with it, paired over images (and seeds when the run has replicates).
2. Identity (FaceNet at 160 px from our 64 px): the same face shifted / blurred / JPEG-compressed
   vs different faces of the test set, ROC AUC of the cosine similarity.
3. Per-image cost of each judge on this machine (min over rounds) and its extrapolation to
   ``make run`` (11 methods x 4 masks x 8 images = 352 records, 2 workers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

LATENT_PAIRS = ("si-ld", "si-ld+", "si-ldsoft")


def _shift(images: np.ndarray, k: int) -> np.ndarray:
    out = np.roll(images, k, axis=2)
    out[:, :, :k] = images[:, :, :1]  # edge-replicate the uncovered columns
    return out


def mesh_shift_study(fm, images) -> list[dict]:
    from facefill_core.judges.mesh import PRESENCE_THRESHOLD, interocular, mesh_nme

    ref, ok = fm.predict(images)
    rows = []
    for k in (1, 2, 3, 4):
        pts, ok2 = fm.predict(_shift(images, k))
        e = mesh_nme(pts, ref, ok2 > PRESENCE_THRESHOLD, ok > PRESENCE_THRESHOLD)
        expect = k / interocular(ref)
        fin = np.isfinite(e)
        rows.append(
            {
                "shift_px": k,
                "mesh_nme_mean": float(e[fin].mean()),
                "k_over_iod_mean": float(expect[fin].mean()),
                "ratio_mean": float((e[fin] / expect[fin]).mean()),
                "ratio_sd": float((e[fin] / expect[fin]).std(ddof=1)),
                "n": int(fin.sum()),
                "failures": int((~fin).sum()),
            }
        )
    return rows


def run_mesh_study(fm, run_dir: str) -> dict:
    """Mesh NME of every record of ``run_dir`` from its stored outputs; Spearman vs dlib NME;
    the latent methods re-judged against si."""
    from scipy.stats import spearmanr

    from bench.report.tables import load_records
    from facefill_core.data import load_test_set
    from facefill_core.judges.mesh import PRESENCE_THRESHOLD, mesh_nme
    from facefill_core.stats import paired_stats

    manifest = json.load(open(os.path.join(run_dir, "manifest.json")))
    cfg, data = manifest["config"], manifest["data"]
    ts = load_test_set(cfg["data"], cfg["n_images"], tuple(data["box"]))
    ref, ref_ok = fm.predict(ts.images)
    records = load_records(run_dir)
    # outputs per uid file: rows are images start:stop of that unit
    d = os.path.join(run_dir, "outputs")
    mesh = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".npy") or fn.startswith("."):
            continue
        parts = fn[:-4].split("__")
        method, mask, span = parts[0], parts[1], parts[2]
        rep = int(parts[3][1:]) if len(parts) > 3 else 0
        start, stop = (int(v) for v in span.split("-"))
        out = np.load(os.path.join(d, fn))
        pts, ok = fm.predict(out)
        e = mesh_nme(pts, ref[start:stop], ok > PRESENCE_THRESHOLD, ref_ok[start:stop] > PRESENCE_THRESHOLD)
        for j, i in enumerate(range(start, stop)):
            mesh[(method, mask, i, rep)] = float(e[j])
    pairs = [
        (r["nme"], mesh[(r["method"], r["mask"], r["image_index"], r.get("replicate", 0))])
        for r in records
        if (r["method"], r["mask"], r["image_index"], r.get("replicate", 0)) in mesh
    ]
    both = np.array([(a, b) for a, b in pairs if a is not None and np.isfinite(b)])
    rho, p = spearmanr(both[:, 0], both[:, 1])
    fails = sum(1 for _, b in pairs if not np.isfinite(b))
    per_cell_rho = {}
    masks = sorted({r["mask"] for r in records})
    methods = sorted({r["method"] for r in records})
    for k in masks:  # orderings of the methods (cell means) per mask
        a = [
            np.nanmean([x["nme"] for x in records if x["method"] == m and x["mask"] == k and x["nme"] is not None])
            for m in methods
        ]
        b = [_finite_mean([v for (mm, kk, _, _), v in mesh.items() if mm == m and kk == k]) for m in methods]
        ok = np.isfinite(a) & np.isfinite(b)  # a cell whose every mesh failed has no mean
        per_cell_rho[k] = float(spearmanr(np.array(a)[ok], np.array(b)[ok])[0])
    # re-judge: paired over images (x seeds) vs si, dlib NME and mesh NME
    rejudge = []
    for k in masks:
        for m in LATENT_PAIRS:
            row = {"mask": k, "method": m}
            for name, value in (
                ("nme", lambda r: r["nme"]),
                ("mesh_nme", lambda r: mesh.get((r["method"], r["mask"], r["image_index"], r.get("replicate", 0)))),
            ):
                side = {}
                for meth in (m, "si"):
                    side[meth] = {}
                    for r in records:
                        if r["method"] == meth and r["mask"] == k:
                            side[meth].setdefault(r["image_id"], []).append(value(r))
                ps = paired_stats(side[m], side["si"])
                row[name] = {
                    "mean": ps.mean,
                    "half_width": ps.half_width,
                    "n_images": ps.n_images,
                    "n_seeds": max(ps.n_seeds_a, ps.n_seeds_b),
                    "wins": int(sum(1 for x in ps.differences if x < 0)),
                    "excludes_zero": ps.excludes_zero,
                }
            rejudge.append(row)
    return {
        "run_dir": run_dir,
        "records": len(records),
        "mesh_scored": len(both),
        "mesh_failures": fails,
        "spearman_records": float(rho),
        "spearman_p": float(p),
        "spearman_methods_per_mask": per_cell_rho,
        "rejudge_vs_si": rejudge,
    }


def _finite_mean(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _auc(pos, neg) -> float:
    """ROC AUC = P(pos > neg) + 0.5 P(tie) (Mann-Whitney)."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def identity_validation(net, images) -> dict:
    import cv2

    from facefill_core.judges.identity import identity_similarity

    emb = net(images)
    variants = {
        "shift 2 px": _shift(images, 2),
        "gaussian blur sigma 1": np.stack([cv2.GaussianBlur(im, (0, 0), 1.0) for im in images]),
        "JPEG q=30": np.stack(
            [
                cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_UNCHANGED)
                for im in images
            ]
        ),
    }
    n = len(images)
    iu = np.triu_indices(n, 1)
    diff = (emb @ emb.T)[iu]  # different faces of the test set
    out = {"n_images": n, "different_faces": {"mean": float(diff.mean()), "sd": float(diff.std()), "pairs": len(diff)}}
    for name, v in variants.items():
        same = identity_similarity(net(v), emb)
        out[name] = {"mean": float(same.mean()), "sd": float(same.std()), "auc": _auc(same, diff)}
    return out


def timings(images, rounds: int = 3) -> dict:
    """Per image, each judge's CPU seconds and wall seconds (min over rounds, batch of
    ``len(images)``, 1 thread). CPU time is what a quiet machine's wall time would be; the wall
    time includes whatever else the machine runs."""
    import cv2
    import torch

    from facefill_core.imaging import uint8_to_signed
    from facefill_core.judges.features import InceptionFeatures
    from facefill_core.judges.identity import FaceNet
    from facefill_core.judges.mesh import FaceMesh
    from facefill_core.metrics import hole_metrics

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    x = (uint8_to_signed(images) + 1) / 2
    hole = torch.zeros(len(images), 1, 64, 64)
    hole[..., 16:48, 16:48] = 1
    fm, fn, inc = FaceMesh(num_threads=1), FaceNet(), InceptionFeatures()
    fns = {
        "hole (psnr+ssim)": lambda: hole_metrics(x.flip(-1), x, hole),
        "mesh": lambda: fm.predict(images),
        "identity": lambda: fn(images),
        "inception (kid/fid)": lambda: inc(images),
    }
    cpu, wall = {}, {}
    for name, f in fns.items():
        f()  # warm-up
        c, w = zip(*(_timed(f) for _ in range(rounds)))
        cpu[name], wall[name] = min(c) / len(images), min(w) / len(images)
    return {"cpu": cpu, "wall": wall}


def _timed(f) -> tuple[float, float]:
    c, t = time.process_time(), time.perf_counter()
    f()
    return time.process_time() - c, time.perf_counter() - t


def write_md(res: dict, path: str) -> None:
    L = ["# Judge validation", ""]
    if "mesh_shift" in res:
        L += [
            "## Face Mesh NME: an image vs itself shifted by k px (expected: k / IOD)",
            "",
            "| k (px) | mesh NME | k / IOD | ratio (mean ± SD) | images | failures |",
            "|---|---|---|---|---|---|",
        ]
        for r in res["mesh_shift"]:
            L.append(
                f"| {r['shift_px']} | {r['mesh_nme_mean']:.4f} | {r['k_over_iod_mean']:.4f} | "
                f"{r['ratio_mean']:.3f} ± {r['ratio_sd']:.3f} | {r['n']} | {r['failures']} |"
            )
        L.append("")
    if "run" in res:
        r = res["run"]
        L += [
            f"## Face Mesh NME vs dlib NME over the records of `{r['run_dir']}`",
            "",
            f"Spearman rho over {r['mesh_scored']} records (per image x method x mask): "
            f"**{r['spearman_records']:.3f}** (p = {r['spearman_p']:.2g}); mesh failures (no face on result or "
            f"original): {r['mesh_failures']} of {r['records']}.",
            "",
            "Rank agreement of the methods' orderings (cell means) per mask: "
            + ", ".join(f"{k} {v:+.2f}" for k, v in r["spearman_methods_per_mask"].items())
            + ".",
            "",
            "### Latent methods re-judged against si (paired over images; difference method - si, lower is better; "
            "95% t-interval; wins = images where the method is lower)",
            "",
            "| mask | method | dlib NME diff | mesh NME diff |",
            "|---|---|---|---|",
        ]
        for row in r["rejudge_vs_si"]:
            cells = []
            for k in ("nme", "mesh_nme"):
                c = row[k]
                star = " *" if c["excludes_zero"] else ""
                cells.append(
                    f"{c['mean']:+.4f} ± {c['half_width']:.4f} ({c['wins']}/{c['n_images']}, "
                    f"seeds {c['n_seeds']}){star}"
                )
            L.append(f"| {row['mask']} | {row['method']} | {cells[0]} | {cells[1]} |")
        L += ["", "`*`: the interval excludes 0.", ""]
    if "identity" in res:
        r = res["identity"]
        d = r["different_faces"]
        L += [
            f"## Identity (FaceNet, 64 px resized to 160 px): same face altered vs different faces "
            f"({r['n_images']} test images)",
            "",
            f"Different faces: cosine {d['mean']:.3f} ± {d['sd']:.3f} (SD) over {d['pairs']} pairs.",
            "",
            "| same face, altered | cosine (mean ± SD) | ROC AUC vs different faces |",
            "|---|---|---|",
        ]
        for k, v in r.items():
            if isinstance(v, dict) and "auc" in v:
                L.append(f"| {k} | {v['mean']:.3f} ± {v['sd']:.3f} | {v['auc']:.3f} |")
        L.append("")
    if "timings" in res:
        t = res["timings"]
        L += [
            "## Cost per image (1 thread, min over 3 rounds, batch of 8)",
            "",
            "| judge | CPU ms / image | wall ms / image (loaded machine) | make run estimate (s, from CPU time) |",
            "|---|---|---|---|",
        ]
        for k, v in t["per_image_s"]["cpu"].items():
            wall = t["per_image_s"]["wall"][k]
            L.append(f"| {k} | {v * 1e3:.1f} | {wall * 1e3:.1f} | {t['make_run_s'][k]:.1f} |")
        L += ["", t["note"], ""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report.judge_validation")
    p.add_argument("run_dir", nargs="?", default="results/quick")
    p.add_argument("--out", default="results/judges")
    p.add_argument("--n-images", type=int, default=32, help="embedded test images for the shift and identity studies")
    p.add_argument("--skip", default="", help="comma list of mesh,run,identity,timings to skip")
    a = p.parse_args(argv)
    if not os.path.isfile(os.path.join(a.run_dir, "manifest.json")):
        print(f"error: {a.run_dir} holds no run (manifest.json)", file=sys.stderr)
        return 2
    from facefill_core.data import load_test_set
    from facefill_core.judges import judge_files
    from facefill_core.judges.mesh import FaceMesh

    skip = set(a.skip.split(",")) - {""}
    os.makedirs(a.out, exist_ok=True)
    images = load_test_set("embedded", a.n_images).images
    res = {"judges": judge_files(("mesh", "kid", "identity"))}
    fm = FaceMesh(num_threads=1)
    if "mesh" not in skip:
        res["mesh_shift"] = mesh_shift_study(fm, images)
    if "run" not in skip:
        res["run"] = run_mesh_study(fm, a.run_dir)
    if "identity" not in skip:
        from facefill_core.judges.identity import FaceNet

        res["identity"] = identity_validation(FaceNet(), images)
    if "timings" not in skip:
        per = timings(images[:8])
        records, extra = 352, 8  # make run: 11 methods x 4 masks x 8 images; the originals once
        make_run = {k: (records + extra) * v / (1 if k.startswith("inception") else 2) for k, v in per["cpu"].items()}
        res["timings"] = {
            "per_image_s": per,
            "make_run_s": make_run,
            "note": "Extrapolation: per-record judges run inside the 2 workers (records / 2 x cost); the Inception "
            "features run once per run in the report step on one process (360 images: 352 completions + 8 originals). "
            "make run itself: 587 s on this machine idle (README), so the 20% budget is 117 s. Wall times were "
            f"taken with the machine's load average at {os.getloadavg()[0]:.0f} on 2 cores: the CPU column is the "
            "quiet-machine estimate.",
        }
    with open(os.path.join(a.out, "validation.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    write_md(res, os.path.join(a.out, "validation.md"))
    print(os.path.join(a.out, "validation.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
