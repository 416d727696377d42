"""Work units and the workers that run them.

A unit is (method, mask, images start:stop); its method is a label, a registry name or a sweep's
variant of one (``si-ld[margin=2]``, :mod:`bench.harness.sweep`). :class:`UnitRunner` is plain Python (tests call it
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

from bench.harness.numerics import apply as apply_numerics
from bench.harness.numerics import env_for as numerics_env
from bench.harness.numerics import problems as numerics_problems
from bench.harness.rundir import masks_path, run_masks
from bench.harness.sweep import expand, parse_label, share_groups
from facefill_core.data import TestSet
from facefill_core.methods import LATENT_METHODS, PLUGIN, method_info
from facefill_core.metrics import SCALE_KEYS

JUDGE_KEYS = ("hole_psnr", "hole_ssim", "mesh_nme", "identity")  # per-image judges' record fields


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
    replicate: int = 0  # the seed replicate (BenchConfig.replicate_seed); 0 for a deterministic method

    @property
    def uid(self) -> str:
        suffix = f"__r{self.replicate:03d}" if self.replicate else ""  # replicate 0 keeps the old uid
        return f"{self.method}__{self.mask}__{self.start:05d}-{self.stop:05d}{suffix}"

    def members(self) -> list["Unit"]:
        """This unit and one per shared label: the units whose records it writes."""
        return [
            Unit(label, self.mask, self.start, self.stop, replicate=self.replicate)
            for label in (self.method, *self.shares)
        ]

    def remaining(self, done: set) -> Optional["Unit"]:
        """The unit that writes the members whose uid is not in ``done`` (None: all are), led by
        the first of them (any member's search serves the others)."""
        left = [m.method for m in self.members() if m.uid not in done]
        return Unit(left[0], self.mask, self.start, self.stop, tuple(left[1:]), self.replicate) if left else None


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
    from facefill_core.plugins import load

    for ref in getattr(cfg, "plugins", ()):  # the driver's registry knows the run's plugins
        load(ref)
    ts = load_test_set(cfg.data, cfg.n_images, cfg.box)
    points = LandmarkPredictor().predict(ts.images, box=ts.box, rounded=False)
    train = exclude = None
    if any(method_info(m).train_split for m in cfg.methods):
        train, train_ids = FaceDataset(cfg.data, box=ts.box).load_uint8("train")
        row = {t: r for r, t in enumerate(train_ids)}
        exclude = {i: row[t] for i, t in enumerate(ts.ids) if t in row}  # leave-one-out
    holes = {m: run_masks(cfg, m) for m in cfg.masks}
    return WorkerInputs(ts, points, train, holes, exclude)


def _finite(v) -> Optional[float]:
    return float(v) if np.isfinite(v) else None


def known_changed(out, images, holes: np.ndarray) -> np.ndarray:
    """How far a completion moved the known pixels: per image, the mean absolute difference
    over the known pixels (and channels) of the uint8 images, in 0-255 levels (0: untouched).

    Args:
        out, images: ``(n, 3, 64, 64)`` in [-1, 1]; holes: uint8 ``(n, 64, 64)``, 1 = hole.

    Returns:
        ``np.float64 (n,)``; NaN for an image without a known pixel.
    """
    from facefill_core.imaging import to_uint8_nhwc

    d = np.abs(to_uint8_nhwc(out).astype(np.int16) - to_uint8_nhwc(images).astype(np.int16)).sum(-1)
    known = 1 - np.asarray(holes, np.int64)
    n = known.reshape(len(known), -1).sum(1) * 3
    with np.errstate(invalid="ignore", divide="ignore"):
        return (d * known).reshape(len(known), -1).sum(1) / n


def _latent(label: str) -> bool:
    return parse_label(label).method in LATENT_METHODS


def stochastic(label: str) -> bool:
    """Whether a method's result depends on the run's seed: the latent searches (their
    candidates' draws). The feed-forward and classical methods are deterministic (gfc's
    noise input is seeded by the image's index alone), so they run once whatever ``replicates``."""
    return _latent(label)


def plan_units(cfg) -> list[Unit]:
    """Every (method label, mask, shard, replicate): each method's sweep variants
    (``cfg.sweep``); latent methods in shards of ``cfg.shard_size`` images and
    ``cfg.replicates`` seed replicates, the rest in one unit per mask. Ordered slow-first so the
    tail of a run is short."""
    units = []
    for group in share_groups(expand(cfg.methods, cfg.sweep)):
        v, shares = group[0], tuple(x.label for x in group[1:])
        sharded = v.method in LATENT_METHODS or method_info(v.method).family == PLUGIN  # plugins: shards too
        size = cfg.shard_size if sharded else cfg.n_images
        reps = range(cfg.replicates) if stochastic(v.label) else range(1)
        for r in reps:
            for mask in cfg.masks:
                for s in range(0, cfg.n_images, size):
                    units.append(Unit(v.label, mask, s, min(cfg.n_images, s + size), shares, r))
    units.sort(key=lambda u: (not _latent(u.method), u.replicate, u.method, u.mask, u.start))
    return units


class UnitRunner:
    """Runs units for one run directory; models load on first use and stay loaded.

    Args:
        cfg: the run's BenchConfig.
        run_dir: where the masks were saved (read here) and the crash marker lives.
        inputs: the driver's :class:`WorkerInputs`.
        device: "cpu" or "cuda:k".
        num_threads: C++ landmark threads, and torch CPU threads under ``numerics="free"``
            (pinned: :data:`bench.harness.numerics.PINNED_TORCH_THREADS`; Ray sets OMP_NUM_THREADS=1 in
            workers; we set ours).
    """

    def __init__(self, cfg, run_dir: str, inputs: WorkerInputs, device: str = "cpu", num_threads: int = 1) -> None:
        from facefill_core.landmarks import LandmarkPredictor

        numerics = getattr(cfg, "numerics", "free")
        apply_numerics(numerics, num_threads)  # pinned: one torch thread whatever num_threads, no oneDNN
        # why this process does not run pinned numerics (bench.harness.numerics): a Ray worker refuses to run
        self.numerics_problems = numerics_problems(numerics) if device == "cpu" else []
        self.numerics_pinned = numerics == "pinned" and device == "cpu" and not self.numerics_problems
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.test_set, self.target_points = inputs.test_set, inputs.target_points
        self.train_images, self.train_exclude = inputs.train_images, inputs.train_exclude
        self.holes = inputs.holes
        self.images = self.test_set.tensors()
        self.box = self.test_set.box
        self.predictor = LandmarkPredictor(num_threads=max(1, num_threads))  # one per worker, shared
        self._methods: dict = {}
        if getattr(cfg, "plugins", ()):  # a worker is its own process: it registers the run's plugins
            from facefill_core.plugins import load

            for ref in cfg.plugins:
                load(ref)

    def _inpainter(self, label: str, replicate: int = 0):
        from facefill_core.inpainters import build

        key = (label, replicate)
        if key not in self._methods:
            cfg, v = self.cfg, parse_label(label)
            icfg = dataclasses.replace(cfg.inpaint_config(v.method, replicate), **v.overrides())
            self._methods[key] = build(
                v.method,
                icfg,
                cfg.weights_for(v.method),
                self.device,
                self.box,
                self.predictor,
                self.train_images,
                self.train_exclude,
            )
        return self._methods[key]

    def _metrics(self, out, unit: Unit) -> dict:
        from facefill_core.metrics import face_metrics

        x, target = self.images[unit.start : unit.stop], self.target_points[unit.start : unit.stop]
        m = face_metrics(out, x, self.predictor, self.box, target_points=target)
        m["known_changed_mean_abs"] = known_changed(out, x, self._holes(unit))
        m.update(self._judges(out, unit))
        return m

    def _judges(self, out, unit: Unit) -> dict:
        """The run's per-image judges (``cfg.metrics``; KID/FID run once per run in the report):
        hole-only PSNR/SSIM, Face Mesh NME, FaceNet identity similarity. Each model loads once
        per worker, with the undamaged images' mesh points / embeddings."""
        import torch

        from facefill_core.imaging import to_uint8_nhwc, to_unit_range

        judges, m = getattr(self.cfg, "metrics", ()), {}
        x = self.images[unit.start : unit.stop]
        if "hole" in judges:
            from facefill_core.metrics import hole_metrics

            hole = torch.from_numpy(np.asarray(self._holes(unit), np.float32))[:, None]
            m.update(hole_metrics(to_unit_range(out).clamp(0, 1), to_unit_range(x).clamp(0, 1), hole))
        if "mesh" in judges:
            from facefill_core.judges.mesh import PRESENCE_THRESHOLD, FaceMesh, mesh_nme

            if not hasattr(self, "_mesh"):
                self._mesh = FaceMesh(num_threads=1, reference_kernels=self.cfg.numerics == "pinned")
                self._mesh_ref = self._mesh.predict(self.test_set.images)
            pts, ok = self._mesh.predict(to_uint8_nhwc(out))
            ref, ref_ok = (a[unit.start : unit.stop] for a in self._mesh_ref)
            m["mesh_nme"] = mesh_nme(pts, ref, ok > PRESENCE_THRESHOLD, ref_ok > PRESENCE_THRESHOLD)
        if "identity" in judges:
            from facefill_core.judges.identity import FaceNet, identity_similarity

            if not hasattr(self, "_facenet"):
                self._facenet = FaceNet(portable=self.cfg.numerics == "pinned")
                self._facenet_ref = self._facenet(self.test_set.images)
            emb = self._facenet(to_uint8_nhwc(out))
            m["identity"] = identity_similarity(emb, self._facenet_ref[unit.start : unit.stop])
        return m

    def _holes(self, unit: Unit) -> np.ndarray:
        """uint8 ``(n, 64, 64)`` holes of the unit's images, 1 = hole."""
        all_holes = self.holes[unit.mask] if self.holes else np.load(masks_path(self.run_dir, unit.mask))
        return all_holes[unit.start : unit.stop]

    def run(self, unit: Unit) -> dict:
        """The result of a unit without shared labels (see :meth:`results`)."""
        if unit.shares:
            raise ValueError(f"unit {unit.uid} serves {len(unit.shares)} more labels: use results()")
        return self.results(unit)[0]

    def results(self, unit: Unit) -> list[dict]:
        """Run ``unit``'s search once; one result (uid, records, outputs[, trajectory]) per
        member (:meth:`Unit.members`)."""
        import torch

        from facefill_core.imaging import to_uint8_nhwc, uint8_to_signed

        if self.cfg.inject_crash in {m.uid for m in unit.members()}:  # any member's uid
            marker = os.path.join(self.run_dir, f".crashed-{self.cfg.inject_crash}")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(17)  # a real worker death, once
        x = self.images[unit.start : unit.stop]
        all_holes = self.holes[unit.mask] if self.holes else np.load(masks_path(self.run_dir, unit.mask))
        holes = torch.from_numpy(all_holes[unit.start : unit.stop]).float()[:, None]
        inp = self._inpainter(unit.method, unit.replicate)
        # the first shard's search (of replicate 0), for figures
        snapshots = unit.start == 0 and unit.replicate == 0 and _latent(unit.method)
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
                # scored as saved: the uint8 output read back exactly as bench.harness.score reads a PNG
                "records": self._records(member, uint8_to_signed(to_uint8_nhwc(out)), extra, inp, seconds),
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
                "replicate": unit.replicate,
                "seed": self.cfg.replicate_seed(unit.replicate) if stochastic(unit.method) else None,
                "psnr": float(m["psnr"][j]),
                "ssim": float(m["ssim"][j]),
                "nme": None if not np.isfinite(m["nme"][j]) else float(m["nme"][j]),
                "seconds": round(seconds, 4),
                "device": self.device,
                "landmark_backend": inp.landmark_backend,
                "metric_landmarks": "cpp (dlib, exact)",
                "weights_sha256": inp.weights_sha256,
                "numerics_pinned": self.numerics_pinned,  # the recipe in effect in this worker (bench.harness.numerics)
                "known_changed_mean_abs": _finite(m["known_changed_mean_abs"][j]),
            }
            for k in SCALE_KEYS:
                rec[k] = None if not np.isfinite(m[k][j]) else float(m[k][j])
            for k in JUDGE_KEYS:
                if k in m:  # a judge of --metrics; None: its failure (counted, not averaged)
                    rec[k] = _finite(m[k][j])
            if variant.params:
                rec["base_method"], rec["sweep"] = variant.method, variant.sweep_values()
            if "dropped" in extra:
                rec["dropped_candidates"] = int(extra["dropped"][j])
            records.append(rec)
        return records

    def _snapshots(self, inp, r, x, holes, start: int) -> dict:
        """The completion at :data:`bench.report.figures.SNAPSHOT_FRACTIONS` of the iterations, decoded
        from the recorded trajectory (``r``: an ``InpaintResult``) of the chosen candidates (uint8)."""
        from bench.report.figures import snapshot_steps, trajectory_snapshots

        steps = snapshot_steps(r.trajectory.shape[0] - 1)
        images = trajectory_snapshots(inp.search.G, r.trajectory, r.z, x, holes, steps)
        return {"steps": np.array(steps), "images": images, "image_index": np.arange(start, start + len(x))}


def make_ray_worker():
    """The Ray actor class (defined lazily so importing bench needs no Ray)."""
    import ray

    @ray.remote
    class RayWorker:
        """A :class:`UnitRunner` in an actor. The constructor takes no object-store argument
        (Ray logs an error-level line for each restartable actor built from one); the inputs
        arrive with every call as ``[ObjectRef]`` (a list, so Ray does not resolve it) and are
        fetched once, on the first call of each (re)started actor."""

        def __init__(self, cfg, run_dir: str, device: str, num_threads: int) -> None:
            if device.startswith("cuda"):
                device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            self.args = (cfg, run_dir, device, num_threads)
            self.runner: Optional[UnitRunner] = None

        def results(self, unit: Unit, inputs_box: list) -> list[dict]:
            if self.runner is None:  # the first call, also after a restart
                cfg, run_dir, device, num_threads = self.args
                runner = UnitRunner(cfg, run_dir, ray.get(inputs_box[0]), device, num_threads)
                if runner.numerics_problems:  # e.g. a node of a cluster started without the recipe
                    env = " ".join(f"{k}={v}" for k, v in numerics_env(cfg.numerics).items())
                    raise RuntimeError(  # kept unset: every later call on this actor refuses too
                        f"--numerics pinned: worker {os.getpid()}: {'; '.join(runner.numerics_problems)}; "
                        f"start its Ray node with {env}, or run with --numerics free"
                    )
                self.runner = runner
            results = self.runner.results(unit)
            node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran the unit
            for result in results:
                for r in result["records"]:
                    r["node_id"] = node_id
            return results

        def pid(self) -> int:
            return os.getpid()

    return RayWorker
