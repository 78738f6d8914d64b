"""Order minimums learned from rejections, seeded from exchange specs where known.

When the exchange refuses an order as too small, the attempted size times the bump (x1.2) becomes the
learned minimum, so sizing can step over the limit instead of repeating the rejection:

* ``min_notional`` rejection: ``min_notional = max(old, bump * requested_qty * price)``;
* ``lot_size`` rejection: ``min_qty = max(old, bump * requested_qty)``.

Learned values only grow. ``quote_value`` records ``bump * requested_qty * price`` of the latest
rejection. Seeding from a :class:`envs.market.MarketSpec` never lowers a learned value.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import replace

from envs.events import ErrorKind, OrderResult, OrderStatus
from envs.market import MarketSpec
from learning.records import LearnedMinimum
from learning.store import OnRollback

__all__ = ["SOURCE_LEARNED", "SOURCE_SPEC", "OrderMinimumLearner"]

SOURCE_SPEC = "spec"
SOURCE_LEARNED = "learned"


class OrderMinimumLearner:
    """Per-symbol minimum order sizes.

    Args:
        conn: the store connection (minimums are loaded at construction).
        bump: multiplier applied to a rejected attempt (seed: 1.2).
    """

    def __init__(self, conn: sqlite3.Connection, *, bump: float) -> None:
        self._bump = bump
        self._minimums: dict[str, LearnedMinimum] = {
            row[0]: LearnedMinimum(*row)
            for row in conn.execute(
                "SELECT symbol, min_qty, min_notional, quote_value, updated_ns, rejections, source "
                "FROM minimums"
            )
        }
        self._dirty: set[str] = set()
        self._changes = 0
        self._view: tuple[int, dict[str, LearnedMinimum]] | None = None

    def seed(self, specs: Iterable[MarketSpec], time_ns: int) -> list[str]:
        """Start from the exchange's published minimums; returns the symbols that changed."""
        changed: list[str] = []
        for spec in specs:
            old = self._minimums.get(spec.symbol)
            if old is None:
                new = LearnedMinimum(
                    spec.symbol, spec.min_qty, spec.min_notional, 0.0, time_ns, 0, SOURCE_SPEC
                )
            else:
                new = replace(
                    old,
                    min_qty=max(old.min_qty, spec.min_qty),
                    min_notional=max(old.min_notional, spec.min_notional),
                )
            if new != old:
                self._minimums[spec.symbol] = new
                self._changes += 1
                self._dirty.add(spec.symbol)
                changed.append(spec.symbol)
        return changed

    def learn(self, symbol: str, result: OrderResult) -> LearnedMinimum | None:
        """Learn from an order outcome; returns the updated minimum, or ``None`` if it was not a minimum
        rejection (filled orders and other errors teach nothing here)."""
        if result.status is OrderStatus.FILLED or result.kind is None or not result.kind.is_minimum:
            return None
        if not (result.requested_qty > 0.0 and result.price > 0.0):
            raise ValueError(
                f"order {result.order_id}: a minimum rejection needs requested_qty > 0 and price > 0, "
                f"got {result.requested_qty} and {result.price}"
            )
        amount = result.requested_qty * self._bump
        quote_value = amount * result.price
        old = self._minimums.get(symbol) or LearnedMinimum(
            symbol, 0.0, 0.0, 0.0, result.time_ns, 0, SOURCE_SPEC
        )
        new = replace(
            old,
            min_qty=max(old.min_qty, amount) if result.kind is ErrorKind.LOT_SIZE else old.min_qty,
            min_notional=max(old.min_notional, quote_value)
            if result.kind is ErrorKind.MIN_NOTIONAL
            else old.min_notional,
            quote_value=quote_value,
            updated_ns=max(old.updated_ns, result.time_ns),
            rejections=old.rejections + 1,
            source=SOURCE_LEARNED,
        )
        self._minimums[symbol] = new
        self._changes += 1
        self._dirty.add(symbol)
        return new

    def get(self, symbol: str) -> LearnedMinimum | None:
        return self._minimums.get(symbol)

    def all(self) -> dict[str, LearnedMinimum]:
        """Every symbol's minimum, by symbol."""
        return dict(sorted(self._minimums.items()))

    def view(self) -> Mapping[str, LearnedMinimum]:
        """:meth:`all`, shared until a minimum changes (for snapshots; never changed in place)."""
        cached = self._view
        if cached is None or cached[0] != self._changes:
            cached = self._view = (self._changes, self.all())
        return cached[1]

    def flush(self, conn: sqlite3.Connection, on_rollback: OnRollback) -> None:
        """Write changed minimums (inside the caller's transaction); should it roll back, the undo given to
        ``on_rollback`` marks them changed again."""
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = set()
        on_rollback(lambda: self._dirty.update(dirty))  # whichever statement fails
        conn.executemany(
            "INSERT OR REPLACE INTO minimums (symbol, min_qty, min_notional, quote_value, updated_ns, "
            "rejections, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (m.symbol, m.min_qty, m.min_notional, m.quote_value, m.updated_ns, m.rejections, m.source)
                for m in (self._minimums[s] for s in sorted(dirty))
            ],
        )
