"""Run-directory safety: one driver per directory, and finished units that are really finished.

* :class:`RunLock`: an exclusive ``fcntl`` lock on ``RUN_DIR/.lock`` held for the whole run; a
  second driver on the same ``--out`` is refused at once (the lock dies with its process, even
  on ``kill -9``, so a stale lock never blocks a ``--resume``).
* :func:`valid_unit`: a unit counts as done only when its records file parses completely, holds
  one record per image of the unit with the fields a record must have, and its outputs file
  loads with the matching shape. Anything else (a truncated or corrupt file, a half-written
  output) is moved aside to ``RUN_DIR/corrupt/`` and the unit runs again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from typing import Optional

import numpy as np

REQUIRED_FIELDS = ("image_id", "image_index", "method", "mask", "psnr", "ssim")


class RunLockedError(RuntimeError):
    """Another live process drives this run directory."""


class RunLock:
    """Exclusive, non-blocking lock on ``run_dir/.lock`` (a context manager)."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, ".lock")
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                try:
                    with open(self.path) as f:
                        who = f.read().strip() or "another process"
                except OSError:
                    who = "another process"
                raise RunLockedError(
                    f"{os.path.dirname(self.path)} is in use by {who}: wait for it or choose another --out"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def valid_unit(run_dir: str, uid: str, n_images: int) -> bool:
    """True when ``records/<uid>.jsonl`` and ``outputs/<uid>.npy`` are complete and consistent."""
    rec = os.path.join(run_dir, "records", f"{uid}.jsonl")
    out = os.path.join(run_dir, "outputs", f"{uid}.npy")
    try:
        with open(rec) as f:
            lines = [ln for ln in f.read().split("\n") if ln.strip()]
        recs = [json.loads(ln) for ln in lines]
        if len(recs) != n_images or any(not isinstance(r, dict) for r in recs):
            return False
        if any(k not in r for r in recs for k in REQUIRED_FIELDS):
            return False
        a = np.load(out, mmap_mode="r", allow_pickle=False)
        return a.shape[0] == n_images and a.dtype == np.uint8
    except (OSError, ValueError, json.JSONDecodeError):
        return False


def quarantine(run_dir: str, uid: str) -> list[str]:
    """Move a unit's files aside to ``run_dir/corrupt/`` (never deleted: a human may look)."""
    moved = []
    dst_dir = os.path.join(run_dir, "corrupt")
    for sub, ext in (("records", ".jsonl"), ("outputs", ".npy")):
        p = os.path.join(run_dir, sub, uid + ext)
        if os.path.exists(p):
            os.makedirs(dst_dir, exist_ok=True)
            dst = os.path.join(dst_dir, uid + ext)
            k = 1
            while os.path.exists(dst):
                dst, k = os.path.join(dst_dir, f"{uid}.{k}{ext}"), k + 1
            shutil.move(p, dst)
            moved.append(dst)
    return moved


def disk_error_message(e: OSError, what: str) -> str:
    """One line for a failed write (ENOSPC and EDQUOT named as such)."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}.get(
        e.errno, e.strerror or str(e)
    )
    return f"writing {what} failed: {reason}; finished units are saved: free space and rerun with --resume"
