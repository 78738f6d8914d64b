"""Resample canonical OHLCV bars to a higher timeframe."""

from __future__ import annotations

import pandas as pd

from envs.data.schema import (
    CLOSE,
    HIGH,
    LOW,
    OHLCV_COLUMNS,
    OPEN,
    RESAMPLE_ORIGIN,
    TIMESTAMP,
    VOLUME,
    format_timeframe,
    parse_timeframe,
)
from envs.data.validate import infer_timeframe
from envs.errors import DataError

__all__ = ["resample_ohlcv"]

_AGGREGATION = {OPEN: "first", HIGH: "max", LOW: "min", CLOSE: "last", VOLUME: "sum"}


def resample_ohlcv(df: pd.DataFrame, rule: str | pd.Timedelta, *, keep_partial: bool = False) -> pd.DataFrame:
    """Aggregate bars into longer ones: open=first, high=max, low=min, close=last, volume=sum.

    Each new bar is labelled by its open time; bins are aligned to UTC midnight (weeks start on
    Monday). Bins without any source bar (gaps) are left out. The trailing bin is dropped unless its
    last source bar closes at the bin's close, i.e. the bar is complete, or ``keep_partial`` is set.

    Args:
        df: a canonical OHLCV frame (see ``load_ohlcv``).
        rule: the target bar length, e.g. ``"1h"``, ``"15m"``, ``"1d"``.
        keep_partial: keep an incomplete trailing bar.

    Raises:
        ConfigError: ``rule`` is not a timeframe.
        DataError: the target is not a whole multiple of the source's timeframe.
    """
    target = parse_timeframe(rule)
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(
            "cannot resample: the frame is not indexed by time",
            where="DataFrame",
            fix="load it with envs.data.load_ohlcv first",
        )
    source_tf = infer_timeframe(df.index)
    if source_tf is not None and (target < source_tf or target % source_tf != pd.Timedelta(0)):
        raise DataError(
            f"cannot resample {format_timeframe(source_tf)} bars to {format_timeframe(target)}: "
            "the target must be a whole multiple of the source timeframe",
            where=f"rule {str(rule)!r}",
            fix=f"choose a multiple of {format_timeframe(source_tf)}",
        )
    bins = df[list(OHLCV_COLUMNS)].resample(target, origin=RESAMPLE_ORIGIN, label="left", closed="left")
    out = bins.agg(_AGGREGATION)
    counts = bins[CLOSE].count()
    out = out[counts.to_numpy() > 0]
    if not keep_partial and len(out):
        # Without a known source timeframe (a single bar) completeness cannot be shown: drop it.
        last_close = df.index[-1] + source_tf if source_tf is not None else None
        if last_close is None or last_close < out.index[-1] + target:
            out = out.iloc[:-1]
    out.index = pd.DatetimeIndex(out.index, name=TIMESTAMP).as_unit("ns")
    out = out.astype("float64")
    out.attrs = dict(df.attrs)
    return out
