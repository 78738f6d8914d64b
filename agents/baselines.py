"""Rule-based baselines with the prediction interface of an SB3 model.

Every baseline decides a *target position* from the bars the environment has replayed so far and turns
it into the environment's action (the nearest discrete target, or the exposure itself for a continuous
action space), so one evaluation loop runs trained models and baselines alike::

    env = MarketReplayEnv(dataset="eurusd_1h", start=..., end=...)
    policy = SmaCrossover(env, fast=10, slow=30)
    obs, info = env.reset()
    action, _ = policy.predict(obs)

A baseline reads the environment's current row (:attr:`MarketReplayEnv.row`, the bar whose close the
observation describes) and only data up to that row: prices are sliced to ``row + 1`` before anything is
computed, so look-ahead is impossible by construction. One baseline instance serves one (non-vectorized)
environment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt

from envs.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    import gymnasium as gym

    from envs.replay import MarketReplayEnv
    from learning.state import LearnedState

__all__ = [
    "BASELINES",
    "Baseline",
    "BuyAndHold",
    "Flat",
    "LearnedWeightsSignal",
    "RandomPolicy",
    "SmaCrossover",
    "make_baseline",
]

DEFAULT_FAST: Final = 10
DEFAULT_SLOW: Final = 30
DEFAULT_SIGNAL_THRESHOLD: Final = 1.0
"""Strategy weights are normalized to mean 1: above 1 means the current factors beat the average."""
LONG: Final = 1.0
FLAT: Final = 0.0
SHORT: Final = -1.0


class Baseline:
    """A target-position rule acting through an environment's action space.

    Subclasses implement :meth:`target`; :meth:`predict` maps it to an action.

    Args:
        env: the environment the baseline acts in (wrappers allowed; the replay env underneath is read).
    """

    name: str = "baseline"

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        from gymnasium import spaces

        from envs.replay import MarketReplayEnv

        replay = env.unwrapped
        if not isinstance(replay, MarketReplayEnv):
            raise ConfigError(
                f"{type(self).__name__} needs a MarketReplayEnv, got {type(replay).__name__}",
                where="baseline",
                fix="build the baseline on the evaluation env",
            )
        self.env: MarketReplayEnv = replay
        space = env.action_space
        self._continuous = isinstance(space, spaces.Box)
        if self._continuous:
            self._targets: npt.NDArray[np.float64] = np.empty(0)
        else:
            n = int(cast("spaces.Discrete", space).n)
            self._targets = np.array([replay.target_of(np.int64(i)) for i in range(n)], dtype=np.float64)

    def target(self, row: int) -> float:
        """Target exposure in ``[-1, 1]`` at the close of ``row`` (uses bars ``<= row`` only)."""
        raise NotImplementedError

    def action_for(self, target: float) -> Any:
        """The action that targets ``target``: the nearest discrete target, or the exposure itself."""
        if self._continuous:
            return np.array([target], dtype=np.float32)
        return np.int64(int(np.argmin(np.abs(self._targets - target))))

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        """SB3-style prediction for the environment's current row (``observation`` is not needed)."""
        return self.action_for(self.target(self.env.row)), state

    def closes(self, row: int) -> npt.NDArray[np.float64]:
        """Closes of bars ``0..row`` (inclusive): everything a causal rule may read."""
        return self.env.market_data.close[: row + 1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BuyAndHold(Baseline):
    """Always the longest target: buy at the first bar and hold."""

    name = "buy_and_hold"

    def target(self, row: int) -> float:
        return LONG


class Flat(Baseline):
    """Never trades: the cash benchmark (0 return, 0 fees)."""

    name = "flat"

    def target(self, row: int) -> float:
        return FLAT


class RandomPolicy(Baseline):
    """Uniformly random actions from its own seeded generator (the chance benchmark).

    Args:
        env: the environment.
        seed: seed of the generator; the same seed gives the same action sequence.
    """

    name = "random"

    def __init__(self, env: gym.Env[Any, Any], seed: int = 0) -> None:
        super().__init__(env)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def target(self, row: int) -> float:
        if self._continuous:
            return float(self._rng.uniform(SHORT, LONG))
        return float(self._targets[self._rng.integers(len(self._targets))])

    def __repr__(self) -> str:
        return f"RandomPolicy(seed={self.seed})"


class SmaCrossover(Baseline):
    """Long while the fast simple moving average of the close is above the slow one.

    Below it the target is flat, or short with ``short=True``; before ``slow`` bars exist it is flat.

    Args:
        env: the environment.
        fast: bars in the fast average.
        slow: bars in the slow average (> fast).
        short: go short (instead of flat) when the fast average is below the slow one.
    """

    name = "sma_crossover"

    def __init__(
        self, env: gym.Env[Any, Any], fast: int = DEFAULT_FAST, slow: int = DEFAULT_SLOW, short: bool = False
    ) -> None:
        super().__init__(env)
        if isinstance(fast, bool) or isinstance(slow, bool) or not 1 <= fast < slow:
            raise ConfigError(
                f"fast={fast!r}, slow={slow!r}: need 1 <= fast < slow",
                where="SmaCrossover",
                fix="e.g. fast=10, slow=30",
            )
        self.fast = fast
        self.slow = slow
        self.short = short

    def target(self, row: int) -> float:
        closes = self.closes(row)
        if len(closes) < self.slow:
            return FLAT
        fast = float(closes[-self.fast :].mean())
        slow = float(closes[-self.slow :].mean())
        if fast > slow:
            return LONG
        return SHORT if self.short and fast < slow else FLAT

    def __repr__(self) -> str:
        return f"SmaCrossover(fast={self.fast}, slow={self.slow}, short={self.short})"


class LearnedWeightsSignal(Baseline):
    """Long when the evolved strategy weights favour the current factors, else flat.

    At each bar the raw features of the row (entry signals, market conditions, timeframe alignment,
    volume profile) are discretized into factors, and :meth:`LearnedState.signal_weight` averages the
    learned weights of those factors; above ``threshold`` the target is long. With no learned weights the
    signal is exactly 1.0, so the default threshold of 1.0 stays flat until something is learned.

    Args:
        env: the environment.
        state: the learned snapshot whose strategy weights are used (frozen).
        threshold: signal weight above which to be long.
    """

    name = "learned_weights"

    def __init__(
        self, env: gym.Env[Any, Any], state: LearnedState, threshold: float = DEFAULT_SIGNAL_THRESHOLD
    ) -> None:
        super().__init__(env)
        if not math.isfinite(threshold):
            raise ConfigError(f"threshold={threshold!r} must be finite", where="LearnedWeightsSignal")
        self.state = state
        self.threshold = threshold

    def signal(self, row: int) -> float:
        """The mean learned weight of the factors of ``row``'s features."""
        features: dict[str, float] = {}
        for group in self.env.market_data.snapshot(row).values():
            features.update(group)
        return self.state.signal_weight(features)

    def target(self, row: int) -> float:
        return LONG if self.signal(row) > self.threshold else FLAT

    def __repr__(self) -> str:
        return f"LearnedWeightsSignal(version={self.state.version}, threshold={self.threshold})"


BASELINES: Final[dict[str, Callable[..., Baseline]]] = {
    BuyAndHold.name: BuyAndHold,
    Flat.name: Flat,
    RandomPolicy.name: RandomPolicy,
    SmaCrossover.name: SmaCrossover,
    LearnedWeightsSignal.name: LearnedWeightsSignal,
}


def make_baseline(
    name: str, env: gym.Env[Any, Any], *, seed: int = 0, learned_state: LearnedState | None = None
) -> Baseline:
    """Build a baseline by name (``buy_and_hold``, ``flat``, ``random``, ``sma_crossover``,
    ``learned_weights``) with its default parameters.

    Raises:
        ConfigError: an unknown name, or ``learned_weights`` without a learned state.
    """
    if name == RandomPolicy.name:
        return RandomPolicy(env, seed=seed)
    if name == LearnedWeightsSignal.name:
        if learned_state is None:
            raise ConfigError(
                "the learned-weights baseline needs a learned state",
                where="baseline",
                fix="pass learned_state= (a run's manager.snapshot())",
            )
        return LearnedWeightsSignal(env, learned_state)
    factory = BASELINES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown baseline {name!r}{did_you_mean(name, BASELINES)}",
            where="baseline",
            fix=f"use one of {', '.join(BASELINES)}",
        )
    return factory(env)
