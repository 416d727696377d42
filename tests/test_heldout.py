import math

from bench.studies.heldout import MASKS, plateau_gain


def _curve(fn, iters):
    return {i: {m: (fn(i), 0.5) for m in MASKS} for i in iters}


def test_still_improving_curve_is_not_a_plateau():
    g = plateau_gain(_curve(lambda i: 20 + i / 1000, range(250, 4001, 250)))  # +1 dB per 1000 iterations
    # last two points 3875 on average vs 3000: 0.875 dB
    assert all(abs(v - 0.875) < 1e-9 for v in g.values())


def test_flat_curve_is_a_plateau():
    g = plateau_gain(_curve(lambda i: 25 - 5 * math.exp(-i / 300), range(250, 4001, 250)))
    assert all(0 <= v < 0.1 for v in g.values())


def test_best_snapshot_is_the_highest_mean_over_masks():
    from bench.studies.heldout import best_snapshot

    curve = _curve(lambda i: 20.0, [250, 500, 750])
    curve[500] = {m: (21.0 if m == "centre" else 20.0, 0.5) for m in MASKS}  # +0.25 dB mean
    curve[750] = {"centre": (30.0, 0.5)}  # one mask only: not a candidate
    assert best_snapshot(curve) == 500
    assert best_snapshot(_curve(lambda i: 20.0, [250, 500])) == 250  # ties: the earlier one


def test_too_short_curve_gives_nan():
    assert all(math.isnan(v) for v in plateau_gain(_curve(lambda i: 20.0, [250, 500])).values())


def test_scores_every_checkpoint_of_a_gfc_run(tmp_path):
    """End to end on a 2-iteration GFC run: each checkpoint is snapshotted and scored on the
    held-out images and masks (PSNR, SSIM, and the noise sensitivity in the hole), into the CSV
    and the plot; a second pass scores nothing twice."""
    import csv

    from bench.studies.heldout import main
    from facefill_core.config import TrainConfig
    from facefill_core.train import train

    run = tmp_path / "gfc"
    cfg = TrainConfig(model="gfc", iters=1, batch_size=4, ngf=8, ndf=8, n_train=16, checkpoint_every=1, num_threads=1)
    train(cfg, str(run), progress=False)
    assert main([str(run), "--kind", "gfc"]) == 0  # snapshots iteration 1
    train(TrainConfig(**{**cfg.__dict__, "iters": 2}), str(run), resume=True, progress=False)
    assert main([str(run), "--kind", "gfc"]) == 0  # and iteration 2
    rows = list(csv.DictReader(open(run / "heldout.csv")))
    assert [(r["iter"], r["mask"]) for r in rows] == [(str(i), m) for i in (1, 2) for m in MASKS]
    for r in rows:
        assert 5 < float(r["psnr"]) < 40 and 0 < float(r["ssim"]) < 1
        assert 0 <= float(r["noise_l1"]) < 1  # measured (near 0 here: a 2-iteration net ignores its input)
    assert (run / "heldout.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "snapshots").glob("iter_*[0-9].pt")) == ["iter_000001.pt", "iter_000002.pt"]


def test_select_centre_chooses_and_judges_on_the_centre_mask_only():
    """A centre-trained CE is chosen on the centre mask: a snapshot that is best on the mean over
    the masks but worse on the centre is not the one."""
    import pytest

    from bench.studies.heldout import best_snapshot

    curve = _curve(lambda i: 20.0, [250, 500])
    curve[250] = {m: (21.0 if m == "centre" else 20.0, 0.5) for m in MASKS}  # centre best, mean 20.25
    curve[500] = {m: (20.5 if m == "centre" else 22.0, 0.5) for m in MASKS}  # mean 21.625
    assert best_snapshot(curve) == 500
    assert best_snapshot(curve, "centre") == 250
    assert best_snapshot({750: {"centre": (30.0, 0.5)}}, "centre") == 750  # the other masks not needed
    # the plateau rule looks at the centre mask only: flat there, still climbing elsewhere
    c = {i: {m: (20.0 if m == "centre" else 20 + i / 1000, 0.5) for m in MASKS} for i in range(250, 4001, 250)}
    assert plateau_gain(c, "centre") == {"centre": 0.0}
    assert abs(plateau_gain(c)["left"] - 0.875) < 1e-9
    with pytest.raises(ValueError, match="select must be one of mean, centre"):
        best_snapshot(curve, "middle")
    with pytest.raises(ValueError, match="no snapshot scored on centre"):
        best_snapshot({250: {"left": (20.0, 0.5)}}, "centre")


def test_figure_marks_the_snapshot_that_ships():
    """The held-out plot draws a vertical line at the best snapshot (what ships), not at the
    last or the first one: a curve that peaks at 1000 and falls after it."""
    import matplotlib.pyplot as plt

    from bench.studies.heldout import best_snapshot, figure

    curve = _curve(lambda i: 20 - abs(i - 1000) / 500, range(250, 2001, 250))
    assert best_snapshot(curve) == 1000
    fig = figure(curve, "t")
    vlines = [ln for ln in fig.axes[0].lines if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2]
    assert [float(ln.get_xdata()[0]) for ln in vlines] == [1000.0]
    assert "iter 1000" in vlines[0].get_label()
    plt.close(fig)
    fig = figure({250: {"centre": (20.0, 0.5)}}, "t")  # no snapshot scored on every mask: no line
    assert not [ln for ln in fig.axes[0].lines if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2]
    plt.close(fig)
