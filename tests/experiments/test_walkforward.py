"""``experiments.walkforward``: window arithmetic (rolling, expanding), no overlap, a tiny end-to-end run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from envs.errors import ConfigError, StateError
from experiments.cli import main
from experiments.config import apply_overrides, load_config
from experiments.train import prepare_data
from experiments.walkforward import (
    _window_config,
    min_training_bars,
    plan_windows,
    run_walkforward,
    write_walkforward,
)

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "walkforward_ppo_eurusd_1h.yaml"


def test_rolling_windows_move_a_fixed_training_part() -> None:
    windows = plan_windows(0, 1000, 4, "rolling", 10)
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in windows] == [
        (0, 190, 200, 400),
        (200, 390, 400, 600),
        (400, 590, 600, 800),
        (600, 790, 800, 1000),
    ]


def test_expanding_windows_train_from_the_first_bar() -> None:
    windows = plan_windows(100, 1103, 3, "expanding", 5)
    assert all(w.train_start == 100 for w in windows)
    assert [w.test_start for w in windows] == [350, 600, 850]
    assert windows[-1].test_end == 1103  # the remainder goes to the last test block


@pytest.mark.parametrize("mode", ["rolling", "expanding"])
@pytest.mark.parametrize(("n", "k", "embargo"), [(1000, 4, 10), (5000, 7, 48), (733, 2, 0)])
def test_no_window_sees_its_test_window(mode: str, n: int, k: int, embargo: int) -> None:
    windows = plan_windows(0, n, k, mode, embargo)
    for w in windows:
        assert w.train_start < w.train_end
        assert w.train_end - 1 + embargo < w.test_start  # last training bar + embargo < first test bar
        assert w.test_start < w.test_end
    tests = [(w.test_start, w.test_end) for w in windows]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(tests))  # test blocks do not overlap


def test_too_little_data_and_bad_modes_are_refused() -> None:
    with pytest.raises(ConfigError, match="too few"):
        plan_windows(0, 100, 10, "rolling", 48)
    with pytest.raises(ConfigError, match="rolling or expanding"):
        plan_windows(0, 1000, 2, "sliding", 0)


def test_too_many_windows_are_refused_with_the_bars_each_needs(tmp_path: Path) -> None:
    config = load_config(CONFIG)
    with pytest.raises(ConfigError, match=r"too few, each block needs at least \d+ bars") as caught:
        run_walkforward(config, runs_dir=tmp_path, windows=50, timesteps=64)
    message = str(caught.value)
    assert "--windows" in message
    assert "use at most" in message
    assert "data.splits" not in message  # walk-forward makes its own splits
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before anything trained


def test_the_most_windows_the_message_names_all_train(tmp_path: Path) -> None:
    config = load_config(CONFIG)
    with pytest.raises(ConfigError, match=r"use at most (\d+) windows") as caught:
        run_walkforward(config, runs_dir=tmp_path, windows=50)
    most = int(str(caught.value).split("use at most ")[1].split()[0])
    wf = config.walkforward
    assert wf is not None
    md = prepare_data(config).market
    lead = md.features.warmup + config.env.window - 1
    min_train = min_training_bars(lead, config.env.episode_length, wf.validation_share)
    plan = plan_windows(0, len(md), most, str(wf.mode), wf.embargo, min_train=min_train)
    for window in plan:  # every window's splits pass the checks that training makes
        prepare_data(_window_config(config, window, md.time_ns, wf))
    with pytest.raises(ConfigError, match="too few"):
        plan_windows(0, len(md), most + 1, str(wf.mode), wf.embargo, min_train=min_train)


def test_a_walkforward_over_earlier_window_runs_suggests_what_walkforward_offers(tmp_path: Path) -> None:
    earlier = tmp_path / "runs" / "walkforward_ppo_eurusd_1h-w1" / "ppo-seed0"
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("name: x\n", encoding="utf-8")
    with pytest.raises(StateError, match="another --runs-dir") as caught:
        run_walkforward(load_config(CONFIG), runs_dir=tmp_path / "runs", windows=2, timesteps=64)
    assert "--resume" not in str(caught.value)
    assert "--name" not in str(caught.value)
    assert not (tmp_path / "runs" / "walkforward_ppo_eurusd_1h-w0").exists()  # refused before training


def test_tiny_walkforward_trains_and_tests_out_of_sample(tmp_path: Path) -> None:
    config = apply_overrides(
        load_config(CONFIG),
        {"train.eval_every": 0, "train.progress_bar": False, "algo.n_steps": 64, "algo.batch_size": 32},
    )
    wf = run_walkforward(config, runs_dir=tmp_path / "runs", windows=2, timesteps=64, seeds=[0], embargo=24)
    assert len(wf.table) == 2
    for run_dir in wf.table["run_dir"]:
        info = json.loads((Path(run_dir) / "run.json").read_text())
        splits = info["splits"]
        # Normalization was fitted on the train split, which ends before validation; both end >= 24
        # bars before the test block.
        assert splits["validation"]["rows"][1] + 24 <= splits["test"]["rows"][0]
        assert splits["train"]["rows"][1] <= splits["validation"]["rows"][0]
    curve = wf.stitched[0]
    assert curve.index.is_monotonic_increasing
    assert curve.iloc[0] == config.env.initial_cash
    paths = write_walkforward(wf, tmp_path / "out")
    assert "n=1, no interval" in paths["markdown"].read_text()
    assert paths["equity"].stat().st_size > 1000


def test_the_aggregate_clips_intervals_and_shows_none_for_two_seeds(tmp_path: Path) -> None:
    import math

    import pandas as pd

    from backtests.stats import mean_ci
    from experiments.walkforward import WalkForward

    trades = mean_ci([2.0, 90.0], bounds=(0.0, math.inf))
    assert trades.low == 0.0  # the raw t-interval would reach far below zero trades
    curve = pd.Series([1.0, 1.1], index=pd.date_range("2017-01-01", periods=2, freq="h", tz="UTC"))
    wf = WalkForward(
        windows=[],
        table=pd.DataFrame(columns=["window", "seed", "total_return", "sharpe"]),
        results={},
        stitched={0: curve, 1: curve},
        aggregate={"trades": {"n": 2, "mean": trades.mean, "low": trades.low, "high": trades.high}},
        settings={"windows": 2, "mode": "rolling", "embargo": 0, "seeds": [0, 1], "timesteps": 64},
    )
    text = write_walkforward(wf, tmp_path)["markdown"].read_text()
    assert "| trades | 46.000 (n=2, too few seeds for an interval) |" in text


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walkforward", "--config", str(CONFIG), "--mode", "sliding"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "rolling or expanding" in err
