"""Baselines: hand-checked SMA crossover positions, causality, action mapping and the learned signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.baselines import (
    BuyAndHold,
    Flat,
    LearnedWeightsSignal,
    RandomPolicy,
    SmaCrossover,
    make_baseline,
)
from envs.errors import ConfigError
from envs.replay import MarketReplayEnv
from learning.state import LearnedState

N_BARS = 400
START = "2024-01-01"


def bars(close: np.ndarray) -> pd.DataFrame:
    index = pd.date_range(START, periods=len(close), freq="1h", tz="UTC", name="timestamp")
    close = np.asarray(close, dtype=np.float64)
    return pd.DataFrame(
        {
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": np.full(len(close), 1000.0),
        },
        index=index,
    )


def wave(n: int = N_BARS) -> np.ndarray:
    t = np.arange(n)
    return 100.0 + 10.0 * np.sin(t / 25.0)


def make_env(close: np.ndarray, **kwargs: object) -> MarketReplayEnv:
    return MarketReplayEnv(data=bars(close), symbol="TEST/USD", window=4, **kwargs)  # type: ignore[arg-type]


def test_sma_crossover_matches_a_hand_computation() -> None:
    close = np.array([10.0, 11, 12, 13, 12, 11, 10, 9, 10, 12], dtype=np.float64)
    env = make_env(np.concatenate([np.full(N_BARS - len(close), 10.0), close]))
    policy = SmaCrossover(env, fast=2, slow=4)
    offset = N_BARS - len(close)
    # fast = mean of the last 2 closes, slow = mean of the last 4, at each row (inclusive).
    expected = {
        offset + 3: 1.0,  # fast 12.5 > slow 11.5
        offset + 4: 1.0,  # fast 12.5 > slow 12.0
        offset + 5: 0.0,  # fast 11.5 < slow 12.0
        offset + 6: 0.0,  # fast 10.5 < slow 11.5
        offset + 8: 0.0,  # fast 9.5 < slow 10.0
        offset + 9: 1.0,  # fast 11.0 > slow 10.25
    }
    for row, target in expected.items():
        assert policy.target(row) == target, row


def test_sma_crossover_goes_short_only_when_asked() -> None:
    close = np.concatenate([np.full(50, 10.0), np.linspace(10.0, 5.0, 50)])
    env = make_env(np.concatenate([np.full(N_BARS - 100, 10.0), close]))
    assert SmaCrossover(env, fast=2, slow=5).target(N_BARS - 1) == 0.0
    assert SmaCrossover(env, fast=2, slow=5, short=True).target(N_BARS - 1) == -1.0


def test_sma_crossover_is_flat_before_enough_bars() -> None:
    env = make_env(wave())
    assert SmaCrossover(env, fast=3, slow=30).target(10) == 0.0


def test_sma_crossover_is_causal_perturbing_the_future_changes_nothing_up_to_t() -> None:
    close = wave()
    t = 250
    future = close.copy()
    future[t + 1 :] = future[t + 1 :] * np.random.default_rng(3).uniform(0.5, 1.5, N_BARS - t - 1)
    a = SmaCrossover(make_env(close), fast=5, slow=20)
    b = SmaCrossover(make_env(future), fast=5, slow=20)
    assert [a.target(r) for r in range(t + 1)] == [b.target(r) for r in range(t + 1)]
    # ...and the perturbation is visible after t, so the comparison can fail.
    assert [a.target(r) for r in range(t + 1, N_BARS)] != [b.target(r) for r in range(t + 1, N_BARS)]


def test_sma_crossover_positions_in_an_episode_follow_its_targets() -> None:
    env = make_env(wave())
    policy = SmaCrossover(env, fast=5, slow=20)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        row = env.row
        action, _ = policy.predict(obs)
        assert env.target_of(action) == policy.target(row)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert info["step"] > 0


def test_rejects_bad_sma_lengths() -> None:
    with pytest.raises(ConfigError, match="fast < slow"):
        SmaCrossover(make_env(wave()), fast=20, slow=5)


def test_buy_and_hold_and_flat_targets_map_to_the_discrete_actions() -> None:
    env = make_env(wave())  # actions (-1, 0, 1)
    obs, _ = env.reset(seed=0)
    assert int(BuyAndHold(env).predict(obs)[0]) == 2
    assert int(Flat(env).predict(obs)[0]) == 1


def test_buy_and_hold_holds_a_long_position_through_an_episode() -> None:
    env = make_env(wave())
    policy = BuyAndHold(env)
    obs, _ = env.reset(seed=0)
    positions = []
    for _ in range(20):
        action, _ = policy.predict(obs)
        obs, _, _, _, info = env.step(action)
        positions.append(info["position"])
    assert all(p > 0 for p in positions)


def test_continuous_action_is_the_target_exposure() -> None:
    env = make_env(wave(), actions="continuous")
    obs, _ = env.reset(seed=0)
    action, _ = BuyAndHold(env).predict(obs)
    assert action.shape == (1,)
    assert action.dtype == np.float32
    assert float(action[0]) == 1.0


def test_random_policy_is_seeded() -> None:
    env = make_env(wave())
    obs, _ = env.reset(seed=0)
    a = [int(RandomPolicy(env, seed=7).predict(obs)[0]) for _ in range(1)]
    p1, p2, p3 = RandomPolicy(env, seed=7), RandomPolicy(env, seed=7), RandomPolicy(env, seed=8)
    s1 = [int(p1.predict(obs)[0]) for _ in range(50)]
    s2 = [int(p2.predict(obs)[0]) for _ in range(50)]
    s3 = [int(p3.predict(obs)[0]) for _ in range(50)]
    assert s1 == s2 != s3
    assert set(s1) == {0, 1, 2}
    assert a[0] == s1[0]


def test_learned_weights_signal_goes_long_only_when_the_weights_favour_the_bar() -> None:
    env = make_env(wave())
    _obs, _ = env.reset(seed=0)
    row = env.row
    groups = env.market_data.snapshot(row)
    features = {k: v for group in groups.values() for k, v in group.items()}
    neutral = LearnedState(version=0, time_ns=0)
    factors = neutral.discretizer.factors(features)
    favoured = LearnedState(version=1, time_ns=0, strategy_weights=dict.fromkeys(factors, 2.0))
    disfavoured = LearnedState(version=1, time_ns=0, strategy_weights=dict.fromkeys(factors, 0.5))
    assert LearnedWeightsSignal(env, neutral).target(row) == 0.0  # nothing learned: signal exactly 1
    assert LearnedWeightsSignal(env, favoured).signal(row) == pytest.approx(2.0)
    assert LearnedWeightsSignal(env, favoured).target(row) == 1.0
    assert LearnedWeightsSignal(env, disfavoured).target(row) == 0.0
    assert LearnedWeightsSignal(env, favoured, threshold=3.0).target(row) == 0.0


def test_make_baseline_by_name() -> None:
    env = make_env(wave())
    assert isinstance(make_baseline("sma_crossover", env), SmaCrossover)
    assert make_baseline("random", env, seed=3).seed == 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="did you mean 'flat'"):
        make_baseline("flatt", env)
    with pytest.raises(ConfigError, match="needs a learned state"):
        make_baseline("learned_weights", env)


def test_baseline_refuses_a_non_replay_env() -> None:
    import gymnasium as gym

    with pytest.raises(ConfigError, match="needs a MarketReplayEnv"):
        Flat(gym.make("CartPole-v1"))
