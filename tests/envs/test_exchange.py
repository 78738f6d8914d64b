"""``envs.exchange`` with ccxt's real binance client against a local Binance spot server (fake_binance):
signed orders, the exchange's refusals in SimBroker's words, ambiguous answers settled by client order
id, credentials that never leak, and a closed-candle feed whose features equal the replay's."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pandas as pd
import pytest

from envs.broker import (
    MSG_INSUFFICIENT_BALANCE,
    MSG_LOT_SIZE,
    MSG_MAINTENANCE,
    MSG_NOTIONAL,
    AsyncBroker,
    OrderIntent,
    Quote,
    SimBroker,
)
from envs.data import load_ohlcv
from envs.data.datasets import load_dataset
from envs.data.synthetic import generate_synthetic
from envs.errors import BrokerError, ConfigError, RetryableBrokerError
from envs.events import ErrorKind, OrderResult, OrderStatus, Side
from envs.exchange import CcxtFeed, Credentials, ExchangeBroker, RedactingFilter
from envs.features import FeatureConfig, compute_features, min_rows
from envs.live import BarFeed
from envs.market import MarketSpec
from tests.envs.fake_binance import (
    BODY_BAD_CLIENT_ID,
    BODY_RATE_LIMIT,
    DEFAULT_KEY,
    DEFAULT_SECRET,
    FakeBinance,
)

T = TypeVar("T")
SYMBOL = "BTC/USDT"
KEYS = Credentials(DEFAULT_KEY, DEFAULT_SECRET, source="test")
# ccxt's client-side throttle and its 250 ms wait at close (for TLS shutdowns) only slow the tests down.
NO_LIMIT = {"enableRateLimit": False, "timeout_on_exit": 0}
FAKE_SCRIPT = Path(__file__).with_name("fake_binance.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 0.25  # the broker's request timeout in the timeout tests
NOW_ROW = 1500  # the fake's clock starts when this bar has just closed


@functools.cache
def _btc() -> pd.DataFrame:
    """Synthetic BTC/USDT minute bars (prices 40k-45k)."""
    return generate_synthetic([SYMBOL], 2500, 7).frames[SYMBOL]


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 20.0))


@contextlib.asynccontextmanager
async def exchange(**kw: Any) -> AsyncIterator[FakeBinance]:
    bars = kw.pop("bars", None)
    bars = _btc() if bars is None else bars
    fake = FakeBinance(bars, **kw)
    fake.set_time(fake.close_time_of(NOW_ROW))
    async with fake:
        yield fake


@contextlib.asynccontextmanager
async def broker(
    fake: FakeBinance, credentials: Credentials = KEYS, **kw: Any
) -> AsyncIterator[ExchangeBroker]:
    b = ExchangeBroker("binance", SYMBOL, credentials, api_url=fake.url, options=NO_LIMIT, **kw)
    try:
        await b.start()
        yield b
    finally:
        await b.close()


def _order(oid: str, qty: float, side: Side = Side.BUY) -> OrderIntent:
    return OrderIntent(oid, SYMBOL, side, qty, 0)


def _quote(fake: FakeBinance) -> Quote:
    return Quote(fake.now_ms() * 1_000_000, fake.market_price(), float("nan"))


class _Account:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def can_fill(self, side: Side, qty: float, price: float, fee: float) -> bool:
        return self.ok


def _words(r: OrderResult) -> tuple[Any, ...]:
    return (r.status, r.kind, r.message, r.code)


def test_ccxt_raises_the_exception_classes_the_issue_names_for_binances_bodies() -> None:
    """The facts the broker's mapping rests on: ccxt's binance client on Binance's real error bodies."""
    import ccxt.async_support as ccxt_async

    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            expected = {
                "notional": ccxt_async.BadRequest,
                "lot_size": ccxt_async.InvalidOrder,
                "balance": ccxt_async.InsufficientFunds,
                "429": ccxt_async.DDoSProtection,
                "503": ccxt_async.OnMaintenance,
                "500": ccxt_async.OperationFailed,
            }
            for failure, cls in expected.items():
                fake.fail_next(failure)
                with pytest.raises(cls):
                    await b.client.create_order(
                        SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": failure}
                    )

    run(scenario)


# --- orders ------------------------------------------------------------------------------------------


def test_a_signed_market_order_fills_under_its_client_order_id() -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            assert isinstance(b, AsyncBroker)
            price = fake.market_price()
            result = await b.submit(_order("live-BTC/USDT-1-0", 0.0123456), _quote(fake))
            assert result.status is OrderStatus.FILLED
            assert result.filled_qty == pytest.approx(0.01234)  # floored to the 0.00001 lot step
            assert result.price == price
            # Binance charges a buy's commission in the base asset: converted to quote at the fill price.
            commission_btc = float(fake.orders[-1]["fills"][0]["commission"])
            assert fake.orders[-1]["fills"][0]["commissionAsset"] == "BTC"
            assert result.fee == pytest.approx(commission_btc * price, rel=1e-12)
            assert result.fee == pytest.approx(0.01234 * price * 0.001)
            assert [o["clientOrderId"] for o in fake.orders] == ["live-BTC/USDT-1-0"]
            assert fake.orders[0]["side"] == "BUY"
            assert fake.orders[0]["origQty"] == "0.01234"
            # A sell pays its commission in quote.
            sold = await b.submit(_order("s-1", 0.005, Side.SELL), _quote(fake))
            assert sold.filled
            assert sold.fee == pytest.approx(0.005 * price * 0.001)

    run(scenario)


def test_a_wrong_secret_is_refused_with_a_clear_broker_error() -> None:
    async def scenario() -> None:
        async with exchange() as fake:
            bad = Credentials(DEFAULT_KEY, "not-the-secret", source="test")
            with pytest.raises(BrokerError, match=r"Signature for this request is not valid") as err:
                async with broker(fake, bad):
                    pass
            assert "SLF_BINANCE_API_KEY" in str(err.value)
            assert "SLF_API_KEY" in str(err.value)
            assert "not-the-secret" not in str(err.value)
            unknown = Credentials("another-key", DEFAULT_SECRET, source="test")
            with pytest.raises(BrokerError, match="Invalid API-key"):
                async with broker(fake, unknown):
                    pass
            assert fake.orders == []

    run(scenario)


@pytest.mark.parametrize(
    ("qty", "ok", "kind", "message", "code"),
    [
        (0.002, True, ErrorKind.MIN_NOTIONAL, MSG_NOTIONAL, "-1013"),  # 0.002 BTC ~ 82 USDT < 100
        (0.0005, True, ErrorKind.LOT_SIZE, MSG_LOT_SIZE, "-1013"),  # below minQty 0.001
        (0.0000004, True, ErrorKind.LOT_SIZE, MSG_LOT_SIZE, "-1013"),  # nothing left after the step
        (1.0, False, ErrorKind.INSUFFICIENT_BALANCE, MSG_INSUFFICIENT_BALANCE, "-2010"),  # 41k > 10k
    ],
    ids=["notional", "lot_size", "below_step", "balance"],
)
def test_the_exchanges_refusals_read_exactly_like_simbrokers(
    qty: float, ok: bool, kind: ErrorKind, message: str, code: str
) -> None:
    async def scenario() -> None:
        async with exchange(min_qty=0.001, min_notional=100.0) as fake, broker(fake) as b:
            quote = _quote(fake)
            live = await b.submit(_order("r-1", qty), quote)
            sim = SimBroker(b.spec, _Account(ok)).submit(_order("r-1", qty), quote)
            assert _words(live) == (OrderStatus.REJECTED, kind, message, code)
            assert _words(live) == _words(sim)
            assert live.requested_qty == qty
            assert live.filled_qty == 0.0
            assert live.fee == 0.0
            assert fake.orders == []

    run(scenario)


@pytest.mark.parametrize(
    ("failure", "kind", "message", "code"),
    [
        ("notional", ErrorKind.MIN_NOTIONAL, MSG_NOTIONAL, "-1013"),
        ("lot_size", ErrorKind.LOT_SIZE, MSG_LOT_SIZE, "-1013"),
        ("balance", ErrorKind.INSUFFICIENT_BALANCE, MSG_INSUFFICIENT_BALANCE, "-2010"),
    ],
)
def test_scripted_filter_and_balance_answers_are_rejections(
    failure: str, kind: ErrorKind, message: str, code: str
) -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            fake.fail_next(failure)
            result = await b.submit(_order("f-1", 0.01), _quote(fake))
            assert _words(result) == (OrderStatus.REJECTED, kind, message, code)
            assert not kind.retryable
            # A rejection is final for its id: sending it again returns it without a request.
            sent = len(fake.requests)
            assert await b.submit(_order("f-1", 0.01), _quote(fake)) == result
            assert len(fake.requests) == sent

    run(scenario)


@pytest.mark.parametrize(
    ("failure", "kind", "message", "code"),
    [
        ("429", ErrorKind.RATE_LIMIT, BODY_RATE_LIMIT["msg"], "429"),
        (
            "500",
            ErrorKind.MAINTENANCE,
            "Internal error; unable to process your request. Please try again.",
            "500",
        ),
        ("503", ErrorKind.MAINTENANCE, MSG_MAINTENANCE, "503"),
    ],
)
def test_rate_limits_and_server_errors_are_retryable_errors(
    failure: str, kind: ErrorKind, message: str, code: str
) -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            fake.fail_next(failure)
            result = await b.submit(_order("e-1", 0.01), _quote(fake))
            assert _words(result) == (OrderStatus.ERRORED, kind, message, code)
            assert result.kind is not None
            assert result.kind.retryable
            assert fake.orders == []
            # The same id may be sent again once the exchange answers: it fills, once.
            again = await b.submit(_order("e-1", 0.01), _quote(fake))
            assert again.filled
            assert len(fake.orders) == 1

    run(scenario)


@pytest.mark.parametrize(
    ("dedupe", "verify_ids", "refused"),
    [
        ("open", True, 0),  # Binance's rule: the broker asks before sending an id it has not sent
        ("all", False, 1),  # the exchange refuses the id: -2010 Duplicate order sent. -> the first order
    ],
)
def test_a_resent_client_order_id_never_trades_twice(dedupe: str, verify_ids: bool, refused: int) -> None:
    async def scenario() -> None:
        async with exchange(dedupe=dedupe) as fake:
            async with broker(fake) as first:
                filled = await first.submit(_order("dup-1", 0.01), _quote(fake))
            assert filled.filled
            fake.price = fake.market_price() * 1.1  # a resend would fill elsewhere
            async with broker(fake, verify_ids=verify_ids) as restarted:  # no memory of dup-1
                # The same order again (a restart resends what it logged): the first one's result.
                again = await restarted.submit(_order("dup-1", 0.01), _quote(fake))
            assert fake.duplicates == refused
            assert len(fake.orders) == 1
            assert again.filled
            assert (again.order_id, again.filled_qty, again.price) == ("dup-1", 0.01, filled.price)
            assert again.fee == pytest.approx(filled.fee)

    run(scenario)


def test_without_verification_binances_rule_lets_a_resend_trade_again() -> None:
    """Why ``verify_ids`` is on: Binance only refuses ids of open orders, and market orders close at once."""

    async def scenario() -> None:
        async with exchange(dedupe="open") as fake:
            for _ in range(2):
                async with broker(fake, verify_ids=False) as b:
                    assert (await b.submit(_order("dup-2", 0.01), _quote(fake))).filled
            assert [o["clientOrderId"] for o in fake.orders] == ["dup-2", "dup-2"]

    run(scenario)


def test_an_illegal_client_order_id_is_refused_in_binances_words() -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            long_id = "live-BTC/USDT-1704187260000-0-" + "x" * 10  # 41 > 36 characters
            result = await b.submit(_order(long_id, 0.01), _quote(fake))
            assert _words(result) == (
                OrderStatus.REJECTED,
                ErrorKind.INVALID_ORDER,
                BODY_BAD_CLIENT_ID["msg"],
                "-1100",
            )
            assert fake.orders == []

    run(scenario)


def test_a_failed_check_before_sending_leaves_the_order_unsent() -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            fake.fail_next("429", scope="any")  # the GET asking for the id is refused
            result = await b.submit(_order("c-1", 0.01), _quote(fake))
            assert _words(result) == (
                OrderStatus.ERRORED,
                ErrorKind.RATE_LIMIT,
                BODY_RATE_LIMIT["msg"],
                "429",
            )
            assert fake.requests[-1] == ("GET", "/api/v3/order")
            assert fake.orders == []
            assert (await b.submit(_order("c-1", 0.01), _quote(fake))).filled

    run(scenario)


def test_a_timed_out_order_is_settled_by_asking_the_exchange() -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake, timeout=TIMEOUT_S) as b:
            fake.fail_next("timeout_filled", delay=3 * TIMEOUT_S)  # executed, answer too late
            result = await b.submit(_order("t-1", 0.01), _quote(fake))
            assert result.filled
            assert result.filled_qty == pytest.approx(0.01)
            assert len(fake.orders) == 1
            fake.fail_next("timeout", delay=3 * TIMEOUT_S)  # never executed
            lost = await b.submit(_order("t-2", 0.01), _quote(fake))
            assert _words(lost) == (OrderStatus.ERRORED, ErrorKind.TIMEOUT, "Request timed out", "408")
            assert len(fake.orders) == 1

    run(scenario)


@pytest.mark.parametrize("how", ["fake", "client"])
def test_an_order_answered_with_its_ids_only_is_settled_by_asking(how: str) -> None:
    """Binance's ACK answer (``newOrderRespType=ACK``) holds no fill, no status and no side: the broker
    asks for the order and books its fill, on the intent's side, as a FULL answer would be booked."""

    async def scenario() -> None:
        fake_kw: dict[str, Any] = {"resp_type": "ACK"} if how == "fake" else {}
        ack = {"options": {"newOrderRespType": {"market": "ACK"}}} if how == "client" else {}
        opts = {**NO_LIMIT, **ack}
        async with exchange(base_qty=1.0, **fake_kw) as fake:
            b = ExchangeBroker("binance", SYMBOL, KEYS, api_url=fake.url, options=opts, verify_ids=False)
            try:
                await b.start()
                fake.requests.clear()
                sold = await b.submit(_order("ack-1", 0.01, Side.SELL), _quote(fake))
                assert sold.filled
                assert (sold.side, sold.filled_qty) == (Side.SELL, pytest.approx(0.01))
                assert sold.price == pytest.approx(fake.market_price())
                assert sold.fee == pytest.approx(0.01 * fake.market_price() * 0.001)
                assert ("GET", "/api/v3/order") in fake.requests  # asked after the bare answer
                assert len(fake.orders) == 1
            finally:
                await b.close()

    run(scenario)


def test_an_order_still_open_is_asked_for_until_it_closes_within_the_settle_wait() -> None:
    async def scenario() -> None:
        async with exchange(resp_type="RESULT", open_queries=2) as fake, broker(fake) as b:
            # RESULT answers are complete; open_queries only affects the queries: book at once.
            done = await b.submit(_order("o-1", 0.01), _quote(fake))
            assert done.filled
        async with exchange(resp_type="ACK", open_queries=2) as fake, broker(fake, verify_ids=False) as b:
            result = await b.submit(_order("o-2", 0.01), _quote(fake))
            assert result.filled  # NEW twice, then FILLED
            assert result.filled_qty == pytest.approx(0.01)
            queries = [r for r in fake.requests if r == ("GET", "/api/v3/order")]
            assert len(queries) == 3
        async with (
            exchange(resp_type="ACK", open_queries=50) as fake,
            broker(fake, verify_ids=False, settle_wait=0.0) as b,
        ):
            lost = await b.submit(_order("o-3", 0.01), _quote(fake))
            assert (lost.status, lost.kind) == (OrderStatus.ERRORED, ErrorKind.TIMEOUT)
            assert "order o-3 is still open" in lost.message
            with pytest.raises(RetryableBrokerError, match="order o-3 is still open"):
                await b.known("o-3")

    run(scenario)


def test_an_order_found_under_our_id_that_is_not_ours_is_refused_not_booked() -> None:
    """Two runners sharing a client order id prefix: the second finds the first's order under its id."""

    async def scenario() -> None:
        async with exchange(dedupe="open", base_qty=1.0) as fake, broker(fake) as a, broker(fake) as b:
            mine = await a.submit(_order("shared-1", 0.01), _quote(fake))
            assert mine.filled
            with pytest.raises(BrokerError, match="another runner or person used the id") as err:
                await b.submit(_order("shared-1", 0.002, Side.SELL), _quote(fake))
            assert "shared-1" in str(err.value)
            assert "its own state directory" in str(err.value)
            with pytest.raises(BrokerError, match="client order id shared-1 that is not this one"):
                await b.submit(_order("shared-1", 0.02), _quote(fake))  # same side, twice the size
            with pytest.raises(BrokerError, match="another runner or person"):
                await b.known("shared-1", _order("shared-1", 0.5, Side.SELL))
            assert len(fake.orders) == 1  # nothing sent under the shared id
            # Lot rounding is not a difference: 0.010004 is sent as 0.01.
            same = await b.submit(_order("shared-1", 0.010004), _quote(fake))
            assert same.filled
            assert same.filled_qty == pytest.approx(0.01)
            assert len(fake.orders) == 1

    run(scenario)


def test_a_failed_question_after_a_timeout_is_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    """When the question about a timed-out order fails too, the log says the exchange could not be
    asked, not that it does not have the order."""

    async def scenario() -> None:
        async with exchange() as fake, broker(fake, timeout=TIMEOUT_S) as b:
            fake.fail_next("timeout", delay=3 * TIMEOUT_S)
            fake.fail_next("500", scope="any")  # the question that follows
            lost = await b.submit(_order("q-1", 0.01), _quote(fake))
            assert (lost.status, lost.kind) == (OrderStatus.ERRORED, ErrorKind.TIMEOUT)
            assert fake.requests[-1] == ("GET", "/api/v3/order")
            fake.fail_next("timeout", delay=3 * TIMEOUT_S)
            await b.submit(_order("q-2", 0.01), _quote(fake))

    with caplog.at_level(logging.WARNING, logger="envs.exchange"):
        run(scenario)
    first = caplog.messages
    asked = [m for m in first if "q-1" in m]
    assert len(asked) == 1
    assert "could not ask the exchange about order q-1 (" in asked[0]
    assert "Internal error" in asked[0]
    assert "does not have it" not in asked[0]
    assert any("q-2" in m and "the exchange does not have it" in m for m in first)


def test_an_order_found_after_a_restart_is_booked_as_its_own_answer_was() -> None:
    """A restarted broker resending a logged order (same intent, same quote) gets the very result the
    first answer gave: the intent's requested quantity (not the lot-rounded amount), its slippage."""

    async def scenario() -> None:
        async with exchange() as fake:
            intent, quote = _order("r-1", 0.010004), _quote(fake)
            fake.price = quote.price + 3.0  # fills off the quote: a slippage to carry over
            async with broker(fake) as first:
                answered = await first.submit(intent, quote)
            async with broker(fake) as restarted:
                again = await restarted.submit(intent, quote)
                asked = await restarted.known("r-1", intent, quote)
            assert answered.filled
            assert answered.slippage > 0.0
            assert again == answered
            assert asked == answered
            assert len(fake.orders) == 1

    run(scenario)


def test_known_answers_by_client_order_id() -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            assert await b.known("never-sent") is None
            sent = await b.submit(_order("k-1", 0.01), _quote(fake))
            found = await b.known("k-1")
            assert found is not None
            assert found.filled
            assert (found.order_id, found.side, found.filled_qty) == ("k-1", Side.BUY, sent.filled_qty)
            assert found.price == pytest.approx(sent.price)
            assert found.fee == pytest.approx(sent.fee)  # read from the order's trades
            assert found.time_ns == sent.time_ns

    run(scenario)


def test_account_snapshot_reports_the_exchanges_balances() -> None:
    async def scenario() -> None:
        async with exchange(cash=5_000.0, base_qty=0.5) as fake, broker(fake) as b:
            before = await b.account()
            assert (before.cash, before.qty) == (5_000.0, 0.5)
            assert before.time_ns == fake.now_ms() * 1_000_000
            await b.submit(_order("a-1", 0.01), _quote(fake))
            after = await b.account()
            assert after.cash == pytest.approx(fake.balances["USDT"])
            assert after.qty == pytest.approx(fake.balances["BTC"])
            assert after.qty == pytest.approx(0.5 + 0.01 * (1 - 0.001))  # commission taken in BTC

    run(scenario)


def test_start_builds_the_market_spec_and_refuses_unknown_symbols() -> None:
    async def scenario() -> None:
        async with exchange(min_notional=10.0, step_size=0.0001, min_qty=0.0001, tick_size=0.1) as fake:
            async with broker(fake, spec_overrides={"slippage_bps": 2.0}) as b:
                spec = b.spec
            assert isinstance(spec, MarketSpec)
            assert (spec.min_notional, spec.qty_step, spec.min_qty, spec.price_tick) == (
                10.0,
                1e-4,
                1e-4,
                0.1,
            )
            assert (spec.base, spec.quote, spec.taker_fee, spec.slippage_bps) == ("BTC", "USDT", 0.001, 2.0)
            b2 = ExchangeBroker("binance", "BTC/USD", KEYS, api_url=fake.url, options=NO_LIMIT)
            try:
                with pytest.raises(
                    BrokerError, match=r"unknown symbol 'BTC/USD' \(did you mean 'BTC/USDT'\?\)"
                ):
                    await b2.start()
            finally:
                await b2.close()

    run(scenario)


def test_api_url_routes_every_rest_endpoint_to_the_given_host() -> None:
    async def scenario() -> None:
        default = ExchangeBroker("binance", SYMBOL, None, options=NO_LIMIT)
        try:
            assert default.client.urls["api"]["public"] == "https://api.binance.com/api/v3"
        finally:
            await default.close()
        async with exchange() as fake, broker(fake) as b:
            api = b.client.urls["api"]
            assert api["public"] == api["private"] == f"{fake.url}/api/v3"
            assert api["sapi"] == f"{fake.url}/sapi/v1"
            assert api["v1"] == f"{fake.url}/api/v1"
            assert all(url.startswith(fake.url) for url in api.values() if isinstance(url, str))
            assert ("GET", "/api/v3/exchangeInfo") in fake.requests
            assert ("GET", "/api/v3/account") in fake.requests  # start() proves the credentials
            assert not any(path.startswith(("/sapi", "/fapi", "/dapi")) for _, path in fake.requests)
        with pytest.raises(ConfigError, match="--api-url"):
            ExchangeBroker("binance", SYMBOL, None, api_url="127.0.0.1:9")
        with pytest.raises(ConfigError, match="did you mean 'binance'"):
            ExchangeBroker("binanse", SYMBOL, None)

    run(scenario)


def test_testnet_uses_the_exchanges_sandbox_and_api_url_still_wins() -> None:
    async def scenario() -> None:
        sandbox = ExchangeBroker("binance", SYMBOL, None, testnet=True, options=NO_LIMIT)
        local = ExchangeBroker(
            "binance", SYMBOL, None, testnet=True, api_url="http://127.0.0.1:9", options=NO_LIMIT
        )
        try:
            assert sandbox.client.urls["api"]["public"] == "https://testnet.binance.vision/api/v3"
            assert local.client.urls["api"]["private"] == "http://127.0.0.1:9/api/v3"
        finally:
            await sandbox.close()
            await local.close()

    run(scenario)


# --- credentials -------------------------------------------------------------------------------------


def test_credentials_come_from_the_environment_exchange_specific_first() -> None:
    env = {"SLF_API_KEY": "generic-key", "SLF_API_SECRET": "generic-secret"}
    found = Credentials.from_env("binance", env)
    assert found is not None
    assert (found.api_key, found.secret) == ("generic-key", "generic-secret")
    env |= {"SLF_BINANCE_API_KEY": "bn-key", "SLF_BINANCE_API_SECRET": "bn-secret"}
    found = Credentials.load("binance", environ=env)
    assert (found.api_key, found.secret) == ("bn-key", "bn-secret")
    assert Credentials.from_env("binance", {}) is None
    with pytest.raises(ConfigError, match="SLF_API_SECRET is not set"):
        Credentials.from_env("binance", {"SLF_API_KEY": "k"})
    with pytest.raises(ConfigError, match="export SLF_BINANCE_API_KEY and SLF_BINANCE_API_SECRET"):
        Credentials.load("binance", environ={})


def test_a_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "binance.key"
    path.write_text("# exchange keys\napi_key = file-key\nsecret = file#secret\n", encoding="utf-8")
    path.chmod(0o600)
    found = Credentials.load("binance", key_file=path, environ={"SLF_API_KEY": "x", "SLF_API_SECRET": "y"})
    assert (found.api_key, found.secret) == ("file-key", "file#secret")
    path.chmod(0o644)
    with pytest.raises(
        ConfigError, match=rf"{path}: the key file is open to other users \(mode 0644, not 0600\)"
    ) as err:
        Credentials.from_file(path)
    assert f"chmod 600 {path}" in str(err.value)
    bare = tmp_path / "bare.key"
    bare.write_text("bare-key\nbare-secret\n", encoding="utf-8")
    bare.chmod(0o600)
    assert Credentials.from_file(bare) == Credentials("bare-key", "bare-secret")
    with pytest.raises(ConfigError, match="cannot read the key file"):
        Credentials.from_file(tmp_path / "missing.key")


def test_a_two_line_key_file_takes_a_base64_secret_with_equals_signs(tmp_path: Path) -> None:
    path = tmp_path / "b64.key"
    path.write_text(
        "vmPUZE6mv9SD5VNHk4=\nNhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j==\n"
    )
    path.chmod(0o600)
    found = Credentials.from_file(path)
    assert found.api_key == "vmPUZE6mv9SD5VNHk4="
    assert found.secret == "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j=="
    named = tmp_path / "named.key"
    named.write_text("SLF_BINANCE_API_KEY=k=1\napi_secret = s==\n")
    named.chmod(0o600)
    assert Credentials.from_file(named) == Credentials("k=1", "s==")
    unknown = tmp_path / "unknown.key"
    unknown.write_text("password=x\n")
    unknown.chmod(0o600)
    with pytest.raises(ConfigError, match="holds no API key and secret"):
        Credentials.from_file(unknown)


def test_credentials_never_show_or_pickle() -> None:
    creds = Credentials("visible-key-123", "very-secret-456", source="environment SLF_API_KEY/SLF_API_SECRET")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "visible-key-123" not in text
        assert "very-secret-456" not in text
        assert "<redacted>" in text
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(creds)
    import copy

    with pytest.raises(TypeError, match="never pickled"):
        copy.deepcopy(creds)
    holder = ExchangeBroker("binance", SYMBOL, creds, options=NO_LIMIT)
    try:
        with pytest.raises(TypeError, match="never pickled"):
            pickle.dumps(holder)
    finally:
        asyncio.run(holder.close())


def test_the_log_filter_redacts_key_and_secret_from_every_logger() -> None:
    creds = Credentials("visible-key-123", "very-secret-456")
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    redactor = creds.redactor()
    try:
        redactor.install()
        child = logging.getLogger("envs.exchange.test_child")
        child.warning("headers %s", {"X-MBX-APIKEY": "visible-key-123"})
        child.warning("secret=very-secret-456 in the message itself")
        try:
            raise RuntimeError("boom with very-secret-456")
        except RuntimeError:
            child.exception("failed")
    finally:
        redactor.uninstall()
        root.removeHandler(handler)
    assert redactor not in root.filters
    assert not any(redactor in h.filters for h in root.handlers)
    text = stream.getvalue()
    assert "visible-key-123" not in text
    assert "very-secret-456" not in text
    assert "RuntimeError: boom with <redacted>" in text
    assert "headers {'X-MBX-APIKEY': '<redacted>'}" in text
    assert RedactingFilter(["ab"]).redact("tab") == "tab"  # too short to be a secret: left alone


# --- the feed ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def feed_of(fake: FakeBinance, symbol: str = SYMBOL, **kw: Any) -> AsyncIterator[CcxtFeed]:
    feed = CcxtFeed("binance", symbol, kw.pop("timeframe", "1m"), api_url=fake.url, options=NO_LIMIT, **kw)
    try:
        yield feed
    finally:
        await feed.close()


async def _consume(feed: CcxtFeed, queue: asyncio.Queue[Any]) -> None:
    async for bar in feed.bars():
        await queue.put((bar, feed.quote(), feed.backlog))


def _ns(frame: pd.DataFrame, row: int) -> int:
    return int(frame.index[row].value)


def test_the_feed_back_fills_the_warm_up_window_like_load_ohlcv() -> None:
    async def scenario() -> None:
        bars = _btc()
        async with exchange() as fake, feed_of(fake, warmup=250, page_limit=100) as feed:
            assert isinstance(feed, BarFeed)
            await feed.start()
            history = feed.history()
            quote = feed.quote()
            assert quote is not None
            klines = sum(1 for _, path in fake.requests if path == "/api/v3/klines")
            assert klines >= 3  # paginated
        expected = load_ohlcv(bars.iloc[NOW_ROW - 249 : NOW_ROW + 1], symbol=SYMBOL)
        pd.testing.assert_frame_equal(history, expected, check_exact=True)
        # Before the first bar the quote is the forming candle's: its open time and open price.
        assert quote.time_ns == _ns(bars, NOW_ROW + 1)
        assert quote.price == float(bars["open"].iloc[NOW_ROW + 1])
        assert history.index.unit == "ns"
        assert history.index.name == "timestamp"
        assert history.attrs["symbol"] == SYMBOL

    run(scenario)


def test_the_feed_yields_closed_candles_only_in_order_and_back_fills_a_pause() -> None:
    async def scenario() -> None:
        bars = _btc()
        async with exchange() as fake, feed_of(fake, warmup=10, poll_interval=0.01) as feed:
            await feed.start()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            task = asyncio.create_task(_consume(feed, queue))
            try:
                fake.advance(30_000)  # half way through bar NOW_ROW + 1: nothing has closed
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(queue.get(), 0.3)
                fake.set_time(fake.close_time_of(NOW_ROW + 1))
                bar, quote, backlog = await asyncio.wait_for(queue.get(), 2.0)
                assert backlog == 0
                row = NOW_ROW + 1
                assert bar.time_ns == _ns(bars, row)
                assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == tuple(
                    bars.iloc[row][["open", "high", "low", "close", "volume"]]
                )  # the full candle, not the forming one's partial values
                assert quote == Quote(_ns(bars, row + 1), float(bars["open"].iloc[row + 1]), quote.volume)
                # A pause: five candles close before the next poll; all come, in order, once.
                fake.set_time(fake.close_time_of(NOW_ROW + 6) + 20_000)
                got = [await asyncio.wait_for(queue.get(), 2.0) for _ in range(5)]
                assert [b.time_ns for b, _, _ in got] == [
                    _ns(bars, r) for r in range(NOW_ROW + 2, NOW_ROW + 7)
                ]
                assert [q.time_ns for _, q, _ in got] == [
                    _ns(bars, r) for r in range(NOW_ROW + 3, NOW_ROW + 8)
                ]
                assert [q.price for _, q, _ in got] == list(bars["open"].iloc[NOW_ROW + 3 : NOW_ROW + 8])
                assert [n for _, _, n in got] == [4, 3, 2, 1, 0]  # catching up, then at the newest
                with pytest.raises(TimeoutError):  # no duplicate, no forming candle
                    await asyncio.wait_for(queue.get(), 0.3)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    run(scenario)


def test_the_feed_rides_out_transient_errors() -> None:
    async def scenario() -> None:
        bars = _btc()
        async with exchange() as fake, feed_of(fake, warmup=5, poll_interval=0.01, max_backoff=0.05) as feed:
            await feed.start()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            task = asyncio.create_task(_consume(feed, queue))
            try:
                fake.fail_next("500", n=2, scope="any")
                fake.fail_next("429", n=2, scope="any")
                fake.fail_next("timeout", n=1, scope="any", delay=0.2)
                fake.set_time(fake.close_time_of(NOW_ROW + 2))
                got = [await asyncio.wait_for(queue.get(), 5.0) for _ in range(2)]
                assert [b.time_ns for b, _, _ in got] == [_ns(bars, NOW_ROW + 1), _ns(bars, NOW_ROW + 2)]
                assert not task.done()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    run(scenario)


def _waits(messages: list[str], what: str) -> list[float]:
    return [float(m.rsplit("retrying in ", 1)[1].split()[0]) for m in messages if what in m]


def test_the_feed_waits_as_a_rate_limit_or_ip_ban_asks(caplog: pytest.LogCaptureFixture) -> None:
    """429 with Retry-After and Binance's 418 ban (its end in the body, by the exchange's clock) are
    retried no sooner than asked, beyond max_backoff; the waits are read from the log, not timed."""

    async def scenario() -> None:
        bars = _btc()
        async with exchange() as fake, feed_of(fake, warmup=3, poll_interval=0.01, max_backoff=0.02) as feed:
            await feed.start()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            task = asyncio.create_task(_consume(feed, queue))
            try:
                fake.set_time(fake.close_time_of(NOW_ROW + 1))
                bar, _, _ = await asyncio.wait_for(queue.get(), 5.0)
                assert bar.time_ns == _ns(bars, NOW_ROW + 1)
                # The clock stands still from here (as an exchange's would, for the ban's end).
                fake.fail_next("429", scope="any", retry_after=0.3)
                fake.fail_next("418", scope="any", retry_after=0.4)
                while fake._scripts:  # the feed keeps polling through them
                    await asyncio.sleep(0.05)
                fake.set_time(fake.close_time_of(NOW_ROW + 2))
                bar, _, _ = await asyncio.wait_for(queue.get(), 5.0)
                assert bar.time_ns == _ns(bars, NOW_ROW + 2)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        async with exchange() as fake, feed_of(fake, warmup=3, start_attempts=1) as banned:
            fake.fail_next("418", scope="any", retry_after=120)
            with pytest.raises(
                RetryableBrokerError, match=r"rate limit \(HTTP 418, IP banned\), retry after 120 s: .*banned"
            ) as err:
                await banned.start()
            assert "wait as the exchange asks" in str(err.value)

    with caplog.at_level(logging.WARNING, logger="envs.exchange"):
        run(scenario)
    assert _waits(caplog.messages, "rate limit (HTTP 429), retry after 0.3 s") == [0.3]
    (ban,) = _waits(caplog.messages, "rate limit (HTTP 418, IP banned), retry after")
    assert 0.2 < ban <= 0.4  # the ban's end less the exchange's time now


def test_a_rate_limited_order_tells_the_wait_the_exchange_asks() -> None:
    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            fake.fail_next("418", scope="order", retry_after=30)
            banned = await b.submit(_order("ban-1", 0.01), _quote(fake))
            assert (banned.status, banned.kind, banned.code) == (
                OrderStatus.ERRORED,
                ErrorKind.RATE_LIMIT,
                "418",
            )
            assert b.retry_after is not None
            assert 25.0 < b.retry_after <= 30.0
            fake.fail_next("429", scope="order")  # no Retry-After header: no wait named
            limited = await b.submit(_order("ban-2", 0.01), _quote(fake))
            assert limited.kind is ErrorKind.RATE_LIMIT
            assert b.retry_after is None

    run(scenario)


def test_an_unreachable_exchange_fails_start_with_a_retryable_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def scenario() -> None:
        feed = CcxtFeed(
            "binance", SYMBOL, warmup=5, api_url=url, poll_interval=0.01, start_attempts=2, options=NO_LIMIT
        )
        try:
            with pytest.raises(
                RetryableBrokerError,
                match=r"load_markets failed 2 times: GET http://127\.0\.0\.1:\d+/api/v3/exchangeInfo "
                r"\(connection refused\)",
            ):
                await feed.start()
        finally:
            await feed.close()
        b = ExchangeBroker("binance", SYMBOL, KEYS, api_url=url, options=NO_LIMIT)
        try:
            with pytest.raises(RetryableBrokerError, match=r"cannot reach the exchange: .*refused"):
                await b.start()
        finally:
            await b.close()

    run(scenario)


def test_an_unknown_host_and_a_timeout_are_named_as_the_cause() -> None:
    async def scenario() -> None:
        feed = CcxtFeed(
            "binance",
            SYMBOL,
            warmup=5,
            api_url="http://no-such-host.invalid",
            poll_interval=0.01,
            start_attempts=1,
            options=NO_LIMIT,
        )
        try:
            with pytest.raises(RetryableBrokerError, match=r"exchangeInfo \(host name not found"):
                await feed.start()
        finally:
            await feed.close()
        async with exchange() as fake:
            slow = CcxtFeed(
                "binance",
                SYMBOL,
                warmup=5,
                api_url=fake.url,
                start_attempts=1,
                timeout=TIMEOUT_S,
                options=NO_LIMIT,
            )
            fake.fail_next("timeout", scope="any", delay=3 * TIMEOUT_S)
            try:
                with pytest.raises(RetryableBrokerError, match=r"\(no answer in time \(timed out\)\)"):
                    await slow.start()
            finally:
                await slow.close()

    run(scenario)


def test_signed_requests_are_stamped_by_the_exchanges_clock() -> None:
    """The fake's clock is years behind the local one (far beyond any receive window): the broker's
    client measures the offset at start and signs by the exchange's time."""

    async def scenario() -> None:
        async with exchange() as fake, broker(fake) as b:
            client = b.client
            assert client.options["adjustForTimeDifference"] is True
            offset = client.milliseconds() - fake.now_ms()
            assert offset > 86_400_000  # the fake's clock is in the data's past
            assert abs(client.options["timeDifference"] - offset) < 60_000
            assert abs(client.nonce() - fake.now_ms()) < 60_000  # the timestamp signed requests carry
            assert (await b.submit(_order("clock-1", 0.01), _quote(fake))).filled
        async with exchange() as fake, feed_of(fake, warmup=1) as feed:
            await feed.start()
            assert feed.client.options.get("timeDifference", 0) == 0  # public data: not measured

    run(scenario)


def test_without_an_exchange_clock_a_candle_closes_a_margin_after_its_close_time() -> None:
    async def scenario() -> None:
        bars = _btc()
        async with exchange() as fake:
            from envs.exchange import ccxt_client

            client = ccxt_client("binance", api_url=fake.url, options=NO_LIMIT)
            client.has = {**client.has, "fetchTime": False}  # an exchange that tells no time
            client.milliseconds = fake.now_ms  # the local clock, here the fake's
            feed = CcxtFeed("binance", SYMBOL, warmup=3, poll_interval=0.01, client=client, close_margin=2.0)
            try:
                fake.advance(1_000)  # bar NOW_ROW closed 1 s ago: not yet, by the margin
                await feed.start()
                assert feed.history().index[-1].value == _ns(bars, NOW_ROW - 1)
                queue: asyncio.Queue[Any] = asyncio.Queue()
                task = asyncio.create_task(_consume(feed, queue))
                try:
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(queue.get(), 0.3)
                    fake.advance(1_000)  # 2 s past its close
                    bar, _, _ = await asyncio.wait_for(queue.get(), 2.0)
                    assert bar.time_ns == _ns(bars, NOW_ROW)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            finally:
                await feed.close()

    run(scenario)


def test_server_errors_at_start_and_on_the_balance_are_retryable_broker_errors() -> None:
    async def scenario() -> None:
        async with exchange() as fake:
            fake.fail_next("500", scope="any")
            with pytest.raises(RetryableBrokerError, match="Internal error"):
                async with broker(fake):
                    pass
            async with broker(fake) as b:
                fake.fail_next("503", scope="any")
                with pytest.raises(RetryableBrokerError, match="cannot fetch the balance: System is under"):
                    await b.account()
                assert (await b.account()).cash == 10_000.0

    run(scenario)


def test_features_from_the_live_feed_equal_the_replays_bit_for_bit() -> None:
    """eurusd_1h has weekend gaps: the warm-up reaches back over them; each live bar's features,
    computed over the feed's bounded history as the runner does, equal the replay's row."""

    async def scenario() -> None:
        data = load_dataset("eurusd_1h")
        start, live = 1200, 24
        window = 3 * min_rows(FeatureConfig())  # the runner's HISTORY_FACTOR x min_rows
        full = compute_features(data.iloc[: start + live], FeatureConfig()).values
        fake = FakeBinance(data, symbol="EUR/USD", min_notional=0.0, step_size=1.0, min_qty=1.0)
        fake.set_time(fake.close_time_of(start - 1))
        async with fake, feed_of(fake, "EUR/USD", timeframe="1h", warmup=window, poll_interval=0.01) as feed:
            await feed.start()
            history = feed.history()
            assert len(history) == window
            assert history.index[-1] == data.index[start - 1]
            frame = history
            it = feed.bars().__aiter__()
            for t in range(start, start + live):
                fake.set_time(fake.close_time_of(t))
                bar = await asyncio.wait_for(anext(it), 2.0)
                assert bar.time_ns == _ns(data, t)
                row = pd.DataFrame(
                    [[bar.open, bar.high, bar.low, bar.close, bar.volume]],
                    index=pd.DatetimeIndex([pd.Timestamp(bar.time_ns, tz="UTC")], name="timestamp").as_unit(
                        "ns"
                    ),
                    columns=["open", "high", "low", "close", "volume"],
                )
                frame = pd.concat([frame, row]).iloc[-window:]
                got = compute_features(frame, FeatureConfig()).values[-1]
                np.testing.assert_array_equal(got, full[t], err_msg=f"bar {t}")

    run(scenario)


# --- the fake exchange as a separate process -----------------------------------------------------------


def test_fake_binance_runs_as_a_subprocess_with_persistent_state(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    _btc().iloc[:1600].to_csv(data)
    state = tmp_path / "state.json"

    def start() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, str(FAKE_SCRIPT), "--port", "0", "--data", str(data), "--state", str(state),
             "--symbol", SYMBOL, "--start", str(NOW_ROW)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:"), line + (proc.stderr.read() if proc.stderr else "")
        return proc, line.split()[1]

    def stop(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    async def trade(url: str, oid: str) -> OrderResult:
        b = ExchangeBroker("binance", SYMBOL, KEYS, api_url=url, options=NO_LIMIT)
        try:
            await b.start()
            return await b.submit(_order(oid, 0.01), Quote(0, 40_000.0, float("nan")))
        finally:
            await b.close()

    async def drive(url: str) -> tuple[OrderResult, OrderResult, list[dict[str, Any]]]:
        """The control endpoints a test uses to script a server in another process."""
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/fake/fail", json={"kind": "notional"}) as r:
                assert r.status == 200
            refused = await trade(url, "p-2")
            async with http.post(f"{url}/fake/time", json={"advance_ms": 120_000}) as r:
                assert r.status == 200
            moved = await trade(url, "p-3")
            async with http.get(f"{url}/fake/orders") as r:
                orders = await r.json()
        return refused, moved, orders

    proc, url = start()
    try:
        first = asyncio.run(trade(url, "p-1"))
        assert first.filled
        assert first.time_ns == _ns(_btc(), NOW_ROW) + 60_000_000_000  # the clock: bar NOW_ROW has closed
    finally:
        stop(proc)
    assert proc.returncode == 0
    proc, url = start()  # restarted on the same state: the order is still there
    try:
        again = asyncio.run(trade(url, "p-1"))
        assert again.filled
        assert again.filled_qty == first.filled_qty
        assert again.price == first.price
        control = asyncio.run(drive(url))
    finally:
        stop(proc)
    refused, moved, orders = control
    assert _words(refused) == (OrderStatus.REJECTED, ErrorKind.MIN_NOTIONAL, MSG_NOTIONAL, "-1013")
    assert moved.filled
    assert moved.time_ns == first.time_ns + 120_000_000_000  # the clock moved two bars over HTTP
    assert [o["clientOrderId"] for o in orders] == ["p-1", "p-3"]
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert [o["clientOrderId"] for o in saved["orders"]] == ["p-1", "p-3"]
    assert saved["duplicates"] == 0  # the restarted broker asked first and never resent it
