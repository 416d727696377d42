"""``python -m bench.gpu_check`` (``make gpu-check``): one fixed battery on whatever device is
there, written to ``results/gpu/<device name>/report.{json,md}``.

1. records: every method on the same 8 test images x the 4 thesis masks, on CPU and (when
   present) CUDA; the two agree: classical fills exactly, feed-forward nets to float tolerance,
   latent methods per image by the same winning candidate or PSNR within a stated tolerance
   (:mod:`bench.gpu_report`);
2. the torch landmark cascade against the C++ extension: parity (|d| px) and throughput;
3. the latent-search step per B x K, method, landmark backend and precision: ms per step, peak
   GPU memory, the share of the step spent waiting for landmarks; mixed precision's records
   against fp32 on the same device;
4. training iterations per second of the DCGAN, CE and GFC;
5. ``bench.run`` end to end (quick preset on CUDA) and the projected wall time of the paper
   preset (500 images x 4 masks x all methods) on 1 and 4 devices.

Without CUDA only the CPU half runs, at the small sizes of :data:`SIZES` (about 2 minutes on 2
cores), and the report says plainly that the CUDA half was not run. Timings bracket the work
with ``torch.cuda.synchronize``; step times are ``(T(n steps) - T(0 steps)) / n`` so set-up and
the final choice cancel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from typing import Optional

import numpy as np
import torch

from bench.gpu_report import agreement, choices, projection, write_report

MASKS = ("centre", "left", "right", "random")
LANDMARK_MEAN_TOL = 0.05  # px, torch cascade vs C++ (tests/test_landmarks_torch.py)

# fmt: off
SIZES = {
    # the CPU half on a small machine: every section at toy sizes (about 2 minutes on 2 cores)
    "small": dict(n_images=8, candidates=2, iters=3, lm_batches=(64, 256), steps=((1, 8), (2, 8)), step_iters=3,
                  train_batch=16, train_iters=2, n_train=64, nn_train=256, amp_methods=("si-ldsoft",),
                  e2e=["--workers", "0", "--masks", "centre", "--n-images", "2", "--iters", "3", "--candidates", "2"]),
    # a GPU machine: the sizes (amp_methods None: every latent method; nn_train None: the
    # whole train split for a method that searches it)
    "full": dict(n_images=8, candidates=16, iters=50, lm_batches=(64, 1024, 4096), steps=((1, 64), (16, 64), (64, 64)),
                 step_iters=10, train_batch=64, train_iters=20, n_train=1024, nn_train=None, amp_methods=None,
                 e2e=["--gpus", "1", "--preset", "quick", "--masks", "all"]),
}
# fmt: on


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _amp(device: torch.device, on: bool):
    """bf16 autocast (no loss scaling needed: bf16 has fp32's range); a no-op when off."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else nullcontext()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"CPU {model}"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


class Shared:
    """What every section reuses: the test images, masks, face box and one C++ predictor."""

    def __init__(self, n_images: int, n_step_images: int) -> None:
        from facefill_core.config import MaskConfig
        from facefill_core.data import FaceDataset
        from facefill_core.landmarks import LandmarkPredictor
        from facefill_core.masks import make_masks

        ds = FaceDataset("embedded")
        self.box = ds.box
        self.images, self.ids = ds.load("test", max(n_images, n_step_images))
        self.n_images = n_images
        self.holes = {m: make_masks(MaskConfig(m), len(self.images)) for m in MASKS}
        self.predictor = LandmarkPredictor()
        self._train: dict = {}

    def train_images(self, n: int):
        """The first ``n`` training images, uint8 ``(n, 64, 64, 3)`` (for ``nn``)."""
        from facefill_core.data import FaceDataset

        if n not in self._train:
            self._train[n] = FaceDataset("embedded").load_uint8("train", n)[0]
        return self._train[n]


def _methods():
    from facefill_core.methods import METHODS

    return METHODS


def _inpaint_cfg(method: str, candidates: int, iters: int, **over):
    from facefill_core.config import BenchConfig

    cfg = BenchConfig(candidates=candidates, iters=iters).inpaint_config(method)
    return dataclasses.replace(cfg, **over)


def _winners(r, k: int) -> list[int]:
    """The chosen candidate of each image: the one whose final z is the returned z."""
    last = r.trajectory[-1]
    return [int((last[b * k : (b + 1) * k] - r.z[b]).abs().sum(1).argmin()) for b in range(len(r.z))]


# -- 1. records -----------------------------------------------------------------------------
def method_records(sh: Shared, method: str, device, size: dict, masks=MASKS, amp: bool = False) -> list[dict]:
    """Records of one method on the battery's images and masks on ``device``."""
    from facefill_core.inpainters import build
    from facefill_core.metrics import face_metrics

    info = _methods()[method]
    x, idx = sh.images[: sh.n_images], list(range(sh.n_images))
    latent = info.family == "latent"
    cfg = _inpaint_cfg(method, size["candidates"], size["iters"])
    kw = {}
    if getattr(info, "train_split", False) and size["nn_train"] is not None:  # small: a part of the split
        kw["train_images"] = sh.train_images(size["nn_train"])
    inp = build(method, cfg, None, device, sh.box, predictor=sh.predictor if latent else None, **kw)
    out_recs = []
    for mask in masks:
        h = sh.holes[mask][: sh.n_images]
        winners = [None] * len(x)
        with _amp(torch.device(device), amp):
            if latent:
                r = inp.search.inpaint(x, h, idx, record_trajectory=True)
                out, winners = r.completed, _winners(r, size["candidates"])
            else:
                out = inp.inpaint(x, h, idx)
        m = face_metrics(out.detach().float().cpu(), x, sh.predictor, sh.box)
        for j in range(len(x)):
            nme = float(m["nme"][j])
            out_recs.append(
                {"method": method, "family": info.family, "mask": mask, "image_index": j, "psnr": float(m["psnr"][j]),
                 "ssim": float(m["ssim"][j]), "nme": nme if np.isfinite(nme) else None, "winner": winners[j]}
            )  # fmt: skip
    return out_recs


def records(sh: Shared, device, size: dict) -> list[dict]:
    return [r for m in _methods() for r in method_records(sh, m, device, size)]


# -- 2. landmarks ---------------------------------------------------------------------------
def landmark_parity(sh: Shared, device, batches) -> list[dict]:
    """C++ (all cores) vs the torch cascade on ``device`` on faces drawn from the DCGAN prior."""
    from facefill_core.imaging import to_uint8_nhwc
    from facefill_core.landmarks_torch import TorchShapePredictor
    from facefill_core.pretrained import load_dcgan

    g, _, _ = load_dcgan(None, device)
    tsp = TorchShapePredictor(sh.predictor.export()).to(device)
    rows, warm = [], False
    for n in batches:
        with torch.no_grad():
            z = torch.rand(n, g.z_dim, generator=torch.Generator().manual_seed(n)) * 2 - 1
            u8 = to_uint8_nhwc(torch.cat([g(c.to(device)).cpu() for c in z.split(512)]))
        t = time.perf_counter()
        pc = sh.predictor.predict(u8, box=sh.box, rounded=False, num_threads=0)
        cpp_s = time.perf_counter() - t
        xt = torch.from_numpy(u8).to(device)
        with torch.no_grad():
            if not warm:  # kernels, allocator
                tsp(xt[:8], box=sh.box)
                warm = True
            _sync(device)
            t = time.perf_counter()
            pt = tsp(xt, box=sh.box)
            _sync(device)
            torch_s = time.perf_counter() - t
        d = np.abs(pt.cpu().numpy() - pc)
        rows.append(
            {"device": str(device), "batch": n, "mean_abs_px": float(d.mean()), "median_abs_px": float(np.median(d)),
             "max_abs_px": float(d.max()), "cpp_img_per_s": n / cpp_s, "torch_img_per_s": n / torch_s,
             "ok": bool(d.mean() <= LANDMARK_MEAN_TOL)}
        )  # fmt: skip
    return rows


# -- 3. latent-search step ------------------------------------------------------------------
class _TimedPool:
    """Wraps the search's landmark thread pool: each future's ``result()`` adds the optimizer's
    wait to the clock."""

    def __init__(self, pool, clock: dict) -> None:
        self._pool, self._clock = pool, clock

    def submit(self, fn, *a, **kw):
        fut = self._pool.submit(fn, *a, **kw)
        wait = fut.result

        def result(timeout=None):
            t = time.perf_counter()
            try:
                return wait(timeout)
            finally:
                self._clock["s"] += time.perf_counter() - t

        fut.result = result
        return fut


def instrument(search, device) -> dict:
    """Count the time the optimizer's thread spends on (or waiting for) landmarks: Ld on the
    torch path, the wait for the overlapped C++ Ld, the consensus reference and the steering
    gradient. Returns the clock (``{"s": seconds}``)."""
    clock = {"s": 0.0}
    sync = lambda: _sync(device)  # noqa: E731

    def timed(fn):
        def wrapper(*a, **kw):
            sync()
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                sync()
                clock["s"] += time.perf_counter() - t

        return wrapper

    for name in ("_ld", "_consensus"):
        setattr(search, name, timed(getattr(search, name)))
    if search.steer_gradient is not None:
        search.steer_gradient = timed(search.steer_gradient)
    if search._pool is not None:
        search._pool = _TimedPool(search._pool, clock)
    return clock


VARIANTS = (("cpp", 1, False), ("cpp", 0, False), ("torch", 1, False))  # backend, C++ threads, autocast


def _variants(method: str, device, amp: bool) -> list[tuple]:
    """Rows of one method: each landmark backend (C++ overlapped on 1 thread or all cores, the
    torch cascade; the CPU half: 1 thread and torch), then autocast with the default backend."""
    if not _methods()[method].search.uses_landmarks:
        out = [("none", 1, False)]
    else:
        out = [v for v in VARIANTS if not v[2] and (device.type == "cuda" or v[1] == 1)]
    return out + ([("none" if out[0][0] == "none" else "auto", 1, True)] if amp else [])


def step_row(sh: Shared, method: str, device, b: int, k: int, n: int, variant: tuple) -> dict:
    from facefill_core.inpainters import build

    backend, threads, amp = variant
    cfg = _inpaint_cfg(method, k, n, landmark_backend="auto" if backend == "none" else backend, overlap_threads=threads)
    inp = build(method, cfg, None, device, sh.box, predictor=sh.predictor)
    s = inp.search
    clock = instrument(s, device)
    x, h = sh.images[:b], sh.holes["centre"][:b]

    def run(iters: int) -> tuple[float, float]:
        s.cfg = dataclasses.replace(cfg, iters=iters)
        clock["s"] = 0.0
        _sync(device)
        t = time.perf_counter()
        with _amp(device, amp):
            s.inpaint(x, h, list(range(b)))
        _sync(device)
        return time.perf_counter() - t, clock["s"]

    if device.type == "cuda":
        run(1)  # warm-up: kernels, cuDNN, allocator
        torch.cuda.reset_peak_memory_stats(device)
    t0, l0 = run(0)
    tn, ln = run(n)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    step = max(tn - t0, 1e-9)
    return {
        "method": method, "B": b, "K": k, "backend": s.backend if s.uses_landmarks else "none",
        "overlap_threads": threads if s.backend == "cpp" and s.uses_landmarks else None,
        "precision": "bf16 autocast" if amp else "fp32",
        "steps": n, "ms_per_step": 1000 * step / n, "peak_mem_mib": peak,
        "landmark_wait_share": min(1.0, max(0.0, (ln - l0) / step)),
    }  # fmt: skip


def latent_steps(sh: Shared, device, size: dict) -> list[dict]:
    rows = []
    amp = size["amp_methods"]
    for i, (b, k) in enumerate(size["steps"]):
        for m, info in _methods().items():
            if info.family == "latent":  # autocast rows: all (CUDA); the CPU half: one method, one size
                for v in _variants(m, device, amp is None or (m in amp and i == 0)):
                    try:
                        rows.append(step_row(sh, m, device, b, k, size["step_iters"], v))
                    except torch.cuda.OutOfMemoryError as e:  # a finding at this size, not a failure
                        rows.append({"method": m, "B": b, "K": k, "backend": v[0], "error": f"out of memory: {e}"})
                        torch.cuda.empty_cache()
    return rows


def mixed_precision(sh: Shared, device, size: dict, fp32: list[dict]) -> list[dict]:
    """Latent methods under autocast against their fp32 records on the same device (centre)."""
    ref = [r for r in fp32 if r["mask"] == "centre"]
    names = size["amp_methods"] or [m for m, i in _methods().items() if i.family == "latent"]
    amp = [r for m in names for r in method_records(sh, m, device, size, masks=("centre",), amp=True)]
    return agreement(ref, amp, f"{device.type} fp32 vs autocast", strict=True)


# -- 4. training ----------------------------------------------------------------------------
def training(device, size: dict) -> list[dict]:
    """Iterations per second of each model's training step (``train()``'s loop body)."""
    from facefill_core.config import TrainConfig
    from facefill_core.data import FaceDataset
    from facefill_core.imaging import uint8_to_signed
    from facefill_core.models.common import dataset_mean_colour
    from facefill_core.training import TASKS, iteration_generator, make_task

    u8, _ = FaceDataset("embedded").load_uint8("train", size["n_train"])
    data = torch.from_numpy(u8)
    rows = []
    for model in TASKS:
        cfg = TrainConfig(model=model, batch_size=size["train_batch"], device=str(device))
        task = make_task(cfg, device)
        if hasattr(task, "set_data"):
            task.set_data(data, dataset_mean_colour(u8))
        warm = 1 if device.type == "cpu" else 3
        for it in range(warm + size["train_iters"]):
            if it == warm:  # after the warm-up: kernels, cuDNN, allocator
                _sync(device)
                t = time.perf_counter()
            gen = iteration_generator(cfg.seed, it)
            idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen)
            task.step(uint8_to_signed(data[idx].numpy()).to(device), gen)
        _sync(device)
        rows.append({"model": model, "batch": cfg.batch_size, "iters": size["train_iters"],
                     "its_per_s": size["train_iters"] / (time.perf_counter() - t)})  # fmt: skip
    return rows


# -- 5. end to end -----------------------------------------------------------
def end_to_end(size: dict, workdir: str) -> dict:
    out = os.path.join(workdir, "e2e")
    cmd = [sys.executable, "-m", "bench.run", *size["e2e"], "--out", out, "--no-progress"]
    t = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # an in-process run: this many threads
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"bench.run exit {r.returncode}: {r.stderr.strip()[-500:]}")
    with open(os.path.join(out, "records.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    per = {}
    for m in dict.fromkeys(r["method"] for r in recs):
        per[m] = float(np.mean([r["seconds"] for r in recs if r["method"] == m]))
    return {"command": " ".join(["python -m bench.run", *size["e2e"]]), "wall_s": wall, "records": len(recs),
            "seconds_per_image": per}  # fmt: skip


# -- the battery and its report -------------------------------------------------------------
SECTIONS = ("records", "landmarks", "steps", "mixed", "training", "e2e")


def battery(size_name: str, use_cuda: bool, sections=SECTIONS) -> dict:
    size = SIZES[size_name]
    devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if use_cuda else [])
    main_dev = devices[-1]
    sh = Shared(size["n_images"], max(b for b, _ in size["steps"]))
    rep = {"size": size_name, "settings": size, "cuda_half_run": use_cuda, "errors": {}, "agreement": [], "records": {}}

    def section(name: str, fn):
        if name not in sections:
            return None
        t = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001  (recorded, the rest still runs)
            rep["errors"][name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            return None
        finally:
            rep.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)

    for dev in devices:
        rep["records"][dev.type] = section("records", lambda d=dev: records(sh, d, size))
    if use_cuda and rep["records"].get("cpu") and rep["records"].get("cuda"):
        rep["agreement"] = agreement(rep["records"]["cpu"], rep["records"]["cuda"], "cpu vs cuda")
    lm = size["lm_batches"]
    rep["landmarks"] = section("landmarks", lambda: [r for d in devices for r in landmark_parity(sh, d, lm)])
    rep["steps"] = section("steps", lambda: latent_steps(sh, main_dev, size))
    fp32 = rep["records"].get(main_dev.type)
    if fp32:
        rep["mixed_precision"] = section("mixed", lambda: mixed_precision(sh, main_dev, size, fp32))
    rep["training"] = section("training", lambda: training(main_dev, size))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        rep["end_to_end"] = section("e2e", lambda: end_to_end(size, tmp))
    rep["projection"] = projection(rep["steps"] or [], rep["end_to_end"])
    rep["choices"] = choices(rep["steps"] or [], rep.get("mixed_precision") or [])
    return rep


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("results", "gpu"), help="parent of <device name>/report.*")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu: the CPU half only")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="default: full with CUDA, else small")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {','.join(SECTIONS)}")
    a = p.parse_args(argv)
    sections = tuple(s.strip() for s in a.only.split(",") if s.strip())
    bad = [s for s in sections if s not in SECTIONS]
    if bad or a.threads < 0:
        print(f"error: --only {a.only!r} / --threads {a.threads}: sections are {','.join(SECTIONS)}", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    use_cuda = a.device == "auto" and torch.cuda.is_available()
    size = a.size or ("full" if use_cuda else "small")
    dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    t = time.perf_counter()
    rep = battery(size, use_cuda, sections)
    rep.update(device=device_name(dev), torch=torch.__version__, cpu_count=os.cpu_count(),
               threads=torch.get_num_threads(), platform=platform.platform(), load_avg=os.getloadavg()[0],
               wall_s=round(time.perf_counter() - t, 1))  # fmt: skip
    out = write_report(rep, os.path.join(a.out, slug(rep["device"])))
    failed = bool(rep["errors"]) or not all(r["ok"] for r in rep["agreement"] + (rep.get("landmarks") or []))
    print(f"{'FAILED' if failed else 'ok'}: {out}/report.md", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
