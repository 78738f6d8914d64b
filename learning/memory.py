"""Long-term memory: patterns unseen for the archive age move to compressed Parquet files.

A pattern whose ``last_seen`` is more than ``archive_age`` (seed: 30 market days) before now is
archived as its aggregate statistics (one row per pattern: counts, wins, PnL, score, weight, first and
last seen; the per-trade detail stays in the journal). Archiving *moves, never deletes*:

1. the rows are written to ``archive/patterns-<n>.parquet.tmp`` (zstd), fsync'd, atomically renamed
   to ``patterns-<n>.parquet``, and the directory is fsync'd;
2. only then, in one SQLite transaction, the file (with its row count and sha256) is recorded in the
   ``archives`` table and the same rows are deleted from ``patterns``.

A crash between 1 and 2 leaves the patterns active *and* an unrecorded archive file (a duplicate, never
a loss); the next run writes a new file name. :func:`load_archive` reads back every recorded file and
checks its checksum.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envs.errors import StateError
from learning.records import PatternScore

if TYPE_CHECKING:
    from learning.store import LearningStore

__all__ = ["ARCHIVE_COLUMNS", "ArchiveResult", "archive_stale_patterns", "load_archive"]

ARCHIVE_COLUMNS = (
    "signature",
    "count",
    "wins",
    "total_pnl",
    "score",
    "weight",
    "first_seen_ns",
    "last_seen_ns",
)
_COMPRESSION = "zstd"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What one memory-management pass moved: files written and patterns archived."""

    files: tuple[str, ...]
    patterns: int
    ids: tuple[int, ...]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(rows: list[tuple[object, ...]], path: Path) -> str:
    """Write rows as a zstd Parquet file via temp file + fsync + rename; returns its sha256."""
    import pyarrow as pa  # heavy; only archiving needs it
    import pyarrow.parquet as pq

    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "signature": pa.array(columns[0], pa.string()),
            "count": pa.array(columns[1], pa.int64()),
            "wins": pa.array(columns[2], pa.int64()),
            "total_pnl": pa.array(columns[3], pa.float64()),
            "score": pa.array(columns[4], pa.float64()),
            "weight": pa.array(columns[5], pa.float64()),
            "first_seen_ns": pa.array(columns[6], pa.int64()),
            "last_seen_ns": pa.array(columns[7], pa.int64()),
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression=_COMPRESSION)
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    digest = _sha256(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return digest


def _next_free(archive_dir: Path, start: int) -> tuple[int, Path]:
    n = start
    # An unrecorded file from an interrupted pass keeps its name; never overwrite an archive.
    while (archive_dir / f"patterns-{n:06d}.parquet").exists():
        n += 1
    return n, archive_dir / f"patterns-{n:06d}.parquet"


def archive_stale_patterns(
    store: LearningStore, archive_dir: Path, *, cutoff_ns: int, now_ns: int, chunk: int
) -> ArchiveResult:
    """Move patterns last seen before ``cutoff_ns`` to Parquet files under ``archive_dir``.

    The caller flushes pending pattern updates first, so the store holds the latest statistics.
    """
    conn = store.conn
    files: list[str] = []
    archived: list[int] = []
    next_n = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM archives").fetchone()[0]) + 1
    while True:
        rows = conn.execute(
            "SELECT p.id, s.signature, p.count, p.wins, p.total_pnl, p.score, p.weight, p.first_seen_ns, "
            "p.last_seen_ns, p.sig FROM patterns p JOIN pattern_signatures s ON s.sig = p.sig "
            "WHERE p.last_seen_ns < ? ORDER BY p.id LIMIT ?",
            (cutoff_ns, chunk),
        ).fetchall()
        if not rows:
            break
        archive_dir.mkdir(parents=True, exist_ok=True)
        next_n, path = _next_free(archive_dir, next_n)
        digest = _write_durably([r[1:-1] for r in rows], path)
        ids = [(r[0],) for r in rows]
        sigs = [(r[-1],) for r in rows]
        with store.transaction() as tx:
            tx.execute(
                "INSERT INTO archives (id, file, rows, created_ns, cutoff_ns, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (next_n, path.name, len(rows), now_ns, cutoff_ns, digest),
            )
            tx.executemany("DELETE FROM patterns WHERE id = ?", ids)
            tx.executemany("DELETE FROM pattern_signatures WHERE sig = ?", sigs)
        files.append(path.name)
        archived.extend(r[0] for r in rows)
        next_n += 1
    return ArchiveResult(tuple(files), len(archived), tuple(archived))


def load_archive(store: LearningStore, archive_dir: Path) -> list[PatternScore]:
    """Every archived pattern, in archive order; raises ``StateError`` for a missing or altered file."""
    import pyarrow.parquet as pq

    out: list[PatternScore] = []
    for name, rows, digest in store.conn.execute("SELECT file, rows, sha256 FROM archives ORDER BY id"):
        path = archive_dir / name
        if not path.exists():
            raise StateError(
                "archive file recorded in the store is missing",
                where=str(path),
                fix="restore the archive/ directory from a backup",
            )
        if _sha256(path) != digest:
            raise StateError(
                "archive file does not match its recorded checksum",
                where=str(path),
                fix="restore the file from a backup",
            )
        table = pq.read_table(path, columns=list(ARCHIVE_COLUMNS))
        if table.num_rows != rows:
            raise StateError(f"archive holds {table.num_rows} rows, {rows} recorded", where=str(path))
        data = table.to_pydict()
        out.extend(PatternScore(*values) for values in zip(*(data[c] for c in ARCHIVE_COLUMNS), strict=True))
    return out
