"""The ``slf`` command line.

Each command group lives in its own module (``experiments/cli_<group>.py``) and is imported here; none
of them may import torch at module level, so ``slf --help`` stays fast. Errors derived from
:class:`envs.errors.SlfError` are printed as one line on stderr (no traceback) and exit with status 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from envs.errors import SlfError
from experiments.cli_backtest import backtest_command
from experiments.cli_bundle import app as bundle_app
from experiments.cli_bundle import promote_command
from experiments.cli_compare import compare_command
from experiments.cli_data import app as data_app
from experiments.cli_demo import demo_command
from experiments.cli_learning import app as learning_app
from experiments.cli_live import live_command
from experiments.cli_train import train_command
from experiments.cli_walkforward import walkforward_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="slf",
    help="self-learning-flow: a market-replay RL environment that learns from its own trades and errors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data", help="Validate, list, generate and resample market data.")
app.add_typer(learning_app, name="learning", help="Show what the learning manager has learned.")
app.command("train")(train_command)
app.command("demo")(demo_command)
app.command("backtest")(backtest_command)
app.command("compare")(compare_command)
app.command("walkforward")(walkforward_command)
app.command("promote")(promote_command)
app.add_typer(bundle_app, name="bundle", help="Verify promotion bundles.")
app.command("live")(live_command)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slf`` console script. Returns the process exit status.

    Usage errors are reported by typer (exit 2); our own errors are printed as one line (exit 2).
    """
    try:
        app(args=argv, prog_name="slf")
    except SlfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
