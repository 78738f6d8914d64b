"""``slf compare``: every policy and baseline on the same test split, with intervals over seeds.

::

    slf compare runs/demo                                  # both ablation arms, every seed, baselines
    slf compare runs/a runs/b --baselines buy_and_hold,random --out reports/ab

See :mod:`experiments.compare` for the statistics. Runs whose data or test split differ are refused.
Torch is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from envs.errors import ConfigError
from experiments.runs import DEFAULT_RUNS_DIR

__all__ = ["compare_command", "parse_baselines"]

DEFAULT_OUT = Path(DEFAULT_RUNS_DIR) / "comparisons"
_CONSOLE_COLUMNS = (
    "policy",
    "seeds",
    "return",
    "Sharpe",
    "max DD",
    "PSR (mean)",
    "DSR (best seed)",
    "vs buy&hold: t, p",
)


def parse_baselines(text: str) -> list[str]:
    """``"buy_and_hold,random"`` -> names, each checked (with a "did you mean"); ``""``/``none``: none."""
    from experiments.backtest import check_baseline

    if text.strip().lower() in ("", "none"):
        return []
    names = [p.strip() for p in text.split(",") if p.strip()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{text!r} repeats a baseline", where="--baselines", fix="list each once")
    return [check_baseline(n) for n in names]


def compare_command(
    dirs: Annotated[
        list[Path], typer.Argument(help="Run directories, or parents of several (e.g. runs/demo).")
    ],
    baselines: Annotated[
        str,
        typer.Option(
            "--baselines",
            help="Comma-separated baselines (or 'none'): buy_and_hold, flat, random, sma_crossover, "
            "learned_weights.",
        ),
    ] = "buy_and_hold,flat,random,sma_crossover,learned_weights",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory (default: runs/comparisons/<first dir name>)."),
    ] = None,
) -> None:
    """Backtest every run under DIRS and the baselines on the same test split; mean and 95% CI over
    seeds, probabilistic and deflated Sharpe ratios, Newey-West test against buy-and-hold."""
    from rich.table import Table

    from experiments.compare import compare_runs, table_rows, write_comparison
    from experiments.evaluate import report_console
    from experiments.runs import quiet_learning_logs

    quiet_learning_logs()
    names = parse_baselines(baselines)
    console = report_console()
    with console.status("backtesting") as status:
        comparison = compare_runs(dirs, baselines=names, progress=lambda label: status.update(label))
    out_dir = out or DEFAULT_OUT / (dirs[0].resolve().name or "comparison")
    paths = write_comparison(comparison, out_dir)
    header, rows = table_rows(comparison)
    # The terminal gets the headline columns; every column is in the Markdown, HTML and CSV files.
    shown = [header.index(c) for c in _CONSOLE_COLUMNS]
    table = Table(title="test split: mean [95% CI] over seeds (fewer than 3 seeds: no interval)")
    for i in shown:
        table.add_column(header[i], justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    console.print(table)
    for note in comparison.notes:
        console.print(f"note: {note}")
    for key in ("markdown", "html", "csv"):
        console.print(f"{key}: {paths[key]}", soft_wrap=True)
