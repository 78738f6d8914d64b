"""Memory management: patterns unseen for 30 market days move to a durable archive, then leave memory."""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envs.clock import DAY_NS, MarketClock
from envs.errors import StateError
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
from learning.memory import finish_archive, queue_stale_patterns, start_archive

from .conftest import CALM, START_NS, WILD, ManagerFactory, make_trade

MONTH = 30 * DAY_NS


def _two_patterns(manager: UniversalLearningManager) -> tuple[str, str]:
    old = manager.learn_from_trade(make_trade(1, 2.0, exit_ns=START_NS, conditions=CALM))
    recent = manager.learn_from_trade(make_trade(2, -1.0, exit_ns=START_NS + DAY_NS, conditions=WILD))
    return old, recent


@pytest.mark.parametrize(("age", "archived"), [(MONTH, False), (MONTH + 1, True)])
def test_patterns_unseen_for_more_than_30_market_days_are_archived(
    manager: UniversalLearningManager, age: int, archived: bool
) -> None:
    old, recent = _two_patterns(manager)
    result = manager.manage_learning_memory(START_NS + age)
    assert result.patterns == int(archived)
    assert (manager.pattern(old) is None) is archived
    assert manager.pattern(recent) is not None
    assert manager.pattern_count() == 2 - int(archived)


def test_archive_is_compressed_parquet_that_reads_back(
    manager: UniversalLearningManager, tmp_path: Path
) -> None:
    old, _ = _two_patterns(manager)
    stats = manager.pattern(old)
    result = manager.manage_learning_memory(START_NS + MONTH + 1)
    (name,) = result.files
    archive_dir = manager.archive_dir
    assert (archive_dir / name).exists()
    assert name.endswith(".parquet")
    assert not list(archive_dir.glob("*.tmp"))
    (restored,) = manager.load_archive()
    assert restored == stats
    assert manager.track_learning_effectiveness().archived_patterns == 1


def test_archived_patterns_stay_readable_after_reopening(
    manager_factory: ManagerFactory, clock: MarketClock
) -> None:
    first = manager_factory("a", clock=clock)
    old, _ = _two_patterns(first)
    first.manage_learning_memory(START_NS + MONTH + 1)
    first.close()
    again = manager_factory("a", clock=clock)
    assert [p.signature for p in again.load_archive()] == [old]
    assert again.pattern(old) is None


def test_queued_patterns_leave_the_queue_only_after_their_file_is_recorded(
    manager: UniversalLearningManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, recent = _two_patterns(manager)
    manager.compact()
    store = manager._store
    with store.transaction():
        assert queue_stale_patterns(store, cutoff_ns=START_NS + 1) != []
    job = start_archive(store, manager.archive_dir, now_ns=START_NS, chunk=10)

    @contextlib.contextmanager
    def crash() -> Iterator[None]:
        raise OSError("disk gone")
        yield  # pragma: no cover

    # The crash is injected between the durable file and its SQLite record.
    monkeypatch.setattr(store, "transaction", crash)
    with pytest.raises(OSError, match="disk gone"):
        finish_archive(store, job)
    monkeypatch.undo()
    assert _queued_rows(manager) == 1  # still queued: a duplicate file at worst, never a loss
    assert _archived_rows(manager) == 0
    assert len(list(manager.archive_dir.glob("*.parquet"))) == 1
    result = manager.manage_learning_memory(START_NS + 2)  # the retry picks a new file name
    assert (result.patterns, len(result.files)) == (0, 1)
    assert len(list(manager.archive_dir.glob("*.parquet"))) == 2
    assert [p.signature for p in manager.load_archive()] == [old]
    assert manager.pattern(recent) is not None


def test_altered_archive_file_is_a_state_error(manager: UniversalLearningManager) -> None:
    _two_patterns(manager)
    (name,) = manager.manage_learning_memory(START_NS + MONTH + 1).files
    path = manager.archive_dir / name
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(StateError, match="checksum"):
        manager.load_archive()
    path.unlink()
    with pytest.raises(StateError, match="missing"):
        manager.load_archive()


def _archived_rows(manager: UniversalLearningManager) -> int:
    conn = manager._store.conn
    return int(conn.execute("SELECT COALESCE(SUM(rows), 0) FROM archives").fetchone()[0])


def _stored_rows(manager: UniversalLearningManager) -> int:
    return int(manager._store.conn.execute("SELECT COUNT(*) FROM patterns").fetchone()[0])


def _queued_rows(manager: UniversalLearningManager) -> int:
    return int(manager._store.conn.execute("SELECT COUNT(*) FROM archive_queue").fetchone()[0])


def test_the_periodic_pass_leaves_the_queue_when_its_file_is_durable(
    manager_factory: ManagerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import learning.memory as memory

    manager = manager_factory(config=LearningConfig(archive_chunk=1))  # every pass fills a file
    old, recent = _two_patterns(manager)
    stats = manager.pattern(old)
    release = threading.Event()
    write = memory._write_durably

    def slow_disk(rows: list[tuple[object, ...]], path: Path) -> str:
        release.wait(10.0)
        return write(rows, path)

    monkeypatch.setattr(memory, "_write_durably", slow_disk)
    assert manager.periodic(START_NS + MONTH + 1)  # the memory pass is due: its file is written behind
    # Out of the active patterns at once, in the queue (and unrecorded) until the file is durable.
    assert manager.pattern(old) is None
    assert [p.signature for p in manager.patterns()] == [recent]
    assert manager.pattern_count() == 1
    assert (_stored_rows(manager), _queued_rows(manager), _archived_rows(manager)) == (1, 1, 0)
    assert manager.track_learning_effectiveness().archived_patterns == 1  # counted without waiting
    # Compacting trades, even of the archived pattern (it starts afresh), does not wait for the file.
    manager.learn_from_trade(make_trade(3, -1.0, exit_ns=START_NS + MONTH + 1, conditions=WILD))
    manager.learn_from_trade(make_trade(4, 1.0, exit_ns=START_NS + MONTH + 1, conditions=CALM))
    manager.compact()
    assert _archived_rows(manager) == 0
    again = manager.pattern(old)
    assert again is not None
    assert (again.count, again.wins) == (1, 1)
    release.set()
    (restored,) = manager.load_archive()  # waits for the file, then records it and empties the queue
    assert restored == stats
    assert (_queued_rows(manager), _archived_rows(manager)) == (0, 1)


def test_periodic_passes_gather_their_patterns_until_a_file_is_full(manager_factory: ManagerFactory) -> None:
    manager = manager_factory(config=LearningConfig(archive_chunk=3))
    names = [
        manager.learn_from_trade(make_trade(n, 1.0, exit_ns=START_NS + n * DAY_NS, conditions=c))
        for n, c in enumerate((CALM, WILD, {"regime": 3.0, "volatility_ratio": 1.0}))
    ]
    active = []
    for n in range(3):  # one pattern becomes stale per daily pass
        manager.periodic(START_NS + (n + 31) * DAY_NS)
        active.append([p.signature for p in manager.patterns()])
        assert manager.pattern(names[n]) is None
        assert (_stored_rows(manager), _queued_rows(manager)) == (2 - n, n + 1)
    assert active == [names[1:], names[2:], []]
    assert _archived_rows(manager) == 0  # the third pass started the file of the full batch ...
    assert manager.track_learning_effectiveness().archived_patterns == 3
    manager.periodic(START_NS + 40 * DAY_NS)  # ... and the next pass records it
    assert (_queued_rows(manager), _archived_rows(manager)) == (0, 3)
    assert len(list(manager.archive_dir.glob("*.parquet"))) == 1
    assert [p.signature for p in manager.load_archive()] == names  # in the order they were archived


def test_queued_patterns_are_written_at_close_and_survive_a_crash(manager_factory: ManagerFactory) -> None:
    crashed = manager_factory("crashed")
    old, recent = _two_patterns(crashed)
    crashed.periodic(START_NS + MONTH + 1)
    # Killed now (never closed): the pattern is archived, in the queue, not lost.
    with UniversalLearningManager(crashed.root, read_only=True) as reader:
        assert reader.pattern(old) is None
        assert [p.signature for p in reader.load_archive()] == [old]
    assert not list(crashed.archive_dir.glob("*.parquet"))
    closed = manager_factory("closed")
    _two_patterns(closed)
    closed.periodic(START_NS + MONTH + 1)
    closed.close()  # writes what is queued
    with UniversalLearningManager(closed.root, read_only=True) as reader:
        assert [p.signature for p in reader.load_archive()] == [old]
        assert reader.pattern(recent) is not None
        assert _queued_rows(reader) == 0
        assert len(list(closed.archive_dir.glob("*.parquet"))) == 1


def test_a_pattern_seen_again_while_its_archive_is_written_starts_afresh(
    manager: UniversalLearningManager,
) -> None:
    old, _ = _two_patterns(manager)
    manager.periodic(START_NS + MONTH + 1)
    assert manager.pattern(old) is None
    again = manager.learn_from_trade(make_trade(3, 1.0, exit_ns=START_NS + MONTH + 2, conditions=CALM))
    assert again == old
    manager.compact()  # the archived row waits in the queue: the new trade starts a new one
    current = manager.pattern(old)
    assert current is not None
    assert (current.count, current.wins) == (1, 1)
    assert [p.signature for p in manager.load_archive()] == [old]


def test_periodic_and_direct_memory_passes_archive_the_same(manager_factory: ManagerFactory) -> None:
    results = []
    for name, periodic in (("direct", False), ("periodic", True)):
        manager = manager_factory(name)
        for n in range(6):
            manager.learn_from_trade(
                make_trade(n, 1.0 - n % 2, exit_ns=START_NS + n * DAY_NS, conditions=CALM)
            )
        manager.learn_from_trade(make_trade(9, -1.0, exit_ns=START_NS + 40 * DAY_NS, conditions=WILD))
        if periodic:
            manager.periodic(START_NS + 40 * DAY_NS)
        else:
            manager.manage_learning_memory(START_NS + 40 * DAY_NS)
        results.append((manager.patterns(), manager.load_archive()))
        manager.close()
    assert results[0] == results[1]
    assert results[0][1]  # something was archived


def _archive_blocked(manager: UniversalLearningManager) -> None:
    """Make the archive directory unusable: a file stands where it should be."""
    manager.archive_dir.write_text("not a directory")


def test_an_archive_that_cannot_be_written_at_close_loses_no_learned_state(
    manager_factory: ManagerFactory,
) -> None:
    manager = manager_factory()
    old = manager.learn_from_trade(make_trade(0, 2.0, exit_ns=START_NS, conditions=CALM))
    manager.on_bar(START_NS + 40 * DAY_NS)  # queues the stale pattern (no file yet: far from a full one)
    for n in range(1, 11):
        manager.learn_from_trade(make_trade(n, -1.0, exit_ns=START_NS + 40 * DAY_NS + n, conditions=WILD))
    _archive_blocked(manager)
    with pytest.raises(StateError, match="cannot write the pattern archive") as info:
        manager.close()
    assert info.value.where == str(manager.archive_dir)
    assert info.value.fix is not None
    assert "archive queue" in info.value.fix
    with pytest.raises(StateError, match="closed"):
        manager.flush()  # the store is closed all the same
    with UniversalLearningManager(manager.root, read_only=True) as reader:
        assert reader.trade_count == 11  # the learned state was written before the archive was tried
        (recent,) = reader.patterns()
        assert recent.count == 10
        assert [p.signature for p in reader.load_archive()] == [old]  # still queued
        assert _queued_rows(reader) == 1
    manager.archive_dir.unlink()
    UniversalLearningManager(manager.root).close()  # a later close writes the queue
    with UniversalLearningManager(manager.root, read_only=True) as reader:
        assert (_queued_rows(reader), _archived_rows(reader)) == (0, 1)
        assert [p.signature for p in reader.load_archive()] == [old]


def test_a_periodic_pass_that_cannot_start_its_archive_file_is_a_state_error(
    manager_factory: ManagerFactory,
) -> None:
    manager = manager_factory(config=LearningConfig(archive_chunk=1))  # every pass fills a file
    old, recent = _two_patterns(manager)
    _archive_blocked(manager)
    with pytest.raises(StateError, match="cannot write the pattern archive") as info:
        manager.on_bar(START_NS + MONTH + 1)
    assert info.value.where == str(manager.archive_dir)
    assert isinstance(info.value.__cause__, FileExistsError)
    assert manager.pattern(old) is None  # archived: the move was committed before the file was tried
    assert _queued_rows(manager) == 1
    manager.learn_from_trade(make_trade(3, 1.0, exit_ns=START_NS + MONTH + 2, conditions=WILD))
    manager.archive_dir.unlink()
    manager.close()
    with UniversalLearningManager(manager.root, read_only=True) as reader:
        assert [p.signature for p in reader.load_archive()] == [old]
        assert _queued_rows(reader) == 0
        assert reader.pattern(recent) is not None
        assert reader.trade_count == 3


def test_an_archive_file_that_fails_in_the_background_leaves_its_patterns_queued(
    manager_factory: ManagerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import learning.memory as memory

    manager = manager_factory(config=LearningConfig(archive_chunk=1))
    old, _ = _two_patterns(manager)
    stats = manager.pattern(old)

    def full_disk(rows: list[tuple[object, ...]], path: Path) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(memory, "_write_durably", full_disk)
    manager.on_bar(START_NS + MONTH + 1)  # the file is written behind: its failure shows when recorded
    manager.learn_from_trade(make_trade(3, 1.0, exit_ns=START_NS + MONTH + 2, conditions=WILD))
    with pytest.raises(StateError, match="No space left on device") as info:
        manager.close()
    assert info.value.where == str(manager.archive_dir)
    monkeypatch.undo()
    with UniversalLearningManager(manager.root) as again:
        assert again.trade_count == 3
        assert _queued_rows(again) == 1
        assert again.load_archive() == [stats]  # written now, once
        assert (_queued_rows(again), _archived_rows(again)) == (0, 1)


@pytest.mark.parametrize("chunk", [200, 1])
def test_a_rolled_back_memory_pass_leaves_its_patterns_active(
    manager_factory: ManagerFactory, chunk: int
) -> None:
    manager = manager_factory(config=LearningConfig(archive_chunk=chunk))  # 1: a file is started at once
    old, recent = _two_patterns(manager)
    stats = manager.pattern(old)

    def runner_bar() -> None:
        with manager._store.transaction():
            manager.periodic(START_NS + MONTH + 1)  # queues the stale pattern ...
            raise RuntimeError("the runner's checkpoint failed")  # ... in a transaction that rolls back

    with pytest.raises(RuntimeError, match="checkpoint"):
        runner_bar()
    assert manager.pattern(old) == stats
    assert manager.pattern_count() == 2
    assert [p.signature for p in manager.patterns()] == sorted([old, recent])
    assert manager.manage_learning_memory(START_NS + MONTH + 1).ids != ()  # archived once, later
    assert manager.pattern_count() == 1
    assert manager.load_archive() == [stats]
    assert _archived_rows(manager) == 1
