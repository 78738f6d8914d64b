"""``slf live``: run a promoted bundle bar by bar with the live runner, on paper or on an exchange.

* ``--exchange paper`` (the default) replays the bars of ``--data`` through a
  :class:`~envs.live.ReplayFeed` into a :class:`~envs.live.PaperBroker` (the simulated exchange's rules
  at each next bar's open).
* Any ccxt exchange id (``--exchange binance``) trades there: closed candles of ``--timeframe`` come from
  a :class:`~envs.exchange.CcxtFeed` (the warm-up window back-filled at start), orders go to an
  :class:`~envs.exchange.ExchangeBroker` under deterministic client order ids. ``--testnet`` uses ccxt's
  sandbox; ``--api-url`` points every REST endpoint at another host (a testnet, a local server). The API
  key and secret come only from the environment (``SLF_<EXCHANGE>_API_KEY``/``..._API_SECRET``, else
  ``SLF_API_KEY``/``SLF_API_SECRET``) or from a ``--key-file`` readable by its owner only; a log filter
  blanks them out of every log line, and they are never written to the state directory.

The runner is restart-safe: ``--state-dir`` holds the learning store, the checkpoint written after every
bar and the log of every order sent; running the same command again continues where it stopped (see
:mod:`agents.runner`). The bundle is loaded only if its manifest verifies (its model and learned state
are pickles). Torch and SB3 are imported only when the runner starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final
from urllib.parse import urlsplit

import typer

from envs.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

    from envs.live import BarFeed

__all__ = ["DEFAULT_BACKFILL", "live_command", "timeframe_seconds"]

PAPER: Final = "paper"
DEFAULT_BACKFILL: Final = 1000
"""Bars used as back-fill (feature warm-up) before the first live bar."""
DEFAULT_STATE_DIR: Final = Path("live")
DEFAULT_POLL_INTERVAL: Final = 2.0
_TIMEFRAME: Final = re.compile(r"^(\d+)([smhdwM])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "M": 2_592_000}


def timeframe_seconds(timeframe: str) -> int:
    """Seconds of a ccxt timeframe such as ``"1m"``, ``"4h"`` or ``"1d"``."""
    match = _TIMEFRAME.match(timeframe)
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(
            f"--timeframe {timeframe!r} is not a timeframe",
            where="--timeframe",
            fix="give a number and a unit, e.g. 1m, 15m, 1h, 1d",
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _check_exchange(exchange: str) -> None:
    import ccxt

    if exchange not in ccxt.exchanges:
        raise ConfigError(
            f"unknown exchange {exchange!r}{did_you_mean(exchange, [PAPER, *ccxt.exchanges])}",
            where="--exchange",
            fix="use 'paper' or a ccxt exchange id such as 'binance'",
        )


def _check_api_url(api_url: str) -> None:
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--api-url {api_url!r} is not an http(s) URL with a host",
            where="--api-url",
            fix="give scheme and host, e.g. https://testnet.binance.vision or http://127.0.0.1:8080",
        )


def live_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="A bundle directory written by `slf promote`.")],
    symbol: Annotated[str, typer.Option("--symbol", help="The market symbol, e.g. BTC/USDT (the bundle's).")],
    timeframe: Annotated[
        str | None,
        typer.Option(
            "--timeframe",
            help="Bar timeframe, e.g. 1m or 1h (required on an exchange; paper: checked against --data).",
        ),
    ] = None,
    exchange: Annotated[
        str,
        typer.Option(
            "--exchange",
            help="Where orders go: 'paper' (simulated exchange rules over a replay of --data) or a ccxt "
            "exchange id such as 'binance'.",
        ),
    ] = PAPER,
    testnet: Annotated[
        bool, typer.Option("--testnet", help="Use the exchange's testnet (ccxt sandbox).")
    ] = False,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url", help="Scheme and host for every REST endpoint (a testnet or local server)."
        ),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", help="API key file (mode 0600) instead of the environment variables."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Paper only: a bundled dataset name or a CSV/Parquet file of bars to replay."
        ),
    ] = None,
    speed: Annotated[
        float,
        typer.Option("--speed", help="Paper replay pace: 0 = as fast as possible, N = N times real time."),
    ] = 0.0,
    backfill: Annotated[
        int, typer.Option("--backfill", help="Bars used to warm the features up before trading.")
    ] = DEFAULT_BACKFILL,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Exchange only: seconds between candle polls.")
    ] = DEFAULT_POLL_INTERVAL,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Learning store, checkpoint and order log (default: live/<bundle name>/<exchange>); the "
            "same directory continues a stopped or crashed run.",
        ),
    ] = None,
    max_position: Annotated[
        float | None, typer.Option("--max-position", help="Cap on |target exposure| (fraction of equity).")
    ] = None,
    daily_loss: Annotated[
        float | None,
        typer.Option(
            "--daily-loss",
            help="Kill switch: when equity falls this fraction below the UTC day's first equity, the "
            "position is closed and no order is sent again; the runner keeps marking and learning. The "
            "switch is kept in the checkpoint (a restart stays halted): trade again with a new "
            "--state-dir.",
        ),
    ] = None,
    max_bars: Annotated[
        int, typer.Option("--max-bars", help="Stop after this many live bars (0: until stopped).")
    ] = 0,
    status_every: Annotated[
        int, typer.Option("--status-every", help="Log a status line every N bars.")
    ] = 100,
    id_prefix: Annotated[
        str,
        typer.Option(
            "--id-prefix",
            help="Start of every client order id; a random 4-character token of the state directory "
            "follows it (kept across restarts), so runners sharing an account never reuse an id. On "
            "an exchange, ids must fit 36 characters: a longer prefix is refused at start.",
        ),
    ] = "live",
    capital: Annotated[
        float | None,
        typer.Option(
            "--capital",
            help="Exchange only: quote cash the runner may use (default: the bundle's initial cash). At "
            "the first start its cash is the smaller of this and the account's quote balance; later "
            "deposits are not used. The account's base asset counts as the runner's position.",
        ),
    ] = None,
    adopt_position: Annotated[
        bool,
        typer.Option(
            "--adopt-position",
            help="Exchange only: at the first start (no checkpoint), trade the base asset the account "
            "already holds as the runner's position (the policy may sell it). Without it such a holding "
            "stops the start.",
        ),
    ] = False,
) -> None:
    """Trade a promoted bundle bar by bar, on paper over a replay of --data or on an exchange (Ctrl-C
    stops it with the state saved; running it again with the same --state-dir continues).

    On an exchange, the API key and secret are read from SLF_<EXCHANGE>_API_KEY / SLF_<EXCHANGE>_API_SECRET
    (else SLF_API_KEY / SLF_API_SECRET) or --key-file, and never logged or written. The bundle is
    verified (sha256 manifest) before its model, a pickle, is loaded.
    """
    paper = exchange == PAPER
    if not paper:
        _check_exchange(exchange)
    if api_url is not None:
        if paper:
            raise ConfigError("--api-url applies to exchanges", where="--api-url", fix="drop it for paper")
        _check_api_url(api_url)
    if paper and (capital is not None or adopt_position):
        raise ConfigError(
            "--capital and --adopt-position apply to exchanges",
            where="--capital" if capital is not None else "--adopt-position",
            fix="drop it for paper (paper starts with the bundle's initial cash)",
        )
    if testnet and paper:
        raise ConfigError("--testnet applies to exchanges", where="--testnet", fix="drop it for paper")
    bar_seconds = timeframe_seconds(timeframe) if timeframe is not None else None
    if paper and data is None:
        raise ConfigError(
            "paper trading replays recorded bars",
            where="--data",
            fix="give --data (a dataset name or a file)",
        )
    if not paper:
        if data is not None:
            raise ConfigError(
                "--data is for paper trading; an exchange sends its own candles",
                where="--data",
                fix="drop --data, or use --exchange paper",
            )
        if timeframe is None:
            raise ConfigError(
                "an exchange needs the bar timeframe", where="--timeframe", fix="e.g. --timeframe 1m"
            )
    for name, value in (("--backfill", backfill), ("--status-every", status_every), ("--max-bars", max_bars)):
        if value < 0:
            raise ConfigError(f"{name} {value} is negative", where=name, fix="give a number >= 0")
    if not poll_interval > 0:
        raise ConfigError(
            f"--poll-interval {poll_interval} must be > 0", where="--poll-interval", fix="e.g. 2"
        )

    credentials = None
    if not paper:
        from envs.exchange import Credentials

        credentials = Credentials.load(exchange, key_file=key_file)
        credentials.redactor().install()

    import asyncio

    from agents.bundle import load_bundle
    from agents.runner import LiveRunner, RiskLimits
    from experiments.config import load_config

    loaded = load_bundle(bundle)
    load_config(loaded.path / "config.yaml")  # the full validation, with line numbers on error
    if symbol != loaded.spec.symbol:
        raise ConfigError(
            f"the bundle trades {loaded.spec.symbol!r}, not {symbol!r}",
            where="--symbol",
            fix=f"use --symbol {loaded.spec.symbol!r}",
        )
    risk = RiskLimits(max_position=max_position, daily_loss=daily_loss)
    feed: BarFeed
    broker = None
    if paper:
        from envs.live import ReplayFeed

        frame = _load_bars(_given(data), symbol)
        if bar_seconds is not None:
            _check_spacing(frame, bar_seconds, _given(timeframe))
        if not 0 <= backfill < len(frame):
            raise ConfigError(
                f"--backfill {backfill} leaves no bar to trade in {len(frame)} bars",
                where="--backfill",
                fix=f"use fewer than {len(frame)} bars",
            )
        feed = ReplayFeed(frame, start=backfill, speed=speed, symbol=symbol)
    else:
        from envs.exchange import CcxtFeed, ExchangeBroker

        feed = CcxtFeed(
            exchange,
            symbol,
            _given(timeframe),
            warmup=backfill,
            poll_interval=poll_interval,
            api_url=api_url,
            testnet=testnet,
        )
        broker = ExchangeBroker(exchange, symbol, credentials, api_url=api_url, testnet=testnet)
    runner = LiveRunner.from_bundle(
        loaded,
        feed,
        state_dir=state_dir if state_dir is not None else DEFAULT_STATE_DIR / loaded.path.name / exchange,
        broker=broker,
        risk=risk,
        status_every=status_every,
        max_bars=max_bars,
        id_prefix=id_prefix,
        capital=capital,
        adopt_position=adopt_position,
    )
    runner.build()
    asyncio.run(runner.run())
    typer.echo(runner.status())


def _given(value: str | None) -> str:
    """A value checked to be given (narrows ``str | None`` for the type checker)."""
    if value is None:  # pragma: no cover - checked before
        raise ConfigError("a required option is missing", where="slf live", fix="see slf live --help")
    return value


def _check_spacing(frame: pd.DataFrame, seconds: int, timeframe: str) -> None:
    import numpy as np

    steps = np.diff(frame.index.as_unit("ns").asi8)  # type: ignore[attr-defined]
    spacing = int(np.median(steps)) // 1_000_000_000 if len(steps) else seconds
    if spacing != seconds:
        raise ConfigError(
            f"--timeframe {timeframe} does not match the data's bars ({spacing} s apart)",
            where="--timeframe",
            fix="give the data's timeframe, or leave --timeframe out for paper trading",
        )


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
