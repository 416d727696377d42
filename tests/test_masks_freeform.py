"""Free-form brush-stroke masks and masks from a folder (facefill_core/masks.py)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from facefill_core.config import MaskConfig
from facefill_core.masks import FREE_BUCKETS, folder_masks, make_masks, parse_mask_spec


@pytest.mark.parametrize("kind", list(FREE_BUCKETS))
def test_free_form_ratio_in_its_bucket_for_every_mask(kind):
    lo, hi = FREE_BUCKETS[kind]
    m = make_masks(MaskConfig(kind, seed=3), 40)
    assert m.shape == (40, 1, 64, 64) and m.dtype == torch.float32
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}
    ratio = m.mean(dim=(1, 2, 3))
    assert bool((ratio >= lo).all()) and bool((ratio < hi).all()), (kind, ratio.min(), ratio.max())


def test_free_form_deterministic_and_batch_independent():
    a = make_masks(MaskConfig("free30", seed=5), 6)
    assert torch.equal(a, make_masks(MaskConfig("free30", seed=5), 6))
    # image 4's mask is the same whether made in a batch from 0 or alone
    assert torch.equal(a[4:5], make_masks(MaskConfig("free30", seed=5), 1, start_index=4))
    assert not torch.equal(a, make_masks(MaskConfig("free30", seed=6), 6))
    assert not torch.equal(a[0], a[1])


def test_free_form_masks_are_irregular_not_boxes():
    m = make_masks(MaskConfig("free20", seed=0), 8)[:, 0].numpy()
    for h in m:  # a stroke mask fills well under its bounding box (a square hole fills all of it)
        ys, xs = np.nonzero(h)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert h.sum() / box < 0.8


def test_parse_mask_spec():
    assert parse_mask_spec("centre,free10,folder:/x/y") == (("centre", "free10", "folder"), "/x/y")
    assert parse_mask_spec("all") == (("centre", "left", "right", "random"), None)
    with pytest.raises(ValueError, match="unknown mask 'free60'"):
        parse_mask_spec("free60")
    with pytest.raises(ValueError, match="one folder:DIR at most"):
        parse_mask_spec("folder:a,folder:b")
    with pytest.raises(ValueError, match="free10 is given twice"):
        parse_mask_spec("free10,free10")


def _png(path, a):
    Image.fromarray(a).save(path)


def test_folder_masks_by_stem_and_one_for_all(tmp_path):
    a = np.zeros((64, 64), np.uint8)
    a[10:20, 10:30] = 255
    b = np.zeros((64, 64), np.uint8)
    b[:, 40:] = 200  # >= 128: hole
    b[0, 0] = 100  # < 128: known
    _png(tmp_path / "x.png", a)
    _png(tmp_path / "y.png", b)
    m = folder_masks(str(tmp_path), ["y.jpg", "x.png"])
    assert m.dtype == np.uint8 and m.shape == (2, 64, 64)
    assert m[0].sum() == 64 * 24 and m[1].sum() == 200 and m[0, 0, 0] == 0
    one = tmp_path / "one"
    one.mkdir()
    _png(one / "any.png", a)
    m = folder_masks(str(one), ["p.jpg", "q.jpg", "r.jpg"])
    assert m.shape == (3, 64, 64) and all(int(h.sum()) == 200 for h in m)


def test_folder_masks_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        folder_masks(str(tmp_path / "none"), ["a.png"])
    with pytest.raises(ValueError, match="holds no .png"):
        folder_masks(str(tmp_path), ["a.png"])
    z = np.zeros((64, 64), np.uint8)
    z[:8] = 255
    _png(tmp_path / "a.png", z)
    _png(tmp_path / "b.png", z)
    with pytest.raises(ValueError, match=r"no mask for 1 of 2 images \(first: c.png; masks are matched by file name"):
        folder_masks(str(tmp_path), ["a.jpg", "c.jpg"])
    _png(tmp_path / "c.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="c.png is 32x32, expected 64x64"):
        folder_masks(str(tmp_path), ["c.jpg"])
    _png(tmp_path / "c.png", np.full((64, 64), 255, np.uint8))
    with pytest.raises(ValueError, match="c.png is all hole"):
        folder_masks(str(tmp_path), ["c.jpg"])
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="c.png cannot be read"):
        folder_masks(str(tmp_path), ["c.jpg"])


def test_cli_folder_mask_error_is_one_line(tmp_path, capsys, monkeypatch):
    from bench.harness.run import main

    monkeypatch.chdir(tmp_path)
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(2):
        _png(faces / f"f{i}.png", np.full((64, 64, 3), 100 + i, np.uint8))
    masks = tmp_path / "masks"
    masks.mkdir()
    z = np.zeros((64, 64), np.uint8)
    _png(masks / "f0.png", z)
    _png(masks / "other.png", z)
    rc = main(["--data", f"folder:{faces}", "--masks", f"folder:{masks}", "--methods", "mean", "--box", "8,16,55,63"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "--masks folder:" in err and "no mask for 1 of 2 images (first: f1.png" in err
    assert not os.path.exists(tmp_path / "results")
