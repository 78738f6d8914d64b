"""Run a trained policy (from its run directory) or a baseline over a data split or a date range.

:func:`backtest_run` evaluates a run directory written by ``slf train`` exactly as it was trained: its
own resolved ``config.yaml`` (data, features, env options), its stored ``normalization.json`` (fitted on
its training split) and its ``best_model.zip`` or ``model.zip``. The learning manager beside it is

* ``frozen`` (the default for runs trained with it): a read-only snapshot is applied -- the snapshot the
  best model was selected with (``best_learned_state.pkl``), or the store's final state for the final
  model; nothing is written anywhere;
* ``online``: a :class:`~learning.manager.UniversalLearningManager` is opened on a **copy** of the run's
  learning store inside the output directory and keeps learning from the backtest's trades, errors and
  vetoes, its new snapshots re-applied to the env as they appear (the same
  :class:`~agents.callbacks.LearningCallback` that feeds it in training, driven bar by bar). The run's
  own store is never opened for writing;
* ``off``: the bare policy, no wrapper.

:func:`backtest_baseline` runs a rule from :mod:`agents.baselines` over a run's data and env (so it
compares with the run) or over any dataset or file with the default env options of
:class:`experiments.config.EnvConfig`-like :class:`BaselineEnv` (100,000 cash, long-only, default
costs of the dataset's market spec, the default 70/15/15 splits with their embargo).

The span is a split (``train``, ``validation``, ``test``; the test split by default), optionally
narrowed to ``[start, end)``; ``split=None`` with a date range takes the range over all the data.
A run's backtest that reaches into its training or validation rows is flagged ``in_sample`` in
``meta`` (and by the CLI): only the test split is out of sample.

Engines: the NumPy export of :mod:`backtests.fast_policy` when the policy is exportable and no learning
wrapper is active (``engine="numpy"``), else ``model.predict`` at every bar (``engine="predict"``,
action masks and recurrent state handled).

This module reads configs and run directories through ``experiments`` lazily (inside functions): the
package import stays light and free of torch.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from agents.baselines import BASELINES, LearnedWeightsSignal, make_baseline
from backtests.fast_policy import _Recorder, run_policy_fast
from backtests.results import BacktestResult
from envs.errors import ConfigError, DataError, StateError, did_you_mean
from envs.replay import MarketReplayEnv

if TYPE_CHECKING:
    import gymnasium as gym

    from experiments.config import RunConfig, Span
    from experiments.train import PreparedData
    from learning.manager import UniversalLearningManager
    from learning.state import LearnedState

__all__ = [
    "BASELINE_NAMES",
    "LEARNING_MODES",
    "MODEL_CHOICES",
    "SPLITS",
    "BacktestRun",
    "LearningMode",
    "ModelChoice",
    "backtest_baseline",
    "backtest_run",
    "baseline_config",
    "check_baseline",
    "default_out",
    "load_run",
    "select_span",
    "used_model",
]

log = logging.getLogger(__name__)

LearningMode = Literal["frozen", "online", "off"]
ModelChoice = Literal["best", "final"]
LEARNING_MODES: Final = ("frozen", "online", "off")
MODEL_CHOICES: Final = ("best", "final")
SPLITS: Final = ("train", "validation", "test")
DEFAULT_SPLIT: Final = "test"
BASELINE_NAMES: Final = tuple(BASELINES)
BASELINE_RUN_NAME: Final = "baseline"
BACKTESTS_DIRNAME: Final = "backtests"
BASELINE_CASH: Final = 100_000.0
"""Starting cash of a baseline over a dataset without a run (as the shipped configs use)."""
_SEED: Final = 0


@dataclass
class BacktestRun:
    """A finished backtest and what it needs for its report.

    Attributes:
        result: equity, positions, orders, trades, metrics.
        engine: ``"numpy"`` (exported policy) or ``"predict"`` (``predict`` every bar).
        learning: the learning mode that was used.
        manager: the online manager (open) or ``None``; close it with :meth:`close`.
        state: the frozen snapshot, or the online manager's final one.
        config: the resolved config the env was built from.
        in_sample: the span reaches into the run's training or validation rows.
    """

    result: BacktestResult
    engine: str
    learning: LearningMode
    config: RunConfig
    manager: UniversalLearningManager | None = None
    state: LearnedState | None = None
    in_sample: bool = False
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()
            self.manager = None


# --- inputs ----------------------------------------------------------------------------------------


def check_baseline(name: str) -> str:
    """A known baseline name, else :class:`ConfigError` with a "did you mean"."""
    if name not in BASELINES:
        raise ConfigError(
            f"unknown baseline {name!r}{did_you_mean(name, BASELINES)}",
            where="--baseline",
            fix=f"use one of {', '.join(BASELINES)}",
        )
    return name


def load_run(run_dir: str | Path) -> tuple[RunConfig, Path]:
    """The resolved config of a finished run directory.

    Raises:
        StateError: not a run directory, or one without a trained model.
    """
    from experiments.config import load_config
    from experiments.runs import RunPaths

    paths = RunPaths(Path(run_dir))
    paths.check_resumable()
    if not paths.model.is_file() and not paths.best_model.is_file():
        raise StateError(
            "the run has no model.zip (unfinished or failed run)",
            where=str(paths.root),
            fix="let `slf train` finish, or resume it with `slf train --resume DIR`",
        )
    return load_config(paths.config), paths.root


def _prepared(config: RunConfig, run_dir: Path | None) -> PreparedData:
    """The run's data and splits, with the normalization the run stored (fitted on its train split)."""
    from envs.features import NormalizationStats
    from experiments.runs import RunPaths
    from experiments.train import prepare_data

    prepared = prepare_data(config)
    if run_dir is None:
        return prepared
    norm_path = RunPaths(run_dir).normalization
    if not norm_path.is_file():
        raise StateError(
            "the run has no normalization.json", where=str(run_dir), fix="re-run `slf train` for this run"
        )
    return replace(prepared, normalization=NormalizationStats.load(norm_path))


def _when(text: str, flag: str) -> int:
    """Epoch nanoseconds of a date (naive: UTC)."""
    import pandas as pd

    try:
        ts = pd.Timestamp(text)
    except (TypeError, ValueError):
        ts = None
    if ts is None or ts is pd.NaT:
        raise ConfigError(
            f"cannot read {text!r} as a date", where=flag, fix="write a date such as 2017-10-01"
        )
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def _row(time_ns: np.ndarray[Any, Any], when: str, flag: str) -> int:
    return int(np.searchsorted(time_ns, _when(when, flag), side="left"))


def select_span(
    prepared: PreparedData, split: str | None, start: str | None = None, end: str | None = None
) -> tuple[Span, str]:
    """The rows to replay and a label: a split, narrowed to ``[start, end)`` when given.

    ``split=None`` means the test split without a date range, all the data with one.

    Raises:
        ConfigError: an unknown split, ``start`` not before ``end``, or a range with no bar.
    """
    from experiments.config import Span

    if split is not None and split not in SPLITS:
        raise ConfigError(
            f"unknown split {split!r}{did_you_mean(split, SPLITS)}",
            where="--split",
            fix=f"use one of {', '.join(SPLITS)}",
        )
    times = prepared.market.time_ns
    if start is not None and end is not None and _when(start, "--start") >= _when(end, "--end"):
        raise ConfigError(
            f"--start {start} is not before --end {end}", where="--start/--end", fix="swap or widen them"
        )
    if split is None and start is None and end is None:
        split = DEFAULT_SPLIT
    span = getattr(prepared.splits, split) if split is not None else Span(0, len(times))
    lo = span.start if start is None else max(span.start, _row(times, start, "--start"))
    hi = span.end if end is None else min(span.end, _row(times, end, "--end"))
    if hi - lo < 2:
        where = f"the {split} split" if split is not None else "the data"
        raise ConfigError(
            f"--start/--end select {max(hi - lo, 0)} bar(s) of {where} "
            f"({_iso(times, span.start)} .. {_iso(times, span.end - 1)})",
            where="--start/--end",
            fix="pick dates inside that range, or drop --split to select from all the data",
        )
    label = split or "range"
    if start is not None or end is not None:
        label = f"{label}[{_iso(times, lo)[:10]}..{_iso(times, hi - 1)[:10]}]"
    return Span(lo, hi), label


def _iso(times: np.ndarray[Any, Any], row: int) -> str:
    import pandas as pd

    return str(pd.Timestamp(int(times[row]), unit="ns", tz="UTC").isoformat())


def _in_sample(prepared: PreparedData, span: Span) -> bool:
    warm = prepared.market.features.warmup
    first = max(span.start, warm)
    return first < prepared.splits.validation.end and span.end > prepared.splits.train.start


# --- progress --------------------------------------------------------------------------------------


@contextmanager
def _progress(env: MarketReplayEnv, span: Span, enabled: bool, label: str) -> Iterator[None]:
    """A tqdm bar over the bars of the span, advanced by every ``env.step``.

    The bar is attached as an instance attribute around ``step`` (the backtest loops look ``step`` up
    on the instance), so both engines report progress without a wrapper the NumPy path would refuse.
    """
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=max(span.end - span.start - 1, 1), desc=label, unit="bar", leave=False)
    inner = env.step

    def step(action: Any) -> Any:
        out = inner(action)
        bar.update(1)
        return out

    env.step = step  # type: ignore[method-assign]
    try:
        yield
    finally:
        del env.step
        bar.close()


# --- the slow loop (wrappers, masks, recurrent state, online learning) ------------------------------


class _SingleEnv:
    """The part of a ``VecEnv`` :class:`~agents.callbacks.LearningCallback` talks to, over one env."""

    num_envs = 1

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env = env
        self.reset_infos: list[dict[str, Any]] = [{}]

    @property
    def unwrapped(self) -> _SingleEnv:
        return self

    def has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
        except AttributeError:
            return False
        return True

    def env_method(self, name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [self.env.get_wrapper_attr(name)(*args, **kwargs)]


class _Driver:
    """Stands in for the SB3 model a callback is attached to: step count, logger, env."""

    def __init__(self, venv: _SingleEnv) -> None:
        from stable_baselines3.common.logger import Logger

        self.num_timesteps = 0
        self.logger = Logger(folder=None, output_formats=[])
        self._venv = venv

    def get_env(self) -> _SingleEnv:
        return self._venv


class _OnlineFeeder:
    """Feeds a manager from a single env's steps through the training callback (same semantics)."""

    def __init__(self, manager: UniversalLearningManager, config: RunConfig, env: gym.Env[Any, Any]) -> None:
        from agents.callbacks import LearningCallback

        switches = config.learning.switches().model_copy(update={"enabled": True, "online": True})
        self.venv = _SingleEnv(env)
        self.driver = _Driver(self.venv)
        self.callback = LearningCallback(manager, switches)

    def start(self, reset_info: dict[str, Any]) -> None:
        self.venv.reset_infos = [reset_info]
        self.callback.init_callback(self.driver)  # type: ignore[arg-type]
        self.callback.on_training_start({}, {})

    def step(self, info: dict[str, Any], done: bool) -> None:
        self.driver.num_timesteps += 1
        self.callback.update_locals({"infos": [info], "dones": [done]})
        self.callback.on_step()

    def finish(self) -> None:
        self.callback.on_training_end()


def _accepts_masks(policy: Any) -> bool:
    import inspect

    try:
        return "action_masks" in inspect.signature(policy.predict).parameters
    except (TypeError, ValueError):
        return False


def _slow_loop(
    policy: Any,
    env: gym.Env[Any, Any],
    *,
    name: str,
    seed: int,
    feeder: _OnlineFeeder | None = None,
) -> BacktestResult:
    """``policy.predict`` at every bar of ``env`` (possibly wrapped), recording the replay env."""
    replay = env.unwrapped
    if not isinstance(replay, MarketReplayEnv):
        raise ConfigError(f"not a replay env: {type(replay).__name__}", where="env")
    masks: Callable[[], Any] | None = None
    if _accepts_masks(policy):
        try:
            masks = env.get_wrapper_attr("action_masks")
        except AttributeError:
            masks = None
    obs, info = env.reset(seed=seed)
    if feeder is not None:
        feeder.start(info)
    rec = _Recorder(replay, info)
    state: Any = None
    episode_start = np.ones((1,), dtype=bool)
    vetoed = 0
    done = False
    while not done:
        kwargs: dict[str, Any] = {"state": state, "episode_start": episode_start, "deterministic": True}
        if masks is not None:
            kwargs["action_masks"] = masks()
        action, state = policy.predict(obs, **kwargs)
        episode_start = np.zeros((1,), dtype=bool)
        target = replay.target_of(action)
        obs, _, terminated, truncated, info = env.step(action)
        done = bool(terminated or truncated)
        vetoed += len(info.get("vetoed", ()))
        rec.step(target, info)
        if feeder is not None:
            feeder.step(info, done)
    if feeder is not None:
        feeder.finish()
    return rec.result(name, "predict", {"policy": repr(policy)[:200], "vetoed": vetoed})


# --- learning state --------------------------------------------------------------------------------


def _copy_store(run_dir: Path, out_dir: Path) -> None:
    """Copy the run's committed learning store (and archive) into ``out_dir``, reading it read-only."""
    from learning.store import ARCHIVE_DIRNAME, STORE_DIRNAME, STORE_FILENAME

    source_path = run_dir / STORE_DIRNAME / STORE_FILENAME
    if not source_path.is_file():
        raise StateError(
            "the run has no learning store to learn online from",
            where=str(run_dir),
            fix="use --learning frozen or off, or a run trained with learning.enabled: true",
        )
    target = out_dir / STORE_DIRNAME
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(target / STORE_FILENAME)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    archive = run_dir / ARCHIVE_DIRNAME
    if archive.is_dir():
        dest_archive = out_dir / ARCHIVE_DIRNAME
        shutil.rmtree(dest_archive, ignore_errors=True)
        shutil.copytree(archive, dest_archive)


def _frozen_state(config: RunConfig, run_dir: Path, model: ModelChoice) -> LearnedState | None:
    """The snapshot the chosen model is evaluated with: the best model's, else the store's final one."""
    from experiments.runs import RunPaths, load_learned
    from learning.manager import UniversalLearningManager
    from learning.store import STORE_DIRNAME, STORE_FILENAME

    paths = RunPaths(run_dir)
    if model == "best":
        state = load_learned(paths.best_learned_state)
        if state is not None:
            return state
    if not (run_dir / STORE_DIRNAME / STORE_FILENAME).is_file():
        return None
    manager = UniversalLearningManager(run_dir, config=config.learning.config, create=False, read_only=True)
    try:
        return manager.snapshot()
    finally:
        manager.close()


# --- entry points ----------------------------------------------------------------------------------


def default_out(run_dir: Path | None, name: str) -> Path:
    """Where a backtest writes without ``--out``: ``<run>/backtests/<name>/`` for a run, else
    ``runs/backtests/<name>/`` (results never go into the source tree)."""
    from experiments.runs import DEFAULT_RUNS_DIR

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    base = run_dir if run_dir is not None else Path(DEFAULT_RUNS_DIR)
    return base / BACKTESTS_DIRNAME / safe


def used_model(run_dir: Path, model: ModelChoice) -> ModelChoice:
    """The model a backtest of ``run_dir`` actually runs: ``best`` falls back to ``final`` (``model.zip``)
    when the run saved no ``best_model.zip``."""
    from experiments.runs import RunPaths

    if model == "best" and not RunPaths(run_dir).best_model.is_file():
        return "final"
    return model


def _model_path(run_dir: Path, model: ModelChoice) -> tuple[Path, list[str]]:
    from experiments.runs import RunPaths

    paths = RunPaths(run_dir)
    if used_model(run_dir, model) != model:
        return paths.model, ["no best_model.zip (no periodic evaluation): used model.zip"]
    if model == "best":
        return paths.best_model, []
    if not paths.model.is_file():
        raise StateError("the run has no model.zip", where=str(run_dir), fix="use --model best")
    return paths.model, []


def backtest_run(
    run_dir: str | Path,
    *,
    split: str | None = None,
    start: str | None = None,
    end: str | None = None,
    learning: LearningMode | None = None,
    model: ModelChoice = "best",
    out_dir: str | Path | None = None,
    progress: bool = False,
    seed: int | None = None,
    prepared: PreparedData | None = None,
) -> BacktestRun:
    """Backtest a trained run over a split (the test split by default) or a date range.

    Args:
        run_dir: a run directory written by ``slf train``.
        split, start, end: the span (see :func:`select_span`).
        learning: ``frozen``, ``online`` or ``off``; default ``frozen`` for a run trained with the
            learning manager, ``off`` otherwise.
        model: ``best`` (``best_model.zip``, selected on the validation split) or ``final``.
        out_dir: where an online manager's store copy lives (default: ``<run>/backtests/...``).
        progress: show a progress bar over the bars.
        seed: reset seed (fault draws, order ids); default the run's seed.
        prepared: the run's data, already prepared (shared across runs of one comparison).

    Raises:
        StateError: not a finished run directory.
        ConfigError: a bad span, or a learning mode the run cannot provide.
    """
    from agents.policies import load_model
    from experiments.train import make_env_factory

    if learning is not None and learning not in LEARNING_MODES:
        raise ConfigError(
            f"unknown learning mode {learning!r}", where="--learning", fix="use frozen, online or off"
        )
    if model not in MODEL_CHOICES:
        raise ConfigError(f"unknown model {model!r}", where="--model", fix="use best or final")
    config, root = load_run(run_dir)
    trained_with = config.learning.enabled
    mode: LearningMode = learning or ("frozen" if trained_with else "off")
    if mode != "off" and not trained_with:
        raise ConfigError(
            f"--learning {mode}: the run was trained without the learning manager",
            where=str(root),
            fix="use --learning off (the default for this run)",
        )
    if prepared is None:
        prepared = _prepared(config, root)
    else:
        prepared = replace(prepared, normalization=_prepared_norm(root))
    span, label = select_span(prepared, split, start, end)
    run_seed = config.train.seeds[0] if seed is None else seed
    path, notes = _model_path(root, model)
    policy = load_model(config.algo.algo, path)
    name = f"{config.algo.algo.value}-seed{config.train.seeds[0]}"

    manager = None
    state = None
    if mode == "frozen":
        state = _frozen_state(config, root, model)
    elif mode == "online":
        from learning.manager import UniversalLearningManager

        used = used_model(root, model)
        out = Path(out_dir) if out_dir is not None else default_out(root, f"{used}_online_{label}")
        _copy_store(root, out)
        manager = UniversalLearningManager(out, config=config.learning.config, market_specs=[prepared.spec])
        state = manager.snapshot()
    factory = make_env_factory(config, prepared, "test", learning=mode != "off", state=state)
    factory = replace(factory, span=span)
    env = factory()
    replay = env.unwrapped
    assert isinstance(replay, MarketReplayEnv)  # the factory builds one (not user input)
    engine = "predict"
    try:
        with _progress(replay, span, progress, f"{name} {label}"):
            if mode == "off":
                try:
                    from backtests.fast_policy import export_policy

                    exported = export_policy(policy)
                except ConfigError as exc:
                    notes.append(f"slow path: {exc.problem}")
                else:
                    engine = "numpy"
                    result = run_policy_fast(exported, replay, seed=run_seed, name=name)
            if engine == "predict":
                feeder = _OnlineFeeder(manager, config, env) if manager is not None else None
                result = _slow_loop(policy, env, name=name, seed=run_seed, feeder=feeder)
    except BaseException:
        if manager is not None:
            manager.close()
        raise
    finally:
        env.close()
    if manager is not None:
        manager.flush()
        state = manager.snapshot()
    in_sample = _in_sample(prepared, span)
    if in_sample:
        notes.append("IN-SAMPLE: the span overlaps the run's training or validation rows")
    result.meta.update(
        run_dir=str(root),
        model=path.name,
        learning=mode,
        span=label,
        rows=[span.start, span.end],
        seed=run_seed,
        algo=config.algo.algo.value,
        arm="learning" if trained_with else "no_learning",
        data=prepared.reference,
        in_sample=in_sample,
        calendar=_metrics_calendar(config),
    )
    return BacktestRun(
        result=result,
        engine=engine,
        learning=mode,
        config=config,
        manager=manager,
        state=state,
        in_sample=in_sample,
        notes=notes,
    )


def _prepared_norm(run_dir: Path) -> Any:
    from envs.features import NormalizationStats
    from experiments.runs import RunPaths

    return NormalizationStats.load(RunPaths(run_dir).normalization)


def _metrics_calendar(config: RunConfig) -> str | None:
    """The metrics calendar of a run's ``data.calendar``: ``24/7`` when the config says so, else
    ``None`` (detected from the bars: FX and stocks both trade 252 days, the metrics library tells them
    apart by their bars per day)."""
    return "24/7" if config.data.calendar.value == "24/7" else None


def baseline_config(data: str, *, symbol: str | None = None) -> RunConfig:
    """The config a baseline runs with over a dataset name or a CSV/Parquet file, without a run.

    Env defaults: 100,000 cash, long-only (a baseline's long/flat targets), window 16, the dataset's
    market spec (fees, spread, lot rules), default 70/15/15 splits with their embargo.

    Raises:
        DataError: neither an existing file nor a known dataset name.
    """
    from envs.data import dataset_info
    from experiments.config import RunConfig

    source: dict[str, Any]
    if Path(data).is_file():
        source = {"path": str(Path(data).resolve())}
    elif Path(data).suffix.lower() in (".csv", ".parquet", ".pq"):
        raise DataError("no such file", where=data, fix="check the path")
    else:
        dataset_info(data)  # raises with a "did you mean"
        source = {"dataset": data}
    if symbol is not None:
        source["symbol"] = symbol
    return RunConfig.model_validate(
        {
            "name": BASELINE_RUN_NAME,
            "data": source,
            "env": {"initial_cash": BASELINE_CASH, "allow_short": False, "episode_length": None},
            "learning": {"enabled": False},
        }
    )


def backtest_baseline(
    name: str,
    *,
    config: RunConfig,
    run_dir: str | Path | None = None,
    split: str | None = None,
    start: str | None = None,
    end: str | None = None,
    progress: bool = False,
    seed: int = _SEED,
    learned_state: LearnedState | None = None,
    prepared: PreparedData | None = None,
) -> BacktestResult:
    """Backtest a baseline over ``config``'s data and env (a run's, or :func:`baseline_config`).

    ``learned_weights`` needs a learned state: ``learned_state=``, or ``run_dir`` of a run trained with
    the learning manager (its best snapshot).

    Raises:
        ConfigError: an unknown baseline, or ``learned_weights`` without a learned state.
    """
    from experiments.train import make_env_factory

    check_baseline(name)
    root = Path(run_dir) if run_dir is not None else None
    if prepared is None:
        prepared = _prepared(config, root)
    if name == LearnedWeightsSignal.name and learned_state is None:
        if root is None or not config.learning.enabled:
            raise ConfigError(
                "the learned_weights baseline needs a run trained with the learning manager",
                where="--baseline learned_weights",
                fix="add --run DIR of such a run (its learned strategy weights are used, frozen)",
            )
        learned_state = _frozen_state(config, root, "best")
    span, label = select_span(prepared, split, start, end)
    factory = replace(make_env_factory(config, prepared, "test", learning=False, monitor=False), span=span)
    env = factory()
    replay = env.unwrapped
    assert isinstance(replay, MarketReplayEnv)  # built by the factory
    try:
        policy = make_baseline(name, env, seed=seed, learned_state=learned_state)
        with _progress(replay, span, progress, f"{name} {label}"):
            result = _slow_loop(policy, env, name=name, seed=seed)
    finally:
        env.close()
    result.meta.update(
        baseline=name,
        learning="off",
        span=label,
        rows=[span.start, span.end],
        seed=seed,
        data=prepared.reference,
        calendar=_metrics_calendar(config),
        run_dir=None if root is None else str(root),
    )
    return result
