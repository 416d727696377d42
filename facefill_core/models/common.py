"""Pieces shared by the trained feed-forward inpainters (Context Encoder, GFC)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from facefill_core.config import MaskConfig
from facefill_core.imaging import composite, damaged
from facefill_core.masks import THESIS_MASKS, make_masks

TRAIN_MASK_PROTOCOLS = ("all", "centre", "square")
SQUARE_SIDE_PX = (16, 32)  # "square": side uniform in [16, 32] px (inclusive), placed uniformly inside


def sample_training_masks(n: int, gen: torch.Generator, size: int = 64, protocol: str = "all") -> Tensor:
    """Training holes ``(n, 1, size, size)``, 1 = hole, drawn from ``gen``.

    Protocols:
        ``all``: one model covers every evaluation mask: each sample gets centre, left, right or
            random (80%) with equal probability.
        ``centre``: the centre hole only (a quarter of the area), Pathak et al.'s Context Encoder
            protocol.
        ``square``: one axis-aligned square per image, side uniform in ``SQUARE_SIDE_PX``, placed
            uniformly so that it lies inside the image (Li et al.'s GFC trains on random squares).
    """
    if protocol == "centre":
        return make_masks(MaskConfig("centre"), n, size)
    if protocol == "square":
        lo, hi = SQUARE_SIDE_PX
        sides = torch.randint(lo, hi + 1, (n,), generator=gen).tolist()
        out = torch.zeros(n, 1, size, size)
        for i, s in enumerate(sides):
            top, left = (int(v) for v in torch.randint(0, size - s + 1, (2,), generator=gen))
            out[i, :, top : top + s, left : left + s] = 1.0
        return out
    if protocol != "all":
        raise ValueError(f"protocol must be one of {', '.join(TRAIN_MASK_PROTOCOLS)}, got {protocol!r}")
    kinds = torch.randint(0, len(THESIS_MASKS), (n,), generator=gen).tolist()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    out = torch.empty(n, 1, size, size)
    for i, k in enumerate(kinds):
        out[i] = make_masks(MaskConfig(THESIS_MASKS[k], seed=seed), 1, size, start_index=i)[0]
    return out


def hole_boxes(holes: Tensor) -> list[tuple[int, int, int, int]]:
    """Bounding box ``(top, left, bottom, right)`` (exclusive ends) of each hole."""
    out = []
    for h in holes[:, 0]:
        ys = torch.nonzero(h.any(1)).flatten()
        xs = torch.nonzero(h.any(0)).flatten()
        if len(ys) == 0:
            out.append((0, 0, h.shape[0], h.shape[1]))
        else:
            out.append((int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1))
    return out


def crop_holes(x: Tensor, holes: Tensor, size: int = 32) -> Tensor:
    """The hole's bounding box of each image, resized to ``size x size`` (GFC's local view)."""
    crops = []
    for img, (top, left, bottom, right) in zip(x, hole_boxes(holes)):
        c = img[:, top:bottom, left:right][None]
        crops.append(torch.nn.functional.interpolate(c, size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(crops)


def half_state(module: torch.nn.Module) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in module.state_dict().items()}


def dataset_mean_colour(data_u8: np.ndarray) -> list[float]:
    """Mean colour of a uint8 NHWC training set, in [-1, 1] (the Context Encoder's hole fill)."""
    m = data_u8.reshape(-1, 3).mean(0) / 127.5 - 1.0
    return [float(v) for v in m]


def before_after_grid(x: Tensor, holes: Tensor, out: Tensor) -> Tensor:
    """Training samples of 16 images: rows of 8 originals, damaged (holes white), completed."""
    dam, comp = damaged(x, holes, fill=1.0), composite(x, out, holes)
    return torch.cat([x[:8], dam[:8], comp[:8], x[8:], dam[8:], comp[8:]])
