"""Typed records that flow out of the trading loop: orders, fills, closed trades, errors, bars.

The simulated broker, the portfolio, the live runner and the learning manager all speak these records,
so simulated and real rejections are learned by the same code. They are small, immutable and picklable
(they cross process boundaries inside Gymnasium ``info`` dicts). Mapping fields are plain dicts so that
they pickle; treat them as read-only. Times are epoch nanoseconds, UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "BarEvent",
    "ErrorEvent",
    "ErrorKind",
    "OrderResult",
    "OrderStatus",
    "PositionSide",
    "Side",
    "TradeResult",
]


class Side(StrEnum):
    """Direction of an order."""

    BUY = "buy"
    SELL = "sell"


class PositionSide(StrEnum):
    """Direction of a position (and of the trade that closes it)."""

    LONG = "long"
    SHORT = "short"


class OrderStatus(StrEnum):
    """What became of an order: filled, refused by the exchange's rules, or failed on the way."""

    FILLED = "filled"
    REJECTED = "rejected"
    ERRORED = "errored"


class ErrorKind(StrEnum):
    """Families of exchange trouble. Rejections carry the exchange's own wording in ``message``."""

    MIN_NOTIONAL = "min_notional"
    LOT_SIZE = "lot_size"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    MAINTENANCE = "maintenance"
    INVALID_ORDER = "invalid_order"
    NETWORK = "network"
    UNKNOWN = "unknown"

    @property
    def retryable(self) -> bool:
        """Transient kinds: the same request may succeed if tried again later."""
        return self in _RETRYABLE

    @property
    def is_minimum(self) -> bool:
        """Kinds that mean the order was too small for the exchange's minimums."""
        return self in (ErrorKind.MIN_NOTIONAL, ErrorKind.LOT_SIZE)


_RETRYABLE = frozenset({ErrorKind.RATE_LIMIT, ErrorKind.TIMEOUT, ErrorKind.MAINTENANCE, ErrorKind.NETWORK})


@dataclass(frozen=True, slots=True)
class OrderResult:
    """The outcome of one order.

    Attributes:
        order_id: client order id (idempotency key; deterministic in replay).
        symbol: market symbol, e.g. ``"BTC/USDT"``.
        side: buy or sell.
        time_ns: when the outcome was known (the fill bar's open time in replay).
        requested_qty: base quantity the decision asked for (before lot rounding), > 0.
        price: reference price of the attempt (fill price if filled; the price used for checks otherwise).
        status: filled, rejected or errored.
        filled_qty: base quantity filled (0 unless filled).
        fee: fee paid in quote currency (>= 0).
        slippage: quote-currency cost of slippage against the reference open price (>= 0 in replay).
        kind: error family when not filled, else ``None``.
        message: exchange wording of the rejection or error (``""`` when filled).
        code: exchange error code when known (``"-1013"``, ``"429"`` ...).
    """

    order_id: str
    symbol: str
    side: Side
    time_ns: int
    requested_qty: float
    price: float
    status: OrderStatus
    filled_qty: float = 0.0
    fee: float = 0.0
    slippage: float = 0.0
    kind: ErrorKind | None = None
    message: str = ""
    code: str | None = None

    @property
    def filled(self) -> bool:
        return self.status is OrderStatus.FILLED

    @property
    def notional(self) -> float:
        """Quote value of the attempt: requested quantity times price."""
        return self.requested_qty * self.price

    @property
    def signed_qty(self) -> float:
        """Filled quantity, positive for buys and negative for sells."""
        return self.filled_qty if self.side is Side.BUY else -self.filled_qty


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Exchange trouble worth learning from: a rejection or a failed request, with its context.

    ``context`` holds what the learner needs to match and resolve it (symbol, requested quantity,
    price, notional, attempt number ...); values are plain floats/ints/strings.
    """

    time_ns: int
    symbol: str
    kind: ErrorKind
    message: str
    code: str | None = None
    order_id: str | None = None
    context: Mapping[str, float | int | str] = field(default_factory=dict)

    @property
    def retryable(self) -> bool:
        return self.kind.retryable

    @classmethod
    def from_order(cls, result: OrderResult, **context: float | int | str) -> ErrorEvent:
        """The error event for a rejected or errored order."""
        if result.filled or result.kind is None:
            raise ValueError(f"order {result.order_id} was filled; it carries no error")
        ctx: dict[str, float | int | str] = {
            "requested_qty": result.requested_qty,
            "price": result.price,
            "notional": result.notional,
            "side": str(result.side),
        }
        ctx.update(context)
        return cls(
            time_ns=result.time_ns,
            symbol=result.symbol,
            kind=result.kind,
            message=result.message,
            code=result.code,
            order_id=result.order_id,
            context=ctx,
        )


@dataclass(frozen=True, slots=True)
class TradeResult:
    """A closed round trip, with the market as it was when the trade was entered.

    The four snapshot groups are the seed's pattern ingredients; each maps feature name -> value
    at the entry decision bar (raw, un-normalized feature values).

    Attributes:
        pnl: realized PnL in quote currency, net of both sides' fees (and borrow cost for shorts).
        return_pct: ``pnl`` divided by the entry notional (a fraction: 0.01 is 1%).
        duration_bars: bars between entry fill and exit fill.
        exit_reason: ``"signal"``, ``"reverse"``, ``"end_of_data"``, ``"ruin"``, ``"max_drawdown"``,
            ``"risk_limit"`` ...
    """

    trade_id: str
    symbol: str
    side: PositionSide
    entry_time_ns: int
    exit_time_ns: int
    entry_price: float
    exit_price: float
    quantity: float
    fees: float
    pnl: float
    return_pct: float
    duration_bars: int
    exit_reason: str
    entry_signals: Mapping[str, float] = field(default_factory=dict)
    market_conditions: Mapping[str, float] = field(default_factory=dict)
    timeframe_alignment: Mapping[str, float] = field(default_factory=dict)
    volume_profile: Mapping[str, float] = field(default_factory=dict)

    @property
    def won(self) -> bool:
        """A trade counts as a win when its net PnL is strictly positive."""
        return self.pnl > 0.0

    @property
    def duration_ns(self) -> int:
        return self.exit_time_ns - self.entry_time_ns


@dataclass(frozen=True, slots=True)
class BarEvent:
    """The state of one symbol's book after a bar has been processed."""

    time_ns: int
    symbol: str
    close: float
    equity: float
    position_qty: float
    cash: float
