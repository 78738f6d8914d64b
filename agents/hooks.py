"""The learned order hook: a read-only :class:`~learning.state.LearnedState` applied to every order.

:class:`LearnedOrderHook` sits in the trading core's order-hook seam (:class:`envs.core.OrderHook`),
inside the environment's process. It only *applies* a snapshot pushed by the learning manager and
reports what it did as :class:`HookEvent` records; it never learns.

**Entries carry the learned state; exits pass.** An order that opens a position, adds to it, or
reverses it carries new exposure. For a reversal, "holding back the entry" means sending only the
closing part (the order is cut to the position's size), so an exit is never held back. In this order,
an entry is:

1. held back while entries are *paused* by an error resolution (backoff, skip, halt);
2. vetoed when its entry features hit an active avoidance rule (``vetoes`` switch);
3. adjusted to the market-condition class of its entry features (``condition_adjustments`` switch):
   opened only when ``|target| >= entry_threshold`` (the policy's target is the signal), its target
   scaled by ``exposure_multiplier`` and capped at ``max_position`` (fractions of the maximum
   exposure); a scaled-down add that no longer adds anything is held;
4. halved once after an "insufficient balance" error when the manager chose ``reduce_size``;
5. sized to the learned order minimum (``learned_minimums`` switch): an order below it is resized up to
   it (rounded up to the lot step) when the resulting position is affordable at the order's price with
   its costs, else skipped.

A close passes unchanged. A partial reduction is only sized to the learned minimum (the exchange would
refuse it anyway): resized up to it, or to the whole position when what would remain is below the
minimum (dust that could not be traded later).

The hook needs the features of the decision bar; the wrapper hands them over with :meth:`prepare`
after every reset and step (the observation's row is the next decision's row).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from agents.switches import LearningSwitches
from envs.core import OrderProposal
from envs.errors import ConfigError
from envs.events import Side
from envs.features.columns import MARKET_CONDITIONS
from envs.portfolio import Transition
from learning.error_patterns import Resolution
from learning.records import ConditionAdjustment
from learning.state import LearnedState

if TYPE_CHECKING:
    from envs.replay import MarketReplayEnv

__all__ = [
    "DEFAULT_BACKOFF_BARS",
    "DEFAULT_REDUCE_FACTOR",
    "DEFAULT_SKIP_BARS",
    "HookEvent",
    "HookReason",
    "LearnedOrderHook",
]

DEFAULT_BACKOFF_BARS = 3
"""Bars without new entries after ``retry_with_backoff`` (rate limits, timeouts, maintenance)."""
DEFAULT_SKIP_BARS = 20
"""Bars without new entries after ``skip_symbol``."""
DEFAULT_REDUCE_FACTOR = 0.5
"""Size of the next entry after ``reduce_size``, as a fraction of what the policy asked for."""
_HALT = -1  # pause_bars value: paused until the episode ends

_OPEN = Transition.OPEN
_ADD = Transition.ADD
_REVERSE = Transition.REVERSE
_REDUCE = Transition.REDUCE
_BUY = Side.BUY
# A resize below this fraction of the proposed quantity is treated as no change (float noise).
_REL_EPS = 1e-9


class HookReason(StrEnum):
    """Why the learned order hook held back or changed an entry."""

    PAUSED = "paused"
    RULE_VETO = "rule_veto"
    ENTRY_THRESHOLD = "entry_threshold"
    CONDITION_SIZE = "condition_size"
    CONDITION_HOLD = "condition_hold"
    REDUCED_SIZE = "reduced_size"
    MIN_RESIZE = "min_resize"
    MIN_SKIP = "min_skip"


class HookEvent(NamedTuple):
    """What the hook did to one entry (small and picklable: it travels in ``info``).

    Attributes:
        reason: what happened.
        time_ns: submission time of the order (the env's bar time).
        symbol: market symbol.
        direction: +1 for a buy, -1 for a sell (for an entry: the side of the new exposure).
        price: the order's reference price (what a vetoed entry would have paid, before costs).
        qty: the quantity proposed to the hook at this stage.
        new_qty: the quantity after it (0: held back entirely; the position's size: cut to a close).
        rule_ids: the avoidance rules that vetoed it (``RULE_VETO`` only).
        round_trip_cost: fees, half spread and slippage of entering and leaving, as a fraction of
            notional (what a vetoed entry had to beat to win).
    """

    reason: HookReason
    time_ns: int
    symbol: str
    direction: int
    price: float
    qty: float
    new_qty: float
    rule_ids: tuple[str, ...] = ()
    round_trip_cost: float = 0.0


class _Unset:
    """Marks a lazily computed value not worked out yet (``None`` is a valid adjustment)."""

    __slots__ = ()


_UNSET = _Unset()
_NO_BAR: Mapping[str, Mapping[str, float]] = MappingProxyType({})


def _same_rules(a: LearnedState | None, b: LearnedState | None) -> bool:
    """Whether both snapshots veto exactly the same entries (same active rules and discretizer)."""
    if a is None or b is None:
        return a is b
    return _same_classifier(a, b) and (a.rules is b.rules or a.veto_index == b.veto_index)


def _same_adjustments(a: LearnedState | None, b: LearnedState | None) -> bool:
    """Whether both snapshots adjust every condition class the same way."""
    if a is None or b is None:
        return a is b
    adjustments = a.condition_adjustments
    return _same_classifier(a, b) and (
        adjustments is b.condition_adjustments or adjustments == b.condition_adjustments
    )


def _same_classifier(a: LearnedState, b: LearnedState) -> bool:
    return a.classifier is b.classifier or a.classifier == b.classifier


def _ceil_to_step(qty: float, step: float) -> float:
    """Round up to a multiple of ``step`` such that the broker's floor keeps it (no-op for step 0)."""
    if step <= 0.0:
        return qty
    return math.ceil(qty / step * (1.0 - 1e-12) - 1e-9) * step


class LearnedOrderHook:
    """Applies a learned-state snapshot to the orders of one environment (see the module docstring).

    Module-level and made of plain data, so it pickles (into subprocess envs, with the env). The
    learned state is read-only; the hook's own mutable fields are per-environment runtime state: the
    decision bar's context, pauses and the event buffer the wrapper drains into ``info``.

    Args:
        switches: which effects apply.
        state: the snapshot to apply (``None``: nothing learned yet).
        qty_step: the market's lot step (minimum resizes round up to it).
        leverage: the account's leverage cap (affordability of a resize).
        cost_rate: per-side cost as a fraction of notional (fee + half spread + slippage).
    """

    def __init__(
        self,
        switches: LearningSwitches,
        state: LearnedState | None = None,
        *,
        qty_step: float = 0.0,
        leverage: float = 1.0,
        cost_rate: float = 0.0,
    ) -> None:
        for name, value in (("qty_step", qty_step), ("cost_rate", cost_rate)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"{name}={value!r} must be >= 0", where="LearnedOrderHook", fix="give >= 0")
        if not (math.isfinite(leverage) and leverage > 0.0):
            raise ConfigError(f"leverage={leverage!r} must be > 0", where="LearnedOrderHook", fix="e.g. 1.0")
        self.switches = switches
        self.qty_step = float(qty_step)
        self.leverage = float(leverage)
        self.cost_rate = float(cost_rate)
        self.state: LearnedState | None = state
        # The decision bar's context (see prepare()); what it gives is worked out when first read.
        self._groups: Mapping[str, Mapping[str, float]] = _NO_BAR
        self._prepared: LearnedState | None = None
        self._features: dict[str, float] | None = None
        self._conditions: dict[str, float] | None = None
        self._rule_hits: tuple[str, ...] | None = None
        self._adjustment: ConditionAdjustment | _Unset | None = _UNSET
        self.prepare({})
        self.pause_bars = 0
        self.size_factor = 1.0
        self.events: list[HookEvent] = []

    @classmethod
    def for_env(
        cls, env: MarketReplayEnv, switches: LearningSwitches, state: LearnedState | None = None
    ) -> LearnedOrderHook:
        """A hook with the lot step, leverage and costs of ``env``'s market and account."""
        spec = env.market_spec
        cost = spec.taker_fee + (spec.spread_bps / 2.0 + spec.slippage_bps) / 1e4
        return cls(
            switches,
            state,
            qty_step=spec.qty_step,
            leverage=env.core.portfolio.config.leverage,
            cost_rate=cost,
        )

    def __repr__(self) -> str:
        version = None if self.state is None else self.state.version
        return f"LearnedOrderHook(version={version}, switches={self.switches!r})"

    # --- context ----------------------------------------------------------------------------------
    @property
    def round_trip_cost(self) -> float:
        return 2.0 * self.cost_rate

    @property
    def paused(self) -> bool:
        return self.pause_bars != 0

    def set_state(self, state: LearnedState | None) -> None:
        """Apply another snapshot (takes effect from the next order; call :meth:`prepare` again)."""
        self.state = state

    def prepare(self, groups: Mapping[str, Mapping[str, float]]) -> None:
        """Take the decision bar's raw features (by group, as ``MarketData.snapshot`` gives them).

        The rules they hit and the adjustment of their condition class are those of the snapshot held
        now, whatever the switches say (the observation may show them); the switches decide only what
        is applied. They are worked out when first read (most bars place no entry, and a pushed
        snapshot is prepared on every environment), so ``groups`` must not change afterwards.
        """
        state = self.state
        if groups is self._groups:
            # The same bar with another snapshot (a push): what the bar's features give stands, and so
            # does what the snapshot decides when its rules or adjustments are those already applied
            # (snapshots share unchanged parts; most pushes change weights or patterns only).
            old = self._prepared
            if not _same_rules(old, state):
                self._rule_hits = None
            if not _same_adjustments(old, state):
                self._adjustment = _UNSET
            self._prepared = state
            return
        self._groups = groups
        self._prepared = state
        self._features = None
        self._conditions = None
        self._rule_hits = None
        self._adjustment = _UNSET

    @property
    def features(self) -> dict[str, float]:
        """The prepared bar's features by name (all groups)."""
        flat = self._features
        if flat is None:
            flat = {}
            for group in self._groups.values():
                flat.update(group)
            self._features = flat
        return flat

    @property
    def conditions(self) -> dict[str, float]:
        """The prepared bar's market-condition features."""
        conditions = self._conditions
        if conditions is None:
            conditions = self._conditions = dict(self._groups.get(MARKET_CONDITIONS, {}))
        return conditions

    @property
    def rule_hits(self) -> tuple[str, ...]:
        """Ids of the active rules the prepared bar's features hit."""
        hits = self._rule_hits
        if hits is None:
            state = self._prepared
            hits = self._rule_hits = state.vetoes(self.features) if state is not None and state.rules else ()
        return hits

    @property
    def adjustment(self) -> ConditionAdjustment | None:
        """The adjustment of the prepared bar's condition class (``None`` when none is learned)."""
        adjustment = self._adjustment
        if isinstance(adjustment, _Unset):
            state = self._prepared
            adjustment = (
                state.adjustment_for(self.conditions)
                if state is not None and state.condition_adjustments
                else None
            )
            self._adjustment = adjustment
        return adjustment

    # --- resolutions --------------------------------------------------------------------------------
    def apply_resolution(
        self,
        resolution: Resolution | str,
        *,
        backoff_bars: int = DEFAULT_BACKOFF_BARS,
        skip_bars: int = DEFAULT_SKIP_BARS,
        reduce_factor: float = DEFAULT_REDUCE_FACTOR,
    ) -> None:
        """Act on an error resolution chosen by the manager.

        ``retry_with_backoff`` pauses entries for ``backoff_bars``, ``skip_symbol`` for ``skip_bars``,
        ``halt`` until the episode ends; ``reduce_size`` scales the next entry by ``reduce_factor``;
        ``resize_to_learned_minimum`` needs nothing here (the learned minimum arrives with the next
        snapshot and is applied with ``learned_minimums``).
        """
        res = Resolution(resolution)
        if res is Resolution.RETRY_WITH_BACKOFF:
            self._pause(backoff_bars)
        elif res is Resolution.SKIP_SYMBOL:
            self._pause(skip_bars)
        elif res is Resolution.HALT:
            self.pause_bars = _HALT
        elif res is Resolution.REDUCE_SIZE:
            self.size_factor = min(self.size_factor, reduce_factor)

    def _pause(self, bars: int) -> None:
        if self.pause_bars != _HALT:
            self.pause_bars = max(self.pause_bars, bars)

    def tick(self) -> None:
        """One bar has passed: count a pause down."""
        if self.pause_bars > 0:
            self.pause_bars -= 1

    def new_episode(self) -> None:
        """Pauses and one-shot size reductions end with the episode."""
        self.pause_bars = 0
        self.size_factor = 1.0
        self.events.clear()

    def drain(self) -> tuple[HookEvent, ...]:
        """The events since the last drain."""
        if not self.events:
            return ()
        out = tuple(self.events)
        self.events.clear()
        return out

    # --- the hook -----------------------------------------------------------------------------------
    def _emit(
        self, reason: HookReason, p: OrderProposal, qty: float, new_qty: float, rule_ids: tuple[str, ...] = ()
    ) -> None:
        direction = 1 if p.side is _BUY else -1
        cost = 2.0 * self.cost_rate
        self.events.append(
            HookEvent(reason, p.time_ns, p.symbol, direction, p.price, qty, new_qty, rule_ids, cost)
        )

    def _hold(
        self, reason: HookReason, p: OrderProposal, qty: float, closing: float, rule_ids: tuple[str, ...] = ()
    ) -> OrderProposal | None:
        """Hold back the entry: nothing, or only the closing part of a reversal."""
        self._emit(reason, p, qty, closing, rule_ids)
        return p._replace(qty=closing) if closing > 0.0 else None

    def __call__(self, proposal: OrderProposal) -> OrderProposal | None:
        p = proposal
        tr = p.transition
        if tr is _REDUCE:
            return self._size_reduction(p)
        if tr is not _OPEN and tr is not _ADD and tr is not _REVERSE:
            return p  # a close: never touched
        switches = self.switches
        q = p.position_qty
        closing = abs(q) if tr is _REVERSE else 0.0
        qty = p.qty
        if self.pause_bars != 0:
            return self._hold(HookReason.PAUSED, p, qty, closing)
        if switches.vetoes and self.rule_hits:
            return self._hold(HookReason.RULE_VETO, p, qty, closing, self.rule_hits)
        s = 1.0 if p.side is _BUY else -1.0
        adj = self.adjustment
        if switches.condition_adjustments and adj is not None:
            f = abs(p.target_exposure)
            if tr is not _ADD and f < adj.entry_threshold:
                return self._hold(HookReason.ENTRY_THRESHOLD, p, qty, closing)
            scaled = min(f * adj.exposure_multiplier, adj.max_position)
            if f > 0.0 and scaled < f * (1.0 - _REL_EPS):
                # The position the order aims at, scaled like the target it was sized from.
                new_qty = s * ((q + s * qty) * (scaled / f) - q)
                if new_qty <= qty * _REL_EPS:
                    self._emit(HookReason.CONDITION_HOLD, p, qty, 0.0)
                    return None
                self._emit(HookReason.CONDITION_SIZE, p, qty, new_qty)
                qty = new_qty
        if self.size_factor < 1.0:
            new_qty = closing + (qty - closing) * self.size_factor
            self._emit(HookReason.REDUCED_SIZE, p, qty, new_qty)
            qty = new_qty
            self.size_factor = 1.0
        minimum = self._minimum(p)
        if minimum > 0.0 and qty < minimum * (1.0 - _REL_EPS):
            resized = _ceil_to_step(minimum, self.qty_step)
            position = abs(q + s * resized) * p.price * (1.0 + self.cost_rate)
            budget = self.leverage * (p.equity - resized * p.price * self.cost_rate)
            if not (budget > 0.0 and position <= budget):
                return self._hold(HookReason.MIN_SKIP, p, qty, closing)
            self._emit(HookReason.MIN_RESIZE, p, qty, resized)
            qty = resized
        return p if qty == p.qty else p._replace(qty=qty)

    def _minimum(self, p: OrderProposal) -> float:
        """The learned minimum quantity at the order's price (0 when not applied or not known)."""
        state = self.state
        if not self.switches.learned_minimums or state is None:
            return 0.0
        return state.min_order_qty(p.symbol, p.price)

    def _size_reduction(self, p: OrderProposal) -> OrderProposal | None:
        minimum = self._minimum(p)
        if minimum <= 0.0 or p.qty >= minimum * (1.0 - _REL_EPS):
            return p
        held = abs(p.position_qty)
        resized = _ceil_to_step(minimum, self.qty_step)
        if held - resized < minimum * (1.0 - _REL_EPS):
            # What would remain is below the minimum: dust the exchange would refuse to trade later.
            resized = held
        self._emit(HookReason.MIN_RESIZE, p, p.qty, resized)
        return p._replace(qty=resized)
