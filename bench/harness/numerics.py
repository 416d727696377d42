"""Pinned numerics: the one place that knows how a run's floating point is made independent of
the CPU it runs on, and that reports what actually ran.

A latent search amplifies last-bit differences (a different candidate wins), so the same
command must take the same arithmetic path on every x86-64 CPU. Under ``--numerics pinned``
(the default of ``python -m bench.run``):

- ``MKL_CBWR=COMPATIBLE``: MKL's matrix products (linear layers, and the im2col products of the
  native convolutions) take MKL's SSE2 code branch with fixed blocking and reductions. It is
  the only branch MKL honours on every vendor's CPU: on a non-Intel CPU, ``MKL_CBWR=AVX2`` is
  silently read as ``AUTO`` (the branch is then chosen per CPU), while on an Intel one it means
  AVX2. Read by MKL when it initialises, so it must be in the environment before torch loads.
- ``ATEN_CPU_CAPABILITY=avx2``: torch's own CPU kernels (elementwise, reductions, ``randn``)
  use their AVX2 build on AVX2 and AVX-512 CPUs alike. The builds differ in bits (measured:
  baseline vs AVX2; by torch's source the AVX-512 build reduces over 16 lanes and fills
  ``randn`` with another kernel). Read when torch first
  dispatches, so it too must be set before torch loads.
- ``torch.backends.mkldnn.enabled = False``: convolutions take torch's native path (im2col +
  MKL) instead of oneDNN. oneDNN picks its kernels and blocking from the CPU's ISA, cache sizes
  and core count; capping its ISA (``ONEDNN_MAX_CPU_ISA``) is not enough to fix them.
- ``torch.backends.nnpack.set_flags(False)``: without oneDNN, torch hands a float convolution of
  a batch of 16 or more (the discriminator's, in the prior loss) to NNPACK, whose kernels and
  blocking follow the CPU (measured: an AVX-512 EPYC and an emulated Zen 3 gave different bits
  for the same layer); off, every batch size takes the native im2col + MKL path.
- ``OPENBLAS_CORETYPE=Haswell`` and ``NPY_DISABLE_CPU_FEATURES``: numpy's OpenBLAS (the
  judges' matrix products) and numpy's own loops take their AVX2 kernels on AVX-512 CPUs too.
- one torch (OpenMP and MKL) thread per worker: how a reduction is split depends on the thread
  count. Deterministic-algorithm mode adds nothing on one CPU thread and is not set.

The C++ landmark kernels (:mod:`facefill_core.landmarks`) give the same bits on every ISA and
at every thread count (``tests/test_landmarks_ext.py``); their threads are left as they are.
GPU numerics are not pinned: a GPU run is compared by the noise band, not bit for bit.

``python -m bench.run`` re-executes itself once with the environment above when it is missing
(:func:`reexec_if_needed`); Ray workers of a local cluster inherit it from the driver, and each
worker checks it (:func:`problems`). ``python -m bench.harness.numerics`` prints the report for this
machine; ``--time`` measures what pinning costs in latent-search step time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Optional

MODES = ("pinned", "free")
PINNED_ENV = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS (DYNAMIC_ARCH): its AVX2 kernels
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's own AVX-512 loops off
    # the C++ landmark kernels: every path gives dlib's bits (tests/test_landmarks_ext.py), but
    # only the AVX2 and SSE2 paths have run here; pinned, every CPU runs the AVX2 path
    "FACEFILL_ISA": "avx2",
}
PINNED_TORCH_THREADS = 1
_RECORDED_ENV = (*PINNED_ENV, "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_REEXEC_MARK = "FACEFILL_NUMERICS_REEXEC"  # set in the child of a re-exec: never loop
# mkl_cbwr_get's return values (mkl_service.h) for the branches this recipe can meet
_MKL_BRANCHES = {0: "off", 1: "off", 2: "auto", 3: "compatible", 4: "sse2", 8: "sse4_2", 9: "avx", 10: "avx2"}


# -- sizing ------------------------------------------------------------------------------------


def usable_cpus(
    affinity: Optional[set] = None,
    cgroup_roots: tuple = ("/sys/fs/cgroup",),
) -> int:
    """The CPUs this process may use: its affinity mask (taskset, a container's cpuset), capped
    by the cgroup's CPU quota (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us`` of v1), rounded
    up; at least 1. ``os.cpu_count()`` counts the host's cores instead.

    Args:
        affinity: the affinity set (default ``os.sched_getaffinity(0)``).
        cgroup_roots: where to look for the quota files.
    """
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            affinity = set(range(os.cpu_count() or 1))
    n = max(1, len(affinity))
    quota = _cgroup_quota(cgroup_roots)
    if quota is not None:
        n = min(n, max(1, int(-(-quota // 1))))  # ceil: a 1.5-CPU quota still runs two threads
    return n


def _cgroup_quota(roots: tuple) -> Optional[float]:
    for root in roots:
        try:  # v2: "max 100000" (no limit) or "200000 100000"
            with open(os.path.join(root, "cpu.max")) as f:
                q, period = f.read().split()[:2]
            if q != "max" and float(period) > 0:
                return float(q) / float(period)
            return None
        except (OSError, ValueError):
            pass
        try:  # v1
            with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
                q = float(f.read())
            with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
                period = float(f.read())
            if q > 0 and period > 0:
                return q / period
        except (OSError, ValueError):
            pass
    return None


# Peak resident memory of one CPU worker running every method (one landmark predictor shared by
# the methods and the metric, the models, the judges): ~760 MiB measured on the quick preset;
# Ray's own processes and the driver take about 1 GiB more.
WORKER_MEMORY_MIB = 800
RAY_AND_DRIVER_MIB = 1024


def available_memory_mib(meminfo: str = "/proc/meminfo", cgroup_roots: tuple = ("/sys/fs/cgroup",)) -> Optional[int]:
    """Memory this process can still use, in MiB: ``MemAvailable``, capped by the cgroup's limit
    minus its current use (``memory.max`` / ``memory.current``, v2). None when unknown."""
    avail = None
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    for root in cgroup_roots:
        try:
            with open(os.path.join(root, "memory.max")) as f:
                limit = f.read().strip()
            with open(os.path.join(root, "memory.current")) as f:
                used = int(f.read())
            if limit != "max":
                left = (int(limit) - used) // 2**20
                avail = left if avail is None else min(avail, left)
        except (OSError, ValueError):
            pass
    return avail


def check_memory(n_workers: int, available_mib: Optional[int]) -> Optional[str]:
    """One line when ``n_workers`` CPU workers will not fit in ``available_mib``, else None."""
    if n_workers <= 0 or available_mib is None:
        return None
    need = n_workers * WORKER_MEMORY_MIB + RAY_AND_DRIVER_MIB
    if need <= available_mib:
        return None
    fit = max(0, (available_mib - RAY_AND_DRIVER_MIB) // WORKER_MEMORY_MIB)
    return (
        f"--workers {n_workers} needs about {need / 1024:.1f} GiB ({WORKER_MEMORY_MIB} MiB per worker + "
        f"{RAY_AND_DRIVER_MIB} MiB for Ray and the driver), {available_mib / 1024:.1f} GiB is available: "
        f"use --workers {fit}" + (" (0 runs in-process)" if fit == 0 else "")
    )


def worker_threads(mode: str, n_cpus: int, n_workers: int, gpus: int = 0) -> tuple[int, int]:
    """(torch threads, C++ landmark threads) for each of ``n_workers`` workers sharing
    ``n_cpus`` (with ``gpus`` > 0, one per GPU and a core left to the driver). Pinned: one torch
    thread whatever the machine; the landmark threads are the share either way."""
    if gpus > 0:
        share = max(1, n_cpus // gpus - 1)
    else:
        share = max(1, n_cpus // max(1, n_workers))
    return (PINNED_TORCH_THREADS if mode == "pinned" else share), share


# -- the recipe --------------------------------------------------------------------------------


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"numerics must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def env_for(mode: str) -> dict:
    """The environment ``mode`` needs before torch loads (empty for free)."""
    return dict(PINNED_ENV) if check_mode(mode) == "pinned" and cpu_has_avx2() else {}


def env_missing(mode: str, environ=None) -> dict:
    """The recipe's variables that ``environ`` (default ``os.environ``) lacks or sets otherwise."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in env_for(mode).items() if environ.get(k) != v}


def requested_mode(argv: list) -> str:
    """``--numerics`` from a command line (default pinned), read before the full parse; a bad
    value is left to the parser to report."""
    mode = "pinned"
    for i, arg in enumerate(argv):
        if arg == "--numerics" and i + 1 < len(argv):
            mode = argv[i + 1]
        elif arg.startswith("--numerics="):
            mode = arg.split("=", 1)[1]
    return mode if mode in MODES else "pinned"


def reexec_if_needed(argv: list, module: str = "bench.harness.run") -> None:
    """Under pinned numerics, run ``python -m <module> argv`` again (once, replacing this
    process) with the recipe's environment when it is missing: MKL and torch read it when they
    load, which in this process has already happened. Returns when nothing is to be done."""
    mode = requested_mode(argv)
    missing = env_missing(mode)
    if not missing or os.environ.get(_REEXEC_MARK):
        return
    env = {**os.environ, **missing, _REEXEC_MARK: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def apply(mode: str, num_threads: int, device: str = "cpu") -> None:
    """Set this process's torch for ``mode``: pinned turns oneDNN off and fixes the torch
    threads (:data:`PINNED_TORCH_THREADS`); free leaves oneDNN as it is and uses
    ``num_threads`` (0: torch's default). The environment must already be in place
    (:func:`problems`)."""
    import torch

    if check_mode(mode) == "pinned":
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
    threads = PINNED_TORCH_THREADS if mode == "pinned" else num_threads
    if threads > 0:
        torch.set_num_threads(threads)


def nnpack_enabled() -> bool:
    """Whether torch may hand convolutions to NNPACK (torch exposes no public getter)."""
    import torch

    return bool(torch._C._get_nnpack_enabled())


def torch_state() -> tuple:
    """What :func:`apply` changes, to put back with :func:`restore`."""
    import torch

    return torch.backends.mkldnn.enabled, torch.get_num_threads(), nnpack_enabled()


def restore(state: tuple) -> None:
    import torch

    torch.backends.mkldnn.enabled, threads = state[0], state[1]
    torch.set_num_threads(threads)
    torch.backends.nnpack.set_flags(state[2])


def problems(mode: str) -> list[str]:
    """Why this process does not run ``mode``'s numerics (empty: it does). Pinned needs a CPU
    with AVX2, the recipe's environment at torch's start (MKL's branch and torch's ISA as
    asked), oneDNN off and :data:`PINNED_TORCH_THREADS` torch threads (after :func:`apply`)."""
    import torch

    if check_mode(mode) != "pinned":
        return []
    if not cpu_has_avx2():
        return [f"this CPU ({cpu_model()}) has no AVX2: torch's and MKL's paths cannot be pinned to AVX2"]
    out = []
    branch = mkl_branch()
    if branch not in ("compatible", None):
        out.append(f"MKL's code branch is {branch}, not compatible (MKL_CBWR was not set when torch loaded)")
    cap = torch.backends.cpu.get_cpu_capability()
    if cap != PINNED_ENV["ATEN_CPU_CAPABILITY"].upper():
        out.append(f"torch dispatches to {cap}, not AVX2 (ATEN_CPU_CAPABILITY was not set when torch loaded)")
    if torch.backends.mkldnn.enabled:
        out.append("oneDNN is on")
    if nnpack_enabled() and torch.backends.nnpack.is_available():
        out.append("NNPACK is on")
    if torch.get_num_threads() != PINNED_TORCH_THREADS:
        out.append(f"torch runs {torch.get_num_threads()} threads, not {PINNED_TORCH_THREADS}")
    return out


# -- what ran ----------------------------------------------------------------------------------


def _cpuinfo() -> dict:
    info: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)
                elif info:
                    break  # the first processor is enough
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_has_avx2() -> bool:
    flags = _cpuinfo().get("flags")
    if flags is None:  # no /proc/cpuinfo: ask the extension (libgcc's check)
        from facefill_core.landmarks import available_isas

        return "avx2" in available_isas()
    return "avx2" in flags.split()


def mkl_branch() -> Optional[str]:
    """MKL's conditional-numerical-reproducibility branch in this process (``mkl_cbwr_get``
    from the MKL inside torch), e.g. ``"compatible"``, ``"auto"``, ``"off"``; None where torch
    has no MKL to ask."""
    import ctypes

    import torch

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        value = int(lib.mkl_serv_cbwr_get(1))  # MKL_CBWR_BRANCH
    except (OSError, AttributeError):
        return None
    return _MKL_BRANCHES.get(value, str(value))


def landmark_isa() -> str:
    """The ISA the C++ landmark kernels run (``FACEFILL_ISA``, else the widest this CPU has)."""
    from facefill_core.landmarks import available_isas

    isa = os.environ.get("FACEFILL_ISA", "auto")
    return available_isas()[0] if isa == "auto" else isa


def report(mode: str, torch_threads: Optional[int] = None, landmark_threads: Optional[int] = None) -> dict:
    """What this process runs: CPU model, the ISA torch dispatches to, MKL's branch, oneDNN,
    the C++ landmark kernels' ISA, thread counts (the workers' when given), the recipe's
    environment, and ``pinned``: whether ``mode`` is pinned and in effect here."""
    import torch

    from facefill_core.landmarks import available_isas

    issues = problems(mode) if mode == "pinned" else []
    # thread and oneDNN settings are the workers' (apply() runs there): judge only the environment
    env_issues = [p for p in issues if not p.startswith(("oneDNN", "NNPACK", "torch runs"))]
    return {
        "numerics": mode,
        "pinned": mode == "pinned" and not env_issues,
        "problems": env_issues,
        "cpu_model": cpu_model(),
        "usable_cpus": usable_cpus(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_branch": mkl_branch(),
        "mkldnn": (mode != "pinned") if torch_threads is not None else torch.backends.mkldnn.enabled,
        "nnpack": ((mode != "pinned") if torch_threads is not None else nnpack_enabled())
        and torch.backends.nnpack.is_available(),
        "landmark_isa": landmark_isa(),
        "landmark_isas_available": available_isas(),
        "torch_threads": torch.get_num_threads() if torch_threads is None else torch_threads,
        "landmark_threads": landmark_threads,
        "env": {
            k: os.environ.get(k) for k in (*PINNED_ENV, "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        },
    }


def describe(r: dict) -> str:
    """One sentence for a table's header."""
    how = "pinned" if r.get("pinned") else ("free" if r.get("numerics") == "free" else "not pinned")
    return (
        f"CPU {r.get('cpu_model')}; torch ISA {r.get('torch_cpu_capability')}, MKL branch {r.get('mkl_branch')}, "
        f"oneDNN {'on' if r.get('mkldnn') else 'off'}, NNPACK {'on' if r.get('nnpack') else 'off'}, "
        f"landmark kernels {r.get('landmark_isa')}; "
        f"{r.get('torch_threads')} torch / {r.get('landmark_threads')} landmark thread(s) per worker; "
        f"numerics {how}"
    )


# -- what pinning costs ------------------------------------------------------------------------


def step_seconds(iters: int = 10, candidates: int = 16, n_images: int = 2, method: str = "si") -> float:
    """Seconds per latent-search Adam step in this process (the shipped prior, embedded test
    images, centre mask; a short warm-up first)."""
    import dataclasses

    from facefill_core.config import InpaintConfig, MaskConfig
    from facefill_core.data import load_test_set
    from facefill_core.inpainters import build
    from facefill_core.masks import make_masks

    ts = load_test_set("embedded", n_images, None)
    x = ts.tensors()
    holes = make_masks(MaskConfig(kind="centre"), n_images)
    cfg = InpaintConfig(method=method, candidates=candidates, iters=2)
    inp = build(method, cfg, None, "cpu", ts.box)
    inp.inpaint(x, holes, image_indices=list(range(n_images)))  # warm-up
    inp = build(method, dataclasses.replace(cfg, iters=iters), None, "cpu", ts.box)
    t0 = time.perf_counter()
    inp.inpaint(x, holes, image_indices=list(range(n_images)))
    return (time.perf_counter() - t0) / max(1, iters)


def measure_cost(rounds: int = 3, iters: int = 10, candidates: int = 16, n_images: int = 2) -> dict:
    """Latent-search step time (:func:`step_seconds`, si) pinned, free on one torch thread (the
    cost of the paths alone) and free on :func:`usable_cpus` threads (what free runs use), each
    round a fresh process per variant (the environment is read at start), variants alternated;
    the minimum over rounds and the ratios to pinned."""
    variants = {"pinned": ("pinned", 1), "free_1_thread": ("free", 1), "free": ("free", usable_cpus())}
    times: dict = {}
    for _ in range(rounds):
        for name, (mode, threads) in variants.items():
            env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != _REEXEC_MARK}
            env.update(env_for(mode))
            cmd = [sys.executable, "-m", "bench.harness.numerics", "--step", str(iters), str(candidates), str(n_images)]
            out = subprocess.run([*cmd, mode, str(threads)], env=env, capture_output=True, text=True, check=True)
            times.setdefault(name, []).append(json.loads(out.stdout.strip().splitlines()[-1])["step_seconds"])
    best = {m: min(v) for m, v in times.items()}
    return {
        "rounds": times,
        "min_seconds": best,
        "pinned_over": {m: best["pinned"] / best[m] for m in best if m != "pinned"},
        "free_threads": usable_cpus(),
        "cpu_model": cpu_model(),
        "load_average": os.getloadavg()[0],
    }


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.harness.numerics", description=__doc__.split("\n")[0])
    p.add_argument("--numerics", choices=MODES, default="pinned")
    p.add_argument("--time", action="store_true", help="measure latent step time pinned vs free")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--step", nargs=5, default=None, help=argparse.SUPPRESS)  # iters candidates n mode threads
    a = p.parse_args(argv)
    if a.step:
        iters, candidates, n, mode, threads = int(a.step[0]), int(a.step[1]), int(a.step[2]), a.step[3], int(a.step[4])
        apply(mode, threads)
        print(json.dumps({"step_seconds": step_seconds(iters, candidates, n), "report": report(mode)}))
        return 0
    if a.time:
        print(json.dumps(measure_cost(a.rounds), indent=1))
        return 0
    reexec_if_needed(sys.argv[1:] if argv is None else list(argv), "bench.harness.numerics")
    import torch  # noqa: F401 - loaded after the environment is in place

    apply(a.numerics, usable_cpus())
    print(json.dumps(report(a.numerics), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run_report(cfg) -> dict:
    """:func:`report` for a run (a ``BenchConfig``): its workers' thread counts, and not pinned
    where GPUs compute (their numerics are the device's)."""
    import torch

    mode = getattr(cfg, "numerics", "free")
    if cfg.gpus == 0 and cfg.workers == 0 and cfg.address is None:  # in-process (bench.harness.execute)
        landmark = torch.get_num_threads()
        threads = (PINNED_TORCH_THREADS if mode == "pinned" else landmark), landmark
    else:
        threads = worker_threads(mode, usable_cpus(), cfg.workers, cfg.gpus)
    r = report(mode, *threads)
    if cfg.gpus > 0 and r["pinned"]:
        r["pinned"], r["problems"] = False, [*r["problems"], "the models run on GPUs: their numerics are not pinned"]
    return r
