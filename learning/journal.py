"""The trade journal: every closed trade with its factors, read by adaptation, evolution, reinforcement
and failure analysis.

All rows live in the store's ``journal`` table; the trades of the longest analysis window (and the last
``trend_trades`` outcomes) are also kept in memory so that windowed rules never query SQLite. New rows
are buffered and written by :meth:`TradeJournal.flush` inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from envs.events import TradeResult
from learning.discretize import FACTOR_SEPARATOR

__all__ = ["JournalEntry", "TradeJournal"]


@dataclass(slots=True)
class JournalEntry:
    """One closed trade as the learners see it.

    ``reinforced`` is the only mutable field: reinforcement boosts a trade's pattern at most once.
    """

    seq: int
    trade_id: str
    symbol: str
    exit_time_ns: int
    pnl: float
    signature: str
    factors: tuple[str, ...]
    condition_key: str
    reinforced: bool = False

    @property
    def won(self) -> bool:
        return self.pnl > 0.0


_INSERT = (
    "INSERT INTO journal (seq, trade_id, symbol, side, entry_time_ns, exit_time_ns, pnl, return_pct, "
    "pattern_id, factors, condition_key, reinforced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
)

JournalRow = tuple[int, str, str, str, int, int, float, float, int, str, str]


class TradeJournal:
    """Recent trades in memory, all trades in the store.

    Args:
        conn: the store connection (read at construction to load the recent window).
        window_ns: how far back, from the newest trade, entries are kept in memory.
        trend_trades: how many latest PnLs to keep for trend metrics.
    """

    def __init__(self, conn: sqlite3.Connection, window_ns: int, trend_trades: int) -> None:
        self._window_ns = window_ns
        self._entries: deque[JournalEntry] = deque()
        self._pending: list[JournalRow] = []
        self._reinforced: list[int] = []
        self._recent_pnl: deque[float] = deque(maxlen=trend_trades)
        row = conn.execute(
            "SELECT COALESCE(MAX(seq), 0), COUNT(*), MAX(exit_time_ns) FROM journal"
        ).fetchone()
        self._next_seq = int(row[0]) + 1
        self.total = int(row[1])
        if row[2] is not None:
            cutoff = int(row[2]) - window_ns
            # A pattern's signature is its factors joined, so the journal row alone rebuilds the entry.
            for seq, trade_id, symbol, exit_ns, pnl, factors, key, reinforced in conn.execute(
                "SELECT seq, trade_id, symbol, exit_time_ns, pnl, factors, condition_key, reinforced "
                "FROM journal WHERE exit_time_ns >= ? ORDER BY seq",
                (cutoff,),
            ):
                self._entries.append(
                    JournalEntry(
                        seq,
                        trade_id,
                        symbol,
                        exit_ns,
                        pnl,
                        factors,
                        _split(factors),
                        key,
                        bool(reinforced),
                    )
                )
        pnls = conn.execute("SELECT pnl FROM journal ORDER BY seq DESC LIMIT ?", (trend_trades,)).fetchall()
        self._recent_pnl.extend(p for (p,) in reversed(pnls))

    def append_trade(
        self,
        trade: TradeResult,
        pattern_id: int,
        signature: str,
        factors: tuple[str, ...],
        condition_key: str,
    ) -> JournalEntry:
        """Record a closed trade (buffered until the next :meth:`flush`); ``signature`` is ``factors``
        joined, ``condition_key`` the class of its market conditions."""
        seq = self._next_seq
        self._next_seq = seq + 1
        pnl = trade.pnl
        entry = JournalEntry(
            seq,
            trade.trade_id,
            trade.symbol,
            trade.exit_time_ns,
            pnl,
            signature,
            factors,
            condition_key,
        )
        self._entries.append(entry)
        self._recent_pnl.append(pnl)
        self._pending.append(
            (
                seq,
                trade.trade_id,
                trade.symbol,
                trade.side.value,
                trade.entry_time_ns,
                trade.exit_time_ns,
                pnl,
                trade.return_pct,
                pattern_id,
                signature,
                condition_key,
            )
        )
        self.total += 1
        return entry

    @property
    def pending(self) -> int:
        """Rows not yet written to the store."""
        return len(self._pending)

    @property
    def last_seq(self) -> int:
        """Sequence number of the latest trade (0 when none)."""
        return self._next_seq - 1

    def window(self, now_ns: int, window_ns: int) -> list[JournalEntry]:
        """Trades that closed in ``[now - window, now]`` (market time, both ends inclusive)."""
        start = now_ns - window_ns
        return [e for e in self._entries if start <= e.exit_time_ns <= now_ns]

    def mark_reinforced(self, entries: Iterable[JournalEntry]) -> None:
        for entry in entries:
            entry.reinforced = True
            self._reinforced.append(entry.seq)

    def recent_pnls(self) -> list[float]:
        """PnL of the latest ``trend_trades`` trades, oldest first."""
        return list(self._recent_pnl)

    def prune(self, now_ns: int) -> None:
        """Drop from memory the trades older than the window (they stay in the store).

        Trades arrive nearly in exit-time order, so this pops from the old end; a trade that arrived
        out of order may stay a little longer, which :meth:`window` filters out anyway.
        """
        cutoff = now_ns - self._window_ns
        entries = self._entries
        while entries and entries[0].exit_time_ns < cutoff:
            entries.popleft()

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write buffered rows and reinforcement marks (inside the caller's transaction)."""
        if self._pending:
            conn.executemany(_INSERT, self._pending)
            self._pending.clear()
        if self._reinforced:
            conn.executemany(
                "UPDATE journal SET reinforced = 1 WHERE seq = ?", [(s,) for s in self._reinforced]
            )
            self._reinforced.clear()


def _split(factors: str) -> tuple[str, ...]:
    return tuple(factors.split(FACTOR_SEPARATOR)) if factors else ()
