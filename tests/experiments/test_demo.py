"""``slf demo`` with a tiny budget: report, plot, both arms' TensorBoard events and the printed table."""

from __future__ import annotations

import io
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from experiments import cli_demo, demo
from experiments.cli import main

TIMESTEPS = "256"
ROWS = ("ppo + learning", "ppo", "buy_and_hold", "flat", "random", "sma_crossover", "learned_weights")


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    runs = tmp_path_factory.mktemp("runs")
    capture = pytest.MonkeyPatch()
    out = io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        code = main(
            ["demo", "--timesteps", TIMESTEPS, "--runs-dir", str(runs), "--seed", "1", "--no-progress"]
        )
    finally:
        capture.undo()
    assert code == 0, out.getvalue()
    return runs, out.getvalue()


def test_demo_writes_a_report_with_every_arm_and_baseline(demo_output: tuple[Path, str]) -> None:
    runs, _ = demo_output
    report = (runs / "demo" / "report.md").read_text(encoding="utf-8")
    for row in ROWS:
        assert f"| {row} |" in report, row
    assert "held-out test split" in report
    assert "tensorboard --logdir" in report
    assert "![equity on the test split](equity.png)" in report


def test_demo_plots_the_equity_of_all_arms(demo_output: tuple[Path, str]) -> None:
    pytest.importorskip("matplotlib")
    plot = demo_output[0] / "demo" / "equity.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_both_arms_trained_with_the_same_seed_and_logged_to_tensorboard(
    demo_output: tuple[Path, str],
) -> None:
    runs, _ = demo_output
    for arm in ("learning", "no_learning"):
        run = runs / "demo" / arm / "ppo-seed1"
        assert (run / "model.zip").is_file()
        assert list((run / "tensorboard").rglob("events.out.tfevents*")), arm
    assert (runs / "demo" / "learning" / "ppo-seed1" / "learning" / "state.sqlite").is_file()
    assert not (runs / "demo" / "no_learning" / "ppo-seed1" / "learning").exists()


def test_demo_prints_the_table_the_run_location_and_tensorboard(demo_output: tuple[Path, str]) -> None:
    runs, out = demo_output
    for row in ROWS:
        assert row in out, row
    assert "return" in out
    assert "sharpe" in out
    assert str(runs / "demo" / "report.md") in out
    assert "tensorboard --logdir" in out


def test_the_printed_tensorboard_command_runs_as_printed_and_matches_the_report(
    demo_output: tuple[Path, str],
) -> None:
    runs, out = demo_output
    command = next(line for line in out.splitlines() if line.startswith("TensorBoard: "))
    command = command.removeprefix("TensorBoard: ")
    program, *args = shlex.split(command)
    assert args == ["--logdir", str(runs / "demo")]  # the demo's own directory, not the parent
    assert shutil.which(program) is not None, program  # on PATH, or a path to the venv's script
    report = (runs / "demo" / "report.md").read_text(encoding="utf-8")
    assert f"TensorBoard: `{command}`" in report
    learned = next(line for line in out.splitlines() if line.startswith("learned state: "))
    assert shlex.split(learned.removeprefix("learned state: "))[1:] == [
        "learning",
        "show",
        str(runs / "demo" / "learning" / "ppo-seed1"),
    ]


def test_a_second_demo_does_not_overwrite_the_first(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    assert demo._free_name(tmp_path) == "demo-1"


def test_cli_default_budget_is_the_demo_default() -> None:
    assert cli_demo.DEFAULT_TIMESTEPS == demo.DEFAULT_DEMO_TIMESTEPS


def test_demo_rejects_a_bad_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--timesteps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "--timesteps" in err
