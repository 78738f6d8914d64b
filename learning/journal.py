"""The trade journal: every closed trade with its factors, read by adaptation, evolution, reinforcement
and failure analysis.

All rows live in the store's ``journal`` table; the trades of the longest analysis window (and the last
``trend_trades`` outcomes) are also kept in memory so that windowed rules never query SQLite. New rows
are buffered and written by :meth:`TradeJournal.flush` inside the caller's transaction.

The rules read their window through :meth:`TradeJournal.stats`: counts over the trades closed in
``[now - window, now]`` (trades, wins, factor counts among winners and losers, trades and wins per
condition class, sorted PnLs). Trades arrive in exit-time order and market time only moves forward, so
each window is a contiguous run of the in-memory journal that slides forward: its counts are kept up to
date by adding the trades that enter and removing those that leave, instead of recounting the window
at every bar. A trade that arrives out of exit-time order, or a query earlier than the previous one,
falls back to counting the window from scratch, so the counts always equal those of
:meth:`TradeJournal.window`.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from envs.events import TradeResult
from learning.discretize import FACTOR_SEPARATOR
from learning.store import OnRollback

__all__ = ["JournalEntry", "TradeJournal", "WindowStats"]


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


class WindowStats:
    """Counts over the journal trades closed in one window ``[now - length, now]`` (market time).

    Read-only for its users; :class:`TradeJournal` keeps the sliding ones up to date.

    Attributes:
        trades: trades in the window; ``wins``: of which won (``pnl > 0``).
        winner_factors / loser_factors: factor -> number of winning / losing trades carrying it (factors
            that no trade in the window carries are absent).
        conditions: condition class -> ``[trades, wins]``.
        pnls: the trades' PnLs, sorted ascending.
    """

    __slots__ = (
        "_journal",
        "_list",
        "conditions",
        "hi",
        "length",
        "lo",
        "loser_factors",
        "now",
        "pnls",
        "trades",
        "winner_factors",
        "wins",
    )

    def __init__(self, length: int, journal: TradeJournal | None = None) -> None:
        self.length = length
        self._journal = journal
        self._list: list[JournalEntry] | None = None
        # Absolute positions (see TradeJournal._base) of the journal run the counts cover, and the
        # time of the last query; None before the first one.
        self.lo = 0
        self.hi = 0
        self.now: int | None = None
        self._clear()

    def _clear(self) -> None:
        self.trades = 0
        self.wins = 0
        self.winner_factors: dict[str, int] = {}
        self.loser_factors: dict[str, int] = {}
        self.conditions: dict[str, list[int]] = {}
        self.pnls: list[float] = []

    @classmethod
    def of(cls, entries: Iterable[JournalEntry], length: int = 0) -> WindowStats:
        """Counts over ``entries`` (a window already selected)."""
        stats = cls(length)
        stats._list = list(entries)
        for entry in stats._list:
            stats._add(entry)
        return stats

    @property
    def losers(self) -> int:
        return self.trades - self.wins

    def entries(self) -> list[JournalEntry]:
        """The window's trades, in journal order."""
        if self._list is not None:
            return self._list
        journal = self._journal
        assert journal is not None  # a sliding window always has its journal
        base = journal._base
        return journal._entries[self.lo - base : self.hi - base]

    def _add(self, entry: JournalEntry) -> None:
        self.trades += 1
        won = entry.pnl > 0.0
        if won:
            self.wins += 1
            counts = self.winner_factors
        else:
            counts = self.loser_factors
        for factor in entry.factors:
            counts[factor] = counts.get(factor, 0) + 1
        condition = self.conditions.get(entry.condition_key)
        if condition is None:
            self.conditions[entry.condition_key] = [1, int(won)]
        else:
            condition[0] += 1
            condition[1] += won
        insort(self.pnls, entry.pnl)

    def _remove(self, entry: JournalEntry) -> None:
        self.trades -= 1
        won = entry.pnl > 0.0
        if won:
            self.wins -= 1
            counts = self.winner_factors
        else:
            counts = self.loser_factors
        for factor in entry.factors:
            left = counts[factor] - 1
            if left:
                counts[factor] = left
            else:
                del counts[factor]
        condition = self.conditions[entry.condition_key]
        condition[0] -= 1
        condition[1] -= won
        if not condition[0]:
            del self.conditions[entry.condition_key]
        pnls = self.pnls
        del pnls[bisect_left(pnls, entry.pnl)]


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
        # In exit-time order as long as trades arrive in it (self._ordered); _base is the absolute
        # position of _entries[0] (entries pruned so far), so sliding windows survive pruning.
        self._entries: list[JournalEntry] = []
        self._base = 0
        self._ordered = True
        self._windows: dict[int, WindowStats] = {}
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
        self._ordered = _in_exit_order(self._entries)
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
        entries = self._entries
        if entries and trade.exit_time_ns < entries[-1].exit_time_ns:
            self._ordered = False
        entries.append(entry)
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

    def stats(self, now_ns: int, window_ns: int) -> WindowStats:
        """Counts over :meth:`window` ``(now_ns, window_ns)`` (see the module docstring).

        The returned object is the journal's own for this window length: it is updated by the next
        call, so read it before adding trades or querying again.
        """
        if not self._ordered:
            return WindowStats.of(self.window(now_ns, window_ns), window_ns)
        view = self._windows.get(window_ns)
        if view is None:
            view = self._windows[window_ns] = WindowStats(window_ns, self)
            view.lo = view.hi = self._base
        elif view.now is not None and now_ns < view.now:
            view._clear()  # back in time: count again from the start
            view.lo = view.hi = self._base
        view.now = now_ns
        entries = self._entries
        base = self._base
        hi = view.hi
        end = base + len(entries)
        while hi < end and entries[hi - base].exit_time_ns <= now_ns:
            view._add(entries[hi - base])
            hi += 1
        view.hi = hi
        start = now_ns - window_ns
        lo = view.lo
        while lo < hi and entries[lo - base].exit_time_ns < start:
            view._remove(entries[lo - base])
            lo += 1
        view.lo = lo
        return view

    def mark_reinforced(self, entries: Iterable[JournalEntry]) -> None:
        for entry in entries:
            entry.reinforced = True
            self._reinforced.append(entry.seq)

    def recent_pnls(self) -> list[float]:
        """PnL of the latest ``trend_trades`` trades, oldest first."""
        return list(self._recent_pnl)

    def prune(self, now_ns: int) -> None:
        """Drop from memory the trades older than the window (they stay in the store).

        Trades arrive nearly in exit-time order, so this drops from the old end; a trade that arrived
        out of order may stay a little longer, which :meth:`window` filters out anyway.
        """
        cutoff = now_ns - self._window_ns
        entries = self._entries
        k = 0
        n = len(entries)
        while k < n and entries[k].exit_time_ns < cutoff:
            k += 1
        if not k:
            return
        base = self._base
        gone = base + k
        for view in self._windows.values():
            # Dropped trades leave the sliding windows that still count them.
            for pos in range(view.lo, min(view.hi, gone)):
                view._remove(entries[pos - base])
            view.lo = max(view.lo, gone)
            view.hi = max(view.hi, gone)
        del entries[:k]
        self._base = gone
        if not self._ordered and _in_exit_order(entries):
            self._ordered = True
            for view in self._windows.values():
                view._clear()
                view.lo = view.hi = gone
                view.now = None

    def flush(self, conn: sqlite3.Connection, on_rollback: OnRollback) -> None:
        """Write buffered rows and reinforcement marks (inside the caller's transaction); should it roll
        back, the undo given to ``on_rollback`` puts them back in the buffer."""
        rows = self._pending
        marks = self._reinforced
        if not rows and not marks:
            return
        # Handed over before the statements run: whichever of them fails, the rollback puts all back.
        self._pending = []
        self._reinforced = []
        on_rollback(lambda: self._unwritten(rows, marks))
        if rows:
            conn.executemany(_INSERT, rows)
        if marks:
            conn.executemany("UPDATE journal SET reinforced = 1 WHERE seq = ?", [(s,) for s in marks])

    def _unwritten(self, rows: list[JournalRow], marks: list[int]) -> None:
        # In front of whatever was buffered since: the rows keep their order (and their seq).
        self._pending[:0] = rows
        self._reinforced[:0] = marks


def _in_exit_order(entries: list[JournalEntry]) -> bool:
    return all(a.exit_time_ns <= b.exit_time_ns for a, b in pairwise(entries))


def _split(factors: str) -> tuple[str, ...]:
    return tuple(factors.split(FACTOR_SEPARATOR)) if factors else ()
