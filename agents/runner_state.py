"""The live runner's durable state: a checkpoint after every bar and a write-ahead log of its orders.

Both live in SQLite tables (``runner_checkpoint``, ``runner_orders``) committed with ``synchronous=FULL``
(a commit survives a killed process and a power loss):

* with online learning they are tables of the learning store itself, so the learning written for a bar
  and the checkpoint that says the bar was processed are **one transaction**: a crash leaves both at the
  previous bar, never the learning ahead of the checkpoint (which would feed the bar twice on restart);
* otherwise they are a file of their own, ``<state dir>/runner/state.sqlite``.

The checkpoint is one JSON document (see :class:`agents.runner.LiveRunner` for its fields); the order
log holds one row per client order id: the intent, the quote it was sent at, the id of the attempt on
the wire (retries get ``<id>-r<k>``), ``sent`` until the broker's answer is booked, then ``booked`` with
the result, or ``void`` when the exchange never received it and its moment has passed. API keys are
never part of either.

The records that travel from one bar to the next (orders, trades, errors, vetoed proposals, hook
events) are encoded as JSON lists in their field order and decoded to equal records
(:func:`encode_record`, :func:`decode_record`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from agents.hooks import HookEvent, HookReason
from envs.broker import OrderIntent, Quote
from envs.core import OrderProposal
from envs.errors import StateError
from envs.events import ErrorEvent, ErrorKind, OrderResult, OrderStatus, PositionSide, Side, TradeResult
from envs.portfolio import Transition

if TYPE_CHECKING:
    from learning.manager import UniversalLearningManager

__all__ = [
    "RUNNER_DIRNAME",
    "RUNNER_FILENAME",
    "RunnerStore",
    "SentOrder",
    "decode_record",
    "encode_record",
]

RUNNER_DIRNAME: Final = "runner"
RUNNER_FILENAME: Final = "state.sqlite"
CHECKPOINT_VERSION: Final = 1

SENT: Final = "sent"
BOOKED: Final = "booked"
VOID: Final = "void"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS runner_checkpoint"
    " (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runner_orders ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " client_order_id TEXT NOT NULL UNIQUE,"
    " sent_id TEXT NOT NULL,"
    " symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, decision_time_ns INTEGER NOT NULL,"
    " reduce_only INTEGER NOT NULL,"
    " quote_time_ns INTEGER NOT NULL, quote_price REAL NOT NULL, quote_volume REAL,"
    " decision_row INTEGER NOT NULL, exit_reason TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 1, retries TEXT NOT NULL DEFAULT '[]', chosen TEXT,"
    " status TEXT NOT NULL, result TEXT)",
)


# --- records <-> JSON ------------------------------------------------------------------------------


def _order_out(o: OrderResult) -> list[Any]:
    return [
        o.order_id, o.symbol, o.side.value, o.time_ns, o.requested_qty, o.price, o.status.value,
        o.filled_qty, o.fee, o.slippage, None if o.kind is None else o.kind.value, o.message, o.code,
    ]  # fmt: skip


def _order_in(x: list[Any]) -> OrderResult:
    return OrderResult(
        x[0], x[1], Side(x[2]), int(x[3]), float(x[4]), float(x[5]), OrderStatus(x[6]), float(x[7]),
        float(x[8]), float(x[9]), None if x[10] is None else ErrorKind(x[10]), x[11], x[12],
    )  # fmt: skip


def _trade_out(t: TradeResult) -> list[Any]:
    return [*t[:2], t.side.value, *t[3:13], *(dict(m) for m in t[13:])]


def _trade_in(x: list[Any]) -> TradeResult:
    return TradeResult(
        x[0], x[1], PositionSide(x[2]), int(x[3]), int(x[4]), float(x[5]), float(x[6]), float(x[7]),
        float(x[8]), float(x[9]), float(x[10]), int(x[11]), x[12], x[13], x[14], x[15], x[16],
    )  # fmt: skip


def _error_out(e: ErrorEvent) -> list[Any]:
    return [e.time_ns, e.symbol, e.kind.value, e.message, e.code, e.order_id, dict(e.context)]


def _error_in(x: list[Any]) -> ErrorEvent:
    return ErrorEvent(int(x[0]), x[1], ErrorKind(x[2]), x[3], x[4], x[5], x[6])


def _proposal_out(p: OrderProposal) -> list[Any]:
    return [p.symbol, p.side.value, *p[2:9], p.transition.value]


def _proposal_in(x: list[Any]) -> OrderProposal:
    return OrderProposal(
        x[0], Side(x[1]), float(x[2]), float(x[3]), int(x[4]), int(x[5]), float(x[6]), float(x[7]),
        float(x[8]), Transition(x[9]),
    )  # fmt: skip


def _hook_out(e: HookEvent) -> list[Any]:
    return [e.reason.value, *e[1:7], list(e.rule_ids), e.round_trip_cost]


def _hook_in(x: list[Any]) -> HookEvent:
    return HookEvent(
        HookReason(x[0]), int(x[1]), x[2], int(x[3]), float(x[4]), float(x[5]), float(x[6]), tuple(x[7]),
        float(x[8]),
    )  # fmt: skip


_CODECS: Final[dict[str, tuple[type, Callable[[Any], list[Any]], Callable[[list[Any]], Any]]]] = {
    "order": (OrderResult, _order_out, _order_in),
    "trade": (TradeResult, _trade_out, _trade_in),
    "error": (ErrorEvent, _error_out, _error_in),
    "proposal": (OrderProposal, _proposal_out, _proposal_in),
    "hook": (HookEvent, _hook_out, _hook_in),
}


def encode_record(record: OrderResult | TradeResult | ErrorEvent | OrderProposal | HookEvent) -> list[Any]:
    """``[tag, *fields]`` with enums as their values (JSON-able; floats round-trip exactly)."""
    for tag, (cls, out, _) in _CODECS.items():
        if isinstance(record, cls):
            return [tag, *out(record)]
    raise TypeError(f"cannot encode {type(record).__name__}")


def decode_record(data: list[Any]) -> Any:
    """The record :func:`encode_record` encoded (equal to the original)."""
    codec = _CODECS.get(data[0]) if data else None
    if codec is None:
        raise StateError(f"unknown record {data[:1]!r} in the runner checkpoint", fix="report a bug")
    return codec[2](list(data[1:]))


# --- the store -------------------------------------------------------------------------------------


class SentOrder(NamedTuple):
    """One row of the order log.

    Attributes:
        intent: the order as decided (its ``client_order_id`` is the log's key).
        sent_id: client order id of the attempt last sent (the intent's, or ``<id>-r<k>`` for retries).
        quote: the market it was sent at.
        decision_row: the decision bar's row (for the entry snapshot).
        exit_reason: why a closing fill closes.
        status: ``"sent"``, ``"booked"`` or ``"void"``.
        result: the booked answer (``None`` until booked).
        attempts: attempts sent.
        retries: the failed attempts that were retried, oldest first.
        chosen: ``(error signature, resolution)`` that chose the attempt last sent (``None`` for the
            first attempt, or without online learning): its outcome is that resolution's.
    """

    intent: OrderIntent
    sent_id: str
    quote: Quote
    decision_row: int
    exit_reason: str
    status: str
    result: OrderResult | None
    attempts: int
    retries: tuple[OrderResult, ...] = ()
    chosen: tuple[str, str] | None = None


class _OwnFile:
    """A WAL SQLite file of the runner's own, with nested transactions joining the outer one."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"the runner state cannot be opened ({exc})",
                where=str(path),
                fix="move the file aside to start the runner afresh (its open orders must then be checked "
                "on the exchange by hand)",
            ) from exc
        self._in_tx = False
        self.path = path

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a SQLite error (disk full, locked ...) is a StateError naming the file
        and the SQLite error."""
        if self._in_tx:
            yield self.conn
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc
        self._in_tx = True
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            self._in_tx = False
            # Some errors (SQLITE_FULL, SQLITE_IOERR ...) have already rolled the transaction back; a
            # ROLLBACK then fails with "no transaction is active" and would hide the real error.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._write_failed(exc) from exc
            raise
        self._in_tx = False

    def _write_failed(self, exc: sqlite3.Error) -> StateError:
        return StateError(
            f"cannot write the runner state ({exc})",
            where=str(self.path),
            fix="free disk space and check the permissions of its directory, then restart the runner (it "
            "reconciles its orders with the exchange at start)",
        )

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


class RunnerStore:
    """Checkpoint and order log of a live runner (see the module docstring).

    Build it with :meth:`open` (a file of its own) or :meth:`with_learning` (tables of the learning
    store, sharing its transactions).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        *,
        where: str,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.conn = conn
        self.transaction = transaction
        self.where = where
        self._close = close
        try:
            conn.execute("PRAGMA synchronous = FULL")
            with transaction() as c:
                for statement in _SCHEMA:
                    c.execute(statement)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(
                f"the runner state cannot be written ({exc})", where=where, fix="check the state directory"
            ) from exc

    @classmethod
    def open(cls, state_dir: Path) -> RunnerStore:
        """The runner's own file ``<state_dir>/runner/state.sqlite``."""
        path = Path(state_dir) / RUNNER_DIRNAME / RUNNER_FILENAME
        own = _OwnFile(path)
        return cls(own.conn, own.transaction, where=str(path), close=own.close)

    @classmethod
    def with_learning(cls, manager: UniversalLearningManager) -> RunnerStore:
        """Tables in ``manager``'s store, written in its transactions (checkpoint and learning commit
        together). The manager keeps owning the connection."""
        # The learning package has no public handle on its store's transaction yet; the runner needs
        # it to commit its checkpoint atomically with the learning of the same bar.
        store = manager._store
        return cls(store.conn, store.transaction, where=str(manager.store_path))

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    # --- checkpoint ------------------------------------------------------------------------------
    def load_checkpoint(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM runner_checkpoint WHERE id = 1").fetchone()
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row[0])
        if data.get("version") != CHECKPOINT_VERSION:
            raise StateError(
                f"runner checkpoint version {data.get('version')!r} is not {CHECKPOINT_VERSION}",
                where=self.where,
                fix="use the version of self-learning-flow that wrote it, or a new --state-dir",
            )
        return data

    def save_checkpoint(self, data: Mapping[str, Any]) -> None:
        """Replace the checkpoint (in the caller's transaction when there is one)."""
        text = json.dumps({**data, "version": CHECKPOINT_VERSION}, allow_nan=True)
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO runner_checkpoint (id, data) VALUES (1, ?)", (text,))

    # --- order log -------------------------------------------------------------------------------
    def record_sent(self, intent: OrderIntent, quote: Quote, decision_row: int, exit_reason: str) -> None:
        """Log ``intent`` as sent (committed before the caller sends it); a logged id is kept as is."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO runner_orders (client_order_id, sent_id, symbol, side, qty, decision_time_ns, "
                "reduce_only, quote_time_ns, quote_price, quote_volume, decision_row, exit_reason, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(client_order_id) DO NOTHING",
                (
                    intent.client_order_id, intent.client_order_id, intent.symbol, intent.side.value,
                    intent.qty, intent.decision_time_ns, int(intent.reduce_only), quote.time_ns,
                    quote.price, quote.volume, decision_row, exit_reason, SENT,
                ),
            )  # fmt: skip

    def record_retry(
        self,
        client_order_id: str,
        sent_id: str,
        qty: float,
        quote: Quote,
        failed: OrderResult,
        chosen: tuple[str, str] | None,
    ) -> None:
        """Log the next attempt of a logged order (its id on the wire, size, quote, the failed attempt
        before it and the resolution that chose it) before it is sent."""
        with self.transaction() as c:
            row = c.execute(
                "SELECT retries FROM runner_orders WHERE client_order_id = ?", (client_order_id,)
            ).fetchone()
            retries = [*json.loads(row[0]), encode_record(failed)] if row is not None else []
            c.execute(
                "UPDATE runner_orders SET sent_id = ?, qty = ?, quote_time_ns = ?, quote_price = ?, "
                "quote_volume = ?, attempts = attempts + 1, retries = ?, chosen = ? "
                "WHERE client_order_id = ?",
                (
                    sent_id, qty, quote.time_ns, quote.price, quote.volume, json.dumps(retries),
                    None if chosen is None else json.dumps(list(chosen)), client_order_id,
                ),
            )  # fmt: skip

    def mark_booked(self, client_order_id: str, result: OrderResult) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE runner_orders SET status = ?, result = ? WHERE client_order_id = ?",
                (BOOKED, json.dumps(encode_record(result)), client_order_id),
            )

    def mark_void(self, client_order_id: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE runner_orders SET status = ? WHERE client_order_id = ?", (VOID, client_order_id)
            )

    def get(self, client_order_id: str) -> SentOrder | None:
        rows = self._select("WHERE client_order_id = ?", (client_order_id,))
        return rows[0] if rows else None

    def unbooked(self) -> list[SentOrder]:
        """Orders sent whose answer was never booked, oldest first."""
        return self._select("WHERE status = ?", (SENT,))

    def orders(self) -> list[SentOrder]:
        """Every logged order, oldest first."""
        return self._select("", ())

    def _select(self, where: str, args: tuple[Any, ...]) -> list[SentOrder]:
        out = []
        for row in self.conn.execute(
            "SELECT client_order_id, sent_id, symbol, side, qty, decision_time_ns, reduce_only, "
            "quote_time_ns, quote_price, quote_volume, decision_row, exit_reason, status, result, attempts, "
            "retries, chosen "
            f"FROM runner_orders {where} ORDER BY seq",
            args,
        ):
            intent = OrderIntent(row[0], row[2], Side(row[3]), float(row[4]), int(row[5]), bool(row[6]))
            volume = float("nan") if row[9] is None else float(row[9])
            result = None if row[13] is None else decode_record(json.loads(row[13]))
            out.append(
                SentOrder(
                    intent,
                    row[1],
                    Quote(int(row[7]), float(row[8]), volume),
                    int(row[10]),
                    row[11],
                    row[12],
                    result,
                    int(row[14]),
                    tuple(decode_record(r) for r in json.loads(row[15])),
                    None if row[16] is None else (str(json.loads(row[16])[0]), str(json.loads(row[16])[1])),
                )
            )
        return out
