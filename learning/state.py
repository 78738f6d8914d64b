"""The read-only snapshot of learned state that environments and runners apply.

:class:`LearnedState` is what crosses into environment subprocesses (pickled through ``env_method``), so
it is small, immutable and stdlib-only: unpickling it imports this module, ``records`` and
``discretize`` and nothing heavier (no sqlite3, numpy or pandas).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from learning.discretize import DEFAULT_CONDITION_GLOBS, ConditionClassifier, Discretizer
from learning.records import AvoidanceRule, ConditionAdjustment, LearnedMinimum, PatternScore

__all__ = ["LearnedState"]


@dataclass(frozen=True)
class LearnedState:
    """What the learning manager knows, frozen at one version.

    Attributes:
        version: increases whenever rules, weights, minimums, adjustments or pattern weights change;
            consumers re-apply the snapshot only when it differs from the one they hold.
        time_ns: market time the snapshot was taken.
        rules: active avoidance rules (retired ones are left out).
        strategy_weights: factor -> weight, bounded and normalized to mean 1 (see ``StrategyOptimizer``).
        minimums: symbol -> learned order minimum.
        condition_adjustments: condition class -> adjustment (only classes adapted at least once).
        top_patterns: the reinforced patterns of highest weight (ties by score), as of ``version``: they
            are refreshed when the version changes, not on every trade.
        classifier: the discretizer and condition globs used to compute factors and condition classes.
    """

    version: int
    time_ns: int
    rules: tuple[AvoidanceRule, ...] = ()
    strategy_weights: Mapping[str, float] = field(default_factory=dict)
    minimums: Mapping[str, LearnedMinimum] = field(default_factory=dict)
    condition_adjustments: Mapping[str, ConditionAdjustment] = field(default_factory=dict)
    top_patterns: tuple[PatternScore, ...] = ()
    classifier: ConditionClassifier = field(
        default_factory=lambda: ConditionClassifier(Discretizer(), DEFAULT_CONDITION_GLOBS)
    )
    # feature name -> ((label, rule_id), ...): vetoes() bins only the features that rules mention.
    _veto_index: Mapping[str, tuple[tuple[str, str], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[str, list[tuple[str, str]]] = {}
        for rule in self.rules:
            name, _, label = rule.factor.rpartition("=")
            index.setdefault(name, []).append((label, rule.rule_id))
        object.__setattr__(self, "_veto_index", {k: tuple(v) for k, v in index.items()})

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_veto_index", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def veto_index(self) -> Mapping[str, tuple[tuple[str, str], ...]]:
        """Feature name -> ``(label, rule_id)`` of every active rule on it: all that :meth:`vetoes` reads
        of the rules (two snapshots with equal indexes and classifiers veto the same entries)."""
        return self._veto_index

    @property
    def discretizer(self) -> Discretizer:
        return self.classifier.discretizer

    def vetoes(self, features: Mapping[str, float]) -> tuple[str, ...]:
        """Ids of the active rules that forbid entering with these feature values (empty: allowed).

        ``features`` is a flat name -> value mapping (the same names the trade snapshots carry);
        names no rule mentions are ignored, so this is cheap enough to run on every bar.
        """
        hits: list[str] = []
        label = self.discretizer.label
        for name, entries in self._veto_index.items():
            value = features.get(name)
            if value is None:
                continue
            got = label(name, value)
            hits.extend(rule_id for want, rule_id in entries if want == got)
        return tuple(hits)

    def min_order_qty(self, symbol: str, price: float) -> float:
        """Smallest base quantity worth sending for ``symbol`` at ``price`` (0 when nothing is known)."""
        minimum = self.minimums.get(symbol)
        return minimum.min_order_qty(price) if minimum is not None else 0.0

    def adjustment_for(self, conditions: Mapping[str, float]) -> ConditionAdjustment:
        """The adjustment for the condition class of ``conditions`` (neutral when never adapted)."""
        key = self.classifier.key(conditions)
        found = self.condition_adjustments.get(key)
        return found if found is not None else ConditionAdjustment.neutral(key)

    def signal_weight(self, features: Mapping[str, float]) -> float:
        """Mean strategy weight of the factors present in ``features`` (1.0 when none is weighted)."""
        weights = [
            self.strategy_weights[f] for f in self.discretizer.factors(features) if f in self.strategy_weights
        ]
        return sum(weights) / len(weights) if weights else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for ``slf learning show --json`` and bundles)."""
        return {
            "version": self.version,
            "time_ns": self.time_ns,
            "rules": [_record_dict(r) for r in self.rules],
            "strategy_weights": dict(self.strategy_weights),
            "minimums": {k: _record_dict(v) for k, v in self.minimums.items()},
            "condition_adjustments": {k: _record_dict(v) for k, v in self.condition_adjustments.items()},
            "top_patterns": [_record_dict(p) for p in self.top_patterns],
        }


def _record_dict(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
