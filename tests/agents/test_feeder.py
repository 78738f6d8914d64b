"""ManagerFeeder: the framework-free feeding under LearningCallback, driven by hand like a live runner."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.callbacks import LearningCallback
from agents.feeder import COUNT_KEYS, ManagerFeeder
from agents.policies import AlgoConfig, build_model
from agents.switches import LearningSwitches
from agents.wrappers import wrap_env
from envs.data import generate_synthetic
from envs.errors import ConfigError
from envs.events import TradeResult
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from learning.error_patterns import Resolution
from learning.manager import UniversalLearningManager
from learning.state import LearnedState

SYMBOL = "BTC/USDT"
SPEC = MarketSpec(SYMBOL, taker_fee=0.001, min_notional=100.0, qty_step=1e-5, min_qty=1e-5)
FAULTS = {"rate_limit": 0.05, "timeout": 0.05}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_synthetic([SYMBOL], 700, 11).frames[SYMBOL]


def small_orders(frame: pd.DataFrame, switches: LearningSwitches) -> gym.Env[Any, Any]:
    """Entries of 8% of 1000 USDT (about 80 USDT, below the 100 USDT minimum notional) and faults."""
    env = MarketReplayEnv(
        data=frame,
        market=SPEC,
        window=4,
        episode_length=100,
        initial_cash=1000.0,
        actions=(-0.08, 0.0, 0.08),
        faults=FAULTS,
    )
    return wrap_env(env, switches)


class HandDriven:
    """Two wrapped envs stepped by a seeded action stream and fed to a feeder (no SB3 anywhere)."""

    def __init__(self, frame: pd.DataFrame, manager: UniversalLearningManager, switches: LearningSwitches):
        self.envs = [small_orders(frame, switches) for _ in range(2)]
        self.pushed: list[int] = []
        self.resolutions: list[tuple[int, Resolution]] = []
        self.feeder = ManagerFeeder(
            manager, switches, push=self._push, apply_resolution=self._apply, veto_horizon=3
        )
        self.trades: list[TradeResult] = []
        self.fed_at: list[int] = []

    def _push(self, state: LearnedState) -> None:
        self.pushed.append(state.version)
        for env in self.envs:
            env.get_wrapper_attr("set_learned_state")(state)

    def _apply(self, i: int, resolution: Resolution) -> None:
        self.resolutions.append((i, resolution))
        self.envs[i].get_wrapper_attr("apply_resolution")(resolution)

    def run(self, steps: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        reset_infos = [env.reset(seed=seed + i)[1] for i, env in enumerate(self.envs)]
        self.feeder.start(reset_infos)
        for _ in range(steps):
            infos, dones = [], []
            for i, env in enumerate(self.envs):
                *_, terminated, truncated, info = env.step(int(rng.integers(3)))
                done = terminated or truncated
                if done:  # auto-reset, as a VecEnv does
                    reset_infos[i] = env.reset()[1]
                infos.append(info)
                dones.append(done)
                self.trades.extend(info["trades"])
            self.fed_at.append(self.feeder.step(infos, dones, reset_infos))
        self.feeder.finish()


def test_the_feeder_imports_no_training_framework() -> None:
    code = (
        "import sys, agents.feeder; "
        "bad = [m for m in ('stable_baselines3', 'torch') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_hand_driven_feeder_feeds_trades_errors_resolutions_and_pushes_snapshots(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    switches = LearningSwitches()
    with UniversalLearningManager(tmp_path) as manager:
        driven = HandDriven(frame, manager, switches)
        driven.run(300, seed=3)
        counts = driven.feeder.counts
        assert set(counts) == set(COUNT_KEYS)
        assert counts["trades_fed"] == len(driven.trades) == manager.trade_count > 0
        assert counts["errors_fed"] > 0
        assert counts["minimum_rejections_fed"] > 0
        assert counts["resolutions_applied"] == len(driven.resolutions) > 0
        assert counts["resolutions_recorded"] > 0
        assert counts["snapshot_pushes"] == len(driven.pushed) >= 2
        # The envs hold the manager's latest snapshot, pushed once per version.
        assert driven.pushed[-1] == manager.version
        assert len(set(driven.pushed)) == len(driven.pushed)
        assert [env.get_wrapper_attr("learned_version") for env in driven.envs] == [manager.version] * 2
        assert SYMBOL in manager.minimums()
        # One monotonic timeline; every finished episode measured.
        assert np.all(np.diff(driven.fed_at) >= 0)
        assert manager.clock.now_ns() == driven.fed_at[-1]
        assert len(driven.feeder.episodes) >= 4
        assert all(m["length"] == 100.0 for m in driven.feeder.episodes)


def _learned(manager: UniversalLearningManager) -> dict[str, Any]:
    state = manager.snapshot().to_dict()
    return {
        "state": state,
        "patterns": manager.patterns(),
        "weights": manager.strategy_weights(),
        "history": manager.evolution_history(),
        "rules": manager.rules(),
        "errors": manager.error_patterns(),
    }


def test_two_seeded_hand_driven_runs_learn_identical_state(frame: pd.DataFrame, tmp_path: Path) -> None:
    switches = LearningSwitches()
    learned = []
    counts = []
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        with UniversalLearningManager(tmp_path / run) as manager:
            driven = HandDriven(frame, manager, switches)
            driven.run(250, seed=seed)
            learned.append(_learned(manager))
            counts.append(dict(driven.feeder.counts))
    assert learned[0] == learned[1]
    assert counts[0] == counts[1]
    assert learned[0] != learned[2]  # another action stream learns something else


def test_the_feeder_checks_its_arguments(tmp_path: Path) -> None:
    def nothing(*_: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="needs a learning manager"):
        ManagerFeeder(None, LearningSwitches(), push=nothing, apply_resolution=nothing)
    with pytest.raises(ConfigError, match="veto_horizon"):
        ManagerFeeder(
            None, LearningSwitches(enabled=False), push=nothing, apply_resolution=nothing, veto_horizon=0
        )


def _ppo_learned(frame: pd.DataFrame, root: Path, seed: int) -> tuple[dict[str, Any], dict[str, int]]:
    switches = LearningSwitches()
    factories: list[Callable[[], gym.Env[Any, Any]]] = [
        lambda: small_orders(frame, switches) for _ in range(2)
    ]
    venv = DummyVecEnv(factories)
    config = AlgoConfig.model_validate({"n_steps": 64, "batch_size": 32, "n_epochs": 1, "net_arch": (16,)})
    with UniversalLearningManager(root) as manager:
        learning = LearningCallback(manager, switches)
        build_model(config, venv, seed=seed).learn(256, callback=CallbackList([learning]))
        return _learned(manager), dict(learning.counts)


def test_two_seeded_training_runs_learn_identical_state(frame: pd.DataFrame, tmp_path: Path) -> None:
    first = _ppo_learned(frame, tmp_path / "a", 0)
    again = _ppo_learned(frame, tmp_path / "b", 0)
    other = _ppo_learned(frame, tmp_path / "c", 1)
    assert first == again
    assert first[0]["state"]["version"] > 1
    assert first != other


def test_an_environments_pending_feeding_survives_a_checkpoint(tmp_path: Path) -> None:
    """What env_state() returns is plain JSON and restore_env_state() takes it back (a restarted runner)."""
    import json

    def nothing(*_: Any) -> None:
        return None

    switches = LearningSwitches()
    owed = {
        "pending_resolution": ["sig", "retry_with_backoff"],
        "pending_vetoes": [
            [["avoid:rsi_14=oversold"], 1, 100.0, 0.002, 2],
            [["avoid:x=y"], -1, 99.0, 0.0, 1],
        ],
    }
    with UniversalLearningManager(tmp_path) as manager:
        feeder = ManagerFeeder(manager, switches, push=nothing, apply_resolution=nothing)
        feeder.start([{}, {}])
        assert feeder.env_state(0) == {"pending_resolution": None, "pending_vetoes": []}
        feeder.restore_env_state(1, json.loads(json.dumps(owed)))
        assert feeder.env_state(1) == owed
        assert feeder.env_state(0) == {"pending_resolution": None, "pending_vetoes": []}
        feeder.expect_resolution_outcome(0, "other", Resolution.REDUCE_SIZE)
        assert feeder.env_state(0)["pending_resolution"] == ["other", "reduce_size"]


def test_the_frozen_snapshot_report_gives_times_relative_to_the_snapshots_clock() -> None:
    from dataclasses import replace

    from agents.feeder import snapshot_markdown
    from envs.clock import DAY_NS
    from learning.state import LearnedState

    from .test_wrappers import make_rule

    t = 1_000 * DAY_NS  # an experienced market clock: not a calendar date
    rule = replace(make_rule("regime=r1"), created_ns=t - 2 * DAY_NS, updated_ns=t)
    text = snapshot_markdown(LearnedState(version=4, time_ns=t, rules=(rule,)))
    assert "Version 4" in text
    assert "created T-2.0d" in text
    assert "before T;" in text
    assert "UTC" not in text
    assert "No learned state" in snapshot_markdown(None)
