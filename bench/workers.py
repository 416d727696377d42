"""Work units and the workers that run them.

A unit is (method, mask, images start:stop). :class:`UnitRunner` is plain Python (tests call it
in-process); :func:`make_ray_worker` wraps it in a Ray actor. What a worker needs is resolved
once by the driver and handed down (:class:`WorkerInputs`: the test images, their face box and
their target landmarks); the worker builds one landmark predictor, shared by the metric and
every method, and loads each method's model once. Units return plain records (floats, ids,
names) and uint8 outputs, never tensors.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from bench.rundir import masks_path
from facefill_core.data import TestSet
from facefill_core.methods import LATENT_METHODS


@dataclasses.dataclass(frozen=True)
class Unit:
    method: str
    mask: str
    start: int
    stop: int

    @property
    def uid(self) -> str:
        return f"{self.method}__{self.mask}__{self.start:05d}-{self.stop:05d}"


@dataclasses.dataclass(frozen=True)
class WorkerInputs:
    """What the driver resolves once per run for every worker.

    Attributes:
        test_set: the run's test images (uint8), ids and canonical face box.
        target_points: ``np.float32 (N, 68, 2)`` unrounded landmarks of the undamaged images in
            that box: the reference of the NME metric, computed once per image per run.
    """

    test_set: TestSet
    target_points: np.ndarray


def resolve_inputs(cfg) -> WorkerInputs:
    """Load the test images, resolve the face box (calibrating it at most once) and compute the
    targets' landmarks, in the driver."""
    from facefill_core.data import load_test_set
    from facefill_core.landmarks import LandmarkPredictor

    ts = load_test_set(cfg.data, cfg.n_images, cfg.box)
    points = LandmarkPredictor().predict(ts.images, box=ts.box, rounded=False)
    return WorkerInputs(ts, points)


def plan_units(cfg) -> list[Unit]:
    """Every (method, mask, shard); latent methods in shards of ``cfg.shard_size`` images, the
    rest in one unit per mask. Ordered slow-first so the tail of a run is short."""
    units = []
    for method in cfg.methods:
        size = cfg.shard_size if method in LATENT_METHODS else cfg.n_images
        for mask in cfg.masks:
            for s in range(0, cfg.n_images, size):
                units.append(Unit(method, mask, s, min(cfg.n_images, s + size)))
    units.sort(key=lambda u: (u.method not in LATENT_METHODS, u.method, u.mask, u.start))
    return units


class UnitRunner:
    """Runs units for one run directory; models load on first use and stay loaded.

    Args:
        cfg: the run's BenchConfig.
        run_dir: where the masks were saved (read here) and the crash marker lives.
        inputs: the driver's :class:`WorkerInputs`.
        device: "cpu" or "cuda:k".
        num_threads: torch CPU threads and C++ landmark threads (Ray sets OMP_NUM_THREADS=1 in
            workers; we set ours).
    """

    def __init__(self, cfg, run_dir: str, inputs: WorkerInputs, device: str = "cpu", num_threads: int = 1) -> None:
        import torch

        from facefill_core.landmarks import LandmarkPredictor

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.test_set, self.target_points = inputs.test_set, inputs.target_points
        self.images = self.test_set.tensors()
        self.box = self.test_set.box
        self.predictor = LandmarkPredictor(num_threads=max(1, num_threads))  # one per worker, shared
        self._methods: dict = {}

    def _inpainter(self, name: str):
        from facefill_core.inpainters import build

        if name not in self._methods:
            cfg = self.cfg
            self._methods[name] = build(
                name, cfg.inpaint_config(name), cfg.weights_for(name), self.device, self.box, self.predictor
            )
        return self._methods[name]

    def _metrics(self, out, unit: Unit) -> dict:
        from facefill_core.imaging import to_uint8_nhwc, to_unit_range
        from facefill_core.metrics import landmark_nme, psnr, ssim

        x = self.images[unit.start : unit.stop]
        p01, t01 = to_unit_range(out).clamp(0, 1), to_unit_range(x).clamp(0, 1)
        points = self.predictor.predict(to_uint8_nhwc(out), box=self.box, rounded=False)
        nme = landmark_nme(points, self.target_points[unit.start : unit.stop])
        return {"psnr": psnr(p01, t01), "ssim": ssim(p01, t01), "nme": nme}

    def run(self, unit: Unit) -> dict:
        import torch

        from facefill_core.imaging import to_uint8_nhwc

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
        m = self._metrics(out, unit)
        extra = inp.extra()
        records = []
        for j, i in enumerate(range(unit.start, unit.stop)):
            rec = {
                "image_id": self.test_set.ids[i],
                "image_index": i,
                "method": unit.method,
                "mask": unit.mask,
                "psnr": float(m["psnr"][j]),
                "ssim": float(m["ssim"][j]),
                "nme": None if not np.isfinite(m["nme"][j]) else float(m["nme"][j]),
                "seconds": round(seconds, 4),
                "device": self.device,
                "landmark_backend": inp.landmark_backend,
                "metric_landmarks": "cpp (dlib, exact)",
                "weights_sha256": inp.weights_sha256,
            }
            if "dropped" in extra:
                rec["dropped_candidates"] = int(extra["dropped"][j])
            records.append(rec)
        return {"uid": unit.uid, "records": records, "outputs": to_uint8_nhwc(out)}


def make_ray_worker():
    """The Ray actor class (defined lazily so importing bench needs no Ray)."""
    import ray

    @ray.remote
    class RayWorker:
        def __init__(self, cfg, run_dir: str, inputs: WorkerInputs, device: str, num_threads: int) -> None:
            if device.startswith("cuda"):
                device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            self.runner = UnitRunner(cfg, run_dir, inputs, device, num_threads)

        def run(self, unit: Unit) -> dict:
            result = self.runner.run(unit)
            node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran the unit
            for r in result["records"]:
                r["node_id"] = node_id
            return result

        def pid(self) -> int:
            return os.getpid()

    return RayWorker
