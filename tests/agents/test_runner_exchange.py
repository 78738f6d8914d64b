"""The live runner on an exchange: ccxt's real binance client against a local Binance spot server.

The runner with :class:`~envs.exchange.CcxtFeed` and :class:`~envs.exchange.ExchangeBroker` survives the
exchange's refusals and failures (NOTIONAL, LOT_SIZE, insufficient balance, 429, 5xx), learns the
minimum and which resolution fixed which error; ``slf live --exchange binance --api-url`` runs end to end
with keys from the environment that appear nowhere (logs, state directory); the CLI's argument errors
are one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from agents.bundle import EnvSettings
from agents.runner import INFO_RETRIES, LiveRunner, RetryPolicy, RunnerState
from agents.runner_state import RunnerStore, SentOrder
from agents.switches import LearningSwitches
from envs.data import load_dataset
from envs.errors import ConfigError
from envs.events import ErrorKind, OrderStatus
from envs.exchange import CcxtFeed, ExchangeBroker
from envs.features import FeatureConfig, NormalizationStats, compute_features
from envs.market import MarketSpec
from experiments.cli import main as slf_main
from learning.config import LearningConfig
from learning.error_patterns import Resolution
from learning.manager import UniversalLearningManager
from tests.envs.fake_binance import FakeBinance

REPO = Path(__file__).resolve().parents[2]
FAKE_SCRIPT = REPO / "tests" / "envs" / "fake_binance.py"
SYMBOL = "BTC/USDT"
NOW_ROW = 1500  # the fake's clock starts when this bar has just closed
WARMUP = 600
NO_LIMIT = {"enableRateLimit": False}
# The bundle's rules differ from the exchange's (min notional 5, lot step 1e-5): the runner warns and
# trades with the exchange's.
SPEC = MarketSpec(SYMBOL, taker_fee=0.001, min_qty=1e-4, qty_step=1e-4, min_notional=10.0, price_tick=0.01)
SETTINGS = EnvSettings(window=8, actions=(0.0, 0.5, 1.0), allow_short=False, initial_cash=10_000.0)
SECRET = "sk-live-runner-secret-DO-NOT-LEAK-42"
KILL_BARS = 12  # bars traded in the SIGKILL test
KEY = "ak-live-runner-key-DO-NOT-LEAK-17"


@functools.cache
def _btc() -> pd.DataFrame:
    return load_dataset("synth_btcusdt_1m").iloc[:2500].copy()


class Alternating:
    """All in, then flat, then all in...: an order every bar (the policy's observation is not used)."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, observation: Any, state: Any = None, **_: Any) -> tuple[Any, Any]:
        self.calls += 1
        return np.int64(2 if self.calls % 2 else 0), state


async def _wait_for(condition: Any, what: str, timeout: float = 15.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# --- the runner against the exchange ---------------------------------------------------------------------


def test_runner_survives_the_exchanges_refusals_and_learns_minimum_and_resolutions(tmp_path: Path) -> None:
    bars = _btc()
    normalization = NormalizationStats.fit(
        compute_features(bars.iloc[: NOW_ROW + 1], FeatureConfig()), 0, NOW_ROW
    )
    config = LearningConfig(exploration_rate=0.0)  # the greedy resolution, so the scenario is fixed
    # Learned minimums are learned but not applied: a scripted NOTIONAL on a full-size order teaches a
    # minimum above the account, which would hold every later entry back.
    switches = LearningSwitches(learned_minimums=False)

    async def scenario() -> tuple[LiveRunner, FakeBinance, UniversalLearningManager]:
        fake = FakeBinance(bars, key=KEY, secret=SECRET, cash=10_000.0)
        fake.set_time(fake.close_time_of(NOW_ROW))
        async with fake:
            from envs.exchange import Credentials

            keys = Credentials(KEY, SECRET, source="test")
            feed = CcxtFeed(
                "binance", SYMBOL, "1m", warmup=WARMUP, poll_interval=0.02, api_url=fake.url, options=NO_LIMIT
            )
            broker = ExchangeBroker("binance", SYMBOL, keys, api_url=fake.url, options=NO_LIMIT)
            manager = UniversalLearningManager(tmp_path, config=config, market_specs=[SPEC])
            runner = LiveRunner(
                feed, Alternating(), spec=SPEC, features=FeatureConfig(), normalization=normalization,
                env=SETTINGS, switches=switches, manager=manager, broker=broker, state_dir=tmp_path,
                retry=RetryPolicy(max_attempts=3, backoff_seconds=0.01),
            ).build()  # fmt: skip
            task = asyncio.create_task(runner.run())
            await _wait_for(lambda: runner.core.spec.qty_step == 1e-5, "the runner to start")
            # The policy buys on odd bars and sells on even ones (flat after a refused buy: no order).
            script = {1: "429", 2: "500", 3: "balance", 5: "lot_size", 7: "notional"}
            for i, row in enumerate(range(NOW_ROW + 1, NOW_ROW + 16), start=1):
                if i in script:
                    fake.fail_next(script[i])
                fake.set_time(fake.close_time_of(row))
                time_ns = int(bars.index[row].value)
                await _wait_for(lambda t=time_ns: runner.decided_ns >= t, f"bar {row}")  # type: ignore[misc]
            runner.request_stop("test done")
            await asyncio.wait_for(task, 15.0)
            return runner, fake, manager

    runner, fake, manager = asyncio.run(scenario())
    try:
        assert runner.lifecycle is RunnerState.STOPPED
        assert runner.core.spec.min_notional == 5.0  # the exchange's rules, not the bundle's
        ids = [o["clientOrderId"] for o in fake.orders]
        assert len(ids) == len(set(ids)) > 5  # every accepted order once
        assert fake.duplicates == 0
        retried = [r for i in runner.infos for r in i.get(INFO_RETRIES, ())]
        assert [r.kind for r in retried] == [ErrorKind.RATE_LIMIT, ErrorKind.MAINTENANCE]
        refused = [o for i in runner.infos for o in i["orders"] if o.status is OrderStatus.REJECTED]
        assert [o.kind for o in refused] == [
            ErrorKind.INSUFFICIENT_BALANCE, ErrorKind.LOT_SIZE, ErrorKind.MIN_NOTIONAL,
        ]  # fmt: skip
        assert refused[2].message == "Filter failure: NOTIONAL"
        # The minimum: raised above the attempt the exchange refused.
        minimum = manager.minimums()[SYMBOL]
        assert minimum.source == "learned"
        assert minimum.min_notional > refused[2].notional > 5.0
        # Which resolution fixed which error.
        fixed = {p.kind: [(a.resolution, a.success) for a in p.attempts] for p in manager.error_patterns()}
        assert fixed[ErrorKind.RATE_LIMIT] == [(Resolution.RETRY_WITH_BACKOFF, True)]
        assert fixed[ErrorKind.MAINTENANCE] == [(Resolution.RETRY_WITH_BACKOFF, True)]
        assert fixed[ErrorKind.INSUFFICIENT_BALANCE][0][0] is Resolution.REDUCE_SIZE
        logged = RunnerStore.with_learning(manager).orders()
        assert all(o.status == "booked" for o in logged)
        assert [o.sent_id for o in logged if o.attempts > 1] == [
            f"{o.intent.client_order_id}-r1" for o in logged if o.attempts > 1
        ]
    finally:
        manager.close()


# --- slf live ---------------------------------------------------------------------------------------------


def _slf(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = slf_main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--exchange", "binanse"], {}, "--exchange: unknown exchange 'binanse' (did you mean 'binance'?)"),
        (["--exchange", "binance"], {}, "--timeframe: an exchange needs the bar timeframe"),
        (
            ["--exchange", "binance", "--timeframe", "1x"],
            {},
            "--timeframe: --timeframe '1x' is not a timeframe",
        ),
        (
            ["--exchange", "binance", "--timeframe", "1m", "--api-url", "127.0.0.1:8080"],
            {},
            "--api-url: --api-url '127.0.0.1:8080' is not an http(s) URL with a host",
        ),
        (
            ["--exchange", "binance", "--timeframe", "1m"],
            {},
            "no API credentials for binance. Fix: export SLF_BINANCE_API_KEY and SLF_BINANCE_API_SECRET",
        ),
        (
            ["--exchange", "binance", "--timeframe", "1m"],
            {"SLF_BINANCE_API_KEY": KEY},
            "SLF_BINANCE_API_SECRET is not set but its pair is",
        ),
        (
            ["--exchange", "binance", "--timeframe", "1m", "--data", "x"],
            {},
            "--data: --data is for paper trading",
        ),
        (["--api-url", "http://127.0.0.1:1"], {}, "--api-url: --api-url applies to exchanges"),
        (["--timeframe", "1m"], {}, "--data: paper trading replays recorded bars"),
    ],
)
def test_cli_live_argument_errors_are_one_clear_line(
    argv: list[str], env: dict[str, str], message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name in ("SLF_BINANCE_API_KEY", "SLF_BINANCE_API_SECRET", "SLF_API_KEY", "SLF_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    base = ["live", "--bundle", str(tmp_path / "no-bundle"), "--symbol", SYMBOL]
    code, err = _slf([*base, *argv], capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_live_paper_checks_the_timeframe_against_the_data(
    btc_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["live", "--bundle", str(btc_bundle), "--symbol", SYMBOL, "--data", "synth_btcusdt_1m"]
    code, err = _slf([*base, "--timeframe", "1h", "--state-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "--timeframe: --timeframe 1h does not match the data's bars (60 s apart)" in err


@pytest.fixture(scope="module")
def btc_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from agents.bundle import promote
    from experiments.config import apply_overrides, load_config
    from experiments.train import train

    config = REPO / "experiments" / "configs" / "maskable_ppo_synth_btcusdt_1m.yaml"
    tiny = {
        "name": "btc", "data.end": "2024-01-03", "train.timesteps": 128, "train.n_envs": 1,
        "train.vec_env": "dummy", "train.eval_every": 64, "train.checkpoint_every": 0,
        "train.progress_bar": False, "algo.n_steps": 64, "algo.batch_size": 32,
    }  # fmt: skip
    runs = tmp_path_factory.mktemp("runs")
    (result,) = train(apply_overrides(load_config(config), tiny), runs_dir=runs)
    return promote(result.run_dir, tmp_path_factory.mktemp("bundles") / "btc")


@contextlib.contextmanager
def _fake_server(tmp_path: Path, speed: float, *extra: str) -> Any:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "bars.csv"
    _btc().to_csv(data)
    server = subprocess.Popen(
        [
            sys.executable, str(FAKE_SCRIPT), "--port", "0", "--data", str(data), "--state",
            str(tmp_path / "fake.json"), "--symbol", SYMBOL, "--key", KEY, "--secret", SECRET,
            "--start", str(NOW_ROW), "--speed", str(speed), "--cash", "10000", *extra,
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("READY "), (line, server.stderr.read() if server.poll() is not None else "")
        yield line.split()[1]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


@pytest.mark.slow
def test_cli_live_on_binance_runs_end_to_end_and_never_writes_or_logs_the_keys(
    btc_bundle: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # A minute bar every 0.2 s; a minimum notional other than the bundle's.
    with _fake_server(tmp_path, 300.0, "--min-notional", "7") as url:
        env = {**os.environ, "SLF_BINANCE_API_KEY": KEY, "SLF_BINANCE_API_SECRET": SECRET}
        argv = [
            sys.executable, "-m", "experiments.cli", "-v", "live", "--bundle", str(btc_bundle), "--symbol",
            SYMBOL, "--timeframe", "1m", "--exchange", "binance", "--api-url", url, "--state-dir", str(state),
            "--backfill", str(WARMUP), "--poll-interval", "0.05", "--max-bars", "6", "--status-every", "1",
        ]  # fmt: skip
        run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith(f"{SYMBOL} ")
    assert "bars 6" in run.stdout
    assert "differ from the bundle's (min_notional 5 -> 7)" in run.stderr  # the exchange's rules win
    assert "adopting the exchange's balances" in run.stderr
    for secret in (KEY, SECRET):
        assert secret not in run.stdout
        assert secret not in run.stderr
        for path in [*state.rglob("*"), *tmp_path.glob("fake.json")]:
            if path.is_file() and path.name != "fake.json":
                assert secret.encode() not in path.read_bytes(), path
    assert list(state.rglob("state.sqlite"))


def test_a_bad_key_is_a_clear_broker_error(btc_bundle: Path, tmp_path: Path) -> None:
    with _fake_server(tmp_path, 0.0) as url:
        env = {**os.environ, "SLF_BINANCE_API_KEY": KEY, "SLF_BINANCE_API_SECRET": "wrong-secret-123"}
        argv = [
            sys.executable, "-m", "experiments.cli", "live", "--bundle", str(btc_bundle), "--symbol", SYMBOL,
            "--timeframe", "1m", "--exchange", "binance", "--api-url", url, "--state-dir",
            str(tmp_path / "s"), "--backfill", str(WARMUP), "--max-bars", "1",
        ]  # fmt: skip
        run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert "Traceback" not in run.stderr
    assert "wrong-secret-123" not in run.stderr


# --- SIGKILL while the exchange holds an order's answer ------------------------------------------------


def _http(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _runner_rows(state: Path, sql: str) -> list[Any]:
    path = state / "learning" / "state.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []  # the runner's tables are not there yet


def _decided(state: Path) -> int:
    rows = _runner_rows(state, "SELECT data FROM runner_checkpoint")
    return int(json.loads(rows[0][0])["decided_ns"]) if rows else -1


def _unbooked(state: Path) -> int:
    return len(_runner_rows(state, "SELECT 1 FROM runner_orders WHERE status = 'sent'"))


class _LiveProcess:
    """``slf live --exchange binance`` in a subprocess, its log lines collected as they come."""

    def __init__(self, bundle: Path, url: str, state: Path) -> None:
        env = {**os.environ, "SLF_BINANCE_API_KEY": KEY, "SLF_BINANCE_API_SECRET": SECRET}
        argv = [
            sys.executable, "-m", "experiments.cli", "live", "--bundle", str(bundle), "--symbol", SYMBOL,
            "--timeframe", "1m", "--exchange", "binance", "--api-url", url, "--state-dir", str(state),
            "--backfill", str(WARMUP), "--poll-interval", "0.05", "--status-every", "1",
            "--capital", "10000",  # the whole account (the bundle's cash is 40)
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait(self, condition: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, "".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {''.join(self.lines[-10:])}"
            time.sleep(0.02)

    def connected(self) -> None:
        self.wait(
            lambda: any("live runner connected" in line for line in self.lines), "the runner to connect"
        )

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=30) == 0, "".join(self.lines[-30:])
        self._reader.join(timeout=5)
        return "".join(self.lines)


def _trade_through(
    bundle: Path, tmp_path: Path, name: str, *, kill: bool
) -> tuple[list[dict[str, Any]], Path, int]:
    """Drive the fake's clock bar by bar with a runner process; the first order after bar 2 is taken by
    the exchange but its answer held back. With ``kill``, the runner is SIGKILLed while it waits for
    that answer (its order logged as sent, not booked), then started again."""
    bars = _btc()
    state = tmp_path / name / "state"
    kills = 0
    # Binance refuses a client order id again only while its order is open: a resent id would be a
    # second order, which the id check below would catch.
    with _fake_server(tmp_path / name, 0.0, "--dedupe", "open") as url:
        runner = _LiveProcess(bundle, url, state)
        runner.connected()

        def held() -> bool:
            sent = _runner_rows(state, "SELECT sent_id FROM runner_orders WHERE status = 'sent'")
            return bool(sent) and sent[0][0] in {o["clientOrderId"] for o in _http(url, "/fake/orders")}

        for i, row in enumerate(range(NOW_ROW + 1, NOW_ROW + 1 + KILL_BARS), start=1):
            if i == 2:
                _http(url, "/fake/fail", {"kind": "timeout_filled", "n": 1, "delay": 1.5})
            bar_ns = int(bars.index[row].value)
            _http(url, "/fake/time", {"time_ms": bar_ns // 1_000_000 + 60_000})
            if kill and not kills:
                runner.wait(lambda b=bar_ns: _decided(state) >= b or held(), f"bar {row}")  # type: ignore[misc]
                if held():
                    os.kill(runner.proc.pid, signal.SIGKILL)
                    assert runner.proc.wait(timeout=30) == -signal.SIGKILL
                    kills += 1
                    runner = _LiveProcess(bundle, url, state)
                    runner.connected()
            runner.wait(lambda b=bar_ns: _decided(state) >= b, f"bar {row}")  # type: ignore[misc]
        log_text = runner.stop()
        orders = _http(url, "/fake/orders")
    for secret in (KEY, SECRET):
        assert secret not in log_text
    return orders, state, kills


def _untoken(cid: str) -> str:
    """A client order id without its first part (the prefix and the state directory's random token)."""
    return cid.split("-", 1)[1]


def _comparable(orders: list[SentOrder]) -> list[SentOrder]:
    return [
        o._replace(
            intent=o.intent._replace(client_order_id=_untoken(o.intent.client_order_id)),
            sent_id=_untoken(o.sent_id),
            result=None if o.result is None else o.result._replace(order_id=_untoken(o.result.order_id)),
            decision_row=0,
            quote=o.quote._replace(volume=0.0),
        )
        for o in orders
    ]


def _fake_comparable(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**o, "clientOrderId": _untoken(o["clientOrderId"])} for o in orders]


@pytest.mark.slow
def test_sigkilled_exchange_runner_restarts_without_duplicate_or_lost_order_trade_or_learning(
    btc_bundle: Path, tmp_path: Path
) -> None:
    reference, ref_state, _ = _trade_through(btc_bundle, tmp_path, "reference", kill=False)
    orders, state, kills = _trade_through(btc_bundle, tmp_path, "killed", kill=True)
    assert kills == 1, "the runner was killed while the exchange held an order's answer"
    ids = [o["clientOrderId"] for o in orders]
    assert len(ids) == len(set(ids))  # the exchange (the truth) never got an order twice
    # nor lost one: the same orders, at the same prices (each state directory has its own id token)
    assert _fake_comparable(orders) == _fake_comparable(reference)
    assert len({o["clientOrderId"].split("-", 1)[0] for o in orders + reference}) == 2
    with UniversalLearningManager(ref_state) as a, UniversalLearningManager(state) as b:
        # Rows are numbered per process (from its back-fill); a live quote has no volume (NaN).
        assert _comparable(RunnerStore.with_learning(b).orders()) == _comparable(
            RunnerStore.with_learning(a).orders()
        )
        assert b.describe() == a.describe()  # trades journaled once each, learned state intact
        assert b.patterns() == a.patterns()
        assert b.minimums() == a.minimums()
        assert b.error_patterns() == a.error_patterns()


# --- network trouble, stale bars, shared accounts ---------------------------------------------------------


def _on_fake(
    tmp_path: Path,
    script: dict[int, list[tuple[str, int, str]]],
    *,
    bars_to_trade: int = 4,
    policy: Any = None,
    setup: Any = None,
    jump: int = 0,
    **runner_kwargs: Any,
) -> tuple[LiveRunner, FakeBinance, list[dict[str, Any]]]:
    """Trade ``bars_to_trade`` bars of the fake (``dedupe="open"``, Binance's rule) with
    :class:`Alternating`; before bar ``i`` the failures ``script[i]`` (kind, n, scope) are armed.
    ``jump``: the first step closes that many bars at once (a pause). Returns the runner, the fake and
    the fake's orders."""
    bars = _btc()
    normalization = NormalizationStats.fit(
        compute_features(bars.iloc[: NOW_ROW + 1], FeatureConfig()), 0, NOW_ROW
    )

    async def scenario() -> tuple[LiveRunner, FakeBinance]:
        fake = FakeBinance(bars, key=KEY, secret=SECRET, cash=10_000.0, dedupe="open")
        if setup is not None:
            setup(fake)
        fake.set_time(fake.close_time_of(NOW_ROW))
        async with fake:
            from envs.exchange import Credentials

            keys = Credentials(KEY, SECRET, source="test")
            feed = CcxtFeed(
                "binance", SYMBOL, "1m", warmup=WARMUP, poll_interval=0.02, api_url=fake.url, options=NO_LIMIT
            )
            broker = ExchangeBroker(
                "binance", SYMBOL, keys, api_url=fake.url, options={**NO_LIMIT, "timeout": 1000}
            )
            runner = LiveRunner(
                feed, policy if policy is not None else Alternating(), spec=SPEC, features=FeatureConfig(),
                normalization=normalization, env=SETTINGS, switches=LearningSwitches(enabled=False),
                broker=broker, state_dir=tmp_path, retry=RetryPolicy(max_attempts=3, backoff_seconds=0.01),
                **runner_kwargs,
            ).build()  # fmt: skip
            task = asyncio.create_task(runner.run())
            await _wait_for(lambda: runner.core.spec.qty_step == 1e-5 or task.done(), "the runner to start")
            rows = list(range(NOW_ROW + 1 + jump, NOW_ROW + 1 + jump + bars_to_trade))
            for i, row in enumerate(rows, start=1):
                for kind, n, scope in script.get(i, []):
                    fake.fail_next(kind, n, scope=scope)
                fake.set_time(fake.close_time_of(row))
                time_ns = int(bars.index[row].value)
                await _wait_for(
                    lambda t=time_ns: runner.decided_ns >= t or task.done(),  # type: ignore[misc]
                    f"bar {row}",
                )
                if task.done():
                    break
            runner.request_stop("test done")
            await asyncio.wait_for(task, 15.0)  # re-raises what killed the runner
            return runner, fake

    runner, fake = asyncio.run(scenario())
    return runner, fake, list(fake.orders)


def test_a_failed_lookup_leaves_the_order_to_the_next_bar_and_never_resends_it(tmp_path: Path) -> None:
    # Bar 2's order fails with a 500 and every request after it fails too (the lookups included): its
    # fate is unknown. The runner must neither die nor send a "-r1" retry; at the next bar the exchange
    # answers again, says it never had the order, and trading goes on.
    runner, fake, orders = _on_fake(tmp_path, {2: [("500", 1, "order"), ("500", 6, "any")]})
    assert runner.lifecycle is RunnerState.STOPPED
    ids = [o["clientOrderId"] for o in orders]
    assert not [cid for cid in ids if "-r" in cid]
    assert len(ids) >= 2  # bar 1's buy and a later order: the runner kept trading
    store = RunnerStore.open(tmp_path)
    try:
        logged = {o.intent.client_order_id: o for o in store.orders()}
        assert not [o for o in logged.values() if o.status == "sent"]  # settled, none forgotten
        void = [o for o in logged.values() if o.status == "void"]
        assert len(void) == 1
        assert void[0].intent.client_order_id not in ids
    finally:
        store.close()
    assert runner.book.cash == pytest.approx(fake.balances[fake.quote], rel=1e-9)
    assert abs(runner.book.qty - fake.balances[fake.base]) < 1e-5  # at most dust below the lot step


def test_after_a_pause_only_the_newest_bar_is_traded(tmp_path: Path) -> None:
    # Six bars close at once: the first five are a backlog (marked, learned from, not traded); the
    # newest one is decided on. Without the backlog rule the alternating policy sends an order per bar.
    runner, _, orders = _on_fake(tmp_path, {}, bars_to_trade=1, jump=5)
    assert runner.bars == 6
    assert len(runner.infos) == 5  # every bar after the first is a step, traded or not
    assert len(orders) == 1
    newest = int(_btc().index[NOW_ROW + 6].value)
    assert orders[0]["clientOrderId"].endswith(f"-{newest // 1_000_000}-0")


def _hold(base: float = 0.0, cash: float = 10_000.0) -> Any:
    def setup(fake: FakeBinance) -> None:
        fake.balances[fake.base] = base
        fake.balances[fake.quote] = cash

    return setup


def test_a_fresh_start_refuses_to_adopt_the_accounts_holding_unless_asked(tmp_path: Path) -> None:
    # The user's own 0.5 BTC: the flat policy would sell it at the first bar.
    with pytest.raises(ConfigError, match=r"already holds 0\.5 BTC") as info:
        _on_fake(tmp_path / "refused", {}, bars_to_trade=1, setup=_hold(base=0.5))
    assert info.value.where == "--adopt-position"
    runner, fake, _ = _on_fake(
        tmp_path / "adopted", {}, bars_to_trade=1, setup=_hold(base=0.5), adopt_position=True
    )
    assert runner.book.qty == pytest.approx(fake.balances[fake.base], abs=1e-5)
    # Dust below the minimum notional is not a holding.
    runner, _, _ = _on_fake(tmp_path / "dust", {}, bars_to_trade=1, setup=_hold(base=1e-6))
    assert runner.lifecycle is RunnerState.STOPPED


def test_the_runner_trades_its_capital_not_the_whole_account(tmp_path: Path) -> None:
    # 50 000 USDT on the account, a bundle of 10 000 and --capital 4 000: the runner uses 4 000 and,
    # trading, never takes more than it booked (the rest of the account stays out of its equity).
    runner, fake, orders = _on_fake(
        tmp_path, {}, bars_to_trade=4, setup=_hold(cash=50_000.0), capital=4_000.0
    )
    buys = [o for o in orders if o["side"] == "BUY"]
    assert buys
    assert max(float(o["cummulativeQuoteQty"]) for o in buys) < 4_000.0
    assert runner.book.equity < 4_100.0
    assert fake.balances[fake.quote] > 45_000.0


def test_every_binance_round_trip_reaches_the_learner_as_a_trade(tmp_path: Path) -> None:
    # The fake charges a buy's commission in BTC: the closing sell (floored to the lot step) leaves a
    # remainder the exchange will not trade. The trade must still close and be reported.
    runner, _, orders = _on_fake(tmp_path, {}, bars_to_trade=5)
    sides = [o["side"] for o in orders]
    assert sides == ["BUY", "SELL", "BUY", "SELL", "BUY"]
    trades = [t for i in runner.infos for t in i["trades"]]
    buys = [o["clientOrderId"] for o in orders if o["side"] == "BUY"]
    assert {t.trade_id.split(":")[0] for t in trades} == set(buys[:2])  # the last buy is still open
    assert "dust" in {t.exit_reason for t in trades}
