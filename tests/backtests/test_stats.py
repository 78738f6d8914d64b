"""Statistics for honest comparison: seed intervals, PSR/DSR and paired tests against known values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from backtests.stats import (
    compare_results,
    compare_returns,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    mean_ci,
    newey_west_lags,
    newey_west_test,
    probabilistic_sharpe_ratio,
    seed_table,
    sharpe_ratio,
    stationary_bootstrap_test,
)
from envs.errors import ConfigError, DataError

RETURNS = [0.02, -0.01, 0.03, 0.01, -0.02, 0.04]
# By hand: mean 0.0116667, sample std 0.0231661 -> SR 0.5036102; moment skewness -0.2193003 and
# kurtosis 1.6567648; z = SR sqrt(5) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2) = 1.0491493;
# PSR = Phi(z) = 0.8529453.
PSR = 0.8529453013019086
# DSR with N = 10 trials whose Sharpe ratios vary by V = 0.01:
# SR0 = 0.1 ((1 - g) Phi^-1(0.9) + g Phi^-1(1 - 1 / (10 e))) = 0.1574598; PSR(SR0) = 0.7645822.
SR0 = 0.157459830134575
DSR = 0.7645821717109241


def test_mean_ci_uses_student_t() -> None:
    # mean 2.5, std 1.2909944, t(0.975, 3) = 3.1824463 -> half width 3.1824463 * 1.2909944 / 2 = 2.0542603.
    s = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert s.n == 4
    assert s.mean == 2.5
    assert s.low == pytest.approx(2.5 - 2.0542603, rel=1e-6)
    assert s.high == pytest.approx(2.5 + 2.0542603, rel=1e-6)
    assert "95% CI" in str(s)


def test_one_seed_has_no_interval_and_says_so() -> None:
    s = mean_ci([0.3])
    assert s.n == 1
    assert s.mean == 0.3
    assert math.isnan(s.low)
    assert math.isnan(s.high)
    assert s.note == "one seed: no interval"
    assert "no interval" in str(s)


def test_intervals_are_clipped_to_the_values_a_metric_can_take() -> None:
    # Win rates 0.5, 0.9, 1.0: the t-interval (0.8 +- 0.657) reaches above 100%.
    wide = mean_ci([0.5, 0.9, 1.0])
    assert wide.high > 1.0
    clipped = mean_ci([0.5, 0.9, 1.0], bounds=(0.0, 1.0))
    assert clipped.mean == wide.mean
    assert clipped.low == wide.low  # inside the range nothing is narrowed
    assert clipped.high == 1.0
    drawdowns = mean_ci([-0.01, -0.02, -0.30], bounds=(-math.inf, 0.0))
    assert drawdowns.high == 0.0


def test_two_seeds_give_an_interval_marked_not_meaningful() -> None:
    s = mean_ci([0.2, 1.0], bounds=(0.0, 1.0))
    assert s.n == 2
    assert not s.meaningful
    assert 0.0 <= s.low <= s.mean <= s.high <= 1.0
    assert "too few" in s.note
    assert "[" not in str(s)
    assert mean_ci([0.2, 1.0, 0.5]).meaningful


def test_seed_table_clips_each_metric_to_its_range_and_marks_two_seeds() -> None:
    from types import SimpleNamespace

    def result(win_rate: float, trades: int, max_drawdown: float) -> Any:
        metrics = SimpleNamespace(win_rate=win_rate, trades=trades, max_drawdown=max_drawdown)
        return SimpleNamespace(metrics=metrics)

    runs = {
        "three": [result(0.3, 0, -0.01), result(0.95, 1, -0.02), result(1.0, 40, -0.3)],
        "two": [result(0.7, 2, -0.05), result(1.0, 90, -0.01)],
    }
    table = seed_table(runs, metrics=("win_rate", "trades", "max_drawdown")).set_index(["policy", "metric"])
    assert table.loc[("three", "win_rate"), "high"] == 1.0
    assert table.loc[("three", "trades"), "low"] == 0.0
    assert table.loc[("three", "max_drawdown"), "high"] == 0.0
    assert table.loc[("three", "win_rate"), "note"] == ""
    assert 0.0 <= table.loc[("two", "win_rate"), "low"] <= table.loc[("two", "win_rate"), "high"] <= 1.0
    assert "too few" in table.loc[("two", "trades"), "note"]


def test_mean_ci_refuses_bad_input() -> None:
    with pytest.raises(DataError, match="at least 1"):
        mean_ci([])
    with pytest.raises(ConfigError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_probabilistic_sharpe_ratio_matches_hand_computation() -> None:
    assert sharpe_ratio(RETURNS) == pytest.approx(0.5036101551853348, rel=1e-12)
    assert probabilistic_sharpe_ratio(RETURNS) == pytest.approx(PSR, rel=1e-9)
    # Against a higher bar it can only be less likely.
    assert probabilistic_sharpe_ratio(RETURNS, 0.3) < PSR


def test_deflated_sharpe_ratio_matches_hand_computation() -> None:
    assert expected_max_sharpe(10, 0.01) == pytest.approx(SR0, rel=1e-9)
    assert expected_max_sharpe(1, 0.01) == 0.0
    d = deflated_sharpe_ratio(RETURNS, 10, sharpe_variance=0.01)
    assert d.sr0 == pytest.approx(SR0, rel=1e-9)
    assert d.dsr == pytest.approx(DSR, rel=1e-9)
    # More trials raise the bar and lower the DSR.
    assert deflated_sharpe_ratio(RETURNS, 100, sharpe_variance=0.01).dsr < d.dsr
    from_trials = deflated_sharpe_ratio(RETURNS, 3, trial_sharpes=[0.1, 0.3, 0.5])
    assert from_trials.sharpe_variance == pytest.approx(0.04)
    with pytest.raises(ConfigError, match="exactly one"):
        deflated_sharpe_ratio(RETURNS, 3)


def test_newey_west_matches_hand_computation() -> None:
    d = [1.0, -1.0, 2.0, 0.0, 3.0, -2.0]
    # mean 0.5; e = d - 0.5; g0 = 17.5 / 6; g1 = -11.25 / 6; lag 1 weight 1/2:
    # variance = 2.9166667 - 1.875 = 1.0416667; se = sqrt(1.0416667 / 6) = 0.4166667; t = 1.2.
    t = newey_west_test(d, lags=1)
    assert t.method == "newey_west"
    assert t.mean_diff == pytest.approx(0.5)
    assert t.std_error == pytest.approx(0.4166667, rel=1e-6)
    assert t.statistic == pytest.approx(1.2, rel=1e-9)
    assert t.p_value == pytest.approx(2.0 * stats.t.sf(1.2, 5), rel=1e-9)
    assert newey_west_lags(1_000) == 6  # floor(4 * 10^(2/9)) = floor(6.63)


def test_paired_tests_detect_an_edge_and_not_noise() -> None:
    rng = np.random.default_rng(7)
    bench = rng.normal(0.0, 0.01, 3_000)
    noise = bench + rng.normal(0.0, 0.002, 3_000)
    edge = bench + 0.0005 + rng.normal(0.0, 0.002, 3_000)
    for method in ("newey_west", "stationary_bootstrap"):
        assert compare_returns(edge, bench, method=method, seed=1, n_boot=500).p_value < 0.01
        assert compare_returns(noise, bench, method=method, seed=1, n_boot=500).p_value > 0.05


def test_stationary_bootstrap_is_seeded_and_close_to_the_iid_standard_error() -> None:
    x = np.random.default_rng(3).normal(0.001, 0.01, 2_000)
    a = stationary_bootstrap_test(x, seed=5, n_boot=400)
    b = stationary_bootstrap_test(x, seed=5, n_boot=400)
    assert a == b
    assert a.seed == 5
    assert a.n_boot == 400
    assert a.mean_block == pytest.approx(2_000 ** (1 / 3))
    assert a.std_error == pytest.approx(0.01 / math.sqrt(2_000), rel=0.15)
    assert a.low < a.mean_diff < a.high
    assert stationary_bootstrap_test(x, seed=6, n_boot=400) != a


def test_paired_series_must_have_equal_length() -> None:
    with pytest.raises(DataError, match="differ in length"):
        newey_west_test([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="unknown method"):
        compare_returns([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], method="bogus")  # type: ignore[arg-type]


def test_compare_results_aligns_two_backtests_on_common_bars() -> None:
    from backtests.vectorized import buy_and_hold_targets, flat_targets, run_targets
    from tests.envs.test_replay import make_bars

    bars = make_bars(600, seed=2)
    hold = run_targets(bars, buy_and_hold_targets(len(bars)), name="hold")
    flat = run_targets(bars.iloc[100:], flat_targets(len(bars) - 100), name="flat")
    test = compare_results(flat, hold)
    assert test.n == len(bars) - 100 - 1
    hold_returns = hold.equity.iloc[100:].pct_change().iloc[1:].to_numpy()
    assert test.mean_diff == pytest.approx(-float(np.mean(hold_returns)), rel=1e-12)
    with pytest.raises(DataError, match="share 0 bar"):
        compare_results(
            run_targets(bars.iloc[:50], flat_targets(50)), run_targets(bars.iloc[60:], flat_targets(540))
        )


def test_seed_table_gives_intervals_and_says_when_there_is_one_seed() -> None:
    from backtests.vectorized import random_targets, run_targets
    from tests.envs.test_replay import make_bars

    bars = make_bars(400, seed=1)
    runs = {
        "random": [run_targets(bars, random_targets(len(bars), seed, hold=20)) for seed in range(3)],
        "once": [run_targets(bars, random_targets(len(bars), 9, hold=20))],
    }
    table = seed_table(runs, metrics=("total_return", "trades"))
    row = table[(table.policy == "random") & (table.metric == "total_return")].iloc[0]
    values = [r.metrics.total_return for r in runs["random"]]
    assert row.n == 3
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row.low < row["mean"] < row.high
    once = table[(table.policy == "once") & (table.metric == "trades")].iloc[0]
    assert once.n == 1
    assert math.isnan(once.low)
    assert once.note == "one seed: no interval"
