"""A writer killed with SIGKILL mid-writes leaves the last committed state, intact and consistent.

Durability contract under test (see ``learning.manager``): a kill loses at most the trades buffered
since the last write, and the periodic work (evolution, adaptation ...) of the last
``persist_interval_minutes`` of market time; the store holds a prefix of the event sequence; pattern
statistics are rebuilt from the journal on open, so they agree with it exactly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envs.clock import MINUTE_NS
from envs.errors import StateError
from envs.events import ErrorEvent, ErrorKind, OrderResult, OrderStatus, Side, TradeResult
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
from learning.records import PatternScore

from .conftest import (
    CALM,
    MACD_NEG,
    MACD_POS,
    RSI_OVERSOLD,
    RSI_STRONG,
    START_NS,
    WILD,
    ManagerFactory,
    dump_store,
    make_trade,
)

MIN_EVERY = 50  # the writer reports a minimum rejection after every 50th trade (a write-through)
KILL_AFTER = 600  # trades committed before each kill
KILLS = 3
WRITER = """
import sys
from pathlib import Path
from envs.events import ErrorKind, OrderResult, OrderStatus, Side
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
sys.path.insert(0, {repo!r})
from tests.learning.conftest import START_NS, make_trade

manager = UniversalLearningManager(Path({root!r}), LearningConfig(flush_every=16, compact_every=64))
k = manager.trade_count  # resume after the previous kill
while True:
    k += 1
    regime = float(k % 7)
    manager.learn_from_trade(
        make_trade(k, 1.0 if k % 3 else -2.0, exit_ns=START_NS + k, conditions={{"regime": regime}})
    )
    if k % {min_every} == 0:
        manager.learn_order_minimums("BTC/USDT", OrderResult(
            f"o{{k}}", "BTC/USDT", Side.BUY, START_NS + k, 0.001 * k, 100.0, OrderStatus.REJECTED,
            kind=ErrorKind.MIN_NOTIONAL, message="Filter failure: NOTIONAL"))
    if manager.pending_trades == 0:
        print(k, flush=True)
"""


@pytest.mark.timeout(80)
def test_sigkill_mid_writes_leaves_the_last_committed_state_consistent(tmp_path: Path) -> None:
    root = tmp_path / "run"
    repo = str(Path(__file__).resolve().parents[2])
    script = WRITER.format(repo=repo, root=str(root), min_every=MIN_EVERY)
    committed = 0
    for round_ in range(1, KILLS + 1):
        # Each round resumes from the last kill, and kills at a different point of the write cycle.
        target = round_ * KILL_AFTER + 37 * round_
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        assert proc.stdout is not None
        while committed < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert committed >= target, "the writer did not get far enough"
        _assert_consistent(root, committed)


def _assert_consistent(root: Path, committed: int) -> None:
    path = root / "learning" / "state.sqlite"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    with UniversalLearningManager(root, LearningConfig(flush_every=16, compact_every=64)) as manager:
        manager.compact()
        conn = manager._store.conn
        rows, last_seq = conn.execute("SELECT COUNT(*), MAX(seq) FROM journal").fetchone()
        assert rows >= committed  # nothing committed was lost
        assert rows == last_seq  # and the journal is a gap-free prefix
        counts = conn.execute("SELECT SUM(count) FROM patterns").fetchone()[0]
        assert counts == rows  # pattern statistics agree exactly with the journal
        rejections = manager.minimums()["BTC/USDT"].rejections
        assert rejections == rows // MIN_EVERY  # write-throughs and trades committed in event order
        assert manager.pattern_count() == 7


# A trade closes every market minute and on_bar() evolves and adapts every minute; that work is written
# behind, at most every PERSIST_MINUTES of market time (trades alone would be written every 64).
PERSIST_MINUTES = 10
PERIODIC_CONFIG = (
    "LearningConfig(flush_every=64, compact_every=64, evolution_interval_minutes=1, "
    "analysis_interval_minutes=10**6, memory_interval_minutes=10**6, adaptation_interval_minutes=1, "
    f"persist_interval_minutes={PERSIST_MINUTES})"
)
PERIODIC_WRITER = """
import sys
from pathlib import Path
from envs.clock import MINUTE_NS
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
sys.path.insert(0, {repo!r})
from tests.learning.conftest import START_NS, make_trade

manager = UniversalLearningManager(Path({root!r}), {config})
k = manager.trade_count  # resume after the previous kill
while True:
    k += 1
    now = START_NS + k * MINUTE_NS
    manager.learn_from_trade(make_trade(k, 1.0 if k % 3 else -2.0, exit_ns=now))
    manager.on_bar(now, {{"regime": float(k % 2)}})
    print(k, flush=True)  # on_bar(now) has returned: what it had to write is committed
"""


@pytest.mark.timeout(80)
def test_sigkill_loses_at_most_the_persist_interval_of_periodic_work(tmp_path: Path) -> None:
    root = tmp_path / "run"
    repo = str(Path(__file__).resolve().parents[2])
    script = PERIODIC_WRITER.format(repo=repo, root=str(root), config=PERIODIC_CONFIG)
    seen = 0
    for round_ in range(1, KILLS + 1):
        target = round_ * KILL_AFTER // 2 + 7 * round_
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        assert proc.stdout is not None
        while seen < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert seen >= target, "the writer did not get far enough"
        _assert_periodic_prefix(root, seen)


def _assert_periodic_prefix(root: Path, seen: int) -> None:
    path = root / "learning" / "state.sqlite"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    clock_ns = int(raw.execute("SELECT value FROM meta WHERE key = 'clock_ns'").fetchone()[0])
    rows, last_exit = raw.execute("SELECT COUNT(*), MAX(exit_time_ns) FROM journal").fetchone()
    steps = [s for (s,) in raw.execute("SELECT step FROM evolution_history ORDER BY step")]
    raw.close()
    # The periodic work of every bar up to PERSIST_MINUTES before the last one seen is committed ...
    assert clock_ns >= START_NS + (seen - PERSIST_MINUTES) * MINUTE_NS
    # ... together with the trades before it (a prefix: trades are committed in the same transactions).
    assert last_exit <= clock_ns
    assert rows >= seen - PERSIST_MINUTES - 1
    assert steps == list(range(1, len(steps) + 1))
    config = eval(PERIODIC_CONFIG)  # the writer's config (a literal of this module)
    with UniversalLearningManager(root, config) as manager:
        history = manager.evolution_history()
        assert history, "evolution ran and was committed"
        assert history[-1].weights == manager.strategy_weights()  # table and history of one commit
        assert history[-1].time_ns <= clock_ns


def test_periodic_work_is_written_behind_and_at_once_when_called_directly(tmp_path: Path) -> None:
    config = LearningConfig(
        evolution_interval_minutes=1,
        analysis_interval_minutes=1,
        memory_interval_minutes=10**6,
        persist_interval_minutes=60,
    )
    root = tmp_path / "run"

    def committed() -> tuple[int, float, int]:
        """Evolution steps, the pattern's weight and reinforced trades, as a new reader sees them."""
        with UniversalLearningManager(root, read_only=True) as reader:
            pattern = reader.pattern(signature)
            reinforced = reader._store.conn.execute("SELECT SUM(reinforced) FROM journal").fetchone()[0]
            return len(reader.evolution_history()), pattern.weight if pattern else 0.0, reinforced or 0

    with UniversalLearningManager(root, config) as manager:
        for n in range(6):
            signature = manager.learn_from_trade(make_trade(n, 1.0, exit_ns=START_NS))
        manager.flush()
        # The store's first write was long before in market time: this bar's work is written at once.
        assert manager.on_bar(START_NS + MINUTE_NS)  # evolves and reinforces the six winners' pattern
        assert committed() == (1, 1.2, 6)
        manager.learn_from_trade(make_trade(6, 2.0, exit_ns=START_NS + 2 * MINUTE_NS))
        assert manager.on_bar(START_NS + 30 * MINUTE_NS)  # evolves and reinforces again ...
        current = manager.pattern(signature)
        assert current is not None
        assert (len(manager.evolution_history()), current.weight) == (2, 1.2 * 1.2)
        assert committed() == (1, 1.2, 6)  # ... written behind
        manager.on_bar(START_NS + 60 * MINUTE_NS)
        assert committed() == (1, 1.2, 6)
        manager.on_bar(START_NS + 61 * MINUTE_NS)  # a persist interval after the last write
        assert committed() == (2, 1.2 * 1.2, 7)
        manager.learn_from_trade(make_trade(7, 3.0, exit_ns=START_NS + 62 * MINUTE_NS))
        assert manager.evolve_trading_strategy(START_NS + 62 * MINUTE_NS) is not None
        assert committed()[0] == 3  # called directly: written at once
        assert manager.reinforce_successful_behaviors(START_NS + 62 * MINUTE_NS) == [signature]
        assert committed() == (3, 1.2 * 1.2 * 1.2, 8)


def test_patterns_compacted_in_memory_read_as_after_their_write(manager_factory: ManagerFactory) -> None:
    """Reinforcement from periodic() compacts pattern statistics in memory and writes them later; reads
    in between give exactly what the store holds once they are written (the same floating-point steps)."""
    config = LearningConfig(
        evolution_interval_minutes=1, analysis_interval_minutes=1, persist_interval_minutes=10**6
    )
    manager = manager_factory("run", config)
    conditions = (CALM, WILD, {"regime": 3.0, "volatility_ratio": 1.0})
    for k in range(60):
        now = START_NS + k * MINUTE_NS
        pnl = (1.0 + k % 7) if k % 3 else -1.5
        manager.learn_from_trade(make_trade(k, pnl, exit_ns=now, conditions=conditions[k % 3]))
        manager.on_bar(now)
    assert manager._patterns.unwritten
    before = (manager.patterns(), manager.top_patterns(), manager.most_traded_patterns(5))
    assert any(p.weight > 1.0 for p in before[0])
    manager.compact()
    assert not manager._patterns.unwritten
    assert (manager.patterns(), manager.top_patterns(), manager.most_traded_patterns(5)) == before
    root = manager.root
    manager.close()
    with UniversalLearningManager(root, read_only=True) as reader:
        assert reader.patterns() == before[0]


def _varied_trade(n: int) -> TradeResult:
    """Trade ``n`` of a stream spread over a few hundred patterns (so compactions add pages)."""
    return make_trade(
        n,
        1.0 if n % 3 else -1.0,
        exit_ns=START_NS + n * MINUTE_NS,
        signals={"rsi_14": float(n % 100), "macd_hist": n % 7 - 3.0},
        conditions={"regime": float(n % 4), "volatility_ratio": n % 5 * 0.5},
    )


def _journal_and_patterns(root: Path) -> tuple[int, int, int, list[PatternScore]]:
    """Journal rows, distinct trade ids, summed pattern counts and the patterns, as committed."""
    with UniversalLearningManager(root, read_only=True) as reader:
        conn = reader._store.conn
        rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM journal").fetchone()
        counted = conn.execute("SELECT COALESCE(SUM(count), 0) FROM patterns").fetchone()[0]
        return rows, distinct, counted, reader.patterns()


def _learn_until_a_write_fails(manager: UniversalLearningManager) -> tuple[int, StateError]:
    """Trades learned (the last one's write failed: it is learned all the same) and the error."""
    for n in range(10_000):
        try:
            manager.learn_from_trade(_varied_trade(n))
        except StateError as exc:
            return n + 1, exc
    raise AssertionError("no write failed")


@pytest.mark.parametrize("headroom", [2, 5, 9, 14, 25])
def test_a_full_disk_loses_no_trade_and_the_retry_writes_each_once(tmp_path: Path, headroom: int) -> None:
    """A write that fails part-way (here: the database may grow ``headroom`` pages more) is rolled back
    and raised as a ``StateError``; what it was writing stays pending and is written once, in the same
    batches, when a write succeeds again."""
    config = LearningConfig(flush_every=1000, compact_every=40)
    root = tmp_path / "full"
    manager = UniversalLearningManager(root, config)
    conn = manager._store.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + headroom}")
    learned, error = _learn_until_a_write_fails(manager)
    assert "database or disk is full" in str(error)
    assert error.where == str(manager.store_path)
    with contextlib.suppress(StateError):
        manager.flush()  # retried while the disk is still full: changes nothing, loses nothing
    conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
    manager.close()
    with UniversalLearningManager(tmp_path / "reference", config) as reference:
        for n in range(learned):
            reference.learn_from_trade(_varied_trade(n))
    rows, distinct, counted, patterns = _journal_and_patterns(root)
    assert (rows, distinct, counted) == (learned, learned, learned)
    assert patterns == _journal_and_patterns(tmp_path / "reference")[3]


def _story(manager: UniversalLearningManager) -> None:
    """Trades, errors, minimums, vetoes and their outcomes, with the periodic work of every 5th bar."""
    for k in range(300):
        now = START_NS + k * MINUTE_NS
        won = k % 3 == 0
        signals = {**RSI_STRONG, **MACD_POS} if won else {**RSI_OVERSOLD, **MACD_NEG}
        manager.learn_from_trade(
            make_trade(k, (k % 7) + 0.5 if won else -1.0, exit_ns=now, signals=signals, conditions=WILD)
        )
        if k % 5 == 0:
            manager.on_bar(now, WILD)
        for rule in manager.rules(active_only=True):
            manager.record_veto(rule.rule_id, now, "BTC/USDT")
            if k % 2:
                manager.record_veto_outcome(rule.rule_id, k % 4 == 1, now)


def _runner_bar(manager: UniversalLearningManager, *, fails: bool) -> None:
    """A bar of the live runner: its learning and its checkpoint in one transaction."""
    now = START_NS + 300 * MINUTE_NS
    rejected = OrderResult(
        "o1", "BTC/USDT", Side.BUY, now, 0.001, 100.0, OrderStatus.REJECTED, kind=ErrorKind.MIN_NOTIONAL
    )
    with manager._store.transaction():
        manager.learn_from_error(ErrorEvent(now, "BTC/USDT", ErrorKind.RATE_LIMIT, "429 Too many requests"))
        manager.learn_order_minimums("BTC/USDT", rejected)
        manager.compact()
        if fails:
            raise RuntimeError("the runner's checkpoint failed")


def test_a_rolled_back_transaction_keeps_what_every_engine_had_pending(
    manager_factory: ManagerFactory, tmp_path: Path
) -> None:
    """The live runner commits its checkpoint in the manager's transaction: when that transaction rolls
    back after the manager's writes ran, the next write still writes all of them, once."""
    config = LearningConfig(evolution_interval_minutes=5, analysis_interval_minutes=5, flush_every=64)
    for name, fails in (("kept", True), ("reference", False)):
        manager = manager_factory(name, config)
        _story(manager)
        assert manager.rules()
        if fails:
            with pytest.raises(RuntimeError, match="checkpoint"):
                _runner_bar(manager, fails=True)
        else:
            _runner_bar(manager, fails=False)
        manager.close()
    assert dump_store(tmp_path / "kept") == dump_store(tmp_path / "reference")
    with UniversalLearningManager(tmp_path / "kept", read_only=True) as reader:
        conn = reader._store.conn
        assert conn.execute("SELECT COUNT(*) FROM vetoes WHERE outcome IS NOT NULL").fetchone()[0] > 0
        assert conn.execute("SELECT SUM(reinforced) FROM journal").fetchone()[0] > 0
        assert reader.evolution_history()
        assert reader.minimums()["BTC/USDT"].rejections == 1
        assert reader.trade_count == 300
