"""``envs.live``: PaperBroker applies SimBroker's rules at live quotes with idempotent client order ids;
ReplayFeed yields closed bars one at a time with the next bar's open as the quote."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.broker import MSG_NOTIONAL, Broker, OrderIntent, Quote, SimBroker
from envs.errors import ConfigError
from envs.events import OrderStatus, Side
from envs.live import Bar, BarFeed, PaperBroker, ReplayFeed
from envs.market import MarketSpec
from envs.portfolio import Portfolio, PortfolioConfig

SPEC = MarketSpec("BTC/USDT", taker_fee=0.001, spread_bps=2.0, qty_step=0.001, min_notional=10.0)


def _bars(n: int = 6) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="timestamp")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": 10.0 + close,
        },
        index=index,
    )


def _intent(order_id: str, qty: float, side: Side = Side.BUY) -> OrderIntent:
    return OrderIntent(order_id, SPEC.symbol, side, qty, 0)


def test_paper_broker_is_a_broker_with_simbrokers_rules() -> None:
    book = Portfolio(SPEC.symbol, PortfolioConfig(initial_cash=1000.0))
    paper = PaperBroker(SPEC, book)
    sim = SimBroker(SPEC, book)
    assert isinstance(paper, Broker)
    quote = Quote(1, 20_000.0, float("nan"))
    for i, qty in enumerate((0.0004, 0.0001234, 0.02, 0.04)):  # lot size, notional, fill, balance
        assert paper.submit(_intent(f"a{i}", qty), quote) == sim.submit(_intent(f"a{i}", qty), quote)
    refused = paper.submit(_intent("small", 0.0015), Quote(2, 5_000.0, float("nan")))
    assert refused.status is OrderStatus.REJECTED
    assert refused.message == MSG_NOTIONAL


def test_paper_broker_fills_at_the_live_quote_with_costs() -> None:
    book = Portfolio(SPEC.symbol, PortfolioConfig(initial_cash=10_000.0))
    result = PaperBroker(SPEC, book).submit(_intent("x", 0.0105), Quote(5, 20_000.0, float("nan")))
    assert result.filled
    assert result.filled_qty == pytest.approx(0.01)
    assert result.price == pytest.approx(20_000.0 * (1 + 1e-4))  # half the 2 bps spread
    assert result.fee == pytest.approx(0.01 * result.price * 0.001)
    assert result.time_ns == 5


def test_a_repeated_client_order_id_returns_the_first_result_and_never_fills_twice() -> None:
    book = Portfolio(SPEC.symbol, PortfolioConfig(initial_cash=10_000.0))
    paper = PaperBroker(SPEC, book)
    first = paper.submit(_intent("id-1", 0.01), Quote(1, 20_000.0, float("nan")))
    book.apply_fill(first, bar_index=0)
    again = paper.submit(_intent("id-1", 0.02), Quote(2, 25_000.0, float("nan")))
    assert again is first
    assert paper.known("id-1") is first
    assert paper.known("id-2") is None
    assert book.qty == pytest.approx(0.01)


def test_paper_broker_forgets_the_oldest_ids_beyond_its_memory() -> None:
    book = Portfolio(SPEC.symbol, PortfolioConfig(initial_cash=10_000.0))
    paper = PaperBroker(SPEC, book, max_remembered=2)
    for i in range(3):
        paper.submit(_intent(f"o{i}", 0.0001), Quote(i, 20_000.0, float("nan")))
    assert paper.known("o0") is None
    assert paper.known("o2") is not None
    with pytest.raises(ConfigError, match="max_remembered"):
        PaperBroker(SPEC, book, max_remembered=0)


def test_replay_feed_yields_closed_bars_and_quotes_the_next_open() -> None:
    frame = _bars()
    feed = ReplayFeed(frame, start=3, symbol="BTC/USDT")
    assert isinstance(feed, BarFeed)
    assert len(feed.history()) == 3
    assert feed.quote() is None  # nothing yielded yet

    async def collect() -> list[tuple[Bar, Quote | None]]:
        return [(bar, feed.quote()) async for bar in feed.bars()]

    got = asyncio.run(collect())
    assert [b.close for b, _ in got] == list(frame["close"].iloc[3:])
    assert [b.last for b, _ in got] == [False, False, True]
    times = pd.DatetimeIndex(frame.index).as_unit("ns").asi8
    first_quote = got[0][1]
    assert first_quote == Quote(int(times[4]), float(frame["open"].iloc[4]), float(frame["volume"].iloc[4]))
    assert got[-1][1] is None  # no bar after the last one


def test_replay_feed_checks_its_arguments() -> None:
    with pytest.raises(ConfigError, match=r"start=6 must be a row in 0\.\.5"):
        ReplayFeed(_bars(), start=6)
    with pytest.raises(ConfigError, match="--speed"):
        ReplayFeed(_bars(), start=1, speed=-1.0)


def test_envs_live_does_not_import_the_decision_side() -> None:
    import envs.live as live

    source = Path(live.__file__).read_text(encoding="utf-8")
    for name in ("torch", "stable_baselines3", "agents", "learning"):
        assert f"import {name}" not in source
        assert f"from {name}" not in source
