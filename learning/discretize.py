"""Turning feature values into discrete *factors* (``"rsi_14=oversold"``), the atoms of every pattern.

A pattern signature, an avoidance rule and a strategy weight are all expressed in factors, and the
learning manager and the environments (through :class:`learning.state.LearnedState`) must compute
exactly the same factors from the same values, so this module is the one definition of the binning.
It is stdlib-only because it is unpickled inside environment subprocesses.

Binning of a feature named ``name`` (matched lower-case, first matching rule wins):

====================================  ==============================  ===================================
names (glob)                          edges                           labels
====================================  ==============================  ===================================
``*rsi*``                             30, 50, 70                      oversold, weak, strong, overbought
``*macd*``                            sign                            neg, zero, pos
``*breakout*``                        sign                            down, none, up
``*regime*``                          integer code                    ``r0``, ``r1``, ... (rounded)
``*align*``                           sign                            against, flat, with
``*rel*vol*``, ``*rvol*``             0.5, 1.5, 3                     low, normal, high, extreme
``*bb*``, ``*percent_b*``, ``*pctb*`` 0, 0.2, 0.8, 1                  below, low, mid, high, above
``*vwap*``                            -0.005, 0.005                   below, at, above
``*volatil*``                         0.5, 1.5 (ratio to normal)      calm, normal, wild
anything else                         -1, sign, 1                     neg_hi, neg, zero, pos, pos_hi
====================================  ==============================  ===================================

"sign" means a dead band of ``SIGN_EPS`` around zero. The default rule assumes a roughly normalized
value (a z-score, a return, a ratio minus one); give your own :class:`BinRule` list for other scales.
A non-finite value (NaN, inf) always maps to ``nan``.
"""

from __future__ import annotations

import fnmatch
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ANY_CONDITION",
    "DEFAULT_CONDITION_GLOBS",
    "DEFAULT_RULES",
    "FACTOR_SEPARATOR",
    "NAN_LABEL",
    "SIGN_EPS",
    "BinRule",
    "ConditionClassifier",
    "Discretizer",
    "factor_feature",
]

SIGN_EPS = 1e-12
"""Half-width of the dead band that counts as zero for sign rules."""
NAN_LABEL = "nan"
FACTOR_SEPARATOR = "|"
"""Joins factors into a pattern signature; feature names must not contain it (it is replaced)."""
_CODE_PREFIX = "r"
ANY_CONDITION = "any"
"""Condition key when a trade or bar carries no market-condition features."""
DEFAULT_CONDITION_GLOBS: tuple[str, ...] = ("*regime*", "*volatil*", "*trend*")
"""Market-condition features that define a condition class by default."""


@dataclass(frozen=True, slots=True)
class BinRule:
    """How to bin features whose lower-case name matches ``pattern`` (an fnmatch glob).

    Args:
        pattern: glob over the lower-case feature name, e.g. ``"*rsi*"``.
        edges: increasing bin edges; a value ``v`` falls in bin ``bisect_right(edges, v)``, so an edge
            value belongs to the bin above it (RSI 30 is ``weak``, not ``oversold``).
        labels: one label per bin (``len(edges) + 1``); ignored when ``integer`` is true.
        integer: the value is a categorical code; the label is ``"r<rounded value>"``.
    """

    pattern: str
    edges: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.integer:
            if len(self.labels) != len(self.edges) + 1:
                raise ValueError(f"rule {self.pattern!r}: need len(edges) + 1 labels")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError(f"rule {self.pattern!r}: edges must increase")

    def label(self, value: float) -> str:
        if not math.isfinite(value):
            return NAN_LABEL
        if self.integer:
            return f"{_CODE_PREFIX}{round(value)}"
        return self.labels[bisect_right(self.edges, value)]

    def describe(self, name: str, label: str) -> str:
        """Human text for the value range of ``label``, e.g. ``"30 <= rsi_14 < 50"``."""
        if label == NAN_LABEL:
            return f"{name} is missing (NaN)"
        if self.integer:
            return f"{name} == {label.removeprefix(_CODE_PREFIX)}"
        if label not in self.labels:
            return f"{name} is {label}"
        i = self.labels.index(label)
        lo = self.edges[i - 1] if i > 0 else None
        hi = self.edges[i] if i < len(self.edges) else None
        if lo is not None and hi is not None:
            return f"{_fmt(lo)} <= {name} < {_fmt(hi)}"
        if hi is not None:
            return f"{name} < {_fmt(hi)}"
        if lo is not None:
            return f"{name} >= {_fmt(lo)}"
        return f"{name} is any value"


def _fmt(x: float) -> str:
    return f"{x:g}"


_SIGN = (-SIGN_EPS, SIGN_EPS)

# The first group names the columns of ``envs.features`` exactly (kept as literals: unpickling a
# LearnedState must not import envs); tests/learning/test_discretize_features.py checks that every
# column of the default feature matrix is binned by a rule meant for it. Percent-valued columns
# (``*_pct``) are in percent, not fractions. The generic globs after them serve other feature sets.
DEFAULT_RULES: tuple[BinRule, ...] = (
    BinRule("atr_pct", (0.1, 0.5, 2.0), ("tiny", "low", "high", "extreme")),
    BinRule("realized_vol_pct", (0.1, 0.5, 2.0), ("tiny", "low", "high", "extreme")),
    BinRule("trend_strength", (20.0, 40.0), ("weak", "trending", "strong")),
    BinRule("vol_ratio", (0.75, 1.25, 2.0), ("calm", "normal", "elevated", "wild")),
    BinRule("trend_dir_*", _SIGN, ("down", "flat", "up")),
    BinRule(
        "tf_alignment", (-0.999, -SIGN_EPS, SIGN_EPS, 0.999), ("all_down", "down", "mixed", "up", "all_up")
    ),
    BinRule("vap_position", (0.2, 0.8), ("low", "mid", "high")),
    BinRule("vwap_dist_pct", (-0.5, 0.5), ("below", "at", "above")),
    BinRule("momentum_pct", (-1.0, -SIGN_EPS, SIGN_EPS, 1.0), ("down_hi", "down", "zero", "up", "up_hi")),
    BinRule("*rsi*", (30.0, 50.0, 70.0), ("oversold", "weak", "strong", "overbought")),
    BinRule("*macd*", _SIGN, ("neg", "zero", "pos")),
    BinRule("*breakout*", _SIGN, ("down", "none", "up")),
    BinRule("*regime*", integer=True),
    BinRule("*align*", _SIGN, ("against", "flat", "with")),
    BinRule("*rel*vol*", (0.5, 1.5, 3.0), ("low", "normal", "high", "extreme")),
    BinRule("*rvol*", (0.5, 1.5, 3.0), ("low", "normal", "high", "extreme")),
    BinRule("*percent_b*", (0.0, 0.2, 0.8, 1.0), ("below", "low", "mid", "high", "above")),
    BinRule("*pctb*", (0.0, 0.2, 0.8, 1.0), ("below", "low", "mid", "high", "above")),
    BinRule("*bb*", (0.0, 0.2, 0.8, 1.0), ("below", "low", "mid", "high", "above")),
    BinRule("*vwap*", (-0.005, 0.005), ("below", "at", "above")),
    BinRule("*volatil*", (0.5, 1.5), ("calm", "normal", "wild")),
)
DEFAULT_FALLBACK = BinRule("*", (-1.0, -SIGN_EPS, SIGN_EPS, 1.0), ("neg_hi", "neg", "zero", "pos", "pos_hi"))


class Discretizer:
    """Maps feature values to factors ``"<name>=<label>"`` by name-matched :class:`BinRule` s.

    Immutable after construction and picklable (the per-name rule cache is rebuilt after unpickling).
    """

    __slots__ = ("_cache", "_fallback", "_rules")

    def __init__(
        self, rules: Iterable[BinRule] = DEFAULT_RULES, fallback: BinRule = DEFAULT_FALLBACK
    ) -> None:
        self._rules = tuple(rules)
        self._fallback = fallback
        # Names repeat on every trade; resolving a name through the globs once keeps factorizing cheap.
        self._cache: dict[str, _Compiled] = {}

    @property
    def rules(self) -> tuple[BinRule, ...]:
        return self._rules

    def __getstate__(self) -> tuple[tuple[BinRule, ...], BinRule]:
        return (self._rules, self._fallback)

    def __setstate__(self, state: tuple[tuple[BinRule, ...], BinRule]) -> None:
        self._rules, self._fallback = state
        self._cache = {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Discretizer):
            return NotImplemented
        return self._rules == other._rules and self._fallback == other._fallback

    def __hash__(self) -> int:
        return hash((self._rules, self._fallback))

    def __repr__(self) -> str:
        return f"Discretizer({len(self._rules)} rules)"

    def _resolve(self, name: str) -> _Compiled:
        hit = self._cache.get(name)
        if hit is None:
            clean = name.replace(FACTOR_SEPARATOR, "/").replace("=", ":")
            lower = clean.lower()
            rule = next((r for r in self._rules if fnmatch.fnmatchcase(lower, r.pattern)), self._fallback)
            # Factor strings are built once per name and label, so binning a value is one bisect.
            bins = None if rule.integer else tuple(f"{clean}={label}" for label in rule.labels)
            hit = (clean, rule, rule.edges, bins, f"{clean}={NAN_LABEL}")
            self._cache[name] = hit
        return hit

    def rule_for(self, name: str) -> BinRule:
        """The rule that bins feature ``name``."""
        return self._resolve(name)[1]

    def label(self, name: str, value: float) -> str:
        """The bin label of one value."""
        # BinRule.label inlined (rules veto entries on every bar through this).
        hit = self._cache.get(name) or self._resolve(name)
        rule = hit[1]
        v = float(value)
        if v - v != 0.0:  # NaN or infinite
            return NAN_LABEL
        if rule.integer:
            return f"{_CODE_PREFIX}{round(v)}"
        return rule.labels[bisect_right(hit[2], v)]

    def factor(self, name: str, value: float) -> str:
        """The factor ``"<name>=<label>"`` of one value."""
        clean, rule, edges, bins, nan_factor = self._resolve(name)
        v = float(value)
        if v - v != 0.0:  # NaN or infinite
            return nan_factor
        if bins is None:
            return f"{clean}={rule.label(v)}"
        return bins[bisect_right(edges, v)]

    def factors(self, *groups: Mapping[str, float]) -> tuple[str, ...]:
        """Sorted, de-duplicated factors of one or more feature mappings (the first value of a name wins).

        This runs on every trade, so it inlines :meth:`factor`.
        """
        seen: dict[str, str] = {}
        cache = self._cache
        for group in groups:
            for name, value in group.items():
                hit = cache.get(name) or self._resolve(name)
                clean = hit[0]
                if clean in seen:
                    continue
                v = float(value)
                bins = hit[3]
                if v - v != 0.0:  # NaN or infinite
                    seen[clean] = hit[4]
                elif bins is None:
                    seen[clean] = f"{clean}={hit[1].label(v)}"
                else:
                    seen[clean] = bins[bisect_right(hit[2], v)]
        return tuple(sorted(seen.values()))

    def describe(self, factor: str) -> str:
        """Human text for a factor, e.g. ``"rsi_14 < 30"`` for ``"rsi_14=oversold"``."""
        name, _, label = factor.rpartition("=")
        return self._resolve(name)[1].describe(name, label)


# name -> (clean name, rule, edges, factor string per bin (None for integer codes), NaN factor)
_Compiled = tuple[str, BinRule, tuple[float, ...], tuple[str, ...] | None, str]


def factor_feature(factor: str) -> str:
    """The feature name of a factor (``"rsi_14=oversold"`` -> ``"rsi_14"``)."""
    return factor.rpartition("=")[0]


class ConditionClassifier:
    """The market-condition class of a mapping of condition features (e.g. ``"regime=r2|vol=wild"``).

    Features whose lower-case name matches one of ``globs`` (regime, volatility, trend by default)
    decide the class; when none match, every condition feature does; with no features it is ``"any"``.
    Picklable; the per-name match cache is rebuilt after unpickling.
    """

    __slots__ = ("_cache", "discretizer", "globs")

    def __init__(self, discretizer: Discretizer, globs: Iterable[str]) -> None:
        self.discretizer = discretizer
        self.globs = tuple(globs)
        # Condition mappings repeat their names on every bar and trade: cache the names that decide.
        self._cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __getstate__(self) -> tuple[Discretizer, tuple[str, ...]]:
        return (self.discretizer, self.globs)

    def __setstate__(self, state: tuple[Discretizer, tuple[str, ...]]) -> None:
        self.discretizer, self.globs = state
        self._cache = {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConditionClassifier):
            return NotImplemented
        return self.discretizer == other.discretizer and self.globs == other.globs

    def __hash__(self) -> int:
        return hash((self.discretizer, self.globs))

    def _deciding(self, names: tuple[str, ...]) -> tuple[str, ...]:
        hit = self._cache.get(names)
        if hit is None:
            hit = (
                tuple(n for n in names if any(fnmatch.fnmatchcase(n.lower(), g) for g in self.globs)) or names
            )
            self._cache[names] = hit
        return hit

    def key(self, conditions: Mapping[str, float]) -> str:
        """The condition class of ``conditions``."""
        if not conditions:
            return ANY_CONDITION
        # Discretizer.factor inlined (as in Discretizer.factors): this runs on every bar and trade.
        discretizer = self.discretizer
        cache = discretizer._cache
        factors = set()
        for name in self._deciding(tuple(conditions)):
            hit = cache.get(name) or discretizer._resolve(name)
            v = float(conditions[name])
            bins = hit[3]
            if v - v != 0.0:  # NaN or infinite
                factors.add(hit[4])
            elif bins is None:
                factors.add(f"{hit[0]}={hit[1].label(v)}")
            else:
                factors.add(bins[bisect_right(hit[2], v)])
        return FACTOR_SEPARATOR.join(sorted(factors))
