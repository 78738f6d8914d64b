"""The trading core: sizing, the no-trade band, the order hook seam, order ids and bar processing."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from envs.broker import FaultConfig
from envs.core import OrderProposal, TradingCore
from envs.errors import ConfigError, StateError
from envs.events import ErrorKind, OrderStatus, Side
from envs.market import MarketSpec
from envs.portfolio import EXIT_REVERSE, EXIT_RUIN, PortfolioConfig, Transition

SPEC = MarketSpec(
    "BTC/USDT", taker_fee=0.001, spread_bps=2.0, slippage_bps=1.0, qty_step=1e-6, min_notional=5.0
)
T0 = 1_700_000_000_000_000_000
BAR = 60_000_000_000


def _core(**kw: object) -> TradingCore:
    portfolio = PortfolioConfig(initial_cash=10_000.0, **kw.pop("portfolio", {}))  # type: ignore[arg-type]
    return TradingCore.simulated(SPEC, portfolio=portfolio, **kw)  # type: ignore[arg-type]


def _step(core: TradingCore, target: float, i: int, open_: float, close: float | None = None):  # type: ignore[no-untyped-def]
    close = open_ if close is None else close
    return core.step(
        target,
        T0 + i * BAR,
        open_,
        max(open_, close),
        min(open_, close),
        close,
        100.0,
        decision_time_ns=T0 + (i - 1) * BAR,
    )


def test_full_long_target_is_affordable_and_fills_at_the_open_with_costs() -> None:
    core = _core()
    res = _step(core, 1.0, 1, 100.0, 101.0)
    (order,) = res.orders
    assert order.status is OrderStatus.FILLED
    assert order.price == pytest.approx(100.02)  # 1 bps half spread + 1 bps slippage
    assert order.time_ns == T0 + BAR
    book = core.portfolio
    assert book.cash >= 0.0
    # nearly all equity is in the position: only the order's own costs are held back
    assert book.qty * 100.02 / (book.cash + book.qty * 100.02) == pytest.approx(1.0, abs=1e-3)
    assert res.bar.equity == pytest.approx(book.cash + book.qty * 101.0)
    assert res.bar.close == 101.0


def test_targets_inside_the_band_are_flat_and_small_changes_are_skipped() -> None:
    core = _core(rebalance_band=0.05)
    assert _step(core, 0.04, 1, 100.0).orders == ()
    assert len(_step(core, 0.5, 2, 100.0).orders) == 1
    assert _step(core, 0.53, 3, 100.0).orders == ()  # change of 3% of equity < 5% band
    assert len(_step(core, 0.6, 4, 100.0).orders) == 1
    (close,) = _step(core, 0.0, 5, 100.0).orders  # closing is never skipped
    assert close.side is Side.SELL
    assert core.portfolio.qty == 0.0


def test_reversal_is_one_order_and_closes_the_trade_as_reverse() -> None:
    core = _core()
    _step(core, 1.0, 1, 100.0)
    res = _step(core, -1.0, 2, 100.0)
    (order,) = res.orders
    assert order.side is Side.SELL
    (trade,) = res.trades
    assert trade.exit_reason == EXIT_REVERSE
    assert core.portfolio.qty < 0.0
    assert core.portfolio.exposure == pytest.approx(-1.0, abs=2e-3)


def test_short_target_is_clipped_to_flat_without_short_permission() -> None:
    core = _core(portfolio={"allow_short": False})
    _step(core, 1.0, 1, 100.0)
    res = _step(core, -1.0, 2, 100.0)
    assert core.portfolio.qty >= 0.0
    assert all(o.status is OrderStatus.REJECTED for o in res.orders)


def test_order_ids_are_deterministic_and_unique_per_decision() -> None:
    a, b = _core(), _core()
    ids_a = [o.order_id for i, t in enumerate([1.0, -1.0, 0.0], 1) for o in _step(a, t, i, 100.0).orders]
    ids_b = [o.order_id for i, t in enumerate([1.0, -1.0, 0.0], 1) for o in _step(b, t, i, 100.0).orders]
    assert ids_a == ids_b
    assert len(set(ids_a)) == 3
    assert ids_a[0] == f"slf-BTCUSDT-{T0 // 1_000_000}-0"
    assert all(len(i) <= 36 for i in ids_a)  # Binance's client order id limit


def test_sequence_state_round_trip_continues_bar_count_and_order_ids() -> None:
    """A core restored from a checkpoint re-deciding the bar in progress issues the ids the original
    would have issued (so the exchange deduplicates a resend)."""
    a = _core()
    _step(a, 1.0, 1, 100.0)  # decision T0: id ...-0
    saved = a.sequence_state()
    b = _core()
    for i in range(1, 4):  # another history: other bar count, other decision times
        _step(b, 1.0 if i % 2 else 0.0, i + 5, 100.0)
    b.restore_sequence(saved)
    assert b.bar_index == a.bar_index == 1
    close_a = a.close_position("risk", time_ns=T0 + BAR, price=100.0, decision_time_ns=T0)
    close_b = b.close_position("risk", time_ns=T0 + BAR, price=100.0, decision_time_ns=T0)
    assert close_a.orders[0].order_id == close_b.orders[0].order_id == f"slf-BTCUSDT-{T0 // 1_000_000}-1"
    before = b.sequence_state()
    with pytest.raises(StateError, match=r"checkpoint core: 'seq' is missing.*Fix: the saved state"):
        b.restore_sequence({"bar_index": 1})
    with pytest.raises(StateError, match=r"bar_index=-1 is not an integer in 0\.\.4611686018427387904"):
        b.restore_sequence({"bar_index": -1, "seq": 0, "last_decision_ns": 0})
    assert b.sequence_state() == before  # nothing restored from a refused state
    fresh = _core().sequence_state()  # no decision yet: last_decision_ns -1
    b.restore_sequence(fresh)
    assert b.sequence_state() == fresh


def test_order_hook_can_resize_veto_and_sees_the_proposal() -> None:
    seen: list[OrderProposal] = []

    def double_minimum(p: OrderProposal) -> OrderProposal | None:
        seen.append(p)
        if p.transition is Transition.OPEN and p.notional < 2_000.0:
            return None  # learned minimum: do not open tiny trades
        return p._replace(qty=p.qty / 2)

    core = _core(order_hook=double_minimum)
    res = _step(core, 0.1, 1, 100.0)
    assert res.orders == ()
    assert len(res.vetoed) == 1
    assert res.vetoed[0].target_exposure == 0.1
    res = _step(core, 0.5, 2, 100.0)
    (order,) = res.orders
    assert order.requested_qty == pytest.approx(seen[-1].qty / 2)
    assert seen[-1].position_qty == 0.0
    assert seen[-1].equity == pytest.approx(10_000.0)
    assert seen[-1].decision_time_ns == T0 + BAR


def test_order_hook_may_not_reverse_an_order() -> None:
    def flip(p: OrderProposal) -> OrderProposal:
        return p._replace(side=Side.SELL)

    with pytest.raises(ConfigError, match="resize or veto"):
        _step(_core(order_hook=flip), 1.0, 1, 100.0)


def test_order_hook_returning_nan_is_a_bug_not_a_veto() -> None:
    def broken(p: OrderProposal) -> OrderProposal:
        return p._replace(qty=math.nan)

    with pytest.raises(ConfigError, match="finite quantity"):
        _step(_core(order_hook=broken), 1.0, 1, 100.0)


def test_refusals_become_error_events_with_context() -> None:
    core = _core(faults=FaultConfig(timeout=1.0), seed=0)
    res = _step(core, 1.0, 1, 100.0)
    (order,) = res.orders
    (error,) = res.errors
    assert order.status is OrderStatus.ERRORED
    assert error.kind is ErrorKind.TIMEOUT
    assert error.order_id == order.order_id
    assert error.context["position_qty"] == 0.0
    assert error.context["equity"] == pytest.approx(10_000.0)
    # the target persists: the next bar tries again
    assert len(_step(core, 1.0, 2, 100.0).orders) == 1


def test_close_position_is_reduce_only_and_tags_the_trade() -> None:
    core = _core(faults=FaultConfig(rate_limit=1.0), seed=0, portfolio={"leverage": 3.0})
    core.portfolio.apply_fill(
        _step(_core(), 1.0, 1, 100.0).orders[0]._replace(filled_qty=50.0, status=OrderStatus.FILLED),
        bar_index=0,
    )
    ex = core.close_position(EXIT_RUIN, time_ns=T0, price=90.0, decision_time_ns=T0)
    (trade,) = ex.trades
    assert trade.exit_reason == EXIT_RUIN
    assert core.portfolio.qty == 0.0


def test_bar_index_counts_marked_bars_and_time_in_trade() -> None:
    core = _core()
    _step(core, 1.0, 1, 100.0)
    _step(core, 1.0, 2, 100.0)
    assert core.bar_index == 2
    assert core.bars_in_trade() == 2
    res = _step(core, 0.0, 3, 100.0)
    assert res.trades[0].duration_bars == 2
    core.reset()
    assert (core.bar_index, core.portfolio.qty, core.portfolio.cash) == (0, 0.0, 10_000.0)


@example(  # a leveraged long nearly wiped out: reserving the fee must not flip it short
    targets=[0.0, 0.0, 0.0, 0.84375, 1.0, 1.0],
    prices=[10.0, 10.0, 10.0, 445.0, 10.0, 327.0] + [10.0] * 7,
    leverage=4.375,
    fee=0.0078125,
    spread=0.0,
    impact=0.0,
)
@settings(max_examples=150, deadline=None)
@given(
    targets=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=12),
    prices=st.lists(st.floats(10.0, 1_000.0), min_size=13, max_size=13),
    leverage=st.floats(0.5, 5.0),
    fee=st.floats(0.0, 0.01),
    spread=st.floats(0.0, 50.0),
    impact=st.floats(0.0, 200.0),
)
def test_sized_orders_are_never_refused_for_balance_and_fees_are_never_negative(
    targets: list[float], prices: list[float], leverage: float, fee: float, spread: float, impact: float
) -> None:
    spec = MarketSpec("X/Y", taker_fee=fee, spread_bps=spread, slippage_model="volume", impact_bps=impact)
    core = TradingCore.simulated(spec, portfolio=PortfolioConfig(leverage=leverage), rebalance_band=0.0)
    for i, target in enumerate(targets, 1):
        res = core.step(
            target, i, prices[i - 1], prices[i], prices[i], prices[i], 50.0, decision_time_ns=i - 1
        )
        for order in res.orders:
            assert order.kind is not ErrorKind.INSUFFICIENT_BALANCE, (target, order)
            assert order.fee >= 0.0
            assert order.slippage >= 0.0
        book = core.portfolio
        assert res.bar.equity == pytest.approx(book.cash + book.qty * prices[i])


def _reference_target_qty(core: TradingCore, target: float, price: float, volume: float) -> float:
    """TradingCore.target_qty written with MarketSpec.fill_price and _solve_target (no inlining)."""
    book = core.portfolio
    spec = core.spec
    q = book.qty
    if price <= 0.0 or book.cash + q * price <= 0.0:
        return q
    f = target * book.config.leverage
    delta = f * (book.cash + q * price) / price - q
    if delta == 0.0:
        return q
    s, side = (1.0, Side.BUY) if delta > 0.0 else (-1.0, Side.SELL)
    q1 = core._solve_target(f, s, spec.fill_price(side, price, 0.0, volume))
    if spec.impact_bps > 0.0:
        other = core._solve_target(f, s, spec.fill_price(side, price, abs(delta), volume))
        q1 = other if (other - q) * s < (q1 - q) * s else q1
    if q1 * f < 0.0:
        q1 = 0.0
    return q1 if (q1 - q) * s > 0.0 else q


@settings(max_examples=150, deadline=None)
@given(
    targets=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=8),
    prices=st.lists(st.floats(1.0, 1_000.0), min_size=9, max_size=9),
    volume=st.one_of(st.floats(0.0, 500.0), st.just(math.nan)),
    leverage=st.floats(0.5, 3.0),
    spread=st.floats(0.0, 50.0),
    slippage=st.floats(0.0, 10.0),
    impact=st.floats(0.0, 200.0),
    model=st.sampled_from(["fixed", "volume"]),
    tick=st.sampled_from([0.0, 0.01, 0.5]),
)
def test_target_qty_matches_the_fill_price_reference_exactly(
    targets: list[float],
    prices: list[float],
    volume: float,
    leverage: float,
    spread: float,
    slippage: float,
    impact: float,
    model: str,
    tick: float,
) -> None:
    # target_qty inlines MarketSpec.fill_price twice: it must agree with the plain composition to the bit,
    # from every position the targets lead to.
    spec = MarketSpec(
        "X/Y",
        spread_bps=spread,
        slippage_bps=slippage,
        slippage_model=model,
        impact_bps=impact,
        price_tick=tick,
    )
    core = TradingCore.simulated(spec, portfolio=PortfolioConfig(leverage=leverage), rebalance_band=0.0)
    core.portfolio.mark(prices[0])
    for i, target in enumerate(targets, 1):
        for probe in (target, -target, 1.0, -0.3):
            assert core.target_qty(probe, prices[i], volume) == _reference_target_qty(
                core, probe, prices[i], volume
            )
        core.step(target, i, prices[i], prices[i], prices[i], prices[i], volume, decision_time_ns=i - 1)
