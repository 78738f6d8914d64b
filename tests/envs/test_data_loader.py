"""envs.data loading and validation: every accepted input, and one test per refusal with its message."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.data import OHLCV_COLUMNS, TIMESTAMP, load_ohlcv, load_ohlcv_by_symbol, save_parquet, summarize
from envs.errors import DataError

START = pd.Timestamp("2024-01-01", tz="UTC")


def make_bars(n: int = 10, *, start: pd.Timestamp = START, freq: str = "1min", seed: int = 0) -> pd.DataFrame:
    """A valid canonical frame: random walk closes, open = previous close, wicks around the body."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.001, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.001, n))
    volume = rng.uniform(1, 10, n)
    index = pd.date_range(start, periods=n, freq=freq, name=TIMESTAMP).as_unit("ns")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def bars_text(df: pd.DataFrame) -> list[list[str]]:
    """Rows of a CSV as strings (header first), ISO timestamps, for hand corruption."""
    rows = [["timestamp", *OHLCV_COLUMNS]]
    for ts, row in zip(df.index, df.itertuples(index=False), strict=True):
        rows.append([ts.strftime("%Y-%m-%dT%H:%M:%SZ"), *(repr(float(v)) for v in row)])
    return rows


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


def write_csv(path: Path, df: pd.DataFrame, *, cell: tuple[int, str, str] | None = None) -> Path:
    """Write ``df`` as CSV; ``cell=(data_row, column, text)`` replaces one value (data row 0 = line 2)."""
    rows = bars_text(df)
    if cell is not None:
        data_row, column, text = cell
        rows[data_row + 1][rows[0].index(column)] = text
    return write_rows(path, rows)


# --- accepted input ------------------------------------------------------------------------------


def assert_canonical(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(OHLCV_COLUMNS)
    assert all(dtype == np.float64 for dtype in df.dtypes)
    assert isinstance(df.index, pd.DatetimeIndex)
    assert str(df.index.tz) == "UTC"
    assert pd.DatetimeIndex(df.index).unit == "ns"
    assert df.index.name == TIMESTAMP


def test_csv_loads_to_the_canonical_layout(tmp_path: Path) -> None:
    bars = make_bars(20)
    df = load_ohlcv(write_csv(tmp_path / "bars.csv", bars))
    assert_canonical(df)
    pd.testing.assert_frame_equal(df, bars, check_freq=False)


def test_gzip_csv_parquet_and_dataframe_give_the_same_frame(tmp_path: Path) -> None:
    bars = make_bars(20)
    text = write_csv(tmp_path / "plain.csv", bars).read_bytes()
    (tmp_path / "bars.csv.gz").write_bytes(gzip.compress(text))
    save_parquet(bars, tmp_path / "bars.parquet")
    bars.to_parquet(tmp_path / "indexed.pq")  # pandas' own layout: the DatetimeIndex is restored
    for source in (tmp_path / "bars.csv.gz", tmp_path / "bars.parquet", tmp_path / "indexed.pq", bars):
        df = load_ohlcv(source)
        assert_canonical(df)
        pd.testing.assert_frame_equal(df, bars, check_freq=False)


def test_column_names_are_case_insensitive_and_extras_are_dropped(tmp_path: Path) -> None:
    bars = make_bars(5)
    rows = bars_text(bars)
    rows[0] = ["Timestamp", "OPEN", "High", "low", "Close", "VoLuMe"]
    for r in rows:
        r.append("x" if r is not rows[0] else "Comment")
    df = load_ohlcv(write_rows(tmp_path / "mixed.csv", rows))
    assert list(df.columns) == list(OHLCV_COLUMNS)
    np.testing.assert_allclose(df["close"].to_numpy(), bars["close"].to_numpy())


@pytest.mark.parametrize(
    ("header", "values", "expected"),
    [
        ("timestamp", ["1704067200", "1704067260"], ["2024-01-01 00:00", "2024-01-01 00:01"]),  # epoch s
        ("time", ["1704067200000", "1704067260000"], ["2024-01-01 00:00", "2024-01-01 00:01"]),  # epoch ms
        ("date", ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"], ["2024-01-01 00:00", "2024-01-01 00:01"]),
        (
            "datetime",
            ["2024-01-01 02:00:00+02:00", "2024-01-01 02:01+02:00"],
            ["2024-01-01 00:00", "2024-01-01 00:01"],
        ),
        ("Date", ["2024-01-01", "2024-01-02"], ["2024-01-01", "2024-01-02"]),  # naive dates are UTC
        (
            "Time",
            ["02.01.2017 22:00:00.000", "03.01.2017 22:00:00.000"],
            ["2017-01-02 22:00", "2017-01-03 22:00"],
        ),
        ("timestamp", ["2017.01.02 22:00", "2017.01.02 23:00"], ["2017-01-02 22:00", "2017-01-02 23:00"]),
        ("date", ["01/13/2024", "01/14/2024"], ["2024-01-13", "2024-01-14"]),  # month-first, unambiguous
    ],
)
def test_time_formats(tmp_path: Path, header: str, values: list[str], expected: list[str]) -> None:
    rows = [[header, "open", "high", "low", "close", "volume"]]
    rows += [[v, "1", "2", "0.5", "1.5", "10"] for v in values]
    df = load_ohlcv(write_rows(tmp_path / "t.csv", rows))
    assert list(df.index) == [pd.Timestamp(e, tz="UTC") for e in expected]
    assert pd.DatetimeIndex(df.index).unit == "ns"


def test_day_first_dotted_dates_are_not_read_month_first(tmp_path: Path) -> None:
    rows = [["Time", "Open", "High", "Low", "Close", "Volume"]]
    rows += [[f"{d:02d}.02.2017 00:00:00.000", "1", "2", "0.5", "1.5", "1"] for d in (1, 2, 13)]
    df = load_ohlcv(write_rows(tmp_path / "fx.csv", rows), min_rows=3)
    assert [t.day for t in df.index] == [1, 2, 13]
    assert {t.month for t in df.index} == {2}


def test_tz_aware_and_naive_frames_become_utc() -> None:
    bars = make_bars(3)
    berlin = bars.copy()
    berlin.index = pd.DatetimeIndex(bars.index).tz_convert("Europe/Berlin")
    naive = bars.copy()
    naive.index = pd.DatetimeIndex(bars.index).tz_localize(None)
    for frame in (berlin, naive):
        assert list(load_ohlcv(frame).index) == list(bars.index)


def test_time_in_a_column_of_a_dataframe_and_unnamed_index_column_of_to_csv(tmp_path: Path) -> None:
    bars = make_bars(4)
    as_column = bars.reset_index().rename(columns={"timestamp": "Datetime"})
    assert list(load_ohlcv(as_column).index) == list(bars.index)
    unnamed = bars.rename_axis(None)
    unnamed.to_csv(tmp_path / "unnamed.csv")
    assert list(load_ohlcv(tmp_path / "unnamed.csv").index) == list(bars.index)


def test_epoch_unit_follows_the_median_magnitude() -> None:
    ms = (pd.DatetimeIndex(make_bars(5).index).asi8 // 1_000_000).astype(np.int64)
    frame = make_bars(5).reset_index(drop=True)
    frame["timestamp"] = ms
    assert load_ohlcv(frame).index[0] == START


def multi_symbol(tmp_path: Path) -> Path:
    a, b = make_bars(6, seed=1), make_bars(4, seed=2)
    long = pd.concat([a.assign(symbol="BTC/USDT"), b.assign(symbol="ETH/USDT")]).reset_index()
    path = tmp_path / "multi.csv"
    long.to_csv(path, index=False)
    return path


def test_multi_symbol_file_needs_a_symbol_and_selects_it(tmp_path: Path) -> None:
    path = multi_symbol(tmp_path)
    eth = load_ohlcv(path, symbol="ETH/USDT")
    assert len(eth) == 4
    assert eth.attrs["symbol"] == "ETH/USDT"
    pd.testing.assert_frame_equal(eth, make_bars(4, seed=2), check_freq=False)
    every = load_ohlcv_by_symbol(path)
    assert list(every) == ["BTC/USDT", "ETH/USDT"]
    assert len(every["BTC/USDT"]) == 6
    with pytest.raises(
        DataError, match=r"multi\.csv, column 'symbol': holds 2 symbols \(BTC/USDT, ETH/USDT\)"
    ):
        load_ohlcv(path)
    with pytest.raises(
        DataError, match=r"'ETH/USD' not found \(did you mean 'ETH/USDT'\?\); available: BTC/USDT"
    ):
        load_ohlcv(path, symbol="ETH/USD")


def test_row_errors_in_a_multi_symbol_file_name_the_original_line(tmp_path: Path) -> None:
    path = multi_symbol(tmp_path)
    lines = path.read_text().splitlines()
    fields = lines[8].split(",")  # ETH's 2nd bar: data row 7 -> line 9 (1-based), index 8
    fields[lines[0].split(",").index("volume")] = "-1"
    lines[8] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    load_ohlcv(path, symbol="BTC/USDT")  # the other symbol is untouched
    with pytest.raises(
        DataError, match=r"multi\.csv, line 9 \(ETH/USDT 2024-01-01T00:01:00Z\), column 'volume'"
    ):
        load_ohlcv(path, symbol="ETH/USDT")


# --- refusals: one test each; the message names file, row and column ------------------------------


def test_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "novol.csv"
    make_bars(3).drop(columns="volume").to_csv(path)
    with pytest.raises(DataError, match=r"novol\.csv, column 'volume': missing column 'volume'.*Fix: add"):
        load_ohlcv(path)


def test_missing_time_column(tmp_path: Path) -> None:
    path = tmp_path / "notime.csv"
    make_bars(3).to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"notime\.csv, column 'timestamp': no time column.*Fix: add a column"
    ):
        load_ohlcv(path)


def test_unparseable_timestamp(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", make_bars(6), cell=(2, "timestamp", "not-a-time"))
    with pytest.raises(
        DataError,
        match=r"bad\.csv, line 4, column 'timestamp': cannot parse timestamp 'not-a-time'.*ISO 8601",
    ):
        load_ohlcv(path)


def test_timestamp_out_of_range(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "far.csv", make_bars(3), cell=(2, "timestamp", "2999-01-01T00:00:00Z"))
    with pytest.raises(
        DataError, match=r"far\.csv, line 4, column 'timestamp': timestamp '2999-01-01T00:00:00Z'"
    ):
        load_ohlcv(path)


def test_non_numeric_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", make_bars(8), cell=(5, "close", "12.5abc"))
    with pytest.raises(
        DataError,
        match=r"bad\.csv, line 7 \(2024-01-01T00:05:00Z\), column 'close': "
        r"non-numeric value '12\.5abc'.*Fix: write",
    ):
        load_ohlcv(path)


@pytest.mark.parametrize("text", ["", "nan", "inf", "-inf"])
def test_nan_or_inf(tmp_path: Path, text: str) -> None:
    path = write_csv(tmp_path / "holes.csv", make_bars(5), cell=(3, "high", text))
    with pytest.raises(
        DataError, match=r"holes\.csv, line 5 \(2024-01-01T00:03:00Z\), column 'high': missing or non-finite"
    ):
        load_ohlcv(path)


@pytest.mark.parametrize("text", ["0", "-3.5"])
def test_zero_or_negative_price(tmp_path: Path, text: str) -> None:
    path = write_csv(tmp_path / "neg.csv", make_bars(5), cell=(1, "low", text))
    with pytest.raises(
        DataError, match=r"neg\.csv, line 3 \(2024-01-01T00:01:00Z\), column 'low': price must be > 0"
    ):
        load_ohlcv(path)


def test_negative_volume(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "vol.csv", make_bars(5), cell=(4, "volume", "-1"))
    with pytest.raises(
        DataError, match=r"vol\.csv, line 6 \(2024-01-01T00:04:00Z\), column 'volume': volume must be >= 0"
    ):
        load_ohlcv(path)


def test_high_below_open_or_close(tmp_path: Path) -> None:
    bars = make_bars(5)
    bars.loc[bars.index[2], "high"] = bars["close"].iloc[2] * 0.99
    path = write_csv(tmp_path / "hi.csv", bars)
    with pytest.raises(
        DataError,
        match=r"hi\.csv, line 4 \(2024-01-01T00:02:00Z\), column 'high': high .* below max\(open, close\)",
    ):
        load_ohlcv(path)


def test_low_above_open_or_close(tmp_path: Path) -> None:
    bars = make_bars(5)
    bars.loc[bars.index[3], "low"] = bars["open"].iloc[3] * 1.001
    path = write_csv(tmp_path / "lo.csv", bars)
    with pytest.raises(
        DataError,
        match=r"lo\.csv, line 5 \(2024-01-01T00:03:00Z\), column 'low': low .* above min\(open, close\)",
    ):
        load_ohlcv(path)


def test_unsorted_timestamps(tmp_path: Path) -> None:
    rows = bars_text(make_bars(6))
    rows[4], rows[5] = rows[5], rows[4]  # lines 5 and 6 swapped
    path = write_rows(tmp_path / "order.csv", rows)
    with pytest.raises(
        DataError,
        match=r"order\.csv, line 6 \(2024-01-01T00:03:00Z\), column 'timestamp': "
        r"timestamps are not sorted.*Fix: sort",
    ):
        load_ohlcv(path)


def test_duplicate_timestamps(tmp_path: Path) -> None:
    rows = bars_text(make_bars(6))
    rows[4][0] = rows[3][0]
    path = write_rows(tmp_path / "dup.csv", rows)
    with pytest.raises(
        DataError, match=r"dup\.csv, line 5 \(2024-01-01T00:02:00Z\), column 'timestamp': duplicate timestamp"
    ):
        load_ohlcv(path)


def test_too_few_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "short.csv", make_bars(5))
    with pytest.raises(DataError, match=r"short\.csv: only 5 row\(s\); at least 10 are needed.*min_rows"):
        load_ohlcv(path, min_rows=10)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        load_ohlcv(tmp_path / "empty.csv")


def test_header_only_file(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "header.csv", bars_text(make_bars(1))[:1])
    with pytest.raises(DataError, match=r"header\.csv: has a header but no data rows"):
        load_ohlcv(path)


def test_binary_garbage_named_csv(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes() + b"\x00")
    with pytest.raises(DataError, match=r"garbage\.csv: is not a .*CSV file.*Fix: give a CSV file"):
        load_ohlcv(path)


def test_text_that_is_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text("These are my trading notes.\nBuy low and sell high!\n")
    with pytest.raises(
        DataError, match=r"notes\.csv: does not look like an OHLCV table.*Fix: give a CSV file"
    ):
        load_ohlcv(path)


def test_malformed_csv(tmp_path: Path) -> None:
    rows = bars_text(make_bars(5))
    rows[3].append("extra")
    path = write_rows(tmp_path / "ragged.csv", rows)
    with pytest.raises(DataError, match=r"ragged\.csv: is not a well-formed CSV table .*line 4"):
        load_ohlcv(path)


def test_parquet_content_in_a_csv_file(tmp_path: Path) -> None:
    save_parquet(make_bars(3), tmp_path / "real.parquet")
    (tmp_path / "wrong.csv").write_bytes((tmp_path / "real.parquet").read_bytes())
    with pytest.raises(DataError, match=r"wrong\.csv: is a Parquet file, not a CSV file.*rename"):
        load_ohlcv(tmp_path / "wrong.csv")


def test_garbage_parquet(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("timestamp,open\n")
    with pytest.raises(DataError, match=r"fake\.parquet: is not a valid Parquet file"):
        load_ohlcv(path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "bars.json"
    path.write_text("{}")
    with pytest.raises(
        DataError, match=r"bars\.json: unknown file extension '\.json'.*\.csv, \.csv\.gz, \.parquet"
    ):
        load_ohlcv(path)


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.csv: file not found.*Fix: check the path"):
        load_ohlcv(tmp_path / "missing.csv")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match=r"dir\.csv: is a directory"):
        load_ohlcv(tmp_path / "dir.csv")


def test_columns_that_collide_when_lower_cased(tmp_path: Path) -> None:
    rows = bars_text(make_bars(3))
    rows[0].append("Close")
    for r in rows[1:]:
        r.append("1")
    with pytest.raises(
        DataError, match=r"twice\.csv, column 'Close': columns 'close' and 'Close' both read as 'close'"
    ):
        load_ohlcv(write_rows(tmp_path / "twice.csv", rows))


def test_ambiguous_slash_dates_are_refused(tmp_path: Path) -> None:
    rows = [["date", "open", "high", "low", "close", "volume"]]
    rows += [
        [d, "1", "2", "0.5", "1.5", "1"] for d in ("01/02/2024", "02/01/2024", "03/01/2024", "01/03/2024")
    ]
    with pytest.raises(DataError, match=r"ambig\.csv, column 'date': ambiguous timestamps"):
        load_ohlcv(write_rows(tmp_path / "ambig.csv", rows))


def test_parquet_and_dataframe_errors_name_the_row(tmp_path: Path) -> None:
    bars = make_bars(5)
    bars.loc[bars.index[2], "volume"] = -2.0
    with pytest.raises(DataError, match=r"^DataFrame, row 3 \(2024-01-01T00:02:00Z\), column 'volume'"):
        load_ohlcv(bars)
    save_parquet(bars, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet, row 3 \(2024-01-01T00:02:00Z\), column 'volume'"):
        load_ohlcv(tmp_path / "bad.parquet")


def test_load_does_not_modify_its_input() -> None:
    bars = make_bars(5).reset_index()
    before = bars.copy()
    load_ohlcv(bars)
    pd.testing.assert_frame_equal(bars, before)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(5, 60),
    bad=st.sets(st.integers(0, 59), min_size=1, max_size=5),
    column=st.sampled_from(["open", "high", "low", "close", "volume"]),
)
def test_the_first_offending_row_is_reported(n: int, bad: set[int], column: str) -> None:
    rows = sorted(r for r in bad if r < n) or [n - 1]
    bars = make_bars(n)
    bars.loc[bars.index[rows], column] = np.nan
    with pytest.raises(DataError, match=rf"^DataFrame, row {rows[0] + 1} \(.*column '{column}'"):
        load_ohlcv(bars)


# --- summary ---------------------------------------------------------------------------------------


def test_summary_reports_gaps_without_refusing() -> None:
    bars = make_bars(10, freq="1h")
    gappy = bars.drop(bars.index[[3, 4, 7]])
    summary = summarize(load_ohlcv(gappy, symbol="X"))
    assert summary.rows == 7
    assert summary.timeframe == pd.Timedelta(hours=1)
    assert summary.gaps == 2
    assert summary.largest_gap == pd.Timedelta(hours=3)
    assert summary.missing_bars == 3
    assert summary.first == bars.index[0]
    assert summary.last == bars.index[-1]
    assert summary.span == pd.Timedelta(hours=10)
    assert summary.symbol == "X"


def test_summary_of_a_regular_series_has_no_gaps() -> None:
    summary = summarize(make_bars(30))
    assert (summary.gaps, summary.largest_gap, summary.missing_bars) == (0, None, 0)
    assert summary.timeframe == pd.Timedelta(minutes=1)


def test_blank_line_inside_the_data_is_named_by_its_line(tmp_path: Path) -> None:
    rows = bars_text(make_bars(4))
    rows.insert(3, [""])  # line 4 is blank
    with pytest.raises(DataError, match=r"blank\.csv, line 4, column 'timestamp': missing timestamp"):
        load_ohlcv(write_rows(tmp_path / "blank.csv", rows))


def test_trailing_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tail.csv", make_bars(4))
    path.write_text(path.read_text() + "\n\n")
    assert len(load_ohlcv(path)) == 4


def test_semicolon_separated_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("timestamp;open;high;low;close;volume\n2024-01-01;1;2;0.5;1.5;3\n")
    with pytest.raises(DataError, match=r"semi\.csv: does not look like an OHLCV table.*commas, not ';'"):
        load_ohlcv(path)


def test_error_values_are_printed_as_plain_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,10\n2024-01-02,1,0.8,0.5,1.5,10\n"
    )
    with pytest.raises(DataError, match=r"high 0\.8 is below max\(open, close\) = 1\.5") as info:
        load_ohlcv(path)
    assert "np." not in str(info.value)
