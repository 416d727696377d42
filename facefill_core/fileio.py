"""Small file helpers shared by training, weights loading and the harness: content digests and
atomic writes (a reader never sees half a file)."""

from __future__ import annotations

import hashlib
import json
import os

import torch


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json_atomic(path: str, obj) -> None:
    """JSON (indented, sorted keys) to a temp file beside ``path``, then rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
