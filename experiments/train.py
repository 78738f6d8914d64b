"""Train a policy with the learning manager beside it: one run per (arm, seed), each in its own directory.

:func:`train_run` is the unit of work: a pure function of the run's resolved config (one seed), the
dataset it names, and nothing else, writing only into its run directory (see :mod:`experiments.runs`),
so it can be shipped to a worker unchanged. On the CPU the same config and seed give identical model
parameters and metrics.

What a run does:

1. loads the bars and features, resolves the train/validation/test splits (with the embargo) and fits
   the observation normalization on the training split only (``normalization.json``);
2. builds ``train.n_envs`` training envs (random episode starts inside the training split), wrapped by
   ``agents.wrappers.wrap_env`` for the learning switches, and the learning manager (its store in the
   run directory);
3. trains with SB3, with :class:`agents.callbacks.LearningCallback` feeding the manager, a periodic
   evaluation on the validation split (deterministic, the whole split, training normalization, the
   manager's current snapshot applied frozen) that keeps ``best_model.zip``, and checkpoints
   (model, replay buffer, learning store) that ``--resume`` continues from;
4. evaluates the final and the best model on the validation and test splits (``metrics.json``).

A resumed run (``--resume``) continues the checkpoint's model, replay buffer, learning store and
evaluation history in the same directory; its environments start new episodes from the run's seed,
so it is reproducible but not bit-identical to a run that was never interrupted.

Torch and SB3 are imported inside functions, so importing this module stays light.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from envs.errors import ConfigError, StateError
from envs.features import DEFAULT_CLIP, NormalizationStats
from envs.market import MarketSpec
from envs.replay import MarketData, MarketReplayEnv, market_data
from experiments.config import (
    EnvConfig,
    RunConfig,
    Span,
    Splits,
    VecEnvKind,
    load_config,
    write_config,
)
from experiments.evaluate import EvaluationResult, periods_per_year, run_split
from experiments.runs import (
    RunPaths,
    load_learned,
    package_versions,
    read_json,
    run_dir_for,
    save_learned,
    write_json,
)

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

    from learning.manager import UniversalLearningManager
    from learning.state import LearnedState

__all__ = [
    "EnvFactory",
    "PreparedData",
    "RunResult",
    "evaluate_model",
    "make_env_factory",
    "policy_digest",
    "preflight",
    "prepare_data",
    "resume_run",
    "train",
    "train_run",
]

log = logging.getLogger(__name__)

TB_LOG_NAME: Final = "train"
LATEST_CHECKPOINT: Final = "latest.json"
CHECKPOINT_MODEL: Final = "model.zip"
CHECKPOINT_BUFFER: Final = "replay_buffer.pkl"
CHECKPOINT_EVAL: Final = "eval_state.json"
CHECKPOINT_LEARNING: Final = "learning"
STATUS_RUNNING: Final = "running"
STATUS_FINISHED: Final = "finished"
SPLIT_VALIDATION: Final = "validation"
SPLIT_TEST: Final = "test"
MODEL_FINAL: Final = "model"
MODEL_BEST: Final = "best_model"
# Order-id prefixes per env role, so the orders of training and evaluation envs are told apart in logs.
_TRAIN_PREFIX: Final = "t"
_EVAL_PREFIX: Final = "v"
_SAME_TYPE_WARNING: Final = "Training and eval env are not of the same type"


# --- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedData:
    """The bars of a run, its splits and the normalization fitted on its training split.

    Attributes:
        market: the shared bars and features.
        spec: the market spec (the dataset's, with the config's overrides).
        splits: rows of the train, validation and test splits.
        normalization: observation statistics fitted on the training split only.
        periods_per_year: bars per year, for annualized metrics.
        reference: what identifies the data (dataset name or file, rows, times, content digest).
    """

    market: MarketData
    spec: MarketSpec
    splits: Splits
    normalization: NormalizationStats
    periods_per_year: float
    reference: dict[str, Any]


def _data_digest(md: MarketData) -> str:
    h = hashlib.blake2b(digest_size=16)
    for array in (md.time_ns, md.open, md.high, md.low, md.close, md.volume):
        h.update(array.tobytes())
    return h.hexdigest()


def _iso(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC).isoformat()


def _row_of(md: MarketData, when: str | None, default: int) -> int:
    if when is None:
        return default
    import pandas as pd

    ts = pd.Timestamp(when)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(np.searchsorted(md.time_ns, ts.value, side="left"))


def _check_room(name: str, span: Span, md: MarketData, env: EnvConfig, episode_length: int | None) -> None:
    """Refuse a split too short for one step (or one training episode) with a message naming it."""
    first = max(md.features.warmup + env.window - 1, span.start)
    steps = span.end - 1 - first
    need = episode_length or 1
    if steps < need:
        raise ConfigError(
            f"the {name} split (rows {span.start}..{span.end}) leaves {max(steps, 0)} steps after the "
            f"feature warm-up ({md.features.warmup} rows) and window ({env.window}); it needs {need}",
            where=f"data.splits.{name}",
            fix="give the split more bars, shorten env.window or env.episode_length, or use more data",
        )


def prepare_data(config: RunConfig) -> PreparedData:
    """Load the bars, resolve the splits and fit the normalization on the training split.

    Raises:
        ConfigError: splits that are empty or too short for the window and episode length.
        DataError: unreadable or invalid bars.
    """
    data = config.data
    features = config.features.feature_config()
    md = market_data(dataset=data.dataset, data=data.path, symbol=data.symbol, features=features)
    base_spec = md.spec if md.spec is not None else MarketSpec(md.symbol or "ASSET")
    try:
        spec = config.env.market.apply(base_spec)
    except ConfigError as exc:
        raise ConfigError(exc.problem, where="env.market", fix=exc.fix) from None
    first = _row_of(md, data.start, 0)
    stop = _row_of(md, data.end, len(md))
    if stop - first < 2:
        raise ConfigError(
            f"data.start/data.end select {max(stop - first, 0)} bars",
            where="data",
            fix="widen data.start .. data.end",
        )
    splits = data.splits.resolve(md.time_ns, first, stop)
    _check_room("train", splits.train, md, config.env, config.env.episode_length)
    _check_room("validation", splits.validation, md, config.env, None)
    _check_room("test", splits.test, md, config.env, None)
    normalization = NormalizationStats.fit(
        md.features,
        splits.train.start,
        splits.train.end,
        method=config.features.normalization,
        clip=DEFAULT_CLIP,
    )
    reference: dict[str, Any] = {
        "dataset": data.dataset,
        "path": data.path,
        "symbol": md.symbol,
        "rows": len(md),
        "first": _iso(md.time_ns.item(0)),
        "last": _iso(md.time_ns.item(len(md) - 1)),
        "digest": _data_digest(md),
    }
    return PreparedData(
        market=md,
        spec=spec,
        splits=splits,
        normalization=normalization,
        periods_per_year=periods_per_year(md.time_ns, data.calendar),
        reference=reference,
    )


def split_info(prepared: PreparedData) -> dict[str, Any]:
    """Rows and first/last bar times of each split (for ``run.json`` and reports)."""
    times = prepared.market.time_ns
    return {
        name: {
            "rows": [span.start, span.end],
            "first": _iso(times.item(span.start)),
            "last": _iso(times.item(span.end - 1)),
        }
        for name, span in zip(Splits._fields, prepared.splits, strict=True)
    }


# --- environments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvFactory:
    """Builds one environment of a run; picklable, so ``SubprocVecEnv`` workers can call it.

    Attributes:
        config: the run config (data source, features, env options, learning switches).
        spec: the market spec.
        normalization: the training split's statistics.
        span: the replay rows.
        episode_length: bars per episode (``None``: the whole span from its start).
        learning: wrap for the learning switches (``False``: the bare env, e.g. for baselines).
        state: the learned snapshot to start with.
        masks: give the env an ``action_masks()`` (all actions allowed) when the learning wrapper
            does not provide one (MaskablePPO without the learning manager).
        monitor: wrap in SB3's ``Monitor`` (episode reward and length in ``info``).
        order_id_prefix: client order-id prefix of the env's orders.
    """

    config: RunConfig
    spec: MarketSpec
    normalization: NormalizationStats
    span: Span
    episode_length: int | None
    learning: bool = True
    state: LearnedState | None = None
    masks: bool = False
    monitor: bool = True
    order_id_prefix: str = _TRAIN_PREFIX

    def __call__(self) -> gym.Env[Any, Any]:
        cfg = self.config
        env_cfg = cfg.env
        env: gym.Env[Any, Any] = MarketReplayEnv(
            dataset=cfg.data.dataset,
            data=cfg.data.path,
            symbol=cfg.data.symbol,
            features=cfg.features.feature_config(),
            normalization=self.normalization,
            market=self.spec,
            window=env_cfg.window,
            actions=env_cfg.actions,
            reward=env_cfg.reward,
            episode_length=self.episode_length,
            start=self.span.start,
            end=self.span.end,
            initial_cash=env_cfg.initial_cash,
            leverage=env_cfg.leverage,
            allow_short=env_cfg.allow_short,
            borrow_rate=env_cfg.borrow_rate,
            max_drawdown=env_cfg.max_drawdown,
            rebalance_band=env_cfg.rebalance_band,
            faults=env_cfg.faults.fault_config(),
            close_at_end=env_cfg.close_at_end,
            order_id_prefix=self.order_id_prefix,
        )
        if self.learning:
            from agents.wrappers import wrap_env

            env = wrap_env(env, cfg.learning.switches(), state=self.state)
        if self.masks and not _has_method(env, "action_masks"):
            env = _all_actions_allowed(env)
        if self.monitor:
            from stable_baselines3.common.monitor import Monitor

            env = Monitor(env)
        return ShallowInfo(env)


class StepInfo(dict[str, Any]):
    """A step's ``info`` that ``copy.deepcopy`` copies shallowly.

    SB3's ``DummyVecEnv`` deep-copies every step's infos; for ``MarketReplayEnv`` (tuples of immutable
    events, a fresh dict and a fresh observation array every step) that copy cost as much as the step
    itself and protects nothing.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> StepInfo:
        return StepInfo(self)


class ShallowInfo(gym.Wrapper[Any, Any, Any, Any]):
    """Returns each step's ``info`` as a :class:`StepInfo` (the outermost wrapper of a training env)."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, StepInfo(info)


class AllActionsAllowed(gym.Wrapper[Any, Any, Any, Any]):
    """``action_masks()`` allowing every discrete action: MaskablePPO without the learning manager."""

    def action_masks(self) -> npt.NDArray[np.bool_]:
        return np.ones(int(self.action_space.n), dtype=np.bool_)  # type: ignore[attr-defined]


def _all_actions_allowed(env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
    return AllActionsAllowed(env)


def _has_method(env: gym.Env[Any, Any], name: str) -> bool:
    """Whether ``env`` or a wrapper inside it has ``name`` (Gymnasium 1 wrappers do not forward)."""
    try:
        env.get_wrapper_attr(name)
    except AttributeError:
        return False
    return True


def make_env_factory(
    config: RunConfig,
    prepared: PreparedData,
    split: str,
    *,
    learning: bool = True,
    state: LearnedState | None = None,
    monitor: bool = False,
) -> EnvFactory:
    """A factory of deterministic evaluation envs over a whole split (``validation`` or ``test``)."""
    spans = prepared.splits._asdict()
    if split not in spans:
        raise ConfigError(f"unknown split {split!r}", where="split", fix=f"use one of {list(spans)}")
    return EnvFactory(
        config=config,
        spec=prepared.spec,
        normalization=prepared.normalization,
        span=spans[split],
        episode_length=None,
        learning=learning and config.learning.enabled,
        state=state,
        masks=config.algo.spec.uses_action_masks,
        monitor=monitor,
        order_id_prefix=_EVAL_PREFIX,
    )


def _vec_env(factories: Sequence[EnvFactory], kind: VecEnvKind) -> VecEnv:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if kind is VecEnvKind.SUBPROC and len(factories) > 1:
        return SubprocVecEnv(list(factories))
    return DummyVecEnv(list(factories))


@dataclass
class _Training:
    """The training envs and where the learning manager lives: here (``manager``) or in the envs' host
    process (``venv`` is a :class:`~agents.hosted.HostedVecEnv`). ``snapshot`` and ``backup`` reach it
    either way (``None`` with learning off)."""

    venv: VecEnv
    manager: UniversalLearningManager | None
    callback: BaseCallback
    snapshot: Callable[[], LearnedState | None] | None
    backup: Callable[[Path], None] | None


def _training(
    config: RunConfig, paths: RunPaths, spec: MarketSpec, factories: Sequence[EnvFactory]
) -> _Training:
    if config.train.vec_env is not VecEnvKind.HOSTED:
        manager = _open_manager(config, paths, spec)
        venv = _vec_env(factories, config.train.vec_env)
        if manager is None:
            return _Training(venv, None, _learning_callback(config, None), None, None)
        return _Training(
            venv,
            manager,
            _learning_callback(config, manager),
            manager.snapshot,
            partial(_backup_store, manager),
        )
    from agents.callbacks import HostedLearningCallback
    from agents.hosted import HostedVecEnv, ManagerSpec

    switches = config.learning.switches()
    learning = config.learning.enabled
    host = HostedVecEnv(
        list(factories),
        manager=ManagerSpec(paths.root, config.learning.config, (spec,)) if learning else None,
        switches=switches,
    )
    if not learning:
        return _Training(host, None, HostedLearningCallback(switches), None, None)

    def backup(target: Path) -> None:
        host.with_manager(_backup_store, target)

    return _Training(host, None, HostedLearningCallback(switches), host.snapshot, backup)


# --- checkpoints -----------------------------------------------------------------------------------


def _backup_store(manager: UniversalLearningManager, target: Path) -> None:
    """Copy the manager's committed store (after folding in everything pending) to ``target``."""
    manager.compact()
    target.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{manager.store_path}?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(target / manager.store_path.name)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    if manager.archive_dir.is_dir():
        shutil.copytree(manager.archive_dir, target / manager.archive_dir.name)


def _restore_store(checkpoint: Path, paths: RunPaths) -> None:
    """Put a checkpoint's learning store (and archive) back in the run directory."""
    from learning.store import ARCHIVE_DIRNAME, STORE_DIRNAME, STORE_FILENAME

    saved = checkpoint / CHECKPOINT_LEARNING
    store_dir = paths.root / STORE_DIRNAME
    for suffix in ("", "-wal", "-shm"):
        (store_dir / f"{STORE_FILENAME}{suffix}").unlink(missing_ok=True)
    archive = paths.root / ARCHIVE_DIRNAME
    if archive.exists():
        shutil.rmtree(archive)
    if not (saved / STORE_FILENAME).is_file():
        return
    store_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(saved / STORE_FILENAME, store_dir / STORE_FILENAME)
    if (saved / ARCHIVE_DIRNAME).is_dir():
        shutil.copytree(saved / ARCHIVE_DIRNAME, archive)


def _latest_checkpoint(paths: RunPaths) -> Path:
    marker = paths.checkpoints / LATEST_CHECKPOINT
    if not marker.is_file():
        raise StateError(
            "the run has no checkpoint to resume from",
            where=str(paths.root),
            fix="train with train.checkpoint_every > 0, or start a new run",
        )
    latest = read_json(marker)
    directory = paths.checkpoints / str(latest.get("dir", ""))
    if not (directory / CHECKPOINT_MODEL).is_file():
        raise StateError("the latest checkpoint is incomplete", where=str(directory), fix="start a new run")
    return directory


def _make_checkpoint_callback(
    paths: RunPaths, every: int, backup: Callable[[Path], None] | None, evaluation: Any
) -> BaseCallback:
    from stable_baselines3.common.callbacks import BaseCallback

    class RunCheckpoint(BaseCallback):
        """Every ``every`` env steps: model, replay buffer, learning store and evaluation state, saved
        together; the ``latest.json`` marker moves only once all of them are on disk."""

        def _init_callback(self) -> None:
            self._next = (self.num_timesteps // every + 1) * every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self._next:
                self.save()
                while self._next <= self.num_timesteps:
                    self._next += every
            return True

        def save(self) -> None:
            step = self.num_timesteps
            name = f"step_{step:012d}"
            final = paths.checkpoints / name
            tmp = paths.checkpoints / f".{name}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            self.model.save(tmp / CHECKPOINT_MODEL)
            if getattr(self.model, "replay_buffer", None) is not None:
                self.model.save_replay_buffer(tmp / CHECKPOINT_BUFFER)  # type: ignore[attr-defined]
            if backup is not None:
                backup(tmp / CHECKPOINT_LEARNING)
            if evaluation is not None:
                write_json(tmp / CHECKPOINT_EVAL, _eval_state(evaluation))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            write_json(paths.checkpoints / LATEST_CHECKPOINT, {"step": step, "dir": name})
            # Only the latest checkpoint is kept: replay buffers are large.
            for old in paths.checkpoints.glob("step_*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
            log.debug("checkpoint at step %d in %s", step, final)

    return RunCheckpoint()


def _eval_state(evaluation: Any) -> dict[str, Any]:
    return {
        "best_mean_reward": float(evaluation.best_mean_reward),
        "timesteps": [int(t) for t in evaluation.evaluations_timesteps],
        "results": [[float(r) for r in rs] for rs in evaluation.evaluations_results],
        "lengths": [[int(n) for n in ns] for ns in evaluation.evaluations_length],
    }


def _restore_eval_state(evaluation: Any, state: dict[str, Any]) -> None:
    evaluation.best_mean_reward = float(state["best_mean_reward"])
    evaluation.evaluations_timesteps = list(state["timesteps"])
    evaluation.evaluations_results = [list(r) for r in state["results"]]
    evaluation.evaluations_length = [list(n) for n in state["lengths"]]


# --- evaluation during training ----------------------------------------------------------------------


def _make_eval_callback(
    config: RunConfig,
    eval_env: VecEnv,
    paths: RunPaths,
    snapshot: Callable[[], LearnedState | None] | None,
) -> Any:
    """SB3's EvalCallback (MaskableEvalCallback for MaskablePPO) that first applies the manager's
    current snapshot (from ``snapshot``) to the validation env, frozen, and keeps the snapshot of the
    best model."""
    from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
    from stable_baselines3.common.callbacks import EvalCallback

    base: type[EvalCallback] = MaskableEvalCallback if config.algo.spec.uses_action_masks else EvalCallback

    train = config.train
    every = max(train.eval_every // train.n_envs, 1) if train.eval_every else 0

    class SnapshotEvalCallback(base):  # type: ignore[misc, valid-type]
        def _on_step(self) -> bool:
            due = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
            state = None
            if due and snapshot is not None:
                state = snapshot()
                self.eval_env.env_method("set_learned_state", state)
            best = self.best_mean_reward
            keep_going: bool = super()._on_step()
            if due and state is not None and self.best_mean_reward > best:
                save_learned(state, paths.best_learned_state)
            return keep_going

    return SnapshotEvalCallback(
        eval_env,
        n_eval_episodes=train.eval_episodes,
        eval_freq=every,
        log_path=str(paths.root),
        best_model_save_path=str(paths.root),
        deterministic=True,
        verbose=0,
    )


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """Where a run is and what it measured."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any] = field(default_factory=dict)


def policy_digest(model: BaseAlgorithm) -> str:
    """SHA-256 of the policy's parameters (identical runs give identical digests)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.policy.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _open_manager(config: RunConfig, paths: RunPaths, spec: MarketSpec) -> UniversalLearningManager | None:
    if not config.learning.enabled:
        return None
    from learning.manager import UniversalLearningManager

    return UniversalLearningManager(paths.root, config=config.learning.config, market_specs=[spec])


def _learning_callback(config: RunConfig, manager: UniversalLearningManager | None) -> BaseCallback:
    """Feeds the manager (learning on) and logs ``trading/*`` (always, so the arms compare)."""
    from agents.callbacks import LearningCallback

    return LearningCallback(manager, config.learning.switches())


def _single_seed(config: RunConfig) -> int:
    if len(config.train.seeds) != 1 or config.ablation is not None:
        raise ConfigError(
            "train_run takes the config of one run (one seed, no ablation)",
            where="train_run",
            fix="use train(), or config.arms() and config.for_seed(seed)",
        )
    return config.train.seeds[0]


def preflight(config: RunConfig) -> PreparedData:
    """Check what would make a run fail at its start (the algorithm against the action space, the data
    and its splits) and return the prepared data.

    Raises:
        ConfigError, DataError: the problem, before anything is written.
    """
    from gymnasium import spaces

    from agents.policies import check_action_space

    actions = config.env.actions
    space: spaces.Space[Any] = (
        spaces.Box(-1.0, 1.0, (1,), np.float32) if isinstance(actions, str) else spaces.Discrete(len(actions))
    )
    check_action_space(config.algo.spec, space)
    return prepare_data(config)


def train_run(
    config: RunConfig,
    run_dir: Path,
    *,
    command: Sequence[str] = (),
    resume: bool = False,
) -> RunResult:
    """Train one run (one arm, one seed) into ``run_dir`` and evaluate it.

    Args:
        config: the resolved config of this run (``train.seeds`` holds its one seed; no ablation).
        run_dir: the run directory (created; it must not hold a run unless ``resume``).
        command: the command line, recorded in ``command.txt``.
        resume: continue from the directory's latest checkpoint.

    Raises:
        ConfigError, DataError: a bad config or bad data.
        StateError: a run directory that already holds a run (or, resuming, has no checkpoint).
    """
    import torch
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.utils import set_random_seed

    from agents.policies import build_model, load_model

    seed = _single_seed(config)
    paths = RunPaths(run_dir)
    started = time.time()
    if resume:
        paths.check_resumable()
        checkpoint = _latest_checkpoint(paths)
    # Everything that can be refused is checked before the run directory is made.
    prepared = preflight(config)
    if not resume:
        paths.create()
        write_config(config, paths.config)
        write_json(paths.versions, package_versions())
    if command:
        paths.append_command(command)

    if resume:
        saved = NormalizationStats.load(paths.normalization)
        if not np.array_equal(saved.center, prepared.normalization.center) or not np.array_equal(
            saved.scale, prepared.normalization.scale
        ):
            raise StateError(
                "the data no longer gives the normalization this run was trained with",
                where=str(paths.normalization),
                fix="resume with the same data, or start a new run",
            )
    else:
        prepared.normalization.save(paths.normalization)
    info: dict[str, Any] = {
        "status": STATUS_RUNNING,
        "seed": seed,
        "algo": config.algo.algo.value,
        "learning": config.learning.enabled,
        "data": prepared.reference,
        "splits": split_info(prepared),
        "periods_per_year": prepared.periods_per_year,
        "started": datetime.now(tz=UTC).isoformat(timespec="seconds"),
    }
    write_json(paths.info, info)

    train_cfg = config.train
    set_random_seed(seed)
    torch.set_num_threads(config.algo.torch_threads)
    uses_masks = config.algo.spec.uses_action_masks
    factories = [
        EnvFactory(
            config=config,
            spec=prepared.spec,
            normalization=prepared.normalization,
            span=prepared.splits.train,
            episode_length=config.env.episode_length,
            learning=config.learning.enabled,
            masks=uses_masks,
            order_id_prefix=f"{_TRAIN_PREFIX}{i}",
        )
        for i in range(train_cfg.n_envs)
    ]
    if resume:
        _restore_store(checkpoint, paths)
    training = _training(config, paths, prepared.spec, factories)
    venv, manager, snapshot = training.venv, training.manager, training.snapshot
    eval_env = None
    try:
        if resume:
            model = load_model(config.algo.algo, checkpoint / CHECKPOINT_MODEL, env=venv)
            if (checkpoint / CHECKPOINT_BUFFER).is_file():
                model.load_replay_buffer(checkpoint / CHECKPOINT_BUFFER)  # type: ignore[attr-defined]
            model.tensorboard_log = str(paths.tensorboard)
        else:
            model = build_model(config.algo, venv, seed=seed, tensorboard_log=paths.tensorboard)
        venv.seed(seed)
        callbacks: list[BaseCallback] = [training.callback]
        evaluation = None
        if train_cfg.eval_every:
            from stable_baselines3.common.vec_env import DummyVecEnv

            eval_factory = make_env_factory(
                config, prepared, SPLIT_VALIDATION, state=snapshot() if snapshot else None
            )
            eval_env = DummyVecEnv([replace(eval_factory, monitor=True)])
            eval_env.seed(seed)
            evaluation = _make_eval_callback(config, eval_env, paths, snapshot)
            if resume and (checkpoint / CHECKPOINT_EVAL).is_file():
                _restore_eval_state(evaluation, read_json(checkpoint / CHECKPOINT_EVAL))
            callbacks.append(evaluation)
        if train_cfg.checkpoint_every:
            callbacks.append(
                _make_checkpoint_callback(paths, train_cfg.checkpoint_every, training.backup, evaluation)
            )
        remaining = train_cfg.timesteps - (model.num_timesteps if resume else 0)
        if remaining > 0:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_SAME_TYPE_WARNING)
                model.learn(
                    total_timesteps=remaining,
                    callback=CallbackList(callbacks),
                    progress_bar=train_cfg.progress_bar,
                    tb_log_name=TB_LOG_NAME,
                    reset_num_timesteps=not resume,
                )
        model.save(paths.model)
        final_state = snapshot() if snapshot is not None else None
        if snapshot is not None:
            if manager is not None:
                manager.flush()  # (hosted: the callback has flushed the host's manager)
            write_json(paths.learned_state, final_state.to_dict() if final_state else {})
        metrics = evaluate_model(config, prepared, paths, model, final_state)
        metrics["timesteps"] = int(model.num_timesteps)
        write_json(paths.metrics, metrics)
        info.update(
            status=STATUS_FINISHED,
            finished=datetime.now(tz=UTC).isoformat(timespec="seconds"),
            wall_seconds=round(time.time() - started, 1),
            timesteps=int(model.num_timesteps),
            policy_sha256=policy_digest(model),
        )
        write_json(paths.info, info)
    finally:
        venv.close()
        if eval_env is not None:
            eval_env.close()
        if manager is not None:
            manager.close()
    return RunResult(run_dir=paths.root, config=config, metrics=metrics)


def evaluate_model(
    config: RunConfig,
    prepared: PreparedData,
    paths: RunPaths,
    model: BaseAlgorithm,
    final_state: LearnedState | None,
) -> dict[str, Any]:
    """Validation and test metrics of the final model and, when saved, of the best one.

    Each model is evaluated with the learned snapshot it was selected with (frozen): the final snapshot
    for the final model, the snapshot of the best validation evaluation for the best model.
    """
    from agents.policies import load_model

    seed = config.train.seeds[0]
    out: dict[str, Any] = {}
    candidates: list[tuple[str, BaseAlgorithm, LearnedState | None]] = [(MODEL_FINAL, model, final_state)]
    if paths.best_model.is_file():
        best = load_model(config.algo.algo, paths.best_model)
        candidates.append((MODEL_BEST, best, load_learned(paths.best_learned_state) or final_state))
    for label, policy, state in candidates:
        out[label] = {}
        for split in (SPLIT_VALIDATION, SPLIT_TEST):
            result = evaluate_split(config, prepared, policy, split, state=state, seed=seed, name=label)
            out[label][split] = result.metrics.to_dict()
    return out


def evaluate_split(
    config: RunConfig,
    prepared: PreparedData,
    policy: Any,
    split: str,
    *,
    state: LearnedState | None = None,
    learning: bool = True,
    seed: int = 0,
    name: str = "policy",
) -> EvaluationResult:
    """Run ``policy`` deterministically over a whole split (learning wrapper applied when enabled)."""
    env = make_env_factory(config, prepared, split, learning=learning, state=state)()
    try:
        return run_split(policy, env, name=name, seed=seed, calendar=config.data.calendar)
    finally:
        env.close()


# --- many runs -------------------------------------------------------------------------------------


def train(
    config: RunConfig,
    *,
    runs_dir: Path,
    command: Sequence[str] = (),
) -> list[RunResult]:
    """Train every (arm, seed) run of ``config`` into ``<runs_dir>/<name>/[<arm>/]<algo>-seed<k>/``.

    Every run's config, data and directory are checked before the first run starts.
    """
    plan = [
        (run_dir_for(runs_dir, config.name, arm, arm_cfg.algo.algo.value, seed), arm_cfg.for_seed(seed))
        for arm, arm_cfg in config.arms()
        for seed in arm_cfg.train.seeds
    ]
    for run_dir, run_cfg in plan:
        preflight(run_cfg)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise StateError(
                "the run directory already holds a run",
                where=str(run_dir),
                fix="resume it with --resume, pick another --name, or remove the directory",
            )
    results = []
    for run_dir, run_cfg in plan:
        log.info("training %s", run_dir)
        results.append(train_run(run_cfg, run_dir, command=command))
    return results


def resume_run(run_dir: Path, *, timesteps: int | None = None, command: Sequence[str] = ()) -> RunResult:
    """Continue a run from its latest checkpoint, in the same directory.

    Args:
        run_dir: the run directory.
        timesteps: a new total budget (default: the config's); the stored config is updated.
        command: the command line, appended to ``command.txt``.

    Raises:
        StateError: not a run directory, or no checkpoint.
    """
    paths = RunPaths(Path(run_dir))
    paths.check_resumable()
    config = load_config(paths.config)
    if timesteps is not None and timesteps != config.train.timesteps:
        config = config.model_copy(update={"train": config.train.model_copy(update={"timesteps": timesteps})})
        write_config(config, paths.config)
    return train_run(config, paths.root, command=command, resume=True)


def default_command() -> list[str]:
    """The current process's command line, as recorded in ``command.txt``."""
    return ["slf", *sys.argv[1:]] if sys.argv and Path(sys.argv[0]).name == "slf" else list(sys.argv)
