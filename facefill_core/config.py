"""Frozen configuration dataclasses; the CLIs build one and pass it down."""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "dcgan"  # dcgan | ce | gfc
    data: str = "embedded"
    iters: int = 3000
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    ngf: int = 32
    ndf: int = 32
    z_dim: int = 100
    seed: int = 0
    n_train: Optional[int] = None  # None: the whole train split
    checkpoint_every: int = 250
    device: str = "cpu"
    num_threads: int = 0  # 0: torch's default


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    kind: str = "centre"  # centre | left | right | random | pattern
    random_fraction: float = 0.8
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class InpaintConfig:
    method: str = "si"  # si | si-ld | si-ld+
    candidates: int = 64
    iters: int = 1000
    lr: float = 0.01
    prior_weight: float = 0.003  # lambda
    window: int = 7
    z_init: str = "uniform"  # uniform | normal
    landmark_margin_px: float = 3.0
    landmark_step: float = 0.5
    landmark_every: int = 1  # evaluate Ld every k steps (si-ld: 1 = the thesis)
    # si-ld+ (see inpaint.py): zeroth-order landmark steering on the whole G(z)
    steer_weight: float = 0.5
    steer_every: int = 10
    steer_sigma: float = 0.05
    steer_pairs: int = 4
    steer_start: float = 0.3  # fraction of iterations before steering begins
    blend: str = "none"  # none | poisson
    seed: int = 0
    landmark_threads: int = 0
