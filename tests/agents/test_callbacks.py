"""The main-process side: LearningCallback feeds the manager from SB3 training and pushes its snapshots.

Small SB3 budgets (a few hundred steps, one torch thread through ``build_model``); DummyVecEnv and
SubprocVecEnv both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.callbacks import EpisodeTracker, LearningCallback, veto_would_have_won
from agents.experience_clock import ExperiencedMarketClock
from agents.policies import AlgoConfig, build_model
from agents.switches import LearningSwitches
from agents.wrappers import wrap_env
from envs.clock import MINUTE_NS
from envs.data import generate_synthetic
from envs.errors import ConfigError
from envs.events import ErrorKind, OrderResult, OrderStatus, PositionSide, Side, TradeResult
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from learning.discretize import Discretizer
from learning.error_patterns import Resolution
from learning.manager import UniversalLearningManager
from learning.records import AvoidanceRule, LearnedMinimum
from learning.state import LearnedState

SYMBOL = "BTC/USDT"
SPEC = MarketSpec(SYMBOL, taker_fee=0.001, min_notional=100.0, qty_step=1e-5, min_qty=1e-5)
FAULTS = {"rate_limit": 0.05, "timeout": 0.05}
COMMON_FACTOR = "macd_cross=zero"  # true on about nine bars in ten of this synthetic market


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_synthetic([SYMBOL], 700, 11).frames[SYMBOL]


def make_env(frame: pd.DataFrame, switches: LearningSwitches, **kw: Any) -> gym.Env[Any, Any]:
    kw.setdefault("market", SPEC)
    kw.setdefault("window", 4)
    kw.setdefault("episode_length", 100)
    return wrap_env(MarketReplayEnv(data=frame, **kw), switches)


def small_orders(frame: pd.DataFrame, switches: LearningSwitches, **kw: Any) -> gym.Env[Any, Any]:
    """Long-only entries of 8% of 1000 USDT: about 80 USDT, below the 100 USDT minimum notional."""
    return make_env(frame, switches, initial_cash=1000.0, actions=(0.0, 0.08), allow_short=False, **kw)


def vec(factories: list[Callable[[], gym.Env[Any, Any]]], kind: str = "dummy") -> VecEnv:
    if kind == "dummy":
        return DummyVecEnv(factories)
    return SubprocVecEnv(factories, start_method="fork")


def train(venv: VecEnv, callback: BaseCallback, steps: int = 256, algo: str = "ppo") -> None:
    config = AlgoConfig.model_validate(
        {"algo": algo, "n_steps": 64, "batch_size": 32, "n_epochs": 2, "net_arch": (16,)}
    )
    build_model(config, venv, seed=0).learn(steps, callback=callback)


class InfoLog(BaseCallback):
    """Records what the envs reported (and the learning callback's clock) at every step."""

    def __init__(self, learning: LearningCallback | None = None) -> None:
        super().__init__()
        self.learning = learning
        self.min_rejections: list[int] = []
        self.trades: list[TradeResult] = []
        self.pacer_times: list[int] = []
        self.clock: list[int] = []

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        self.min_rejections.append(
            sum(o.kind is ErrorKind.MIN_NOTIONAL for info in infos for o in info["rejections"])
        )
        self.trades.extend(t for info in infos for t in info["trades"])
        self.pacer_times.append(int(infos[0]["time_ns"]))
        if self.learning is not None:
            self.clock.append(self.learning.clock.now_ns())
        return True


def seed_rule(manager: UniversalLearningManager, factor_values: dict[str, float], at_ns: int) -> str:
    """Teach the manager an avoidance rule on the factor of ``factor_values``, from made-up trades."""
    other = {name: 1.0 for name in factor_values}
    for n in range(20):
        loser = n % 2 == 0
        manager.learn_from_trade(
            TradeResult(
                trade_id=f"seed{n}",
                symbol=SYMBOL,
                side=PositionSide.LONG,
                entry_time_ns=at_ns - (n + 2) * MINUTE_NS,
                exit_time_ns=at_ns - (n + 1) * MINUTE_NS,
                entry_price=100.0,
                exit_price=99.0 if loser else 101.0,
                quantity=1.0,
                fees=0.0,
                pnl=-1.0 if loser else 1.0,
                return_pct=-0.01 if loser else 0.01,
                duration_bars=1,
                exit_reason="signal",
                entry_signals=factor_values if loser else other,
            )
        )
    (rule,) = manager.analyze_failure_patterns(at_ns)
    return rule.rule_id


# --- the pieces --------------------------------------------------------------------------------------


def test_the_experienced_clock_reads_bar_time_for_one_sequential_replay() -> None:
    clock = ExperiencedMarketClock()
    times = [1_000 + 60 * k for k in range(5)] + [1_000 + 60 * 4 + 3_600]  # a gap at the end
    assert [clock.observe(t) for t in times] == times
    assert clock.bar_ns == 60


def test_the_experienced_clock_steps_one_bar_over_resets_and_backward_jumps() -> None:
    clock = ExperiencedMarketClock(floor_ns=500)
    assert clock.now_ns() == 500
    assert clock.observe(100) == 500  # a resumed manager's later time is the floor
    assert clock.observe(160) == 560
    assert clock.observe(220) == 620
    assert clock.observe(40) == 680  # backwards (another episode): one bar
    assert clock.observe(10_000, new_episode=True) == 740  # a forward reset jump: one bar too
    assert clock.observe(10_060) == 800


def test_the_experienced_clock_never_goes_backwards() -> None:
    rng = np.random.default_rng(0)
    clock = ExperiencedMarketClock()
    readings = [
        clock.observe(int(t), new_episode=bool(r)) for t, r in rng.integers(0, 10_000, (500, 2)) % [10_000, 2]
    ]
    assert np.all(np.diff(readings) >= 0)


def test_episode_tracker_metrics_match_a_hand_computation() -> None:
    fill = OrderResult("o1", SYMBOL, Side.BUY, 0, 1.0, 100.0, OrderStatus.FILLED, 1.0, 0.1)
    refused = OrderResult(
        "o2", SYMBOL, Side.BUY, 0, 1e-6, 100.0, OrderStatus.REJECTED, kind=ErrorKind.MIN_NOTIONAL
    )
    tracker = EpisodeTracker(100.0)
    equities = [110.0, 99.0, 120.0]
    steps: list[dict[str, Any]] = [
        {"fills": (fill,), "rejections": (), "errors": ()},
        {"fills": (), "rejections": (refused,), "errors": (refused,)},
        {"fills": (fill,), "rejections": (), "errors": ()},
    ]
    for equity, step in zip(equities, steps, strict=True):
        tracker.update({"equity": equity, "trades": (), **step})
    returns = np.diff([100.0, *equities]) / [100.0, *equities[:-1]]
    metrics = tracker.metrics()
    assert metrics["equity"] == 120.0
    assert metrics["return"] == pytest.approx(0.2)
    assert metrics["max_drawdown"] == pytest.approx(0.1)
    assert metrics["sharpe"] == pytest.approx(returns.mean() / returns.std(ddof=1))
    assert metrics["turnover"] == pytest.approx(2.0)  # 200 traded on 100 of starting equity
    assert metrics["fees"] == pytest.approx(0.2)
    assert (metrics["rejections"], metrics["errors"], metrics["length"]) == (1.0, 1.0, 3.0)


def test_episode_tracker_without_a_reset_equity_starts_from_the_first_step() -> None:
    tracker = EpisodeTracker(None)
    for equity in (50.0, 25.0):
        tracker.update({"equity": equity})
    metrics = tracker.metrics()
    assert metrics["return"] == pytest.approx(-0.5)
    assert metrics["max_drawdown"] == pytest.approx(0.5)
    assert metrics["sharpe"] == 0.0  # one return: no spread to divide by


def test_a_vetoed_entry_would_have_won_only_beyond_its_costs() -> None:
    assert veto_would_have_won(1, 100.0, 101.0, 0.004)
    assert not veto_would_have_won(1, 100.0, 100.3, 0.004)
    assert veto_would_have_won(-1, 100.0, 99.0, 0.004)
    assert not veto_would_have_won(-1, 100.0, 101.0, 0.004)
    assert not veto_would_have_won(1, 100.0, math.nan, 0.0)


def test_callback_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a learning manager"):
        LearningCallback(None, LearningSwitches())
    with pytest.raises(ConfigError, match="veto_horizon"):
        LearningCallback(None, LearningSwitches(enabled=False), veto_horizon=0)
    with UniversalLearningManager(tmp_path) as manager, pytest.raises(ConfigError, match="state="):
        LearningCallback(manager, LearningSwitches(), state=manager.snapshot())
    with (
        UniversalLearningManager(tmp_path, read_only=True) as frozen,
        pytest.raises(ConfigError, match="read-only"),
    ):
        LearningCallback(frozen, LearningSwitches())


def test_unwrapped_envs_are_refused_at_training_start(frame: pd.DataFrame, tmp_path: Path) -> None:
    off = LearningSwitches(enabled=False)
    venv = vec([lambda: make_env(frame, off)])
    with UniversalLearningManager(tmp_path) as manager, pytest.raises(ConfigError, match="wrap_env"):
        train(venv, LearningCallback(manager, LearningSwitches()), steps=64)


# --- feeding the manager ------------------------------------------------------------------------


def test_one_sequential_replay_feeds_the_manager_at_its_own_bar_times(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    switches = LearningSwitches()
    venv = vec([lambda: make_env(frame, switches, episode_length=None, faults=FAULTS)])
    with UniversalLearningManager(tmp_path) as manager:
        learning = LearningCallback(manager, switches)
        log = InfoLog(learning)
        train(venv, CallbackList([learning, log]), steps=256)
        assert log.clock == log.pacer_times  # the experienced clock is the bar time
        assert manager.clock.now_ns() == log.pacer_times[-1]
        assert log.trades
        # Trades reach the journal with their own times: nothing re-timed.
        assert max(p.last_seen_ns for p in manager.patterns()) == max(t.exit_time_ns for t in log.trades)


def test_a_second_learn_call_continues_the_managers_market_time(frame: pd.DataFrame, tmp_path: Path) -> None:
    switches = LearningSwitches()
    venv = vec([lambda: make_env(frame, switches, episode_length=50)])
    config = AlgoConfig.model_validate({"n_steps": 64, "batch_size": 32, "n_epochs": 1, "net_arch": (16,)})
    model = build_model(config, venv, seed=0)
    readings: list[int] = []
    with UniversalLearningManager(tmp_path) as manager:
        for fresh in (True, False):
            learning = LearningCallback(manager, switches)
            log = InfoLog(learning)
            model.learn(128, callback=CallbackList([learning, log]), reset_num_timesteps=fresh)
            readings += log.clock
            assert manager.clock.now_ns() == readings[-1]
    assert np.all(np.diff(readings) >= 0)
    assert len(readings) == 256


@pytest.mark.parametrize("kind", ["dummy", "subproc"])
def test_parallel_envs_feed_the_manager_and_receive_its_snapshots(
    frame: pd.DataFrame, tmp_path: Path, kind: str
) -> None:
    switches = LearningSwitches()
    venv = vec([lambda: small_orders(frame, switches, faults=FAULTS) for _ in range(2)], kind)
    try:
        with UniversalLearningManager(tmp_path) as manager:
            learning = LearningCallback(manager, switches)
            log = InfoLog(learning)
            train(venv, CallbackList([learning, log]), steps=384)
            counts = learning.counts
            assert counts["trades_fed"] == len(log.trades) == manager.describe()["trades"] > 0
            assert counts["errors_fed"] > 0
            assert counts["resolutions_recorded"] > 0
            assert counts["snapshot_pushes"] >= 2
            assert venv.get_attr("learned_version") == [manager.version, manager.version]
            assert SYMBOL in venv.get_attr("learned_state")[1].minimums
            # One monotonic timeline, paced by env 0, with every event re-timed onto it.
            assert np.all(np.diff(log.clock) >= 0)
            assert log.clock[-1] > log.clock[0]
            assert max(p.last_seen_ns for p in manager.patterns()) <= learning.clock.now_ns()
            assert learning.episodes  # episodes of 100 bars finished
    finally:
        venv.close()


def test_rule_vetoes_are_recorded_and_their_counterfactuals_judged(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    switches = LearningSwitches()
    start = int(frame.index[0].value)
    venv = vec([lambda: make_env(frame, switches) for _ in range(2)])
    with UniversalLearningManager(tmp_path) as manager:
        rule_id = seed_rule(manager, {"macd_cross": 0.0}, start)
        assert rule_id == f"avoid:{COMMON_FACTOR}"
        learning = LearningCallback(manager, switches, veto_horizon=3)
        train(venv, learning, steps=256)
        rule = next(r for r in manager.rules() if r.rule_id == rule_id)
        assert rule.vetoes == learning.counts["vetoed_entries"] > 0
        assert 0 < rule.judged <= rule.vetoes
        assert learning.counts["veto_outcomes_recorded"] == rule.judged


def test_with_vetoes_off_a_known_rule_vetoes_nothing(frame: pd.DataFrame, tmp_path: Path) -> None:
    switches = LearningSwitches(vetoes=False)
    venv = vec([lambda: make_env(frame, switches)])
    with UniversalLearningManager(tmp_path) as manager:
        rule_id = seed_rule(manager, {"macd_cross": 0.0}, int(frame.index[0].value))
        learning = LearningCallback(manager, switches)
        train(venv, learning, steps=128)
        rule = next(r for r in manager.rules() if r.rule_id == rule_id)
        assert rule.vetoes == 0
        assert learning.counts["vetoed_entries"] == 0


def test_offline_the_given_snapshot_is_applied_and_nothing_is_learned(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    switches = LearningSwitches(online=False)
    state = LearnedState(
        version=5, time_ns=0, minimums={SYMBOL: LearnedMinimum(SYMBOL, 0.0, 150.0, 150.0, 0, 1, "learned")}
    )
    venv = vec([lambda: small_orders(frame, switches, faults=FAULTS)])
    with UniversalLearningManager(tmp_path) as manager:
        learning = LearningCallback(manager, switches, state=state)
        log = InfoLog()
        train(venv, CallbackList([learning, log]), steps=256)
        assert venv.get_attr("learned_version") == [5]
        assert learning.counts["min_resized_orders"] > 0
        assert sum(log.min_rejections) == 0
        assert log.trades
        assert manager.describe() == {
            "version": 0,
            "patterns": 0,
            "trades": 0,
            "rules": 0,
            "error_patterns": 0,
            "minimums": 0,
        }


def test_disabled_learning_feeds_nothing_but_still_measures_episodes(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    venv = vec([lambda: small_orders(frame, switches, episode_length=50)])
    assert not venv.has_attr("set_learned_state")  # no wrapper at all
    learning = LearningCallback(None, switches)
    train(venv, learning, steps=128)
    assert len(learning.episodes) >= 2
    assert all(m["length"] == 50.0 and m["equity"] > 0.0 for m in learning.episodes)
    assert not any(learning.counts.values())


# --- the manager learns inside training ----------------------------------------------------------


@pytest.mark.parametrize("learned_minimums", [True, False])
def test_the_manager_learns_the_minimum_inside_training_and_later_orders_pass(
    frame: pd.DataFrame, tmp_path: Path, learned_minimums: bool
) -> None:
    # Vetoes and condition adjustments off: only the minimums differ between the two arms.
    switches = LearningSwitches(vetoes=False, condition_adjustments=False, learned_minimums=learned_minimums)
    venv = vec([lambda: small_orders(frame, switches, faults=FAULTS, episode_length=150) for _ in range(2)])
    with UniversalLearningManager(tmp_path) as manager:
        learning = LearningCallback(manager, switches)
        log = InfoLog()
        train(venv, CallbackList([learning, log]), steps=512)

        minimum = manager.minimums()[SYMBOL]
        assert minimum.source == "learned"
        assert minimum.rejections >= 1
        patterns = {p.kind: p for p in manager.error_patterns()}
        assert ErrorKind.MIN_NOTIONAL in patterns
        assert patterns[ErrorKind.MIN_NOTIONAL].attempts  # resolutions tried and recorded
        assert {ErrorKind.RATE_LIMIT, ErrorKind.TIMEOUT} & set(patterns)
        first, later = np.array_split(np.asarray(log.min_rejections), 2)
        assert first.sum() > 0
        if learned_minimums:
            assert later.sum() == 0
            resize = Resolution.RESIZE_TO_LEARNED_MINIMUM
            assert manager.resolution_success_rate(resolution=resize) > 0.0
        else:
            assert later.sum() > 0

        # The same small orders, replayed with the learned state frozen.
        frozen = LearningSwitches(
            online=False, vetoes=False, condition_adjustments=False, learned_minimums=learned_minimums
        )
        env = small_orders(frame, frozen)
        env.get_wrapper_attr("set_learned_state")(manager.snapshot())
        env.reset(seed=5)
        rejected = filled = 0
        for k in range(80):
            *_, info = env.step(1 if k % 4 < 2 else 0)
            rejected += sum(o.kind is ErrorKind.MIN_NOTIONAL for o in info["rejections"])
            filled += len(info["fills"])
        if learned_minimums:
            assert (rejected, filled > 0) == (0, True)
        else:
            assert (rejected, filled) == (40, 0)  # two entries tried every four bars


# --- MaskablePPO ---------------------------------------------------------------------------------


class MaskAudit(gym.Wrapper[Any, Any, Any, Any]):
    """Remembers the mask in force and the action taken at every step."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.log: list[tuple[np.ndarray, int]] = []

    def step(self, action: Any) -> Any:
        self.log.append((self.env.get_wrapper_attr("action_masks")().copy(), int(action)))
        return self.env.step(action)


def test_maskable_ppo_never_takes_a_masked_action(frame: pd.DataFrame) -> None:
    factor = COMMON_FACTOR
    name, _, label = factor.partition("=")
    assert Discretizer().label(name, 0.0) == label
    rule = AvoidanceRule(
        rule_id=f"avoid:{factor}",
        factor=factor,
        description=factor,
        support=8,
        losers=10,
        occurrence=0.8,
        winner_occurrence=0.2,
        lift=4.0,
        window_days=3.0,
        created_ns=0,
        updated_ns=0,
    )
    switches = LearningSwitches(online=False)
    venv = vec([lambda: MaskAudit(make_env(frame, switches)) for _ in range(2)])
    learning = LearningCallback(None, switches, state=LearnedState(version=1, time_ns=0, rules=(rule,)))
    train(venv, learning, steps=256, algo="maskable_ppo")
    log = [entry for env in venv.envs for entry in env.log]  # type: ignore[attr-defined]
    assert len(log) >= 256
    masks = np.array([mask for mask, _ in log])
    assert (~masks).any(axis=1).mean() > 0.5  # the rule masked entries on most steps
    assert all(mask[action] for mask, action in log)
    assert learning.counts["vetoed_entries"] == 0  # masked entries are never even proposed
