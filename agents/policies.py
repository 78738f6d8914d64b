"""Registry of the reinforcement-learning algorithms a policy can be trained with.

Stable-Baselines3 (PPO, A2C, DQN, SAC, TD3) and sb3-contrib (MaskablePPO, RecurrentPPO, QR-DQN), each
built from one typed, frozen :class:`AlgoConfig`. Torch and the algorithm libraries are imported only
when a model is built or loaded, so importing this module stays cheap.

Defaults suit a small CPU machine: one torch thread per process (small MLPs gain nothing from more and
fight the environments for the cores), a compact network, short rollouts. Everything is overridable.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from envs.errors import ConfigError, StateError, did_you_mean

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

__all__ = ["ALGORITHMS", "AlgoConfig", "AlgoName", "AlgoSpec", "Policy", "build_model", "load_model"]


class Policy(Protocol):
    """What evaluation and the live runner ask for a decision: SB3's ``predict`` (models, baselines,
    anything with the same call)."""

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]: ...


class AlgoName(StrEnum):
    """Algorithms known to the registry (the names used in configs and on the command line)."""

    PPO = "ppo"
    A2C = "a2c"
    DQN = "dqn"
    SAC = "sac"
    TD3 = "td3"
    MASKABLE_PPO = "maskable_ppo"
    RECURRENT_PPO = "recurrent_ppo"
    QRDQN = "qrdqn"


@dataclass(frozen=True, slots=True)
class AlgoSpec:
    """How to build one algorithm and what it can act on."""

    name: AlgoName
    import_path: str  # "module:Class"
    default_policy: str
    discrete: bool  # supports Discrete action spaces
    continuous: bool  # supports Box action spaces
    on_policy: bool
    uses_action_masks: bool = False
    recurrent: bool = False

    def load_class(self) -> type[BaseAlgorithm]:
        module, _, cls = self.import_path.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
        except ImportError as exc:  # pragma: no cover - both libraries are hard dependencies
            raise ConfigError(
                f"algorithm {self.name.value!r} needs {module.split('.')[0]}, which is not installed",
                fix="pip install stable-baselines3 sb3-contrib",
            ) from exc


ALGORITHMS: Mapping[AlgoName, AlgoSpec] = {
    spec.name: spec
    for spec in (
        AlgoSpec(AlgoName.PPO, "stable_baselines3:PPO", "MlpPolicy", True, True, True),
        AlgoSpec(AlgoName.A2C, "stable_baselines3:A2C", "MlpPolicy", True, True, True),
        AlgoSpec(AlgoName.DQN, "stable_baselines3:DQN", "MlpPolicy", True, False, False),
        AlgoSpec(AlgoName.SAC, "stable_baselines3:SAC", "MlpPolicy", False, True, False),
        AlgoSpec(AlgoName.TD3, "stable_baselines3:TD3", "MlpPolicy", False, True, False),
        AlgoSpec(
            AlgoName.MASKABLE_PPO,
            "sb3_contrib:MaskablePPO",
            "MlpPolicy",
            True,
            False,
            True,
            uses_action_masks=True,
        ),
        AlgoSpec(
            AlgoName.RECURRENT_PPO,
            "sb3_contrib:RecurrentPPO",
            "MlpLstmPolicy",
            True,
            True,
            True,
            recurrent=True,
        ),
        AlgoSpec(AlgoName.QRDQN, "sb3_contrib:QRDQN", "MlpPolicy", True, False, False),
    )
}

ExtraValue = float | int | str | bool


class AlgoConfig(BaseModel):
    """Typed configuration of one algorithm. Fields left ``None`` take the algorithm's own default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    algo: AlgoName = Field(AlgoName.PPO, description="Which algorithm to train.")
    policy: str | None = Field(
        None, description="SB3 policy name; default MlpPolicy (MlpLstmPolicy for recurrent)."
    )
    learning_rate: float = Field(3e-4, gt=0, description="Optimizer step size.")
    gamma: float = Field(0.99, gt=0, le=1, description="Discount factor.")
    net_arch: tuple[int, ...] = Field(
        (64, 64), description="Hidden layer sizes of the policy and value networks."
    )
    n_steps: int | None = Field(256, gt=0, description="Rollout length per environment (on-policy only).")
    batch_size: int | None = Field(64, gt=0, description="Minibatch size.")
    n_epochs: int | None = Field(None, gt=0, description="Optimization epochs per rollout (PPO family only).")
    ent_coef: float | None = Field(None, ge=0, description="Entropy bonus (on-policy only).")
    buffer_size: int | None = Field(50_000, gt=0, description="Replay buffer size (off-policy only).")
    learning_starts: int | None = Field(
        500, ge=0, description="Steps collected before learning (off-policy only)."
    )
    torch_threads: int = Field(1, ge=1, description="torch.set_num_threads for this process.")
    device: str = Field("cpu", description="Torch device; the project targets the CPU.")
    extra: dict[str, ExtraValue] = Field(
        default_factory=dict, description="Other constructor arguments of the algorithm, by name (checked)."
    )

    @field_validator("algo", mode="before")
    @classmethod
    def _known_algo(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() not in {a.value for a in AlgoName}:
            names = [a.value for a in AlgoName]
            raise ValueError(
                f"unknown algorithm {value!r}{did_you_mean(value.lower(), names)}; choose from {names}"
            )
        return value.lower() if isinstance(value, str) else value

    @property
    def spec(self) -> AlgoSpec:
        return ALGORITHMS[self.algo]

    def constructor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the algorithm's constructor (only those it accepts)."""
        spec = self.spec
        cls = spec.load_class()
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env"}
        candidates: dict[str, Any] = {
            "learning_rate": self.learning_rate,
            "gamma": self.gamma,
            "n_steps": self.n_steps,
            "batch_size": self.batch_size,
            "n_epochs": self.n_epochs,
            "ent_coef": self.ent_coef,
            "buffer_size": self.buffer_size,
            "learning_starts": self.learning_starts,
        }
        if not spec.on_policy:
            # Off-policy algorithms read n_steps as n-step returns, a different knob: not ours to set.
            candidates["n_steps"] = None
        kwargs = {k: v for k, v in candidates.items() if v is not None and k in accepted}
        for key, value in self.extra.items():
            if key not in accepted:
                raise ConfigError(
                    f"{spec.import_path.split(':')[1]} has no argument {key!r}{did_you_mean(key, accepted)}",
                    where="algo.extra",
                    fix=f"use one of {sorted(accepted)}",
                )
            kwargs[key] = value
        kwargs["policy_kwargs"] = {"net_arch": list(self.net_arch)}
        kwargs["device"] = self.device
        return kwargs


def check_action_space(spec: AlgoSpec, action_space: gym.Space[Any]) -> None:
    """Raise :class:`ConfigError` when ``spec`` cannot act on ``action_space``."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete) and not spec.discrete:
        raise ConfigError(
            f"{spec.name.value} needs a continuous (Box) action space; the env's actions are discrete",
            where="algo",
            fix="set env.actions: continuous, or choose ppo, a2c, dqn, qrdqn or maskable_ppo",
        )
    if isinstance(action_space, spaces.Box) and not spec.continuous:
        raise ConfigError(
            f"{spec.name.value} needs a discrete action space, but the environment's actions are continuous",
            where="algo",
            fix="set env.actions to target positions such as [-1, 0, 1], or choose ppo, a2c, sac or td3",
        )


def build_model(
    config: AlgoConfig,
    env: gym.Env[Any, Any] | VecEnv,
    *,
    seed: int | None = None,
    tensorboard_log: str | Path | None = None,
    verbose: int = 0,
) -> BaseAlgorithm:
    """Build an untrained model of ``config.algo`` on ``env``."""
    import torch

    spec = config.spec
    check_action_space(spec, env.action_space)
    torch.set_num_threads(config.torch_threads)
    cls = spec.load_class()
    return cls(
        config.policy or spec.default_policy,
        env,
        seed=seed,
        tensorboard_log=str(tensorboard_log) if tensorboard_log is not None else None,
        verbose=verbose,
        **config.constructor_kwargs(),
    )


def load_model(
    algo: AlgoName | str,
    path: str | Path,
    *,
    env: gym.Env[Any, Any] | VecEnv | None = None,
    device: str = "cpu",
) -> BaseAlgorithm:
    """Load a saved model. SB3 model files are pickles: load only files you trust (see bundles)."""
    name = AlgoName(algo)
    file = Path(path)
    if not file.exists() and not file.with_suffix(".zip").exists():
        raise StateError(f"no model file at {file}", fix="check the run directory or train a model first")
    cls = ALGORITHMS[name].load_class()
    return cls.load(str(file), env=env, device=device)
