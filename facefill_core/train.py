"""``python -m facefill_core.train dcgan|ce|gfc --data SPEC --iters N --out DIR``: the command
line of :mod:`facefill_core.training` (a thin shell: parse, call, report in one line).

Writes into ``--out``: ``checkpoint.pt``, ``loss.csv``, ``samples.png``, ``command.json``;
``--resume`` continues exactly; ``--export PATH`` writes the compact fp16 weights (and a JSON
with their sha256) that ``--weights-<kind>`` of ``python -m bench.run`` takes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import torch

from facefill_core.config import TrainConfig
from facefill_core.training import TASKS, export_checkpoint, sample_z, save_grid, train

__all__ = ["main", "train", "export_checkpoint", "sample_z", "save_grid"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facefill_core.train", description=__doc__.split("\n")[0])
    p.add_argument("model", choices=list(TASKS))
    p.add_argument("--data", default="embedded")
    p.add_argument("--iters", type=int, default=TrainConfig.iters)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--ngf", type=int, default=TrainConfig.ngf)
    p.add_argument("--ndf", type=int, default=TrainConfig.ndf)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--z-dist", choices=["uniform", "normal"], default=TrainConfig.z_dist)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--train-masks",
        choices=["all", "centre", "square"],
        default=TrainConfig.train_masks,
        help="ce/gfc training holes: all four evaluation masks, the centre hole only, or random squares",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=TrainConfig.ema_decay,
        help="> 0: exponential moving average of G's weights with this decay; the exported G is the average",
    )
    p.add_argument(
        "--init-from", default=None, help="exported weights to start G (and D when present) from; fresh optimizers"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", default=None, help="after training, write compact fp16 weights here")
    p.add_argument("--no-progress", action="store_true")
    return p


def check_args(a: argparse.Namespace) -> Optional[str]:
    """Everything that can be known before training starts; the one-line error, or None."""
    import math
    import os

    for flag, v, low in (
        ("--iters", a.iters, 0),
        ("--batch-size", a.batch_size, 1),
        ("--ngf", a.ngf, 1),
        ("--ndf", a.ndf, 1),
        ("--seed", a.seed, 0),
        ("--checkpoint-every", a.checkpoint_every, 1),
        ("--threads", a.threads, 0),
    ):
        if v < low:
            return f"{flag} must be >= {low}, got {v}"
    if a.n_train is not None and a.n_train < 1:
        return f"--n-train must be positive, got {a.n_train}"
    if not math.isfinite(a.lr) or a.lr <= 0:
        return f"--lr must be a finite positive number, got {a.lr}"
    if not (0.0 <= a.ema_decay < 1.0):
        return f"--ema-decay must be in [0, 1), got {a.ema_decay}"
    if a.init_from is not None and not os.path.isfile(a.init_from):
        return f"--init-from {a.init_from}: no such file"
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {a.device}: no CUDA device is visible"
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        return f"--out {a.out} is a file, not a directory"
    ckpt = os.path.join(a.out, "checkpoint.pt")
    if a.resume:
        if not os.path.isfile(ckpt):
            return f"--resume: no checkpoint at {ckpt}"
        try:
            ck = torch.load(ckpt, map_location="cpu", weights_only=True)
            int(ck["iter"]), ck["config"], ck["models"], ck["optims"]
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same mistake
            reason = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            return f"--resume: {ckpt} is not a readable training checkpoint ({reason})"
    elif os.path.isfile(ckpt):
        return f"--out {a.out} already holds a checkpoint: add --resume to continue it, or choose another --out"
    if a.export:
        parent = os.path.dirname(os.path.abspath(a.export))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            return f"--export {a.export}: {parent} is not a writable directory"
    return None


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    problem = check_args(a)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        model=a.model,
        data=a.data,
        iters=a.iters,
        batch_size=a.batch_size,
        lr=a.lr,
        ngf=a.ngf,
        ndf=a.ndf,
        seed=a.seed,
        z_dist=a.z_dist,
        n_train=a.n_train,
        checkpoint_every=a.checkpoint_every,
        device=a.device,
        num_threads=a.threads,
        train_masks=a.train_masks,
        ema_decay=a.ema_decay,
        init_from=a.init_from,
    )
    command = ["python", "-m", "facefill_core.train", *argv]
    try:
        summary = train(cfg, a.out, resume=a.resume, progress=not a.no_progress, command=command)
    except KeyboardInterrupt:
        print(f"interrupted; checkpoint saved in {a.out} (continue with --resume)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.export:
        meta = export_checkpoint(summary["checkpoint"], a.export, " ".join(command))
        print(f"exported {a.export} ({meta['bytes']} bytes, sha256 {meta['sha256'][:12]}...)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
