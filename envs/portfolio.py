"""Account of one symbol: cash, position, average price, PnL, fees, borrow, and closed trades.

Accounting rules (the identity ``equity == cash + qty * last_price`` holds after every call):

* A buy of ``q`` at ``p`` with fee ``f`` moves ``cash -= q * p + f``; a sell ``cash += q * p - f``.
  Fills are already net of spread and slippage (the broker priced them), so those costs live in the
  fill price, and fees are always >= 0.
* A short pays borrow every bar: ``borrow_rate * |qty| * close`` leaves cash at each mark.
* **Trades.** A trade opens when the position leaves zero and is the run of fills until it returns to
  zero. Adding to it updates the average entry price; entry time and entry snapshot stay those of the
  first fill. Every fill that shrinks it emits a :class:`~envs.events.TradeResult` for the quantity
  closed (its *slice*): a full close emits one, a partial reduction emits one for the part reduced and
  keeps the rest open, a reversal through zero emits one for the whole old position and opens a new
  trade with the remainder. Slices of one trade share the entry (id ``<entry order id>:<k>``).
* **Fees and borrow of a trade.** Each slice carries the entry fees and the borrow accrued so far pro
  rata to its share of the open quantity, plus the exit fee of the closing fill (on a reversal, the
  fill's fee is split pro rata between the closed and the newly opened quantity). ``fees`` = entry +
  exit fees; ``pnl`` = price PnL - fees - borrow. So the PnL of all slices plus the open trade's
  unrealized net PnL always adds up to ``equity - initial_cash``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from envs import _fast
from envs.errors import COUNTER_MAX, ConfigError, finite_float, saved_float, saved_int
from envs.events import OrderResult, OrderStatus, PositionSide, Side, TradeResult

__all__ = [
    "DEFAULT_INITIAL_CASH",
    "EXIT_END_OF_DATA",
    "EXIT_MAX_DRAWDOWN",
    "EXIT_REVERSE",
    "EXIT_RUIN",
    "EXIT_SIGNAL",
    "SNAPSHOT_FIELDS",
    "FeatureSnapshots",
    "Portfolio",
    "PortfolioConfig",
    "Snapshot",
    "SnapshotProvider",
    "Transition",
    "classify",
]

DEFAULT_INITIAL_CASH = 10_000.0

EXIT_SIGNAL = "signal"
EXIT_REVERSE = "reverse"
EXIT_END_OF_DATA = "end_of_data"
EXIT_RUIN = "ruin"
EXIT_MAX_DRAWDOWN = "max_drawdown"

SNAPSHOT_FIELDS = ("entry_signals", "market_conditions", "timeframe_alignment", "volume_profile")
"""``TradeResult`` fields filled from the entry snapshot, keyed by these names."""

Snapshot = Mapping[str, Mapping[str, float]]
"""Feature values at the entry decision bar: ``{field in SNAPSHOT_FIELDS: {feature name: value}}``."""

SnapshotProvider = Callable[[int], Snapshot]
"""Returns the snapshot of a decision row (the row index the trading core was given at entry), as new
dicts on every call: each trade slice keeps its own (records must not share mutable state)."""

# Quantities within this relative distance of zero are zero: fills are multiples of the lot step, but
# their float sums are not exactly.
_QTY_EPS = 1e-9
# Slack on the leverage check so a fill sized exactly at the cap is not refused by float rounding.
_CAP_SLACK = 1e-9


class Transition(Enum):
    """What a change of position from ``q0`` to ``q1`` does to the open trade."""

    HOLD = "hold"
    OPEN = "open"
    ADD = "add"
    REDUCE = "reduce"
    CLOSE = "close"
    REVERSE = "reverse"


# The one transition table: (sign q0, sign q1, sign(|q1| - |q0|)) -> transition. The trading core (which
# order to send, whether the no-trade band applies) and the portfolio (how a fill splits a trade) both
# read it, so the position logic is written once.
_TRANSITIONS: dict[tuple[int, int, int], Transition] = {
    (0, 0, 0): Transition.HOLD,
    (0, 1, 1): Transition.OPEN,
    (0, -1, 1): Transition.OPEN,
    (1, 1, 1): Transition.ADD,
    (-1, -1, 1): Transition.ADD,
    (1, 1, 0): Transition.HOLD,
    (-1, -1, 0): Transition.HOLD,
    (1, 1, -1): Transition.REDUCE,
    (-1, -1, -1): Transition.REDUCE,
    (1, 0, -1): Transition.CLOSE,
    (-1, 0, -1): Transition.CLOSE,
    **{(s, -s, c): Transition.REVERSE for s in (1, -1) for c in (-1, 0, 1)},
}


# Enum members bound to module names: `Side.BUY` costs ~0.2 us per lookup on Python 3.11 (a descriptor),
# and the per-order path does dozens of them.
_BUY = Side.BUY
_FILLED = OrderStatus.FILLED
_LONG = PositionSide.LONG
_SHORT = PositionSide.SHORT
_HOLD, _OPEN, _ADD, _REDUCE, _CLOSE = (
    Transition.HOLD,
    Transition.OPEN,
    Transition.ADD,
    Transition.REDUCE,
    Transition.CLOSE,
)


# The same table as a flat tuple indexed by 9 * (s0 + 1) + 3 * (s1 + 1) + (growth + 1): an index into a
# tuple instead of a dict lookup keyed by a new tuple (classify runs for every order). ``None`` marks
# sign combinations that cannot occur.
_TRANSITION_TABLE: tuple[Transition | None, ...] = tuple(
    _TRANSITIONS.get((s0, s1, g)) for s0 in (-1, 0, 1) for s1 in (-1, 0, 1) for g in (-1, 0, 1)
)


def classify(q0: float, q1: float) -> Transition:
    """The transition from position ``q0`` to ``q1`` (signed base quantities)."""
    a0 = q0 if q0 >= 0.0 else -q0
    a1 = q1 if q1 >= 0.0 else -q1
    eps = (a0 if a0 > a1 else a1) * _QTY_EPS
    s0 = 0 if a0 <= eps else (1 if q0 > 0.0 else -1)
    s1 = 0 if a1 <= eps else (1 if q1 > 0.0 else -1)
    d = a1 - a0
    growth = 0 if -eps <= d <= eps else (1 if d > 0.0 else -1)
    transition = _TRANSITION_TABLE[9 * s0 + 3 * s1 + growth + 13]
    if transition is None:  # pragma: no cover - the signs above cannot produce these combinations
        raise ValueError(f"no transition from {q0!r} to {q1!r}")
    return transition


@dataclass(frozen=True, slots=True)
class PortfolioConfig:
    """Account settings.

    Attributes:
        initial_cash: starting cash in quote currency.
        allow_short: whether the position may go below zero.
        leverage: cap on gross exposure: ``|qty| * price <= leverage * equity`` after a fill that
            increases exposure (fills that only reduce it are always accepted).
        borrow_rate: cost per bar of a short, as a fraction of its notional at the bar's close.
    """

    initial_cash: float = DEFAULT_INITIAL_CASH
    allow_short: bool = True
    leverage: float = 1.0
    borrow_rate: float = 0.0

    def __post_init__(self) -> None:
        cash = finite_float(self.initial_cash)
        if cash is None or cash <= 0:
            raise ConfigError(
                f"initial_cash={self.initial_cash!r} must be a finite number > 0",
                where="initial_cash",
                fix="give the starting cash in quote currency, e.g. 10000",
            )
        leverage = finite_float(self.leverage)
        if leverage is None or leverage <= 0:
            raise ConfigError(
                f"leverage={self.leverage!r} must be a finite number > 0",
                where="leverage",
                fix="use 1 for an unlevered account, 2 for 2x",
            )
        if not (isinstance(self.borrow_rate, int | float) and 0 <= self.borrow_rate < 1):
            raise ConfigError(
                f"borrow_rate={self.borrow_rate!r} must be in [0, 1)",
                where="borrow_rate",
                fix="give the per-bar cost as a fraction of short notional, e.g. 1e-5",
            )


_TRADE_FIELDS = (
    "avg_price",
    "borrow",
    "entry_bar",
    "entry_ref",
    "entry_time_ns",
    "fees",
    "qty",
    "side",
    "slices",
    "trade_id",
)


class _OpenTrade:
    """Mutable state of the trade currently open (one per portfolio)."""

    __slots__ = _TRADE_FIELDS

    def __init__(
        self, trade_id: str, side: int, time_ns: int, bar: int, ref: int, qty: float, price: float, fee: float
    ) -> None:
        self.trade_id = trade_id
        self.side = side  # +1 long, -1 short
        self.entry_time_ns = time_ns
        self.entry_bar = bar
        self.entry_ref = ref
        self.qty = qty  # open quantity, > 0
        self.avg_price = price
        self.fees = fee  # entry fees not yet attributed to a slice
        self.borrow = 0.0  # borrow not yet attributed to a slice
        self.slices = 0


_NO_TRADES: tuple[TradeResult, ...] = ()


_SnapshotGroup = tuple[str, dict[str, float], tuple[str, ...], tuple[int, ...]]


class FeatureSnapshots:
    """A :data:`SnapshotProvider` over a matrix of raw feature values (rows x columns, float32).

    ``snapshots(row)`` is ``{group: {feature: value}}`` for the groups of ``layout``, in its order, as new
    dicts of Python floats on every call (what :meth:`envs.features.FeatureMatrix.snapshot` gives).
    :class:`Portfolio` reads the four :data:`SNAPSHOT_FIELDS` groups of a closing trade straight from
    :meth:`fields`.

    Args:
        values: the matrix (2-D, float32; kept as a read-only memoryview, copied only if it is not
            C-contiguous float32).
        layout: ``(group, feature names, column positions)`` per group.
    """

    __slots__ = ("_layout", "_of_field", "_rows")

    def __init__(self, values: Any, layout: Sequence[tuple[str, Sequence[str], Sequence[int]]]) -> None:
        self._rows = np.ascontiguousarray(values, dtype=np.float32).data.toreadonly()
        # Per group: a template dict with the group's keys in order (a copy of it is a presized dict
        # whose values are then replaced, cheaper than growing a new one) and the columns to read.
        self._layout = tuple(
            (
                str(group),
                dict.fromkeys((str(n) for n in names), 0.0),
                tuple(str(n) for n in names),
                tuple(int(p) for p in positions),
            )
            for group, names, positions in layout
        )
        groups = [entry[0] for entry in self._layout]
        # Index in the layout of each SNAPSHOT_FIELDS group (-1: not in it).
        self._of_field = tuple(groups.index(f) if f in groups else -1 for f in SNAPSHOT_FIELDS)

    def __call__(self, row: int) -> dict[str, dict[str, float]]:
        out = {}
        for entry in self._layout:
            out[entry[0]] = self._group(row, entry)
        return out

    def fields(self, row: int) -> tuple[Mapping[str, float], ...]:
        """The :data:`SNAPSHOT_FIELDS` groups of ``row``, in that order (empty dicts for absent ones)."""
        out = []
        for k in self._of_field:
            out.append(self._group(row, self._layout[k]) if k >= 0 else {})
        return tuple(out)

    def _group(self, row: int, entry: _SnapshotGroup) -> dict[str, float]:
        rows = self._rows
        template = entry[1]
        d = template.copy()
        names = entry[2]
        positions = entry[3]
        for j in range(len(names)):
            p = positions[j]
            d[names[j]] = rows[row, p]
        return d


def _snapshot_fields(snap: Snapshot | None) -> tuple[Mapping[str, float], ...]:
    """The :data:`SNAPSHOT_FIELDS` groups of a provider's snapshot (new empty dicts for absent ones)."""
    if not snap:
        return {}, {}, {}, {}
    return tuple(snap.get(field) or {} for field in SNAPSHOT_FIELDS)


_STATE_VERSION = 1


class Portfolio:
    """Cash, position and trades of one symbol; implements :class:`envs.broker.Account`.

    Args:
        symbol: market symbol, copied into every trade.
        config: account settings.
        snapshot: provider of the entry-time feature snapshot, called when a trade slice closes with the
            row given at entry; ``None`` leaves the snapshot fields empty.
    """

    __slots__ = (
        "_allow_short",
        "_borrow_rate",
        "_leverage",
        "_snapshot",
        "_snapshots",
        "_trade",
        "borrow_paid",
        "cash",
        "config",
        "fees_paid",
        "last_price",
        "qty",
        "realized_pnl",
        "symbol",
    )
    _trade: _OpenTrade | None

    def __init__(
        self, symbol: str, config: PortfolioConfig | None = None, *, snapshot: SnapshotProvider | None = None
    ):
        self.symbol = symbol
        self.config = config or PortfolioConfig()
        # Copies of the (frozen) config's numbers, read on every order by this class and the trading core.
        self._leverage = float(self.config.leverage)
        self._borrow_rate = float(self.config.borrow_rate)
        self._allow_short = bool(self.config.allow_short)
        self._snapshot = snapshot
        # A feature-matrix provider hands over the four snapshot groups directly.
        self._snapshots = snapshot if isinstance(snapshot, FeatureSnapshots) else None
        self.reset()

    def reset(self, initial_cash: float | None = None) -> None:
        """Back to all cash, no position, no history."""
        self.cash = float(self.config.initial_cash if initial_cash is None else initial_cash)
        self.qty = 0.0
        self.last_price = 0.0
        self.realized_pnl = 0.0  # price PnL of closed quantity, before fees and borrow
        self.fees_paid = 0.0
        self.borrow_paid = 0.0
        self._trade = None

    # --- state -----------------------------------------------------------------------------------
    @property
    def equity(self) -> float:
        """Cash plus the position marked at the last price."""
        return self.cash + self.qty * self.last_price

    def equity_at(self, price: float) -> float:
        """Cash plus the position marked at ``price``."""
        return self.cash + self.qty * price

    @property
    def avg_price(self) -> float:
        """Average entry price of the open position (0 when flat)."""
        return self._trade.avg_price if self._trade is not None else 0.0

    @property
    def unrealized_pnl(self) -> float:
        """Price PnL of the open position at the last price (before fees and borrow)."""
        t = self._trade
        return 0.0 if t is None else (self.last_price - t.avg_price) * self.qty

    @property
    def open_trade_costs(self) -> float:
        """Entry fees and borrow of the open trade not yet attributed to a closed slice."""
        t = self._trade
        return 0.0 if t is None else t.fees + t.borrow

    @property
    def exposure(self) -> float:
        """Signed position value as a fraction of equity (0 when equity is not positive)."""
        eq = self.equity
        return self.qty * self.last_price / eq if eq > 0.0 else 0.0

    def entry_bar(self) -> int | None:
        """Bar index of the open trade's first fill, ``None`` when flat."""
        return None if self._trade is None else self._trade.entry_bar

    # --- persistence -----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The account as plain JSON-able data: balances, totals and the open trade (for checkpoints).

        The open trade keeps its entry row (``entry_ref``); the entry snapshot itself belongs to the
        snapshot provider, which the caller persists alongside.
        """
        t = self._trade
        return {
            "version": _STATE_VERSION,
            "symbol": self.symbol,
            "cash": self.cash,
            "qty": self.qty,
            "last_price": self.last_price,
            "realized_pnl": self.realized_pnl,
            "fees_paid": self.fees_paid,
            "borrow_paid": self.borrow_paid,
            "trade": None if t is None else {name: getattr(t, name) for name in _TRADE_FIELDS},
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        config: PortfolioConfig | None = None,
        *,
        snapshot: SnapshotProvider | None = None,
    ) -> Portfolio:
        """A portfolio holding exactly what :meth:`to_state` recorded (``config`` and ``snapshot`` as in
        the constructor; they are not part of the state)."""
        if state.get("version") != _STATE_VERSION:
            raise ConfigError(
                f"portfolio state version {state.get('version')!r} is not {_STATE_VERSION}",
                where="portfolio state",
                fix="restore a state written by this version (to_state())",
            )
        book = cls(str(state["symbol"]), config, snapshot=snapshot)
        # Money and quantities are checked too: a nan or inf would poison every later figure.
        here = "portfolio state"
        book.cash = saved_float(state, "cash", where=here)
        book.qty = saved_float(state, "qty", where=here)
        book.last_price = saved_float(state, "last_price", where=here, low=0.0)
        book.realized_pnl = saved_float(state, "realized_pnl", where=here)
        book.fees_paid = saved_float(state, "fees_paid", where=here)
        book.borrow_paid = saved_float(state, "borrow_paid", where=here)
        trade = state.get("trade")
        if trade is not None:
            # The integers are checked before the compiled build's C fields (long long, Py_ssize_t) see
            # them, so both builds refuse the same values (envs.errors.saved_int).
            where = "portfolio state trade"
            t = _OpenTrade(
                str(trade["trade_id"]),
                saved_int(trade, "side", where=where, low=-1, high=1),
                saved_int(trade, "entry_time_ns", where=where),
                saved_int(trade, "entry_bar", where=where),
                saved_int(trade, "entry_ref", where=where, low=-1),
                saved_float(trade, "qty", where=where),
                saved_float(trade, "avg_price", where=where, low=0.0),
                saved_float(trade, "fees", where=where),
            )
            t.borrow = saved_float(trade, "borrow", where=where)
            t.slices = saved_int(trade, "slices", where=where, high=COUNTER_MAX)
            book._trade = t
        return book

    # --- Account ---------------------------------------------------------------------------------
    def can_fill(self, side: Side, qty: float, price: float, fee: float) -> bool:
        """Whether a fill fits the account: no short unless allowed; leverage cap on increases."""
        q0 = self.qty
        q1 = q0 + (qty if side is _BUY else -qty)
        # abs() and max() as conditional expressions (this runs for every order); a signed zero from
        # `-q` compares and multiplies like abs()'s 0.0 here.
        a0 = q0 if q0 >= 0.0 else -q0
        a1 = q1 if q1 >= 0.0 else -q1
        eps = _QTY_EPS * (a0 if a0 > qty else qty)
        if not self._allow_short and q1 < -eps:
            return False  # spot: cannot sell what you do not hold
        if a1 <= a0 + eps and q0 * q1 >= 0.0:
            return True  # reduces exposure: always accepted
        cash1 = self.cash - (q1 - q0) * price - fee
        equity1 = cash1 + q1 * price
        return equity1 > 0.0 and a1 * price <= self._leverage * equity1 * (1.0 + _CAP_SLACK)

    # --- updates ---------------------------------------------------------------------------------
    def mark(self, price: float) -> float:
        """Mark the position to ``price`` (a bar's close) and charge a short's borrow; return the borrow."""
        self.last_price = price
        rate = self._borrow_rate
        if self.qty < 0.0 and rate > 0.0:
            cost = -self.qty * price * rate
            self.cash -= cost
            self.borrow_paid += cost
            if self._trade is not None:
                self._trade.borrow += cost
            return cost
        return 0.0

    def apply_fill(
        self,
        result: OrderResult,
        bar_index: int,
        entry_ref: int = -1,
        exit_reason: str = EXIT_SIGNAL,
    ) -> tuple[TradeResult, ...]:
        """Book a filled order; return the trade slices it closed (see the module docstring).

        Args:
            result: a filled order (others are ignored).
            bar_index: index of the bar the fill happened in (for trade durations).
            entry_ref: decision row handed to the snapshot provider if this fill opens a trade.
            exit_reason: why a closing fill closes (a reversal is always ``"reverse"``).
        """
        qty = result.filled_qty
        if result.status is not _FILLED or qty <= 0.0:
            return _NO_TRADES
        price = result.price
        fee = result.fee
        # qty > 0, so d != 0 and its sign is +-1.
        d, sign = (qty, 1) if result.side is _BUY else (-qty, -1)
        q0 = self.qty
        q1 = q0 + d
        transition = classify(q0, q1)
        self.cash -= d * price + fee
        self.fees_paid += fee
        if self.last_price == 0.0:
            self.last_price = price  # first price seen; the next mark replaces it
        trades = _NO_TRADES
        t = self._trade
        if t is None or transition is _OPEN:
            self._trade = _OpenTrade(
                result.order_id, sign, result.time_ns, bar_index, entry_ref, qty, price, fee
            )
        elif transition is _ADD or (transition is _HOLD and sign == t.side):
            t.avg_price = (t.avg_price * t.qty + price * qty) / (t.qty + qty)
            t.qty += qty
            t.fees += fee
        elif transition is _REDUCE or transition is _HOLD:
            trades = (self._close_slice(t, qty, price, fee, result.time_ns, bar_index, exit_reason),)
        elif transition is _CLOSE:
            trades = (self._close_slice(t, t.qty, price, fee, result.time_ns, bar_index, exit_reason),)
            self._trade = None
        else:  # REVERSE: close the whole old trade, open a new one with the remainder
            closed = t.qty
            exit_fee = fee * closed / qty
            trades = (self._close_slice(t, closed, price, exit_fee, result.time_ns, bar_index, EXIT_REVERSE),)
            self._trade = _OpenTrade(
                result.order_id,
                sign,
                result.time_ns,
                bar_index,
                entry_ref,
                qty - closed,
                price,
                fee - exit_fee,
            )
        # Snap float dust of a full close to exactly zero.
        self.qty = q1 if self._trade is not None else 0.0
        return trades

    def _close_slice(
        self, t: _OpenTrade, qty: float, price: float, exit_fee: float, time_ns: int, bar: int, reason: str
    ) -> TradeResult:
        share = qty / t.qty
        if share > 1.0:
            share = 1.0
        entry_fee = t.fees * share
        borrow = t.borrow * share
        t.fees -= entry_fee
        t.borrow -= borrow
        t.qty -= qty
        t.slices += 1
        gross = (price - t.avg_price) * qty * t.side
        self.realized_pnl += gross
        fees = entry_fee + exit_fee
        pnl = gross - fees - borrow
        notional = t.avg_price * qty
        rows = self._snapshots
        ref = t.entry_ref
        if rows is not None and ref >= 0:
            signals, conditions, alignment, volume = rows.fields(ref)
        else:
            signals, conditions, alignment, volume = _snapshot_fields(
                self._snapshot(ref) if self._snapshot is not None and ref >= 0 else None
            )
        # Every field, in TradeResult's order, past its __new__ (which only fills in empty mappings, all
        # given here): this runs for every closed trade.
        return _fast.new_record(
            TradeResult,
            (
                f"{t.trade_id}:{t.slices}",
                self.symbol,
                _LONG if t.side > 0 else _SHORT,
                t.entry_time_ns,
                time_ns,
                t.avg_price,
                price,
                qty,
                fees,
                pnl,
                pnl / notional if notional > 0.0 else 0.0,
                bar - t.entry_bar,
                reason,
                signals,
                conditions,
                alignment,
                volume,
            ),
        )
