"""Trade patterns: signatures of discretized entry factors, reinforced by wins and weakened by losses.

A trade's entry signals, market conditions, timeframe alignment and volume profile are discretized
(:class:`learning.discretize.Discretizer`) into sorted factors; the factors joined by ``|`` are the
pattern's *signature*. Each pattern keeps counts, wins, total PnL, first/last seen, a score and a
weight:

* ``score`` is an exponential average of outcomes (+1 win, -1 loss) with rate ``r``:
  ``score <- score + r * (outcome - score)``; it starts at 0 and stays in [-1, 1];
* ``weight`` starts at 1 and is changed only by reinforcement, clipped to ``[w_min, w_max]``.

The ``patterns`` table is a materialized view of the trade journal. ``observe`` never touches the
store: it folds the trade into an in-memory *delta* per pattern (k updates of the exponential average
compose into ``score <- add + score * (1 - r)^k``). :meth:`PatternRecognitionEngine.compact` applies all
deltas in pattern-id order in one transaction and records the journal sequence number they cover (the
*watermark*); when the process dies before that, :meth:`PatternRecognitionEngine.replay` rebuilds the
deltas from the journal rows past the watermark. Large id-ordered batches matter: with a million
patterns, each compaction rewrites every table page once at most instead of once per trade.

Ids are 64-bit BLAKE2b hashes of the signature. Two different signatures sharing an id (probability
about n^2 / 2^65: 3e-8 with a million patterns) would share statistics; nothing else depends on it.
"""

from __future__ import annotations

import hashlib
import heapq
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from learning.discretize import FACTOR_SEPARATOR, Discretizer
from learning.records import PatternScore
from learning.store import OnRollback

__all__ = ["NEUTRAL_WEIGHT", "PatternRecognitionEngine", "pattern_id"]

NEUTRAL_WEIGHT = 1.0
_ID_BYTES = 8
# Parameters: id, signature number, count, wins, pnl, add, first_seen, last_seen, decay. A new row's
# score is ``add`` (the average folded from 0); an existing row's is ``add + score * decay``. The weight
# and signature number are left alone, so the weight index is not rewritten by compaction.
_APPLY_DELTA = (
    "INSERT INTO patterns (id, sig, count, wins, total_pnl, score, weight, first_seen_ns, last_seen_ns) "
    f"VALUES (?, ?, ?, ?, ?, ?, {NEUTRAL_WEIGHT}, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "count = count + excluded.count, wins = wins + excluded.wins, "
    "total_pnl = total_pnl + excluded.total_pnl, "
    "score = excluded.score + score * ?, first_seen_ns = MIN(first_seen_ns, excluded.first_seen_ns), "
    "last_seen_ns = MAX(last_seen_ns, excluded.last_seen_ns)"
)
_ADD_SIGNATURE = "INSERT INTO pattern_signatures (sig, signature) VALUES (?, ?)"
_SELECT = (
    "SELECT s.signature, p.count, p.wins, p.total_pnl, p.score, p.weight, p.first_seen_ns, "
    "p.last_seen_ns FROM patterns p JOIN pattern_signatures s ON s.sig = p.sig"
)

_SELECT_ROW = (
    "SELECT p.id, s.signature, p.count, p.wins, p.total_pnl, p.score, p.weight, p.first_seen_ns, "
    "p.last_seen_ns FROM patterns p JOIN pattern_signatures s ON s.sig = p.sig"
)
_SELECT_REINFORCED = f"{_SELECT_ROW} WHERE p.weight > ?"
_SELECT_ONE = f"{_SELECT_ROW} WHERE p.id = ?"


def pattern_id(signature: str) -> int:
    """Stable signed 64-bit id of a signature (SQLite's INTEGER PRIMARY KEY range)."""
    digest = hashlib.blake2b(signature.encode(), digest_size=_ID_BYTES).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Delta:
    """Not yet compacted trades of one pattern."""

    __slots__ = ("add", "count", "decay", "first", "last", "pnl", "signature", "wins")

    def __init__(self, signature: str, first: int, last: int) -> None:
        self.signature = signature
        self.count = 0
        self.wins = 0
        self.pnl = 0.0
        self.add = 0.0
        self.decay = 1.0
        self.first = first
        self.last = last

    def apply(self, base: PatternScore) -> PatternScore:
        return PatternScore(
            base.signature,
            base.count + self.count,
            base.wins + self.wins,
            base.total_pnl + self.pnl,
            self.add + base.score * self.decay,
            base.weight,
            min(base.first_seen_ns, self.first),
            max(base.last_seen_ns, self.last),
        )


def _record(row: tuple[object, ...]) -> PatternScore:
    return PatternScore(*row)  # type: ignore[arg-type]


def _write_batch(conn: sqlite3.Connection, items: list[tuple[int, _Delta]], numbers: dict[int, int]) -> None:
    """Apply one compaction: its deltas in id order, with the signatures of its new patterns."""
    # ``numbers`` holds the new patterns in id order, like ``items``.
    conn.executemany(
        _ADD_SIGNATURE, [(n, d.signature) for pid, d in items if (n := numbers.get(pid)) is not None]
    )
    conn.executemany(
        _APPLY_DELTA,
        [
            (pid, numbers.get(pid, 0), d.count, d.wins, d.pnl, d.add, d.first, d.last, d.decay)
            for pid, d in items
        ],
    )


def _inserted(signature: str, d: _Delta) -> PatternScore:
    """The row the upsert inserts for a new pattern."""
    return PatternScore(signature, d.count, d.wins, d.pnl, d.add, NEUTRAL_WEIGHT, d.first, d.last)


class PatternRecognitionEngine:
    """Learns which entry patterns win.

    Args:
        conn: the store connection.
        discretizer: turns feature values into factors.
        learning_rate: step ``r`` of the score towards the outcome.
        weight_bounds: ``(min, max)`` of a pattern's weight.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        discretizer: Discretizer,
        *,
        learning_rate: float,
        weight_bounds: tuple[float, float],
    ) -> None:
        self._conn = conn
        self.discretizer = discretizer
        self._rate = learning_rate
        self._keep = 1.0 - learning_rate
        self._w_min, self._w_max = weight_bounds
        self._pending: dict[int, _Delta] = {}
        # Compacted but not written yet (see compact() and write()): each compaction's deltas in id order
        # with the signature numbers of its new patterns; every such delta by pattern, in order; and the
        # weights set by boosts since the last write.
        self._sealed: list[tuple[list[tuple[int, _Delta]], dict[int, int]]] = []
        self._sealed_by_id: dict[int, list[_Delta]] = {}
        self._new_weights: dict[int, float] = {}
        # Sorted ids of the stored (or compacted) patterns (8 bytes each): tells compaction which patterns
        # are new, so only their signatures are written, under the next signature numbers.
        self._known = np.fromiter(
            (r[0] for r in conn.execute("SELECT id FROM patterns ORDER BY id")), np.int64
        )
        self._next_sig = (
            int(conn.execute("SELECT COALESCE(MAX(sig), 0) FROM pattern_signatures").fetchone()[0]) + 1
        )
        # The stored rows of the reinforced patterns (weight above neutral), kept in step with the store
        # by compaction, boost and archiving: top() ranks them without a query. Weights only grow
        # (boosts multiply by more than 1), so a pattern leaves this set only when it is archived.
        self._reinforced: dict[int, PatternScore] = {
            row[0]: _record(row[1:]) for row in conn.execute(_SELECT_REINFORCED, (NEUTRAL_WEIGHT,))
        }
        # top() is read for every snapshot: its ranking changes only when a reinforced pattern's stored
        # row does (compaction, boost, archiving); its result also changes when a trade of one of them
        # is observed (its pending delta).
        self._top_rows: tuple[int, tuple[tuple[int, PatternScore], ...]] | None = None
        self._top: tuple[PatternScore, ...] | None = None
        self._top_ids: frozenset[int] = frozenset()

    # --- signatures --------------------------------------------------------------------------------
    def factors(self, *groups: Mapping[str, float]) -> tuple[str, ...]:
        """Sorted factors of the given feature groups."""
        return self.discretizer.factors(*groups)

    @staticmethod
    def signature(factors: Iterable[str]) -> str:
        return FACTOR_SEPARATOR.join(factors)

    # --- learning ----------------------------------------------------------------------------------
    def observe(self, signature: str, *, pnl: float, entry_time_ns: int, exit_time_ns: int) -> int:
        """Fold one closed trade into its pattern's pending delta; returns the pattern id."""
        pid = pattern_id(signature)
        if pid in self._top_ids:
            self._top = None
        delta = self._pending.get(pid)
        if delta is None:
            delta = self._pending[pid] = _Delta(signature, entry_time_ns, exit_time_ns)
        won = pnl > 0.0
        delta.count += 1
        delta.wins += won
        delta.pnl += pnl
        delta.add = delta.add * self._keep + (self._rate if won else -self._rate)
        delta.decay *= self._keep
        if entry_time_ns < delta.first:
            delta.first = entry_time_ns
        if exit_time_ns > delta.last:
            delta.last = exit_time_ns
        return pid

    def replay(self, conn: sqlite3.Connection, after_seq: int) -> int:
        """Rebuild pending deltas from journal rows past the watermark; returns the rows replayed."""
        rows = 0
        for signature, pnl, entry_ns, exit_ns in conn.execute(
            "SELECT factors, pnl, entry_time_ns, exit_time_ns FROM journal WHERE seq > ? ORDER BY seq",
            (after_seq,),
        ):
            self.observe(signature, pnl=pnl, entry_time_ns=entry_ns, exit_time_ns=exit_ns)
            rows += 1
        return rows

    def boost(self, conn: sqlite3.Connection, signatures: Iterable[str], factor: float) -> list[str]:
        """Multiply these patterns' weights by ``factor``, clipped to the bounds (after a compaction: every
        pattern is stored or compacted); returns the signatures whose weight changed. The new weights
        are written by the next :meth:`write`."""
        changed: list[str] = []
        reinforced = self._reinforced
        for signature in dict.fromkeys(signatures):
            pid = pattern_id(signature)
            record = reinforced.get(pid)
            if record is None:
                row = conn.execute(_SELECT_ONE, (pid,)).fetchone()
                record = self._compacted(pid, signature, None if row is None else _record(row[1:]))
                if record is None:
                    continue
            new = min(self._w_max, max(self._w_min, record.weight * factor))
            if new != record.weight:
                self._new_weights[pid] = new
                if new > NEUTRAL_WEIGHT:
                    reinforced[pid] = replace(record, weight=new)
                else:
                    reinforced.pop(pid, None)
                changed.append(signature)
        if changed:
            self._reinforced_changed()
        return changed

    # --- reading (store plus compacted and pending deltas) -----------------------------------------
    def _compacted(self, pid: int, signature: str, stored: PatternScore | None) -> PatternScore | None:
        """A pattern's row as the store will hold it once what is compacted is written."""
        record = stored
        for d in self._sealed_by_id.get(pid, ()):
            # The upsert's arithmetic: an insert takes the delta's values, an update folds it in.
            record = _inserted(signature, d) if record is None else d.apply(record)
        weight = self._new_weights.get(pid)
        if weight is not None and record is not None:
            record = replace(record, weight=weight)
        return record

    def get(self, signature: str) -> PatternScore | None:
        """Current statistics of one pattern, or ``None`` if unknown (or archived)."""
        pid = pattern_id(signature)
        row = self._conn.execute(f"{_SELECT} WHERE p.id = ?", (pid,)).fetchone()
        base = self._compacted(
            pid, signature, _record(row) if row is not None and row[0] == signature else None
        )
        delta = self._pending.get(pid)
        if delta is None:
            return base
        if base is None:
            base = PatternScore(signature, 0, 0, 0.0, 0.0, NEUTRAL_WEIGHT, delta.first, delta.last)
        return delta.apply(base)

    def top(self, k: int) -> tuple[PatternScore, ...]:
        """The ``k`` reinforced patterns (weight above neutral) of highest weight, then score, then id.

        Ranked by their stored rows (weights only change in the store: reinforcement compacts first);
        pending deltas are applied to their statistics.
        """
        if k <= 0:
            return ()
        stored = self._top_rows
        if stored is None or stored[0] != k:
            ranked = heapq.nsmallest(k, self._reinforced.items(), key=_rank)
            stored = self._top_rows = (k, tuple(ranked))
            self._top_ids = frozenset(pid for pid, _ in ranked)
            self._top = None
        top = self._top
        if top is None:
            pending = self._pending
            top = self._top = tuple(
                record if (delta := pending.get(pid)) is None else delta.apply(record)
                for pid, record in stored[1]
            )
        return top

    def _reinforced_changed(self) -> None:
        self._top_rows = None
        self._top = None
        self._top_ids = frozenset()

    def most_traded(self, k: int) -> tuple[PatternScore, ...]:
        """The ``k`` patterns with the most trades (ties: signature), pending trades included.

        Meant for inspection (CLI, reports): it reads every pattern with pending trades.
        """
        if k <= 0:
            return ()
        candidates: dict[str, PatternScore] = {}
        for row in self._conn.execute(f"{_SELECT} ORDER BY p.count DESC LIMIT ?", (k,)):
            candidates[row[0]] = _record(row)
        # A pattern with compacted or pending trades may overtake the stored leaders: read each in full.
        signatures = {d.signature for d in self._pending.values()}
        signatures.update(ds[0].signature for ds in self._sealed_by_id.values())
        for signature in signatures:
            current = self.get(signature)
            if current is not None:
                candidates[signature] = current
        ranked = sorted(candidates.values(), key=lambda p: (-p.count, p.signature))
        return tuple(ranked[:k])

    def all(self) -> list[PatternScore]:
        """Every active pattern, pending trades included, by signature."""
        out: dict[str, PatternScore] = {}
        unwritten = self._sealed_by_id or self._new_weights
        for row in self._conn.execute(_SELECT):
            stored = _record(row)
            pid = pattern_id(stored.signature)
            record = self._compacted(pid, stored.signature, stored) if unwritten else stored
            if record is not None:
                delta = self._pending.get(pid)
                out[record.signature] = delta.apply(record) if delta is not None else record
        for pid, deltas in self._sealed_by_id.items():
            signature = deltas[0].signature
            record = None if signature in out else self._compacted(pid, signature, None)
            if record is not None:
                delta = self._pending.get(pid)
                out[signature] = delta.apply(record) if delta is not None else record
        for delta in self._pending.values():
            if delta.signature not in out:
                base = PatternScore(delta.signature, 0, 0, 0.0, 0.0, NEUTRAL_WEIGHT, delta.first, delta.last)
                out[delta.signature] = delta.apply(base)
        return [out[k] for k in sorted(out)]

    def count(self) -> int:
        """Active patterns, pending ones included."""
        if not self._pending:
            return len(self._known)
        return len(self._known) + int(self._new_ids(np.fromiter(self._pending, np.int64)).size)

    def _new_ids(self, ids: np.ndarray) -> np.ndarray:
        """The ids in ``ids`` that are not stored yet."""
        known = self._known
        pos = np.searchsorted(known, ids)
        hit = (
            (pos < known.size) & (known[np.minimum(pos, known.size - 1)] == ids) if known.size else ids != ids
        )
        return ids[~hit]

    @property
    def pending(self) -> int:
        """Patterns with trades not yet compacted into the store."""
        return len(self._pending)

    @property
    def unwritten(self) -> bool:
        """Whether compacted deltas or boosted weights wait for :meth:`write`."""
        return bool(self._sealed or self._new_weights)

    # --- persistence -------------------------------------------------------------------------------
    def compact(self, conn: sqlite3.Connection | None = None, on_rollback: OnRollback | None = None) -> bool:
        """Fold every pending delta into the patterns' statistics, in id order; returns whether there
        were any.

        With ``conn`` (the caller's transaction) the result is written at once; without, it waits for
        :meth:`write`, which applies each compaction as it would have been applied here, so the stored
        statistics are the same either way (a pattern's score depends on how its trades were grouped).
        ``on_rollback`` (required with ``conn``) receives how to keep what was written unwritten should
        the transaction roll back (see :meth:`write`).
        """
        assert (conn is None) == (on_rollback is None), "a write needs its on_rollback"
        folded = bool(self._pending)
        if folded:
            # Id order walks the b-tree pages in order: far fewer page misses and WAL frames than random.
            items = sorted(self._pending.items())
            new = self._new_ids(np.fromiter((pid for pid, _ in items), np.int64, len(items)))
            # New patterns get the next signature numbers, in id order (deterministic); a stored pattern's
            # number is kept by the upsert.
            first_sig = self._next_sig
            numbers = dict(zip(new.tolist(), range(first_sig, first_sig + new.size), strict=True))
            self._next_sig = first_sig + new.size
            reinforced = self._reinforced
            if reinforced:
                touched = False
                for pid, d in items:
                    # The upsert's arithmetic (IEEE doubles both): the reinforced rows equal the store's.
                    record = reinforced.get(pid)
                    if record is not None:
                        reinforced[pid] = d.apply(record)
                        touched = True
                if touched:
                    self._reinforced_changed()
            self._pending = {}
            # Both are sorted and disjoint: inserting at the search positions is a linear merge.
            self._known = np.insert(self._known, np.searchsorted(self._known, new), new)
            if conn is not None and on_rollback is not None and not self._sealed:
                # Written at once: nothing to keep for reads (unless the transaction rolls back).
                on_rollback(lambda: self._unwritten([(items, numbers)], {}))
                _write_batch(conn, items, numbers)
            else:
                self._seal(items, numbers)
        if conn is not None and on_rollback is not None:
            self.write(conn, on_rollback)
        return folded

    def _seal(self, items: list[tuple[int, _Delta]], numbers: dict[int, int]) -> None:
        """Keep one compaction for :meth:`write` (and for reads until then)."""
        self._sealed.append((items, numbers))
        by_id = self._sealed_by_id
        for pid, d in items:
            by_id.setdefault(pid, []).append(d)

    def write(self, conn: sqlite3.Connection, on_rollback: OnRollback) -> None:
        """Write what is compacted and the boosted weights (inside the caller's transaction).

        Should the transaction roll back, the undo given to ``on_rollback`` keeps them unwritten, to be
        written (once) by the next write: the compactions' in-memory effects (known ids, signature
        numbers, reinforced rows) already hold, as for any compaction not written yet.
        """
        sealed = self._sealed
        weights = self._new_weights
        if not sealed and not weights:
            return
        self._sealed = []
        self._sealed_by_id = {}
        self._new_weights = {}
        on_rollback(lambda: self._unwritten(sealed, weights))
        for items, numbers in sealed:
            _write_batch(conn, items, numbers)
        if weights:
            conn.executemany(
                "UPDATE patterns SET weight = ? WHERE id = ?",
                [(w, pid) for pid, w in sorted(weights.items())],
            )

    def _unwritten(
        self, sealed: list[tuple[list[tuple[int, _Delta]], dict[int, int]]], weights: dict[int, float]
    ) -> None:
        """Put back compactions and weights whose write rolled back, before any sealed since."""
        later = self._sealed
        self._sealed = []
        self._sealed_by_id = {}
        for items, numbers in (*sealed, *later):
            self._seal(items, numbers)
        self._new_weights = {**weights, **self._new_weights}

    def forget(self, ids: Iterable[int], on_rollback: OnRollback) -> None:
        """Drop archived patterns from the known ids (their rows have left the table, in the caller's
        transaction); should it roll back, the undo given to ``on_rollback`` knows them again."""
        gone = np.fromiter(ids, np.int64)
        reinforced = self._reinforced
        dropped = {pid: record for pid in gone.tolist() if (record := reinforced.pop(pid, None)) is not None}
        if dropped:
            self._reinforced_changed()
        removed = gone[:0]
        if gone.size and self._known.size:
            pos = np.searchsorted(self._known, gone)
            pos = pos[(pos < self._known.size) & (self._known[np.minimum(pos, self._known.size - 1)] == gone)]
            removed = self._known[pos]
            self._known = np.delete(self._known, pos)

        def undo() -> None:
            if removed.size:
                self._known = np.union1d(self._known, removed)
            if dropped:
                self._reinforced.update(dropped)
                self._reinforced_changed()

        on_rollback(undo)


def _rank(item: tuple[int, PatternScore]) -> tuple[float, float, int]:
    """Sort key of :meth:`PatternRecognitionEngine.top`: weight, then score, then id, all descending."""
    pid, record = item
    return (-record.weight, -record.score, -pid)
