"""Datasets loadable by name: small real samples bundled with the package, and seeded synthetic ones.

``list_datasets()`` tells what there is; ``load_dataset(name)`` returns a canonical OHLCV frame (a fresh
copy each call; the parsed or generated bars are cached in memory).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import pandas as pd

from envs.data.loader import load_ohlcv
from envs.data.synthetic import generate_synthetic, symbol_profile
from envs.errors import DataError, did_you_mean
from envs.market import MarketSpec

__all__ = ["DatasetInfo", "dataset_info", "dataset_path", "list_datasets", "load_dataset"]

_PACKAGE: Final = "envs.datasets"
_GYM_ANYTRADING: Final = (
    "gym-anytrading 2.0.0 (MIT, (c) 2019 AminHP; see envs/datasets/LICENSE-gym-anytrading)"
)
SYNTHETIC_SEED: Final = 2024
SYNTHETIC_BARS: Final = 100_000
SYNTHETIC_START: Final = "2024-01-01"


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One named dataset.

    Attributes:
        name: the name to load it by.
        symbol: the market symbol of its bars.
        timeframe: the bar length (``"1h"``).
        source: where the bars come from, with the license.
        description: one line on what it is.
        spec: exchange rules and costs that suit the market.
        file: the bundled file name (bundled datasets only).
        seed: the generator seed (synthetic datasets only).
        bars: number of generated bars (synthetic datasets only).
    """

    name: str
    symbol: str
    timeframe: str
    source: str
    description: str
    spec: MarketSpec
    file: str | None = None
    seed: int | None = None
    bars: int | None = None

    @property
    def synthetic(self) -> bool:
        return self.file is None


def _synthetic(name: str, symbol: str) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        symbol=symbol,
        timeframe="1m",
        source=f"generated (envs.data.generate_synthetic, seed {SYNTHETIC_SEED}); no license needed",
        description=f"synthetic {symbol} minute bars: regimes, volatility clustering, heavy tails",
        spec=symbol_profile(symbol).spec,
        seed=SYNTHETIC_SEED,
        bars=SYNTHETIC_BARS,
    )


_REGISTRY: Final[dict[str, DatasetInfo]] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="eurusd_1h",
            symbol="EUR/USD",
            timeframe="1h",
            source=_GYM_ANYTRADING,
            description="EUR/USD hourly ask prices, 2017",
            # Spot FX through a retail broker: no commission, about a pip of spread, micro-lot steps.
            spec=MarketSpec(
                "EUR/USD",
                taker_fee=0.0,
                maker_fee=0.0,
                spread_bps=1.0,
                slippage_bps=0.5,
                min_qty=1_000.0,
                qty_step=1_000.0,
                price_tick=1e-5,
            ),
            file="eurusd_1h.csv.gz",
        ),
        DatasetInfo(
            name="googl_1d",
            symbol="GOOGL",
            timeframe="1d",
            source=_GYM_ANYTRADING,
            description="Alphabet (GOOGL) daily prices, 2009-05 to 2018-08",
            # A US stock through a commission-free broker: whole shares, cent ticks.
            spec=MarketSpec(
                "GOOGL",
                taker_fee=0.0,
                maker_fee=0.0,
                spread_bps=2.0,
                slippage_bps=1.0,
                min_qty=1.0,
                qty_step=1.0,
                price_tick=0.01,
                base="GOOGL",
                quote="USD",
            ),
            file="googl_1d.csv.gz",
        ),
        _synthetic("synth_btcusdt_1m", "BTC/USDT"),
        _synthetic("synth_ethusdt_1m", "ETH/USDT"),
    )
}


def list_datasets() -> list[DatasetInfo]:
    """Every dataset loadable by name, bundled ones first."""
    return sorted(_REGISTRY.values(), key=lambda info: (info.synthetic, info.name))


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``.

    Raises:
        DataError: no dataset has that name (the message lists the names, with a "did you mean").
    """
    info = _REGISTRY.get(name)
    if info is None:
        names = sorted(_REGISTRY)
        raise DataError(
            f"unknown dataset {name!r}{did_you_mean(name, names)}",
            where="dataset name",
            fix=f"use one of {', '.join(names)} (see `slf data list`)",
        )
    return info


def dataset_path(name: str) -> Path:
    """The bundled file of a dataset (bundled datasets only; synthetic ones have no file)."""
    info = dataset_info(name)
    if info.file is None:
        raise DataError(
            "is generated on demand and has no file",
            where=f"dataset {name!r}",
            fix=f"load it with load_dataset({name!r}) or write it with `slf data synth`",
        )
    return Path(str(resources.files(_PACKAGE).joinpath(info.file)))


def load_dataset(name: str) -> pd.DataFrame:
    """Load a named dataset as a canonical OHLCV frame (``attrs["symbol"]`` and ``attrs["dataset"]`` set).

    Raises:
        DataError: unknown name.
    """
    info = dataset_info(name)
    frame = _load_cached(name).copy()
    frame.attrs = {"symbol": info.symbol, "dataset": name}
    return frame


@functools.cache
def _load_cached(name: str) -> pd.DataFrame:
    info = _REGISTRY[name]
    if info.file is not None:
        with resources.as_file(resources.files(_PACKAGE).joinpath(info.file)) as path:
            return load_ohlcv(path, symbol=info.symbol)
    market = generate_synthetic(
        [info.symbol], int(info.bars or SYNTHETIC_BARS), int(info.seed or 0), start=SYNTHETIC_START
    )
    return market.frames[info.symbol]
