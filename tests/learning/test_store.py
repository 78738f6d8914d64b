"""The store: WAL, versioned schema with migrations, transactions, and clear errors for bad files."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import astuple
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.clock import DAY_NS
from envs.errors import StateError
from learning.manager import UniversalLearningManager
from learning.patterns import pattern_id
from learning.records import PatternScore
from learning.store import APP_ID, SCHEMA_VERSION, LearningStore

from .conftest import START_NS, make_trade

# The schema as version 1 shipped it, written out by hand (not through the migration code under test).
V1_SCHEMA = """
CREATE TABLE slf_schema (app TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE patterns (id INTEGER PRIMARY KEY, sig INTEGER NOT NULL, count INTEGER NOT NULL,
    wins INTEGER NOT NULL, total_pnl REAL NOT NULL, score REAL NOT NULL, weight REAL NOT NULL,
    first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL);
CREATE TABLE pattern_signatures (sig INTEGER PRIMARY KEY, signature TEXT NOT NULL);
CREATE TABLE journal (seq INTEGER PRIMARY KEY, trade_id TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, entry_time_ns INTEGER NOT NULL, exit_time_ns INTEGER NOT NULL, pnl REAL NOT NULL,
    return_pct REAL NOT NULL, pattern_id INTEGER NOT NULL, factors TEXT NOT NULL,
    condition_key TEXT NOT NULL);
CREATE INDEX journal_exit ON journal (exit_time_ns);
CREATE TABLE error_patterns (signature TEXT PRIMARY KEY, kind TEXT NOT NULL, message TEXT NOT NULL,
    context TEXT NOT NULL, first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL,
    count INTEGER NOT NULL);
CREATE TABLE resolution_attempts (id INTEGER PRIMARY KEY, signature TEXT NOT NULL,
    resolution TEXT NOT NULL, success INTEGER NOT NULL, time_ns INTEGER NOT NULL);
CREATE TABLE minimums (symbol TEXT PRIMARY KEY, min_qty REAL NOT NULL, min_notional REAL NOT NULL,
    quote_value REAL NOT NULL, updated_ns INTEGER NOT NULL, rejections INTEGER NOT NULL,
    source TEXT NOT NULL);
CREATE TABLE adjustments (condition_key TEXT PRIMARY KEY, exposure_multiplier REAL NOT NULL,
    entry_threshold REAL NOT NULL, max_position REAL NOT NULL, win_rate REAL NOT NULL,
    trades INTEGER NOT NULL, active INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
CREATE TABLE rules (rule_id TEXT PRIMARY KEY, factor TEXT NOT NULL, description TEXT NOT NULL,
    support INTEGER NOT NULL, losers INTEGER NOT NULL, occurrence REAL NOT NULL,
    winner_occurrence REAL NOT NULL, lift REAL NOT NULL, window_days REAL NOT NULL,
    created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, vetoes INTEGER NOT NULL,
    active INTEGER NOT NULL);
CREATE TABLE strategy_weights (factor TEXT PRIMARY KEY, weight REAL NOT NULL);
CREATE TABLE evolution_history (step INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL,
    trades INTEGER NOT NULL, winners INTEGER NOT NULL, boosted TEXT NOT NULL, weights TEXT NOT NULL);
CREATE TABLE archives (id INTEGER PRIMARY KEY, file TEXT NOT NULL UNIQUE, rows INTEGER NOT NULL,
    created_ns INTEGER NOT NULL, cutoff_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE effectiveness (id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, metrics TEXT NOT NULL);
"""

# Version 2 as it shipped (before the archive queue of version 3): version 1 plus veto outcomes, rule
# retirement, once-only reinforcement and the weight index. Archived patterns then left ``patterns``
# only once their file was recorded in ``archives``.
V2_SCHEMA = (
    V1_SCHEMA
    + """
ALTER TABLE rules ADD COLUMN judged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rules ADD COLUMN wrong INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rules ADD COLUMN retired_ns INTEGER;
ALTER TABLE rules ADD COLUMN retire_reason TEXT NOT NULL DEFAULT '';
CREATE TABLE vetoes (id INTEGER PRIMARY KEY, rule_id TEXT NOT NULL, time_ns INTEGER NOT NULL,
    symbol TEXT NOT NULL, outcome INTEGER);
CREATE INDEX vetoes_rule ON vetoes (rule_id, outcome);
ALTER TABLE journal ADD COLUMN reinforced INTEGER NOT NULL DEFAULT 0;
CREATE INDEX patterns_weight ON patterns (weight);
"""
)


def _store_path(root: Path) -> Path:
    path = root / "learning" / "state.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_store_uses_wal_and_records_its_schema(tmp_path: Path) -> None:
    store = LearningStore(_store_path(tmp_path))
    try:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.version == SCHEMA_VERSION
        assert store.conn.execute("SELECT app FROM slf_schema").fetchone()[0] == APP_ID
    finally:
        store.close()


def test_version_1_store_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = _store_path(tmp_path)
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO slf_schema VALUES (?, 1)", (APP_ID,))
    conn.execute(
        "INSERT INTO rules VALUES ('avoid:rsi_14=oversold', 'rsi_14=oversold', 'rsi_14 < 30', 8, 10, "
        "0.8, 0.1, 8.0, 3.0, 1, 2, 4, 1)"
    )
    conn.execute("INSERT INTO minimums VALUES ('BTC/USDT', 0.0, 9.6, 9.6, 5, 1, 'learned')")
    conn.execute(
        "INSERT INTO journal VALUES (1, 't1', 'BTC/USDT', 'long', 0, 60, 1.0, 0.01, 7, 'rsi_14=strong', "
        "'any')"
    )
    conn.commit()
    conn.close()

    with UniversalLearningManager(tmp_path) as manager:
        assert manager._store.version == SCHEMA_VERSION
        (rule,) = manager.rules()
        assert (rule.support, rule.vetoes, rule.judged, rule.wrong, rule.active) == (8, 4, 0, 0, True)
        assert manager.minimums()["BTC/USDT"].min_notional == 9.6
        assert manager.track_learning_effectiveness().trades == 1
        assert manager.pattern("rsi_14=strong") is not None  # replayed from the journal past the watermark
    reopened = sqlite3.connect(tmp_path / "learning" / "state.sqlite")
    columns = {row[1] for row in reopened.execute("PRAGMA table_info(journal)")}
    reopened.close()
    assert "reinforced" in columns


# The archive file's columns, as every schema wrote them (zstd Parquet, one row per pattern).
ARCHIVE_FILE_COLUMNS = {
    "signature": pa.string(),
    "count": pa.int64(),
    "wins": pa.int64(),
    "total_pnl": pa.float64(),
    "score": pa.float64(),
    "weight": pa.float64(),
    "first_seen_ns": pa.int64(),
    "last_seen_ns": pa.int64(),
}


def _archive_file(path: Path, patterns: list[PatternScore]) -> str:
    """Write an archive file of ``patterns``; returns its sha256."""
    rows = [astuple(p) for p in patterns]
    columns = dict(zip(ARCHIVE_FILE_COLUMNS, zip(*rows, strict=True), strict=True))
    table = pa.table({name: pa.array(columns[name], kind) for name, kind in ARCHIVE_FILE_COLUMNS.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_2_store_keeps_its_archive_and_vetoes_through_migration_and_archiving(tmp_path: Path) -> None:
    recorded = PatternScore(
        "rsi_14=oversold", 4, 1, -2.5, -0.3, 0.9, START_NS - 90 * DAY_NS, START_NS - 60 * DAY_NS
    )
    stale = PatternScore("macd_hist=neg", 3, 2, 1.5, 0.2, 1.2, START_NS - 2 * DAY_NS, START_NS - DAY_NS)
    rule = "avoid:rsi_14=oversold"
    path = _store_path(tmp_path)
    digest = _archive_file(tmp_path / "archive" / "patterns-000001.parquet", [recorded])
    conn = sqlite3.connect(path)
    conn.executescript(V2_SCHEMA)
    conn.execute("INSERT INTO slf_schema VALUES (?, 2)", (APP_ID,))
    conn.execute("INSERT INTO meta VALUES ('clock_ns', ?)", (str(START_NS),))
    conn.execute(
        "INSERT INTO archives VALUES (1, 'patterns-000001.parquet', 1, ?, ?, ?)",
        (START_NS - 20 * DAY_NS, START_NS - 50 * DAY_NS, digest),
    )
    conn.execute("INSERT INTO pattern_signatures VALUES (1, ?)", (stale.signature,))
    conn.execute(
        "INSERT INTO patterns VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)",
        (pattern_id(stale.signature), *astuple(stale)[1:]),
    )
    conn.execute(
        "INSERT INTO rules VALUES (?, 'rsi_14=oversold', 'rsi_14 < 30', 8, 10, 0.8, 0.1, 8.0, 3.0, 1, 2, "
        "1, 1, 0, 0, NULL, '')",
        (rule,),
    )
    conn.execute("INSERT INTO vetoes VALUES (7, ?, ?, 'BTC/USDT', NULL)", (rule, START_NS - DAY_NS))
    conn.commit()
    conn.close()

    def vetoes() -> list[tuple[object, ...]]:
        with sqlite3.connect(path) as raw:
            return raw.execute("SELECT id, rule_id, outcome FROM vetoes ORDER BY id").fetchall()

    with UniversalLearningManager(tmp_path) as manager:
        assert manager._store.version == SCHEMA_VERSION
        assert manager.pattern(stale.signature) == stale
        manager.on_bar(START_NS + 40 * DAY_NS)  # the memory pass queues the stale pattern
        assert manager.pattern(stale.signature) is None
    assert vetoes() == [(7, rule, None)]
    with UniversalLearningManager(tmp_path) as manager:
        assert manager.load_archive() == [recorded, stale]  # the recorded file, then the one written at close
        (kept,) = manager.rules()
        assert (kept.vetoes, kept.judged) == (1, 0)
        manager.record_veto_outcome(rule, False, START_NS + 40 * DAY_NS)  # judges the migrated veto
        manager.record_veto(rule, START_NS + 40 * DAY_NS)
    assert vetoes() == [(7, rule, 0), (8, rule, None)]
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == [
        "patterns-000001.parquet",
        "patterns-000002.parquet",
    ]


def test_a_full_disk_is_a_state_error_naming_the_store_and_the_sqlite_error(tmp_path: Path) -> None:
    path = _store_path(tmp_path)
    store = LearningStore(path)
    try:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StateError, match="database or disk is full") as info:
            store.set_meta("big", "x" * 100_000)
        assert info.value.where == str(path)
        assert info.value.fix is not None
        assert "free disk space" in info.value.fix
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)  # the real error, not ROLLBACK's
        assert not store.conn.in_transaction
        store.conn.execute("PRAGMA max_page_count = 1073741823")
        store.set_meta("big", "x" * 100_000)  # the same write succeeds once there is room
        assert store.get_meta("big") == "x" * 100_000
    finally:
        store.close()


def test_a_rolled_back_transaction_runs_the_undos_registered_in_it(tmp_path: Path) -> None:
    store = LearningStore(_store_path(tmp_path))
    undone: list[str] = []
    try:
        store.on_rollback(lambda: undone.append("outside"))  # no transaction: nothing to undo
        with store.transaction():
            store.on_rollback(lambda: undone.append("committed"))

        def fail() -> None:
            with store.transaction():
                store.on_rollback(lambda: undone.append("first"))
                with store.transaction():  # joins the outer one
                    store.on_rollback(lambda: undone.append("second"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail()
        assert undone == ["second", "first"]
    finally:
        store.close()


def test_random_bytes_are_a_state_error_that_says_how_to_recover(tmp_path: Path) -> None:
    path = _store_path(tmp_path)
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    with pytest.raises(StateError, match="move the file aside") as info:
        UniversalLearningManager(tmp_path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == garbage  # never overwritten


def test_corrupt_pages_behind_a_valid_header_are_a_state_error(tmp_path: Path) -> None:
    path = _store_path(tmp_path)
    with UniversalLearningManager(tmp_path) as manager:
        manager.learn_from_trade(make_trade(1, 1.0))
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="corrupt") as info:
        UniversalLearningManager(tmp_path)
    assert str(path) in str(info.value)


def test_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = _store_path(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="another application"):
        UniversalLearningManager(tmp_path)
    assert path.read_bytes() == before


def test_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = _store_path(tmp_path)
    LearningStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE slf_schema SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="newer version"):
        LearningStore(path)


def test_missing_store_is_an_error_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no learning store here"):
        UniversalLearningManager(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


def test_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    store = LearningStore(_store_path(tmp_path))
    try:

        def insert_then_fail() -> None:
            with store.transaction() as conn:
                conn.execute("INSERT INTO meta (key, value) VALUES ('x', '1')")
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            insert_then_fail()
        assert store.get_meta("x") is None
        store.set_meta("x", {"a": 1})
        assert store.get_meta("x") == {"a": 1}
    finally:
        store.close()


def test_read_only_manager_cannot_write(tmp_path: Path) -> None:
    with UniversalLearningManager(tmp_path) as manager:
        manager.learn_from_trade(make_trade(1, 1.0))
    reader = UniversalLearningManager(tmp_path, read_only=True)
    try:
        assert reader.pattern_count() == 1
        with pytest.raises(StateError, match="read-only"):
            reader.flush()
    finally:
        reader.close()


def test_mangled_tables_are_a_state_error_not_a_traceback(tmp_path: Path) -> None:
    LearningStore(_store_path(tmp_path)).close()
    conn = sqlite3.connect(tmp_path / "learning" / "state.sqlite")
    conn.execute("DROP TABLE pattern_signatures")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="cannot be read"):
        UniversalLearningManager(tmp_path)
