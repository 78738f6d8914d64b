"""Sliding window counts equal counting the window from scratch; the exact normalization and percentile."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.journal import TradeJournal, WindowStats
from learning.store import MIGRATIONS
from learning.strategy import normalize_weights, percentile

from .conftest import START_NS, make_trade

FACTORS = ({"rsi_14": 25.0}, {"rsi_14": 60.0}, {"rsi_14": 80.0}, {"macd_hist": 0.5}, {"macd_hist": -0.5})
CONDITIONS = ({"regime": 1.0}, {"regime": 2.0})


def _journal(window_ns: int) -> TradeJournal:
    conn = sqlite3.connect(":memory:")
    for migrate in MIGRATIONS:
        migrate(conn)
    return TradeJournal(conn, window_ns, trend_trades=10)


def _same(view: WindowStats, expected: WindowStats) -> None:
    assert view.trades == expected.trades
    assert view.wins == expected.wins
    assert view.winner_factors == expected.winner_factors
    assert view.loser_factors == expected.loser_factors
    assert view.conditions == expected.conditions
    assert view.pnls == expected.pnls
    assert view.entries() == expected.entries()


# One operation: ("trade", exit offset, pnl, factor set, condition), ("query", time offset, window) or
# ("prune", time offset). Offsets are small so windows overlap, repeat and go back in time.
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("trade"),
            st.integers(0, 40),
            st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]),
            st.integers(0, 4),
            st.integers(0, 1),
        ),
        st.tuples(st.just("query"), st.integers(0, 50), st.sampled_from([3, 10, 25])),
        st.tuples(st.just("prune"), st.integers(0, 60)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_ops, st.booleans())
def test_sliding_window_counts_equal_counting_the_window(ops: list[tuple], monotone: bool) -> None:
    journal = _journal(25)
    clock = 0
    seq = 0
    for op in ops:
        if op[0] == "trade":
            _, offset, pnl, f, c = op
            exit_ns = START_NS + (clock + offset % 5 if monotone else offset)
            clock = max(clock, exit_ns - START_NS) if monotone else clock
            seq += 1
            trade = make_trade(seq, pnl, exit_ns=exit_ns, signals=FACTORS[f], conditions=CONDITIONS[c])
            factors = tuple(sorted({f"{k}={v}" for k, v in trade.entry_signals.items()}))
            journal.append_trade(trade, seq, "|".join(factors), factors, f"regime={c}")
        elif op[0] == "query":
            _, offset, window = op
            now = START_NS + (clock + offset % 7 if monotone else offset)
            if monotone:
                clock = now - START_NS
            _same(journal.stats(now, window), WindowStats.of(journal.window(now, window)))
        else:
            journal.prune(START_NS + (clock if monotone else op[1]))


def test_an_out_of_order_trade_falls_back_to_counting_and_recovers_after_pruning() -> None:
    journal = _journal(10)
    for n, exit_offset in enumerate((5, 3, 8)):
        trade = make_trade(n, 1.0, exit_ns=START_NS + exit_offset)
        journal.append_trade(trade, n, "rsi_14=strong", ("rsi_14=strong",), "any")
    view = journal.stats(START_NS + 8, 4)
    assert view.trades == 2
    assert view.entries() == journal.window(START_NS + 8, 4)
    journal.prune(START_NS + 17)  # drops the trades at 5 and 3: the rest is in order again
    assert journal.stats(START_NS + 17, 10).trades == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.05, 50.0), min_size=1, max_size=60),
    st.sampled_from([(0.2, 5.0), (0.5, 2.0), (0.01, 100.0)]),
)
def test_normalization_solves_the_clipped_mean_exactly(
    values: list[float], bounds: tuple[float, float]
) -> None:
    lo, hi = bounds
    weights = {f"f{i}": v for i, v in enumerate(values)}
    out = normalize_weights(weights, lo, hi)
    assert list(out) == list(weights)
    result = np.array(list(out.values()))
    assert np.all((result >= lo) & (result <= hi))
    assert result.mean() == pytest.approx(1.0, abs=1e-12)
    # The same scale as a long bisection on the clipped mean, to float tolerance.
    w = np.array(values)
    a, b = 0.0, hi / w.min()
    for _ in range(200):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if np.clip(mid * w, lo, hi).mean() < 1.0 else (a, mid)
    np.testing.assert_allclose(result, np.clip(0.5 * (a + b) * w, lo, hi), rtol=1e-9)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_normalization_refuses_weights_that_are_not_finite_and_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="finite and positive"):
        normalize_weights({"a": 1.0, "b": bad}, 0.2, 5.0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6) | st.sampled_from([0.0, 1.0, -1.0]), min_size=1, max_size=50),
    st.sampled_from([90.0, 50.0, 10.0, 99.9, 33.3, 0.0, 100.0]),
)
def test_percentile_of_sorted_values_equals_numpys(values: list[float], q: float) -> None:
    assert percentile(sorted(values), q) == float(np.percentile(np.array(values), q))
