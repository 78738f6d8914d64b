"""The per-step work of :class:`~envs.replay.MarketReplayEnv`, and the observation and info it returns.

A :class:`ReplayCursor` knows where an environment is in its data and does one step: the decision taken
at the close of row ``t`` goes through :meth:`TradingCore.step <envs.core.TradingCore.step>` (filled at
the open of ``t + 1``, marked at its close), then the reward, the end of the episode, the observation of
row ``t + 1`` and the ``info`` dict. :func:`build_observation` and :func:`step_info` are also what the
live runner returns per bar, so replay and live share one definition of both.

This module is part of the compiled core (see ``setup.py``; C types in ``cursor.pxd``). The bars are
held as memoryviews of the shared read-only arrays: indexing one gives a Python ``float`` / ``int``
interpreted and a C value compiled, never a NumPy scalar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, SupportsFloat

import numpy as np
import numpy.typing as npt

from envs import _fast
from envs.core import OrderProposal, StepResult, TradingCore
from envs.errors import ConfigError
from envs.events import BarEvent, ErrorEvent, OrderResult, OrderStatus, TradeResult
from envs.portfolio import EXIT_END_OF_DATA, EXIT_MAX_DRAWDOWN, EXIT_RUIN, Portfolio

__all__ = [
    "DEFAULT_CLIP",
    "RUIN_RATIO_FLOOR",
    "STATE_FEATURES",
    "ReplayCursor",
    "build_observation",
    "step_info",
]

STATE_FEATURES: Final = ("position_exposure", "unrealized_pnl_pct", "log_bars_in_trade")
"""The account state appended to the feature window, in observation order."""

DEFAULT_CLIP: Final = 10.0
"""Bound of every observation value (normalized features are clipped to it by their statistics)."""

RUIN_RATIO_FLOOR: Final = 1e-6
"""Log return of a wiped-out account: equity below this fraction of the previous bar's counts as this."""

# Private copies of the two constants (C doubles in the compiled build; the public names stay objects).
_CLIP: Final = DEFAULT_CLIP
_RUIN_FLOOR: Final = RUIN_RATIO_FLOOR
# log1p(bars in trade) reaches the observation clip after this many bars.
_MAX_TRADE_BARS: Final = math.expm1(DEFAULT_CLIP)
_N_STATE: Final = len(STATE_FEATURES)
_FILLED = OrderStatus.FILLED
_REJECTED = OrderStatus.REJECTED

_NO_ORDERS: Final[tuple[OrderResult, ...]] = ()
_NO_ERRORS: Final[tuple[ErrorEvent, ...]] = ()
_NO_TRADES: Final[tuple[TradeResult, ...]] = ()
_NO_VETOES: Final[tuple[OrderProposal, ...]] = ()

Observation = npt.NDArray[np.float32]
RewardCall = Callable[[float, float, StepResult], SupportsFloat]
StepReturn = tuple[Observation, float, bool, bool, dict[str, Any]]


def build_observation(
    flat: npt.NDArray[np.float32], row: int, n_features: int, window: int, core: TradingCore
) -> npt.NDArray[np.float32]:
    """The observation :class:`~envs.replay.MarketReplayEnv` returns at ``row``, as a new array the
    caller may keep.

    The ``window`` rows of normalized features ending at ``row`` (oldest first, row-major), then the
    account state of ``core.portfolio`` marked at its last price (:data:`STATE_FEATURES`): exposure and
    unrealized PnL as fractions of equity and ``log1p`` of the bars in the open trade, each clipped to
    +-:data:`DEFAULT_CLIP`; all three are 0 when flat or when equity is not positive.

    Args:
        flat: the normalized, clipped feature matrix flattened row-major
            (:meth:`~envs.replay.MarketData.observations`).
        row: the row whose close the observation describes.
        n_features: columns per row of the matrix.
        window: rows in the window (``row - window + 1 >= 0``).
        core: the trading core whose account the state describes.
    """
    wk = window * n_features
    exposure = upnl = held = 0.0
    book = core.portfolio
    qty = book.qty
    if qty != 0.0:
        price = book.last_price
        equity = book.cash + qty * price
        if equity > 0.0:
            clip = _CLIP
            exposure = qty * price / equity
            exposure = clip if exposure > clip else (-clip if exposure < -clip else exposure)
            upnl = (price - book.avg_price) * qty / equity
            upnl = clip if upnl > clip else (-clip if upnl < -clip else upnl)
            bars = core.bars_in_trade()
            held = math.log1p(bars) if bars < _MAX_TRADE_BARS else clip
    return _fast.new_observation(flat, (row + 1) * n_features - wk, wk, exposure, upnl, held)


def step_info(book: Portfolio, time_ns: int, step: int, result: StepResult | None) -> dict[str, Any]:
    """The ``info`` dict :class:`~envs.replay.MarketReplayEnv` returns (see its Info section), as a
    new dict.

    Args:
        book: the account, marked at the current bar's close.
        time_ns: open time of the bar the observation describes.
        step: steps taken in the episode (0 at reset).
        result: what the step produced, or ``None`` at reset (empty event tuples, ``bar=None``).
    """
    if result is None:
        return _info(book, time_ns, step, _NO_ORDERS, _NO_TRADES, _NO_ERRORS, _NO_VETOES, None)
    orders, trades, errors, vetoed, bar = result
    return _info(book, time_ns, step, orders, trades, errors, vetoed, bar)


def _info(
    book: Portfolio,
    time_ns: int,
    step: int,
    orders: tuple[OrderResult, ...],
    trades: tuple[TradeResult, ...],
    errors: tuple[ErrorEvent, ...],
    vetoed: tuple[OrderProposal, ...],
    bar: BarEvent | None,
) -> dict[str, Any]:
    qty = book.qty
    price = book.last_price
    cash = book.cash
    equity = cash + qty * price
    if len(orders) == 1:  # the usual case: one order per bar
        status = orders[0].status
        fills = orders if status is _FILLED else _NO_ORDERS
        rejections = orders if status is _REJECTED else _NO_ORDERS
    elif orders:
        fills = _of_status(orders, _FILLED)
        rejections = _of_status(orders, _REJECTED)
    else:
        fills = rejections = orders
    return {
        "time_ns": time_ns,
        "step": step,
        "equity": equity,
        "cash": cash,
        "position": qty,
        "exposure": qty * price / equity if equity > 0.0 else 0.0,
        "price": price,
        "orders": orders,
        "fills": fills,
        "rejections": rejections,
        "errors": errors,
        "trades": trades,
        "vetoed": vetoed,
        "bar": bar,
    }


class ReplayCursor:
    """An environment's place in its bars, its episode's running figures, and the work of one step.

    Args:
        time_ns, open_, high, low, close, volume: the bars (read-only arrays; kept as memoryviews).
        flat: the normalized observation matrix flattened row-major.
        n_features: columns per row of ``flat``.
        window: rows per observation.
        core: the trading core (its portfolio is the account).
        targets: target exposure per discrete action; empty for a continuous action space, whose
            actions ``to_target`` turns into targets.
        to_target: action -> target for continuous actions and for discrete ones outside the table
            (it raises for bad ones).
        reward: reward callable, or ``None`` for the log return (computed here, same arithmetic as
            :class:`~envs.replay.LogReturn`).
        max_drawdown: end the episode below this fraction under its equity peak, or ``None``.
        close_at_end: close the position when the episode is truncated.
    """

    __slots__ = (
        "_book",
        "_close",
        "_close_at_end",
        "_core",
        "_done",
        "_flat",
        "_has_max_drawdown",
        "_high",
        "_k",
        "_low",
        "_max_drawdown",
        "_n_targets",
        "_open",
        "_peak",
        "_prev_equity",
        "_reward",
        "_steps",
        "_stop",
        "_t",
        "_targets",
        "_time",
        "_to_target",
        "_volume",
        "_window",
    )

    def __init__(
        self,
        time_ns: npt.NDArray[np.int64],
        open_: npt.NDArray[np.float64],
        high: npt.NDArray[np.float64],
        low: npt.NDArray[np.float64],
        close: npt.NDArray[np.float64],
        volume: npt.NDArray[np.float64],
        flat: npt.NDArray[np.float32],
        n_features: int,
        window: int,
        core: TradingCore,
        targets: Sequence[float],
        to_target: Callable[[Any], float],
        reward: RewardCall | None,
        max_drawdown: float | None,
        close_at_end: bool,
    ) -> None:
        self._time = _view(time_ns, np.int64)
        self._open = _view(open_, np.float64)
        self._high = _view(high, np.float64)
        self._low = _view(low, np.float64)
        self._close = _view(close, np.float64)
        self._volume = _view(volume, np.float64)
        self._flat = flat
        self._k = int(n_features)
        self._window = int(window)
        self._core = core
        self._book = core.portfolio
        self._targets = tuple(float(t) for t in targets)
        self._n_targets = len(self._targets)
        self._to_target = to_target
        self._reward = reward
        self._has_max_drawdown = max_drawdown is not None
        self._max_drawdown = 0.0 if max_drawdown is None else float(max_drawdown)
        self._close_at_end = bool(close_at_end)
        self._t = 0
        self._stop = 0
        self._steps = 0
        self._prev_equity = 0.0
        self._peak = 0.0
        self._done = True

    @property
    def row(self) -> int:
        """Row of the bar whose close the current observation describes."""
        return self._t

    @property
    def steps(self) -> int:
        """Steps taken in the episode."""
        return self._steps

    def start(self, row: int, stop: int) -> None:
        """Begin an episode at decision row ``row`` (the account reset and marked at its close);
        it is truncated when the step reaches row ``stop``."""
        self._t = row
        self._stop = stop
        self._steps = 0
        book = self._book
        self._prev_equity = self._peak = book.cash + book.qty * book.last_price
        self._done = False

    def observation(self) -> Observation:
        """The observation at the current row."""
        return build_observation(self._flat, self._t, self._k, self._window, self._core)

    def info(self) -> dict[str, Any]:
        """The ``info`` of the current row with no step events (what ``reset`` returns)."""
        return step_info(self._book, self._time[self._t], self._steps, None)

    def step(self, action: Any) -> StepReturn:
        """One Gymnasium step (see :meth:`MarketReplayEnv.step <envs.replay.MarketReplayEnv.step>`)."""
        if self._done:
            raise ConfigError(
                "step() called on a finished episode (or before reset())",
                where="MarketReplayEnv.step",
                fix="call reset() first",
            )
        i = -1
        if self._n_targets:
            try:
                i = int(action)
            except (TypeError, ValueError, OverflowError):
                # Not an index, or (compiled build: i is a C Py_ssize_t) too large for one: left at -1,
                # so target_of refuses it with the same ConfigError as any other out-of-range action.
                i = -1
        # The discrete table lookup here; anything else (continuous actions, out-of-range indices, which
        # it refuses) goes through the environment's own action -> target conversion.
        target = self._targets[i] if 0 <= i < self._n_targets else self._to_target(action)
        t = self._t
        n1 = t + 1
        time_ns = self._time[n1]
        close = self._close[n1]
        volume = self._volume[n1]
        core = self._core
        orders, trades, errors, vetoed, bar = core._bar_step(
            target,
            time_ns,
            self._open[n1],
            self._high[n1],
            self._low[n1],
            close,
            volume,
            self._time[t],
            t,
        )
        self._t = n1
        self._steps += 1
        book = self._book
        equity = book.cash + book.qty * book.last_price
        if equity > self._peak:
            self._peak = equity
        terminated = truncated = False
        reason = None
        if equity <= 0.0:
            reason = EXIT_RUIN
        elif self._has_max_drawdown and equity < self._peak * (1.0 - self._max_drawdown):
            reason = EXIT_MAX_DRAWDOWN
        if reason is not None:
            terminated = True
        elif n1 >= self._stop:
            truncated = True
            if self._close_at_end:
                reason = EXIT_END_OF_DATA
        if reason is not None:
            ex = core.close_position(
                reason, time_ns=time_ns, price=close, volume=volume, decision_time_ns=time_ns
            )
            orders = orders + ex.orders
            trades = trades + ex.trades
            errors = errors + ex.errors
            equity = book.cash + book.qty * book.last_price
        reward_call = self._reward
        if reward_call is None:  # LogReturn.__call__, same arithmetic
            reward = math.log(max(equity / self._prev_equity, _RUIN_FLOOR))
        else:
            result = _fast.new_record(StepResult, (orders, trades, errors, vetoed, bar))
            reward = float(reward_call(self._prev_equity, equity, result))
        self._prev_equity = equity
        self._done = terminated or truncated
        return (
            build_observation(self._flat, n1, self._k, self._window, core),
            reward,
            terminated,
            truncated,
            _info(book, time_ns, self._steps, orders, trades, errors, vetoed, bar),
        )


def _of_status(orders: tuple[OrderResult, ...], status: OrderStatus) -> tuple[OrderResult, ...]:
    return tuple([o for o in orders if o.status is status])


def _view(a: npt.NDArray[Any], dtype: type[np.generic]) -> memoryview:
    """A read-only memoryview of ``a`` as a contiguous array of ``dtype`` (no copy when it is one)."""
    return np.ascontiguousarray(a, dtype=dtype).data.toreadonly()
