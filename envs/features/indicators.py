"""Entry signals: RSI, MACD histogram and cross, Bollinger %b, breakout, momentum.

RSI, MACD, Bollinger bands and the rolling highs/lows come from TA-Lib: a maintained C library whose
functions run forward over the series, so a value at bar t is computed from bars <= t only (checked by
the no-look-ahead tests) and 1,000,000 bars take milliseconds.
"""

from __future__ import annotations

import numpy as np
import talib

from envs.features._arrays import FloatArray, lagged, safe_ratio
from envs.features.columns import BB_PCT_B, BREAKOUT, MACD_CROSS, MACD_HIST_PCT, MOMENTUM_PCT, RSI
from envs.features.config import FeatureConfig

__all__ = ["breakout", "entry_signals", "macd_cross", "required_rows"]

_PCT = 100.0
_SMA = talib.MA_Type.SMA  # the classic Bollinger middle band


def macd_cross(hist: FloatArray) -> FloatArray:
    """+1 where the histogram turns positive, -1 where it turns negative, 0 elsewhere.

    A cross needs the previous bar's histogram, so the first bar with a histogram gets NaN.
    """
    prev = lagged(hist, 1)
    out = np.zeros(len(hist))
    out[(prev <= 0.0) & (hist > 0.0)] = 1.0
    out[(prev >= 0.0) & (hist < 0.0)] = -1.0
    out[np.isnan(prev) | np.isnan(hist)] = np.nan
    return out


def breakout(high: FloatArray, low: FloatArray, close: FloatArray, period: int) -> FloatArray:
    """+1 when the close exceeds the highest high of the ``period`` bars before it, -1 when it is below
    their lowest low, else 0. The current bar is excluded from the range it is compared with."""
    prior_high = lagged(talib.MAX(high, period), 1)
    prior_low = lagged(talib.MIN(low, period), 1)
    out = np.zeros(len(close))
    out[close > prior_high] = 1.0
    out[close < prior_low] = -1.0
    out[np.isnan(prior_high) | np.isnan(prior_low)] = np.nan
    return out


def entry_signals(
    high: FloatArray, low: FloatArray, close: FloatArray, config: FeatureConfig
) -> dict[str, FloatArray]:
    """The entry-signal columns, float64, NaN during each indicator's warm-up."""
    fast, slow, signal = config.macd
    _, _, hist = talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    upper, _, lower = talib.BBANDS(
        close, timeperiod=config.bb_period, nbdevup=config.bb_std, nbdevdn=config.bb_std, matype=_SMA
    )
    return {
        RSI: talib.RSI(close, timeperiod=config.rsi_period),
        MACD_HIST_PCT: hist / close * _PCT,
        MACD_CROSS: macd_cross(hist),
        # Flat prices give zero-width bands; the close is then in the middle of them.
        BB_PCT_B: safe_ratio(close - lower, upper - lower, 0.5),
        BREAKOUT: breakout(high, low, close, config.breakout_period),
        MOMENTUM_PCT: (close / lagged(close, config.momentum_period) - 1.0) * _PCT,
    }


def required_rows(config: FeatureConfig) -> dict[str, int]:
    """Rows each entry signal needs before its first value (TA-Lib lookbacks)."""
    _, slow, signal = config.macd
    macd_lookback = (slow - 1) + (signal - 1)
    return {
        RSI: config.rsi_period + 1,
        MACD_HIST_PCT: macd_lookback + 1,
        MACD_CROSS: macd_lookback + 2,
        BB_PCT_B: config.bb_period,
        BREAKOUT: config.breakout_period + 1,
        MOMENTUM_PCT: config.momentum_period + 1,
    }
