"""Latent-search step time at K = 64 (one image, centre mask) for si, si-ld, si-ld+, and wall
time per image-mask at the quick preset. Target: si-ld step <= 1.10 x si step (ratio of minima,
one run, si's rounds interleaved with si-ld's; docs/performance.md has the figures per machine),
asserted as a floor (minima of 10 interleaved rounds). The paper preset
(64 x 1000) is reported as 1000 x the measured step time."""

import functools
import os
import statistics
import time

import pytest
import torch

from bench.harness.config import PRESETS
from facefill_core.config import InpaintConfig, MaskConfig
from facefill_core.data import FaceDataset
from facefill_core.inpaint import LatentSearchInpainter
from facefill_core.landmarks import LandmarkPredictor
from facefill_core.masks import make_masks
from facefill_core.pretrained import load_dcgan

STEPS = 20
ROUNDS_RATIO = 10  # interleaved si / si-ld rounds behind the ratio


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
    g, d, meta = load_dcgan()
    x, _ = FaceDataset("embedded").load("test", 1)
    return g, d, meta, x, make_masks(MaskConfig("centre"), 1)


@functools.lru_cache(maxsize=1)
def _predictor() -> LandmarkPredictor:
    """One predictor for every method, as a harness worker holds, with the landmark kernels at
    this CPU's widest instruction set as a free run has them (the test suite's environment pins
    them to AVX2 for its bit-for-bit checks; every set gives the same points), beside torch's own
    defaults for its convolutions."""
    return LandmarkPredictor(isa="auto")


def _run(setup, method, iters=STEPS, k=64, **kw):
    g, d, meta, x, h = setup
    inp = LatentSearchInpainter(
        g, d, InpaintConfig(method=method, candidates=k, iters=iters, **kw), box=meta["box"], device="cpu",
        predictor=_predictor(),
    )  # fmt: skip
    return lambda: inp.inpaint(x, h)


@pytest.mark.parametrize("method", ["si", "si-ld", "si-ld+"])
@pytest.mark.benchmark(group="latent-step-K64")
def test_step_time(benchmark, setup, method, ratios):
    fn = _run(setup, method, steer_start=0.0)
    paired, before_round = [], None
    if method == "si-ld":
        # The ratio's si rounds are interleaved with si-ld's, so that a drift of the machine's
        # speed between two parametrized runs does not enter it: round i runs si, si (timed),
        # si-ld, si-ld (timed), and each timed round follows a round of its own method (what
        # one leaves in caches and the heap is not charged to the other).
        si = _run(setup, "si", steer_start=0.0)

        def before_round():
            si()
            t = time.perf_counter()
            si()
            paired.append(time.perf_counter() - t)
            fn()

    # si-ld's rounds are the ratio's: more of them, since on a shared 2-core VM the speed of a
    # round moved by up to +-10 % (minima of 5 rounds missed the quiet state at times).
    r = benchmark.pedantic(fn, rounds=ROUNDS_RATIO if before_round else 5, warmup_rounds=1, setup=before_round)
    assert torch.isfinite(r.completed).all()
    ratios[f"step_{method}"] = benchmark.stats.stats.min / STEPS
    if paired:
        ratios["step_si_paired"] = min(paired) / STEPS
        # the warm-up round's si is not paired with a timed si-ld round
        timed = benchmark.stats.stats.data
        ratios["step_ratio_paired_median"] = statistics.median(b / a for a, b in zip(paired[-len(timed) :], timed))


@pytest.mark.benchmark(group="image-mask-wall")
def test_quick_preset_wall(benchmark, setup, ratios):
    q = PRESETS["quick"]
    r = benchmark.pedantic(_run(setup, "si-ld", iters=q["iters"], k=q["candidates"]), rounds=2, warmup_rounds=0)
    assert torch.isfinite(r.completed).all()
    ratios["quick_si-ld_image_mask_s"] = benchmark.stats.stats.min


def test_z_step_ratio(ratios):
    if "step_si" not in ratios or "step_si-ld" not in ratios:
        if os.environ.get("FACEFILL_REQUIRE_RATIOS"):  # .ci/run: a ratio check that did not run fails
            pytest.fail("the timed benchmarks did not run (run without --benchmark-skip)")
        pytest.skip("run with make bench")
    si = ratios.get("step_si_paired", ratios["step_si"])  # si's rounds interleaved with si-ld's
    r = ratios["step_si-ld"] / si
    print(
        f"\nstep K=64: si {ratios['step_si'] * 1e3:.1f} ms (interleaved with si-ld: {si * 1e3:.1f} ms), "
        f"si-ld {ratios['step_si-ld'] * 1e3:.1f} ms ({r:.3f}x; median of the rounds' paired ratios "
        f"{ratios.get('step_ratio_paired_median', float('nan')):.3f}x), "
        f"si-ld+ {ratios['step_si-ld+'] * 1e3:.1f} ms; "
        f"paper preset per image-mask ~ {ratios['step_si-ld'] * 1000:.0f} s"
    )
    assert r <= 1.10, f"si-ld step {r:.2f}x si at K=64 (floor: <= 1.10x, met at 1.09x and 1.04-1.07x)"
