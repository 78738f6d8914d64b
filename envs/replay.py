"""``MarketReplayEnv``: the trading core driven by replayed bars, as a Gymnasium environment.

Bars and features are loaded and computed once per dataset and shared, read-only, by every environment
built over the same data and feature configuration in a process (see :func:`market_data`); an
environment holds only its position in the data and its account, so ``reset`` and ``step`` cost the
same whatever the length of the data.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, SupportsFloat, SupportsInt, cast

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from envs.broker import FaultConfig, SimBroker
from envs.core import DEFAULT_REBALANCE_BAND, OrderHook, StepResult, TradingCore
from envs.cursor import (
    DEFAULT_CLIP,
    RUIN_RATIO_FLOOR,
    STATE_FEATURES,
    ReplayCursor,
    build_observation,
    step_info,
)
from envs.errors import ConfigError, DataError, did_you_mean
from envs.market import MarketSpec
from envs.portfolio import DEFAULT_INITIAL_CASH, FeatureSnapshots, Portfolio, PortfolioConfig

if TYPE_CHECKING:
    import pandas as pd

    from envs.features import FeatureConfig, FeatureMatrix, NormalizationStats

__all__ = [
    "CONTINUOUS",
    "DEFAULT_ACTIONS",
    "DEFAULT_WINDOW",
    "ENV_ID",
    "LONG_ONLY_ACTIONS",
    "STATE_FEATURES",
    "DifferentialSharpe",
    "LogReturn",
    "MarketData",
    "MarketReplayEnv",
    "RewardFunction",
    "build_observation",
    "clear_market_data_cache",
    "market_data",
    "step_info",
]

ENV_ID: Final = "slf/MarketReplay-v0"
DEFAULT_WINDOW: Final = 32
DEFAULT_ACTIONS: Final = (-1.0, 0.0, 1.0)
LONG_ONLY_ACTIONS: Final = (0.0, 1.0)
CONTINUOUS: Final = "continuous"

DEFAULT_DSR_ETA: Final = 0.01
# The differential Sharpe ratio divides by variance ** 1.5: below this variance (a flat book, the first
# bars) it is 0, and it is clipped so that a first return after a long flat spell cannot explode.
_DSR_MIN_VARIANCE: Final = 1e-12
_DSR_CLIP: Final = 10.0
_CACHE_SIZE: Final = 8
_TAG_SPACE: Final = 36**6  # order-id episode tags: six base-36 characters
_ALNUM: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


# --- rewards -------------------------------------------------------------------------------------


class RewardFunction(Protocol):
    """Reward of one step from the equity before and after it and the step's events.

    An object with a ``reset()`` method has it called at every episode start (for stateful rewards).
    """

    def __call__(self, prev_equity: float, equity: float, result: StepResult) -> float: ...


class LogReturn:
    """``log(equity_t / equity_{t-1})``: fees, spread, slippage and borrow are all in equity."""

    def __call__(self, prev_equity: float, equity: float, result: StepResult) -> float:
        return math.log(max(equity / prev_equity, RUIN_RATIO_FLOOR))

    def __repr__(self) -> str:
        return "LogReturn()"


class DifferentialSharpe:
    """Moody & Saffell's differential Sharpe ratio of the per-step simple return.

    ``A`` and ``B`` are exponential moving estimates of the first and second moments of the return ``R``
    with rate ``eta``; the reward is ``(B dA - A dB / 2) / (B - A^2)^(3/2)`` with ``dA = R - A`` and
    ``dB = R^2 - B`` (taken before the update), 0 while the variance is ~0, clipped to +-10.

    Args:
        eta: adaptation rate (about 1 / the horizon in bars).
    """

    __slots__ = ("_a", "_b", "eta")

    def __init__(self, eta: float = DEFAULT_DSR_ETA) -> None:
        if not 0.0 < eta < 1.0:
            raise ConfigError(
                f"eta={eta!r} must be in (0, 1)", where="DifferentialSharpe", fix="use e.g. 0.01"
            )
        self.eta = eta
        self._a = 0.0
        self._b = 0.0

    def reset(self) -> None:
        self._a = 0.0
        self._b = 0.0

    def __call__(self, prev_equity: float, equity: float, result: StepResult) -> float:
        r = equity / prev_equity - 1.0
        a, b = self._a, self._b
        da = r - a
        db = r * r - b
        variance = b - a * a
        d = (b * da - 0.5 * a * db) / variance**1.5 if variance > _DSR_MIN_VARIANCE else 0.0
        self._a = a + self.eta * da
        self._b = b + self.eta * db
        return min(max(d, -_DSR_CLIP), _DSR_CLIP)

    def __repr__(self) -> str:
        return f"DifferentialSharpe(eta={self.eta})"


_REWARDS: Final[dict[str, Callable[[], RewardFunction]]] = {
    "log_return": LogReturn,
    "differential_sharpe": DifferentialSharpe,
}


# --- shared market data --------------------------------------------------------------------------


class MarketData:
    """Bars and raw features of one symbol, shared read-only by every environment over them.

    Attributes:
        symbol: market symbol.
        time_ns, open, high, low, close, volume: the bars as read-only arrays (open times, epoch ns).
        features: the raw feature matrix (entry snapshots of trades are taken from it).
        spec: the market spec the data source suggests (bundled datasets), else ``None``.
    """

    __slots__ = (
        "_layout",
        "_obs",
        "_snap",
        "_values",
        "close",
        "features",
        "high",
        "low",
        "open",
        "spec",
        "symbol",
        "time_ns",
        "volume",
    )

    def __init__(
        self, frame: pd.DataFrame, features: FeatureMatrix, symbol: str, spec: MarketSpec | None
    ) -> None:
        times = _epoch_ns(frame.index)
        if len(features) != len(frame) or not np.array_equal(_epoch_ns(features.index), times):
            raise ConfigError(
                f"the feature matrix ({len(features)} rows) does not match these bars ({len(frame)} rows)",
                where="features",
                fix="compute the matrix from the same bars: compute_features(bars, config)",
            )
        self.symbol = symbol
        self.spec = spec
        self.features = features
        self.time_ns = _frozen(times)
        self.open = _frozen(frame["open"].to_numpy(np.float64))
        self.high = _frozen(frame["high"].to_numpy(np.float64))
        self.low = _frozen(frame["low"].to_numpy(np.float64))
        self.close = _frozen(frame["close"].to_numpy(np.float64))
        self.volume = _frozen(frame["volume"].to_numpy(np.float64))
        self._obs: OrderedDict[tuple[Any, ...], tuple[npt.NDArray[np.float32], NormalizationStats]] = (
            OrderedDict()
        )
        columns = features.columns
        self._values = features.values
        # Per group: its feature names and where their values sit in a row.
        self._layout = tuple(
            (group, tuple(columns[p] for p in positions), tuple(positions))
            for group, positions in features.groups.items()
        )
        self._snap = FeatureSnapshots(self._values, self._layout)

    def __len__(self) -> int:
        return len(self.time_ns)

    def snapshot(self, row: int) -> dict[str, dict[str, float]]:
        """Raw features of ``row`` by group, as :meth:`FeatureMatrix.snapshot` gives them (new dicts)."""
        return self._snap(row)

    @property
    def snapshots(self) -> FeatureSnapshots:
        """The snapshot provider over these features (trade entry snapshots; part of the compiled core)."""
        return self._snap

    def observations(
        self, normalization: NormalizationStats | None, fit_span: tuple[int, int], clip: float
    ) -> tuple[npt.NDArray[np.float32], NormalizationStats]:
        """The normalized, clipped, read-only observation matrix, flattened row-major (computed once).

        With ``normalization=None`` the statistics are fitted on the rows ``fit_span``.
        """
        from envs.features import NormalizationStats

        key = ("fit", *fit_span, clip) if normalization is None else ("stats", id(normalization), clip)
        hit = self._obs.get(key)
        if hit is not None:
            return hit
        stats = normalization or NormalizationStats.fit(self.features, *fit_span, clip=clip)
        values = stats.apply(self.features).values
        # Categorical columns pass normalization untouched: clip them too, so the space bounds hold.
        flat = np.clip(values, -clip, clip).reshape(-1)
        np.nan_to_num(flat, copy=False)  # only warm-up rows hold NaN; they are never observed
        entry = (_frozen(flat), stats)
        self._obs[key] = entry
        while len(self._obs) > _CACHE_SIZE:
            self._obs.popitem(last=False)
        return entry


def _epoch_ns(index: pd.Index) -> npt.NDArray[np.int64]:
    """Bar open times as epoch nanoseconds, whatever the index's unit (pandas may pick us or ms)."""
    return np.ascontiguousarray(cast("pd.DatetimeIndex", index).as_unit("ns").asi8, dtype=np.int64)


def _frozen(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


_CACHE: OrderedDict[tuple[Any, ...], MarketData] = OrderedDict()


def clear_market_data_cache() -> None:
    """Forget the shared bars and features (environments already built keep theirs)."""
    _CACHE.clear()


def _frame_digest(frame: pd.DataFrame) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(_epoch_ns(frame.index).tobytes())
    for column in ("open", "high", "low", "close", "volume"):
        h.update(np.ascontiguousarray(frame[column].to_numpy(np.float64)).tobytes())
    return h.hexdigest()


def market_data(
    *,
    dataset: str | None = None,
    data: pd.DataFrame | str | os.PathLike[str] | None = None,
    symbol: str | None = None,
    features: FeatureMatrix | FeatureConfig | Mapping[str, Any] | None = None,
) -> MarketData:
    """Load bars and compute features once; later calls with the same source and features share them.

    The cache key is the dataset name, the file (path, size, modification time) or the frame's content
    digest, with the symbol and the feature config (or the identity of a given feature matrix).

    Raises:
        ConfigError: neither or both of ``dataset`` and ``data``; a symbol that contradicts the dataset.
        DataError: unreadable or invalid bars.
    """
    from envs.data import dataset_info, load_dataset, load_ohlcv
    from envs.features import FeatureConfig, FeatureMatrix, compute_features

    if (dataset is None) == (data is None):
        raise ConfigError(
            "give exactly one of dataset= and data=",
            where="MarketReplayEnv",
            fix="e.g. dataset='eurusd_1h', or data=<DataFrame or path to CSV/Parquet>",
        )
    if isinstance(features, FeatureMatrix):
        feature_key: Any = ("matrix", id(features))
    elif features is None or isinstance(features, FeatureConfig):
        feature_key = features or FeatureConfig()
    elif isinstance(features, Mapping):
        feature_key = FeatureConfig.from_dict(features)
    else:
        raise ConfigError(
            f"features={type(features).__name__} is not a FeatureMatrix, FeatureConfig or mapping",
            where="features",
            fix="pass compute_features(bars), FeatureConfig(...) or None for the defaults",
        )

    spec: MarketSpec | None = None
    frame: pd.DataFrame | None = None
    if dataset is not None:
        info = dataset_info(dataset)
        if symbol is not None and symbol != info.symbol:
            raise ConfigError(
                f"dataset {dataset!r} holds {info.symbol}, not {symbol!r}",
                where="symbol",
                fix=f"drop symbol= or set it to {info.symbol!r}",
            )
        symbol, spec = info.symbol, info.spec
        source_key: tuple[Any, ...] = ("dataset", dataset)
    elif isinstance(data, str | os.PathLike):
        path = Path(data).expanduser()
        if not path.is_file():
            raise DataError("no such file", where=str(data), fix="check the path to the CSV or Parquet file")
        stat = path.stat()
        source_key = ("path", str(path.resolve()), stat.st_size, stat.st_mtime_ns, symbol)
    else:
        given = cast("pd.DataFrame", data)
        frame = load_ohlcv(given, symbol=symbol or given.attrs.get("symbol"))
        symbol = symbol or frame.attrs.get("symbol")
        source_key = ("frame", _frame_digest(frame), symbol)

    key = (*source_key, feature_key)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit

    if frame is None:
        if dataset is not None:
            frame = load_dataset(dataset)
        else:
            frame = load_ohlcv(cast("str", data), symbol=symbol)
            symbol = symbol or frame.attrs.get("symbol")
    matrix = features if isinstance(features, FeatureMatrix) else compute_features(frame, feature_key)
    entry = MarketData(frame, matrix, str(symbol or ""), spec)
    _CACHE[key] = entry
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return entry


# --- the environment -----------------------------------------------------------------------------

ActType = np.int64 | npt.NDArray[np.float32]


class MarketReplayEnv(gym.Env[npt.NDArray[np.float32], ActType]):
    """Trade one symbol over historical bars, with the costs and refusals of a real exchange.

    ## Description

    Each step is one bar. At the close of bar ``t`` the agent chooses a target position; the order that
    moves the account towards it is filled at the **open of bar t+1** (plus half the spread, slippage
    and the taker fee), or refused as the exchange would (lot size, minimum notional, insufficient
    balance), or fails with an injected fault (rate limit, timeout, maintenance) when enabled. The
    account is then marked at the close of ``t+1`` and the next observation is taken there. The
    observation at ``t`` depends on bars ``<= t`` only. The exchange simulation, sizing and accounting
    live in :class:`envs.core.TradingCore`, the same code the live runner uses.

    ## Action Space

    * discrete (default): ``Discrete(len(actions))``; action ``i`` targets ``actions[i]``, a fraction of
      equity (times ``leverage``); default ``actions=[-1, 0, 1]`` (short, flat, long), long-only
      ``[0, 1]``.
    * ``actions="continuous"``: ``Box(-1, 1, (1,), float32)``, the target exposure itself (negative
      targets are treated as flat when ``allow_short=False``).

    Targets smaller than ``rebalance_band`` are flat; changes of position smaller than it are skipped
    unless they close or reverse the position.

    ## Observation Space

    ``Box(-10, 10, (window * n_features + 3,), float32)``: the last ``window`` rows of the feature matrix
    (oldest first, row-major), normalized with ``normalization`` and clipped to +-10, followed by the
    account state: position exposure (signed position value / equity), unrealized PnL / equity, and
    ``log(1 + bars in the open trade)``.

    ## Rewards

    * ``"log_return"`` (default): ``log(equity_t / equity_{t-1})``; every cost is in the equity.
    * ``"differential_sharpe"``: Moody & Saffell's differential Sharpe ratio (:class:`DifferentialSharpe`).
    * a callable ``(prev_equity, equity, step_result) -> float`` (a ``reset()`` method is called at
      each episode start).

    ## Starting State

    All cash, no position. With ``episode_length`` the first decision bar is drawn uniformly from
    ``self.np_random`` among those leaving room for a full episode; without it, episodes start at the
    first bar with a full feature window. ``reset(options={"start": row})`` starts at a given row.
    The fault generator is reseeded from ``self.np_random`` at every reset.

    ## Episode End

    * ``terminated``: ruin (equity <= 0) or a drawdown from the episode's equity peak beyond
      ``max_drawdown``; the position is closed at that bar's close (reduce-only, trade exit reason
      ``"ruin"`` or ``"max_drawdown"``).
    * ``truncated``: the last bar of the data (or of ``end``), or ``episode_length`` steps. With
      ``close_at_end=True`` the position is then closed at the close (exit reason ``"end_of_data"``).

    ## Info

    ``time_ns`` (bar open time, epoch ns), ``step``, ``equity``, ``cash``, ``position`` (base qty),
    ``exposure``, ``price`` (close), ``orders`` / ``fills`` / ``rejections`` (``OrderResult``),
    ``errors`` (``ErrorEvent``), ``trades`` (``TradeResult`` closed this step, with entry snapshots),
    ``vetoed`` (``OrderProposal`` vetoed by the order hook) and ``bar`` (``BarEvent``); event tuples
    are picklable.

    ## Arguments

    * ``dataset``: a bundled dataset name (``"eurusd_1h"``, ``"googl_1d"``, ``"synth_btcusdt_1m"``), or
    * ``data``: a DataFrame of OHLCV bars or a CSV/Parquet path; ``symbol`` picks one symbol of a
      multi-symbol file (one symbol per env; several symbols through several envs).
    * ``features``: a ``FeatureMatrix`` of these bars, a ``FeatureConfig`` (or dict), or ``None``.
    * ``normalization``: ``NormalizationStats`` (fitted on the training split) or ``None`` to fit them
      on this env's replay span ``[start, end)``; pass the training env's ``env.normalization`` to
      evaluation envs.
    * ``market``: a ``MarketSpec`` (or dict); default: the dataset's, else 0.1% taker fee, no spread.
    * ``window`` (32), ``actions`` (``[-1, 0, 1]`` or ``"continuous"``), ``reward`` (``"log_return"``),
      ``episode_length`` (``None`` = to the end of the data), ``start``/``end`` (rows or timestamps
      bounding the replay; features before ``start`` still warm up), ``initial_cash`` (10000),
      ``leverage`` (1), ``allow_short`` (True), ``borrow_rate`` (per bar, fraction of short notional),
      ``max_drawdown`` (fraction, e.g. 0.5), ``rebalance_band`` (0.05), ``faults``
      (``FaultConfig`` or dict of per-order rates; off), ``close_at_end`` (False), ``order_hook``
      (see :class:`envs.core.OrderHook`; also settable with :meth:`set_order_hook`).

    Many environments over the same data share one read-only feature matrix; ``reset`` and ``step``
    are O(1) in the length of the data.
    """

    # Text rendering only; render_fps is required by Gymnasium once a render mode exists.
    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        *,
        dataset: str | None = None,
        data: pd.DataFrame | str | os.PathLike[str] | None = None,
        symbol: str | None = None,
        features: FeatureMatrix | FeatureConfig | Mapping[str, Any] | None = None,
        normalization: NormalizationStats | None = None,
        market: MarketSpec | Mapping[str, Any] | None = None,
        window: int = DEFAULT_WINDOW,
        actions: Sequence[float] | str | None = None,
        reward: str | RewardFunction = "log_return",
        episode_length: int | None = None,
        start: int | str | pd.Timestamp | None = None,
        end: int | str | pd.Timestamp | None = None,
        initial_cash: float = DEFAULT_INITIAL_CASH,
        leverage: float = 1.0,
        allow_short: bool = True,
        borrow_rate: float = 0.0,
        max_drawdown: float | None = None,
        rebalance_band: float = DEFAULT_REBALANCE_BAND,
        faults: FaultConfig | Mapping[str, float] | None = None,
        close_at_end: bool = False,
        order_hook: OrderHook | None = None,
        order_id_prefix: str = "s",
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            name = next(iter(unknown))
            known = [p for p in inspect.signature(MarketReplayEnv).parameters if p != "unknown"]
            raise ConfigError(
                f"unknown argument {name!r}{did_you_mean(name, known)}",
                where="MarketReplayEnv",
                fix="see the Arguments section of help(MarketReplayEnv)",
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode={render_mode!r} is not supported",
                where="render_mode",
                fix="use None or 'ansi'",
            )
        self.render_mode = render_mode
        md = market_data(dataset=dataset, data=data, symbol=symbol, features=features)
        self._data = md
        n = len(md)

        spec = _market_spec(market, md)
        if not md.symbol:
            md_symbol = spec.symbol
        elif spec.symbol != md.symbol:
            raise ConfigError(
                f"market spec is for {spec.symbol!r} but the bars are {md.symbol!r}",
                where="market",
                fix=f"build the spec with symbol={md.symbol!r}",
            )
        else:
            md_symbol = md.symbol
        self.symbol = md_symbol

        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window={window!r} must be an integer >= 1", where="window", fix="use e.g. 32")
        self.window = window
        first = _row(start, md, "start", default=0)
        stop = _row(end, md, "end", default=n)
        warmup = md.features.warmup
        # Decision rows: a full window of finite features behind them and a next bar to fill at.
        self._t_min = max(warmup + window - 1, first)
        self._t_last = stop - 1
        if self._t_min >= self._t_last:
            raise DataError(
                f"no room for a step: the first decision bar is row {self._t_min} (feature warm-up "
                f"{warmup} + window {window} - 1, or start) but the replay ends at row {self._t_last}",
                where=f"data ({n} bars)",
                fix="load more bars, shorten window, or move start/end apart",
            )
        if episode_length is not None and (
            isinstance(episode_length, bool) or not isinstance(episode_length, int) or episode_length < 1
        ):
            raise ConfigError(
                f"episode_length={episode_length!r} must be an integer >= 1 or None",
                where="episode_length",
                fix="use e.g. 1000, or None to run to the end of the data",
            )
        if episode_length is not None and episode_length > self._t_last - self._t_min:
            raise ConfigError(
                f"episode_length={episode_length} exceeds the {self._t_last - self._t_min} steps available",
                where="episode_length",
                fix=f"use at most {self._t_last - self._t_min}, or None",
            )
        self.episode_length = episode_length
        if max_drawdown is not None and not 0.0 < max_drawdown < 1.0:
            raise ConfigError(
                f"max_drawdown={max_drawdown!r} must be a fraction in (0, 1)",
                where="max_drawdown",
                fix="e.g. 0.5 ends the episode after losing half of the peak equity",
            )
        self.max_drawdown = max_drawdown
        self.close_at_end = bool(close_at_end)

        # Action -> target exposure: the one table of position logic on the env side.
        self.continuous = isinstance(actions, str)
        if isinstance(actions, str):
            if actions != CONTINUOUS:
                raise ConfigError(
                    f"actions={actions!r} is not a list of targets or 'continuous'",
                    where="actions",
                    fix="use e.g. [-1, 0, 1], [0, 1] or 'continuous'",
                )
            self._targets: tuple[float, ...] = ()
            self.action_space: spaces.Space[Any] = spaces.Box(-1.0, 1.0, (1,), np.float32)
        else:
            targets = tuple(
                float(a) for a in (actions or (DEFAULT_ACTIONS if allow_short else LONG_ONLY_ACTIONS))
            )
            if len(targets) < 2 or any(not -1.0 <= a <= 1.0 for a in targets):
                raise ConfigError(
                    f"actions={list(targets)} must hold at least two targets in [-1, 1]",
                    where="actions",
                    fix="use e.g. [-1, 0, 1] (short, flat, long) or [0, 1]",
                )
            if not allow_short and any(a < 0.0 for a in targets):
                raise ConfigError(
                    f"actions={list(targets)} include short targets but allow_short=False",
                    where="actions",
                    fix="use long-only actions such as [0, 1], or allow_short=True",
                )
            self._targets = targets
            self.action_space = spaces.Discrete(len(targets))
        self._min_target = -1.0 if allow_short else 0.0

        if isinstance(reward, str):
            if reward not in _REWARDS:
                raise ConfigError(
                    f"unknown reward {reward!r}{did_you_mean(reward, list(_REWARDS))}",
                    where="reward",
                    fix=f"use one of {sorted(_REWARDS)} or a callable",
                )
            self._reward: RewardFunction = _REWARDS[reward]()
        elif callable(reward):
            self._reward = reward
        else:
            raise ConfigError(
                f"reward={reward!r} is not a name or a callable", where="reward", fix="e.g. 'log_return'"
            )
        self._reward_reset: Callable[[], None] | None = getattr(self._reward, "reset", None)

        fit_span = (max(warmup, first), stop)
        self._flat, self.normalization = md.observations(normalization, fit_span, DEFAULT_CLIP)
        self._k = len(md.features.columns)
        self._wk = window * self._k
        self.observation_space = spaces.Box(
            -DEFAULT_CLIP, DEFAULT_CLIP, (self._wk + len(STATE_FEATURES),), np.float32
        )

        book = Portfolio(
            md_symbol,
            PortfolioConfig(
                initial_cash=initial_cash, allow_short=allow_short, leverage=leverage, borrow_rate=borrow_rate
            ),
            snapshot=md.snapshots,
        )
        self._broker = SimBroker(spec, book, faults=FaultConfig.coerce(faults))
        self.core = TradingCore(
            spec, book, self._broker, rebalance_band=rebalance_band, order_hook=order_hook
        )
        self.market_spec = spec
        self._book = book
        self._id_prefix = str(order_id_prefix)
        self._stop = self._t_last
        # The per-step work; the log return (the default reward) is computed inside it.
        self._cursor = ReplayCursor(
            md.time_ns,
            md.open,
            md.high,
            md.low,
            md.close,
            md.volume,
            self._flat,
            self._k,
            window,
            self.core,
            self._targets,
            self.target_of,
            None if type(self._reward) is LogReturn else self._reward,
            max_drawdown,
            self.close_at_end,
        )

    # --- public helpers ----------------------------------------------------------------------------
    @property
    def market_data(self) -> MarketData:
        """The shared, read-only bars and features this env replays."""
        return self._data

    @property
    def row(self) -> int:
        """Row of the bar whose close the current observation describes."""
        return self._cursor.row

    def set_order_hook(self, hook: OrderHook | None) -> None:
        """Install (or remove with ``None``) the order hook; works through ``VecEnv.env_method``."""
        self.core.order_hook = hook

    def _bad_action(self, action: object) -> Any:
        raise ConfigError(
            f"action {action!r} is outside Discrete({len(self._targets)})",
            where="action",
            fix=f"use an integer in 0..{len(self._targets) - 1}",
        )

    def target_of(self, action: ActType) -> float:
        """The target exposure an action stands for."""
        if self.continuous:
            x = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
            if not math.isfinite(x):
                raise ConfigError(
                    f"action {action!r} is not finite", where="action", fix="return a number in [-1, 1]"
                )
            return min(max(x, self._min_target), 1.0)
        try:
            i = int(cast("SupportsInt", action))
        except (TypeError, ValueError, OverflowError):  # None, "x", nan, inf, a 2-element array...
            i = -1
        if not 0 <= i < len(self._targets):
            self._bad_action(action)
        return self._targets[i]

    # --- Gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        start = (options or {}).get("start")
        if start is not None:
            t0 = _row(start, self._data, "options['start']", default=self._t_min)
            last_start = self._t_last - (self.episode_length or 1)
            if not self._t_min <= t0 <= last_start:
                raise ConfigError(
                    f"start row {t0} is outside {self._t_min}..{last_start}",
                    where="reset(options={'start': ...})",
                    fix="start after the feature warm-up and window, leaving room for the episode",
                )
        elif self.episode_length is not None:
            t0 = int(rng.integers(self._t_min, self._t_last - self.episode_length + 1))
        else:
            t0 = self._t_min
        # Always drawn, in this order, so faults on or off do not change the episode starts.
        self._broker.reseed(SimBroker.seed_from(rng))
        tag = int(rng.integers(0, _TAG_SPACE))
        self.core.reset(id_prefix=f"{self._id_prefix}{_base36(tag)}")
        if self._reward_reset is not None:
            self._reward_reset()
        # Truncation row: the end of the data, or episode_length steps after t0 (one row per step).
        length = self.episode_length
        self._stop = self._t_last if length is None else min(self._t_last, t0 + length)
        self._book.mark(float(self._data.close[t0]))
        cursor = self._cursor
        cursor.start(t0, self._stop)
        return cursor.observation(), cursor.info()

    def step(
        self, action: ActType
    ) -> tuple[npt.NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        # The work lives in envs.cursor.ReplayCursor.step (part of the compiled core).
        return self._cursor.step(action)

    def render(self) -> str | None:  # type: ignore[override]
        if self.render_mode != "ansi":
            return None
        book = self._book
        return (
            f"{self.symbol} row {self._cursor.row} step {self._cursor.steps}: equity {book.equity:.2f} "
            f"position {book.qty:g} cash {book.cash:.2f}"
        )

    # --- internals -----------------------------------------------------------------------------
    def _observation(self) -> npt.NDArray[np.float32]:
        return self._cursor.observation()


def _market_spec(market: MarketSpec | Mapping[str, Any] | None, md: MarketData) -> MarketSpec:
    if isinstance(market, MarketSpec):
        return market
    if isinstance(market, Mapping):
        return MarketSpec.from_dict(market)
    if market is not None:
        raise ConfigError(
            f"market={type(market).__name__} is not a MarketSpec or a mapping",
            where="market",
            fix="pass MarketSpec('BTC/USDT', taker_fee=0.001, ...)",
        )
    if md.spec is not None:
        return md.spec
    return MarketSpec(md.symbol or "ASSET")


def _row(value: Any, md: MarketData, name: str, *, default: int) -> int:
    """A row number from an int or anything ``pandas.Timestamp`` reads (first bar at or after it)."""
    if value is None:
        return default
    n = len(md)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        row = int(value)
    else:
        import pandas as pd

        try:
            ts = pd.Timestamp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"cannot read {value!r} as a row or a time",
                where=name,
                fix="give a row number or e.g. '2017-06-01'",
            ) from exc
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        row = int(np.searchsorted(md.time_ns, ts.value, side="left"))
    if not 0 <= row <= n:
        raise ConfigError(f"row {row} is outside the data's 0..{n}", where=name, fix=f"give a row in 0..{n}")
    return row


def _base36(x: int) -> str:
    out = []
    for _ in range(6):
        x, r = divmod(x, 36)
        out.append(_ALNUM[r])
    return "".join(reversed(out))
