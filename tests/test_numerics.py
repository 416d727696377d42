"""Pinned numerics (bench.harness.numerics): the recipe reaches the processes that compute, records do
not depend on the instruction set torch dispatches to, the manifest says what ran, and the
default worker count follows the CPUs this process may use."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from bench.harness import numerics
from bench.harness.cli import UsageError, build_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--methods",
    "si",
    "--masks",
    "centre",
    "--n-images",
    "1",
    "--iters",
    "5",
    "--candidates",
    "4",
    "--metrics",
    "hole,mesh",
]
VOLATILE = ("seconds", "node_id")  # wall time and Ray's node: not numerics


def _clean_env(**extra) -> dict:
    """This environment without the recipe's variables (a user's shell), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINNED_ENV and not k.startswith("FACEFILL_NUM")}
    env.update(PYTHONPATH=ROOT, **extra)
    return env


def _records(run_dir) -> dict:
    with open(os.path.join(run_dir, "records.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {(r["method"], r["mask"], r["image_id"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}


def _manifest_numerics(run_dir) -> dict:
    with open(os.path.join(run_dir, "manifest.json")) as f:
        return json.load(f)["machine"]["numerics"]


# ---- sizing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cpu_max, expected",
    [(None, 4), ("max 100000\n", 4), ("200000 100000\n", 2), ("150000 100000\n", 2), ("800000 100000\n", 4)],
)
def test_usable_cpus_follows_affinity_and_cgroup_quota(tmp_path, cpu_max, expected):
    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max)
    assert numerics.usable_cpus(affinity={0, 1, 2, 3}, cgroup_roots=(str(tmp_path),)) == expected


def test_usable_cpus_reads_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert numerics.usable_cpus(affinity=set(range(8)), cgroup_roots=(str(tmp_path),)) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert numerics.usable_cpus(affinity=set(range(8)), cgroup_roots=(str(tmp_path),)) == 8


def test_default_workers_follow_the_affinity_mask_not_cpu_count(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(numerics, "_cgroup_quota", lambda roots: None)
    cfg, _ = build_config(["--methods", "mean", "--masks", "centre", "--n-images", "1", "--out", str(tmp_path / "r")])
    assert cfg.workers == 3 and cfg.numerics == "pinned"
    monkeypatch.setattr(numerics, "_cgroup_quota", lambda roots: 1.0)  # a 1-CPU container on the same host
    assert build_config(["--methods", "mean", "--n-images", "1", "--out", str(tmp_path / "r")])[0].workers == 1


def test_worker_threads_pin_torch_and_share_the_landmark_threads():
    assert numerics.worker_threads("pinned", 16, 2) == (1, 8)
    assert numerics.worker_threads("free", 16, 2) == (8, 8)
    assert numerics.worker_threads("pinned", 16, 4, gpus=4) == (1, 3)  # a core per GPU left to the driver
    assert numerics.worker_threads("free", 2, 8) == (1, 1)


def test_numerics_flag():
    assert numerics.requested_mode(["--numerics", "free"]) == "free"
    assert numerics.requested_mode(["--numerics=free", "--seed", "1"]) == "free"
    assert numerics.requested_mode(["--seed", "1"]) == "pinned"
    with pytest.raises(UsageError, match="--numerics: invalid choice: 'fast'"):
        build_config(["--numerics", "fast"])
    with pytest.raises(ValueError, match="numerics must be one of pinned, free, got 'fast'"):
        numerics.env_for("fast")


def test_env_missing_names_what_the_recipe_needs():
    assert numerics.env_missing("free", {}) == {}
    if numerics.cpu_has_avx2():
        assert numerics.env_missing("pinned", {}) == numerics.PINNED_ENV
        assert numerics.env_missing("pinned", {**numerics.PINNED_ENV, "MKL_CBWR": "AVX2"}) == {"MKL_CBWR": "COMPATIBLE"}
        assert numerics.env_missing("pinned", dict(numerics.PINNED_ENV)) == {}


# ---- the recipe reaches the processes that compute ------------------------------------------


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="pinned numerics need AVX2")
def test_cli_restarts_itself_with_the_recipe():
    """``python -m bench.harness.numerics`` from a shell without the recipe: MKL runs its compatible
    branch and torch its AVX2 kernels; free leaves MKL's CNR off."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.harness.numerics"],
        env=_clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout)
    assert r["pinned"] is True and r["problems"] == []
    assert r["mkl_branch"] == "compatible" and r["torch_cpu_capability"] == "AVX2"
    assert r["mkldnn"] is False and r["nnpack"] is False and r["torch_threads"] == 1
    assert {k: r["env"][k] for k in numerics.PINNED_ENV} == numerics.PINNED_ENV
    out = subprocess.run(
        [sys.executable, "-m", "bench.harness.numerics", "--numerics", "free"],
        env=_clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout)
    assert r["pinned"] is False and r["mkl_branch"] == "off" and r["env"]["MKL_CBWR"] is None


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="pinned numerics need AVX2")
def test_pinned_run_records_what_ran(tmp_path):
    """A Ray-free run from the command line: the recipe in effect, and the manifest and the
    tables' header say so."""
    from facefill_core.landmarks import available_isas

    out = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "bench.run", *TINY, "--workers", "0", "--no-progress", "--out", str(out)],
        env=_clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    r = _manifest_numerics(out)
    assert r["numerics"] == "pinned" and r["pinned"] is True and r["problems"] == []
    assert r["mkl_branch"] == "compatible" and r["torch_cpu_capability"] == "AVX2" and r["mkldnn"] is False
    assert r["torch_threads"] == 1 and r["landmark_threads"] >= 1
    assert [rec["numerics_pinned"] for rec in _records(out).values()] == [True]
    # pinned numerics run the C++ kernels on their AVX2 path, even where AVX-512 is present
    assert r["landmark_isa"] == numerics.PINNED_ENV["FACEFILL_ISA"] == "avx2" and "avx2" in available_isas()
    assert r["cpu_model"] == numerics.cpu_model()
    header = (out / "tables.md").read_text().split("\n\n")[1]
    assert f"CPU {numerics.cpu_model()}" in header and "numerics pinned" in header and "torch ISA AVX2" in header


def test_in_process_run_applies_the_settings_and_puts_them_back(tmp_path, monkeypatch):
    """Called as a library in a process whose torch is already loaded: the worker settings
    (one torch thread, oneDNN off) hold during the units and are restored after; the manifest
    says pinned only if this process's MKL and torch really run the recipe."""
    import torch

    from bench.harness import run, workers

    seen = []
    real = workers.UnitRunner.results

    def spy(self, unit):
        seen.append((torch.backends.mkldnn.enabled, torch.get_num_threads()))
        return real(self, unit)

    monkeypatch.setattr(workers.UnitRunner, "results", spy)
    before = numerics.torch_state()
    assert run.main([*TINY, "--workers", "0", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert seen == [(False, 1)]
    assert numerics.torch_state() == before
    r = _manifest_numerics(tmp_path / "run")
    in_effect = numerics.mkl_branch() == "compatible" and torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert r["pinned"] is in_effect and r["torch_threads"] == 1 and r["mkldnn"] is False
    assert bool(r["problems"]) is not in_effect
    assert [rec["numerics_pinned"] for rec in _records(tmp_path / "run").values()] == [in_effect]


# ---- records do not depend on what the recipe pins --------------------------------------------

_RUN = "import sys; from bench.harness.run import main; sys.exit(main(sys.argv[1:]))"  # no restart: the env as given


def _run_with(tmp_path, name, mode, cpus=None, **env):
    """A Ray-free run of :data:`TINY` in a fresh process with ``env`` over the recipe (pinned) or
    over a clean environment (free); ``cpus``: the affinity mask it starts with."""
    out = tmp_path / name
    full = _clean_env(**(numerics.PINNED_ENV if mode == "pinned" else {}))
    full.update(env)
    cmd = [sys.executable, "-c", _RUN, *TINY, "--workers", "0", "--no-progress", "--numerics", mode, "--out", str(out)]
    affinity = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    subprocess.run(cmd, env=full, cwd=ROOT, capture_output=True, text=True, check=True, preexec_fn=affinity)
    return _records(out), _manifest_numerics(out)


# The DCGAN prior's forward and backward on a quick-preset batch (16 candidates x 4 images), as
# hashes: far more sensitive than records, which round completions to 8 bits before scoring.
# Then three steps of the search's optimizer. FACEFILL_TEST_NNPACK=1 turns NNPACK back on after
# the recipe (the discriminator's batch of 64 is one NNPACK takes).
_PROBE = """
import hashlib, os, sys, torch
from bench.harness import numerics
numerics.apply(sys.argv[1], 2)
if os.environ.get("FACEFILL_TEST_NNPACK") == "1":
    torch.backends.nnpack.set_flags(True)
from facefill_core.adam import PortableAdam
from facefill_core.pretrained import load_dcgan
g, d, _ = load_dcgan(None, "cpu")
z = (torch.rand(64, 100, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
opt = PortableAdam([z], lr=0.01)
for step in range(3):
    y = g(z)
    s = d(y)
    opt.zero_grad()
    ((y ** 2).mean() + s.float().mean()).backward()
    if step == 0:
        first = [t.detach().clone() for t in (y, s, z.grad)]
    opt.step()
print(" ".join(hashlib.md5(t.detach().contiguous().numpy().tobytes()).hexdigest() for t in (*first, z)))
"""


# si-ldsoft's smooth cascade on 4 embedded faces: points and their gradient in the image.
_SOFT_PROBE = """
import hashlib, sys, torch
from bench.harness import numerics
numerics.apply(sys.argv[1], 1)
from facefill_core.data import render_embedded
from facefill_core.imaging import uint8_to_signed
from facefill_core.landmarks_torch import TorchShapePredictor
x = uint8_to_signed(render_embedded(range(4))).requires_grad_(True)
p = TorchShapePredictor()(x, soft=True, temperature=1.0)
(g,) = torch.autograd.grad(p.square().sum(), x)
print(" ".join(hashlib.md5(t.detach().contiguous().numpy().tobytes()).hexdigest() for t in (p, g)))
"""


def _probe(mode, cpus=None, wrapper=(), script=_PROBE, **env):
    full = _clean_env(**(numerics.PINNED_ENV if mode == "pinned" else {}))
    full.update(env)
    affinity = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    r = subprocess.run([*wrapper, sys.executable, "-c", script, mode], env=full, cwd=ROOT, capture_output=True,
                       text=True, check=True, preexec_fn=affinity)  # fmt: skip
    return r.stdout.split()


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="pinned numerics need AVX2")
def test_each_pinned_setting_matters_and_pinned_math_ignores_cores_and_onednn():
    """Measured on the models' math: oneDNN's instruction set, MKL's branch and torch's kernel
    build each change the bits (so each is pinned); pinned, neither the core count nor oneDNN's
    instruction set does."""
    one_cpu = {min(os.sched_getaffinity(0))}
    pinned = _probe("pinned")
    assert _probe("pinned", cpus=one_cpu, ONEDNN_MAX_CPU_ISA="SSE41") == pinned
    assert _probe("free", ONEDNN_MAX_CPU_ISA="SSE41") != _probe("free", ONEDNN_MAX_CPU_ISA="AVX2")  # oneDNN on
    assert _probe("pinned", MKL_CBWR="AUTO") != pinned
    assert _probe("pinned", ATEN_CPU_CAPABILITY="default") != pinned
    assert _probe("pinned", FACEFILL_TEST_NNPACK="1") != pinned


QEMU = shutil.which("qemu-x86_64")


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="pinned numerics need AVX2")
@pytest.mark.skipif(QEMU is None, reason="no qemu-x86_64 (Debian's qemu-user; make setup installs it as root)")
def test_pinned_math_is_the_same_on_another_cpu():
    """The same probe on this CPU and on an emulated AMD Zen 3 (QEMU user mode, EPYC-Milan: AVX2,
    no AVX-512, its own CPUID, cache sizes and vendor string): pinned, the same bits. The
    emulation computes approximate instructions (rcp, rsqrt) exactly, unlike any real CPU, so
    a pinned path that used them would fail here too. Measured on an AVX-512 EPYC: with NNPACK
    on, or torch's float32 sqrt in Adam, the discriminator's second convolution and Adam's step
    differ."""
    emulated = (QEMU, "-cpu", "EPYC-Milan")
    assert _probe("pinned", wrapper=emulated) == _probe("pinned")
    # si-ldsoft's smooth cascade (bilinear sampling written out: torch's grid_sample differed)
    assert _probe("pinned", wrapper=emulated, script=_SOFT_PROBE) == _probe("pinned", script=_SOFT_PROBE)


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="pinned numerics need AVX2")
def test_pinned_records_do_not_depend_on_cores_or_onednn(tmp_path):
    """Pinned: one core or all of them (the landmark threads follow the cores, torch's do not),
    and oneDNN capped to SSE4.1 or not (it is off): the same records, bit for bit."""
    a, ra = _run_with(tmp_path, "all", "pinned")
    b, rb = _run_with(tmp_path, "one", "pinned", cpus={min(os.sched_getaffinity(0))}, ONEDNN_MAX_CPU_ISA="SSE41")
    assert ra["pinned"] is rb["pinned"] is True and rb["landmark_threads"] == 1
    assert a.keys() == b.keys() and len(a) == 1
    assert a == b


@pytest.mark.slow
@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="pinned numerics need AVX2")
def test_ray_workers_inherit_the_recipe(tmp_path):
    """A local Ray cluster's workers are started with the driver's environment: each checks that
    its MKL branch and torch ISA are the recipe's and refuses to run otherwise, so a finished run
    is a pinned one."""
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-c", _RUN, *TINY, "--workers", "1", "--no-progress", "--out", str(out)],
        env=_clean_env(),  # this driver's own torch is not pinned: only what it hands the workers is
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert [rec["numerics_pinned"] for rec in _records(out).values()] == [True]


def test_memory_check_names_the_fit(tmp_path):
    from bench.harness.numerics import RAY_AND_DRIVER_MIB, WORKER_MEMORY_MIB, available_memory_mib, check_memory

    assert check_memory(2, 2 * WORKER_MEMORY_MIB + RAY_AND_DRIVER_MIB) is None
    msg = check_memory(64, 4 * WORKER_MEMORY_MIB + RAY_AND_DRIVER_MIB)
    assert msg.startswith("--workers 64 needs about 51.0 GiB") and msg.endswith("use --workers 4")
    assert "0 runs in-process" in check_memory(2, 500)
    assert check_memory(0, 1) is None and check_memory(8, None) is None
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 4194304 kB\n")
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "memory.max").write_text(str(3 * 2**30))
    (cg / "memory.current").write_text(str(2**30))
    assert available_memory_mib(str(meminfo), (str(tmp_path / "none"),)) == 4096
    assert available_memory_mib(str(meminfo), (str(cg),)) == 2048  # the cgroup's 2 GiB left is less


def test_too_many_workers_for_memory_is_one_line(capsys):
    from bench.harness.run import main

    assert main(["--workers", "100000", "--methods", "mean", "--masks", "centre", "--n-images", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --workers 100000 needs about")
