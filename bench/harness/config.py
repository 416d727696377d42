"""The harness's configuration: :class:`BenchConfig` (one run of ``python -m bench.run``) and
the presets. The CLIs (:mod:`bench.harness.cli`, :mod:`bench.harness.export`) build one and pass
it down; a method's own settings are :class:`facefill_core.config.InpaintConfig`."""

from __future__ import annotations

import dataclasses
from typing import Optional

from facefill_core.config import InpaintConfig
from facefill_core.judges import DEFAULT_JUDGES
from facefill_core.methods import ALL_METHODS, method_info, weights_field

PRESETS = {
    # the small preset; make run narrows it (4 images, 8 candidates, 2 seeds: README).
    "quick": {"candidates": 16, "iters": 100, "n_images": 8},
    # the thesis: 64 candidates, 1000 Adam steps, lambda 0.003, 500 test images.
    "paper": {"candidates": 64, "iters": 1000, "n_images": 500},
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    masks: tuple = ("centre", "left", "right", "random")
    methods: tuple = ALL_METHODS
    data: str = "embedded"
    preset: str = "quick"
    n_images: int = 8
    candidates: int = 16
    iters: int = 100
    prior_weight: float = 0.003
    seed: int = 0
    # --replicates: each stochastic method (latent search) runs this many times, replicate r
    # with seed replicate_seed(r) (r = 0: ``seed`` itself); deterministic methods run once
    replicates: int = 1
    gpus: int = 0
    workers: int = 1  # CPU workers under Ray when gpus == 0; 0 = in-process, no Ray
    shard_size: int = 4  # images per work unit for the latent methods
    out: str = ""
    address: Optional[str] = None
    box: Optional[tuple] = None
    # one per kind in facefill_core.methods.WEIGHTS_KINDS (None: the shipped file)
    weights_dcgan: Optional[str] = None
    weights_ce: Optional[str] = None
    weights_gfc: Optional[str] = None
    weights_ce_centre: Optional[str] = None
    weights_gfc_square: Optional[str] = None
    landmark_backend: str = "auto"  # latent search's landmark cascade: auto | cpp | torch
    inject_crash: Optional[str] = None  # test hook: a worker dies (os._exit) on this unit, once
    # --sweep: ((name, (value, ...)), ...); each value is its own labelled method (bench.harness.sweep)
    sweep: tuple = ()
    # --masks folder:DIR: the directory of the run's ``folder`` masks (facefill_core.masks.folder_masks)
    mask_folder: Optional[str] = None
    # plugin methods' "package.module:object" (facefill_core.plugins), loaded by every worker
    plugins: tuple = ()
    # --metrics: the judges computed beside PSNR, SSIM and dlib NME (facefill_core.judges.JUDGES)
    metrics: tuple = DEFAULT_JUDGES
    # --numerics: pinned (the same bits on every x86-64 CPU; bench.harness.numerics) | free
    numerics: str = "pinned"

    def replicate_seed(self, replicate: int) -> int:
        """The seed of replicate ``replicate``: ``seed`` for replicate 0 (a run without
        replicates keeps its records), else a 31-bit draw of ``SeedSequence([seed, replicate])``,
        so replicates of runs with neighbouring ``seed`` values do not share seeds."""
        if replicate < 0:
            raise ValueError(f"replicate must be >= 0, got {replicate}")
        if replicate == 0:
            return self.seed
        import numpy as np

        return int(np.random.SeedSequence([self.seed, replicate]).generate_state(1)[0] >> 1)

    def inpaint_config(self, method: str, replicate: int = 0) -> InpaintConfig:
        """The method's configuration: the run's settings over the method's declared defaults;
        ``replicate`` chooses the seed (:meth:`replicate_seed`)."""
        return InpaintConfig(
            **{
                **method_info(method).defaults,
                "method": method,
                "candidates": self.candidates,
                "iters": self.iters,
                "prior_weight": self.prior_weight,
                "seed": self.replicate_seed(replicate),
                "landmark_backend": self.landmark_backend,
            }
        )

    def weights_for(self, method: str) -> Optional[str]:
        """The user's weights file for ``method`` (``--weights-<kind>``), None for the shipped
        one or a method without weights."""
        kind = method_info(method).weights
        return getattr(self, weights_field(kind)) if kind else None

    # what must match for --resume to reuse records
    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("gpus", "workers", "out", "address", "inject_crash", "masks", "methods", "sweep", "replicates"):
            d.pop(k)
        for k in ("mask_folder", "plugins"):  # the masks' folder and the methods' plugins: like masks, methods
            d.pop(k)
        return d
