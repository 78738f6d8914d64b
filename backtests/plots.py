"""PNG plots of a backtest: equity, drawdown, trades on price, and the evolution of strategy weights.

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas (no pyplot, no
global state, no display needed). Every function returns the PNG bytes and writes them to ``path``
when given. Long series are thinned to at most :data:`MAX_POINTS` points per line (keeping each
bucket's minimum and maximum, so spikes and drawdowns stay visible) and at most :data:`MAX_MARKERS`
trades are marked.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from backtests.results import BacktestResult

__all__ = [
    "MAX_MARKERS",
    "MAX_POINTS",
    "plot_drawdown",
    "plot_equity",
    "plot_trades",
    "plot_weight_evolution",
]

MAX_POINTS: Final = 4_000
MAX_MARKERS: Final = 600
DPI: Final = 110
SIZE: Final = (10.0, 3.6)
_EQUITY_COLOR: Final = "#1f5fa8"
_BENCH_COLOR: Final = "#8a8a8a"
_LOSS_COLOR: Final = "#c0392b"
_WIN_COLOR: Final = "#1e8449"
TOP_WEIGHTS: Final = 8
"""Factors drawn in the weight-evolution plot (those that moved most from 1.0)."""


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: Figure, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def _thin(index: pd.Index, values: npt.ArrayLike) -> tuple[pd.Index, npt.NDArray[np.float64]]:
    """At most ~MAX_POINTS points: each bucket keeps its first, minimum and maximum values."""
    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    if n <= MAX_POINTS:
        return index, y
    bucket = int(np.ceil(n / (MAX_POINTS // 3)))
    starts = np.arange(0, n, bucket)
    keep = {int(n - 1)}
    for s in starts:
        chunk = y[s : s + bucket]
        keep.update((int(s), int(s + np.nanargmin(chunk)), int(s + np.nanargmax(chunk))))
    rows = np.fromiter(sorted(keep), dtype=np.int64)
    return index[rows], y[rows]


def plot_equity(
    result: BacktestResult, path: str | Path | None = None, *, benchmark: BacktestResult | None = None
) -> bytes:
    """Equity over time (and a benchmark's, rescaled to the same starting equity)."""
    fig, ax = _figure()
    x, y = _thin(result.curve.index, result.equity)
    ax.plot(x, y, color=_EQUITY_COLOR, lw=1.2, label=result.name)
    if benchmark is not None:
        b = benchmark.equity * (result.equity.iloc[0] / benchmark.equity.iloc[0])
        bx, by = _thin(b.index, b)
        ax.plot(bx, by, color=_BENCH_COLOR, lw=1.0, alpha=0.9, label=benchmark.name)
    ax.set_title("Equity")
    ax.set_ylabel("equity (quote currency)")
    ax.legend(loc="best", fontsize=8)
    return _png(fig, path)


def plot_drawdown(result: BacktestResult, path: str | Path | None = None) -> bytes:
    """Drawdown from the running peak, in percent."""
    fig, ax = _figure()
    e = result.equity.to_numpy(dtype=np.float64)
    dd = (e / np.maximum.accumulate(e) - 1.0) * 100.0
    x, y = _thin(result.curve.index, dd)
    ax.fill_between(x, y, 0.0, color=_LOSS_COLOR, alpha=0.35, lw=0)
    ax.plot(x, y, color=_LOSS_COLOR, lw=0.8)
    ax.set_title(f"Drawdown (max {np.nanmin(dd):.1f}%)")
    ax.set_ylabel("% below peak")
    return _png(fig, path)


def plot_trades(result: BacktestResult, path: str | Path | None = None) -> bytes:
    """Close price with entries (triangles: up long, down short) and exits (dots: green win, red loss)."""
    fig, ax = _figure()
    x, y = _thin(result.curve.index, result.curve["close"])
    ax.plot(x, y, color="#444444", lw=0.8, label="close")
    trades = result.trades
    shown = len(trades)
    if shown:
        if shown > MAX_MARKERS:
            trades = trades.iloc[np.linspace(0, shown - 1, MAX_MARKERS).astype(np.int64)]
        long_ = trades["side"] == "long"
        ax.scatter(
            trades.loc[long_, "entry_time"], trades.loc[long_, "entry_price"], marker="^", s=22,
            color=_WIN_COLOR, edgecolors="none", label="long entry", zorder=3,
        )  # fmt: skip
        ax.scatter(
            trades.loc[~long_, "entry_time"], trades.loc[~long_, "entry_price"], marker="v", s=22,
            color=_LOSS_COLOR, edgecolors="none", label="short entry", zorder=3,
        )  # fmt: skip
        won = trades["pnl"] > 0.0
        ax.scatter(
            trades["exit_time"], trades["exit_price"], marker="o", s=10, zorder=4, label="exit",
            color=np.where(won, _WIN_COLOR, _LOSS_COLOR), edgecolors="black", linewidths=0.3,
        )  # fmt: skip
    note = f" ({MAX_MARKERS} of {shown} trades marked)" if shown > MAX_MARKERS else ""
    ax.set_title(f"Trades on price{note}")
    ax.set_ylabel("price")
    ax.legend(loc="best", fontsize=8)
    return _png(fig, path)


def plot_weight_evolution(
    history: Sequence[tuple[int, Mapping[str, float]]],
    path: str | Path | None = None,
    *,
    top: int = TOP_WEIGHTS,
) -> bytes:
    """Strategy weights over the evolution steps: the ``top`` factors that moved most from 1.0.

    Args:
        history: ``(market time ns, weights after the step)`` per evolution step, oldest first.
        path: where to write the PNG.
        top: how many factors to draw.
    """
    fig, ax = _figure()
    if not history:
        ax.text(0.5, 0.5, "no evolution step yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig, path)
    times = pd.to_datetime([t for t, _ in history], unit="ns", utc=True)
    names = sorted({name for _, w in history for name in w})
    table = np.array([[w.get(name, 1.0) for name in names] for _, w in history], dtype=np.float64)
    moved = np.max(np.abs(table - 1.0), axis=0)
    order = np.argsort(-moved, kind="stable")[:top]
    for j in order:
        ax.plot(times, table[:, j], marker="o", ms=3, lw=1.1, label=names[j])
    ax.axhline(1.0, color="#888888", lw=0.8, ls=":")
    ax.set_title(f"Strategy weight evolution (top {len(order)} of {len(names)} factors)")
    ax.set_ylabel("weight (mean 1)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    return _png(fig, path)
