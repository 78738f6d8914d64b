"""Gymnasium wrappers that put a learned-state snapshot between a policy and ``MarketReplayEnv``.

The environment side of "the learning manager beside a policy" (see the design's *Learning manager in
the main process*): the wrappers only **apply** a read-only :class:`~learning.state.LearnedState` and
**emit** what they did in ``info``; the manager lives in the main process and is fed by
:class:`agents.callbacks.LearningCallback`, which pushes new snapshots with
``VecEnv.env_method("set_learned_state", state)``. This works the same for ``DummyVecEnv`` and
``SubprocVecEnv``.

* :class:`LearningManagerWrapper` installs a :class:`~agents.hooks.LearnedOrderHook` on the inner
  ``MarketReplayEnv`` (vetoes, condition adjustments, learned minimums, error resolutions), offers
  ``action_masks()`` for MaskablePPO and adds to ``info``: ``learned`` (the hook's
  :class:`~agents.hooks.HookEvent` records of the step), ``market_conditions`` (raw market-condition
  features of the observation's bar, for the manager's adaptation) and ``learned_version`` (version of
  the applied snapshot, -1 for none).
* :class:`LearnedFeaturesObservation` appends :data:`LEARNED_FEATURES` to the observation.

:func:`wrap_env` builds the stack that a :class:`~agents.switches.LearningSwitches` asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from agents.hooks import (
    DEFAULT_BACKOFF_BARS,
    DEFAULT_REDUCE_FACTOR,
    DEFAULT_SKIP_BARS,
    HookEvent,
    LearnedOrderHook,
)
from agents.switches import LearningSwitches
from envs.errors import ConfigError
from envs.replay import DEFAULT_CLIP, MarketReplayEnv
from learning.discretize import FACTOR_SEPARATOR
from learning.error_patterns import Resolution
from learning.state import LearnedState

__all__ = [
    "INFO_CONDITIONS",
    "INFO_EVENTS",
    "INFO_VERSION",
    "LEARNED_FEATURES",
    "LearnedFeaturesObservation",
    "LearningManagerWrapper",
    "wrap_env",
]

INFO_EVENTS: Final = "learned"
"""``info`` key: tuple of :class:`~agents.hooks.HookEvent` (what the learned state did this step)."""
INFO_CONDITIONS: Final = "market_conditions"
"""``info`` key: raw market-condition features (name -> value) of the observation's bar."""
INFO_VERSION: Final = "learned_version"
"""``info`` key: version of the applied snapshot (-1: none)."""

LEARNED_FEATURES: Final = (
    "learned_signal_weight",
    "learned_vetoing_rules",
    "learned_exposure_multiplier",
    "learned_entry_threshold",
    "learned_max_position",
    "learned_pattern_score",
    "learned_paused",
)
"""What :class:`LearnedFeaturesObservation` appends, in order: the strategy weight of the bar's factors
(1 neutral), the number of active rules its features hit, the condition class's exposure multiplier,
entry threshold and max position (1, 0, 1 neutral), the score in [-1, 1] of the bar's pattern among
the top patterns (0 unknown), and 1 while entries are paused by an error resolution."""

_NEUTRAL_FEATURES: Final = (1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)


def _replay_env(env: gym.Env[Any, Any]) -> MarketReplayEnv:
    base = env.unwrapped
    if not isinstance(base, MarketReplayEnv):
        raise ConfigError(
            f"the learning wrapper needs a MarketReplayEnv inside, got {type(base).__name__}",
            where="wrap_env",
            fix="wrap MarketReplayEnv(...) or gymnasium.make('slf/MarketReplay-v0', ...)",
        )
    return base


class LearningManagerWrapper(gym.Wrapper[npt.NDArray[np.float32], Any, npt.NDArray[np.float32], Any]):
    """Applies a learned-state snapshot to a ``MarketReplayEnv`` and reports what it did in ``info``.

    Args:
        env: a ``MarketReplayEnv`` (possibly wrapped) without an order hook of its own.
        switches: which effects apply (``enabled`` must be true; see :func:`wrap_env`).
        state: the snapshot to start with (``None``: nothing learned yet).
        backoff_bars / skip_bars / reduce_factor: how error resolutions act (see
            :meth:`LearnedOrderHook.apply_resolution`).
    """

    def __init__(
        self,
        env: gym.Env[npt.NDArray[np.float32], Any],
        switches: LearningSwitches | None = None,
        state: LearnedState | None = None,
        *,
        backoff_bars: int = DEFAULT_BACKOFF_BARS,
        skip_bars: int = DEFAULT_SKIP_BARS,
        reduce_factor: float = DEFAULT_REDUCE_FACTOR,
    ) -> None:
        super().__init__(env)
        switches = switches if switches is not None else LearningSwitches()
        if not switches.enabled:
            raise ConfigError(
                "LearningManagerWrapper built with switches.enabled=False",
                where="LearningManagerWrapper",
                fix="use wrap_env(env, switches), which leaves the env unwrapped when learning is off",
            )
        for name, bars in (("backoff_bars", backoff_bars), ("skip_bars", skip_bars)):
            if isinstance(bars, bool) or not isinstance(bars, int) or bars < 0:
                raise ConfigError(f"{name}={bars!r} must be an integer >= 0", where=name, fix="e.g. 3")
        if not 0.0 < reduce_factor <= 1.0:
            raise ConfigError(
                f"reduce_factor={reduce_factor!r} must be in (0, 1]", where="reduce_factor", fix="e.g. 0.5"
            )
        base = _replay_env(env)
        if base.core.order_hook is not None:
            raise ConfigError(
                f"the env already has an order hook ({base.core.order_hook!r})",
                where="LearningManagerWrapper",
                fix="leave order_hook unset: the learning wrapper installs its own",
            )
        self.switches = switches
        self._base = base
        self._backoff = backoff_bars
        self._skip = skip_bars
        self._reduce = reduce_factor
        self.hook = LearnedOrderHook.for_env(base, switches, state)
        base.set_order_hook(self.hook)
        self._groups: dict[str, dict[str, float]] = {}
        # Pattern scores of the top patterns, by signature, for learned_features() (built when read).
        self._scores_of: LearnedState | None = None
        self._scores: dict[str, float] = {}
        # Deferred settling (see defer_settling): the info of the step not yet settled.
        self._deferred = False
        self._unsettled: dict[str, Any] | None = None

    # --- the learned state ------------------------------------------------------------------------
    @property
    def learned_state(self) -> LearnedState | None:
        return self.hook.state

    @property
    def learned_version(self) -> int:
        state = self.hook.state
        return -1 if state is None else state.version

    def set_learned_state(self, state: LearnedState | None) -> None:
        """Apply a new snapshot from the next order on (callable through ``VecEnv.env_method``)."""
        self.settle()
        if state is not None and not isinstance(state, LearnedState):
            raise ConfigError(
                f"set_learned_state got {type(state).__name__}",
                where="set_learned_state",
                fix="push manager.snapshot()",
            )
        self.hook.set_state(state)
        if self._groups:
            self.hook.prepare(self._groups)

    def apply_resolution(self, resolution: Resolution | str) -> None:
        """Act on the error resolution the manager chose for this env's latest error (``env_method``).

        Ignored when ``error_resolutions`` is off.
        """
        if not self.switches.error_resolutions:
            return
        self.settle()
        self.hook.apply_resolution(
            resolution, backoff_bars=self._backoff, skip_bars=self._skip, reduce_factor=self._reduce
        )

    def _pattern_scores(self, state: LearnedState) -> dict[str, float]:
        if self._scores_of is not state:
            self._scores = {p.signature: p.score for p in state.top_patterns}
            self._scores_of = state
        return self._scores

    # --- Gymnasium API --------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        self.settle()
        obs, info = self.env.reset(seed=seed, options=options)
        self.hook.new_episode()
        self._refresh()
        return obs, self._annotate(info, ())

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        if self._unsettled is not None:
            self.settle()
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._deferred:
            self._unsettled = info
            return obs, reward, terminated, truncated, info
        events = self.hook.drain()
        self.hook.tick()
        self._refresh()
        return obs, reward, terminated, truncated, self._annotate(info, events)

    # --- deferred settling ----------------------------------------------------------------------------
    def defer_settling(self, deferred: bool = True) -> None:
        """Return each step's observation, reward and flags before the wrapper's own bookkeeping.

        Deferred, :meth:`step` returns as soon as the env has stepped; what the wrapper does after a
        step (collect the hook's events, count a pause down, prepare the hook for the next bar, add
        ``learned``, ``market_conditions`` and ``learned_version`` to ``info``) waits for
        :meth:`settle`. A caller that has a policy waiting (:class:`agents.hosted.HostedVecEnv`) answers
        first and settles while the policy works. Everything that depends on that bookkeeping (the next
        step, a reset, a pushed snapshot, a resolution, ``action_masks()``, learned features) settles
        first, so the order of what the hook sees, and every result, is that of an undeferred step.
        """
        if not deferred:
            self.settle()
        self._deferred = bool(deferred)

    def settle(self, info: dict[str, Any] | None = None) -> None:
        """Finish a deferred step (nothing when none is pending); ``info``: also add the step's
        ``learned``, ``market_conditions`` and ``learned_version`` to this dict (the one outer
        wrappers returned, when one of them copied the step's ``info``)."""
        pending = self._unsettled
        if pending is None:
            return
        self._unsettled = None
        events = self.hook.drain()
        self.hook.tick()
        self._refresh()
        self._annotate(pending, events)
        if info is not None and info is not pending:
            self._annotate(info, events)

    def _refresh(self) -> None:
        base = self._base
        self._groups = base.market_data.snapshot(base.row)
        self.hook.prepare(self._groups)

    def _annotate(self, info: dict[str, Any], events: tuple[HookEvent, ...]) -> dict[str, Any]:
        info[INFO_EVENTS] = events
        info[INFO_CONDITIONS] = self.hook.conditions
        info[INFO_VERSION] = self.learned_version
        return info

    # --- masks and features -----------------------------------------------------------------------
    def action_masks(self) -> npt.NDArray[np.bool_]:
        """Discrete actions allowed now (for MaskablePPO): those an avoidance rule would not veto.

        With ``vetoes`` and ``action_masks`` on and a rule hitting the current bar's features, actions
        whose target opens, adds to or reverses the position are masked; flat, reducing and holding
        actions stay allowed, and so does the action nearest to the current exposure, so a mask never
        forbids every action.
        """
        self.settle()
        base = self._base
        if base.continuous:
            raise ConfigError(
                "action_masks() needs discrete actions, the env's actions are continuous",
                where="action_masks",
                fix="use actions such as [-1, 0, 1] with MaskablePPO, or switch action_masks off",
            )
        n = int(base.action_space.n)  # type: ignore[attr-defined]
        mask = np.ones(n, dtype=bool)
        switches = self.switches
        if not (switches.vetoes and switches.action_masks and self.hook.rule_hits):
            return mask
        book = base.core.portfolio
        price = book.last_price
        equity = book.cash + book.qty * price
        exposure = book.qty * price / equity if equity > 0.0 else 0.0
        leverage = book.config.leverage
        band = base.core.band
        targets = [base.target_of(np.int64(i)) * leverage for i in range(n)]
        for i, f in enumerate(targets):
            if -band < f < band:
                continue  # flat: an exit
            if exposure == 0.0 or (f > 0.0) != (exposure > 0.0) or abs(f) - abs(exposure) >= band:
                mask[i] = False  # opens, reverses or adds
        mask[int(np.argmin([abs(f - exposure) for f in targets]))] = True
        return mask

    def learned_features(self) -> npt.NDArray[np.float32]:
        """The values of :data:`LEARNED_FEATURES` at the current bar, clipped to the observation bound."""
        self.settle()
        hook = self.hook
        state = hook.state
        if state is None:
            values = list(_NEUTRAL_FEATURES)
        else:
            adj = hook.adjustment
            score = 0.0
            scores = self._pattern_scores(state)
            if scores:
                signature = FACTOR_SEPARATOR.join(state.discretizer.factors(*self._groups.values()))
                score = scores.get(signature, 0.0)
            values = [
                state.signal_weight(hook.features) if state.strategy_weights else 1.0,
                float(len(hook.rule_hits)),
                1.0 if adj is None else adj.exposure_multiplier,
                0.0 if adj is None else adj.entry_threshold,
                1.0 if adj is None else adj.max_position,
                score,
                0.0,
            ]
        values[-1] = 1.0 if hook.paused else 0.0
        return np.clip(np.asarray(values, dtype=np.float32), -DEFAULT_CLIP, DEFAULT_CLIP)


class LearnedFeaturesObservation(
    gym.ObservationWrapper[npt.NDArray[np.float32], Any, npt.NDArray[np.float32]]
):
    """Appends :data:`LEARNED_FEATURES` (from the wrapped :class:`LearningManagerWrapper`) to the
    observation; the Box grows by their count with the same bounds as the rest."""

    def __init__(self, env: LearningManagerWrapper) -> None:
        super().__init__(env)
        if not isinstance(env, LearningManagerWrapper):
            raise ConfigError(
                f"LearnedFeaturesObservation wraps a LearningManagerWrapper, got {type(env).__name__}",
                where="LearnedFeaturesObservation",
                fix="use wrap_env(env, LearningSwitches(observation_features=True))",
            )
        self._source = env
        inner = env.observation_space
        if not isinstance(inner, spaces.Box) or len(inner.shape) != 1:
            raise ConfigError(
                f"cannot append learned features to {inner}",
                where="observation_features",
                fix="use a flat Box observation (MarketReplayEnv's own)",
            )
        k = len(LEARNED_FEATURES)
        low = np.concatenate([inner.low, np.full(k, -DEFAULT_CLIP, dtype=np.float32)]).astype(np.float32)
        high = np.concatenate([inner.high, np.full(k, DEFAULT_CLIP, dtype=np.float32)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.concatenate([observation, self._source.learned_features()])


def wrap_env(
    env: gym.Env[Any, Any],
    switches: LearningSwitches,
    *,
    state: LearnedState | None = None,
    resolution_settings: Mapping[str, float] | None = None,
) -> gym.Env[Any, Any]:
    """Wrap ``env`` (a ``MarketReplayEnv``, possibly wrapped) for the learning manager.

    Returns ``env`` unchanged when ``switches.enabled`` is false; else a
    :class:`LearningManagerWrapper`, under a :class:`LearnedFeaturesObservation` when
    ``observation_features`` is on. ``resolution_settings`` may override ``backoff_bars``,
    ``skip_bars`` and ``reduce_factor``.
    """
    if not switches.enabled:
        return env
    settings = dict(resolution_settings or {})
    unknown = set(settings) - {"backoff_bars", "skip_bars", "reduce_factor"}
    if unknown:
        raise ConfigError(
            f"unknown resolution setting(s) {sorted(unknown)}",
            where="resolution_settings",
            fix="use backoff_bars, skip_bars and reduce_factor",
        )
    wrapped = LearningManagerWrapper(
        env,
        switches,
        state,
        backoff_bars=int(settings.get("backoff_bars", DEFAULT_BACKOFF_BARS)),
        skip_bars=int(settings.get("skip_bars", DEFAULT_SKIP_BARS)),
        reduce_factor=float(settings.get("reduce_factor", DEFAULT_REDUCE_FACTOR)),
    )
    if switches.observation_features:
        return LearnedFeaturesObservation(wrapped)
    return wrapped
