import numpy as np
import pytest
import torch

from facefill_core.data import FaceDataset
from facefill_core.landmarks import to_uint8_nhwc
from facefill_core.landmarks_torch import TorchShapePredictor

BOX = (8, 16, 55, 63)


@pytest.fixture(scope="module")
def tsp(predictor):
    return TorchShapePredictor(predictor.export())


@pytest.fixture(scope="module")
def faces():
    x, _ = FaceDataset("embedded").load("test", 16)
    return x


def test_export_round_trip_counts(tsp, predictor):
    e = predictor.export()
    assert tsp.num_cascades == len(e["leaf_values"]) == 15
    assert tsp.depth == 4
    assert torch.equal(tsp.leaves0.reshape(500, 16, 136), torch.from_numpy(e["leaf_values"][0]))
    assert tsp.initial_shape.shape == (68, 2)


def test_parity_with_extension_on_generated_and_real(tsp, predictor, faces, real_faces):
    for imgs, box in ((faces, BOX), (real_faces, None)):
        u8 = to_uint8_nhwc(imgs) if imgs.dtype != np.uint8 else imgs
        ref = predictor.predict(u8, box=box, rounded=False)
        got = tsp(torch.from_numpy(u8), box=box).numpy()
        d = np.abs(got - ref)
        assert d.mean() <= 0.05, d.mean()
        assert np.median(d) < 1e-3


def test_float_and_uint8_inputs_agree(tsp, faces):
    a = tsp(faces, box=BOX)
    b = tsp(torch.from_numpy(to_uint8_nhwc(faces)), box=BOX)
    assert torch.equal(a, b)


def test_soft_gradients_flow_and_are_finite(tsp, faces):
    x = faces[:2].clone().requires_grad_(True)
    p = tsp(x, box=BOX, soft=True, temperature=1.0)
    p.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_soft_tends_to_hard_as_temperature_falls(tsp, faces):
    gray = faces[:8].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    gray = torch.round((gray + 1) * 127.5) / 127.5 - 1  # r = g = b on integer levels
    hard = tsp(gray, box=BOX)
    errs = [
        (tsp(gray, box=BOX, soft=True, temperature=t, sampling="nearest") - hard).abs().mean().item()
        for t in (1.0, 1e-2, 1e-4, 1e-6)
    ]
    assert errs == sorted(errs, reverse=True), errs
    assert errs[-1] < 0.01, errs


def test_device_follows_input(tsp, faces):
    assert tsp(faces[:1], box=BOX).device == faces.device
    if torch.cuda.is_available():
        g = TorchShapePredictor().cuda()
        assert g(faces[:1].cuda(), box=BOX).device.type == "cuda"


def test_bad_inputs(tsp):
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\)"):
        tsp(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tsp(torch.zeros(1, 3, 64, 64), soft=True, temperature=0)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\) with N = 1"):
        tsp(torch.zeros(1, 3, 64, 64), boxes=torch.zeros(2, 4))
