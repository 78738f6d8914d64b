"""``slf live``: run a promoted bundle bar by bar with the live runner.

Paper trading only for now: ``--exchange paper`` (the default) replays the bars of ``--data`` through a
:class:`~envs.live.ReplayFeed` into a :class:`~envs.live.PaperBroker` (the simulated exchange's rules at
each next bar's open). Real exchanges (``--exchange binance`` through ccxt) are **not available yet** and
are refused. The bundle is loaded only if its manifest verifies (its model and learned state are
pickles). Torch and SB3 are imported only when the runner starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from envs.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_BACKFILL", "live_command"]

PAPER: Final = "paper"
DEFAULT_BACKFILL: Final = 1000
"""Bars of the data used as back-fill (feature warm-up) before the first live bar."""
DEFAULT_STATE_DIR: Final = Path("live")


def live_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="A bundle directory written by `slf promote`.")],
    symbol: Annotated[str, typer.Option("--symbol", help="The market symbol, e.g. EUR/USD (the bundle's).")],
    data: Annotated[
        str, typer.Option("--data", help="A bundled dataset name or a CSV/Parquet file of bars to replay.")
    ],
    exchange: Annotated[
        str,
        typer.Option(
            "--exchange",
            help="Where orders go. Only 'paper' (simulated exchange rules at live prices) is available; "
            "ccxt exchanges such as 'binance' are not available yet.",
        ),
    ] = PAPER,
    speed: Annotated[
        float, typer.Option("--speed", help="Replay pace: 0 = as fast as possible, N = N times real time.")
    ] = 0.0,
    backfill: Annotated[
        int, typer.Option("--backfill", help="Bars of --data used to warm the features up before trading.")
    ] = DEFAULT_BACKFILL,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Where the live learning store goes (default: live/<bundle name>)."),
    ] = None,
    max_position: Annotated[
        float | None, typer.Option("--max-position", help="Cap on |target exposure| (fraction of equity).")
    ] = None,
    daily_loss: Annotated[
        float | None,
        typer.Option(
            "--daily-loss", help="Kill switch: close and stop after losing this fraction in a UTC day."
        ),
    ] = None,
    status_every: Annotated[
        int, typer.Option("--status-every", help="Log a status line every N bars.")
    ] = 100,
) -> None:
    """Paper-trade a promoted bundle over a replay of --data (Ctrl-C stops it with the learning state saved).

    Only --exchange paper is available: real exchanges through ccxt (e.g. binance) are not available yet.
    The bundle is verified (sha256 manifest) before its model, a pickle, is loaded.
    """
    if exchange != PAPER:
        raise ConfigError(
            f"--exchange {exchange!r} is not available yet (no ccxt broker or feed in this release)",
            where="--exchange",
            fix="use --exchange paper to paper-trade over a replay of --data",
        )
    if backfill < 0:
        raise ConfigError(f"--backfill {backfill} is negative", where="--backfill", fix="e.g. 1000")
    if status_every < 0:
        raise ConfigError(
            f"--status-every {status_every} is negative", where="--status-every", fix="e.g. 100"
        )

    import asyncio

    from agents.bundle import load_bundle
    from agents.runner import LiveRunner, RiskLimits
    from envs.live import ReplayFeed
    from experiments.config import load_config

    loaded = load_bundle(bundle)
    load_config(loaded.path / "config.yaml")  # the full validation, with line numbers on error
    if symbol != loaded.spec.symbol:
        raise ConfigError(
            f"the bundle trades {loaded.spec.symbol!r}, not {symbol!r}",
            where="--symbol",
            fix=f"use --symbol {loaded.spec.symbol!r}",
        )
    frame = _load_bars(data, symbol)
    if not 0 <= backfill < len(frame):
        raise ConfigError(
            f"--backfill {backfill} leaves no bar to trade in {len(frame)} bars",
            where="--backfill",
            fix=f"use fewer than {len(frame)} bars",
        )
    risk = RiskLimits(max_position=max_position, daily_loss=daily_loss)
    feed = ReplayFeed(frame, start=backfill, speed=speed, symbol=symbol)
    runner = LiveRunner.from_bundle(
        loaded,
        feed,
        state_dir=state_dir if state_dir is not None else DEFAULT_STATE_DIR / loaded.path.name,
        risk=risk,
        status_every=status_every,
    )
    runner.build()
    asyncio.run(runner.run())
    typer.echo(runner.status())


def _load_bars(data: str, symbol: str) -> pd.DataFrame:
    from envs.data import dataset_info, load_dataset, load_ohlcv
    from envs.errors import DataError

    path = Path(data).expanduser()
    if path.is_file():
        return load_ohlcv(path, symbol=symbol)
    try:
        info = dataset_info(data)
    except DataError as exc:
        raise ConfigError(
            f"{data!r} is neither a file nor a bundled dataset ({exc.problem})",
            where="--data",
            fix="give a dataset name (see `slf data list`) or the path of a CSV/Parquet file",
        ) from None
    if info.symbol != symbol:
        raise ConfigError(
            f"dataset {data!r} holds {info.symbol}, not {symbol!r}", where="--data", fix="pick matching data"
        )
    return load_dataset(data)
