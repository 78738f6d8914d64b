"""One bar of the trading loop, shared by replay and live.

:class:`TradingCore` turns a *target exposure* decided at the close of bar ``t`` into an order, runs it
past an optional :class:`OrderHook`, sends it to a :class:`~envs.broker.Broker`, books the outcome in a
:class:`~envs.portfolio.Portfolio` and marks the book at the close of bar ``t + 1``. It sees one bar at a
time (no arrays, no pandas), so :class:`~envs.replay.MarketReplayEnv` drives it with replayed bars and the
live runner with a live feed, unchanged: replay calls :meth:`TradingCore.step` per bar; live calls
:meth:`TradingCore.execute` when a decision is taken (with the live quote) and :meth:`TradingCore.mark`
when a bar closes; with an asynchronous broker, :meth:`TradingCore.plan`, then ``await`` the broker, then
:meth:`TradingCore.book`.

**Sizing.** The target is a fraction of equity in ``[-1, 1]``, scaled by the leverage cap. It is turned
into a base quantity at submission, at the reference price the market shows then (the open of ``t + 1``
in replay, the live quote live), like a "target percent" order. The quantity reserves the order's own
costs (half spread, slippage, fee) so a full-size target is affordable. A target whose size is below the
no-trade band is flat; on the same side as the position, a target within the band of the current exposure
is held (no order), so the core does not send dust orders. Closing and reversing always trade.

**The order hook seam.** The decision side (``agents``) applies learned state (minimum order sizes,
vetoes from avoidance rules, condition-based sizing) through a callable given to the core: it receives an
:class:`OrderProposal` and returns it (possibly resized with ``p._replace(qty=...)``) or
``None`` to veto. ``envs`` defines the seam and never imports ``learning``. The hook may not change the
side or symbol; a non-finite quantity is a bug in the hook and raises; a quantity <= 0 counts as a veto.
Vetoed proposals are reported, so the caller can count vetoes per rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from envs import _fast
from envs.broker import Broker, FaultConfig, OrderIntent, Quote, SimBroker
from envs.errors import COUNTER_MAX, ConfigError, saved_int
from envs.events import BarEvent, ErrorEvent, OrderResult, OrderStatus, Side, TradeResult
from envs.market import BPS, MAX_PARTICIPATION, TICK_TOLERANCE, MarketSpec
from envs.portfolio import EXIT_SIGNAL, Portfolio, PortfolioConfig, SnapshotProvider, Transition, classify

__all__ = [
    "DEFAULT_REBALANCE_BAND",
    "Execution",
    "OrderHook",
    "OrderProposal",
    "StepResult",
    "TradingCore",
]

DEFAULT_REBALANCE_BAND = 0.05
"""No-trade band, as a fraction of equity: smaller targets are flat, smaller changes are skipped."""

_NS_PER_MS = 1_000_000
# Unknown volume. Not math.nan: the compiled build maps the math module to C's libm, where nan is a function.
_NAN = float("nan")
_MAX_SYMBOL_ID_CHARS = 12
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")
# Enum members bound to module names: `Side.BUY` costs ~0.2 us per lookup on Python 3.11 (a descriptor),
# and the per-order path does dozens of them.
_BUY = Side.BUY
_SELL = Side.SELL
_FILLED = OrderStatus.FILLED
_HOLD = Transition.HOLD


class OrderProposal(NamedTuple):
    """An order the core is about to send, as the order hook sees it.

    Attributes:
        symbol: market symbol.
        side: buy or sell.
        qty: base quantity (before the exchange's lot rounding), > 0.
        price: reference price at submission (what the quantity was sized with).
        time_ns: submission time.
        decision_time_ns: time of the bar whose close produced the decision.
        target_exposure: the decided target in ``[-1, 1]``; the position it asks for is
            ``target_exposure * leverage * equity / price``.
        position_qty: the signed position before the order.
        equity: account equity at ``price``.
        transition: what the order does to the position (open, add, reduce, close, reverse).
    """

    symbol: str
    side: Side
    qty: float
    price: float
    time_ns: int
    decision_time_ns: int
    target_exposure: float
    position_qty: float
    equity: float
    transition: Transition

    @property
    def notional(self) -> float:
        return self.qty * self.price


@runtime_checkable
class OrderHook(Protocol):
    """Learned adjustments applied to every order before it reaches the broker.

    Return the proposal (unchanged, or resized with ``proposal._replace(qty=...)``) or ``None`` to veto
    it. Keep it picklable (a module-level class holding a read-only snapshot) so it can be pushed into
    subprocess envs with ``env_method("set_order_hook", hook)``.
    """

    def __call__(self, proposal: OrderProposal) -> OrderProposal | None: ...


class Execution(NamedTuple):
    """What happened to the decision at submission."""

    orders: tuple[OrderResult, ...]
    trades: tuple[TradeResult, ...]
    errors: tuple[ErrorEvent, ...]
    vetoed: tuple[OrderProposal, ...]


class StepResult(NamedTuple):
    """Everything one bar produced: the execution of the pending decision and the bar's mark."""

    orders: tuple[OrderResult, ...]
    trades: tuple[TradeResult, ...]
    errors: tuple[ErrorEvent, ...]
    vetoed: tuple[OrderProposal, ...]
    bar: BarEvent


_NOTHING = Execution((), (), (), ())


def _symbol_id(symbol: str) -> str:
    return _NON_ALNUM.sub("", symbol)[:_MAX_SYMBOL_ID_CHARS] or "X"


class TradingCore:
    """One bar of the loop: target -> order -> hook -> broker -> portfolio -> events.

    Args:
        spec: the symbol's rules and costs.
        portfolio: the account.
        broker: where orders go (a :class:`~envs.broker.SimBroker` over ``portfolio`` in replay).
        rebalance_band: the no-trade band (fraction of equity).
        order_hook: learned order adjustments (see the module docstring), or ``None``.
        id_prefix: first part of every client order id; ids are ``<prefix>-<symbol>-<decision ms>-<n>``.
    """

    __slots__ = (
        "_bar",
        "_broker",
        "_half_spread",
        "_id_prefix",
        "_impact",
        "_impact_bps",
        "_last_decision_ns",
        "_seq",
        "_sim",
        "_slippage",
        "_spec",
        "_sym_id",
        "_symbol",
        "_taker_fee",
        "_tick",
        "_vetoed",
        "band",
        "order_hook",
        "portfolio",
    )
    _vetoed: OrderProposal | None

    def __init__(
        self,
        spec: MarketSpec,
        portfolio: Portfolio,
        broker: Broker,
        *,
        rebalance_band: float = DEFAULT_REBALANCE_BAND,
        order_hook: OrderHook | None = None,
        id_prefix: str = "slf",
    ) -> None:
        if not (isinstance(rebalance_band, int | float) and 0.0 <= rebalance_band < 1.0):
            raise ConfigError(
                f"rebalance_band={rebalance_band!r} must be in [0, 1)",
                where="rebalance_band",
                fix="give a fraction of equity, e.g. 0.05",
            )
        self.spec = spec
        self.portfolio = portfolio
        self.broker = broker
        self.band = float(rebalance_band)
        self.order_hook = order_hook
        self._id_prefix = id_prefix
        self._bar = 0
        self._seq = 0
        self._last_decision_ns = -1
        self._vetoed = None

    @property
    def spec(self) -> MarketSpec:
        """The symbol's rules and costs (assignable: a live runner adopts the exchange's at start)."""
        return self._spec

    @spec.setter
    def spec(self, spec: MarketSpec) -> None:
        # The numbers every order's sizing reads, copied out of the frozen spec.
        self._spec = spec
        self._symbol = spec.symbol
        self._sym_id = _symbol_id(spec.symbol)
        terms = spec.order_terms()
        self._taker_fee = terms.taker_fee
        self._half_spread = terms.half_spread_bps
        self._slippage = terms.slippage_bps
        self._impact_bps = terms.impact_bps
        self._impact = terms.volume_impact_bps
        self._tick = terms.price_tick

    @property
    def broker(self) -> Broker:
        """Where orders go."""
        return self._broker

    @broker.setter
    def broker(self, broker: Broker) -> None:
        self._broker = broker
        # The simulated exchange is called directly (one C call in the compiled build).
        self._sim = broker if isinstance(broker, SimBroker) else None

    @classmethod
    def simulated(
        cls,
        spec: MarketSpec,
        *,
        portfolio: PortfolioConfig | None = None,
        faults: FaultConfig | None = None,
        seed: int | np.random.Generator | None = None,
        snapshot: SnapshotProvider | None = None,
        rebalance_band: float = DEFAULT_REBALANCE_BAND,
        order_hook: OrderHook | None = None,
    ) -> TradingCore:
        """A core over a fresh portfolio and a :class:`~envs.broker.SimBroker` (replay, tests)."""
        book = Portfolio(spec.symbol, portfolio, snapshot=snapshot)
        broker = SimBroker(spec, book, faults=faults, seed=seed)
        return cls(spec, book, broker, rebalance_band=rebalance_band, order_hook=order_hook)

    # --- lifecycle -------------------------------------------------------------------------------
    def reset(self, *, initial_cash: float | None = None, id_prefix: str | None = None) -> None:
        """Start an episode: all cash, bar count 0; ``id_prefix`` keeps order ids unique across episodes."""
        self.portfolio.reset(initial_cash)
        if id_prefix is not None:
            self._id_prefix = id_prefix
        self._bar = 0
        self._seq = 0
        self._last_decision_ns = -1

    def sequence_state(self) -> dict[str, int]:
        """The bar count and the order-id sequence, for a live runner's checkpoint (JSON-able).

        With :meth:`restore_sequence` a restarted runner continues the same bar count and re-deciding the
        bar in progress produces the same client order ids, which the exchange deduplicates.
        """
        return {"bar_index": self._bar, "seq": self._seq, "last_decision_ns": self._last_decision_ns}

    def restore_sequence(self, state: Mapping[str, int]) -> None:
        """Continue from :meth:`sequence_state` (a checkpoint written by the same version).

        Raises:
            StateError: a key is missing, or its value is not an integer in range: ``bar_index`` and
                ``seq`` in ``0..2**62`` (counts that grow: headroom before the compiled build's C
                integers would wrap), ``last_decision_ns`` in ``-1..2**63-1`` (-1: no decision yet).
                Checked before anything is restored (and before the compiled build's C integers see it).
        """
        where = "checkpoint core"
        bar = saved_int(state, "bar_index", where=where, high=COUNTER_MAX)
        seq = saved_int(state, "seq", where=where, high=COUNTER_MAX)
        last = saved_int(state, "last_decision_ns", where=where, low=-1)
        self._bar = bar
        self._seq = seq
        self._last_decision_ns = last

    @property
    def bar_index(self) -> int:
        """Index of the bar being processed (the number of bars marked so far)."""
        return self._bar

    def bars_in_trade(self) -> int:
        """Bars since the open trade's first fill (0 when flat)."""
        entry = self.portfolio.entry_bar()
        return 0 if entry is None else self._bar - entry

    # --- the loop --------------------------------------------------------------------------------
    def target_qty(self, target: float, price: float, volume: float) -> float:
        """Signed base quantity that puts ``target`` (fraction of equity, times leverage) at ``price``.

        Reserves the order's own costs so that the fill passes the account's leverage check: with ``P``
        the fill price of the change, ``phi`` the fee rate and ``E`` the equity marked at ``P``, it
        solves ``|q1| P = |f| L (E - |q1 - q| P phi)`` for the new position ``q1``. The actual fill price
        lies between the price with no market impact and the price with the impact of the naive (cost
        free, hence larger) change; the check is linear in ``P``, so the smaller of the two solutions
        passes it at any price in between.
        """
        book = self.portfolio
        q = book.qty
        equity = book.cash + q * price
        if price <= 0.0 or equity <= 0.0:
            return q
        f = target * book._leverage
        delta = f * equity / price - q
        if delta == 0.0:
            return q
        buy = delta > 0.0
        s = 1.0 if buy else -1.0
        # _solve_target() and MarketSpec.fill_price() inlined, same arithmetic (this runs for nearly
        # every order): q1 at the fill price `fill`, first without market impact (qty 0).
        cash = book.cash
        phi = self._taker_fee
        half_spread = self._half_spread
        slippage = self._slippage
        impact = self._impact
        tick = self._tick
        if impact != 0.0 and not volume > 0.0:  # unknown volume: full participation even at qty 0
            slippage = slippage + impact * math.sqrt(MAX_PARTICIPATION)
        # (known volume: a zero-size change has zero participation, so no impact term)
        move = price * ((half_spread + slippage) * BPS)
        if buy:
            fill = price + move
            if tick > 0.0:
                fill = math.ceil(fill / tick - TICK_TOLERANCE) * tick
        else:
            fill = price - move
            if tick > 0.0:
                fill = math.floor(fill / tick + TICK_TOLERANCE) * tick
        e = cash + q * fill
        q1 = f * (e + s * q * fill * phi) / (fill * (1.0 + f * s * phi)) if e > 0.0 else q
        if self._impact_bps > 0.0:
            # ... then with the impact of the naive change |delta|.
            slippage = self._slippage
            if impact != 0.0:
                size = delta if buy else -delta
                participation = (
                    MAX_PARTICIPATION if not volume > 0.0 else min(size / volume, MAX_PARTICIPATION)
                )
                slippage = slippage + impact * math.sqrt(participation)
            move = price * ((half_spread + slippage) * BPS)
            if buy:
                fill = price + move
                if tick > 0.0:
                    fill = math.ceil(fill / tick - TICK_TOLERANCE) * tick
            else:
                fill = price - move
                if tick > 0.0:
                    fill = math.floor(fill / tick + TICK_TOLERANCE) * tick
            e = cash + q * fill
            other = f * (e + s * q * fill * phi) / (fill * (1.0 + f * s * phi)) if e > 0.0 else q
            q1 = other if (other - q) * s < (q1 - q) * s else q1
        # The cost reserve can shrink a position, never put it on the side of zero opposite to the
        # target: on a nearly wiped-out account, reserving the fee of a large reduction can exceed the
        # equity, and the solution would be a small reversal that the account cannot carry.
        if q1 * f < 0.0:
            q1 = 0.0
        # The cost reserve can only shrink a change, never turn it around.
        return q1 if (q1 - q) * s > 0.0 else q

    def _solve_target(self, f: float, s: float, fill: float) -> float:
        """The new position for target ``f`` (side sign ``s``) filled at ``fill`` (see target_qty)."""
        book = self.portfolio
        q = book.qty
        phi = self.spec.taker_fee
        equity = book.cash + q * fill
        if equity <= 0.0:
            return q
        return f * (equity + s * q * fill * phi) / (fill * (1.0 + f * s * phi))

    def plan(
        self, target: float, time_ns: int, price: float, volume: float, decision_time_ns: int
    ) -> tuple[OrderIntent | None, OrderProposal | None]:
        """The order for ``target`` at ``price`` after the band and the hook: ``(intent, vetoed)``."""
        qty = self._size(target, time_ns, price, volume, decision_time_ns)
        if qty == 0.0:
            return None, self._vetoed
        # Every field given, in order (the NamedTuple constructor costs more per order).
        intent = _fast.new_record(
            OrderIntent,
            (
                self._next_order_id(decision_time_ns),
                self._symbol,
                _BUY if qty > 0.0 else _SELL,
                qty if qty > 0.0 else -qty,
                decision_time_ns,
                False,
            ),
        )
        return intent, None

    def _size(self, target: float, time_ns: int, price: float, volume: float, decision_time_ns: int) -> float:
        """The signed quantity of the order for ``target`` (see :meth:`plan`), 0 for none; a proposal the
        hook vetoed is left in ``self._vetoed`` (``None`` otherwise)."""
        self._vetoed = None
        book = self.portfolio
        band = self.band
        f = target * book._leverage
        q = book.qty
        if -band < f < band:
            target = f = 0.0
        elif q != 0.0 and (q > 0.0) is (f > 0.0):
            # Same side as the position: a change of exposure inside the band is not worth an order.
            equity = book.cash + q * price
            if equity > 0.0 and -band < f - q * price / equity < band:
                return 0.0
        q1 = self.target_qty(target, price, volume) if target != 0.0 else 0.0
        transition = classify(q, q1)
        if transition is _HOLD:
            return 0.0
        delta = q1 - q
        side = _BUY if delta > 0.0 else _SELL
        qty = abs(delta)
        hook = self.order_hook
        if hook is not None:
            proposal = OrderProposal(
                self._symbol,
                side,
                qty,
                price,
                time_ns,
                decision_time_ns,
                target,
                q,
                book.cash + q * price,
                transition,
            )
            adjusted = hook(proposal)
            if adjusted is None or adjusted.qty <= 0.0:
                self._vetoed = proposal
                return 0.0
            if adjusted.side is not side or adjusted.symbol != proposal.symbol:
                raise ConfigError(
                    f"order hook changed the order's side or symbol ({proposal.side} {proposal.symbol} -> "
                    f"{adjusted.side} {adjusted.symbol})",
                    where=f"order hook {hook!r}",
                    fix="an order hook may resize or veto an order, never reverse or redirect it",
                )
            if not math.isfinite(adjusted.qty):
                raise ConfigError(
                    f"order hook returned quantity {adjusted.qty!r}",
                    where=f"order hook {hook!r}",
                    fix="return a finite quantity, or None to veto",
                )
            qty = adjusted.qty
        return qty if side is _BUY else -qty

    def submit(
        self, intent: OrderIntent, quote: Quote, *, decision_row: int = -1, exit_reason: str = EXIT_SIGNAL
    ) -> Execution:
        """Send ``intent`` to the broker at ``quote`` and book the outcome."""
        return self.book(
            self.broker.submit(intent, quote), decision_row=decision_row, exit_reason=exit_reason
        )

    def book(
        self, result: OrderResult, *, decision_row: int = -1, exit_reason: str = EXIT_SIGNAL
    ) -> Execution:
        """Book a broker's answer (the second half of :meth:`submit`, for asynchronous brokers)."""
        if result.status is _FILLED:
            trades = self.portfolio.apply_fill(
                result, bar_index=self._bar, entry_ref=decision_row, exit_reason=exit_reason
            )
            return Execution((result,), trades, (), ())
        book = self.portfolio
        error = ErrorEvent.from_order(result, position_qty=book.qty, equity=book.equity_at(result.price))
        return Execution((result,), (), (error,), ())

    def execute(
        self,
        target: float,
        *,
        time_ns: int,
        price: float,
        volume: float = _NAN,
        decision_time_ns: int,
        decision_row: int = -1,
    ) -> Execution:
        """Plan, hook and submit the order for ``target`` at the market ``(time_ns, price, volume)``."""
        intent, vetoed = self.plan(target, time_ns, price, volume, decision_time_ns)
        if intent is None:
            return _NOTHING if vetoed is None else Execution((), (), (), (vetoed,))
        return self.submit(intent, Quote(time_ns, price, volume), decision_row=decision_row)

    def mark(self, time_ns: int, close: float) -> BarEvent:
        """Close the bar: mark to ``close``, charge borrow, advance the bar count."""
        book = self.portfolio
        book.mark(close)
        self._bar += 1
        return BarEvent(time_ns, self._symbol, close, book.cash + book.qty * close, book.qty, book.cash)

    def step(
        self,
        target: float,
        time_ns: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        decision_time_ns: int,
        decision_row: int = -1,
    ) -> StepResult:
        """One replayed bar: fill the decision of the previous close at this bar's open, mark at its close.

        ``high`` and ``low`` are part of the bar contract (for intrabar rules such as stops); the
        market-order loop does not use them yet.
        """
        return _fast.new_record(
            StepResult,
            self._bar_step(target, time_ns, open_, high, low, close, volume, decision_time_ns, decision_row),
        )

    def _bar_step(
        self,
        target: float,
        time_ns: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        decision_time_ns: int,
        decision_row: int,
    ) -> tuple[
        tuple[OrderResult, ...],
        tuple[TradeResult, ...],
        tuple[ErrorEvent, ...],
        tuple[OrderProposal, ...],
        BarEvent,
    ]:
        """:meth:`step` as a plain tuple (the replay cursor unpacks it; no record per bar)."""
        # plan(), the broker's submit(), book() and mark() inlined: the per-bar path of every replayed
        # step. With the simulated exchange no OrderIntent or Quote record is built.
        signed = self._size(target, time_ns, open_, volume, decision_time_ns)
        book = self.portfolio
        if signed == 0.0:
            orders: tuple[OrderResult, ...] = ()
            trades: tuple[TradeResult, ...] = ()
            errors: tuple[ErrorEvent, ...] = ()
            vetoed = self._vetoed
            vetoes = () if vetoed is None else (vetoed,)
        else:
            side = _BUY if signed > 0.0 else _SELL
            qty = signed if signed > 0.0 else -signed
            cid = self._next_order_id(decision_time_ns)
            sim = self._sim
            if sim is not None:
                result = sim.fill(cid, self._symbol, side, qty, False, time_ns, open_, volume)
            else:
                result = self._broker.submit(
                    _fast.new_record(OrderIntent, (cid, self._symbol, side, qty, decision_time_ns, False)),
                    _fast.new_record(Quote, (time_ns, open_, volume)),
                )
            orders = (result,)
            vetoes = ()
            if result.status is _FILLED:
                trades = book.apply_fill(result, self._bar, decision_row, EXIT_SIGNAL)
                errors = ()
            else:
                trades = ()
                errors = (
                    ErrorEvent.from_order(
                        result, position_qty=book.qty, equity=book.cash + book.qty * result.price
                    ),
                )
        book.mark(close)
        self._bar += 1
        q = book.qty
        cash = book.cash
        bar = _fast.new_record(BarEvent, (time_ns, self._symbol, close, cash + q * close, q, cash))
        return (orders, trades, errors, vetoes, bar)

    def close_position(
        self, reason: str, *, time_ns: int, price: float, volume: float = _NAN, decision_time_ns: int
    ) -> Execution:
        """Close the whole position now with a reduce-only market order (ruin, drawdown, end of data)."""
        q = self.portfolio.qty
        if q == 0.0:
            return _NOTHING
        side = _SELL if q > 0.0 else _BUY
        intent = OrderIntent(
            self._next_order_id(decision_time_ns),
            self._symbol,
            side,
            abs(q),
            decision_time_ns,
            reduce_only=True,
        )
        return self.submit(intent, Quote(time_ns, price, volume), exit_reason=reason)

    def _next_order_id(self, decision_time_ns: int) -> str:
        # Deterministic and idempotent: a restarted live runner re-deciding the same bar produces the same
        # id, so the exchange deduplicates the order.
        if decision_time_ns != self._last_decision_ns:
            self._last_decision_ns = decision_time_ns
            self._seq = 0
        else:
            self._seq += 1
        return f"{self._id_prefix}-{self._sym_id}-{decision_time_ns // _NS_PER_MS}-{self._seq}"
