"""Latent-search inpainting (Yeh et al., "Semantic image inpainting with deep generative models")
with the thesis's landmark loss, and a landmark term that really steers.

Methods (``InpaintConfig.method``):

* ``si``: Yeh et al. L = Lc + Lp.
* ``si-ld``: the thesis exactly. L = Lc + Lp + Ld, Ld the count of dlib landmark coordinates of
  the *masked* candidate that are more than 3 px from those of the damaged input (+0.5 each).
  Ld is piecewise constant in z, so its gradient is zero almost everywhere: the z trajectories
  are identical to ``si`` (a test checks this bit for bit). Ld changes only which candidate has
  the lowest final loss. It is evaluated on every step's candidates, as in the thesis, by the
  C++ batch, several steps' candidates per call (``InpaintConfig.landmark_block``): on its own
  thread overlapping torch's backward pass where a core is free, else before the backward on
  every core (``InpaintConfig.landmark_overlap``).
* ``si-ld+``: adds ``mu * E(z)``, E the mean distance in pixels between dlib's (unrounded)
  points on each candidate's composite (known pixels of y, hole of G(z): what the output will
  be) and a reference. The reference is the *consensus* of many looks: per image, the median over
  its K candidates of their composites' points, re-estimated whenever the gradient is (pilots:
  the damaged input's own points, NME 0.11 from the truth, are a worse target than where ``si``
  already lands, and steering towards them hurt). dE/dz is estimated by antithetic zeroth-order
  differences: ``P`` random directions u per candidate, E(z + s u) - E(z - s u) scored as one
  batch by the C++ extension, every ``steer_every`` steps from ``steer_start`` of the run on;
  the estimate is added to z's gradient before Adam's step. Selection uses Lc + Lp + Ld + mu*E.
* ``si-ldsoft``: the same term with E computed by the smooth torch cascade
  (:mod:`facefill_core.landmarks_torch`, bilinear sampling, sigmoid splits), so dE/dz is exact
  autograd through G; the hard cascade is kept for Ld and for measuring.

Images ``(N, 3, 64, 64)`` in [-1, 1], holes ``(N, 1, 64, 64)`` with 1 = missing.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from facefill_core.adam import PortableAdam
from facefill_core.blend import poisson_blend
from facefill_core.config import InpaintConfig
from facefill_core.imaging import check_inputs, composite, damaged
from facefill_core.landmarks import LandmarkPredictor, intensity_u8, landmark_penalty
from facefill_core.landmarks_torch import TorchShapePredictor
from facefill_core.losses import context_weights, contextual_loss, landmark_distance, prior_loss
from facefill_core.methods import LATENT, LATENT_METHODS, METHODS

__all__ = ["InpaintResult", "LatentSearchInpainter", "check_inputs", "composite", "damaged", "poisson_blend"]


@dataclasses.dataclass
class InpaintResult:
    completed: Tensor  # (B, 3, H, W) in [-1, 1], known pixels exactly the input's
    generated: Tensor  # (B, 3, H, W) G(z*) of the chosen candidates
    z: Tensor  # (B, z_dim)
    loss: Tensor  # (B,) final loss of the chosen candidate (nan where nothing was searched)
    lc: Tensor
    lp: Tensor
    ld: Tensor  # thesis count (0 for si)
    steer: Tensor  # E of the chosen candidate (si-ld+), else 0
    dropped: list  # per image: candidates dropped for a non-finite loss
    reference: np.ndarray  # (B, 68, 2) landmarks of the damaged inputs
    trajectory: Optional[Tensor] = None  # (iters + 1, B*K, z_dim) when recorded
    ld_trace: Optional[np.ndarray] = None  # (iters, B*K) Ld per step (si-ld, si-ld+)
    seconds: float = 0.0


# Faces per C++ Ld call when steps are gathered (csrc/landmarks.cpp's kChunk: one pass of the
# leaves). 2-core AVX-512 EPYC, one call in the search loop: 64 faces ~8 ms, the leaves cold.
LD_BLOCK_FACES = 256


def _cores() -> int:
    """CPUs this process may run on (its affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _seed_for(seed: int, index: int, salt: int = 0) -> int:
    return int(np.random.SeedSequence([seed, index, salt]).generate_state(1)[0])


class LatentSearchInpainter:
    """Inpaint by searching the latent space of a DCGAN.

    Args:
        G, D: the face prior (put in eval mode and frozen here).
        cfg: :class:`~facefill_core.config.InpaintConfig`.
        box: the canonical face box for landmarks (``None``: the whole frame).
        predictor: a :class:`LandmarkPredictor` (created when a landmark method needs one).
        device: where G, D and z live (default: CUDA when available, else CPU).
    """

    def __init__(
        self,
        G: torch.nn.Module,
        D: torch.nn.Module,
        cfg: InpaintConfig = InpaintConfig(),
        box: Optional[Sequence[int]] = None,
        predictor: Optional[LandmarkPredictor] = None,
        device: Optional[str | torch.device] = None,
    ) -> None:
        if cfg.method not in METHODS or METHODS[cfg.method].family != LATENT:
            raise ValueError(f"method must be one of {', '.join(LATENT_METHODS)}, got {cfg.method!r}")
        if cfg.candidates < 1 or cfg.iters < 0:
            raise ValueError(f"candidates must be >= 1 and iters >= 0, got {cfg.candidates}, {cfg.iters}")
        if cfg.z_init not in ("uniform", "normal"):
            raise ValueError(f"z_init must be 'uniform' or 'normal', got {cfg.z_init!r}")
        if cfg.steer_target not in ("whole", "composite"):
            raise ValueError(f"steer_target must be 'whole' or 'composite', got {cfg.steer_target!r}")
        if cfg.landmark_every < 0 or cfg.overlap_threads < 0 or cfg.landmark_block < 0:
            raise ValueError(
                "landmark_every, overlap_threads and landmark_block must be >= 0, got "
                f"{cfg.landmark_every}, {cfg.overlap_threads}, {cfg.landmark_block}"
            )
        if cfg.landmark_overlap not in ("auto", "overlap", "serial"):
            raise ValueError(f"landmark_overlap must be auto, overlap or serial, got {cfg.landmark_overlap!r}")
        if cfg.blend not in ("none", "poisson"):
            raise ValueError(f"blend must be 'none' or 'poisson', got {cfg.blend!r}")
        self.cfg = cfg
        self.device = (
            torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.G, self.D = G.to(self.device), D.to(self.device)
        for m in (self.G, self.D):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        self.z_dim = int(getattr(G, "z_dim", 100))
        self.box = tuple(box) if box is not None else None
        # the method's behaviour, chosen once from its registry entry (facefill_core.methods)
        search = METHODS[cfg.method].search
        self.landmark_count = search.landmark_count  # Ld: evaluated during the search, added at the end
        self.uses_landmarks = search.uses_landmarks
        self.steer_gradient = {None: None, "antithetic": self._antithetic_grad, "soft": self._soft_grad}[search.steer]
        self.predictor = predictor
        if self.uses_landmarks and self.predictor is None:
            self.predictor = LandmarkPredictor(num_threads=cfg.landmark_threads)
        self._pool = ThreadPoolExecutor(max_workers=1) if self.uses_landmarks else None
        if cfg.landmark_backend not in ("auto", "cpp", "torch"):
            raise ValueError(f"landmark_backend must be auto, cpp or torch, got {cfg.landmark_backend!r}")
        # auto: the C++ batch on a CPU run, the torch cascade next to the models on a GPU
        self.backend = cfg.landmark_backend
        if self.backend == "auto":
            self.backend = "torch" if self.device.type == "cuda" else "cpp"
        # overlapping pays only with a free core: beside torch's busy threads the C++ batch
        # stretches them (docs/performance.md)
        self.overlap = self.backend == "cpp" and (
            cfg.landmark_overlap == "overlap"
            or (cfg.landmark_overlap == "auto" and torch.get_num_threads() + max(1, cfg.overlap_threads) <= _cores())
        )
        self.tsp = None
        if self.uses_landmarks and (self.backend == "torch" or search.steer == "soft"):
            self.tsp = TorchShapePredictor(self.predictor.export()).to(self.device)

    # -- landmarks ------------------------------------------------------------------------
    def _points(self, x, rounded: bool = True, num_threads: Optional[int] = None) -> np.ndarray:
        """Landmarks of ``x`` (a tensor; or, on the C++ path, uint8 RGB ``(N, H, W, 3)`` or
        intensity ``(N, H, W)`` images) with the backend."""
        if self.backend == "torch":
            with torch.no_grad():
                p = self.tsp(x.to(self.device), box=self.box)
            p = torch.floor(p + 0.5) if rounded else p
            return p.cpu().numpy().astype(np.float32)
        u8 = x if isinstance(x, np.ndarray) else intensity_u8(x)  # grey: the same points as RGB
        return self.predictor.predict(u8, box=self.box, rounded=rounded, num_threads=num_threads)

    def _ld(self, x, refs: np.ndarray, k: int, num_threads: Optional[int] = None) -> list[np.ndarray]:
        """Ld of one or more steps' masked candidates ``x`` (a tensor of one step, or the uint8
        intensity images of several steps one after another, B*K each): one ``(B*K,)`` array
        per step."""
        return self._step_penalties(self._points(x, rounded=True, num_threads=num_threads), refs, k)

    def _step_penalties(self, pts: np.ndarray, refs: np.ndarray, k: int) -> list[np.ndarray]:
        """Ld of consecutive steps' points (B*K each): one ``(B*K,)`` array per step."""
        n = len(refs) * k
        return [self._penalties(pts[i : i + n], refs, k) for i in range(0, len(pts), n)]

    def _ld_block_steps(self, faces_per_step: int) -> int:
        """Steps whose Ld goes to the C++ batch in one call. A call streams the cascade's leaves
        (65 MB) from memory once, whatever the batch up to ``LD_BLOCK_FACES`` faces, so a small
        step's faces are gathered over several steps (K = 64, one image: 4 steps a call)."""
        if self.backend != "cpp":
            return 1
        if self.cfg.landmark_block > 0:
            return self.cfg.landmark_block
        return max(1, LD_BLOCK_FACES // max(1, faces_per_step))

    def _penalties(self, pts: np.ndarray, refs: np.ndarray, k: int, margin: Optional[float] = None) -> np.ndarray:
        margin = self.cfg.landmark_margin_px if margin is None else margin
        out = np.empty(len(pts))
        for b in range(len(refs)):
            out[b * k : (b + 1) * k] = landmark_penalty(
                refs[b], pts[b * k : (b + 1) * k], margin, self.cfg.landmark_step
            )
        return out

    def _steer_view(self, gz: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """What the steering term looks at: the whole G(z), or the composite (known pixels of y,
        hole of G(z)), which is what the output will be."""
        return gz if self.cfg.steer_target == "whole" else composite(y, gz, m)

    def _antithetic_grad(
        self, z: Tensor, refs: np.ndarray, indices: Sequence[int], t: int, y: Tensor, m: Tensor
    ) -> Tensor:
        """si-ld+: antithetic zeroth-order estimate of dE/dz, E = mean landmark distance (px)
        of the steering view of G(z) to the reference ``(B, 68, 2)``."""
        cfg, k, n = self.cfg, self.cfg.candidates, z.shape[0]
        p, s = cfg.steer_pairs, cfg.steer_sigma
        u = torch.empty(n, p, self.z_dim)
        for b, idx in enumerate(indices):
            g = torch.Generator().manual_seed(_seed_for(cfg.seed, idx, 1000 + t))
            u[b * k : (b + 1) * k] = torch.randn(k, p, self.z_dim, generator=g)
        u = u.to(z.device)
        zz = torch.cat([(z[:, None] + s * u), (z[:, None] - s * u)], 1).clamp(-1, 1).reshape(-1, self.z_dim)
        rep = lambda a: a.repeat_interleave(2 * p, 0)  # noqa: E731
        with torch.no_grad():
            pts = self._points(self._steer_view(self.G(zz), rep(y), rep(m)), rounded=False).reshape(n, 2 * p, 68, 2)
        ref_rep = np.repeat(refs, k, axis=0)[:, None]
        e = torch.from_numpy(landmark_distance(ref_rep, pts)).float().to(z.device)  # (n, 2p)
        diff = (e[:, :p] - e[:, p:]) / (2 * s)
        return (diff[:, :, None] * u).mean(1)

    def _consensus(self, z: Tensor, y: Tensor, m: Tensor, b: int, k: int) -> np.ndarray:
        """A reference from many looks: per image, the median over its K candidates of dlib's
        points on their composites (known pixels of y, hole of G(z)). ``(B, 68, 2)``."""
        with torch.no_grad():
            pts = self._points(composite(y, self.G(z), m), rounded=False).reshape(b, k, 68, 2)
        return np.median(pts, axis=1).astype(np.float32)

    def _soft_grad(self, z: Tensor, refs: np.ndarray, indices: Sequence[int], t: int, y: Tensor, m: Tensor) -> Tensor:
        """si-ldsoft: exact gradient of E_soft = mean distance (px) of the smooth cascade's
        points on the steering view of G(z) to the reference ``(B, 68, 2)``."""
        refs_t = torch.from_numpy(np.repeat(refs, self.cfg.candidates, axis=0)).to(self.device)
        zz = z.detach().requires_grad_(True)
        with torch.enable_grad():
            view = self._steer_view(self.G(zz), y, m)
            pts = self.tsp(view, box=self.box, soft=True, temperature=self.cfg.soft_temperature)
            e = (pts - refs_t).norm(dim=-1).mean(-1)
            (grad,) = torch.autograd.grad(e.sum(), zz)
        return grad

    # -- search ---------------------------------------------------------------------------
    def inpaint(
        self,
        images: Tensor,
        holes: Tensor,
        image_indices: Optional[Sequence[int]] = None,
        record_trajectory: bool = False,
        record_ld: bool = False,
    ) -> InpaintResult:
        """Inpaint a batch: B images x K candidates searched as one batch of B*K.

        Args:
            images: ``(B, 3, H, W)`` in [-1, 1].
            holes: ``(B, 1, H, W)``, 1 = missing.
            image_indices: stable ids of the images (seeds of their candidates); the result of
                an image does not depend on the rest of the batch. Default ``0..B-1``.

        Raises:
            ValueError: shape/range mismatch, or a hole covering a whole image.
        """
        return self.inpaint_choices(images, holes, image_indices, (), record_trajectory, record_ld)[0]

    def inpaint_choices(
        self,
        images: Tensor,
        holes: Tensor,
        image_indices: Optional[Sequence[int]] = None,
        other_margins: Sequence[float] = (),
        record_trajectory: bool = False,
        record_ld: bool = False,
    ) -> list[InpaintResult]:
        """One search, several final choices: the result with ``cfg.landmark_margin_px``, then
        one per margin of ``other_margins``. The margin enters only Ld, and Ld never moves z
        (module docstring), so each result equals a separate search run with that margin (a
        test checks it); a margin sweep pays for one search. ``ld_trace`` (per-step Ld) is the
        first result's only."""
        t_start = time.perf_counter()
        check_inputs(images, holes)
        cfg = self.cfg
        b_all = images.shape[0]
        indices = list(range(b_all)) if image_indices is None else [int(i) for i in image_indices]
        if len(indices) != b_all:
            raise ValueError(f"image_indices must have {b_all} entries, got {len(indices)}")
        images = images.to(self.device, torch.float32)
        holes = holes.to(self.device, torch.float32)
        known_all = holes.flatten(1).max(1).values < 0.5
        if known_all.any():
            warnings.warn(f"{int(known_all.sum())} image(s) have no hole; returned unchanged", stacklevel=3)
        search = (~known_all).nonzero().flatten().tolist()

        margins = (cfg.landmark_margin_px, *(float(x) for x in other_margins))
        if any(not np.isfinite(x) or x < 0 for x in margins):
            raise ValueError(f"landmark margins must be finite and >= 0, got {margins}")
        chosen = [None] * len(margins)
        if search:
            chosen = self._search(
                images[search], holes[search], [indices[i] for i in search], record_trajectory, record_ld, margins
            )
        seconds = time.perf_counter() - t_start
        return [self._result(images, holes, search, r, seconds) for r in chosen]

    def _result(self, images: Tensor, holes: Tensor, search: list, r: Optional[dict], seconds: float) -> InpaintResult:
        """The whole batch's result from the searched images' choice ``r`` (None: none searched)."""
        b_all = images.shape[0]
        out = images.clone()
        gen_out = images.clone()
        nan = torch.full((b_all,), float("nan"))
        res = dict(loss=nan.clone(), lc=nan.clone(), lp=nan.clone(), ld=torch.zeros(b_all), steer=torch.zeros(b_all))
        z_out = torch.zeros(b_all, self.z_dim)
        dropped = [0] * b_all
        refs_all = np.full((b_all, 68, 2), np.nan, np.float32)
        traj = ld_trace = None
        if r is not None:
            for j, i in enumerate(search):
                out[i], gen_out[i], z_out[i] = r["completed"][j], r["generated"][j], r["z"][j]
                for key in res:
                    res[key][i] = r[key][j]
                dropped[i] = r["dropped"][j]
                if r["refs"] is not None:
                    refs_all[i] = r["refs"][j]
            traj, ld_trace = r["trajectory"], r["ld_trace"]
        if self.cfg.blend == "poisson":
            out = poisson_blend(images, gen_out, holes)
        return InpaintResult(
            completed=out.cpu(),
            generated=gen_out.cpu(),
            z=z_out,
            dropped=dropped,
            reference=refs_all,
            trajectory=traj,
            ld_trace=ld_trace,
            seconds=seconds,
            **res,
        )

    def _search(self, images, holes, indices, record_trajectory, record_ld, margins) -> list[dict]:
        cfg, k, dev = self.cfg, self.cfg.candidates, self.device
        b = images.shape[0]
        y = images.repeat_interleave(k, 0)
        m = holes.repeat_interleave(k, 0)
        w = context_weights(holes, cfg.window).repeat_interleave(k, 0)
        z0 = torch.empty(b * k, self.z_dim)
        for j, idx in enumerate(indices):
            g = torch.Generator().manual_seed(_seed_for(cfg.seed, idx))
            if cfg.z_init == "uniform":
                z0[j * k : (j + 1) * k] = torch.rand(k, self.z_dim, generator=g) * 2 - 1
            else:
                z0[j * k : (j + 1) * k] = torch.randn(k, self.z_dim, generator=g).clamp(-1, 1)
        z = z0.to(dev).requires_grad_(True)
        opt = PortableAdam([z], lr=cfg.lr)  # torch's Adam with a correctly rounded sqrt: the same bits on every CPU
        refs = self._points(damaged(images, holes)) if self.uses_landmarks else None
        steer_refs = refs
        steer_from = int(cfg.steer_start * cfg.iters)
        traj = [z.detach().cpu().clone()] if record_trajectory else None
        ld_trace = [] if (record_ld and self.landmark_count) else None
        every = cfg.landmark_every  # 0: Ld only for the final choice (same output: it never steers)
        step_ld = self.landmark_count and every > 0
        # Ld of every evaluated step, gathered into blocks for the C++ batch: a value that never
        # moves z, so when it is computed changes nothing but the time (a test checks ld_trace
        # against Ld recomputed from the trajectory)
        block = self._ld_block_steps(b * k)
        last_ld = (cfg.iters - 1) // every * every if step_ld else -1
        pending: list[np.ndarray] = []
        g_steer = None
        for t in range(cfg.iters):
            gz = self.G(z)
            lc = contextual_loss(gz, y, w)
            lp = prior_loss(self.D(gz), cfg.prior_weight)
            fut, ld_now = None, []
            if step_ld and t % every == 0:
                if self.backend == "cpp":
                    pending.append(intensity_u8(gz, m))  # = intensity of damaged(gz, m)
                    if len(pending) == block and t != last_ld:  # the last block goes with the final choice
                        faces = pending[0] if len(pending) == 1 else np.concatenate(pending)
                        pending = []
                        if self.overlap:  # the C++ batch runs GIL-free while torch does backward
                            fut = self._pool.submit(self._ld, faces, refs, k, cfg.overlap_threads)
                        else:
                            ld_now = self._ld(faces, refs, k)
                else:
                    ld_now = self._ld(damaged(gz.detach(), m), refs, k)
            loss = (lc + lp).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.steer_gradient is not None and t >= steer_from:
                if g_steer is None or (t - steer_from) % cfg.steer_every == 0:
                    if cfg.steer_reference == "consensus":
                        steer_refs = self._consensus(z.detach(), y, m, b, k)
                    g_steer = self.steer_gradient(z.detach(), steer_refs, indices, t, y, m)
                z.grad.add_(g_steer, alpha=cfg.steer_weight)
            opt.step()
            with torch.no_grad():
                z.clamp_(-1.0, 1.0)
            lds = fut.result() if fut is not None else ld_now  # Ld of z_t (and earlier): values, they cannot move z
            if ld_trace is not None:
                ld_trace.extend(lds)
            if traj is not None:
                traj.append(z.detach().cpu().clone())
        with torch.no_grad():
            gz = self.G(z)
            lc = contextual_loss(gz, y, w)
            lp = prior_loss(self.D(gz), cfg.prior_weight)
            steer = torch.zeros_like(lc)
            if self.steer_gradient is not None:
                pts = self._points(self._steer_view(gz, y, m), rounded=False)
                steer = torch.from_numpy(landmark_distance(np.repeat(steer_refs, k, axis=0), pts)).float().to(dev)
            ld_points = None
            if self.landmark_count:  # the final candidates' points, in one call with the last block
                n = b * k
                if pending:
                    pts = self._points(np.concatenate([*pending, intensity_u8(gz, m)]))
                    ld_points = pts[-n:]
                    lds = self._step_penalties(pts[:-n], refs, k)
                    if ld_trace is not None:
                        ld_trace.extend(lds)
                else:
                    ld_points = self._points(damaged(gz, m))
        trajectory = torch.stack(traj) if traj is not None else None
        chosen = []
        for i, margin in enumerate(margins):
            ld = torch.zeros_like(lc)
            total = lc + lp
            if ld_points is not None:
                ld = torch.from_numpy(self._penalties(ld_points, refs, k, margin)).float().to(dev)
                total = total + ld
            if self.steer_gradient is not None:
                total = total + cfg.steer_weight * steer
            total = total.view(b, k)
            finite = torch.isfinite(total)
            dropped = (~finite).sum(1).tolist()
            if any(dropped) and i == 0:
                warnings.warn(f"dropped {sum(dropped)} candidate(s) with a non-finite loss", stacklevel=4)
            masked_total = torch.where(finite, total, torch.full_like(total, float("inf")))
            best = masked_total.argmin(1)
            if not finite.any(1).all():
                raise FloatingPointError("every candidate of an image had a non-finite loss")
            sel = torch.arange(b, device=dev) * k + best
            gen = gz[sel]
            chosen.append(
                dict(
                    completed=composite(images, gen, holes),
                    generated=gen,
                    z=z.detach()[sel].cpu(),
                    loss=total.flatten()[sel].cpu(),
                    lc=lc[sel].cpu(),
                    lp=lp[sel].cpu(),
                    ld=ld[sel].cpu(),
                    steer=steer[sel].cpu(),
                    dropped=dropped,
                    refs=refs,
                    trajectory=trajectory,
                    ld_trace=np.stack(ld_trace) if ld_trace and i == 0 else None,
                )
            )
        return chosen
