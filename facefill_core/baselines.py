"""Classical fills from maintained libraries: OpenCV's Telea and Navier-Stokes inpainting,
scikit-image's biharmonic inpainting, and a mean-colour fill.

All take images ``(N, 3, H, W)`` in [-1, 1] and holes ``(N, 1, H, W)`` (1 = missing) and return
completed images in which known pixels are exactly the input's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from facefill_core.data import signed_to_uint8


def _composite(images: Tensor, filled: Tensor, holes: Tensor) -> Tensor:
    return torch.where(holes > 0.5, filled.to(images.dtype), images)


def opencv_fill(images: Tensor, holes: Tensor, method: str = "telea", radius: int = 3) -> Tensor:
    """``cv2.inpaint`` (``telea``: Telea 2004; ``ns``: Navier-Stokes, Bertalmio et al. 2001) on
    the uint8 image, radius ``radius`` px."""
    import cv2

    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    u8 = signed_to_uint8(images)
    masks = (holes[:, 0].cpu().numpy() > 0.5).astype(np.uint8)
    out = np.stack([cv2.inpaint(np.ascontiguousarray(u8[i]), masks[i], radius, flag) for i in range(len(u8))])
    filled = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return _composite(images, filled.to(images.device), holes)


def biharmonic_fill(images: Tensor, holes: Tensor) -> Tensor:
    """``skimage.restoration.inpaint_biharmonic`` per image, on [0, 1] floats."""
    from skimage.restoration import inpaint_biharmonic

    x = ((images.detach().cpu().double() + 1) / 2).permute(0, 2, 3, 1).numpy()
    m = holes[:, 0].cpu().numpy() > 0.5
    out = np.stack([inpaint_biharmonic(x[i], m[i], channel_axis=-1) for i in range(len(x))])
    filled = torch.from_numpy(out).permute(0, 3, 1, 2).float() * 2 - 1
    return _composite(images, filled.clamp(-1, 1).to(images.device), holes)


def mean_fill(images: Tensor, holes: Tensor) -> Tensor:
    """Each hole filled with the mean colour of the image's known pixels."""
    known = 1.0 - holes
    mean = (images * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
    return _composite(images, mean.expand_as(images), holes)
