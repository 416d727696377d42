"""Every kind of bad invocation of ``python -m bench.run``: one line on stderr, exit status 2,
nothing created (no run directory left to block the corrected command)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bench.harness.run import main
from facefill_core.fileio import sha256_file

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "facefill_core", "weights")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    garbage = d / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    # shipped DCGAN weights with one byte flipped, the JSON (sha256) beside them unchanged
    flipped = d / "flipped.pt"
    shutil.copyfile(os.path.join(WEIGHTS, "dcgan_embedded.pt"), flipped)
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    shutil.copyfile(os.path.join(WEIGHTS, "dcgan_embedded.json"), d / "flipped.json")
    meta = json.loads((d / "flipped.json").read_text())
    meta["file"] = "flipped.pt"
    (d / "flipped.json").write_text(json.dumps(meta))
    empty = d / "empty_folder"
    empty.mkdir()
    # data that opens but yields nothing usable: every file unreadable, every image too small,
    # a CelebA folder (its partition list) without any image
    junk = d / "junk_folder"
    junk.mkdir()
    for i in range(3):
        (junk / f"face{i}.png").write_bytes(b"not an image\n")
    small = d / "small_folder"
    small.mkdir()
    for i in range(3):
        Image.fromarray(np.full((12, 15, 3), 90, np.uint8)).save(small / f"face{i}.png")
    celeba = d / "celeba_no_images"
    celeba.mkdir()
    (celeba / "list_eval_partition.txt").write_text("000001.jpg 2\n")
    # shipped DCGAN weights re-saved (with their own sha256 record) as trained on z ~ N(0, I)
    # and with one layer of the wrong shape
    ship = torch.load(os.path.join(WEIGHTS, "dcgan_embedded.pt"), weights_only=True)
    for name, edit in (("normal_z", _z_normal), ("wrong_shape", _wrong_shape)):
        torch.save(edit(dict(ship)), d / f"{name}.pt")
        (d / f"{name}.json").write_text(json.dumps({"sha256": sha256_file(str(d / f"{name}.pt"))}))
    a_file = d / "a_file.txt"
    a_file.write_text("x")
    return {
        "garbage": str(garbage),
        "flipped": str(flipped),
        "empty": str(empty),
        "junk": str(junk),
        "small": str(small),
        "celeba": str(celeba),
        "normal_z": str(d / "normal_z.pt"),
        "wrong_shape": str(d / "wrong_shape.pt"),
        "file": str(a_file),
        "dir": d,
    }


def _z_normal(p):
    return {**p, "config": {**p["config"], "z_dist": "normal"}}


def _wrong_shape(p):
    g = dict(p["G"])
    g["main.0.weight"] = g["main.0.weight"][:, :128].clone()
    return {**p, "G": g}


DCGAN = os.path.join(WEIGHTS, "dcgan_embedded.pt")
CASES = {
    "unknown-mask": (["--masks", "centre,oval"], "oval"),
    "unknown-method": (["--methods", "si,magic"], "magic"),
    "empty-methods": (["--methods", ","], "--methods"),
    "bad-data-spec": (["--data", "imagenet:/x"], "--data"),
    "missing-folder": (["--data", "folder:/no/such/folder"], "/no/such/folder"),
    "empty-folder": (["--data", "folder:{empty}"], "--data"),
    "folder-all-unreadable": (
        ["--data", "folder:{junk}", "--n-images", "3"],
        "--data: no usable image in {junk}: 3 file(s) failed to decode, 0 smaller than 16x16 px",
    ),
    "folder-all-too-small": (
        ["--data", "folder:{small}", "--n-images", "3"],
        "--data: no usable image in {small}: 0 file(s) failed to decode, 3 smaller than 16x16 px",
    ),
    "celeba-without-images": (["--data", "celeba:{celeba}"], "--data: no image files (png/jpg/jpeg/bmp) in {celeba}"),
    "n-images-zero": (["--n-images", "0"], "--n-images"),
    "n-images-too-many": (["--n-images", "100000"], "--n-images"),
    "n-images-not-int": (["--n-images", "eight"], "--n-images"),
    "iters-negative": (["--iters", "-1"], "--iters"),
    "candidates-zero": (["--candidates", "0"], "--candidates"),
    "lambda-nan": (["--lambda", "nan"], "--lambda"),
    "lambda-inf": (["--lambda", "inf"], "--lambda"),
    "lambda-negative": (["--lambda", "-1"], "--lambda"),
    "box-inverted": (["--box", "10,10,5,5"], "--box"),
    "box-three-values": (["--box", "1,2,3"], "--box"),
    "box-not-int": (["--box", "a,b,c,d"], "--box"),
    "box-outside-image": (["--box", "100,100,120,120"], "--box"),
    "weights-missing": (["--weights-dcgan", "/no/such.pt"], "--weights-dcgan"),
    "weights-not-a-checkpoint": (["--weights-dcgan", "{garbage}"], "--weights-dcgan"),
    "weights-wrong-kind": (
        ["--weights-ce", DCGAN, "--methods", "ce"],
        f"--weights-ce {DCGAN}: {DCGAN} holds 'dcgan' weights, expected 'ce'",
    ),
    "weights-sha-mismatch": (
        ["--weights-dcgan", "{flipped}", "--methods", "si"],
        "--weights-dcgan {flipped}: sha256 mismatch for {flipped}: recorded ",
    ),
    "weights-z-distribution": (
        ["--weights-dcgan", "{normal_z}", "--methods", "si"],
        "were trained with z ~ normal, but the search draws z ~ uniform",
    ),
    "weights-wrong-shape": (
        ["--weights-dcgan", "{wrong_shape}", "--methods", "si"],
        "size mismatch for main.0.weight",
    ),
    "gpus-negative": (["--gpus", "-1"], "--gpus"),
    "gpus-not-visible": (["--gpus", "64"], "--gpus"),
    "workers-negative": (["--workers", "-2"], "--workers"),
    "shard-size-zero": (["--shard-size", "0"], "--shard-size"),
    "seed-negative": (["--seed", "-5"], "--seed"),
    "unknown-preset": (["--preset", "huge"], "--preset"),
    "unknown-flag": (["--colour", "red"], "--colour"),
    "out-is-a-file": (["--out", "{file}"], "--out"),
    "resume-nothing": (["--resume", "--out", "{dir}/never_ran"], "--resume"),
    "backend-unknown": (["--landmark-backend", "gpu"], "--landmark-backend"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_invocation_is_one_line_exit_2_and_creates_nothing(name, bad_files, tmp_path, capsys):
    args, needle = CASES[name]
    args = [a.format(**bad_files) for a in args]
    needle = needle.format(**bad_files)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    before = set(os.listdir(bad_files["dir"]))
    rc = main(["--no-progress", "--workers", "0", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "run").exists()
    assert set(os.listdir(bad_files["dir"])) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["dcgan", "--out", "{file}"], "is a file"),
        (["dcgan", "--out", "{dir}/nothing_here", "--resume"], "no checkpoint"),
        (["dcgan", "--out", "{corrupt_dir}", "--resume"], "not a readable training checkpoint"),
        (["dcgan", "--out", "{dir}/x", "--lr", "nan"], "--lr"),
        (["dcgan", "--out", "{dir}/x", "--iters", "-1"], "--iters"),
        (["dcgan", "--out", "{dir}/x", "--batch-size", "0"], "--batch-size"),
        (["dcgan", "--out", "{dir}/x", "--export", "/no/such/dir/w.pt"], "--export"),
    ],
)
def test_train_cli_bad_input_is_one_line(args, needle, bad_files, capsys):
    from facefill_core.train import main as train_main

    corrupt = bad_files["dir"] / "corrupt_run"
    corrupt.mkdir(exist_ok=True)
    (corrupt / "checkpoint.pt").write_bytes(b"\x80\x02truncated")
    args = [a.format(corrupt_dir=str(corrupt), **bad_files) for a in args]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert not (bad_files["dir"] / "x").exists()


def test_report_bad_run_dirs_are_one_line(tmp_path, capsys):
    from bench.report.tables import main as report_main

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad" / "records"
    bad.mkdir(parents=True)
    (bad / "u.jsonl").write_text('{"psnr": 1')
    for d, needle in (
        (tmp_path / "missing", "not a run directory"),
        (empty, "holds no records"),
        (bad.parent, "cannot be read"),
    ):
        assert report_main([str(d)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
