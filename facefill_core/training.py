"""Training the DCGAN prior and the feed-forward baselines (the command line is
:mod:`facefill_core.train`, a thin shell over :func:`train` and :func:`export_checkpoint`).

Seeded and exactly resumable: batch indices and noise of iteration ``t`` come from a generator
seeded with ``(seed, t)``, so a resumed run continues as if never stopped. Writes into
``out_dir``: ``checkpoint.pt`` (atomic, every ``checkpoint_every`` iterations, at the end and on
Ctrl-C), ``loss.csv``, ``samples.png``, ``command.json`` (the command line and config).
:func:`export_checkpoint` writes the compact fp16 weights shipped in ``facefill_core/weights``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facefill_core.config import TrainConfig
from facefill_core.data import FaceDataset
from facefill_core.fileio import atomic_save, sha256_file
from facefill_core.imaging import to_uint8_nhwc, uint8_to_signed
from facefill_core.models import context_encoder, gfc
from facefill_core.models.common import dataset_mean_colour, half_state
from facefill_core.models.dcgan import Discriminator, Generator, init_weights

CHECKPOINT = "checkpoint.pt"


def iteration_generator(seed: int, it: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + it)


def save_grid(images: torch.Tensor, path: str, nrow: int = 8) -> None:
    """images ``(N, 3, H, W)`` in [-1, 1] -> one PNG grid (1 px gaps)."""
    from PIL import Image

    a = to_uint8_nhwc(images)
    n, h, w, _ = a.shape
    rows = (n + nrow - 1) // nrow
    grid = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = a[i]
    tmp = path + ".tmp.png"
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)


def sample_z(n: int, z_dim: int, dist: str, gen: torch.Generator) -> torch.Tensor:
    """Latents ``(n, z_dim)``: ``uniform`` in [-1, 1] or standard ``normal``."""
    if dist == "uniform":
        return torch.rand(n, z_dim, generator=gen) * 2 - 1
    if dist == "normal":
        return torch.randn(n, z_dim, generator=gen)
    raise ValueError(f"z_dist must be 'uniform' or 'normal', got {dist!r}")


class DCGANTask:
    """The thesis's DCGAN: non-saturating GAN loss, Adam(2e-4, 0.5)."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.device = cfg, device
        self.G = Generator(cfg.z_dim, cfg.ngf).to(device)
        self.D = Discriminator(cfg.ndf).to(device)
        self.G.apply(init_weights)
        self.D.apply(init_weights)
        self.opt_g = torch.optim.Adam(self.G.parameters(), cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr, betas=(cfg.beta1, 0.999))
        self.fixed_z = sample_z(64, cfg.z_dim, cfg.z_dist, torch.Generator().manual_seed(12345))

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def step(self, real: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        n = real.shape[0]
        z = sample_z(n, self.cfg.z_dim, self.cfg.z_dist, gen).to(self.device)
        ones = torch.ones(n, device=self.device)
        zeros = torch.zeros(n, device=self.device)
        fake = self.G(z)
        self.opt_d.zero_grad(set_to_none=True)
        d_real = self.D(real)
        d_fake = self.D(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = F.binary_cross_entropy_with_logits(self.D(fake), ones)
        loss_g.backward()
        self.opt_g.step()
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_real": torch.sigmoid(d_real).mean().item(),
            "d_fake": torch.sigmoid(d_fake).mean().item(),
        }

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        self.G.eval()
        out = self.G(self.fixed_z.to(self.device)).cpu()
        self.G.train()
        return out

    def export(self) -> dict:
        """fp16 weights of G and D plus what is needed to rebuild them."""
        return {
            "kind": "dcgan",
            "config": {"z_dim": self.cfg.z_dim, "ngf": self.cfg.ngf, "ndf": self.cfg.ndf, "z_dist": self.cfg.z_dist},
            "G": half_state(self.G),
            "D": half_state(self.D),
        }


# what can be trained, by weights kind (facefill_core.methods.WEIGHTS_KINDS)
TASKS: dict[str, Callable[[TrainConfig, torch.device], object]] = {
    "dcgan": DCGANTask,
    "ce": context_encoder.CETask,
    "gfc": gfc.GFCTask,
}


def make_task(cfg: TrainConfig, device: torch.device):
    if cfg.model not in TASKS:
        raise ValueError(f"model must be one of {', '.join(TASKS)}, got {cfg.model!r}")
    return TASKS[cfg.model](cfg, device)


class EMA:
    """Exponential moving average of a module's weights (Yazici et al., "The unusual
    effectiveness of averaging in GAN training"): after every step,
    ``ema = decay * ema + (1 - decay) * w`` for each floating-point entry of the state dict
    (parameters and batch-norm running statistics); integer buffers are copied.

    Args:
        module: the network to follow (its state at construction starts the average).
        decay: in [0, 1); the average's horizon is about ``1 / (1 - decay)`` steps.

    Raises:
        ValueError: ``decay`` outside [0, 1).

    Example:
        >>> net = nn.Linear(1, 1, bias=False)
        >>> _ = net.weight.data.fill_(0.0)
        >>> ema = EMA(net, 0.9)
        >>> _ = net.weight.data.fill_(1.0)
        >>> ema.update(net)
        >>> round(float(ema.shadow["weight"]), 4)
        0.1
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.shadow):
            raise ValueError("EMA state does not match the network's entries")
        for k, v in state.items():
            self.shadow[k].copy_(v)


def init_from_weights(task, path: str, kind: str) -> dict:
    """Start ``task``'s networks from exported (fp16) weights: every network the file holds
    (G, and D for the DCGAN when shipped) is loaded; the optimizers stay fresh.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds another kind or another architecture.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_from: no weights file at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        got = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"init_from {path} holds {got!r} weights, expected {kind!r}")
    loaded = []
    for name, module in task.modules().items():
        if name not in payload:
            continue
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload[name].items()}
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"init_from {path}: {name} does not fit this config ({str(e).splitlines()[0]})") from None
        loaded.append(name)
    if "G" not in loaded:
        raise ValueError(f"init_from {path} holds no G")
    return {"path": path, "loaded": loaded, "iters": payload.get("iters")}


class DeferredInterrupt:
    """Within the block, a first SIGINT (Ctrl-C) only sets :attr:`requested`, so the loop can
    finish the iteration it is in and save a checkpoint on an iteration boundary (a step cut
    between the discriminator's and the generator's update would save a state that no
    uninterrupted run passes through). A second SIGINT interrupts at once; the last checkpoint
    on disk is then the last boundary saved. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def train(
    cfg: TrainConfig,
    out_dir: str,
    resume: bool = False,
    progress: bool = True,
    command: Optional[list[str]] = None,
) -> dict:
    """Train ``cfg.model`` into ``out_dir``. Returns a summary dict.

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
        ValueError: a checkpoint written with another config.
    """
    from tqdm import tqdm

    if cfg.iters < 0:
        raise ValueError(f"iters must be >= 0, got {cfg.iters}")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    os.makedirs(out_dir, exist_ok=True)
    device = torch.device(cfg.device)
    dataset = FaceDataset(cfg.data)
    train_u8, _ = dataset.load_uint8("train", cfg.n_train)
    data = torch.from_numpy(train_u8)  # uint8 NHWC, converted per batch
    task = make_task(cfg, device)
    if hasattr(task, "set_data"):
        task.set_data(data, dataset_mean_colour(train_u8))
    ckpt_path = os.path.join(out_dir, CHECKPOINT)
    start, wall = 0, 0.0
    if cfg.init_from and not resume:
        init_from_weights(task, cfg.init_from, cfg.model)
    ema = EMA(task.modules()["G"], cfg.ema_decay) if cfg.ema_decay > 0 else None
    if resume:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        saved = ck["config"]
        defaults = TrainConfig()
        for key in ("model", "data", "batch_size", "ngf", "ndf", "z_dim", "z_dist", "seed", "n_train", "ema_decay"):
            if saved.get(key, getattr(defaults, key)) != getattr(cfg, key):
                raise ValueError(
                    f"checkpoint {ckpt_path} was trained with {key}={saved.get(key)!r}, "
                    f"this run has {key}={getattr(cfg, key)!r}"
                )
        for k, m in task.modules().items():
            m.load_state_dict(ck["models"][k])
        if ema is not None:
            ema.load_state_dict(ck["ema_G"])
        for k, o in task.optimizers().items():
            o.load_state_dict(ck["optims"][k])
        start, wall = int(ck["iter"]), float(ck["wall_s"])

    def checkpoint(it: int) -> None:
        atomic_save(
            {
                "config": dataclasses.asdict(cfg),
                "iter": it,
                "wall_s": wall,
                "box": list(dataset.box),
                "mean_colour": getattr(task, "mean_colour", None),
                "models": {k: m.state_dict() for k, m in task.modules().items()},
                "optims": {k: o.state_dict() for k, o in task.optimizers().items()},
                **({"ema_G": ema.state_dict()} if ema is not None else {}),
            },
            ckpt_path,
        )
        save_grid(task.samples(), os.path.join(out_dir, "samples.png"))
        if ema is not None:  # the exported G's samples
            g = task.modules()["G"]
            live = {k: v.clone() for k, v in g.state_dict().items()}
            g.load_state_dict(ema.state_dict())
            save_grid(task.samples(), os.path.join(out_dir, "samples_ema.png"))
            g.load_state_dict(live)

    with open(os.path.join(out_dir, "command.json"), "w") as f:
        json.dump({"command": command, "config": dataclasses.asdict(cfg), "data": dataset.metadata()}, f, indent=1)
    log_path = os.path.join(out_dir, "loss.csv")
    if not resume or not os.path.exists(log_path):
        open(log_path, "w").close()
    else:  # drop log rows past the checkpoint (written after it, lost on a crash)
        with open(log_path) as f:
            rows = [r for r in csv.reader(f)]
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= start] if rows else []
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerows(keep)
    log_f = open(log_path, "a", newline="")
    writer = None
    it = start
    bar = tqdm(total=cfg.iters, initial=start, disable=not progress, desc=f"train {cfg.model}", dynamic_ncols=True)
    stop = DeferredInterrupt()
    try:
        with stop:
            for it in range(start, cfg.iters):
                t0 = time.perf_counter()
                gen = iteration_generator(cfg.seed, it)
                idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen)
                real = uint8_to_signed(data[idx].numpy()).to(device)
                losses = task.step(real, gen)
                if ema is not None:
                    ema.update(task.modules()["G"])
                wall += time.perf_counter() - t0
                row = {"iter": it + 1, **{k: round(v, 6) for k, v in losses.items()}, "wall_s": round(wall, 3)}
                if writer is None:
                    writer = csv.DictWriter(log_f, fieldnames=list(row))
                    if log_f.tell() == 0:
                        writer.writeheader()
                writer.writerow(row)
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(losses.items())[:3]})
                bar.update(1)
                if (it + 1) % cfg.checkpoint_every == 0 or stop.requested:
                    log_f.flush()
                    checkpoint(it + 1)
                if stop.requested:  # Ctrl-C: saved at a whole iteration, exactly resumable
                    raise KeyboardInterrupt
            log_f.flush()
            checkpoint(cfg.iters)
    finally:
        bar.close()
        log_f.close()
    return {"iters": cfg.iters, "wall_s": wall, "checkpoint": ckpt_path}


def export_checkpoint(ckpt_path: str, out_path: str, command: Optional[str] = None) -> dict:
    """Write the compact fp16 weights of a training checkpoint and a JSON beside them."""
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cfg = TrainConfig(**ck["config"])
    task = make_task(cfg, torch.device("cpu"))
    for k, m in task.modules().items():
        m.load_state_dict(ck["models"][k])
    if ck.get("ema_G") is not None:  # the averaged generator is the one shipped
        task.modules()["G"].load_state_dict(ck["ema_G"])
    if ck.get("mean_colour") is not None:
        task.mean_colour = ck["mean_colour"]
    payload = task.export()
    payload["box"] = ck["box"]
    payload["data"] = cfg.data
    payload["iters"] = ck["iter"]
    atomic_save(payload, out_path)
    meta = {
        "file": os.path.basename(out_path),
        "sha256": sha256_file(out_path),
        "bytes": os.path.getsize(out_path),
        "kind": payload["kind"],
        "train_config": dataclasses.asdict(cfg),
        "data": cfg.data,
        "box": ck["box"],
        "iters": ck["iter"],
        "wall_s": round(ck["wall_s"], 1),
        "command": command,
    }
    with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    return meta
