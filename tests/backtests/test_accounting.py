"""The accounting conventions of the README ("Accounting conventions"), worked out by hand on seven bars.

Market: taker fee 0.1% per side, spread 10 bps (half = 5 bps) + slippage 5 bps -> a buy fills at
``open * 1.001``, a sell at ``open * 0.999``. Account: 10,000 cash, leverage 1, shorts allowed, borrow
0.1% of short notional per bar, no-trade band 0.05.

    bar   open   close   target decided at this close
    0     100    100     +1.00   (open a long)
    1     100    102     +0.97   (inside the band: no order)
    2     102    104     +0.50   (reduce)
    3     104    103      0.00   (close)
    4     103    101     -1.00   (open a short)
    5     101    100     +1.00   (reverse)
    6     100     99       -     (last bar: never filled)

The same numbers are checked for the vectorized engine and for MarketReplayEnv driven with the same
targets (after a warm-up so its features exist), so any backtester can reproduce them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from backtests.vectorized import run_targets
from envs.market import MarketSpec
from envs.portfolio import PortfolioConfig
from envs.replay import MarketReplayEnv

PHI = 0.001  # fee per side
SPEC = MarketSpec("TEST/USD", taker_fee=PHI, spread_bps=10.0, slippage_bps=5.0)
CONFIG = PortfolioConfig(initial_cash=10_000.0, borrow_rate=0.001)
OPEN = [100.0, 100.0, 102.0, 104.0, 103.0, 101.0, 100.0]
CLOSE = [100.0, 102.0, 104.0, 103.0, 101.0, 100.0, 99.0]
TARGETS = [1.0, 0.97, 0.5, 0.0, -1.0, 1.0, np.nan]
ACTIONS = (-1.0, 0.0, 0.5, 0.97, 1.0)
WARMUP = 400

# --- the hand computation -------------------------------------------------------------------------
# bar 1 (fill of bar 0's +1 at open 100): buy at P = 100 * 1.001 = 100.1.
#   Sizing from flat reserves the fee: q = E / (P (1 + phi)) = 10000 / (100.1 * 1.001) = 99.8002996005.
#   fee = q * 100.1 * 0.001 = 9.99000999; cash = 10000 - q * 100.1 - fee = 0; equity = q * 102.
Q1 = 10_000.0 / (100.1 * 1.001)
FEE1 = Q1 * 100.1 * PHI
EQ1 = Q1 * 102.0  # 10179.6305592509
# bar 2 (bar 1's +0.97): exposure at open 102 is q * 102 / (q * 102 + 0) = 1.0; |0.97 - 1.0| < 0.05: no order.
EQ2 = Q1 * 104.0
# bar 3 (bar 2's +0.5): sell at P = 104 * 0.999 = 103.896; equity at P: E = 0 + q * 103.896.
#   q1 = f (E + s q P phi) / (P (1 + f s phi)) with f = 0.5, s = -1 = 49.8751872441; sold 49.9251123564.
#   fee = 49.9251123564 * 103.896 * 0.001 = 5.18701947; cash = 49.92511 * 103.896 - fee = 5181.83245391.
P3 = 104.0 * 0.999
E3 = Q1 * P3
Q3 = 0.5 * (E3 - Q1 * P3 * PHI) / (P3 * (1.0 - 0.5 * PHI))
SOLD3 = Q1 - Q3
FEE3 = SOLD3 * P3 * PHI
CASH3 = SOLD3 * P3 - FEE3
EQ3 = CASH3 + Q3 * 103.0  # 10318.9767400494
# The reduction closes a slice of the long: its share of the entry fee is FEE1 * SOLD3 / Q1.
PNL_SLICE1 = (P3 - 100.1) * SOLD3 - (FEE1 * SOLD3 / Q1 + FEE3)
# bar 4 (bar 3's 0): sell the rest at P = 103 * 0.999 = 102.897; fee = Q3 * 102.897 * 0.001 = 5.13200714.
P4 = 103.0 * 0.999
FEE4 = Q3 * P4 * PHI
CASH4 = CASH3 + Q3 * P4 - FEE4  # 10308.7075886214
PNL_SLICE2 = (P4 - 100.1) * Q3 - (FEE1 * Q3 / Q1 + FEE4)
# bar 5 (bar 4's -1): short from flat at P = 101 * 0.999 = 100.899: q = -E / (P (1 + phi)) = -102.066513835.
#   fee = 102.0665 * 100.899 * 0.001 = 10.2984092; cash = 10308.7076 + 102.0665 * 100.899 - fee.
#   Borrow at the close: 0.001 * 102.066513835 * 100 = 10.2066514 leaves cash.
P5 = 101.0 * 0.999
Q5 = -CASH4 / (P5 * (1.0 + PHI))
FEE5 = -Q5 * P5 * PHI
BORROW5 = 0.001 * -Q5 * 100.0
CASH5 = CASH4 - Q5 * P5 - FEE5 - BORROW5  # 20586.6117075005
EQ5 = CASH5 + Q5 * 100.0  # 10379.9603239962
# bar 6 (bar 5's +1): reverse at P = 100 * 1.001 = 100.1; E = cash + q P = 10369.7536726127.
#   q1 = f (E + s q P phi) / (P (1 + f s phi)) with f = 1, s = +1 = 103.388487782; bought 205.455001617.
#   fee = 205.455 * 100.1 * 0.001 = 20.5660457, split pro rata: 102.0665 / 205.455 of it closes the short.
P6 = 100.1
E6 = CASH5 + Q5 * P6
Q6 = (E6 + Q5 * P6 * PHI) / (P6 * (1.0 + PHI))
BOUGHT6 = Q6 - Q5
FEE6 = BOUGHT6 * P6 * PHI
CASH6 = CASH5 - BOUGHT6 * P6 - FEE6  # ~0: the new long is full size
EQ6 = CASH6 + Q6 * 99.0  # 10235.4602903909
PNL_SLICE3 = (P5 - P6) * -Q5 - (FEE5 + FEE6 * -Q5 / BOUGHT6) - BORROW5

EXPECTED_EQUITY = [10_000.0, EQ1, EQ2, EQ3, CASH4, EQ5, EQ6]
EXPECTED_POSITION = [0.0, Q1, Q1, Q3, 0.0, Q5, Q6]


def _bars(warmup: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    # A warm-up random walk that ends at 100, so the env's features exist before the seven bars.
    steps = np.cumsum(rng.normal(0.0, 0.002, warmup))
    walk = 100.0 * np.exp(steps - steps[-1]) if warmup else np.empty(0)
    opens = np.r_[walk, OPEN]
    closes = np.r_[walk, CLOSE]
    index = pd.date_range("2024-01-01", periods=len(opens), freq="1h", tz="UTC", name="timestamp")
    frame = pd.DataFrame(
        {
            "open": opens,
            "high": np.maximum(opens, closes) + 0.5,
            "low": np.minimum(opens, closes) - 0.5,
            "close": closes,
            "volume": 1_000.0,
        },
        index=index,
    )
    frame.attrs["symbol"] = "TEST/USD"
    return frame


def _env_run() -> dict[str, Any]:
    bars = _bars(WARMUP)
    env = MarketReplayEnv(
        data=bars, market=SPEC, window=4, actions=ACTIONS, borrow_rate=CONFIG.borrow_rate, rebalance_band=0.05
    )
    _, info = env.reset(options={"start": WARMUP})
    equity, position, trades, orders = [info["equity"]], [info["position"]], [], []
    for target in TARGETS[:-1]:
        _, _, _, _, info = env.step(np.int64(ACTIONS.index(target)))
        equity.append(info["equity"])
        position.append(info["position"])
        trades += info["trades"]
        orders += info["orders"]
    return {"equity": equity, "position": position, "trades": trades, "orders": orders}


@pytest.fixture(scope="module")
def vectorized() -> Any:
    return run_targets(_bars(), np.array(TARGETS), market=SPEC, portfolio=CONFIG, rebalance_band=0.05)


@pytest.fixture(scope="module")
def env_run() -> dict[str, Any]:
    return _env_run()


def test_fills_happen_at_the_next_open_with_half_spread_and_slippage(vectorized: Any) -> None:
    fills = vectorized.fills
    assert list(fills["price"]) == pytest.approx([100.1, P3, P4, P5, P6], rel=1e-12)
    assert list(fills["time"]) == list(_bars().index[[1, 3, 4, 5, 6]])
    assert list(fills["side"]) == ["buy", "sell", "sell", "sell", "buy"]


def test_fees_are_a_fraction_of_notional_per_side(vectorized: Any) -> None:
    assert list(vectorized.fills["fee"]) == pytest.approx([FEE1, FEE3, FEE4, FEE5, FEE6], rel=1e-12)
    assert abs(FEE1 - 9.99000999) < 1e-8


def test_full_size_sizing_reserves_the_fee_and_leaves_no_cash(vectorized: Any) -> None:
    assert abs(Q1 - 99.8002996005) < 1e-9
    assert vectorized.curve["cash"].iloc[1] == pytest.approx(0.0, abs=1e-8)
    assert vectorized.curve["cash"].iloc[6] == pytest.approx(0.0, abs=1e-8)


def test_a_target_inside_the_no_trade_band_sends_no_order(vectorized: Any) -> None:
    # Decision at bar 1's close (+0.97 vs exposure 1.0) would fill at bar 2: no order there.
    assert _bars().index[2] not in set(vectorized.orders["time"])
    assert vectorized.positions.iloc[2] == vectorized.positions.iloc[1]


def test_equity_and_positions_bar_by_bar(vectorized: Any, env_run: dict[str, Any]) -> None:
    assert list(vectorized.equity) == pytest.approx(EXPECTED_EQUITY, rel=1e-12)
    assert list(vectorized.positions) == pytest.approx(EXPECTED_POSITION, rel=1e-12)
    assert env_run["equity"] == pytest.approx(EXPECTED_EQUITY, rel=1e-12)
    assert env_run["position"] == pytest.approx(EXPECTED_POSITION, rel=1e-12)


def test_short_pays_borrow_on_the_close_and_it_is_in_the_trade(vectorized: Any) -> None:
    assert abs(BORROW5 - 10.2066514) < 1e-7
    assert vectorized.meta["borrow_paid"] == pytest.approx(BORROW5, rel=1e-12)
    short = vectorized.trades.iloc[2]
    assert short["side"] == "short"
    assert short["pnl"] == pytest.approx(PNL_SLICE3, rel=1e-10)


def test_trade_slices_carry_pro_rata_fees_and_sum_to_the_equity_change(
    vectorized: Any, env_run: dict[str, Any]
) -> None:
    trades = vectorized.trades
    assert list(trades["exit_reason"]) == ["signal", "signal", "reverse"]
    assert list(trades["quantity"]) == pytest.approx([SOLD3, Q3, -Q5], rel=1e-12)
    assert list(trades["pnl"]) == pytest.approx([PNL_SLICE1, PNL_SLICE2, PNL_SLICE3], rel=1e-10)
    assert [t.pnl for t in env_run["trades"]] == pytest.approx(list(trades["pnl"]), rel=1e-10)
    # Closed PnL + the open long's unrealized PnL net of its share of the reversal fee = equity change.
    open_pnl = (99.0 - P6) * Q6 - FEE6 * Q6 / BOUGHT6
    assert trades["pnl"].sum() + open_pnl == pytest.approx(EQ6 - 10_000.0, rel=1e-10)
