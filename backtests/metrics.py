"""Performance metrics of a backtest, annualized by the bar timeframe and the market's calendar.

Return-based metrics (total return, CAGR, Sharpe, Sortino, Calmar, maximum drawdown, volatility) come
from `empyrical-reloaded <https://github.com/stefan-jansen/empyrical-reloaded>`_, a maintained fork of
Quantopian's empyrical: small (NumPy, pandas, SciPy, bottleneck), functional, warning-free with
pandas 3 / NumPy 2, and it takes an explicit ``annualization`` (periods per year) instead of assuming
daily bars. Trade and cost metrics (win rate, profit factor, expectancy, exposure, turnover, fees) are
plain arithmetic on the trade journal and the fills, defined below.

Annualization: ``periods_per_year(timeframe, calendar)`` with ``calendar`` one of

* ``"24/7"`` (crypto): 365 days of 24 hours;
* ``"fx"``: 252 days of 24 hours (a five-day week; the weekend is closed);
* ``"equity"``: 252 sessions; intraday bars count 6.5-hour sessions (NYSE regular hours).

Bars of a day or longer count ``days_per_year / bar days`` (a weekly bar: 52 a year in every calendar
but 24/7's 365 / 7). :func:`detect_calendar` infers the calendar from the bar times: at least 10% of bars
on Saturday or Sunday (UTC) -> ``"24/7"`` (a 24/7 market has 2/7 = 29%; FX's Sunday-evening open is
about 2%); otherwise intraday bars spread over 20 or more hours of the day -> ``"fx"``; otherwise
``"equity"``.

Definitions (``returns`` are simple bar-to-bar returns of the equity curve, whose first point is the
initial capital):

* ``total_return``: ``equity[-1] / equity[0] - 1``.
* ``cagr``: ``(1 + total_return) ** (periods_per_year / len(returns)) - 1``.
* ``sharpe``: ``mean(returns) / std(returns, ddof=1) * sqrt(periods_per_year)`` (risk-free rate 0).
* ``sortino``: ``mean(returns) / sqrt(mean(min(returns, 0)^2)) * sqrt(periods_per_year)``.
* ``calmar``: ``cagr / |max_drawdown|``.
* ``max_drawdown``: the largest peak-to-trough fall, as a negative fraction (-0.2 = 20% below the peak).
* ``max_drawdown_bars`` / ``max_drawdown_duration``: the longest time under water, from the peak bar to
  the first bar back at the peak (or to the last bar when it never recovered), in bars and in time.
* ``volatility``: ``std(returns, ddof=1) * sqrt(periods_per_year)``.
* ``trades``: closed round trips. A trade is the run of fills from leaving zero to returning to it (or
  to reversing); the journal may split it into slices (partial reductions), which are summed.
* ``win_rate``: share of round trips with net PnL > 0; ``profit_factor``: gross profit / gross loss
  (``inf`` with no loss); ``expectancy``: mean net PnL per round trip (quote currency); all NaN with
  no closed trade.
* ``exposure``: share of bars that end with an open position.
* ``turnover``: traded notional / mean equity (how many times the average equity changed hands);
  ``annual_turnover``: the same per year.
* ``fees_paid``: fees of all fills; ``borrow_paid``: borrow charged on shorts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from envs.data.schema import parse_timeframe
from envs.errors import ConfigError, DataError

__all__ = [
    "CALENDARS",
    "METRIC_BOUNDS",
    "METRIC_LABELS",
    "Calendar",
    "Metrics",
    "compute_metrics",
    "detect_calendar",
    "drawdown_duration",
    "periods_per_year",
    "round_trips",
]

Calendar = Literal["24/7", "fx", "equity"]
CALENDARS: Final[tuple[Calendar, ...]] = ("24/7", "fx", "equity")

_DAY = pd.Timedelta(days=1)
_DAYS_PER_YEAR: Final[Mapping[str, float]] = {"24/7": 365.0, "fx": 252.0, "equity": 252.0}
_HOURS_PER_DAY: Final[Mapping[str, float]] = {"24/7": 24.0, "fx": 24.0, "equity": 6.5}
WEEKEND_SHARE_24_7: Final = 0.10
"""Share of bars on Saturday/Sunday (UTC) from which a market is taken to trade 24/7."""
FX_MIN_HOURS: Final = 20
"""Distinct hours of the day (UTC) that intraday bars must cover for a weekday market to count as FX."""
_NS_PER_DAY: Final = 86_400 * 10**9
_NS_PER_HOUR: Final = 3_600 * 10**9
_EPOCH_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday (Monday = 0)


def periods_per_year(timeframe: str | pd.Timedelta, calendar: Calendar | str) -> float:
    """Bars per year for annualizing: see the module docstring for the calendars.

    Args:
        timeframe: the bar length (``"1m"``, ``"1h"``, ``"1d"``, a ``Timedelta``).
        calendar: ``"24/7"``, ``"fx"`` or ``"equity"``.

    Raises:
        ConfigError: unknown calendar or unreadable timeframe.

    Examples: ``periods_per_year("1h", "24/7") == 8760``; ``periods_per_year("1d", "equity") == 252``;
    ``periods_per_year("1h", "fx") == 6048``; ``periods_per_year("1m", "equity") == 98280``.
    """
    if calendar not in _DAYS_PER_YEAR:
        raise ConfigError(
            f"unknown calendar {calendar!r}", where="calendar", fix=f"use one of {list(CALENDARS)}"
        )
    tf = parse_timeframe(timeframe)
    days = _DAYS_PER_YEAR[calendar]
    if tf >= _DAY:
        return days / (tf / _DAY)
    return days * _HOURS_PER_DAY[calendar] / (tf / pd.Timedelta(hours=1))


def _times_ns(index: pd.Index | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if isinstance(index, pd.DatetimeIndex):
        return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
    return np.asarray(index, dtype=np.int64)


def detect_calendar(index: pd.DatetimeIndex | npt.NDArray[np.int64]) -> Calendar:
    """The market calendar the bar times suggest (UTC open times; see the module docstring)."""
    t = _times_ns(index)
    if len(t) == 0:
        return "24/7"
    weekday = (t // _NS_PER_DAY + _EPOCH_WEEKDAY) % 7
    if float(np.mean(weekday >= 5)) >= WEEKEND_SHARE_24_7:
        return "24/7"
    if len(t) > 1 and int(np.median(np.diff(t))) < _NS_PER_DAY:
        hours = np.unique((t % _NS_PER_DAY) // _NS_PER_HOUR)
        if len(hours) >= FX_MIN_HOURS:
            return "fx"
    return "equity"


def _timeframe_of(index: pd.DatetimeIndex) -> pd.Timedelta:
    from envs.data import infer_timeframe

    tf = infer_timeframe(index)
    if tf is None or tf <= pd.Timedelta(0):
        raise DataError(
            "cannot infer the bar timeframe from fewer than two bars",
            where="equity curve",
            fix="run the backtest over at least two bars, or pass timeframe=",
        )
    return tf


def drawdown_duration(equity: npt.ArrayLike) -> tuple[int, int, int]:
    """The longest spell under water: ``(bars, peak_row, end_row)``.

    ``peak_row`` is the bar of the peak and ``end_row`` the first bar back at (or above) it, or the last
    bar when the equity never recovered; ``bars = end_row - peak_row`` (0 for a curve never under water).
    """
    e = np.asarray(equity, dtype=np.float64)
    n = len(e)
    if n == 0:
        return 0, 0, 0
    under = e < np.maximum.accumulate(e)
    if not under.any():
        return 0, 0, 0
    # Runs of consecutive under-water bars: starts where `under` switches on, ends where it switches off.
    edges = np.diff(np.r_[0, under.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)  # one past the run's last bar: the recovery bar, or n
    ends = np.minimum(stops, n - 1)
    lengths = ends - (starts - 1)
    i = int(np.argmax(lengths))
    return int(lengths[i]), int(starts[i] - 1), int(ends[i])


def round_trips(trades: pd.DataFrame | None) -> pd.Series:
    """Net PnL per round trip: journal slices summed by entry (the trade id before ``":"``)."""
    if trades is None or len(trades) == 0:
        return pd.Series([], dtype=np.float64)
    entry = trades["trade_id"].astype(str).str.rpartition(":")[0]
    return trades["pnl"].astype(np.float64).groupby(entry.to_numpy(), sort=False).sum()


@dataclass(frozen=True, slots=True)
class Metrics:
    """The metrics table of one backtest (see the module docstring for each definition).

    Ratios are fractions (0.05 = 5%); money is in quote currency; NaN where undefined (a Sharpe ratio
    of a constant curve, a win rate with no trade).
    """

    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_bars: int
    max_drawdown_duration: str
    volatility: float
    win_rate: float
    profit_factor: float
    expectancy: float
    exposure: float
    turnover: float
    annual_turnover: float
    fees_paid: float
    borrow_paid: float
    trades: int
    bars: int
    start_equity: float
    final_equity: float
    periods_per_year: float
    timeframe: str
    calendar: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (NaN and infinities stay floats; ``json`` writes them as NaN/Infinity)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        """Rebuild from :meth:`to_dict` output (unknown keys are refused)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown metric(s) {unknown}", where="metrics", fix=f"use only {sorted(names)}"
            )
        return cls(**dict(data))

    def rows(self) -> list[tuple[str, str]]:
        """``(label, formatted value)`` pairs in display order, for tables and reports."""
        values = self.to_dict()
        return [(label, _format(key, values[key])) for key, label in METRIC_LABELS.items()]


METRIC_LABELS: Final[Mapping[str, str]] = {
    "total_return": "Total return",
    "cagr": "CAGR",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "calmar": "Calmar ratio",
    "max_drawdown": "Max drawdown",
    "max_drawdown_duration": "Max drawdown duration",
    "max_drawdown_bars": "Max drawdown duration (bars)",
    "volatility": "Volatility (annualized)",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "expectancy": "Expectancy (per trade)",
    "exposure": "Exposure",
    "turnover": "Turnover",
    "annual_turnover": "Turnover per year",
    "fees_paid": "Fees paid",
    "borrow_paid": "Borrow paid",
    "trades": "Trades",
    "bars": "Bars",
    "start_equity": "Start equity",
    "final_equity": "Final equity",
    "periods_per_year": "Periods per year",
    "timeframe": "Timeframe",
    "calendar": "Calendar",
}
"""Metric field -> display name, in display order."""

_INF: Final = math.inf
METRIC_BOUNDS: Final[Mapping[str, tuple[float, float]]] = {
    "max_drawdown": (-_INF, 0.0),
    "max_drawdown_bars": (0.0, _INF),
    "volatility": (0.0, _INF),
    "win_rate": (0.0, 1.0),
    "profit_factor": (0.0, _INF),
    "exposure": (0.0, 1.0),
    "turnover": (0.0, _INF),
    "annual_turnover": (0.0, _INF),
    "fees_paid": (0.0, _INF),
    "borrow_paid": (0.0, _INF),
    "trades": (0.0, _INF),
    "bars": (0.0, _INF),
}
"""Values a metric can take by its definition, ``(low, high)``; unlisted metrics are unbounded.

Returns and CAGR are left unbounded below: an account that is ruined on a gap can end below zero
equity, so even -100% is not a hard floor. Intervals over seeds are clipped to these ranges
(:func:`backtests.stats.mean_ci`)."""

_PERCENT: Final = frozenset({"total_return", "cagr", "max_drawdown", "volatility", "win_rate", "exposure"})


def _format(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    x = float(value)
    if math.isnan(x):
        return "n/a"
    if key in _PERCENT:
        return f"{x:.2%}"
    if key in ("fees_paid", "borrow_paid", "start_equity", "final_equity", "expectancy"):
        return f"{x:,.2f}"
    return f"{x:.3f}" if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def compute_metrics(
    equity: pd.Series,
    *,
    positions: pd.Series | npt.ArrayLike | None = None,
    fills: pd.DataFrame | None = None,
    trades: pd.DataFrame | None = None,
    borrow_paid: float = 0.0,
    timeframe: str | pd.Timedelta | None = None,
    calendar: Calendar | str | None = None,
) -> Metrics:
    """The metrics of an equity curve and its trades.

    Args:
        equity: account equity at each bar's close, indexed by the bars' (UTC) open times; the first
            point is the starting capital (the decision bar before the first fill).
        positions: signed position at each bar's close (same length), for ``exposure``.
        fills: filled orders with ``filled_qty``, ``price`` and ``fee`` columns, for turnover and fees.
        trades: the trade journal (``trade_id`` and ``pnl`` columns), for the trade statistics.
        borrow_paid: borrow charged on shorts over the run.
        timeframe: the bar length; inferred from the index (modal spacing) when ``None``.
        calendar: ``"24/7"``, ``"fx"`` or ``"equity"``; detected from the index when ``None``.

    Raises:
        DataError: fewer than two bars, a non-positive starting equity, or an index that is not time.
    """
    import empyrical as ep  # lazily: it imports SciPy (about a second)

    if not isinstance(equity.index, pd.DatetimeIndex):
        raise DataError(
            "the equity curve is not indexed by time", where="equity", fix="index it by the bars' open times"
        )
    e = equity.to_numpy(dtype=np.float64)
    n = len(e)
    if n < 2 or not e[0] > 0.0:
        raise DataError(
            f"need at least two equity points starting above 0 (got {n}, first {e[0] if n else None})",
            where="equity",
            fix="run the backtest over at least two bars with positive initial cash",
        )
    tf = parse_timeframe(timeframe) if timeframe is not None else _timeframe_of(equity.index)
    cal = calendar if calendar is not None else detect_calendar(equity.index)
    ppy = periods_per_year(tf, cal)

    # Returns after ruin are meaningless (and divide by zero): the curve stops at the first equity <= 0.
    ruined = np.flatnonzero(e <= 0.0)
    live = e[: ruined[0] + 1] if len(ruined) else e
    returns = live[1:] / live[:-1] - 1.0
    total_return = float(e[-1] / e[0] - 1.0)
    mdd = float(ep.max_drawdown(returns)) if len(returns) else 0.0
    dd_bars, peak, end = drawdown_duration(e)
    duration = equity.index[end] - equity.index[peak] if dd_bars else pd.Timedelta(0)

    pnl = round_trips(trades)
    wins = pnl[pnl > 0.0]
    losses = pnl[pnl <= 0.0]
    gross_loss = float(-losses.sum())
    if len(pnl) == 0:
        win_rate = profit_factor = expectancy = math.nan
    else:
        win_rate = len(wins) / len(pnl)
        expectancy = float(pnl.mean())
        profit_factor = float(wins.sum()) / gross_loss if gross_loss > 0.0 else math.inf
        if gross_loss == 0.0 and len(wins) == 0:
            profit_factor = math.nan

    if positions is not None:
        pos = np.asarray(positions, dtype=np.float64)
        exposure = float(np.mean(pos[1:] != 0.0)) if n > 1 else 0.0
    else:
        exposure = math.nan
    notional = fees = 0.0
    if fills is not None and len(fills):
        notional = float((fills["filled_qty"].astype(np.float64) * fills["price"].astype(np.float64)).sum())
        fees = float(fills["fee"].astype(np.float64).sum())
    mean_equity = float(np.mean(e))
    turnover = notional / mean_equity if mean_equity > 0.0 else math.nan
    years = (n - 1) / ppy

    return Metrics(
        total_return=total_return,
        cagr=float(ep.annual_return(returns, annualization=ppy)) if len(ruined) == 0 else -1.0,
        sharpe=float(ep.sharpe_ratio(returns, annualization=ppy)),
        sortino=float(ep.sortino_ratio(returns, annualization=ppy)),
        calmar=float(ep.calmar_ratio(returns, annualization=ppy)),
        max_drawdown=mdd,
        max_drawdown_bars=dd_bars,
        max_drawdown_duration=str(duration),
        volatility=float(ep.annual_volatility(returns, annualization=ppy)),
        win_rate=float(win_rate),
        profit_factor=float(profit_factor),
        expectancy=float(expectancy),
        exposure=exposure,
        turnover=turnover,
        annual_turnover=turnover / years if years > 0.0 else math.nan,
        fees_paid=fees,
        borrow_paid=float(borrow_paid),
        trades=len(pnl),
        bars=n,
        start_equity=float(e[0]),
        final_equity=float(e[-1]),
        periods_per_year=float(ppy),
        timeframe=_format_tf(tf),
        calendar=str(cal),
    )


def _format_tf(tf: pd.Timedelta) -> str:
    from envs.data import format_timeframe

    return format_timeframe(tf)
