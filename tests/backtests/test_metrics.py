"""Metrics: hand-computed values on a five-bar curve, annualization by timeframe and calendar."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from backtests.metrics import (
    compute_metrics,
    detect_calendar,
    drawdown_duration,
    periods_per_year,
    round_trips,
)
from envs.data import load_dataset
from envs.errors import ConfigError, DataError

# Five daily bars, Monday to Friday: no weekend, so the calendar is "equity" (252 periods a year).
INDEX = pd.date_range("2024-01-01", periods=5, freq="1D", tz="UTC")
EQUITY = pd.Series([100.0, 110.0, 99.0, 99.0, 118.8], index=INDEX)
# Returns: +10%, -10%, 0%, +20%. mean 0.05; deviations .05 -.15 -.05 .15 -> sum of squares 0.05,
# sample variance 0.05 / 3, std 0.1290994449.
STD = math.sqrt(0.05 / 3)
TRADES = pd.DataFrame(
    {
        # "a" was closed in two slices (+5, -2 -> +3), then "b" lost 4 and "c" won 6.
        "trade_id": ["a:1", "a:2", "b:1", "c:1"],
        "pnl": [5.0, -2.0, -4.0, 6.0],
    }
)
FILLS = pd.DataFrame({"filled_qty": [1.0, 1.0, 2.0], "price": [100.0, 99.0, 110.0], "fee": [0.1, 0.1, 0.2]})
POSITIONS = [0.0, 1.0, 1.0, 0.0, 2.0]


@pytest.fixture(scope="module")
def metrics():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return compute_metrics(EQUITY, positions=POSITIONS, fills=FILLS, trades=TRADES, borrow_paid=0.5)


def test_return_metrics_match_hand_computation(metrics) -> None:  # type: ignore[no-untyped-def]
    assert metrics.calendar == "equity"
    assert metrics.periods_per_year == 252.0
    assert metrics.timeframe == "1d"
    assert metrics.total_return == pytest.approx(0.188)
    assert metrics.cagr == pytest.approx(1.188 ** (252 / 4) - 1.0)
    assert metrics.sharpe == pytest.approx(0.05 / STD * math.sqrt(252))
    # Downside deviation: sqrt(mean(min(r, 0)^2)) = sqrt(0.01 / 4) = 0.05.
    assert metrics.sortino == pytest.approx(0.05 / 0.05 * math.sqrt(252))
    assert metrics.volatility == pytest.approx(STD * math.sqrt(252))
    assert metrics.max_drawdown == pytest.approx(99.0 / 110.0 - 1.0)
    assert metrics.calmar == pytest.approx(metrics.cagr / (1.0 - 99.0 / 110.0))


def test_drawdown_duration_runs_from_the_peak_to_the_recovery(metrics) -> None:  # type: ignore[no-untyped-def]
    # Peak 110 at bar 1, first back at or above it at bar 4 (118.8): 3 bars, 3 days.
    assert metrics.max_drawdown_bars == 3
    assert metrics.max_drawdown_duration == str(pd.Timedelta(days=3))
    # Never recovered: the spell runs to the last bar.
    assert drawdown_duration([100.0, 120.0, 90.0, 100.0, 110.0]) == (3, 1, 4)
    assert drawdown_duration([1.0, 2.0, 3.0]) == (0, 0, 0)


def test_trade_metrics_count_round_trips_not_slices(metrics) -> None:  # type: ignore[no-untyped-def]
    assert list(round_trips(TRADES)) == [3.0, -4.0, 6.0]
    assert metrics.trades == 3
    assert metrics.win_rate == pytest.approx(2 / 3)
    assert metrics.profit_factor == pytest.approx(9.0 / 4.0)
    assert metrics.expectancy == pytest.approx(5.0 / 3.0)


def test_exposure_turnover_and_costs(metrics) -> None:  # type: ignore[no-untyped-def]
    assert metrics.exposure == pytest.approx(3 / 4)  # bars 1..4 ending with a position
    mean_equity = (100.0 + 110.0 + 99.0 + 99.0 + 118.8) / 5
    assert metrics.turnover == pytest.approx((100.0 + 99.0 + 220.0) / mean_equity)
    assert metrics.annual_turnover == pytest.approx(metrics.turnover * 252 / 4)
    assert metrics.fees_paid == pytest.approx(0.4)
    assert metrics.borrow_paid == 0.5
    assert (metrics.start_equity, metrics.final_equity, metrics.bars) == (100.0, 118.8, 5)


def test_no_trades_and_a_flat_curve_give_nan_not_warnings() -> None:
    flat = pd.Series(100.0, index=INDEX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(flat)
    assert m.total_return == 0.0
    assert math.isnan(m.sharpe)
    assert math.isnan(m.win_rate)
    assert m.trades == 0
    assert m.max_drawdown == 0.0


@pytest.mark.parametrize(
    ("timeframe", "calendar", "expected"),
    [
        ("1h", "24/7", 8760.0),
        ("1m", "24/7", 525_600.0),
        ("1d", "24/7", 365.0),
        ("1h", "fx", 6048.0),
        ("4h", "fx", 1512.0),
        ("1d", "fx", 252.0),
        ("1d", "equity", 252.0),
        ("1m", "equity", 98_280.0),
        ("1w", "equity", 252.0 / 7.0),
    ],
)
def test_periods_per_year(timeframe: str, calendar: str, expected: float) -> None:
    assert periods_per_year(timeframe, calendar) == pytest.approx(expected)


def test_unknown_calendar_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown calendar 'crypto'"):
        periods_per_year("1h", "crypto")


def test_calendar_is_detected_from_weekend_bars_and_hours() -> None:
    crypto = pd.date_range("2024-01-01", periods=24 * 14, freq="1h", tz="UTC")
    assert detect_calendar(crypto) == "24/7"
    assert (
        detect_calendar(pd.DatetimeIndex(load_dataset("eurusd_1h").index)) == "fx"
    )  # Sunday-evening opens only
    assert detect_calendar(pd.DatetimeIndex(load_dataset("googl_1d").index)) == "equity"
    session = pd.DatetimeIndex(
        [
            d + pd.Timedelta(hours=h)
            for d in pd.bdate_range("2024-01-01", periods=10, tz="UTC")
            for h in range(14, 21)
        ]
    )
    assert detect_calendar(session) == "equity"


def test_calendar_override_changes_annualization() -> None:
    m = compute_metrics(EQUITY, calendar="24/7")
    assert m.periods_per_year == 365.0
    assert m.sharpe == pytest.approx(0.05 / STD * math.sqrt(365))


def test_too_short_or_untimed_curves_are_data_errors() -> None:
    with pytest.raises(DataError, match="at least two equity points"):
        compute_metrics(EQUITY.iloc[:1])
    with pytest.raises(DataError, match="not indexed by time"):
        compute_metrics(pd.Series(np.ones(3)))
