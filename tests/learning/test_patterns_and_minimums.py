"""Trade patterns are reinforced by wins and weakened by losses; order minimums are learned x1.2."""

from __future__ import annotations

import pytest

from envs.clock import MINUTE_NS, MarketClock
from envs.events import ErrorKind, OrderResult, OrderStatus, Side
from envs.market import MarketSpec
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager

from .conftest import RSI_OVERSOLD, START_NS, ManagerFactory, make_trade


def test_trade_signature_combines_all_four_snapshot_groups(manager: UniversalLearningManager) -> None:
    signature = manager.learn_from_trade(
        make_trade(1, 1.0, signals={"rsi_14": 25.0}, conditions={"regime": 3}, alignment={"align_1h": -1.0})
    )
    assert signature == "align_1h=against|regime=r3|rel_volume=normal|rsi_14=oversold"


def test_wins_reinforce_and_losses_weaken_a_bounded_score(manager: UniversalLearningManager) -> None:
    sig = manager.learn_from_trade(make_trade(0, 2.0))
    after_win = manager.pattern(sig)
    assert after_win is not None
    assert after_win.score == pytest.approx(0.1)  # 0 + 0.1 * (1 - 0)
    for n in range(1, 200):
        manager.learn_from_trade(make_trade(n, -1.0, exit_ns=START_NS + n))
    after_losses = manager.pattern(sig)
    assert after_losses is not None
    assert -1.0 <= after_losses.score < 0.0
    assert after_losses.score == pytest.approx(-1.0, abs=1e-6)
    assert (after_losses.count, after_losses.wins) == (200, 1)
    assert after_losses.total_pnl == pytest.approx(2.0 - 199.0)
    assert after_losses.last_seen_ns == START_NS + 199
    assert after_losses.weight == 1.0


def test_compacted_and_uncompacted_statistics_agree(
    manager_factory: ManagerFactory, clock: MarketClock
) -> None:
    trades = [make_trade(n, (-1.0) ** n * n, exit_ns=START_NS + n * MINUTE_NS) for n in range(30)]
    lazy = manager_factory("lazy", clock=clock)
    eager = manager_factory("eager", LearningConfig(compact_every=1, flush_every=1), clock=clock)
    for trade in trades:
        lazy.learn_from_trade(trade)
        eager.learn_from_trade(trade)
    key = "|".join(lazy.trade_factors(trades[0]))
    pending = lazy.pattern(key)  # statistics read through the uncompacted deltas
    lazy.compact()
    a, b = lazy.pattern(key), eager.pattern(key)
    assert pending is not None
    assert a is not None
    assert b is not None
    assert (a.count, a.wins, a.first_seen_ns, a.last_seen_ns) == (
        b.count,
        b.wins,
        b.first_seen_ns,
        b.last_seen_ns,
    )
    assert a.score == pytest.approx(b.score, abs=1e-12)
    assert pending.score == pytest.approx(b.score, abs=1e-12)
    assert pending.count == b.count
    assert a.total_pnl == pytest.approx(b.total_pnl)


def test_patterns_and_journal_persist_across_reopen(
    manager_factory: ManagerFactory, clock: MarketClock
) -> None:
    first = manager_factory("p", clock=clock)
    sig = first.learn_from_trade(make_trade(1, 3.0, signals=RSI_OVERSOLD))
    first.close()
    second = manager_factory("p", clock=clock)
    stored = second.pattern(sig)
    assert stored is not None
    assert stored.count == 1
    assert stored.total_pnl == 3.0
    assert second.track_learning_effectiveness().trades == 1


def test_non_finite_pnl_is_refused(manager: UniversalLearningManager) -> None:
    with pytest.raises(ValueError, match="pnl must be finite"):
        manager.learn_from_trade(make_trade(1, float("nan")))


def _rejection(
    qty: float, price: float, kind: ErrorKind = ErrorKind.MIN_NOTIONAL, t: int = START_NS
) -> OrderResult:
    return OrderResult(
        order_id=f"o{qty}",
        symbol="BTC/USDT",
        side=Side.BUY,
        time_ns=t,
        requested_qty=qty,
        price=price,
        status=OrderStatus.REJECTED,
        kind=kind,
        message="Filter failure: NOTIONAL",
        code="-1013",
    )


def test_minimum_rejection_learns_attempt_times_1_2(manager: UniversalLearningManager) -> None:
    learned = manager.learn_order_minimums("BTC/USDT", _rejection(0.0004, 20_000.0))
    assert learned is not None
    assert learned.min_notional == pytest.approx(0.0004 * 20_000.0 * 1.2)  # 9.6 quote
    assert learned.quote_value == pytest.approx(9.6)
    assert learned.rejections == 1
    assert learned.updated_ns == START_NS
    state = manager.snapshot()
    # Sizing steps over the limit: 9.6 / 16_000 base at a lower price.
    assert state.min_order_qty("BTC/USDT", 16_000.0) == pytest.approx(9.6 / 16_000.0)
    assert state.min_order_qty("ETH/USDT", 1.0) == 0.0


def test_learned_minimum_keeps_the_larger_and_counts_rejections(manager: UniversalLearningManager) -> None:
    manager.learn_order_minimums("BTC/USDT", _rejection(0.0004, 20_000.0))
    smaller = manager.learn_order_minimums("BTC/USDT", _rejection(0.0001, 20_000.0))
    assert smaller is not None
    assert smaller.min_notional == pytest.approx(9.6)
    assert smaller.rejections == 2
    lot = manager.learn_order_minimums("BTC/USDT", _rejection(0.5, 20_000.0, ErrorKind.LOT_SIZE))
    assert lot is not None
    assert lot.min_qty == pytest.approx(0.6)
    assert lot.rejections == 3
    assert manager.snapshot().min_order_qty("BTC/USDT", 20_000.0) == pytest.approx(0.6)


def test_fills_and_other_errors_teach_no_minimum(manager: UniversalLearningManager) -> None:
    filled = OrderResult("f", "BTC/USDT", Side.BUY, START_NS, 1.0, 10.0, OrderStatus.FILLED, filled_qty=1.0)
    assert manager.learn_order_minimums("BTC/USDT", filled) is None
    assert manager.learn_order_minimums("BTC/USDT", _rejection(1.0, 10.0, ErrorKind.RATE_LIMIT)) is None
    assert manager.minimums() == {}
    assert manager.version == 0


def test_minimums_are_seeded_from_specs_and_persist(
    manager_factory: ManagerFactory, clock: MarketClock
) -> None:
    spec = MarketSpec("BTC/USDT", min_qty=0.0001, min_notional=5.0)
    first = manager_factory("m", clock=clock, market_specs=[spec])
    assert first.minimums()["BTC/USDT"].source == "spec"
    first.learn_order_minimums("BTC/USDT", _rejection(0.0004, 20_000.0))
    first.close()
    second = manager_factory("m", clock=clock, market_specs={"BTC/USDT": spec})
    kept = second.minimums()["BTC/USDT"]
    assert kept.min_notional == pytest.approx(9.6)  # seeding never lowers a learned minimum
    assert kept.min_qty == 0.0001
    assert kept.source == "learned"
