"""``python -m bench.studies.prior_quality [--weights PATH] [--out results/prior]``: the face prior's
three quality figures (README, issue "face prior"):

(a) a sample grid of 64 G(z), z ~ U[-1, 1];
(b) of 256 samples, the fraction whose 68 dlib points (canonical box) all fall inside the image
    (and within 2 px of it: the embedded crops cut the chin, point 8 sits at y = 64.7 on average
    on the data itself), each beside the same figure on 256 embedded training images; and the
    fraction in which dlib's face detector finds a face at 4x (the embedded data's own
    rate is printed beside it);
(c) how well G reproduces held-out test faces: best of 16 latent fits (L1 on the whole image,
    200 Adam steps, lr 0.03, z clipped to [-1, 1]) on 16 test images, mean PSNR;
(d) the spread of the search space: per-pixel standard deviation (images in [-1, 1]) across
    256 samples G(z), z ~ U[-1, 1] (what the search explores) and z ~ N(0, I), beside the same
    on 256 embedded test images; "within 10% of the data's" is the target for a matched prior;
(e) KID (facefill_core.judges.features: Inception-v3 pool features, cubic-kernel unbiased MMD^2,
    100 subsets of 128) between the 256 samples and 256 embedded test images, beside KID
    between 256 embedded training images and the same test images (the floor a perfect prior
    would reach with these sample sizes).

The per-image fit PSNRs are kept (``fit_psnr_per_image_db``), so two priors' fits can be
paired image by image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch


def fit_psnr(g, x: torch.Tensor, k: int = 16, steps: int = 200, lr: float = 0.03, seed: int = 0) -> np.ndarray:
    from facefill_core.data import to_unit_range
    from facefill_core.metrics import psnr

    out = []
    for i in range(len(x)):
        z = (torch.rand(k, g.z_dim, generator=torch.Generator().manual_seed(seed + i)) * 2 - 1).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        target = x[i : i + 1].expand(k, -1, -1, -1)
        for _ in range(steps):
            loss = (g(z) - target).abs().flatten(1).mean(1)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                z.clamp_(-1, 1)
        with torch.no_grad():
            gz = g(z)
            best = (gz - target).abs().flatten(1).mean(1).argmin()
            out.append(psnr(to_unit_range(gz[best : best + 1]).clamp(0, 1), to_unit_range(x[i : i + 1]))[0])
    return np.array(out)


def plot_losses(csv_path: str, png_path: str, smooth: int = 25) -> None:
    """Loss curves of a training loss.csv (moving average over ``smooth`` iterations)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    it = np.array([int(r["iter"]) for r in rows])
    keys = [k for k in rows[0] if k.startswith("loss")]
    fig, ax = plt.subplots(figsize=(6, 3))
    for k in keys:
        v = np.array([float(r[k]) for r in rows])
        v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
        ax.plot(it[smooth - 1 :], v, label=k, lw=1)
    ax.set_xlabel("iteration")
    ax.legend()
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(csv_path))))
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    from facefill_core.data import FaceDataset, calibrate_box
    from facefill_core.landmarks import LandmarkPredictor, to_uint8_nhwc
    from facefill_core.pretrained import load_dcgan
    from facefill_core.train import save_grid

    p = argparse.ArgumentParser(prog="python -m bench.studies.prior_quality")
    p.add_argument("--weights", default=None)
    p.add_argument("--out", default="results/prior")
    p.add_argument("--loss-csv", default=None, help="training loss.csv to plot into OUT/loss.png")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    g, d, meta = load_dcgan(a.weights)
    z = torch.rand(256, g.z_dim, generator=torch.Generator().manual_seed(2024)) * 2 - 1
    with torch.no_grad():
        s = g(z)
    save_grid(s[:64], os.path.join(a.out, "samples.png"))
    u8 = to_uint8_nhwc(s)
    lp = LandmarkPredictor()
    data_u8, _ = FaceDataset("embedded").load_uint8("train", 256)

    def inside(images, margin):
        pts = lp.predict(images, box=meta["box"])
        return int(((pts >= -margin) & (pts <= 63 + margin)).all(axis=(1, 2)).sum())

    _, found = calibrate_box(u8)
    _, found_data = calibrate_box(data_u8)
    x, _ = FaceDataset("embedded").load("test", 16)
    fits = fit_psnr(g, x)
    # (d) spread: per-pixel std across samples, in [-1, 1], averaged over pixels and channels
    test256, _ = FaceDataset("embedded").load("test", 256)
    with torch.no_grad():
        s_normal = g(torch.randn(256, g.z_dim, generator=torch.Generator().manual_seed(2024)))
    spread = {k: round(float(v.std(0).mean()), 4) for k, v in (("search", s), ("normal", s_normal), ("data", test256))}
    from facefill_core.judges.features import InceptionFeatures, kid

    incept = InceptionFeatures()
    test_feats = incept(to_uint8_nhwc(test256))
    kid_g = kid(incept(u8), test_feats, subset_size=128)
    kid_data = kid(incept(data_u8), test_feats, subset_size=128)
    res = {
        "weights": a.weights or "shipped dcgan_embedded.pt",
        "landmarks_inside_frame": f"{inside(u8, 0)}/256",
        "landmarks_inside_frame_on_embedded_data": f"{inside(data_u8, 0)}/256",
        "landmarks_within_2px_of_frame": f"{inside(u8, 2)}/256",
        "landmarks_within_2px_of_frame_on_embedded_data": f"{inside(data_u8, 2)}/256",
        "detector_found_at_4x": f"{found}/256",
        "detector_found_at_4x_on_embedded_data": f"{found_data}/256",
        "fit_psnr_mean_db": round(float(fits.mean()), 2),
        "fit_psnr_std_db": round(float(fits.std(ddof=1)), 2),
        "z_dist_trained": meta.get("z_dist", "normal (not recorded)"),
        "pixel_std_G_uniform_search_space": spread["search"],
        "pixel_std_G_normal": spread["normal"],
        "pixel_std_embedded_test_data": spread["data"],
        "spread_ratio_search_vs_data": round(spread["search"] / spread["data"], 3),
        "fit_psnr_per_image_db": [round(float(v), 3) for v in fits],
        "fit_settings": "best of 16, L1 whole image, 200 Adam steps, lr 0.03, 16 embedded test images",
        "kid_samples_vs_test": [round(kid_g[0], 5), round(kid_g[1], 5)],
        "kid_train_vs_test": [round(kid_data[0], 5), round(kid_data[1], 5)],
        "kid_settings": (
            "Inception-v3 pool features, cubic kernel, unbiased MMD^2, mean and sd over 100 subsets of 128; "
            "256 G(z) samples (z ~ U[-1, 1], seed 2024) or 256 embedded training images vs 256 embedded test images"
        ),
        "seconds": round(time.time() - t0, 1),
    }
    if a.loss_csv:
        plot_losses(a.loss_csv, os.path.join(a.out, "loss.png"))
    with open(os.path.join(a.out, "prior_quality.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
