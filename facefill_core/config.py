"""Frozen configuration dataclasses of the core: training, masks, one method's inpainting. The
harness's run configuration is :class:`bench.harness.config.BenchConfig`."""

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
    z_dist: str = "uniform"  # uniform in [-1, 1] (the thesis, Yeh et al., DCGAN) | normal; the search must match
    seed: int = 0
    n_train: Optional[int] = None  # None: the whole train split
    checkpoint_every: int = 250
    device: str = "cpu"
    num_threads: int = 0  # 0: torch's default
    train_masks: str = "all"  # ce/gfc holes: all (the four evaluation masks) | centre | square (models/common.py)
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of G's weights (exported G = EMA G)
    init_from: Optional[str] = None  # exported weights (fp16) to start G (and D when present) from; fresh optimizers


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    kind: str = "centre"  # centre | left | right | random | pattern | free10 .. free50 (facefill_core.masks)
    random_fraction: float = 0.8
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class InpaintConfig:
    method: str = "si"  # a latent method of facefill_core.methods
    candidates: int = 64
    iters: int = 1000
    lr: float = 0.01
    prior_weight: float = 0.003  # lambda
    window: int = 7
    z_init: str = "uniform"  # uniform | normal
    landmark_margin_px: float = 3.0
    landmark_step: float = 0.5
    landmark_every: int = 1  # evaluate Ld every k steps (1 = the thesis); 0 = only for the final choice
    # the per-step Ld of si-ld (a value: it never moves z, so where it runs changes only time):
    # overlap = on its own thread during torch's backward, on overlap_threads C++ threads;
    # serial = before the backward, on the predictor's threads; auto = overlap only where
    # torch's threads leave overlap_threads cores free (measured in docs/performance.md)
    landmark_overlap: str = "auto"  # auto | overlap | serial
    overlap_threads: int = 1
    landmark_block: int = 0  # steps per C++ Ld call; 0 = about 256 faces a call (inpaint.py)
    # si-ld+ / si-ldsoft (see inpaint.py): landmark steering, chosen on pilot runs (docs/method.md)
    steer_weight: float = 3.0
    steer_every: int = 10
    steer_sigma: float = 0.05
    steer_pairs: int = 4
    steer_start: float = 0.3  # fraction of iterations before steering begins
    steer_reference: str = "consensus"  # consensus (median over candidates) | damaged input's points
    steer_target: str = "composite"  # whole G(z) | composite (known pixels of y + hole of G(z))
    soft_temperature: float = 1.0  # si-ldsoft: sigmoid temperature of the smooth cascade
    landmark_backend: str = "auto"  # auto (cpp on CPU, torch on CUDA) | cpp | torch
    blend: str = "none"  # none | poisson
    seed: int = 0
    landmark_threads: int = 0
