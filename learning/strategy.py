"""Strategy evolution (factor weights) and reinforcement of the best trades' patterns.

Evolution (seed: last 7 market days, x1.1): among the trades that closed in the window, the factors
present in at least ``common_feature_share`` of the winners (with at least ``min_support`` winners) have
their weight multiplied by the boost. Every factor seen in the window joins the weight table at 1.0, so
a boost is relative to the factors that were not common among winners.

Normalization (so weights cannot run away): after boosting, all weights are scaled by the one factor
``s`` for which ``mean(clip(s * w, w_min, w_max)) == 1`` and then clipped. Because
``w_min < 1 < w_max`` such an ``s`` always exists (the clipped mean grows continuously from ``w_min`` to
``w_max`` as ``s`` grows). The clipped mean is piecewise linear in ``s`` with breakpoints
``w_min / w`` and ``w_max / w``, so ``s`` is solved exactly: locate the segment that crosses 1 among
the sorted breakpoints, then solve its linear equation. Every weight therefore stays in
``[w_min, w_max]``, the mean is 1, and ratios between unclipped weights are preserved (a boosted factor
ends up exactly ``boost`` times an unboosted one).

Reinforcement (seed: top 10%, x1.2): among the trades closed in the reinforcement window, those with a
positive PnL at or above the window's ``percentile`` of PnL (numpy's default ``linear`` method) boost
their pattern's weight, clipped to ``[w_min, w_max]``. Each trade reinforces at most once, so repeated
calls do not compound the same evidence.
"""

from __future__ import annotations

import json
import math
import sqlite3
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from learning.journal import JournalEntry, WindowStats
from learning.store import OnRollback

__all__ = ["EvolutionStep", "StrategyOptimizer", "normalize_weights", "percentile"]


def normalize_weights(weights: Mapping[str, float], w_min: float, w_max: float) -> dict[str, float]:
    """Scale and clip weights into ``[w_min, w_max]`` with mean 1 (see the module docstring).

    Requires ``0 < w_min < 1 < w_max`` and positive weights. The scale depends only on the multiset of
    weights (they are sorted first), not on the order of the mapping.
    """
    if not weights:
        return {}
    if not 0.0 < w_min < 1.0 < w_max:
        raise ValueError(f"need 0 < w_min < 1 < w_max, got {w_min}, {w_max}")
    values = list(weights.values())
    if not all(map(math.isfinite, values)):
        raise ValueError("weights must be finite and positive")
    ordered = sorted(values)
    if not ordered[0] > 0.0:
        raise ValueError("weights must be finite and positive")
    scale = _mean_one_scale(ordered, w_min, w_max)
    # Plain floats: a weight table has tens to a few hundred factors, where NumPy's per-call cost
    # exceeds the arithmetic. (The clip as conditionals: min()/max() calls cost more than the product.)
    return dict(
        zip(
            weights,
            [w_min if (x := scale * v) < w_min else w_max if x > w_max else x for v in values],
            strict=True,
        )
    )


def _mean_one_scale(ws: list[float], w_min: float, w_max: float) -> float:
    """The ``s`` with ``mean(clip(s * ws, w_min, w_max)) == 1`` for positive ``ws`` sorted ascending.

    ``n * mean`` at ``s`` is ``w_min * a + w_max * (n - b) + s * sum(ws[a:b])``, where the ``a`` smallest
    weights are clipped low (``w <= w_min / s``) and those from ``b`` on are clipped high
    (``w >= w_max / s``). A binary search over the sorted breakpoints finds the first one where it
    reaches ``n``: the segment ending there holds the solution, with the ``a`` and ``b`` of its middle.
    """
    n = len(ws)
    prefix = list(accumulate(ws, initial=0.0))
    descending = ws[::-1]
    breaks = sorted([w_min / w for w in descending] + [w_max / w for w in descending])
    lo, hi = 0, len(breaks)
    while lo < hi:
        mid = (lo + hi) // 2
        s = breaks[mid]
        a = bisect_right(ws, w_min / s)
        b = bisect_left(ws, w_max / s)
        if w_min * a + w_max * (n - b) + s * (prefix[b] - prefix[a]) < n:
            lo = mid + 1
        else:
            hi = mid
    # The clipped mean is w_min < 1 at the first breakpoint and w_max > 1 at the last one.
    j = min(max(lo, 1), 2 * n - 1)
    right = breaks[j]
    middle = 0.5 * (breaks[j - 1] + right)
    a = bisect_right(ws, w_min / middle)
    b = bisect_left(ws, w_max / middle)
    free = prefix[b] - prefix[a]
    if free <= 0.0:
        return right  # every weight is clipped on this segment: the mean is flat and 1 at its end
    return (n - w_min * a - w_max * (n - b)) / free


def percentile(ordered: Sequence[float], q: float) -> float:
    """``numpy.percentile(ordered, q)`` (its default ``linear`` method) of values sorted ascending.

    The same floating-point steps as NumPy's: virtual index ``(n - 1) * (q / 100)``, then its
    interpolation between the two neighbours (from the upper one when the weight is >= 0.5), so a cut
    at an exact data point compares equal to it.
    """
    n = len(ordered)
    if not n:
        raise ValueError("percentile of no values")
    index = (n - 1) * (q / 100)
    if index >= n - 1:
        return float(ordered[-1])
    below = math.floor(index)
    gamma = index - below
    a = float(ordered[below])
    b = float(ordered[below + 1])
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


@dataclass(frozen=True, slots=True)
class EvolutionStep:
    """One evolution of the strategy weights (kept in history).

    Attributes:
        step: 1-based sequence number.
        time_ns: market time of the step.
        trades: trades in the window; winners: of which winning.
        boosted: factors common among winners, whose weight was boosted.
        weights: the full weight table after the step.
    """

    step: int
    time_ns: int
    trades: int
    winners: int
    boosted: tuple[str, ...]
    weights: Mapping[str, float]


_HistoryRow = tuple[int, int, int, int, str, str]


def _history_row(s: EvolutionStep) -> _HistoryRow:
    """The ``evolution_history`` row of a step (its boosted factors and weights as JSON)."""
    weights = s.weights if type(s.weights) is dict else dict(s.weights)
    return (s.step, s.time_ns, s.trades, s.winners, json.dumps(list(s.boosted)), json.dumps(weights))


class StrategyOptimizer:
    """Evolves factor weights from winning trades and picks trades to reinforce.

    Args:
        conn: the store connection (weights and history are loaded at construction).
        evolution_boost: multiplier of common winner factors (seed: 1.1).
        common_share: share of winners a factor must appear in.
        min_support: minimum winners (evolution) or trades (reinforcement) to act on.
        weight_bounds: ``(w_min, w_max)``.
        percentile: reinforcement PnL percentile (seed: 90).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        evolution_boost: float,
        common_share: float,
        min_support: int,
        weight_bounds: tuple[float, float],
        percentile: float,
    ) -> None:
        self._boost = evolution_boost
        self._share = common_share
        self._min_support = min_support
        self._w_min, self._w_max = weight_bounds
        self._percentile = percentile
        self._weights: dict[str, float] = dict(
            conn.execute("SELECT factor, weight FROM strategy_weights ORDER BY factor").fetchall()
        )
        self._history: list[EvolutionStep] = [
            EvolutionStep(step, time_ns, trades, winners, tuple(json.loads(boosted)), json.loads(weights))
            for step, time_ns, trades, winners, boosted, weights in conn.execute(
                "SELECT step, time_ns, trades, winners, boosted, weights FROM evolution_history ORDER BY step"
            )
        ]
        self._pending: list[_HistoryRow] = []  # evolution_history rows not yet written
        self._weights_dirty = False
        # The table as last written (a weight table is never changed in place, only replaced).
        self._written: Mapping[str, float] = self._weights

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    @property
    def weights_view(self) -> Mapping[str, float]:
        """The weight table itself (for snapshots): replaced by every step, never changed in place."""
        return self._weights

    @property
    def history(self) -> list[EvolutionStep]:
        return list(self._history)

    def common_winner_factors(self, window: WindowStats) -> tuple[str, ...]:
        """Factors in at least ``common_share`` of the winners (empty below ``min_support`` winners)."""
        winners = window.wins
        if winners < self._min_support:
            return ()
        share = self._share
        return tuple(sorted(f for f, c in window.winner_factors.items() if c / winners >= share))

    def evolve(self, now_ns: int, window: WindowStats) -> EvolutionStep | None:
        """One evolution step over the window's trades; ``None`` when there is too little evidence."""
        boosted = self.common_winner_factors(window)
        if not boosted:
            return None
        weights = dict(self._weights)
        # Every factor seen in the window joins the table at 1.0 (the table is kept sorted by factor).
        fresh = (window.winner_factors.keys() | window.loser_factors.keys()) - weights.keys()
        for factor in fresh:
            weights[factor] = 1.0
        boost = self._boost
        for factor in boosted:
            weights[factor] *= boost
        normalized = normalize_weights(weights, self._w_min, self._w_max)
        # A fresh dict per step, never changed afterwards: the history step shares it.
        self._weights = dict(sorted(normalized.items())) if fresh else normalized
        self._weights_dirty = True
        step = EvolutionStep(
            step=len(self._history) + 1,
            time_ns=now_ns,
            trades=window.trades,
            winners=window.wins,
            boosted=boosted,
            weights=self._weights,
        )
        self._history.append(step)
        # Encoded now, written at the next flush: the encoding is the bulk of writing a step, and a
        # flush (once a market day behind periodic work) then does not wait for a day's worth of it.
        self._pending.append(_history_row(step))
        return step

    def reinforcement_targets(self, window: WindowStats) -> list[JournalEntry]:
        """Not-yet-reinforced winning trades at or above the PnL percentile of the window's trades."""
        if window.trades < self._min_support:
            return []
        cut = percentile(window.pnls, self._percentile)
        return [e for e in window.entries() if e.pnl >= cut and e.pnl > 0.0 and not e.reinforced]

    def flush(self, conn: sqlite3.Connection, on_rollback: OnRollback) -> None:
        """Write the weight table and new history steps (inside the caller's transaction); should it roll
        back, the undo given to ``on_rollback`` makes them unwritten again."""
        written = self._written
        weights_dirty = self._weights_dirty
        steps = self._pending
        if not weights_dirty and not steps:
            return
        # Handed over before the statements run: whichever of them fails, the rollback puts all back.
        self._written = self._weights
        self._weights_dirty = False
        self._pending = []
        on_rollback(lambda: self._unwritten(written, weights_dirty, steps))
        if weights_dirty:
            # Factors never leave the table: rewriting only the rows that changed leaves the same table.
            changed = [(f, w) for f, w in self._weights.items() if written.get(f) != w]
            conn.executemany(
                "INSERT INTO strategy_weights (factor, weight) VALUES (?, ?) "
                "ON CONFLICT(factor) DO UPDATE SET weight = excluded.weight",
                changed,
            )
        if steps:
            conn.executemany(
                "INSERT INTO evolution_history (step, time_ns, trades, winners, boosted, weights) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                steps,
            )

    def _unwritten(self, written: Mapping[str, float], weights_dirty: bool, steps: list[_HistoryRow]) -> None:
        if weights_dirty:
            self._written = written  # the table as it still is in the store
            self._weights_dirty = True
        self._pending[:0] = steps
