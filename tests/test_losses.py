import numpy as np
import pytest
import torch

from facefill_core.losses import context_weights, contextual_loss, landmark_distance, prior_loss


def test_context_weights_hand_computed():
    hole = torch.zeros(1, 1, 6, 6)
    hole[0, 0, 2:4, 2:4] = 1  # a 2x2 hole
    w = context_weights(hole, window=3)[0, 0]
    expected = torch.zeros(6, 6)
    for y in range(6):
        for x in range(6):
            if hole[0, 0, y, x] == 0:
                ys, xs = slice(max(0, y - 1), y + 2), slice(max(0, x - 1), x + 2)
                expected[y, x] = hole[0, 0, ys, xs].sum() / 9
    assert torch.allclose(w, expected)
    assert w[1, 1] == pytest.approx(1 / 9) and w[1, 2] == pytest.approx(2 / 9) and w[2, 2] == 0


def test_context_weights_7x7_far_pixels_zero():
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., 16:48, 16:48] = 1
    w = context_weights(hole)[0, 0]
    assert w[0, 0] == 0 and w[15, 15] == pytest.approx(9 / 49) and w[15, 30] == pytest.approx(21 / 49)
    assert w[12, 30] == 0  # 4 px from the hole: outside the 7x7 window


def test_contextual_loss_closed_form():
    y = torch.zeros(2, 3, 4, 4)
    g = torch.full((2, 3, 4, 4), 0.5)
    w = torch.full((2, 1, 4, 4), 0.25)
    assert contextual_loss(g, y, w).tolist() == [0.5 * 0.25 * 48] * 2


def test_prior_loss_safe_and_correct():
    logits = torch.tensor([0.0, 100.0, -100.0])
    v = prior_loss(logits, weight=0.003)
    assert torch.isfinite(v).all()
    assert v[0].item() == pytest.approx(0.003 * np.log(0.5))
    assert v[1].item() == pytest.approx(-0.3, rel=1e-3)  # log(1 - sigmoid(100)) = -100


def test_landmark_distance():
    ref = np.zeros((68, 2))
    pred = np.zeros((2, 68, 2))
    pred[1] += (3.0, 4.0)
    assert landmark_distance(ref, pred).tolist() == [0.0, 5.0]


def test_bad_loss_inputs():
    with pytest.raises(ValueError, match=r"hole must be \(N, 1, H, W\), got \(4, 4\)"):
        context_weights(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="odd"):
        context_weights(torch.zeros(1, 1, 4, 4), window=4)
    with pytest.raises(ValueError, match="reduction"):
        prior_loss(torch.zeros(2), reduction="max")
