"""Replay/live parity with a learned state that acts: avoidance-rule vetoes, condition adjustments and a
learned order minimum applied frozen, by the learning wrapper in replay and by the live runner.

The parity test in ``test_runner.py`` runs online learning from an empty store, where no avoidance rule
forms within the run; this one starts from a state whose rules and adjustments fire on the bars, so the
veto path, the exposure and position caps of a condition class and the minimum-aware sizing are all
compared step by step.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pandas as pd
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.bundle import EnvSettings
from agents.callbacks import LearningCallback
from agents.hooks import HookReason
from agents.runner import LiveRunner
from agents.switches import LearningSwitches
from agents.wrappers import INFO_EVENTS, wrap_env
from envs.data import load_dataset
from envs.features import MARKET_CONDITIONS, FeatureConfig, NormalizationStats, compute_features
from envs.live import ReplayFeed
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from learning.discretize import Discretizer
from learning.records import AvoidanceRule, ConditionAdjustment, LearnedMinimum
from learning.state import LearnedState
from tests.agents.test_runner import MomentumPolicy, _Host, _strip

START = 1000
END = 1300
WINDOW = 8
ACTIONS = (-1.0, -0.5, 0.0, 0.5, 1.0)
CASH = 100_000.0
SPEC = MarketSpec(
    "EUR/USD", taker_fee=0.0002, spread_bps=1.0, slippage_bps=0.5, min_qty=1000.0, qty_step=1000.0,
    min_notional=20_000.0, price_tick=1e-05,
)  # fmt: skip
SETTINGS = EnvSettings(window=WINDOW, actions=ACTIONS, allow_short=True, initial_cash=CASH)
FROZEN = LearningSwitches(online=False)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_dataset("eurusd_1h").iloc[:END]


@pytest.fixture(scope="module")
def matrix(bars: pd.DataFrame) -> Any:
    return compute_features(bars, FeatureConfig())


@pytest.fixture(scope="module")
def normalization(matrix: Any) -> NormalizationStats:
    return NormalizationStats.fit(matrix, 0, START)


def _rule(factor: str) -> AvoidanceRule:
    return AvoidanceRule(
        rule_id=f"avoid:{factor}", factor=factor, description=factor, support=8, losers=10,
        occurrence=0.8, winner_occurrence=0.2, lift=4.0, window_days=3.0, created_ns=0, updated_ns=0,
    )  # fmt: skip


def _flat(matrix: Any, row: int) -> dict[str, float]:
    names = list(matrix.columns)
    return {name: float(matrix.values[row, j]) for j, name in enumerate(names)}


@pytest.fixture(scope="module")
def state(matrix: Any, bars: pd.DataFrame) -> LearnedState:
    """A rule on a common discretized RSI factor of the live span (it fires on some bars, not on others),
    an active tightening of the most common condition class, and a learned minimum above the exchange's
    (45k against 20k: half-size orders are resized or skipped)."""
    disc = Discretizer()
    names = list(matrix.columns)
    counts: Counter[str] = Counter()
    for row in range(START, END - 1):
        flat = _flat(matrix, row)
        counts.update(disc.factor(name, flat[name]) for name in names if name.startswith("rsi"))
    # The second most common RSI factor: frequent enough to veto often, rare enough to leave trading.
    factor = counts.most_common(2)[-1][0]

    classifier = LearnedState(version=0, time_ns=0).classifier
    env = MarketReplayEnv(data=bars, features=FeatureConfig(), market=SPEC, window=WINDOW, start=START)
    keys: Counter[str] = Counter()
    for row in range(START, END - 1):
        keys[classifier.key(env.market_data.snapshot(row)[MARKET_CONDITIONS])] += 1
    env.close()
    key = keys.most_common(1)[0][0]
    adjustment = ConditionAdjustment(
        condition_key=key, exposure_multiplier=0.5, entry_threshold=0.0, max_position=0.5, active=True
    )
    minimum = LearnedMinimum(SPEC.symbol, 0.0, 45_000.0, 45_000.0, 0, 1, "learned")
    return LearnedState(
        version=3,
        time_ns=0,
        rules=(_rule(factor),),
        minimums={SPEC.symbol: minimum},
        condition_adjustments={key: adjustment},
    )


def _replay(
    bars: pd.DataFrame, normalization: NormalizationStats, state: LearnedState
) -> list[dict[str, Any]]:
    env = MarketReplayEnv(
        data=bars, features=FeatureConfig(), normalization=normalization, market=SPEC, window=WINDOW,
        actions=ACTIONS, start=START, initial_cash=CASH, order_id_prefix="s",
    )  # fmt: skip
    venv = DummyVecEnv([lambda: wrap_env(env, FROZEN)])
    venv.seed(7)
    obs = venv.reset()
    callback = LearningCallback(None, FROZEN, state=state)
    host = _Host(venv)
    callback.init_callback(host)  # type: ignore[arg-type]
    callback.on_training_start({}, {})
    policy = MomentumPolicy(len(normalization.columns))
    infos = []
    while True:
        action, _ = policy.predict(obs, deterministic=True)
        obs, _, dones, step_infos = venv.step(action)
        host.num_timesteps += 1
        callback.update_locals({"infos": step_infos, "dones": dones})
        callback.on_step()
        infos.append(step_infos[0])
        if dones[0]:
            break
    callback.on_training_end()
    return infos


def _live(bars: pd.DataFrame, normalization: NormalizationStats, state: LearnedState) -> LiveRunner:
    runner = LiveRunner(
        ReplayFeed(bars, start=START), MomentumPolicy(len(normalization.columns)), spec=SPEC,
        features=FeatureConfig(), normalization=normalization, env=SETTINGS, switches=FROZEN, state=state,
    )  # fmt: skip
    runner.build()
    asyncio.run(runner.run())
    return runner


def _comparable(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "time_ns": info["time_ns"],
        "orders": [o._replace(order_id=_strip(o.order_id)) for o in info["orders"]],
        "trades": [t._replace(trade_id=_strip(t.trade_id)) for t in info["trades"]],
        "errors": [e._replace(order_id=_strip(e.order_id or "x-")) for e in info["errors"]],
        "vetoed": list(info["vetoed"]),
        "equity": info["equity"],
        "position": info["position"],
        "learned": [tuple(e) for e in info.get(INFO_EVENTS, ())],
    }


def test_frozen_rules_adjustments_and_minimums_act_identically_in_replay_and_live(
    bars: pd.DataFrame, normalization: NormalizationStats, state: LearnedState
) -> None:
    replay = _replay(bars, normalization, state)
    runner = _live(bars, normalization, state)
    assert len(replay) == len(runner.infos) == END - 1 - START
    for i, (a, b) in enumerate(zip(replay, runner.infos, strict=True)):
        assert _comparable(a) == _comparable(b), f"step {i} differs"

    # The state acted: without these the comparison above would prove nothing about the learned path.
    reasons = Counter(e.reason for info in replay for e in info.get(INFO_EVENTS, ()))
    assert reasons[HookReason.RULE_VETO] > 0, reasons
    assert reasons[HookReason.CONDITION_SIZE] + reasons[HookReason.CONDITION_HOLD] > 0, reasons
    assert reasons[HookReason.MIN_RESIZE] + reasons[HookReason.MIN_SKIP] > 0, reasons
    assert sum(len(info["orders"]) for info in replay) > 10
