"""``slf data``: validate, list, generate and resample market data.

Data problems raise :class:`envs.errors.DataError`; ``slf`` prints them as one ``error: ...`` line and
exits 2. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Final

import pandas as pd
import typer

from envs.data import (
    DEFAULT_MIN_ROWS,
    DataSummary,
    check_parquet_path,
    format_timeframe,
    generate_synthetic,
    list_datasets,
    load_dataset,
    load_market_specs,
    load_ohlcv,
    load_ohlcv_by_symbol,
    parse_timeframe,
    resample_ohlcv,
    save_parquet,
    summarize,
    to_long_format,
)
from envs.data.synthetic import DEFAULT_START
from envs.errors import ConfigError, DataError
from envs.market import MarketSpec

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Validate, list, generate and resample market data.",
)

# Generating this many bars in total takes long enough (a second or more) to deserve a progress bar.
PROGRESS_BARS: Final = 200_000
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M"
DEFAULT_SYMBOLS: Final = "BTC/USDT,ETH/USDT"
DEFAULT_BARS: Final = 100_000


def _when(ts: pd.Timestamp) -> str:
    return f"{ts.strftime(_TIME_FORMAT)} UTC"


def _summary_lines(title: str, summary: DataSummary) -> list[str]:
    gaps = "none"
    if summary.gaps:
        gaps = (
            f"{summary.gaps} (largest {summary.largest_gap}, about {summary.missing_bars} missing bars; "
            "reported, not refused)"
        )
    label = f"{title} [{summary.symbol}]" if summary.symbol else title
    return [
        label,
        f"  rows       {summary.rows}",
        f"  first      {_when(summary.first)}",
        f"  last       {_when(summary.last)}",
        f"  timeframe  {format_timeframe(summary.timeframe)}",
        f"  span       {summary.span}",
        f"  gaps       {gaps}",
    ]


def _dataset_names() -> list[str]:
    return [info.name for info in list_datasets()]


@app.command("validate")
def validate(
    path: Annotated[str, typer.Argument(help="A .csv, .csv.gz, .parquet or .pq file, or a dataset name.")],
    symbol: Annotated[
        str | None,
        typer.Option(
            "--symbol", "-s", help="The symbol to check in a multi-symbol file (default: every one)."
        ),
    ] = None,
    min_rows: Annotated[
        int, typer.Option("--min-rows", min=1, help="Fewest bars accepted.")
    ] = DEFAULT_MIN_ROWS,
) -> None:
    """Check a data file (columns, timestamps, prices, volume, order) and print its summary.

    Exits 0 when valid; else prints one `error:` line naming the file, row and column, and exits 2.

    Gaps (weekends, outages) are reported, not refused.
    """
    if not Path(path).exists() and path in _dataset_names():
        frame = load_dataset(path)
        if symbol is not None and symbol != frame.attrs.get("symbol"):
            raise DataError(
                f"symbol {symbol!r} not found; this dataset holds {frame.attrs.get('symbol')}",
                where=f"dataset {path!r}",
                fix="leave out --symbol",
            )
        frames: dict[str | None, pd.DataFrame] = {frame.attrs.get("symbol"): frame}
    elif symbol is not None:
        frames = {symbol: load_ohlcv(path, symbol=symbol, min_rows=min_rows)}
    else:
        frames = load_ohlcv_by_symbol(path, min_rows=min_rows)
    for frame in frames.values():
        typer.echo("\n".join(_summary_lines(path, summarize(frame))))
    count = f"{len(frames)} symbols" if len(frames) > 1 else "data"
    typer.echo(f"ok: {count} valid")


@app.command("list")
def list_command() -> None:
    """List the datasets loadable by name (bundled samples and seeded synthetic sets)."""
    header = ("name", "symbol", "timeframe", "rows", "span", "source / license")
    rows: list[tuple[str, ...]] = []
    for info in list_datasets():
        summary = summarize(load_dataset(info.name))
        span = f"{summary.first.strftime('%Y-%m-%d')} .. {summary.last.strftime('%Y-%m-%d')}"
        rows.append((info.name, info.symbol, info.timeframe, str(summary.rows), span, info.source))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, tuple("-" * w for w in widths), *rows):
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@app.command("synth")
def synth(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Parquet file to write (long format, specs in metadata).")
    ],
    symbols: Annotated[str, typer.Option("--symbols", help="Comma-separated symbols.")] = DEFAULT_SYMBOLS,
    bars: Annotated[int, typer.Option("--bars", min=1, help="Bars per symbol.")] = DEFAULT_BARS,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed; the same seed writes the same bars.")] = 7,
    start: Annotated[str, typer.Option("--start", help="Open time of the first bar (UTC).")] = DEFAULT_START,
    timeframe: Annotated[str, typer.Option("--timeframe", help="Bar length: 1m, 5m, 1h ...")] = "1m",
) -> None:
    """Generate seeded synthetic crypto-like bars (regimes, volatility clustering, heavy tails, volume)."""
    check_parquet_path(out)
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    if not names:
        raise ConfigError(
            f"--symbols {symbols!r} names no symbol", where="--symbols", fix="e.g. BTC/USDT,ETH/USDT"
        )
    big = bars * len(names) >= PROGRESS_BARS
    market = generate_synthetic(names, bars, seed, start=start, timeframe=timeframe, progress=big)
    if big:
        typer.echo(f"writing {out} ...", err=True)
    market.save_parquet(out)
    first = next(iter(market.frames.values()))
    typer.echo(
        f"wrote {out}: {len(names)} symbol(s) ({', '.join(names)}) x {bars} bars of "
        f"{format_timeframe(market.timeframe)}, {_when(first.index[0])} to {_when(first.index[-1])}, "
        f"seed {seed}"
    )


@app.command("resample")
def resample(
    path: Annotated[str, typer.Argument(help="A .csv, .csv.gz, .parquet or .pq file.")],
    to: Annotated[str, typer.Option("--to", help="Target bar length: 5m, 15m, 1h, 4h, 1d, 1w ...")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    symbol: Annotated[
        str | None,
        typer.Option(
            "--symbol", "-s", help="Resample only this symbol of a multi-symbol file (default: all)."
        ),
    ] = None,
    keep_partial: Annotated[
        bool, typer.Option("--keep-partial", help="Keep an incomplete last bar.")
    ] = False,
) -> None:
    """Resample bars to a higher timeframe (open first, high max, low min, close last, volume sum)."""
    check_parquet_path(out)
    if symbol is not None:
        frames: dict[str | None, pd.DataFrame] = {symbol: load_ohlcv(path, symbol=symbol)}
    else:
        frames = load_ohlcv_by_symbol(path)
    done = {key: resample_ohlcv(frame, to, keep_partial=keep_partial) for key, frame in frames.items()}
    specs: dict[str, MarketSpec] | None = None
    # Not Parquet, or no specs stored: nothing to carry over.
    with contextlib.suppress(DataError):
        specs = load_market_specs(path)
    named = {k: v for k, v in done.items() if k is not None}
    if len(named) > 1:
        keep = {k: s for k, s in (specs or {}).items() if k in named}
        save_parquet(to_long_format(named), out, specs=keep or None)
    else:
        frame = next(iter(done.values()))
        key = next(iter(done))
        save_parquet(frame, out, specs={key: specs[key]} if specs and key in specs else None)
    for key, frame in done.items():
        source = frames[key]
        label = f"{key}: " if key else ""
        typer.echo(
            f"{label}{len(source)} bars -> {len(frame)} bars of {format_timeframe(parse_timeframe(to))}"
        )
    typer.echo(f"wrote {out}")
