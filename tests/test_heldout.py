import math

from bench.heldout import MASKS, plateau_gain


def _curve(fn, iters):
    return {i: {m: (fn(i), 0.5) for m in MASKS} for i in iters}


def test_still_improving_curve_is_not_a_plateau():
    g = plateau_gain(_curve(lambda i: 20 + i / 1000, range(250, 4001, 250)))  # +1 dB per 1000 iterations
    # last two points 3875 on average vs 3000: 0.875 dB
    assert all(abs(v - 0.875) < 1e-9 for v in g.values())


def test_flat_curve_is_a_plateau():
    g = plateau_gain(_curve(lambda i: 25 - 5 * math.exp(-i / 300), range(250, 4001, 250)))
    assert all(0 <= v < 0.1 for v in g.values())


def test_too_short_curve_gives_nan():
    assert all(math.isnan(v) for v in plateau_gain(_curve(lambda i: 20.0, [250, 500])).values())
