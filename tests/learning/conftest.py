"""Shared builders for the learning tests: trades with chosen factors, a market clock, a manager."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from envs.clock import DAY_NS, MINUTE_NS, MarketClock
from envs.events import PositionSide, TradeResult
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager

START_NS = 100 * DAY_NS
"""A market time far enough from the epoch that every window fits before it."""

# Feature values that discretize to known factors (see learning.discretize.DEFAULT_RULES).
RSI_OVERSOLD = {"rsi_14": 25.0}  # rsi_14=oversold
RSI_STRONG = {"rsi_14": 60.0}  # rsi_14=strong
MACD_POS = {"macd_hist": 0.5}  # macd_hist=pos
MACD_NEG = {"macd_hist": -0.5}  # macd_hist=neg
CALM = {"regime": 1.0, "volatility_ratio": 1.0}  # regime=r1|volatility_ratio=normal
WILD = {"regime": 2.0, "volatility_ratio": 2.0}  # regime=r2|volatility_ratio=wild


def make_trade(
    n: int,
    pnl: float,
    *,
    exit_ns: int = START_NS,
    signals: Mapping[str, float] | None = None,
    conditions: Mapping[str, float] | None = None,
    alignment: Mapping[str, float] | None = None,
    volume: Mapping[str, float] | None = None,
    symbol: str = "BTC/USDT",
) -> TradeResult:
    """A closed long trade that exits at ``exit_ns`` (entered one minute earlier)."""
    return TradeResult(
        trade_id=f"t{n}",
        symbol=symbol,
        side=PositionSide.LONG,
        entry_time_ns=exit_ns - MINUTE_NS,
        exit_time_ns=exit_ns,
        entry_price=100.0,
        exit_price=100.0 + pnl,
        quantity=1.0,
        fees=0.0,
        pnl=pnl,
        return_pct=pnl / 100.0,
        duration_bars=1,
        exit_reason="signal",
        entry_signals=dict(signals if signals is not None else {**RSI_STRONG, **MACD_POS}),
        market_conditions=dict(conditions if conditions is not None else CALM),
        timeframe_alignment=dict(alignment if alignment is not None else {"align_1h": 1.0}),
        volume_profile=dict(volume if volume is not None else {"rel_volume": 1.0}),
    )


@pytest.fixture
def clock() -> MarketClock:
    return MarketClock(START_NS)


ManagerFactory = Callable[..., UniversalLearningManager]


@pytest.fixture
def manager_factory(tmp_path: Path) -> Iterator[ManagerFactory]:
    """Builds managers under ``tmp_path`` (each name its own root) and closes them after the test."""
    opened: list[UniversalLearningManager] = []

    def build(
        name: str = "run", config: LearningConfig | None = None, **kwargs: object
    ) -> UniversalLearningManager:
        manager = UniversalLearningManager(tmp_path / name, config, **kwargs)  # type: ignore[arg-type]
        opened.append(manager)
        return manager

    yield build
    for manager in opened:
        manager.close()


@pytest.fixture
def manager(manager_factory: ManagerFactory, clock: MarketClock) -> UniversalLearningManager:
    return manager_factory(clock=clock)


def dump_store(root: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table of the learning store under run root ``root``, rows sorted (to compare two stores)."""
    conn = sqlite3.connect(root / "learning" / "state.sqlite")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    dump = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    conn.close()
    return dump
