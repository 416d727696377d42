"""A run directory: its layout, its manifest (provenance), the per-unit records and outputs,
and their merge.

    manifest.json        config, identity (what --resume must match), versions, commit, machine,
                         data (spec, box, sizes), weights per method (path, sha256)
    masks/<mask>.npy     uint8 (N, 64, 64), 1 = hole; the same for every method
    records/<uid>.jsonl  one object per image of a finished unit (written last, atomically)
    outputs/<uid>.npy    uint8 (n, 64, 64, 3) completed images of the unit
    outputs/png/<method>/<mask>/<index>.png  the same completions as PNG (index: 5 digits, the
                         image's place in the test set; the layout bench.harness.score reads)
    trajectories/<uid>.npz  a latent method's first shard: its completion at a few iterations
    records.jsonl        all records, sorted; tables.md, tables/, figures/ from bench.report.tables
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
from typing import Optional

import numpy as np

from bench.harness.cli import UsageError
from bench.harness.config import BenchConfig
from bench.harness.numerics import run_report as numerics_report
from bench.harness.sweep import expand
from bench.report.figures import save_trajectory
from bench.report.tables import load_unit_records
from facefill_core.config import MaskConfig
from facefill_core.fileio import sha256_file, write_json_atomic
from facefill_core.judges import check_judge_files, judge_files
from facefill_core.masks import FOLDER, folder_masks, make_masks
from facefill_core.methods import PLUGIN, method_info
from facefill_core.metrics import METRIC_SETTINGS
from facefill_core.pretrained import shipped_path

log = logging.getLogger("bench")
PACKAGES = ("torch", "numpy", "scikit-image", "opencv-python-headless", "ray", "scipy", "facefill", "gan-face-generate")


def run_masks(cfg: BenchConfig, mask: str) -> np.ndarray:
    """The run's masks of one kind: uint8 ``(n_images, 64, 64)``, 1 = hole (seeded by ``cfg.seed``;
    ``folder``: read from ``cfg.mask_folder``, matched to the test images by name)."""
    if mask == FOLDER:
        from facefill_core.data import FaceDataset

        ids = FaceDataset(cfg.data, box=cfg.box).test_ids[: cfg.n_images]
        return folder_masks(cfg.mask_folder, ids)
    return make_masks(MaskConfig(mask, seed=cfg.seed), cfg.n_images)[:, 0].numpy().astype(np.uint8)


def masks_path(run_dir: str, mask: str) -> str:
    return os.path.join(run_dir, "masks", f"{mask}.npy")


def git_commit() -> Optional[str]:
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        r = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def git_dirty() -> Optional[bool]:
    """Whether tracked files differ from the commit (``git status``, untracked files ignored);
    None outside a git checkout."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        r = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(r.stdout.strip()) if r.returncode == 0 else None


def cpu_model() -> Optional[str]:
    """The CPU's model name from ``/proc/cpuinfo``; None where it has none."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return None


def dlib_version() -> Optional[str]:
    """The version of the dlib the extension links: Debian's libdlib-dev package, else
    pkg-config's; None when neither knows."""
    for cmd in (["dpkg-query", "-W", "-f=${Version}", "libdlib-dev"], ["pkg-config", "--modversion", "dlib-1"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    return None


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    out["dlib (linked)"] = dlib_version()
    return out


def weights_manifest(cfg: BenchConfig) -> dict:
    """Per method with trained weights: the file the run uses (the user's, or the shipped one)
    and its sha256; each record's ``weights_sha256`` says which file its worker really loaded."""
    out = {}
    for m in cfg.methods:
        kind = method_info(m).weights
        if kind:
            path = os.path.abspath(cfg.weights_for(m) or shipped_path(kind))
            out[m] = {
                "kind": kind,
                "path": os.path.relpath(path, os.path.abspath(cfg.out)),  # relative to the run directory
                "sha256": sha256_file(path),
                "shipped": cfg.weights_for(m) is None,
            }
        elif method_info(m).family == PLUGIN:  # a plugin's own file, if it declares one
            from facefill_core.plugins import declaration

            p = declaration(m)
            out[m] = {"kind": "plugin", "plugin": method_info(m).plugin, "family": p.family}
            if p.weights:
                out[m].update(path=os.path.relpath(p.weights, os.path.abspath(cfg.out)), sha256=sha256_file(p.weights))
    return out


def check_existing_run(cfg: BenchConfig, resume: bool) -> None:
    """Refuse an ``--out`` that holds a run unless resuming it with the same settings.

    Raises:
        UsageError: an existing run without ``resume``, or one made with other settings.
    """
    path = os.path.join(cfg.out, "manifest.json")
    if not os.path.exists(path):
        return
    if not resume:
        raise UsageError(f"--out {cfg.out} already holds a run: add --resume to continue it, or choose another --out")
    with open(path) as f:
        old = json.load(f)
    identity = json.loads(json.dumps(cfg.identity()))
    if old.get("identity") != identity:
        diff = [k for k in identity if old.get("identity", {}).get(k) != identity[k]]
        raise UsageError(f"--resume: {cfg.out} was run with other settings ({', '.join(diff)})")
    try:
        check_judge_files(old.get("judges"))  # the judges' model files are the run's
    except (ValueError, ImportError) as e:
        raise UsageError(f"--resume: {e}") from None


def prepare_run_dir(cfg: BenchConfig, resume: bool, data_metadata: dict) -> dict:
    """Write the manifest and the run's masks; on ``resume``, check they match the old run.

    Raises:
        UsageError: see :func:`check_existing_run`; a saved mask that differs.
    """
    import torch

    check_existing_run(cfg, resume)
    manifest = {
        "config": {**dataclasses.asdict(cfg), "out": "."},  # paths in the manifest are relative to the run
        "identity": cfg.identity(),
        "inpaint_config": {
            v.label: dataclasses.asdict(dataclasses.replace(cfg.inpaint_config(v.method), **v.overrides()))
            for v in expand(cfg.methods, cfg.sweep)
        },
        "weights": weights_manifest(cfg),
        "judges": judge_files(getattr(cfg, "metrics", ())),  # model file, package, sha256 per judge
        "data": data_metadata,
        "metric_settings": METRIC_SETTINGS,
        "versions": versions(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            # torch's and the landmark kernels' ISA, MKL's branch, threads, pinned (bench.harness.numerics)
            "numerics": numerics_report(cfg),
        },
        "command": ["python", "-m", "bench.run", *sys.argv[1:]],
        "started": dt.datetime.now().isoformat(timespec="seconds"),
    }
    write_json_atomic(os.path.join(cfg.out, "manifest.json"), manifest)
    os.makedirs(os.path.join(cfg.out, "masks"), exist_ok=True)
    for mask in cfg.masks:
        p = masks_path(cfg.out, mask)
        m = run_masks(cfg, mask)
        if os.path.exists(p):
            if not np.array_equal(np.load(p), m):
                raise UsageError(f"--resume: saved mask {p} differs from the one this run would make")
            continue
        tmp = p + ".tmp.npy"
        np.save(tmp, m)
        os.replace(tmp, p)
    return manifest


def setup_logging(run_dir: str, verbose: bool) -> None:
    """``run.log`` in the run directory; also stderr when ``verbose``."""
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    fh = logging.FileHandler(os.path.join(run_dir, "run.log"))
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    if verbose:
        log.addHandler(logging.StreamHandler(sys.stderr))


def write_unit(run_dir: str, result: dict) -> None:
    """Write one finished unit atomically: outputs/<uid>.npy, then records/<uid>.jsonl (last:
    its presence is what marks the unit done)."""
    rec_dir, out_dir = os.path.join(run_dir, "records"), os.path.join(run_dir, "outputs")
    os.makedirs(rec_dir, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    uid = result["uid"]
    if "trajectory" in result:  # the latent search's snapshots, for the figures
        save_trajectory(run_dir, uid, result["trajectory"])
    tmp_out = os.path.join(out_dir, f".{uid}.npy.tmp")
    tmp_rec = os.path.join(rec_dir, f".{uid}.jsonl.tmp")
    try:
        with open(tmp_out, "wb") as f:
            np.save(f, result["outputs"])
        with open(tmp_rec, "w") as f:
            for r in result["records"]:
                f.write(json.dumps(r, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_out, os.path.join(out_dir, f"{uid}.npy"))
        write_pngs(run_dir, result["records"], result["outputs"])
        os.replace(tmp_rec, os.path.join(rec_dir, f"{uid}.jsonl"))  # last: the unit counts as done
    except BaseException:
        for t in (tmp_out, tmp_rec):  # a failed write (disk full, ...) leaves no partial file
            if os.path.exists(t):
                os.remove(t)
        raise


def png_path(root: str, method: str, mask: str, index: int) -> str:
    """``root/<method>/<mask>/<index:05d>.png``: a completion's PNG (run: ``outputs/png``; kit
    predictions: the predictions folder without the method level)."""
    return os.path.join(root, method, mask, f"{index:05d}.png")


def write_pngs(run_dir: str, records: list, outputs: np.ndarray) -> None:
    """The unit's completions as PNG, ``outputs/png/<method>/<mask>/<index>.png`` (lossless:
    the same uint8 as the .npy)."""
    from PIL import Image

    for r, img in zip(records, outputs):
        label = r["method"] + (f"__r{r['replicate']:03d}" if r.get("replicate") else "")  # seed replicates
        p = png_path(os.path.join(run_dir, "outputs", "png"), label, r["mask"], r["image_index"])
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = p + ".tmp"
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, p)


def done_units(run_dir: str) -> set[str]:
    d = os.path.join(run_dir, "records")
    if not os.path.isdir(d):
        return set()
    return {f[: -len(".jsonl")] for f in os.listdir(d) if f.endswith(".jsonl") and not f.startswith(".")}


def unit_outputs(run_dir: str, uid: str) -> Optional[np.ndarray]:
    p = os.path.join(run_dir, "outputs", f"{uid}.npy")
    return np.load(p) if os.path.exists(p) else None


def merge_records(run_dir: str) -> list[dict]:
    """records/*.jsonl -> records.jsonl (atomic), sorted; one object per image x method x mask x
    seed replicate (records without ``replicate`` are replicate 0)."""
    recs = load_unit_records(run_dir)
    recs.sort(key=lambda r: (r["method"], r["mask"], r.get("replicate", 0), r["image_index"]))
    keys = [(r["method"], r["mask"], r.get("replicate", 0), r["image_index"]) for r in recs]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"duplicate records in {os.path.join(run_dir, 'records')}")
    tmp = os.path.join(run_dir, "records.jsonl.tmp")
    with open(tmp, "w") as f:
        for r in recs:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    os.replace(tmp, os.path.join(run_dir, "records.jsonl"))
    return recs
