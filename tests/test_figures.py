import json
import os

import numpy as np
import pytest
import torch

from bench.report import figures
from bench.report.figures import landmark_points, snapshot_steps, trajectory_snapshots


def test_snapshot_steps():
    assert snapshot_steps(100) == [0, 10, 25, 50, 100]
    assert snapshot_steps(1000) == [0, 100, 250, 500, 1000]
    assert snapshot_steps(3) == [0, 1, 2, 3]  # rounded, unique, sorted
    assert snapshot_steps(0) == [0]
    with pytest.raises(ValueError, match="iters must be >= 0, got -1"):
        snapshot_steps(-1)
    with pytest.raises(ValueError, match=r"fractions must be in \[0, 1\], got \[0.5, 2\]"):
        snapshot_steps(10, (0.5, 2))


class _LinearG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3 * 8 * 8)
        torch.nn.init.normal_(self.lin.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, z):
        return torch.tanh(self.lin(z)).view(-1, 3, 8, 8)


def test_trajectory_snapshots_decode_the_chosen_candidate():
    from facefill_core.inpaint import composite
    from facefill_core.landmarks import to_uint8_nhwc

    g = _LinearG()
    traj = torch.rand(5, 2 * 3, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1  # 4 steps, B=2, K=3
    z_final = traj[-1][[1, 5]]  # image 0 chose candidate 1, image 1 candidate 2
    images = torch.zeros(2, 3, 8, 8)
    holes = torch.zeros(2, 1, 8, 8)
    holes[..., 2:6, 2:6] = 1
    snaps = trajectory_snapshots(g, traj, z_final, images, holes, [0, 2, 4])
    assert snaps.shape == (3, 2, 8, 8, 3) and snaps.dtype == np.uint8
    with torch.no_grad():
        for j, s in enumerate([0, 2, 4]):
            want = to_uint8_nhwc(composite(images, g(traj[s, [1, 5]]), holes))
            np.testing.assert_array_equal(snaps[j], want)
    assert (snaps[:, :, 0, 0] == 128).all()  # known pixels: the input's (0 -> mid grey)
    with pytest.raises(ValueError, match=r"steps must be in \[0, 4\], got \[5\]"):
        trajectory_snapshots(g, traj, z_final, images, holes, [5])
    with pytest.raises(ValueError, match=r"trajectory \(5, 6, 4\) does not match z_final \(1, 4\)"):
        trajectory_snapshots(g, traj, z_final[:1], images, holes, [0])


def test_landmark_points_three_sets():
    from facefill_core.data import EMBEDDED_BOX, FaceDataset

    imgs, _ = FaceDataset("embedded").load_uint8("test", 2)
    holes = np.zeros((2, 64, 64), bool)
    holes[1, 16:48, 16:48] = True
    pts = landmark_points(imgs, holes, {"same": imgs}, EMBEDDED_BOX)
    assert set(pts) == {"original", "reference", "same"}
    np.testing.assert_array_equal(pts["same"], pts["original"])  # the result's points = the original's
    np.testing.assert_array_equal(pts["reference"][0], pts["original"][0])  # no hole: the same image
    assert np.abs(pts["reference"][1] - pts["original"][1]).max() > 0.5  # a grey hole moves the points


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run dir with a manifest, masks, outputs of two methods and one recorded trajectory."""
    from facefill_core.data import FaceDataset

    d = str(tmp_path_factory.mktemp("figs") / "run")
    for sub in ("masks", "outputs", "trajectories", "figures"):
        os.makedirs(os.path.join(d, sub))
    n = 4
    imgs, _ = FaceDataset("embedded").load_uint8("test", n)
    json.dump(
        {"config": {"data": "embedded", "n_images": n, "box": None}, "data": {"box": [8, 16, 55, 63]}},
        open(os.path.join(d, "manifest.json"), "w"),
    )
    hole = np.zeros((n, 64, 64), np.uint8)
    hole[:, 16:48, 16:48] = 1
    np.save(os.path.join(d, "masks", "centre.npy"), hole)
    np.save(os.path.join(d, "outputs", "mean__centre__00000-00004.npy"), np.where(hole[..., None] > 0, 90, imgs))
    np.save(os.path.join(d, "outputs", "si[iters=4]__centre__00000-00002.npy"), imgs[:2])
    np.save(os.path.join(d, "outputs", "si[iters=4]__centre__00002-00004.npy"), imgs[2:])
    with open(os.path.join(d, "records.jsonl"), "w") as f:
        for m in ("mean", "si[iters=4]"):
            for i in range(n):
                psnr = 10.0 + i + (m == "mean") * 0.5
                rec = {"method": m, "mask": "centre", "image_index": i, "image_id": f"img-{i}", "psnr": psnr}
                f.write(json.dumps({**rec, "ssim": 0.5, "nme": 0.1}) + "\n")
    snaps = np.stack([np.where(hole[:2, ..., None] > 0, 40 * s, imgs[:2]) for s in range(3)]).astype(np.uint8)
    np.savez(
        os.path.join(d, "trajectories", "si[iters=4]__centre__00000-00002.npz"),
        steps=np.array([0, 2, 4]),
        images=snaps,
        image_index=np.array([0, 1]),
    )
    return d, imgs


def test_method_outputs_and_trajectories_read_back(fake_run):
    d, imgs = fake_run
    out = figures.method_outputs(d, "si[iters=4]", "centre", 3, imgs)
    np.testing.assert_array_equal(out, imgs[:3])
    assert (figures.method_outputs(d, "mean", "centre", 2, imgs)[:, 30, 30] == 90).all()
    assert not figures.method_outputs(d, "si", "centre", 2, imgs).any()  # another label: nothing
    steps, snaps, idx = figures.load_trajectories(d, "centre")["si[iters=4]"]
    assert steps == [0, 2, 4] and idx == [0, 1] and snaps.shape == (3, 2, 64, 64, 3)


def test_make_figures_writes_every_figure(fake_run, monkeypatch):
    d, _ = fake_run
    figs = []
    finish = figures._finish

    def keep(plt, fig, *a, **k):
        figs.append(fig)
        finish(plt, fig, *a, **k)

    monkeypatch.setattr(figures, "_finish", keep)
    stats = {
        (m, "centre"): {"psnr": (20.0, 1.0, 4), "ssim": (0.8, 0.01, 4), "nme": (0.05, 0.01, 4), "scale": (0.1, 0.01, 4)}
        for m in ("si[iters=4]", "mean")
    }
    paths = figures.make_figures(d, ["si[iters=4]", "mean"], ["centre"], stats, rows=4)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == [
        "bars_psnr_ssim.png",
        "grid_centre.png",
        "landmarks_centre.png",
        "sweep_iters.png",
        "trajectory_centre.png",
    ]
    for p in paths:
        assert os.path.getsize(p) > 5000
    # the grids' title sits in its own band: above every column label, overlapping none
    assert len(figs) == 3
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in figs:
        r = FigureCanvasAgg(fig).get_renderer()  # the saved layout (tight_layout ran in _finish)
        title = fig._suptitle.get_window_extent(r)
        labels = [ax.title.get_window_extent(r) for ax in fig.axes if ax.get_title()]
        assert labels and all(title.y0 >= lab.y1 for lab in labels)


def test_method_colours_distinct_for_every_method():
    from facefill_core.methods import METHODS

    labels = list(METHODS) + ["si-ld[margin=1]", "si-ld[margin=5]"]
    assert len(labels) >= 13
    c = figures.method_colours(labels)
    assert list(c) == labels and len(set(c.values())) == len(labels)  # no two methods share a colour
    assert c["si"] != c["nn"]  # the pair that shared matplotlib's 10-colour cycle
    assert figures.method_colours(labels[:3]) == {m: c[m] for m in labels[:3]}  # stable per position
    many = figures.method_colours([f"m{i}" for i in range(30)])
    assert len(set(many.values())) == 30


def _keep_figures(monkeypatch):
    """Figures are kept open (plt.close is a no-op) so a test can read what was drawn."""
    import matplotlib.pyplot as plt

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    return figs


def test_bars_one_colour_per_method_units_n_and_legend_off_the_data(fake_run, monkeypatch):
    d, _ = fake_run
    labels = [f"m{i}" for i in range(12)]
    stats = {
        (m, k): {"psnr": (20.0 + j, 1.0, 8), "ssim": (0.8, 0.01, 8), "nme": (0.05, 0.01, 8)}
        for j, m in enumerate(labels)
        for k in ("centre", "left")
    }
    figs = _keep_figures(monkeypatch)
    figures.bars_figure(d, labels, ["centre", "left"], stats)
    fig = figs[-1]
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == [
        "PSNR (dB)",
        "SSIM (1 = identical)",
        "NME (fraction of outer-eye-corner distance)",
    ]
    assert all("95% CI, n = 8" in ax.get_title() for ax in axes)
    colours = {}
    for cont in axes[0].containers:
        if hasattr(cont, "patches"):
            fc = {tuple(p.get_facecolor()) for p in cont.patches}
            assert len(fc) == 1  # one colour for a method over all masks
            colours[cont.get_label()] = fc.pop()
    assert sorted(colours) == sorted(labels) and len(set(colours.values())) == 12
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    r = FigureCanvasAgg(fig).get_renderer()
    leg = fig.legends[0].get_window_extent(r)
    assert all(not leg.overlaps(ax.get_window_extent(r)) for ax in axes)  # the legend is off the data


def test_grid_shows_every_image_with_ids_psnr_and_the_hole_colour(fake_run, monkeypatch):
    d, imgs = fake_run
    figs = _keep_figures(monkeypatch)
    recs = [json.loads(line) for line in open(os.path.join(d, "records.jsonl"))]
    ids = [f"img-{i}" for i in range(4)]
    paths = figures.grid_figure(d, ["mean", "si[iters=4]"], "centre", imgs, recs, ids, page_rows=3)
    assert [os.path.basename(p) for p in paths] == ["grid_centre.png", "grid_centre_2.png"]  # 4 images, 3 a page
    rows = []
    for fig in figs[-2:]:
        axes = np.array(fig.axes).reshape(-1, 4)  # original, masked, 2 methods
        rows += [ax.get_ylabel() for ax in axes[:, 0]]
        for ax_row in axes:
            masked = ax_row[1].images[0].get_array()
            assert tuple(masked[30, 30]) == figures.HOLE_RGB and tuple(masked[2, 2]) != figures.HOLE_RGB
            i = ids.index(ax_row[0].get_ylabel())
            assert [t.get_text() for t in ax_row[2].texts] == [f"{10.5 + i:.1f}"]  # mean's PSNR
            assert [t.get_text() for t in ax_row[3].texts] == [f"{10.0 + i:.1f}"]
    assert rows == ids  # every image of the run, in order
    for p in paths:
        os.remove(p)


def test_margin_sweep_is_paired_against_3px(tmp_path, monkeypatch):
    d = str(tmp_path)
    os.makedirs(os.path.join(d, "figures"))
    labels = ["si-ld[margin=1]", "si-ld[margin=3]", "si-ld[margin=5]"]
    rng = np.random.default_rng(0)
    base = rng.normal(20, 3, 6)  # the image-to-image spread every margin shares
    shift = {1: -0.5, 3: 0.0, 5: 0.25}
    recs = [
        {"method": f"si-ld[margin={m}]", "mask": "centre", "image_index": i, "psnr": base[i] + shift[m] + 0.01 * i,
         "nme": 0.1, "scale": 0.1}
        for m in (1, 3, 5)
        for i in range(6)
    ]  # fmt: skip
    stats = {(lab, "centre"): {"psnr": (20.0, 2.0, 6), "nme": (0.1, 0.0, 6), "scale": (0.1, 0.0, 6)} for lab in labels}
    figs = _keep_figures(monkeypatch)
    paths = figures.sweep_figures(d, labels, ["centre"], stats, recs)
    assert [os.path.basename(p) for p in paths] == ["sweep_margin.png"]
    ax = figs[-1].axes[0]  # PSNR
    (bars,) = [c for c in ax.containers if c.get_label() == "si-ld"]
    line = bars.lines[0]
    np.testing.assert_allclose(np.asarray(line.get_xdata(), float), [1, 3, 5])
    # paired: the image-to-image spread cancels, the shift remains
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [-0.5, 0.0, 0.25], atol=1e-9)
    assert "difference vs 3 px" in ax.get_ylabel() and "95% CI, n = 6" in ax.get_ylabel()
    assert "paired" in figs[-1]._suptitle.get_text()
