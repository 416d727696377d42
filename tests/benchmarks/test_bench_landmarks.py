"""The landmark batch at the batch sizes the search uses (64, 256, 1024 embedded 64x64 faces,
canonical box): the batch-major C++ kernels (all threads, 1 thread, and 1 thread per instruction
set), dlib's own per-image C++ call (1 thread, all threads) and a Python loop over dlib's Python
API. Every variant is timed once per round, rounds interleaved, minimum kept; ratios of minima from
one run. Targets: batch, all threads >= 8x the Python loop at 64 faces (met: 8.4x-10.2x on the
quiet 2-core AVX2 machine, README), asserted as a floor, so a regression fails; all threads >= 1.8x
one thread (never met: 1.34x), an expected failure carrying the measured value."""

import os
import time

import dlib  # dlib-bin, a test dependency: a missing one fails here, it does not skip
import pytest

from facefill_core.data import FaceDataset
from facefill_core.landmarks import LandmarkPredictor, available_isas, default_model_path

BOX = (8, 16, 55, 63)
SIZES = {64: 15, 256: 6, 1024: 3}  # batch size: rounds
_RESULTS: dict = {}  # batch size -> {variant: seconds (min)}


@pytest.fixture(scope="module")
def faces():
    imgs, _ = FaceDataset("embedded").load_uint8("train", max(SIZES))
    return imgs


def _variants(imgs):
    all_threads, one = LandmarkPredictor(num_threads=0), LandmarkPredictor(num_threads=1)
    sp, rect = dlib.shape_predictor(default_model_path()), dlib.rectangle(*BOX)
    v = {
        "batch_all": lambda: all_threads.predict(imgs, box=BOX),
        "batch_1": lambda: one.predict(imgs, box=BOX),
        "dlib_cpp_all": lambda: all_threads.predict_dlib(imgs, box=BOX),
        "dlib_cpp_1": lambda: one.predict_dlib(imgs, box=BOX),
        "dlib_python": lambda: [sp(im, rect) for im in imgs],
    }
    for isa in available_isas():
        p = LandmarkPredictor(num_threads=1, isa=isa)
        v[f"batch_1_{isa}"] = lambda p=p: p.predict(imgs, box=BOX)
    return v


@pytest.mark.parametrize("n", list(SIZES))
@pytest.mark.benchmark(group="landmarks-interleaved")
def test_interleaved(benchmark, faces, ratios, n):
    imgs = faces[:n]
    variants = _variants(imgs)
    best = {k: float("inf") for k in variants}
    for fn in variants.values():  # warm-up: load the model pages, start the threads once
        fn()

    def one_round():
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)

    benchmark.pedantic(one_round, rounds=SIZES[n], warmup_rounds=0)
    _RESULTS[n] = best
    for name, s in best.items():
        ratios[f"landmarks_{n}_{name}"] = s
        benchmark.extra_info[f"{name}_us_per_face"] = round(s / n * 1e6, 1)
    assert len(variants["batch_all"]()) == n


def test_z_ratios():
    if not _RESULTS:
        if os.environ.get("FACEFILL_REQUIRE_RATIOS"):  # .ci/run: a ratio check that did not run fails
            pytest.fail("the timed benchmarks did not run (run without --benchmark-skip)")
        pytest.skip("run with make bench")
    lines = ["", "landmarks: us per face (min of interleaved rounds); ratio = dlib python loop / variant"]
    for n, best in sorted(_RESULTS.items()):
        py = best["dlib_python"]
        cells = [f"{k} {s / n * 1e6:.0f} us ({py / s:.1f}x)" for k, s in best.items()]
        lines.append(f"  n={n}: " + "; ".join(cells))
    print("\n".join(lines))
    best64 = _RESULTS.get(64)
    if best64 is None:
        pytest.skip("the 64-face run did not happen")
    vs_python = best64["dlib_python"] / best64["batch_all"]
    vs_one = best64["batch_1"] / best64["batch_all"]
    print(f"  n=64: {vs_python:.2f}x the python loop (floor 8x, aim 15x); {vs_one:.2f}x one thread (target 1.8x)")
    # met (8.4x-10.2x, README): a floor; a landmark speed regression fails here
    assert vs_python >= 8.0, f"batch (all threads) vs dlib python loop at 64 faces: {vs_python:.2f}x < 8x"
    if vs_one < 1.8:  # never met: an expected failure carrying its figure
        pytest.xfail(f"all threads vs 1 thread at 64 faces: {vs_one:.2f}x < 1.8x (never met; 1.34x in README)")
