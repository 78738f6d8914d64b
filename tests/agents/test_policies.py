"""The algorithm registry: every algorithm builds from typed config, learns a few steps, saves and loads."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from pydantic import ValidationError

from agents.policies import ALGORITHMS, AlgoConfig, AlgoName, build_model, load_model
from envs.errors import ConfigError, StateError


def _env_for(algo: AlgoName) -> gym.Env:
    spec = ALGORITHMS[algo]
    if spec.discrete:
        env: gym.Env = gym.make("CartPole-v1")
        if spec.uses_action_masks:
            from sb3_contrib.common.wrappers import ActionMasker

            env = ActionMasker(env, lambda e: np.array([True, True]))
        return env
    return gym.make("Pendulum-v1")


@pytest.mark.parametrize("algo", list(AlgoName))
def test_every_algorithm_learns_saves_and_loads(algo: AlgoName, tmp_path: Path) -> None:
    config = AlgoConfig(
        algo=algo, n_steps=32, batch_size=16, learning_starts=16, buffer_size=500, net_arch=(16,)
    )
    env = _env_for(algo)
    model = build_model(config, env, seed=3)
    model.learn(64)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    loaded = load_model(algo, tmp_path / "model.zip", env=env)
    again, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, again)
    assert model.policy.net_arch is not None or algo in (AlgoName.DQN, AlgoName.QRDQN)


def test_unknown_algorithm_suggests_the_close_name() -> None:
    with pytest.raises(ValidationError, match="did you mean 'ppo'"):
        AlgoConfig(algo="ppp")


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="learnig_rate"):
        AlgoConfig(learnig_rate=0.1)  # type: ignore[call-arg]


def test_extra_argument_is_checked_against_the_constructor() -> None:
    config = AlgoConfig(algo="ppo", extra={"clip_rnage": 0.1})
    with pytest.raises(ConfigError, match="did you mean 'clip_range'"):
        build_model(config, gym.make("CartPole-v1"))


def test_extra_argument_reaches_the_model() -> None:
    model = build_model(AlgoConfig(algo="ppo", extra={"clip_range": 0.1}), gym.make("CartPole-v1"))
    assert model.clip_range(1.0) == pytest.approx(0.1)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("algo", "env_id"), [("dqn", "Pendulum-v1"), ("sac", "CartPole-v1")])
def test_algorithm_and_action_space_mismatch_is_explained(algo: str, env_id: str) -> None:
    with pytest.raises(ConfigError, match="action space"):
        build_model(AlgoConfig(algo=algo), gym.make(env_id))


def test_loading_a_missing_model_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no model file"):
        load_model("ppo", tmp_path / "nothing.zip")
