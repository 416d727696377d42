"""bench.report.paired: per-image means over seeds, paired on the same images, interval over images."""

import json

import pytest

from bench.report.paired import main, paired, paired_table


def _recs():
    out = []
    # base: deterministic, one record per image; si-ld+: two seeds per image
    for i, (b, s0, s1) in enumerate([(20.0, 21.0, 23.0), (24.0, 24.5, 25.5), (18.0, 19.0, 20.0)]):
        out.append(dict(method="mean", mask="centre", image_id=f"i{i}", psnr=b, ssim=0.5, nme=0.1))
        for r, v in enumerate((s0, s1)):
            out.append(
                dict(
                    method="si-ld+",
                    mask="centre",
                    image_id=f"i{i}",
                    replicate=r,
                    psnr=v,
                    ssim=0.6,
                    nme=None if i == 2 and r == 1 else 0.08,
                )
            )
    return out


def test_paired_over_images_of_seed_means():
    p = paired(_recs(), "mean", ["si-ld+"])
    d = p[("psnr", "si-ld+", "centre")]
    assert d.differences == (2.0, 1.0, 1.5)  # 22-20, 25-24, 19.5-18
    # sd of (2, 1, 1.5) is 0.5: half-width t(0.975, 2) * 0.5 / sqrt(3) = 4.3027 * 0.28868 = 1.2421
    assert d.mean == pytest.approx(1.5) and d.half_width == pytest.approx(1.24207, abs=1e-5)
    assert (d.n_images, d.n_seeds_a, d.n_seeds_b) == (3, 2, 1) and d.excludes_zero
    n = p[("nme", "si-ld+", "centre")]  # a failed NME is left out of its image's mean
    assert n.differences == pytest.approx((-0.02, -0.02, -0.02)) and n.n_images == 3
    text = paired_table(_recs(), "mean", ["si-ld+"])
    assert "| si-ld+ - mean       | +1.50 ± 1.24, 3/3 wins, 3 img x 2|1 seeds, excludes 0" in text


def test_cli_errors_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _recs()))
    assert main([str(run), "mean", "si"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "has no records of si (has: mean, si-ld+)" in err and err.count("\n") == 1
    assert main([str(run), "mean", "si-ld+"]) == 0
    assert (run / "paired_mean.md").exists()
    assert main([str(tmp_path / "none"), "mean", "si"]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_base_from_another_run(tmp_path, capsys):
    # The same method in two runs (e.g. two priors): paired image by image across the runs.
    a, b = tmp_path / "after", tmp_path / "before"
    for d in (a, b):
        d.mkdir()
    before = [r for r in _recs() if r["method"] == "si-ld+"]
    after = [dict(r, psnr=r["psnr"] + (0.5 if r["image_id"] != "i2" else -0.25)) for r in before]
    (b / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in before))
    (a / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in after))
    assert main([str(a), "si-ld+", "si-ld+", "--base-run", str(b)]) == 0
    text = (a / "paired_si-ld+@before.md").read_text()
    # differences 0.5, 0.5, -0.25 over 3 images: mean 0.25, sd 0.4330, t(0.975, 2) = 4.3027
    assert "| si-ld+ - si-ld+@before | +0.25 ± 1.08, 2/3 wins, 3 img x 2|2 seeds, includes 0" in text
    capsys.readouterr()
    assert main([str(a), "mean", "si-ld+", "--base-run", str(b)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {b} has no records of mean (has: si-ld+)\n"
    assert main([str(a), "si-ld+", "si-ld+", "--base-run"]) == 2
    assert main([str(a), "si-ld+", "si-ld+", "--base-run", str(tmp_path / "none")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
