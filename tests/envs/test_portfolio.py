"""Portfolio accounting: the equity identity, trade slicing, fee and borrow attribution, snapshots."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.errors import ConfigError
from envs.events import OrderResult, OrderStatus, PositionSide, Side
from envs.portfolio import (
    EXIT_REVERSE,
    EXIT_SIGNAL,
    SNAPSHOT_FIELDS,
    Portfolio,
    PortfolioConfig,
    Transition,
    classify,
)

_counter = iter(range(10**9))


def _fill(side: Side, qty: float, price: float, fee: float = 0.0, time_ns: int = 0) -> OrderResult:
    return OrderResult(
        f"o{next(_counter)}", "X/Y", side, time_ns, qty, price, OrderStatus.FILLED, filled_qty=qty, fee=fee
    )


def _book(**kw: float | bool) -> Portfolio:
    return Portfolio("X/Y", PortfolioConfig(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("q0", "q1", "expected"),
    [
        (0.0, 0.0, Transition.HOLD),
        (0.0, 2.0, Transition.OPEN),
        (0.0, -2.0, Transition.OPEN),
        (1.0, 2.0, Transition.ADD),
        (-1.0, -2.0, Transition.ADD),
        (2.0, 1.0, Transition.REDUCE),
        (-2.0, -1.0, Transition.REDUCE),
        (2.0, 0.0, Transition.CLOSE),
        (2.0, 1e-15, Transition.CLOSE),
        (2.0, -1.0, Transition.REVERSE),
        (-2.0, 3.0, Transition.REVERSE),
        (1.0, 1.0, Transition.HOLD),
    ],
)
def test_transition_table(q0: float, q1: float, expected: Transition) -> None:
    assert classify(q0, q1) is expected


def test_long_round_trip_pnl_is_net_of_both_fees() -> None:
    book = _book(initial_cash=1_000.0)
    assert book.apply_fill(_fill(Side.BUY, 2.0, 100.0, fee=0.2, time_ns=10), bar_index=0) == ()
    book.mark(105.0)
    assert book.unrealized_pnl == pytest.approx(10.0)
    (trade,) = book.apply_fill(_fill(Side.SELL, 2.0, 110.0, fee=0.22, time_ns=50), bar_index=4)
    assert trade.side is PositionSide.LONG
    assert (trade.entry_price, trade.exit_price, trade.quantity) == (100.0, 110.0, 2.0)
    assert trade.fees == pytest.approx(0.42)
    assert trade.pnl == pytest.approx(20.0 - 0.42)
    assert trade.return_pct == pytest.approx((20.0 - 0.42) / 200.0)
    assert trade.duration_bars == 4
    assert trade.duration_ns == 40
    assert trade.exit_reason == EXIT_SIGNAL
    assert book.qty == 0.0
    assert book.cash == pytest.approx(1_000.0 + 20.0 - 0.42)
    assert book.fees_paid == pytest.approx(0.42)


def test_short_pnl_pays_borrow_every_bar() -> None:
    book = _book(initial_cash=1_000.0, borrow_rate=0.001)
    book.apply_fill(_fill(Side.SELL, 1.0, 100.0, fee=0.1), bar_index=0)
    assert book.mark(100.0) == pytest.approx(0.1)  # 0.1% of 100 notional
    assert book.mark(90.0) == pytest.approx(0.09)
    assert book.unrealized_pnl == pytest.approx(10.0)
    (trade,) = book.apply_fill(_fill(Side.BUY, 1.0, 90.0, fee=0.09), bar_index=2)
    assert trade.side is PositionSide.SHORT
    assert trade.fees == pytest.approx(0.19)
    assert trade.pnl == pytest.approx(10.0 - 0.19 - 0.19)  # price - fees - borrow
    assert book.borrow_paid == pytest.approx(0.19)
    assert book.cash == pytest.approx(1_000.0 + trade.pnl)
    assert book.mark(80.0) == 0.0  # flat: no borrow


def test_partial_reduction_emits_a_slice_with_pro_rata_entry_fee() -> None:
    book = _book()
    book.apply_fill(_fill(Side.BUY, 4.0, 100.0, fee=0.4), bar_index=0)
    (first,) = book.apply_fill(_fill(Side.SELL, 1.0, 110.0, fee=0.11), bar_index=1)
    assert first.quantity == 1.0
    assert first.fees == pytest.approx(0.1 + 0.11)
    assert first.pnl == pytest.approx(10.0 - 0.21)
    assert book.qty == 3.0
    (rest,) = book.apply_fill(_fill(Side.SELL, 3.0, 120.0, fee=0.36), bar_index=2)
    assert rest.fees == pytest.approx(0.3 + 0.36)
    assert first.trade_id.split(":")[0] == rest.trade_id.split(":")[0]
    assert (first.trade_id[-2:], rest.trade_id[-2:]) == (":1", ":2")
    assert first.entry_time_ns == rest.entry_time_ns


def test_adding_updates_average_price_and_keeps_entry() -> None:
    book = _book()
    book.apply_fill(_fill(Side.BUY, 1.0, 100.0, time_ns=1), bar_index=0)
    book.apply_fill(_fill(Side.BUY, 3.0, 120.0, time_ns=2), bar_index=1)
    assert book.avg_price == pytest.approx(115.0)
    (trade,) = book.apply_fill(_fill(Side.SELL, 4.0, 115.0, time_ns=3), bar_index=2)
    assert trade.pnl == pytest.approx(0.0)
    assert trade.entry_time_ns == 1


def test_reversal_closes_the_old_trade_and_opens_the_remainder_with_split_fee() -> None:
    book = _book()
    book.apply_fill(_fill(Side.BUY, 1.0, 100.0, fee=0.1), bar_index=0)
    (trade,) = book.apply_fill(_fill(Side.SELL, 3.0, 90.0, fee=0.27), bar_index=1)
    assert trade.exit_reason == EXIT_REVERSE
    assert trade.quantity == 1.0
    assert trade.fees == pytest.approx(0.1 + 0.09)  # one third of the reversing fill's fee
    assert book.qty == pytest.approx(-2.0)
    assert book.open_trade_costs == pytest.approx(0.18)
    assert book.avg_price == 90.0


def test_snapshot_is_taken_from_the_entry_row_and_copied_per_slice() -> None:
    calls: list[int] = []

    def snapshot(row: int) -> dict[str, dict[str, float]]:
        calls.append(row)
        return {name: {f"{name}_x": float(row)} for name in SNAPSHOT_FIELDS}

    book = Portfolio("X/Y", snapshot=snapshot)
    book.apply_fill(_fill(Side.BUY, 2.0, 100.0), bar_index=0, entry_ref=41)
    book.apply_fill(_fill(Side.BUY, 2.0, 100.0), bar_index=1, entry_ref=42)  # add: entry stays row 41
    (a,) = book.apply_fill(_fill(Side.SELL, 1.0, 100.0), bar_index=2, entry_ref=43)
    (b,) = book.apply_fill(_fill(Side.SELL, 3.0, 100.0), bar_index=3, entry_ref=44)
    assert calls == [41, 41]
    assert a.entry_signals == {"entry_signals_x": 41.0}
    assert a.volume_profile == {"volume_profile_x": 41.0}
    assert a.market_conditions is not b.market_conditions
    assert pickle.loads(pickle.dumps(a)) == a


def test_leverage_cap_and_short_permission() -> None:
    spot = _book(initial_cash=1_000.0, allow_short=False)
    assert spot.can_fill(Side.BUY, 9.9, 100.0, 0.99)
    assert not spot.can_fill(Side.BUY, 10.0, 100.0, 1.0)
    assert not spot.can_fill(Side.SELL, 1.0, 100.0, 0.1)
    levered = _book(initial_cash=1_000.0, leverage=2.0)
    assert levered.can_fill(Side.BUY, 19.9, 100.0, 0.0)
    assert not levered.can_fill(Side.BUY, 20.1, 100.0, 0.0)
    assert levered.can_fill(Side.SELL, 19.9, 100.0, 0.0)
    levered.apply_fill(_fill(Side.BUY, 19.0, 100.0), bar_index=0)
    levered.mark(60.0)  # deep loss: equity 240, exposure 1140
    assert not levered.can_fill(Side.BUY, 1.0, 60.0, 0.0)
    assert levered.can_fill(Side.SELL, 19.0, 60.0, 0.0)  # reducing is always allowed


fills = st.lists(
    st.tuples(
        st.sampled_from([Side.BUY, Side.SELL]),
        st.floats(0.001, 5.0),
        st.floats(1.0, 1_000.0),
        st.floats(0.0, 0.01),
        st.floats(1.0, 1_000.0),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(fills, st.floats(0.0, 0.01))
def test_accounting_identities_hold_over_random_fills(
    sequence: list[tuple[Side, float, float, float, float]], borrow_rate: float
) -> None:
    initial = 1_000.0
    book = _book(initial_cash=initial, borrow_rate=borrow_rate)
    trades = []
    for bar, (side, qty, price, fee_rate, mark) in enumerate(sequence):
        trades += book.apply_fill(_fill(side, qty, price, fee=qty * price * fee_rate), bar_index=bar)
        book.mark(mark)
        equity = book.equity
        assert equity == pytest.approx(book.cash + book.qty * mark, rel=1e-12, abs=1e-9)
        # equity decomposes into price PnL, fees and borrow
        expected = initial + book.realized_pnl + book.unrealized_pnl - book.fees_paid - book.borrow_paid
        assert equity == pytest.approx(expected, rel=1e-9, abs=1e-6)
        # closed trades plus the open trade's net PnL account for every change of equity
        open_net = book.unrealized_pnl - book.open_trade_costs
        assert sum(t.pnl for t in trades) + open_net == pytest.approx(equity - initial, rel=1e-9, abs=1e-6)
    assert all(t.fees >= 0.0 for t in trades)
    assert book.fees_paid >= 0.0
    assert all(t.quantity > 0.0 for t in trades)


def _trade_tuple(trade: object) -> tuple[object, ...]:
    return tuple(trade)  # type: ignore[arg-type]


def test_state_round_trip_continues_exactly_like_the_original() -> None:
    import json

    snaps = {3: {"entry_signals": {"rsi": 55.0}}}
    config = PortfolioConfig(initial_cash=1_000.0, borrow_rate=1e-4)
    book = Portfolio("X/Y", config, snapshot=lambda row: {k: dict(v) for k, v in snaps[row].items()})
    book.apply_fill(_fill(Side.SELL, 2.0, 100.0, fee=0.2, time_ns=10), bar_index=1, entry_ref=3)
    book.mark(101.0)
    book.apply_fill(_fill(Side.BUY, 0.5, 99.0, fee=0.05, time_ns=20), bar_index=2)
    state = json.loads(json.dumps(book.to_state()))  # what a checkpoint file holds
    copy = Portfolio.from_state(state, config, snapshot=book._snapshot)
    assert copy.to_state() == book.to_state()
    for b in (book, copy):
        b.mark(98.0)
    closes = [
        b.apply_fill(_fill(Side.BUY, 1.5, 97.0, fee=0.1, time_ns=30), bar_index=4) for b in (book, copy)
    ]
    (a,), (c,) = closes
    assert _trade_tuple(a)[1:] == _trade_tuple(c)[1:]
    assert a.trade_id.split(":")[1] == c.trade_id.split(":")[1] == "2"
    assert c.entry_signals == {"rsi": 55.0}
    assert c.duration_bars == 3
    assert (copy.cash, copy.qty, copy.equity) == (book.cash, book.qty, book.equity)


def test_state_of_another_version_is_refused() -> None:
    state = _book().to_state()
    state["version"] = 99
    with pytest.raises(ConfigError, match="portfolio state version 99"):
        Portfolio.from_state(state)
