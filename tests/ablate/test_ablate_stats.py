"""Statistics of the ablation report: Student-t quantiles against tabulated values, mean ± CI,
rollouts to a target accuracy, moving averages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlpp.ablate.stats import mean_ci, moving_average, rollouts_to_target, t_cdf, t_quantile

# Two-sided 95% (0.975 quantile) and 90% (0.95 quantile) critical values from standard t tables.
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 10: 2.2281, 20: 2.0860,
        29: 2.0452, 30: 2.0423, 60: 2.0003, 120: 1.9799}
T95 = {1: 6.3138, 2: 2.9200, 5: 2.0150, 10: 1.8125, 30: 1.6973}


@pytest.mark.parametrize("df,expected", sorted(T975.items()))
def test_t_quantile_975_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("df,expected", sorted(T95.items()))
def test_t_quantile_95_matches_tables(df, expected):
    assert t_quantile(0.95, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_symmetry_normal_limit_and_cdf_round_trip():
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-4)
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    for df in (1, 2, 6, 25):
        for p in (0.01, 0.3, 0.9, 0.999):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_mean_ci():
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and h == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    m, h = mean_ci([0.40, 0.44])  # s = 0.02828, n = 2, t = 12.706
    assert m == pytest.approx(0.42) and h == pytest.approx(12.7062 * 0.028284 / math.sqrt(2), rel=1e-4)
    m, h = mean_ci([0.5])
    assert m == 0.5 and math.isnan(h)  # no interval from one seed
    m, h = mean_ci([1.0, float("nan"), 3.0])  # NaN left out
    assert m == pytest.approx(2.0) and h == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), rel=1e-4)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([0.3, 0.3, 0.3])[1] == 0.0


def test_rollouts_to_target_interpolates_between_evaluations():
    rollouts, acc = [0, 1000, 2000, 3000], [0.30, 0.34, 0.40, 0.38]
    assert rollouts_to_target(rollouts, acc, 0.37) == pytest.approx(1500.0)  # 1000 + (0.03 / 0.06) * 1000
    assert rollouts_to_target(rollouts, acc, 0.40) == pytest.approx(2000.0)
    assert rollouts_to_target(rollouts, acc, 0.34) == pytest.approx(1000.0)
    assert rollouts_to_target(rollouts, acc, 0.29) == 0.0  # already there before training
    assert rollouts_to_target(rollouts, acc, 0.41) is None  # not reached
    # the first crossing counts, not a later one
    assert rollouts_to_target([0, 10, 20, 30], [0.1, 0.5, 0.2, 0.6], 0.3) == pytest.approx(5.0)


def test_rollouts_to_target_tolerates_float_noise_of_a_mean():
    target = float(np.mean([0.1, 0.2, 0.3]))  # 0.20000000000000004: the seed at 0.2 sits on the mean
    assert target > 0.2
    assert rollouts_to_target([0, 100], [0.1, 0.2], target) == pytest.approx(100.0, abs=1e-3)


def test_moving_average_is_trailing_and_skips_nan():
    out = moving_average([1, 2, 3, 4, float("nan"), 6], 3)
    np.testing.assert_allclose(out, [1, 1.5, 2, 3, 3.5, 5])
    np.testing.assert_allclose(moving_average([5, 7], 1), [5, 7])


def test_paired_ratio_is_a_geometric_mean_with_a_t_interval_on_the_logs():
    from rlpp.ablate.stats import paired_ratio

    pr = paired_ratio([(50.0, 100.0), (80.0, 100.0), (40.0, 50.0)])
    logs = np.log([0.5, 0.8, 0.8])
    assert pr["mean"] == pytest.approx(float(np.exp(logs.mean())))
    half = t_quantile(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
    assert pr["lo"] == pytest.approx(float(np.exp(logs.mean() - half)))
    assert pr["hi"] == pytest.approx(float(np.exp(logs.mean() + half)))
    assert pr["censored"] == 0 and pr["ratios"] == [0.5, 0.8, 0.8]


def test_a_seed_that_never_got_there_leaves_the_interval_open_above():
    from rlpp.ablate.stats import paired_ratio

    pr = paired_ratio([(50.0, 100.0), (None, 100.0), (60.0, 100.0)])
    assert pr["censored"] == 1 and pr["hi"] == float("inf") and pr["ratios"][1] is None
    assert pr["mean"] == pytest.approx(float(np.sqrt(0.5 * 0.6)))  # over the seeds that got there: a lower bound
    none = paired_ratio([(None, 100.0)])
    assert np.isnan(none["mean"]) and none["censored"] == 1
