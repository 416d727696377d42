"""The accuracy sections of ``python -m bench.gpu.check`` (see there): the battery's shared
inputs, every method's records on a device, the torch landmark cascade against the C++
extension, and mixed precision's records against fp32."""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext

import numpy as np
import torch

from bench.gpu.report import agreement, landmark_parity_ok

MASKS = ("centre", "left", "right", "random")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _amp(device: torch.device, on: bool):
    """bf16 autocast (no loss scaling needed: bf16 has fp32's range); a no-op when off."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else nullcontext()


class Shared:
    """What every section reuses: the test images, masks, face box and one C++ predictor."""

    def __init__(self, n_images: int, n_step_images: int) -> None:
        from facefill_core.config import MaskConfig
        from facefill_core.data import FaceDataset
        from facefill_core.landmarks import LandmarkPredictor
        from facefill_core.masks import make_masks

        ds = FaceDataset("embedded")
        self.box = ds.box
        self.images, self.ids = ds.load("test", max(n_images, n_step_images))
        self.n_images = n_images
        self.holes = {m: make_masks(MaskConfig(m), len(self.images)) for m in MASKS}
        self.predictor = LandmarkPredictor()
        self._train: dict = {}

    def train_images(self, n: int):
        """The first ``n`` training images, uint8 ``(n, 64, 64, 3)`` (for ``nn``)."""
        from facefill_core.data import FaceDataset

        if n not in self._train:
            self._train[n] = FaceDataset("embedded").load_uint8("train", n)[0]
        return self._train[n]


def _methods():
    from facefill_core.methods import METHODS

    return METHODS


def _inpaint_cfg(method: str, candidates: int, iters: int, **over):
    from bench.harness.config import BenchConfig

    cfg = BenchConfig(candidates=candidates, iters=iters).inpaint_config(method)
    return dataclasses.replace(cfg, **over)


def _winners(r, k: int) -> list[int]:
    """The chosen candidate of each image: the one whose final z is the returned z."""
    last = r.trajectory[-1]
    return [int((last[b * k : (b + 1) * k] - r.z[b]).abs().sum(1).argmin()) for b in range(len(r.z))]


# -- 1. records -----------------------------------------------------------------------------
def method_records(sh: Shared, method: str, device, size: dict, masks=MASKS, amp: bool = False) -> list[dict]:
    """Records of one method on the battery's images and masks on ``device``."""
    from facefill_core.inpainters import build
    from facefill_core.metrics import face_metrics

    info = _methods()[method]
    x, idx = sh.images[: sh.n_images], list(range(sh.n_images))
    latent = info.family == "latent"
    cfg = _inpaint_cfg(method, size["candidates"], size["iters"])
    kw = {}
    if getattr(info, "train_split", False) and size["nn_train"] is not None:  # small: a part of the split
        kw["train_images"] = sh.train_images(size["nn_train"])
    inp = build(method, cfg, None, device, sh.box, predictor=sh.predictor if latent else None, **kw)
    out_recs = []
    for mask in masks:
        h = sh.holes[mask][: sh.n_images]
        winners = [None] * len(x)
        with _amp(torch.device(device), amp):
            if latent:
                r = inp.search.inpaint(x, h, idx, record_trajectory=True)
                out, winners = r.completed, _winners(r, size["candidates"])
            else:
                out = inp.inpaint(x, h, idx)
        m = face_metrics(out.detach().float().cpu(), x, sh.predictor, sh.box)
        for j in range(len(x)):
            nme = float(m["nme"][j])
            out_recs.append(
                {"method": method, "family": info.family, "mask": mask, "image_index": j, "psnr": float(m["psnr"][j]),
                 "ssim": float(m["ssim"][j]), "nme": nme if np.isfinite(nme) else None, "winner": winners[j]}
            )  # fmt: skip
    return out_recs


def records(sh: Shared, device, size: dict) -> list[dict]:
    return [r for m in _methods() for r in method_records(sh, m, device, size)]


# -- 2. landmarks ---------------------------------------------------------------------------
def landmark_parity(sh: Shared, device, batches) -> list[dict]:
    """C++ (all cores) vs the torch cascade on ``device`` on faces drawn from the DCGAN prior."""
    from facefill_core.imaging import to_uint8_nhwc
    from facefill_core.landmarks_torch import TorchShapePredictor
    from facefill_core.pretrained import load_dcgan

    g, _, _ = load_dcgan(None, device)
    tsp = TorchShapePredictor(sh.predictor.export()).to(device)
    rows, warm = [], False
    for n in batches:
        with torch.no_grad():
            z = torch.rand(n, g.z_dim, generator=torch.Generator().manual_seed(n)) * 2 - 1
            u8 = to_uint8_nhwc(torch.cat([g(c.to(device)).cpu() for c in z.split(512)]))
        t = time.perf_counter()
        pc = sh.predictor.predict(u8, box=sh.box, rounded=False, num_threads=0)
        cpp_s = time.perf_counter() - t
        xt = torch.from_numpy(u8).to(device)
        with torch.no_grad():
            if not warm:  # kernels, allocator
                tsp(xt[:8], box=sh.box)
                warm = True
            _sync(device)
            t = time.perf_counter()
            pt = tsp(xt, box=sh.box)
            _sync(device)
            torch_s = time.perf_counter() - t
        d = np.abs(pt.cpu().numpy() - pc)
        rows.append(
            {"device": str(device), "batch": n, "mean_abs_px": float(d.mean()), "median_abs_px": float(np.median(d)),
             "p99_abs_px": float(np.percentile(d, 99)), "max_abs_px": float(d.max()), "cpp_img_per_s": n / cpp_s,
             "torch_img_per_s": n / torch_s, "ok": landmark_parity_ok(d)}
        )  # fmt: skip
    return rows


# -- mixed precision ------------------------------------------------------------------------
def mixed_precision(sh: Shared, device, size: dict, fp32: list[dict]) -> list[dict]:
    """Latent methods under autocast against their fp32 records on the same device (centre)."""
    names = size["amp_methods"] or [m for m, i in _methods().items() if i.family == "latent"]
    ref = [r for r in fp32 if r["mask"] == "centre" and r["method"] in names]  # the methods run under autocast
    amp = [r for m in names for r in method_records(sh, m, device, size, masks=("centre",), amp=True)]
    return agreement(ref, amp, f"{device.type} fp32 vs autocast", strict=True)
