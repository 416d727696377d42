import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from facefill_core.metrics import mean_ci, psnr, ssim


def test_psnr_closed_form():
    x = torch.full((2, 3, 16, 16), 0.5)
    assert psnr(x + 0.1, x) == pytest.approx([20.0, 20.0])
    assert psnr(x + 0.01, x) == pytest.approx([40.0, 40.0])


def test_ssim_identity_and_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    assert ssim(x, x) == pytest.approx([1.0, 1.0])
    y = (x + 0.1 * torch.randn(2, 3, 64, 64, generator=g)).clamp(0, 1)
    ref = structural_similarity(
        x[0].permute(1, 2, 0).double().numpy(),
        y[0].permute(1, 2, 0).double().numpy(),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
    )
    assert ssim(y, x)[0] == pytest.approx(ref)
    assert 0.3 < ref < 0.95


def test_mean_ci():
    m, h, n = mean_ci([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3)
    assert h == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) * s / sqrt(n)


def test_metric_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) in \[0, 1\]"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"in \[0, 1\], got range"):
        psnr(torch.full((1, 3, 8, 8), -1.0), torch.zeros(1, 3, 8, 8))


# -- feature-scale error --------------------------------------------------------------------


def _face_points(n=3, seed=0):
    """Real layouts: dlib's points on the first embedded test faces, float64."""
    from facefill_core.data import FaceDataset
    from facefill_core.landmarks import LandmarkPredictor

    ds = FaceDataset("embedded")
    imgs, _ = ds.load_uint8("test", n)
    return LandmarkPredictor(num_threads=1).predict(imgs, box=ds.box, rounded=False).astype(np.float64)


def _scale_region(points, idx, s):
    p = points.copy()
    c = p[:, idx].mean(1, keepdims=True)
    p[:, idx] = c + s * (p[:, idx] - c)
    return p


def test_scale_error_zero_for_identical_and_whole_face_scaling():
    from facefill_core.metrics import SCALE_KEYS, feature_scale_error

    t = _face_points()
    e = feature_scale_error(t, t)
    assert set(e) == set(SCALE_KEYS)
    for k in SCALE_KEYS:
        assert e[k] == pytest.approx([0.0] * 3, abs=1e-12), k
    moved = 2.0 * t + np.array([5.0, -3.0])  # the whole face twice as big and shifted: no error
    for k in SCALE_KEYS:
        assert feature_scale_error(moved, t)[k] == pytest.approx([0.0] * 3, abs=1e-12), k


def test_scale_error_region_scaled_2x_is_log2():
    from facefill_core.metrics import feature_scale_error, region_log_scale

    t = _face_points()
    log2 = np.log(2.0)
    e = feature_scale_error(_scale_region(t, list(range(27, 36)), 2.0), t)  # the nose
    assert e["scale_nose"] == pytest.approx([log2] * 3, rel=1e-9)
    for r in ("eyes", "brows", "mouth", "jaw"):
        assert e[f"scale_{r}"] == pytest.approx([0.0] * 3, abs=1e-12), r
    assert e["scale"] == pytest.approx([log2 / 5] * 3, rel=1e-9)
    assert e["scale_signed"] == pytest.approx([log2 / 5] * 3, rel=1e-9)
    small = _scale_region(t, list(range(48, 68)), 0.5)  # the mouth, half as big
    assert feature_scale_error(small, t)["scale_mouth"] == pytest.approx([log2] * 3, rel=1e-9)
    assert region_log_scale(small, t)[:, 3] == pytest.approx([-log2] * 3, rel=1e-9)
    # one eye twice as big (about its own centroid: the pupils stay put): half of log 2 for "eyes"
    one_eye = _scale_region(t, list(range(36, 42)), 2.0)
    assert feature_scale_error(one_eye, t)["scale_eyes"] == pytest.approx([log2 / 2] * 3, rel=1e-9)
    # both brows, one bigger and one smaller: |log| per side, no cancellation
    brows = _scale_region(_scale_region(t, list(range(17, 22)), 2.0), list(range(22, 27)), 0.5)
    assert feature_scale_error(brows, t)["scale_brows"] == pytest.approx([log2] * 3, rel=1e-9)
    assert region_log_scale(brows, t)[:, 1] == pytest.approx([0.0] * 3, abs=1e-12)


def test_scale_error_degenerate_and_bad_input():
    from facefill_core.metrics import feature_scale_error

    t = _face_points(2)
    flat = t.copy()
    flat[1] = 10.0  # every point at one place: no pupils, no sizes
    e = feature_scale_error(t, flat)
    assert np.isfinite(e["scale"][0]) and np.isnan(e["scale"][1]) and np.isnan(e["scale_nose"][1])
    with pytest.raises(ValueError, match=r"pred_points must be \(N, 68, 2\) landmarks, got \(68, 2\)"):
        feature_scale_error(t[0], t[0])
    with pytest.raises(ValueError, match=r"pred_points \(1, 68, 2\) and target_points \(2, 68, 2\) differ"):
        feature_scale_error(t[:1], t)


def test_face_metrics_carries_scale(predictor):
    from facefill_core.data import FaceDataset
    from facefill_core.metrics import SCALE_KEYS, face_metrics

    ds = FaceDataset("embedded")
    x, _ = ds.load("test", 2)
    m = face_metrics(x, x, predictor, ds.box)
    assert set(SCALE_KEYS) <= set(m)
    assert m["scale"] == pytest.approx([0.0, 0.0], abs=1e-12) and m["nme"] == pytest.approx([0.0, 0.0])
    y = x.clone()
    y[:, :, 40:56, 20:44] = x[:, :, 40:56, 20:44].flip(2)  # the mouth region upside down
    m = face_metrics(y, x, predictor, ds.box)
    assert (m["scale_mouth"] > 0).all() and (m["scale"] > 0).all()
