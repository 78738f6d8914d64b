"""Timeframe alignment: trend direction on the base timeframe and on higher ones, from completed bars only.

Higher bars group base bars by time: a base bar belongs to higher bar ``floor(timestamp / span)`` with
``span = multiple * base timeframe`` (epoch-anchored, like ``DatetimeIndex.floor``). Bar timestamps are
open times, so a higher bar ends at ``(floor + 1) * span``. At base row t (decided at t's close,
``timestamp[t] + base``) the usable higher bars are those that have ended by then:

* the higher bar containing t, if t's close reaches its end (t sits in its last slot); else
* the higher bar before it, which ended when the data moved into t's higher bar, even when gaps left it
  with fewer base bars than ``multiple``.

A partly formed higher bar is therefore never read, and whether a bar is complete is decided from
timestamps up to t only (never from whether a later row exists). The directions of completed higher
bars are carried forward to every base row until the next higher bar completes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import talib

from envs.errors import DataError
from envs.features._arrays import FloatArray
from envs.features.columns import TF_ALIGNMENT, TREND_DIR_BASE, trend_dir_column
from envs.features.config import FeatureConfig

__all__ = [
    "higher_timeframe_trend",
    "infer_base_timeframe_ns",
    "required_rows",
    "timeframe_alignment",
    "trend_direction",
]

IntArray = npt.NDArray[np.int64]


def infer_base_timeframe_ns(timestamps_ns: IntArray) -> int:
    """The most common spacing between consecutive timestamps (the smallest one on a tie)."""
    if len(timestamps_ns) < 2:
        raise DataError(
            "cannot tell the bar spacing from fewer than 2 rows",
            where="ohlcv index",
            fix="load more rows or pin FeatureConfig.base_timeframe",
        )
    spacing = np.diff(timestamps_ns)
    # Fast path: regular data, where the smallest spacing is the majority.
    smallest = int(spacing.min())
    if 2 * int(np.count_nonzero(spacing == smallest)) > len(spacing):
        return smallest
    values, counts = np.unique(spacing, return_counts=True)
    return int(values[int(np.argmax(counts))])


def check_spacing(timestamps_ns: IntArray, base_ns: int) -> None:
    """Refuse rows closer together than the base timeframe (unsorted, duplicated or off-grid bars).

    Completion of a higher bar is judged from the base bar's close time; that is only sound when no two
    bars are closer than one base bar.
    """
    spacing = np.diff(timestamps_ns)
    bad = np.flatnonzero(spacing < base_ns)
    if len(bad):
        row = int(bad[0]) + 1
        gap = pd.Timedelta(int(spacing[bad[0]]), unit="ns")
        base = pd.Timedelta(base_ns, unit="ns")
        raise DataError(
            f"bar starts {gap} after the previous one, less than the base timeframe {base}",
            where=f"ohlcv index, row {row}",
            fix="sort and de-duplicate the timestamps and resample to one timeframe "
            "(or pin FeatureConfig.base_timeframe)",
        )


def trend_direction(close: FloatArray, period: int) -> FloatArray:
    """``sign(close - EMA(close, period))``: +1 above the EMA, -1 below, 0 on it, NaN during warm-up."""
    ema = talib.EMA(close, timeperiod=period)
    return np.sign(close - ema)


def higher_timeframe_trend(
    timestamps_ns: IntArray, close: FloatArray, base_ns: int, multiple: int, period: int
) -> FloatArray:
    """Trend direction of the last *completed* higher bar at every base row (NaN before there is one)."""
    n = len(close)
    span = base_ns * multiple
    bucket = timestamps_ns // span
    starts_new = np.empty(n, dtype=bool)
    starts_new[:1] = True
    np.not_equal(bucket[1:], bucket[:-1], out=starts_new[1:])
    ordinal = np.cumsum(starts_new) - 1  # 0, 1, 2 ... per higher bar present in the data
    first_rows = np.flatnonzero(starts_new)
    last_rows = np.append(first_rows[1:] - 1, n - 1)
    # A higher bar's close is its last base bar's close. The current (last) higher bar may still be
    # forming; its direction is only read at rows where it has completed (below).
    direction = trend_direction(close[last_rows], period)

    completes_here = timestamps_ns + base_ns >= (bucket + 1) * span
    usable = ordinal - (~completes_here).astype(np.int64)
    out = np.full(n, np.nan)
    has_bar = usable >= 0
    out[has_bar] = direction[usable[has_bar]]
    return out


def timeframe_alignment(
    timestamps_ns: IntArray, close: FloatArray, base_ns: int, config: FeatureConfig
) -> dict[str, FloatArray]:
    """The timeframe-alignment columns: direction per timeframe and their mean."""
    out = {TREND_DIR_BASE: trend_direction(close, config.trend_period)}
    for multiple in config.higher_timeframes:
        out[trend_dir_column(multiple)] = higher_timeframe_trend(
            timestamps_ns, close, base_ns, multiple, config.trend_period
        )
    directions = list(out.values())
    total = directions[0].copy()
    for direction in directions[1:]:
        total += direction  # NaN until every timeframe has a direction
    out[TF_ALIGNMENT] = total / len(directions)
    return out


def required_rows(config: FeatureConfig) -> dict[str, int]:
    """Rows each direction needs at most before its first value.

    A higher bar spans at most ``multiple`` rows and the first (possibly partial) one completes within
    ``multiple`` rows, so ``trend_period`` completed higher bars need at most ``trend_period * multiple``
    rows; gaps only make higher bars complete sooner in rows.
    """
    out = {TREND_DIR_BASE: config.trend_period}
    for multiple in config.higher_timeframes:
        out[trend_dir_column(multiple)] = config.trend_period * multiple
    out[TF_ALIGNMENT] = max(out.values())
    return out
