"""One interface for every method, and the registry of names used on the command line.

Every inpainter answers ``inpaint(images, holes, image_indices=None) -> Tensor``: images
``(N, 3, 64, 64)`` in [-1, 1] and holes ``(N, 1, 64, 64)`` (1 = missing) in, completed images of
the same shape out, known pixels exactly the input's. ``image_indices`` are stable image ids
that seed any randomness, so a result never depends on the rest of the batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from facefill_core.config import InpaintConfig


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    description: str
    weights: Optional[str]  # which trained weights it needs ("dcgan", "ce", "gfc") or None
    build: Callable[..., "Inpainter"]


class Inpainter:
    name: str = ""

    def inpaint(self, images: Tensor, holes: Tensor, image_indices: Optional[Sequence[int]] = None) -> Tensor:
        raise NotImplementedError

    def extra(self) -> dict:
        """Per-call extras of the last call (e.g. dropped candidates), for the records."""
        return {}


class LatentInpainter(Inpainter):
    def __init__(self, name: str, cfg: InpaintConfig, weights: Optional[str] = None, device=None, box=None) -> None:
        from facefill_core.inpaint import LatentSearchInpainter
        from facefill_core.pretrained import load_dcgan

        self.name = name
        g, d, meta = load_dcgan(weights, device or "cpu")
        self.box = tuple(box) if box is not None else meta["box"]
        self.search = LatentSearchInpainter(g, d, dataclasses.replace(cfg, method=name), box=self.box, device=device)
        self._last: dict = {}

    def inpaint(self, images, holes, image_indices=None):
        from facefill_core.inpaint import check_inputs

        check_inputs(images, holes)
        r = self.search.inpaint(images, holes, image_indices)
        self._last = {"dropped": r.dropped, "loss": r.loss.tolist(), "ld": r.ld.tolist()}
        return r.completed

    def extra(self) -> dict:
        return self._last


class FeedForwardInpainter(Inpainter):
    def __init__(self, name: str, weights: Optional[str] = None, device=None) -> None:
        from facefill_core.models.context_encoder import ContextEncoder
        from facefill_core.models.dcgan import freeze
        from facefill_core.models.gfc import GFCGenerator
        from facefill_core.pretrained import _float32, load_payload

        self.name = name
        self.device = torch.device(device or "cpu")
        p = load_payload(weights, name)
        self.net = (ContextEncoder if name == "ce" else GFCGenerator)(p["config"]["nf"])
        self.net.load_state_dict(_float32(p["G"]))
        self.net.to(self.device)
        freeze(self.net)
        self.mean_colour = p.get("mean_colour")

    @torch.no_grad()
    def inpaint(self, images, holes, image_indices=None):
        from facefill_core.inpaint import check_inputs, composite
        from facefill_core.models.context_encoder import fill_mean
        from facefill_core.models.gfc import gfc_input

        check_inputs(images, holes)
        x, h = images.to(self.device), holes.to(self.device)
        if self.name == "ce":
            out = self.net(fill_mean(x, h, self.mean_colour))
        else:  # per-image noise seeded by its id: independent of the batch
            ids = range(len(x)) if image_indices is None else image_indices
            inp = torch.cat(
                [
                    gfc_input(x[i : i + 1], h[i : i + 1], torch.Generator().manual_seed(int(j)))
                    for i, j in enumerate(ids)
                ]
            )
            out = self.net(inp)
        return composite(images, out.cpu().to(images.dtype), holes)


class ClassicalInpainter(Inpainter):
    def __init__(self, name: str) -> None:
        self.name = name

    def inpaint(self, images, holes, image_indices=None):
        from facefill_core import baselines
        from facefill_core.inpaint import check_inputs

        check_inputs(images, holes)
        if self.name in ("telea", "ns"):
            return baselines.opencv_fill(images, holes, self.name)
        if self.name == "biharmonic":
            return baselines.biharmonic_fill(images, holes)
        return baselines.mean_fill(images, holes)


def _latent(name):
    return lambda cfg=InpaintConfig(), weights=None, device=None, box=None: LatentInpainter(
        name, cfg, weights, device, box
    )


def _ff(name):
    return lambda cfg=None, weights=None, device=None, box=None: FeedForwardInpainter(name, weights, device)


def _classical(name):
    return lambda cfg=None, weights=None, device=None, box=None: ClassicalInpainter(name)


REGISTRY: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo("si", "Yeh et al. latent search: Lc + Lp", "dcgan", _latent("si")),
        MethodInfo("si-ld", "the thesis: Lc + Lp + Ld (count; selects, never steers)", "dcgan", _latent("si-ld")),
        MethodInfo(
            "si-ld+",
            "Lc + Lp + Ld + mu*E, E's gradient estimated by antithetic differences",
            "dcgan",
            _latent("si-ld+"),
        ),
        MethodInfo(
            "si-ldsoft",
            "Lc + Lp + Ld + mu*E_soft, gradient through a smooth torch cascade",
            "dcgan",
            _latent("si-ldsoft"),
        ),
        MethodInfo("ce", "Context Encoder (Pathak et al. 2016)", "ce", _ff("ce")),
        MethodInfo("gfc", "Generative Face Completion (Li et al. 2017), no parsing loss", "gfc", _ff("gfc")),
        MethodInfo("telea", "OpenCV cv2.inpaint, Telea", None, _classical("telea")),
        MethodInfo("ns", "OpenCV cv2.inpaint, Navier-Stokes", None, _classical("ns")),
        MethodInfo("biharmonic", "scikit-image inpaint_biharmonic", None, _classical("biharmonic")),
        MethodInfo("mean", "mean colour of the known pixels", None, _classical("mean")),
    ]
}
LATENT_METHODS = ("si", "si-ld", "si-ld+", "si-ldsoft")


def method_info(name: str) -> MethodInfo:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build(
    name: str, cfg: Optional[InpaintConfig] = None, weights: Optional[str] = None, device=None, box=None
) -> Inpainter:
    """Construct a method by its command-line name. Raises ValueError listing the known ones."""
    info = method_info(name)
    return info.build(cfg or InpaintConfig(), weights, device, box)


def parse_methods(spec: str) -> tuple[str, ...]:
    if spec == "all":
        return tuple(REGISTRY)
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    if not names:
        raise ValueError("--methods is empty")
    for n in names:
        method_info(n)
    return names
