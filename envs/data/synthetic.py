"""A seeded synthetic market: multi-symbol, crypto-like bars with known regimes.

Per symbol, the generator draws (all vectorized; the only Python loop runs over regime *segments*):

* a regime path (trend up, trend down, range) from a Markov chain whose segments last hours;
* volatility clustering: an AR(1) log-volatility with a half-life of hours, times a per-regime level
  and an intraday (U-shaped) seasonality;
* heavy-tailed returns: unit-variance Student-t innovations; a drift in trend regimes, and mean
  reversion (an Ornstein-Uhlenbeck path) in range regimes;
* bars: open = previous close, high/low an exponential excursion beyond the body, rounded to the
  price tick;
* volume: U-shaped by minute of day, rising with volatility and with the size of the bar's move.

Every symbol draws from its own stream, a child of ``seed`` keyed by the symbol's name, so a symbol's
bars do not depend on which other symbols are generated with it. The true regime and volatility of
each bar are kept beside the bars (not in them) for tests and analysis.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from tqdm.auto import tqdm

from envs.clock import DAY_NS, MINUTE_NS
from envs.data.parquet import save_parquet, to_long_format
from envs.data.schema import OHLCV_COLUMNS, TIMESTAMP, format_timeframe, parse_timeframe
from envs.errors import ConfigError
from envs.market import MarketSpec

__all__ = [
    "DEFAULT_START",
    "SYNTHETIC_METADATA_KEY",
    "Regime",
    "SymbolProfile",
    "SyntheticMarket",
    "SyntheticParams",
    "generate_synthetic",
    "symbol_profile",
]

DEFAULT_START: Final = "2024-01-01"
DEFAULT_TIMEFRAME: Final = "1min"
SYNTHETIC_METADATA_KEY: Final = "slf.synthetic"
# Bump when a change to the generator changes its output for the same seed.
GENERATOR_VERSION: Final = 1
MINUTES_PER_YEAR: Final = 365.0 * 24.0 * 60.0
MINUTES_PER_DAY: Final = 24 * 60
# Progress steps per symbol: regimes, volatility, returns, bars, volume.
_STAGES: Final = 5


class Regime(IntEnum):
    """The market regime that generated a bar."""

    TREND_UP = 0
    TREND_DOWN = 1
    RANGE = 2


@dataclass(frozen=True, slots=True)
class SyntheticParams:
    """Shape of the synthetic market. Defaults give BTC-like minute bars; every field is per regime
    in :class:`Regime` order where it is a triple."""

    regime_minutes: tuple[float, float, float] = (600.0, 480.0, 900.0)
    """Mean length of a regime segment in minutes (geometric lengths: hours, as in real markets)."""
    regime_transitions: tuple[tuple[float, float, float], ...] = (
        (0.0, 0.3, 0.7),
        (0.3, 0.0, 0.7),
        (0.5, 0.5, 0.0),
    )
    """Row r: probabilities of the next regime when a segment of regime r ends (zero diagonal)."""
    regime_drift: tuple[float, float, float] = (0.04, -0.05, 0.0)
    """Drift per minute, in units of the per-minute volatility. Up 0.04 x 600 min balances down
    0.05 x 480 min, so prices wander without a long-run trend."""
    regime_vol: tuple[float, float, float] = (1.0, 1.25, 0.8)
    """Volatility level of each regime (sell-offs are the most volatile, ranges the quietest)."""
    range_half_life_minutes: float = 120.0
    """How fast prices revert to the middle of a range."""
    vol_half_life_minutes: float = 360.0
    """Persistence of the AR(1) log-volatility: the half-life of a volatility shock."""
    vol_of_vol: float = 0.45
    """Stationary standard deviation of the log-volatility."""
    tail_df: float = 4.0
    """Degrees of freedom of the Student-t innovations (smaller = heavier tails; must be > 2)."""
    wick: float = 0.5
    """Mean high/low excursion beyond the bar's body, in units of the bar's volatility."""
    intraday_amplitude: float = 1.2
    """Depth of the U-shaped intraday volume profile (0 = flat; < 1.5 keeps it positive)."""
    volume_vol_elasticity: float = 1.0
    """Volume grows as (volatility / its mean) to this power."""
    volume_move_loading: float = 0.5
    """Extra volume per unit of |innovation|: big moves trade more."""
    volume_noise: float = 0.35
    """Standard deviation of the log-normal volume noise."""

    def __post_init__(self) -> None:
        positives = {
            "range_half_life_minutes": self.range_half_life_minutes,
            "vol_half_life_minutes": self.vol_half_life_minutes,
            "wick": self.wick,
        }
        for name, value in positives.items():
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(
                    f"{name}={value!r} must be > 0", where="SyntheticParams", fix="use a positive number"
                )
        if any(m <= 0 for m in self.regime_minutes):
            raise ConfigError(
                "regime_minutes must all be > 0", where="SyntheticParams", fix="use minutes > 0"
            )
        for row in self.regime_transitions:
            if len(row) != len(Regime) or any(p < 0 for p in row) or not math.isclose(sum(row), 1.0):
                raise ConfigError(
                    f"regime_transitions row {row} is not a probability vector over {len(Regime)} regimes",
                    where="SyntheticParams",
                    fix="give three probabilities >= 0 summing to 1 per row",
                )
        if self.tail_df <= 2:
            raise ConfigError(
                "tail_df must be > 2 (finite variance)", where="SyntheticParams", fix="use e.g. 4"
            )
        if not 0 <= self.intraday_amplitude < 1.5:
            raise ConfigError(
                "intraday_amplitude must be in [0, 1.5)", where="SyntheticParams", fix="use e.g. 1.2"
            )
        if self.vol_of_vol < 0 or self.volume_noise < 0 or self.volume_move_loading < 0:
            raise ConfigError(
                "vol_of_vol, volume_noise and volume_move_loading must be >= 0",
                where="SyntheticParams",
                fix="use non-negative numbers",
            )


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    """What one synthetic symbol looks like: starting price, volatility, activity and exchange rules.

    Attributes:
        start_price: price of the first bar's open (quote currency).
        annual_vol: annualized volatility of log returns (0.6 = 60%).
        volume_per_minute: mean traded base quantity per minute.
        spec: the exchange rules bars are rounded to and the broker enforces.
    """

    start_price: float
    annual_vol: float
    volume_per_minute: float
    spec: MarketSpec


def _spot_spec(symbol: str, *, qty_step: float, price_tick: float, min_notional: float) -> MarketSpec:
    """Spot rules as a large exchange states them: 0.1% fees, lot = minimum quantity."""
    return MarketSpec(
        symbol=symbol,
        taker_fee=0.001,
        maker_fee=0.001,
        spread_bps=1.0,
        slippage_bps=1.0,
        min_qty=qty_step,
        qty_step=qty_step,
        min_notional=min_notional,
        price_tick=price_tick,
    )


KNOWN_PROFILES: Final[Mapping[str, SymbolProfile]] = {
    "BTC/USDT": SymbolProfile(
        42_000.0, 0.55, 12.0, _spot_spec("BTC/USDT", qty_step=1e-5, price_tick=0.01, min_notional=5.0)
    ),
    "ETH/USDT": SymbolProfile(
        2_300.0, 0.70, 150.0, _spot_spec("ETH/USDT", qty_step=1e-4, price_tick=0.01, min_notional=5.0)
    ),
    "SOL/USDT": SymbolProfile(
        100.0, 0.90, 2_000.0, _spot_spec("SOL/USDT", qty_step=1e-3, price_tick=0.01, min_notional=5.0)
    ),
}
# Minimum order value by quote currency; stablecoins use the usual 5 units.
_QUOTE_MIN_NOTIONAL: Final[Mapping[str, float]] = {"BTC": 1e-4, "ETH": 1e-3, "BNB": 1e-2}
_DEFAULT_MIN_NOTIONAL: Final = 5.0
_UNKNOWN_ANNUAL_VOL: Final = 0.9
_UNKNOWN_QUOTE_PER_MINUTE: Final = 20_000.0


def _symbol_key(symbol: str) -> int:
    """A stable 32-bit key of a symbol name (Python's hash() is salted per process)."""
    return zlib.crc32(symbol.encode("utf-8"))


def symbol_profile(symbol: str) -> SymbolProfile:
    """The profile of a symbol: a known one (BTC/USDT, ETH/USDT, SOL/USDT) or one derived from the name.

    Unknown symbols get a starting price between 1 and 1000 chosen by the name, a price tick of about
    five significant digits, a lot step worth well under one quote unit and the quote's usual minimum
    order value.
    """
    if symbol in KNOWN_PROFILES:
        return KNOWN_PROFILES[symbol]
    price = round(10.0 ** ((_symbol_key(symbol) % 3000) / 1000.0), 2)
    magnitude = math.floor(math.log10(price))
    tick = 10.0 ** (magnitude - 4)
    step = 10.0 ** -math.ceil(math.log10(price)) if price > 1 else 1.0
    quote = symbol.partition("/")[2].split(":")[0]
    spec = _spot_spec(
        symbol,
        qty_step=step,
        price_tick=tick,
        min_notional=_QUOTE_MIN_NOTIONAL.get(quote, _DEFAULT_MIN_NOTIONAL),
    )
    return SymbolProfile(price, _UNKNOWN_ANNUAL_VOL, _UNKNOWN_QUOTE_PER_MINUTE / price, spec)


@dataclass(frozen=True)
class SyntheticMarket:
    """Generated bars of several symbols, their exchange rules and the hidden truth behind them.

    Attributes:
        frames: canonical OHLCV frame per symbol.
        specs: market spec per symbol.
        regimes: the :class:`Regime` code (int8) of each bar, per symbol.
        volatility: the true standard deviation of each bar's log return, per symbol.
        seed: the seed that generated everything.
        timeframe: the bar length.
    """

    frames: Mapping[str, pd.DataFrame]
    specs: Mapping[str, MarketSpec]
    regimes: Mapping[str, npt.NDArray[np.int8]]
    volatility: Mapping[str, npt.NDArray[np.float64]]
    seed: int
    timeframe: pd.Timedelta
    params: SyntheticParams = field(default_factory=SyntheticParams)

    @property
    def symbols(self) -> list[str]:
        return list(self.frames)

    def to_long(self) -> pd.DataFrame:
        """All symbols in one long frame: ``timestamp, symbol, open, high, low, close, volume``."""
        return to_long_format(self.frames)

    def save_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write the long frame to Parquet with the market specs and generator settings as metadata."""
        first = next(iter(self.frames.values()))
        info = {
            "generator_version": GENERATOR_VERSION,
            "seed": self.seed,
            "bars": len(first),
            "timeframe": format_timeframe(self.timeframe),
            "start": first.index[0].isoformat(),
            "symbols": self.symbols,
        }
        return save_parquet(
            self.to_long(),
            path,
            specs=self.specs,
            metadata={SYNTHETIC_METADATA_KEY: json.dumps(info, sort_keys=True)},
        )


def generate_synthetic(
    symbols: Sequence[str],
    bars: int,
    seed: int,
    *,
    start: str | pd.Timestamp = DEFAULT_START,
    timeframe: str | pd.Timedelta = DEFAULT_TIMEFRAME,
    params: SyntheticParams | None = None,
    progress: bool = False,
) -> SyntheticMarket:
    """Generate ``bars`` bars for each symbol, deterministically from ``seed``.

    Args:
        symbols: market symbols, e.g. ``["BTC/USDT", "ETH/USDT"]``; see :func:`symbol_profile`.
        bars: bars per symbol (>= 1).
        seed: a non-negative integer; the same seed gives identical bars.
        start: open time of the first bar (naive = UTC).
        timeframe: bar length, e.g. ``"1min"`` (the default), ``"5m"``, ``"1h"``.
        params: the market's shape; defaults to :class:`SyntheticParams`.
        progress: show a progress bar (stderr).

    Raises:
        ConfigError: an argument is invalid.
    """
    names = [str(s) for s in symbols]
    if not names or any(not s.strip() for s in names):
        raise ConfigError(
            "no symbols, or an empty symbol", where="symbols", fix="give e.g. BTC/USDT,ETH/USDT"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"symbols repeat: {names}", where="symbols", fix="list each symbol once")
    if isinstance(bars, bool) or not isinstance(bars, int | np.integer) or bars < 1:
        raise ConfigError(f"bars={bars!r} must be an integer >= 1", where="bars", fix="give e.g. 100000")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0", where="seed", fix="give e.g. 7")
    tf = parse_timeframe(timeframe)
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read start {start!r}", where="start", fix="write e.g. 2024-01-01") from exc
    first = (first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")).as_unit("ns")
    shape = params or SyntheticParams()

    frames: dict[str, pd.DataFrame] = {}
    regimes: dict[str, npt.NDArray[np.int8]] = {}
    vols: dict[str, npt.NDArray[np.float64]] = {}
    specs: dict[str, MarketSpec] = {}
    times = first.value + np.arange(int(bars), dtype=np.int64) * tf.value
    index = pd.DatetimeIndex(times.view("datetime64[ns]"), name=TIMESTAMP).tz_localize("UTC")
    bar = tqdm(total=len(names) * _STAGES, desc="synthetic bars", unit="step", disable=not progress)
    for symbol in names:
        bar.set_postfix_str(symbol)
        profile = symbol_profile(symbol)
        stream = np.random.SeedSequence(entropy=int(seed), spawn_key=(_symbol_key(symbol),))
        values, regime, sigma = _generate_symbol(profile, times, tf, stream, shape, step=bar.update)
        frame = pd.DataFrame(values, index=index.copy(), columns=list(OHLCV_COLUMNS))
        frame.attrs["symbol"] = symbol
        frames[symbol], regimes[symbol], vols[symbol], specs[symbol] = frame, regime, sigma, profile.spec
    bar.close()
    return SyntheticMarket(frames, specs, regimes, vols, int(seed), tf, shape)


def _ar1(shocks: npt.NDArray[np.float64], phi: float, initial: float) -> npt.NDArray[np.float64]:
    """``y[t] = phi * y[t-1] + shocks[t]`` with ``y[-1] = initial``, without a Python loop.

    An exponentially weighted mean with ``alpha = 1 - phi`` computes ``y[t] = phi y[t-1] + alpha x[t]``,
    so feeding it ``x = shocks / alpha`` (behind a seed value ``initial``) yields the AR(1) path.
    """
    alpha = 1.0 - phi
    if alpha <= 0.0:
        return initial + np.cumsum(shocks)
    x = np.concatenate(([initial], shocks / alpha))
    smoothed = pd.Series(x).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return np.asarray(smoothed[1:], dtype=np.float64)


def _markov_regimes(
    rng: np.random.Generator, n: int, mean_bars: npt.NDArray[np.float64], transitions: npt.NDArray[np.float64]
) -> npt.NDArray[np.int8]:
    """Regime of each bar: geometric segment lengths, next regime from the transition row."""
    states: list[int] = []
    lengths: list[int] = []
    total = 0
    state = int(rng.integers(len(Regime)))
    # One iteration per segment (hundreds of bars each), never per bar.
    while total < n:
        length = int(rng.geometric(1.0 / max(float(mean_bars[state]), 1.0)))
        states.append(state)
        lengths.append(length)
        total += length
        state = int(rng.choice(len(Regime), p=transitions[state]))
    return np.repeat(np.asarray(states, dtype=np.int8), lengths)[:n]


def _abs_t_mean(df: float) -> float:
    """E|T| of a Student-t scaled to unit variance."""
    raw = (
        2.0 * math.sqrt(df) * math.gamma((df + 1) / 2) / (math.sqrt(math.pi) * (df - 1) * math.gamma(df / 2))
    )
    return raw / math.sqrt(df / (df - 2))


def _round_to(values: npt.NDArray[np.float64], step: float) -> npt.NDArray[np.float64]:
    # Rounding is monotone, so high >= max(open, close) >= ... survives it.
    return np.round(values / step) * step if step > 0 else values


def _generate_symbol(
    profile: SymbolProfile,
    times_ns: npt.NDArray[np.int64],
    timeframe: pd.Timedelta,
    stream: np.random.SeedSequence,
    p: SyntheticParams,
    *,
    step: Callable[[], object],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    """Bars, regimes and volatility of one symbol; calls ``step`` after each of the ``_STAGES`` stages."""
    n = len(times_ns)
    # One child stream per ingredient, so changing how one is drawn leaves the others as they were.
    rng_regime, rng_vol, rng_ret, rng_wick, rng_volume = (np.random.default_rng(s) for s in stream.spawn(5))
    dt = timeframe.value / MINUTE_NS
    sigma_minute = profile.annual_vol / math.sqrt(MINUTES_PER_YEAR)

    regime = _markov_regimes(
        rng_regime, n, np.asarray(p.regime_minutes) / dt, np.asarray(p.regime_transitions, dtype=np.float64)
    )

    if timeframe.value < DAY_NS:
        minute = ((times_ns // MINUTE_NS) % MINUTES_PER_DAY).astype(np.float64) + dt / 2.0
        x = (minute - MINUTES_PER_DAY / 2) / (MINUTES_PER_DAY / 2)
        # U-shape with mean 1 over a day: E[x^2] = 1/3 for x uniform on [-1, 1].
        season = 1.0 - p.intraday_amplitude / 3.0 + p.intraday_amplitude * x * x
    else:
        season = np.ones(n)

    step()

    phi_vol = 0.5 ** (dt / p.vol_half_life_minutes)
    initial = float(rng_vol.normal(0.0, p.vol_of_vol))
    shocks = rng_vol.normal(0.0, p.vol_of_vol * math.sqrt(1.0 - phi_vol**2), n)
    log_vol = _ar1(shocks, phi_vol, initial)
    # exp(h - s^2/2) has mean 1, so vol_of_vol does not shift the average volatility.
    level = np.asarray(p.regime_vol)[regime] * np.exp(log_vol - p.vol_of_vol**2 / 2.0)
    sigma = sigma_minute * math.sqrt(dt) * np.sqrt(season) * level

    step()

    z = rng_ret.standard_t(p.tail_df, n) / math.sqrt(p.tail_df / (p.tail_df - 2.0))
    shock = sigma * z
    phi_range = 0.5 ** (dt / p.range_half_life_minutes)
    reverting = _ar1(shock, phi_range, 0.0)
    range_step = np.diff(reverting, prepend=0.0)
    drift = np.asarray(p.regime_drift)[regime] * sigma_minute * dt
    returns = np.where(regime == Regime.RANGE, range_step, drift + shock)

    step()

    tick = profile.spec.price_tick
    close = profile.start_price * np.exp(np.cumsum(returns))
    close = np.maximum(_round_to(close, tick), tick)
    open_ = np.concatenate(([max(_round_to(np.array([profile.start_price]), tick)[0], tick)], close[:-1]))
    top = np.maximum(open_, close) * np.exp(sigma * rng_wick.exponential(p.wick, n))
    bottom = np.minimum(open_, close) * np.exp(-sigma * rng_wick.exponential(p.wick, n))
    high = _round_to(top, tick)
    low = np.maximum(_round_to(bottom, tick), tick)

    step()

    activity = (1.0 + p.volume_move_loading * np.abs(z)) / (
        1.0 + p.volume_move_loading * _abs_t_mean(p.tail_df)
    )
    noise = np.exp(rng_volume.normal(0.0, p.volume_noise, n) - p.volume_noise**2 / 2.0)
    volume = profile.volume_per_minute * dt * season * level**p.volume_vol_elasticity * activity * noise
    volume = np.maximum(_round_to(volume, profile.spec.qty_step), 0.0)

    step()
    values = np.column_stack((open_, high, low, close, volume))
    return values, regime, sigma
