import numpy as np
import pytest
import torch
from PIL import Image

from facefill_core.data import (
    EMBEDDED_BOX,
    FaceDataset,
    calibrate_box,
    load_face_file,
    parse_spec,
    to_signed_range,
    to_unit_range,
)


@pytest.fixture(scope="module")
def emb():
    return FaceDataset("embedded")


def test_embedded_shapes_range_determinism(emb):
    x, ids = emb.load("test", 4)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.2
    assert ids == [f"emb-test-{i:05d}" for i in range(4)]
    a, _ = emb.load_uint8("test", 4)
    b, _ = FaceDataset("embedded").load_uint8("test", 4)
    assert a.tobytes() == b.tobytes()
    # an image does not depend on which others are rendered with it
    c, _ = emb.load_uint8("test", 2, start=2)
    assert c.tobytes() == a[2:].tobytes()


def test_embedded_faces_do_not_depend_on_the_callers_torch_settings():
    """The embedded faces are data: rendered on native convolutions with one thread whatever the
    caller set, and the caller's settings come back. With oneDNN (which picks its kernels per
    CPU) a few pixels of them differ: measured on an AVX-512 EPYC, 31 of the first 256 faces."""
    from facefill_core.data import embedded_generator, render_embedded
    from facefill_core.imaging import to_uint8_nhwc

    seeds = range(128)
    saved = torch.backends.mkldnn.enabled, torch.get_num_threads()
    try:
        torch.backends.mkldnn.enabled = True
        torch.set_num_threads(2)
        a = render_embedded(seeds)
        assert torch.backends.mkldnn.enabled and torch.get_num_threads() == 2  # put back
        z = torch.stack([torch.randn(100, generator=torch.Generator().manual_seed(s)) for s in seeds])
        with torch.no_grad():
            onednn = to_uint8_nhwc(embedded_generator()(z))  # what rendering under the caller's settings gives
        torch.backends.mkldnn.enabled = False
        torch.set_num_threads(1)
        b = render_embedded(seeds)
    finally:
        torch.backends.mkldnn.enabled, threads = saved
        torch.set_num_threads(threads)
    assert np.array_equal(a, b)
    if torch.backends.mkldnn.is_available():  # the difference the rule removes is real here
        assert not np.array_equal(onednn, b)


def test_embedded_train_test_disjoint(emb):
    assert not set(emb.train_ids) & set(emb.test_ids)
    tr, _ = emb.load_uint8("train", 16)
    te, _ = emb.load_uint8("test", 16)
    assert not {t.tobytes() for t in tr} & {t.tobytes() for t in te}


def test_range_conversions():
    x = torch.tensor([-1.0, 0.0, 1.0])
    assert to_unit_range(x).tolist() == [0.0, 0.5, 1.0]
    assert torch.equal(to_signed_range(to_unit_range(x)), x)


def test_embedded_box_calibration(emb):
    imgs, _ = emb.load_uint8("train", 64)
    box, found = calibrate_box(imgs)
    assert found >= 32
    assert all(abs(a - b) <= 3 for a, b in zip(box, EMBEDDED_BOX))
    assert FaceDataset("embedded", box=(1, 2, 60, 61)).box == (1, 2, 60, 61)


def test_celeba_crop(tmp_path):
    # a 178x218 image whose centre 108x108 is white and the rest black
    a = np.zeros((218, 178, 3), np.uint8)
    a[55:163, 35:143] = 255
    Image.fromarray(a).save(tmp_path / "000001.jpg", quality=100)
    Image.fromarray(a).save(tmp_path / "000002.jpg", quality=100)
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    ds = FaceDataset(f"celeba:{tmp_path}")
    assert ds.train_ids == ["000001.jpg"] and ds.test_ids == ["000002.jpg"]
    x, _ = ds.load_uint8("test")
    assert x.shape == (1, 64, 64, 3) and x.min() >= 240  # the crop is all white


def test_folder_gray_rgba_corrupt(tmp_path):
    Image.fromarray(np.full((80, 100, 3), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((50, 50), 100, np.uint8)).save(tmp_path / "b.png")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    (tmp_path / "d.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    ds = FaceDataset(f"folder-split:{tmp_path}")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\) .*d\.jpg"):
        x, ids = ds.load_uint8("train")
    assert ids == ["b.png", "c.png"]  # folder-split: a.png is the every-10th test image
    assert x.shape == (2, 64, 64, 3)
    assert (x[0] == 100).all() and (x[1][..., 0] == 255).all() and (x[1][..., 1] == 0).all()
    assert load_face_file(str(tmp_path / "a.png")).shape == (64, 64, 3)


def test_bad_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: /no/such/dir"):
        FaceDataset("folder:/no/such/dir")
    with pytest.raises(ValueError, match="no image files"):
        FaceDataset(f"folder:{tmp_path}")
    (tmp_path / "x.png").write_bytes(b"junk")
    ds = FaceDataset(f"folder:{tmp_path}")
    with (
        pytest.raises(ValueError, match=r"no usable image in .*1 file\(s\) failed to decode, 0 smaller than 16x16 px"),
        pytest.warns(UserWarning),
    ):
        ds.load_uint8("test")
    with pytest.raises(ValueError, match="embedded, celeba:PATH, folder:PATH or folder-split:PATH"):
        parse_spec("imagenet")
    with pytest.raises(ValueError, match="needs a path"):
        parse_spec("celeba:")


def _faces_folder(path, n):
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path / f"face{i:02d}.png")


def test_folder_is_evaluated_whole_and_folder_split_holds_out_every_10th(tmp_path):
    _faces_folder(tmp_path, 11)
    whole = FaceDataset(f"folder:{tmp_path}")
    assert len(whole.test_ids) == 11 and whole.train_ids == whole.test_ids
    split = FaceDataset(f"folder-split:{tmp_path}")
    assert split.test_ids == ["face00.png", "face10.png"] and len(split.train_ids) == 9
    assert not set(split.test_ids) & set(split.train_ids)


def test_train_test_overlap_counts_seen_images(tmp_path):
    from facefill_core.data import train_test_overlap

    _faces_folder(tmp_path, 11)
    ids = FaceDataset(f"folder:{tmp_path}").test_ids
    assert train_test_overlap(f"folder:{tmp_path}", f"folder:{tmp_path}", ids) == 11
    assert train_test_overlap(f"folder-split:{tmp_path}", f"folder-split:{tmp_path}", ["face00.png", "face10.png"]) == 0
    assert train_test_overlap(f"folder-split:{tmp_path}", f"folder:{tmp_path}", ids) == 9
    assert train_test_overlap("embedded", f"folder:{tmp_path}", ids) == 0


def test_bench_run_on_a_folder_of_11_faces_evaluates_all_11(tmp_path, capsys):
    import json

    import torch

    from bench.harness.run import main
    from facefill_core.pretrained import shipped_path

    faces = tmp_path / "faces"
    faces.mkdir()
    _faces_folder(faces, 11)
    # CE weights that say they were trained on this folder: the run must warn they saw the images
    payload = torch.load(shipped_path("ce"), weights_only=True)
    payload["data"] = f"folder:{faces}"
    torch.save(payload, tmp_path / "ce_folder.pt")
    out = tmp_path / "run"
    args = ["--no-progress", "--workers", "0", "--methods", "mean,ce", "--masks", "centre", "--box", "8,16,55,63"]
    rc = main(
        [
            *args,
            "--data",
            f"folder:{faces}",
            "--n-images",
            "11",
            "--weights-ce",
            str(tmp_path / "ce_folder.pt"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "11 of the 11 evaluated images are training images of the ce weights" in err
    recs = [json.loads(line) for line in open(out / "records.jsonl")]
    assert sorted({r["image_id"] for r in recs}) == [f"face{i:02d}.png" for i in range(11)]
