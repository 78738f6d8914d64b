"""``slf backtest``: run a trained policy or a baseline over a split or date range and save the result.

::

    slf backtest --run runs/ppo_eurusd_1h/ppo-seed0 --report              # its test split, frozen
    slf backtest --run DIR --learning online --split validation
    slf backtest --baseline sma_crossover --data eurusd_1h --start 2017-10-01 --end 2017-12-01
    slf backtest --baseline learned_weights --run DIR                    # needs the run's learned state

The output directory (``--out``; default ``<run>/backtests/<model>_<learning>_<span>/`` for a run, with
``<model>`` the model actually run (``final`` when the run saved no best model), ``<run>/backtests/
<baseline>_<span>/`` for a baseline on a run's data, and ``runs/backtests/<baseline>_<data>_<span>/`` for
a baseline on ``--data``) gets the :class:`~backtests.results.BacktestResult`
files (``curve.parquet``, ``orders.parquet``, ``trades.parquet``, ``trades.csv``, ``metrics.json``,
``meta.json``), with ``--report`` also ``report.html`` and its PNGs, and with ``--learning online`` the
online manager's copy of the learning store (``learning/state.sqlite``). Torch is imported only when the
command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from envs.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from backtests.results import BacktestResult

__all__ = ["backtest_command", "metrics_rows"]

_SHOWN = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "trades", "exposure")


def metrics_rows(results: dict[str, BacktestResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a short metrics table (one row per result)."""
    from backtests.metrics import METRIC_LABELS

    header = ["policy", *(METRIC_LABELS[k] for k in _SHOWN)]
    rows = []
    for name, result in results.items():
        values = dict(result.metrics.rows())
        rows.append([name, *(values[METRIC_LABELS[k]] for k in _SHOWN)])
    return header, rows


def _print_table(console: Console, results: dict[str, BacktestResult], title: str) -> None:
    from rich.table import Table

    header, rows = metrics_rows(results)
    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _nothing() -> None:
    return None


def backtest_command(
    run: Annotated[Path | None, typer.Option("--run", help="Run directory written by `slf train`.")] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Baseline instead of a policy: buy_and_hold, flat, random, sma_crossover, learned_weights.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset name (`slf data list`) or CSV/Parquet file, for --baseline."),
    ] = None,
    symbol: Annotated[
        str | None, typer.Option("--symbol", help="Symbol to trade in a multi-symbol file (with --data).")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split", help="train, validation or test (default: test; all data with a date range)."
        ),
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="First bar (a date, UTC).")] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="End of the span (exclusive, a date, UTC).")
    ] = None,
    learning: Annotated[
        str | None,
        typer.Option(
            "--learning",
            help="frozen (the run's snapshot, read-only), online (keeps learning on a copy of the run's "
            "store) or off. Default: frozen for runs trained with the manager, else off.",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="best (best_model.zip, chosen on validation) or final.")
    ] = "best",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output directory (default: <run>/backtests/... with --run, else runs/backtests/...).",
        ),
    ] = None,
    report: Annotated[bool, typer.Option("--report", help="Also write report.html and PNG plots.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
) -> None:
    """Backtest a trained run (its test split by default) or a baseline; save equity, orders, trades,
    metrics (and a report)."""
    from experiments.backtest import (
        LEARNING_MODES,
        MODEL_CHOICES,
        backtest_baseline,
        backtest_run,
        baseline_config,
        check_baseline,
        default_out,
        load_run,
        used_model,
    )
    from experiments.evaluate import report_console
    from experiments.runs import quiet_learning_logs

    quiet_learning_logs()
    if run is None and baseline is None:
        raise ConfigError(
            "nothing to backtest", where="slf backtest", fix="give --run DIR or --baseline NAME --data DATA"
        )
    if baseline is not None:
        check_baseline(baseline)
        if run is None and data is None:
            raise ConfigError(
                "--baseline needs data", where="--baseline", fix="add --data NAME|FILE, or --run DIR"
            )
        if run is not None and data is not None:
            raise ConfigError(
                "--data and --run both name the data",
                where="--data",
                fix="drop --data (the baseline then runs on the run's data and env)",
            )
    elif data is not None or symbol is not None:
        raise ConfigError(
            "--data/--symbol apply to baselines", where="--data", fix="a run uses its own data; drop --data"
        )
    if learning is not None and learning not in LEARNING_MODES:
        raise ConfigError(
            f"unknown learning mode {learning!r}", where="--learning", fix="use frozen, online or off"
        )
    if model not in MODEL_CHOICES:
        raise ConfigError(f"unknown model {model!r}", where="--model", fix="use best or final")
    if run is not None and not run.is_dir():
        raise ConfigError(
            "no such run directory", where=str(run), fix="give a directory that `slf train` made"
        )

    console = report_console()
    label_bits = [split or ("range" if start or end else "test"), *(x for x in (start, end) if x)]
    span_slug = _slug("_".join(label_bits))
    benchmark = None
    learned: Any = None
    notes: list[str] = []
    if baseline is None:
        assert run is not None  # checked above
        mode = learning
        if mode is None:
            mode = "frozen" if load_run(run)[0].learning.enabled else "off"
        used = used_model(run, "best" if model == "best" else "final")  # model is checked above
        out_dir = out or default_out(run, f"{used}_{mode}_{span_slug}")
        bt = backtest_run(
            run,
            split=split,
            start=start,
            end=end,
            learning=mode,  # type: ignore[arg-type]
            model=model,  # type: ignore[arg-type]
            out_dir=out_dir,
            progress=progress,
        )
        result = bt.result
        config = bt.config
        engine = bt.engine
        notes = bt.notes
        learned = bt.manager if bt.manager is not None else bt.state
        heading = f"{run} ({bt.result.meta['model']}, learning {bt.learning})"
        close = bt.close
        try:
            result.save(out_dir)
            if report:
                benchmark = backtest_baseline(
                    "buy_and_hold", config=config, run_dir=run, split=split, start=start, end=end
                )
        except BaseException:
            close()
            raise
    else:
        close = _nothing
        cfg_run: Path | None
        if run is not None:
            config, cfg_run = load_run(run)[0], run
            out_dir = out or default_out(run, f"{baseline}_{span_slug}")
        else:
            assert data is not None
            config, cfg_run = baseline_config(data, symbol=symbol), None
            out_dir = out or default_out(None, f"{baseline}_{_slug(Path(data).stem)}_{span_slug}")
        result = backtest_baseline(
            baseline, config=config, run_dir=cfg_run, split=split, start=start, end=end, progress=progress
        )
        engine = "predict"
        heading = f"baseline {baseline}"
        result.save(out_dir)
        if report and baseline != "buy_and_hold":
            benchmark = backtest_baseline(
                "buy_and_hold", config=config, run_dir=cfg_run, split=split, start=start, end=end
            )
    span = result.meta.get("span", "")
    shown = {result.name: result}
    if benchmark is not None:
        shown["buy_and_hold"] = benchmark
    _print_table(console, shown, f"{heading} on {span}")
    path_note = "fast NumPy path" if engine == "numpy" else "slow path: predict() every bar"
    console.print(f"engine: {engine} ({path_note})")
    for note in notes:
        console.print(f"note: {note}")
    try:
        if report:
            from backtests.report import write_report

            page = write_report(result, out_dir, benchmark=benchmark, learning=learned)
            console.print(f"report: {page}", soft_wrap=True)
    finally:
        close()
    console.print(f"output: {out_dir}", soft_wrap=True)
