"""Batch of 64 distinct 64x64 faces: batch-major C++ (all cores, 1 thread), dlib's per-image
C++ call, and a Python loop over dlib's Python API. Targets (ratios of minima, one run):
all cores >= 8x the Python loop; all cores >= 1.8x one thread."""

import pytest

from facefill_core.data import FaceDataset
from facefill_core.landmarks import LandmarkPredictor

dlib = pytest.importorskip("dlib")
BOX = (8, 16, 55, 63)


@pytest.fixture(scope="module")
def faces():
    imgs, _ = FaceDataset("embedded").load_uint8("test", 64)
    return imgs


def _record(benchmark, ratios, name):
    ratios[name] = benchmark.stats.stats.min


@pytest.mark.benchmark(group="landmarks-64")
def test_a_batch_all_cores(benchmark, faces, ratios):
    p = LandmarkPredictor(num_threads=0)
    out = benchmark.pedantic(p.predict, args=(faces,), kwargs={"box": BOX}, rounds=30, warmup_rounds=2)
    assert out.shape == (64, 68, 2)
    _record(benchmark, ratios, "batch_all")


@pytest.mark.benchmark(group="landmarks-64")
def test_b_batch_one_thread(benchmark, faces, ratios):
    p = LandmarkPredictor(num_threads=1)
    out = benchmark.pedantic(p.predict, args=(faces,), kwargs={"box": BOX}, rounds=30, warmup_rounds=2)
    assert out.shape == (64, 68, 2)
    _record(benchmark, ratios, "batch_1")


@pytest.mark.benchmark(group="landmarks-64")
def test_c_dlib_python_loop(benchmark, faces, ratios):
    sp = dlib.shape_predictor("/usr/share/dlib/shape_predictor_68_face_landmarks.dat")
    rect = dlib.rectangle(*BOX)

    def loop():
        return [sp(im, rect) for im in faces]

    out = benchmark.pedantic(loop, rounds=15, warmup_rounds=1)
    assert len(out) == 64
    _record(benchmark, ratios, "dlib_python")


@pytest.mark.benchmark(group="landmarks-64")
def test_d_dlib_cpp_per_image_one_thread(benchmark, faces, ratios):
    p = LandmarkPredictor(num_threads=1)
    out = benchmark.pedantic(p.predict_dlib, args=(faces,), kwargs={"box": BOX}, rounds=15, warmup_rounds=1)
    assert out.shape == (64, 68, 2)
    _record(benchmark, ratios, "dlib_cpp_per_image_1")


def test_z_ratios(ratios):
    if len(ratios) < 4:
        pytest.skip("run the whole module with --benchmark-only")
    vs_python = ratios["dlib_python"] / ratios["batch_all"]
    vs_one = ratios["batch_1"] / ratios["batch_all"]
    print(
        f"\nbatch(all) vs dlib python loop: {vs_python:.2f}x; vs 1 thread: {vs_one:.2f}x; "
        f"batch(1) vs dlib C++ per image(1): {ratios['dlib_cpp_per_image_1'] / ratios['batch_1']:.2f}x"
    )
    assert vs_python >= 8.0
    assert vs_one >= 1.8
