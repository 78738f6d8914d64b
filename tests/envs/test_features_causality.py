"""No look-ahead, proven: features at row t are bit for bit the same whatever happens after bar t."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.features import FeatureConfig, FeatureMatrix, compute_features, min_rows, trend_dir_column
from tests.envs.test_features import random_bars

# The defaults, and a short config with other higher timeframes (odd multiples, three of them).
CONFIGS = (
    FeatureConfig(),
    FeatureConfig(
        rsi_period=5,
        macd=(3, 7, 4),
        bb_period=6,
        breakout_period=4,
        momentum_period=3,
        atr_period=5,
        adx_period=5,
        realized_vol_period=6,
        regime_vol_window=15,
        trend_period=3,
        higher_timeframes=(3, 5, 12),
        volume_period=7,
        vwap_period=9,
        vap_period=11,
    ),
)
ROWS = 700


def perturb_after(frame: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Multiply every price and volume after row t by random noise, keeping OHLC consistent."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    m = len(frame) - t - 1
    open_ = frame["open"].to_numpy()[t + 1 :] * np.exp(rng.normal(0, 0.05, m))
    close = frame["close"].to_numpy()[t + 1 :] * np.exp(rng.normal(0, 0.05, m))
    high = np.maximum(
        frame["high"].to_numpy()[t + 1 :] * np.exp(rng.normal(0, 0.05, m)), np.maximum(open_, close)
    )
    low = np.minimum(
        frame["low"].to_numpy()[t + 1 :] * np.exp(rng.normal(0, 0.05, m)), np.minimum(open_, close)
    )
    volume = frame["volume"].to_numpy()[t + 1 :] * np.exp(rng.normal(0, 0.5, m))
    for name, values in (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume)):
        out[name] = np.concatenate([frame[name].to_numpy()[: t + 1], values])
    return out


def changed_columns(a: FeatureMatrix, b: FeatureMatrix, rows: slice | int) -> list[str]:
    """Columns whose float32 bits differ on ``rows`` (NaN equal to NaN)."""
    return [
        name for j, name in enumerate(a.columns) if a.values[rows, j].tobytes() != b.values[rows, j].tobytes()
    ]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    config_no=st.sampled_from(range(len(CONFIGS))),
    drop=st.sampled_from([0.0, 0.05, 0.2]),
    t_fraction=st.floats(0.0, 0.999),
)
def test_perturbing_bars_after_t_changes_nothing_up_to_t(
    seed: int, config_no: int, drop: float, t_fraction: float
) -> None:
    config = CONFIGS[config_no]
    frame = random_bars(ROWS, seed, drop=drop)
    t = int(t_fraction * (ROWS - 1))
    original = compute_features(frame, config)
    perturbed = compute_features(perturb_after(frame, t, seed + 1), config)

    assert changed_columns(original, perturbed, slice(0, t + 1)) == []
    assert np.array_equal(original.values[: t + 1], perturbed.values[: t + 1], equal_nan=True)
    if t < ROWS - 2:  # the check can fail: later rows do change
        assert changed_columns(original, perturbed, slice(t + 1, None))


@pytest.mark.parametrize("config", CONFIGS, ids=["defaults", "short"])
@pytest.mark.parametrize("drop", [0.0, 0.1], ids=["regular", "gappy"])
def test_row_t_equals_the_features_of_data_truncated_at_t(config: FeatureConfig, drop: float) -> None:
    frame = random_bars(ROWS, seed=11, drop=drop, start=pd.Timestamp("2024-03-05 07:13", tz="UTC"))
    full = compute_features(frame, config)
    rng = np.random.default_rng(5)
    first = min_rows(config) - 1
    # Every row of one x16 (or x12) bar, so each slot of a forming higher bar is checked, plus a sample.
    biggest = config.higher_timeframes[-1]
    rows = set(range(first + 3, first + 3 + biggest)) | set(rng.integers(first, ROWS, 20).tolist())
    for t in sorted(rows):
        truncated = compute_features(frame.iloc[: t + 1], config)
        assert changed_columns(full, truncated, t) == [], f"row {t}"


def test_higher_timeframe_directions_inside_a_forming_bar_match_truncated_data() -> None:
    # A sharp reversal inside a forming x16 bar must not show up before that bar has closed.
    frame = random_bars(ROWS, seed=2)
    column = trend_dir_column(16)
    full = compute_features(frame)
    start = 480  # on an x16 boundary: the data start at midnight
    crash = frame.copy()
    crash.iloc[start + 1 :, :4] *= 0.5  # every price halves from the 2nd bar of that x16 bar on
    crashed = compute_features(crash)
    x16 = crashed.column(column)
    np.testing.assert_array_equal(x16[start : start + 15], full.column(column)[start : start + 15])
    for t in (start + 1, start + 7, start + 14):
        truncated = compute_features(crash.iloc[: t + 1])
        assert truncated.column(column)[t] == x16[t]
    assert x16[start + 15] == -1.0  # read once the x16 bar completes
