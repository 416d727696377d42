"""Poisson blending of a filled hole into the known pixels (Perez et al., "Poisson image
editing", 2003). Images ``(N, 3, H, W)`` in [-1, 1]; holes ``(N, 1, H, W)``, 1 = missing."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import splu
from torch import Tensor


def poisson_blend(images: Tensor, generated: Tensor, holes: Tensor) -> Tensor:
    """Inside the hole, solve for pixels whose Laplacian equals ``generated``'s with the known
    pixels of ``images`` as the boundary (scipy's sparse LU). Known pixels stay exactly the
    input's.

    Args:
        images, generated: ``(B, 3, H, W)`` in [-1, 1]; holes: ``(B, 1, H, W)``.

    Returns:
        ``(B, 3, H, W)`` on the CPU, clipped to [-1, 1].

    Example:
        >>> ramp = torch.linspace(-0.5, 0.5, 8).view(1, 1, 1, 8).expand(1, 3, 8, 8).contiguous()
        >>> h = torch.zeros(1, 1, 8, 8); h[..., 2:6, 2:6] = 1
        >>> bool(torch.allclose(poisson_blend(ramp, ramp, h), ramp, atol=1e-5))
        True
    """
    out = images.detach().cpu().clone()
    src = generated.detach().cpu().double().numpy()
    tgt = images.detach().cpu().double().numpy()
    hh = holes.detach().cpu().numpy()[:, 0] > 0.5
    _, _, h, w = images.shape
    for i in range(images.shape[0]):
        ys, xs = np.nonzero(hh[i])
        n = len(ys)
        if n == 0:
            continue
        index = -np.ones((h, w), np.int64)
        index[ys, xs] = np.arange(n)
        rows, cols, vals = [], [], []
        rhs = np.zeros((n, 3))
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            ny, nx = ys + dy, xs + dx
            inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            p = np.nonzero(inside)[0]
            qy, qx = ny[inside], nx[inside]
            rows.append(p)
            cols.append(p)
            vals.append(np.ones(len(p)))
            rhs[p] += (src[i][:, ys[p], xs[p]] - src[i][:, qy, qx]).T
            q = index[qy, qx]
            in_hole = q >= 0
            rows.append(p[in_hole])
            cols.append(q[in_hole])
            vals.append(-np.ones(int(in_hole.sum())))
            rhs[p[~in_hole]] += tgt[i][:, qy[~in_hole], qx[~in_hole]].T
        a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        sol = splu(a).solve(rhs)
        out[i][:, ys, xs] = torch.from_numpy(np.clip(sol.T, -1, 1)).float()
    return out
