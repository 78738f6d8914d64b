"""Row-level checks of OHLCV data and the summary of a valid series.

Every check is vectorized over the whole series and reports the *first* offending row as a
:class:`~envs.errors.DataError` that names the file, the row (CSV line number or row number, with its
timestamp) and the column, and says how to fix it. Gaps are not errors: :func:`summarize` reports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

from envs.data.schema import CLOSE, HIGH, LOW, OHLCV_COLUMNS, OPEN, PRICE_COLUMNS, TIMESTAMP, VOLUME
from envs.errors import DataError

__all__ = ["DataSummary", "RowLocator", "check_ohlcv", "infer_timeframe", "summarize"]

_NO_TIME = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class RowLocator:
    """Turns a row position into the words a user can find the row by.

    Attributes:
        source: the file path, or ``"DataFrame"`` for an in-memory frame.
        kind: ``"line"`` (CSV line numbers, header is line 1) or ``"row"`` (1-based row numbers).
        numbers: the line/row number of each row, after any selection of one symbol.
        symbol: the symbol the rows belong to, when the source holds several.
        labels: the source's own spelling of each canonical column (``"close"`` -> ``"Close"``).
        times_ns: the parsed timestamp of each row (epoch ns), once known; shown beside the number.
    """

    source: str
    kind: str
    numbers: npt.NDArray[np.int64]
    symbol: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    times_ns: npt.NDArray[np.int64] | None = None

    def with_times(self, times_ns: npt.NDArray[np.int64]) -> RowLocator:
        """The same locator, now able to show each row's timestamp."""
        return replace(self, times_ns=times_ns)

    def where(self, position: int | None = None, column: str | None = None) -> str:
        """``"prices.csv, line 7 (2024-01-01T00:05:00Z), column 'close'"`` for one row and column."""
        parts = [self.source]
        if position is not None:
            label = f"{self.kind} {int(self.numbers[position])}"
            extras = []
            if self.symbol is not None:
                extras.append(self.symbol)
            if self.times_ns is not None and self.times_ns[position] != _NO_TIME:
                extras.append(_iso(int(self.times_ns[position])))
            if extras:
                label = f"{label} ({' '.join(extras)})"
            parts.append(label)
        elif self.symbol is not None:
            parts.append(f"symbol {self.symbol}")
        if column is not None:
            parts.append(f"column {self.labels.get(column, column)!r}")
        return ", ".join(parts)


def _iso(time_ns: int) -> str:
    return pd.Timestamp(time_ns, tz="UTC").isoformat().replace("+00:00", "Z")


def _first(mask: npt.NDArray[np.bool_] | np.bool_) -> int | None:
    """Position of the first True, or None (argmax alone cannot tell 'first row' from 'none')."""
    flags = np.asarray(mask)
    if not flags.any():
        return None
    return int(flags.argmax())


def check_ohlcv(
    times_ns: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    locator: RowLocator,
    *,
    min_rows: int,
) -> None:
    """Check parsed bars; raise :class:`DataError` for the first problem found.

    Args:
        times_ns: bar open times, epoch nanoseconds UTC, one per row.
        values: an ``(n, 5)`` float64 array in :data:`OHLCV_COLUMNS` order.
        locator: names the rows in messages.
        min_rows: fewest rows accepted.
    """
    loc = locator.with_times(times_ns)
    n = len(times_ns)

    finite: npt.NDArray[np.bool_] = np.isfinite(values)
    row = _first(~finite.all(axis=1))
    if row is not None:
        col = int((~finite[row]).argmax())
        raise DataError(
            f"missing or non-finite value ({float(values[row, col]):g})",
            where=loc.where(row, OHLCV_COLUMNS[col]),
            fix="fill in the value or remove the row",
        )

    prices = values[:, : len(PRICE_COLUMNS)]
    non_positive: npt.NDArray[np.bool_] = prices <= 0.0
    row = _first(non_positive.any(axis=1))
    if row is not None:
        col = int(non_positive[row].argmax())
        raise DataError(
            f"price must be > 0, got {float(prices[row, col]):g}",
            where=loc.where(row, PRICE_COLUMNS[col]),
            fix="correct or remove the row; prices of zero or below are not tradable",
        )

    volume = values[:, OHLCV_COLUMNS.index(VOLUME)]
    row = _first(volume < 0.0)
    if row is not None:
        raise DataError(
            f"volume must be >= 0, got {float(volume[row]):g}",
            where=loc.where(row, VOLUME),
            fix="correct or remove the row",
        )

    o, h, lo, c = (values[:, OHLCV_COLUMNS.index(name)] for name in (OPEN, HIGH, LOW, CLOSE))
    top = np.maximum(o, c)
    row = _first(h < top)
    if row is not None:
        raise DataError(
            f"high {float(h[row]):g} is below max(open, close) = {float(top[row]):g}",
            where=loc.where(row, HIGH),
            fix="correct the row: high must be the highest price of the bar",
        )
    bottom = np.minimum(o, c)
    row = _first(lo > bottom)
    if row is not None:
        raise DataError(
            f"low {float(lo[row]):g} is above min(open, close) = {float(bottom[row]):g}",
            where=loc.where(row, LOW),
            fix="correct the row: low must be the lowest price of the bar",
        )

    step = np.diff(times_ns)
    row = _first(step < 0)
    if row is not None:
        raise DataError(
            f"timestamps are not sorted: {_iso(int(times_ns[row + 1]))} is earlier than "
            f"{_iso(int(times_ns[row]))} on the previous row",
            where=loc.where(row + 1, TIMESTAMP),
            fix="sort the rows by timestamp (e.g. df.sort_index())",
        )
    row = _first(step == 0)
    if row is not None:
        raise DataError(
            "duplicate timestamp: the previous row has the same time",
            where=loc.where(row + 1, TIMESTAMP),
            fix="keep one row per timestamp (e.g. df[~df.index.duplicated(keep='last')])",
        )

    if n < min_rows:
        raise DataError(
            f"only {n} row(s); at least {min_rows} are needed",
            where=loc.where(),
            fix="give a longer series, or ask for fewer rows with min_rows / --min-rows",
        )


def infer_timeframe(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The modal spacing between consecutive bars (the smallest one on a tie); None below two bars."""
    if len(index) < 2:
        return None
    steps = np.diff(index.as_unit("ns").asi8)
    values, counts = np.unique(steps, return_counts=True)
    return pd.Timedelta(int(values[int(counts.argmax())]), unit="ns")


@dataclass(frozen=True, slots=True)
class DataSummary:
    """What a valid OHLCV series holds.

    Attributes:
        rows: number of bars.
        first: open time of the first bar.
        last: open time of the last bar.
        timeframe: the modal bar spacing (None for a single bar).
        gaps: number of spacings longer than ``timeframe`` (weekends and holidays count).
        largest_gap: the longest spacing when there are gaps, else None.
        missing_bars: bars absent from the gaps, had the series been regular.
        symbol: the symbol, when known.
    """

    rows: int
    first: pd.Timestamp
    last: pd.Timestamp
    timeframe: pd.Timedelta | None
    gaps: int
    largest_gap: pd.Timedelta | None
    missing_bars: int
    symbol: str | None = None

    @property
    def span(self) -> pd.Timedelta:
        """From the first bar's open to the last bar's close."""
        return self.last - self.first + (self.timeframe or pd.Timedelta(0))


def summarize(df: pd.DataFrame, *, symbol: str | None = None) -> DataSummary:
    """Summarize a canonical OHLCV frame (as returned by ``load_ohlcv``): size, span, timeframe, gaps.

    Args:
        df: the frame; its ``attrs["symbol"]`` is used when ``symbol`` is not given.
        symbol: the symbol to report.

    Raises:
        DataError: the frame is empty or has no ``DatetimeIndex``.
    """
    index = df.index
    if not isinstance(index, pd.DatetimeIndex) or len(index) == 0:
        raise DataError(
            "cannot summarize: the frame is empty or not indexed by time",
            where="DataFrame",
            fix="load it with envs.data.load_ohlcv first",
        )
    timeframe = infer_timeframe(index)
    gaps = 0
    largest: pd.Timedelta | None = None
    missing = 0
    if timeframe is not None:
        steps = np.diff(index.as_unit("ns").asi8)
        tf_ns = timeframe.value
        long_steps = steps[steps > tf_ns]
        gaps = len(long_steps)
        if gaps:
            largest = pd.Timedelta(int(long_steps.max()), unit="ns")
            missing = int(np.sum(np.ceil(long_steps / tf_ns) - 1))
    attrs_symbol = df.attrs.get("symbol")
    return DataSummary(
        rows=len(index),
        first=index[0],
        last=index[-1],
        timeframe=timeframe,
        gaps=gaps,
        largest_gap=largest,
        missing_bars=missing,
        symbol=symbol if symbol is not None else (str(attrs_symbol) if attrs_symbol is not None else None),
    )
