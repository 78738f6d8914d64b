"""Write OHLCV bars to Parquet (long format, with market specs in the schema metadata) and read specs back.

Layout of a file written here: columns ``timestamp`` (UTC, ns), ``symbol`` (when known), ``open, high,
low, close, volume``; the schema metadata key :data:`SPECS_METADATA_KEY` holds the symbols'
:class:`~envs.market.MarketSpec` as JSON. ``load_ohlcv`` reads these files back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from envs.data.loader import PARQUET_SUFFIXES
from envs.data.schema import OHLCV_COLUMNS, SYMBOL, TIMESTAMP
from envs.errors import ConfigError, DataError
from envs.market import MarketSpec

__all__ = [
    "SPECS_METADATA_KEY",
    "check_parquet_path",
    "load_market_specs",
    "read_parquet_metadata",
    "save_parquet",
    "to_long_format",
]

SPECS_METADATA_KEY: Final = "slf.market_specs"


def save_parquet(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    specs: Mapping[str, MarketSpec] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write bars to a Parquet file atomically (a crash never leaves a half-written file).

    Args:
        df: a canonical OHLCV frame (its ``attrs["symbol"]`` becomes a ``symbol`` column), or a long
            frame with ``timestamp`` and ``symbol`` columns beside the OHLCV columns.
        path: the file to write, ending in ``.parquet`` or ``.pq``; parent folders are created.
        specs: market specs to store in the schema metadata, by symbol.
        metadata: further string entries for the schema metadata.

    Returns:
        The path written.
    """
    out = check_parquet_path(path)
    table = pa.Table.from_pandas(_long_frame(df), preserve_index=False)
    extra: dict[bytes, bytes] = {}
    if specs:
        extra[SPECS_METADATA_KEY.encode()] = json.dumps(
            {symbol: spec.to_dict() for symbol, spec in specs.items()}, sort_keys=True
        ).encode()
    for key, value in (metadata or {}).items():
        extra[key.encode()] = value.encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_parquet_path(path: str | os.PathLike[str]) -> Path:
    """Refuse an output path that does not end in ``.parquet`` or ``.pq`` (before any work is done)."""
    out = Path(path)
    if not out.name.lower().endswith(PARQUET_SUFFIXES):
        raise ConfigError(
            f"output file {str(path)!r} must end in {' or '.join(PARQUET_SUFFIXES)}",
            where="output path",
            fix="give a .parquet path",
        )
    if out.is_dir():
        raise ConfigError(
            f"output path {str(path)!r} is a directory", where="output path", fix="give a file name"
        )
    return out


def to_long_format(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Stack canonical frames of several symbols into one long frame.

    Returns:
        Columns ``timestamp, symbol, open, high, low, close, volume`` (``symbol`` categorical, in the
        order of ``frames``), one block of rows per symbol.
    """
    parts = list(frames.values())
    codes = np.repeat(np.arange(len(parts), dtype=np.int32), [len(f) for f in parts])
    times = np.concatenate([pd.DatetimeIndex(f.index).as_unit("ns").asi8 for f in parts])
    columns: dict[str, object] = {
        TIMESTAMP: pd.DatetimeIndex(times.view("datetime64[ns]")).tz_localize("UTC"),
        # Categorical codes, not a million Python strings.
        SYMBOL: pd.Categorical.from_codes(codes, categories=pd.Index(list(frames))),
    }
    stacked = np.concatenate([f[list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64) for f in parts])
    for i, column in enumerate(OHLCV_COLUMNS):
        columns[column] = stacked[:, i]
    return pd.DataFrame(columns)


def _long_frame(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"cannot save: missing column(s) {missing}",
            where="DataFrame",
            fix="load the data with envs.data.load_ohlcv first",
        )
    if isinstance(df.index, pd.DatetimeIndex):
        times = df.index
    elif TIMESTAMP in df.columns:
        times = pd.DatetimeIndex(df[TIMESTAMP])
    else:
        raise DataError(
            "cannot save: no DatetimeIndex and no 'timestamp' column",
            where="DataFrame",
            fix="load the data with envs.data.load_ohlcv first",
        )
    times = (times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")).as_unit("ns")
    columns: dict[str, object] = {TIMESTAMP: times}
    if SYMBOL in df.columns:
        columns[SYMBOL] = df[SYMBOL].astype("category").array
    elif df.attrs.get("symbol") is not None:
        columns[SYMBOL] = pd.Categorical([str(df.attrs["symbol"])] * len(df))
    for c in OHLCV_COLUMNS:
        columns[c] = df[c].to_numpy(dtype="float64")
    return pd.DataFrame(columns)


def read_parquet_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string entries of a Parquet file's schema metadata (pandas' own entry left out)."""
    where = str(path)
    if not Path(path).is_file():
        raise DataError("file not found", where=where, fix="check the path")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"is not a valid Parquet file ({' '.join(str(exc).split())})", where=where, fix="check the path"
        ) from exc
    raw = schema.metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"pandas"}


def load_market_specs(path: str | os.PathLike[str]) -> dict[str, MarketSpec]:
    """The market specs stored in a Parquet file by :func:`save_parquet` (e.g. by ``slf data synth``).

    Raises:
        DataError: the file is missing, not Parquet, or holds no (or unreadable) specs.
    """
    where = str(path)
    text = read_parquet_metadata(path).get(SPECS_METADATA_KEY)
    if text is None:
        raise DataError(
            "holds no market specs in its Parquet metadata",
            where=where,
            fix="write the file with `slf data synth` or envs.data.save_parquet(..., specs=...)",
        )
    try:
        raw = json.loads(text)
        return {str(symbol): MarketSpec.from_dict(fields) for symbol, fields in raw.items()}
    except (ValueError, TypeError, AttributeError, ConfigError) as exc:
        raise DataError(
            f"market specs in the Parquet metadata are unreadable ({exc})",
            where=f"{where}, metadata key {SPECS_METADATA_KEY!r}",
            fix="rewrite the file with envs.data.save_parquet",
        ) from exc
