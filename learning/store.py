"""The learning store: one SQLite file in WAL mode, versioned schema, every update in a transaction.

Layout under a storage root (normally the run directory)::

    <root>/learning/state.sqlite     this store (plus its -wal/-shm companions)
    <root>/archive/                  compressed long-term memory (see ``learning.memory``)

Opening never overwrites anything: a file that is not SQLite, or a SQLite file of another schema, raises
:class:`envs.errors.StateError` naming the path and how to recover. An older schema is migrated in
place, one migration per transaction, so an interrupted migration leaves the last complete version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envs.errors import StateError

__all__ = [
    "APP_ID",
    "ARCHIVE_DIRNAME",
    "MIGRATIONS",
    "RECOVERY_FIX",
    "SCHEMA_VERSION",
    "STORE_DIRNAME",
    "STORE_FILENAME",
    "LearningStore",
    "OnRollback",
    "Undo",
    "storage_root",
]

log = logging.getLogger(__name__)

APP_ID = "self-learning-flow/learning"
STORE_DIRNAME = "learning"
STORE_FILENAME = "state.sqlite"
ARCHIVE_DIRNAME = "archive"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS = 10_000
_CACHE_KIB = 128 * 1024
_MMAP_BYTES = 1 << 30
_WAL_CHECKPOINT_PAGES = 50_000
_WAL_SIZE_LIMIT_BYTES = 64 << 20


_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)

RECOVERY_FIX = (
    "move the file aside (with its -wal/-shm companions) and start fresh, or restore it from the archive/ "
    "directory or a backup"
)

Undo = Callable[[], None]
"""Puts back what a rolled-back transaction wrote (see :meth:`LearningStore.on_rollback`)."""
OnRollback = Callable[[Undo], None]
"""Where a writer hands over its :data:`Undo` (:meth:`LearningStore.on_rollback`)."""

# What to do when SQLite refuses a write, by primary result code. What was pending stays buffered
# (see LearningStore.on_rollback), so the retry writes it.
_RETRY = "then retry (what was not written is kept and written by the next write or close)"
_WRITE_FIX = f"check the disk and the permissions of the store's directory, {_RETRY}"
_LOCKED_FIX = f"stop the other process writing this store (one writer per run directory), {_RETRY}"
_PERMISSION_FIX = f"make the store, its -wal/-shm files and its directory writable, {_RETRY}"
_WRITE_FIXES = {
    sqlite3.SQLITE_FULL: f"free disk space (or lift the size limit), {_RETRY}",
    sqlite3.SQLITE_IOERR: f"check the disk (space, errors, a removed drive), {_RETRY}",
    sqlite3.SQLITE_BUSY: _LOCKED_FIX,
    sqlite3.SQLITE_LOCKED: _LOCKED_FIX,
    sqlite3.SQLITE_READONLY: _PERMISSION_FIX,
    sqlite3.SQLITE_PERM: _PERMISSION_FIX,
    sqlite3.SQLITE_CANTOPEN: _PERMISSION_FIX,
    sqlite3.SQLITE_CORRUPT: RECOVERY_FIX,
    sqlite3.SQLITE_NOTADB: RECOVERY_FIX,
}


_V1_STATEMENTS = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Statistics and signatures live apart. Statistics rows are small (about 70 per page), so a
    # compaction's in-place updates touch few pages; signatures are numbered in order of creation, so
    # new ones are appended to the end of their table instead of landing on random pages.
    (
        "CREATE TABLE patterns (id INTEGER PRIMARY KEY, sig INTEGER NOT NULL, count INTEGER NOT NULL, "
        "wins INTEGER NOT NULL, total_pnl REAL NOT NULL, score REAL NOT NULL, weight REAL NOT NULL, "
        "first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL)"
    ),
    "CREATE TABLE pattern_signatures (sig INTEGER PRIMARY KEY, signature TEXT NOT NULL)",
    (
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY, trade_id TEXT NOT NULL, symbol TEXT NOT NULL, "
        "side TEXT NOT NULL, entry_time_ns INTEGER NOT NULL, exit_time_ns INTEGER NOT NULL, pnl REAL NOT "
        "NULL, return_pct REAL NOT NULL, pattern_id INTEGER NOT NULL, factors TEXT NOT NULL, "
        "condition_key TEXT NOT NULL)"
    ),
    "CREATE INDEX journal_exit ON journal (exit_time_ns)",
    (
        "CREATE TABLE error_patterns (signature TEXT PRIMARY KEY, kind TEXT NOT NULL, message TEXT NOT "
        "NULL, context TEXT NOT NULL, first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL, "
        "count INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE resolution_attempts (id INTEGER PRIMARY KEY, signature TEXT NOT NULL, resolution "
        "TEXT NOT NULL, success INTEGER NOT NULL, time_ns INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE minimums (symbol TEXT PRIMARY KEY, min_qty REAL NOT NULL, min_notional REAL NOT "
        "NULL, quote_value REAL NOT NULL, updated_ns INTEGER NOT NULL, rejections INTEGER NOT NULL, "
        "source TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE adjustments (condition_key TEXT PRIMARY KEY, exposure_multiplier REAL NOT NULL, "
        "entry_threshold REAL NOT NULL, max_position REAL NOT NULL, win_rate REAL NOT NULL, trades "
        "INTEGER NOT NULL, active INTEGER NOT NULL, updated_ns INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE rules (rule_id TEXT PRIMARY KEY, factor TEXT NOT NULL, description TEXT NOT NULL, "
        "support INTEGER NOT NULL, losers INTEGER NOT NULL, occurrence REAL NOT NULL, winner_occurrence "
        "REAL NOT NULL, lift REAL NOT NULL, window_days REAL NOT NULL, created_ns INTEGER NOT NULL, "
        "updated_ns INTEGER NOT NULL, vetoes INTEGER NOT NULL, active INTEGER NOT NULL)"
    ),
    "CREATE TABLE strategy_weights (factor TEXT PRIMARY KEY, weight REAL NOT NULL)",
    (
        "CREATE TABLE evolution_history (step INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, trades "
        "INTEGER NOT NULL, winners INTEGER NOT NULL, boosted TEXT NOT NULL, weights TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE archives (id INTEGER PRIMARY KEY, file TEXT NOT NULL UNIQUE, rows INTEGER NOT "
        "NULL, created_ns INTEGER NOT NULL, cutoff_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)"
    ),
    ("CREATE TABLE effectiveness (id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, metrics TEXT NOT NULL)"),
)


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """The first schema: patterns, journal, errors, minimums, adjustments, rules, weights, archives."""
    # executescript() would commit the migration transaction first, so statements run one by one.
    for statement in _V1_STATEMENTS:
        conn.execute(statement)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Veto outcomes and rule retirement; once-only reinforcement; an index for ranking patterns."""
    for statement in (
        "ALTER TABLE rules ADD COLUMN judged INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE rules ADD COLUMN wrong INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE rules ADD COLUMN retired_ns INTEGER",
        "ALTER TABLE rules ADD COLUMN retire_reason TEXT NOT NULL DEFAULT ''",
        "CREATE TABLE vetoes (id INTEGER PRIMARY KEY, rule_id TEXT NOT NULL, time_ns INTEGER NOT NULL, "
        "symbol TEXT NOT NULL, outcome INTEGER)",
        "CREATE INDEX vetoes_rule ON vetoes (rule_id, outcome)",
        "ALTER TABLE journal ADD COLUMN reinforced INTEGER NOT NULL DEFAULT 0",
        # Only weight is indexed: it changes on reinforcement, not on every trade. An index on score or
        # last_seen would be rewritten by every trade and triple the cost of a write-behind flush.
        "CREATE INDEX patterns_weight ON patterns (weight)",
    ):
        conn.execute(statement)


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """The archive queue: archived patterns waiting for their Parquet file (see ``learning.memory``)."""
    conn.execute(
        "CREATE TABLE archive_queue (n INTEGER PRIMARY KEY, id INTEGER NOT NULL, signature TEXT NOT NULL, "
        "count INTEGER NOT NULL, wins INTEGER NOT NULL, total_pnl REAL NOT NULL, score REAL NOT NULL, "
        "weight REAL NOT NULL, first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL, "
        "cutoff_ns INTEGER NOT NULL)"
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_v1, _migrate_v2, _migrate_v3]
"""Applied in order; migration ``i`` (0-based) brings the schema from version ``i`` to ``i + 1``."""
SCHEMA_VERSION = len(MIGRATIONS)


def storage_root(path: Path) -> Path:
    """The storage root for a root directory, its ``learning/`` directory, or the store file itself."""
    path = Path(path)
    if path.is_file():
        if path.name != STORE_FILENAME or path.parent.name != STORE_DIRNAME:
            raise StateError(
                "is not a learning store location",
                where=str(path),
                fix=f"give the run directory, or its {STORE_DIRNAME}/{STORE_FILENAME}",
            )
        return path.parent.parent
    if path.name == STORE_DIRNAME and (path / STORE_FILENAME).exists():
        return path.parent
    return path


class LearningStore:
    """A SQLite connection to one learning store, checked, migrated and in WAL mode.

    Args:
        path: the store file (``<root>/learning/state.sqlite``).
        create: create the file (and its directory) when missing; when false a missing store is a
            ``StateError``.
        read_only: open without the right to write (for inspection while a run may be writing); an
            older schema is then an error instead of being migrated.

    Durability: ``synchronous=NORMAL`` in WAL mode; a killed process never loses a committed
    transaction and never corrupts the file; a power loss may roll back the latest commits but leaves
    the last checkpointed state intact.
    """

    def __init__(self, path: Path, *, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        create = create and not read_only
        if self.path.exists() and not self.path.is_file():
            raise StateError("is not a file", where=str(self.path), fix="point at a learning store file")
        if not self.path.exists():
            if not create:
                raise StateError(
                    "no learning store here",
                    where=str(self.path),
                    fix="give a run directory that has learning/state.sqlite (a run of the learning manager "
                    "creates it)",
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_header()
        try:
            if read_only:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the learning store ({exc})", where=str(self.path)) from exc
        self._in_tx = False
        # What to run should the current transaction roll back (see on_rollback()).
        self._undo: list[Undo] = []
        # key -> (value, JSON text) as this connection last wrote it
        self._meta_written: dict[str, tuple[Any, str]] = {}
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            version = self._check_identity()
            if read_only:
                self._check_current(version)
                self._conn.execute("PRAGMA query_only = ON")
                return
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # A large page cache and memory-mapped reads keep primary-key lookups in a big table cheap.
            self._conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            self._conn.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
            self._conn.execute("PRAGMA temp_store = MEMORY")
            # Checkpoints copy each changed page once however often it changed since the last one, so
            # a larger interval (about 200 MB of WAL) means fewer copies and fsyncs when compactions
            # rewrite the same pattern pages; the WAL file is truncated back to the size limit after
            # each checkpoint, and closing the last connection checkpoints and removes it.
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
            self._conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT_BYTES}")
            self._migrate(version)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise self._corrupt(exc) from exc
        except BaseException:
            self._conn.close()
            raise

    # --- opening ---------------------------------------------------------------------------------
    def _corrupt(self, exc: BaseException) -> StateError:
        return StateError(
            f"the learning store is corrupt or not a SQLite database ({exc})",
            where=str(self.path),
            fix=RECOVERY_FIX,
        )

    def _check_header(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if head != _SQLITE_MAGIC:
            raise self._corrupt(ValueError("file does not start with the SQLite header"))

    def _check_identity(self) -> int:
        """The schema version of an existing store (0 for an empty file); raises for a foreign database."""
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return 0
        if "slf_schema" not in tables:
            raise StateError(
                f"is a SQLite database of another application (tables: {', '.join(sorted(tables)[:5])})",
                where=str(self.path),
                fix="point at a learning store, or move this file aside so a new store can be created",
            )
        row = self._conn.execute("SELECT app, version FROM slf_schema").fetchone()
        if row is None or row[0] != APP_ID:
            raise StateError(
                f"has a schema table of another application ({row[0] if row else 'empty'})",
                where=str(self.path),
                fix=RECOVERY_FIX,
            )
        version = int(row[1])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"was written by a newer version (schema {version}, this code knows {SCHEMA_VERSION})",
                where=str(self.path),
                fix="upgrade self-learning-flow, or open a copy made by this version",
            )
        return version

    def _check_current(self, version: int) -> None:
        if version < SCHEMA_VERSION:
            raise StateError(
                f"has schema {version}, older than this code's {SCHEMA_VERSION}; it cannot be read without "
                "migrating",
                where=str(self.path),
                fix="open it once with the learning manager (not read-only), which migrates it in place",
            )

    def _migrate(self, version: int) -> None:
        if version == 0:
            with self.transaction() as conn:
                conn.execute("CREATE TABLE slf_schema (app TEXT NOT NULL, version INTEGER NOT NULL)")
                conn.execute("INSERT INTO slf_schema (app, version) VALUES (?, 0)", (APP_ID,))
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction() as conn:
                MIGRATIONS[target - 1](conn)
                conn.execute("UPDATE slf_schema SET version = ?", (target,))

    # --- use ---------------------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    @property
    def version(self) -> int:
        return int(self._conn.execute("SELECT version FROM slf_schema").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on error.

        Nested use joins the outer transaction, so a caller can group several engines' writes. A
        SQLite error (disk full, database locked ...) raises :class:`StateError` naming the store and
        the SQLite error; whatever the error, the callbacks registered with :meth:`on_rollback` run
        when the transaction rolls back, so writers can keep what did not get written.
        """
        if self._in_tx:
            yield self._conn
            return
        if self.read_only:
            raise StateError(
                "the learning store was opened read-only", where=str(self.path), fix="open it for writing"
            )
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc
        self._in_tx = True
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._in_tx = False
            self._rolled_back()
            if isinstance(exc, sqlite3.Error):
                raise self._write_failed(exc) from exc
            raise
        self._in_tx = False
        if self._undo:
            self._undo.clear()

    def on_rollback(self, undo: Undo) -> None:
        """Have ``undo`` run should the current transaction roll back.

        Writers clear their buffers as their statements run; ``undo`` puts back what they cleared, so
        a failed transaction loses nothing and its retry writes everything once. Outside a
        transaction there is nothing to roll back and ``undo`` is dropped.
        """
        if self._in_tx:
            self._undo.append(undo)

    def _rolled_back(self) -> None:
        undo, self._undo = self._undo, []
        self._meta_written.clear()  # what this transaction wrote is gone
        # Some errors (SQLITE_FULL, SQLITE_IOERR ...) have already rolled the transaction back; a
        # ROLLBACK then fails with "no transaction is active" and would hide the real error.
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("%s: rolling back a failed transaction failed", self.path)
        for fn in reversed(undo):
            fn()

    def _write_failed(self, exc: sqlite3.Error) -> StateError:
        """The error for a write the store refused, with what to do about it."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
        fix = _WRITE_FIXES.get(code, _WRITE_FIX)
        return StateError(f"cannot write the learning store ({exc})", where=str(self.path), fix=fix)

    def get_meta(self, key: str, default: Any = None) -> Any:
        """A JSON value from the ``meta`` table."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Write a JSON value into ``meta`` (inside the caller's transaction when there is one)."""
        written = self._meta_written.get(key)
        if written is not None and written[0] == value:
            return  # unchanged since this connection last wrote it (no need to encode it again)
        text = json.dumps(value)
        if written is not None and written[1] == text:
            return
        if self._in_tx:  # the caller's transaction (the usual case: a flush)
            self._conn.execute(_SET_META, (key, text))
        else:
            with self.transaction() as conn:
                conn.execute(_SET_META, (key, text))
        # The value is kept to compare the next one with: callers pass fresh objects, never changed later.
        self._meta_written[key] = (value, text)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        # Closing an already broken connection is not worth an error.
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
