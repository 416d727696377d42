"""Shipped and user-given weights. Every file is read with ``torch.load(weights_only=True)``
(a checkpoint is data; unpickling arbitrary objects would run the code it carries), and a
shipped file's sha256 is checked against the JSON beside it."""

from __future__ import annotations

import json
import os
import warnings
from typing import Callable, Optional

import torch
from torch import nn

from facefill_core.fileio import sha256_file
from facefill_core.models import context_encoder, gfc
from facefill_core.models.dcgan import Discriminator, Generator, freeze

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
SHIPPED = {
    "dcgan": "dcgan_embedded.pt",
    "ce": "ce_embedded.pt",
    "gfc": "gfc_embedded.pt",
    "ce-centre": "ce_centre_embedded.pt",
    "gfc-square": "gfc_square_embedded.pt",
}
# weights kind -> the network it holds (the payload's ``kind``): a kind per training protocol,
# one loader per network; a kind not listed is its own network
ARCHITECTURE = {"ce-centre": "ce", "gfc-square": "gfc"}


def architecture(kind: str) -> str:
    """The network a weights kind holds: ``ce-centre`` -> ``ce``, ``dcgan`` -> ``dcgan``."""
    return ARCHITECTURE.get(kind, kind)


class ChecksumError(ValueError):
    """A weights file does not match the sha256 recorded beside it."""


def shipped_path(kind: str) -> str:
    if kind not in SHIPPED:
        raise ValueError(f"no shipped weights for {kind!r}; known: {', '.join(SHIPPED)}")
    return os.path.join(WEIGHTS_DIR, SHIPPED[kind])


def verify_sha256(path: str) -> str:
    """Check ``path`` against ``<path minus .pt>.json``'s sha256; returns the digest.

    Raises:
        FileNotFoundError: the weights or the JSON are missing.
        ChecksumError: the digest differs (the file was changed or truncated).
    """
    meta_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"no sha256 record beside {path} (expected {meta_path})")
    with open(meta_path) as f:
        expected = json.load(f)["sha256"]
    got = sha256_file(path)
    if got != expected:
        raise ChecksumError(f"sha256 mismatch for {path}: recorded {expected[:16]}..., file has {got[:16]}...")
    return got


def load_payload(path: Optional[str], kind: str, verify: bool = True) -> dict:
    """Load an exported weights payload (shipped when ``path`` is None).

    The returned dict also carries ``sha256``, the digest of the file actually read, and
    ``path``, where it was: what a run records as the model it used.
    """
    shipped = path is None
    path = shipped_path(kind) if shipped else path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if verify and (shipped or os.path.isfile(os.path.splitext(path)[0] + ".json")):
        digest = verify_sha256(path)
    else:
        digest = sha256_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read weights {path}: {e}") from None
    if not isinstance(payload, dict) or payload.get("kind") != architecture(kind):
        got = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} holds {got!r} weights, expected {architecture(kind)!r}")
    return {**payload, "sha256": digest, "path": os.path.abspath(path)}


def _float32(state: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_dcgan(path: Optional[str] = None, device: str | torch.device = "cpu") -> tuple[Generator, Discriminator, dict]:
    """The DCGAN face prior: ``(G, D, meta)``, eval mode, frozen, on ``device``.

    ``meta`` has ``box`` (the canonical face box of its training data), ``data`` and ``config``.
    """
    p = load_payload(path, "dcgan")
    c = p["config"]
    g = Generator(c["z_dim"], c["ngf"])
    d = Discriminator(c["ndf"])
    g.load_state_dict(_float32(p["G"]))
    d.load_state_dict(_float32(p["D"]))
    g.to(device)
    d.to(device)
    freeze(g, d)
    meta = {"box": tuple(p["box"]), "data": p["data"], "config": c, "iters": p.get("iters"), "z_dist": c.get("z_dist")}
    return g, d, {**meta, "sha256": p["sha256"], "path": p["path"]}


def check_z_dist(meta: dict, search_z: str) -> None:
    """The latent search must explore the space the prior was trained on.

    Args:
        meta: ``load_dcgan``'s meta (``z_dist`` None for weights that predate its recording,
            all of which were trained with z ~ N(0, I)).
        search_z: the search's ``InpaintConfig.z_init`` (``"uniform"``: U[-1, 1], clipped).

    Raises:
        ValueError: the weights record another distribution than the search draws from.
    """
    got = meta.get("z_dist")
    if got is None:
        warnings.warn(
            f"DCGAN weights {meta.get('path')} record no z distribution (made before facefill recorded it, "
            f"trained with z ~ N(0, I)); the search draws z ~ {search_z}: the prior is searched off its training space",
            stacklevel=2,
        )
    elif got != search_z:
        raise ValueError(
            f"DCGAN weights {meta.get('path')} were trained with z ~ {got}, but the search draws z ~ {search_z}"
        )


# the feed-forward networks by weights kind: (network class, its inpainting input)
FEEDFORWARD = {
    "ce": (context_encoder.ContextEncoder, context_encoder.network_input),
    "gfc": (gfc.GFCGenerator, gfc.network_input),
}


def load_feedforward(
    path: Optional[str], kind: str, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Callable, dict]:
    """A trained feed-forward inpainter: ``(net, network_input, payload)``, the net frozen on
    ``device``; ``network_input(images, holes, payload, image_indices)`` builds its input.

    Raises:
        ValueError: ``kind`` is not a feed-forward kind, or the file holds other weights.
    """
    if architecture(kind) not in FEEDFORWARD:
        known = [k for k in SHIPPED if architecture(k) in FEEDFORWARD]
        raise ValueError(f"no feed-forward network for weights {kind!r}; known: {', '.join(known)}")
    net_class, network_input = FEEDFORWARD[architecture(kind)]
    p = load_payload(path, kind)
    net = net_class(p["config"]["nf"])
    net.load_state_dict(_float32(p["G"]))
    net.to(device)
    freeze(net)
    return net, network_input, p
