"""Benchmark: ``learn_from_trade`` amortized time with 1,000,000 stored patterns.

Populates a learning store with one million distinct patterns (bulk ``executemany`` in one
transaction, in id order), then feeds 200,000 closed trades drawn uniformly from 1.1 million factor
combinations (so about 9% create new patterns, and nearly every trade touches a different stored
pattern: the worst case for locality). The figure is the amortized time per call with everything the
calls cause included: journal flushes, compactions of pattern statistics into the store, the final
compaction and the close (WAL checkpoint). Target: <= 50 us per call.

Usage: ``python benchmarks/bench_learning.py [--patterns N] [--trades N]``
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from envs.clock import MINUTE_NS
from envs.events import PositionSide, TradeResult
from learning import LearningConfig, UniversalLearningManager
from learning.discretize import FACTOR_SEPARATOR, Discretizer
from learning.patterns import pattern_id
from learning.store import STORE_DIRNAME, STORE_FILENAME, LearningStore

TARGET_US = 50.0
DEFAULT_PATTERNS = 1_000_000
DEFAULT_TRADES = 200_000
SEED = 7
START_NS = 1_700_000_000 * 1_000_000_000

# feature -> (group, representative values, one per bin of the default discretizer)
FEATURES: dict[str, tuple[str, tuple[float, ...]]] = {
    "rsi_14": ("entry", (20.0, 40.0, 60.0, 80.0)),
    "macd_hist": ("entry", (-1.0, 0.0, 1.0)),
    "breakout_20": ("entry", (-1.0, 0.0, 1.0)),
    "bb_pctb": ("entry", (-0.1, 0.1, 0.5, 0.9, 1.1)),
    "momentum_z": ("entry", (-2.0, -0.5, 0.0, 0.5, 2.0)),
    "regime": ("conditions", (0.0, 1.0, 2.0, 3.0)),
    "volatility_ratio": ("conditions", (0.3, 1.0, 2.0)),
    "align_1h": ("alignment", (-1.0, 0.0, 1.0)),
    "align_4h": ("alignment", (-1.0, 0.0, 1.0)),
    "rel_volume": ("volume", (0.3, 1.0, 2.0, 4.0)),
    "vwap_dist": ("volume", (-0.01, 0.0, 0.01)),
}
NAMES = list(FEATURES)
RADICES = [len(FEATURES[n][1]) for n in NAMES]
COMBOS = int(np.prod(RADICES))


def combo_values(index: int) -> dict[str, float]:
    """The feature values of combination ``index`` (mixed-radix digits pick a bin per feature)."""
    out: dict[str, float] = {}
    for name, radix in zip(NAMES, RADICES, strict=True):
        index, digit = divmod(index, radix)
        out[name] = FEATURES[name][1][digit]
    return out


def signatures(count: int) -> list[str]:
    """Signatures of the first ``count`` combinations, built from the discretizer's labels directly."""
    disc = Discretizer()
    labels = [[disc.factor(n, v) for v in FEATURES[n][1]] for n in NAMES]
    order = sorted(range(len(NAMES)), key=lambda i: labels[i][0])
    out: list[str] = []
    for digits in itertools.islice(itertools.product(*(range(r) for r in reversed(RADICES))), count):
        d = digits[::-1]  # product varies the last position fastest; reverse to match combo_values
        out.append(FACTOR_SEPARATOR.join(labels[i][d[i]] for i in order))
    return out


def populate(root: Path, count: int) -> float:
    """Bulk-insert ``count`` patterns; returns seconds taken."""
    start = time.perf_counter()
    store = LearningStore(root / STORE_DIRNAME / STORE_FILENAME)
    # Inserting in id order appends to the table b-trees instead of splitting random pages.
    ids = sorted((pattern_id(sig), sig) for sig in signatures(count))
    first, last = START_NS - 10 * MINUTE_NS, START_NS - MINUTE_NS
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO pattern_signatures (sig, signature) VALUES (?, ?)",
            ((n, sig) for n, (_, sig) in enumerate(ids, 1)),
        )
        conn.executemany(
            "INSERT INTO patterns (id, sig, count, wins, total_pnl, score, weight, first_seen_ns, "
            "last_seen_ns) VALUES (?, ?, 3, 1, 0.5, 0.1, 1.0, ?, ?)",
            ((pid, n, first, last) for n, (pid, _) in enumerate(ids, 1)),
        )
    store.close()
    return time.perf_counter() - start


def make_trades(n: int, max_combo: int) -> list[TradeResult]:
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, max_combo, size=n)
    pnls = rng.normal(0.0, 1.0, size=n)
    trades = []
    for i, (combo, pnl) in enumerate(zip(picks, pnls, strict=True)):
        values = combo_values(int(combo))
        groups: dict[str, dict[str, float]] = {"entry": {}, "conditions": {}, "alignment": {}, "volume": {}}
        for name, value in values.items():
            groups[FEATURES[name][0]][name] = value
        t = START_NS + i * MINUTE_NS
        trades.append(
            TradeResult(
                trade_id=f"b{i}",
                symbol="BTC/USDT",
                side=PositionSide.LONG,
                entry_time_ns=t,
                exit_time_ns=t + MINUTE_NS,
                entry_price=100.0,
                exit_price=100.0 + float(pnl),
                quantity=1.0,
                fees=0.1,
                pnl=float(pnl),
                return_pct=float(pnl) / 100.0,
                duration_bars=1,
                exit_reason="signal",
                entry_signals=groups["entry"],
                market_conditions=groups["conditions"],
                timeframe_alignment=groups["alignment"],
                volume_profile=groups["volume"],
            )
        )
    return trades


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=DEFAULT_PATTERNS)
    parser.add_argument("--trades", type=int, default=DEFAULT_TRADES)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds = populate(root, args.patterns)
        print(f"populated {args.patterns:,} patterns in {seconds:.1f} s")
        # Draw from slightly more combinations than stored, so some trades create new patterns.
        trades = make_trades(args.trades, min(COMBOS, int(args.patterns * 1.1) + 1))
        manager = UniversalLearningManager(root, LearningConfig())
        start = time.perf_counter()
        for trade in trades:
            manager.learn_from_trade(trade)
        loop = time.perf_counter() - start
        # Everything the calls left pending is part of their cost: compact, then close (checkpoint).
        manager.compact()
        patterns = manager.pattern_count()
        manager.close()
        elapsed = time.perf_counter() - start
        per_call_us = elapsed / len(trades) * 1e6
        verdict = "OK" if per_call_us <= TARGET_US else "SLOWER THAN TARGET"
        print(
            f"calls alone: {loop / len(trades) * 1e6:.1f} us/call; compaction and close: "
            f"{(elapsed - loop) / len(trades) * 1e6:.1f} us/call"
        )
        print(
            f"learn_from_trade: {per_call_us:.1f} us/call amortized over {len(trades):,} trades "
            f"({patterns:,} patterns stored) - target <= {TARGET_US:.0f} us: {verdict}"
        )
    return 0 if per_call_us <= TARGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
