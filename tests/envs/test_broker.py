"""The simulated exchange: fill prices, fees, the exchange's rejections and seeded fault injection."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.broker import (
    MSG_INSUFFICIENT_BALANCE,
    MSG_LOT_SIZE,
    MSG_MAINTENANCE,
    MSG_NOTIONAL,
    MSG_RATE_LIMIT,
    MSG_TIMEOUT,
    Broker,
    FaultConfig,
    OrderIntent,
    Quote,
    SimBroker,
)
from envs.errors import ConfigError
from envs.events import ErrorKind, OrderStatus, Side
from envs.market import MarketSpec
from envs.portfolio import Portfolio, PortfolioConfig

BTC = MarketSpec(
    "BTC/USDT",
    taker_fee=0.001,
    spread_bps=2.0,
    slippage_bps=1.0,
    min_qty=0.001,
    qty_step=0.001,
    min_notional=10.0,
    price_tick=0.01,
)
QUOTE = Quote(time_ns=1_000, price=20_000.0, volume=50.0)


def _broker(spec: MarketSpec = BTC, cash: float = 10_000.0, **kw: object) -> SimBroker:
    book = Portfolio(spec.symbol, PortfolioConfig(initial_cash=cash, allow_short=False))
    return SimBroker(spec, book, **kw)  # type: ignore[arg-type]


def _buy(qty: float, oid: str = "o-1") -> OrderIntent:
    return OrderIntent(oid, "BTC/USDT", Side.BUY, qty, decision_time_ns=0)


def test_sim_broker_is_a_broker() -> None:
    assert isinstance(_broker(), Broker)


def test_buy_fills_above_open_by_half_spread_plus_slippage_with_taker_fee() -> None:
    result = _broker().submit(_buy(0.1), QUOTE)
    assert result.status is OrderStatus.FILLED
    # half spread 1 bps + slippage 1 bps = 2 bps above 20000 -> 20004.00
    assert result.price == pytest.approx(20_004.0)
    assert result.filled_qty == pytest.approx(0.1)
    assert result.fee == pytest.approx(0.1 * 20_004.0 * 0.001)
    assert result.slippage == pytest.approx(0.1 * 4.0)
    assert result.time_ns == QUOTE.time_ns
    assert result.kind is None
    assert result.message == ""


def test_sell_fills_below_open() -> None:
    book = Portfolio("BTC/USDT", PortfolioConfig(allow_short=True))
    result = SimBroker(BTC, book).submit(OrderIntent("s", "BTC/USDT", Side.SELL, 0.1, 0), QUOTE)
    assert result.price == pytest.approx(19_996.0)
    assert result.slippage == pytest.approx(0.4)


def test_quantity_is_floored_to_the_lot_step_before_the_checks() -> None:
    result = _broker().submit(_buy(0.0129), QUOTE)
    assert result.filled_qty == pytest.approx(0.012)
    assert result.requested_qty == pytest.approx(0.0129)


@pytest.mark.parametrize("qty", [0.0009, 0.00099999])
def test_quantity_that_floors_to_nothing_is_rejected_lot_size(qty: float) -> None:
    result = _broker().submit(_buy(qty), QUOTE)
    assert result.status is OrderStatus.REJECTED
    assert result.kind is ErrorKind.LOT_SIZE
    assert result.message == MSG_LOT_SIZE == "Filter failure: LOT_SIZE"
    assert result.code == "-1013"
    assert result.filled_qty == 0.0
    assert result.fee == 0.0


def test_quantity_below_min_qty_is_rejected_lot_size() -> None:
    spec = MarketSpec("BTC/USDT", qty_step=0.001, min_qty=0.005)
    result = _broker(spec).submit(_buy(0.004), QUOTE)
    assert (result.kind, result.message, result.code) == (ErrorKind.LOT_SIZE, MSG_LOT_SIZE, "-1013")


def test_notional_below_minimum_is_rejected_with_exchange_wording() -> None:
    # 0.0004 BTC * 20000 = 8 USDT < 10 USDT minimum
    spec = MarketSpec("BTC/USDT", qty_step=0.0001, min_notional=10.0)
    result = _broker(spec).submit(_buy(0.0004), QUOTE)
    assert result.status is OrderStatus.REJECTED
    assert result.kind is ErrorKind.MIN_NOTIONAL
    assert result.message == MSG_NOTIONAL == "Filter failure: NOTIONAL"
    assert result.code == "-1013"
    assert result.price == QUOTE.price
    assert result.notional == pytest.approx(8.0)


def test_buy_beyond_cash_is_rejected_insufficient_balance() -> None:
    result = _broker(cash=1_000.0).submit(_buy(0.05), QUOTE)  # ~1000.2 + fee > 1000
    assert result.status is OrderStatus.REJECTED
    assert result.kind is ErrorKind.INSUFFICIENT_BALANCE
    assert (
        result.message == MSG_INSUFFICIENT_BALANCE == "Account has insufficient balance for requested action."
    )
    assert result.code == "-2010"


def test_selling_what_a_spot_account_does_not_hold_is_rejected_insufficient_balance() -> None:
    result = _broker().submit(OrderIntent("s", "BTC/USDT", Side.SELL, 0.01, 0), QUOTE)
    assert result.kind is ErrorKind.INSUFFICIENT_BALANCE


def test_invalid_quantity_is_rejected_not_raised() -> None:
    result = _broker().submit(_buy(math.nan), QUOTE)
    assert result.kind is ErrorKind.INVALID_ORDER
    assert result.status is OrderStatus.REJECTED


def test_reduce_only_order_skips_notional_minimum_and_faults() -> None:
    spec = MarketSpec("BTC/USDT", qty_step=0.0001, min_notional=10.0)
    book = Portfolio("BTC/USDT", PortfolioConfig(allow_short=True))
    broker = SimBroker(spec, book, faults=FaultConfig(rate_limit=1.0), seed=0)
    intent = OrderIntent("c", "BTC/USDT", Side.BUY, 0.0004, 0, reduce_only=True)
    assert broker.submit(intent, QUOTE).filled


def test_volume_model_slippage_grows_with_square_root_of_participation() -> None:
    spec = MarketSpec("X/Y", slippage_bps=1.0, slippage_model="volume", impact_bps=20.0)
    assert spec.slippage_bps_for(25.0, 100.0) == pytest.approx(1.0 + 20.0 * 0.5)
    assert spec.slippage_bps_for(1.0, 100.0) == pytest.approx(1.0 + 20.0 * 0.1)
    # capped at full participation, and unknown or zero volume counts as full participation
    assert spec.slippage_bps_for(1e6, 100.0) == pytest.approx(21.0)
    assert spec.slippage_bps_for(1.0, 0.0) == pytest.approx(21.0)
    assert spec.slippage_bps_for(1.0, math.nan) == pytest.approx(21.0)
    # the fixed model ignores volume
    fixed = MarketSpec("X/Y", slippage_bps=1.0, impact_bps=20.0)
    assert fixed.slippage_bps_for(1e6, 1.0) == 1.0


def test_volume_model_fill_price_moves_more_for_bigger_orders() -> None:
    spec = MarketSpec("X/Y", spread_bps=2.0, slippage_model="volume", impact_bps=100.0, price_tick=0.01)
    small = spec.fill_price(Side.BUY, 100.0, 1.0, 10_000.0)  # 1 + 100 * 0.01 = 2 bps
    big = spec.fill_price(Side.BUY, 100.0, 2_500.0, 10_000.0)  # 1 + 100 * 0.5 = 51 bps
    assert small == pytest.approx(100.02)
    assert big == pytest.approx(100.51)
    assert spec.fill_price(Side.SELL, 100.0, 2_500.0, 10_000.0) == pytest.approx(99.49)


def test_fill_price_rounds_to_tick_against_the_trader() -> None:
    spec = MarketSpec("X/Y", slippage_bps=1.0, price_tick=0.05)
    assert spec.fill_price(Side.BUY, 100.0, 1.0) == pytest.approx(100.05)  # 100.01 -> up
    assert spec.fill_price(Side.SELL, 100.0, 1.0) == pytest.approx(99.95)  # 99.99 -> down
    assert spec.fill_price(Side.BUY, 100.0, 1.0) >= 100.0


def test_costs_that_would_price_a_sell_at_zero_are_refused() -> None:
    with pytest.raises(ConfigError, match="basis points"):
        MarketSpec("X/Y", spread_bps=10_000.0, slippage_bps=5_000.0)


def _fault_kinds(seed: int, n: int, faults: FaultConfig) -> list[ErrorKind | None]:
    broker = _broker(cash=1e12, faults=faults, seed=seed)
    return [broker.submit(_buy(0.01, f"o{i}"), QUOTE).kind for i in range(n)]


def test_faults_are_off_by_default() -> None:
    assert _fault_kinds(0, 200, FaultConfig()) == [None] * 200


def test_fault_injection_is_deterministic_per_seed() -> None:
    faults = FaultConfig(rate_limit=0.1, timeout=0.1, maintenance=0.1)
    assert _fault_kinds(7, 300, faults) == _fault_kinds(7, 300, faults)
    assert _fault_kinds(7, 300, faults) != _fault_kinds(8, 300, faults)


def test_fault_rates_match_configuration() -> None:
    n = 20_000
    faults = FaultConfig(rate_limit=0.05, timeout=0.02, maintenance=0.01)
    kinds = _fault_kinds(123, n, faults)
    for kind, rate in (
        (ErrorKind.RATE_LIMIT, 0.05),
        (ErrorKind.TIMEOUT, 0.02),
        (ErrorKind.MAINTENANCE, 0.01),
    ):
        observed = kinds.count(kind) / n
        # four binomial standard deviations
        assert abs(observed - rate) < 4 * math.sqrt(rate * (1 - rate) / n), (kind, observed)
    assert kinds.count(None) / n == pytest.approx(1 - faults.total, abs=0.01)


@pytest.mark.parametrize(
    ("faults", "kind", "message", "code"),
    [
        (FaultConfig(rate_limit=1.0), ErrorKind.RATE_LIMIT, MSG_RATE_LIMIT, "429"),
        (FaultConfig(timeout=1.0), ErrorKind.TIMEOUT, MSG_TIMEOUT, "408"),
        (FaultConfig(maintenance=1.0), ErrorKind.MAINTENANCE, MSG_MAINTENANCE, "503"),
    ],
)
def test_injected_faults_are_errored_retryable_and_carry_exchange_wording(
    faults: FaultConfig, kind: ErrorKind, message: str, code: str
) -> None:
    result = _broker(faults=faults, seed=1).submit(_buy(0.01), QUOTE)
    assert result.status is OrderStatus.ERRORED
    assert (result.kind, result.message, result.code) == (kind, message, code)
    assert result.kind.retryable
    assert result.filled_qty == 0.0
    assert pickle.loads(pickle.dumps(result)) == result


def test_reseed_from_parent_generator_restarts_the_fault_sequence() -> None:
    faults = FaultConfig(rate_limit=0.5)
    broker = _broker(cash=1e12, faults=faults)
    broker.reseed(SimBroker.seed_from(np.random.default_rng(5)))
    first = [broker.submit(_buy(0.01), QUOTE).kind for _ in range(50)]
    broker.reseed(SimBroker.seed_from(np.random.default_rng(5)))
    assert [broker.submit(_buy(0.01), QUOTE).kind for _ in range(50)] == first


def test_fault_config_rejects_bad_rates_and_unknown_names() -> None:
    with pytest.raises(ConfigError, match="not a probability"):
        FaultConfig(timeout=1.5)
    with pytest.raises(ConfigError, match="add up to"):
        FaultConfig(rate_limit=0.6, timeout=0.6)
    with pytest.raises(ConfigError, match="did you mean 'timeout'"):
        FaultConfig.coerce({"timout": 0.1})
    assert FaultConfig.coerce({"timeout": 0.1}) == FaultConfig(timeout=0.1)
    assert FaultConfig.coerce(None) == FaultConfig()


_SPECS = st.builds(
    MarketSpec,
    symbol=st.just("BTC/USDT"),
    taker_fee=st.floats(0.0, 0.01),
    spread_bps=st.floats(0.0, 50.0),
    slippage_bps=st.floats(0.0, 20.0),
    slippage_model=st.sampled_from(["fixed", "volume"]),
    impact_bps=st.floats(0.0, 200.0),
    qty_step=st.sampled_from([0.0, 1e-5, 0.001, 0.1]),
    price_tick=st.sampled_from([0.0, 0.01, 0.5, 1.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    spec=_SPECS,
    side=st.sampled_from([Side.BUY, Side.SELL]),
    qty=st.floats(0.1, 50.0),  # at least one lot of the largest step
    ref=st.floats(0.5, 100_000.0),
    volume=st.one_of(st.floats(0.0, 1e6), st.just(math.nan)),
)
def test_a_fill_is_priced_exactly_as_market_spec_fill_price(
    spec: MarketSpec, side: Side, qty: float, ref: float, volume: float
) -> None:
    # The broker inlines fill_price on its per-order path: the two must agree to the last bit.
    book = Portfolio(spec.symbol, PortfolioConfig(initial_cash=1e12, leverage=10.0))
    broker = SimBroker(spec, book)
    result = broker.submit(
        OrderIntent("o-1", spec.symbol, side, qty, decision_time_ns=0), Quote(1, ref, volume)
    )
    assert result.status is OrderStatus.FILLED, result
    assert result.price == spec.fill_price(side, ref, result.filled_qty, volume)
    assert result.fee == result.filled_qty * result.price * spec.taker_fee
    assert result.slippage == result.filled_qty * abs(result.price - ref)
