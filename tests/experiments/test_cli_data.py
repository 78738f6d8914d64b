"""``slf data`` end to end: real processes, exit codes, summaries and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from envs.data import dataset_path, generate_synthetic, load_market_specs, load_ohlcv, save_parquet
from experiments.cli import app, main
from tests.envs.test_data_loader import bars_text, make_bars, write_csv, write_rows

SLF = Path(sys.executable).parent / "slf"
TIMEOUT_S = 120
# Parallel processes for the bad-file matrix: enough to overlap start-up, few enough for a shared machine.
WORKERS = 3


def slf(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``slf`` script (or ``python -m experiments.cli`` when it is not installed)."""
    command = [str(SLF)] if SLF.exists() else [sys.executable, "-m", "experiments.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Fix:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


# --- valid data --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rows", "timeframe"), [("eurusd_1h", 6225, "1h"), ("googl_1d", 2335, "1d")])
def test_validate_bundled_dataset_file(name: str, rows: int, timeframe: str) -> None:
    result = slf("data", "validate", str(dataset_path(name)))
    assert result.returncode == 0, result.stderr
    assert f"rows       {rows}" in result.stdout
    assert f"timeframe  {timeframe}" in result.stdout
    assert "gaps       " in result.stdout
    assert result.stdout.strip().endswith("ok: data valid")


def test_validate_dataset_by_name_through_python_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "data", "validate", "eurusd_1h"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "eurusd_1h [EUR/USD]" in result.stdout
    assert "first      2017-01-01 22:00 UTC" in result.stdout


def test_synth_then_validate_then_resample(tmp_path: Path) -> None:
    out = tmp_path / "synth.parquet"
    made = slf(
        "data", "synth", "--symbols", "BTC/USDT,ETH/USDT", "--bars", "3000", "--seed", "7",
        "--start", "2024-03-01", "--out", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "2 symbol(s)" in made.stdout
    expected = generate_synthetic(["BTC/USDT", "ETH/USDT"], 3000, 7, start="2024-03-01")
    for symbol in expected.symbols:
        loaded = load_ohlcv(out, symbol=symbol)
        np.testing.assert_array_equal(loaded.to_numpy(), expected.frames[symbol].to_numpy())
    assert load_market_specs(out) == dict(expected.specs)

    checked = slf("data", "validate", str(out))
    assert checked.returncode == 0, checked.stderr
    assert "synth.parquet [BTC/USDT]" in checked.stdout
    assert "synth.parquet [ETH/USDT]" in checked.stdout
    assert "rows       3000" in checked.stdout
    assert "timeframe  1m" in checked.stdout
    assert "ok: 2 symbols valid" in checked.stdout

    hourly = tmp_path / "hourly.parquet"
    resampled = slf("data", "resample", str(out), "--to", "1h", "--out", str(hourly))
    assert resampled.returncode == 0, resampled.stderr
    assert "3000 bars -> 50 bars of 1h" in resampled.stdout
    eth = load_ohlcv(hourly, symbol="ETH/USDT")
    assert len(eth) == 50
    assert eth["volume"].sum() == pytest.approx(expected.frames["ETH/USDT"]["volume"].sum())
    assert set(load_market_specs(hourly)) == {"BTC/USDT", "ETH/USDT"}


def test_list_shows_datasets_with_source_and_license() -> None:
    result = slf("data", "list")
    assert result.returncode == 0, result.stderr
    header, *_ = result.stdout.splitlines()
    assert header.split() == ["name", "symbol", "timeframe", "rows", "span", "source", "/", "license"]
    for fragment in ("eurusd_1h", "googl_1d", "synth_btcusdt_1m", "6225", "100000", "MIT"):
        assert fragment in result.stdout


def test_help_of_every_command() -> None:
    runner = CliRunner()
    for args in (
        ["data", "--help"],
        *(["data", c, "--help"] for c in ("validate", "list", "synth", "resample")),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_data_commands_do_not_import_torch() -> None:
    code = "import sys, experiments.cli_data; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S, check=True
    )
    assert result.stdout.strip() == "False"


# --- invalid data: exit 2 with one line, no traceback ---------------------------------------------------


Writer = Callable[[Path], object]


def _corrupt(column: str, text: str, data_row: int = 2) -> Writer:
    return lambda path: write_csv(path, make_bars(6), cell=(data_row, column, text))


def _rows(change: Callable[[list[list[str]]], None]) -> Writer:
    def write(path: Path) -> None:
        rows = bars_text(make_bars(6))
        change(rows)
        write_rows(path, rows)

    return write


def _swap(rows: list[list[str]]) -> None:
    rows[3], rows[4] = rows[4], rows[3]


def _duplicate(rows: list[list[str]]) -> None:
    rows[4][0] = rows[3][0]


def _drop_volume(rows: list[list[str]]) -> None:
    for r in rows:
        del r[-1]


def _high_below(rows: list[list[str]]) -> None:
    rows[3][2] = str(float(rows[3][4]) * 0.5)


def _low_above(rows: list[list[str]]) -> None:
    rows[3][3] = str(float(rows[3][2]) * 2)


def _multi_symbol(path: Path) -> None:
    long = pd.concat([make_bars(4).assign(symbol="BTC/USDT"), make_bars(4).assign(symbol="ETH/USDT")])
    save_parquet(long.reset_index(), path)


# name -> (file name, writer or None for a missing file, extra CLI args, fragments of the message)
BAD_FILES: dict[str, tuple[str, Writer | None, tuple[str, ...], tuple[str, ...]]] = {
    "missing_column": ("nocol.csv", _rows(_drop_volume), (), ("column 'volume'", "missing column")),
    "unparseable_timestamp": (
        "when.csv",
        _corrupt("timestamp", "yesterday"),
        (),
        ("line 4", "column 'timestamp'", "'yesterday'"),
    ),
    "non_numeric": ("text.csv", _corrupt("open", "n/a?"), (), ("line 4", "column 'open'", "non-numeric")),
    "nan": ("nan.csv", _corrupt("close", "nan"), (), ("line 4", "column 'close'", "non-finite")),
    "zero_price": ("zero.csv", _corrupt("open", "0"), (), ("line 4", "column 'open'", "price must be > 0")),
    "negative_volume": ("negvol.csv", _corrupt("volume", "-5"), (), ("line 4", "column 'volume'", ">= 0")),
    "high_below": ("high.csv", _rows(_high_below), (), ("line 4", "column 'high'", "below max(open, close)")),
    "low_above": ("low.csv", _rows(_low_above), (), ("line 4", "column 'low'", "above min(open, close)")),
    "unsorted": ("order.csv", _rows(_swap), (), ("line 5", "column 'timestamp'", "not sorted")),
    "duplicate": ("dup.csv", _rows(_duplicate), (), ("line 5", "column 'timestamp'", "duplicate timestamp")),
    "too_few_rows": ("short.csv", _rows(lambda rows: None), ("--min-rows", "10"), ("only 6 row(s)",)),
    "empty": ("empty.csv", lambda p: p.write_bytes(b""), (), ("file is empty",)),
    "binary": ("blob.csv", lambda p: p.write_bytes(bytes(range(256)) * 8), (), ("not a text CSV",)),
    "not_a_table": ("notes.csv", lambda p: p.write_text("hello\nworld\n"), (), ("not look like",)),
    "unknown_extension": ("bars.xlsx", lambda p: p.write_text("x"), (), ("unknown file extension",)),
    "not_found": ("absent.csv", None, (), ("file not found",)),
    "bad_parquet": ("fake.parquet", lambda p: p.write_text("a,b\n1,2\n"), (), ("not a valid Parquet",)),
    "unknown_symbol": ("multi.parquet", _multi_symbol, ("--symbol", "BTC/USD"), ("did you mean 'BTC/USDT'",)),
}


# Every bad file also runs in-process (below); these few, one per stage of loading (finding, sniffing,
# reading columns, checking rows, selecting a symbol), also run as real processes. Start-up of a process
# costs most of a second, so the whole matrix in processes would dominate the test budget.
IN_PROCESSES = ("not_found", "binary", "missing_column", "unsorted", "unknown_symbol")


def _write_bad_files(folder: Path) -> dict[str, list[str]]:
    """Write every bad file into ``folder``; return the ``slf`` arguments that validate each."""
    jobs: dict[str, list[str]] = {}
    for case, (name, write, extra, _) in BAD_FILES.items():
        if write is not None:
            write(folder / name)
        jobs[case] = ["data", "validate", str(folder / name), *extra]
    return jobs


@pytest.fixture(scope="module")
def bad_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    return _write_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def bad_results(bad_jobs: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Validate the chosen bad files, each in its own ``slf`` process, a few at a time."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {case: pool.submit(slf, *bad_jobs[case]) for case in IN_PROCESSES}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", IN_PROCESSES)
def test_bad_file_exits_2_with_one_line(
    case: str, bad_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    name, _, _, fragments = BAD_FILES[case]
    result = bad_results[case]
    assert_one_line_error(result, name, *fragments)
    assert result.stdout == ""


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_every_bad_file_gives_one_line_and_status_2(
    case: str, bad_jobs: dict[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    name, _, _, fragments = BAD_FILES[case]
    status = main(bad_jobs[case])
    captured = capsys.readouterr()
    assert_one_line_error(
        subprocess.CompletedProcess([], status, captured.out, captured.err), name, *fragments
    )
    assert captured.out == ""


def test_bad_cli_input_exits_2(tmp_path: Path) -> None:
    result = slf(
        "data", "resample", str(dataset_path("eurusd_1h")), "--to", "1M", "--out", str(tmp_path / "o.parquet")
    )
    assert_one_line_error(result, "timeframe '1M'")
    result = slf("data", "synth", "--bars", "10", "--out", str(tmp_path / "o.csv"))
    assert_one_line_error(result, "o.csv' must end in .parquet")
