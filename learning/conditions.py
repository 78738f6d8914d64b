"""Adapting to market conditions: trade smaller and pickier where recent trades have been losing.

At most once per ``adaptation_interval`` of market time, the current conditions are classified
(:class:`learning.discretize.ConditionClassifier`: regime / volatility / trend bins) and the win rate
of journal trades entered in the same class over the lookback window is measured. With at least
``adaptation_min_trades`` trades:

* win rate below the threshold (0.45): tighten. With ``severity = (threshold - win_rate) / threshold``
  in (0, 1]: ``exposure_multiplier = 1 - severity * (1 - min_exposure)``,
  ``entry_threshold = severity * max_entry_threshold``,
  ``max_position = 1 - severity * (1 - min_exposure) / 2``;
* win rate at or above ``threshold + hysteresis_margin`` (0.50) while tightened: relax to neutral;
* in between: keep whatever is in force (hysteresis, so adjustments do not flap around 0.45).

Every change (tightening, re-tightening to another severity, relaxing) counts as one adaptation.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from learning.discretize import ConditionClassifier
from learning.journal import TradeJournal
from learning.records import ConditionAdjustment
from learning.store import OnRollback

__all__ = ["AdaptationOutcome", "MarketConditionAdapter"]


@dataclass(frozen=True, slots=True)
class AdaptationOutcome:
    """What one call to :meth:`MarketConditionAdapter.adapt` did.

    Attributes:
        ran: false when skipped because the cadence had not elapsed.
        changed: whether an adjustment was applied or relaxed.
        adjustment: the adjustment in force for the current condition class.
    """

    ran: bool
    changed: bool
    adjustment: ConditionAdjustment


class MarketConditionAdapter:
    """Per-condition-class adjustments with hysteresis.

    Args:
        conn: the store connection (adjustments are loaded at construction).
        classifier: condition classes from condition features.
        threshold: win rate under which to tighten (seed: 0.45).
        margin: hysteresis margin above the threshold needed to relax.
        interval_ns: minimum market time between runs (seed: 5 minutes).
        lookback_ns: journal window of the win-rate measurement.
        min_trades: trades needed in the class before acting.
        min_exposure: floor of the exposure multiplier.
        max_entry_threshold: ceiling of the entry threshold.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        classifier: ConditionClassifier,
        *,
        threshold: float,
        margin: float,
        interval_ns: int,
        lookback_ns: int,
        min_trades: int,
        min_exposure: float,
        max_entry_threshold: float,
    ) -> None:
        self.classifier = classifier
        self._threshold = threshold
        self._margin = margin
        self._interval = interval_ns
        self._lookback = lookback_ns
        self._min_trades = min_trades
        self._min_exposure = min_exposure
        self._max_entry = max_entry_threshold
        self.last_run_ns: int | None = None
        self.adaptations = 0
        self.runs = 0
        self._adjustments: dict[str, ConditionAdjustment] = {
            row[0]: ConditionAdjustment(
                condition_key=row[0],
                exposure_multiplier=row[1],
                entry_threshold=row[2],
                max_position=row[3],
                win_rate=row[4],
                trades=row[5],
                active=bool(row[6]),
                updated_ns=row[7],
            )
            for row in conn.execute(
                "SELECT condition_key, exposure_multiplier, entry_threshold, max_position, win_rate, trades, "
                "active, updated_ns FROM adjustments"
            )
        }
        self._dirty: set[str] = set()
        self._view: dict[str, ConditionAdjustment] | None = None

    def restore(self, last_run_ns: int | None, adaptations: int, runs: int) -> None:
        """Resume cadence and counters saved by the manager."""
        self.last_run_ns = last_run_ns
        self.adaptations = adaptations
        self.runs = runs

    def _tightened(self, key: str, win_rate: float, trades: int, now_ns: int) -> ConditionAdjustment:
        severity = (self._threshold - win_rate) / self._threshold
        loosen = 1.0 - self._min_exposure
        return ConditionAdjustment(
            condition_key=key,
            exposure_multiplier=1.0 - severity * loosen,
            entry_threshold=severity * self._max_entry,
            max_position=1.0 - severity * loosen / 2.0,
            win_rate=win_rate,
            trades=trades,
            active=True,
            updated_ns=now_ns,
        )

    def due(self, now_ns: int) -> bool:
        """Whether :meth:`adapt` would run at ``now_ns`` (its cadence has elapsed)."""
        return self.last_run_ns is None or now_ns - self.last_run_ns >= self._interval

    def adapt(self, now_ns: int, conditions: Mapping[str, float], journal: TradeJournal) -> AdaptationOutcome:
        """Measure the current condition class and tighten or relax its adjustment (cadence-limited)."""
        key = self.classifier.key(conditions)
        current = self._adjustments.get(key) or ConditionAdjustment.neutral(key)
        if self.last_run_ns is not None and now_ns - self.last_run_ns < self._interval:
            return AdaptationOutcome(False, False, current)
        self.last_run_ns = now_ns
        self.runs += 1
        similar = journal.stats(now_ns, self._lookback).conditions.get(key)
        trades, wins = (0, 0) if similar is None else similar
        if trades < self._min_trades:
            return AdaptationOutcome(True, False, current)
        win_rate = wins / trades
        new: ConditionAdjustment | None = None
        if win_rate < self._threshold:
            candidate = self._tightened(key, win_rate, trades, now_ns)
            if (candidate.exposure_multiplier, candidate.entry_threshold) != (
                current.exposure_multiplier,
                current.entry_threshold,
            ) or not current.active:
                new = candidate
        elif current.active and win_rate >= self._threshold + self._margin:
            new = ConditionAdjustment(key, win_rate=win_rate, trades=trades, active=False, updated_ns=now_ns)
        if new is None:
            return AdaptationOutcome(True, False, current)
        self._adjustments[key] = new
        self._view = None
        self._dirty.add(key)
        self.adaptations += 1
        return AdaptationOutcome(True, True, new)

    def adjustments(self) -> dict[str, ConditionAdjustment]:
        """Every condition class adapted at least once, by key."""
        return dict(sorted(self._adjustments.items()))

    def view(self) -> Mapping[str, ConditionAdjustment]:
        """:meth:`adjustments`, shared until one changes (for snapshots; never changed in place)."""
        view = self._view
        if view is None:
            view = self._view = self.adjustments()
        return view

    def flush(self, conn: sqlite3.Connection, on_rollback: OnRollback) -> None:
        """Write changed adjustments (inside the caller's transaction); should it roll back, the undo given
        to ``on_rollback`` marks them changed again."""
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = set()
        on_rollback(lambda: self._dirty.update(dirty))  # whichever statement fails
        conn.executemany(
            "INSERT OR REPLACE INTO adjustments (condition_key, exposure_multiplier, entry_threshold, "
            "max_position, win_rate, trades, active, updated_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    a.condition_key,
                    a.exposure_multiplier,
                    a.entry_threshold,
                    a.max_position,
                    a.win_rate,
                    a.trades,
                    int(a.active),
                    a.updated_ns,
                )
                for a in (self._adjustments[k] for k in sorted(dirty))
            ],
        )
