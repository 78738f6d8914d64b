"""Long-term memory: patterns unseen for the archive age move to compressed Parquet files.

A pattern whose ``last_seen`` is more than ``archive_age`` (seed: 30 market days) before now is
archived as its aggregate statistics (one row per pattern: counts, wins, PnL, score, weight, first and
last seen; the per-trade detail stays in the journal). Archiving *moves, never deletes*:

1. :func:`queue_stale_patterns` moves the stale rows, in one SQLite transaction (the caller's), from
   ``patterns`` into the ``archive_queue`` table: they leave the learned state, a pattern seen again
   starts afresh, and nothing is lost if the process dies;
2. :func:`start_archive` writes queued rows to ``archive/patterns-<n>.parquet.tmp`` (zstd), fsync'd,
   atomically renamed to ``patterns-<n>.parquet``, with the directory fsync'd;
3. only then :func:`finish_archive`, in one SQLite transaction per file, records the file (with its
   row count and sha256) in the ``archives`` table and deletes its rows from the queue.

A crash between 2 and 3 leaves the rows queued *and* an unrecorded archive file (a duplicate, never a
loss); the next write picks a new file name. A file that cannot be written (the directory is a file,
the disk is full, no permission) is a :class:`StateError` naming the archive directory; its rows stay
queued for the next attempt. :func:`load_archive` reads back every recorded file,
checking its checksum, then the rows still queued.

Step 2 waits on the disk (two fsyncs) while step 3 needs only the rows chosen at its start, so the
manager's periodic memory pass queues its stale rows at once and has a background thread write a file
only when a file's worth (``archive_chunk`` rows) is queued, recording it at the next pass; whatever is
queued is also written when the archive is read and at close. A file holds the rows of one or more
passes in the order they were queued (by id within a pass), so reading the archive back gives the
same sequence however the passes were grouped into files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import Future, wait
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
    "finish_archive",
    "load_archive",
    "queue_stale_patterns",
    "queued_patterns",
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
    """What one memory-management pass moved: files written, patterns archived and their ids."""

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


def _archive_failed(archive_dir: Path, exc: OSError) -> StateError:
    return StateError(
        f"cannot write the pattern archive ({exc})",
        where=str(archive_dir),
        fix="make it a writable directory (move aside a file of that name) on a disk with free space, then "
        "close the learning manager or open it again; the archived patterns wait in the store's archive "
        "queue until their file is written",
    )


def _next_free(archive_dir: Path, start: int) -> tuple[int, Path]:
    n = start
    # An unrecorded file from an interrupted pass keeps its name; never overwrite an archive.
    while (archive_dir / f"patterns-{n:06d}.parquet").exists():
        n += 1
    return n, archive_dir / f"patterns-{n:06d}.parquet"


_SELECT_STALE = (
    "SELECT p.id, s.signature, p.count, p.wins, p.total_pnl, p.score, p.weight, p.first_seen_ns, "
    "p.last_seen_ns, p.sig FROM patterns p JOIN pattern_signatures s ON s.sig = p.sig "
    "WHERE p.last_seen_ns < ? ORDER BY p.id"
)
_QUEUE = (
    "INSERT INTO archive_queue (id, signature, count, wins, total_pnl, score, weight, first_seen_ns, "
    "last_seen_ns, cutoff_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# n, the archive columns, cutoff_ns
_SELECT_QUEUED = (
    "SELECT n, signature, count, wins, total_pnl, score, weight, first_seen_ns, last_seen_ns, cutoff_ns "
    "FROM archive_queue ORDER BY n LIMIT ?"
)

Row = tuple[object, ...]
Submit = Callable[[Callable[[list[Row], Path], str], list[Row], Path], "Future[str]"]
"""Runs ``_write_durably(rows, path)`` somewhere (e.g. ``ThreadPoolExecutor.submit``)."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    number: int
    path: Path
    first: int  # queue positions (n) of its first and last row
    last: int
    rows: int
    cutoff_ns: int  # the latest cutoff its rows were queued under
    digest: Future[str]


@dataclass(frozen=True, slots=True)
class ArchiveJob:
    """Queued patterns being written to archive files (see :func:`start_archive`).

    Attributes:
        result: the files and how many patterns they hold.
    """

    result: ArchiveResult
    now_ns: int
    chunks: tuple[_Chunk, ...]

    def done(self) -> bool:
        """Whether every file has been written (or failed)."""
        return all(c.digest.done() for c in self.chunks)

    def wait(self) -> None:
        """Wait until every file has been written (or failed)."""
        wait([c.digest for c in self.chunks])


def _write_now(write: Callable[[list[Row], Path], str], rows: list[Row], path: Path) -> Future[str]:
    done: Future[str] = Future()
    try:
        done.set_result(write(rows, path))
    except BaseException as exc:
        done.set_exception(exc)
    return done


def queue_stale_patterns(store: LearningStore, *, cutoff_ns: int) -> list[int]:
    """Move the stored patterns last seen before ``cutoff_ns`` into the archive queue (inside the
    caller's transaction); returns their ids, in id order (the order they are queued in).

    The caller compacts pending pattern updates first, so the store holds the latest statistics.
    """
    conn = store.conn
    rows = conn.execute(_SELECT_STALE, (cutoff_ns,)).fetchall()
    if rows:
        with store.transaction() as tx:
            tx.executemany(_QUEUE, [(*r[:-1], cutoff_ns) for r in rows])
            tx.executemany("DELETE FROM patterns WHERE id = ?", [(r[0],) for r in rows])
            tx.executemany("DELETE FROM pattern_signatures WHERE sig = ?", [(r[-1],) for r in rows])
    return [r[0] for r in rows]


def queued_patterns(store: LearningStore) -> int:
    """How many archived patterns wait in the queue for their file."""
    # Rows are appended and leave from the front (finish_archive), so their positions are contiguous:
    # two index lookups instead of counting the table (each aggregate alone in its own SELECT, which
    # SQLite answers from the index; together in one they would scan the table).
    row = store.conn.execute(
        "SELECT (SELECT MAX(n) FROM archive_queue) - (SELECT MIN(n) FROM archive_queue) + 1"
    ).fetchone()
    return int(row[0] or 0)


def start_archive(
    store: LearningStore,
    archive_dir: Path,
    *,
    now_ns: int,
    chunk: int,
    full_only: bool = False,
    submit: Submit | None = None,
) -> ArchiveJob:
    """Start writing the queued patterns (``chunk`` per file, in queue order) durably with ``submit``
    (at once, in this thread, when ``None``); with ``full_only``, only as many full files as there are.

    Nothing leaves the queue until :func:`finish_archive`; no other archive of the same store may be
    pending. An archive directory that cannot be written raises ``StateError`` (here, or from
    :func:`finish_archive` for a file that failed).
    """
    conn = store.conn
    queued = queued_patterns(store)
    count = queued - queued % chunk if full_only else queued
    chunks: list[_Chunk] = []
    if count:
        try:
            archive_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _archive_failed(archive_dir, exc) from exc
        import pyarrow.parquet  # noqa: F401 - import in this thread, not the writer's
    number = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM archives").fetchone()[0]) + 1
    rows = conn.execute(_SELECT_QUEUED, (count,)).fetchall() if count else []
    for first in range(0, len(rows), chunk):
        part = rows[first : first + chunk]
        try:
            number, path = _next_free(archive_dir, number)
        except OSError as exc:
            wait([c.digest for c in chunks])  # no writer left behind
            raise _archive_failed(archive_dir, exc) from exc
        body = [r[1:-1] for r in part]
        digest = (
            _write_now(_write_durably, body, path) if submit is None else submit(_write_durably, body, path)
        )
        cutoff = max(int(r[-1]) for r in part)  # type: ignore[call-overload]
        chunks.append(_Chunk(number, path, int(part[0][0]), int(part[-1][0]), len(part), cutoff, digest))  # type: ignore[call-overload]
        number += 1
    result = ArchiveResult(tuple(c.path.name for c in chunks), len(rows), ())
    return ArchiveJob(result, now_ns, tuple(chunks))


def finish_archive(store: LearningStore, job: ArchiveJob) -> ArchiveResult:
    """Wait for the job's files to be durable, then record each one and delete its rows from the queue
    (one transaction per file). A file that could not be written raises ``StateError`` here, before any
    of its rows leave the queue (the files before it are recorded)."""
    for c in job.chunks:
        try:
            digest = c.digest.result()
        except OSError as exc:
            job.wait()  # no writer left behind
            raise _archive_failed(c.path.parent, exc) from exc
        with store.transaction() as tx:
            tx.execute(
                "INSERT INTO archives (id, file, rows, created_ns, cutoff_ns, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (c.number, c.path.name, c.rows, job.now_ns, c.cutoff_ns, digest),
            )
            tx.execute("DELETE FROM archive_queue WHERE n BETWEEN ? AND ?", (c.first, c.last))
    return job.result


def load_archive(store: LearningStore, archive_dir: Path) -> list[PatternScore]:
    """Every archived pattern, in archive order: the recorded files (raises ``StateError`` for a missing
    or altered one), then the patterns still queued for a file."""
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
    queued = store.conn.execute(f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archive_queue ORDER BY n")
    out.extend(PatternScore(*row) for row in queued)
    return out
