"""`slf learning show|report`, run as a user would: in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from envs.events import ErrorEvent, ErrorKind
from learning.manager import UniversalLearningManager

from .conftest import MACD_NEG, MACD_POS, RSI_OVERSOLD, RSI_STRONG, START_NS, make_trade


def _slf(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide virtual terminal, so that table cells are not folded in the captured output.
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", "learning", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "run"
    with UniversalLearningManager(root) as manager:
        for n in range(20):
            losing = n % 2 == 0
            signals = {**RSI_OVERSOLD, **MACD_NEG} if losing else {**RSI_STRONG, **MACD_POS}
            manager.learn_from_trade(make_trade(n, -1.0 if losing else 2.0, signals=signals))
        manager.analyze_failure_patterns(START_NS)
        manager.evolve_trading_strategy(START_NS)
        manager.learn_from_error(
            ErrorEvent(START_NS, "BTC/USDT", ErrorKind.MIN_NOTIONAL, "Filter failure: NOTIONAL")
        )
    return root


def test_show_prints_rules_with_evidence_weights_and_error_patterns(run_dir: Path) -> None:
    out = _slf("show", str(run_dir))
    assert out.returncode == 0, out.stderr
    for text in (
        "Avoidance rules",
        "avoid:rsi_14=oversold",
        "rsi_14 < 30",
        "Strategy weights",
        "Most traded patterns",
        "filter failure",
    ):
        assert text in out.stdout


def test_show_gives_market_times_before_the_clock_not_calendar_dates(run_dir: Path) -> None:
    # A training store's experienced market clock runs past the replayed data; printed as dates it
    # would read like real dates (2018-2020 for 2017 bars). The display is relative to T, its reading.
    out = _slf("show", str(run_dir))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "not calendar dates" in text
    assert " UTC" not in text
    assert re.search(r"created T(-[\d.]+[dhm])?\. It has vetoed", text), text


def test_show_json_is_machine_readable_and_accepts_the_store_file(run_dir: Path) -> None:
    out = _slf("show", "--json", str(run_dir / "learning" / "state.sqlite"))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rule = next(r for r in data["rules"] if r["rule_id"] == "avoid:rsi_14=oversold")
    assert rule["support"] == 10
    assert re.search(r"created T(-[\d.]+[dhm])?\. It has vetoed", rule["explanation"]), rule["explanation"]
    assert "UTC" not in rule["explanation"]  # as in the report: relative to the learning clock T
    assert isinstance(rule["created_ns"], int)  # what is stored is printed unchanged
    assert data["strategy_weights"]
    assert data["error_patterns"][0]["signature"] == "min_notional|-|filter failure: notional"
    assert data["effectiveness"]["learning/trades"] == 20.0


def test_report_writes_markdown_and_html(run_dir: Path, tmp_path: Path) -> None:
    out = _slf("report", str(run_dir), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    markdown = (tmp_path / "learning_report.md").read_text()
    assert markdown.startswith("# Learning report")
    assert "not calendar dates" in markdown
    assert " UTC" not in markdown
    assert (tmp_path / "learning_report.html").exists()


def test_missing_or_corrupt_store_is_a_one_line_error(tmp_path: Path) -> None:
    missing = _slf("show", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ")
    assert missing.stderr.count("\n") == 1
    store = tmp_path / "bad" / "learning" / "state.sqlite"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"not a database at all" * 100)
    corrupt = _slf("show", str(tmp_path / "bad"))
    assert corrupt.returncode == 2
    assert "corrupt" in corrupt.stderr
    assert str(store) in corrupt.stderr
    assert "Traceback" not in corrupt.stderr
