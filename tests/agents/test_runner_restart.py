"""A crash-safe ``LiveRunner``: checkpoint after every bar, orders logged before they are sent, restart.

In-process crashes (the runner dropped without ``stop()``, the learning manager without closing it) at a
bar boundary and between an order's log record and its booking, with the paper broker and with an
exchange-like asynchronous broker; then a real SIGKILL of a runner process. Every restarted run must end
with the orders, fills, trades and learned state of an uninterrupted run on the same bars.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

from agents.bundle import EnvSettings
from agents.runner import INFO_RETRIES, LiveRunner, RetryPolicy, RunnerState
from agents.runner_state import RUNNER_DIRNAME, RUNNER_FILENAME, RunnerStore
from agents.switches import LearningSwitches
from agents.wrappers import INFO_EVENTS
from envs.broker import AccountSnapshot, OrderIntent, Quote, SimBroker
from envs.data import load_dataset
from envs.errors import ConfigError, RetryableBrokerError, StateError
from envs.events import ErrorKind, OrderResult, OrderStatus
from envs.features import FeatureConfig, NormalizationStats, compute_features
from envs.live import ReplayFeed
from envs.market import MarketSpec
from envs.portfolio import Portfolio, PortfolioConfig
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
from learning.store import STORE_DIRNAME, STORE_FILENAME

REPO = Path(__file__).resolve().parents[2]
START = 1000
END = 1260
WINDOW = 8
ACTIONS = (-1.0, -0.5, 0.0, 0.5, 1.0)
CASH = 100_000.0
# As in the parity test: half-size orders fail the minimum notional, so errors and learned minimums
# take part.
SPEC = MarketSpec(
    "EUR/USD", taker_fee=0.0002, spread_bps=1.0, slippage_bps=0.5, min_qty=1000.0, qty_step=1000.0,
    min_notional=60_000.0, price_tick=1e-05,
)  # fmt: skip
SETTINGS = EnvSettings(window=WINDOW, actions=ACTIONS, allow_short=True, initial_cash=CASH)
NO_WAIT = RetryPolicy(max_attempts=3, backoff_seconds=0.0)


class MomentumPolicy:
    """A deterministic policy of the observation: the last bar's normalized momentum, bucketed."""

    def __init__(self, k: int) -> None:
        self.column = (WINDOW - 1) * k + 5  # momentum_pct of the newest row

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[Any, Any]:
        x = float(np.asarray(observation).reshape(-1)[self.column])
        return np.int64(int(np.digitize(x, [-0.6, -0.2, 0.2, 0.6]))), state


def _bars() -> pd.DataFrame:
    return load_dataset("eurusd_1h").iloc[:END]


def _normalization(bars: pd.DataFrame) -> NormalizationStats:
    return NormalizationStats.fit(compute_features(bars, FeatureConfig()), 0, START)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return _bars()


@pytest.fixture(scope="module")
def normalization(bars: pd.DataFrame) -> NormalizationStats:
    return _normalization(bars)


# --- an exchange that outlives the runner ---------------------------------------------------------------


class FakeExchange:
    """The exchange's side: its own account and order book keyed by client order id (deduplicating),
    the simulated exchange's rules, and a deterministic rate limit on the first attempt of every
    ``rate_limit_every``-th order; every ``lost_every``-th order is executed but its answer is a
    timeout (the answer was lost on the way back)."""

    def __init__(self, rate_limit_every: int = 0, lost_every: int = 0) -> None:
        self.account = Portfolio(SPEC.symbol, PortfolioConfig(initial_cash=CASH, allow_short=True))
        self.sim = SimBroker(SPEC, self.account)
        self.orders: dict[str, OrderResult] = {}
        self.received: list[str] = []  # every client order id that reached it, duplicates included
        self.rate_limit_every = rate_limit_every
        self.lost_every = lost_every
        self.lost: list[str] = []  # executed, answered with a timeout
        self.fresh = 0

    def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        self.received.append(order.client_order_id)
        seen = self.orders.get(order.client_order_id)
        if seen is not None:
            return seen
        self.fresh += 1
        first_attempt = "-r" not in order.client_order_id
        if self.rate_limit_every and self.fresh % self.rate_limit_every == 0 and first_attempt:
            return OrderResult(
                order.client_order_id, order.symbol, order.side, quote.time_ns, order.qty, quote.price,
                OrderStatus.ERRORED, kind=ErrorKind.RATE_LIMIT, message="Too many requests.", code="429",
            )  # fmt: skip
        result = self.sim.submit(order, quote)
        if result.filled:
            self.account.apply_fill(result, bar_index=0)
        self.orders[order.client_order_id] = result
        if self.lost_every and self.fresh % self.lost_every == 0 and result.filled:
            self.lost.append(order.client_order_id)
            return result._replace(
                status=OrderStatus.ERRORED, filled_qty=0.0, fee=0.0, slippage=0.0, kind=ErrorKind.TIMEOUT,
                message="Request timed out", code="408",
            )  # fmt: skip
        return result

    def fills(self) -> list[OrderResult]:
        return [r for r in self.orders.values() if r.filled]


class Crash(BaseException):
    """The process dies (not an error the runner could handle)."""


class ExchangeBroker:
    """An :class:`~envs.broker.AsyncBroker` over a :class:`FakeExchange`; ``crash_after`` makes the
    n-th order reach the exchange and then kills the caller before the answer arrives."""

    def __init__(self, exchange: FakeExchange, crash_after: int = 0, spec: MarketSpec = SPEC) -> None:
        self.exchange = exchange
        self.crash_after = crash_after
        self.spec = spec
        self.sent = 0

    async def start(self) -> MarketSpec:
        return self.spec

    async def account(self) -> AccountSnapshot:
        return AccountSnapshot(0, self.exchange.account.cash, self.exchange.account.qty)

    async def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        await asyncio.sleep(0)
        result = self.exchange.submit(order, quote)
        self.sent += 1
        if self.sent == self.crash_after:
            raise Crash
        return result

    async def known(self, client_order_id: str) -> OrderResult | None:
        return self.exchange.orders.get(client_order_id)

    async def close(self) -> None:
        return None


# --- driving runners -------------------------------------------------------------------------------------


def _manager(root: Path) -> UniversalLearningManager:
    return UniversalLearningManager(root, config=LearningConfig(), market_specs=[SPEC])


def _runner(
    bars: pd.DataFrame, normalization: NormalizationStats, root: Path, manager: UniversalLearningManager,
    **kwargs: Any,
) -> tuple[LiveRunner, ReplayFeed]:  # fmt: skip
    feed = ReplayFeed(bars, start=START)
    runner = LiveRunner(
        feed, MomentumPolicy(len(normalization.columns)), spec=SPEC, features=FeatureConfig(),
        normalization=normalization, env=SETTINGS, switches=LearningSwitches(), manager=manager,
        state_dir=root, **{"id_prefix": "live", "id_token": "", **kwargs},
    )  # fmt: skip
    return runner.build(), feed


async def _drive(runner: LiveRunner, feed: ReplayFeed, stop_after: int | None = None) -> None:
    """Feed bars until the feed ends or ``stop_after`` bars were yielded (then return without stop())."""
    n = 0
    async for bar in feed.bars():
        await runner.process(bar)
        n += 1
        if stop_after is not None and n >= stop_after:
            return
    runner.stop()


def _checkpoint_after(
    bars: pd.DataFrame, normalization: NormalizationStats, root: Path, manager: UniversalLearningManager,
    bars_run: int,
) -> tuple[RunnerStore, dict[str, Any]]:  # fmt: skip
    """Run a runner for ``bars_run`` bars (no stop()); its store and the checkpoint it left."""
    runner, feed = _runner(bars, normalization, root, manager)
    asyncio.run(_drive(runner, feed, stop_after=bars_run))
    store = RunnerStore.with_learning(manager)
    checkpoint = store.load_checkpoint()
    assert checkpoint is not None
    return store, checkpoint


def _crash(runner: LiveRunner, manager: UniversalLearningManager) -> None:
    """Forget the runner and the manager without stopping or closing them (nothing is flushed)."""
    del runner, manager
    gc.collect()


def _events(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "time_ns": info["time_ns"],
        "orders": list(info["orders"]),
        "trades": list(info["trades"]),
        "errors": list(info["errors"]),
        "vetoed": list(info["vetoed"]),
        "bar": info["bar"],
        "learned": [tuple(e) for e in info.get(INFO_EVENTS, ())],
        "retries": list(info.get(INFO_RETRIES, ())),
    }


def _learned(root: Path) -> dict[str, Any]:
    """The learned state as the store holds it (what a crash cannot take away)."""
    with _manager(root) as manager:
        return {
            "describe": manager.describe(),
            "snapshot": manager.snapshot().to_dict(),
            "patterns": manager.patterns(),
            "minimums": manager.minimums(),
            "errors": manager.error_patterns(),
            "orders": RunnerStore.with_learning(manager).orders(),
        }


def _reference(
    bars: pd.DataFrame, normalization: NormalizationStats, root: Path, **kwargs: Any
) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    manager = _manager(root)
    runner, feed = _runner(bars, normalization, root, manager, **kwargs)
    asyncio.run(_drive(runner, feed))
    manager.close()
    learned = _learned(root)
    return [_events(i) for i in runner.infos], learned, learned["orders"]


# --- in-process crashes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_reference(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The uninterrupted paper run every crashed one must end like."""
    infos, learned, _ = _reference(bars, normalization, tmp_path_factory.mktemp("reference"))
    assert sum(len(i["trades"]) for i in infos) > 5
    assert sum(len(i["errors"]) for i in infos) > 0
    return infos, learned


class CrashingPaper:
    """The paper broker of a runner whose process dies when it sends its n-th order (logged, not sent)."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n, self.k = inner, n, 0

    def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        self.k += 1
        if self.k == self.n:
            raise Crash
        return cast("OrderResult", self.inner.submit(order, quote))

    def known(self, client_order_id: str) -> OrderResult | None:
        return cast("OrderResult | None", self.inner.known(client_order_id))


@pytest.mark.parametrize(("where", "n"), [("bar", 37), ("bar", 120), ("order", 9)])
def test_paper_runner_restarted_after_a_crash_ends_like_an_uninterrupted_run(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path,
    paper_reference: tuple[list[dict[str, Any]], dict[str, Any]], where: str, n: int,
) -> None:  # fmt: skip
    infos, learned = paper_reference
    root = tmp_path / "crashed"
    manager = _manager(root)
    runner, feed = _runner(bars, normalization, root, manager)
    if where == "bar":  # after the n-th bar
        asyncio.run(_drive(runner, feed, stop_after=n))
    else:  # between the n-th order's log record and its sending
        runner.broker = runner.core.broker = CrashingPaper(runner.broker, n)
        with pytest.raises(Crash):
            asyncio.run(_drive(runner, feed))
        assert len(RunnerStore.with_learning(manager).unbooked()) == 1
    before = [_events(i) for i in runner.infos]
    _crash(runner, manager)

    manager = _manager(root)
    runner, feed = _runner(bars, normalization, root, manager)
    asyncio.run(_drive(runner, feed))
    after = [_events(i) for i in runner.infos]
    assert before + after == infos
    manager.close()
    assert _learned(root) == learned  # the same orders, trades and learned state


def test_exchange_runner_restarted_between_log_and_booking_books_the_fill_once(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    reference = FakeExchange(rate_limit_every=4)
    infos, learned, _ = _reference(
        bars, normalization, tmp_path / "reference", broker=ExchangeBroker(reference), retry=NO_WAIT
    )
    assert any(i["retries"] for i in infos), "the rate limit was retried within the bar"

    exchange = FakeExchange(rate_limit_every=4)
    root = tmp_path / "crashed"
    manager = _manager(root)
    runner, feed = _runner(
        bars, normalization, root, manager, broker=ExchangeBroker(exchange, crash_after=9), retry=NO_WAIT
    )
    with pytest.raises(Crash):
        asyncio.run(_drive(runner, feed))
    before = [_events(i) for i in runner.infos]
    (unbooked,) = RunnerStore.with_learning(manager).unbooked()
    assert unbooked.sent_id in exchange.orders  # the exchange took it; the runner never booked it
    _crash(runner, manager)

    manager = _manager(root)
    runner, feed = _runner(bars, normalization, root, manager, broker=ExchangeBroker(exchange), retry=NO_WAIT)
    asyncio.run(_drive(runner, feed))
    after = [_events(i) for i in runner.infos]
    assert before + after == infos
    manager.close()
    assert _learned(root) == learned
    assert exchange.orders == reference.orders
    assert len(exchange.received) == len(reference.received)  # nothing was sent twice


def test_exchange_runner_trades_exactly_like_the_paper_runner(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    paper, paper_learned, _ = _reference(bars, normalization, tmp_path / "paper")
    exchange = FakeExchange()
    broker = ExchangeBroker(exchange)
    infos, learned, _ = _reference(bars, normalization, tmp_path / "exchange", broker=broker)
    assert infos == paper
    assert learned == paper_learned  # the same orders too (the order log holds no broker detail)
    fills = [o for i in infos for o in i["orders"] if o.filled]
    assert fills == exchange.fills()


def test_exchange_rules_and_balances_replace_the_bundles(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = FakeExchange()
    exchange.account.cash = 50_000.0
    exchange.account.qty = 3000.0  # held before the runner ever ran (no trade of the runner's)
    rules = dataclasses.replace(SPEC, min_notional=30_000.0, qty_step=500.0)
    with caplog.at_level(logging.INFO, logger="agents.runner"):
        feed = ReplayFeed(bars.iloc[: START + 30], start=START)
        runner = LiveRunner(
            feed, MomentumPolicy(len(normalization.columns)), spec=SPEC, features=FeatureConfig(),
            normalization=normalization, env=SETTINGS, broker=ExchangeBroker(exchange, spec=rules),
            state_dir=tmp_path / "off", capital=60_000.0, adopt_position=True,
        ).build()  # fmt: skip
        asyncio.run(runner.connect())
        assert (runner.book.cash, runner.book.qty) == (50_000.0, 3000.0)
        assert runner.core.spec.min_notional == 30_000.0
        assert runner.core.spec.qty_step == 500.0
        assert runner.spec.taker_fee == SPEC.taker_fee  # the cost model stays the bundle's
    text = caplog.text
    assert "differ from the bundle's (qty_step 1000 -> 500, min_notional 60000 -> 30000)" in text
    assert "the exchange holds cash 50000 and position 3000" in text
    assert "adopting the exchange's balances" in text
    runner.stop()
    assert (tmp_path / "off" / RUNNER_DIRNAME / RUNNER_FILENAME).is_file()  # learning off: its own file


def test_retries_follow_the_learned_resolution_and_feed_the_error_learner(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    exchange = FakeExchange(rate_limit_every=3)
    root = tmp_path / "retries"
    manager = _manager(root)
    runner, feed = _runner(bars, normalization, root, manager, broker=ExchangeBroker(exchange), retry=NO_WAIT)
    asyncio.run(_drive(runner, feed))
    retried = [r for i in runner.infos for r in i.get(INFO_RETRIES, ())]
    assert retried
    assert all(r.kind is ErrorKind.RATE_LIMIT for r in retried)
    retry_ids = [cid for cid in exchange.received if cid.endswith("-r1")]
    assert len(retry_ids) == len(retried)
    # A failed attempt the learner said not to retry (skip_symbol, halt: exploration) is the final answer.
    stopped = [o for i in runner.infos for o in i["orders"] if o.kind is ErrorKind.RATE_LIMIT]
    assert all(not i["errors"] for i in runner.infos if i["orders"] and i["orders"][0] in stopped)
    (pattern,) = [p for p in manager.error_patterns() if p.kind is ErrorKind.RATE_LIMIT]
    assert pattern.count == len(retried) + len(stopped)  # each failed attempt learned once
    retrying = {"retry_with_backoff", "resize_to_learned_minimum", "reduce_size"}
    fixed = [a for a in pattern.attempts if a.resolution.value in retrying]
    assert len(fixed) == len(retried)
    # A retry may still be refused by the rules (a rate-limited order below the minimum notional).
    assert [a.success for a in fixed] == [exchange.orders[cid].filled for cid in retry_ids]
    assert sum(a.success for a in fixed) > len(fixed) / 2
    manager.close()


def test_a_timed_out_order_the_exchange_filled_is_booked_not_sent_again(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    exchange = FakeExchange(lost_every=3)
    root = tmp_path / "lost"
    manager = _manager(root)
    runner, feed = _runner(bars, normalization, root, manager, broker=ExchangeBroker(exchange), retry=NO_WAIT)
    asyncio.run(_drive(runner, feed))
    assert len(exchange.lost) >= 3
    assert not [cid for cid in exchange.received if "-r" in cid]  # asked for, never sent again
    booked = {o.order_id: o for i in runner.infos for o in i["orders"]}
    for cid in exchange.lost:
        assert booked[cid] == exchange.orders[cid]  # the exchange's fill, booked once
    assert not [p for p in manager.error_patterns() if p.kind is ErrorKind.TIMEOUT]  # nothing went wrong
    assert (runner.book.cash, runner.book.qty) == (exchange.account.cash, exchange.account.qty)
    manager.close()


def test_a_restarted_runner_refuses_another_symbols_or_venues_state(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    from envs.errors import StateError

    root = tmp_path / "s"
    with _manager(root) as manager:
        store, checkpoint = _checkpoint_after(bars, normalization, root, manager, 40)
        store.save_checkpoint({**checkpoint, "symbol": "BTC/USDT"})
        with pytest.raises(StateError, match=r"holds a runner of 'BTC/USDT', not 'EUR/USD'"):
            _runner(bars, normalization, root, manager)
        store.save_checkpoint(checkpoint)
        with pytest.raises(StateError, match=r"traded through 'paper', not 'ExchangeBroker'"):
            _runner(bars, normalization, root, manager, broker=ExchangeBroker(FakeExchange()))


def test_a_restarted_runner_refuses_a_step_count_out_of_range(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    """The step count goes to step_info, a C integer in the compiled core: a damaged count is refused at
    restart with a StateError naming it (was an OverflowError at the first bar, compiled only)."""
    from envs.errors import StateError

    root = tmp_path / "s"
    with _manager(root) as manager:
        store, checkpoint = _checkpoint_after(bars, normalization, root, manager, 20)
        for step in (2**63, -1, 1.5):
            store.save_checkpoint({**checkpoint, "step": step})
            with pytest.raises(
                StateError, match=rf"runner checkpoint in .*: step={step!r} is not an integer"
            ):
                _runner(bars, normalization, root, manager)


# --- a real SIGKILL ----------------------------------------------------------------------------------------


def child_main(root: str, pace: float) -> None:
    """A paper runner process on the test's bars (``pace``: wall seconds per bar; 0: as fast as possible)."""
    bars = _bars()
    normalization = _normalization(bars)
    manager = _manager(Path(root))
    feed = ReplayFeed(bars, start=START, speed=3600.0 / pace if pace > 0 else 0.0)
    runner = LiveRunner(
        feed, MomentumPolicy(len(normalization.columns)), spec=SPEC, features=FeatureConfig(),
        normalization=normalization, env=SETTINGS, switches=LearningSwitches(), manager=manager,
        state_dir=Path(root), id_prefix="live", id_token="",
    )  # fmt: skip
    runner.build()
    asyncio.run(runner.run())
    manager.close()


def _spawn(root: Path, pace: float) -> subprocess.Popen[bytes]:
    code = f"from tests.agents.test_runner_restart import child_main; child_main({str(root)!r}, {pace!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _booked(root: Path) -> int:
    path = root / STORE_DIRNAME / STORE_FILENAME
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT count(*) FROM runner_orders WHERE status = 'booked'").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0  # not created yet


@pytest.mark.slow
def test_sigkilled_runner_process_restarts_without_duplicate_or_lost_orders_trades_or_learning(
    tmp_path: Path, paper_reference: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    infos, learned = paper_reference
    orders = learned["orders"]
    root = tmp_path / "killed"
    child = _spawn(root, pace=0.03)
    deadline = time.monotonic() + 60.0
    while _booked(root) < 8:
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "the runner process booked no orders"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert 8 <= _booked(root) < len(orders)

    rerun = _spawn(root, pace=0.0)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    got = _learned(root)
    logged = got["orders"]
    assert [o.intent.client_order_id for o in logged] == [o.intent.client_order_id for o in orders]
    assert logged == orders  # same orders, each sent once, same fills and refusals
    assert got == learned  # no trade and no learned state lost or counted twice
    assert got["describe"]["trades"] == sum(len(i["trades"]) for i in infos)
    assert not (root / RUNNER_DIRNAME / RUNNER_FILENAME).exists()  # online: one store, one transaction


class BalancesDown(ExchangeBroker):
    """The exchange answers orders but its balance endpoint fails every ``every``-th time."""

    def __init__(self, exchange: FakeExchange, every: int) -> None:
        super().__init__(exchange)
        self.every, self.calls, self.failed = every, 0, 0

    async def account(self) -> AccountSnapshot:
        self.calls += 1
        if self.calls > 1 and self.calls % self.every == 0:
            self.failed += 1
            raise RetryableBrokerError("cannot fetch the balance: 503", where="test")
        return await super().account()


def test_a_failed_balance_fetch_after_a_fill_defers_adoption_to_the_next_bar(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    exchange = FakeExchange()
    manager = _manager(tmp_path)
    broker = BalancesDown(exchange, every=3)
    runner, feed = _runner(bars, normalization, tmp_path, manager, broker=broker, retry=NO_WAIT)
    asyncio.run(_drive(runner, feed))  # does not die
    assert broker.failed >= 3
    assert runner.lifecycle is RunnerState.STOPPED
    assert (runner.book.cash, runner.book.qty) == (exchange.account.cash, exchange.account.qty)
    manager.close()


class LateArrival(ExchangeBroker):
    """Every ``every``-th fresh order times out on the way in and reaches the matching engine only after
    the exchange was asked about it ``after`` times (Binance's "execution status unknown")."""

    def __init__(self, exchange: FakeExchange, every: int, after: int) -> None:
        super().__init__(exchange)
        self.every, self.after, self.fresh = every, after, 0
        self.late: dict[str, tuple[OrderIntent, Quote, int]] = {}
        self.arrived: list[str] = []

    async def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        cid = order.client_order_id
        if cid not in self.exchange.orders and cid not in self.late:
            self.fresh += 1
            if self.fresh % self.every == 0:
                self.late[cid] = (order, quote, 0)
                return OrderResult(
                    cid, order.symbol, order.side, quote.time_ns, order.qty, quote.price,
                    OrderStatus.ERRORED, kind=ErrorKind.TIMEOUT, code="-1007",
                    message="Timeout waiting for response from backend server. Send status unknown; "
                    "execution status unknown.",
                )  # fmt: skip
        return await super().submit(order, quote)

    async def known(self, client_order_id: str) -> OrderResult | None:
        late = self.late.get(client_order_id)
        if late is not None:
            order, quote, asked = late
            if asked + 1 < self.after:
                self.late[client_order_id] = (order, quote, asked + 1)
                return None
            del self.late[client_order_id]
            self.exchange.submit(order, quote)
            self.arrived.append(client_order_id)
        return await super().known(client_order_id)


def test_an_ambiguous_failure_is_looked_up_several_times_before_a_new_id_is_sent(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    # The order shows up at the third question: one or two lookups would send a duplicate "-r1".
    exchange = FakeExchange()
    manager = _manager(tmp_path)
    broker = LateArrival(exchange, every=4, after=3)
    runner, feed = _runner(bars, normalization, tmp_path, manager, broker=broker, retry=NO_WAIT)
    asyncio.run(_drive(runner, feed))
    assert len(broker.arrived) >= 3
    assert not [cid for cid in exchange.received if "-r" in cid]
    booked = {o.order_id: o for i in runner.infos for o in i["orders"]}
    for cid in broker.arrived:
        assert booked[cid] == exchange.orders[cid]
    assert (runner.book.cash, runner.book.qty) == (exchange.account.cash, exchange.account.qty)
    manager.close()


def test_client_ids_carry_a_token_of_the_state_directory_kept_across_restarts(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    tokens = {}
    for name in ("a", "b"):
        manager = _manager(tmp_path / name)
        runner, feed = _runner(bars, normalization, tmp_path / name, manager, id_token=None)
        asyncio.run(_drive(runner, feed, stop_after=60))
        tokens[name] = runner.id_token
        ids = [o.intent.client_order_id for o in RunnerStore.with_learning(manager).orders()]
        assert ids
        assert all(cid.startswith(f"live{runner.id_token}-") for cid in ids)
        _crash(runner, manager)
    assert len(tokens["a"]) == 4
    assert tokens["a"] != tokens["b"]  # two runners on one account never share an id
    manager = _manager(tmp_path / "a")
    runner, feed = _runner(bars, normalization, tmp_path / "a", manager, id_token="zzzz")
    assert runner.id_token == tokens["a"]  # the checkpoint's token: a restart sends the same ids
    runner.stop()
    manager.close()


def test_an_id_prefix_too_long_for_the_exchange_is_refused_at_build(
    bars: pd.DataFrame, normalization: NormalizationStats, tmp_path: Path
) -> None:
    # <prefix><token>-EURUSD-<13 digits>-<n>-r2: 26 characters besides prefix and token.
    manager = _manager(tmp_path)
    try:
        with pytest.raises(ConfigError, match=r"not usable") as info:
            _runner(bars, normalization, tmp_path, manager, id_prefix="live-x")
        assert info.value.where == "--id-prefix"
        with pytest.raises(ConfigError, match=r"up to 37 characters") as info:
            _runner(
                bars, normalization, tmp_path, manager, broker=ExchangeBroker(FakeExchange()),
                id_prefix="livexyz", id_token="abcd",
            )  # fmt: skip
        assert info.value.where == "--id-prefix"
        assert "at most 6 characters" in str(info.value)
        runner, _ = _runner(
            bars, normalization, tmp_path, manager, broker=ExchangeBroker(FakeExchange()),
            id_prefix="livexy", id_token="abcd",
        )  # fmt: skip
        runner.stop()
    finally:
        manager.close()


def test_a_full_disk_under_the_runners_own_state_is_a_state_error_naming_it(tmp_path: Path) -> None:
    """SQLite rolls a full-disk transaction back itself; the error must name the disk, not a failed
    ROLLBACK ("no transaction is active"), and the committed checkpoint must survive."""
    store = RunnerStore.open(tmp_path)
    try:
        store.save_checkpoint({"step": 1})
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StateError, match="full") as raised:
            store.save_checkpoint({"step": 2, "pad": "x" * 200_000})
        assert raised.value.where == str(tmp_path / RUNNER_DIRNAME / RUNNER_FILENAME)
        store.conn.execute("PRAGMA max_page_count = 1073741823")
        assert store.load_checkpoint()["step"] == 1  # type: ignore[index]
    finally:
        store.close()
