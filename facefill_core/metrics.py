"""PSNR and SSIM via ``skimage.metrics`` with every setting explicit, landmark NME, and the
feature-scale error (is a completed eye, nose or mouth too big or too small for the face?).

Metrics take images in **[0, 1]** (convert with :func:`facefill_core.data.to_unit_range`),
``(N, 3, H, W)``; values are per image, ``np.float64 (N,)``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# Recorded in every run's manifest. SSIM: Wang et al.'s Gaussian-weighted form (sigma 1.5,
# population covariance), on RGB with the channel mean, data range 1.
PSNR_SETTINGS = {"data_range": 1.0}
SSIM_SETTINGS = {
    "data_range": 1.0,
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "channel_axis": -1,
    "win_size": 11,
}
METRIC_SETTINGS = {
    "image_range": "[0, 1] float64, (H, W, 3), computed on the whole 64x64 image",
    "psnr": {"function": "skimage.metrics.peak_signal_noise_ratio", **PSNR_SETTINGS},
    "ssim": {"function": "skimage.metrics.structural_similarity", **SSIM_SETTINGS},
    "hole_psnr": "PSNR over the hole's pixels only (MSE of the hole's pixels x 3 channels, data range 1)",
    "hole_ssim": "the whole image's SSIM map (settings above), channel mean, averaged over the hole's pixels",
    "nme": "mean point distance (dlib 68 points, result vs undamaged image, canonical box, unrounded) "
    "/ outer-eye-corner distance (points 36, 45) of the undamaged image",
    "scale": "per region (eyes, brows, nose, mouth, jaw of dlib's 68 points): |log| of the ratio of the "
    "region's centroid size (RMS distance of its points to their centroid; eyes and brows per side, "
    "then averaged) divided by the face's inter-pupil distance (between the eye centroids), result vs "
    "undamaged image, same points as NME; scale = mean over the five regions",
}

# dlib's 68-point scheme (iBUG 300-W): paired regions are measured per side, then averaged.
FACE_REGIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "eyes": (tuple(range(36, 42)), tuple(range(42, 48))),
    "brows": (tuple(range(17, 22)), tuple(range(22, 27))),
    "nose": (tuple(range(27, 36)),),
    "mouth": (tuple(range(48, 68)),),
    "jaw": (tuple(range(0, 17)),),
}
SCALE_KEYS = tuple(f"scale_{r}" for r in FACE_REGIONS) + ("scale", "scale_signed")


def _hwc(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, np.float64)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) in [0, 1], got {x.shape}")
    if x.min() < -1e-6 or x.max() > 1 + 1e-6:
        raise ValueError(f"images must be in [0, 1], got range [{x.min():.3f}, {x.max():.3f}]")
    return np.clip(x, 0, 1).transpose(0, 2, 3, 1)


def psnr(pred, target) -> np.ndarray:
    """Per-image PSNR in dB of ``pred`` vs ``target``, both ``(N, 3, H, W)`` in [0, 1].

    Example:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> round(float(psnr(x + 0.1, x)[0]), 6)
        20.0
    """
    p, t = _hwc(pred), _hwc(target)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ")
    return np.array([peak_signal_noise_ratio(t[i], p[i], **PSNR_SETTINGS) for i in range(len(p))])


def ssim(pred, target) -> np.ndarray:
    """Per-image SSIM (settings in :data:`SSIM_SETTINGS`), images ``(N, 3, H, W)`` in [0, 1]."""
    p, t = _hwc(pred), _hwc(target)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ")
    return np.array([structural_similarity(t[i], p[i], **SSIM_SETTINGS) for i in range(len(p))])


def _hole(hole, shape) -> np.ndarray:
    h = hole.detach().cpu().numpy() if isinstance(hole, torch.Tensor) else np.asarray(hole)
    h = np.asarray(h, np.float64)
    if h.ndim != 4 or h.shape[1] != 1 or h.shape[0] != shape[0] or h.shape[2:] != shape[1:3]:
        raise ValueError(f"hole must be (N, 1, H, W) matching images {shape}, got {h.shape}")
    return h[:, 0] > 0.5


def hole_psnr(pred, target, hole) -> np.ndarray:
    """Per-image PSNR in dB over the hole's pixels only (all three channels; data range 1).

    Args:
        pred, target: ``(N, 3, H, W)`` in [0, 1].
        hole: ``(N, 1, H, W)``, 1 = hole.

    Returns:
        ``np.float64 (N,)``; NaN for an image without hole pixels, inf where the hole is exact.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8); h = torch.zeros(1, 1, 8, 8); h[..., :4, :] = 1
        >>> y = x.clone(); y[..., :4, :] = 0.1; y[..., 4:, :] = 0.5  # known pixels don't count
        >>> round(float(hole_psnr(y, x, h)[0]), 6)
        20.0
    """
    p, t = _hwc(pred), _hwc(target)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ")
    m = _hole(hole, p.shape)
    out = np.full(len(p), np.nan)
    with np.errstate(divide="ignore"):
        for i in range(len(p)):
            if m[i].any():
                mse = ((p[i][m[i]] - t[i][m[i]]) ** 2).mean()
                out[i] = 10 * np.log10(PSNR_SETTINGS["data_range"] ** 2 / mse)
    return out


def hole_ssim(pred, target, hole) -> np.ndarray:
    """Per-image SSIM averaged over the hole's pixels only: the SSIM map of the whole image
    (:data:`SSIM_SETTINGS`, so each window still sees its known neighbours), its channel mean,
    averaged over the pixels where ``hole`` is 1. NaN without hole pixels."""
    p, t = _hwc(pred), _hwc(target)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ")
    m = _hole(hole, p.shape)
    out = np.full(len(p), np.nan)
    for i in range(len(p)):
        if m[i].any():
            _, smap = structural_similarity(t[i], p[i], full=True, **SSIM_SETTINGS)
            out[i] = smap.mean(-1)[m[i]].mean()
    return out


def hole_metrics(pred, target, hole) -> dict:
    """``{"hole_psnr", "hole_ssim"}`` per image; images ``(N, 3, H, W)`` in [0, 1], ``hole``
    ``(N, 1, H, W)``, 1 = hole."""
    return {"hole_psnr": hole_psnr(pred, target, hole), "hole_ssim": hole_ssim(pred, target, hole)}


def landmark_nme(pred_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """NME of ``(N, 68, 2)`` points against the undamaged image's; NaN where the reference eye
    distance is degenerate (< 1 px): such images are counted as failures by the caller."""
    from facefill_core.landmarks import nme

    return nme(pred_points, target_points)


def _points(x, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 3 or a.shape[1:] != (68, 2):
        raise ValueError(f"{name} must be (N, 68, 2) landmarks, got {a.shape}")
    return a


def _centroid_size(points: np.ndarray) -> np.ndarray:
    """RMS distance of ``(N, P, 2)`` points to their centroid, ``(N,)``."""
    c = points - points.mean(axis=1, keepdims=True)
    return np.sqrt((c**2).sum(-1).mean(-1))


def _side_log_ratios(pred_points, target_points) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per region, ``(sides, N)`` log ratios of relative sizes (result vs original), and a
    ``(N,)`` mask of images where the measure is undefined."""
    p, t = _points(pred_points, "pred_points"), _points(target_points, "target_points")
    if p.shape != t.shape:
        raise ValueError(f"pred_points {p.shape} and target_points {t.shape} differ")

    def pupils(x):
        return np.linalg.norm(x[:, 36:42].mean(1) - x[:, 42:48].mean(1), axis=1)

    ratios = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for r, sides in FACE_REGIONS.items():
            ratios[r] = np.stack(
                [
                    np.log((_centroid_size(p[:, list(i)]) / pupils(p)) / (_centroid_size(t[:, list(i)]) / pupils(t)))
                    for i in sides
                ]
            )
    bad = pupils(t) < 1.0
    for v in ratios.values():
        bad |= ~np.isfinite(v).all(axis=0)
    return ratios, bad


def region_log_scale(pred_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """Signed log ratio of each region's size (relative to the face) on the result vs the original.

    A region's size is its centroid size (RMS distance of its points to their centroid) divided
    by the face's inter-pupil distance (between the two eye centroids), so scaling the whole face
    costs nothing and scaling one region about its centroid by ``s`` gives exactly ``log(s)``.
    Eyes and brows: the mean of the two sides' log ratios.

    Args:
        pred_points: ``(N, 68, 2)`` landmarks of the completed images.
        target_points: ``(N, 68, 2)`` landmarks of the undamaged images.

    Returns:
        ``np.float64 (N, 5)``, columns in :data:`FACE_REGIONS` order (positive: too big). NaN
        where the original's inter-pupil distance is below 1 px or a region collapsed to a point.

    Raises:
        ValueError: shapes other than ``(N, 68, 2)`` or differing.

    Example:
        >>> t = np.random.default_rng(0).uniform(0, 64, (1, 68, 2))
        >>> p = t.copy(); c = t[0, 27:36].mean(0); p[0, 27:36] = c + 2 * (t[0, 27:36] - c)
        >>> round(float(region_log_scale(p, t)[0, 2]), 6)  # the nose, twice as big
        0.693147
    """
    ratios, bad = _side_log_ratios(pred_points, target_points)
    out = np.stack([v.mean(axis=0) for v in ratios.values()], axis=1)
    out[bad] = np.nan
    return out


def feature_scale_error(pred_points: np.ndarray, target_points: np.ndarray) -> dict[str, np.ndarray]:
    """Feature-scale error per image: ``|log|`` of each region's relative size ratio.

    Args:
        pred_points, target_points: ``(N, 68, 2)`` landmarks of result and original.

    Returns:
        ``{"scale_eyes", "scale_brows", "scale_nose", "scale_mouth", "scale_jaw"}``: ``(N,)``
        errors per region (eyes and brows: the mean of the two sides' ``|log|``); ``"scale"``:
        their mean; ``"scale_signed"``: the mean over regions of the signed log ratios (positive:
        features too big for the face). NaN as in :func:`region_log_scale`.

    Raises:
        ValueError: shapes other than ``(N, 68, 2)`` or differing.

    Example:
        >>> t = np.random.default_rng(0).uniform(0, 64, (1, 68, 2))
        >>> float(feature_scale_error(t, t)["scale"][0])
        0.0
    """
    ratios, bad = _side_log_ratios(pred_points, target_points)
    out = {f"scale_{r}": np.where(bad, np.nan, np.abs(v).mean(axis=0)) for r, v in ratios.items()}
    out["scale"] = np.mean([out[f"scale_{r}"] for r in FACE_REGIONS], axis=0)
    out["scale_signed"] = np.where(bad, np.nan, np.mean([v.mean(axis=0) for v in ratios.values()], axis=0))
    return out


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and the half-width of its Student-t confidence interval, ignoring NaN.

    Returns:
        ``(mean, half_width, n)``; half-width NaN when n < 2.
    """
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(v[0]), float("nan"), 1
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
    return float(v.mean()), float(half), n


def face_metrics(pred, target, predictor, box: Optional[Sequence[int]], target_points=None) -> dict:
    """PSNR, SSIM, landmark NME and the feature-scale error (:data:`SCALE_KEYS`) per image for
    ``(N, 3, H, W)`` images in [-1, 1]; NME and scale share one landmark prediction each.

    ``target_points``: the targets' unrounded landmarks ``(N, 68, 2)`` when already computed
    (the harness computes them once per image per run); None: predicted here."""
    from facefill_core.imaging import to_uint8_nhwc, to_unit_range

    p01, t01 = to_unit_range(pred).clamp(0, 1), to_unit_range(target).clamp(0, 1)
    pp = predictor.predict(to_uint8_nhwc(pred), box=box, rounded=False)
    tp = (
        target_points if target_points is not None else predictor.predict(to_uint8_nhwc(target), box=box, rounded=False)
    )
    return {"psnr": psnr(p01, t01), "ssim": ssim(p01, t01), "nme": landmark_nme(pp, tp), **feature_scale_error(pp, tp)}
