"""Hole masks ``(N, 1, H, W)`` float32, 1 = hole (missing); seeded and identical across methods.

The thesis's four masks: ``centre`` (a 32x32 square, 25% of a 64x64 image), ``left`` and
``right`` halves, ``random`` (``random_fraction`` = 80% of pixels missing, as in Yeh et al.).
``pattern`` (Yeh et al.'s extra: random blobs, about 25% missing) is available as an extra.
The random masks of image ``i`` come from a generator seeded with ``(seed, i)``, so the mask of
an image never depends on which other images share the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from facefill_core.config import MaskConfig

MASK_KINDS = ("centre", "left", "right", "random", "pattern")
THESIS_MASKS = ("centre", "left", "right", "random")


def _per_image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def make_masks(cfg: MaskConfig, n: int, size: int = 64, start_index: int = 0) -> torch.Tensor:
    """Masks for images ``start_index .. start_index + n - 1``.

    Args:
        cfg: mask kind, random fraction and seed.
        n: number of masks.
        size: image side in pixels.

    Returns:
        ``torch.float32 (n, 1, size, size)``, 1 = hole.

    Raises:
        ValueError: unknown kind, ``n < 0`` or a fraction outside (0, 1).

    Example:
        >>> float(make_masks(MaskConfig("centre"), 1).mean())
        0.25
    """
    if cfg.kind not in MASK_KINDS:
        raise ValueError(f"mask must be one of {', '.join(MASK_KINDS)}, got {cfg.kind!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 < cfg.random_fraction < 1.0:
        raise ValueError(f"random_fraction must be in (0, 1), got {cfg.random_fraction}")
    m = np.zeros((n, 1, size, size), np.float32)
    if cfg.kind == "centre":
        q = size // 4
        m[:, :, q : size - q, q : size - q] = 1
    elif cfg.kind == "left":
        m[:, :, :, : size // 2] = 1
    elif cfg.kind == "right":
        m[:, :, :, size // 2 :] = 1
    elif cfg.kind == "random":
        k = int(round(cfg.random_fraction * size * size))
        for i in range(n):
            idx = _per_image_rng(cfg.seed, start_index + i).permutation(size * size)[:k]
            m[i, 0].reshape(-1)[idx] = 1
    else:  # pattern: union of random discs until ~25% is missing
        yy, xx = np.mgrid[:size, :size]
        for i in range(n):
            rng = _per_image_rng(cfg.seed, start_index + i)
            while m[i, 0].mean() < 0.25:
                cx, cy = rng.uniform(0, size, 2)
                r = rng.uniform(size / 16, size / 6)
                m[i, 0][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 1
    return torch.from_numpy(m)


def parse_masks(spec: str) -> tuple[str, ...]:
    """``"all"`` or a comma list -> mask names. Raises ValueError naming an unknown one."""
    if spec == "all":
        return THESIS_MASKS
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    for s in names:
        if s not in MASK_KINDS:
            raise ValueError(f"unknown mask {s!r}; known: all, {', '.join(MASK_KINDS)}")
    if not names:
        raise ValueError("--masks is empty")
    return names
