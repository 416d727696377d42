"""Statistics of a benchmark cell measured over images and seed replicates (pure functions).

The model (two-level, seeds nested in images): the value of image ``i`` under seed ``j`` is

    y_ij = mu + a_i + e_ij,   a_i ~ (0, sigma_img^2)  (which image),  e_ij ~ (0, sigma_seed^2)  (optimizer noise).

The cell's estimate is the mean over images of the per-image means ``ybar_i`` (over that
image's seeds). With ``k`` seeds per image, ``Var(ybar_i) = sigma_img^2 + sigma_seed^2 / k``, so a
Student-t interval over the ``n`` image means (``n - 1`` degrees of freedom) covers both sources:
the choice of images and the optimizer's noise. The seed spread is the pooled within-image
standard deviation ``s_seed`` (``sum_i (k_i - 1)`` degrees of freedom), and the share of the
interval's variance that is optimizer noise is ``s_seed^2 * mean_i(1 / k_i) / s_ybar^2``, capped at 1
(an estimate above 1 means the images' own spread is not resolved from the seed noise).

A paired comparison of two methods takes, per image present in both, the difference of the two
per-image means over seeds and gives a t-interval over images: the image effect ``a_i`` cancels,
the seed noise of both methods stays in the differences' spread.

Values are plain floats (PSNR, SSIM, NME of one record); ``None`` or NaN marks a failed
measurement, which is left out (counted by the caller), never averaged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Hashable, Mapping, Optional, Sequence

import numpy as np

__all__ = ["CellStats", "PairedStats", "cell_stats", "paired_stats", "t_half_width"]


@dataclasses.dataclass(frozen=True)
class CellStats:
    """One cell (method x mask x metric) over images and seeds.

    Attributes:
        mean: mean over images of the per-image means over seeds (NaN when no value).
        half_width: half-width of the 95% (``confidence``) t-interval over the image means;
            NaN with fewer than 2 images.
        n_images: images with at least one finite value.
        n_seeds: the most seeds any image has (the replicates of the run).
        n_values: finite values used.
        seed_sd: pooled within-image standard deviation over seeds; NaN when no image has 2 seeds.
        noise_share: the share of the interval's variance that is seed noise, in [0, 1]; NaN when
            ``seed_sd`` or the image means' variance is unknown.
    """

    mean: float
    half_width: float
    n_images: int
    n_seeds: int
    n_values: int
    seed_sd: float
    noise_share: float

    def as_tuple(self) -> tuple[float, float, int]:
        """``(mean, half_width, n_images)``: the shape of :func:`facefill_core.metrics.mean_ci`."""
        return self.mean, self.half_width, self.n_images


@dataclasses.dataclass(frozen=True)
class PairedStats:
    """A paired difference (a - b) over images, each image's value the mean over its seeds.

    Attributes:
        mean: mean over images of ``mean_j a_ij - mean_j b_ij``.
        half_width: half-width of the t-interval over the images' differences (NaN: < 2 images).
        n_images: images present (with a finite value) on both sides.
        n_seeds_a: the most seeds of any image on side a; ``n_seeds_b`` likewise.
        differences: the per-image differences, in the order of the images' keys.
    """

    mean: float
    half_width: float
    n_images: int
    n_seeds_a: int
    n_seeds_b: int
    differences: tuple = ()

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0 (False when it is undefined)."""
        return bool(np.isfinite(self.half_width) and abs(self.mean) > self.half_width)


def t_half_width(values: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of the Student-t interval of the mean of ``values`` (finite floats).

    Args:
        values: ``n`` finite numbers.
        confidence: in (0, 1).

    Returns:
        ``t_{(1+confidence)/2, n-1} * sd / sqrt(n)``; NaN when ``n < 2``.

    Raises:
        ValueError: ``confidence`` outside (0, 1).

    Example:
        >>> round(t_half_width([1.0, 2.0, 3.0]), 4)  # t(0.975, 2) = 4.3027, sd 1, n 3
        2.4841
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float("nan")
    return float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def _finite(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))], np.float64)


def cell_stats(by_image: Mapping[Hashable, Sequence[Optional[float]]], confidence: float = 0.95) -> CellStats:
    """Mean, interval and seed spread of one cell (see the module docstring for the model).

    Args:
        by_image: image key -> that image's values, one per seed replicate (``None``/NaN: a
            failed measurement, left out).
        confidence: of the interval, in (0, 1).

    Returns:
        :class:`CellStats`.

    Raises:
        ValueError: ``confidence`` outside (0, 1).

    Example:
        >>> s = cell_stats({"a": [1.0, 3.0], "b": [5.0, 7.0]})
        >>> s.mean, s.seed_sd, round(s.noise_share, 3)  # image means 2, 6: var 8; seed var 2 / 2
        (4.0, 1.4142135623730951, 0.125)
    """
    per_image = [v for v in (_finite(vals) for vals in by_image.values()) if len(v)]
    n = len(per_image)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return CellStats(float("nan"), float("nan"), 0, 0, 0, float("nan"), float("nan"))
    means = np.array([v.mean() for v in per_image])
    ks = np.array([len(v) for v in per_image])
    dof = int((ks - 1).sum())
    ss = float(sum(((v - v.mean()) ** 2).sum() for v in per_image))
    seed_sd = math.sqrt(ss / dof) if dof > 0 else float("nan")
    half = t_half_width(means, confidence)
    var_means = float(means.var(ddof=1)) if n > 1 else float("nan")
    if np.isfinite(seed_sd) and np.isfinite(var_means):
        noise = seed_sd**2 * float(np.mean(1.0 / ks))
        share = 1.0 if noise >= var_means else noise / var_means  # var_means 0 and noise 0: share 1
    else:
        share = float("nan")
    return CellStats(float(means.mean()), half, n, int(ks.max()), int(ks.sum()), seed_sd, share)


def paired_stats(
    a: Mapping[Hashable, Sequence[Optional[float]]],
    b: Mapping[Hashable, Sequence[Optional[float]]],
    confidence: float = 0.95,
) -> PairedStats:
    """Paired difference ``a - b`` over the images both sides measured (module docstring).

    Args:
        a, b: image key -> values over seed replicates (``None``/NaN left out); images with no
            finite value on either side are not paired.
        confidence: of the interval, in (0, 1).

    Returns:
        :class:`PairedStats`.

    Example:
        >>> p = paired_stats({"x": [2.0, 4.0], "y": [5.0]}, {"x": [1.0], "y": [3.0, 3.0]})
        >>> p.mean, p.n_images, p.n_seeds_a, p.n_seeds_b  # differences 3 - 1 = 2 and 5 - 3 = 2
        (2.0, 2, 2, 2)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs, ka, kb = [], 0, 0
    for key in a:
        if key not in b:
            continue
        va, vb = _finite(a[key]), _finite(b[key])
        if len(va) and len(vb):
            diffs.append(float(va.mean() - vb.mean()))
            ka, kb = max(ka, len(va)), max(kb, len(vb))
    mean = float(np.mean(diffs)) if diffs else float("nan")
    return PairedStats(mean, t_half_width(diffs, confidence), len(diffs), ka, kb, tuple(diffs))
