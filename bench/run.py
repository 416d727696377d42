"""``python -m bench.run``: every method x mask x image, fanned out with Ray, into one run dir.

python -m bench.run --masks all --preset quick                 # make run (CPU workers)
python -m bench.run --masks all --preset paper --gpus 4        # the thesis's experiment
python -m bench.run --data celeba:/data/img_align_celeba --preset paper --gpus 4
python -m bench.run --resume --out results/runs/2026-11-27T12-00-00
"""

from __future__ import annotations

import argparse
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

from facefill_core.config import PRESETS, BenchConfig, MaskConfig

log = logging.getLogger("bench")


class UsageError(Exception):
    """A bad argument: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.run", description="Benchmark face inpainting methods.")
    p.add_argument("--masks", default="all", help="all | comma list of centre,left,right,random,pattern")
    p.add_argument(
        "--methods", default="all", help="all | comma list (si,si-ld,si-ld+,ce,gfc,telea,ns,biharmonic,mean)"
    )
    p.add_argument("--data", default="embedded", help="embedded | celeba:PATH | folder:PATH")
    p.add_argument("--n-images", type=int, default=None, help="test images (preset: quick 8, paper 500)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--iters", type=int, default=None, help="latent-search Adam steps (quick 100, paper 1000)")
    p.add_argument("--candidates", type=int, default=None, help="latents per image (quick 16, paper 64)")
    p.add_argument("--lambda", dest="prior_weight", type=float, default=0.003, help="prior loss weight")
    p.add_argument("--gpus", type=int, default=None, help="GPUs to use, one Ray actor each (default: all visible)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="CPU workers when --gpus 0 (default: one per core; 0 = in-process, no Ray)",
    )
    p.add_argument("--shard-size", type=int, default=4, help="images per work unit for latent methods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default results/runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="skip units already finished in --out")
    p.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    p.add_argument("--box", default=None, help="override the canonical face box: left,top,right,bottom")
    p.add_argument("--weights-dcgan", default=None)
    p.add_argument("--weights-ce", default=None)
    p.add_argument("--weights-gfc", default=None)
    p.add_argument(
        "--landmark-backend",
        choices=["auto", "cpp", "torch"],
        default="auto",
        help="landmark cascade in the latent search (auto: cpp on CPU, torch on CUDA)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs")
    p.add_argument("--inject-crash", default=None, help=argparse.SUPPRESS)
    return p


def build_config(argv: list[str]) -> tuple[BenchConfig, argparse.Namespace]:
    """Parse and validate everything that can be checked before any work starts."""
    from facefill_core.data import FaceDataset
    from facefill_core.inpainters import parse_methods
    from facefill_core.masks import parse_masks

    a = build_parser().parse_args(argv)
    try:
        masks = parse_masks(a.masks)
        methods = parse_methods(a.methods)
    except ValueError as e:
        raise UsageError(str(e)) from None
    preset = PRESETS[a.preset]
    n_images = a.n_images if a.n_images is not None else preset["n_images"]
    iters = a.iters if a.iters is not None else preset["iters"]
    candidates = a.candidates if a.candidates is not None else preset["candidates"]
    if n_images <= 0:
        raise UsageError(f"--n-images must be positive, got {n_images}")
    if iters < 0 or candidates <= 0:
        raise UsageError(f"--iters must be >= 0 and --candidates > 0, got {iters}, {candidates}")
    if a.shard_size <= 0:
        raise UsageError(f"--shard-size must be positive, got {a.shard_size}")
    visible = _visible_gpus()
    gpus = visible if a.gpus is None else a.gpus
    if gpus < 0:
        raise UsageError(f"--gpus must be >= 0, got {gpus}")
    if gpus > visible and a.address is None:
        raise UsageError(f"--gpus {gpus} asked, but {visible} CUDA device(s) are visible")
    workers = a.workers if a.workers is not None else (os.cpu_count() or 1)
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    box = None
    if a.box:
        try:
            box = tuple(int(v) for v in a.box.split(","))
            assert len(box) == 4
        except (ValueError, AssertionError):
            raise UsageError(f"--box must be left,top,right,bottom integers, got {a.box!r}") from None
    try:
        ds = FaceDataset(a.data, box=box)
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError) as e:
        raise UsageError(f"--data: {e}") from None
    if n_images > len(ds.test_ids):
        raise UsageError(f"--n-images {n_images}: {a.data} has only {len(ds.test_ids)} test images")
    for flag, path in (
        ("--weights-dcgan", a.weights_dcgan),
        ("--weights-ce", a.weights_ce),
        ("--weights-gfc", a.weights_gfc),
    ):
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag}: no such file {path}")
    from facefill_core.inpainters import method_info
    from facefill_core.pretrained import shipped_path

    given = {"dcgan": a.weights_dcgan, "ce": a.weights_ce, "gfc": a.weights_gfc}
    for m in methods:
        kind = method_info(m).weights
        if kind and not given[kind] and not os.path.isfile(shipped_path(kind)):
            raise UsageError(
                f"method {m} needs {kind} weights: {shipped_path(kind)} is missing "
                f"(train them, or pass --weights-{kind})"
            )
    out = a.out or os.path.join("results", "runs", dt.datetime.now().strftime("%Y-%m-%dT%H-%M-%S"))
    _check_writable(out)
    cfg = BenchConfig(
        masks=masks,
        methods=methods,
        data=a.data,
        preset=a.preset,
        n_images=n_images,
        candidates=candidates,
        iters=iters,
        prior_weight=a.prior_weight,
        seed=a.seed,
        gpus=gpus,
        workers=workers,
        shard_size=a.shard_size,
        out=os.path.abspath(out),
        address=a.address,
        box=box,
        weights_dcgan=a.weights_dcgan,
        weights_ce=a.weights_ce,
        weights_gfc=a.weights_gfc,
        inject_crash=a.inject_crash,
        landmark_backend=a.landmark_backend,
    )
    return cfg, a


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def _check_writable(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"--out {out} is not writable: {e.strerror or e}") from None


def _git_commit() -> Optional[str]:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return (
            subprocess.run(
                ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except Exception:  # noqa: BLE001
        return None


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in (
        "torch",
        "numpy",
        "scikit-image",
        "opencv-python-headless",
        "ray",
        "scipy",
        "facefill",
        "gan-face-generate",
    ):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    out["dlib (Debian, linked)"] = "19.24"
    return out


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def prepare_run_dir(cfg: BenchConfig, resume: bool) -> dict:
    """Manifest (config, versions, commit, metric settings, machine) and the run's masks."""
    import torch

    from facefill_core.data import FaceDataset
    from facefill_core.masks import make_masks
    from facefill_core.metrics import METRIC_SETTINGS

    path = os.path.join(cfg.out, "manifest.json")
    if os.path.exists(path):
        old = json.load(open(path))
        if not resume:
            raise UsageError(
                f"--out {cfg.out} already holds a run: add --resume to continue it, or choose another --out"
            )
        if old.get("identity") != json.loads(json.dumps(cfg.identity())):
            diff = [
                k for k in cfg.identity() if old.get("identity", {}).get(k) != json.loads(json.dumps(cfg.identity()))[k]
            ]
            raise UsageError(f"--resume: {cfg.out} was run with other settings ({', '.join(diff)})")
    ds = FaceDataset(cfg.data, box=cfg.box)
    manifest = {
        "config": dataclasses.asdict(cfg),
        "identity": cfg.identity(),
        "inpaint_config": {m: dataclasses.asdict(cfg.inpaint_config(m)) for m in cfg.methods},
        "data": ds.metadata(),
        "metric_settings": METRIC_SETTINGS,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        },
        "command": ["python", "-m", "bench.run", *sys.argv[1:]],
        "started": dt.datetime.now().isoformat(timespec="seconds"),
    }
    write_json_atomic(path, manifest)
    os.makedirs(os.path.join(cfg.out, "masks"), exist_ok=True)
    for mask in cfg.masks:
        p = os.path.join(cfg.out, "masks", f"{mask}.npy")
        m = make_masks(MaskConfig(mask, seed=cfg.seed), cfg.n_images)[:, 0].numpy().astype(np.uint8)
        if os.path.exists(p):
            if not np.array_equal(np.load(p), m):
                raise UsageError(f"--resume: saved mask {p} differs from the one this run would make")
            continue
        tmp = p + ".tmp.npy"
        np.save(tmp, m)
        os.replace(tmp, p)
    return manifest


def _setup_logging(run_dir: str, verbose: bool) -> None:
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    fh = logging.FileHandler(os.path.join(run_dir, "run.log"))
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    if verbose:
        log.addHandler(logging.StreamHandler(sys.stderr))


def execute(cfg: BenchConfig, units: list, progress: bool = True, verbose: bool = False) -> None:
    """Run units in-process (``workers == 0`` and no GPUs) or on a Ray actor pool; each unit's
    records are written atomically as soon as it finishes."""
    from tqdm import tqdm

    from bench.workers import UnitRunner, write_unit

    bar = tqdm(total=len(units), desc="units", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    if cfg.gpus == 0 and cfg.workers == 0 and cfg.address is None:
        import torch

        runner = UnitRunner(cfg, cfg.out, "cpu", torch.get_num_threads())
        for u in units:
            write_unit(cfg.out, runner.run(u))
            log.info("unit done %s", u.uid)
            bar.update(1)
        bar.close()
        return
    import ray
    from ray.util import ActorPool

    from bench.workers import make_ray_worker

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    n_cpu = os.cpu_count() or 1
    if cfg.gpus > 0:
        n_actors, per_actor = cfg.gpus, {"num_gpus": 1, "num_cpus": 1}
        threads = max(1, n_cpu // cfg.gpus - 1)
        device = "cuda"
    else:
        n_actors, per_actor = cfg.workers, {"num_cpus": 1}
        threads = max(1, n_cpu // cfg.workers)
        device = "cpu"
    init_kw = dict(
        include_dashboard=False,
        logging_level=logging.INFO if verbose else logging.ERROR,
        log_to_driver=verbose,
        configure_logging=True,
    )
    if cfg.address:
        ray.init(address=cfg.address, **init_kw)
    else:
        # a local cluster on loopback only, sized to the actors (the driver is not an actor)
        ray.init(num_cpus=n_actors, num_gpus=cfg.gpus, _node_ip_address="127.0.0.1", **init_kw)
    try:
        Worker = make_ray_worker()
        actors = [
            Worker.options(max_restarts=3, max_task_retries=3, **per_actor).remote(cfg, cfg.out, device, threads)
            for _ in range(min(n_actors, len(units)))
        ]
        pool = ActorPool(actors)
        for result in pool.map_unordered(lambda a, u: a.run.remote(u), units):
            write_unit(cfg.out, result)
            log.info("unit done %s", result["uid"])
            bar.update(1)
    finally:
        bar.close()
        ray.shutdown()


def merge_records(run_dir: str) -> list[dict]:
    """records/*.jsonl -> records.jsonl (atomic), sorted; one object per image x method x mask."""
    from bench.report import load_unit_records

    rec_dir = os.path.join(run_dir, "records")
    recs = load_unit_records(run_dir)
    recs.sort(key=lambda r: (r["method"], r["mask"], r["image_index"]))
    keys = [(r["method"], r["mask"], r["image_index"]) for r in recs]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"duplicate records in {rec_dir}")
    tmp = os.path.join(run_dir, "records.jsonl.tmp")
    with open(tmp, "w") as f:
        for r in recs:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    os.replace(tmp, os.path.join(run_dir, "records.jsonl"))
    return recs


def run(cfg: BenchConfig, resume: bool = False, progress: bool = True, verbose: bool = False) -> str:
    from bench.report import build_report
    from bench.workers import done_units, plan_units

    prepare_run_dir(cfg, resume)
    _setup_logging(cfg.out, verbose)
    units = plan_units(cfg)
    done = done_units(cfg.out) if resume else set()
    todo = [u for u in units if u.uid not in done]
    log.info("run %s: %d units, %d already done", cfg.out, len(units), len(units) - len(todo))
    if todo:
        execute(cfg, todo, progress, verbose)
    merge_records(cfg.out)
    build_report(cfg.out)
    log.info("finished")
    return cfg.out


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg, a = build_config(argv)
        out = run(cfg, resume=a.resume, progress=not a.no_progress, verbose=a.verbose)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished units are saved; continue with --resume --out <dir>", file=sys.stderr)
        return 130
    print(f"results: {out}/tables.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
