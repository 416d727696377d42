"""Context Encoder (Pathak et al., CVPR 2016), adapted to 64x64 faces.

Conv encoder (64 -> 4), channel-wise fully connected bottleneck (each channel's 4x4 map fully
connected to a 4x4 map, then a 1x1 convolution to mix channels, as in the paper), up-convolution
decoder back to 64x64. Holes in the input are filled with the training set's mean colour.
Loss: 0.999 x masked L2 reconstruction + 0.001 x adversarial (the paper's weights); the
discriminator sees the completed image. One model is trained over all four evaluation masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facefill_core.imaging import composite, uint8_to_signed
from facefill_core.models.common import before_after_grid, half_state, sample_training_masks
from facefill_core.models.dcgan import Discriminator, init_weights


class ChannelwiseFC(nn.Module):
    """Each of C channels: its (h*w) map fully connected to an (h*w) map; no cross-channel
    weights (the paper's parameter-saving bottleneck)."""

    def __init__(self, channels: int, hw: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, hw, hw) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels, hw))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        y = torch.einsum("ncp,cpq->ncq", x.reshape(n, c, h * w), self.weight) + self.bias
        return y.reshape(n, c, h, w)


class ContextEncoder(nn.Module):
    """``(N, 3, 64, 64)`` damaged image (holes at the mean colour) -> ``(N, 3, 64, 64)`` in [-1, 1]."""

    def __init__(self, nf: int = 32) -> None:
        super().__init__()
        self.nf = nf

        def down(i, o, bn=True):
            return (
                [nn.Conv2d(i, o, 4, 2, 1, bias=False)] + ([nn.BatchNorm2d(o)] if bn else []) + [nn.LeakyReLU(0.2, True)]
            )

        def up(i, o):
            return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

        self.encoder = nn.Sequential(
            *down(3, nf, bn=False), *down(nf, nf * 2), *down(nf * 2, nf * 4), *down(nf * 4, nf * 8)
        )
        self.bottleneck = nn.Sequential(ChannelwiseFC(nf * 8, 16), nn.Conv2d(nf * 8, nf * 8, 1), nn.ReLU(True))
        self.decoder = nn.Sequential(
            *up(nf * 8, nf * 4), *up(nf * 4, nf * 2), *up(nf * 2, nf), nn.ConvTranspose2d(nf, 3, 4, 2, 1), nn.Tanh()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.bottleneck(self.encoder(x)))


def fill_mean(images: Tensor, holes: Tensor, mean_colour) -> Tensor:
    """The network's input: holes filled with the training set's mean colour (3 floats in [-1, 1])."""
    mc = torch.as_tensor(mean_colour, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return composite(images, mc.expand_as(images), holes)


def network_input(images: Tensor, holes: Tensor, payload: dict, image_indices) -> Tensor:
    """The inpainting input of exported weights ``payload`` (the common signature of the
    feed-forward models; the Context Encoder needs no randomness, so ignores the ids)."""
    return fill_mean(images, holes, payload.get("mean_colour"))


class CETask:
    """Training task for ``python -m facefill_core.train ce``."""

    REC, ADV = 0.999, 0.001

    def __init__(self, cfg, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.device = cfg, device
        self.net = ContextEncoder(cfg.ngf).to(device)
        self.D = Discriminator(cfg.ndf).to(device)
        self.net.apply(init_weights)
        self.D.apply(init_weights)
        self.opt_g = torch.optim.Adam(self.net.parameters(), cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr, betas=(cfg.beta1, 0.999))
        self.mean_colour = [0.0, 0.0, 0.0]
        self._fixed = None

    def set_data(self, data_u8, mean_colour) -> None:
        self.mean_colour = mean_colour
        g = torch.Generator().manual_seed(777)
        self._fixed = (uint8_to_signed(data_u8[:16].numpy()), sample_training_masks(16, g, protocol=self.cfg.train_masks))

    def modules(self):
        return {"G": self.net, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_g, "D": self.opt_d}

    def step(self, real: Tensor, gen: torch.Generator) -> dict:
        holes = sample_training_masks(real.shape[0], gen, protocol=self.cfg.train_masks).to(self.device)
        out = self.net(fill_mean(real, holes, self.mean_colour))
        comp = composite(real, out, holes)
        ones = torch.ones(real.shape[0], device=self.device)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d = F.binary_cross_entropy_with_logits(self.D(real), ones) + F.binary_cross_entropy_with_logits(
            self.D(comp.detach()), ones * 0
        )
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        rec = ((out - real) ** 2 * holes).sum() / (holes.sum() * 3).clamp_min(1)
        adv = F.binary_cross_entropy_with_logits(self.D(comp), ones)
        loss = self.REC * rec + self.ADV * adv
        loss.backward()
        self.opt_g.step()
        return {"loss_rec": rec.item(), "loss_adv": adv.item(), "loss_d": loss_d.item()}

    @torch.no_grad()
    def samples(self) -> Tensor:
        x, h = self._fixed
        self.net.eval()
        out = self.net(fill_mean(x.to(self.device), h.to(self.device), self.mean_colour)).cpu()
        self.net.train()
        return before_after_grid(x, h, out)

    def export(self) -> dict:
        return {
            "kind": "ce",
            "config": {"nf": self.cfg.ngf},
            "G": half_state(self.net),
            "mean_colour": self.mean_colour,
        }
