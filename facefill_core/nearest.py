"""Nearest-neighbour fill (``nn``): the training image closest to the damaged image on its known
pixels fills the hole (the scene-completion baseline of the thesis's Fig. 6, without its
blending).

When the evaluated images are themselves training images (``folder:PATH`` is both), an image
never fills itself: ``exclude`` maps its index to its row among the candidates (leave-one-out).

Distances are squared L2 over the known pixels, computed exactly on the uint8 values in float64
(integer arithmetic, so ties and self-matches are exact) as masked matrix products over chunks
of the training set: ``sum_k m (x - t)^2 = sum_k m x^2 - 2 (m x) . t + m . t^2``.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from facefill_core.imaging import check_inputs, composite, to_uint8_nhwc, uint8_to_signed
from facefill_core.inpainters import Inpainter


class NearestNeighbourInpainter(Inpainter):
    """Fill each hole from the training image nearest on the known pixels.

    Args:
        train_images: the candidates, uint8 ``(M, H, W, 3)`` (numpy or torch) as
            :meth:`facefill_core.data.FaceDataset.load_uint8` returns them.
        device: where the search runs (default CPU).
        chunk_size: training images per matrix product (bounds memory: ``chunk_size x C*H*W``
            float64 values).
        exclude: image index (``image_indices`` of :meth:`inpaint`) -> the row of
            ``train_images`` that may not fill it (the same image: leave-one-out).

    Raises:
        TypeError / ValueError: ``train_images`` not uint8 ``(M, H, W, 3)`` with ``M >= 1``, or
            ``chunk_size < 1``, or an ``exclude`` row out of range.

    Example:
        >>> train = torch.zeros(2, 8, 8, 3, dtype=torch.uint8); train[1] = 255
        >>> nn = NearestNeighbourInpainter(train)
        >>> x = torch.ones(1, 3, 8, 8); h = torch.zeros(1, 1, 8, 8); h[..., :4, :] = 1
        >>> nn.inpaint(x, h).eq(1).all().item(), nn.last_match.tolist()
        (True, [1])
    """

    name = "nn"

    def __init__(
        self, train_images, device=None, chunk_size: int = 1024, exclude: Optional[Mapping[int, int]] = None
    ) -> None:
        t = torch.as_tensor(train_images)
        if t.dtype != torch.uint8:
            raise TypeError(f"train_images must be uint8 (M, H, W, 3), got dtype {t.dtype}")
        if t.dim() != 4 or t.shape[3] != 3 or t.shape[0] < 1:
            raise ValueError(f"train_images must be uint8 (M, H, W, 3) with M >= 1, got {tuple(t.shape)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.device = torch.device(device or "cpu")
        self.train = t.permute(0, 3, 1, 2).contiguous().to(self.device)  # (M, 3, H, W) uint8
        self.chunk_size = int(chunk_size)
        self.exclude = {int(k): int(v) for k, v in (exclude or {}).items()}
        bad = [v for v in self.exclude.values() if not 0 <= v < t.shape[0]]
        if bad:
            raise ValueError(f"exclude rows must be in [0, {t.shape[0] - 1}], got {bad[:3]}")
        self.last_match: Optional[Tensor] = None
        self.last_distance: Optional[Tensor] = None

    @classmethod
    def from_dataset(
        cls, spec: str = "embedded", n_train: Optional[int] = None, device=None
    ) -> "NearestNeighbourInpainter":
        """The train split of a dataset (``"embedded" | "celeba:PATH" | "folder:PATH"``), all of
        it or its first ``n_train`` images."""
        from facefill_core.data import FaceDataset

        images, _ = FaceDataset(spec).load_uint8("train", n_train)
        return cls(images, device=device)

    @torch.no_grad()
    def nearest(
        self, images: Tensor, holes: Tensor, image_indices: Optional[Sequence[int]] = None
    ) -> tuple[Tensor, Tensor]:
        """Index of the nearest training image per image, and its squared L2 distance over the
        known pixels in uint8 units (summed over channels).

        Args:
            images: ``(N, 3, H, W)`` in [-1, 1]; holes: ``(N, 1, H, W)``, 1 = missing.
            image_indices: the images' stable indices, for ``exclude`` (default ``0..N-1``).

        Returns:
            ``(index (N,) int64, distance (N,) float64)``; ties go to the lower index.
        """
        check_inputs(images, holes)
        if images.shape[2:] != self.train.shape[2:]:
            raise ValueError(
                f"images are {tuple(images.shape[2:])} but the training images are {tuple(self.train.shape[2:])}"
            )
        n = images.shape[0]
        ids = range(n) if image_indices is None else [int(i) for i in image_indices]
        if len(ids) != n:
            raise ValueError(f"image_indices must have {n} entries, got {len(ids)}")
        banned = torch.tensor([self.exclude.get(i, -1) for i in ids], device=self.device)
        x = torch.from_numpy(to_uint8_nhwc(images)).permute(0, 3, 1, 2).to(self.device, torch.float64)
        known = (holes < 0.5).to(self.device, torch.float64)  # (N, 1, H, W)
        mx = (known * x).flatten(1)  # (N, C*H*W)
        const = (known * x * x).flatten(1).sum(1)  # (N,)
        km = known.flatten(1)  # (N, H*W)
        best = torch.full((n,), float("inf"), dtype=torch.float64, device=self.device)
        best_i = torch.zeros(n, dtype=torch.int64, device=self.device)
        for s in range(0, self.train.shape[0], self.chunk_size):
            t = self.train[s : s + self.chunk_size].to(torch.float64)  # (B, C, H, W)
            d = const[:, None] - 2.0 * mx @ t.flatten(1).T + km @ (t * t).sum(1).flatten(1).T
            rows = torch.arange(s, s + t.shape[0], device=self.device)
            d = d.masked_fill(rows[None, :] == banned[:, None], float("inf"))
            v, i = d.min(1)
            better = v < best
            best = torch.where(better, v, best)
            best_i = torch.where(better, i + s, best_i)
        return best_i.cpu(), best.cpu()

    def inpaint(self, images: Tensor, holes: Tensor, image_indices: Optional[Sequence[int]] = None) -> Tensor:
        """Complete ``(N, 3, H, W)`` images in [-1, 1]: the hole from the nearest training image,
        known pixels exactly the input's. ``image_indices`` only select the ``exclude`` rows."""
        idx, dist = self.nearest(images, holes, image_indices)
        self.last_match, self.last_distance = idx, dist
        fill = uint8_to_signed(self.train[idx].permute(0, 2, 3, 1).cpu().numpy())
        return composite(images, fill.to(images.device, images.dtype), holes)

    def extra(self) -> dict:
        """The last call's matches: ``{"nn_index": [...]}`` (indices into the training images)."""
        return {} if self.last_match is None else {"nn_index": self.last_match.tolist()}
