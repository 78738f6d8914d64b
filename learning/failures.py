"""Failure analysis: factors that dominate recent losing trades become explainable avoidance rules.

Over the trades closed in the failure window (seed: 3 market days), a factor becomes a rule when

* at least ``min_support`` losing trades carry it, and its share among losers *exceeds* the occurrence
  threshold (seed: 0.7), and
* it is clearly rarer among winners: ``occurrence / winner_share >= lift_threshold``, where
  ``winner_share = (k + 1) / (n + 2)`` is Laplace-smoothed so that a window with few or no winners
  neither divides by zero nor makes every common factor look damning.

A rule carries its evidence (support, occurrence, winner share, lift, window, created/updated times);
a later analysis that finds the same factor refreshes the evidence. Rules count the vetoes they cause;
when the counterfactual outcome of vetoed trades is reported (:meth:`FailureAnalyzer.record_outcome`)
and, after ``retire_min_outcomes`` judged vetoes, the share that would have won exceeds
``retire_win_rate``, the rule retires (kept for the record, no longer applied). A retired rule can be
re-created from fresh evidence after the cooldown.
"""

from __future__ import annotations

import math
import sqlite3
from collections import deque
from dataclasses import replace

from learning.discretize import Discretizer
from learning.journal import WindowStats
from learning.records import AvoidanceRule
from learning.store import OnRollback

__all__ = ["RULE_PREFIX", "FailureAnalyzer"]

RULE_PREFIX = "avoid:"
_RULE_COLUMNS = (
    "rule_id, factor, description, support, losers, occurrence, winner_occurrence, lift, window_days, "
    "created_ns, updated_ns, vetoes, judged, wrong, active, retired_ns, retire_reason"
)

_VetoRow = tuple[int, str, int, str]  # id, rule_id, time_ns, symbol
_Judgement = tuple[int, int | None]  # outcome, veto id


class FailureAnalyzer:
    """Mines avoidance rules from losing trades and retires the ones whose vetoes prove wrong.

    Args:
        conn: the store connection (rules are loaded at construction).
        discretizer: describes a factor's value range for explanations.
        occurrence: share of losers a factor must exceed (seed: 0.7).
        min_support: minimum losing trades carrying the factor.
        min_winners: minimum winning trades in the window (no rules from a window without a comparison).
        lift_threshold: minimum ``occurrence / smoothed winner share``.
        significance: one-sided Fisher exact p-value the factor's loser/winner split must beat.
        window_days: the analysis window, recorded in each rule's evidence.
        retire_min_outcomes: judged vetoes needed before a rule can retire.
        retire_win_rate: retire when the share of judged vetoes that would have won exceeds this.
        cooldown_ns: market time after retirement before the factor may become a rule again.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        discretizer: Discretizer,
        *,
        occurrence: float,
        min_support: int,
        min_winners: int,
        lift_threshold: float,
        significance: float = 1.0,
        window_days: float,
        retire_min_outcomes: int,
        retire_win_rate: float,
        cooldown_ns: int,
        retire_margin: float = 0.0,
    ) -> None:
        self._discretizer = discretizer
        self._occurrence = occurrence
        self._min_support = min_support
        self._min_winners = min_winners
        self._lift = lift_threshold
        self._significance = significance
        self._window_days = window_days
        self._retire_min = retire_min_outcomes
        self._retire_rate = retire_win_rate
        self._retire_margin = retire_margin
        self._cooldown = cooldown_ns
        self._rules: dict[str, AvoidanceRule] = {}
        for row in conn.execute(f"SELECT {_RULE_COLUMNS} FROM rules ORDER BY rule_id"):
            values = list(row)
            values[14] = bool(values[14])
            self._rules[row[0]] = AvoidanceRule(*values)
        self._dirty: set[str] = set()
        # Rule changes so far, and the active rules as of a count of them.
        self._changes = 0
        self._active: tuple[int, tuple[AvoidanceRule, ...]] | None = None
        # Veto rows get their ids here (the next of the table's), so a judgement updates its veto by id:
        # per rule, the ids of its vetoes without an outcome, oldest first (an outcome goes to the
        # oldest; reports arrive in veto order).
        self._next_veto_id = int(conn.execute("SELECT MAX(id) FROM vetoes").fetchone()[0] or 0) + 1
        self._unjudged: dict[str, deque[int]] = {}
        for veto_id, rule_id in conn.execute(
            "SELECT id, rule_id FROM vetoes WHERE outcome IS NULL ORDER BY id"
        ):
            self._unjudged.setdefault(rule_id, deque()).append(veto_id)
        self._pending_vetoes: list[_VetoRow] = []
        self._pending_judgements: list[_Judgement] = []

    # --- analysis ----------------------------------------------------------------------------------
    def analyze(self, now_ns: int, window: WindowStats) -> list[AvoidanceRule]:
        """Create or refresh rules from the window's trades; returns the rules created or refreshed."""
        losers = window.losers
        winners = window.wins
        if losers < self._min_support or winners < self._min_winners:
            return []
        loser_counts = window.loser_factors
        winner_counts = window.winner_factors
        # Only factors with enough support and occurrence can become rules: select them first.
        min_support = self._min_support
        occurrence_threshold = self._occurrence
        candidates = sorted(
            f for f, c in loser_counts.items() if c >= min_support and c / losers > occurrence_threshold
        )
        touched: list[AvoidanceRule] = []
        for factor in candidates:
            support = loser_counts[factor]
            occurrence = support / losers
            winner_hits = winner_counts.get(factor, 0)
            winner_share = (winner_hits + 1) / (winners + 2)
            lift = occurrence / winner_share
            if lift < self._lift:
                continue
            if (
                self._significance < 1.0
                and fisher_greater(support, losers, winner_hits, winners) >= self._significance
            ):
                continue
            rule = self._upsert(factor, support, losers, occurrence, winner_share, lift, now_ns)
            if rule is not None:
                touched.append(rule)
        return touched

    def _upsert(
        self,
        factor: str,
        support: int,
        losers: int,
        occurrence: float,
        winner_share: float,
        lift: float,
        now_ns: int,
    ) -> AvoidanceRule | None:
        rule_id = RULE_PREFIX + factor
        old = self._rules.get(rule_id)
        if old is not None and old.active:
            base = old
        elif old is not None and old.retired_ns is not None and now_ns - old.retired_ns < self._cooldown:
            return None
        else:
            base = AvoidanceRule(
                rule_id=rule_id,
                factor=factor,
                description=self._discretizer.describe(factor),
                support=0,
                losers=0,
                occurrence=0.0,
                winner_occurrence=0.0,
                lift=0.0,
                window_days=self._window_days,
                created_ns=now_ns,
                updated_ns=now_ns,
            )
        new = replace(
            base,
            support=support,
            losers=losers,
            occurrence=occurrence,
            winner_occurrence=winner_share,
            lift=lift,
            window_days=self._window_days,
            updated_ns=now_ns,
        )
        if new == old:
            return None
        self._rules[rule_id] = new
        self._changes += 1
        self._dirty.add(rule_id)
        return new

    # --- vetoes ------------------------------------------------------------------------------------
    def _require(self, rule_id: str) -> AvoidanceRule:
        rule = self._rules.get(rule_id)
        if rule is None:
            raise KeyError(f"unknown avoidance rule {rule_id!r}")
        return rule

    def record_veto(self, rule_id: str, time_ns: int, symbol: str = "") -> AvoidanceRule:
        """Count an entry this rule vetoed."""
        old = self._require(rule_id)
        rule = _counted(old, old.vetoes + 1, old.judged, old.wrong)
        self._rules[rule_id] = rule
        self._changes += 1
        self._dirty.add(rule_id)
        veto_id = self._next_veto_id
        self._next_veto_id = veto_id + 1
        self._pending_vetoes.append((veto_id, rule_id, time_ns, symbol))
        unjudged = self._unjudged.get(rule_id)
        if unjudged is None:
            unjudged = self._unjudged[rule_id] = deque()
        unjudged.append(veto_id)
        return rule

    def record_outcome(
        self, rule_id: str, would_have_won: bool, time_ns: int, baseline_win_rate: float | None = None
    ) -> AvoidanceRule:
        """Report what a vetoed trade would have done; retires the rule when its vetoes prove wrong.

        Wrong means the vetoed entries would have won more often than ``retire_win_rate`` or, when the
        recent ``baseline_win_rate`` of actual trades is known, more often than that baseline minus the
        margin: a rule earns its place only by filtering out clearly worse entries.
        """
        old = self._require(rule_id)
        rule = _counted(old, old.vetoes, old.judged + 1, old.wrong + bool(would_have_won))
        threshold = self._retire_rate
        if baseline_win_rate is not None:
            threshold = min(threshold, max(baseline_win_rate - self._retire_margin, 0.0))
        if rule.active and rule.judged >= self._retire_min and rule.counterfactual_win_rate > threshold:
            rule = replace(
                rule,
                active=False,
                retired_ns=time_ns,
                retire_reason=(
                    f"{rule.wrong} of {rule.judged} vetoed entries would have won "
                    f"({rule.counterfactual_win_rate:.0%} > {threshold:.0%})"
                ),
            )
        self._rules[rule_id] = rule
        self._changes += 1
        self._dirty.add(rule_id)
        unjudged = self._unjudged.get(rule_id)
        # Without a veto waiting for it (none recorded by this store), the outcome updates no row.
        veto_id = unjudged.popleft() if unjudged else None
        self._pending_judgements.append((int(bool(would_have_won)), veto_id))
        return rule

    # --- reading -----------------------------------------------------------------------------------
    def rules(self, *, active_only: bool = False) -> list[AvoidanceRule]:
        """Rules by id (all, or only the active ones)."""
        return [r for _, r in sorted(self._rules.items()) if r.active or not active_only]

    def active_rules(self) -> tuple[AvoidanceRule, ...]:
        """The active rules by id (read for every snapshot: kept until a rule changes)."""
        cached = self._active
        if cached is None or cached[0] != self._changes:
            active = tuple(r for _, r in sorted(self._rules.items()) if r.active)
            cached = self._active = (self._changes, active)
        return cached[1]

    def get(self, rule_id: str) -> AvoidanceRule | None:
        return self._rules.get(rule_id)

    @property
    def pending(self) -> int:
        """Veto records and judgements not yet written."""
        return len(self._pending_vetoes) + len(self._pending_judgements)

    @property
    def total_vetoes(self) -> int:
        return sum(r.vetoes for r in self._rules.values())

    # --- persistence -------------------------------------------------------------------------------
    def flush(self, conn: sqlite3.Connection, on_rollback: OnRollback) -> None:
        """Write changed rules, new vetoes and veto judgements (inside the caller's transaction); should
        it roll back, the undo given to ``on_rollback`` puts them back in the buffers."""
        dirty = self._dirty
        vetoes = self._pending_vetoes
        judgements = self._pending_judgements
        if not dirty and not vetoes and not judgements:
            return
        # Handed over before the statements run: whichever of them fails, the rollback puts all back.
        self._dirty = set()
        self._pending_vetoes = []
        self._pending_judgements = []
        on_rollback(lambda: self._unwritten(dirty, vetoes, judgements))
        if dirty:
            placeholders = ", ".join("?" * len(_RULE_COLUMNS.split(",")))
            conn.executemany(
                f"INSERT OR REPLACE INTO rules ({_RULE_COLUMNS}) VALUES ({placeholders})",
                [
                    (
                        r.rule_id,
                        r.factor,
                        r.description,
                        r.support,
                        r.losers,
                        r.occurrence,
                        r.winner_occurrence,
                        r.lift,
                        r.window_days,
                        r.created_ns,
                        r.updated_ns,
                        r.vetoes,
                        r.judged,
                        r.wrong,
                        int(r.active),
                        r.retired_ns,
                        r.retire_reason,
                    )
                    for r in (self._rules[k] for k in sorted(dirty))
                ],
            )
        if vetoes:
            conn.executemany(
                "INSERT INTO vetoes (id, rule_id, time_ns, symbol, outcome) VALUES (?, ?, ?, ?, NULL)", vetoes
            )
        if judgements:
            conn.executemany("UPDATE vetoes SET outcome = ? WHERE id = ?", judgements)

    def _unwritten(self, dirty: set[str], vetoes: list[_VetoRow], judgements: list[_Judgement]) -> None:
        # In front of what was buffered since: a veto row is inserted before its judgement updates it.
        self._dirty |= dirty
        self._pending_vetoes[:0] = vetoes
        self._pending_judgements[:0] = judgements


def _counted(rule: AvoidanceRule, vetoes: int, judged: int, wrong: int) -> AvoidanceRule:
    """``replace(rule, vetoes=..., judged=..., wrong=...)`` without its field introspection (a veto and
    its outcome can come every bar)."""
    return AvoidanceRule(
        rule.rule_id,
        rule.factor,
        rule.description,
        rule.support,
        rule.losers,
        rule.occurrence,
        rule.winner_occurrence,
        rule.lift,
        rule.window_days,
        rule.created_ns,
        rule.updated_ns,
        vetoes,
        judged,
        wrong,
        rule.active,
        rule.retired_ns,
        rule.retire_reason,
    )


def fisher_greater(loser_hits: int, losers: int, winner_hits: int, winners: int) -> float:
    """One-sided Fisher exact p-value that a factor is more frequent among losers than winners.

    The probability, under the hypergeometric law of the 2x2 table with fixed margins, of seeing at
    least ``loser_hits`` of the factor's ``loser_hits + winner_hits`` occurrences among the losers.
    """
    n_total = losers + winners
    k_total = loser_hits + winner_hits
    if n_total == 0 or k_total == 0:
        return 1.0

    def log_comb(n: int, k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

    denominator = log_comb(n_total, losers)
    top = min(k_total, losers)
    p = sum(
        math.exp(log_comb(k_total, k) + log_comb(n_total - k_total, losers - k) - denominator)
        for k in range(loser_hits, top + 1)
        if losers - k <= n_total - k_total
    )
    return min(p, 1.0)
