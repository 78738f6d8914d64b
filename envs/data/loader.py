"""Load OHLCV bars from a CSV file, a Parquet file or a DataFrame into the canonical layout.

See :func:`load_ohlcv` for what is accepted and what comes out.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_integer_dtype, is_numeric_dtype

from envs.data.schema import DEFAULT_MIN_ROWS, OHLCV_COLUMNS, SYMBOL, TIME_COLUMN_CANDIDATES, TIMESTAMP
from envs.data.validate import RowLocator, check_ohlcv
from envs.errors import DataError, did_you_mean

__all__ = ["CSV_SUFFIXES", "PARQUET_SUFFIXES", "Source", "load_ohlcv", "load_ohlcv_by_symbol"]

Source: TypeAlias = "str | os.PathLike[str] | pd.DataFrame"

CSV_SUFFIXES: Final[tuple[str, ...]] = (".csv", ".csv.gz")
PARQUET_SUFFIXES: Final[tuple[str, ...]] = (".parquet", ".pq")
DATAFRAME_SOURCE: Final = "DataFrame"

# Epoch numbers are told apart by magnitude: 1e11 s is the year 5138, 1e11 ms is 1973.
EpochUnit: TypeAlias = Literal["s", "ms", "us", "ns"]
_EPOCH_UNITS: Final[tuple[tuple[float, EpochUnit], ...]] = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))
# Text timestamp formats tried in turn; ISO 8601 (with or without offset) wins whenever it fits.
_ISO: Final = "ISO8601"
_TEXT_FORMATS: Final[tuple[str, ...]] = (
    _ISO,
    "%d.%m.%Y %H:%M:%S.%f",  # day-first, dotted (Dukascopy exports)
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y.%m.%d %H:%M:%S",  # MetaTrader exports
    "%Y.%m.%d %H:%M",
    "%Y.%m.%d",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
)
_TIME_FIX: Final = (
    "write ISO 8601 timestamps (2024-01-31T13:00:00Z; naive ones are taken as UTC) "
    "or epoch seconds / milliseconds"
)
_NUMBER_FIX: Final = "write plain numbers with a '.' decimal point and no thousands separators or units"
_TABLE_FIX: Final = (
    f"give a CSV file with a header row '{TIMESTAMP},{','.join(OHLCV_COLUMNS)}' "
    "or a Parquet file with those columns"
)
_SNIFF_BYTES: Final = 8192
_PARQUET_MAGIC: Final = b"PAR1"
_SYMBOLS_SHOWN: Final = 20


@dataclass(frozen=True, slots=True)
class _Table:
    """A source read into memory, before any interpretation."""

    frame: pd.DataFrame
    source: str
    kind: str  # "line" for CSV (header = line 1), "row" otherwise
    first_number: int


def load_ohlcv(
    source: Source, *, symbol: str | None = None, min_rows: int = DEFAULT_MIN_ROWS
) -> pd.DataFrame:
    """Load and validate OHLCV bars.

    Accepted input:
        * a path to ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq``, or a ``pandas.DataFrame``;
        * column names in any case; extra columns are dropped;
        * the time in a column named ``timestamp``, ``datetime``, ``date`` or ``time``, or in the index;
          as epoch seconds or milliseconds (told apart by magnitude; micro- and nanoseconds too), as
          ISO 8601 text, as a few common day-first/month-first text formats, or as datetimes. Naive
          times are taken as UTC, tz-aware ones are converted to UTC;
        * long-format files holding several symbols in a ``symbol`` column: pick one with ``symbol``.

    Convention: a bar's timestamp is its **open** time; the bar closes at ``timestamp + timeframe``.

    Args:
        source: the file or frame.
        symbol: the symbol to select from a multi-symbol source. For a source without a ``symbol``
            column it only labels the result (``df.attrs["symbol"]``).
        min_rows: fewest bars accepted.

    Returns:
        A new frame with exactly the float64 columns ``open, high, low, close, volume`` and a
        tz-aware UTC ``DatetimeIndex`` (unit ``"ns"``) named ``timestamp``, sorted and unique.
        ``df.attrs["symbol"]`` holds the symbol when known.

    Raises:
        DataError: the source is missing, unreadable or invalid; the message names the file, the row
            (CSV line number or row number, with its timestamp) and the column, and says how to fix it.
    """
    table = _read_source(source)
    return _canonical(table, symbol=symbol, min_rows=min_rows)


def load_ohlcv_by_symbol(
    source: Source, *, min_rows: int = DEFAULT_MIN_ROWS
) -> dict[str | None, pd.DataFrame]:
    """Load every symbol of a source, reading it once.

    Returns:
        ``{symbol: frame}`` in symbol order for a source with a ``symbol`` column, else
        ``{None: frame}``. Each frame is as :func:`load_ohlcv` returns it.
    """
    table = _read_source(source)
    names = _column_names(table)
    if SYMBOL not in names:
        return {None: _canonical(table, symbol=None, min_rows=min_rows)}
    label = names[SYMBOL]
    codes, categories = _symbol_codes(table, label)
    # Categorize the symbol column once, not once per symbol.
    as_category = pd.Categorical.from_codes(codes, categories=pd.Index(categories))
    table = replace(table, frame=table.frame.assign(**{label: as_category}))
    present = sorted(categories[i] for i in np.unique(codes))
    return {s: _canonical(table, symbol=s, min_rows=min_rows) for s in present}


# --- reading -------------------------------------------------------------------------------------


def _read_source(source: Source) -> _Table:
    if isinstance(source, pd.DataFrame):
        return _Table(source, DATAFRAME_SOURCE, "row", 1)
    if not isinstance(source, str | os.PathLike):
        raise DataError(
            f"cannot load OHLCV data from a {type(source).__name__}",
            fix="pass a path to a .csv/.parquet file or a pandas DataFrame",
        )
    path = Path(source)
    where = str(source)
    if not path.exists():
        raise DataError(
            "file not found",
            where=where,
            fix="check the path; bundled datasets load by name (see `slf data list`)",
        )
    if path.is_dir():
        raise DataError(
            "is a directory, not a data file", where=where, fix="give the path of a .csv or .parquet file"
        )
    name = path.name.lower()
    is_csv = name.endswith(CSV_SUFFIXES)
    is_parquet = name.endswith(PARQUET_SUFFIXES)
    if not (is_csv or is_parquet):
        raise DataError(
            f"unknown file extension {''.join(path.suffixes[-2:]) or '(none)'!r}",
            where=where,
            fix=f"use one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)} (the extension decides the reader)",
        )
    if path.stat().st_size == 0:
        raise DataError("file is empty", where=where, fix=_TABLE_FIX)
    frame = _read_csv(path, where) if is_csv else _read_parquet(path, where)
    if is_csv:
        return _Table(frame, where, "line", 2)
    return _Table(frame, where, "row", 1)


def _sniff_text(path: Path, where: str) -> None:
    """Refuse binary content before pandas turns it into a confusing table."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        else:
            with path.open("rb") as fh:
                head = fh.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"cannot read the file ({exc})", where=where, fix="give an uncompressed or gzip CSV file"
        ) from exc
    if head.startswith(_PARQUET_MAGIC):
        raise DataError(
            "is a Parquet file, not a CSV file", where=where, fix="rename it with a .parquet extension"
        )
    if b"\x00" in head:
        raise DataError("is not a text CSV file (it holds binary data)", where=where, fix=_TABLE_FIX)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sniffed block is fine; anything earlier is not.
        if exc.start < len(head) - 3:
            raise DataError(
                f"is not a UTF-8 text CSV file (undecodable byte at offset {exc.start})",
                where=where,
                fix=_TABLE_FIX,
            ) from exc
    if not head.strip():
        raise DataError("file is empty (only blank lines)", where=where, fix=_TABLE_FIX)


def _read_csv(path: Path, where: str) -> pd.DataFrame:
    _sniff_text(path, where)
    try:
        # Blank lines are kept as empty rows so that row i is always on line i + 2.
        frame = pd.read_csv(path, skip_blank_lines=False, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError("file is empty", where=where, fix=_TABLE_FIX) from exc
    except pd.errors.ParserError as exc:
        detail = " ".join(str(exc).split())
        raise DataError(f"is not a well-formed CSV table ({detail})", where=where, fix=_TABLE_FIX) from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"cannot read as CSV text ({exc})", where=where, fix=_TABLE_FIX) from exc
    # Trailing blank lines are editor noise, not empty bars.
    filled = frame.notna().any(axis=1).to_numpy()
    if len(filled) and not filled[-1]:
        last = int(np.flatnonzero(filled)[-1]) + 1 if filled.any() else 0
        frame = frame.iloc[:last]
    return frame


def _read_parquet(path: Path, where: str) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"is not a valid Parquet file ({' '.join(str(exc).split())})",
            where=where,
            fix="write it with envs.data.save_parquet (or DataFrame.to_parquet); name CSV files .csv",
        ) from exc
    return table.to_pandas()


# --- interpreting --------------------------------------------------------------------------------


def _column_names(table: _Table) -> dict[str, str]:
    """Map each recognized lower-case column name to the source's own label."""
    names: dict[str, str] = {}
    wanted = {*OHLCV_COLUMNS, *TIME_COLUMN_CANDIDATES, SYMBOL}
    for label in table.frame.columns:
        key = str(label).strip().lower()
        if key in wanted and key in names:
            raise DataError(
                f"columns {names[key]!r} and {label!r} both read as {key!r} (names are case-insensitive)",
                where=f"{table.source}, column {label!r}",
                fix="keep one of them",
            )
        names[key] = str(label)
    return names


def _index_is_time(index: pd.Index) -> bool:
    name = str(index.name).strip().lower() if index.name is not None else ""
    return isinstance(index, pd.DatetimeIndex) or name in TIME_COLUMN_CANDIDATES


def _time_column(table: _Table, names: dict[str, str]) -> str | None:
    """The label of the time column; None when the time is in the index."""
    for candidate in TIME_COLUMN_CANDIDATES:
        if candidate in names:
            return names[candidate]
    if _index_is_time(table.frame.index):
        return None
    # A frame saved with ``to_csv()`` keeps its unnamed index as the first column.
    first = str(table.frame.columns[0]) if len(table.frame.columns) else ""
    if first.strip() == "" or first.lower().startswith("unnamed: 0"):
        return first
    raise DataError(
        f"no time column (found columns {_shown(table.frame.columns)})",
        where=f"{table.source}, column {TIMESTAMP!r}",
        fix=f"add a column named one of {', '.join(TIME_COLUMN_CANDIDATES)} (any case) or index by time",
    )


def _refuse_not_a_table(table: _Table) -> None:
    columns = table.frame.columns
    separator = next((sep for sep in (";", "\t", "|") if len(columns) == 1 and sep in str(columns[0])), None)
    fix = f"separate the fields with commas, not {separator!r}" if separator else _TABLE_FIX
    raise DataError(
        f"does not look like an OHLCV table (found columns {_shown(columns)})",
        where=table.source,
        fix=fix,
    )


def _shown(labels: pd.Index) -> str:
    items = [str(x) for x in labels[:_SYMBOLS_SHOWN]]
    more = f" ... {len(labels) - len(items)} more" if len(labels) > len(items) else ""
    return f"[{', '.join(repr(x) for x in items)}{more}]"


def _symbol_codes(table: _Table, label: str) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Integer codes of the symbol column and the symbol of each code; missing symbols are refused."""
    column = table.frame[label]
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype("string").astype("category")
    codes = column.cat.codes.to_numpy().astype(np.int64)
    missing = np.flatnonzero(codes < 0)
    if len(missing):
        number = int(missing[0]) + table.first_number
        raise DataError(
            "missing symbol",
            where=f"{table.source}, {table.kind} {number}, column {label!r}",
            fix="fill in the symbol of every row",
        )
    return codes, [str(c) for c in column.cat.categories]


def _select_symbol(
    table: _Table, names: dict[str, str], symbol: str | None
) -> tuple[npt.NDArray[np.int64] | None, str | None]:
    """Row positions of the chosen symbol (None = all rows) and the symbol's name."""
    label = names.get(SYMBOL)
    if label is None:
        return None, symbol
    codes, categories = _symbol_codes(table, label)
    present = sorted(categories[i] for i in np.unique(codes))
    listing = ", ".join(present[:_SYMBOLS_SHOWN]) + (" ..." if len(present) > _SYMBOLS_SHOWN else "")
    if symbol is None:
        if len(present) == 1:
            return None, present[0]
        # The same file reaches us from a config (slf train, slf walkforward: data.symbol) and from
        # `slf backtest --data` (--symbol); name both, since only those two ways exist.
        raise DataError(
            f"holds {len(present)} symbols ({listing}); choose one",
            where=f"{table.source}, column {label!r}",
            fix=f"in a config set data.symbol: {present[0]} (slf train, slf walkforward); with "
            f"slf backtest --data pass --symbol {present[0]}; in Python pass symbol={present[0]!r}",
        )
    if symbol not in present:
        raise DataError(
            f"symbol {symbol!r} not found{did_you_mean(symbol, present)}; available: {listing}",
            where=f"{table.source}, column {label!r}",
            fix="pass one of the available symbols",
        )
    if len(present) == 1:
        return None, symbol
    return np.flatnonzero(codes == categories.index(symbol)), symbol


def _canonical(table: _Table, *, symbol: str | None, min_rows: int) -> pd.DataFrame:
    frame = table.frame
    if len(frame.columns) == 0:
        _refuse_not_a_table(table)
    names = _column_names(table)
    if not any(c in names for c in OHLCV_COLUMNS):
        _refuse_not_a_table(table)
    time_label = _time_column(table, names)
    for column in OHLCV_COLUMNS:
        if column not in names:
            raise DataError(
                f"missing column {column!r} (found columns {_shown(frame.columns)})",
                where=f"{table.source}, column {column!r}",
                fix=f"add the column or rename yours to {column!r} (names are case-insensitive)",
            )
    if len(frame) == 0:
        raise DataError("has a header but no data rows", where=table.source, fix="add bars to the file")

    positions, symbol = _select_symbol(table, names, symbol)
    rows = frame if positions is None else frame.iloc[positions]
    numbers = (np.arange(len(frame), dtype=np.int64) if positions is None else positions) + table.first_number
    labels = {c: names[c] for c in OHLCV_COLUMNS}
    labels[TIMESTAMP] = time_label if time_label is not None else str(frame.index.name or "index")
    locator = RowLocator(
        table.source,
        table.kind,
        numbers,
        symbol=symbol if SYMBOL in names else None,
        labels=labels,
    )

    raw_time = rows[time_label] if time_label is not None else pd.Series(rows.index, copy=False)
    times = _parse_times(raw_time, locator)
    locator = locator.with_times(times)
    # Column-major, as pandas stores a float block: the frame below is built without a copy.
    columns = np.empty((len(OHLCV_COLUMNS), len(rows)), dtype=np.float64)
    for i, column in enumerate(OHLCV_COLUMNS):
        columns[i] = _to_float(rows[names[column]], locator, column)
    values = columns.T
    check_ohlcv(times, values, locator, min_rows=min_rows)

    index = pd.DatetimeIndex(times.view("datetime64[ns]"), name=TIMESTAMP).tz_localize("UTC").as_unit("ns")
    out = pd.DataFrame(values, index=index, columns=list(OHLCV_COLUMNS), copy=False)
    if symbol is not None:
        out.attrs["symbol"] = symbol
    return out


def _parse_times(raw: pd.Series, locator: RowLocator) -> npt.NDArray[np.int64]:
    """Epoch nanoseconds (UTC) of every row; the first unreadable one is refused."""
    dtype = raw.dtype
    if is_datetime64_any_dtype(dtype):
        parsed = pd.to_datetime(raw, utc=True)
    elif is_numeric_dtype(dtype) and not is_bool_dtype(dtype):
        parsed = _parse_epoch(raw)
    else:
        parsed = _parse_text(raw, locator)
    row = _first_true(parsed.isna().to_numpy())
    if row is not None:
        value = raw.iloc[row]
        raise DataError(
            "missing timestamp (an empty cell or a blank line)"
            if pd.isna(value)
            else f"cannot parse timestamp {value!r}",
            where=locator.where(row, TIMESTAMP),
            fix=_TIME_FIX,
        )
    try:
        as_ns = pd.DatetimeIndex(parsed).as_unit("ns")
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:
        lo = pd.Timestamp.min.tz_localize("UTC")
        hi = pd.Timestamp.max.tz_localize("UTC")
        row = _first_true(((parsed < lo) | (parsed > hi)).to_numpy()) or 0
        raise DataError(
            f"timestamp {raw.iloc[row]!r} is outside the years 1677-2262",
            where=locator.where(row, TIMESTAMP),
            fix=_TIME_FIX,
        ) from exc
    return as_ns.asi8


def _first_true(mask: npt.NDArray[np.bool_]) -> int | None:
    return int(mask.argmax()) if mask.any() else None


def _parse_epoch(raw: pd.Series) -> pd.Series:
    numbers = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.abs(numbers[np.isfinite(numbers)])
    # The median, not the maximum, decides the unit, so one mistyped value cannot re-scale the rest.
    magnitude = float(np.median(finite)) if len(finite) else 0.0
    unit: EpochUnit = next((u for bound, u in _EPOCH_UNITS if magnitude < bound), "ns")
    values: pd.Series = raw if is_integer_dtype(raw.dtype) else pd.Series(numbers, index=raw.index)
    return pd.to_datetime(values, unit=unit, utc=True, errors="coerce")


def _parses(value: str, fmt: str) -> bool:
    try:
        pd.to_datetime(value, format=fmt, utc=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _parse_text(raw: pd.Series, locator: RowLocator) -> pd.Series:
    """Parse text timestamps with the first format that reads the first value.

    Day-first and month-first slash formats can both read a column (``01/02/2024``); the one that gives
    sorted times is taken, and a column that stays ambiguous is refused.
    """
    present = raw.notna().to_numpy()
    if not present.any():
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    first = str(raw.iloc[int(present.argmax())]).strip()
    formats = [f for f in _TEXT_FORMATS if _parses(first, f)]
    if not formats:
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    if formats[0] == _ISO:
        formats = [_ISO]
    candidates = [(f, pd.to_datetime(raw, format=f, utc=True, errors="coerce")) for f in formats]
    complete = [(f, p) for f, p in candidates if int(p.notna().sum()) == int(present.sum())]
    if not complete:
        return candidates[0][1]
    if len(complete) > 1:
        distinct = [complete[0]] + [c for c in complete[1:] if not c[1].equals(complete[0][1])]
        ordered = [c for c in distinct if c[1].is_monotonic_increasing]
        if len(distinct) > 1 and len(ordered) != 1:
            readings = " or as ".join(f for f, _ in distinct)
            raise DataError(
                f"ambiguous timestamps such as {first!r}: they read as {readings}",
                where=locator.where(None, TIMESTAMP),
                fix="write ISO 8601 timestamps (2024-01-31T13:00:00Z)",
            )
        return (ordered or distinct)[0][1]
    return complete[0][1]


def _to_float(column: pd.Series, locator: RowLocator, name: str) -> npt.NDArray[np.float64]:
    dtype = column.dtype
    if is_numeric_dtype(dtype) and not is_bool_dtype(dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    coerced = (
        pd.to_numeric(column, errors="coerce")
        if not is_bool_dtype(dtype)
        else pd.Series(np.nan, index=column.index)
    )
    bad = (coerced.isna() & column.notna()).to_numpy()
    row = _first_true(bad)
    if row is not None:
        raise DataError(
            f"non-numeric value {column.iloc[row]!r}",
            where=locator.where(row, name),
            fix=_NUMBER_FIX,
        )
    return np.asarray(coerced.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
