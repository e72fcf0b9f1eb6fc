"""The statistics every decision rests on, fed synthetic data with a known effect and a known null."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadprof.analysis import stats


def test_estimate_median_iqr_and_ci():
    e = stats.estimate([1.0, 2.0, 3.0, None, float("nan"), True])
    assert (e.median, e.q1, e.q3, e.n) == (2.0, 1.5, 2.5, 3) and e.lo <= 2.0 <= e.hi and e.spread == 0.5
    one = stats.estimate([4.0])
    assert (one.median, one.n, one.lo, one.hi, one.spread) == (4.0, 1, None, None, 0.0)
    assert stats.estimate([]) is None


def test_compare_needs_repeats_and_is_deterministic():
    assert stats.compare_repeats([1.0], [2.0]).distinguishable is None
    assert stats.compare_repeats([1, 1.01, 0.99], [1.5, 1.51, 1.49]) == stats.compare_repeats([1, 1.01, 0.99], [1.5, 1.51, 1.49])
    assert stats.compare_repeats([1, 1.01, 0.99], [1.5, 1.51, 1.49]).distinguishable is True
    assert stats.compare_repeats([1.0] * 3, [1.0] * 3).distinguishable is False


def test_compare_finds_a_known_effect_and_not_a_known_null():
    rng = np.random.default_rng(3)
    effect = sum(bool(stats.compare_repeats(rng.normal(1, .03, 5), rng.normal(1.15, .03, 5)).distinguishable)
                 for _ in range(300))
    null = sum(bool(stats.compare_repeats(rng.normal(1, .03, 5), rng.normal(1, .03, 5)).distinguishable) for _ in range(300))
    assert effect >= 285 and null <= 30


@pytest.mark.parametrize("t, df, p", [(12.706, 1, 0.05), (2.776, 4, 0.05), (2.042, 30, 0.05), (0.0, 5, 1.0),
                                      (1.96, 10**6, 0.05)])
def test_student_t_tail_matches_the_tables(t, df, p):
    assert stats.t_two_sided_p(t, df) == pytest.approx(p, abs=5e-4)


def test_gate_test_controls_the_family_wise_error_and_keeps_its_power():
    """20 comparisons of 3 vs 3 repeats: pure noise fails the family in about 5% of runs; a 1.5x slowdown of one
    figure among them is found in nearly every run."""
    rng = np.random.default_rng(5)
    runs, false_fail, found = 400, 0, 0
    for _ in range(runs):
        ps = [stats.t_test_p(rng.lognormal(0, .1, 3), rng.lognormal(0, .1, 3)) for _ in range(20)]
        false_fail += any(stats.holm(ps))
        ps[0] = stats.t_test_p(rng.lognormal(0, .05, 3), rng.lognormal(math.log(1.5), .05, 3))
        found += stats.holm(ps)[0]
    assert false_fail <= 0.09 * runs and found >= 0.9 * runs
    assert stats.t_test_p([1.0, 1.1], [2.0, 2.1]) is None  # too few repeats: undecided, never a pass


def test_holm_steps_down():
    assert stats.holm([0.001, 0.02, 0.04]) == [True, True, True]
    assert stats.holm([0.001, 0.03, 0.04]) == [True, False, False]
    assert stats.holm([]) == []


CAPS = [32, 64, 128, 256, 512, 1024, 2048]


def test_trend_exact_linear_bytes_and_quadratic_with_a_spare_point():
    lin = stats.trend(CAPS, [24576 * c + 1000 for c in CAPS])
    assert lin.model == "linear" and lin.effect is True and lin.slope == pytest.approx(24576) and lin.exact
    quad = stats.trend(CAPS[:4], [56 * (64 + c) ** 2 for c in CAPS[:4]])
    assert quad.model == "quadratic" and quad.coefficients["quadratic"][0] == pytest.approx(56)


def test_trend_finds_a_known_slope_and_not_a_null_in_noise():
    rng = np.random.default_rng(11)
    xs = CAPS * 2
    claimed_null = sum(bool(stats.trend(xs, [1 + rng.normal(0, .05) for _ in xs]).effect) for _ in range(200))
    found = sum(bool(stats.trend(xs, [1 + 0.0005 * x + rng.normal(0, .05) for x in xs]).effect) for _ in range(200))
    assert claimed_null <= 20 and found >= 190
    few = stats.trend([1, 2, 3], [1.0, 2.1, 2.9])
    assert few.effect is None  # 3 observations for 2 parameters: no claim


def test_knee_found_where_the_slope_jumps_and_not_on_a_line():
    ys = [c * 0.01 if c < 512 else 5.12 + (c - 512) * 0.1 for c in CAPS]
    k = stats.knee(CAPS, ys)
    assert k is not None and k.at == 512 and k.slope_after > 5 * k.slope_before
    assert stats.knee(CAPS, [0.01 * c for c in CAPS]) is None
