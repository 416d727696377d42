"""The kit (bench/harness/export.py) and scoring completions made elsewhere (bench/harness/score.py): export ->
external completions -> score -> one table with the built-in methods; the exact round trip of a
built-in method's PNG completions; every validation error one line, exit 2, nothing written."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from bench.harness.export import main as export_main
from bench.harness.run import main as run_main
from bench.harness.score import main as score_main

N = 3
MASKS = "centre,free20"


def _files(root) -> dict:
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def kit_and_run(tmp_path_factory):
    """A kit and the harness's own run (mean, telea) of the same images and masks."""
    root = tmp_path_factory.mktemp("kit")
    kit, run = str(root / "kit"), str(root / "run")
    assert export_main(["--out", kit, "--n-images", str(N), "--masks", MASKS, "--seed", "1"]) == 0
    args = ["--methods", "mean,telea", "--masks", MASKS, "--n-images", str(N), "--seed", "1"]
    assert run_main(args + ["--workers", "0", "--no-progress", "--out", run]) == 0
    return kit, run


def test_kit_contents(kit_and_run):
    kit, run = kit_and_run
    man = json.load(open(os.path.join(kit, "manifest.json")))
    assert man["format"] == "facefill-kit/1" and man["n_images"] == N and man["hole_value"] == 255
    assert man["box"] == [8, 16, 55, 63] and man["seed"] == 1
    assert man["masks"] == {"centre": {"kind": "centre", "seed": 1}, "free20": {"kind": "free20", "seed": 1}}
    assert [e["id"] for e in man["images"]] == ["emb-test-00000", "emb-test-00001", "emb-test-00002"]
    for e in man["images"] + man["mask_files"]:  # every file's sha256
        assert hashlib.sha256(open(os.path.join(kit, e["file"]), "rb").read()).hexdigest() == e["sha256"]
    # the kit's images and masks are the run's, bit for bit (255 = hole)
    from facefill_core.data import load_test_set

    ts = load_test_set("embedded", N)
    for i in range(N):
        assert np.array_equal(np.asarray(Image.open(os.path.join(kit, f"images/{i:05d}.png"))), ts.images[i])
    for mask in ("centre", "free20"):
        saved = np.load(os.path.join(run, "masks", f"{mask}.npy"))
        for i in range(N):
            png = np.asarray(Image.open(os.path.join(kit, f"masks/{mask}/{i:05d}.png")))
            assert set(np.unique(png)) <= {0, 255} and np.array_equal(png == 255, saved[i] == 1)
    c = [e for e in man["mask_files"] if e["mask"] == "centre"]
    assert all(e["hole_fraction"] == 0.25 for e in c)
    readme = open(os.path.join(kit, "README.md")).read()
    assert "255 = hole" in readme and "PREDICTIONS/<mask>/<index>.png" in readme and "box filter" in readme


def test_round_trip_exact_and_external_method_in_one_table(kit_and_run, tmp_path):
    kit, base = kit_and_run
    run = str(tmp_path / "run")
    shutil.copytree(base, run)
    # 1. the harness's own PNG completions of `mean` (a float fill: exact only because the
    # harness scores the uint8 it saves), scored as an external method
    assert score_main([kit, os.path.join(run, "outputs", "png", "mean"), "--name", "mean-png", "--out", run]) == 0
    recs = [json.loads(line) for line in open(os.path.join(run, "records.jsonl"))]
    own = {(r["mask"], r["image_index"]): r for r in recs if r["method"] == "mean"}
    ext = {(r["mask"], r["image_index"]): r for r in recs if r["method"] == "mean-png"}
    assert len(own) == len(ext) == 2 * N
    differ = {"method", "seconds", "device", "scored_from"}  # what a scored record says about itself
    for k, r in own.items():
        assert {f: v for f, v in r.items() if f not in differ} == {f: v for f, v in ext[k].items() if f not in differ}
        assert ext[k]["seconds"] is None and ext[k]["device"] == "external"
        assert r["known_changed_mean_abs"] == 0.0
    # 2. completions made elsewhere, at 128x128: each hole filled with white, the known pixels
    # blurred by one grey level (reported, not repaired)
    preds = tmp_path / "preds"
    for mask in ("centre", "free20"):
        (preds / mask).mkdir(parents=True)
        holes = np.load(os.path.join(run, "masks", f"{mask}.npy"))
        for i in range(N):
            img = np.asarray(Image.open(os.path.join(kit, f"images/{i:05d}.png"))).astype(np.int16)
            img = np.clip(img + 1, 0, 255)
            img[holes[i] == 1] = 255
            big = np.repeat(np.repeat(img.astype(np.uint8), 2, 0), 2, 1)  # box filter: exact inverse
            Image.fromarray(big).save(preds / mask / f"{i:05d}.png")
    assert score_main([kit, str(preds), "--name", "white", "--out", run]) == 0
    recs = [json.loads(line) for line in open(os.path.join(run, "records.jsonl"))]
    white = [r for r in recs if r["method"] == "white"]
    assert len(white) == 2 * N
    for r in white:  # +1 on every known pixel that was below 255
        img = np.asarray(Image.open(os.path.join(kit, f"images/{r['image_index']:05d}.png")))
        known = np.load(os.path.join(run, "masks", f"{r['mask']}.npy"))[r["image_index"]] == 0
        assert r["known_changed_mean_abs"] == pytest.approx((img[known] < 255).mean())
    tables = open(os.path.join(run, "tables.md")).read()
    for m in ("mean", "telea", "mean-png", "white"):
        assert f"| {m} " in tables
    psnr = {
        (r["method"], r["mask"]): r for r in __import__("csv").DictReader(open(os.path.join(run, "tables", "psnr.csv")))
    }
    assert psnr[("mean-png", "centre")]["mean"] == psnr[("mean", "centre")]["mean"]
    assert float(psnr[("white", "centre")]["mean"]) < float(psnr[("mean", "centre")]["mean"])
    scored = json.load(open(os.path.join(run, "scored", "white.json")))
    assert scored["resize_filter"] == "PIL.Image.BOX" and len(scored["prediction_sha256"]) == 2 * N
    # paired differences treat the scored method like a built-in
    from bench.report.paired import main as paired_main

    assert paired_main([run, "mean", "mean-png"]) == 0
    paired = open(os.path.join(run, "paired_mean.md")).read()
    assert "| mean-png - mean" in paired and "+0.00 ± 0.00, 0/3 wins" in paired


def _preds_from(run, tmp_path) -> str:
    p = str(tmp_path / "preds")
    shutil.copytree(os.path.join(run, "outputs", "png", "telea"), p)
    return p


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda p: os.remove(os.path.join(p, "centre", "00001.png")),
            "1 of 6 completions missing (first: centre/00001.png",
        ),
        (
            lambda p: shutil.copy(os.path.join(p, "centre", "00001.png"), os.path.join(p, "centre", "00009.png")),
            "1 unexpected file(s) (first: centre/00009.png)",
        ),
        (
            lambda p: open(os.path.join(p, "free20", "00000.png"), "wb").write(b"junk"),
            "free20/00000.png cannot be read as an image",
        ),
        (
            lambda p: Image.new("RGB", (100, 100)).save(os.path.join(p, "centre", "00002.png")),
            "centre/00002.png is 100x100: expected 64x64 or a square multiple of it",
        ),
        (
            lambda p: Image.new("RGB", (64, 64)).save(os.path.join(p, "centre", "00002.png"), format="JPEG"),
            "centre/00002.png: not a PNG file (JPEG)",
        ),
    ],
)
def test_score_errors_one_line_nothing_written(kit_and_run, tmp_path, capsys, damage, message):
    kit, run = kit_and_run
    preds = _preds_from(run, tmp_path)
    damage(preds)
    before = _files(run)
    assert score_main([kit, preds, "--name", "ext", "--out", run]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert _files(run) == before
    assert score_main([kit, preds, "--name", "ext", "--out", str(tmp_path / "new")]) == 2
    assert not os.path.exists(tmp_path / "new")


def test_score_refuses_other_run_name_and_kit_change(kit_and_run, tmp_path, capsys):
    kit, run = kit_and_run
    preds = _preds_from(run, tmp_path)
    before = _files(run)
    assert score_main([kit, preds, "--name", "telea", "--out", run]) == 2
    assert "--name telea is a built-in method's name" in capsys.readouterr().err
    assert score_main([kit, preds, "--name", "a__b", "--out", run]) == 2
    assert "--name must be letters" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(run, other)
    man = json.load(open(other / "manifest.json"))
    man["config"]["n_images"] = 5
    json.dump(man, open(other / "manifest.json", "w"))
    assert score_main([kit, preds, "--name", "ext", "--out", str(other)]) == 2
    assert "the run has 5 images, the kit 3" in capsys.readouterr().err
    np.save(other / "masks" / "free20.npy", np.zeros((N, 64, 64), np.uint8))
    man["config"]["n_images"] = N
    json.dump(man, open(other / "manifest.json", "w"))
    assert score_main([kit, preds, "--name", "ext", "--out", str(other)]) == 2
    assert "its free20 masks differ from the kit's" in capsys.readouterr().err
    kit2 = tmp_path / "kit2"
    shutil.copytree(kit, kit2)
    Image.new("RGB", (64, 64)).save(kit2 / "images" / "00001.png")
    assert score_main([str(kit2), preds, "--name", "ext", "--out", run]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "images/00001.png is missing or changed since the export (sha256)" in err
    assert _files(run) == before


def test_export_refuses_nonempty_out(tmp_path, capsys):
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "x").write_text("x")
    assert export_main(["--out", str(tmp_path / "kit"), "--n-images", "1"]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert export_main(["--out", str(tmp_path / "k2"), "--masks", "centre,bogus"]) == 2
    assert "unknown mask 'bogus'" in capsys.readouterr().err


def test_folder_data_evaluates_every_image(tmp_path, real_faces):
    """folder:PATH: all 11 faces without --n-images (the preset's 8 is for embedded only)."""
    from bench.harness.cli import build_config
    from bench.harness.export import build_config as export_config

    for i in range(11):
        Image.fromarray(real_faces[i]).save(tmp_path / f"face{i:02d}.png")
    cfg, _ = build_config(["--data", f"folder:{tmp_path}", "--methods", "mean", "--out", str(tmp_path / "r")])
    assert cfg.n_images == 11
    cfg, _ = build_config(["--data", f"folder:{tmp_path}", "--methods", "mean", "--n-images", "4", "--out", "x"])
    assert cfg.n_images == 4
    cfg, _ = build_config(["--methods", "mean", "--out", str(tmp_path / "r")])
    assert cfg.n_images == 8  # embedded: the quick preset's
    assert export_config(["--data", f"folder:{tmp_path}", "--out", str(tmp_path / "k")]).n_images == 11
