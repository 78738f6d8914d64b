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

Step 1 waits on the disk (two fsyncs) while step 2 needs only the rows chosen at the start, so the
selection (:func:`stale_patterns`) and the two steps (:func:`start_archive`, then
:func:`finish_archive`) are separate: the manager's periodic memory pass selects the stale rows at once
(they leave the learned state then) and gathers them until a file's worth (``archive_chunk``) is
waiting, or the archive is read or the manager closes; the files are then written (by a background
thread for a full batch) and the SQLite step runs later, in the main thread, once they are durable.
Meanwhile the selected rows stay in the store, unchanged. A file holds the rows of one or more passes
in the order they were selected (by id within a pass), so reading the archive back gives the same
sequence however the passes were grouped into files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envs.errors import StateError
from learning.records import PatternScore

if TYPE_CHECKING:
    from learning.store import LearningStore

__all__ = [
    "ARCHIVE_COLUMNS",
    "ArchiveJob",
    "ArchiveResult",
    "archive_stale_patterns",
    "finish_archive",
    "load_archive",
    "stale_patterns",
    "start_archive",
]

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


_SELECT_STALE = "SELECT id FROM patterns WHERE last_seen_ns < ? AND last_seen_ns >= ? ORDER BY id"
_SELECT_ROW = (
    "SELECT p.id, s.signature, p.count, p.wins, p.total_pnl, p.score, p.weight, p.first_seen_ns, "
    "p.last_seen_ns, p.sig FROM patterns p JOIN pattern_signatures s ON s.sig = p.sig WHERE p.id = ?"
)
_MIN_NS = -(1 << 63)

Row = tuple[object, ...]
Submit = Callable[[Callable[[list[Row], Path], str], list[Row], Path], "Future[str]"]
"""Runs ``_write_durably(rows, path)`` somewhere (e.g. ``ThreadPoolExecutor.submit``)."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    number: int
    path: Path
    rows: list[Row]  # id, signature ... last_seen_ns, sig
    digest: Future[str]


@dataclass(frozen=True, slots=True)
class ArchiveJob:
    """Stale patterns chosen for the archive, their files being written (see :func:`start_archive`).

    Attributes:
        result: what the pass archives (files, patterns, ids), known from the selection.
    """

    result: ArchiveResult
    now_ns: int
    cutoff_ns: int
    chunks: tuple[_Chunk, ...]

    def done(self) -> bool:
        """Whether every file has been written (or failed)."""
        return all(c.digest.done() for c in self.chunks)


def _write_now(write: Callable[[list[Row], Path], str], rows: list[Row], path: Path) -> Future[str]:
    done: Future[str] = Future()
    try:
        done.set_result(write(rows, path))
    except BaseException as exc:
        done.set_exception(exc)
    return done


def stale_patterns(
    store: LearningStore,
    *,
    cutoff_ns: int,
    since_ns: int | None = None,
    exclude: Container[int] = (),
) -> list[int]:
    """Ids of the stored patterns last seen before ``cutoff_ns`` (and not before ``since_ns``, when the
    caller knows that older ones were all selected already), leaving out ``exclude``, in id order.

    The caller compacts pending pattern updates first, so the store holds the latest statistics.
    """
    since = _MIN_NS if since_ns is None else since_ns
    rows = store.conn.execute(_SELECT_STALE, (cutoff_ns, since))
    return [pid for (pid,) in rows if pid not in exclude]


def start_archive(
    store: LearningStore,
    archive_dir: Path,
    ids: Sequence[int],
    *,
    cutoff_ns: int,
    now_ns: int,
    chunk: int,
    submit: Submit | None = None,
) -> ArchiveJob:
    """Start writing the stored patterns ``ids`` (``chunk`` per file, in the given order) durably with
    ``submit`` (at once, in this thread, when ``None``).

    Nothing leaves the store until :func:`finish_archive`; the rows must not change meanwhile, and no
    other archive of the same store may be pending.
    """
    conn = store.conn
    chunks: list[_Chunk] = []
    number = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM archives").fetchone()[0]) + 1
    if ids:
        archive_dir.mkdir(parents=True, exist_ok=True)
        import pyarrow.parquet  # noqa: F401 - import in this thread, not the writer's
    for first in range(0, len(ids), chunk):
        rows: list[Row] = []
        for pid in ids[first : first + chunk]:
            row = conn.execute(_SELECT_ROW, (pid,)).fetchone()
            if row is None:
                raise StateError(
                    f"pattern {pid} chosen for the archive left the store before its file was written",
                    where=str(store.path),
                    fix="report this as a bug; the pattern's statistics are still in the journal",
                )
            rows.append(row)
        number, path = _next_free(archive_dir, number)
        body = [r[1:-1] for r in rows]
        digest = (
            _write_now(_write_durably, body, path) if submit is None else submit(_write_durably, body, path)
        )
        chunks.append(_Chunk(number, path, rows, digest))
        number += 1
    result = ArchiveResult(tuple(c.path.name for c in chunks), len(ids), tuple(ids))
    return ArchiveJob(result, now_ns, cutoff_ns, tuple(chunks))


def finish_archive(store: LearningStore, job: ArchiveJob) -> ArchiveResult:
    """Wait for the job's files to be durable, then record each one and delete its rows from the store
    (one transaction per file). A file that could not be written raises its error here, before any of
    its rows leave the store."""
    for c in job.chunks:
        digest = c.digest.result()
        with store.transaction() as tx:
            tx.execute(
                "INSERT INTO archives (id, file, rows, created_ns, cutoff_ns, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (c.number, c.path.name, len(c.rows), job.now_ns, job.cutoff_ns, digest),
            )
            tx.executemany("DELETE FROM patterns WHERE id = ?", [(r[0],) for r in c.rows])
            tx.executemany("DELETE FROM pattern_signatures WHERE sig = ?", [(r[-1],) for r in c.rows])
    return job.result


def archive_stale_patterns(
    store: LearningStore, archive_dir: Path, *, cutoff_ns: int, now_ns: int, chunk: int
) -> ArchiveResult:
    """Move patterns last seen before ``cutoff_ns`` to Parquet files under ``archive_dir`` (select, write,
    then record and delete: :func:`stale_patterns`, :func:`start_archive` and :func:`finish_archive`).

    The caller flushes pending pattern updates first, so the store holds the latest statistics.
    """
    ids = stale_patterns(store, cutoff_ns=cutoff_ns)
    job = start_archive(store, archive_dir, ids, cutoff_ns=cutoff_ns, now_ns=now_ns, chunk=chunk)
    return finish_archive(store, job)


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
