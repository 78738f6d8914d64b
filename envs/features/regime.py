"""Market conditions: volatility, trend strength and the trend/range x high/low-volatility regime label.

ATR and ADX come from TA-Lib (forward-running Wilder smoothing). Realized volatility and its rolling
median use pandas' rolling windows, which also run forward; the median is the volatility's *own past*,
so "high volatility" at bar t compares bar t with bars <= t only.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import pandas as pd
import talib

from envs.features._arrays import FloatArray, lagged
from envs.features.columns import ATR_PCT, REALIZED_VOL_PCT, REGIME, TREND_STRENGTH, VOL_RATIO
from envs.features.config import FeatureConfig

__all__ = ["MAX_VOL_RATIO", "Regime", "market_conditions", "regime_label", "required_rows"]

_PCT = 100.0

MAX_VOL_RATIO = 100.0
"""Volatility ratio given when the usual volatility is zero but the current one is not (a flat market
waking up); also the ceiling of the ratio, so the column stays finite in float32."""


class Regime(IntEnum):
    """Market regime codes stored in the ``regime`` column: ``2 * trending + high_volatility``."""

    RANGE_LOW_VOL = 0
    RANGE_HIGH_VOL = 1
    TREND_LOW_VOL = 2
    TREND_HIGH_VOL = 3


def regime_label(
    trend_strength: FloatArray, vol_ratio: FloatArray, trend_threshold: float, vol_threshold: float
) -> FloatArray:
    """Regime code per bar (as float, NaN where an input is NaN).

    Trending: ``trend_strength >= trend_threshold``; high volatility: ``vol_ratio > vol_threshold``.
    """
    trending = (trend_strength >= trend_threshold).astype(np.float64)
    high_vol = (vol_ratio > vol_threshold).astype(np.float64)
    trend_step = float(Regime.TREND_LOW_VOL - Regime.RANGE_LOW_VOL)
    vol_step = float(Regime.RANGE_HIGH_VOL - Regime.RANGE_LOW_VOL)
    out = float(Regime.RANGE_LOW_VOL) + trend_step * trending + vol_step * high_vol
    out[np.isnan(trend_strength) | np.isnan(vol_ratio)] = np.nan
    return out


def _vol_ratio(realized: FloatArray, window: int) -> FloatArray:
    usual = pd.Series(realized).rolling(window, min_periods=window).median().to_numpy(dtype=np.float64)
    out = np.where(realized > 0.0, MAX_VOL_RATIO, 1.0)  # where the usual volatility is zero
    np.divide(realized, usual, out=out, where=usual > 0.0)
    np.minimum(out, MAX_VOL_RATIO, out=out)
    out[np.isnan(usual) | np.isnan(realized)] = np.nan
    return out


def market_conditions(
    high: FloatArray, low: FloatArray, close: FloatArray, config: FeatureConfig
) -> dict[str, FloatArray]:
    """The market-condition columns, float64, NaN during each measure's warm-up."""
    log_ret = np.log(close / lagged(close, 1))
    realized = (
        pd.Series(log_ret)
        .rolling(config.realized_vol_period, min_periods=config.realized_vol_period)
        .std()
        .to_numpy(dtype=np.float64)
        * _PCT
    )
    trend_strength = talib.ADX(high, low, close, timeperiod=config.adx_period)
    vol_ratio = _vol_ratio(realized, config.regime_vol_window)
    return {
        ATR_PCT: talib.ATR(high, low, close, timeperiod=config.atr_period) / close * _PCT,
        REALIZED_VOL_PCT: realized,
        TREND_STRENGTH: trend_strength,
        VOL_RATIO: vol_ratio,
        REGIME: regime_label(
            trend_strength, vol_ratio, config.regime_trend_threshold, config.regime_vol_threshold
        ),
    }


def required_rows(config: FeatureConfig) -> dict[str, int]:
    """Rows each market condition needs before its first value."""
    vol_ratio = config.realized_vol_period + config.regime_vol_window
    adx = 2 * config.adx_period
    return {
        ATR_PCT: config.atr_period + 1,
        REALIZED_VOL_PCT: config.realized_vol_period + 1,
        TREND_STRENGTH: adx,
        VOL_RATIO: vol_ratio,
        REGIME: max(adx, vol_ratio),
    }
