"""Vectorized rule backtests: bar-for-bar agreement with MarketReplayEnv, target series, refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from backtests.vectorized import (
    buy_and_hold_targets,
    flat_targets,
    random_targets,
    run_sma_crossover,
    run_targets,
    sma_crossover_targets,
)
from envs.errors import ConfigError
from envs.market import MarketSpec, SlippageModel
from envs.portfolio import PortfolioConfig
from envs.replay import MarketReplayEnv
from tests.envs.test_replay import make_bars

N_BARS = 1_500
LEVELS = (-1.0, -0.5, 0.0, 0.5, 1.0)
COSTS = MarketSpec("TEST/USD", taker_fee=0.001, spread_bps=4.0, slippage_bps=1.0)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return make_bars(N_BARS, seed=3)


def _env_run(bars: pd.DataFrame, targets: np.ndarray, spec: MarketSpec, **kw: Any) -> dict[str, Any]:
    """Drive the env with ``targets[row]`` at every decision row; collect what it reports."""
    env = MarketReplayEnv(data=bars, market=spec, window=4, actions=LEVELS, **kw)
    _, info = env.reset()
    start = env.row
    equity, trades, orders = [info["equity"]], [], []
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(np.int64(LEVELS.index(float(targets[env.row]))))
        equity.append(info["equity"])
        trades += info["trades"]
        orders += info["orders"]
        done = terminated or truncated
    return {"start": start, "equity": np.array(equity), "trades": trades, "orders": orders}


CASES = {
    "sma long/flat": (COSTS, {}, lambda b: sma_crossover_targets(b["close"], 5, 20)),
    "sma long/short with borrow": (
        COSTS,
        {"borrow_rate": 1e-4},
        lambda b: sma_crossover_targets(b["close"], 5, 20, short=True),
    ),
    "random levels, 2x leverage, volume impact": (
        MarketSpec(
            "TEST/USD", taker_fee=0.001, spread_bps=4.0, slippage_model=SlippageModel.VOLUME, impact_bps=5.0
        ),
        {"borrow_rate": 1e-4, "leverage": 2.0},
        lambda b: random_targets(len(b), 1, LEVELS, hold=7),
    ),
    "lot step, minimums and ticks": (
        MarketSpec(
            "TEST/USD", taker_fee=0.001, qty_step=0.5, min_qty=1.0, min_notional=6_000.0, price_tick=0.01
        ),
        {"borrow_rate": 1e-4},
        lambda b: random_targets(len(b), 2, LEVELS, hold=5),
    ),
    "dust account: runs of refused retries": (
        MarketSpec("TEST/USD", taker_fee=0.05, qty_step=1.0, min_notional=150.0, price_tick=0.01),
        {"borrow_rate": 1e-4},
        lambda b: random_targets(len(b), 4, LEVELS, hold=3),
    ),
    "max drawdown stop and close at end": (
        MarketSpec("TEST/USD", taker_fee=0.001),
        {"max_drawdown": 0.05, "leverage": 3.0, "close_at_end": True},
        lambda b: random_targets(len(b), 3, (-1.0, 1.0), hold=50),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vectorized_equals_the_env_driven_by_the_same_targets(bars: pd.DataFrame, case: str) -> None:
    spec, kw, make_targets = CASES[case]
    targets = make_targets(bars)
    ref = _env_run(bars, targets, spec, **kw)
    start = ref["start"]
    portfolio = PortfolioConfig(borrow_rate=kw.get("borrow_rate", 0.0), leverage=kw.get("leverage", 1.0))
    stops: dict[str, Any] = {k: v for k, v in kw.items() if k in ("max_drawdown", "close_at_end")}
    res = run_targets(bars.iloc[start:], targets[start:], market=spec, portfolio=portfolio, **stops)

    np.testing.assert_allclose(res.equity.to_numpy(), ref["equity"], rtol=1e-9, atol=0.0)
    assert len(res.trades) == len(ref["trades"]) > 0
    for row, trade in zip(res.trades.itertuples(), ref["trades"], strict=True):
        assert (row.side, row.exit_reason, row.duration_bars) == (
            str(trade.side),
            trade.exit_reason,
            trade.duration_bars,
        )
        assert pd.Timestamp(row.entry_time).value == trade.entry_time_ns  # type: ignore[arg-type]
        assert pd.Timestamp(row.exit_time).value == trade.exit_time_ns  # type: ignore[arg-type]
        assert row.quantity == pytest.approx(trade.quantity, rel=1e-9)
        assert row.pnl == pytest.approx(trade.pnl, rel=1e-9, abs=1e-9)
        assert row.fees == pytest.approx(trade.fees, rel=1e-9)
    assert list(res.orders["status"]) == [str(o.status) for o in ref["orders"]]
    assert list(res.orders["kind"]) == ["" if o.kind is None else str(o.kind) for o in ref["orders"]]
    np.testing.assert_allclose(res.orders["price"], [o.price for o in ref["orders"]], rtol=1e-12)
    np.testing.assert_allclose(
        res.orders["requested_qty"], [o.requested_qty for o in ref["orders"]], rtol=1e-9
    )
    assert res.orders["time"].is_monotonic_increasing
    assert res.orders["order_id"].is_unique
    if case.startswith(("lot", "dust")):
        assert len(res.rejections) > 0  # the rules bind, and are reproduced
    if case.startswith("dust"):
        assert len(res.rejections) > len(res.fills)  # the account ends too small to trade
    if case.startswith("max drawdown"):
        assert res.meta["stopped"]["reason"] == "max_drawdown"
        assert len(res.curve) == len(ref["equity"]) < N_BARS - start


def test_sma_targets_are_causal_and_match_the_rolling_means(bars: pd.DataFrame) -> None:
    close = bars["close"].to_numpy()
    t = sma_crossover_targets(close, 5, 20)
    fast = pd.Series(close).rolling(5).mean().to_numpy()
    slow = pd.Series(close).rolling(20).mean().to_numpy()
    expected = np.where(fast > slow, 1.0, 0.0)
    expected[:19] = 0.0
    assert np.array_equal(t, expected)
    # No look-ahead: changing every close after row 700 leaves targets up to 700 unchanged.
    perturbed = close.copy()
    perturbed[701:] *= 1.5
    assert np.array_equal(sma_crossover_targets(perturbed, 5, 20)[:701], t[:701])
    assert set(np.unique(sma_crossover_targets(close, 5, 20, short=True))) == {-1.0, 1.0, 0.0}


def test_flat_never_trades_and_buy_and_hold_trades_once(bars: pd.DataFrame) -> None:
    flat = run_targets(bars, flat_targets(len(bars)), market=COSTS)
    assert len(flat.orders) == 0
    assert (flat.equity == 10_000.0).all()
    hold = run_targets(bars, buy_and_hold_targets(len(bars)), market=COSTS, close_at_end=True)
    assert list(hold.orders["side"]) == ["buy", "sell"]
    assert hold.trades["exit_reason"].tolist() == ["end_of_data"]


def test_random_targets_are_seeded() -> None:
    a = random_targets(100, 4, hold=3)
    assert np.array_equal(a, random_targets(100, 4, hold=3))
    assert not np.array_equal(a, random_targets(100, 5, hold=3))
    assert np.array_equal(a[0:99:3], a[1:99:3])  # each draw is held for 3 bars


def test_sma_crossover_result_is_labelled_and_has_metrics(bars: pd.DataFrame) -> None:
    res = run_sma_crossover(bars, 5, 20, market=COSTS)
    assert res.name == "sma_crossover(5,20)"
    assert res.meta["engine"] == "vectorized"
    assert res.metrics.trades == len(res.trades)
    assert res.metrics.fees_paid == pytest.approx(res.fills["fee"].sum())


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        (np.full(N_BARS, 2.0), "not a number in \\[-1, 1\\]"),
        (np.r_[np.nan, np.zeros(N_BARS - 1)], "at row 0"),
        (np.zeros(10), "one target per bar"),
    ],
)
def test_bad_targets_are_config_errors(bars: pd.DataFrame, targets: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_targets(bars, targets)


def test_long_only_accounts_treat_short_targets_as_flat(bars: pd.DataFrame) -> None:
    res = run_targets(
        bars,
        sma_crossover_targets(bars["close"], 5, 20, short=True),
        portfolio=PortfolioConfig(allow_short=False),
    )
    assert (res.positions >= 0.0).all()
    assert (res.trades["side"] == "long").all()
