"""``slf walkforward``: train on rolling or expanding windows, test each on the next block, stitch.

::

    slf walkforward --config experiments/configs/walkforward_ppo_eurusd_1h.yaml
    slf walkforward --config FILE --windows 6 --mode expanding --embargo 24 --timesteps 5000 --seeds 0,1

Runs go to ``<runs-dir>/<name>-w<i>/<algo>-seed<k>/``; the aggregate (``walkforward.md``, ``.csv``,
``.json``, ``walkforward_equity.png``) to ``--out`` (default ``<runs-dir>/<name>/walkforward``). See
:mod:`experiments.walkforward`. Torch is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from envs.errors import ConfigError

__all__ = ["walkforward_command"]


def walkforward_command(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML config (a walkforward: section is optional).")
    ],
    windows: Annotated[int | None, typer.Option("--windows", help="Number of windows.")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="rolling or expanding.")] = None,
    embargo: Annotated[int | None, typer.Option("--embargo", help="Bars between training and test.")] = None,
    timesteps: Annotated[int | None, typer.Option("--timesteps", help="Training budget per run.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where the window runs go.")] = Path("runs"),
    out: Annotated[Path | None, typer.Option("--out", help="Output directory of the aggregate.")] = None,
) -> None:
    """Walk-forward: train each window, backtest it on the following block out of sample, aggregate."""
    from experiments.cli_train import parse_seeds
    from experiments.config import load_config
    from experiments.evaluate import report_console
    from experiments.runs import quiet_learning_logs
    from experiments.walkforward import run_walkforward, write_walkforward

    quiet_learning_logs()
    if mode is not None and mode not in ("rolling", "expanding"):
        raise ConfigError(f"unknown mode {mode!r}", where="--mode", fix="use rolling or expanding")
    if timesteps is not None and timesteps < 1:
        raise ConfigError(f"{timesteps} is not a positive budget", where="--timesteps", fix="e.g. 5000")
    if windows is not None and windows < 1:
        raise ConfigError(f"{windows} windows", where="--windows", fix="give at least 1")
    if embargo is not None and embargo < 0:
        raise ConfigError(f"embargo {embargo}", where="--embargo", fix="give a number of bars >= 0")
    run_config = load_config(config)
    console = report_console()
    with console.status("walk-forward") as status:
        wf = run_walkforward(
            run_config,
            runs_dir=runs_dir,
            windows=windows,
            mode=mode,
            embargo=embargo,
            timesteps=timesteps,
            seeds=None if seeds is None else parse_seeds(seeds),
            progress=lambda label: status.update(label),
        )
    out_dir = out or runs_dir / run_config.name / "walkforward"
    paths = write_walkforward(wf, out_dir)
    console.print(paths["markdown"].read_text(encoding="utf-8").split("## Windows")[0])
    for key in ("markdown", "csv", "json", "equity"):
        console.print(f"{key}: {paths[key]}", soft_wrap=True)
