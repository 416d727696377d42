"""The timing sections of ``python -m bench.gpu.check`` (see there): the latent-search step per
B x K, method, landmark backend and precision; training iterations per second; ``bench.harness.run``
end to end. Step times are ``(T(n steps) - T(0 steps)) / n`` so set-up and the final choice
cancel; CUDA work is bracketed with ``torch.cuda.synchronize``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from bench.gpu.sections import Shared, _amp, _inpaint_cfg, _methods, _sync


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
            if threading.current_thread() is not threading.main_thread():
                return fn(*a, **kw)  # the overlapped Ld: the optimizer's wait is _TimedPool's
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
    cfg = _inpaint_cfg(
        method, k, n, landmark_backend="auto" if backend == "none" else backend,
        landmark_overlap="overlap", overlap_threads=threads,
    )  # fmt: skip
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
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"bench.harness.run exit {r.returncode}: {r.stderr.strip()[-500:]}")
    with open(os.path.join(out, "records.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    per = {}
    for m in dict.fromkeys(r["method"] for r in recs):
        per[m] = float(np.mean([r["seconds"] for r in recs if r["method"] == m]))
    return {"command": " ".join(["python -m bench.run", *size["e2e"]]), "wall_s": wall, "records": len(recs),
            "seconds_per_image": per}  # fmt: skip
