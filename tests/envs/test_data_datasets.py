"""Datasets loadable by name: the bundled real samples and the seeded synthetic sets."""

from __future__ import annotations

import pandas as pd
import pytest

from envs.data import (
    dataset_info,
    dataset_path,
    list_datasets,
    load_dataset,
    load_ohlcv,
    parse_timeframe,
    summarize,
)
from envs.errors import DataError

BUNDLED = {"eurusd_1h": (6225, "EUR/USD", "1h"), "googl_1d": (2335, "GOOGL", "1d")}


def test_registry_lists_bundled_then_synthetic() -> None:
    names = [info.name for info in list_datasets()]
    assert names[:2] == ["eurusd_1h", "googl_1d"]
    assert "synth_btcusdt_1m" in names
    assert all(info.synthetic == info.name.startswith("synth_") for info in list_datasets())


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_dataset_loads_and_validates(name: str) -> None:
    rows, symbol, timeframe = BUNDLED[name]
    df = load_dataset(name)
    assert len(df) == rows
    assert df.attrs == {"symbol": symbol, "dataset": name}
    assert dataset_info(name).timeframe == timeframe
    pd.testing.assert_frame_equal(load_ohlcv(dataset_path(name)), df, check_freq=False)
    summary = summarize(df)
    assert summary.timeframe == parse_timeframe(timeframe)
    assert summary.gaps > 0  # weekends


def test_eurusd_dates_were_read_day_first() -> None:
    df = load_dataset("eurusd_1h")
    assert df.index[0] == pd.Timestamp("2017-01-01 22:00", tz="UTC")
    # The original's third row is "02.01.2017 00:00:00.000": 2 January, not 1 February.
    assert df.index[2] == pd.Timestamp("2017-01-02 00:00", tz="UTC")
    assert df.index[-1] == pd.Timestamp("2017-12-29 21:00", tz="UTC")
    assert df.iloc[0].tolist() == [1.05236, 1.05253, 1.05221, 1.05227, 143539993.3]


def test_googl_values_are_the_originals() -> None:
    df = load_dataset("googl_1d")
    assert df.index[0] == pd.Timestamp("2009-05-22", tz="UTC")
    assert df.iloc[0].tolist() == [198.528534, 199.524521, 196.196198, 196.946945, 3433700.0]


def test_license_and_readme_ship_with_the_data() -> None:
    folder = dataset_path("eurusd_1h").parent
    license_text = (folder / "LICENSE-gym-anytrading").read_text()
    assert "MIT License" in license_text
    assert "Copyright (c) 2019" in license_text
    assert "gym-anytrading" in (folder / "README.md").read_text()


def test_synthetic_dataset_is_deterministic_and_loads_as_a_copy() -> None:
    first = load_dataset("synth_btcusdt_1m")
    assert len(first) == dataset_info("synth_btcusdt_1m").bars
    assert first.attrs["symbol"] == "BTC/USDT"
    first.iloc[0, 0] = -1.0  # callers may modify their copy
    again = load_dataset("synth_btcusdt_1m")
    assert float(again["open"].iloc[0]) > 0
    assert again.index[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(
        DataError, match=r"unknown dataset 'eurusd1h' \(did you mean 'eurusd_1h'\?\).*googl_1d"
    ):
        load_dataset("eurusd1h")


def test_synthetic_dataset_has_no_file() -> None:
    with pytest.raises(DataError, match="generated on demand"):
        dataset_path("synth_ethusdt_1m")
