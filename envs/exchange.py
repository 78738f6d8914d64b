"""Live trading on a real exchange through ccxt's async client: credentials, broker and bar feed.

* :class:`Credentials`: the API key and secret, read only from environment variables
  (``SLF_<EXCHANGE>_API_KEY``/``SLF_<EXCHANGE>_API_SECRET``, else ``SLF_API_KEY``/``SLF_API_SECRET``) or
  from a key file readable by its owner only (mode 0600). They never show in ``repr``, never pickle,
  and :meth:`Credentials.redactor` gives a logging filter that blanks them out of every log line.
* :class:`ExchangeBroker` (an :class:`~envs.broker.AsyncBroker`): market orders under the runner's
  client order ids; the exchange's refusals come back as :class:`~envs.events.OrderResult` s in the
  exchange's own words and codes, classified as :class:`~envs.broker.SimBroker` classifies its own, so
  the learners see live refusals exactly as they saw simulated ones (``Filter failure: NOTIONAL``,
  ``-1013``). An answer that leaves the order's fate open (a timeout, a 5xx, a dropped connection) is
  settled by asking the exchange for the client order id before reporting an error; a resend that the
  exchange refuses as a duplicate returns what became of the first one.
* :class:`CcxtFeed` (a :class:`~envs.live.BarFeed`): polls ``fetch_ohlcv`` for **closed** candles, by
  the exchange's clock (a candle is closed once ``open + timeframe <= exchange time``), back-fills the
  warm-up window at start and whatever closed while it was not polling, never yields a bar twice or out
  of order, and retries transient errors with back-off instead of failing the runner.

``api_url`` points a client at a testnet or a local server: every REST base URL of the exchange keeps its
path and gets the given scheme and host (for Binance ``.../api/v3``, ``.../sapi/v1`` ...).

ccxt is an optional dependency (``pip install self-learning-flow[live]``); it is imported when a client
is made.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import re
import socket
import stat
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn
from urllib.parse import urlsplit

import numpy as np

from envs.broker import (
    CODE_INSUFFICIENT_BALANCE,
    CODE_MAINTENANCE,
    CODE_RATE_LIMIT,
    CODE_TIMEOUT,
    MSG_INSUFFICIENT_BALANCE,
    MSG_LOT_SIZE,
    MSG_MAINTENANCE,
    MSG_RATE_LIMIT,
    MSG_TIMEOUT,
    AccountSnapshot,
    OrderIntent,
    Quote,
    refusal,
)
from envs.errors import BrokerError, ConfigError, RetryableBrokerError, did_you_mean
from envs.events import ErrorKind, OrderResult, OrderStatus, Side
from envs.live import Bar
from envs.market import MarketSpec, floor_to_step

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "ENV_API_KEY",
    "ENV_API_SECRET",
    "MSG_DUPLICATE_ORDER",
    "CcxtFeed",
    "Credentials",
    "ExchangeBroker",
    "RedactingFilter",
    "ccxt_client",
]

log = logging.getLogger(__name__)

ENV_API_KEY: Final = "SLF_API_KEY"
ENV_API_SECRET: Final = "SLF_API_SECRET"
MSG_DUPLICATE_ORDER: Final = "Duplicate order sent."
"""Binance's answer (code -2010) to an order whose client order id is already in use."""
DEFAULT_TIMEOUT: Final = 10.0
"""Seconds a REST request may take before ccxt gives up."""
DEFAULT_POLL_INTERVAL: Final = 2.0
"""Seconds between two polls of the feed when no new candle has closed."""
DEFAULT_MAX_BACKOFF: Final = 60.0
"""Longest wait, in seconds, between two retries of a failing poll."""
DEFAULT_PAGE_LIMIT: Final = 1000
"""Candles asked for per ``fetch_ohlcv`` call (Binance's maximum)."""
DEFAULT_MAX_REMEMBERED: Final = 100_000
DEFAULT_SETTLE_WAIT: Final = 5.0
"""Seconds the broker asks again for an order the exchange shows as not finished yet."""
DEFAULT_START_ATTEMPTS: Final = 5
DEFAULT_CLOSE_MARGIN: Final = 2.0
"""Seconds past its close time a candle must be, by the local clock, to count as closed (exchanges
without ``fetchTime`` only: the local clock may run ahead and the exchange may still be closing it)."""
"""Tries of each request while a feed starts before it gives up (polling retries for ever)."""

_REDACTED: Final = "<redacted>"
_MIN_SECRET_LEN: Final = 4  # shorter strings would blank out ordinary words
_JSON_OBJECT: Final = re.compile(r"\{.*\}", re.DOTALL)
_BANNED_UNTIL: Final = re.compile(r"banned until (\d{10,})")
# ccxt's precisionMode constants (ccxt.base.decimal_to_precision), named as MarketSpec.from_ccxt reads them.
_PRECISION_MODES: Final = {2: "decimal_places", 4: "tick_size"}
_NS_PER_MS: Final = 1_000_000


# --- credentials ---------------------------------------------------------------------------------------


def _env_names(exchange: str) -> tuple[tuple[str, str], tuple[str, str]]:
    specific = re.sub(r"[^A-Z0-9]", "_", exchange.upper())
    return (f"SLF_{specific}_API_KEY", f"SLF_{specific}_API_SECRET"), (ENV_API_KEY, ENV_API_SECRET)


def _is_key_name(name: str) -> bool:
    """A key-file name for the API key: ``api_key``, ``apikey``, ``key`` or ``..._API_KEY``."""
    name = name.strip().lower()
    return name in ("api_key", "apikey", "key") or name.endswith("api_key")


def _is_secret_name(name: str) -> bool:
    """A key-file name for the secret: ``secret``, ``api_secret`` or ``..._API_SECRET``."""
    name = name.strip().lower()
    return name in ("secret", "api_secret") or name.endswith("api_secret")


class Credentials:
    """An exchange API key and secret; never shown, logged, pickled or written anywhere.

    Make them with :meth:`from_env`, :meth:`from_file` or :meth:`load`. ``repr``/``str`` show only where
    they came from; pickling or copying raises ``TypeError`` (a run directory or bundle can never hold
    them by accident).
    """

    __slots__ = ("_key", "_secret", "source")

    def __init__(self, api_key: str, secret: str, *, source: str = "given") -> None:
        if not api_key or not secret:
            raise ConfigError(
                "an API key and secret must both be non-empty",
                where=source,
                fix=f"set {ENV_API_KEY} and {ENV_API_SECRET} (or the exchange's own variables)",
            )
        self._key = api_key
        self._secret = secret
        self.source = source

    @property
    def api_key(self) -> str:
        return self._key

    @property
    def secret(self) -> str:
        return self._secret

    def __repr__(self) -> str:
        return f"Credentials(api_key={_REDACTED!r}, secret={_REDACTED!r}, source={self.source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return self._key == other._key and self._secret == other._secret

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("Credentials are never pickled or copied: read them from the environment instead")

    @classmethod
    def env_names(cls, exchange: str) -> list[str]:
        """The variables read for ``exchange``, in order of precedence (key, secret, key, secret)."""
        specific, generic = _env_names(exchange)
        return [*specific, *generic]

    @classmethod
    def from_env(cls, exchange: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
        """``SLF_<EXCHANGE>_API_KEY``/``..._SECRET`` if set, else ``SLF_API_KEY``/``SLF_API_SECRET``.

        Returns ``None`` when neither pair is set; raises :class:`ConfigError` for half a pair.
        """
        env = os.environ if environ is None else environ
        for key_name, secret_name in _env_names(exchange):
            key, secret = env.get(key_name, ""), env.get(secret_name, "")
            if key and secret:
                return cls(key, secret, source=f"environment {key_name}/{secret_name}")
            if key or secret:
                missing = secret_name if key else key_name
                raise ConfigError(
                    f"{missing} is not set but its pair is",
                    where="environment",
                    fix=f"export both {key_name} and {secret_name}",
                )
        return None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Credentials:
        """Read a key file: ``api_key=...`` and ``secret=...`` lines (the environment variable names are
        accepted too), or the key on the first line and the secret on the second. Lines starting with ``#``
        are comments. A line is read as ``name=value`` only when one of those names comes before its
        first ``=``: a bare key or secret may hold ``=`` (base64 padding).

        The file must be readable by its owner only (``chmod 600``); anything wider is refused.
        """
        p = Path(path)
        try:
            st = p.stat()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the key file ({exc.strerror})", where=str(p), fix="give an existing file"
            ) from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                f"the key file is open to other users (mode {stat.S_IMODE(st.st_mode):04o}, not 0600)",
                where=str(p),
                fix=f"chmod 600 {p}",
            )
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        named: dict[str, str] = {}
        bare: list[str] = []
        for line in lines:
            # A line is ``name=value`` only when a known name comes before the '=': a bare base64 secret
            # ends in '=' padding (or holds '=' anywhere) and is a value, not a name.
            name, sep, value = line.partition("=")
            if sep and (_is_key_name(name) or _is_secret_name(name)):
                named[name.strip().lower()] = value.strip().strip("'\"")
            else:
                bare.append(line)
        key = next((v for k, v in named.items() if _is_key_name(k)), "")
        secret = next((v for k, v in named.items() if _is_secret_name(k)), "")
        if not named and len(bare) == 2:
            key, secret = bare
        if not key or not secret:
            raise ConfigError(
                "the key file holds no API key and secret",
                where=str(p),
                fix="write two lines 'api_key=...' and 'secret=...'",
            )
        return cls(key, secret, source=f"key file {p}")

    @classmethod
    def load(
        cls,
        exchange: str,
        *,
        key_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Credentials:
        """The key file when given, else the environment; :class:`ConfigError` when there are none."""
        if key_file is not None:
            return cls.from_file(key_file)
        found = cls.from_env(exchange, environ)
        if found is None:
            names = cls.env_names(exchange)
            raise ConfigError(
                f"no API credentials for {exchange}",
                where="environment",
                fix=f"export {names[0]} and {names[1]} (or {names[2]} and {names[3]}), "
                "or give a key file with mode 0600",
            )
        return found

    def redactor(self) -> RedactingFilter:
        """A logging filter that blanks this key and secret out of log records."""
        return RedactingFilter([self._key, self._secret])


class RedactingFilter(logging.Filter):
    """Replaces secrets in log records (message, arguments and traceback text) with ``<redacted>``.

    Install it with :meth:`install` on the root logger: it is added to the logger and to each of its
    handlers, so records propagated from every module's logger pass through it too. Configure the
    handlers first.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret containing another is blanked whole.
        self._secrets = tuple(
            sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        )

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True

    def install(self, logger: logging.Logger | None = None) -> RedactingFilter:
        """Add the filter to ``logger`` (default: the root logger) and to every handler it has."""
        target = logger if logger is not None else logging.getLogger()
        target.addFilter(self)
        for handler in target.handlers:
            handler.addFilter(self)
        return self

    def uninstall(self, logger: logging.Logger | None = None) -> None:
        """Undo :meth:`install`."""
        target = logger if logger is not None else logging.getLogger()
        target.removeFilter(self)
        for handler in target.handlers:
            handler.removeFilter(self)


# --- the ccxt client -----------------------------------------------------------------------------------


def _ccxt_async() -> Any:
    try:
        import ccxt.async_support as ccxt_async
    except ImportError:  # pragma: no cover - ccxt is installed with the [live] extra
        raise ConfigError(
            "ccxt is not installed", where="--exchange", fix="pip install 'self-learning-flow[live]'"
        ) from None
    return ccxt_async


def _errors() -> Any:
    """ccxt's exception classes (``ccxt.async_support`` exports them all)."""
    return _ccxt_async()


def _rebase(url: str, api_url: str) -> str:
    base = urlsplit(api_url)
    path = urlsplit(url).path
    return f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}{path}"


def ccxt_client(
    exchange_id: str,
    *,
    credentials: Credentials | None = None,
    api_url: str | None = None,
    testnet: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """An async ccxt client for ``exchange_id``, spot markets only.

    Args:
        exchange_id: ccxt's id (``"binance"``).
        credentials: API key and secret (public data needs none). With them, ccxt's
            ``adjustForTimeDifference`` is on: the offset of the local clock from the exchange's is
            measured when the markets load (``fetch_time``) and signed requests are stamped by the
            exchange's clock, so a local clock off by more than the exchange's receive window does not
            fail every signed request (it is measured once: restart after the clock jumps).
        api_url: scheme and host replacing those of every REST base URL (testnets, local servers).
        testnet: ccxt's sandbox mode.
        timeout: seconds per request.
        options: extra ccxt config entries (merged over this function's).
    """
    ccxt_async = _ccxt_async()
    if exchange_id not in ccxt_async.exchanges:
        raise ConfigError(
            f"unknown exchange {exchange_id!r}{did_you_mean(exchange_id, ccxt_async.exchanges)}",
            where="--exchange",
            fix="give a ccxt exchange id such as 'binance'",
        )
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"timeout={timeout!r} must be > 0 seconds", where="timeout", fix="e.g. 10")
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": int(timeout * 1000),
        # Spot only: no futures/margin market lists, no private currency list during load_markets.
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
        },
    }
    if credentials is not None:
        config["apiKey"] = credentials.api_key
        config["secret"] = credentials.secret
        # Signed requests carry a timestamp the exchange checks against its clock (Binance refuses one
        # more than recvWindow, 5-10 s, away with -1021): ccxt measures the local clock's offset from the
        # exchange's when it loads the markets and stamps requests by the exchange's time.
        config["options"]["adjustForTimeDifference"] = True
    if options:
        extra = dict(options)
        config["options"].update(extra.pop("options", {}))
        config.update(extra)
    client = getattr(ccxt_async, exchange_id)(config)
    if testnet:
        client.set_sandbox_mode(True)
    if api_url is not None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"api_url={api_url!r} is not an http(s) URL",
                where="--api-url",
                fix="e.g. https://testnet.binance.vision or http://127.0.0.1:8080",
            )
        api = client.urls.get("api")
        if isinstance(api, str):
            client.urls["api"] = _rebase(api, api_url)
        elif isinstance(api, dict):
            client.urls["api"] = {k: _rebase(v, api_url) if isinstance(v, str) else v for k, v in api.items()}
    return client


# --- the exchange's words ------------------------------------------------------------------------------


class _Words:
    """What the exchange said: HTTP status, its JSON code and message (when there was an answer)."""

    __slots__ = ("code", "message", "status")

    def __init__(self, status: int | None, code: str | None, message: str | None) -> None:
        self.status = status
        self.code = code
        self.message = message


def _json_of(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    match = _JSON_OBJECT.search(text)
    if match is None:
        return None
    try:
        body = json.loads(match.group(0))
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class _Recorder:
    """Keeps the last HTTP status and body a ccxt client received (ccxt keeps the body only)."""

    def __init__(self, client: Any) -> None:
        self.status: int | None = None
        self.body: str | None = None
        self.headers: dict[str, str] = {}
        original = client.on_rest_response

        def on_rest_response(
            code: Any, reason: Any, url: Any, method: Any, headers: Any, body: Any, *a: Any
        ) -> Any:
            self.status = int(code) if code is not None else None
            self.body = body if isinstance(body, str) else None
            try:
                self.headers = {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}
            except (TypeError, ValueError):
                self.headers = {}
            return original(code, reason, url, method, headers, body, *a)

        client.on_rest_response = on_rest_response

    def reset(self) -> None:
        self.status = None
        self.body = None
        self.headers = {}

    def asked_wait(self, exc: BaseException, now_ms: float) -> float | None:
        """Seconds a rate-limit answer asked to wait (``Retry-After``, or Binance's "banned until"
        time in a 418 body); ``None`` when the answer was not a rate limit or named no wait."""
        errors = _errors()
        limited = self.status in (418, 429) or isinstance(
            exc, errors.DDoSProtection | errors.RateLimitExceeded
        )
        if not limited:
            return None
        waits: list[float] = []
        header = self.headers.get("retry-after")
        if header:
            try:
                waits.append(float(header))
            except ValueError:  # an HTTP date
                try:
                    when = email.utils.parsedate_to_datetime(header)
                    waits.append(when.timestamp() - now_ms / 1000.0)
                except (TypeError, ValueError):
                    pass
        for text in (str(exc), self.body or ""):
            match = _BANNED_UNTIL.search(text)
            if match:
                waits.append((int(match.group(1)) - now_ms) / 1000.0)
                break
        return max(0.0, *waits) if waits else None

    def words(self, exc: BaseException) -> _Words:
        text = str(exc)
        body = _json_of(text)
        if body is None and self.body is not None:
            recorded = _json_of(self.body)
            msg = recorded.get("msg") if recorded else None
            # ccxt quotes only the message when it matched the message text: take the recorded body's
            # code when it is the body of this very error.
            if isinstance(msg, str) and msg in text:
                body = recorded
        code = body.get("code") if body else None
        msg = body.get("msg") if body else None
        return _Words(
            self.status,
            None if code is None or isinstance(code, dict | list) else str(code),
            msg if isinstance(msg, str) else None,
        )


# --- the broker ----------------------------------------------------------------------------------------


class ExchangeBroker:
    """Market orders on an exchange through ccxt's async client (an :class:`~envs.broker.AsyncBroker`).

    Refusals map to the kinds :class:`~envs.broker.SimBroker` uses, with the exchange's message and code:

    * ``-1013 Filter failure: LOT_SIZE`` (ccxt ``InvalidOrder``): REJECTED ``lot_size``;
    * ``-1013 Filter failure: NOTIONAL`` / ``MIN_NOTIONAL`` (``BadRequest``): REJECTED ``min_notional``;
    * ``-2010 Account has insufficient balance for requested action.`` (``InsufficientFunds``):
      REJECTED ``insufficient_balance``;
    * any other ``InvalidOrder``/``BadRequest``: REJECTED ``invalid_order``; other exchange errors:
      REJECTED ``unknown``;
    * HTTP 429/418 (``DDoSProtection``/``RateLimitExceeded``): ERRORED ``rate_limit``; the wait the
      exchange asked for (``Retry-After``, or the "IP banned until" time of a 418) is logged and kept in
      :attr:`retry_after` for the caller's back-off;
    * HTTP 5xx, ``OnMaintenance``, ``ExchangeNotAvailable``: ERRORED ``maintenance``;
    * ``RequestTimeout`` or HTTP 504: ERRORED ``timeout``;
    * other ``NetworkError``/``OperationFailed``: ERRORED ``network``;
    * ``AuthenticationError``, ``BadSymbol``: :class:`~envs.errors.BrokerError` is raised.

    Transport faults carry their HTTP status as code (as SimBroker's injected faults do); rejections
    carry the exchange's own code. Errors that leave the order's fate open (all but rate limits) are
    settled with :meth:`known` first: a filled order is reported filled. An answer that does not tell
    the order's end (no fill amount, or a status other than closed/canceled/rejected/expired: Binance's
    ``ACK`` answer is the ids alone) is settled the same way, asking again for up to ``settle_wait``
    seconds while the exchange shows the order open; the side reported is always the intent's.
    ``-2010 Duplicate order sent.`` returns :meth:`known`'s answer for the id. An id submitted before in
    this process returns its first result without a request (filled and rejected orders; an errored one
    may be sent again).

    Binance refuses a client order id again only while its order is *open*, and a market order closes at
    once: so before sending an id it has not sent itself, the broker asks the exchange for it
    (``verify_ids``, one query per new order) and returns the earlier order's result if there is one.
    An order found under the id (here or by :meth:`known` with the intent) whose side or quantity (beyond
    the lot step's rounding) is not the intent's is someone else's: :class:`~envs.errors.BrokerError`. A
    failed query leaves the order unsent (an errored, retryable result). Requests are made one at a
    time: do not call the broker's coroutines concurrently.

    Fees are reported in quote currency; a fee charged in the base asset (Binance's buys without BNB)
    is converted at the fill price, and one in a third currency is estimated at the taker rate. A
    base-asset fee leaves the account holding ``filled_qty`` minus the fee: :meth:`account` tells the
    balances as they are.

    Args:
        exchange_id: ccxt's exchange id.
        symbol: unified symbol (``"BTC/USDT"``).
        credentials: the API key and secret.
        api_url: scheme and host for every REST URL (testnet, local server); see :func:`ccxt_client`.
        testnet: ccxt's sandbox mode.
        timeout: seconds per request.
        client: an already made ccxt async client (used as is; ``exchange_id``, ``credentials``,
            ``api_url``, ``testnet`` and ``timeout`` are then ignored).
        spec_overrides: :class:`~envs.market.MarketSpec` fields to set over the exchange's market
            (e.g. ``slippage_bps``).
        options: extra ccxt config (see :func:`ccxt_client`).
        max_remembered: results kept per client order id for resends within this process.
        verify_ids: ask the exchange for a new client order id before sending it (see above).
        settle_wait: seconds an order the exchange shows as not finished is asked for again before
            its fate is reported open (an errored result; :meth:`known` raises
            :class:`~envs.errors.RetryableBrokerError`).
    """

    def __init__(
        self,
        exchange_id: str,
        symbol: str,
        credentials: Credentials | None,
        *,
        api_url: str | None = None,
        testnet: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        client: Any = None,
        spec_overrides: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        max_remembered: int = DEFAULT_MAX_REMEMBERED,
        verify_ids: bool = True,
        settle_wait: float = DEFAULT_SETTLE_WAIT,
    ) -> None:
        if not (isinstance(settle_wait, int | float) and math.isfinite(settle_wait) and settle_wait >= 0):
            raise ConfigError(
                f"settle_wait={settle_wait!r} must be >= 0 seconds", where="ExchangeBroker.settle_wait"
            )
        self.settle_wait = float(settle_wait)
        self.exchange_id = exchange_id
        self.verify_ids = verify_ids
        self.symbol = symbol
        self._credentials = credentials
        self._client = (
            client
            if client is not None
            else ccxt_client(
                exchange_id,
                credentials=credentials,
                api_url=api_url,
                testnet=testnet,
                timeout=timeout,
                options=options,
            )
        )
        self._where = f"{exchange_id} {api_url}" if api_url else exchange_id
        self._recorder = _Recorder(self._client)
        self._overrides = dict(spec_overrides or {})
        self._spec: MarketSpec | None = None
        self._seen: OrderedDict[str, OrderResult] = OrderedDict()
        self._max = max_remembered
        self.retry_after: float | None = None
        """Seconds the last rate-limit answer asked to wait (``Retry-After``, Binance's 418 ban-until
        time), ``None`` when it named none; set with each rate-limited order result."""

    @property
    def client(self) -> Any:
        """The ccxt client (tests and reconciliation code may read it; do not log its config)."""
        return self._client

    @property
    def spec(self) -> MarketSpec:
        if self._spec is None:
            raise ConfigError("the broker has not started", where="ExchangeBroker", fix="await start() first")
        return self._spec

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("ExchangeBroker holds credentials and a connection: it is never pickled")

    # --- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> MarketSpec:
        """Load the markets, build the symbol's :class:`MarketSpec` and check the credentials."""
        errors = _errors()
        try:
            await self._client.load_markets()
        except errors.OperationFailed as exc:  # network trouble, rate limits, 5xx: worth a retry
            raise RetryableBrokerError(
                f"cannot reach the exchange: {_told(exc)}",
                where=self._where,
                fix="check --api-url, the network and the exchange's status, then start again",
            ) from None
        except errors.BaseError as exc:
            raise BrokerError(f"cannot load the markets: {_strip(str(exc))}", where=self._where) from None
        markets = self._client.markets or {}
        if self.symbol not in markets:
            raise BrokerError(
                f"unknown symbol {self.symbol!r}{did_you_mean(self.symbol, list(markets))}",
                where="--symbol",
                fix=f"give a symbol {self.exchange_id} lists, written BASE/QUOTE (e.g. 'BTC/USDT')",
            )
        market = dict(markets[self.symbol])
        mode = _PRECISION_MODES.get(getattr(self._client, "precisionMode", None))  # type: ignore[arg-type]
        if mode is not None:
            market.setdefault("precisionMode", mode)
        self._spec = MarketSpec.from_ccxt(market, **self._overrides)
        if self._credentials is not None:
            await self.account()  # proves the key and secret before the first order
        return self._spec

    async def close(self) -> None:
        """Release the connection (idempotent)."""
        await self._client.close()

    # --- account --------------------------------------------------------------------------------------
    async def account(self) -> AccountSnapshot:
        """Quote and base balances (free plus locked) as the exchange reports them."""
        spec = self.spec
        errors = _errors()
        try:
            balance = await self._client.fetch_balance()
        except errors.AuthenticationError as exc:
            self._auth_failed(exc)
        except errors.OperationFailed as exc:
            raise RetryableBrokerError(f"cannot fetch the balance: {_told(exc)}", where=self._where) from None
        except errors.BaseError as exc:
            raise BrokerError(f"cannot fetch the balance: {_strip(str(exc))}", where=self._where) from None
        total = balance.get("total") or {}
        stamp = balance.get("timestamp")
        time_ms = int(stamp) if stamp is not None else int(self._client.milliseconds())
        return AccountSnapshot(
            time_ms * _NS_PER_MS, float(total.get(spec.quote) or 0.0), float(total.get(spec.base) or 0.0)
        )

    def _auth_failed(self, exc: BaseException) -> NoReturn:
        names = Credentials.env_names(self.exchange_id)
        source = self._credentials.source if self._credentials is not None else "no credentials"
        raise BrokerError(
            f"the exchange refused the API credentials ({source}): {_strip(str(exc))}",
            where=self._where,
            fix=f"check {names[0]}/{names[1]} (or {names[2]}/{names[3]}): key, secret, and the key's "
            "trading permission",
        ) from None

    # --- orders ---------------------------------------------------------------------------------------
    async def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        """Send ``order`` as a market order under its client order id; return what became of it."""
        seen = self._seen.get(order.client_order_id)
        if seen is not None:
            return seen
        spec = self.spec
        qty = _on_step(order.qty, spec.qty_step)
        if not (math.isfinite(qty) and qty > 0.0):
            # Nothing left after the lot step: ccxt would refuse it before sending; the exchange's words.
            return self._remember(
                refusal(order, quote, ErrorKind.LOT_SIZE, MSG_LOT_SIZE, "-1013", OrderStatus.REJECTED)
            )
        errors = _errors()
        if self.verify_ids:
            # Binance refuses a client order id again only while its order is open, and a market order
            # closes at once: ask before sending an id this process has not sent.
            self._recorder.reset()
            try:
                prior = await self._lookup(order.client_order_id, order, quote)
            except errors.AuthenticationError as exc:
                self._auth_failed(exc)
            except errors.BaseError as exc:
                return await self._from_error(order, quote, exc, sent=False)
            except _StillOpen as exc:
                return _still_open(order, quote, exc)
            if prior is not None:
                return self._remember(prior)
        self._recorder.reset()
        try:
            raw = await self._client.create_order(
                self.symbol,
                "market",
                str(order.side),
                qty,
                None,
                {"clientOrderId": order.client_order_id},
            )
        except (errors.AuthenticationError, errors.BadSymbol) as exc:
            if isinstance(exc, errors.BadSymbol):
                raise BrokerError(f"the exchange refused the symbol: {exc}", where="--symbol") from None
            self._auth_failed(exc)
        except errors.BaseError as exc:
            return self._remember(await self._from_error(order, quote, exc))
        if _settled(raw):
            return self._remember(self._from_order(raw, order.client_order_id, quote, order.qty, order))
        # An answer without the fill (Binance's ACK answer is just the ids; others answer "open" while a
        # market order is matching): the order exists, so ask for it until it has settled.
        try:
            found = await self._lookup(order.client_order_id, order, quote)
        except errors.AuthenticationError as exc:
            self._auth_failed(exc)
        except errors.BaseError as exc:
            return await self._from_error(order, quote, exc)
        except _StillOpen as exc:
            return _still_open(order, quote, exc)
        if found is None:  # answered as placed, yet unknown when asked: its fate is open
            return refusal(
                order,
                quote,
                ErrorKind.NETWORK,
                f"order {order.client_order_id} was acknowledged but the exchange does not show it",
                None,
                OrderStatus.ERRORED,
            )
        return self._remember(found)

    def _remember(self, result: OrderResult) -> OrderResult:
        if result.status is not OrderStatus.ERRORED:
            self._seen[result.order_id] = result
            if len(self._seen) > self._max:
                self._seen.popitem(last=False)
        return result

    async def _from_error(
        self, order: OrderIntent, quote: Quote, exc: BaseException, *, sent: bool = True
    ) -> OrderResult:
        """The result for a failed request (``sent``: the order itself, else the check before it)."""
        errors = _errors()
        words = self._recorder.words(exc)
        status = words.status
        text = words.message or _strip(str(exc))
        ambiguous = sent
        kind: ErrorKind
        code: str | None
        if status in (418, 429) or isinstance(exc, errors.DDoSProtection | errors.RateLimitExceeded):
            kind, message = ErrorKind.RATE_LIMIT, words.message or MSG_RATE_LIMIT
            code = str(status) if status in (418, 429) else CODE_RATE_LIMIT
            ambiguous = False
            # The exchange's clock (a ban's end is in it): ccxt's measured offset, see ccxt_client.
            offset = self._client.options.get("timeDifference") or 0
            self.retry_after = self._recorder.asked_wait(exc, self._client.milliseconds() - offset)
            log.warning(
                "order %s: %s%s", order.client_order_id, _rate_limit_words(status, self.retry_after), message
            )
        elif status == 504 or (status is None and isinstance(exc, errors.RequestTimeout)):
            kind, message = ErrorKind.TIMEOUT, words.message or MSG_TIMEOUT
            code = str(status) if status is not None else CODE_TIMEOUT
        elif (status is not None and status >= 500) or isinstance(exc, errors.ExchangeNotAvailable):
            kind, message = ErrorKind.MAINTENANCE, words.message or MSG_MAINTENANCE
            code = str(status) if status is not None and status >= 500 else CODE_MAINTENANCE
        elif isinstance(exc, errors.NetworkError | errors.OperationFailed):
            kind, message, code = ErrorKind.NETWORK, text, (str(status) if status is not None else None)
        else:
            ambiguous = False
            message = text
            code = words.code
            if message == MSG_DUPLICATE_ORDER:
                first = await self._known_quietly(order, quote)
                if first is not None:
                    return first
                kind = ErrorKind.INVALID_ORDER
            elif isinstance(exc, errors.InsufficientFunds) or message == MSG_INSUFFICIENT_BALANCE:
                kind, code = ErrorKind.INSUFFICIENT_BALANCE, code or CODE_INSUFFICIENT_BALANCE
            elif "LOT_SIZE" in message:
                kind = ErrorKind.LOT_SIZE
            elif "NOTIONAL" in message:
                kind = ErrorKind.MIN_NOTIONAL
            elif isinstance(exc, errors.InvalidOrder | errors.BadRequest):
                kind = ErrorKind.INVALID_ORDER
            else:
                kind = ErrorKind.UNKNOWN
        if ambiguous:
            # The request may have reached the exchange: only its answer for the id settles it.
            cid = order.client_order_id
            try:
                found = await self.known(cid, order, quote)
            except RetryableBrokerError as asked:
                log.warning(
                    "order %s: %s (%s %s); could not ask the exchange about order %s (%s)",
                    cid, kind.value, code, message, cid, asked.problem,
                )  # fmt: skip
            else:
                if found is not None and found.filled:
                    return found
                log.warning(
                    "order %s: %s (%s %s); the exchange %s",
                    cid, kind.value, code, message,
                    "does not have it" if found is None else f"has it without a fill ({found.message})",
                )  # fmt: skip
        status_out = OrderStatus.ERRORED if kind.retryable else OrderStatus.REJECTED
        return refusal(order, quote, kind, message, code, status_out)

    async def _known_quietly(self, order: OrderIntent, quote: Quote) -> OrderResult | None:
        try:
            return await self.known(order.client_order_id, order, quote)
        except RetryableBrokerError as exc:
            log.warning("could not ask the exchange about order %s (%s)", order.client_order_id, exc.problem)
            return None

    async def known(
        self, client_order_id: str, intent: OrderIntent | None = None, quote: Quote | None = None
    ) -> OrderResult | None:
        """What became of the order sent under ``client_order_id``; ``None`` if the exchange never had it.

        An order still open (a market order being matched) is asked for again, for up to
        ``settle_wait`` seconds, until it has closed. ``intent``, when given, is the order meant to be
        sent under the id: an order that is not it raises :class:`~envs.errors.BrokerError`, and the
        result carries the intent's side and requested quantity, as :meth:`submit` reports them;
        ``quote`` is the market the order was sent at (slippage is measured against it, else there is
        none).

        Raises :class:`~envs.errors.RetryableBrokerError` when the exchange cannot be asked now or the
        order is still open.
        """
        if self._spec is None:
            raise ConfigError("the broker has not started", where="ExchangeBroker", fix="await start() first")
        errors = _errors()
        try:
            return await self._lookup(client_order_id, intent, quote)
        except errors.AuthenticationError as exc:
            self._auth_failed(exc)
        except errors.BaseError as exc:
            raise RetryableBrokerError(
                f"cannot ask for order {client_order_id}: {_told(exc)}", where=self._where
            ) from None
        except _StillOpen as exc:
            raise RetryableBrokerError(
                str(exc), where=self._where, fix="ask again later: the exchange has not finished the order"
            ) from None

    async def _fetch(self, client_order_id: str) -> dict[str, Any] | None:
        """The exchange's order under ``client_order_id`` once settled (``None``: it has none), asking
        again while it is open; :class:`_StillOpen` after ``settle_wait`` seconds; ccxt's errors through."""
        errors = _errors()
        delay = min(0.05, self.settle_wait) if self.settle_wait > 0.0 else 0.0
        waited = 0.0
        while True:
            try:
                raw = await self._client.fetch_order("", self.symbol, {"origClientOrderId": client_order_id})
            except errors.OrderNotFound:
                return None
            if _settled(raw):
                return dict(raw)
            if waited >= self.settle_wait:
                raise _StillOpen(
                    f"order {client_order_id} is still {raw.get('status') or 'without a status'} at the "
                    f"exchange (filled {raw.get('filled')}) after {waited:.3g} s"
                )
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2.0, 1.0, max(self.settle_wait - waited, 0.01))

    async def _lookup(
        self, client_order_id: str, intent: OrderIntent | None = None, quote: Quote | None = None
    ) -> OrderResult | None:
        """:meth:`known`, letting ccxt's errors and :class:`_StillOpen` through. ``quote``: the price the
        order was sent at (slippage is measured against it; else against the fill price)."""
        errors = _errors()
        raw = await self._fetch(client_order_id)
        if raw is None:
            return None
        if intent is not None:
            self._check_ours(raw, intent)
        if not raw.get("fees") and float(raw.get("filled") or 0.0) > 0.0 and raw.get("id"):
            try:
                trades = await self._client.fetch_order_trades(raw["id"], self.symbol)
            except errors.BaseError as exc:
                log.warning("order %s: fees unknown (%s); estimated", client_order_id, _strip(str(exc)))
            else:
                raw = {**raw, "fees": [f for t in trades for f in (t.get("fees") or [t.get("fee")]) if f]}
        if quote is None:
            stamp = raw.get("timestamp")
            time_ns = int(stamp) * _NS_PER_MS if stamp is not None else 0
            price = float(raw.get("average") or raw.get("price") or 0.0)
            quote = Quote(time_ns, price, math.nan)
        if intent is not None:  # booked as the order's own answer would have been
            return self._from_order(raw, client_order_id, quote, intent.qty, intent)
        amount = float(raw.get("amount") or raw.get("filled") or 0.0)
        return self._from_order(raw, client_order_id, quote, amount, intent)

    def _check_ours(self, raw: Mapping[str, Any], intent: OrderIntent) -> None:
        """Refuse an order found under the intent's client order id that is not the intent's: another
        side, or another quantity beyond the lot step's rounding (someone else used the id)."""
        cid = intent.client_order_id
        side = raw.get("side")
        amount = raw.get("amount")
        step = self.spec.qty_step
        tolerance = (step if step > 0.0 else 0.0) + 1e-9 * max(abs(intent.qty), 1.0)
        other_side = bool(side) and str(side).lower() != str(intent.side)
        other_qty = amount is not None and abs(float(amount) - intent.qty) > tolerance
        if other_side or other_qty:
            theirs = f"{str(side or '?').lower()} of {amount if amount is not None else '?'}"
            raise BrokerError(
                f"the exchange has an order under client order id {cid} that is not this one (a {theirs} "
                f"{self.symbol}, not a {intent.side} of {intent.qty:.10g}): another runner or person used "
                "the id; it is not booked as this order's fill",
                where=self._where,
                fix="give each runner its own state directory (its own client order id prefix), and check "
                "the account's recent orders",
            )

    def _from_order(
        self,
        raw: Mapping[str, Any],
        client_order_id: str,
        quote: Quote,
        requested: float,
        intent: OrderIntent | None,
    ) -> OrderResult:
        """A settled order's result (see :func:`_settled`); the side is the intent's, else the answer's."""
        spec = self.spec
        if intent is not None:
            side = intent.side
        elif raw.get("side"):
            side = Side(str(raw["side"]).lower())
        else:
            raise BrokerError(
                f"the exchange's answer for order {client_order_id} names no side",
                where=self._where,
                fix="check the order on the exchange's website",
            )
        filled = float(raw.get("filled") or 0.0)
        stamp = raw.get("timestamp")
        time_ns = int(stamp) * _NS_PER_MS if stamp is not None else quote.time_ns
        if filled <= 0.0:
            state = raw.get("status") or "unknown"
            return OrderResult(
                client_order_id,
                self.symbol,
                side,
                time_ns,
                requested,
                quote.price,
                OrderStatus.REJECTED,
                kind=ErrorKind.UNKNOWN,
                message=f"order {state} without a fill",
            )
        average = raw.get("average")
        if average is None and raw.get("cost") is not None:
            average = float(raw["cost"]) / filled
        price = float(average if average is not None else quote.price)
        fee = _fee_in_quote(raw, spec, price)
        if fee is None:
            fee = filled * price * spec.taker_fee
            log.warning("order %s: fee in another currency; estimated at the taker rate", client_order_id)
        ref = quote.price if math.isfinite(quote.price) and quote.price > 0.0 else price
        return OrderResult(
            client_order_id,
            self.symbol,
            side,
            time_ns,
            requested,
            price,
            OrderStatus.FILLED,
            filled,
            fee,
            filled * abs(price - ref),
        )


_SETTLED_STATES: Final = frozenset({"closed", "canceled", "cancelled", "rejected", "expired"})


def _settled(raw: Mapping[str, Any]) -> bool:
    """Whether an order answer tells the order's end: a final status and a fill amount (possibly 0)."""
    return raw.get("filled") is not None and str(raw.get("status") or "").lower() in _SETTLED_STATES


class _StillOpen(Exception):
    """The exchange shows the order, but not finished yet (after the broker's ``settle_wait``)."""


def _still_open(order: OrderIntent, quote: Quote, exc: _StillOpen) -> OrderResult:
    """An order the exchange has not finished: its fate is open (an errored result, not remembered)."""
    return refusal(order, quote, ErrorKind.TIMEOUT, str(exc), None, OrderStatus.ERRORED)


def _fee_in_quote(raw: Mapping[str, Any], spec: MarketSpec, price: float) -> float | None:
    """Sum of the order's fees in quote currency; a base-currency fee is converted at the fill price."""
    fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
    total = 0.0
    for fee in fees:
        if not fee or fee.get("cost") is None:
            continue
        cost = float(fee["cost"])
        currency = fee.get("currency")
        if currency is None or currency == spec.quote:
            total += cost
        elif currency == spec.base:
            total += cost * price
        else:
            return None
    return total


def _strip(text: str) -> str:
    """ccxt's message without its leading exchange id."""
    head, sep, rest = text.partition(" ")
    return rest if sep and head in _ccxt_async().exchanges else text


def _cause(exc: BaseException) -> str | None:
    """Why a request failed, from the exceptions ccxt's error was raised from (ccxt's own text names
    only the request): connection refused, host name not found, timed out, or the underlying error."""
    seen: set[int] = set()
    inner = exc.__cause__ or exc.__context__
    first: BaseException | None = None
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        names = {t.__name__ for t in type(inner).__mro__}
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, socket.gaierror) or names & {"ClientConnectorDNSError", "DNSError"}:
            detail = getattr(inner, "strerror", None) or str(inner)
            return f"host name not found ({detail})" if detail else "host name not found"
        if isinstance(inner, TimeoutError) or "ServerTimeoutError" in names:
            return "no answer in time (timed out)"
        if first is None:
            first = inner
        inner = inner.__cause__ or inner.__context__
    if isinstance(exc, _errors().RequestTimeout):
        return "no answer in time (timed out)"
    if first is None:
        return None
    detail = getattr(first, "strerror", None) or str(first)
    return detail or type(first).__name__


def _told(exc: BaseException) -> str:
    """ccxt's message without the exchange id, with the cause when ccxt's text leaves it out."""
    text = _strip(str(exc)) or type(exc).__name__
    cause = _cause(exc)
    return f"{text} ({cause})" if cause and cause not in text else text


def _on_step(qty: float, step: float) -> float:
    """``qty`` floored to the lot step and written with the step's decimals (no binary residue that
    ccxt's truncation would turn into one step less)."""
    if not math.isfinite(qty):
        return qty
    floored = floor_to_step(qty, step)
    if step <= 0.0:
        return floored
    text = np.format_float_positional(step, unique=True, trim="-")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return round(floored, decimals)


# --- the feed ------------------------------------------------------------------------------------------


class CcxtFeed:
    """Closed candles of one symbol polled through ccxt (implements :class:`~envs.live.BarFeed`).

    ``await start()`` loads the markets and back-fills the last ``warmup`` closed candles
    (:meth:`history`); :meth:`bars` then yields each candle once it has closed by the exchange's clock,
    in time order, each once; after a pause (the runner busy, the network down) it yields every candle
    that closed meanwhile, in order. :meth:`quote` is the open of the candle after the last one
    yielded (the forming candle's open for the newest). Transient ccxt errors are logged and retried
    with exponential back-off up to ``max_backoff``; authentication and symbol errors raise
    :class:`~envs.errors.BrokerError`.

    Market time is the candles' and the exchange's (``fetch_time``; for exchanges without one the local
    clock less ``close_margin``, so a candle counts as closed only once its close time is that far
    past); the wall clock only paces the polling.

    A rate-limit answer (HTTP 429, or 418 when the IP is banned) is retried no sooner than the exchange
    asks: its ``Retry-After`` header (ccxt hands response headers to ``on_rest_response``, which the feed
    reads) or the "banned until" time in Binance's 418 body, even beyond ``max_backoff``.

    Args:
        exchange_id: ccxt's exchange id.
        symbol: unified symbol.
        timeframe: ccxt timeframe (``"1m"``, ``"1h"`` ...).
        warmup: closed candles back-filled at start.
        poll_interval: seconds between polls while no candle closes.
        api_url, testnet, timeout, options: see :func:`ccxt_client` (no credentials: public data only).
        client: an already made ccxt async client (used as is).
        page_limit: candles per ``fetch_ohlcv`` call.
        max_backoff: longest wait between retries, seconds.
        start_attempts: tries of each request during :meth:`start` before it raises
            :class:`~envs.errors.RetryableBrokerError` (polling retries for ever).
        close_margin: for exchanges without ``fetchTime`` (the local clock decides), seconds past its
            close time a candle must be to count as closed: a local clock running a little ahead, or
            an exchange still booking the last trades, does not yield a candle before it is final.
    """

    def __init__(
        self,
        exchange_id: str,
        symbol: str,
        timeframe: str = "1m",
        *,
        warmup: int,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        api_url: str | None = None,
        testnet: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        client: Any = None,
        options: Mapping[str, Any] | None = None,
        page_limit: int = DEFAULT_PAGE_LIMIT,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        start_attempts: int = DEFAULT_START_ATTEMPTS,
        close_margin: float = DEFAULT_CLOSE_MARGIN,
    ) -> None:
        if not (isinstance(close_margin, int | float) and math.isfinite(close_margin) and close_margin >= 0):
            raise ConfigError(
                f"close_margin={close_margin!r} must be >= 0 seconds", where="CcxtFeed.close_margin"
            )
        self._margin_ms = round(close_margin * 1000.0)
        for name, value, low in (
            ("warmup", warmup, 0),
            ("page_limit", page_limit, 1),
            ("start_attempts", start_attempts, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}={value!r} must be an integer >= {low}", where=f"CcxtFeed.{name}")
        for name, number in (("poll_interval", poll_interval), ("max_backoff", max_backoff)):
            if not (isinstance(number, int | float) and math.isfinite(number) and number > 0):
                raise ConfigError(f"{name}={number!r} must be > 0 seconds", where=f"CcxtFeed.{name}")
        self.exchange_id = exchange_id
        self.symbol = symbol
        self.timeframe = timeframe
        self.warmup = warmup
        self.poll_interval = float(poll_interval)
        self.max_backoff = float(max_backoff)
        self.page_limit = page_limit
        self.start_attempts = start_attempts
        self._starting = False
        self._client = (
            client
            if client is not None
            else ccxt_client(exchange_id, api_url=api_url, testnet=testnet, timeout=timeout, options=options)
        )
        self._where = f"{exchange_id} {api_url}" if api_url else exchange_id
        self._recorder = _Recorder(self._client)
        self._offset_ms = 0  # local clock minus the exchange's, at the last fetch_time
        self._tf_ms = 0
        self._history: list[list[float]] | None = None
        self._last_ms: int | None = None  # open time of the last candle handed out (history or bar)
        self._pending: list[list[float]] = []  # closed candles fetched but not yet yielded
        self._forming: list[float] | None = None
        self._quote: Quote | None = None

    @property
    def client(self) -> Any:
        return self._client

    @property
    def timeframe_ms(self) -> int:
        return self._tf_ms

    async def start(self) -> CcxtFeed:
        """Load the markets, check symbol and timeframe, back-fill the warm-up window."""
        self._starting = True
        try:
            return await self._start()
        finally:
            self._starting = False

    async def _start(self) -> CcxtFeed:
        errors = _errors()
        await self._retrying("load_markets", self._client.load_markets)
        markets = self._client.markets or {}
        if self.symbol not in markets:
            raise BrokerError(
                f"unknown symbol {self.symbol!r}{did_you_mean(self.symbol, list(markets))}",
                where="--symbol",
                fix=f"give a symbol {self.exchange_id} lists, written BASE/QUOTE (e.g. 'BTC/USDT')",
            )
        timeframes = self._client.timeframes or {}
        if timeframes and self.timeframe not in timeframes:
            raise ConfigError(
                f"{self.exchange_id} has no timeframe {self.timeframe!r}"
                f"{did_you_mean(self.timeframe, timeframes)}",
                where="--timeframe",
                fix=f"use one of {sorted(timeframes)}",
            )
        try:
            self._tf_ms = int(self._client.parse_timeframe(self.timeframe) * 1000)
        except (errors.BaseError, ValueError, TypeError, IndexError):
            raise ConfigError(f"cannot read timeframe {self.timeframe!r}", where="--timeframe") from None
        now = await self._now()
        self._history = await self._backfill(now)
        if len(self._history) < self.warmup:
            log.warning(
                "%s %s: only %d of the %d warm-up candles exist", self.symbol, self.timeframe,
                len(self._history), self.warmup,
            )  # fmt: skip
        if self._history:
            self._last_ms = int(self._history[-1][0])
        else:
            # No history (a new market): start with the candles that close from now on.
            self._last_ms = now - now % self._tf_ms - self._tf_ms
        # The market now, before the first bar is yielded (a decision resumed after a restart is sized
        # at it): the forming candle's open, else the last close.
        forming = self._forming
        if forming is not None:
            self._quote = Quote(int(forming[0]) * _NS_PER_MS, float(forming[1]), math.nan)
        elif self._history:
            last = self._history[-1]
            self._quote = Quote((int(last[0]) + self._tf_ms) * _NS_PER_MS, float(last[4]), math.nan)
        return self

    async def close(self) -> None:
        await self._client.close()

    def history(self) -> pd.DataFrame:
        """The back-filled closed candles (OHLCV float64, UTC ``DatetimeIndex`` named ``timestamp``)."""
        if self._history is None:
            raise ConfigError("the feed has not started", where="CcxtFeed", fix="await feed.start() first")
        return _frame(self._history, self.symbol)

    def quote(self) -> Quote | None:
        return self._quote

    @property
    def backlog(self) -> int:
        """Closed candles fetched but not yet yielded (> 0 while catching up after a pause: the bar just
        yielded is not the newest, and its quote is the next candle's open, not the market now)."""
        return len(self._pending)

    async def bars(self) -> AsyncIterator[Bar]:
        if self._history is None:
            raise ConfigError("the feed has not started", where="CcxtFeed", fix="await feed.start() first")
        while True:
            if not self._pending:
                await self._poll()
            if not self._pending:
                await asyncio.sleep(self.poll_interval)
                continue
            candle = self._pending.pop(0)
            self._last_ms = int(candle[0])
            following = self._pending[0] if self._pending else self._forming
            if following is not None:
                self._quote = Quote(int(following[0]) * _NS_PER_MS, float(following[1]), math.nan)
            else:  # the exchange shows no forming candle yet: the last close, when the bar closed
                self._quote = Quote((int(candle[0]) + self._tf_ms) * _NS_PER_MS, float(candle[4]), math.nan)
            yield Bar(
                int(candle[0]) * _NS_PER_MS,
                float(candle[1]),
                float(candle[2]),
                float(candle[3]),
                float(candle[4]),
                float(candle[5]) if candle[5] is not None else 0.0,
            )

    # --- polling --------------------------------------------------------------------------------------
    async def _poll(self) -> None:
        """Fetch the candles closed since the last one handed out (all of them, after a pause)."""
        assert self._last_ms is not None
        now = await self._now()
        since = self._last_ms + self._tf_ms
        if since + self._tf_ms > now:
            return  # the next candle has not closed yet
        closed, forming = await self._retrying("fetch_ohlcv", lambda: self._forward(since, now))
        self._pending = [c for c in closed if int(c[0]) > self._last_ms]
        self._forming = forming

    async def _now(self) -> int:
        """Market time now, ms: the exchange's clock, else the local clock less ``close_margin``."""
        if self._client.has.get("fetchTime"):
            now = int(await self._retrying("fetch_time", self._client.fetch_time))
            self._offset_ms = int(self._client.milliseconds()) - now
            return now
        return int(self._client.milliseconds()) - self._margin_ms

    async def _forward(
        self, since: int, now: int, before: int | None = None
    ) -> tuple[list[list[float]], list[float] | None]:
        """Closed candles with ``since <= open`` (``< before``), paging forward; and the forming one."""
        out: list[list[float]] = []
        forming: list[float] | None = None
        cursor = since
        while True:
            page = await self._client.fetch_ohlcv(self.symbol, self.timeframe, cursor, self.page_limit)
            page = [c for c in page if int(c[0]) >= cursor]
            if before is not None:
                page = [c for c in page if int(c[0]) < before]
            for c in page:
                if int(c[0]) + self._tf_ms <= now:
                    if not out or int(c[0]) > int(out[-1][0]):
                        out.append(c)
                elif forming is None:
                    forming = c
            if len(page) < self.page_limit or forming is not None or not page:
                return out, forming
            cursor = int(page[-1][0]) + self._tf_ms

    async def _backfill(self, now: int) -> list[list[float]]:
        """The last ``warmup`` closed candles before ``now`` (reaching further back over data gaps)."""
        if self.warmup == 0:
            _, forming = await self._retrying("fetch_ohlcv", lambda: self._forward(now, now))
            self._forming = forming
            return []
        tf = self._tf_ms
        since = now - now % tf - self.warmup * tf
        got, forming = await self._retrying("fetch_ohlcv", lambda: self._forward(since, now))
        self._forming = forming
        span = self.warmup * tf
        empty = 0
        while len(got) < self.warmup and empty < 3:
            start = since - span
            earlier, _ = await self._retrying(
                "fetch_ohlcv",
                lambda s=start, b=since: self._forward(s, now, before=b),  # type: ignore[misc]
            )
            empty = 0 if earlier else empty + 1
            got = earlier + got
            since = start
            span *= 2
        return got[-self.warmup :]

    async def _retrying(self, what: str, call: Any) -> Any:
        """``await call()``, retrying transient ccxt errors with exponential back-off: for ever while
        polling, ``start_attempts`` times during :meth:`start` (then :class:`RetryableBrokerError`)."""
        errors = _errors()
        delay = self.poll_interval
        tries = 0
        while True:
            tries += 1
            self._recorder.reset()
            try:
                return await call()
            except errors.AuthenticationError as exc:
                raise BrokerError(
                    f"{what}: the exchange refused the credentials: {exc}", where=self._where
                ) from None
            except (errors.BadSymbol, errors.NotSupported, errors.ArgumentsRequired) as exc:
                raise BrokerError(f"{what}: {_strip(str(exc))}", where=self._where) from None
            except errors.BaseError as exc:
                asked = self._recorder.asked_wait(exc, self._client.milliseconds() - self._offset_ms)
                limit = _rate_limit_words(self._recorder.status, asked)
                if self._starting and tries >= self.start_attempts:
                    raise RetryableBrokerError(
                        f"{what} failed {tries} times: {limit}{_told(exc)}",
                        where=self._where,
                        fix="wait as the exchange asks, then start again"
                        if limit
                        else "check --api-url, the network and the exchange's status, then start again",
                    ) from None
                wait = delay if asked is None else max(delay, asked)  # never sooner than asked
                log.warning("%s failed (%s%s); retrying in %.3g s", what, limit, _told(exc), wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2.0, self.max_backoff)
                continue


def _rate_limit_words(status: int | None, wait: float | None) -> str:
    """``"rate limit (HTTP 418, IP banned), retry after 60 s: "`` for a rate-limit answer, else ``""``."""
    if status not in (418, 429) and wait is None:
        return ""
    what = "rate limit (HTTP 418, IP banned)" if status == 418 else f"rate limit (HTTP {status or '?'})"
    return f"{what}, retry after {wait:.3g} s: " if wait is not None else f"{what}: "


def _frame(candles: list[list[float]], symbol: str) -> pd.DataFrame:
    """Candles as :func:`envs.data.load_ohlcv` returns bars."""
    import pandas as pd

    times = np.asarray([int(c[0]) for c in candles], dtype=np.int64) * _NS_PER_MS
    index = pd.DatetimeIndex(times.view("datetime64[ns]"), name="timestamp").tz_localize("UTC").as_unit("ns")
    values = np.asarray(
        [[float(x) if x is not None else 0.0 for x in c[1:6]] for c in candles], dtype=np.float64
    ).reshape(len(candles), 5)
    frame = pd.DataFrame(values, index=index, columns=["open", "high", "low", "close", "volume"])
    if symbol:
        frame.attrs["symbol"] = symbol
    return frame
