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
