"""GFC, Generative Face Completion (Li, Liu, Yang, Yang, CVPR 2017), adapted to 64x64 faces.

Encoder-decoder generator (two convolutions per scale, down to 8x8, and back), a global
discriminator on the whole completed image and a local discriminator on the hole's bounding box
(resized to 32x32). Holes are filled with uniform noise in [-1, 1] as in the paper. Loss:
L2 reconstruction + 0.001 x (global + local adversarial). GFC's third term, the semantic parsing
loss, needs a face-parsing network trained on labelled faces that is not available here: it is
left out (stated in README and in the tables' notes). One model covers all four masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facefill_core.imaging import composite, uint8_to_signed
from facefill_core.models.common import before_after_grid, crop_holes, half_state, sample_training_masks
from facefill_core.models.dcgan import Discriminator, init_weights


def _block(i: int, o: int, stride: int) -> list:
    return [nn.Conv2d(i, o, 3 if stride == 1 else 4, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ELU(inplace=True)]


class GFCGenerator(nn.Module):
    """``(N, 4, 64, 64)`` (noise-filled image + hole mask) -> ``(N, 3, 64, 64)`` in [-1, 1]."""

    def __init__(self, nf: int = 32) -> None:
        super().__init__()
        self.nf = nf
        self.encoder = nn.Sequential(
            *_block(4, nf, 1),
            *_block(nf, nf * 2, 2),  # 32
            *_block(nf * 2, nf * 2, 1),
            *_block(nf * 2, nf * 4, 2),  # 16
            *_block(nf * 4, nf * 4, 1),
            *_block(nf * 4, nf * 8, 2),  # 8
            *_block(nf * 8, nf * 8, 1),
        )

        def up(i, o):
            return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ELU(inplace=True)]

        self.decoder = nn.Sequential(
            *up(nf * 8, nf * 4),
            *_block(nf * 4, nf * 4, 1),
            *up(nf * 4, nf * 2),
            *_block(nf * 2, nf * 2, 1),
            *up(nf * 2, nf),
            nn.Conv2d(nf, 3, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class LocalDiscriminator(nn.Module):
    """32x32 hole crop -> logit ``(N,)``."""

    def __init__(self, ndf: int = 32) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).flatten()


def gfc_input(images: Tensor, holes: Tensor, gen: torch.Generator | None) -> Tensor:
    """Holes filled with uniform noise in [-1, 1] (seeded by ``gen``), mask as a 4th channel."""
    noise = torch.rand(images.shape, generator=gen).to(images.device) * 2 - 1
    return torch.cat([composite(images, noise, holes), holes], 1)


def network_input(images: Tensor, holes: Tensor, payload: dict, image_indices) -> Tensor:
    """The inpainting input (the common signature of the feed-forward models): per-image noise
    seeded by the image's id, so a result never depends on the rest of the batch."""
    ids = range(len(images)) if image_indices is None else image_indices
    return torch.cat(
        [
            gfc_input(images[i : i + 1], holes[i : i + 1], torch.Generator().manual_seed(int(j)))
            for i, j in enumerate(ids)
        ]
    )


class GFCTask:
    """Training task for ``python -m facefill_core.train gfc``."""

    ADV_GLOBAL, ADV_LOCAL = 0.001, 0.001

    def __init__(self, cfg, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.device = cfg, device
        self.net = GFCGenerator(cfg.ngf).to(device)
        self.Dg = Discriminator(cfg.ndf).to(device)
        self.Dl = LocalDiscriminator(cfg.ndf).to(device)
        for m in (self.net, self.Dg, self.Dl):
            m.apply(init_weights)
        self.opt_g = torch.optim.Adam(self.net.parameters(), cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(
            list(self.Dg.parameters()) + list(self.Dl.parameters()), cfg.lr, betas=(cfg.beta1, 0.999)
        )
        self._fixed = None

    def set_data(self, data_u8, mean_colour) -> None:
        g = torch.Generator().manual_seed(777)
        self._fixed = (uint8_to_signed(data_u8[:16].numpy()), sample_training_masks(16, g, protocol=self.cfg.train_masks))

    def modules(self):
        return {"G": self.net, "Dg": self.Dg, "Dl": self.Dl}

    def optimizers(self):
        return {"G": self.opt_g, "D": self.opt_d}

    def step(self, real: Tensor, gen: torch.Generator) -> dict:
        holes = sample_training_masks(real.shape[0], gen, protocol=self.cfg.train_masks).to(self.device)
        out = self.net(gfc_input(real, holes, gen))
        comp = composite(real, out, holes)
        n = real.shape[0]
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        bce = F.binary_cross_entropy_with_logits
        real_local, fake_local = crop_holes(real, holes), crop_holes(comp, holes)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d = (
            bce(self.Dg(real), ones)
            + bce(self.Dg(comp.detach()), zeros)
            + bce(self.Dl(real_local), ones)
            + bce(self.Dl(fake_local.detach()), zeros)
        )
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        rec = F.mse_loss(out, real)
        adv_g, adv_l = bce(self.Dg(comp), ones), bce(self.Dl(fake_local), ones)
        loss = rec + self.ADV_GLOBAL * adv_g + self.ADV_LOCAL * adv_l
        loss.backward()
        self.opt_g.step()
        return {"loss_rec": rec.item(), "loss_adv_g": adv_g.item(), "loss_adv_l": adv_l.item(), "loss_d": loss_d.item()}

    @torch.no_grad()
    def samples(self) -> Tensor:
        x, h = self._fixed
        self.net.eval()
        out = self.net(gfc_input(x.to(self.device), h.to(self.device), torch.Generator().manual_seed(0))).cpu()
        self.net.train()
        return before_after_grid(x, h, out)

    def export(self) -> dict:
        return {"kind": "gfc", "config": {"nf": self.cfg.ngf}, "G": half_state(self.net)}
