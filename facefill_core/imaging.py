"""The ground floor of image plumbing: range conversions, the inpainters' input contract,
damaging and compositing. Everything else in the library goes through these.

Conventions (see :mod:`facefill_core`): images ``(N, 3, H, W)`` float32 in [-1, 1]; holes
``(N, 1, H, W)``, 1 = missing; the C++ side and files use uint8 ``(N, H, W, 3)`` RGB.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_unit_range(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] (what the metrics take).

    Example:
        >>> to_unit_range(torch.tensor([-1.0, 0.0, 1.0])).tolist()
        [0.0, 0.5, 1.0]
    """
    return (x + 1.0) / 2.0


def to_signed_range(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def uint8_to_signed(a: np.ndarray) -> Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8_nhwc(images) -> np.ndarray:
    """Images in [-1, 1] -> the uint8 batch that files and the C++ extension take.

    Args:
        images: torch tensor or numpy array ``(N, 3, H, W)`` (or ``(3, H, W)``) in [-1, 1].

    Returns:
        ``np.uint8 (N, H, W, 3)``, C-contiguous; values ``round((x + 1) * 127.5)`` (half to
        even) clipped to [0, 255].

    Raises:
        ValueError: not ``(N, 3, H, W)``.

    Example:
        >>> to_uint8_nhwc(torch.zeros(1, 3, 2, 2))[0, 0, 0].tolist()
        [128, 128, 128]
    """
    if hasattr(images, "detach"):
        images = images.detach().to("cpu").float().numpy()
    a = np.asarray(images, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) in [-1, 1], got {tuple(a.shape)}")
    a = np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def check_inputs(images: Tensor, holes: Tensor) -> None:
    """The input contract of every inpainter.

    Args:
        images: ``(N, 3, H, W)`` finite, in [-1, 1].
        holes: ``(N, 1, H, W)`` of 0 (known) and 1 (missing), not all 1 for any image.

    Raises:
        TypeError: not tensors.
        ValueError: a shape, range or value that breaks the contract (names both shapes).
    """
    if not isinstance(images, Tensor) or not isinstance(holes, Tensor):
        raise TypeError(f"images and holes must be torch tensors, got {type(images).__name__}, {type(holes).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    if (
        holes.dim() != 4
        or holes.shape[1] != 1
        or holes.shape[0] != images.shape[0]
        or holes.shape[2:] != images.shape[2:]
    ):
        raise ValueError(f"holes must be (N, 1, H, W) matching images {tuple(images.shape)}, got {tuple(holes.shape)}")
    if not torch.isfinite(images).all() or images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6:
        raise ValueError("images must be finite and in [-1, 1]")
    if ((holes != 0) & (holes != 1)).any():
        raise ValueError("holes must contain only 0 (known) and 1 (missing)")
    full = holes.flatten(1).min(1).values >= 1
    if full.any():
        raise ValueError(
            f"hole covers the whole image for image(s) {full.nonzero().flatten().tolist()}: there is no context"
        )


def composite(known_from: Tensor, hole_from: Tensor, holes: Tensor) -> Tensor:
    """Known pixels exactly from ``known_from``, hole pixels from ``hole_from`` (broadcast).

    Args:
        known_from: ``(N, C, H, W)``; its dtype is the result's.
        hole_from: broadcastable to ``known_from`` (an image batch, or a colour ``(N, C, 1, 1)``).
        holes: ``(N, 1, H, W)``, 1 = missing.

    Example:
        >>> h = torch.tensor([[[[1.0, 0.0]]]])
        >>> composite(torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2), h).tolist()
        [[[[1.0, 0.0]]]]
    """
    return torch.where(holes > 0.5, hole_from.to(known_from.dtype), known_from)


def damaged(images: Tensor, holes: Tensor, fill: float = 0.0) -> Tensor:
    """The damaged input: known pixels kept, hole pixels set to ``fill`` (0 = mid grey)."""
    return torch.where(holes > 0.5, torch.full_like(images, fill), images)
