"""Live trading's market side: bar feeds and the paper broker.

* :class:`PaperBroker`: :class:`~envs.broker.SimBroker`'s exchange rules (lot size, minimum notional,
  balance, optional seeded faults) applied at a *live* quote instead of the next replayed bar's open,
  with idempotent client order ids: submitting an id already seen returns the first result and never
  fills twice (a restarted runner re-deciding a bar produces the same id).
* :class:`Bar` and the :class:`BarFeed` protocol: an asynchronous iterator of **closed** bars, a
  back-fill history to warm the features up, and the market's current :class:`~envs.broker.Quote`.
* :class:`ReplayFeed`: a feed over a DataFrame of bars (paper trading on recorded data, and the parity
  test with :class:`~envs.replay.MarketReplayEnv`).

Real exchanges live in :mod:`envs.exchange`: the ccxt polling feed of closed candles
(:class:`~envs.exchange.CcxtFeed`), the :class:`~envs.exchange.ExchangeBroker` on ccxt's async API and
the API :class:`~envs.exchange.Credentials`.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import numpy as np

from envs.broker import Account, FaultConfig, OrderIntent, Quote, SimBroker
from envs.errors import ConfigError, DataError
from envs.events import OrderResult
from envs.market import MarketSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_MAX_REMEMBERED_ORDERS", "Bar", "BarFeed", "PaperBroker", "ReplayFeed"]

DEFAULT_MAX_REMEMBERED_ORDERS = 100_000
"""Client order ids a :class:`PaperBroker` remembers for deduplication (oldest forgotten first)."""


class PaperBroker:
    """Paper trading: the simulated exchange's rules at live prices (implements :class:`~envs.broker.Broker`).

    The rules, their order and their wording are :class:`~envs.broker.SimBroker`'s (it does the work),
    so paper results are the replay's results on the same quotes. Faults are off unless given.

    Args:
        spec: the symbol's rules and costs.
        account: the account the exchange checks balances against (the runner's portfolio).
        faults: injected fault rates (off by default).
        seed: seed of the fault generator.
        max_remembered: client order ids kept for deduplication.
    """

    __slots__ = ("_max", "_seen", "_sim")

    def __init__(
        self,
        spec: MarketSpec,
        account: Account,
        *,
        faults: FaultConfig | None = None,
        seed: int | np.random.Generator | None = None,
        max_remembered: int = DEFAULT_MAX_REMEMBERED_ORDERS,
    ) -> None:
        if isinstance(max_remembered, bool) or not isinstance(max_remembered, int) or max_remembered < 1:
            raise ConfigError(
                f"max_remembered={max_remembered!r} must be an integer >= 1",
                where="PaperBroker",
                fix="e.g. 100000",
            )
        self._sim = SimBroker(spec, account, faults=faults, seed=seed)
        self._seen: OrderedDict[str, OrderResult] = OrderedDict()
        self._max = max_remembered

    @property
    def spec(self) -> MarketSpec:
        return self._sim.spec

    def known(self, client_order_id: str) -> OrderResult | None:
        """The result of an order already submitted under ``client_order_id`` (reconciliation)."""
        return self._seen.get(client_order_id)

    def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        """Fill, refuse or fail ``order`` at the live ``quote``; a known id returns its first result."""
        seen = self._seen.get(order.client_order_id)
        if seen is not None:
            return seen
        result = self._sim.submit(order, quote)
        self._seen[order.client_order_id] = result
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return result


class Bar(NamedTuple):
    """One closed bar.

    Attributes:
        time_ns: open time (epoch ns, UTC), the bar-timestamp convention of :mod:`envs.data`.
        open, high, low, close, volume: the bar.
        last: the feed has no further bars (finite feeds only; a live feed never sets it).
    """

    time_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    last: bool = False


@runtime_checkable
class BarFeed(Protocol):
    """Closed bars of one symbol, one at a time, with a back-fill and the current quote."""

    symbol: str

    def history(self) -> pd.DataFrame:
        """Closed bars before the first one :meth:`bars` yields (OHLCV, UTC open-time index)."""
        ...

    def bars(self) -> AsyncIterator[Bar]:
        """Each newly closed bar, in time order."""
        ...

    def quote(self) -> Quote | None:
        """The market now (after the last yielded bar): the price an order would be sent at."""
        ...


class ReplayFeed:
    """A :class:`BarFeed` over recorded bars: rows ``[0, start)`` are the back-fill, rows ``start..``
    are yielded one at a time.

    After bar ``t`` has been yielded, :meth:`quote` is the open of bar ``t + 1`` at its open time, with
    that bar's volume for the volume-impact model: exactly the reference price and volume at which
    :class:`~envs.replay.MarketReplayEnv` fills the decision taken at ``t``'s close. (Live, the quote is
    the price when the order is sent and the volume is unknown.) After the last bar there is no quote.

    Args:
        frame: OHLCV bars as :func:`envs.data.load_ohlcv` returns them.
        start: first row yielded as a live bar; the rows before it are the back-fill.
        speed: replay pace: ``0`` as fast as possible; ``N`` sleeps one bar's duration / ``N`` of wall
            time between bars (pacing only: the runner's logic reads bar times, never the wall clock).
        symbol: market symbol (default ``frame.attrs["symbol"]``).
    """

    def __init__(
        self, frame: pd.DataFrame, *, start: int, speed: float = 0.0, symbol: str | None = None
    ) -> None:
        n = len(frame)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < n:
            raise ConfigError(
                f"start={start!r} must be a row in 0..{n - 1}",
                where="ReplayFeed",
                fix="give the number of back-fill bars, fewer than the bars in the data",
            )
        if not (isinstance(speed, int | float) and math.isfinite(speed) and speed >= 0.0):
            raise ConfigError(f"speed={speed!r} must be >= 0", where="--speed", fix="0 = as fast as possible")
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in frame.columns]
        if missing:
            raise DataError(
                f"missing column(s) {missing}", where="ReplayFeed", fix="load the bars with envs.data"
            )
        self.symbol = str(symbol or frame.attrs.get("symbol") or "")
        self._frame = frame
        self.start = start
        self.speed = float(speed)
        self._time = np.ascontiguousarray(frame.index.as_unit("ns").asi8, dtype=np.int64)  # type: ignore[attr-defined]
        self._ohlcv = [frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")]
        self._next = start  # row of the next bar to yield
        bar_ns = np.diff(self._time)
        self._bar_ns = int(np.median(bar_ns)) if len(bar_ns) else 0

    def __len__(self) -> int:
        return len(self._frame)

    @property
    def position(self) -> int:
        """Row of the next bar to yield (``len(self)`` when exhausted)."""
        return self._next

    def history(self) -> pd.DataFrame:
        return self._frame.iloc[: self.start]

    async def bars(self) -> AsyncIterator[Bar]:
        n = len(self._frame)
        o, h, lo, c, v = self._ohlcv
        while self._next < n:
            t = self._next
            if self.speed > 0.0 and t > self.start:
                await asyncio.sleep(self._bar_ns / 1e9 / self.speed)
            else:
                await asyncio.sleep(0)  # let signal handlers and other tasks run between bars
            self._next = t + 1
            yield Bar(
                int(self._time[t]),
                float(o[t]),
                float(h[t]),
                float(lo[t]),
                float(c[t]),
                float(v[t]),
                t == n - 1,
            )

    def quote(self) -> Quote | None:
        t = self._next
        if t >= len(self._frame) or t == self.start:
            return None
        return Quote(int(self._time[t]), float(self._ohlcv[0][t]), float(self._ohlcv[4][t]))
