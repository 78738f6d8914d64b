"""``slf demo``: train PPO with and without the learning manager on bundled data, compare on the test split.

What ``make demo`` runs. Torch and SB3 are imported only when the demo starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from envs.errors import ConfigError
from experiments.runs import DEFAULT_RUNS_DIR, quiet_learning_logs

__all__ = ["demo_command"]

# Kept here (not imported from experiments.demo) so that `slf --help` does not load the demo's imports.
DEFAULT_TIMESTEPS = 40_000


def demo_command(
    timesteps: Annotated[
        int, typer.Option("--timesteps", help="Training steps per arm (both arms train the same budget).")
    ] = DEFAULT_TIMESTEPS,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Directory for the demo's runs and report (runs/demo[-k]/).")
    ] = Path(DEFAULT_RUNS_DIR),
    seed: Annotated[int, typer.Option("--seed", help="Seed of both arms (and of the random baseline).")] = 0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar while training.")
    ] = True,
) -> None:
    """Train PPO with and without the learning manager on EUR/USD and compare them on the test split.

    Both arms use the same seed; the baselines are evaluated too. Writes report.md and equity.png.
    """
    from experiments.demo import run_demo
    from experiments.train import default_command

    quiet_learning_logs()
    if timesteps < 1:
        raise ConfigError(f"{timesteps} is not a positive budget", where="--timesteps", fix="e.g. 30000")
    if seed < 0:
        raise ConfigError(f"seed {seed} is negative", where="--seed", fix="use an integer >= 0")
    run_demo(timesteps=timesteps, runs_dir=runs_dir, seed=seed, progress=progress, command=default_command())
