"""A facefill method plugin (copy this package to start your own; the interface is documented
in :mod:`facefill_core.plugins`).

``blurfill``: normalised convolution. Each hole pixel becomes the Gaussian-weighted mean of the
known pixels around it, at the smallest of a few widths that reaches any known pixel; known
pixels are kept. Deterministic; ``noise`` > 0 adds a seeded perturbation per image to show how
a stochastic method seeds itself from ``(context.seed, image_index)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facefill_core.plugins import Plugin, PluginContext


def _gaussian(sigma: float) -> torch.Tensor:
    r = int(3 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum())[None, None]


class BlurFill:
    """The inpainter: ``inpaint(images, holes, image_indices)`` per the plugin interface."""

    def __init__(self, context: PluginContext, noise: float = 0.0) -> None:
        self.device = torch.device(context.device)
        self.seed = context.seed
        self.noise = noise

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, holes: torch.Tensor, image_indices: list) -> torch.Tensor:
        x, h = images.to(self.device), holes.to(self.device)
        known = 1.0 - h
        out = x.clone()
        todo = h.clone()
        for sigma in (1.5, 3.0, 6.0, 12.0):
            k = _gaussian(sigma).to(self.device)
            pad = k.shape[-1] // 2
            num = F.conv2d(F.pad(x * known, (pad,) * 4, mode="constant"), k.repeat(3, 1, 1, 1), groups=3)
            den = F.conv2d(F.pad(known, (pad,) * 4, mode="constant"), k)
            ok = (den > 1e-3) & (todo > 0.5)
            out = torch.where(ok, num / den.clamp_min(1e-3), out)
            todo = todo * (~ok).float()
        if self.noise > 0:  # per image, seeded by (run seed, image index): batch independent
            for j, i in enumerate(image_indices):
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i))
                out[j] += self.noise * torch.randn(x.shape[1:], generator=g).to(self.device) * h[j]
        out = torch.where(h > 0.5, out, x)  # keep the known pixels exactly
        return out.clamp(-1.0, 1.0)


def plugin() -> Plugin:
    """The entry point: the method's declaration."""
    return Plugin(
        name="blurfill",
        description="normalised Gaussian convolution of the known pixels (example plugin)",
        build=lambda context: BlurFill(context),
        family="classical",
    )
