"""``slf backtest`` and ``slf compare``: outputs, exit codes and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main
from tests.experiments.test_backtest_runner import tiny_runs


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("error: ")
    return err


def test_backtest_a_run_writes_the_result_and_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tiny_runs() / "learning" / "ppo-seed0"
    out = tmp_path / "bt"
    assert main(["backtest", "--run", str(run), "--out", str(out), "--report", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "engine: predict" in text
    assert "learning frozen" in text
    for name in ("curve.parquet", "orders.parquet", "trades.parquet", "trades.csv", "metrics.json"):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    assert "Learn" in page  # the learning section
    assert (out / "equity.png").is_file()


def test_backtest_a_baseline_over_a_date_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sma"
    argv = ["backtest", "--baseline", "sma_crossover", "--data", "eurusd_1h", "--start", "2017-10-01"]
    assert main([*argv, "--end", "2017-11-01", "--out", str(out), "--no-progress"]) == 0
    assert "sma_crossover" in capsys.readouterr().out
    assert (out / "metrics.json").is_file()


def test_a_baseline_on_data_writes_under_runs_not_into_the_source_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["backtest", "--baseline", "flat", "--data", "eurusd_1h", "--start", "2017-10-01"]
    assert main([*argv, "--end", "2017-11-01", "--no-progress"]) == 0
    out = tmp_path / "runs" / "backtests" / "flat_eurusd_1h_range_2017-10-01_2017-11-01"
    assert (out / "metrics.json").is_file()
    assert not (tmp_path / "backtests").exists()


def test_a_baseline_on_a_run_writes_inside_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "ppo-seed0"
    shutil.copytree(tiny_runs() / "no_learning" / "ppo-seed0", run)
    monkeypatch.chdir(tmp_path)
    assert (
        main(["backtest", "--baseline", "flat", "--run", str(run), "--split", "train", "--no-progress"]) == 0
    )
    assert (run / "backtests" / "flat_train" / "metrics.json").is_file()
    assert not (tmp_path / "backtests").exists()


def test_a_run_without_a_best_model_names_its_output_after_the_final_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "ppo-seed0"
    shutil.copytree(tiny_runs() / "no_learning" / "ppo-seed0", run)
    (run / "best_model.zip").unlink()
    assert main(["backtest", "--run", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "used model.zip" in out
    assert f"output: {run / 'backtests' / 'final_off_test'}" in out
    assert (run / "backtests" / "final_off_test" / "metrics.json").is_file()
    assert not (run / "backtests" / "best_off_test").exists()


def test_compare_writes_under_runs_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(tiny_runs() / "no_learning"), "--baselines", "none"]) == 0
    assert (tmp_path / "runs" / "comparisons" / "no_learning" / "comparison.md").is_file()
    assert not (tmp_path / "comparisons").exists()


def test_backtest_input_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "no such run directory" in one_line_error(capsys, ["backtest", "--run", str(tmp_path / "x")])
    err = one_line_error(capsys, ["backtest", "--baseline", "buy_and_hod", "--data", "eurusd_1h"])
    assert "did you mean 'buy_and_hold'" in err
    err = one_line_error(
        capsys,
        [
            "backtest",
            "--baseline",
            "flat",
            "--data",
            "eurusd_1h",
            "--start",
            "2017-09-01",
            "--end",
            "2017-08-01",
        ],
    )
    assert "not before" in err
    assert "nothing to backtest" in one_line_error(capsys, ["backtest"])
    assert "--baseline needs data" in one_line_error(capsys, ["backtest", "--baseline", "flat"])
    run = tiny_runs() / "no_learning" / "ppo-seed0"
    err = one_line_error(capsys, ["backtest", "--run", str(run), "--learning", "online"])
    assert "without the learning manager" in err


def test_compare_cli_writes_three_formats_and_refuses_mismatched_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    runs = tiny_runs()
    out = tmp_path / "cmp"
    assert main(["compare", str(runs / "no_learning"), "--baselines", "buy_and_hold", "--out", str(out)]) == 0
    assert "comparison.md" in capsys.readouterr().out
    assert {"comparison.md", "comparison.html", "comparison.csv"} <= {p.name for p in out.iterdir()}
    other = tmp_path / "other" / "ppo-seed7"
    shutil.copytree(runs / "no_learning" / "ppo-seed0", other)
    info = json.loads((other / "run.json").read_text())
    info["data"]["digest"] = "0" * 32
    (other / "run.json").write_text(json.dumps(info))
    err = one_line_error(capsys, ["compare", str(runs / "no_learning"), str(other)])
    assert "data differ" in err
    assert "did you mean 'random'" in one_line_error(capsys, ["compare", str(runs), "--baselines", "randm"])


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom experiments.cli import main\n"
        "main(['--help'])\n"
        "for command in ('backtest', 'compare', 'walkforward'):\n"
        "    main([command, '--help'])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
