"""``experiments.backtest``: a run or a baseline over a split or date range; learning frozen, online or off.

One tiny ablation (2 arms x 2 seeds, 256 steps each) is trained once per test process by
:func:`tiny_runs` and shared with ``test_compare.py`` and ``tests/experiments/test_cli_backtest.py``.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from envs.errors import ConfigError, DataError, StateError
from experiments.backtest import (
    BASELINE_NAMES,
    backtest_baseline,
    backtest_run,
    baseline_config,
    load_run,
)

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
TINY: dict[str, Any] = {
    "train.timesteps": 256,
    "train.n_envs": 1,
    "train.vec_env": "dummy",
    "train.eval_every": 128,
    "train.checkpoint_every": 0,
    "train.progress_bar": False,
    "train.seeds": [0, 1],
    "algo.n_steps": 64,
    "algo.batch_size": 32,
    "name": "tiny",
}


@functools.cache
def tiny_runs() -> Path:
    """``<tmp>/runs/tiny/{learning,no_learning}/ppo-seed{0,1}``, trained once per process (~15 s)."""
    from experiments.config import apply_overrides, load_config
    from experiments.train import train

    root = Path(tempfile.mkdtemp(prefix="slf-tiny-runs-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    config = apply_overrides(load_config(CONFIGS / "ablation_ppo_eurusd_1h.yaml"), TINY)
    train(config, runs_dir=root / "runs")
    return root / "runs" / "tiny"


@pytest.fixture(scope="module")
def runs() -> Path:
    return tiny_runs()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_frozen_backtest_replays_exactly_the_test_split(runs: Path) -> None:
    run = runs / "learning" / "ppo-seed0"
    bt = backtest_run(run)
    info = json.loads((run / "run.json").read_text())
    assert bt.learning == "frozen"
    assert bt.engine == "predict"  # the learning wrapper needs the slow path
    assert bt.state is not None
    assert bt.result.meta["rows"] == info["splits"]["test"]["rows"]
    assert not bt.in_sample
    first = bt.result.curve.index[0]
    assert first >= pd.Timestamp(info["splits"]["test"]["first"])
    assert bt.result.metrics.bars > 100


def test_a_run_without_learning_uses_the_numpy_path(runs: Path) -> None:
    bt = backtest_run(runs / "no_learning" / "ppo-seed0")
    assert (bt.learning, bt.engine) == ("off", "numpy")
    with pytest.raises(ConfigError, match="trained without the learning manager"):
        backtest_run(runs / "no_learning" / "ppo-seed0", learning="online")


def test_numpy_path_equals_the_predict_path(runs: Path) -> None:
    run = runs / "learning" / "ppo-seed1"
    fast = backtest_run(run, learning="off")
    assert fast.engine == "numpy"
    config, _ = load_run(run)
    # The learning arm with learning off through the slow loop: the same orders and equity.
    from experiments.backtest import _prepared, _slow_loop, select_span
    from experiments.train import make_env_factory

    prepared = _prepared(config, run)
    span, _ = select_span(prepared, "test")
    from dataclasses import replace

    from agents.policies import load_model

    env = replace(make_env_factory(config, prepared, "test", learning=False), span=span)()
    slow = _slow_loop(load_model(config.algo.algo, run / "best_model.zip"), env, name="x", seed=1)
    assert slow.equity.to_numpy() == pytest.approx(fast.result.equity.to_numpy(), rel=1e-9)


def test_online_learning_changes_a_copy_never_the_run_store(runs: Path, tmp_path: Path) -> None:
    run = runs / "learning" / "ppo-seed0"
    store = run / "learning" / "state.sqlite"
    before = _digest(store)
    frozen = backtest_run(run, learning="frozen", model="final")
    online = backtest_run(run, learning="online", model="final", out_dir=tmp_path / "online")
    try:
        assert online.manager is not None
        copy = tmp_path / "online" / "learning" / "state.sqlite"
        assert copy.is_file()
        assert online.state is not None
        assert frozen.state is not None
        assert online.state.version > frozen.state.version  # it kept learning
    finally:
        online.close()
    assert _digest(store) == before
    assert _digest(copy) != before


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_every_baseline_runs_on_the_runs_test_split(runs: Path, name: str) -> None:
    run = runs / "learning" / "ppo-seed0"
    config, root = load_run(run)
    result = backtest_baseline(name, config=config, run_dir=root)
    info = json.loads((run / "run.json").read_text())
    assert result.meta["rows"] == info["splits"]["test"]["rows"]
    assert result.name == name
    if name == "flat":
        assert result.metrics.total_return == 0.0
        assert len(result.orders) == 0


def test_learned_weights_needs_a_learning_run() -> None:
    config = baseline_config("eurusd_1h")
    with pytest.raises(ConfigError, match="learned_weights"):
        backtest_baseline("learned_weights", config=config)


def test_date_range_selects_bars_inside_it() -> None:
    config = baseline_config("eurusd_1h")
    result = backtest_baseline("buy_and_hold", config=config, start="2017-10-01", end="2017-11-01")
    index = result.curve.index
    assert index[0] >= pd.Timestamp("2017-10-01", tz="UTC")
    assert index[-1] < pd.Timestamp("2017-11-01", tz="UTC")


def test_bad_spans_are_refused() -> None:
    config = baseline_config("eurusd_1h")
    with pytest.raises(ConfigError, match="not before"):
        backtest_baseline("flat", config=config, start="2017-11-01", end="2017-10-01")
    with pytest.raises(ConfigError, match="did you mean 'test'"):
        backtest_baseline("flat", config=config, split="tset")
    with pytest.raises(ConfigError, match="select 0 bar"):
        backtest_baseline("flat", config=config, split="test", start="2001-01-01", end="2001-02-01")


def test_a_span_in_the_training_rows_is_flagged_in_sample(runs: Path) -> None:
    bt = backtest_run(runs / "no_learning" / "ppo-seed0", split="train")
    assert bt.in_sample
    assert any("IN-SAMPLE" in n for n in bt.notes)


def test_unknown_data_and_missing_runs() -> None:
    with pytest.raises(DataError, match="did you mean"):
        baseline_config("eurusd_1")
    with pytest.raises(StateError, match="no such run directory"):
        backtest_run("does/not/exist")
