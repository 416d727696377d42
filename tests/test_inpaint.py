import numpy as np
import pytest
import torch

from facefill_core.blend import poisson_blend
from facefill_core.config import InpaintConfig, MaskConfig
from facefill_core.data import FaceDataset, to_unit_range
from facefill_core.imaging import damaged, to_uint8_nhwc
from facefill_core.inpaint import LatentSearchInpainter
from facefill_core.masks import make_masks
from facefill_core.metrics import psnr
from facefill_core.pretrained import load_dcgan


@pytest.fixture(scope="module")
def prior():
    torch.set_num_threads(2)
    return load_dcgan()


@pytest.fixture(scope="module")
def faces():
    x, _ = FaceDataset("embedded").load("test", 2)
    return x


def _inp(prior, **kw):
    g, d, meta = prior
    return LatentSearchInpainter(
        g, d, InpaintConfig(**{"candidates": 4, "iters": 10, **kw}), box=meta["box"], device="cpu"
    )


def test_si_and_si_ld_trajectories_identical(prior, faces):
    h = make_masks(MaskConfig("centre"), 2)
    a = _inp(prior, method="si").inpaint(faces, h, record_trajectory=True)
    b = _inp(prior, method="si-ld").inpaint(faces, h, record_trajectory=True, record_ld=True)
    assert torch.equal(a.trajectory, b.trajectory)  # bit for bit: Ld never moves z
    assert b.ld_trace.shape == (10, 8) and b.ld_trace.max() > 0  # ...though it was computed every step
    assert torch.equal(a.lc, b.lc)


@pytest.mark.parametrize(
    "schedule",
    [
        dict(landmark_overlap="serial", landmark_block=1),
        dict(landmark_overlap="serial", landmark_block=3),  # 10 steps: blocks of 3, 3, 3, 1
        dict(landmark_overlap="overlap", landmark_block=4),
        dict(landmark_overlap="overlap", landmark_block=1, landmark_every=3),
        dict(),  # auto
    ],
)
def test_ld_trace_is_ld_of_each_step(prior, faces, schedule):
    """Whatever the schedule (gathered into blocks of steps, overlapped or not), ld_trace[i] is Ld
    of the i-th evaluated step's z, recomputed here from the trajectory one step at a time."""
    g, _, meta = prior
    h = make_masks(MaskConfig("left"), 2)
    inp = _inp(prior, method="si-ld", **schedule)
    r = inp.inpaint(faces, h, record_trajectory=True, record_ld=True)
    every = schedule.get("landmark_every", 1)
    steps = list(range(0, 10, every))
    assert r.ld_trace.shape == (len(steps), 8)
    refs = inp._points(damaged(faces, h))
    with torch.no_grad():
        want = [inp._ld(damaged(g(r.trajectory[t]), h.repeat_interleave(4, 0)), refs, 4)[0] for t in steps]
    np.testing.assert_array_equal(r.ld_trace, np.stack(want))
    assert r.ld_trace.std(0).max() > 0  # Ld changes along the search: a misaligned step would show
    # the final choice's Ld (scored in one call with the last block) is Ld of the chosen final z
    last = r.trajectory[-1]
    chosen = [j * 4 + int((last[j * 4 : (j + 1) * 4] - r.z[j]).abs().sum(1).argmin()) for j in range(2)]
    with torch.no_grad():
        final = inp._ld(damaged(g(last), h.repeat_interleave(4, 0)), refs, 4)[0]
    np.testing.assert_array_equal(r.ld.numpy(), final[chosen])


def test_loss_decreases_and_z_stays_clipped(prior, faces):
    h = make_masks(MaskConfig("left"), 2)
    short = _inp(prior, iters=1).inpaint(faces, h, record_trajectory=True)
    long = _inp(prior, iters=60, lr=0.05).inpaint(faces, h, record_trajectory=True)
    assert (long.lc < short.lc).all()
    assert long.trajectory.abs().max() <= 1.0
    assert (long.trajectory[-1] - long.trajectory[0]).abs().max() > 0.1  # z really moved


def test_si_ld_plus_moves_z_differently(prior, faces):
    h = make_masks(MaskConfig("centre"), 1)
    a = _inp(prior, method="si").inpaint(faces[:1], h, record_trajectory=True)
    b = _inp(prior, method="si-ld+", steer_start=0.0, steer_every=2).inpaint(faces[:1], h, record_trajectory=True)
    assert not torch.equal(a.trajectory[-1], b.trajectory[-1])
    assert b.steer.item() > 0


def test_batched_equals_one_at_a_time(prior, faces):
    h = make_masks(MaskConfig("random"), 2)
    both = _inp(prior, method="si-ld").inpaint(faces, h, image_indices=[5, 9])
    one = _inp(prior, method="si-ld").inpaint(faces[1:], h[1:], image_indices=[9])
    # the README: an image's result never depends on the rest of the batch; bit for bit
    assert torch.equal(both.completed[1], one.completed[0])
    assert torch.equal(both.z[1], one.z[0])


def test_known_pixels_exact_and_range(prior, faces):
    h = make_masks(MaskConfig("right"), 2)
    r = _inp(prior).inpaint(faces, h)
    assert torch.equal(torch.where(h > 0, 0.0, r.completed), torch.where(h > 0, 0.0, faces))
    assert r.completed.min() >= -1 and r.completed.max() <= 1


def test_recovers_faces_rendered_by_prior(prior):
    """Faces the prior can render exactly: latent search must beat mean-colour fill by a wide
    margin. Six faces (z seeds 0-5), centre hole, K=4, 150 steps, lr 0.03. Measured with the
    shipped G: margins over mean fill 17.0, 3.1, 3.8, 5.6, 2.8, 17.0 dB (mean 8.2); without the
    search's steps (1 step) 7.6, -1.6, -2.1, -3.3, -8.0, -0.5 (mean -1.3). How fast a face is
    found varies from face to face and with its candidates' starting points (at 600 steps and
    K=8 every margin is 6 dB or more), so the test asserts over the six, not on one. Asserted:
    mean margin at least 4 dB (about half the measured one) and every face above mean fill, so a
    broken loss, optimiser or composite fails (an optimiser that never steps: mean -2.9) while
    one face's luck, or float noise across machines, does not."""
    g, d, meta = prior
    n = 6
    gens = [torch.Generator().manual_seed(s) for s in range(n)]
    z_true = torch.cat([torch.rand(1, g.z_dim, generator=gen) * 2 - 1 for gen in gens])
    with torch.no_grad():
        x = g(z_true)
    h = make_masks(MaskConfig("centre"), n)
    r = LatentSearchInpainter(
        g, d, InpaintConfig(candidates=4, iters=150, lr=0.03), box=meta["box"], device="cpu"
    ).inpaint(x, h)
    from facefill_core.baselines import mean_fill

    margin = psnr(to_unit_range(r.completed), to_unit_range(x)) - psnr(to_unit_range(mean_fill(x, h)), to_unit_range(x))
    assert margin.mean() >= 4.0 and (margin > 0).all(), margin


def test_poisson_keeps_known_exact(prior, faces):
    h = make_masks(MaskConfig("centre"), 2)
    r = _inp(prior, blend="poisson").inpaint(faces, h)
    assert torch.equal(torch.where(h > 0, 0.0, r.completed), torch.where(h > 0, 0.0, faces))
    # on a constant-gradient source the solution is exactly the source when borders agree
    ramp = torch.linspace(-0.5, 0.5, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    assert torch.allclose(poisson_blend(ramp, ramp, h[:1]), ramp, atol=1e-5)


def test_bad_inputs(prior, faces):
    inp = _inp(prior)
    with pytest.warns(UserWarning, match="no hole"):
        r = inp.inpaint(faces, torch.zeros(2, 1, 64, 64))
    assert torch.equal(r.completed, faces)
    with pytest.raises(ValueError, match="whole image .* no context"):
        inp.inpaint(faces, torch.ones(2, 1, 64, 64))
    with pytest.raises(
        ValueError, match=r"holes must be \(N, 1, H, W\) matching images \(2, 3, 64, 64\), got \(2, 1, 32, 32\)"
    ):
        inp.inpaint(faces, torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\), got \(3, 64, 64\)"):
        inp.inpaint(faces[0], torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        inp.inpaint(faces * 3, make_masks(MaskConfig("centre"), 2))
    with pytest.raises(ValueError, match="method must be one of"):
        _inp(prior, method="yeh")


def test_nan_candidate_dropped(prior, faces):
    g, d, meta = prior

    class NaNFirst(torch.nn.Module):
        z_dim = g.z_dim

        def forward(self, z):
            out = g(z)
            return torch.cat([torch.full_like(out[:1], float("nan")), out[1:]])

    inp = LatentSearchInpainter(NaNFirst(), d, InpaintConfig(candidates=4, iters=3), box=meta["box"], device="cpu")
    with pytest.warns(UserWarning, match="dropped 1 candidate"):
        r = inp.inpaint(faces[:1], make_masks(MaskConfig("centre"), 1))
    assert r.dropped == [1] and torch.isfinite(r.completed).all()


def test_torch_backend_gives_same_ld(prior, faces):
    h = make_masks(MaskConfig("centre"), 2)
    a = _inp(prior, method="si-ld", landmark_backend="cpp").inpaint(faces, h, record_ld=True)
    b = _inp(prior, method="si-ld", landmark_backend="torch").inpaint(faces, h, record_ld=True)
    # same trajectories (Ld never steers); Ld per step agrees except where a rounded point
    # sits on a pixel boundary (the torch cascade sums leaves in another order)
    assert torch.equal(a.z, b.z)
    assert np.mean(a.ld_trace == b.ld_trace) > 0.9


def test_si_ldsoft_steers_with_exact_gradients(prior, faces):
    h = make_masks(MaskConfig("centre"), 1)
    a = _inp(prior, method="si").inpaint(faces[:1], h, record_trajectory=True)
    b = _inp(prior, method="si-ldsoft", steer_start=0.0, steer_every=2).inpaint(faces[:1], h, record_trajectory=True)
    assert not torch.equal(a.trajectory[-1], b.trajectory[-1])
    assert b.trajectory.abs().max() <= 1 and b.steer.item() > 0


# ---- the landmark steering, tested for its purpose -----------------------------------------
# The steering adds mu * dE/dz to z's gradient, E the mean distance (px) of dlib's unrounded
# points on the steering view to the reference. Measured here with a fixed reference (the damaged
# input's points) and the whole G(z) as the view, where E can move in a short run, and mu = 50 so
# that the steering, not Lc, leads Adam's step: the same seeds and 12 steps. Mean E over the 8
# candidates of test image 0, seeds 0/1/2: si 2.56/2.52/2.69 px, si-ld+ 2.07/1.81/2.22, si-ldsoft
# 1.91/1.70/1.87 (image 1 lower too in every seed: si 3.63/3.50/3.06, si-ld+ 2.81/2.75/2.56,
# si-ldsoft 2.45/2.54/1.98). With the steering's sign flipped (weight -50, seed 0): si-ld+ 3.50,
# si-ldsoft 4.64, and switched off it equals si: both fail.
STEER = dict(
    candidates=8,
    iters=12,
    lr=0.03,
    steer_weight=50.0,
    steer_start=0.0,
    steer_every=1,
    steer_reference="damaged",
    steer_target="whole",
    landmark_every=0,
    landmark_threads=1,
)


def _final_e(prior, faces, h, r):
    """Mean E of every candidate's final z (the trajectory's last row) to the damaged input's points."""
    g, _, meta = prior
    from facefill_core.imaging import damaged, to_uint8_nhwc
    from facefill_core.landmarks import LandmarkPredictor
    from facefill_core.losses import landmark_distance

    lp = LandmarkPredictor(num_threads=1)
    ref = lp.predict(to_uint8_nhwc(damaged(faces, h)), box=meta["box"], rounded=True)
    with torch.no_grad():
        pts = lp.predict(to_uint8_nhwc(g(r.trajectory[-1])), box=meta["box"], rounded=False)
    k = STEER["candidates"]
    return landmark_distance(np.repeat(ref, k, axis=0), pts).reshape(len(faces), k).mean(1)


@pytest.fixture(scope="module")
def steer_si(prior, faces):
    h = make_masks(MaskConfig("centre"), 1)
    r = _inp(prior, method="si", **STEER).inpaint(faces[:1], h, record_trajectory=True)
    return h, _final_e(prior, faces[:1], h, r)


@pytest.mark.parametrize("method", ["si-ld+", "si-ldsoft"])
def test_steering_lowers_the_landmark_distance(prior, faces, steer_si, method):
    h, e_si = steer_si
    r = _inp(prior, method=method, **STEER).inpaint(faces[:1], h, record_trajectory=True)
    e = _final_e(prior, faces[:1], h, r)
    assert e[0] < e_si[0] - 0.2, (method, e, e_si)  # measured 0.47-0.71 (si-ld+), 0.65-0.82 px lower


def test_antithetic_estimate_points_uphill(prior, faces):
    """si-ld+'s zeroth-order estimate g of dE/dz agrees in direction with a finite difference of
    the hard cascade's E: E(z + h g/|g|) > E(z - h g/|g|), h = 0.1 (E is piecewise constant at
    small scales). Measured on these 8 candidates: the difference quotient is positive on 7 of 8
    (-0.09 to 1.87 px per unit of z, mean 0.68); a random direction's is positive on 3 of 8."""
    from facefill_core.imaging import damaged
    from facefill_core.losses import landmark_distance

    g = prior[0]
    k = 8
    inp = _inp(prior, method="si-ld+", candidates=k, steer_pairs=16, steer_target="whole", landmark_threads=1)
    z = torch.rand(k, g.z_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y, m = faces[:1].repeat_interleave(k, 0), make_masks(MaskConfig("centre"), 1).repeat_interleave(k, 0)
    refs = inp._points(damaged(faces[:1], m[:1]))
    est = inp._antithetic_grad(z, refs, [0], 0, y, m)
    u = est / est.norm(dim=1, keepdim=True)

    def e(zz):
        with torch.no_grad():
            return landmark_distance(np.repeat(refs, k, 0), inp._points(g(zz), rounded=False))

    slope = (e(z + 0.1 * u) - e(z - 0.1 * u)) / 0.2
    assert (slope > 0).sum() >= 7 and slope.mean() > 0.5, slope


def test_auto_backend_is_cpp_on_cpu(prior):
    assert _inp(prior, method="si-ld").backend == "cpp"
    assert _inp(prior, method="si-ld", landmark_backend="torch").backend == "torch"


@pytest.mark.gpu
def test_cuda_search_uses_the_torch_cascade(prior, faces):
    """On CUDA, ``auto`` puts the landmark cascade next to the models (torch backend); the search
    keeps the known pixels exactly and its per-step Ld agrees with the C++ batch on the same z."""
    g, d, meta = prior
    h = make_masks(MaskConfig("centre"), 2)
    inp = LatentSearchInpainter(
        g, d, InpaintConfig(method="si-ld", candidates=4, iters=5), box=meta["box"], device="cuda"
    )
    assert inp.backend == "torch" and inp.tsp is not None
    r = inp.inpaint(faces, h, record_ld=True)
    assert torch.equal(torch.where(h > 0, 0.0, r.completed), torch.where(h > 0, 0.0, faces))
    assert r.ld_trace.shape == (5, 8) and np.isfinite(r.ld_trace).all()
    ld_cpp = inp._penalties(
        inp.predictor.predict(to_uint8_nhwc(damaged(r.generated, h)), box=meta["box"]),
        inp._points(damaged(faces, h)),
        1,
    )
    assert np.array_equal(ld_cpp, r.ld.numpy()) or np.mean(ld_cpp == r.ld.numpy()) >= 0.5
    for method in ("si-ld+", "si-ldsoft"):
        s = LatentSearchInpainter(
            g,
            d,
            InpaintConfig(method=method, candidates=4, iters=4, steer_start=0.0, steer_every=2),
            box=meta["box"],
            device="cuda",
        ).inpaint(faces, h)
        assert torch.isfinite(s.completed).all() and (s.steer > 0).all()
