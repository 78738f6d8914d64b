"""``experiments.compare``: arms x seeds on one test split: intervals, PSR/DSR, test vs buy-and-hold."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from envs.errors import ConfigError, StateError
from experiments.compare import compare_runs, discover_runs, interval_cell, table_rows, write_comparison
from tests.experiments.test_backtest_runner import tiny_runs

ARMS = ("tiny/learning/ppo", "tiny/no_learning/ppo")


@pytest.fixture(scope="module")
def comparison_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    comparison = compare_runs([tiny_runs()])
    out = tmp_path_factory.mktemp("comparison")
    write_comparison(comparison, out)
    return out, comparison


def test_two_arms_of_two_seeds_get_confidence_intervals(comparison_dir: tuple[Path, object]) -> None:
    _, comparison = comparison_dir
    table = comparison.table  # type: ignore[attr-defined]
    for arm in ARMS:
        row = table[(table["policy"] == arm) & (table["metric"] == "sharpe")].iloc[0]
        assert row["n"] == 2
        assert math.isfinite(row["low"])
        assert math.isfinite(row["high"])
        assert row["low"] <= row["mean"] <= row["high"]
    # One deterministic backtest has no interval, and says so.
    bh = table[(table["policy"] == "buy_and_hold") & (table["metric"] == "total_return")].iloc[0]
    assert bh["n"] == 1
    assert math.isnan(bh["low"])
    stats = comparison.stats  # type: ignore[attr-defined]
    assert stats["random"].seeds == [0, 1]
    assert len(stats["learned_weights"].seeds) == 2
    # Every (arm, seed) backtest counts as a trial for the deflated Sharpe ratio.
    assert comparison.n_trials == 2 + 2 + 1 + 1 + 2 + 1 + 2  # type: ignore[attr-defined]
    for arm in ARMS:
        assert stats[arm].test is not None
        assert 0.0 <= stats[arm].test.p_value <= 1.0
    assert stats["buy_and_hold"].test is None


def test_outputs_are_written_with_intervals_not_single_numbers(comparison_dir: tuple[Path, object]) -> None:
    out, comparison = comparison_dir
    md = (out / "comparison.md").read_text()
    assert "n=1, no interval" in md
    header, rows = table_rows(comparison)  # type: ignore[arg-type]
    arm_row = next(r for r in rows if r[0] == ARMS[0])
    # Two seeds: a t-interval of +-12.7 standard errors is not shown as if it meant something.
    assert arm_row[header.index("Sharpe")].endswith("(n=2, too few seeds for an interval)")
    assert "[" not in arm_row[header.index("win rate")]
    assert "too few" in md
    page = (out / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "<script" not in page
    assert "http" not in page
    csv = (out / "comparison.csv").read_text()
    assert "dsr" in csv
    assert "nw_p_vs_buy_and_hold" in csv
    assert (out / "equity_bands.png").stat().st_size > 1000
    assert (out / "sharpe_ci.png").stat().st_size > 1000


def test_two_seed_intervals_stay_within_each_metrics_range_and_say_they_are_not_meaningful(
    comparison_dir: tuple[Path, object],
) -> None:
    _, comparison = comparison_dir
    table = comparison.table  # type: ignore[attr-defined]
    for _, row in table[table["n"] == 2].iterrows():
        assert "too few" in row["note"]
        if row["metric"] == "win_rate":
            assert 0.0 <= row["low"] <= row["high"] <= 1.0
        if row["metric"] == "trades":
            assert row["low"] >= 0.0
        if row["metric"] == "max_drawdown":
            assert row["high"] <= 0.0


def test_three_or_more_seeds_show_their_interval() -> None:
    assert interval_cell(3, "50.00%", "10.00%", "100.00%") == "50.00% [10.00%, 100.00%]"
    assert interval_cell(2, "50.00%", "0.00%", "100.00%") == "50.00% (n=2, too few seeds for an interval)"
    assert interval_cell(1, "50.00%", "n/a", "n/a") == "50.00% (n=1, no interval)"


def test_runs_with_another_test_split_are_refused(tmp_path: Path) -> None:
    runs = tiny_runs()
    other = tmp_path / "other" / "ppo-seed5"
    shutil.copytree(runs / "no_learning" / "ppo-seed0", other)
    info = json.loads((other / "run.json").read_text())
    info["splits"]["test"]["rows"] = [1, 2]
    (other / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="test split differ"):
        compare_runs([runs / "learning", other], baselines=[])


def test_the_same_run_twice_and_missing_directories_are_refused(tmp_path: Path) -> None:
    run = tiny_runs() / "learning" / "ppo-seed0"
    copy = tmp_path / "learning" / "ppo-seed0"
    shutil.copytree(run, copy)
    with pytest.raises(ConfigError, match="seed 0"):
        compare_runs([run, copy], baselines=[])
    with pytest.raises(StateError, match="no such directory"):
        discover_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(StateError, match="holds no run directory"):
        discover_runs([tmp_path / "empty"])
