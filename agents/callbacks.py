"""``LearningCallback``: the SB3 adapter of :class:`~agents.feeder.ManagerFeeder`, with TensorBoard logging.

:class:`HostedLearningCallback` is its counterpart for :class:`~agents.hosted.HostedVecEnv`, where the
feeder and the manager run in the environments' host process: it starts and finishes the feeding there
and logs the same scalars, episode metrics and report, fetched from the host.

The feeding itself (trades, errors, resolutions, vetoes and their counterfactuals, the manager's per-bar
work, snapshot pushes, the experienced market clock, episode metrics) is :class:`ManagerFeeder`'s, which
imports no training framework; see :mod:`agents.feeder`. This callback hands it what SB3 has: after
every ``VecEnv.step``, ``self.locals["infos"]`` and ``["dones"]`` and the VecEnv's reset infos; it pushes
snapshots with ``env_method("set_learned_state", snapshot)`` and error resolutions with
``env_method("apply_resolution", ...)``.

Logged through the SB3 logger: ``learning/*`` at the end of every rollout and of training (the
manager's :meth:`track_learning_effectiveness` scalars plus the feeder's counts), ``trading/*`` for
every finished episode (averaged over the episodes finished between two dumps, see
:class:`~agents.feeder.EpisodeTracker`), the algorithm and switches as TensorBoard hparams at the start,
and the learning report (Markdown) as text at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.experience_clock import ExperiencedMarketClock
from agents.feeder import (
    DEFAULT_VETO_HORIZON,
    EpisodeTracker,
    ManagerFeeder,
    _PendingResolution,
    _PendingVeto,
    learning_report,
    learning_scalars,
    veto_would_have_won,
)
from agents.hosted import HostedVecEnv, hosted
from agents.switches import LearningSwitches
from envs.errors import ConfigError
from learning.error_patterns import Resolution
from learning.manager import UniversalLearningManager
from learning.state import LearnedState

__all__ = [
    "DEFAULT_VETO_HORIZON",
    "EpisodeTracker",
    "HostedLearningCallback",
    "LearningCallback",
    "veto_would_have_won",
]

TRADING_PREFIX: Final = "trading/"
REPORT_KEY: Final = "learning/report"
HPARAMS_KEY: Final = "hparams"
# Text and hparams go to TensorBoard only: the other SB3 writers cannot show them.
_TB_ONLY: Final = ("stdout", "log", "json", "csv")
_SET_STATE: Final = "set_learned_state"
_APPLY_RESOLUTION: Final = "apply_resolution"


class _LoggingCallback(BaseCallback):
    """What both learning callbacks log: hparams at the start, ``learning/*`` at every rollout's end and
    at the end of training, ``trading/*`` per finished episode, and the report at the end."""

    def __init__(self, switches: LearningSwitches, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.switches = switches

    def _scalars(self) -> dict[str, float]:
        raise NotImplementedError

    def _report(self) -> str:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _log_episode(self, i: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.logger.record_mean(f"{TRADING_PREFIX}{key}", value)

    def _log_learning(self) -> None:
        for key, value in self._scalars().items():
            self.logger.record(key, value)

    def _record_hparams(self, n_envs: int) -> None:
        model = self.model
        hparams: dict[str, bool | str | float | None] = {"algorithm": type(model).__name__, "n_envs": n_envs}
        for name in ("learning_rate", "gamma", "n_steps", "batch_size", "ent_coef"):
            value = getattr(model, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                hparams[name] = value
        for name, value in self.switches.model_dump().items():
            hparams[f"switches/{name}"] = bool(value)
        metrics = {
            f"{TRADING_PREFIX}return": 0.0,
            f"{TRADING_PREFIX}sharpe": 0.0,
            f"{TRADING_PREFIX}max_drawdown": 0.0,
        }
        self.logger.record(HPARAMS_KEY, HParam(hparams, metrics), exclude=_TB_ONLY)

    def _on_rollout_end(self) -> None:
        self._log_learning()

    def _on_training_end(self) -> None:
        self._log_learning()
        report = self._report()
        if report:
            self.logger.record(REPORT_KEY, report, exclude=_TB_ONLY)
        self.logger.dump(self.num_timesteps)
        self._finish()


class LearningCallback(_LoggingCallback):
    """Feeds a :class:`~learning.manager.UniversalLearningManager` from training and logs to TensorBoard.

    A thin SB3 adapter over :class:`~agents.feeder.ManagerFeeder` (see :mod:`agents.feeder` for what is
    fed, when, and how market time is kept).

    Args:
        manager: the learning manager (main process). May be ``None`` when ``switches.enabled`` is false
            or ``switches.online`` is false and ``state`` is given.
        switches: which parts of the manager act (see :class:`~agents.switches.LearningSwitches`).
        state: with ``online=False``, the snapshot to apply (default: ``manager.snapshot()``).
        veto_horizon: bars after which a vetoed entry's counterfactual is judged.
        verbose: SB3 verbosity.

    Attributes:
        feeder: the framework-free feeder doing the work.
        clock: the experienced market clock (set at training start).
        episodes: metrics of every finished episode, in the order they finished.
        counts: running totals of what the learned state did and what was fed (also logged).
    """

    def __init__(
        self,
        manager: UniversalLearningManager | None,
        switches: LearningSwitches,
        *,
        state: LearnedState | None = None,
        veto_horizon: int = DEFAULT_VETO_HORIZON,
        verbose: int = 0,
    ) -> None:
        super().__init__(switches, verbose)
        self.feeder = ManagerFeeder(
            manager,
            switches,
            push=self._push_to_envs,
            apply_resolution=self._apply_resolution,
            state=state,
            veto_horizon=veto_horizon,
            on_episode=self._log_episode,
        )
        self.manager = manager
        self.veto_horizon = veto_horizon
        # In-process envs (DummyVecEnv): their set_learned_state, looked up once (what env_method does
        # for every call); None: env_method.
        self._setters: list[Any] | None = None

    @property
    def feeding(self) -> bool:
        """Whether the manager learns from this run (enabled, online and present)."""
        return self.feeder.feeding

    @property
    def clock(self) -> ExperiencedMarketClock:
        return self.feeder.clock

    @property
    def episodes(self) -> list[dict[str, float]]:
        return self.feeder.episodes

    @property
    def counts(self) -> dict[str, int]:
        return self.feeder.counts

    @property
    def _pending_res(self) -> list[_PendingResolution | None]:
        """Per environment, the error resolution whose outcome the next order reports (the feeder's list)."""
        return self.feeder._pending_res

    @property
    def _pending_vetoes(self) -> list[list[_PendingVeto]]:
        """Per environment, the vetoed entries awaiting their counterfactual (the feeder's lists)."""
        return self.feeder._pending_vetoes

    # --- what the feeder commands ----------------------------------------------------------------------
    def _push_to_envs(self, state: LearnedState) -> None:
        setters = self._setters
        if setters is None:
            self.training_env.env_method(_SET_STATE, state)
        else:
            for set_state in setters:
                set_state(state)

    def _apply_resolution(self, i: int, resolution: Resolution) -> None:
        self.training_env.env_method(_APPLY_RESOLUTION, str(resolution), indices=[i])

    # --- lifecycle -----------------------------------------------------------------------------------
    def _reset_infos(self) -> Sequence[Mapping[str, Any]]:
        env = self.training_env
        infos = getattr(env.unwrapped, "reset_infos", None)
        if infos is None or len(infos) != env.num_envs:
            return [{} for _ in range(env.num_envs)]
        return infos

    def _on_training_start(self) -> None:
        env = self.training_env
        if self.switches.enabled and not env.has_attr(_SET_STATE):
            raise ConfigError(
                "the training envs are not wrapped for the learning manager",
                where="LearningCallback",
                fix="wrap every env with agents.wrappers.wrap_env(env, switches) before vectorizing",
            )
        inner = env.unwrapped
        self._setters = (
            [e.get_wrapper_attr(_SET_STATE) for e in inner.envs]
            if self.switches.enabled and isinstance(inner, DummyVecEnv)
            else None
        )
        # learn(reset_num_timesteps=False) continues the envs' episodes: their reset infos are stale.
        fresh = self.model.num_timesteps == 0
        self.feeder.start(self._reset_infos() if fresh else [{}] * env.num_envs, fresh=fresh)
        self._record_hparams(env.num_envs)

    def _scalars(self) -> dict[str, float]:
        return learning_scalars(self.feeder)

    def _report(self) -> str:
        return learning_report(self.feeder)

    def _finish(self) -> None:
        self.feeder.finish()

    # --- the step ----------------------------------------------------------------------------------
    def _on_step(self) -> bool:
        dones: Sequence[bool] = self.locals["dones"]
        # The VecEnv's reset infos are read only when an episode ended (SB3 auto-resets then).
        self.feeder.step(self.locals["infos"], dones, self._reset_infos() if any(dones) else None)
        return True


class HostedLearningCallback(_LoggingCallback):
    """The learning callback of a :class:`~agents.hosted.HostedVecEnv` (feeder and manager in its host).

    Starts the feeding in the host at the start of training and finishes it at the end; logs the
    ``learning/*`` scalars, the finished episodes' ``trading/*`` metrics and the report from the host:
    what :class:`LearningCallback` logs for the same run in one process.

    Args:
        switches: the learning switches (the host's; for the hparams).
        verbose: SB3 verbosity.
    """

    def __init__(self, switches: LearningSwitches, verbose: int = 0) -> None:
        super().__init__(switches, verbose)
        self._host: HostedVecEnv | None = None

    @property
    def host(self) -> HostedVecEnv:
        if self._host is None:
            raise ConfigError(
                "HostedLearningCallback has not started",
                where="HostedLearningCallback",
                fix="pass it to model.learn(callback=...) with a HostedVecEnv",
            )
        return self._host

    @property
    def counts(self) -> dict[str, int]:
        return self.host.counts

    @property
    def episodes(self) -> list[dict[str, float]]:
        return self.host.episodes

    def _on_training_start(self) -> None:
        host = hosted(self.training_env)
        if host is None:
            raise ConfigError(
                "HostedLearningCallback needs a HostedVecEnv",
                where="HostedLearningCallback",
                fix="train on agents.hosted.HostedVecEnv, or use LearningCallback with a manager",
            )
        self._host = host
        # learn(reset_num_timesteps=False) continues the envs' episodes: their reset infos are stale.
        host.start_feeding(fresh=self.model.num_timesteps == 0)
        self._record_hparams(host.num_envs)

    def _on_step(self) -> bool:
        # Episodes end rarely; the host answers after it has fed this step, so the metrics are complete.
        if any(self.locals["dones"]):
            for i, metrics in self.host.drain_episodes():
                self._log_episode(i, metrics)
        return True

    def _scalars(self) -> dict[str, float]:
        return self.host.learning_scalars()

    def _report(self) -> str:
        return self.host.learning_report()

    def _finish(self) -> None:
        self.host.finish_feeding()
