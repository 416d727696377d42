"""The thesis's DCGAN (Radford et al. 2016) for 64x64x3 faces.

Layer layout follows the PyTorch DCGAN tutorial (``main`` Sequential), so the embedded
data generator's weights (gan-face-generate) load into :class:`Generator` unchanged.
Images are [-1, 1]; see :mod:`facefill_core` for conventions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Generator(nn.Module):
    """z ``(N, z_dim)`` -> image ``(N, 3, 64, 64)`` in [-1, 1].

    Project-and-reshape (a 4x4 transposed convolution from 1x1), then four fractionally
    strided convolutions; batch norm on every layer but the output; ReLU; tanh output.
    """

    def __init__(self, z_dim: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.z_dim, self.ngf = z_dim, ngf
        self.main = nn.Sequential(
            nn.ConvTranspose2d(z_dim, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


class Discriminator(nn.Module):
    """Image ``(N, 3, 64, 64)`` in [-1, 1] -> real/fake logit ``(N,)``.

    Strided convolutions, batch norm on every layer but the input, LeakyReLU 0.2.
    """

    def __init__(self, ndf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.ndf = ndf
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).flatten()


def init_weights(m: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scale N(1, 0.02), bias 0."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@torch.no_grad()
def freeze(*models: nn.Module) -> None:
    """Eval mode (running batch-norm statistics) and no gradients: results never depend on
    what else is in the batch."""
    for m in models:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
