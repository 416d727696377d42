"""facefill_core.stats: cell statistics over images x seeds and paired differences, against
closed forms (balanced one-way ANOVA) and a coverage simulation."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from facefill_core.metrics import mean_ci
from facefill_core.stats import cell_stats, paired_stats, t_half_width


def test_t_half_width_closed_form():
    # values 1..5: sd = sqrt(2.5), t(0.975, 4) = 2.776445
    assert t_half_width([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert math.isnan(t_half_width([3.0]))
    with pytest.raises(ValueError, match="confidence must be in"):
        t_half_width([1.0, 2.0], confidence=1.0)


def test_one_seed_is_the_interval_over_images():
    v = [21.0, 23.5, 19.0, 25.0]
    c = cell_stats({i: [x] for i, x in enumerate(v)})
    assert c.as_tuple() == pytest.approx(mean_ci(v))
    assert (c.n_images, c.n_seeds, c.n_values) == (4, 1, 4)
    assert math.isnan(c.seed_sd) and math.isnan(c.noise_share)


def test_balanced_nested_closed_form():
    # 3 images x 2 seeds: image means 2, 6, 10 (var 16); within-image deviations +-1, +-2, +-3
    data = {"a": [1.0, 3.0], "b": [4.0, 8.0], "c": [7.0, 13.0]}
    c = cell_stats(data)
    assert c.mean == 6.0
    assert c.half_width == pytest.approx(sps.t.ppf(0.975, 2) * 4.0 / math.sqrt(3))
    ms_within = (2 * 1 + 2 * 4 + 2 * 9) / 3  # sum of squares 28 over 3 degrees of freedom
    assert c.seed_sd == pytest.approx(math.sqrt(ms_within))
    assert c.noise_share == pytest.approx(ms_within / 2 / 16)
    # the ANOVA identity: k * var(image means) is the between-image mean square
    between = 2 * np.var([2.0, 6.0, 10.0], ddof=1)
    assert between == 32.0


def test_unbalanced_seeds_and_failures():
    # a None and a NaN are failures: left out, never averaged; an image with no value is dropped
    data = {"a": [1.0, 3.0, None], "b": [5.0, float("nan")], "c": [None]}
    c = cell_stats(data)
    assert (c.n_images, c.n_seeds, c.n_values) == (2, 2, 3)
    assert c.mean == 3.5  # mean of image means 2 and 5
    assert c.seed_sd == pytest.approx(math.sqrt(2.0))  # only image a has 2 seeds: (1 + 1) / 1
    # noise variance: 2 * mean(1/2, 1/1) = 1.5 over var(2, 5) = 4.5
    assert c.noise_share == pytest.approx(1.5 / 4.5)
    empty = cell_stats({"a": [None]})
    assert empty.n_images == 0 and math.isnan(empty.mean)


def test_noise_share_capped_at_one():
    c = cell_stats({"a": [0.0, 10.0], "b": [5.0, 5.0]})  # image means equal: all spread is seed noise
    assert c.noise_share == 1.0 and c.half_width == 0.0


def test_interval_covers_seed_noise():
    """Its purpose: with large seed noise, the nested interval keeps ~95% coverage where the
    naive interval over all images x seeds (as if independent) does not."""
    rng = np.random.default_rng(0)
    n, k, sims, mu = 8, 5, 600, 20.0
    hit_nested = hit_naive = 0
    for _ in range(sims):
        a = rng.normal(0, 0.5, n)
        y = mu + a[:, None] + rng.normal(0, 2.0, (n, k))
        c = cell_stats({i: list(y[i]) for i in range(n)})
        hit_nested += abs(c.mean - mu) <= c.half_width
        m, h, _ = mean_ci(list(y.ravel()))
        hit_naive += abs(m - mu) <= h
    assert 0.92 <= hit_nested / sims <= 0.98
    assert hit_naive / sims < 0.92  # treats 40 correlated values as independent: too narrow


def test_paired_stats_closed_form():
    a = {"x": [2.0, 4.0], "y": [5.0, 7.0], "z": [1.0], "only_a": [9.0]}
    b = {"x": [1.0], "y": [3.0, 3.0], "z": [0.0, 2.0], "only_b": [9.0]}
    p = paired_stats(a, b)
    assert p.differences == (2.0, 3.0, 0.0)  # 3-1, 6-3, 1-1; unpaired images left out
    assert p.n_images == 3 and (p.n_seeds_a, p.n_seeds_b) == (2, 2)
    assert p.mean == pytest.approx(5 / 3)
    assert p.half_width == pytest.approx(t_half_width([2.0, 3.0, 0.0]))
    assert not p.excludes_zero  # 1.67 ± 3.79
    q = paired_stats({"x": [1.0], "y": [2.0], "z": [1.5]}, {"x": [0.0], "y": [1.1], "z": [0.4]})
    assert q.excludes_zero and q.mean == pytest.approx(1.0)
    assert not paired_stats({"x": [1.0]}, {"x": [0.0]}).excludes_zero  # one image: no interval
