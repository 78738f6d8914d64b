"""Typed records that flow out of the trading loop: orders, fills, closed trades, errors, bars.

The simulated broker, the portfolio, the live runner and the learning manager all speak these records,
so simulated and real rejections are learned by the same code. They are small, immutable and picklable
(they cross process boundaries inside Gymnasium ``info`` dicts). Mapping fields are plain dicts so that
they pickle; treat them as read-only. Times are epoch nanoseconds, UTC.

They are ``typing.NamedTuple`` s, as Stable-Baselines3 does for its hot data: the trading loop builds
several per bar, and a NamedTuple costs a third of a frozen dataclass to build. Copy one with a field
changed with ``record._replace(field=value)``. A mapping field left out gets a fresh empty dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import NamedTuple

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


class OrderResult(NamedTuple):
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


class _ErrorEventFields(NamedTuple):
    time_ns: int
    symbol: str
    kind: ErrorKind
    message: str
    code: str | None
    order_id: str | None
    context: Mapping[str, float | int | str]


class ErrorEvent(_ErrorEventFields):
    """Exchange trouble worth learning from: a rejection or a failed request, with its context.

    ``context`` holds what the learner needs to match and resolve it (symbol, requested quantity,
    price, notional, attempt number ...); values are plain floats/ints/strings.
    """

    __slots__ = ()

    def __new__(
        cls,
        time_ns: int,
        symbol: str,
        kind: ErrorKind,
        message: str,
        code: str | None = None,
        order_id: str | None = None,
        context: Mapping[str, float | int | str] | None = None,
    ) -> ErrorEvent:
        return tuple.__new__(
            cls, (time_ns, symbol, kind, message, code, order_id, {} if context is None else context)
        )

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


class _TradeResultFields(NamedTuple):
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
    entry_signals: Mapping[str, float]
    market_conditions: Mapping[str, float]
    timeframe_alignment: Mapping[str, float]
    volume_profile: Mapping[str, float]


class TradeResult(_TradeResultFields):
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

    __slots__ = ()

    def __new__(
        cls,
        trade_id: str,
        symbol: str,
        side: PositionSide,
        entry_time_ns: int,
        exit_time_ns: int,
        entry_price: float,
        exit_price: float,
        quantity: float,
        fees: float,
        pnl: float,
        return_pct: float,
        duration_bars: int,
        exit_reason: str,
        entry_signals: Mapping[str, float] | None = None,
        market_conditions: Mapping[str, float] | None = None,
        timeframe_alignment: Mapping[str, float] | None = None,
        volume_profile: Mapping[str, float] | None = None,
    ) -> TradeResult:
        return tuple.__new__(
            cls,
            (
                trade_id,
                symbol,
                side,
                entry_time_ns,
                exit_time_ns,
                entry_price,
                exit_price,
                quantity,
                fees,
                pnl,
                return_pct,
                duration_bars,
                exit_reason,
                {} if entry_signals is None else entry_signals,
                {} if market_conditions is None else market_conditions,
                {} if timeframe_alignment is None else timeframe_alignment,
                {} if volume_profile is None else volume_profile,
            ),
        )

    @property
    def won(self) -> bool:
        """A trade counts as a win when its net PnL is strictly positive."""
        return self.pnl > 0.0

    @property
    def duration_ns(self) -> int:
        return self.exit_time_ns - self.entry_time_ns


class BarEvent(NamedTuple):
    """The state of one symbol's book after a bar has been processed."""

    time_ns: int
    symbol: str
    close: float
    equity: float
    position_qty: float
    cash: float
