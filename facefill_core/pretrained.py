"""Shipped and user-given weights. Every file is read with ``torch.load(weights_only=True)``
(a checkpoint is data; unpickling arbitrary objects would run the code it carries), and a
shipped file's sha256 is checked against the JSON beside it."""

from __future__ import annotations

import json
import os
from typing import Optional

import torch

from facefill_core.models.dcgan import Discriminator, Generator, freeze

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
SHIPPED = {"dcgan": "dcgan_embedded.pt", "ce": "ce_embedded.pt", "gfc": "gfc_embedded.pt"}


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
    from facefill_core.train import sha256_file

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
    """Load an exported weights payload (shipped when ``path`` is None)."""
    shipped = path is None
    path = shipped_path(kind) if shipped else path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if verify and (shipped or os.path.isfile(os.path.splitext(path)[0] + ".json")):
        verify_sha256(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read weights {path}: {e}") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        got = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} holds {got!r} weights, expected {kind!r}")
    return payload


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
    return g, d, {"box": tuple(p["box"]), "data": p["data"], "config": c, "iters": p.get("iters")}
