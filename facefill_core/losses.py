"""Losses of the latent search, as pure functions with per-sample ``(N,)`` values.

Images ``(N, 3, H, W)`` in [-1, 1]; holes ``(N, 1, H, W)``, 1 = missing (see :mod:`facefill_core`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facefill_core.landmarks import landmark_penalty


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return x
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def context_weights(hole: Tensor, window: int = 7) -> Tensor:
    """Yeh et al.'s importance weights: for a known pixel, the number of missing pixels in the
    ``window x window`` neighbourhood divided by ``window**2``; 0 inside the hole. Pixels
    outside the image count as known.

    Args:
        hole: ``(N, 1, H, W)``, 1 = missing.
        window: odd window size (7 in the thesis).

    Returns:
        ``(N, 1, H, W)`` float32 in [0, 1].

    Example:
        >>> h = torch.zeros(1, 1, 5, 5); h[0, 0, 2, 2] = 1
        >>> float(context_weights(h, 3)[0, 0, 1, 1])  # 1 missing of 9
        0.1111111119389534
    """
    if hole.dim() != 4 or hole.shape[1] != 1:
        raise ValueError(f"hole must be (N, 1, H, W), got {tuple(hole.shape)}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    kernel = torch.ones(1, 1, window, window, dtype=hole.dtype, device=hole.device)
    count = F.conv2d(hole, kernel, padding=window // 2)
    return count / float(window * window) * (1.0 - hole)


def contextual_loss(generated: Tensor, image: Tensor, weights: Tensor, reduction: str = "none") -> Tensor:
    """Weighted context loss ``|| W * (G(z) - y) ||_1`` per sample (sum over pixels, channels).

    Args:
        generated, image: ``(N, 3, H, W)`` in [-1, 1].
        weights: ``(N, 1, H, W)`` from :func:`context_weights` (0 in the hole).
    """
    per = (weights * (generated - image)).abs().flatten(1).sum(1)
    return _reduce(per, reduction)


def prior_loss(logits: Tensor, weight: float = 0.003, reduction: str = "none") -> Tensor:
    """Perceptual prior ``lambda * log(1 - D(G(z)))`` with ``D = sigmoid(logit)``, computed as
    ``lambda * logsigmoid(-logit)`` (finite for any logit).

    Example:
        >>> float(prior_loss(torch.tensor([0.0]), weight=1.0)[0])  # log(1/2)
        -0.6931471824645996
    """
    return _reduce(weight * F.logsigmoid(-logits), reduction)


def landmark_count_loss(
    reference: np.ndarray, predicted: np.ndarray, margin_px: float = 3.0, step: float = 0.5
) -> np.ndarray:
    """The thesis's L_d per candidate (see :func:`facefill_core.landmarks.landmark_penalty`)."""
    return landmark_penalty(reference, predicted, margin_px, step)


def landmark_distance(reference: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Smooth landmark error: mean Euclidean distance in pixels, per sample.

    Args:
        reference: ``(68, 2)`` or ``(N, 68, 2)``; predicted: ``(N, 68, 2)``.
    """
    return np.linalg.norm(np.asarray(predicted, np.float64) - np.asarray(reference, np.float64), axis=-1).mean(-1)
