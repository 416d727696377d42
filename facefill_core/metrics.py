"""PSNR and SSIM via ``skimage.metrics`` with every setting explicit, and landmark NME.

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
    "nme": "mean point distance (dlib 68 points, result vs undamaged image, canonical box, unrounded) "
    "/ outer-eye-corner distance (points 36, 45) of the undamaged image",
}


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
        >>> float(psnr(x + 0.1, x)[0])
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


def landmark_nme(pred_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """NME of ``(N, 68, 2)`` points against the undamaged image's; NaN where the reference eye
    distance is degenerate (< 1 px): such images are counted as failures by the caller."""
    from facefill_core.landmarks import nme

    return nme(pred_points, target_points)


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


def face_metrics(pred, target, predictor, box: Optional[Sequence[int]]) -> dict:
    """PSNR, SSIM and landmark NME per image for ``(N, 3, H, W)`` images in [-1, 1]."""
    from facefill_core.data import to_unit_range
    from facefill_core.landmarks import to_uint8_nhwc

    p01, t01 = to_unit_range(pred).clamp(0, 1), to_unit_range(target).clamp(0, 1)
    pp = predictor.predict(to_uint8_nhwc(pred), box=box, rounded=False)
    tp = predictor.predict(to_uint8_nhwc(target), box=box, rounded=False)
    return {"psnr": psnr(p01, t01), "ssim": ssim(p01, t01), "nme": landmark_nme(pp, tp)}
