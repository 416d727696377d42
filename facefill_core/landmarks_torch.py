"""dlib's 68-point shape predictor (Kazemi & Sullivan's regression-tree cascade) in torch: the
same model, batched, on any device; and a smooth version that gives gradients.

The parameters come from the C++ extension's ``export()`` (dlib's own deserializer; nothing
parses the file format here). Images: ``(N, 3, H, W)`` float in [-1, 1] or uint8 ``(N, H, W, 3)``;
points: ``(N, 68, 2)`` (x, y) pixels, unrounded, on the input's device.

Hard mode reproduces dlib: grayscale as dlib does it ((r + g + b) // 3 on uint8), the similarity
transform from the mean shape to the current shape per cascade level (Umeyama's least squares,
in its closed form for 2-D), feature pixels at rounded positions (0 outside the image), each
tree's 4 splits by index arithmetic for every image and tree at once, leaf sums. The sums are
added in a different order than dlib's, so points differ in the last float bits (measured in
README). Soft mode (``soft=True``): bilinear pixel sampling on float gray, and each split goes
left with probability ``sigmoid((f1 - f2 - thresh) / temperature)``; the leaf is the expectation
over the 16 leaves. As ``temperature -> 0`` soft mode tends to hard mode (on integer pixels).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn


class TorchShapePredictor(nn.Module):
    """Args:
    params: ``LandmarkPredictor.export()`` (default: Debian's 68-point model).
    """

    def __init__(self, params: Optional[dict] = None) -> None:
        super().__init__()
        if params is None:
            from facefill_core.landmarks import LandmarkPredictor

            params = LandmarkPredictor().export()
        init = torch.from_numpy(np.asarray(params["initial_shape"], np.float32))  # (P, 2)
        self.register_buffer("initial_shape", init)
        self.num_cascades = len(params["leaf_values"])
        for c in range(self.num_cascades):
            self.register_buffer(f"anchor{c}", torch.from_numpy(np.asarray(params["anchor_idx"][c], np.int64)))
            self.register_buffer(f"delta{c}", torch.from_numpy(np.asarray(params["deltas"][c], np.float32)))
            self.register_buffer(f"idx1_{c}", torch.from_numpy(np.asarray(params["split_idx1"][c], np.int64)))
            self.register_buffer(f"idx2_{c}", torch.from_numpy(np.asarray(params["split_idx2"][c], np.int64)))
            self.register_buffer(f"thresh{c}", torch.from_numpy(np.asarray(params["split_thresh"][c], np.float32)))
            leaves = np.asarray(params["leaf_values"][c], np.float32)
            self.register_buffer(
                f"leaves{c}", torch.from_numpy(leaves.reshape(leaves.shape[0], leaves.shape[1], -1, 2))
            )
        t, s = params["split_idx1"][0].shape
        self.depth = int(np.log2(s + 1))

    # ------------------------------------------------------------------------------------
    @staticmethod
    def gray(images: Tensor, soft: bool) -> Tensor:
        """``(N, H, W)`` float gray on dlib's 0..255 scale."""
        if images.dtype == torch.uint8:
            if images.dim() != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must be (N, H, W, 3), got {tuple(images.shape)}")
            u8 = images.permute(0, 3, 1, 2)
        else:
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"images must be (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
            if soft:
                return ((images.float() + 1.0) * 127.5).clamp(0, 255).mean(1)
            u8 = torch.round((images.detach().float() + 1.0) * 127.5).clamp(0, 255)
        if soft:
            return u8.float().mean(1)
        return torch.div(u8.long().sum(1), 3, rounding_mode="floor").float()

    @staticmethod
    def _similarity(from_pts: Tensor, to_pts: Tensor) -> Tensor:
        """Least-squares similarity (no translation part) mapping ``from`` (P, 2) to ``to``
        (N, P, 2): ``(N, 2, 2)``, Umeyama's solution in closed form for 2-D."""
        f = from_pts - from_pts.mean(0)
        t = to_pts - to_pts.mean(1, keepdim=True)
        sigma = (f**2).sum(-1).mean()
        a00 = (t[..., 0] * f[:, 0]).mean(-1)
        a01 = (t[..., 0] * f[:, 1]).mean(-1)
        a10 = (t[..., 1] * f[:, 0]).mean(-1)
        a11 = (t[..., 1] * f[:, 1]).mean(-1)
        a, b = (a00 + a11) / sigma, (a10 - a01) / sigma
        return torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)

    def forward(
        self,
        images: Tensor,
        box: Optional[Sequence[float]] = None,
        boxes: Optional[Tensor] = None,
        soft: bool = False,
        temperature: float = 1.0,
        sampling: Optional[str] = None,
    ) -> Tensor:
        """Landmarks ``(N, 68, 2)`` of ``images`` (see the module doc for the input forms).

        Args:
            box: shared ``(left, top, right, bottom)``; boxes: per image ``(N, 4)``; default the
                whole frame.
            soft: smooth mode (bilinear sampling, sigmoid splits), differentiable in the image.
            temperature: sigmoid temperature of soft splits (pixel-difference units).
            sampling: ``"nearest"`` (dlib's; the hard default) or ``"bilinear"`` (the soft
                default: gradients reach the image through the sample positions' neighbours).
        """
        sampling = sampling or ("bilinear" if soft else "nearest")
        if sampling not in ("nearest", "bilinear"):
            raise ValueError(f"sampling must be 'nearest' or 'bilinear', got {sampling!r}")
        if soft and temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        g = self.gray(images, soft)
        n, h, w = g.shape
        dev = g.device
        if boxes is None:
            b = torch.tensor(box if box is not None else (0, 0, w - 1, h - 1), dtype=torch.float32, device=dev)
            b = b.expand(n, 4)
        else:
            b = torch.as_tensor(boxes, dtype=torch.float32, device=dev)
            if b.shape != (n, 4):
                raise ValueError(f"boxes must be (N, 4) with N = {n}, got {tuple(b.shape)}")
        origin = b[:, None, :2]  # (N, 1, 2)
        scale = (b[:, 2:] - b[:, :2])[:, None]  # (N, 1, 2)
        shape = self.initial_shape.expand(n, -1, -1).clone()  # normalised box coordinates
        flat = g.reshape(n, h * w)
        for c in range(self.num_cascades):
            anchor, delta = getattr(self, f"anchor{c}"), getattr(self, f"delta{c}")
            m = self._similarity(self.initial_shape, shape)  # (N, 2, 2)
            pts = torch.einsum("nij,fj->nfi", m, delta) + shape[:, anchor]  # (N, F, 2)
            pix = origin + pts * scale  # image pixels
            feats = self._sample(g, flat, pix, sampling == "bilinear")  # (N, F)
            shape = shape + self._trees(c, feats, soft, temperature)
        return origin + shape * scale

    def _sample(self, g: Tensor, flat: Tensor, pix: Tensor, bilinear: bool) -> Tensor:
        n, h, w = g.shape
        if bilinear:
            # Bilinear at pixel coordinates, zeros outside the image, written out with gathers:
            # floor, differences, products and sums are single IEEE operations, so the value and
            # its gradient are the same bits on every CPU (torch's grid_sample kernel is not:
            # under an emulated Zen 3 it gave other bits than on an AVX-512 EPYC).
            x, y = pix[..., 0], pix[..., 1]
            x0, y0 = torch.floor(x.detach()), torch.floor(y.detach())
            wx, wy = x - x0, y - y0
            xi, yi = x0.long(), y0.long()
            out = torch.zeros_like(x)
            for dy, fy in ((0, 1 - wy), (1, wy)):
                for dx, fx in ((0, 1 - wx), (1, wx)):
                    cx, cy = xi + dx, yi + dy
                    inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
                    idx = cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)
                    v = torch.where(inside, flat.gather(1, idx), torch.zeros((), dtype=flat.dtype, device=g.device))
                    out = out + fy * fx * v
            return out
        p = torch.floor(pix.detach().double() + 0.5).long()  # dlib rounds to the nearest pixel
        x, y = p[..., 0], p[..., 1]
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).long()
        return torch.where(inside, flat.gather(1, idx), torch.zeros((), device=g.device))

    def _trees(self, c: int, feats: Tensor, soft: bool, temperature: float) -> Tensor:
        idx1, idx2 = getattr(self, f"idx1_{c}"), getattr(self, f"idx2_{c}")  # (T, S)
        thresh, leaves = getattr(self, f"thresh{c}"), getattr(self, f"leaves{c}")  # (T, S), (T, L, P, 2)
        n = feats.shape[0]
        t = idx1.shape[0]
        diff = feats[:, idx1] - feats[:, idx2] - thresh  # (N, T, S): > 0 goes left
        if not soft:
            node = torch.zeros(n, t, dtype=torch.long, device=feats.device)
            for _ in range(self.depth):
                go_left = diff.gather(2, node[..., None])[..., 0] > 0
                node = 2 * node + 2 - go_left.long()
            leaf = node - idx1.shape[1]  # (N, T)
            vals = leaves[torch.arange(t, device=feats.device)[None], leaf]  # (N, T, P, 2)
            return vals.sum(1)
        p_left = torch.sigmoid(diff / temperature)  # (N, T, S)
        prob = torch.ones(n, t, 1, device=feats.device, dtype=feats.dtype)
        first = 0
        for level in range(self.depth):
            width = 2**level
            pl = p_left[:, :, first : first + width]  # nodes of this level, left to right
            prob = torch.stack([prob * pl, prob * (1 - pl)], -1).reshape(n, t, 2 * width)
            first += width
        return torch.einsum("ntl,tlpk->npk", prob, leaves)
