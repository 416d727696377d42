"""Hole masks ``(N, 1, H, W)`` float32, 1 = hole (missing); seeded and identical across methods.

The thesis's four masks: ``centre`` (a 32x32 square, 25% of a 64x64 image), ``left`` and
``right`` halves, ``random`` (``random_fraction`` = 80% of pixels missing, as in Yeh et al.).
``pattern`` (Yeh et al.'s extra: random blobs, about 25% missing) is available as an extra.
Free-form masks ``free10`` .. ``free50``: irregular brush strokes (random walks of thick line
segments, as in DeepFill v2 and LaMa) whose hole ratio lies in ``[k%, k+10%)``: ``free10`` holds
10-20% of the pixels, ..., ``free50`` 50-60%. The random masks of image ``i`` come from a
generator seeded with ``(seed, i)``, so the mask of an image never depends on which other
images share the batch (an image's free-form buckets share their first strokes).

Masks of your own: ``folder:DIR`` (the run's mask name ``folder``), PNG files read by
:func:`folder_masks`: a pixel is a hole where the PNG's gray level is >= 128 (white = hole);
each image takes the mask whose file name stem is the image file's stem (``face01.jpg`` ->
``face01.png``), or, when DIR holds exactly one PNG, that one mask applies to every image.
"""

from __future__ import annotations

import numpy as np
import torch

from facefill_core.config import MaskConfig

FREE_BUCKETS = {f"free{k}": (k / 100, (k + 10) / 100) for k in (10, 20, 30, 40, 50)}  # [lo, hi) hole ratio
MASK_KINDS = ("centre", "left", "right", "random", "pattern", *FREE_BUCKETS)
THESIS_MASKS = ("centre", "left", "right", "random")
FOLDER = "folder"  # the run's name of --masks folder:DIR


def _per_image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def make_masks(cfg: MaskConfig, n: int, size: int = 64, start_index: int = 0) -> torch.Tensor:
    """Masks for images ``start_index .. start_index + n - 1``.

    Args:
        cfg: mask kind, random fraction and seed.
        n: number of masks.
        size: image side in pixels.

    Returns:
        ``torch.float32 (n, 1, size, size)``, 1 = hole.

    Raises:
        ValueError: unknown kind, ``n < 0`` or a fraction outside (0, 1).

    Example:
        >>> float(make_masks(MaskConfig("centre"), 1).mean())
        0.25
    """
    if cfg.kind not in MASK_KINDS:
        raise ValueError(f"mask must be one of {', '.join(MASK_KINDS)}, got {cfg.kind!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 < cfg.random_fraction < 1.0:
        raise ValueError(f"random_fraction must be in (0, 1), got {cfg.random_fraction}")
    m = np.zeros((n, 1, size, size), np.float32)
    if cfg.kind == "centre":
        q = size // 4
        m[:, :, q : size - q, q : size - q] = 1
    elif cfg.kind == "left":
        m[:, :, :, : size // 2] = 1
    elif cfg.kind == "right":
        m[:, :, :, size // 2 :] = 1
    elif cfg.kind == "random":
        k = int(round(cfg.random_fraction * size * size))
        for i in range(n):
            idx = _per_image_rng(cfg.seed, start_index + i).permutation(size * size)[:k]
            m[i, 0].reshape(-1)[idx] = 1
    elif cfg.kind in FREE_BUCKETS:
        lo, hi = FREE_BUCKETS[cfg.kind]
        for i in range(n):
            m[i, 0] = free_form_mask(_per_image_rng(cfg.seed, start_index + i), size, lo, hi, cfg.kind)
    else:  # pattern: union of random discs until ~25% is missing
        yy, xx = np.mgrid[:size, :size]
        for i in range(n):
            rng = _per_image_rng(cfg.seed, start_index + i)
            while m[i, 0].mean() < 0.25:
                cx, cy = rng.uniform(0, size, 2)
                r = rng.uniform(size / 16, size / 6)
                m[i, 0][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 1
    return torch.from_numpy(m)


def free_form_mask(rng: np.random.Generator, size: int, lo: float, hi: float, kind: str = "free") -> np.ndarray:
    """One free-form mask: brush strokes (random walks of 2-8 segments, 3-9 px wide at 64 px,
    round joints) added one at a time until the hole ratio reaches ``lo``; a stroke that would
    push it to ``hi`` or beyond is drawn again thinner and shorter.

    Args:
        rng: the image's generator (consumed deterministically).
        size: image side in pixels.
        lo, hi: the bucket, ``0 < lo < hi < 1``.

    Returns:
        ``float32 (size, size)``, 1 = hole, with ``lo <= mean < hi``.
    """
    import cv2

    canvas = np.zeros((size, size), np.uint8)
    target, limit = lo * size * size, hi * size * size
    scale = size / 64
    for attempt in range(10_000):
        shrink = 0.5 ** (attempt // 50 if canvas.sum() else 0)  # repeated overshoots: finer strokes
        trial = canvas.copy()
        x, y = rng.uniform(0, size, 2)
        width = max(1, int(round(rng.uniform(3, 9) * scale * shrink)))
        for _ in range(int(rng.integers(2, 9))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(6, 20) * scale * max(shrink, 0.25)
            nx = float(np.clip(x + length * np.cos(angle), 0, size - 1))
            ny = float(np.clip(y + length * np.sin(angle), 0, size - 1))
            cv2.line(trial, (int(round(x)), int(round(y))), (int(round(nx)), int(round(ny))), 1, width)
            cv2.circle(trial, (int(round(nx)), int(round(ny))), width // 2, 1, -1)
            x, y = nx, ny
        filled = int(trial.sum())
        if filled >= limit:
            continue
        canvas = trial
        if filled >= target:
            return canvas.astype(np.float32)
    raise RuntimeError(f"{kind}: no mask with a hole ratio in [{lo}, {hi}) after 10000 strokes")  # never seen


def folder_masks(folder: str, image_ids, size: int = 64) -> np.ndarray:
    """The masks of ``folder`` for images ``image_ids`` (see the module docstring).

    Args:
        folder: a directory of PNG masks, ``size`` x ``size``; gray level >= 128 = hole.
        image_ids: the images' file names (their stems are matched).

    Returns:
        ``uint8 (len(image_ids), size, size)``, 1 = hole.

    Raises:
        ValueError: one line: no such folder, no PNG in it, images without a mask, a mask that
            cannot be read, of another size, or a hole that covers the whole image.
    """
    import os

    from PIL import Image

    if not os.path.isdir(folder):
        raise ValueError(f"mask folder {folder} does not exist")
    pngs = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png") and not f.startswith("."))
    if not pngs:
        raise ValueError(f"mask folder {folder} holds no .png file")
    by_stem = {os.path.splitext(f)[0]: f for f in pngs}
    if len(pngs) == 1:
        files = [pngs[0]] * len(image_ids)
    else:
        stems = [os.path.splitext(os.path.basename(str(i)))[0] for i in image_ids]
        missing = [s for s in stems if s not in by_stem]
        if missing:
            raise ValueError(
                f"mask folder {folder}: no mask for {len(missing)} of {len(stems)} images "
                f"(first: {missing[0]}.png; masks are matched by file name stem, or one mask applies to all)"
            )
        files = [by_stem[s] for s in stems]
    cache: dict = {}
    for f in dict.fromkeys(files):
        try:
            with Image.open(os.path.join(folder, f)) as im:
                im.load()
                a = np.asarray(im.convert("L"))
        except Exception as e:  # noqa: BLE001 - any decoder error
            raise ValueError(f"mask {os.path.join(folder, f)} cannot be read ({type(e).__name__})") from None
        if a.shape != (size, size):
            raise ValueError(f"mask {os.path.join(folder, f)} is {a.shape[1]}x{a.shape[0]}, expected {size}x{size}")
        hole = (a >= 128).astype(np.uint8)
        if hole.all():
            raise ValueError(f"mask {os.path.join(folder, f)} is all hole: there is no context")
        cache[f] = hole
    return np.stack([cache[f] for f in files]) if files else np.zeros((0, size, size), np.uint8)


def parse_mask_spec(spec: str) -> tuple[tuple[str, ...], "str | None"]:
    """``"all"`` or a comma list of kinds and at most one ``folder:DIR`` -> (mask names, DIR).
    The folder's masks are named ``folder`` in the run.

    Raises:
        ValueError: an unknown kind, a repeated one, two folders, an empty spec.
    """
    if spec == "all":
        return THESIS_MASKS, None
    names, folder = [], None
    for s in (t.strip() for t in spec.split(",")):
        if not s:
            continue
        if s.startswith(FOLDER + ":"):
            if folder is not None:
                raise ValueError("--masks: one folder:DIR at most")
            folder = s[len(FOLDER) + 1 :]
            if not folder:
                raise ValueError("--masks folder: needs a directory after 'folder:'")
            s = FOLDER
        elif s not in MASK_KINDS:
            raise ValueError(f"unknown mask {s!r}; known: all, {', '.join(MASK_KINDS)}, folder:DIR")
        if s in names:
            raise ValueError(f"--masks: {s} is given twice")
        names.append(s)
    if not names:
        raise ValueError("--masks is empty")
    return tuple(names), folder


def parse_masks(spec: str) -> tuple[str, ...]:
    """``"all"`` or a comma list -> mask names. Raises ValueError naming an unknown one (see
    :func:`parse_mask_spec` for ``folder:DIR``)."""
    return parse_mask_spec(spec)[0]
