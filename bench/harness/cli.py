"""The command line of ``python -m bench.run``: the parser and the validation of everything
that can be checked before any work starts. Flags, help text and defaults derive from the
method registry (:mod:`facefill_core.methods`) and the presets (:mod:`facefill_core.config`)."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os

from bench.harness.cluster import check_address_token
from bench.harness.config import PRESETS, BenchConfig
from bench.harness.numerics import MODES, usable_cpus
from bench.harness.sweep import PARAMS, parse_sweeps
from facefill_core.data import FaceDataset
from facefill_core.judges import MODEL_FILES, model_path, parse_judges
from facefill_core.masks import MASK_KINDS, folder_masks, parse_mask_spec
from facefill_core.methods import ALL_METHODS, METHODS, WEIGHTS_KINDS, method_info, parse_methods, weights_field
from facefill_core.pretrained import shipped_path

IMAGE_SIZE = 64  # every image is 64x64 (facefill_core/__init__.py)


class UsageError(Exception):
    """A bad argument: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.run", description="Benchmark face inpainting methods.")
    p.add_argument(
        "--masks", default="all", help=f"all | comma list of {','.join(MASK_KINDS)} and folder:DIR (PNG masks)"
    )
    p.add_argument("--methods", default="all", help=f"all | comma list ({','.join(ALL_METHODS)}, plugins)")
    p.add_argument(
        "--method-module",
        action="append",
        default=[],
        metavar="PKG.MODULE:OBJECT",
        help="a plugin method (facefill_core.plugins); name it in --methods too",
    )
    p.add_argument("--data", default="embedded", help="embedded | celeba:PATH | folder:PATH | folder-split:PATH")
    p.add_argument(
        "--n-images", type=int, default=None, help="test images (embedded: the preset's, quick 8, paper 500; else all)"
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--iters", type=int, default=None, help="latent-search Adam steps (quick 100, paper 1000)")
    p.add_argument("--candidates", type=int, default=None, help="latents per image (quick 16, paper 64)")
    p.add_argument("--lambda", dest="prior_weight", type=float, default=0.003, help="prior loss weight")
    p.add_argument(
        "--sweep",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=V1,V2",
        help=f"run each value as its own labelled method, e.g. si-ld[margin=2]; NAME: {', '.join(PARAMS)}",
    )
    p.add_argument("--gpus", type=int, default=None, help="GPUs to use, one Ray actor each (default: all visible)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="CPU workers when --gpus 0 (default: one per usable CPU; 0 = in-process, no Ray)",
    )
    p.add_argument(
        "--numerics",
        choices=MODES,
        default="pinned",
        help="pinned: the same records on every x86-64 CPU (one torch thread per worker, no oneDNN, "
        "fixed MKL/torch code paths; docs/reproducibility.md) | free: the fastest paths of this CPU",
    )
    p.add_argument("--shard-size", type=int, default=4, help="images per work unit for latent methods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--replicates",
        type=int,
        default=1,
        help="seed replicates of each stochastic (latent) method; replicate 0 uses --seed (docs/statistics.md)",
    )
    p.add_argument("--out", default=None, help="run directory (default results/runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="skip units already finished in --out")
    p.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    p.add_argument("--box", default=None, help="override the canonical face box: left,top,right,bottom")
    for kind in WEIGHTS_KINDS:
        users = ",".join(n for n, m in METHODS.items() if m.weights == kind)
        p.add_argument(f"--weights-{kind}", default=None, help=f"{kind} weights for {users} (default: shipped)")
    p.add_argument(
        "--landmark-backend",
        choices=["auto", "cpp", "torch"],
        default="auto",
        help="landmark cascade in the latent search (auto: cpp on CPU, torch on CUDA)",
    )
    p.add_argument(
        "--metrics",
        default="all",
        help="judges beside PSNR, SSIM and dlib NME (always on): all (hole,mesh,kid,identity) | basic (none) | "
        "comma list of hole,mesh,kid,identity",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs")
    p.add_argument("--inject-crash", default=None, help=argparse.SUPPRESS)
    return p


def build_config(argv: list[str]) -> tuple[BenchConfig, argparse.Namespace]:
    """Parse and validate everything that can be checked before any work starts.

    Raises:
        UsageError: one line naming the flag and the value.
    """
    a = build_parser().parse_args(argv)
    try:
        masks, mask_folder = parse_mask_spec(a.masks)
        plugins = resolve_plugins(a.methods, a.method_module)
        methods = parse_methods(a.methods)
        sweep = parse_sweeps(a.sweep)
        judges = parse_judges(a.metrics)
        for j in judges:
            if j in MODEL_FILES:
                model_path(j)  # installed (the run reads it later)
    except (ValueError, ImportError) as e:
        raise UsageError(str(e)) from None
    for name, _ in sweep:
        if not any(PARAMS[name].affects(method_info(m)) for m in methods):
            raise UsageError(f"--sweep {name}: it affects none of the methods ({','.join(methods)})")
    preset = PRESETS[a.preset]
    # the preset's image count is for the embedded faces; a folder or CelebA is evaluated whole
    n_images = a.n_images if a.n_images is not None else preset["n_images"] if a.data == "embedded" else 1
    iters = a.iters if a.iters is not None else preset["iters"]
    candidates = a.candidates if a.candidates is not None else preset["candidates"]
    if n_images <= 0:
        raise UsageError(f"--n-images must be positive, got {n_images}")
    if iters < 0:
        raise UsageError(f"--iters must be >= 0, got {iters}")
    if candidates <= 0:
        raise UsageError(f"--candidates must be positive, got {candidates}")
    if not math.isfinite(a.prior_weight) or a.prior_weight < 0:
        raise UsageError(f"--lambda must be a finite number >= 0, got {a.prior_weight}")
    if a.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {a.seed}")
    if a.replicates <= 0:
        raise UsageError(f"--replicates must be positive, got {a.replicates}")
    if a.shard_size <= 0:
        raise UsageError(f"--shard-size must be positive, got {a.shard_size}")
    visible = _visible_gpus()
    gpus = visible if a.gpus is None else a.gpus
    if gpus < 0:
        raise UsageError(f"--gpus must be >= 0, got {gpus}")
    if gpus > visible and a.address is None:
        raise UsageError(f"--gpus {gpus} asked, but {visible} CUDA device(s) are visible")
    if a.address:
        try:
            check_address_token(a.address)  # Ray's token auth: the cluster's token must be here
        except ValueError as e:
            raise UsageError(str(e)) from None
    workers = a.workers if a.workers is not None else usable_cpus()
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    if a.address is None and gpus == 0:  # a local cluster of CPU workers: does it fit in memory?
        from bench.harness.numerics import available_memory_mib, check_memory

        problem = check_memory(workers, available_memory_mib())
        if problem:
            raise UsageError(problem)
    box = _parse_box(a.box)
    try:
        ds = FaceDataset(a.data, box=box)
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError) as e:
        raise UsageError(f"--data: {e}") from None
    if a.n_images is None and a.data != "embedded":
        n_images = len(ds.test_ids)
    if n_images > len(ds.test_ids):
        raise UsageError(f"--n-images {n_images}: {a.data} has only {len(ds.test_ids)} test images")
    if ds.spec.kind != "embedded":
        _check_usable(ds, n_images)
    weights = {kind: getattr(a, weights_field(kind)) for kind in WEIGHTS_KINDS}
    for kind, path in weights.items():
        if path:
            check_weights(path, kind, f"--weights-{kind}")
    for m in methods:
        kind = method_info(m).weights
        if kind and not weights[kind] and not os.path.isfile(shipped_path(kind)):
            raise UsageError(
                f"method {m} needs {kind} weights: {shipped_path(kind)} is missing "
                f"(train them, or pass --weights-{kind})"
            )
    _warn_overlap(a.data, ds.test_ids[:n_images], {method_info(m).weights for m in methods} - {None}, weights)
    out = a.out or os.path.join("results", "runs", dt.datetime.now().strftime("%Y-%m-%dT%H-%M-%S"))
    _check_out(out, a.resume)
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
        replicates=a.replicates,
        gpus=gpus,
        workers=workers,
        numerics=a.numerics,
        shard_size=a.shard_size,
        out=os.path.abspath(out),
        address=a.address,
        box=box,
        inject_crash=a.inject_crash,
        landmark_backend=a.landmark_backend,
        metrics=judges,
        sweep=sweep,
        mask_folder=check_mask_folder(mask_folder, ds.test_ids[:n_images]),
        plugins=plugins,
        **{weights_field(kind): path for kind, path in weights.items()},
    )
    return cfg, a


def resolve_plugins(methods: str, refs: list) -> tuple:
    """Load the plugin methods of ``--method-module`` and those ``--methods`` names that an
    installed package declares (entry point group ``facefill.methods``).

    Raises:
        UsageError: one line from :func:`facefill_core.plugins.resolve`.
    """
    from facefill_core.plugins import resolve

    names = [] if methods == "all" else [s.strip() for s in methods.split(",") if s.strip()]
    try:
        return resolve(names, refs)
    except ValueError as e:
        raise UsageError(f"--method-module: {e}" if refs else str(e)) from None


def check_mask_folder(folder, image_ids) -> "str | None":
    """The absolute path of ``--masks folder:DIR`` once every image has a readable mask there.

    Raises:
        UsageError: one line from :func:`facefill_core.masks.folder_masks`.
    """
    if folder is None:
        return None
    try:
        folder_masks(folder, image_ids)
    except ValueError as e:
        raise UsageError(f"--masks folder:{folder}: {e}") from None
    return os.path.abspath(folder)


def _parse_box(text):
    if not text:
        return None
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise UsageError(f"--box must be left,top,right,bottom integers, got {text!r}")
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        raise UsageError(f"--box {text}: needs right > left and bottom > top")
    if right <= 0 or bottom <= 0 or left >= IMAGE_SIZE or top >= IMAGE_SIZE:
        raise UsageError(f"--box {text}: does not overlap the {IMAGE_SIZE}x{IMAGE_SIZE} image")
    return box


def check_weights(path: str, kind: str, flag: str) -> None:
    """Load ``path`` as ``kind`` weights the way a worker will (readable, the right kind, the
    sha256 recorded beside it, shapes that fit the network, the z distribution the search
    draws from) so a bad file stops the run before it starts.

    Raises:
        UsageError: ``"<flag> <path>: <what is wrong>"``.
    """
    from facefill_core.config import InpaintConfig
    from facefill_core.pretrained import check_z_dist, load_dcgan, load_feedforward

    if not os.path.isfile(path):
        raise UsageError(f"{flag}: no such file {path}")
    try:
        if kind == "dcgan":
            check_z_dist(load_dcgan(path)[2], InpaintConfig.z_init)
        else:
            load_feedforward(path, kind)
    except (ValueError, KeyError, RuntimeError, TypeError, OSError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UsageError(f"{flag} {path}: {reason[:300]}") from None


def _check_usable(ds: FaceDataset, n_images: int, chunk: int = 64) -> None:
    """Data that opens but yields nothing usable (every file unreadable or too small) stops the
    run here, in one line: the test images are decoded in chunks until one is usable."""
    import warnings

    err = None
    for start in range(0, n_images, chunk):
        try:
            with warnings.catch_warnings():  # the run warns about skipped files itself
                warnings.simplefilter("ignore")
                ds.load_uint8("test", min(chunk, n_images - start), start)
            return
        except ValueError as e:
            err = e
    raise UsageError(f"--data: {err}")


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def _warn_overlap(data: str, test_ids: list, kinds: set, weights: dict) -> None:
    """One warning line per model that was trained on some of the images being evaluated."""
    import sys

    from facefill_core.data import train_test_overlap
    from facefill_core.pretrained import load_payload

    for kind in sorted(kinds):
        try:
            trained_on = load_payload(weights.get(kind), kind)["data"]
            n = train_test_overlap(trained_on, data, test_ids)
        except (ValueError, OSError, KeyError):
            continue  # weights without a recorded data spec: nothing to compare
        if n:
            print(
                f"warning: {n} of the {len(test_ids)} evaluated images are training images of the {kind} "
                f"weights (trained on {trained_on}): their numbers are not held-out",
                file=sys.stderr,
            )


def _check_out(out: str, resume: bool) -> None:
    """``--out`` can hold a run, and nothing is created here (a failed start leaves nothing)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file, not a directory")
    if resume and not os.path.isfile(os.path.join(out, "manifest.json")):
        raise UsageError(f"--resume: {out} holds no run to resume")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable ({parent})")
