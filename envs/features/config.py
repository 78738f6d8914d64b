"""The one configuration of the feature pipeline.

Every period is counted in bars of the data's base timeframe (the modal bar spacing) unless a field
says otherwise. The defaults suit minute bars; they are the single definition of each default.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from envs.errors import ConfigError

__all__ = ["FeatureConfig"]

_WHERE = "feature config"


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureConfig:
    """Parameters of :func:`envs.features.compute_features`; validated on construction.

    Attributes:
        rsi_period: Wilder RSI length.
        macd: MACD ``(fast, slow, signal)`` EMA lengths; ``fast < slow``.
        bb_period: Bollinger band SMA length.
        bb_std: Bollinger band width in standard deviations (> 0).
        breakout_period: breakout compares the close with the high/low of this many *prior* bars.
        momentum_period: momentum is the return over this many bars.
        atr_period: Average True Range length (Wilder).
        adx_period: ADX length; ADX is the trend-strength measure of the regime label.
        realized_vol_period: bars of log returns in the realized-volatility standard deviation.
        regime_vol_window: bars of realized volatility whose rolling median is the "usual" volatility.
        regime_vol_threshold: volatility is "high" when realized volatility / its rolling median exceeds this.
        regime_trend_threshold: the market is "trending" when ADX is at or above this (0-100).
        trend_period: EMA length, in bars of each timeframe, of the trend direction (sign of close - EMA).
        higher_timeframes: multiples of the base timeframe on which trend direction is also measured,
            strictly increasing integers >= 2 (x4 and x16 of minute bars: 4- and 16-minute bars).
        base_timeframe: base bar spacing as a pandas offset string (``"1min"``, ``"1h"``); ``None`` infers
            it as the most common spacing in the data. Pin it when feeding short or gappy windows live.
        volume_period: bars in the mean volume that relative volume divides by (current bar included).
        vwap_period: bars in the rolling volume-weighted average price.
        vap_period: bars in the rolling volume-at-price distribution.
    """

    rsi_period: int = 14
    macd: tuple[int, int, int] = (12, 26, 9)
    bb_period: int = 20
    bb_std: float = 2.0
    breakout_period: int = 20
    momentum_period: int = 10
    atr_period: int = 14
    adx_period: int = 14
    realized_vol_period: int = 20
    regime_vol_window: int = 200
    regime_vol_threshold: float = 1.0
    regime_trend_threshold: float = 25.0
    trend_period: int = 20
    higher_timeframes: tuple[int, ...] = (4, 16)
    base_timeframe: str | None = None
    volume_period: int = 20
    vwap_period: int = 60
    vap_period: int = 120

    def __post_init__(self) -> None:
        for name, minimum in (
            ("rsi_period", 2),
            ("bb_period", 2),
            ("breakout_period", 1),
            ("momentum_period", 1),
            ("atr_period", 1),
            ("adx_period", 2),
            ("realized_vol_period", 2),
            ("regime_vol_window", 1),
            ("trend_period", 2),
            ("volume_period", 1),
            ("vwap_period", 1),
            ("vap_period", 1),
        ):
            _check_int(name, getattr(self, name), minimum)
        for name, low, high in (
            ("bb_std", 0.0, math.inf),
            ("regime_vol_threshold", 0.0, math.inf),
            ("regime_trend_threshold", 0.0, 100.0),
        ):
            _check_float(name, getattr(self, name), low, high)

        macd = _as_int_tuple("macd", self.macd)
        if len(macd) != 3:
            raise ConfigError(
                f"macd={self.macd!r} must have three lengths", where=_WHERE, fix="write macd=(12, 26, 9)"
            )
        for part, value, minimum in zip(("fast", "slow", "signal"), macd, (2, 2, 1), strict=True):
            _check_int(f"macd {part}", value, minimum)
        if macd[0] >= macd[1]:
            raise ConfigError(
                f"macd fast length {macd[0]} must be shorter than slow length {macd[1]}",
                where=_WHERE,
                fix="swap them, e.g. macd=(12, 26, 9)",
            )
        object.__setattr__(self, "macd", macd)

        multiples = _as_int_tuple("higher_timeframes", self.higher_timeframes)
        if not multiples:
            raise ConfigError(
                "higher_timeframes is empty", where=_WHERE, fix="give at least one multiple, e.g. (4, 16)"
            )
        for value in multiples:
            _check_int("higher_timeframes entry", value, 2)
        if any(b <= a for a, b in itertools.pairwise(multiples)):
            raise ConfigError(
                f"higher_timeframes={multiples!r} must be strictly increasing",
                where=_WHERE,
                fix="sort them and drop duplicates, e.g. (4, 16)",
            )
        object.__setattr__(self, "higher_timeframes", multiples)

        if self.base_timeframe is not None:
            _ = self.base_timeframe_ns  # raises ConfigError when unparsable

    @property
    def base_timeframe_ns(self) -> int | None:
        """The pinned base bar spacing in nanoseconds, or ``None`` to infer it from the data."""
        if self.base_timeframe is None:
            return None
        try:
            ns = int(pd.Timedelta(self.base_timeframe).value)
        except (TypeError, ValueError):
            ns = 0
        if not isinstance(self.base_timeframe, str) or ns <= 0:
            raise ConfigError(
                f"base_timeframe={self.base_timeframe!r} is not a positive duration",
                where=_WHERE,
                fix="write a pandas offset such as '1min', '15min' or '1h', or None to infer it",
            )
        return ns

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists); round-trips through :meth:`from_dict`."""
        out = asdict(self)
        out["macd"] = list(self.macd)
        out["higher_timeframes"] = list(self.higher_timeframes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        """Build from a mapping (YAML/JSON); unknown keys raise :class:`ConfigError` with a suggestion."""
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"use one of {sorted(known)}"
                raise ConfigError(f"unknown field {key!r}", where=_WHERE, fix=hint)
        values = dict(data)
        for key in ("macd", "higher_timeframes"):
            if key in values and isinstance(values[key], list):
                values[key] = tuple(values[key])
        return cls(**values)


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; True as a period is a typo, not a length of 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{name}={value!r} must be an integer >= {minimum}",
            where=_WHERE,
            fix=f"set {name} to a whole number of bars >= {minimum}",
        )


def _check_float(name: str, value: object, low: float, high: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low < float(value) <= high):  # type: ignore[arg-type]
        bound = f"in ({low:g}, {high:g}]" if math.isfinite(high) else f"> {low:g}"
        raise ConfigError(
            f"{name}={value!r} must be a finite number {bound}",
            where=_WHERE,
            fix=f"set {name} to a number {bound}",
        )


def _as_int_tuple(name: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, tuple | list):
        raise ConfigError(
            f"{name}={value!r} must be a tuple of integers", where=_WHERE, fix=f"write {name} as (a, b, ...)"
        )
    return tuple(value)
