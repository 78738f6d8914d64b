"""Feature names and groups: the one definition of every column of the feature matrix.

The group names are the field names of :class:`envs.events.TradeResult`'s entry snapshot, so a
snapshot of the matrix drops straight into a trade record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envs.features.config import FeatureConfig

__all__ = [
    "ATR_PCT",
    "BB_PCT_B",
    "BREAKOUT",
    "ENTRY_SIGNALS",
    "FEATURE_GROUPS",
    "MACD_CROSS",
    "MACD_HIST_PCT",
    "MARKET_CONDITIONS",
    "MOMENTUM_PCT",
    "REALIZED_VOL_PCT",
    "REGIME",
    "REL_VOLUME",
    "RSI",
    "TF_ALIGNMENT",
    "TIMEFRAME_ALIGNMENT",
    "TREND_DIR_BASE",
    "TREND_STRENGTH",
    "VAP_POSITION",
    "VOLUME_PROFILE",
    "VOL_RATIO",
    "VWAP_DIST_PCT",
    "categorical_columns",
    "feature_layout",
    "trend_dir_column",
]

# Groups, in matrix order.
ENTRY_SIGNALS = "entry_signals"
MARKET_CONDITIONS = "market_conditions"
TIMEFRAME_ALIGNMENT = "timeframe_alignment"
VOLUME_PROFILE = "volume_profile"
FEATURE_GROUPS: tuple[str, ...] = (ENTRY_SIGNALS, MARKET_CONDITIONS, TIMEFRAME_ALIGNMENT, VOLUME_PROFILE)

# Entry signals.
RSI = "rsi"
"""Wilder RSI, 0-100."""
MACD_HIST_PCT = "macd_hist_pct"
"""MACD histogram (MACD line - signal line) in percent of the close, comparable across price levels."""
MACD_CROSS = "macd_cross"
"""+1 on the bar the MACD line crosses above its signal line, -1 on a cross below, else 0."""
BB_PCT_B = "bb_pct_b"
"""Bollinger %b: 0 at the lower band, 1 at the upper band (0.5 when the bands have zero width)."""
BREAKOUT = "breakout"
"""+1 when the close is above the high of the prior N bars (current bar excluded), -1 below their low."""
MOMENTUM_PCT = "momentum_pct"
"""Return over N bars, in percent."""

# Market conditions.
ATR_PCT = "atr_pct"
"""Average True Range in percent of the close."""
REALIZED_VOL_PCT = "realized_vol_pct"
"""Standard deviation of per-bar log returns, in percent (not annualized)."""
TREND_STRENGTH = "trend_strength"
"""ADX, 0-100: trend strength regardless of direction."""
VOL_RATIO = "vol_ratio"
"""Realized volatility divided by its own rolling median (1 = usual volatility)."""
REGIME = "regime"
"""Market regime code, an :class:`envs.features.regime.Regime` value (trend/range x high/low volatility)."""

# Timeframe alignment.
TREND_DIR_BASE = "trend_dir_base"
"""Trend direction on the base timeframe: sign(close - EMA), +1/-1/0."""
TF_ALIGNMENT = "tf_alignment"
"""Mean of the trend directions of all timeframes, in [-1, 1]."""

# Volume profile.
REL_VOLUME = "rel_volume"
"""Volume divided by the rolling mean volume (current bar included)."""
VWAP_DIST_PCT = "vwap_dist_pct"
"""Distance of the close from the rolling VWAP, in percent of the VWAP."""
VAP_POSITION = "vap_position"
"""Share of the window's volume traded at typical prices below the close (ties count half), in [0, 1]."""

_TREND_DIR_PREFIX = "trend_dir_x"


def trend_dir_column(multiple: int) -> str:
    """Name of the trend-direction column of the timeframe ``multiple`` times the base one."""
    return f"{_TREND_DIR_PREFIX}{multiple}"


def feature_layout(config: FeatureConfig) -> dict[str, tuple[str, ...]]:
    """Columns of each group, in matrix order, for ``config``."""
    higher = tuple(trend_dir_column(m) for m in config.higher_timeframes)
    return {
        ENTRY_SIGNALS: (RSI, MACD_HIST_PCT, MACD_CROSS, BB_PCT_B, BREAKOUT, MOMENTUM_PCT),
        MARKET_CONDITIONS: (ATR_PCT, REALIZED_VOL_PCT, TREND_STRENGTH, VOL_RATIO, REGIME),
        TIMEFRAME_ALIGNMENT: (TREND_DIR_BASE, *higher, TF_ALIGNMENT),
        VOLUME_PROFILE: (REL_VOLUME, VWAP_DIST_PCT, VAP_POSITION),
    }


def categorical_columns(config: FeatureConfig) -> frozenset[str]:
    """Columns holding codes or directions: normalization must leave them as they are."""
    higher = (trend_dir_column(m) for m in config.higher_timeframes)
    return frozenset((MACD_CROSS, BREAKOUT, REGIME, TREND_DIR_BASE, TF_ALIGNMENT, *higher))
