"""Strategy evolution (factor weights) and reinforcement of the best trades' patterns.

Evolution (seed: last 7 market days, x1.1): among the trades that closed in the window, the factors
present in at least ``common_feature_share`` of the winners (with at least ``min_support`` winners) have
their weight multiplied by the boost. Every factor seen in the window joins the weight table at 1.0, so
a boost is relative to the factors that were not common among winners.

Normalization (so weights cannot run away): after boosting, all weights are scaled by the one factor
``s`` for which ``mean(clip(s * w, w_min, w_max)) == 1`` and then clipped. Because
``w_min < 1 < w_max`` such an ``s`` always exists (the clipped mean grows continuously from ``w_min`` to
``w_max`` as ``s`` grows); it is found by bisection. Every weight therefore stays in
``[w_min, w_max]``, the mean is 1, and ratios between unclipped weights are preserved (a boosted factor
ends up exactly ``boost`` times an unboosted one).

Reinforcement (seed: top 10%, x1.2): among the trades closed in the reinforcement window, those with a
positive PnL at or above the window's ``percentile`` of PnL (numpy's default ``linear`` method) boost
their pattern's weight, clipped to ``[w_min, w_max]``. Each trade reinforces at most once, so repeated
calls do not compound the same evidence.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from learning.journal import JournalEntry

__all__ = ["EvolutionStep", "StrategyOptimizer", "normalize_weights"]

_BISECTION_STEPS = 200
_MEAN_TOLERANCE = 1e-12


def normalize_weights(weights: Mapping[str, float], w_min: float, w_max: float) -> dict[str, float]:
    """Scale and clip weights into ``[w_min, w_max]`` with mean 1 (see the module docstring).

    Requires ``0 < w_min < 1 < w_max`` and positive weights.
    """
    if not weights:
        return {}
    if not 0.0 < w_min < 1.0 < w_max:
        raise ValueError(f"need 0 < w_min < 1 < w_max, got {w_min}, {w_max}")
    keys = list(weights)
    w = np.array([weights[k] for k in keys], dtype=float)
    if np.any(~np.isfinite(w)) or np.any(w <= 0.0):
        raise ValueError("weights must be finite and positive")

    def mean_at(s: float) -> float:
        return float(np.clip(s * w, w_min, w_max).mean())

    lo, hi = 0.0, w_max / float(w.min())  # mean_at(lo) = w_min < 1, mean_at(hi) = w_max > 1
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        m = mean_at(mid)
        if abs(m - 1.0) <= _MEAN_TOLERANCE:
            lo = hi = mid
            break
        if m < 1.0:
            lo = mid
        else:
            hi = mid
    out = np.clip(0.5 * (lo + hi) * w, w_min, w_max)
    return {k: float(v) for k, v in zip(keys, out, strict=True)}


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
        self._pending: list[EvolutionStep] = []
        self._weights_dirty = False

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    @property
    def history(self) -> list[EvolutionStep]:
        return list(self._history)

    def common_winner_factors(self, entries: Sequence[JournalEntry]) -> tuple[str, ...]:
        """Factors in at least ``common_share`` of the winners (empty below ``min_support`` winners)."""
        winners = [e for e in entries if e.won]
        if len(winners) < self._min_support:
            return ()
        counts = Counter(f for e in winners for f in e.factors)
        return tuple(sorted(f for f, c in counts.items() if c / len(winners) >= self._share))

    def evolve(self, now_ns: int, entries: Sequence[JournalEntry]) -> EvolutionStep | None:
        """One evolution step over the window's trades; ``None`` when there is too little evidence."""
        boosted = self.common_winner_factors(entries)
        if not boosted:
            return None
        weights = dict(self._weights)
        for factor in sorted({f for e in entries for f in e.factors}):
            weights.setdefault(factor, 1.0)
        for factor in boosted:
            weights[factor] *= self._boost
        self._weights = dict(sorted(normalize_weights(weights, self._w_min, self._w_max).items()))
        self._weights_dirty = True
        step = EvolutionStep(
            step=len(self._history) + 1,
            time_ns=now_ns,
            trades=len(entries),
            winners=sum(e.won for e in entries),
            boosted=boosted,
            weights=dict(self._weights),
        )
        self._history.append(step)
        self._pending.append(step)
        return step

    def reinforcement_targets(self, entries: Sequence[JournalEntry]) -> list[JournalEntry]:
        """Not-yet-reinforced winning trades at or above the PnL percentile of ``entries``."""
        if len(entries) < self._min_support:
            return []
        cut = float(np.percentile(np.array([e.pnl for e in entries], dtype=float), self._percentile))
        return [e for e in entries if not e.reinforced and e.pnl > 0.0 and e.pnl >= cut]

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write the weight table and new history steps (inside the caller's transaction)."""
        if self._weights_dirty:
            conn.execute("DELETE FROM strategy_weights")
            conn.executemany(
                "INSERT INTO strategy_weights (factor, weight) VALUES (?, ?)", self._weights.items()
            )
            self._weights_dirty = False
        if self._pending:
            conn.executemany(
                "INSERT INTO evolution_history (step, time_ns, trades, winners, boosted, weights) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        s.step,
                        s.time_ns,
                        s.trades,
                        s.winners,
                        json.dumps(list(s.boosted)),
                        json.dumps(dict(s.weights)),
                    )
                    for s in self._pending
                ],
            )
            self._pending.clear()
