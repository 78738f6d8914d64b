"""BacktestResult save/load, and the self-contained HTML report with its learning section."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtests.metrics import METRIC_LABELS
from backtests.report import PLOT_FILES, learning_section, render_report, write_report
from backtests.results import BacktestResult
from backtests.vectorized import buy_and_hold_targets, run_targets, sma_crossover_targets
from envs.clock import DAY_NS
from envs.errors import StateError
from envs.events import ErrorEvent, ErrorKind, OrderResult, OrderStatus, Side
from envs.market import MarketSpec
from envs.portfolio import PortfolioConfig
from envs.replay import MarketReplayEnv
from learning.error_patterns import Resolution
from learning.manager import UniversalLearningManager
from tests.envs.test_replay import make_bars
from tests.learning.conftest import MACD_NEG, MACD_POS, RSI_OVERSOLD, RSI_STRONG, START_NS, make_trade

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC = MarketSpec("TEST/USD", taker_fee=0.001, spread_bps=4.0, slippage_bps=1.0)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return make_bars(1_500, seed=8)


@pytest.fixture(scope="module")
def result(bars: pd.DataFrame) -> BacktestResult:
    targets = sma_crossover_targets(bars["close"], 5, 20, short=True)
    return run_targets(bars, targets, market=SPEC, portfolio=PortfolioConfig(borrow_rate=1e-5), name="sma")


def test_save_and_load_round_trip(result: BacktestResult, tmp_path: Path) -> None:
    out = result.save(tmp_path / "bt")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["curve.parquet", "orders.parquet", "trades.parquet", "trades.csv", "metrics.json", "meta.json"]
    )
    back = BacktestResult.load(out)
    pd.testing.assert_frame_equal(back.curve, result.curve, check_freq=False)
    pd.testing.assert_frame_equal(back.orders, result.orders)
    pd.testing.assert_frame_equal(back.trades, result.trades)
    assert back.metrics == result.metrics
    assert back.meta == result.meta
    journal = pd.read_csv(out / "trades.csv")
    assert len(journal) == len(result.trades) > 0
    assert list(journal["pnl"]) == pytest.approx(list(result.trades["pnl"]), rel=1e-12)


def test_loading_a_directory_that_is_not_a_backtest_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=r"missing curve\.parquet"):
        BacktestResult.load(tmp_path)


def test_env_loop_results_carry_entry_snapshots_and_rejections(bars: pd.DataFrame, tmp_path: Path) -> None:
    from backtests.fast_policy import run_policy

    class Cycle:
        """A quarter position (below the minimum notional: rejected), full long, flat, again."""

        def __init__(self) -> None:
            self.n = 0

        def predict(self, obs: object, deterministic: bool = True) -> tuple[int, None]:
            self.n += 1
            return self.n % 3, None

    spec = MarketSpec("TEST/USD", min_notional=5_000.0)
    env = MarketReplayEnv(data=bars, market=spec, window=4, actions=[0.0, 0.25, 1.0])
    res = run_policy(Cycle(), env, name="cycle")
    assert any(c.startswith("entry_signals.") for c in res.trades.columns)
    assert len(res.rejections) > 0
    assert set(res.rejections["message"]) == {"Filter failure: NOTIONAL"}
    back = BacktestResult.load(res.save(tmp_path / "env"))
    pd.testing.assert_frame_equal(back.trades, res.trades)


def _manager(root: Path) -> UniversalLearningManager:
    """A manager that has learned an avoidance rule, evolved weights, a minimum and an error pattern."""
    m = UniversalLearningManager(root)
    m.seed_minimums([SPEC])
    for n in range(9):
        m.learn_from_trade(make_trade(n, -1.0, signals={**RSI_OVERSOLD, **MACD_NEG}))
    m.learn_from_trade(make_trade(9, -1.0, signals={**RSI_STRONG, **MACD_NEG}))
    for n in range(10):
        m.learn_from_trade(make_trade(100 + n, 1.0, signals={**RSI_STRONG, **MACD_POS}))
    m.analyze_failure_patterns(START_NS)
    m.evolve_trading_strategy(START_NS)
    m.evolve_trading_strategy(START_NS + DAY_NS)
    rejected = OrderResult(
        "o1", "TEST/USD", Side.BUY, START_NS, 0.01, 100.0, OrderStatus.REJECTED,
        kind=ErrorKind.MIN_NOTIONAL, message="Filter failure: NOTIONAL", code="-1013",
    )  # fmt: skip
    m.learn_order_minimums("TEST/USD", rejected)
    match = m.learn_from_error(
        ErrorEvent(START_NS, "TEST/USD", ErrorKind.RATE_LIMIT, "Too many requests", "429")
    )
    m.record_resolution(match.signature, Resolution.RETRY_WITH_BACKOFF, True, START_NS)
    m.record_resolution(match.signature, Resolution.RETRY_WITH_BACKOFF, False, START_NS)
    return m


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag in ("link", "script") or (tag == "a" and a.get("href")):
            self.links.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_is_one_self_contained_page_with_metrics_plots_and_learning(
    result: BacktestResult, bars: pd.DataFrame, tmp_path: Path
) -> None:
    bench = run_targets(bars, buy_and_hold_targets(len(bars)), market=SPEC, name="buy & hold")
    with _manager(tmp_path / "learn") as manager:
        version = manager.version
        page = write_report(result, tmp_path / "report", benchmark=bench, learning=manager)
        assert manager.version == version  # the report only reads
    html = page.read_text(encoding="utf-8")
    parsed = _Collect()
    parsed.feed(html)
    parsed.close()
    text = " ".join(parsed.text)
    assert not parsed.links  # no external assets, no scripts
    assert "<style>" in html
    for label in METRIC_LABELS.values():
        assert label in text
    for section in (
        "Avoidance rules",
        "Top patterns",
        "Strategy weights",
        "Learned order minimums",
        "Error patterns",
    ):
        assert section in text
    assert "avoid:rsi_14=oversold" in text
    assert "Avoid entering when rsi_14 < 30" in text  # the rule's evidence, explained
    # Learned times relative to the learning clock T: a training store's clock reads no calendar dates.
    learned = text[text.index("Read from the learning manager") :]
    assert "relative to T" in learned
    assert re.search(r"created T([-+][0-9.]+[dhm])?\.", learned)
    assert not re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", learned)
    assert "align_1h=with|macd_hist=pos|regime=r1" in text  # the winning pattern, at the top
    assert re.search(r"retry_with_backoff 1/2", text)
    assert "50%" in text  # resolution rate of the error pattern
    assert len(parsed.images) == 4
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    for name in PLOT_FILES.values():
        png = (page.parent / name).read_bytes()
        assert png.startswith(PNG_MAGIC)
        import matplotlib.image

        assert matplotlib.image.imread(page.parent / name).shape[0] > 100


def test_report_from_a_snapshot_or_a_learning_report(result: BacktestResult, tmp_path: Path) -> None:
    with _manager(tmp_path / "learn") as manager:
        snap = manager.snapshot()
        built = manager.build_report(START_NS + DAY_NS)
    from_snapshot = render_report(result, learning=snap)
    assert "avoid:rsi_14=oversold" in from_snapshot
    assert "a snapshot carries no error patterns" in from_snapshot
    from_report = render_report(result, learning=built)
    assert "retry_with_backoff 1/2" in from_report
    assert learning_section(built).source == "report"
    no_learning = render_report(result)
    assert "Avoidance rules" not in no_learning
    assert no_learning.count("data:image/png;base64,") == 3
    assert np.isfinite(result.metrics.sharpe)
