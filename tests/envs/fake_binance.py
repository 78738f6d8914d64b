"""A small Binance spot REST server on 127.0.0.1, for testing ccxt's real binance client offline.

It speaks the endpoints ccxt's ``binance`` class calls for spot trading, with Binance's own JSON bodies
and error codes, and a clock the test controls:

=========================  ===========================================================================
``GET /api/v3/ping``       ``{}``
``GET /api/v3/time``       ``{"serverTime": <server clock, ms>}``
``GET /api/v3/exchangeInfo``  the traded symbol (from the data) plus ``ETHBTC`` with ``PRICE_FILTER``,
                           ``LOT_SIZE`` and ``NOTIONAL`` (or ``MIN_NOTIONAL``) filters
``GET /api/v3/klines``     candles of the data that have opened by the server clock (``startTime``,
                           ``endTime``, ``limit``); the forming candle shows only its open
``GET /api/v3/account``    signed; the balances
``POST /api/v3/order``     signed; MARKET orders only; ``newClientOrderId`` checked against Binance's
                           pattern (``-1100``, at most 36 characters) and deduplicated (``-2010
                           Duplicate order sent.``); filters and balance checked in Binance's order
                           and wording; fills at :attr:`FakeBinance.price` (or the forming candle's open);
                           answered as ``newOrderRespType`` asks (``ACK``: the ids only)
``GET /api/v3/order``      signed; by ``origClientOrderId`` or ``orderId`` (``-2013 Order does not exist.``)
``GET /api/v3/myTrades``   signed; the fills of an order (commission and its asset)
=========================  ===========================================================================

Signed requests carry ``X-MBX-APIKEY`` and an HMAC-SHA256 ``signature`` over the query string (and
body); a bad signature gets ``400 {"code":-1022,"msg":"Signature for this request is not valid."}``, an
unknown key ``401 {"code":-2015,...}``. The request timestamp is not checked against the server clock
(that clock is market time, under the test's control). Commission is ``taker_fee`` of the fill, in the
base asset on buys and in the quote asset on sells, as Binance charges without BNB.

Start-up interface
------------------

In-process (an asyncio test)::

    async with FakeBinance(frame, symbol="BTC/USDT", time_ms=t0) as fake:
        fake.url                          # "http://127.0.0.1:<free port>"
        fake.set_time(ms) / fake.advance(ms) / fake.price = 20_000.0
        fake.fail_next("notional", n=1)   # script the next order answers (see FAILURES)
        fake.orders                       # every accepted order, in order

As a separate process (e.g. a runner in a subprocess trading against it)::

    python tests/envs/fake_binance.py --port P --data BARS.csv --state STATE.json \\
        [--symbol BTC/USDT] [--key K --secret S] [--start ROW] [--speed X] [--cash 10000] \\
        [--dedupe all|open] [--min-notional 5] [--step-size 0.00001] [--tick-size 0.01] \\
        [--resp-type ACK|RESULT|FULL] [--open-queries N]

It prints ``READY http://127.0.0.1:P`` on stdout once it listens (``--port 0`` picks a free port) and
stops on SIGTERM/SIGINT. ``--state`` holds balances, orders, the clock and the price as JSON, written
after every change and read back at start, so a restarted server continues where it stopped. The clock
starts at the open of bar ``--start`` plus one bar (so bar ``start`` is the first closed one) and, with
``--speed X``, runs X market milliseconds per wall millisecond; tests may also drive it over HTTP:

* ``POST /fake/time {"time_ms": T}`` or ``{"advance_ms": D}``: set or move the clock;
* ``POST /fake/price {"price": P}`` (``null``: back to the forming candle's open);
* ``POST /fake/fail {"kind": K, "n": N, "scope": "order"|"any"}``: script failures;
* ``GET /fake/orders``: the order log; ``GET /fake/state``: the whole state.

The default credentials are :data:`DEFAULT_KEY` / :data:`DEFAULT_SECRET`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
from aiohttp import web

__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_SECRET",
    "FAILURES",
    "FakeBinance",
    "market_id",
    "read_bars",
]

DEFAULT_KEY = "fake-api-key-0123456789"
DEFAULT_SECRET = "fake-api-secret-9876543210"

# Binance's own bodies.
BODY_NOTIONAL = {"code": -1013, "msg": "Filter failure: NOTIONAL"}
BODY_MIN_NOTIONAL = {"code": -1013, "msg": "Filter failure: MIN_NOTIONAL"}
BODY_LOT_SIZE = {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
BODY_BALANCE = {"code": -2010, "msg": "Account has insufficient balance for requested action."}
BODY_DUPLICATE = {"code": -2010, "msg": "Duplicate order sent."}
BODY_NO_ORDER = {"code": -2013, "msg": "Order does not exist."}
BODY_SIGNATURE = {"code": -1022, "msg": "Signature for this request is not valid."}
BODY_BAD_KEY = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
BODY_NO_QUANTITY = {
    "code": -1102,
    "msg": "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
}
BODY_BAD_CLIENT_ID = {
    "code": -1100,
    "msg": "Illegal characters found in parameter 'newClientOrderId'; "
    "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
}
BODY_BAD_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
BODY_RATE_LIMIT = {
    "code": -1003,
    "msg": "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. "
    "Please use WebSocket Streams for live updates to avoid polling the API.",
}
BODY_IP_BAN = {
    "code": -1003,
    "msg": "Way too much request weight used; IP banned until {until}. "
    "Please use WebSocket Streams for live updates to avoid bans.",
}
BODY_INTERNAL = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
BODY_MAINTENANCE = {"code": 1, "msg": "System is under maintenance."}

FAILURES: dict[str, tuple[int, dict[str, Any]]] = {
    "notional": (400, BODY_NOTIONAL),
    "lot_size": (400, BODY_LOT_SIZE),
    "balance": (400, BODY_BALANCE),
    "429": (429, BODY_RATE_LIMIT),
    "418": (418, BODY_IP_BAN),
    "500": (500, BODY_INTERNAL),
    "503": (503, BODY_MAINTENANCE),
}
"""Scriptable answers: kind -> (HTTP status, body). Two more kinds, ``"timeout"`` (the order is not
executed and the answer comes after ``delay`` seconds) and ``"timeout_filled"`` (executed, answer late),
make the client time out. The ``"418"`` body names the ban's end: the server clock plus ``retry_after``
seconds (60 when not given)."""
TIMEOUT_KINDS = ("timeout", "timeout_filled")

_ORDER_PATH = "/api/v3/order"
_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_SECOND_SYMBOL = ("ETHBTC", "ETH", "BTC")
_RESP_TYPES = ("ACK", "RESULT", "FULL")
_ACK_FIELDS = ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")


def market_id(symbol: str) -> str:
    """Binance's id of a unified symbol: ``"BTC/USDT"`` -> ``"BTCUSDT"``."""
    return symbol.replace("/", "").split(":")[0]


def _num(x: float) -> str:
    """Binance sends decimals as strings; the shortest text that reads back as the same float."""
    return str(np.format_float_positional(float(x), unique=True, trim="-"))


def _decimal_places(step: float) -> int:
    text = _num(step)
    return len(text.split(".")[1]) if "." in text else 0


@dataclass
class _Script:
    kind: str
    remaining: int
    scope: str
    delay: float
    retry_after: float | None = None


class FakeBinance:
    """The fake exchange (see the module docstring).

    Args:
        bars: OHLCV frame as :func:`envs.data.load_ohlcv` returns it (UTC open-time index).
        symbol: unified symbol traded (default ``bars.attrs["symbol"]`` or ``"BTC/USDT"``).
        time_ms: initial server clock (default: the close of the first bar).
        speed: market ms per wall ms the clock runs by itself (0: only the test moves it).
        key, secret: the accepted credentials.
        cash, base_qty: initial quote and base balances.
        taker_fee: commission rate.
        tick_size, step_size, min_qty, min_notional: the symbol's filters.
        notional_filter: ``"NOTIONAL"`` (current Binance) or ``"MIN_NOTIONAL"`` (older symbols).
        state_path: JSON file for persistent state (read at start if it exists).
        host, port: where to listen (port 0: a free port).
        dedupe: ``"all"``: a client order id ever accepted is refused again (``-2010 Duplicate order
            sent.``); ``"open"``: Binance's own rule, only ids of open orders are refused, and market
            orders never stay open, so a resent id trades again (``orders`` then shows it twice).
        resp_type: answer orders as ``newOrderRespType`` ``"ACK"`` (ids only), ``"RESULT"`` or
            ``"FULL"`` whatever the request asks (``None``: as asked, ``FULL`` by default).
        open_queries: the first this many queries of each new order show it ``NEW`` with nothing
            executed (an order still being matched).
    """

    def __init__(
        self,
        bars: pd.DataFrame,
        *,
        symbol: str | None = None,
        time_ms: int | None = None,
        speed: float = 0.0,
        key: str = DEFAULT_KEY,
        secret: str = DEFAULT_SECRET,
        cash: float = 10_000.0,
        base_qty: float = 0.0,
        taker_fee: float = 0.001,
        tick_size: float = 0.01,
        step_size: float = 0.00001,
        min_qty: float = 0.00001,
        min_notional: float = 5.0,
        notional_filter: str = "NOTIONAL",
        state_path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        dedupe: str = "all",
        resp_type: str | None = None,
        open_queries: int = 0,
    ) -> None:
        if dedupe not in ("all", "open"):
            raise ValueError(f"dedupe={dedupe!r}: use 'all' or 'open'")
        if resp_type not in (None, *_RESP_TYPES):
            raise ValueError(f"resp_type={resp_type!r}: use one of {_RESP_TYPES} or None")
        self.dedupe = dedupe
        self.symbol = symbol or str(bars.attrs.get("symbol") or "BTC/USDT")
        self.id = market_id(self.symbol)
        base, _, quote = self.symbol.partition("/")
        self.base, self.quote = base, quote.split(":")[0]
        self._open_ms = np.asarray(bars.index.as_unit("ms").asi8, dtype=np.int64)  # type: ignore[attr-defined]
        self._ohlcv = bars[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
        steps = np.diff(self._open_ms)
        self.timeframe_ms = int(np.median(steps)) if len(steps) else 60_000
        self.key, self.secret = key, secret
        self.taker_fee = taker_fee
        self.tick_size, self.step_size, self.min_qty = tick_size, step_size, min_qty
        self.min_notional = min_notional
        self.notional_filter = notional_filter
        self.host, self.port = host, port
        self.state_path = Path(state_path) if state_path is not None else None
        self.speed = speed
        self.price: float | None = None
        """Fill price of market orders; ``None``: the open of the candle forming at the server clock."""
        self.balances: dict[str, float] = {self.quote: cash, self.base: base_qty}
        self.orders: list[dict[str, Any]] = []
        """Every accepted order (Binance's order fields plus ``fills``), in the order received."""
        self.duplicates = 0
        """Orders refused as duplicates of an accepted client order id."""
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request received."""
        self._scripts: deque[_Script] = deque()
        self.resp_type = resp_type
        """Answer every order with this ``newOrderRespType`` (``"ACK"``: the ids only, ``"RESULT"``: no
        fills, ``"FULL"``); ``None``: the type the request asks for (Binance's default ``FULL``)."""
        self.open_queries = open_queries
        """Queries of a new order (``GET /api/v3/order``) that show it still ``NEW`` and unfilled."""
        self._open_left: dict[str, int] = {}
        first = int(self._open_ms[0]) + self.timeframe_ms if len(self._open_ms) else 0
        self._time_ms = first if time_ms is None else int(time_ms)
        self._anchor = time.monotonic()
        self._runner: web.AppRunner | None = None
        if self.state_path is not None and self.state_path.exists():
            self._load_state()

    # --- the clock and the script -------------------------------------------------------------------
    def now_ms(self) -> int:
        """The server clock (market time)."""
        if self.speed > 0.0:
            return self._time_ms + int((time.monotonic() - self._anchor) * 1000.0 * self.speed)
        return self._time_ms

    def set_time(self, time_ms: int) -> None:
        self._time_ms = int(time_ms)
        self._anchor = time.monotonic()
        self._save_state()

    def advance(self, ms: int) -> None:
        self.set_time(self.now_ms() + int(ms))

    def close_time_of(self, row: int) -> int:
        """Server time at which bar ``row`` of the data has just closed."""
        return int(self._open_ms[row]) + self.timeframe_ms

    def fail_next(
        self,
        kind: str,
        n: int = 1,
        *,
        scope: str = "order",
        delay: float = 2.0,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with a scripted failure.

        Args:
            kind: a key of :data:`FAILURES`, ``"timeout"`` or ``"timeout_filled"``.
            scope: ``"order"`` (POST /api/v3/order only) or ``"any"`` (every /api request).
            delay: seconds a timeout answer is held back (longer than the client's timeout).
            retry_after: a ``Retry-After`` header (seconds) on the answer; for ``"418"`` also the
                ban's length in the body (default 60 s, no header).
        """
        if kind not in FAILURES and kind not in TIMEOUT_KINDS:
            raise ValueError(f"unknown failure {kind!r}; use one of {[*FAILURES, *TIMEOUT_KINDS]}")
        if scope not in ("order", "any"):
            raise ValueError(f"scope={scope!r}: use 'order' or 'any'")
        self._scripts.append(_Script(kind, n, scope, delay, retry_after))

    def _scripted(self, method: str, path: str) -> _Script | None:
        if not self._scripts:
            return None
        script = self._scripts[0]
        is_order = method == "POST" and path == _ORDER_PATH
        if script.scope == "order" and not is_order:
            return None
        script.remaining -= 1
        if script.remaining <= 0:
            self._scripts.popleft()
        return script

    # --- state --------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "time_ms": self.now_ms(),
            "price": self.price,
            "balances": self.balances,
            "orders": self.orders,
            "duplicates": self.duplicates,
        }

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), indent=1), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _load_state(self) -> None:
        assert self.state_path is not None
        data = json.loads(self.state_path.read_text(encoding="utf-8"))
        self._time_ms = int(data["time_ms"])
        self._anchor = time.monotonic()
        self.price = data.get("price")
        self.balances = {str(k): float(v) for k, v in data["balances"].items()}
        self.orders = list(data["orders"])
        self.duplicates = int(data.get("duplicates", 0))

    # --- market data --------------------------------------------------------------------------------
    def _opened(self) -> int:
        """Number of candles that have opened by the server clock."""
        return int(np.searchsorted(self._open_ms, self.now_ms(), side="right"))

    def market_price(self) -> float:
        """The fill price: :attr:`price` when set, else the forming candle's open (else the last close)."""
        if self.price is not None:
            return float(self.price)
        n = self._opened()
        if n == 0:
            raise LookupError("no candle has opened yet")
        row = n - 1
        if int(self._open_ms[row]) + self.timeframe_ms > self.now_ms():
            return float(self._ohlcv[row, 0])
        return float(self._ohlcv[row, 3])

    def _kline(self, row: int, now: int) -> list[Any]:
        t = int(self._open_ms[row])
        o, h, lo, c, v = self._ohlcv[row]
        if t + self.timeframe_ms > now:  # forming: only the open is known yet
            h = lo = c = o
            v = 0.0
        return [
            t,
            _num(o),
            _num(h),
            _num(lo),
            _num(c),
            _num(v),
            t + self.timeframe_ms - 1,
            _num(v * c),
            0,
            "0",
            "0",
            "0",
        ]

    def _exchange_info(self) -> dict[str, Any]:
        def entry(sym: str, base: str, quote: str) -> dict[str, Any]:
            notional: dict[str, Any]
            if self.notional_filter == "MIN_NOTIONAL":
                notional = {
                    "filterType": "MIN_NOTIONAL",
                    "minNotional": _num(self.min_notional),
                    "applyToMarket": True,
                    "avgPriceMins": 5,
                }
            else:
                notional = {
                    "filterType": "NOTIONAL",
                    "minNotional": _num(self.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                }
            return {
                "symbol": sym,
                "status": "TRADING",
                "baseAsset": base,
                "baseAssetPrecision": 8,
                "quoteAsset": quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True,
                "ocoAllowed": True,
                "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True,
                "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": _num(self.tick_size),
                        "maxPrice": "1000000.00000000",
                        "tickSize": _num(self.tick_size),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": _num(self.min_qty),
                        "maxQty": "9000.00000000",
                        "stepSize": _num(self.step_size),
                    },
                    notional,
                ],
                "permissions": [],
                "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            }

        return {
            "timezone": "UTC",
            "serverTime": self.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": [entry(self.id, self.base, self.quote), entry(*_SECOND_SYMBOL)],
        }

    # --- signed requests ----------------------------------------------------------------------------
    @staticmethod
    def _split_signature(text: str) -> tuple[str, str | None]:
        parts = text.split("&") if text else []
        kept = [p for p in parts if not p.startswith("signature=")]
        sig = next((p.partition("=")[2] for p in parts if p.startswith("signature=")), None)
        return "&".join(kept), sig

    def _check_signed(self, request: web.Request, body: str) -> web.Response | None:
        if request.headers.get("X-MBX-APIKEY") != self.key:
            return _json(BODY_BAD_KEY, status=401)
        # The raw query string, as sent (aiohttp's query_string is percent-decoded): that is what is signed.
        query, sig_q = self._split_signature(request.raw_path.partition("?")[2])
        payload, sig_b = self._split_signature(body)
        signature = sig_q or sig_b
        total = query + payload  # Binance signs the query string followed by the body
        expected = hmac.new(self.secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        if signature is None or not hmac.compare_digest(signature, expected):
            return _json(BODY_SIGNATURE, status=400)
        return None

    # --- orders -------------------------------------------------------------------------------------
    def _find(self, params: dict[str, str]) -> dict[str, Any] | None:
        cid = params.get("origClientOrderId")
        oid = params.get("orderId")
        for order in self.orders:
            if order["symbol"] == params.get("symbol") and (
                (cid is not None and order["clientOrderId"] == cid)
                or (oid is not None and str(order["orderId"]) == oid)
            ):
                return order
        return None

    def _place(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if params.get("symbol") != self.id:
            return 400, BODY_BAD_SYMBOL
        if params.get("type") != "MARKET":
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        side = params.get("side")
        if side not in ("BUY", "SELL"):
            return 400, {"code": -1117, "msg": "Invalid side."}
        cid = params.get("newClientOrderId") or f"fake-{len(self.orders) + 1}"
        if not _CLIENT_ID.fullmatch(cid):
            return 400, BODY_BAD_CLIENT_ID
        if self.dedupe == "all" and any(o["clientOrderId"] == cid for o in self.orders):
            self.duplicates += 1
            self._save_state()
            return 400, BODY_DUPLICATE
        try:
            qty = float(params["quantity"])
        except (KeyError, ValueError):
            return 400, {
                "code": -1102,
                "msg": "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
            }
        steps = (qty - self.min_qty) / self.step_size
        if qty < self.min_qty or abs(steps - round(steps)) > 1e-6 or qty > 9000.0:
            return 400, BODY_LOT_SIZE
        price = self.market_price()
        notional = qty * price
        if notional < self.min_notional:
            return 400, BODY_MIN_NOTIONAL if self.notional_filter == "MIN_NOTIONAL" else BODY_NOTIONAL
        if side == "BUY":
            commission, asset = qty * self.taker_fee, self.base
            if self.balances[self.quote] < notional:
                return 400, BODY_BALANCE
            self.balances[self.quote] -= notional
            self.balances[self.base] += qty - commission
        else:
            commission, asset = notional * self.taker_fee, self.quote
            if self.balances[self.base] < qty:
                return 400, BODY_BALANCE
            self.balances[self.base] -= qty
            self.balances[self.quote] += notional - commission
        now = self.now_ms()
        order_id = len(self.orders) + 1
        order = {
            "symbol": self.id,
            "orderId": order_id,
            "orderListId": -1,
            "clientOrderId": cid,
            "transactTime": now,
            "price": "0.00000000",
            "origQty": _num(qty),
            "executedQty": _num(qty),
            "origQuoteOrderQty": "0.00000000",
            "cummulativeQuoteQty": _num(notional),
            "status": "FILLED",
            "timeInForce": "GTC",
            "type": "MARKET",
            "side": side,
            "workingTime": now,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "fills": [
                {
                    "price": _num(price),
                    "qty": _num(qty),
                    "commission": _num(commission),
                    "commissionAsset": asset,
                    "tradeId": order_id,
                }
            ],
        }
        self.orders.append(order)
        self._open_left[cid] = self.open_queries
        self._save_state()
        kind = (self.resp_type or params.get("newOrderRespType") or "FULL").upper()
        if kind == "ACK":
            return 200, {k: order[k] for k in _ACK_FIELDS}
        if kind == "RESULT":
            return 200, {k: v for k, v in order.items() if k != "fills"}
        return 200, order

    def _query_view(self, order: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in order.items() if k not in ("fills", "transactTime")}
        view.update(
            {
                "stopPrice": "0.00000000",
                "icebergQty": "0.00000000",
                "time": order["transactTime"],
                "updateTime": order["transactTime"],
                "isWorking": True,
            }
        )
        return view

    def _trades(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "symbol": order["symbol"],
                "id": fill["tradeId"],
                "orderId": order["orderId"],
                "orderListId": -1,
                "price": fill["price"],
                "qty": fill["qty"],
                "quoteQty": _num(float(fill["price"]) * float(fill["qty"])),
                "commission": fill["commission"],
                "commissionAsset": fill["commissionAsset"],
                "time": order["transactTime"],
                "isBuyer": order["side"] == "BUY",
                "isMaker": False,
                "isBestMatch": True,
            }
            for fill in order["fills"]
        ]

    # --- HTTP ---------------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path.startswith("/api/"):
            script = self._scripted(request.method, request.path)
            if script is not None:
                if script.kind in TIMEOUT_KINDS:
                    if script.kind == "timeout_filled":
                        await handler(request)  # executed, but the answer never arrives in time
                    await asyncio.sleep(script.delay)
                    return _json(BODY_INTERNAL, status=504)
                status, body = FAILURES[script.kind]
                headers = {}
                if script.retry_after is not None:
                    headers["Retry-After"] = _num(script.retry_after)
                if script.kind == "418":
                    ban_ms = int(1000 * (60.0 if script.retry_after is None else script.retry_after))
                    body = {**body, "msg": body["msg"].format(until=self.now_ms() + ban_ms)}
                return _json(body, status=status, headers=headers)
        return await handler(request)

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self.now_ms()})

    async def _info(self, request: web.Request) -> web.Response:
        return _json(self._exchange_info())

    async def _klines(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("symbol") == _SECOND_SYMBOL[0]:
            return _json([])
        if q.get("symbol") != self.id:
            return _json(BODY_BAD_SYMBOL, status=400)
        limit = min(int(q.get("limit", 500)), 1000)
        now = self.now_ms()
        opened = self._opened()
        times = self._open_ms[:opened]
        if "startTime" in q:
            lo = int(np.searchsorted(times, int(q["startTime"]), side="left"))
            hi = opened
            if "endTime" in q:
                hi = int(np.searchsorted(times, int(q["endTime"]), side="right"))
            rows = range(lo, min(hi, lo + limit))
        else:
            hi = opened
            if "endTime" in q:
                hi = int(np.searchsorted(times, int(q["endTime"]), side="right"))
            rows = range(max(0, hi - limit), hi)
        return _json([self._kline(r, now) for r in rows])

    async def _account(self, request: web.Request) -> web.Response:
        refused = self._check_signed(request, "")
        if refused is not None:
            return refused
        return _json(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "updateTime": self.now_ms(),
                "accountType": "SPOT",
                "balances": [
                    {"asset": asset, "free": _num(qty), "locked": "0.00000000"}
                    for asset, qty in self.balances.items()
                ],
                "permissions": ["SPOT"],
            }
        )

    async def _post_order(self, request: web.Request) -> web.Response:
        body = await request.text()
        refused = self._check_signed(request, body)
        if refused is not None:
            return refused
        params = {**request.query, **dict(p.partition("=")[::2] for p in body.split("&") if p)}
        params = {k: unquote(v) for k, v in params.items()}
        status, answer = self._place(params)
        return _json(answer, status=status)

    async def _get_order(self, request: web.Request) -> web.Response:
        refused = self._check_signed(request, "")
        if refused is not None:
            return refused
        order = self._find(dict(request.query))
        if order is None:
            return _json(BODY_NO_ORDER, status=400)
        view = self._query_view(order)
        left = self._open_left.get(order["clientOrderId"], 0)
        if left > 0:  # still being matched: shown as a new, unfilled order
            self._open_left[order["clientOrderId"]] = left - 1
            view.update({"status": "NEW", "executedQty": "0", "cummulativeQuoteQty": "0"})
        return _json(view)

    async def _my_trades(self, request: web.Request) -> web.Response:
        refused = self._check_signed(request, "")
        if refused is not None:
            return refused
        q = dict(request.query)
        orders = [o for o in self.orders if o["symbol"] == q.get("symbol")]
        if "orderId" in q:
            orders = [o for o in orders if str(o["orderId"]) == q["orderId"]]
        return _json([t for o in orders for t in self._trades(o)])

    # control endpoints (a subprocess server is driven through them)
    async def _fake_time(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "time_ms" in data:
            self.set_time(int(data["time_ms"]))
        if "advance_ms" in data:
            self.advance(int(data["advance_ms"]))
        return _json({"time_ms": self.now_ms()})

    async def _fake_price(self, request: web.Request) -> web.Response:
        data = await request.json()
        price = data.get("price")
        self.price = None if price is None else float(price)
        self._save_state()
        return _json({"price": self.price})

    async def _fake_fail(self, request: web.Request) -> web.Response:
        data = await request.json()
        try:
            self.fail_next(
                str(data["kind"]),
                int(data.get("n", 1)),
                scope=str(data.get("scope", "order")),
                delay=float(data.get("delay", 2.0)),
                retry_after=None if data.get("retry_after") is None else float(data["retry_after"]),
            )
        except (KeyError, ValueError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json({"scripted": len(self._scripts)})

    async def _fake_orders(self, request: web.Request) -> web.Response:
        return _json(self.orders)

    async def _fake_state(self, request: web.Request) -> web.Response:
        return _json(self.state())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/api/v3/account", self._account)
        app.router.add_post(_ORDER_PATH, self._post_order)
        app.router.add_get(_ORDER_PATH, self._get_order)
        app.router.add_get("/api/v3/myTrades", self._my_trades)
        app.router.add_post("/fake/time", self._fake_time)
        app.router.add_post("/fake/price", self._fake_price)
        app.router.add_post("/fake/fail", self._fake_fail)
        app.router.add_get("/fake/orders", self._fake_orders)
        app.router.add_get("/fake/state", self._fake_state)
        return app

    async def start(self) -> FakeBinance:
        """Listen on ``host:port`` (a free port when 0); :attr:`url` tells where."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> FakeBinance:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        body, status=status, headers=headers, dumps=lambda x: json.dumps(x, separators=(",", ":"))
    )


# --- as a separate process ----------------------------------------------------------------------------
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A fake Binance spot REST server on 127.0.0.1 (tests only).")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: a free port)")
    p.add_argument("--data", required=True, help="OHLCV bars (CSV or Parquet; see read_bars)")
    p.add_argument("--state", required=True, help="JSON state file (created, updated, read back at start)")
    p.add_argument("--symbol", default=None, help="unified symbol (default: the data's, else BTC/USDT)")
    p.add_argument("--key", default=DEFAULT_KEY)
    p.add_argument("--secret", default=DEFAULT_SECRET)
    p.add_argument("--start", type=int, default=0, help="the clock starts when this bar has just closed")
    p.add_argument("--speed", type=float, default=0.0, help="market ms per wall ms (0: clock moved by hand)")
    p.add_argument("--cash", type=float, default=10_000.0, help="initial quote balance")
    p.add_argument("--min-notional", type=float, default=5.0)
    p.add_argument("--step-size", type=float, default=0.00001)
    p.add_argument("--tick-size", type=float, default=0.01)
    p.add_argument(
        "--dedupe",
        choices=("all", "open"),
        default="all",
        help="refuse every reused client order id (all) or, as Binance does, only those of open orders",
    )
    p.add_argument(
        "--resp-type",
        choices=_RESP_TYPES,
        default=None,
        help="answer every order with this newOrderRespType (default: as the request asks)",
    )
    p.add_argument(
        "--open-queries", type=int, default=0, help="queries of a new order that show it still NEW"
    )
    return p.parse_args(argv)


def read_bars(path: str | os.PathLike[str]) -> pd.DataFrame:
    """OHLCV bars from a CSV or Parquet file as :func:`envs.data.load_ohlcv` writes and reads them
    (time in the index or in a ``timestamp``/``datetime``/``date``/``time`` column; ISO text or epoch
    ms). Read with pandas alone, so the server process starts without importing the project."""
    p = Path(path)
    table = pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_csv(p)
    table.columns = [str(c).lower() for c in table.columns]
    label = next((c for c in ("timestamp", "datetime", "date", "time") if c in table.columns), None)
    if label is not None:
        table = table.set_index(label)
    raw = table.index
    if pd.api.types.is_numeric_dtype(raw):
        index = pd.to_datetime(np.asarray(raw, dtype=np.int64), unit="ms", utc=True)
    else:
        index = pd.to_datetime(raw, utc=True)
    frame = pd.DataFrame(
        table[["open", "high", "low", "close", "volume"]].to_numpy(np.float64),
        index=pd.DatetimeIndex(index, name="timestamp").as_unit("ns"),
        columns=["open", "high", "low", "close", "volume"],
    )
    if "symbol" in table.columns and len(table):
        frame.attrs["symbol"] = str(table["symbol"].iloc[0])
    return frame


async def _serve(args: argparse.Namespace) -> None:
    bars = read_bars(args.data)
    probe = FakeBinance(bars, symbol=args.symbol)
    fake = FakeBinance(
        bars,
        symbol=args.symbol,
        time_ms=probe.close_time_of(args.start) if len(bars) else None,
        speed=args.speed,
        key=args.key,
        secret=args.secret,
        cash=args.cash,
        min_notional=args.min_notional,
        step_size=args.step_size,
        min_qty=args.step_size,
        tick_size=args.tick_size,
        state_path=args.state,
        port=args.port,
        dedupe=args.dedupe,
        resp_type=args.resp_type,
        open_queries=args.open_queries,
    )
    await fake.start()
    fake._save_state()
    print(f"READY {fake.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        fake._save_state()
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
