"""Vectorized backtests of rule baselines: a target-position series in, equity, positions and trades out.

The accounting is that of :class:`envs.core.TradingCore` and :class:`envs.portfolio.Portfolio` (see
the README, "Accounting conventions"), reproduced bar for bar: the target decided at the close of bar ``t`` is
filled at the open of ``t + 1`` (plus half the spread, slippage and the taker fee), sized to reserve
the order's own costs, inside the no-trade band, with shorts paying borrow at every close and the
exchange's lot size, minimum quantity, minimum notional and balance rules applied. A test drives
:class:`envs.replay.MarketReplayEnv` with the same targets and checks equity and trades agree to float
precision.

Speed comes from looping only over the bars where an order can happen: where the target changes, and
inside a run of one target, where the position's exposure drifts out of the no-trade band (found with
a closed-form check over the run's price range, then a vectorized scan when that check cannot rule it
out). Holding periods (positions, cash, borrow, equity) are filled in with array operations. Runs of
refused orders (an account below the exchange's minimums retries every bar, as the core does) are
computed and journaled as blocks.

Not modelled here (use the env for them): injected exchange faults, order hooks (learned vetoes and
minimums) and stateful rewards.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from backtests.metrics import Calendar
from backtests.results import BacktestResult, orders_from_columns, trades_from_columns
from envs.broker import (
    CODE_FILTER_FAILURE,
    CODE_INSUFFICIENT_BALANCE,
    MSG_INSUFFICIENT_BALANCE,
    MSG_LOT_SIZE,
    MSG_NOTIONAL,
)
from envs.core import DEFAULT_REBALANCE_BAND
from envs.errors import ConfigError, DataError
from envs.events import ErrorKind, OrderStatus, Side
from envs.market import BPS, MarketSpec, SlippageModel, floor_to_step
from envs.portfolio import (
    EXIT_END_OF_DATA,
    EXIT_MAX_DRAWDOWN,
    EXIT_REVERSE,
    EXIT_RUIN,
    EXIT_SIGNAL,
    PortfolioConfig,
    Transition,
    classify,
)

__all__ = [
    "buy_and_hold_targets",
    "flat_targets",
    "random_targets",
    "run_sma_crossover",
    "run_targets",
    "sma_crossover_targets",
]

ENGINE: Final = "vectorized"
_NS_PER_MS: Final = 1_000_000
_QTY_EPS: Final = 1e-9  # as envs.portfolio: quantities this close to zero (relative) are zero
_CAP_SLACK: Final = 1e-9  # as envs.portfolio: slack on the leverage check
_TICK_TOLERANCE: Final = 1e-9  # as envs.market: a price on the tick stays on it
_FIRST_CHUNK: Final = 64
_MAX_CHUNK: Final = 65_536
_NON_ALNUM: Final = re.compile(r"[^A-Za-z0-9]")
_BUY, _SELL = Side.BUY, Side.SELL
_HOLD, _OPEN, _ADD, _REDUCE, _CLOSE = (
    Transition.HOLD,
    Transition.OPEN,
    Transition.ADD,
    Transition.REDUCE,
    Transition.CLOSE,
)
_FILLED, _REJECTED = str(OrderStatus.FILLED), str(OrderStatus.REJECTED)
# (kind, message, code) of the simulated exchange's refusals, in its own wording.
_LOT: Final = (str(ErrorKind.LOT_SIZE), MSG_LOT_SIZE, CODE_FILTER_FAILURE)
_NOTIONAL: Final = (str(ErrorKind.MIN_NOTIONAL), MSG_NOTIONAL, CODE_FILTER_FAILURE)
_BALANCE: Final = (str(ErrorKind.INSUFFICIENT_BALANCE), MSG_INSUFFICIENT_BALANCE, CODE_INSUFFICIENT_BALANCE)


# --- target series ---------------------------------------------------------------------------------


def _closes(close: npt.ArrayLike | pd.Series) -> npt.NDArray[np.float64]:
    c = np.asarray(close, dtype=np.float64)
    if c.ndim != 1:
        raise DataError(f"close has shape {c.shape}", where="close", fix="pass one column of closes")
    return c


def sma_crossover_targets(
    close: npt.ArrayLike | pd.Series, fast: int = 10, slow: int = 30, *, short: bool = False
) -> npt.NDArray[np.float64]:
    """Long (1) while the fast SMA of the close is above the slow one, else flat (or short, -1).

    Row ``t`` uses closes ``<= t`` only; rows before ``slow`` closes exist are flat, like
    :class:`agents.baselines.SmaCrossover`. Averages come from one running sum (of closes minus the
    first close, which keeps the sum small and its rounding far below price differences).
    """
    if isinstance(fast, bool) or isinstance(slow, bool) or not 1 <= fast < slow:
        raise ConfigError(f"fast={fast!r}, slow={slow!r}: need 1 <= fast < slow", fix="e.g. fast=10, slow=30")
    c = _closes(close)
    n = len(c)
    out = np.zeros(n, dtype=np.float64)
    if n < slow:
        return out
    cs = np.concatenate(([0.0], np.cumsum(c - c[0])))
    rows = np.arange(slow - 1, n)
    fast_sum = cs[rows + 1] - cs[rows + 1 - fast]
    slow_sum = cs[rows + 1] - cs[rows + 1 - slow]
    # Compare fast/f with slow/s as fast*s vs slow*f: no division, same order.
    lhs = fast_sum * slow
    rhs = slow_sum * fast
    out[slow - 1 :] = np.where(lhs > rhs, 1.0, np.where(lhs < rhs, -1.0 if short else 0.0, 0.0))
    return out


def buy_and_hold_targets(n: int) -> npt.NDArray[np.float64]:
    """Fully long from the first bar on."""
    return np.ones(int(n), dtype=np.float64)


def flat_targets(n: int) -> npt.NDArray[np.float64]:
    """Never in the market (the cash benchmark)."""
    return np.zeros(int(n), dtype=np.float64)


def random_targets(
    n: int, seed: int, choices: Sequence[float] = (-1.0, 0.0, 1.0), *, hold: int = 1
) -> npt.NDArray[np.float64]:
    """Seeded uniform random targets from ``choices``, each held for ``hold`` bars (the chance benchmark)."""
    if hold < 1:
        raise ConfigError(f"hold={hold!r} must be >= 1", where="random_targets", fix="e.g. hold=1")
    rng = np.random.default_rng(seed)
    picks = np.asarray(choices, dtype=np.float64)[rng.integers(0, len(choices), -(-int(n) // hold))]
    return np.repeat(picks, hold)[: int(n)]


# --- the engine ------------------------------------------------------------------------------------


class _Sim:
    """Output of one pass: fill events, order rows and trade rows (tuples; columns are built once)."""

    __slots__ = ("blocks", "borrow_paid", "fills", "orders", "trades")

    def __init__(self) -> None:
        self.fills: list[tuple[int, float, float]] = []  # (bar, position after, cash after)
        self.orders: list[tuple[Any, ...]] = []  # (bar, *ORDER_COLUMNS)
        self.blocks: list[dict[str, Any]] = []  # runs of refused retries, as column arrays
        self.trades: list[tuple[Any, ...]] = []  # TRADE_COLUMNS without symbol and entry_snapshot
        self.borrow_paid = 0.0


def _simulate(
    o: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    tns: npt.NDArray[np.int64],
    decided: npt.NDArray[np.float64],
    spec: MarketSpec,
    cfg: PortfolioConfig,
    band: float,
    *,
    stop: tuple[int, str] | None,
    close_at_end: bool,
    id_prefix: str,
) -> _Sim:
    """One pass of the trading loop over the bars where something can happen (see the module docstring).

    Each step mirrors a named method of ``envs`` term for term (same operations in the same order, so
    results agree to the last bits where no running sum is involved): the plan of
    ``TradingCore.plan``/``target_qty``, the checks and prices of ``SimBroker.submit``, the leverage
    check of ``Portfolio.can_fill`` and the booking and trade slicing of ``Portfolio.apply_fill``.
    """
    n = len(o)
    last = stop[0] if stop is not None else n - 1  # last bar processed
    sim = _Sim()
    orders = sim.orders
    trades = sim.trades
    lev = cfg.leverage
    allow_short = cfg.allow_short
    rate = cfg.borrow_rate
    phi = spec.taker_fee
    impact = spec.impact_bps > 0.0
    step, min_qty, min_notional = spec.qty_step, spec.min_qty, spec.min_notional
    fill_price = spec.fill_price
    # MarketSpec.fill_price inlined when the cost fraction is a constant (fixed slippage): same
    # operations, one call fewer on the per-order path.
    fixed_cost = spec.slippage_model is SlippageModel.FIXED or spec.impact_bps == 0.0
    cost = (0.5 * spec.spread_bps + spec.slippage_bps) * BPS
    tick = spec.price_tick
    symbol = spec.symbol
    id_head = f"{id_prefix}-{_NON_ALNUM.sub('', symbol)[:12] or 'X'}-"
    s_close = np.concatenate(([0.0], np.cumsum(c))) if rate > 0.0 else c  # prefix sums for borrow

    # Fill bar j acts on the target decided at the close of j - 1; runs of one target start at `cp`.
    ft = np.empty(n, dtype=np.float64)
    ft[0] = np.nan
    ft[1:] = decided[:-1]
    cp = np.concatenate(([1], np.flatnonzero(ft[2:] != ft[1:-1]) + 2)).astype(np.int64)
    seg_end = np.append(cp[1:], n)
    # Price range of every run after its first bar: bounds the exposure drift check in the run.
    o_pad = np.append(o, o[-1])
    bounds = np.empty(2 * len(cp), dtype=np.int64)
    bounds[0::2] = np.minimum(cp + 1, n)
    bounds[1::2] = seg_end
    empty = bounds[0::2] >= seg_end
    seg_max = np.maximum.reduceat(o_pad, bounds)[0::2]
    seg_min = np.minimum.reduceat(o_pad, bounds)[0::2]
    seg_max[empty] = -np.inf
    seg_min[empty] = np.inf
    cp_l: list[int] = cp.tolist()
    end_l: list[int] = seg_end.tolist()
    max_l: list[float] = seg_max.tolist()
    min_l: list[float] = seg_min.tolist()
    ft_l: list[float] = ft.tolist()

    q = 0.0
    cash_k = float(cfg.initial_cash)  # cash right after the latest fill (borrow since then is lazy)
    k = 0  # bar of the latest fill
    trade: list[Any] | None = None  # [id, side, entry_ns, entry_bar, qty, avg, fees, borrow, slices]
    last_decision = -1
    seq = 0

    def cash_at(j: int) -> float:
        """Cash at the open of bar ``j``: after the borrow charged at the closes ``k .. j-1``."""
        if q < 0.0 and rate > 0.0:
            return cash_k - rate * -q * (s_close.item(j) - s_close.item(k))
        return cash_k

    def solve(f: float, s: float, fill: float, cash: float) -> float:
        equity = cash + q * fill
        if equity <= 0.0:
            return q
        return f * (equity + s * q * fill * phi) / (fill * (1.0 + f * s * phi))

    def target_qty(target: float, price: float, volume: float, cash: float) -> float:
        # TradingCore.target_qty
        equity = cash + q * price
        if price <= 0.0 or equity <= 0.0:
            return q
        f = target * lev
        delta = f * equity / price - q
        if delta == 0.0:
            return q
        s, side = (1.0, _BUY) if delta > 0.0 else (-1.0, _SELL)
        q1 = solve(f, s, fill_price(side, price, 0.0, volume), cash)
        if impact:
            other = solve(f, s, fill_price(side, price, abs(delta), volume), cash)
            q1 = other if (other - q) * s < (q1 - q) * s else q1
        if q1 * f < 0.0:  # never flipped against the target by the cost reserve
            q1 = 0.0
        return q1 if (q1 - q) * s > 0.0 else q

    def close_slice(
        t: list[Any], qty: float, price: float, exit_fee: float, time_ns: int, bar: int, why: str
    ) -> None:
        # Portfolio._close_slice
        share = min(qty / t[4], 1.0)
        entry_fee = t[6] * share
        borrow = t[7] * share
        t[6] -= entry_fee
        t[7] -= borrow
        t[4] -= qty
        t[8] += 1
        avg = t[5]
        gross = (price - avg) * qty * t[1]
        fees = entry_fee + exit_fee
        pnl = gross - fees - borrow
        notional = avg * qty
        trades.append(
            (
                f"{t[0]}:{t[8]}",
                "long" if t[1] > 0 else "short",
                t[2],
                time_ns,
                avg,
                price,
                qty,
                fees,
                pnl,
                pnl / notional if notional > 0.0 else 0.0,
                bar - t[3],
                why,
            )
        )

    def execute(
        j: int,
        buy: bool,
        requested: float,
        ref: float,
        volume: float,
        decision_ns: int,
        cash: float,
        reduce_only: bool,
        why: str,
        bar: int,
    ) -> bool:
        """Send one market order at bar ``j`` (SimBroker.submit, faults off) and book it; ``True`` if filled.

        ``cash`` is the cash at submission; ``bar`` the core's bar count at the fill (``j`` at the open,
        ``j + 1`` for a close at the close, when the core has already marked the bar).
        """
        nonlocal q, cash_k, k, trade, last_decision, seq
        if decision_ns != last_decision:
            last_decision = decision_ns
            seq = 0
        else:
            seq += 1
        order_id = f"{id_head}{decision_ns // _NS_PER_MS}-{seq}"
        time_ns = tns.item(j)
        side = _BUY if buy else _SELL
        side_s = "buy" if buy else "sell"
        qty = floor_to_step(requested, step) if step > 0.0 else requested
        if qty <= 0.0 or qty < min_qty:
            orders.append((j, time_ns, order_id, side_s, requested, ref, _REJECTED, 0.0, 0.0, 0.0, *_LOT))
            return False
        if not reduce_only and qty * ref < min_notional:
            orders.append(
                (j, time_ns, order_id, side_s, requested, ref, _REJECTED, 0.0, 0.0, 0.0, *_NOTIONAL)
            )
            return False
        if fixed_cost and tick == 0.0:
            price = ref + ref * cost if buy else ref - ref * cost
        else:
            price = fill_price(side, ref, qty, volume)
        fee = qty * price * phi
        # Portfolio.can_fill
        q0 = q
        d = qty if buy else -qty
        q1 = q0 + d
        a0 = -q0 if q0 < 0.0 else q0
        a1 = -q1 if q1 < 0.0 else q1
        if not allow_short and q1 < -_QTY_EPS * (a0 if a0 > qty else qty):
            ok = False
        elif a1 <= a0 + _QTY_EPS * (a0 if a0 > qty else qty) and q0 * q1 >= 0.0:
            ok = True
        else:
            equity1 = cash - (q1 - q0) * price - fee + q1 * price
            ok = equity1 > 0.0 and a1 * price <= lev * equity1 * (1.0 + _CAP_SLACK)
        if not ok:
            orders.append((j, time_ns, order_id, side_s, requested, ref, _REJECTED, 0.0, 0.0, 0.0, *_BALANCE))
            return False
        orders.append(
            (
                j,
                time_ns,
                order_id,
                side_s,
                requested,
                price,
                _FILLED,
                qty,
                fee,
                qty * abs(price - ref),
                "",
                "",
                "",
            )
        )

        # Portfolio.apply_fill
        if q0 < 0.0 and rate > 0.0:
            accrued = cash_k - cash
            sim.borrow_paid += accrued
            if trade is not None:
                trade[7] += accrued
        transition = classify(q0, q1)
        new_cash = cash - (d * price + fee)
        t = trade
        sgn = 1 if d > 0.0 else -1
        if t is None or transition is _OPEN:
            trade = [order_id, sgn, time_ns, bar, qty, price, fee, 0.0, 0]
        elif transition is _ADD or (transition is _HOLD and sgn == t[1]):
            t[5] = (t[5] * t[4] + price * qty) / (t[4] + qty)
            t[4] += qty
            t[6] += fee
        elif transition is _REDUCE or transition is _HOLD:
            close_slice(t, qty, price, fee, time_ns, bar, why)
        elif transition is _CLOSE:
            close_slice(t, t[4], price, fee, time_ns, bar, why)
            trade = None
        else:  # reverse: close the whole old trade, open a new one with the remainder
            closed = t[4]
            exit_fee = fee * closed / qty
            close_slice(t, closed, price, exit_fee, time_ns, bar, EXIT_REVERSE)
            trade = [order_id, sgn, time_ns, bar, qty - closed, price, fee - exit_fee, 0.0, 0]
        q = q1 if trade is not None else 0.0
        cash_k = new_cash
        k = j
        sim.fills.append((j, q, new_cash))
        return True

    def band_ok(price: float, cash: float, f: float) -> bool:
        equity = cash + q * price
        return equity > 0.0 and -band < f - q * price / equity < band

    def drift(j0: int, end: int, seg: int, f: float) -> int:
        """First bar in ``[j0, end)`` whose exposure leaves the band around ``f`` (``end`` if none)."""
        if j0 >= end:
            return end
        hi, lo = max_l[seg], min_l[seg]
        c_hi = cash_at(j0)
        c_lo = cash_at(end - 1) if rate > 0.0 else c_hi
        # Exposure q*P/(C + q*P) is monotone in the price P and in the cash C: if the corners of the
        # run's (price, cash) box are inside the band, every bar of the run is.
        if (
            hi >= lo
            and band_ok(hi, c_hi, f)
            and band_ok(lo, c_hi, f)
            and (c_lo == c_hi or (band_ok(hi, c_lo, f) and band_ok(lo, c_lo, f)))
        ):
            return end
        a = j0
        size = _FIRST_CHUNK
        with np.errstate(divide="ignore", invalid="ignore"):
            while a < end:
                b = min(a + size, end)
                oc = o[a:b]
                if q < 0.0 and rate > 0.0:
                    cc: Any = cash_k - rate * -q * (s_close[a:b] - s_close.item(k))
                else:
                    cc = cash_k
                eq = cc + q * oc
                x = f - q * oc / eq
                hit = np.flatnonzero((eq > 0.0) & ~((x > -band) & (x < band)))
                if len(hit):
                    return a + int(hit[0])
                a = b
                size = min(size * 2, _MAX_CHUNK)
        return end

    def refused_run(j0: int, end: int, target: float) -> int:
        """After a refused order, the first bar in ``[j0, end)`` where an order would fill.

        The core plans the same target again at every bar, and until an order fills the account does
        not change (borrow aside, which is a prefix sum): each bar's plan, order and the exchange's
        checks are computed in chunks with array operations, term for term as in the scalar path;
        refusals are journaled as blocks and bars without an order skipped. The first bar whose
        order would fill is left to the scalar path. Needs a fill price that does not depend on the
        quantity (fixed slippage); otherwise retries go bar by bar.
        """
        if not fixed_cost:
            return j0
        a = j0
        size = _FIRST_CHUNK
        while a < end:
            b = min(a + size, end)
            stop = refused_chunk(a, b, target)
            if stop < b:
                return stop
            a = b
            size = min(size * 2, _MAX_CHUNK)
        return end

    def refused_chunk(j0: int, end: int, target: float) -> int:
        """:func:`refused_run` over ``[j0, end)``: journal its refusals up to the first fill; return it."""
        nonlocal last_decision, seq
        ref = o[j0:end]
        m = len(ref)
        if q < 0.0 and rate > 0.0:
            cash: Any = cash_k - rate * -q * (s_close[j0:end] - s_close.item(k))
        else:
            cash = np.full(m, cash_k)
        buy_fill = ref + ref * cost
        sell_fill = ref - ref * cost
        if tick > 0.0:
            buy_fill = np.ceil(buy_fill / tick - _TICK_TOLERANCE) * tick
            sell_fill = np.floor(sell_fill / tick + _TICK_TOLERANCE) * tick
        act = np.ones(m, dtype=bool)  # bars where an order is sent
        with np.errstate(divide="ignore", invalid="ignore"):
            if target == 0.0:
                q1: Any = np.zeros(m)
            else:
                # TradingCore.plan: same-side targets inside the band send nothing.
                f = target * lev
                if q != 0.0 and (q > 0.0) is (f > 0.0):
                    equity = cash + q * ref
                    x = f - q * ref / equity
                    act &= ~((equity > 0.0) & (x > -band) & (x < band))
                # TradingCore.target_qty
                equity = cash + q * ref
                delta = f * equity / ref - q
                s = np.where(delta > 0.0, 1.0, -1.0)
                fill = np.where(delta > 0.0, buy_fill, sell_fill)
                eq_f = cash + q * fill
                solved = np.where(
                    eq_f <= 0.0, q, f * (eq_f + s * q * fill * phi) / (fill * (1.0 + f * s * phi))
                )
                solved = np.where(solved * f < 0.0, 0.0, solved)  # never flipped against the target
                q1 = np.where((ref <= 0.0) | (equity <= 0.0) | (delta == 0.0), q, solved)
                q1 = np.where((q1 - q) * s > 0.0, q1, q)
            # classify(q, q1) is HOLD: no order.
            a0 = abs(q)
            a1 = np.abs(q1)
            eps = np.maximum(a0, a1) * _QTY_EPS
            same = (a0 > eps) & (a1 > eps) & ((q1 > 0.0) == (q > 0.0)) & (np.abs(a1 - a0) <= eps)
            act &= ~(((a0 <= eps) & (a1 <= eps)) | same)
            d = q1 - q
            buy = d > 0.0
            requested = np.abs(d)
            # SimBroker.submit, then Portfolio.can_fill
            qty = _floor_to_step(requested, step)
            lot = (qty <= 0.0) | (qty < min_qty)
            notional = ~lot & (qty * ref < min_notional)
            price = np.where(buy, buy_fill, sell_fill)
            fee = qty * price * phi
            q1p = q + np.where(buy, qty, -qty)
            a1p = np.abs(q1p)
            eps_p = _QTY_EPS * np.maximum(a0, qty)
            equity1 = cash - (q1p - q) * price - fee + q1p * price
            levered = (equity1 > 0.0) & (a1p * price <= lev * equity1 * (1.0 + _CAP_SLACK))
            ok = ((a1p <= a0 + eps_p) & (q * q1p >= 0.0)) | levered
            if not allow_short:
                ok &= ~(q1p < -eps_p)
            balance = ~lot & ~notional & ~ok
        refused = lot | notional | balance
        fills = np.flatnonzero(act & ~refused)
        stop = int(fills[0]) if len(fills) else m
        rows = np.flatnonzero(act[:stop] & refused[:stop])
        if len(rows):
            sim.blocks.append(
                {
                    "bar": j0 + rows,
                    "time": tns[j0 + rows],
                    "decision_ms": tns[j0 + rows - 1] // _NS_PER_MS,
                    "side": np.where(buy[rows], "buy", "sell"),
                    "requested": requested[rows],
                    "price": ref[rows],
                    "kind": np.where(lot[rows], 0, np.where(notional[rows], 1, 2)),
                }
            )
            last_decision = tns.item(j0 + int(rows[-1]) - 1)
            seq = 0
        return j0 + stop

    seg = 0
    n_seg = len(cp_l)
    j = 1
    while j <= last:
        while seg + 1 < n_seg and cp_l[seg + 1] <= j:
            seg += 1
        end = end_l[seg] if end_l[seg] <= last else last + 1
        target = ft_l[j]
        cash = cash_at(j)
        price = o.item(j)
        f = target * lev
        # TradingCore.plan
        if target == 0.0:
            if q == 0.0:
                j = end
                continue
            q1 = 0.0
        else:
            if q != 0.0 and (q > 0.0) is (f > 0.0):
                equity = cash + q * price
                if equity > 0.0 and -band < f - q * price / equity < band:
                    j = drift(j + 1, end, seg, f)
                    continue
            q1 = target_qty(target, price, v.item(j), cash)
        if classify(q, q1) is _HOLD:
            j = end if q == 0.0 else j + 1
            continue
        delta = q1 - q
        filled = execute(
            j, delta > 0.0, abs(delta), price, v.item(j), tns.item(j - 1), cash, False, EXIT_SIGNAL, j
        )
        if filled and target == 0.0:
            j = end
        elif filled and q != 0.0 and (q > 0.0) is (f > 0.0):
            j = drift(j + 1, end, seg, f)
        elif filled:
            j += 1  # left on the wrong side of the target (lot rounding): the core plans again
        else:
            j = refused_run(j + 1, end, target)  # refused: the core retries at every next bar

    reason = stop[1] if stop is not None else (EXIT_END_OF_DATA if close_at_end else None)
    if reason is not None and q != 0.0:
        # TradingCore.close_position at the close of the last bar: a reduce-only market order, sent
        # after the bar's mark (so after its borrow).
        time_ns = tns.item(last)
        execute(
            last,
            q < 0.0,
            abs(q),
            c.item(last),
            v.item(last),
            time_ns,
            cash_at(last + 1),
            True,
            reason,
            last + 1,
        )
    return sim


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a pass allocates ~10 tuples per order and no cycle, and
    collections triggered by those allocations would scan every live object again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _arrays(
    sim: _Sim, c: npt.NDArray[np.float64], cfg: PortfolioConfig, n: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Position, cash and equity at every close from the fill events (holding periods vectorized)."""
    fills = np.asarray(sim.fills, dtype=np.float64).reshape(-1, 3)
    bars = fills[:, 0].astype(np.int64)
    fq = np.append(fills[:, 1], 0.0)  # index -1: before any fill
    fc = np.append(fills[:, 2], float(cfg.initial_cash))
    fk = np.append(bars, 0)
    last = np.searchsorted(bars, np.arange(n), side="right") - 1
    position = fq[last]
    cash = fc[last]
    rate = cfg.borrow_rate
    if rate > 0.0:
        s_close = np.concatenate(([0.0], np.cumsum(c)))
        short = position < 0.0
        idx = np.flatnonzero(short)
        cash[idx] = cash[idx] - rate * -position[idx] * (s_close[idx + 1] - s_close[fk[last[idx]]])
    equity = cash + position * c
    return position, cash, equity


def _first_stop(equity: npt.NDArray[np.float64], max_drawdown: float | None) -> tuple[int, str] | None:
    """The first bar where the env would terminate: ruin, or a drawdown beyond ``max_drawdown``."""
    if len(equity) < 2:
        return None
    ruin = np.flatnonzero(equity[1:] <= 0.0)
    first = (int(ruin[0]) + 1, EXIT_RUIN) if len(ruin) else None
    if max_drawdown is not None:
        peak = np.maximum.accumulate(equity)
        dd = np.flatnonzero(equity[1:] < peak[1:] * (1.0 - max_drawdown))
        if len(dd) and (first is None or int(dd[0]) + 1 < first[0]):
            first = (int(dd[0]) + 1, EXIT_MAX_DRAWDOWN)
    return first


def run_targets(
    bars: pd.DataFrame,
    targets: npt.ArrayLike | pd.Series,
    *,
    market: MarketSpec | None = None,
    portfolio: PortfolioConfig | None = None,
    rebalance_band: float = DEFAULT_REBALANCE_BAND,
    close_at_end: bool = False,
    max_drawdown: float | None = None,
    name: str = "targets",
    calendar: Calendar | None = None,
    id_prefix: str = "v",
) -> BacktestResult:
    """Backtest a target-exposure series with the accounting of :class:`envs.core.TradingCore`.

    Args:
        bars: canonical OHLCV bars (``envs.data.load_ohlcv``), indexed by UTC open time.
        targets: target exposure in ``[-1, 1]`` (fraction of equity, times ``leverage``) decided at the
            close of each bar; the last bar's target is never filled. Negative targets are flat when
            ``allow_short`` is off (as the env treats continuous actions).
        market: costs and exchange rules; default ``MarketSpec(symbol)`` (0.1% taker fee).
        portfolio: initial cash, shorting, leverage, borrow rate per bar.
        rebalance_band: the no-trade band, as in the env.
        close_at_end: close the position at the last bar's close (exit reason ``"end_of_data"``).
        max_drawdown: stop (and close) when equity falls this fraction below its peak, as the env does.
        name: label of the result.
        calendar: annualization calendar for the metrics (detected from the bars when ``None``).
        id_prefix: first part of the order ids.

    Returns:
        The result; it ends early (like the env's episode) on ruin or ``max_drawdown``.

    Raises:
        ConfigError: targets of the wrong length, non-finite or outside ``[-1, 1]``; a bad band.
        DataError: bars without the OHLCV columns or a time index.
    """
    cfg = portfolio or PortfolioConfig()
    if not (isinstance(rebalance_band, int | float) and 0.0 <= rebalance_band < 1.0):
        raise ConfigError(
            f"rebalance_band={rebalance_band!r} must be in [0, 1)",
            where="rebalance_band",
            fix="give a fraction of equity, e.g. 0.05",
        )
    if max_drawdown is not None and not 0.0 < max_drawdown < 1.0:
        raise ConfigError(
            f"max_drawdown={max_drawdown!r} must be a fraction in (0, 1)",
            where="max_drawdown",
            fix="e.g. 0.5, or None",
        )
    if not isinstance(bars.index, pd.DatetimeIndex) or any(
        col not in bars.columns for col in ("open", "close", "volume")
    ):
        raise DataError(
            "bars need a DatetimeIndex and open, close and volume columns",
            where="bars",
            fix="load them with envs.data.load_ohlcv",
        )
    n = len(bars)
    if n < 2:
        raise DataError(f"only {n} bar(s); a backtest needs at least 2", where="bars", fix="give more bars")
    symbol = str(bars.attrs.get("symbol") or (market.symbol if market is not None else "ASSET"))
    spec = market or MarketSpec(symbol)
    if isinstance(targets, pd.Series) and not targets.index.equals(bars.index):
        raise ConfigError(
            "the target series is not indexed like the bars", where="targets", fix="reindex it on bars.index"
        )
    tgt = np.asarray(targets, dtype=np.float64).copy()
    if tgt.shape != (n,):
        raise ConfigError(
            f"targets have shape {tgt.shape}, the bars {n} rows",
            where="targets",
            fix="give one target per bar",
        )
    bad = np.flatnonzero(~np.isfinite(tgt[:-1]) | (np.abs(tgt[:-1]) > 1.0))
    if len(bad):
        raise ConfigError(
            f"target {tgt[bad[0]]!r} at row {int(bad[0])} is not a number in [-1, 1]",
            where="targets",
            fix="give target exposures in [-1, 1] (0 = flat) for every bar but the last",
        )
    if not cfg.allow_short:
        np.maximum(tgt, 0.0, out=tgt)
    # The no-trade band: targets smaller than it are flat (envs.core.TradingCore.plan).
    f = tgt * cfg.leverage
    decided = np.where((f > -rebalance_band) & (f < rebalance_band), 0.0, tgt)

    o = np.ascontiguousarray(bars["open"].to_numpy(np.float64))
    c = np.ascontiguousarray(bars["close"].to_numpy(np.float64))
    v = np.ascontiguousarray(bars["volume"].to_numpy(np.float64))
    tns = np.ascontiguousarray(bars.index.as_unit("ns").asi8, dtype=np.int64)
    kw: dict[str, Any] = {"close_at_end": close_at_end, "id_prefix": id_prefix}
    with _gc_paused():
        sim = _simulate(o, c, v, tns, decided, spec, cfg, rebalance_band, stop=None, **kw)
        position, cash, equity = _arrays(sim, c, cfg, n)
        stop = _first_stop(equity, max_drawdown)
        end = n
        if stop is not None:
            # The env ends the episode there: replay up to that bar and close the position at its close.
            sim = _simulate(o, c, v, tns, decided, spec, cfg, rebalance_band, stop=stop, **kw)
            end = stop[0] + 1
            position, cash, equity = _arrays(sim, c[:end], cfg, end)
        orders = _order_table(sim, f"{id_prefix}-{_NON_ALNUM.sub('', spec.symbol)[:12] or 'X'}-")
        trades = _trade_table(sim, spec.symbol)

    target_col = tgt[:end].copy()
    target_col[-1] = np.nan if end == n else target_col[-1]
    curve = pd.DataFrame(
        {
            "open": o[:end],
            "close": c[:end],
            "target": target_col,
            "position": position,
            "cash": cash,
            "equity": equity,
        },
        index=bars.index[:end].rename("timestamp"),
    )
    meta: dict[str, Any] = {
        "name": name,
        "engine": ENGINE,
        "symbol": spec.symbol,
        "spec": spec.to_dict(),
        "portfolio": asdict(cfg),
        "rebalance_band": float(rebalance_band),
        "close_at_end": bool(close_at_end),
        "max_drawdown": max_drawdown,
        "borrow_paid": sim.borrow_paid,
        "stopped": None if stop is None else {"bar": stop[0], "reason": stop[1]},
    }
    if calendar is not None:
        meta["calendar"] = calendar
    return BacktestResult(curve=curve, orders=orders, trades=trades, meta=meta)


_REFUSALS: Final = (_LOT, _NOTIONAL, _BALANCE)


def _order_table(sim: _Sim, id_head: str) -> pd.DataFrame:
    columns: list[Any] = list(zip(*sim.orders, strict=False)) if sim.orders else [()] * 13
    table = orders_from_columns(columns[1:])
    if not sim.blocks:
        return table
    block = {key: np.concatenate([b[key] for b in sim.blocks]) for key in sim.blocks[0]}
    m = len(block["bar"])
    kinds = [np.asarray(x, dtype=object)[block["kind"]] for x in zip(*_REFUSALS, strict=True)]
    ids = (id_head + pd.Series(block["decision_ms"]).astype(str) + "-0").tolist()
    refused = orders_from_columns(
        [block["time"], ids, block["side"], block["requested"], block["price"], [_REJECTED] * m]
        + [np.zeros(m)] * 3
        + kinds
    )
    order = np.argsort(np.concatenate([np.asarray(columns[0], dtype=np.int64), block["bar"]]), kind="stable")
    return pd.concat([table, refused], ignore_index=True).iloc[order].reset_index(drop=True)


def _floor_to_step(qty: npt.NDArray[np.float64], step: float) -> npt.NDArray[np.float64]:
    """envs.market.floor_to_step on an array (same operations)."""
    if step <= 0.0:
        return qty
    n = np.floor(qty / step * (1.0 + 1e-12) + 1e-9)
    return np.maximum(n, 0.0) * step


def _trade_table(sim: _Sim, symbol: str) -> pd.DataFrame:
    m = len(sim.trades)
    columns: list[Any] = list(zip(*sim.trades, strict=False)) if m else [()] * 12
    return trades_from_columns([columns[0], [symbol] * m, *columns[1:]])


def run_sma_crossover(
    bars: pd.DataFrame, fast: int = 10, slow: int = 30, *, short: bool = False, **kwargs: Any
) -> BacktestResult:
    """:func:`run_targets` of :func:`sma_crossover_targets` (keyword arguments go to ``run_targets``)."""
    kwargs.setdefault("name", f"sma_crossover({fast},{slow}{',short' if short else ''})")
    return run_targets(bars, sma_crossover_targets(bars["close"], fast, slow, short=short), **kwargs)
