import csv
import json
import os

import pytest

from bench.report.tables import REFERENCE, aggregate, build_report, thesis_rows

MASKS = ("centre", "left")


def _records(method, values, mask="centre", **extra):
    return [
        {
            "method": method,
            "mask": mask,
            "image_index": i,
            "image_id": f"img{i}",
            "psnr": v,
            "ssim": v / 100,
            "nme": 0.05,
            "seconds": 0.1,
            **extra,
        }
        for i, v in enumerate(values)
    ]


def _run_dir(tmp_path, records):
    d = tmp_path / "run"
    os.makedirs(d)
    with open(d / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(d)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_thesis_rows_are_labelled_and_not_in_statistics(tmp_path):
    recs = _records("si", [20.0, 22.0, 24.0]) + _records("ce", [10.0, 12.0]) + _records("si", [30.0], mask="left")
    run = _run_dir(tmp_path, recs)
    stats = build_report(run)
    md = open(os.path.join(run, "tables.md")).read()
    # our rows: the records' statistics only
    assert stats[("si", "centre")]["psnr"][:1] + stats[("si", "centre")]["psnr"][2:] == (22.0, 3)
    assert "| si  " in md and "22.00 ± 4.97" in md  # t(0.975, 2) * 2 / sqrt(3) = 4.97
    # the thesis's published numbers, labelled, as printed (Table 2: SI centre 19.4, Table 1: GFC left 0.824)
    lines = md.splitlines()
    si_ref = [ln for ln in lines if ln.startswith("| SI (thesis, CelebA)")]
    assert len(si_ref) == 2 and "19.4" in si_ref[0] and "17.9" in si_ref[0]
    assert any(ln.startswith("| GFC (thesis, CelebA)") and "0.824" in ln for ln in lines)
    assert any(ln.startswith("| Ours (thesis, CelebA)") and "21.1" in ln for ln in lines)
    assert "not comparable number for number" in md and "CelebA" in md
    assert "SI = `si`, Ours = `si-ld`, CE = `ce`, GFC = `gfc`" in md
    assert "not included" not in md and "reference_numbers" not in md
    # and never in our tables' CSVs, only in their own
    psnr = _read_csv(os.path.join(run, "tables", "psnr.csv"))
    assert [r["method"] for r in psnr] == ["si", "si", "ce"]
    assert float(psnr[0]["mean"]) == 22.0 and psnr[0]["n"] == "3"
    ref = _read_csv(os.path.join(run, "tables", "thesis_reference.csv"))
    assert {
        "reference": "SI (thesis, CelebA)",
        "our_method": "si",
        "metric": "psnr",
        "mask": "centre",
        "value": "19.4",
    } in ref
    assert len(ref) == 4 * 2 * 4  # 4 methods x 2 tables x 4 masks


def test_reference_file_is_the_shared_copy():
    rows = thesis_rows()
    assert list(rows) == ["SI (thesis, CelebA)", "Ours (thesis, CelebA)", "CE (thesis, CelebA)", "GFC (thesis, CelebA)"]
    assert [r["method"] for r in rows.values()] == ["si", "si-ld", "ce", "gfc"]
    assert rows["Ours (thesis, CelebA)"]["ssim"]["right"] == 0.708
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "thesis_tables.json")
    if os.path.exists(shared):  # CI's clean clone has only the copy
        assert json.load(open(REFERENCE)) == json.load(open(shared))


def test_scale_columns_per_region(tmp_path):
    scale = {"scale_eyes": 0.1, "scale_brows": 0.2, "scale_nose": 0.3, "scale_mouth": 0.4, "scale_jaw": 0.5}
    recs = _records("si", [20.0, 21.0], scale=0.3, scale_signed=-0.1, **scale)
    recs += _records("telea", [18.0, 19.0], scale=None, scale_signed=None, **{k: None for k in scale})
    run = _run_dir(tmp_path, recs)
    stats = build_report(run)
    assert stats[("si", "centre")]["scale_nose"] == (pytest.approx(0.3), 0.0, 2)
    assert stats[("telea", "centre")]["scale"][2] == 0  # failures are not averaged
    md = open(os.path.join(run, "tables.md")).read()
    assert "## Feature-scale error (mean over eyes, brows, nose, mouth, jaw" in md
    assert "## Feature-scale error by region" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| si ") and "0.100" in ln)
    assert [c.strip() for c in row.strip("|").split("|")][2:] == [
        "0.100 ± 0.000",
        "0.200 ± 0.000",
        "0.300 ± 0.000",
        "0.400 ± 0.000",
        "0.500 ± 0.000",
        "0.300 ± 0.000",
        "-0.100 ± 0.000",
    ]
    regions = _read_csv(os.path.join(run, "tables", "scale_regions.csv"))
    assert [(r["region"], float(r["mean"])) for r in regions if r["method"] == "si"][:3] == [
        ("eyes", 0.1),
        ("brows", 0.2),
        ("nose", 0.3),
    ]
    assert all(r["method"] != "telea" for r in regions)  # no finite value: no row
    assert _read_csv(os.path.join(run, "tables", "scale.csv"))[1]["n"] == "0"


def test_old_records_without_scale(tmp_path):
    run = _run_dir(tmp_path, _records("si", [20.0, 21.0]))
    build_report(run)
    md = open(os.path.join(run, "tables.md")).read()
    assert "Feature-scale" not in md and not os.path.exists(os.path.join(run, "tables", "scale_regions.csv"))


def test_sweep_labels_ordered_and_separate(tmp_path):
    recs = []
    for m in (8, 2, 3):
        recs += _records(f"si-ld[margin={m}]", [20.0 + m, 21.0 + m], sweep={"margin": float(m)})
    recs += _records("telea", [18.0, 19.0]) + _records("si", [19.0, 20.0])
    run = _run_dir(tmp_path, recs)
    methods, masks, stats = aggregate(recs)
    assert methods == ["si", "si-ld[margin=2]", "si-ld[margin=3]", "si-ld[margin=8]", "telea"]
    assert stats[("si-ld[margin=8]", "centre")]["psnr"][0] == 28.5
    build_report(run)
    assert os.path.exists(os.path.join(run, "figures", "sweep_margin.png"))
    # 22 and 23 dB: mean 22.5, sd 1 / sqrt(2), half-width t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.5
    assert stats[("si-ld[margin=2]", "centre")]["psnr"] == (22.5, pytest.approx(6.3531, abs=1e-4), 2)
