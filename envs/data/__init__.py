"""Market data: load, validate, summarize, resample, bundled datasets and a seeded synthetic market.

A canonical OHLCV frame has exactly the float64 columns ``open, high, low, close, volume`` and a tz-aware
UTC ``DatetimeIndex`` (unit ``"ns"``) named ``timestamp``, sorted and unique. A bar's timestamp is its
**open** time; it closes at ``timestamp + timeframe``.
"""

from envs.data.datasets import DatasetInfo, dataset_info, dataset_path, list_datasets, load_dataset
from envs.data.loader import load_ohlcv, load_ohlcv_by_symbol
from envs.data.parquet import (
    check_parquet_path,
    load_market_specs,
    read_parquet_metadata,
    save_parquet,
    to_long_format,
)
from envs.data.resample import resample_ohlcv
from envs.data.schema import (
    DEFAULT_MIN_ROWS,
    OHLCV_COLUMNS,
    PRICE_COLUMNS,
    SYMBOL,
    TIMESTAMP,
    format_timeframe,
    parse_timeframe,
)
from envs.data.synthetic import (
    Regime,
    SymbolProfile,
    SyntheticMarket,
    SyntheticParams,
    generate_synthetic,
    symbol_profile,
)
from envs.data.validate import DataSummary, infer_timeframe, summarize

__all__ = [
    "DEFAULT_MIN_ROWS",
    "OHLCV_COLUMNS",
    "PRICE_COLUMNS",
    "SYMBOL",
    "TIMESTAMP",
    "DataSummary",
    "DatasetInfo",
    "Regime",
    "SymbolProfile",
    "SyntheticMarket",
    "SyntheticParams",
    "check_parquet_path",
    "dataset_info",
    "dataset_path",
    "format_timeframe",
    "generate_synthetic",
    "infer_timeframe",
    "list_datasets",
    "load_dataset",
    "load_market_specs",
    "load_ohlcv",
    "load_ohlcv_by_symbol",
    "parse_timeframe",
    "read_parquet_metadata",
    "resample_ohlcv",
    "save_parquet",
    "summarize",
    "symbol_profile",
    "to_long_format",
]
