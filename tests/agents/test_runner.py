"""``LiveRunner``: parity with ``MarketReplayEnv`` (orders, fills, trades, learned state), lifecycle guards,
features equal to the replay's with a bounded history, risk limits and graceful stop on SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.bundle import EnvSettings
from agents.callbacks import LearningCallback
from agents.runner import HISTORY_FACTOR, LiveRunner, RiskLimits, RunnerState
from agents.switches import LearningSwitches
from agents.wrappers import INFO_EVENTS, wrap_env
from envs.data import load_dataset
from envs.errors import ConfigError
from envs.features import FeatureConfig, NormalizationStats, compute_features, min_rows
from envs.live import ReplayFeed
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager

START = 1000  # first live bar (and first replay decision); rows before it are the back-fill
END = 1400
WINDOW = 8
ACTIONS = (-1.0, -0.5, 0.0, 0.5, 1.0)
CASH = 100_000.0
# A minimum notional between the half and the full position makes half-size orders fail, so errors,
# learned minimums and error resolutions take part in the parity run.
SPEC = MarketSpec(
    "EUR/USD", taker_fee=0.0002, spread_bps=1.0, slippage_bps=0.5, min_qty=1000.0, qty_step=1000.0,
    min_notional=60_000.0, price_tick=1e-05,
)  # fmt: skip
SETTINGS = EnvSettings(window=WINDOW, actions=ACTIONS, allow_short=True, initial_cash=CASH)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_dataset("eurusd_1h").iloc[:END]


@pytest.fixture(scope="module")
def normalization(bars: pd.DataFrame) -> NormalizationStats:
    matrix = compute_features(bars, FeatureConfig())
    return NormalizationStats.fit(matrix, 0, START)


class MomentumPolicy:
    """A deterministic policy of the observation: the last bar's normalized momentum, bucketed."""

    def __init__(self, k: int) -> None:
        self.column = (WINDOW - 1) * k + 5  # momentum_pct of the newest row

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[Any, Any]:
        obs = np.asarray(observation)
        x = float(obs.reshape(-1)[self.column]) if obs.ndim == 1 else float(obs[0, self.column])
        action = int(np.digitize(x, [-0.6, -0.2, 0.2, 0.6]))
        return (np.array([action]) if obs.ndim == 2 else np.int64(action)), state


class _Host:
    """The model side of a BaseCallback, for driving LearningCallback by hand over a DummyVecEnv."""

    def __init__(self, env: Any) -> None:
        from stable_baselines3.common.logger import Logger

        self.env = env
        self.logger = Logger(folder=None, output_formats=[])
        self.num_timesteps = 0

    def get_env(self) -> Any:
        return self.env


Manager = UniversalLearningManager | None


def _replay(
    bars: pd.DataFrame, normalization: NormalizationStats, policy: Any, manager: Manager,
    switches: LearningSwitches,
) -> list[dict[str, Any]]:  # fmt: skip
    """The reference: MarketReplayEnv + learning wrapper + LearningCallback, as training runs them."""
    env = MarketReplayEnv(
        data=bars, features=FeatureConfig(), normalization=normalization, market=SPEC, window=WINDOW,
        actions=ACTIONS, start=START, initial_cash=CASH, order_id_prefix="s",
    )  # fmt: skip
    wrapped = wrap_env(env, switches) if switches.enabled else env
    venv = DummyVecEnv([lambda: wrapped])
    venv.seed(7)
    obs = venv.reset()
    callback = LearningCallback(manager, switches) if switches.enabled else None
    host = _Host(venv)
    if callback is not None:
        callback.init_callback(host)  # type: ignore[arg-type]
        callback.on_training_start({}, {})
    infos = []
    while True:
        action, _ = policy.predict(obs, deterministic=True)
        obs, _, dones, step_infos = venv.step(action)
        host.num_timesteps += 1
        if callback is not None:
            callback.update_locals({"infos": step_infos, "dones": dones})
            callback.on_step()
        infos.append(step_infos[0])
        if dones[0]:
            break
    if callback is not None:
        callback.on_training_end()
    return infos


def _live(
    bars: pd.DataFrame, normalization: NormalizationStats, policy: Any, manager: Manager,
    switches: LearningSwitches, **kwargs: Any,
) -> LiveRunner:  # fmt: skip
    feed = ReplayFeed(bars, start=START)
    runner = LiveRunner(
        feed, policy, spec=SPEC, features=FeatureConfig(), normalization=normalization, env=SETTINGS,
        switches=switches, manager=manager, **kwargs,
    )  # fmt: skip
    runner.build()
    asyncio.run(runner.run())
    return runner


def _strip(order_id: str) -> str:
    # Replay ids carry an episode tag after the prefix (s<tag>-...); live ids a fixed prefix (live-...).
    return order_id.split("-", 1)[1]


def _events(info: dict[str, Any]) -> dict[str, Any]:
    def orders(key: str) -> list[Any]:
        return [o._replace(order_id=_strip(o.order_id)) for o in info[key]]

    errors = [e._replace(order_id=_strip(e.order_id or "x-")) for e in info["errors"]]
    return {
        "time_ns": info["time_ns"],
        "orders": orders("orders"),
        "fills": orders("fills"),
        "rejections": orders("rejections"),
        "errors": errors,
        "trades": [t._replace(trade_id=_strip(t.trade_id)) for t in info["trades"]],
        "vetoed": list(info["vetoed"]),
        "bar": info["bar"],
        "equity": info["equity"],
        "position": info["position"],
        "learned": [tuple(e) for e in info.get(INFO_EVENTS, ())],
    }


def _manager(root: Path) -> UniversalLearningManager:
    return UniversalLearningManager(root, config=LearningConfig(), market_specs=[SPEC])


def _compare(replay_infos: list[dict[str, Any]], runner: LiveRunner) -> None:
    assert len(runner.infos) == len(replay_infos) == END - 1 - START
    for i, (a, b) in enumerate(zip(replay_infos, runner.infos, strict=True)):
        assert _events(a) == _events(b), f"step {i} differs"


def test_runner_matches_replay_orders_fills_trades_and_learned_state(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    switches = LearningSwitches()
    k = len(normalization.columns)
    with _manager(tmp_path / "replay") as m_replay, _manager(tmp_path / "live") as m_live:
        replay_infos = _replay(bars, normalization, MomentumPolicy(k), m_replay, switches)
        runner = _live(bars, normalization, MomentumPolicy(k), m_live, switches)
        _compare(replay_infos, runner)
        fills = sum(len(i["fills"]) for i in replay_infos)
        trades = sum(len(i["trades"]) for i in replay_infos)
        rejections = sum(len(i["rejections"]) for i in replay_infos)
        assert fills > 20
        assert trades > 10
        assert rejections > 0
        assert m_replay.describe() == m_live.describe()
        assert m_replay.describe()["trades"] == trades
        assert m_replay.snapshot().to_dict() == m_live.snapshot().to_dict()
        assert m_replay.patterns() == m_live.patterns()
        assert m_replay.minimums() == m_live.minimums()
        assert runner.learned_state is not None
        assert runner.learned_state.to_dict() == m_live.snapshot().to_dict()
    assert runner.lifecycle is RunnerState.STOPPED


def test_runner_matches_replay_with_an_sb3_model_and_learning_off(
    bars: pd.DataFrame, normalization: NormalizationStats
) -> None:
    from stable_baselines3 import PPO

    env = MarketReplayEnv(
        data=bars, features=FeatureConfig(), normalization=normalization, market=SPEC, window=WINDOW,
        actions=ACTIONS, start=START, initial_cash=CASH,
    )  # fmt: skip
    model = PPO("MlpPolicy", env, seed=3, n_steps=64, batch_size=32, device="cpu")
    off = LearningSwitches(enabled=False)
    replay_infos = _replay(bars, normalization, model, None, off)
    runner = _live(bars, normalization, model, None, off)
    _compare(replay_infos, runner)
    assert sum(len(i["fills"]) for i in replay_infos) > 0


def test_features_with_a_bounded_history_equal_the_replays(bars: pd.DataFrame) -> None:
    full = compute_features(bars, FeatureConfig()).values
    history = HISTORY_FACTOR * min_rows(FeatureConfig())
    for end in range(END - 60, END):
        window = compute_features(bars.iloc[end - history : end], FeatureConfig()).values
        np.testing.assert_array_equal(window[-1], full[end - 1], err_msg=f"row {end - 1}")


def test_bounded_history_runner_still_matches_replay(
    bars: pd.DataFrame, normalization: NormalizationStats
) -> None:
    k = len(normalization.columns)
    off = LearningSwitches(enabled=False)
    replay_infos = _replay(bars, normalization, MomentumPolicy(k), None, off)
    runner = _live(bars, normalization, MomentumPolicy(k), None, off, max_history=HISTORY_FACTOR * min_rows())
    _compare(replay_infos, runner)


def test_lifecycle_is_guarded(bars: pd.DataFrame, normalization: NormalizationStats) -> None:
    feed = ReplayFeed(bars, start=START)
    runner = LiveRunner(
        feed,
        MomentumPolicy(1),
        spec=SPEC,
        features=FeatureConfig(),
        normalization=normalization,
        env=SETTINGS,
    )
    with pytest.raises(ConfigError, match=r"run\(\) called while the runner is new.*call build\(\) first"):
        asyncio.run(runner.run())
    with pytest.raises(ConfigError, match=r"stop\(\) called while the runner is new"):
        runner.stop()
    runner.build()
    with pytest.raises(ConfigError, match=r"build\(\) called while the runner is built"):
        runner.build()
    runner.stop()
    runner.stop()  # idempotent
    with pytest.raises(ConfigError, match=r"run\(\) called while the runner is stopped"):
        asyncio.run(runner.run())


def test_short_history_and_wrong_symbol_are_refused(
    bars: pd.DataFrame, normalization: NormalizationStats
) -> None:
    feed = ReplayFeed(bars, start=START)
    kw: dict[str, Any] = {
        "spec": SPEC,
        "features": FeatureConfig(),
        "normalization": normalization,
        "env": SETTINGS,
    }
    with pytest.raises(ConfigError, match="max_history=100 is too short"):
        LiveRunner(feed, MomentumPolicy(1), max_history=100, **kw)
    other = ReplayFeed(bars, start=START, symbol="BTC/USDT")
    with pytest.raises(ConfigError, match=r"--symbol: the feed trades 'BTC/USDT'.*'EUR/USD'"):
        LiveRunner(other, MomentumPolicy(1), **kw).build()


def test_feature_schema_mismatch_names_the_columns(
    bars: pd.DataFrame, normalization: NormalizationStats
) -> None:
    feed = ReplayFeed(bars, start=START)
    runner = LiveRunner(
        feed, MomentumPolicy(1), spec=SPEC, features=FeatureConfig(higher_timeframes=(4,)),
        normalization=normalization, env=SETTINGS,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"feature schema.*missing \['trend_dir_x16'\]"):
        runner.build()


class _AlwaysLong:
    def predict(self, observation: Any, state: Any = None, **_: Any) -> tuple[Any, Any]:
        return np.int64(len(ACTIONS) - 1), state


def test_max_position_caps_the_target(bars: pd.DataFrame, normalization: NormalizationStats) -> None:
    off = LearningSwitches(enabled=False)
    runner = _live(
        bars.iloc[: START + 50], normalization, _AlwaysLong(), None, off, risk=RiskLimits(max_position=0.7)
    )
    assert 0.6 < runner.book.exposure <= 0.7 + 1e-9


def test_daily_loss_kill_switch_closes_and_stops_trading(
    bars: pd.DataFrame, normalization: NormalizationStats
) -> None:
    off = LearningSwitches(enabled=False)
    runner = _live(
        bars.iloc[: START + 120], normalization, _AlwaysLong(), None, off, risk=RiskLimits(daily_loss=0.001)
    )
    assert runner.halted
    assert runner.book.qty == 0.0
    closes = [t for i in runner.infos for t in i["trades"] if t.exit_reason == "risk_limit"]
    assert len(closes) == 1
    assert "KILL SWITCH" in runner.status()


def test_sigint_stops_gracefully_with_learning_state_flushed(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    k = len(normalization.columns)
    feed = ReplayFeed(bars, start=START)
    with _manager(tmp_path) as manager:
        runner = LiveRunner(
            feed, MomentumPolicy(k), spec=SPEC, features=FeatureConfig(), normalization=normalization,
            env=SETTINGS, switches=LearningSwitches(), manager=manager,
        )  # fmt: skip
        runner.build()
        sent = False

        async def main() -> None:
            nonlocal sent
            task = asyncio.create_task(runner.run())
            while runner.bars < 150:
                await asyncio.sleep(0)
            os.kill(os.getpid(), signal.SIGINT)
            sent = True
            await task

        asyncio.run(main())
        assert sent
        assert runner.lifecycle is RunnerState.STOPPED
        assert 150 <= runner.bars < END - START
        assert manager.pending_trades == 0
        trades = sum(len(i["trades"]) for i in runner.infos)
        assert manager.describe()["trades"] == trades > 0


def test_runner_with_checkpoints_and_order_log_still_matches_replay(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    """The restart-safe path (orders logged before they are sent, a checkpoint per bar committed with
    the bar's learning) trades and learns exactly like the replay."""
    from agents.runner_state import RunnerStore

    switches = LearningSwitches()
    k = len(normalization.columns)
    with _manager(tmp_path / "replay") as m_replay, _manager(tmp_path / "live") as m_live:
        replay_infos = _replay(bars, normalization, MomentumPolicy(k), m_replay, switches)
        runner = _live(bars, normalization, MomentumPolicy(k), m_live, switches, state_dir=tmp_path / "live")
        _compare(replay_infos, runner)
        assert m_replay.snapshot().to_dict() == m_live.snapshot().to_dict()
        assert m_replay.patterns() == m_live.patterns()
        logged = RunnerStore.with_learning(m_live).orders()
        sent = [o for i in runner.infos for o in i["orders"]]
        assert [o.result for o in logged] == sent
        assert {o.status for o in logged} == {"booked"}
        checkpoint = RunnerStore.with_learning(m_live).load_checkpoint()
        assert checkpoint is not None
        assert checkpoint["done_ns"] == replay_infos[-1]["time_ns"]
        assert checkpoint["book"]["cash"] == runner.book.cash
