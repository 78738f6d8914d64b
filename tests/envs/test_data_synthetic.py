"""The seeded synthetic market: determinism, consistent bars, exchange rules and stylized facts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.data import (
    OHLCV_COLUMNS,
    Regime,
    SyntheticParams,
    generate_synthetic,
    load_market_specs,
    load_ohlcv,
    read_parquet_metadata,
    symbol_profile,
)
from envs.data.synthetic import SYNTHETIC_METADATA_KEY, SyntheticMarket
from envs.errors import ConfigError, DataError

BARS = 200_000


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_synthetic(["BTC/USDT"], BARS, seed=11)


@pytest.fixture(scope="module")
def returns(market: SyntheticMarket) -> pd.Series:
    close = market.frames["BTC/USDT"]["close"].to_numpy()
    return pd.Series(np.diff(np.log(close)))


def test_same_seed_gives_identical_bars_and_regimes() -> None:
    a = generate_synthetic(["BTC/USDT", "ETH/USDT"], 3_000, seed=5)
    b = generate_synthetic(["BTC/USDT", "ETH/USDT"], 3_000, seed=5)
    for s in a.symbols:
        pd.testing.assert_frame_equal(a.frames[s], b.frames[s])
        np.testing.assert_array_equal(a.regimes[s], b.regimes[s])


def test_other_seed_and_other_symbol_give_other_bars() -> None:
    a = generate_synthetic(["BTC/USDT", "ETH/USDT"], 3_000, seed=5)
    c = generate_synthetic(["BTC/USDT"], 3_000, seed=6)
    btc, eth = (a.frames[s]["close"].pct_change().dropna().to_numpy() for s in ("BTC/USDT", "ETH/USDT"))
    assert not np.allclose(a.frames["BTC/USDT"]["close"], c.frames["BTC/USDT"]["close"])
    assert abs(np.corrcoef(btc, eth)[0, 1]) < 0.1  # independent streams


def test_a_symbols_bars_do_not_depend_on_its_companions() -> None:
    alone = generate_synthetic(["ETH/USDT"], 2_000, seed=3)
    together = generate_synthetic(["SOL/USDT", "ETH/USDT", "BTC/USDT"], 2_000, seed=3)
    pd.testing.assert_frame_equal(alone.frames["ETH/USDT"], together.frames["ETH/USDT"])


def test_bars_are_canonical_valid_and_on_the_tick_grid(market: SyntheticMarket) -> None:
    df = market.frames["BTC/USDT"]
    index = pd.DatetimeIndex(df.index)
    assert list(df.columns) == list(OHLCV_COLUMNS)
    assert index.unit == "ns"
    assert str(index.tz) == "UTC"
    assert df.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert (df.index[1] - df.index[0]) == pd.Timedelta(minutes=1)
    loaded = load_ohlcv(df)  # passes every validation
    # Compared as arrays: assert_frame_equal is slow on a long tz-aware index.
    np.testing.assert_array_equal(pd.DatetimeIndex(loaded.index).asi8, index.asi8)
    np.testing.assert_array_equal(loaded.to_numpy(), df.to_numpy())
    o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (lo > 0).all()
    np.testing.assert_array_equal(o[1:], c[:-1])  # open = previous close
    ticks = c / 0.01
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-6)
    assert (df["volume"] > 0).mean() > 0.99


def test_exchange_rules_are_realistic() -> None:
    market = generate_synthetic(["BTC/USDT", "ETH/USDT", "FOO/USDT", "FOO/BTC"], 10, seed=1)
    btc, eth = market.specs["BTC/USDT"], market.specs["ETH/USDT"]
    assert (btc.min_notional, btc.qty_step, btc.price_tick, btc.taker_fee) == (5.0, 1e-5, 0.01, 0.001)
    assert eth.qty_step == 1e-4
    foo = market.specs["FOO/USDT"]
    price = symbol_profile("FOO/USDT").start_price
    assert 1.0 <= price < 1000.0
    assert foo.min_notional == 5.0
    assert 0 < foo.price_tick <= price * 1e-3
    assert 0 < foo.qty_step * price <= 1.0  # one lot is worth under one quote unit
    assert market.specs["FOO/BTC"].min_notional < 0.01
    assert foo.base == "FOO"
    assert foo.quote == "USDT"


def test_regimes_persist_and_drive_drift(market: SyntheticMarket, returns: pd.Series) -> None:
    regime = market.regimes["BTC/USDT"]
    assert regime.dtype == np.int8
    assert len(regime) == BARS
    share = np.bincount(regime, minlength=3) / BARS
    assert (share > 0.1).all()
    switches = int((np.diff(regime) != 0).sum())
    assert BARS / (switches + 1) > 200  # segments last hours, not minutes
    r = returns.to_numpy()
    up = r[regime[1:] == Regime.TREND_UP].mean()
    down = r[regime[1:] == Regime.TREND_DOWN].mean()
    rng = r[regime[1:] == Regime.RANGE].mean()
    assert up > 0 > down
    assert abs(rng) < up


def test_heavy_tails_and_volatility_clustering(returns: pd.Series) -> None:
    r = returns.to_numpy()
    kurtosis = float(np.mean((r - r.mean()) ** 4) / r.var() ** 2)  # Pearson: 3 for a normal law
    assert kurtosis > 6.0
    abs_r = returns.abs()
    assert abs_r.autocorr(1) > 0.1
    assert abs_r.autocorr(60) > 0.05
    assert abs(returns.autocorr(1)) < 0.05  # clustering in size, not in sign


def test_realized_volatility_matches_the_profile(returns: pd.Series) -> None:
    annual = returns.std() * np.sqrt(365 * 24 * 60)
    assert annual == pytest.approx(symbol_profile("BTC/USDT").annual_vol, rel=0.25)


def test_volume_is_u_shaped_and_follows_moves(market: SyntheticMarket, returns: pd.Series) -> None:
    df = market.frames["BTC/USDT"]
    index = pd.DatetimeIndex(df.index)
    minute = index.hour * 60 + index.minute
    volume = df["volume"].to_numpy()
    edges = volume[(minute < 60) | (minute >= 1380)].mean()
    middle = volume[(minute >= 660) & (minute < 780)].mean()
    assert edges > 1.8 * middle
    assert np.corrcoef(returns.abs().to_numpy(), volume[1:])[0, 1] > 0.3


def test_true_volatility_is_exposed_and_positive(market: SyntheticMarket, returns: pd.Series) -> None:
    sigma = market.volatility["BTC/USDT"]
    assert sigma.shape == (BARS,)
    assert (sigma > 0).all()
    # Standardized by the true volatility, returns are near unit variance.
    z = returns.to_numpy() / sigma[1:]
    assert 0.7 < np.std(z[np.abs(z) < 50]) < 1.5


def test_parquet_round_trip_with_specs(tmp_path: Path) -> None:
    market = generate_synthetic(["BTC/USDT", "ETH/USDT"], 500, seed=7, start="2023-06-01 12:00")
    path = market.save_parquet(tmp_path / "synth.parquet")
    for s in market.symbols:
        loaded = load_ohlcv(path, symbol=s)
        pd.testing.assert_frame_equal(loaded, market.frames[s], check_freq=False)
    assert load_market_specs(path) == dict(market.specs)
    info = json.loads(read_parquet_metadata(path)[SYNTHETIC_METADATA_KEY])
    assert (info["seed"], info["bars"], info["timeframe"]) == (7, 500, "1m")
    long = pd.read_parquet(path)
    assert list(long.columns) == ["timestamp", "symbol", *OHLCV_COLUMNS]
    assert long["timestamp"].iloc[0] == pd.Timestamp("2023-06-01 12:00", tz="UTC")


def test_specs_missing_from_a_plain_parquet(tmp_path: Path) -> None:
    generate_synthetic(["BTC/USDT"], 10, seed=1).frames["BTC/USDT"].to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(DataError, match=r"plain\.parquet: holds no market specs"):
        load_market_specs(tmp_path / "plain.parquet")


def test_other_timeframes_scale_volatility() -> None:
    hourly = generate_synthetic(["BTC/USDT"], 20_000, seed=2, timeframe="1h")
    df = hourly.frames["BTC/USDT"]
    assert df.index[1] - df.index[0] == pd.Timedelta(hours=1)
    r = np.diff(np.log(df["close"].to_numpy()))
    assert r.std() * np.sqrt(365 * 24) == pytest.approx(0.55, rel=0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbols": [], "bars": 10, "seed": 1}, "no symbols"),
        ({"symbols": ["A/B", "A/B"], "bars": 10, "seed": 1}, "repeat"),
        ({"symbols": ["A/B"], "bars": 0, "seed": 1}, "bars=0"),
        ({"symbols": ["A/B"], "bars": 10, "seed": -1}, "seed=-1"),
        ({"symbols": ["A/B"], "bars": 10, "seed": 1, "timeframe": "1M"}, "timeframe"),
        ({"symbols": ["A/B"], "bars": 10, "seed": 1, "start": "someday"}, "start"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_synthetic(**kwargs)  # type: ignore[arg-type]


def test_bad_params_are_refused() -> None:
    with pytest.raises(ConfigError, match="tail_df"):
        SyntheticParams(tail_df=2.0)
    with pytest.raises(ConfigError, match="probability vector"):
        SyntheticParams(regime_transitions=((0.5, 0.5, 0.5), (0.3, 0.0, 0.7), (0.5, 0.5, 0.0)))


def test_half_a_million_bars_for_two_symbols_is_fast() -> None:
    start = time.perf_counter()
    market = generate_synthetic(["BTC/USDT", "ETH/USDT"], 500_000, seed=7)
    elapsed = time.perf_counter() - start
    assert len(market.frames["ETH/USDT"]) == 500_000
    # Typically well under a second; the bound only catches a per-bar Python loop on a busy machine.
    assert elapsed < 10.0


def test_progress_bar_does_not_change_the_bars(capsys: pytest.CaptureFixture[str]) -> None:
    quiet = generate_synthetic(["BTC/USDT"], 1_000, seed=4)
    shown = generate_synthetic(["BTC/USDT"], 1_000, seed=4, progress=True)
    pd.testing.assert_frame_equal(quiet.frames["BTC/USDT"], shown.frames["BTC/USDT"])
    assert "synthetic bars" in capsys.readouterr().err
