"""Work units and the workers that run them.

A unit is (method, mask, images start:stop). :class:`UnitRunner` is plain Python (tests call it
in-process); :func:`make_ray_worker` wraps it in a Ray actor that loads its models once.
Units return plain records (floats, ids, names) and uint8 outputs, never tensors.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Unit:
    method: str
    mask: str
    start: int
    stop: int

    @property
    def uid(self) -> str:
        return f"{self.method}__{self.mask}__{self.start:05d}-{self.stop:05d}"


def plan_units(cfg) -> list[Unit]:
    """Every (method, mask, shard); latent methods in shards of ``cfg.shard_size`` images, the
    rest in one unit per mask. Ordered slow-first so the tail of a run is short."""
    from facefill_core.inpainters import LATENT_METHODS

    units = []
    for method in cfg.methods:
        size = cfg.shard_size if method in LATENT_METHODS else cfg.n_images
        for mask in cfg.masks:
            for s in range(0, cfg.n_images, size):
                units.append(Unit(method, mask, s, min(cfg.n_images, s + size)))
    units.sort(key=lambda u: (u.method not in LATENT_METHODS, u.method, u.mask, u.start))
    return units


def masks_path(run_dir: str, mask: str) -> str:
    return os.path.join(run_dir, "masks", f"{mask}.npy")


class UnitRunner:
    """Runs units for one run directory; models load on first use and stay loaded.

    Args:
        cfg: the run's BenchConfig.
        run_dir: where the masks were saved (read here) and the crash marker lives.
        device: "cpu" or "cuda:k".
        num_threads: torch CPU threads (Ray sets OMP_NUM_THREADS=1 in workers; we set ours).
    """

    def __init__(self, cfg, run_dir: str, device: str = "cpu", num_threads: int = 1) -> None:
        import torch

        from facefill_core.data import FaceDataset
        from facefill_core.landmarks import LandmarkPredictor

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.num_threads = num_threads
        self.dataset = FaceDataset(cfg.data, box=cfg.box)
        self.images, self.ids = self.dataset.load("test", cfg.n_images)
        self.box = self.dataset.box
        self.predictor = LandmarkPredictor(num_threads=max(1, num_threads))
        self._methods: dict = {}

    def _inpainter(self, name: str):
        from facefill_core.inpainters import build

        if name not in self._methods:
            weights = {
                "si": self.cfg.weights_dcgan,
                "si-ld": self.cfg.weights_dcgan,
                "si-ld+": self.cfg.weights_dcgan,
                "ce": self.cfg.weights_ce,
                "gfc": self.cfg.weights_gfc,
            }.get(name)
            self._methods[name] = build(name, self.cfg.inpaint_config(name), weights, self.device, self.box)
            m = self._methods[name]
            if hasattr(m, "search") and m.search.predictor is not None:
                m.search.predictor.num_threads = max(1, self.num_threads)
        return self._methods[name]

    def run(self, unit: Unit) -> dict:
        import torch

        from facefill_core.data import signed_to_uint8
        from facefill_core.metrics import face_metrics

        if self.cfg.inject_crash == unit.uid:
            marker = os.path.join(self.run_dir, f".crashed-{unit.uid}")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(17)  # a real worker death, once
        x = self.images[unit.start : unit.stop]
        holes = torch.from_numpy(np.load(masks_path(self.run_dir, unit.mask))[unit.start : unit.stop]).float()[:, None]
        inp = self._inpainter(unit.method)
        t0 = time.perf_counter()
        out = inp.inpaint(x, holes, image_indices=list(range(unit.start, unit.stop)))
        seconds = (time.perf_counter() - t0) / len(x)
        m = face_metrics(out, x, self.predictor, self.box)
        extra = inp.extra()
        records = []
        for j, i in enumerate(range(unit.start, unit.stop)):
            rec = {
                "image_id": self.ids[i],
                "image_index": i,
                "method": unit.method,
                "mask": unit.mask,
                "psnr": float(m["psnr"][j]),
                "ssim": float(m["ssim"][j]),
                "nme": None if not np.isfinite(m["nme"][j]) else float(m["nme"][j]),
                "seconds": round(seconds, 4),
                "device": self.device,
                "landmark_backend": getattr(getattr(inp, "search", None), "backend", None),
                "metric_landmarks": "cpp (dlib, exact)",
            }
            if "dropped" in extra:
                rec["dropped_candidates"] = int(extra["dropped"][j])
            records.append(rec)
        return {"uid": unit.uid, "records": records, "outputs": signed_to_uint8(out)}


def make_ray_worker():
    """The Ray actor class (defined lazily so importing bench needs no Ray)."""
    import ray

    @ray.remote
    class RayWorker:
        def __init__(self, cfg, run_dir: str, device: str, num_threads: int) -> None:
            if device.startswith("cuda"):
                device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            self.runner = UnitRunner(cfg, run_dir, device, num_threads)

        def run(self, unit: Unit) -> dict:
            return self.runner.run(unit)

        def pid(self) -> int:
            return os.getpid()

    return RayWorker


def write_unit(run_dir: str, result: dict) -> None:
    """Write one finished unit atomically: records/<uid>.jsonl and outputs/<uid>.npy."""
    import json

    rec_dir, out_dir = os.path.join(run_dir, "records"), os.path.join(run_dir, "outputs")
    os.makedirs(rec_dir, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    uid = result["uid"]
    tmp = os.path.join(out_dir, f".{uid}.npy.tmp")
    with open(tmp, "wb") as f:
        np.save(f, result["outputs"])
    os.replace(tmp, os.path.join(out_dir, f"{uid}.npy"))
    tmp = os.path.join(rec_dir, f".{uid}.jsonl.tmp")
    with open(tmp, "w") as f:
        for r in result["records"]:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    os.replace(tmp, os.path.join(rec_dir, f"{uid}.jsonl"))  # last: the unit counts as done


def done_units(run_dir: str) -> set[str]:
    d = os.path.join(run_dir, "records")
    if not os.path.isdir(d):
        return set()
    return {f[: -len(".jsonl")] for f in os.listdir(d) if f.endswith(".jsonl") and not f.startswith(".")}


def unit_outputs(run_dir: str, uid: str) -> Optional[np.ndarray]:
    p = os.path.join(run_dir, "outputs", f"{uid}.npy")
    return np.load(p) if os.path.exists(p) else None
