"""The shared contracts: error messages, the market clock, event records, market specs."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from envs.clock import DAY_NS, MarketClock
from envs.errors import BrokerError, DataError, RetryableBrokerError, SlfError
from envs.events import (
    BarEvent,
    ErrorEvent,
    ErrorKind,
    OrderResult,
    OrderStatus,
    PositionSide,
    Side,
    TradeResult,
)
from envs.market import MarketSpec, floor_to_step, round_to_tick


def test_error_message_names_place_and_fix_on_one_line() -> None:
    err = DataError("close is negative", where="prices.csv, line 7, column 'close'", fix="remove the row")
    assert str(err) == "prices.csv, line 7, column 'close': close is negative. Fix: remove the row"
    assert isinstance(err, SlfError)
    assert "\n" not in str(err)


def test_retryable_broker_error_is_a_broker_error() -> None:
    assert issubclass(RetryableBrokerError, BrokerError)
    assert BrokerError("x", code="-1013").code == "-1013"


def test_market_clock_refuses_to_go_backwards() -> None:
    clock = MarketClock(10 * DAY_NS)
    clock.advance_to(11 * DAY_NS)
    assert clock.now_ns() == 11 * DAY_NS
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(DAY_NS)


def test_error_event_from_rejected_order_carries_context_and_pickles() -> None:
    result = OrderResult(
        order_id="o1",
        symbol="BTC/USDT",
        side=Side.BUY,
        time_ns=0,
        requested_qty=0.0001,
        price=20_000.0,
        status=OrderStatus.REJECTED,
        kind=ErrorKind.MIN_NOTIONAL,
        message="Filter failure: NOTIONAL",
        code="-1013",
    )
    event = ErrorEvent.from_order(result, attempt=1)
    assert event.context["notional"] == pytest.approx(2.0)
    assert event.context["attempt"] == 1
    assert not event.retryable
    assert event.kind.is_minimum
    assert pickle.loads(pickle.dumps(event)) == event


def test_filled_order_has_no_error_event() -> None:
    filled = OrderResult("o", "X", Side.SELL, 0, 1.0, 10.0, OrderStatus.FILLED, filled_qty=1.0)
    assert filled.signed_qty == -1.0
    with pytest.raises(ValueError, match="filled"):
        ErrorEvent.from_order(filled)


def _trade(**snapshots: dict[str, float]) -> TradeResult:
    return TradeResult(
        "t1",
        "BTC/USDT",
        PositionSide.LONG,
        1,
        2,
        100.0,
        101.0,
        1.0,
        0.2,
        0.8,
        0.008,
        1,
        "signal",
        **snapshots,
    )


def test_event_records_are_immutable_pickle_compare_and_copy_with_replace() -> None:
    trade = _trade(entry_signals={"rsi_14": 25.0})
    order = OrderResult("o", "X", Side.BUY, 0, 1.0, 10.0, OrderStatus.FILLED, filled_qty=1.0)
    bar = BarEvent(0, "X", 10.0, 100.0, 1.0, 90.0)
    for record in (trade, order, bar, ErrorEvent(0, "X", ErrorKind.TIMEOUT, "Request timed out")):
        assert pickle.loads(pickle.dumps(record)) == record
        assert type(pickle.loads(pickle.dumps(record))) is type(record)
        with pytest.raises(AttributeError):
            record.symbol = "Y"  # type: ignore[misc]
    assert trade == _trade(entry_signals={"rsi_14": 25.0})
    assert trade != _trade(entry_signals={"rsi_14": 26.0})
    moved = trade._replace(exit_time_ns=5)
    assert type(moved) is TradeResult
    assert (moved.exit_time_ns, moved.duration_ns, moved.entry_signals) == (5, 4, {"rsi_14": 25.0})
    assert trade.exit_time_ns == 2


def test_mapping_fields_left_out_are_fresh_empty_dicts() -> None:
    a, b = _trade(), _trade()
    assert a.market_conditions == {}
    assert a.volume_profile == {}
    assert a.entry_signals is not b.entry_signals
    first = ErrorEvent(0, "X", ErrorKind.TIMEOUT, "Request timed out")
    second = ErrorEvent(0, "X", ErrorKind.TIMEOUT, "Request timed out")
    assert first.context == {}
    assert first.context is not second.context


def test_step_and_tick_rounding() -> None:
    assert floor_to_step(0.3, 0.1) == pytest.approx(0.3)
    assert floor_to_step(0.00999, 0.001) == pytest.approx(0.009)
    assert floor_to_step(5.0, 0.0) == 5.0
    assert round_to_tick(101.234, 0.01) == pytest.approx(101.23)


def test_market_spec_from_ccxt_tick_size_market() -> None:
    market = {
        "symbol": "BTC/USDT",
        "base": "BTC",
        "quote": "USDT",
        "taker": 0.001,
        "maker": 0.0008,
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {"amount": {"min": 0.00001, "max": 9000}, "cost": {"min": 5.0}},
    }
    spec = MarketSpec.from_ccxt(market, slippage_bps=2.0)
    assert spec.qty_step == pytest.approx(1e-5)
    assert spec.price_tick == pytest.approx(0.01)
    assert spec.min_notional == 5.0
    assert spec.maker_fee == 0.0008
    assert spec.slippage_bps == 2.0
    assert MarketSpec.from_dict(spec.to_dict()) == spec


def test_market_spec_from_ccxt_decimal_places_market() -> None:
    spec = MarketSpec.from_ccxt(
        {"symbol": "ETH/USDT", "precisionMode": "decimal_places", "precision": {"amount": 4, "price": 2}}
    )
    assert spec.qty_step == pytest.approx(1e-4)
    assert spec.price_tick == pytest.approx(0.01)
    assert (spec.base, spec.quote) == ("ETH", "USDT")


def test_market_spec_rejects_negative_fee_with_fix() -> None:
    with pytest.raises(Exception, match=r"taker_fee=-0\.1 must be a finite number >= 0"):
        MarketSpec("X", taker_fee=-0.1)


def test_importing_envs_does_not_import_torch() -> None:
    code = "import sys, envs; assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_did_you_mean_suggests_close_names_only() -> None:
    from envs.errors import did_you_mean

    assert did_you_mean("learnig_rate", ["learning_rate", "gamma"]) == " (did you mean 'learning_rate'?)"
    assert did_you_mean("zzz", ["learning_rate", "gamma"]) == ""
