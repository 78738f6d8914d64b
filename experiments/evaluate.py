"""Run a policy or a baseline over a whole data split and summarize what happened.

:func:`run_split` steps one :class:`~envs.replay.MarketReplayEnv` (possibly wrapped, e.g. with the
learning manager's frozen snapshot) from the first to the last bar of its replay span with
deterministic actions, and records the equity curve and every order, trade, error and veto in an
:class:`EvaluationResult`; :func:`summarize` computes the headline metrics. Any object with an SB3-style
``predict`` works: SB3 and sb3-contrib models (action masks and recurrent state handled) and the
baselines of :mod:`agents.baselines`.

This is deliberately small: the later ``backtests`` package (fuller metrics, plots, HTML reports) takes
:class:`EvaluationResult` as its input, so it can replace :func:`summarize` without touching the loop.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from agents.policies import Policy
from envs.clock import DAY_NS
from envs.errors import ConfigError
from envs.events import ErrorEvent, OrderResult, OrderStatus, TradeResult
from experiments.config import Calendar

if TYPE_CHECKING:
    import gymnasium as gym
    from rich.console import Console

__all__ = [
    "EvaluationResult",
    "Metrics",
    "Policy",
    "metrics_table",
    "periods_per_year",
    "report_console",
    "run_split",
    "summarize",
]

TRADING_DAYS_PER_YEAR: Final = 252.0
CALENDAR_DAYS_PER_YEAR: Final = 365.0
_SATURDAY: Final = 5  # Monday is 0
_MIN_BARS_FOR_SHARPE: Final = 2
REPORT_WIDTH: Final = 120


@dataclass(frozen=True, slots=True)
class Metrics:
    """Summary of one evaluation.

    Attributes:
        total_return: final equity / initial equity - 1.
        sharpe: annualized Sharpe ratio of per-bar simple returns (risk-free rate 0).
        max_drawdown: largest fall from an equity peak, as a fraction of the peak.
        trades: closed trades.
        win_rate: share of closed trades with positive PnL (``None`` without trades).
        fees: fees paid, in quote currency.
        rejections: orders the exchange rules refused.
        errors: orders that failed on an exchange error (rate limit, timeout, maintenance).
        vetoes: orders the learned state vetoed.
        final_equity: equity at the last bar.
        exposure: share of bars with an open position.
        bars: steps taken.
    """

    total_return: float
    sharpe: float
    max_drawdown: float
    trades: int
    win_rate: float | None
    fees: float
    rejections: int
    errors: int
    vetoes: int
    final_equity: float
    exposure: float
    bars: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """Everything one deterministic pass over a split produced.

    Attributes:
        name: what was evaluated (a model or baseline name).
        symbol: the market.
        time_ns: bar open times of the equity points (the first is the starting bar).
        equity: account equity at each point's close.
        position: signed position (base quantity) at each point.
        orders: every order result (filled, rejected, errored).
        trades: closed trades, with their entry snapshots.
        errors: exchange errors.
        vetoed: number of orders the learned state vetoed.
        periods_per_year: bars per year, for annualizing.
    """

    name: str
    symbol: str
    time_ns: npt.NDArray[np.int64]
    equity: npt.NDArray[np.float64]
    position: npt.NDArray[np.float64]
    orders: tuple[OrderResult, ...]
    trades: tuple[TradeResult, ...]
    errors: tuple[ErrorEvent, ...]
    vetoed: int
    periods_per_year: float

    @property
    def metrics(self) -> Metrics:
        return summarize(self)


def periods_per_year(time_ns: npt.NDArray[np.int64], calendar: Calendar | str = Calendar.AUTO) -> float:
    """Bars per year of data with these bar times, for annualizing per-bar statistics.

    ``24/7`` markets trade 365 days a year, others 252 trading days. Intraday bars per day are the bar
    spacing's share of 24 hours for 24/7 markets, and the median number of bars per trading date
    otherwise (24 for hourly FX, about 7 for hourly stocks). ``auto`` picks 24/7 when any bar opens on a
    Saturday (UTC): crypto does, stocks and FX do not.

    Raises:
        ConfigError: fewer than two bars, or an unknown calendar.
    """
    times = np.asarray(time_ns, dtype=np.int64)
    if len(times) < 2:
        raise ConfigError(
            f"{len(times)} bar(s) cannot tell the bar spacing", where="periods_per_year", fix="give more bars"
        )
    try:
        cal = Calendar(calendar)
    except ValueError:
        raise ConfigError(
            f"unknown calendar {calendar!r}",
            where="calendar",
            fix=f"use one of {[c.value for c in Calendar]}",
        ) from None
    days = times // DAY_NS
    if cal is Calendar.AUTO:
        # 1970-01-01 was a Thursday (weekday 3).
        weekday = (days + 3) % 7
        cal = Calendar.ALWAYS if bool(np.any(weekday == _SATURDAY)) else Calendar.TRADING_DAYS
    spacing = float(np.median(np.diff(times)))
    if spacing <= 0:
        raise ConfigError("bar times do not increase", where="periods_per_year", fix="sort the bars")
    if cal is Calendar.ALWAYS:
        return CALENDAR_DAYS_PER_YEAR * DAY_NS / spacing
    if spacing >= DAY_NS:
        # Daily or longer bars: one bar per trading day, scaled for multi-day bars (weekly: 5 days).
        return (
            TRADING_DAYS_PER_YEAR * DAY_NS / spacing if spacing < 7 * DAY_NS else 52.0 * 7 * DAY_NS / spacing
        )
    _, counts = np.unique(days, return_counts=True)
    return TRADING_DAYS_PER_YEAR * float(np.median(counts))


def _accepts(method: Any, name: str) -> bool:
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _method(env: gym.Env[Any, Any], name: str) -> Any:
    """``name`` of ``env`` or of a wrapper inside it (Gymnasium 1 wrappers do not forward), or None."""
    try:
        return env.get_wrapper_attr(name)
    except AttributeError:
        return None


def run_split(
    policy: Policy,
    env: gym.Env[Any, Any],
    *,
    name: str = "policy",
    seed: int | None = 0,
    deterministic: bool = True,
    calendar: Calendar | str = Calendar.AUTO,
) -> EvaluationResult:
    """Step ``env`` from reset to the end of its episode with ``policy``'s actions.

    Build the env over the split with ``episode_length=None`` (the episode then runs from the split's
    first decision bar to its last bar, with no random start) and the training normalization.

    Args:
        policy: an SB3 model or a baseline.
        env: the (single, non-vectorized) evaluation environment.
        name: label of the result.
        seed: reset seed (faults and order ids are drawn from it), for a reproducible pass.
        deterministic: deterministic actions (the default for evaluation).
        calendar: trading calendar for annualizing.
    """
    masks = _method(env, "action_masks") if _accepts(policy.predict, "action_masks") else None
    obs, info = env.reset(seed=seed)
    times = [int(info["time_ns"])]
    equity = [float(info["equity"])]
    position = [float(info["position"])]
    orders: list[OrderResult] = []
    trades: list[TradeResult] = []
    errors: list[ErrorEvent] = []
    vetoed = 0
    state: Any = None
    episode_start = np.ones((1,), dtype=bool)
    done = False
    while not done:
        kwargs: dict[str, Any] = {
            "state": state,
            "episode_start": episode_start,
            "deterministic": deterministic,
        }
        if masks is not None:
            kwargs["action_masks"] = masks()
        action, state = policy.predict(obs, **kwargs)
        episode_start = np.zeros((1,), dtype=bool)
        obs, _, terminated, truncated, info = env.step(action)
        done = bool(terminated or truncated)
        times.append(int(info["time_ns"]))
        equity.append(float(info["equity"]))
        position.append(float(info["position"]))
        orders.extend(info["orders"])
        trades.extend(info["trades"])
        errors.extend(info["errors"])
        vetoed += len(info["vetoed"])
    time_arr = np.asarray(times, dtype=np.int64)
    replay = env.unwrapped
    all_times = getattr(getattr(replay, "market_data", None), "time_ns", time_arr)
    return EvaluationResult(
        name=name,
        symbol=str(getattr(replay, "symbol", "")),
        time_ns=time_arr,
        equity=np.asarray(equity, dtype=np.float64),
        position=np.asarray(position, dtype=np.float64),
        orders=tuple(orders),
        trades=tuple(trades),
        errors=tuple(errors),
        vetoed=vetoed,
        periods_per_year=periods_per_year(all_times, calendar),
    )


def summarize(result: EvaluationResult) -> Metrics:
    """The headline metrics of an evaluation (see :class:`Metrics`)."""
    equity = result.equity
    returns = equity[1:] / equity[:-1] - 1.0 if len(equity) > 1 else np.zeros(0)
    sharpe = 0.0
    if len(returns) >= _MIN_BARS_FOR_SHARPE:
        std = float(np.std(returns, ddof=1))
        if std > 0.0 and math.isfinite(std):
            sharpe = float(np.mean(returns)) / std * math.sqrt(result.periods_per_year)
    peaks = np.maximum.accumulate(equity) if len(equity) else equity
    drawdown = float(np.max(1.0 - equity / peaks)) if len(equity) else 0.0
    wins = sum(1 for t in result.trades if t.pnl > 0.0)
    n_trades = len(result.trades)
    fees = sum(o.fee for o in result.orders if o.status is OrderStatus.FILLED)
    rejections = sum(1 for o in result.orders if o.status is OrderStatus.REJECTED)
    return Metrics(
        total_return=float(equity[-1] / equity[0] - 1.0) if len(equity) else 0.0,
        sharpe=sharpe,
        max_drawdown=max(drawdown, 0.0),
        trades=n_trades,
        win_rate=wins / n_trades if n_trades else None,
        fees=float(fees),
        rejections=rejections,
        errors=sum(1 for o in result.orders if o.status is OrderStatus.ERRORED),
        vetoes=result.vetoed,
        final_equity=float(equity[-1]) if len(equity) else 0.0,
        exposure=float(np.mean(result.position[1:] != 0.0)) if len(result.position) > 1 else 0.0,
        bars=max(len(equity) - 1, 0),
    )


def report_console() -> Console:
    """A rich console for result tables: the terminal's width, or 120 columns when output is piped
    (rich would squeeze the tables into 80 and wrap every cell)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else REPORT_WIDTH)


def metrics_table(rows: Mapping[str, Metrics]) -> list[list[str]]:
    """Rows of a comparison table (header first): name, return, Sharpe, drawdown, trades, win rate..."""
    out = [["policy", "return", "sharpe", "max dd", "trades", "win rate", "fees", "rejections", "vetoes"]]
    for name, m in rows.items():
        out.append(
            [
                name,
                f"{m.total_return:+.2%}",
                f"{m.sharpe:.2f}",
                f"{m.max_drawdown:.2%}",
                str(m.trades),
                "-" if m.win_rate is None else f"{m.win_rate:.0%}",
                f"{m.fees:.2f}",
                str(m.rejections),
                str(m.vetoes),
            ]
        )
    return out
