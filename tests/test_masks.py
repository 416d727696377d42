import pytest
import torch

from facefill_core.config import MaskConfig
from facefill_core.masks import make_masks, parse_masks


@pytest.mark.parametrize("kind,frac", [("centre", 0.25), ("left", 0.5), ("right", 0.5), ("random", 0.8)])
def test_hole_fractions_exact(kind, frac):
    m = make_masks(MaskConfig(kind), 3)
    assert m.shape == (3, 1, 64, 64) and m.dtype == torch.float32
    assert m.flatten(1).sum(1).tolist() == [round(frac * 4096)] * 3


def test_centre_is_32x32_square():
    m = make_masks(MaskConfig("centre"), 1)[0, 0]
    assert m[16:48, 16:48].all() and m.sum() == 32 * 32


def test_left_right_are_complements():
    assert torch.equal(make_masks(MaskConfig("left"), 1) + make_masks(MaskConfig("right"), 1), torch.ones(1, 1, 64, 64))


def test_random_seeded_and_batch_independent():
    a = make_masks(MaskConfig("random", seed=3), 4)
    b = make_masks(MaskConfig("random", seed=3), 2, start_index=2)
    assert torch.equal(a[2:], b)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, make_masks(MaskConfig("random", seed=4), 4))


def test_pattern_about_quarter():
    m = make_masks(MaskConfig("pattern"), 4)
    assert ((m.flatten(1).mean(1) >= 0.25) & (m.flatten(1).mean(1) < 0.45)).all()


def test_bad_masks():
    with pytest.raises(ValueError, match="mask must be one of .* got 'square'"):
        make_masks(MaskConfig("square"), 1)
    with pytest.raises(ValueError, match="random_fraction"):
        make_masks(MaskConfig("random", random_fraction=1.5), 1)
    with pytest.raises(ValueError, match="unknown mask 'top'"):
        parse_masks("centre,top")
    assert parse_masks("all") == ("centre", "left", "right", "random")
