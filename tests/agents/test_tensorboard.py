"""What LearningCallback writes to TensorBoard, read back from the event files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from agents.callbacks import LearningCallback
from agents.policies import AlgoConfig, build_model
from agents.switches import LearningSwitches
from agents.wrappers import wrap_env
from envs.data import generate_synthetic
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from learning.manager import UniversalLearningManager

SYMBOL = "BTC/USDT"
SPEC = MarketSpec(SYMBOL, taker_fee=0.001, min_notional=100.0, qty_step=1e-5, min_qty=1e-5)
LEARNING_TAGS = (
    "learning/patterns",
    "learning/avoidance_rules",
    "learning/vetoes",
    "learning/error_resolution_rate",
    "learning/adaptations",
    "learning/win_rate",
    "learning/profit_trend",
)
TRADING_TAGS = (
    "trading/equity",
    "trading/return",
    "trading/sharpe",
    "trading/max_drawdown",
    "trading/turnover",
    "trading/fees",
    "trading/rejections",
)
COUNTS = ("learning/patterns", "learning/avoidance_rules", "learning/vetoes", "learning/adaptations")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_synthetic([SYMBOL], 700, 11).frames[SYMBOL]


def run(frame: pd.DataFrame, log_dir: Path, switches: LearningSwitches, manager: Any) -> EventAccumulator:
    """Train PPO a few hundred steps on two small-order envs and load the run's event file."""

    def make() -> Any:
        env = MarketReplayEnv(
            data=frame,
            market=SPEC,
            window=4,
            episode_length=60,
            initial_cash=1000.0,
            actions=(0.0, 0.08),
            allow_short=False,
            faults={"rate_limit": 0.05, "timeout": 0.05},
        )
        return wrap_env(env, switches)

    venv = DummyVecEnv([make, make])
    config = AlgoConfig.model_validate({"n_steps": 64, "batch_size": 32, "n_epochs": 2, "net_arch": (16,)})
    model = build_model(config, venv, seed=0, tensorboard_log=log_dir)
    model.learn(384, callback=LearningCallback(manager, switches))
    (run_dir,) = log_dir.iterdir()
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def last(accumulator: EventAccumulator, tag: str) -> float:
    return float(accumulator.Scalars(tag)[-1].value)


def test_learning_and_trading_scalars_hparams_and_report_reach_tensorboard(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    with UniversalLearningManager(tmp_path / "run") as manager:
        ea = run(frame, tmp_path / "tb", LearningSwitches(), manager)
        trades = manager.describe()["trades"]
    scalars = set(ea.Tags()["scalars"])
    assert set(LEARNING_TAGS) <= scalars
    assert set(TRADING_TAGS) <= scalars
    # learning/* at every rollout end (3 rollouts of 2 x 64 steps) and once more at the end.
    assert len(ea.Scalars("learning/patterns")) >= 3
    assert all(last(ea, tag) >= 0.0 for tag in COUNTS)
    assert last(ea, "learning/trades") == trades > 0
    assert 0.0 <= last(ea, "learning/error_resolution_rate") <= 1.0
    assert 0.0 <= last(ea, "learning/win_rate") <= 1.0
    assert last(ea, "learning/minimums") == 1.0  # learned from the 100 USDT rejections
    assert last(ea, "trading/equity") > 0.0
    assert 0.0 <= last(ea, "trading/max_drawdown") <= 1.0
    assert last(ea, "trading/return") == pytest.approx(last(ea, "trading/equity") / 1000.0 - 1.0, abs=1e-3)
    # Early episodes trade; later ones may be vetoed flat by the rules learned from them.
    assert max(s.value for s in ea.Scalars("trading/fees")) > 0.0
    assert max(s.value for s in ea.Scalars("trading/turnover")) > 0.0
    assert min(s.value for s in ea.Scalars("trading/fees")) >= 0.0
    assert last(ea, "trading/rejections") >= 0.0

    hparams = ea.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    data = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    logged = data.session_start_info.hparams
    assert logged["algorithm"].string_value == "PPO"
    assert logged["switches/vetoes"].number_value == 1.0  # torch writes bools as numbers
    assert logged["switches/observation_features"].number_value == 0.0

    (text,) = ea.Tensors("learning/report/text_summary")
    report = text.tensor_proto.string_val[0].decode()
    assert report.startswith("# Learning report")
    assert "BTC/USDT" in report  # the learned minimum is in it


def test_the_control_arm_logs_trading_metrics_and_no_learning(frame: pd.DataFrame, tmp_path: Path) -> None:
    ea = run(frame, tmp_path / "tb", LearningSwitches(enabled=False), None)
    scalars = set(ea.Tags()["scalars"])
    assert set(TRADING_TAGS) <= scalars
    assert not {tag for tag in scalars if tag.startswith("learning/")}
    assert "learning/report/text_summary" not in ea.Tags()["tensors"]
    data = plugin_data_pb2.HParamsPluginData.FromString(
        ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    )
    assert data.session_start_info.hparams["switches/enabled"].number_value == 0.0
