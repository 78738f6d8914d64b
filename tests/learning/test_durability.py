"""A writer killed with SIGKILL mid-writes leaves the last committed state, intact and consistent.

Durability contract under test (see ``learning.manager``): a kill loses at most the trades buffered
since the last write; the store holds a prefix of the event sequence; pattern statistics are rebuilt
from the journal on open, so they agree with it exactly.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learning.config import LearningConfig
from learning.manager import UniversalLearningManager

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
