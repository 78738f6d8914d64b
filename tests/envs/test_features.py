"""envs.features: each feature against an independent reference, the matrix contract, config and errors."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from envs.errors import ConfigError, DataError
from envs.features import (
    ENTRY_SIGNALS,
    FEATURE_GROUPS,
    MARKET_CONDITIONS,
    TIMEFRAME_ALIGNMENT,
    VOLUME_PROFILE,
    FeatureConfig,
    FeatureMatrix,
    Regime,
    compute_features,
    min_rows,
    trend_dir_column,
)
from envs.features import columns as col
from envs.features.indicators import breakout, macd_cross
from envs.features.regime import regime_label
from envs.features.timeframes import higher_timeframe_trend, infer_base_timeframe_ns
from envs.features.volume import vap_position

MINUTE = pd.Timedelta("1min")
START = pd.Timestamp("2024-01-01", tz="UTC")


def random_bars(
    n: int,
    seed: int = 0,
    *,
    start: pd.Timestamp = START,
    freq: pd.Timedelta = MINUTE,
    drop: float = 0.0,
) -> pd.DataFrame:
    """Seeded random-walk OHLCV bars (consistent OHLC), optionally with a share ``drop`` of rows missing."""
    rng = np.random.default_rng(seed)
    total = int(n / (1.0 - drop)) + 2 if drop else n
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-3, total)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0.0, 2e-4, total))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 1e-3, total)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 1e-3, total)))
    volume = rng.lognormal(3.0, 1.0, total)
    index = pd.DatetimeIndex(start + freq * np.arange(total), name="timestamp").as_unit("ns")
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )
    if drop:
        keep = np.sort(rng.choice(np.arange(1, total), size=n - 1, replace=False))
        frame = frame.iloc[np.concatenate([[0], keep])]
    return frame


def bars_from_close(close: np.ndarray, volume: np.ndarray | None = None, start: pd.Timestamp = START):
    """Bars whose open, high and low all equal the close (so the typical price is the close)."""
    close = np.asarray(close, dtype=np.float64)
    index = pd.DatetimeIndex(start + MINUTE * np.arange(len(close)), name="timestamp").as_unit("ns")
    vol = np.ones(len(close)) if volume is None else np.asarray(volume, dtype=np.float64)
    return pd.DataFrame(
        {"open": close, "high": close, "low": close, "close": close, "volume": vol}, index=index
    )


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return random_bars(1500, seed=7)


@pytest.fixture(scope="module")
def matrix(bars: pd.DataFrame) -> FeatureMatrix:
    return compute_features(bars)


# --- entry signals ---------------------------------------------------------------------------------


def wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:
    delta = np.diff(close)
    gain, loss = np.clip(delta, 0, None), np.clip(-delta, 0, None)
    out = np.full(len(close), np.nan)
    avg_gain, avg_loss = gain[:period].mean(), loss[:period].mean()
    out[period] = 100.0 * avg_gain / (avg_gain + avg_loss)
    for t in range(period + 1, len(close)):
        avg_gain = (avg_gain * (period - 1) + gain[t - 1]) / period
        avg_loss = (avg_loss * (period - 1) + loss[t - 1]) / period
        out[t] = 100.0 * avg_gain / (avg_gain + avg_loss)
    return out


def test_rsi_matches_a_plain_wilder_implementation(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    expected = wilder_rsi(bars["close"].to_numpy(), 14)
    np.testing.assert_allclose(matrix.column(col.RSI)[14:], expected[14:], rtol=1e-5)
    assert np.isnan(matrix.column(col.RSI)[:14]).all()


def test_macd_histogram_matches_pandas_ema_after_burn_in(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    close = bars["close"]
    line = close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean()
    hist = line - line.ewm(span=9, adjust=False).mean()
    expected = (hist / close * 100.0).to_numpy()
    # TA-Lib seeds its EMAs with an SMA, pandas with the first value: they agree once the seed decays.
    np.testing.assert_allclose(matrix.column(col.MACD_HIST_PCT)[400:], expected[400:], atol=1e-6)


def test_macd_cross_marks_only_the_bar_of_the_cross() -> None:
    hist = np.array([np.nan, -1.0, 1.0, 2.0, -0.5, 0.0, 1.0, 0.0, -2.0])
    expected = np.array([np.nan, np.nan, 1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0])
    np.testing.assert_array_equal(macd_cross(hist), expected)


def test_bollinger_pct_b_matches_population_std_bands(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    close = bars["close"]
    mid = close.rolling(20).mean()
    std = close.rolling(20).std(ddof=0)
    expected = ((close - (mid - 2 * std)) / (4 * std)).to_numpy()
    np.testing.assert_allclose(matrix.column(col.BB_PCT_B)[19:], expected[19:], rtol=1e-4, atol=1e-5)


def test_bollinger_pct_b_is_one_half_on_flat_prices() -> None:
    features = compute_features(bars_from_close(np.full(400, 50.0)))
    np.testing.assert_array_equal(features.column(col.BB_PCT_B)[19:], 0.5)


def test_breakout_compares_with_prior_bars_only() -> None:
    high = np.array([10.0, 11.0, 12.0, 11.5, 12.5, 12.0, 9.0])
    low = np.array([9.0, 10.0, 11.0, 10.5, 11.5, 8.0, 7.0])
    close = np.array([9.5, 10.5, 11.5, 12.2, 12.4, 8.5, 7.5])
    # Prior-3 high/low at t=3: 12/9 -> 12.2 breaks up; t=4: 12.5 is its own high, prior high 12 -> +1;
    # t=5: prior low 10.5 -> 8.5 breaks down; t=6: prior low 8 -> 7.5 breaks down.
    np.testing.assert_array_equal(
        breakout(high, low, close, 3), [np.nan, np.nan, np.nan, 1.0, 1.0, -1.0, -1.0]
    )


def test_breakout_is_zero_inside_the_prior_range() -> None:
    high = np.array([10.0, 10.0, 10.0, 9.9])
    low = np.array([8.0, 8.0, 8.0, 8.1])
    close = np.array([9.0, 9.0, 9.0, 10.0])  # equal to the prior high is not above it
    np.testing.assert_array_equal(breakout(high, low, close, 3), [np.nan, np.nan, np.nan, 0.0])


def test_momentum_is_the_n_bar_return_in_percent(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    close = bars["close"].to_numpy()
    t = 777
    assert matrix.column(col.MOMENTUM_PCT)[t] == pytest.approx((close[t] / close[t - 10] - 1) * 100, rel=1e-5)


# --- market conditions -----------------------------------------------------------------------------


def test_atr_pct_matches_a_plain_wilder_atr(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
    true_range = np.maximum(high[1:], close[:-1]) - np.minimum(low[1:], close[:-1])
    atr = true_range[:14].mean()
    expected = np.full(len(close), np.nan)
    expected[14] = atr
    for t in range(15, len(close)):
        atr = (atr * 13 + true_range[t - 1]) / 14
        expected[t] = atr
    np.testing.assert_allclose(matrix.column(col.ATR_PCT)[14:], (expected / close * 100)[14:], rtol=1e-5)


def test_realized_vol_is_the_std_of_log_returns(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    log_ret = np.diff(np.log(bars["close"].to_numpy()))
    t = 500
    expected = np.std(log_ret[t - 20 : t], ddof=1) * 100  # returns of bars t-19..t
    assert matrix.column(col.REALIZED_VOL_PCT)[t] == pytest.approx(expected, rel=1e-5)


def test_vol_ratio_divides_by_the_median_of_past_volatility(matrix: FeatureMatrix) -> None:
    realized = matrix.column(col.REALIZED_VOL_PCT).astype(np.float64)
    t = 900
    expected = realized[t] / np.median(realized[t - 199 : t + 1])
    assert matrix.column(col.VOL_RATIO)[t] == pytest.approx(expected, rel=1e-5)


def test_trend_strength_is_adx_between_0_and_100(matrix: FeatureMatrix) -> None:
    adx = matrix.column(col.TREND_STRENGTH)[matrix.warmup :]
    assert (adx >= 0).all()
    assert (adx <= 100).all()
    assert adx.std() > 1  # it moves


def test_regime_label_encodes_trend_and_volatility() -> None:
    strength = np.array([10.0, 10.0, 30.0, 30.0, 25.0, np.nan])
    ratio = np.array([0.8, 1.5, 0.8, 1.5, 1.0, 1.0])
    expected = [
        Regime.RANGE_LOW_VOL,
        Regime.RANGE_HIGH_VOL,
        Regime.TREND_LOW_VOL,
        Regime.TREND_HIGH_VOL,
        Regime.TREND_LOW_VOL,  # at the trend threshold counts as trending; at the vol threshold not high
        np.nan,
    ]
    np.testing.assert_array_equal(regime_label(strength, ratio, 25.0, 1.0), np.array(expected, dtype=float))


def test_regime_column_holds_only_regime_codes(matrix: FeatureMatrix) -> None:
    codes = set(np.unique(matrix.column(col.REGIME)[matrix.warmup :]).tolist())
    assert codes <= {float(r) for r in Regime}
    assert len(codes) >= 3  # a random walk visits several regimes


# --- timeframe alignment ---------------------------------------------------------------------------


def minute_stamps(minutes: list[int] | np.ndarray, start: pd.Timestamp = START) -> np.ndarray:
    return pd.DatetimeIndex(start + MINUTE * np.asarray(minutes)).as_unit("ns").asi8


def test_higher_trend_uses_the_last_completed_bar_until_the_next_one_completes() -> None:
    # x4 bars of 1-minute bars, EMA(2) of x4 closes. Closes of x4 bars 0..3: 4, 8, 12, 1.
    close = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 11, 7, 3, 1], dtype=float)
    out = higher_timeframe_trend(minute_stamps(np.arange(16)), close, MINUTE.value, 4, 2)
    # x4 bar 1 (EMA seed = mean(4, 8) = 6, 8 > 6) completes at row 7, bar 2 (EMA 10 < 12) at row 11.
    # Rows 12-14 sit in the forming bar 3: they must still see bar 2 (+1), although prices collapse.
    # Bar 3 completes at row 15: EMA 10 + 2/3 * (1 - 10) = 4 > 1 -> -1.
    expected = [np.nan] * 7 + [1.0] * 8 + [-1.0]
    np.testing.assert_array_equal(out, expected)


def test_higher_bar_with_missing_base_bars_completes_once_its_time_has_passed() -> None:
    # Minutes 13-15 are missing: x4 bar 3 holds only minute 12 and ends at minute 16.
    minutes = [*range(13), 16, 17]
    close = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 1, 1], dtype=float)
    out = higher_timeframe_trend(minute_stamps(minutes), close, MINUTE.value, 4, 2)
    # Row 12 (minute 12) closes at minute 13, before bar 3 ends: still bar 2 (+1). Row 13 (minute 16)
    # is past its end: bar 3 (close 1, EMA 4) reads -1. Row 14 is in forming bar 4: still bar 3.
    np.testing.assert_array_equal(out[11:], [1.0, 1.0, -1.0, -1.0])


def test_partial_first_higher_bar_completes_at_its_end() -> None:
    # Data starts at minute 2: x4 bar 0 holds minutes 2-3 and completes at row 1.
    close = np.arange(1.0, 11.0)
    out = higher_timeframe_trend(minute_stamps(np.arange(2, 12)), close, MINUTE.value, 4, 2)
    # x4 closes: 2 (row 1), 6 (row 5), 10 (row 9); EMA(2) seed mean(2, 6) = 4 at bar 1 (row 5).
    np.testing.assert_array_equal(out, [np.nan] * 5 + [1.0] * 5)


def test_alignment_is_the_mean_of_all_directions(matrix: FeatureMatrix) -> None:
    names = [col.TREND_DIR_BASE, trend_dir_column(4), trend_dir_column(16)]
    directions = np.stack([matrix.column(n) for n in names]).astype(np.float64)
    aligned = matrix.column(col.TF_ALIGNMENT)
    w = matrix.warmup
    np.testing.assert_allclose(aligned[w:], directions[:, w:].mean(axis=0), rtol=1e-6)
    assert set(np.unique(directions[:, w:]).tolist()) <= {-1.0, 0.0, 1.0}


def test_steady_uptrend_reads_up_on_every_timeframe() -> None:
    features = compute_features(bars_from_close(np.linspace(100.0, 200.0, 600)))
    np.testing.assert_array_equal(features.column(col.TF_ALIGNMENT)[features.warmup :], 1.0)


def test_base_timeframe_is_the_modal_spacing_even_with_gaps() -> None:
    stamps = minute_stamps([0, 1, 2, 5, 6, 7, 30, 31, 32, 33])
    assert infer_base_timeframe_ns(stamps) == MINUTE.value


def test_pinned_base_timeframe_gives_the_same_features_on_regular_data(bars: pd.DataFrame) -> None:
    pinned = compute_features(bars, FeatureConfig(base_timeframe="1min"))
    assert pinned.values.tobytes() == compute_features(bars).values.tobytes()


# --- volume profile --------------------------------------------------------------------------------


def test_relative_volume_divides_by_the_rolling_mean(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    volume = bars["volume"].to_numpy()
    t = 321
    assert matrix.column(col.REL_VOLUME)[t] == pytest.approx(
        volume[t] / volume[t - 19 : t + 1].mean(), rel=1e-5
    )


def test_vwap_distance_by_hand() -> None:
    close = np.full(400, 100.0)
    close[-2] = 90.0
    close[-1] = 110.0
    volume = np.ones(400)
    volume[-2] = 59.0  # the last 60 bars: 58 x 100 at volume 1, 90 at 59, 110 at 1
    features = compute_features(bars_from_close(close, volume))
    vwap = (58 * 100.0 + 59 * 90.0 + 110.0) / 118
    assert features.column(col.VWAP_DIST_PCT)[-1] == pytest.approx((110.0 / vwap - 1) * 100, rel=1e-6)


def brute_force_vap(typical: np.ndarray, volume: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    out = np.full(len(close), np.nan)
    for t in range(period - 1, len(close)):
        tp, v = typical[t - period + 1 : t + 1], volume[t - period + 1 : t + 1]
        below = v[tp < close[t]].sum() + 0.5 * v[tp == close[t]].sum()
        out[t] = below / v.sum() if v.sum() > 0 else 0.5
    return out


def test_vap_position_matches_a_brute_force_loop(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    high, low, close, volume = (bars[c].to_numpy() for c in ("high", "low", "close", "volume"))
    typical = (high + low + close) / 3.0
    expected = brute_force_vap(typical, volume, close, 120)
    np.testing.assert_allclose(matrix.column(col.VAP_POSITION)[119:], expected[119:], rtol=1e-6, atol=1e-7)


def test_vap_position_counts_volume_at_the_close_as_half() -> None:
    close = np.array([1.0, 2.0, 3.0, 2.0])
    volume = np.array([1.0, 2.0, 4.0, 1.0])
    # Last bar: below 2.0 -> volume 1; at 2.0 -> volume 2 + 1 (half); above -> 4. (1 + 1.5) / 8.
    assert vap_position(close, volume, close, 4)[-1] == pytest.approx(2.5 / 8)


def test_no_volume_reads_as_neutral_volume_profile() -> None:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 400)))
    features = compute_features(bars_from_close(close, np.zeros(400)))
    w = features.warmup
    np.testing.assert_array_equal(features.column(col.REL_VOLUME)[w:], 1.0)
    np.testing.assert_array_equal(features.column(col.VWAP_DIST_PCT)[w:], 0.0)
    np.testing.assert_array_equal(features.column(col.VAP_POSITION)[w:], 0.5)


# --- the matrix ------------------------------------------------------------------------------------


def test_matrix_is_read_only_float32_and_c_contiguous(matrix: FeatureMatrix) -> None:
    assert matrix.values.dtype == np.float32
    assert matrix.values.flags.c_contiguous
    assert not matrix.values.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        matrix.values[500, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        matrix.column(col.RSI)[500] = 1.0


def test_matrix_stays_read_only_after_pickling(matrix: FeatureMatrix) -> None:
    clone = pickle.loads(pickle.dumps(matrix))
    assert not clone.values.flags.writeable
    assert clone.values.tobytes() == matrix.values.tobytes()
    assert clone.columns == matrix.columns
    assert clone.warmup == matrix.warmup


def test_matrix_keeps_the_input_index_and_length(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    assert matrix.index.equals(bars.index)
    assert len(matrix) == len(bars) == matrix.values.shape[0]


def test_groups_partition_the_columns_in_group_order(matrix: FeatureMatrix) -> None:
    assert (
        tuple(matrix.groups)
        == FEATURE_GROUPS
        == (
            ENTRY_SIGNALS,
            MARKET_CONDITIONS,
            TIMEFRAME_ALIGNMENT,
            VOLUME_PROFILE,
        )
    )
    positions = [p for group in FEATURE_GROUPS for p in matrix.groups[group]]
    assert positions == list(range(len(matrix.columns)))
    tf_names = {matrix.columns[p] for p in matrix.groups[TIMEFRAME_ALIGNMENT]}
    assert {trend_dir_column(4), trend_dir_column(16), col.TREND_DIR_BASE, col.TF_ALIGNMENT} == tf_names


def test_categorical_columns_are_the_codes_and_directions(matrix: FeatureMatrix) -> None:
    assert {col.REGIME, col.MACD_CROSS, col.BREAKOUT, trend_dir_column(16)} <= matrix.categorical
    assert col.RSI not in matrix.categorical
    assert matrix.categorical <= set(matrix.columns)


def test_snapshot_gives_raw_values_by_group(matrix: FeatureMatrix) -> None:
    row = matrix.warmup + 10
    snap = matrix.snapshot(row)
    assert tuple(snap) == FEATURE_GROUPS
    assert snap[ENTRY_SIGNALS][col.RSI] == float(matrix.values[row, matrix.position(col.RSI)])
    assert snap[MARKET_CONDITIONS][col.REGIME] in {float(r) for r in Regime}
    assert sum(len(g) for g in snap.values()) == len(matrix.columns)
    assert all(isinstance(v, float) for g in snap.values() for v in g.values())
    with pytest.raises(IndexError, match="outside"):
        matrix.snapshot(len(matrix))


def test_unknown_column_name_suggests_the_closest(matrix: FeatureMatrix) -> None:
    with pytest.raises(KeyError, match="did you mean 'rsi'"):
        matrix.column("rsii")


def test_every_feature_is_finite_from_warmup_and_not_before(matrix: FeatureMatrix) -> None:
    assert np.isfinite(matrix.values[matrix.warmup :]).all()
    assert not np.isfinite(matrix.values[matrix.warmup - 1]).all()


def test_warmup_reaches_the_documented_minimum_on_aligned_regular_data(matrix: FeatureMatrix) -> None:
    # The data start on an x16 boundary, so the x16 trend needs exactly 20 x16 bars = 320 rows.
    assert min_rows() == 320
    assert matrix.warmup == min_rows() - 1


def test_features_are_bitwise_reproducible(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    again = compute_features(bars.copy())
    assert again.values.tobytes() == matrix.values.tobytes()
    assert again.warmup == matrix.warmup


def test_microsecond_index_gives_the_same_features(bars: pd.DataFrame, matrix: FeatureMatrix) -> None:
    coarse = bars.set_axis(pd.DatetimeIndex(bars.index).as_unit("us"))
    assert compute_features(coarse).values.tobytes() == matrix.values.tobytes()


def test_input_frame_is_not_modified(bars: pd.DataFrame) -> None:
    before = bars.copy()
    compute_features(bars)
    pd.testing.assert_frame_equal(bars, before)


# --- config and input errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rsi_period": 1}, r"rsi_period=1 must be an integer >= 2"),
        ({"rsi_period": 14.5}, r"rsi_period=14\.5 must be an integer"),
        ({"bb_period": True}, r"bb_period=True must be an integer"),
        ({"bb_std": 0.0}, r"bb_std=0\.0 must be a finite number > 0"),
        ({"bb_std": float("nan")}, r"bb_std=nan"),
        ({"macd": (26, 12, 9)}, r"fast length 26 must be shorter than slow length 12"),
        ({"macd": (12, 26)}, r"must have three lengths"),
        ({"higher_timeframes": ()}, r"higher_timeframes is empty"),
        ({"higher_timeframes": (16, 4)}, r"strictly increasing"),
        ({"higher_timeframes": (1, 4)}, r"higher_timeframes entry=1 must be an integer >= 2"),
        ({"regime_trend_threshold": 120.0}, r"regime_trend_threshold=120\.0 must be a finite number in"),
        ({"base_timeframe": "soon"}, r"base_timeframe='soon' is not a positive duration"),
        ({"vap_period": 0}, r"vap_period=0 must be an integer >= 1"),
    ],
)
def test_invalid_config_is_refused_with_the_field_and_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        FeatureConfig(**kwargs)  # type: ignore[arg-type]
    assert "Fix:" in str(info.value)


def test_config_round_trips_through_a_plain_dict() -> None:
    config = FeatureConfig(rsi_period=21, higher_timeframes=(3, 9, 27), base_timeframe="5min")
    assert FeatureConfig.from_dict(config.to_dict()) == config


def test_unknown_config_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'rsi_period'"):
        FeatureConfig.from_dict({"rsi_perod": 14})


def test_too_short_data_says_how_many_rows_are_needed() -> None:
    with pytest.raises(DataError, match=r"319 rows are too few: these features need at least 320 rows"):
        compute_features(random_bars(319))
    assert compute_features(random_bars(320)).warmup == 319  # exactly enough: one complete row
    short = FeatureConfig(higher_timeframes=(2,), regime_vol_window=10, vap_period=30, vwap_period=30)
    assert min_rows(short) < 100
    assert compute_features(random_bars(100), short).warmup < 100


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns="volume"), r"missing column\(s\) \['volume'\]"),
        (lambda df: df.tz_localize(None), "tz-aware DatetimeIndex"),
        (lambda df: df.assign(close=df["close"].where(df.index != df.index[5], -1.0)), r"row 5 .*'close'"),
        (lambda df: df.assign(high=df["low"]), r"column 'high'.*at least max\(open, close\)"),
        (lambda df: df.assign(volume=np.nan), r"column 'volume'.*finite volume"),
        (lambda df: df.iloc[::-1], r"row 1: timestamp .* does not come after the previous one"),
        (lambda df: pd.concat([df.iloc[:200], df.iloc[199:]]), r"row 200: timestamp .* does not come after"),
        (
            lambda df: df.set_axis(
                df.index.where(df.index != df.index[300], df.index[300] - pd.Timedelta("30s"))
            ),
            r"row 300: bar starts 0 days 00:00:30 after the previous one, less than the base timeframe",
        ),
    ],
)
def test_bad_input_is_refused_with_row_and_column(bars: pd.DataFrame, mutate, message: str) -> None:
    with pytest.raises(DataError, match=message):
        compute_features(mutate(bars))
