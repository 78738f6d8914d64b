"""``compute_features``: OHLCV bars in, the read-only feature matrix out.

A pure function of (data, config): no state, no randomness, the same bits every time. Every feature at
row t is computed from bars <= t (row t's decision is taken at its close), which the no-look-ahead
property tests check column by column.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from envs.errors import DataError
from envs.features import indicators, regime, timeframes, volume
from envs.features._arrays import FloatArray
from envs.features.columns import categorical_columns, feature_layout
from envs.features.config import FeatureConfig
from envs.features.matrix import FeatureMatrix

__all__ = ["OHLCV_COLUMNS", "compute_features", "min_rows"]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
_WHERE = "ohlcv"


def _required(config: FeatureConfig) -> dict[str, int]:
    return {
        **indicators.required_rows(config),
        **regime.required_rows(config),
        **timeframes.required_rows(config),
        **volume.required_rows(config),
    }


def min_rows(config: FeatureConfig | None = None) -> int:
    """Fewest bars for which ``compute_features`` yields at least one row with every feature finite."""
    return max(_required(config or FeatureConfig()).values())


def compute_features(ohlcv: pd.DataFrame, config: FeatureConfig | None = None) -> FeatureMatrix:
    """Compute every feature group for every bar.

    Args:
        ohlcv: float columns ``open, high, low, close, volume`` indexed by the bars' open times (a
            tz-aware, strictly increasing ``DatetimeIndex``).
        config: feature parameters; the defaults when ``None``.

    Returns:
        The read-only float32 feature matrix; rows before ``warmup`` may hold NaN.

    Raises:
        DataError: missing columns, non-finite or inconsistent prices, a bad index, or fewer rows than
            :func:`min_rows` (the message says how many are needed).
    """
    config = config or FeatureConfig()
    open_, high, low, close, vol = _columns(ohlcv)
    timestamps = _timestamps(ohlcv)
    _check_rows(ohlcv, open_, high, low, close, vol)
    _check_length(len(ohlcv), config)
    base_ns = config.base_timeframe_ns or timeframes.infer_base_timeframe_ns(timestamps)
    timeframes.check_spacing(timestamps, base_ns)

    computed: dict[str, FloatArray] = {
        **indicators.entry_signals(high, low, close, config),
        **regime.market_conditions(high, low, close, config),
        **timeframes.timeframe_alignment(timestamps, close, base_ns, config),
        **volume.volume_profile(high, low, close, vol, config),
    }

    layout = feature_layout(config)
    names = tuple(name for group in layout.values() for name in group)
    values = np.empty((len(close), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        values[:, j] = computed.pop(name)  # pop: free each float64 column once it is stored
    groups: dict[str, tuple[int, ...]] = {}
    start = 0
    for group, cols in layout.items():
        groups[group] = tuple(range(start, start + len(cols)))
        start += len(cols)

    warmup = _warmup(values)
    if warmup > min_rows(config) - 1:  # pragma: no cover - every feature is finite after its lookback
        row = warmup - 1
        name = names[int(np.flatnonzero(~np.isfinite(values[row]))[0])]
        raise DataError(
            f"feature {name!r} is not finite at row {row}, after its warm-up",
            where=f"{_WHERE} row {row} ({ohlcv.index[row]})",
            fix="check the bars around that row for extreme values",
        )
    return FeatureMatrix(
        values=values,
        columns=names,
        index=ohlcv.index,  # type: ignore[arg-type]  # checked to be a DatetimeIndex above
        groups=groups,
        warmup=warmup,
        categorical=categorical_columns(config),
        config=config,
    )


def _warmup(values: npt.NDArray[np.float32]) -> int:
    """One past the last row holding a non-finite value."""
    bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
    return int(bad_rows[-1]) + 1 if len(bad_rows) else 0


def _columns(ohlcv: pd.DataFrame) -> tuple[FloatArray, ...]:
    if not isinstance(ohlcv, pd.DataFrame):
        raise DataError(
            f"expected a pandas DataFrame of bars, got {type(ohlcv).__name__}",
            where=_WHERE,
            fix="load the bars with envs.data",
        )
    missing = [c for c in OHLCV_COLUMNS if c not in ohlcv.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}",
            where=_WHERE,
            fix=f"provide the columns {list(OHLCV_COLUMNS)} (lower case)",
        )
    out = []
    for name in OHLCV_COLUMNS:
        try:
            # TA-Lib wants contiguous float64; a copy also keeps the caller's frame untouched.
            out.append(np.ascontiguousarray(ohlcv[name].to_numpy(dtype=np.float64)))
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"column is not numeric ({exc})", where=f"{_WHERE} column {name!r}", fix="convert it to float"
            ) from None
    return tuple(out)


def _timestamps(ohlcv: pd.DataFrame) -> npt.NDArray[np.int64]:
    index = ohlcv.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise DataError(
            "the index must be a tz-aware DatetimeIndex of bar open times",
            where=f"{_WHERE} index",
            fix="index the bars by timestamp and localize it to UTC (index.tz_localize('UTC'))",
        )
    stamps = np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
    bad = np.flatnonzero(np.diff(stamps) <= 0)
    if len(bad):
        row = int(bad[0]) + 1
        raise DataError(
            f"timestamp {index[row]} does not come after the previous one ({index[row - 1]})",
            where=f"{_WHERE} index, row {row}",
            fix="sort the bars by time and drop duplicated timestamps",
        )
    return stamps


def _check_rows(
    ohlcv: pd.DataFrame,
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    vol: FloatArray,
) -> None:
    checks = (
        ("open", ~(np.isfinite(open_) & (open_ > 0)), "a finite price > 0"),
        ("high", ~(np.isfinite(high) & (high > 0)), "a finite price > 0"),
        ("low", ~(np.isfinite(low) & (low > 0)), "a finite price > 0"),
        ("close", ~(np.isfinite(close) & (close > 0)), "a finite price > 0"),
        ("volume", ~(np.isfinite(vol) & (vol >= 0)), "a finite volume >= 0"),
        ("high", high < np.maximum(open_, close), "at least max(open, close)"),
        ("low", low > np.minimum(open_, close), "at most min(open, close)"),
    )
    for name, bad, expected in checks:
        rows = np.flatnonzero(bad)
        if len(rows):
            row = int(rows[0])
            raise DataError(
                f"{name} is {ohlcv[name].iloc[row]!r}, expected {expected} ({len(rows)} such rows)",
                where=f"{_WHERE} row {row} ({ohlcv.index[row]}), column {name!r}",
                fix="clean the data (envs.data validates and reports such rows)",
            )


def _check_length(n: int, config: FeatureConfig) -> None:
    required = _required(config)
    need = max(required.values())
    if n < need:
        longest = max(required, key=lambda name: required[name])
        raise DataError(
            f"{n} rows are too few: these features need at least {need} rows "
            f"(the longest, {longest!r}, needs {need})",
            where=_WHERE,
            fix="load a longer history or shorten the periods in FeatureConfig",
        )
