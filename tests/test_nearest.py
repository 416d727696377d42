import os

import numpy as np
import pytest
import torch

from facefill_core.config import MaskConfig
from facefill_core.data import FaceDataset, uint8_to_signed
from facefill_core.masks import make_masks
from facefill_core.nearest import NearestNeighbourInpainter


@pytest.fixture(scope="module")
def train():
    torch.set_num_threads(1)
    a, _ = FaceDataset("embedded").load_uint8("train", 96)
    return a


def _direct_distances(images, holes, train):
    """Squared L2 over known pixels, the slow direct way, uint8 units: (N, M)."""
    x = np.rint((images.permute(0, 2, 3, 1).numpy().astype(np.float64) + 1) * 127.5)
    k = (holes[:, 0].numpy() < 0.5)[..., None]
    t = train.astype(np.float64)
    return np.stack([(((x[i] - t) ** 2) * k[i]).sum((1, 2, 3)) for i in range(len(x))])


@pytest.mark.parametrize("kind", ["centre", "left", "random"])
def test_training_image_is_its_own_neighbour(train, kind):
    idx = [3, 40, 95]
    x = uint8_to_signed(train[idx])
    h = make_masks(MaskConfig(kind, seed=2), len(idx))
    nn = NearestNeighbourInpainter(train, chunk_size=32)  # several chunks
    out = nn.inpaint(x, h, image_indices=[0, 1, 2])
    assert nn.last_match.tolist() == idx
    assert nn.last_distance.tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(out, x)  # the hole refilled with exactly the missing pixels
    assert nn.extra() == {"nn_index": idx}


def test_matches_direct_search_and_keeps_known_pixels(train):
    test, _ = FaceDataset("embedded").load("test", 4)
    h = make_masks(MaskConfig("centre"), 4)
    nn = NearestNeighbourInpainter(train, chunk_size=40)
    out = nn.inpaint(test, h)
    d = _direct_distances(test, h, train)
    assert nn.last_match.tolist() == d.argmin(1).tolist()
    np.testing.assert_array_equal(nn.last_distance.numpy(), d.min(1))  # exact integer arithmetic
    assert torch.equal(torch.where(h > 0, 0.0, out), torch.where(h > 0, 0.0, test))
    fill = uint8_to_signed(train[nn.last_match.numpy()])
    assert torch.equal(torch.where(h > 0, out, 0.0), torch.where(h > 0, fill, 0.0))
    # the batch does not matter: one image alone gets the same neighbour
    nn.inpaint(test[2:3], h[2:3])
    assert nn.last_match.tolist() == [int(d[2].argmin())]


def test_ties_go_to_the_lower_index():
    train = np.zeros((3, 8, 8, 3), np.uint8)
    train[0, :4] = 200  # differs from the others only in the top half (the hole)
    nn = NearestNeighbourInpainter(train, chunk_size=1)
    h = torch.zeros(1, 1, 8, 8)
    h[..., :4, :] = 1
    nn.inpaint(torch.full((1, 3, 8, 8), -1.0), h)
    assert nn.last_match.tolist() == [0] and nn.last_distance.tolist() == [0.0]


def test_bad_input():
    with pytest.raises(TypeError, match="train_images must be uint8 .* got dtype torch.float32"):
        NearestNeighbourInpainter(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"train_images must be uint8 \(M, H, W, 3\) with M >= 1, got \(2, 3, 8, 8\)"):
        NearestNeighbourInpainter(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        NearestNeighbourInpainter(np.zeros((2, 8, 8, 3), np.uint8), chunk_size=0)
    nn = NearestNeighbourInpainter(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"images are \(16, 16\) but the training images are \(8, 8\)"):
        nn.inpaint(torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16).index_fill(2, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"holes must be \(N, 1, H, W\)"):
        nn.inpaint(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8))


def test_from_dataset_uses_the_train_split(train):
    nn = NearestNeighbourInpainter.from_dataset("embedded", n_train=8)
    assert tuple(nn.train.shape) == (8, 3, 64, 64) and nn.train.dtype == torch.uint8
    assert torch.equal(nn.train.permute(0, 2, 3, 1), torch.from_numpy(train[:8]))


def test_harness_runs_nn_with_the_drivers_train_split(tmp_path, train):
    """The worker builds nn from the train split the driver resolved once (WorkerInputs)."""
    from bench.harness.config import BenchConfig
    from bench.harness.workers import Unit, UnitRunner, WorkerInputs
    from facefill_core.data import load_test_set
    from facefill_core.landmarks import LandmarkPredictor

    ts = load_test_set("embedded", 2)
    points = LandmarkPredictor(num_threads=1).predict(ts.images, box=ts.box, rounded=False)
    os.makedirs(tmp_path / "masks")
    holes = make_masks(MaskConfig("centre"), 2)
    np.save(tmp_path / "masks" / "centre.npy", holes[:, 0].numpy().astype(np.uint8))
    cfg = BenchConfig(methods=("nn",), masks=("centre",), n_images=2, out=str(tmp_path))
    runner = UnitRunner(cfg, str(tmp_path), WorkerInputs(ts, points, train), "cpu", 1)
    result = runner.run(Unit("nn", "centre", 0, 2))
    recs = result["records"]
    assert [r["method"] for r in recs] == ["nn", "nn"] and all(r["weights_sha256"] is None for r in recs)
    assert all(10 < r["psnr"] < 40 and r["scale"] is not None for r in recs)
    want = NearestNeighbourInpainter(train).inpaint(ts.tensors(), holes)
    np.testing.assert_array_equal(result["outputs"], np.rint((want.permute(0, 2, 3, 1).numpy() + 1) * 127.5))
    assert "trajectory" not in result


def test_leave_one_out_when_evaluated_images_are_training_images(train):
    idx = [3, 40]
    x = uint8_to_signed(train[idx])
    h = make_masks(MaskConfig("centre"), 2)
    nn = NearestNeighbourInpainter(train, chunk_size=16, exclude={7: 3, 8: 40})  # image 7 is row 3, ...
    nn.inpaint(x, h, image_indices=[7, 8])
    d = _direct_distances(x, h, train)
    d[0, 3] = d[1, 40] = np.inf
    assert nn.last_match.tolist() == d.argmin(1).tolist() and 0 not in nn.last_distance.tolist()
    nn.inpaint(x, h, image_indices=[0, 1])  # other indices: nothing left out, each finds itself
    assert nn.last_match.tolist() == idx
    with pytest.raises(ValueError, match=r"exclude rows must be in \[0, 95\], got \[96\]"):
        NearestNeighbourInpainter(train, exclude={0: 96})
    with pytest.raises(ValueError, match="image_indices must have 2 entries, got 1"):
        nn.inpaint(x, h, image_indices=[0])


def test_folder_data_nn_never_fills_an_image_with_itself(tmp_path):
    """folder:PATH is evaluated and searched whole: the driver maps each evaluated image to its
    own training row and nn leaves it out."""
    from PIL import Image

    from bench.harness.config import BenchConfig
    from bench.harness.workers import Unit, UnitRunner, resolve_inputs

    imgs, _ = FaceDataset("embedded").load_uint8("test", 6)
    os.makedirs(tmp_path / "faces")
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(tmp_path / "faces" / f"f{i}.png")
    cfg = BenchConfig(
        methods=("nn",), masks=("centre",), n_images=6, data=f"folder:{tmp_path / 'faces'}", out=str(tmp_path / "r")
    )
    inputs = resolve_inputs(cfg)
    assert inputs.train_exclude == {i: i for i in range(6)} and inputs.train_images.shape == (6, 64, 64, 3)
    runner = UnitRunner(cfg, str(tmp_path / "r"), inputs, "cpu", 1)
    result = runner.run(Unit("nn", "centre", 0, 6))
    assert all(np.isfinite(r["psnr"]) and r["psnr"] < 40 for r in result["records"])
    assert all(m != i for i, m in enumerate(runner._inpainter("nn").last_match.tolist()))
