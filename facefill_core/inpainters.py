"""One interface for every method, built by name from the registry (:mod:`facefill_core.methods`).

Every inpainter answers ``inpaint(images, holes, image_indices=None) -> Tensor``: images
``(N, 3, 64, 64)`` in [-1, 1] and holes ``(N, 1, 64, 64)`` (1 = missing) in, completed images of
the same shape out, known pixels exactly the input's. ``image_indices`` are stable image ids
that seed any randomness, so a result never depends on the rest of the batch.
``weights_sha256`` is the digest of the weights file the method really loaded (None for a
classical fill): what a run records as the model it used.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
from torch import Tensor

from facefill_core import baselines
from facefill_core.config import InpaintConfig
from facefill_core.imaging import check_inputs, composite
from facefill_core.inpaint import LatentSearchInpainter
from facefill_core.landmarks import LandmarkPredictor
from facefill_core.methods import (
    FEEDFORWARD,
    LATENT,
    LATENT_METHODS,
    METHODS,
    PLUGIN,
    MethodInfo,
    method_info,
    parse_methods,
)
from facefill_core.pretrained import check_z_dist, load_dcgan, load_feedforward

REGISTRY: dict[str, MethodInfo] = METHODS  # the public name of the one registry
__all__ = ["REGISTRY", "LATENT_METHODS", "MethodInfo", "Inpainter", "build", "method_info", "parse_methods"]


class Inpainter:
    """The interface (see the module docstring)."""

    name: str = ""
    weights_sha256: Optional[str] = None

    def inpaint(self, images: Tensor, holes: Tensor, image_indices: Optional[Sequence[int]] = None) -> Tensor:
        raise NotImplementedError

    def extra(self) -> dict:
        """Per-call extras of the last call (e.g. dropped candidates), for the records."""
        return {}

    @property
    def landmark_backend(self) -> Optional[str]:
        """The landmark cascade the method runs (latent search only), for the records."""
        return None


class LatentInpainter(Inpainter):
    """A latent-search method over a DCGAN prior (shipped when ``weights`` is None).

    Set ``record_trajectory`` to keep each step's latents; ``last_result`` is the last call's
    :class:`~facefill_core.inpaint.InpaintResult`.
    """

    record_trajectory: bool = False

    def __init__(
        self,
        info: MethodInfo,
        cfg: InpaintConfig,
        weights: Optional[str] = None,
        device=None,
        box=None,
        predictor: Optional[LandmarkPredictor] = None,
    ) -> None:
        self.name = info.name
        g, d, meta = load_dcgan(weights, device or "cpu")
        check_z_dist(meta, cfg.z_init)
        self.weights_sha256 = meta["sha256"]
        self.box = tuple(box) if box is not None else meta["box"]
        cfg = dataclasses.replace(cfg, method=info.name)
        self.search = LatentSearchInpainter(g, d, cfg, box=self.box, predictor=predictor, device=device)
        self._last: dict = {}
        self._extras: list = []

    def inpaint(self, images, holes, image_indices=None):
        return self.inpaint_choices(images, holes, image_indices)[0]

    def inpaint_choices(self, images, holes, image_indices=None, other_margins: Sequence[float] = ()) -> list[Tensor]:
        """One search, the completion chosen with this method's margin and then with each of
        ``other_margins`` (see :meth:`LatentSearchInpainter.inpaint_choices`); ``last_results``
        and :meth:`extra` follow the same order."""
        rs = self.search.inpaint_choices(
            images, holes, image_indices, other_margins, record_trajectory=self.record_trajectory
        )
        self.last_result, self.last_results = rs[0], rs
        self._extras = [{"dropped": r.dropped, "loss": r.loss.tolist(), "ld": r.ld.tolist()} for r in rs]
        self._last = self._extras[0]
        return [r.completed for r in rs]

    def extra(self) -> dict:
        return self._last

    def extras(self) -> list[dict]:
        """:meth:`extra` of each result of the last :meth:`inpaint_choices`, in its order."""
        return self._extras

    @property
    def landmark_backend(self) -> Optional[str]:
        return self.search.backend


class FeedForwardInpainter(Inpainter):
    """A trained network that completes an image in one pass (Context Encoder, GFC)."""

    def __init__(self, info: MethodInfo, weights: Optional[str] = None, device=None) -> None:
        self.name = info.name
        self.device = torch.device(device or "cpu")
        self.net, self.network_input, payload = load_feedforward(weights, info.weights, self.device)
        self.payload = {k: v for k, v in payload.items() if k not in ("G", "D")}  # config, mean colour, ...
        self.weights_sha256 = payload["sha256"]

    @torch.no_grad()
    def inpaint(self, images, holes, image_indices=None):
        check_inputs(images, holes)
        x, h = images.to(self.device), holes.to(self.device)
        out = self.net(self.network_input(x, h, self.payload, image_indices))
        return composite(images, out.cpu(), holes)


class ClassicalInpainter(Inpainter):
    """A classical fill of :data:`facefill_core.baselines.FILLS`."""

    def __init__(self, info: MethodInfo) -> None:
        self.name = info.name
        self.fill = baselines.FILLS[info.fill]

    def inpaint(self, images, holes, image_indices=None):
        check_inputs(images, holes)
        return self.fill(images, holes)


def build(
    name: str,
    cfg: Optional[InpaintConfig] = None,
    weights: Optional[str] = None,
    device=None,
    box=None,
    predictor: Optional[LandmarkPredictor] = None,
    train_images=None,
    train_exclude=None,
) -> Inpainter:
    """Construct a method by its command-line name.

    Args:
        name: a key of :data:`REGISTRY`, or a registered plugin (:mod:`facefill_core.plugins`).
        cfg: the latent search's configuration (ignored by the other families).
        weights: the method's weights file (kind ``REGISTRY[name].weights``); None: shipped.
        device: where the networks run (default CPU).
        box: the face box for the landmark terms (default: the prior's training box).
        predictor: a landmark predictor to share (latent methods; default: one of their own).
        train_images: uint8 ``(M, H, W, 3)`` training images of a method that reads the train
            split (``nn``); None: the embedded dataset's whole train split.
        train_exclude: image index -> the row of ``train_images`` that is that image (``nn``
            never fills an image with itself).

    Raises:
        ValueError: an unknown name (listing the known ones), or weights of the wrong kind.
    """
    info = method_info(name)
    if info.family == PLUGIN:  # a method from outside the library (facefill_core.plugins)
        from facefill_core.plugins import PluginContext, PluginInpainter

        seed = cfg.seed if cfg is not None else 0
        ctx = PluginContext(str(device or "cpu"), seed, tuple(box) if box else None, torch.get_num_threads())
        return PluginInpainter(info, ctx)
    if info.family == LATENT:
        return LatentInpainter(info, cfg or InpaintConfig(), weights, device, box, predictor)
    if info.family == FEEDFORWARD:
        return FeedForwardInpainter(info, weights, device)
    if info.train_split:
        from facefill_core.nearest import NearestNeighbourInpainter

        if train_images is None:
            return NearestNeighbourInpainter.from_dataset("embedded", device=device)
        return NearestNeighbourInpainter(train_images, device=device, exclude=train_exclude)
    return ClassicalInpainter(info)  # the third family (MethodInfo checks its family)
