"""The latent search's optimizer (facefill_core.adam): torch's Adam with a correctly rounded
square root, so that a step is the same bits on every CPU."""

import numpy as np
import pytest
import torch

from facefill_core.adam import PortableAdam, exact_sqrt


def test_exact_sqrt_is_correctly_rounded():
    """Against numpy's float32 sqrt (the IEEE instruction, correctly rounded) over 300,000
    values of three magnitudes: no value off. torch's own float32 sqrt on the CPU runs MKL's
    vector math, which misses the correctly rounded root on about a fifth of them here."""
    for scale in (1e-6, 1.0, 1e4):
        x = torch.rand(100_000, generator=torch.Generator().manual_seed(0)) * scale
        assert torch.equal(exact_sqrt(x), torch.from_numpy(np.sqrt(x.numpy())))
    assert exact_sqrt(torch.tensor([0.0, 4.0])).tolist() == [0.0, 2.0] and exact_sqrt(x).dtype == torch.float32


def test_portable_adam_follows_torch_adam():
    """Same update as torch.optim.Adam (lr 0.01, 100 steps on a badly scaled quadratic): the
    iterates agree to float32 rounding (the sqrt's last bit is the only difference), and both
    reach the minimum."""
    scales = torch.logspace(-2, 2, 50)
    a = torch.ones(50, requires_grad=True)
    b = torch.ones(50, requires_grad=True)
    pa, tb = PortableAdam([a], lr=0.01), torch.optim.Adam([b], lr=0.01)
    for _ in range(100):
        for p, opt in ((a, pa), (b, tb)):
            opt.zero_grad(set_to_none=True)
            (scales * p**2).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert float((a - 1).abs().max()) > 0.5  # it moved: 100 steps of 0.01 from 1


def test_portable_adam_bad_input():
    with pytest.raises(ValueError, match="no parameters"):
        PortableAdam([], lr=0.1)
    with pytest.raises(ValueError, match="invalid lr=0"):
        PortableAdam([torch.zeros(2, requires_grad=True)], lr=0)
