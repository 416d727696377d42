"""Work units and the workers that run them.

A unit is (method, mask, images start:stop); its method is a label, a registry name or a sweep's
variant of one (``si-ld[margin=2]``, :mod:`bench.sweep`). :class:`UnitRunner` is plain Python (tests call it
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
from typing import Optional

import numpy as np

from bench.rundir import masks_path, run_masks
from bench.sweep import expand, parse_label, share_groups
from facefill_core.data import TestSet
from facefill_core.methods import LATENT_METHODS, method_info
from facefill_core.metrics import SCALE_KEYS


@dataclasses.dataclass(frozen=True)
class Unit:
    """``method`` (a label) on ``mask`` for images ``start:stop``. ``shares``: labels of sweep
    variants that differ from ``method`` only in a choice-only parameter (the margin): this
    unit's search serves them too, and each has its own records (:meth:`members`)."""

    method: str
    mask: str
    start: int
    stop: int
    shares: tuple = ()

    @property
    def uid(self) -> str:
        return f"{self.method}__{self.mask}__{self.start:05d}-{self.stop:05d}"

    def members(self) -> list["Unit"]:
        """This unit and one per shared label: the units whose records it writes."""
        return [Unit(label, self.mask, self.start, self.stop) for label in (self.method, *self.shares)]

    def remaining(self, done: set) -> Optional["Unit"]:
        """The unit that writes the members whose uid is not in ``done`` (None: all are), led by
        the first of them (any member's search serves the others)."""
        left = [m.method for m in self.members() if m.uid not in done]
        return Unit(left[0], self.mask, self.start, self.stop, tuple(left[1:])) if left else None


@dataclasses.dataclass(frozen=True)
class WorkerInputs:
    """What the driver resolves once per run for every worker.

    Attributes:
        test_set: the run's test images (uint8), ids and canonical face box.
        target_points: ``np.float32 (N, 68, 2)`` unrounded landmarks of the undamaged images in
            that box: the reference of the NME metric, computed once per image per run.
        train_images: uint8 ``(M, 64, 64, 3)``, the dataset's train split, when a method reads
            it (``nn``); else None.
        holes: mask name -> uint8 ``(N, 64, 64)``, 1 = hole: the run's masks, handed to the
            workers so that nodes of a cluster need no shared filesystem to read them.
        train_exclude: test image index -> its row in ``train_images`` where the evaluated
            images are also training images (``folder:PATH``): ``nn`` leaves it out.
    """

    test_set: TestSet
    target_points: np.ndarray
    train_images: Optional[np.ndarray] = None
    holes: Optional[dict] = None
    train_exclude: Optional[dict] = None


def resolve_inputs(cfg) -> WorkerInputs:
    """Load the test images, resolve the face box (calibrating it at most once) and compute the
    targets' landmarks, in the driver; and the train split once when a method reads it."""
    from facefill_core.data import FaceDataset, load_test_set
    from facefill_core.landmarks import LandmarkPredictor

    ts = load_test_set(cfg.data, cfg.n_images, cfg.box)
    points = LandmarkPredictor().predict(ts.images, box=ts.box, rounded=False)
    train = exclude = None
    if any(method_info(m).train_split for m in cfg.methods):
        train, train_ids = FaceDataset(cfg.data, box=ts.box).load_uint8("train")
        row = {t: r for r, t in enumerate(train_ids)}
        exclude = {i: row[t] for i, t in enumerate(ts.ids) if t in row}  # leave-one-out
    holes = {m: run_masks(cfg, m) for m in cfg.masks}
    return WorkerInputs(ts, points, train, holes, exclude)


def _latent(label: str) -> bool:
    return parse_label(label).method in LATENT_METHODS


def plan_units(cfg) -> list[Unit]:
    """Every (method label, mask, shard): each method's sweep variants (``cfg.sweep``); latent
    methods in shards of ``cfg.shard_size`` images, the rest in one unit per mask. Ordered
    slow-first so the tail of a run is short."""
    units = []
    for group in share_groups(expand(cfg.methods, cfg.sweep)):
        v, shares = group[0], tuple(x.label for x in group[1:])
        size = cfg.shard_size if v.method in LATENT_METHODS else cfg.n_images
        for mask in cfg.masks:
            for s in range(0, cfg.n_images, size):
                units.append(Unit(v.label, mask, s, min(cfg.n_images, s + size), shares))
    units.sort(key=lambda u: (not _latent(u.method), u.method, u.mask, u.start))
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
        self.train_images, self.train_exclude = inputs.train_images, inputs.train_exclude
        self.holes = inputs.holes
        self.images = self.test_set.tensors()
        self.box = self.test_set.box
        self.predictor = LandmarkPredictor(num_threads=max(1, num_threads))  # one per worker, shared
        self._methods: dict = {}

    def _inpainter(self, label: str):
        from facefill_core.inpainters import build

        if label not in self._methods:
            cfg, v = self.cfg, parse_label(label)
            icfg = dataclasses.replace(cfg.inpaint_config(v.method), **v.overrides())
            self._methods[label] = build(
                v.method,
                icfg,
                cfg.weights_for(v.method),
                self.device,
                self.box,
                self.predictor,
                self.train_images,
                self.train_exclude,
            )
        return self._methods[label]

    def _metrics(self, out, unit: Unit) -> dict:
        from facefill_core.metrics import face_metrics

        x, target = self.images[unit.start : unit.stop], self.target_points[unit.start : unit.stop]
        return face_metrics(out, x, self.predictor, self.box, target_points=target)

    def run(self, unit: Unit) -> dict:
        """The result of a unit without shared labels (see :meth:`results`)."""
        if unit.shares:
            raise ValueError(f"unit {unit.uid} serves {len(unit.shares)} more labels: use results()")
        return self.results(unit)[0]

    def results(self, unit: Unit) -> list[dict]:
        """Run ``unit``'s search once; one result (uid, records, outputs[, trajectory]) per
        member (:meth:`Unit.members`)."""
        import torch

        from facefill_core.imaging import to_uint8_nhwc

        if self.cfg.inject_crash in {m.uid for m in unit.members()}:  # any member's uid
            marker = os.path.join(self.run_dir, f".crashed-{self.cfg.inject_crash}")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(17)  # a real worker death, once
        x = self.images[unit.start : unit.stop]
        all_holes = self.holes[unit.mask] if self.holes else np.load(masks_path(self.run_dir, unit.mask))
        holes = torch.from_numpy(all_holes[unit.start : unit.stop]).float()[:, None]
        inp = self._inpainter(unit.method)
        snapshots = unit.start == 0 and _latent(unit.method)  # the first shard's search, for figures
        if _latent(unit.method):
            inp.record_trajectory = snapshots
        indices = list(range(unit.start, unit.stop))
        t0 = time.perf_counter()
        if unit.shares:
            margins = [parse_label(label).overrides()["landmark_margin_px"] for label in unit.shares]
            outs, extras = inp.inpaint_choices(x, holes, indices, margins), inp.extras()
        else:
            outs, extras = [inp.inpaint(x, holes, image_indices=indices)], [inp.extra()]
        seconds = (time.perf_counter() - t0) / len(x)
        results = []
        for k, (member, out, extra) in enumerate(zip(unit.members(), outs, extras)):
            result = {
                "uid": member.uid,
                "records": self._records(member, out, extra, inp, seconds),
                "outputs": to_uint8_nhwc(out),
            }
            if unit.shares:
                for r in result["records"]:
                    r["shared_search"] = unit.uid  # the unit whose search this choice was made from
            if snapshots and inp.last_results[k].trajectory is not None:
                result["trajectory"] = self._snapshots(inp, inp.last_results[k], x, holes, unit.start)
            results.append(result)
        if snapshots:
            inp.record_trajectory, inp.last_result, inp.last_results = False, None, None  # free the trajectory
        return results

    def _records(self, unit: Unit, out, extra: dict, inp, seconds: float) -> list[dict]:
        m = self._metrics(out, unit)
        variant = parse_label(unit.method)
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
            for k in SCALE_KEYS:
                rec[k] = None if not np.isfinite(m[k][j]) else float(m[k][j])
            if variant.params:
                rec["base_method"], rec["sweep"] = variant.method, variant.sweep_values()
            if "dropped" in extra:
                rec["dropped_candidates"] = int(extra["dropped"][j])
            records.append(rec)
        return records

    def _snapshots(self, inp, r, x, holes, start: int) -> dict:
        """The completion at :data:`bench.figures.SNAPSHOT_FRACTIONS` of the iterations, decoded
        from the recorded trajectory (``r``: an ``InpaintResult``) of the chosen candidates (uint8)."""
        from bench.figures import snapshot_steps, trajectory_snapshots

        steps = snapshot_steps(r.trajectory.shape[0] - 1)
        images = trajectory_snapshots(inp.search.G, r.trajectory, r.z, x, holes, steps)
        return {"steps": np.array(steps), "images": images, "image_index": np.arange(start, start + len(x))}


def make_ray_worker():
    """The Ray actor class (defined lazily so importing bench needs no Ray)."""
    import ray

    @ray.remote
    class RayWorker:
        def __init__(self, cfg, run_dir: str, inputs: WorkerInputs, device: str, num_threads: int) -> None:
            if device.startswith("cuda"):
                device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            self.runner = UnitRunner(cfg, run_dir, inputs, device, num_threads)

        def results(self, unit: Unit) -> list[dict]:
            results = self.runner.results(unit)
            node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran the unit
            for result in results:
                for r in result["records"]:
                    r["node_id"] = node_id
            return results

        def pid(self) -> int:
            return os.getpid()

    return RayWorker
