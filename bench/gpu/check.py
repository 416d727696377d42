"""``python -m bench.gpu.check`` (``make gpu-check``): one fixed battery on whatever device is
there, written to ``<out>/<device name>/report.{json,md}`` (default ``--out``: a new
``results/runs/gpu-check-<time>``, so a check never overwrites the committed ``results/gpu``).

1. records: every method on the same 8 test images x the 4 thesis masks, on CPU and (when
   present) CUDA; the two agree: classical fills exactly, feed-forward nets to float tolerance,
   latent methods per image by the same winning candidate or PSNR within a stated tolerance
   (:mod:`bench.gpu.report`);
2. the torch landmark cascade against the C++ extension: parity (|d| px) and throughput;
3. the latent-search step per B x K, method, landmark backend and precision: ms per step, peak
   GPU memory, the share of the step spent waiting for landmarks; mixed precision's records
   against fp32 on the same device;
4. training iterations per second of the DCGAN, CE and GFC;
5. ``bench.harness.run`` end to end (quick preset on CUDA) and the projected wall time of the paper
   preset (500 images x 4 masks x all methods) on 1 and 4 devices.

Without CUDA only the CPU half runs, at the small sizes of :data:`SIZES` (about 2 minutes on 2
cores), and the report says plainly that the CUDA half was not run. Timings bracket the work
with ``torch.cuda.synchronize``; step times are ``(T(n steps) - T(0 steps)) / n`` so set-up and
the final choice cancel.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from typing import Optional

import torch

from bench.gpu.report import (
    LANDMARK_MAX_TOL,
    LANDMARK_MEAN_TOL,
    LANDMARK_P99_TOL,
    agreement,
    choices,
    projection,
    write_report,
)
from bench.gpu.sections import MASKS, Shared, _methods, landmark_parity, mixed_precision, records
from bench.gpu.timing import end_to_end, latent_steps, training

__all__ = ["LANDMARK_MAX_TOL", "LANDMARK_MEAN_TOL", "LANDMARK_P99_TOL", "MASKS", "SIZES", "battery", "device_name",
           "main", "slug", "_methods"]  # fmt: skip

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


def default_out() -> str:
    """A new directory per check, ``results/runs/gpu-check-<time>``: a check never writes over the
    committed ``results/gpu`` (``--out results/gpu`` does, when asked)."""
    return os.path.join("results", "runs", time.strftime("gpu-check-%Y%m%d-%H%M%S"))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu.check", description=__doc__.split("\n")[0])
    p.add_argument(
        "--out",
        default=default_out(),
        help="parent of <device name>/report.* (default: a new results/runs/gpu-check-<time>; the committed "
        "results/gpu is written only when named)",
    )
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
