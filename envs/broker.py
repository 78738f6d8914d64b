"""The broker seam and the simulated exchange.

A :class:`Broker` takes an :class:`OrderIntent` (what the trading core wants to trade) and the
:class:`Quote` the market shows at submission, and answers with an :class:`~envs.events.OrderResult`:
filled, rejected by the exchange's rules, or errored on the way. The same seam serves the
:class:`SimBroker` in replay and the paper and exchange brokers live, so the learning code sees simulated
and real refusals in the same words.

:class:`SimBroker` enforces the rules a spot exchange such as Binance enforces, in the exchange's own
wording and codes, in this order:

1. injected faults (only when enabled): rate limit ``429``, timeout ``408``, maintenance ``503``;
2. lot size: the quantity is floored to ``qty_step``; nothing left or less than ``min_qty`` ->
   ``Filter failure: LOT_SIZE`` (``-1013``);
3. minimum notional: ``qty * reference price < min_notional`` -> ``Filter failure: NOTIONAL``
   (``-1013``);
4. balance: the account cannot carry the fill -> ``Account has insufficient balance for requested
   action.`` (``-2010``).

A market order fills at the reference price (the open of the bar after the decision in replay) moved
against it by half the spread and the slippage model of the :class:`~envs.market.MarketSpec`, and pays
the taker fee. A simulated timeout never fills (a real one may have; the live broker reconciles by
client order id).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from envs import _fast
from envs.errors import ConfigError, did_you_mean
from envs.events import ErrorKind, OrderResult, OrderStatus, Side
from envs.market import BPS, MAX_PARTICIPATION, TICK_TOLERANCE, MarketSpec
from envs.portfolio import Portfolio

__all__ = [
    "CODE_FILTER_FAILURE",
    "CODE_INSUFFICIENT_BALANCE",
    "CODE_MAINTENANCE",
    "CODE_RATE_LIMIT",
    "CODE_TIMEOUT",
    "MSG_INSUFFICIENT_BALANCE",
    "MSG_INVALID_QUANTITY",
    "MSG_LOT_SIZE",
    "MSG_MAINTENANCE",
    "MSG_NOTIONAL",
    "MSG_RATE_LIMIT",
    "MSG_TIMEOUT",
    "Account",
    "AccountSnapshot",
    "AsyncBroker",
    "Broker",
    "FaultConfig",
    "OrderIntent",
    "Quote",
    "SimBroker",
    "refusal",
]

# The exchange's own wording (Binance spot), so learned error resolutions carry over to live trading.
MSG_LOT_SIZE = "Filter failure: LOT_SIZE"
MSG_NOTIONAL = "Filter failure: NOTIONAL"
MSG_INVALID_QUANTITY = "Invalid quantity."
MSG_INSUFFICIENT_BALANCE = "Account has insufficient balance for requested action."
MSG_RATE_LIMIT = "Too many requests; current limit of IP is 6000 requests per minute."
MSG_TIMEOUT = "Request timed out"
MSG_MAINTENANCE = "System is under maintenance."
CODE_FILTER_FAILURE = "-1013"
CODE_INSUFFICIENT_BALANCE = "-2010"
# Transport-level faults carry their HTTP status, as ccxt reports them.
CODE_RATE_LIMIT = "429"
CODE_TIMEOUT = "408"
CODE_MAINTENANCE = "503"

# Upper bound for seeds drawn from a parent generator.
_SEED_BOUND = 2**63 - 1
# Fault draws are taken from the generator in blocks (one scalar call costs as much as a whole order).
_DRAW_BLOCK = 256
# Enum members bound to module names: `Side.BUY` costs ~0.2 us per lookup on Python 3.11 (a descriptor),
# and the per-order path does dozens of them.
_FILLED = OrderStatus.FILLED
_REJECTED = OrderStatus.REJECTED
_ERRORED = OrderStatus.ERRORED
_BUY = Side.BUY


class OrderIntent(NamedTuple):
    """A market order the trading core wants placed (a NamedTuple: built on every order, the hot path).

    Attributes:
        client_order_id: idempotency key, deterministic (derived from the decision time).
        symbol: market symbol.
        side: buy or sell.
        qty: base quantity wanted, > 0, before lot rounding (the broker floors it).
        decision_time_ns: time of the bar whose close produced the decision.
        reduce_only: the order may only shrink the position (risk closes). The simulated broker
            exempts such orders from fault injection and the notional minimum, as exchanges do for
            position-closing orders.
    """

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    decision_time_ns: int
    reduce_only: bool = False


class Quote(NamedTuple):
    """The market at the moment an order is submitted.

    Attributes:
        time_ns: submission time (the fill bar's open time in replay).
        price: reference price (the fill bar's open in replay; last trade or mid price live).
        volume: liquidity for the impact model (the fill bar's volume in replay); NaN when unknown.
    """

    time_ns: int
    price: float
    volume: float


@runtime_checkable
class Account(Protocol):
    """What the simulated exchange needs to know about the account to accept or refuse a fill."""

    def can_fill(self, side: Side, qty: float, price: float, fee: float) -> bool:
        """Whether the account can carry a fill of ``qty`` at ``price`` paying ``fee``."""
        ...


@runtime_checkable
class Broker(Protocol):
    """Where orders go: the simulated exchange in replay, a paper or real exchange live.

    ``submit`` never raises for a refusal or a transient failure; it returns an ``OrderResult`` whose
    ``status``, ``kind``, ``message`` and ``code`` say what happened, so the caller learns from it.
    """

    def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        """Place ``order`` at the market described by ``quote``; return what became of it."""
        ...


class AccountSnapshot(NamedTuple):
    """Balances an exchange reports for one symbol's market (reconciliation at start and restart).

    Attributes:
        time_ns: when the exchange reported them.
        cash: quote-currency balance, free plus locked (e.g. USDT).
        qty: base-currency balance, free plus locked (e.g. BTC); spot accounts cannot be short.
    """

    time_ns: int
    cash: float
    qty: float


@runtime_checkable
class AsyncBroker(Protocol):
    """A broker behind a network (an exchange through ccxt's async client).

    Same contract as :class:`Broker`, awaited: ``submit`` returns an ``OrderResult`` for refusals and
    transient failures (never raises for them); it raises :class:`~envs.errors.BrokerError` only for
    what no retry can fix (bad credentials, unknown symbol). ``start`` connects and returns the
    market's rules; ``account`` reports balances; ``known`` answers what became of an order sent
    under a client order id (``None`` when the exchange never received it), for restart
    reconciliation; given the ``intent`` sent under the id and its ``quote``, it books the order as its own
    answer would have been, and refuses (``BrokerError``) an order under the id that is not that intent;
    ``close`` releases the connection.
    """

    async def start(self) -> MarketSpec: ...

    async def account(self) -> AccountSnapshot: ...

    async def submit(self, order: OrderIntent, quote: Quote) -> OrderResult: ...

    async def known(
        self, client_order_id: str, intent: OrderIntent | None = None, quote: Quote | None = None
    ) -> OrderResult | None: ...

    async def close(self) -> None: ...


def refusal(
    order: OrderIntent,
    quote: Quote,
    kind: ErrorKind,
    message: str,
    code: str | None,
    status: OrderStatus = _REJECTED,
) -> OrderResult:
    """The result of ``order`` refused or failed at ``quote``: nothing filled, the exchange's ``kind``,
    ``message`` and ``code`` (every broker builds its refusals here, so learners see one shape)."""
    return _refused(
        order.client_order_id,
        order.symbol,
        order.side,
        quote.time_ns,
        order.qty,
        quote.price,
        (kind, message, code, status),
    )


_Refusal = tuple[ErrorKind, str, str | None, OrderStatus]
"""Why an order was not filled: the error kind, the exchange's message and code, the order status."""
_INVALID: _Refusal = (ErrorKind.INVALID_ORDER, MSG_INVALID_QUANTITY, CODE_FILTER_FAILURE, _REJECTED)
_LOT_SIZE: _Refusal = (ErrorKind.LOT_SIZE, MSG_LOT_SIZE, CODE_FILTER_FAILURE, _REJECTED)
_NOTIONAL: _Refusal = (ErrorKind.MIN_NOTIONAL, MSG_NOTIONAL, CODE_FILTER_FAILURE, _REJECTED)
_NO_BALANCE: _Refusal = (
    ErrorKind.INSUFFICIENT_BALANCE,
    MSG_INSUFFICIENT_BALANCE,
    CODE_INSUFFICIENT_BALANCE,
    _REJECTED,
)
_RATE_LIMITED: _Refusal = (ErrorKind.RATE_LIMIT, MSG_RATE_LIMIT, CODE_RATE_LIMIT, _ERRORED)
_TIMED_OUT: _Refusal = (ErrorKind.TIMEOUT, MSG_TIMEOUT, CODE_TIMEOUT, _ERRORED)
_DOWN: _Refusal = (ErrorKind.MAINTENANCE, MSG_MAINTENANCE, CODE_MAINTENANCE, _ERRORED)


def _refused(
    client_order_id: str, symbol: str, side: Side, time_ns: int, qty: float, price: float, why: _Refusal
) -> OrderResult:
    kind, message, code, status = why
    return _fast.new_record(
        OrderResult,
        (client_order_id, symbol, side, time_ns, qty, price, status, 0.0, 0.0, 0.0, kind, message, code),
    )


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Per-order probabilities of injected exchange faults (all 0 by default: no faults).

    Attributes:
        rate_limit: probability that an order is refused with HTTP 429 (rate limit).
        timeout: probability that an order times out (not filled).
        maintenance: probability that the exchange is under maintenance (HTTP 503).
    """

    rate_limit: float = 0.0
    timeout: float = 0.0
    maintenance: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"fault rate {f.name}={value!r} is not a probability",
                    where=f"faults.{f.name}",
                    fix="give a number between 0 and 1 (0.01 = one order in a hundred)",
                )
        if self.total > 1.0:
            raise ConfigError(
                f"fault rates add up to {self.total:g} > 1",
                where="faults",
                fix="lower the rates so that rate_limit + timeout + maintenance <= 1",
            )

    @property
    def total(self) -> float:
        """Probability that an order meets any fault."""
        return self.rate_limit + self.timeout + self.maintenance

    @property
    def enabled(self) -> bool:
        return self.total > 0.0

    @classmethod
    def coerce(cls, value: FaultConfig | Mapping[str, float] | None) -> FaultConfig:
        """Accept a ``FaultConfig``, a mapping of its fields, or ``None`` (no faults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            for key in value:
                if key not in known:
                    raise ConfigError(
                        f"unknown fault {key!r}{did_you_mean(str(key), known)}",
                        where="faults",
                        fix=f"use only {known}",
                    )
            return cls(**{k: float(v) for k, v in value.items()})
        raise ConfigError(
            f"faults={value!r} is not a FaultConfig or a mapping",
            where="faults",
            fix="pass FaultConfig(rate_limit=0.01) or {'rate_limit': 0.01}",
        )


class SimBroker:
    """A simulated spot exchange: fills market orders at the quote with costs, or refuses them.

    Args:
        spec: the symbol's rules and costs (assignable: the broker reads its numbers from then on).
        account: the account the exchange checks balances against (the replay portfolio).
        faults: injected fault rates (off by default).
        seed: seed or generator for fault injection; replay passes a seed drawn from the env's
            ``np_random`` at every reset (see :meth:`reseed`).
    """

    __slots__ = (
        "_account",
        "_book",
        "_draws",
        "_fault_cut",
        "_faults",
        "_half_spread",
        "_impact",
        "_min_notional",
        "_min_qty",
        "_next",
        "_rate_limit_cut",
        "_rng",
        "_slippage",
        "_spec",
        "_step",
        "_taker_fee",
        "_tick",
        "_timeout_cut",
    )
    _draws: list[float]

    def __init__(
        self,
        spec: MarketSpec,
        account: Account,
        *,
        faults: FaultConfig | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.spec = spec
        self._account = account
        # The replay portfolio is asked directly (one C call in the compiled build); other accounts
        # through their can_fill().
        self._book = account if isinstance(account, Portfolio) else None
        self._faults = faults or FaultConfig()
        f = self._faults
        # Cumulative thresholds: one uniform draw per order picks at most one fault.
        self._rate_limit_cut = f.rate_limit
        self._timeout_cut = f.rate_limit + f.timeout
        self._fault_cut = f.total
        self.reseed(seed)

    @property
    def spec(self) -> MarketSpec:
        """The symbol's rules and costs."""
        return self._spec

    @spec.setter
    def spec(self, spec: MarketSpec) -> None:
        # The numbers every order reads, copied out of the frozen spec.
        self._spec = spec
        terms = spec.order_terms()
        self._taker_fee = terms.taker_fee
        self._half_spread = terms.half_spread_bps
        self._slippage = terms.slippage_bps
        self._impact = terms.volume_impact_bps
        self._step = terms.qty_step
        self._min_qty = terms.min_qty
        self._min_notional = terms.min_notional
        self._tick = terms.price_tick

    @property
    def faults(self) -> FaultConfig:
        return self._faults

    def reseed(self, seed: int | np.random.Generator | None) -> None:
        """Restart the fault generator (at every episode reset, from the env's ``np_random``)."""
        self._rng = np.random.default_rng(seed)
        self._draws = []
        self._next = 0

    @staticmethod
    def seed_from(rng: np.random.Generator) -> int:
        """A fault seed drawn from a parent generator (the env's ``np_random``)."""
        return int(rng.integers(0, _SEED_BOUND))

    def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        """Fill, refuse or fail ``order`` at ``quote`` (see the module docstring for the rule order)."""
        return self.fill(
            order.client_order_id,
            order.symbol,
            order.side,
            order.qty,
            order.reduce_only,
            quote.time_ns,
            quote.price,
            quote.volume,
        )

    def fill(
        self,
        client_order_id: str,
        symbol: str,
        side: Side,
        requested: float,
        reduce_only: bool,
        time_ns: int,
        ref: float,
        volume: float,
    ) -> OrderResult:
        """:meth:`submit` with the order's and the quote's fields as arguments (the trading core's
        per-bar path calls this, building no intent or quote record)."""
        why: _Refusal | None = None
        qty = 0.0
        if not (math.isfinite(requested) and requested > 0.0):
            why = _INVALID
        elif self._fault_cut > 0.0 and not reduce_only:
            # One draw per order whenever faults are on, so the fault sequence depends only on the seed
            # and the number of orders, not on which orders the rules refused. Draws come in blocks
            # (one scalar call to the generator costs as much as a whole order).
            i = self._next
            if i == len(self._draws):
                self._draws = self._rng.random(_DRAW_BLOCK).tolist()
                i = 0
            self._next = i + 1
            u = self._draws[i]
            if u < self._rate_limit_cut:
                why = _RATE_LIMITED
            elif u < self._timeout_cut:
                why = _TIMED_OUT
            elif u < self._fault_cut:
                why = _DOWN
        if why is None:
            step = self._step
            # floor_to_step() inlined, same arithmetic.
            qty = requested
            if step > 0.0:
                qty = max(math.floor(requested / step * (1.0 + 1e-12) + 1e-9), 0) * step
            if qty <= 0.0 or qty < self._min_qty:
                why = _LOT_SIZE
            elif not reduce_only and qty * ref < self._min_notional:
                why = _NOTIONAL
        if why is not None:
            return _refused(client_order_id, symbol, side, time_ns, requested, ref, why)

        # MarketSpec.fill_price() inlined, same arithmetic (see there).
        slippage = self._slippage
        impact = self._impact
        if impact != 0.0:
            participation = MAX_PARTICIPATION if not volume > 0.0 else min(qty / volume, MAX_PARTICIPATION)
            slippage = slippage + impact * math.sqrt(participation)
        move = ref * ((self._half_spread + slippage) * BPS)
        tick = self._tick
        if side is _BUY:
            price = ref + move
            if tick > 0.0:
                price = math.ceil(price / tick - TICK_TOLERANCE) * tick
        else:
            price = ref - move
            if tick > 0.0:
                price = math.floor(price / tick + TICK_TOLERANCE) * tick
        fee = qty * price * self._taker_fee
        book = self._book
        fits = (
            book.can_fill(side, qty, price, fee)
            if book is not None
            else self._account.can_fill(side, qty, price, fee)
        )
        if not fits:
            return _refused(client_order_id, symbol, side, time_ns, requested, ref, _NO_BALANCE)
        # The NamedTuple's own constructor costs more (a Python-level function with defaults); every
        # field is given, in order.
        return _fast.new_record(
            OrderResult,
            (
                client_order_id,
                symbol,
                side,
                time_ns,
                requested,
                price,
                _FILLED,
                qty,
                fee,
                qty * abs(price - ref),
                None,
                "",
                None,
            ),
        )
