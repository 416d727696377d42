import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from facefill_core.metrics import mean_ci, psnr, ssim


def test_psnr_closed_form():
    x = torch.full((2, 3, 16, 16), 0.5)
    assert psnr(x + 0.1, x) == pytest.approx([20.0, 20.0])
    assert psnr(x + 0.01, x) == pytest.approx([40.0, 40.0])


def test_ssim_identity_and_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    assert ssim(x, x) == pytest.approx([1.0, 1.0])
    y = (x + 0.1 * torch.randn(2, 3, 64, 64, generator=g)).clamp(0, 1)
    ref = structural_similarity(
        x[0].permute(1, 2, 0).double().numpy(),
        y[0].permute(1, 2, 0).double().numpy(),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
    )
    assert ssim(y, x)[0] == pytest.approx(ref)
    assert 0.3 < ref < 0.95


def test_mean_ci():
    m, h, n = mean_ci([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3)
    assert h == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) * s / sqrt(n)


def test_metric_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) in \[0, 1\]"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"in \[0, 1\], got range"):
        psnr(torch.full((1, 3, 8, 8), -1.0), torch.zeros(1, 3, 8, 8))
