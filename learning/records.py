"""Immutable records of what has been learned: rules, minimums, adjustments, pattern scores.

Stdlib-only and picklable: these records travel inside :class:`learning.state.LearnedState` into
environment subprocesses. Times are market-time epoch nanoseconds (UTC).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

__all__ = [
    "MARKET_TIME_NOTE",
    "AvoidanceRule",
    "ConditionAdjustment",
    "LearnedMinimum",
    "PatternScore",
    "TimeFormat",
    "format_market_time",
    "format_ns",
]

TimeFormat = Callable[[int | None], str]
"""How a display writes a market time (:func:`format_ns`, or :func:`format_market_time` bound to a T)."""

_MINUTE_NS: Final = 60 * 10**9
_HOUR_NS: Final = 60 * _MINUTE_NS
_DAY_NS: Final = 24 * _HOUR_NS
MARKET_TIME_NOTE: Final = (
    "Times are market time before T, the store's latest market-clock reading (T-2.5d: 2.5 market days "
    "earlier). A store trained on replayed data runs on the experienced market clock, which adds up the "
    "replayed bar time of every episode: its readings run past the data's last bar and are not calendar "
    "dates."
)
"""What the T-relative times of :func:`format_market_time` mean, for the displays that use them."""


def format_ns(time_ns: int | None) -> str:
    """Market time as ``YYYY-MM-DD HH:MM UTC`` (for explanations and reports only)."""
    if time_ns is None:
        return "-"
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_market_time(time_ns: int | None, now_ns: int) -> str:
    """Market time as its distance to ``now_ns``, the manager's latest market-clock reading ``T``.

    ``T-12.3d``, ``T-5.0h``, ``T-20m`` (``T+...`` for a later time). A training manager's clock is the
    experienced market clock (replayed bar time summed over episodes), whose readings are not calendar
    dates; elapsed market time is what they do measure. Only the display changes: stored times are kept.
    """
    if time_ns is None:
        return "-"
    delta = now_ns - time_ns
    if delta == 0:
        return "T"
    sign = "-" if delta > 0 else "+"
    size = abs(delta)
    if size >= _DAY_NS:
        return f"T{sign}{size / _DAY_NS:.1f}d"
    if size >= _HOUR_NS:
        return f"T{sign}{size / _HOUR_NS:.1f}h"
    return f"T{sign}{max(round(size / _MINUTE_NS), 1)}m"


@dataclass(frozen=True, slots=True)
class PatternScore:
    """Statistics of one trade pattern (a signature of discretized entry factors).

    Attributes:
        signature: the pattern's factors joined by ``|``.
        count: trades seen with this pattern.
        wins: of which profitable.
        total_pnl: summed net PnL (quote currency).
        score: exponential average of outcomes (+1 win, -1 loss), bounded in [-1, 1].
        weight: reinforcement weight, bounded in [weight_min, weight_max] (1.0 neutral).
        first_seen_ns: entry time of the first trade; last_seen_ns: exit time of the latest.
    """

    signature: str
    count: int
    wins: int
    total_pnl: float
    score: float
    weight: float
    first_seen_ns: int
    last_seen_ns: int

    @property
    def win_rate(self) -> float:
        return self.wins / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class LearnedMinimum:
    """The smallest order a symbol accepts, as far as the exchange spec and its rejections tell.

    A ``min_notional`` rejection raises ``min_notional`` to ``bump x attempted notional``; a ``lot_size``
    rejection raises ``min_qty`` to ``bump x attempted quantity`` (never lowering either).

    Attributes:
        symbol: market symbol.
        min_qty: smallest base quantity to send.
        min_notional: smallest quote value (quantity x price) to send.
        quote_value: quote value of the latest learned amount (amount x price at that rejection).
        updated_ns: market time of the latest update.
        rejections: minimum rejections seen for the symbol.
        source: ``"spec"`` (seeded from a MarketSpec only) or ``"learned"``.
    """

    symbol: str
    min_qty: float
    min_notional: float
    quote_value: float
    updated_ns: int
    rejections: int
    source: str

    def min_order_qty(self, price: float) -> float:
        """Smallest base quantity that satisfies both minimums at ``price``."""
        by_notional = self.min_notional / price if price > 0.0 else 0.0
        return max(self.min_qty, by_notional)


@dataclass(frozen=True, slots=True)
class ConditionAdjustment:
    """How to trade in one market-condition class (neutral when performance there is fine).

    Attributes:
        condition_key: the condition class (see :class:`learning.discretize.ConditionClassifier`).
        exposure_multiplier: multiply the target exposure by this (1.0 neutral).
        entry_threshold: open a position only when the signal's magnitude is at least this (0 neutral).
        max_position: cap on the absolute target exposure, as a fraction of the maximum (1.0 neutral).
        win_rate: win rate measured in this class when last adapted.
        trades: trades behind that win rate.
        active: whether the tightening is in force (hysteresis state).
        updated_ns: market time of the last change.
    """

    condition_key: str
    exposure_multiplier: float = 1.0
    entry_threshold: float = 0.0
    max_position: float = 1.0
    win_rate: float = 0.0
    trades: int = 0
    active: bool = False
    updated_ns: int = 0

    @classmethod
    def neutral(cls, condition_key: str) -> ConditionAdjustment:
        """The adjustment of a class never adapted (shared: records are immutable, asked for every bar)."""
        return _neutral(condition_key) if cls is ConditionAdjustment else cls(condition_key=condition_key)


@dataclass(frozen=True, slots=True)
class AvoidanceRule:
    """Do not enter when ``factor`` holds: it dominated recent losing trades and is rarer among winners.

    Attributes:
        rule_id: stable id, ``"avoid:<factor>"``.
        factor: the discretized condition, e.g. ``"rsi_14=oversold"``.
        description: the factor's value range in words, e.g. ``"rsi_14 < 30"``.
        support: losing trades carrying the factor (window of the analysis).
        losers: losing trades in the window.
        occurrence: ``support / losers``.
        winner_occurrence: Laplace-smoothed share of winners carrying the factor.
        lift: ``occurrence / winner_occurrence``.
        window_days: analysis window (market days).
        created_ns: market time the rule was created; updated_ns: of the latest evidence refresh.
        vetoes: entries this rule has vetoed.
        judged: vetoes whose counterfactual outcome has been reported.
        wrong: judged vetoes whose trade would have won.
        active: false once retired.
        retired_ns: market time of retirement; retire_reason: why.
    """

    rule_id: str
    factor: str
    description: str
    support: int
    losers: int
    occurrence: float
    winner_occurrence: float
    lift: float
    window_days: float
    created_ns: int
    updated_ns: int
    vetoes: int = 0
    judged: int = 0
    wrong: int = 0
    active: bool = True
    retired_ns: int | None = None
    retire_reason: str = field(default="")

    @property
    def counterfactual_win_rate(self) -> float:
        """Share of judged vetoes whose trade would have won (0 when none judged)."""
        return self.wrong / self.judged if self.judged else 0.0

    def explain(self, time_format: TimeFormat = format_ns) -> str:
        """One paragraph: what the rule forbids, the evidence, and how its vetoes have fared.

        Args:
            time_format: how to write market times (e.g. :func:`format_market_time` bound to a T).
        """
        text = (
            f"Avoid entering when {self.description} ({self.factor}): it was present in "
            f"{self.support} of {self.losers} losing trades ({self.occurrence:.0%}) but in about "
            f"{self.winner_occurrence:.0%} of winners (lift {self.lift:.2f}) over the "
            f"{self.window_days:g} market days before {time_format(self.updated_ns)}; "
            f"created {time_format(self.created_ns)}. It has vetoed {self.vetoes} entries"
        )
        if self.judged:
            text += f"; {self.wrong} of {self.judged} judged vetoes would have won"
        text += "."
        if not self.active:
            text += f" Retired {time_format(self.retired_ns)}: {self.retire_reason}."
        return text


@lru_cache(maxsize=4096)
def _neutral(condition_key: str) -> ConditionAdjustment:
    return ConditionAdjustment(condition_key=condition_key)
