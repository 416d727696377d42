"""bench.report.compare, the reproduction gate: each way two runs can disagree fails with one line
naming it (exit 1 with --strict), a run that cannot be read exits 2, and the comparison made
(exact or noise band) is printed with its reason."""

import json
import math
import os

import numpy as np
import pytest

from bench.report.compare import choose_mode, compare, main

VERSIONS = {"python": "3.11.2", "torch": "2.13.0", "numpy": "2.1.0"}


def _records(n_images=6, replicates=3, seed=0, shift=0.0):
    """si with seed replicates (image effect sd 2 dB, seed noise sd 1 dB) and mean (one record)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(99).normal(22.0, 2.0, n_images)  # the images: the same in every run
    recs = []
    for i in range(n_images):
        for r in range(replicates):
            v = float(base[i] + rng.normal(0, 1.0) + shift)
            recs.append(dict(method="si", mask="centre", image_id=f"img{i}", replicate=r, psnr=v, ssim=0.8, nme=0.05))
        recs.append(dict(method="mean", mask="centre", image_id=f"img{i}", psnr=float(base[i] - 3), ssim=0.7, nme=0.08))
    return recs


def _run(path, records, pinned=False, versions=VERSIONS):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "records.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")  # json writes NaN as NaN, as the harness would
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(
            {"machine": {"numerics": {"pinned": pinned, "mode": "pinned" if pinned else "free"}}, "versions": versions},
            f,
        )
    return str(path)


def _strict(capsys, a, b):
    rc = main([a, b, "--strict"])
    return rc, capsys.readouterr().out


def test_identical_unpinned_runs_agree_by_the_noise_band(tmp_path, capsys):
    a = _run(tmp_path / "a", _records())
    b = _run(tmp_path / "b", _records())
    rc, out = _strict(capsys, a, b)
    assert rc == 0
    assert "comparison: noise band (numerics not pinned in the reference and the new run)" in out
    assert "AGREE within the noise band" in out


def test_pinned_same_versions_compares_exactly(tmp_path, capsys):
    recs = _records()
    a = _run(tmp_path / "a", recs, pinned=True)
    b = _run(tmp_path / "b", recs, pinned=True)
    rc, out = _strict(capsys, a, b)
    assert rc == 0 and "comparison: exact" in out and "AGREE: identical records" in out
    bumped = [dict(r) for r in recs]
    bumped[4]["psnr"] += 1e-9  # far inside any tolerance, but not the same number
    c = _run(tmp_path / "c", bumped, pinned=True)
    rc, out = _strict(capsys, a, c)
    assert rc == 1
    assert "FAIL psnr: 1 record(s) not identical, max |d| 1e-09 at (si, centre, img1, replicate 0)" in out


def test_mode_reasons():
    pinned = {"machine": {"numerics_pinned": True}, "versions": VERSIONS}
    assert choose_mode(pinned, pinned)[0] == "exact"
    other = {**pinned, "versions": {**VERSIONS, "torch": "2.12.0"}}
    mode, why = choose_mode(pinned, other)
    assert mode == "noise band" and why == "package versions differ (torch 2.13.0 vs 2.12.0)"
    mode, why = choose_mode(pinned, {"versions": VERSIONS})
    assert why == "numerics not pinned in the new run"
    assert choose_mode({"numerics": {"pinned": True}, "versions": VERSIONS}, pinned)[0] == "exact"
    gpu = {"machine": {"numerics": {"pinned": False}, "numerics_pinned": True}, "versions": VERSIONS}
    assert choose_mode(pinned, gpu) == ("noise band", "numerics not pinned in the new run")  # the measured field wins


@pytest.mark.parametrize("metric", ["psnr", "nme"])
def test_nan_on_one_side_fails(tmp_path, capsys, metric):
    """The old compare skipped a NaN (``max`` of comparisons with NaN) and printed AGREE."""
    recs = _records()
    a = _run(tmp_path / "a", recs)
    bad = [dict(r) for r in recs]
    bad[0][metric] = float("nan")
    b = _run(tmp_path / "b", bad)
    rc, out = _strict(capsys, a, b)
    assert rc == 1
    assert f"FAIL NaN {metric} in the new run: 1 record(s), e.g. (si, centre, img0, replicate 0)" in out
    assert "AGREE" not in out


def test_value_missing_on_one_side_fails(tmp_path, capsys):
    recs = _records()
    none = [dict(r) for r in recs]
    none[1]["nme"] = None  # a landmark failure in one run only
    rc, out = _strict(capsys, _run(tmp_path / "a", recs), _run(tmp_path / "b", none))
    assert rc == 1
    assert (
        "FAIL nme missing on one side: 1 record(s), e.g. (si, centre, img0, replicate 1) has none in the new run" in out
    )


def test_duplicated_key_fails(tmp_path, capsys):
    recs = _records()
    rc, out = _strict(capsys, _run(tmp_path / "a", recs), _run(tmp_path / "b", recs + [recs[2]]))
    assert rc == 1
    assert "FAIL the new run has 1 duplicated key(s), e.g. (si, centre, img0, replicate 2) x2" in out


def test_empty_side_fails(tmp_path, capsys):
    rc, out = _strict(capsys, _run(tmp_path / "a", []), _run(tmp_path / "b", []))
    assert rc == 1
    assert "FAIL the reference has no records" in out and "FAIL the new run has no records" in out
    rc, out = _strict(capsys, _run(tmp_path / "c", _records()), _run(tmp_path / "d", []))
    assert rc == 1 and "FAIL the new run has no records" in out


def test_missing_method_image_or_replicate_fails(tmp_path, capsys):
    recs = _records()
    a = _run(tmp_path / "a", recs)
    rc, out = _strict(capsys, a, _run(tmp_path / "b", [r for r in recs if r["method"] != "mean"]))
    assert rc == 1 and "FAIL method(s) only in the reference: mean" in out
    rc, out = _strict(capsys, a, _run(tmp_path / "c", [r for r in recs if r["image_id"] != "img3"]))
    assert rc == 1 and "FAIL image(s) only in the reference: img3" in out
    rc, out = _strict(capsys, a, _run(tmp_path / "d", [r for r in recs if r.get("replicate", 0) != 2]))
    assert rc == 1 and "FAIL replicate(s) only in the reference: 2" in out
    one = [r for r in recs if not (r["method"] == "mean" and r["image_id"] == "img5")]
    rc, out = _strict(capsys, a, _run(tmp_path / "e", one))
    assert rc == 1 and "FAIL 1 record(s) only in the reference, e.g. (mean, centre, img5, replicate 0)" in out


def test_noise_band_separates_seed_noise_from_a_shift(tmp_path, capsys):
    """Other seeds (noise sd 1 dB) agree; the same seeds 3 dB lower differ, and the line names
    the cell; the deterministic method must match within its tolerance."""
    a = _run(tmp_path / "a", _records(seed=0))
    rc, out = _strict(capsys, a, _run(tmp_path / "b", _records(seed=1)))
    assert rc == 0, out
    rc, out = _strict(capsys, a, _run(tmp_path / "c", _records(seed=0, shift=-3.0)))
    assert rc == 1
    assert "FAIL psnr si/centre: mean difference -3 outside the band" in out
    assert "6 images, seeds new|reference 3|3" in out


def test_noise_band_cell_values(tmp_path):
    a = _run(tmp_path / "a", _records(seed=0))
    b = _run(tmp_path / "b", _records(seed=1))
    res = compare(a, b)
    cell = next(c for c in res["cells"] if (c["method"], c["metric"]) == ("si", "psnr"))
    assert cell["paired"].n_images == 6 and math.isfinite(cell["seed_band"])
    assert cell["band"] == max(0.01, cell["paired"].half_width, cell["seed_band"])
    mean_cell = next(c for c in res["cells"] if (c["method"], c["metric"]) == ("mean", "psnr"))
    assert mean_cell["diff"] == 0.0 and mean_cell["band"] == 0.01  # deterministic: only the tolerance


def test_unreadable_runs_exit_2(tmp_path, capsys):
    a = _run(tmp_path / "a", _records())
    assert main([a, str(tmp_path / "nowhere")]) == 2
    assert "has no records.jsonl" in capsys.readouterr().err
    b = tmp_path / "b"
    b.mkdir()
    (b / "records.jsonl").write_text('{"method": "si", "mask": "centre"}\n')
    assert main([a, str(b)]) == 2
    assert "records.jsonl:1: not a record (KeyError" in capsys.readouterr().err
