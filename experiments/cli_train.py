"""``slf train``: train policies from a YAML config, one run directory per (arm, seed).

Bad input (an unknown algorithm, a bad seed list, a missing config file, a directory that is not a
resumable run) raises :class:`~envs.errors.ConfigError` or :class:`~envs.errors.StateError`, which
``slf`` prints as one ``error: ...`` line with exit status 2. Torch and SB3 are imported only when a
run starts, so ``slf --help`` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.console import Console
from rich.table import Table

from agents.policies import AlgoName
from envs.errors import ConfigError, did_you_mean
from experiments.config import apply_overrides, load_config
from experiments.evaluate import report_console
from experiments.hints import shell_command
from experiments.runs import DEFAULT_RUNS_DIR, quiet_learning_logs

if TYPE_CHECKING:
    from experiments.train import RunResult

__all__ = ["parse_algo", "parse_seeds", "train_command"]

_RESUME_EXCLUSIVE: Final = ("--config", "--algo", "--seeds", "--name")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``.

    Raises:
        ConfigError: not a comma-separated list of distinct integers >= 0.
    """
    parts = [p.strip() for p in text.split(",")]
    seeds: list[int] = []
    for part in parts:
        if not part.isdigit():
            raise ConfigError(
                f"{text!r} is not a list of seeds ({part!r} is not an integer >= 0)",
                where="--seeds",
                fix="write comma-separated integers, e.g. --seeds 0,1,2",
            )
        seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{text!r} repeats a seed", where="--seeds", fix="list each seed once")
    return seeds


def parse_algo(name: str) -> AlgoName:
    """An algorithm name of the registry (case-insensitive).

    Raises:
        ConfigError: an unknown name, with the closest known one.
    """
    names = [a.value for a in AlgoName]
    try:
        return AlgoName(name.lower())
    except ValueError:
        raise ConfigError(
            f"unknown algorithm {name!r}{did_you_mean(name.lower(), names)}",
            where="--algo",
            fix=f"use one of {', '.join(names)}",
        ) from None


def _evaluated(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Which model's metrics the summary shows (the best one when it was saved) and a note saying so."""
    from experiments.train import MODEL_BEST, MODEL_FINAL

    if metrics.get(MODEL_BEST):
        return "best_model.zip, selected on the validation split", metrics[MODEL_BEST]
    if metrics.get(MODEL_FINAL):
        return "model.zip, the final model (no best_model.zip: no periodic validation)", metrics[MODEL_FINAL]
    return "no model (nothing was evaluated)", {}


def _summary(results: list[RunResult], console: Console, runs_dir: Path) -> None:
    table = Table(title="runs", show_lines=False)
    for column in ("run", "val return", "val sharpe", "test return", "test sharpe", "trades (test)"):
        table.add_column(column, justify="left" if column == "run" else "right", overflow="fold")
    notes: list[str] = []
    for result in results:
        note, metrics = _evaluated(result.metrics)
        if note not in notes:
            notes.append(note)
        val = metrics.get("validation", {})
        test = metrics.get("test", {})
        table.add_row(
            _label(result.run_dir, runs_dir),
            f"{val.get('total_return', 0.0):+.2%}",
            f"{val.get('sharpe', 0.0):.2f}",
            f"{test.get('total_return', 0.0):+.2%}",
            f"{test.get('sharpe', 0.0):.2f}",
            str(test.get("trades", 0)),
        )
    console.print(table)
    console.print(f"(metrics of {'; '.join(notes)}; all in metrics.json)")
    for result in results:
        console.print(f"run directory: {result.run_dir}", soft_wrap=True)
    logdir = Path(os.path.commonpath([r.run_dir for r in results])) if results else runs_dir
    console.print(f"TensorBoard: {shell_command('tensorboard', '--logdir', logdir)}", soft_wrap=True)


def _label(run_dir: Path, runs_dir: Path) -> str:
    try:
        return str(run_dir.relative_to(runs_dir))
    except ValueError:
        return str(run_dir)


def _runs_dir_of(run_dir: Path, name: str) -> Path:
    """The runs directory holding ``run_dir`` (``<runs>/<name>/[<arm>/]<algo>-seed<k>``)."""
    for parent in run_dir.parents:
        if parent.name == name:
            return parent.parent
    return run_dir.parent


def train_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML experiment config (see experiments/configs/)."),
    ] = None,
    algo: Annotated[
        str | None,
        typer.Option("--algo", help="Override algo.algo: ppo, a2c, dqn, sac, td3, maskable_ppo, ..."),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Override train.seeds: comma-separated, e.g. 0,1,2.")
    ] = None,
    timesteps: Annotated[
        int | None,
        typer.Option("--timesteps", help="Override train.timesteps (with --resume: the new total budget)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Override the experiment name (the run directory name).")
    ] = None,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Directory that holds the run directories.")
    ] = Path(DEFAULT_RUNS_DIR),
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue a run directory from its latest checkpoint (takes the run's own config).",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Show a progress bar (default: train.progress_bar)."),
    ] = None,
) -> None:
    """Train a policy with the learning manager beside it: one run per seed and ablation arm.

    Each run writes <runs-dir>/<name>/[<arm>/]<algo>-seed<k>/ (see experiments/runs.py).
    """
    from experiments.train import default_command, resume_run, train

    quiet_learning_logs()
    console = report_console()
    if timesteps is not None and timesteps < 1:
        raise ConfigError(f"{timesteps} is not a positive budget", where="--timesteps", fix="e.g. 50000")
    command = default_command()
    if resume is not None:
        given = [
            flag for flag, value in zip(_RESUME_EXCLUSIVE, (config, algo, seeds, name), strict=True) if value
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be combined with --resume",
                where="--resume",
                fix="a resumed run keeps its own config; only --timesteps may extend its budget",
            )
        result = resume_run(resume, timesteps=timesteps, command=command)
        _summary([result], console, _runs_dir_of(result.run_dir, result.config.name))
        return
    if config is None:
        raise ConfigError(
            "no config given",
            where="slf train",
            fix="pass --config FILE (e.g. experiments/configs/ppo_eurusd_1h.yaml)",
        )
    run_config = load_config(config)
    overrides: dict[str, Any] = {}
    if algo is not None:
        overrides["algo.algo"] = parse_algo(algo).value
    if seeds is not None:
        overrides["train.seeds"] = parse_seeds(seeds)
    if timesteps is not None:
        overrides["train.timesteps"] = timesteps
    if name is not None:
        overrides["name"] = name
    if progress is not None:
        overrides["train.progress_bar"] = progress
    if overrides:
        run_config = apply_overrides(run_config, overrides, source="command line")
    results = train(run_config, runs_dir=runs_dir, command=command)
    _summary(results, console, runs_dir)
