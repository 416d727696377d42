"""Classical fills from maintained libraries: OpenCV's Telea and Navier-Stokes inpainting,
scikit-image's biharmonic inpainting, and a mean-colour fill.

All take images ``(N, 3, H, W)`` in [-1, 1] and holes ``(N, 1, H, W)`` (1 = missing) and return
completed images in which known pixels are exactly the input's.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from facefill_core.imaging import composite, to_uint8_nhwc, uint8_to_signed


def opencv_fill(images: Tensor, holes: Tensor, method: str = "telea", radius: int = 3) -> Tensor:
    """``cv2.inpaint`` (``telea``: Telea 2004; ``ns``: Navier-Stokes, Bertalmio et al. 2001) on
    the uint8 image, radius ``radius`` px."""
    import cv2

    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    u8 = to_uint8_nhwc(images)
    masks = (holes[:, 0].cpu().numpy() > 0.5).astype(np.uint8)
    out = np.stack([cv2.inpaint(np.ascontiguousarray(u8[i]), masks[i], radius, flag) for i in range(len(u8))])
    return composite(images, uint8_to_signed(out).to(images.device), holes)


def biharmonic_fill(images: Tensor, holes: Tensor) -> Tensor:
    """``skimage.restoration.inpaint_biharmonic`` per image, on [0, 1] floats."""
    from skimage.restoration import inpaint_biharmonic

    x = ((images.detach().cpu().double() + 1) / 2).permute(0, 2, 3, 1).numpy()
    m = holes[:, 0].cpu().numpy() > 0.5
    out = np.stack([inpaint_biharmonic(x[i], m[i], channel_axis=-1) for i in range(len(x))])
    filled = torch.from_numpy(out).permute(0, 3, 1, 2).float() * 2 - 1
    return composite(images, filled.clamp(-1, 1).to(images.device), holes)


def mean_fill(images: Tensor, holes: Tensor) -> Tensor:
    """Each hole filled with the mean colour of the image's known pixels."""
    known = 1.0 - holes
    mean = (images * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
    return composite(images, mean.expand_as(images), holes)


# classical methods' fills by the key their registry entry declares (facefill_core.methods)
FILLS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "telea": lambda images, holes: opencv_fill(images, holes, "telea"),
    "ns": lambda images, holes: opencv_fill(images, holes, "ns"),
    "biharmonic": biharmonic_fill,
    "mean": mean_fill,
}
