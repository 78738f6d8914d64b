"""NumPy export of SB3 policies: same actions as model.predict, same backtest, refusals with a pointer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("stable_baselines3")

import gymnasium as gym
import torch
from sb3_contrib import QRDQN, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from backtests.fast_policy import export_policy, run_policy, run_policy_fast
from envs.errors import ConfigError
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from tests.envs.test_replay import make_bars

SPEC = MarketSpec("TEST/USD", taker_fee=0.001, spread_bps=4.0, slippage_bps=1.0)
N_RANDOM = 3_000


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return make_bars(1_200, seed=5)


def make_env(bars: pd.DataFrame, **kw: Any) -> MarketReplayEnv:
    kw.setdefault("window", 8)
    return MarketReplayEnv(data=bars, market=SPEC, **kw)


def _model(cls: type, env: MarketReplayEnv, **kw: Any) -> Any:
    model = cls("MlpPolicy", env, seed=0, device="cpu", **kw)
    if cls in (PPO, A2C):
        model.learn(64 if cls is PPO else 20)  # trained weights, not just the initialization
    return model


CASES: dict[str, tuple[type, dict[str, Any], dict[str, Any]]] = {
    "ppo_discrete": (PPO, {}, {"n_steps": 64, "batch_size": 32, "n_epochs": 1}),
    "ppo_continuous": (PPO, {"actions": "continuous"}, {"n_steps": 64, "batch_size": 32, "n_epochs": 1}),
    "a2c_relu": (
        A2C,
        {},
        {"n_steps": 5, "policy_kwargs": {"net_arch": [32, 16], "activation_fn": torch.nn.ReLU}},
    ),
    "dqn": (DQN, {}, {"learning_starts": 0}),
    "qrdqn": (QRDQN, {}, {"learning_starts": 0, "policy_kwargs": {"n_quantiles": 7}}),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, bars: pd.DataFrame) -> tuple[str, Any, MarketReplayEnv]:
    cls, env_kw, model_kw = CASES[request.param]
    env = make_env(bars, **env_kw)
    return request.param, _model(cls, env, **model_kw), env


def _assert_same_actions(model: Any, obs: np.ndarray) -> None:
    pol = export_policy(model)
    want, _ = model.predict(obs, deterministic=True)
    got, _ = pol.predict(obs)
    if pol.discrete:
        # float32 sums in a different order can only flip an argmax between near-equal outputs.
        out = torch.as_tensor(pol.outputs(obs))
        top2 = torch.topk(out, 2, dim=1).values
        decisive = (top2[:, 0] - top2[:, 1]).numpy() > 1e-5
        assert np.array_equal(got[decisive], want[decisive])
        assert decisive.mean() > 0.99
    else:
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_numpy_export_predicts_like_sb3_on_random_observations(
    case: tuple[str, Any, MarketReplayEnv],
) -> None:
    _, model, env = case
    rng = np.random.default_rng(1)
    high = float(env.observation_space.high[0])  # type: ignore[attr-defined]
    obs = rng.uniform(-high, high, (N_RANDOM, env.observation_space.shape[0])).astype(np.float32)  # type: ignore[index]
    _assert_same_actions(model, obs)
    single, _ = export_policy(model).predict(obs[0])
    assert np.shape(single) == np.shape(model.predict(obs[0], deterministic=True)[0])


def test_numpy_export_predicts_like_sb3_on_env_observations(case: tuple[str, Any, MarketReplayEnv]) -> None:
    _, model, env = case
    obs, _ = env.reset(seed=0)
    rows = [obs]
    rng = np.random.default_rng(2)
    for _ in range(300):
        action = env.action_space.sample() if rng.random() < 0.5 else np.int64(1)
        obs, _, terminated, truncated, _ = env.step(action)
        rows.append(obs)
        if terminated or truncated:
            break
    _assert_same_actions(model, np.stack(rows))


def test_fast_backtest_equals_the_predict_loop(case: tuple[str, Any, MarketReplayEnv]) -> None:
    name, model, env = case
    slow = run_policy(model, env, seed=0)
    fast = run_policy_fast(model, env, seed=0)
    assert fast.meta["engine"] == "numpy"
    assert slow.meta["engine"] == "predict"
    assert len(fast.curve) == len(slow.curve) > 800
    if name == "ppo_continuous":
        # Continuous targets agree to float32 rounding (~1e-8), and so do the fills they size.
        np.testing.assert_allclose(fast.curve["target"], slow.curve["target"], atol=1e-5)
        np.testing.assert_allclose(fast.equity, slow.equity, rtol=1e-6)
        return
    np.testing.assert_array_equal(fast.curve["target"], slow.curve["target"])
    np.testing.assert_allclose(fast.equity, slow.equity, rtol=1e-12)
    pd.testing.assert_frame_equal(fast.trades, slow.trades)
    assert list(fast.orders["order_id"]) == list(slow.orders["order_id"])
    assert len(fast.trades) > 0


def test_fast_backtest_reads_the_env_span(bars: pd.DataFrame) -> None:
    env = make_env(bars, end=900)
    model = _model(PPO, env, n_steps=64, batch_size=32, n_epochs=1)
    res = run_policy_fast(model, env, start=500, calendar="24/7")
    assert res.meta["start_row"] == 500
    assert res.metrics.calendar == "24/7"  # overridden: these weekday minute bars would read as fx
    assert res.metrics.periods_per_year == 525_600.0
    assert res.curve.index[0] == bars.index[500]
    assert res.curve.index[-1] == bars.index[899]
    np.testing.assert_allclose(res.equity, run_policy(model, env, start=500).equity, rtol=1e-12)


@pytest.mark.parametrize(
    ("cls", "policy", "kw", "match"),
    [
        (RecurrentPPO, "MlpLstmPolicy", {"n_steps": 16, "batch_size": 16}, "recurrent"),
        (SAC, "MlpPolicy", {"learning_starts": 0}, "PPO, A2C, DQN and QR-DQN"),
        (PPO, "MlpPolicy", {"use_sde": True}, "gSDE"),
    ],
)
def test_unexportable_policies_are_refused_with_the_slow_path(
    bars: pd.DataFrame, cls: type, policy: str, kw: dict[str, Any], match: str
) -> None:
    env = make_env(bars, actions="continuous") if cls is not RecurrentPPO else make_env(bars)
    model = cls(policy, env, seed=0, device="cpu", **kw)
    with pytest.raises(ConfigError, match=match) as err:
        export_policy(model)
    assert "run_policy(model, env)" in str(err.value)


class _Doubler(BaseFeaturesExtractor):
    """A custom feature extractor (anything but SB3's FlattenExtractor is refused)."""

    def __init__(self, observation_space: gym.spaces.Box) -> None:
        super().__init__(observation_space, int(observation_space.shape[0]))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations * 2.0


def test_custom_feature_extractors_are_refused(bars: pd.DataFrame) -> None:
    model = PPO(
        "MlpPolicy",
        make_env(bars),
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_class": _Doubler},
    )
    with pytest.raises(ConfigError, match="custom feature extractor _Doubler"):
        export_policy(model)


def test_custom_layers_are_refused(bars: pd.DataFrame) -> None:
    env = make_env(bars)
    model = PPO("MlpPolicy", env, seed=0, device="cpu")
    model.policy.mlp_extractor.policy_net.insert(1, torch.nn.LayerNorm(64))
    with pytest.raises(ConfigError, match="LayerNorm"):
        export_policy(model)


def test_a_policy_for_other_observations_is_refused(bars: pd.DataFrame) -> None:
    model = PPO("MlpPolicy", make_env(bars, window=4), seed=0, device="cpu")
    with pytest.raises(ConfigError, match="reads 75 values, the env observes 147"):
        run_policy_fast(model, make_env(bars))
