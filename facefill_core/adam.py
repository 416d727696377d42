"""Adam whose every step is the same bits on every CPU: the latent search's optimizer.

It is ``torch.optim.Adam``'s update (Kingma and Ba; no weight decay, no AMSGrad, torch's order
of operations) with one change: the square root of the second moment is computed in float64 and
rounded to float32, which is the correctly rounded float32 square root. On the CPU torch's
float32 ``sqrt`` runs MKL's vector math library, which is within an ulp but not correctly
rounded (19,530 of 100,000 values off the correctly rounded root on an AMD EPYC with AVX-512),
and how it gets there depends on the processor's code path and approximate instructions, which
differ between CPU vendors and generations (QEMU's emulated Zen 3 gives 19,406 other values).
Every other operation of the step is a single IEEE operation. A different last bit of one latent
after a hundred steps can be a different winning candidate, so the search uses this.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor


def exact_sqrt(x: Tensor) -> Tensor:
    """The correctly rounded square root of a float32 tensor, on any device: float64's square
    root (IEEE, exact to half an ulp of float64) rounded once to float32."""
    return x.double().sqrt().to(x.dtype)


class PortableAdam:
    """``torch.optim.Adam(params, lr, betas, eps)`` with :func:`exact_sqrt` (the subset the
    latent search uses: ``zero_grad(set_to_none=True)`` and ``step()``).

    Args:
        params: the tensors to optimise (leaf tensors with ``requires_grad``).
        lr, betas, eps: as ``torch.optim.Adam``.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("PortableAdam got no parameters")
        if lr <= 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"PortableAdam: invalid lr={lr}, betas={betas} or eps={eps}")
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.t = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**self.t
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.t)
        step_size = self.lr / bias_correction1
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (exact_sqrt(v) / bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)
