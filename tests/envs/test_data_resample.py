"""Resampling to higher timeframes, timeframe names and Parquet output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.data import (
    OHLCV_COLUMNS,
    format_timeframe,
    load_ohlcv,
    parse_timeframe,
    resample_ohlcv,
    save_parquet,
)
from envs.errors import ConfigError, DataError

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def hand_built(n: int, start: pd.Timestamp = T0) -> pd.DataFrame:
    """Bar i: open i+1, high i+3, low i+0.5, close i+2, volume 10*(i+1) (easy to aggregate by hand)."""
    i = np.arange(n, dtype=np.float64)
    index = pd.date_range(start, periods=n, freq="1min", name="timestamp").as_unit("ns")
    return pd.DataFrame(
        {"open": i + 1, "high": i + 3, "low": i + 0.5, "close": i + 2, "volume": 10 * (i + 1)}, index=index
    )


def test_ten_minutes_to_five_minute_bars() -> None:
    out = resample_ohlcv(hand_built(10), "5m")
    assert list(out.index) == [T0, T0 + pd.Timedelta(minutes=5)]
    assert out.iloc[0].tolist() == [
        1.0,
        7.0,
        0.5,
        6.0,
        150.0,
    ]  # open bar 0, high bar 4, low bar 0, close bar 4
    assert out.iloc[1].tolist() == [6.0, 12.0, 5.5, 11.0, 400.0]
    assert list(out.columns) == list(OHLCV_COLUMNS)
    assert pd.DatetimeIndex(out.index).unit == "ns"
    assert out.index.name == "timestamp"


def test_incomplete_trailing_bar_is_dropped_unless_kept() -> None:
    bars = hand_built(7)
    assert len(resample_ohlcv(bars, "5m")) == 1
    kept = resample_ohlcv(bars, "5m", keep_partial=True)
    assert len(kept) == 2
    assert kept.iloc[1].tolist() == [6.0, 9.0, 5.5, 8.0, 130.0]


def test_bins_are_labelled_by_open_time_and_aligned_to_the_clock() -> None:
    out = resample_ohlcv(hand_built(12, start=T0 + pd.Timedelta(minutes=3)), "5m")
    assert list(out.index) == [T0, T0 + pd.Timedelta(minutes=5), T0 + pd.Timedelta(minutes=10)]
    assert out.iloc[0]["open"] == 1.0  # the leading bin holds the bars from 00:03


def test_gaps_leave_no_empty_bars() -> None:
    bars = hand_built(15).drop(hand_built(15).index[5:10])
    out = resample_ohlcv(bars, "5m")
    assert list(out.index) == [T0, T0 + pd.Timedelta(minutes=10)]
    assert not out.isna().any().any()


def test_daily_to_weekly_starts_on_monday() -> None:
    index = pd.date_range("2024-01-03", periods=21, freq="1D", tz="UTC", name="timestamp")  # a Wednesday
    daily = pd.DataFrame({c: 1.0 for c in OHLCV_COLUMNS}, index=index)
    out = resample_ohlcv(daily, "1w")
    assert all(ts.day_of_week == 0 for ts in out.index)
    # The leading bin (Wednesday 3rd to Sunday 7th) is labelled by its Monday, 1 January.
    assert list(out.index) == [pd.Timestamp(d, tz="UTC") for d in ("2024-01-01", "2024-01-08", "2024-01-15")]
    assert out["volume"].tolist() == [5.0, 7.0, 7.0]  # the bin of the 22nd is incomplete and dropped


@pytest.mark.parametrize("rule", ["30s", "90s"])
def test_target_must_be_a_multiple_of_the_source(rule: str) -> None:
    with pytest.raises(DataError, match=r"cannot resample 1m bars to"):
        resample_ohlcv(hand_built(10), rule)
    hourly = hand_built(10).set_axis(pd.date_range(T0, periods=10, freq="1h", name="timestamp"))
    with pytest.raises(DataError, match=r"cannot resample 1h bars to 90m.*multiple of 1h"):
        resample_ohlcv(hourly, "90m")


@pytest.mark.parametrize("rule", ["1M", "fast", "0h", "1y"])
def test_bad_rules_are_refused(rule: str) -> None:
    with pytest.raises(ConfigError, match="timeframe"):
        resample_ohlcv(hand_built(10), rule)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1m", "1m"), ("1min", "1m"), ("15T", "15m"), ("4H", "4h"), ("1d", "1d"), ("2W", "2w"), ("90s", "90s")],
)
def test_timeframe_names(text: str, expected: str) -> None:
    assert format_timeframe(parse_timeframe(text)) == expected


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), factor=st.sampled_from([2, 3, 5, 15, 60]), seed=st.integers(0, 1000))
def test_resampling_preserves_extremes_and_volume(n: int, factor: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bars = hand_built(n)
    bars["high"] += rng.uniform(0, 5, n)
    bars["volume"] = rng.uniform(0, 100, n)
    out = resample_ohlcv(bars, f"{factor}m", keep_partial=True)
    assert out["volume"].sum() == pytest.approx(bars["volume"].sum())
    assert out["high"].max() == bars["high"].max()
    assert out["low"].min() == bars["low"].min()
    assert out["open"].iloc[0] == bars["open"].iloc[0]
    assert out["close"].iloc[-1] == bars["close"].iloc[-1]
    complete = resample_ohlcv(bars, f"{factor}m")
    assert len(complete) == n // factor


def test_save_parquet_round_trip_and_atomic_output(tmp_path: Path) -> None:
    bars = hand_built(30)
    bars.attrs["symbol"] = "X/Y"
    path = save_parquet(resample_ohlcv(bars, "5m"), tmp_path / "deep" / "out.parquet")
    loaded = load_ohlcv(path)
    assert loaded.attrs["symbol"] == "X/Y"
    assert len(loaded) == 6
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.parquet"]  # no temp file left


def test_save_parquet_needs_a_parquet_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"out\.csv' must end in \.parquet"):
        save_parquet(hand_built(3), tmp_path / "out.csv")
