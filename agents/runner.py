"""``LiveRunner``: the replay's loop driven by a live bar feed (asyncio), with explicit lifecycle.

``build() -> run() -> stop()``, as NautilusTrader's nodes: :meth:`LiveRunner.build` makes the account,
broker, trading core, learned order hook and learning feed and checks the feature schema;
:meth:`LiveRunner.run` iterates the feed's closed bars until the feed ends, :meth:`LiveRunner.stop` is
called, or SIGINT/SIGTERM arrives; :meth:`LiveRunner.stop` flushes the learning manager's state (it is
idempotent and also runs when ``run`` ends). Calling them out of order raises a
:class:`~envs.errors.ConfigError` that says what to call.

Per closed bar ``t`` the runner does exactly what :class:`~envs.replay.MarketReplayEnv`, the learning
wrapper and :class:`~agents.callbacks.LearningCallback` do in replay, with the same classes:

1. marks the account at ``t``'s close (:meth:`TradingCore.mark`), completing the previous decision's
   step (its order went out at the quote right after ``t - 1`` closed);
2. computes the features of its history window causally (:func:`envs.features.compute_features` over
   the last ``max_history`` bars: recursive indicators converge, and the parity test checks that the
   row equals the replay's row bit for bit) and the observation as ``MarketReplayEnv`` builds it (the
   normalized, clipped window from :meth:`MarketData.observations` plus the account state);
3. hands the bar's raw features to the :class:`~agents.hooks.LearnedOrderHook` (vetoes, condition
   adjustments, learned minimums, error resolutions), then feeds the learning manager through an
   unmodified :class:`~agents.callbacks.LearningCallback` (one-environment adapter, see
   :class:`_LiveVecEnv`), which also pushes new snapshots and resolutions to the hook;
4. asks the policy (an SB3 model, deterministic) for an action, maps it to a target exposure as the env
   does, applies the risk limits, and sends the order through the same :class:`~envs.core.TradingCore`
   to the broker at the feed's current quote (a :class:`~envs.live.PaperBroker` by default).

Market time comes from bar timestamps only; the wall clock is used for the status line's log only.

Not supported yet: ``observation_features`` (learned features in the observation), baselines as live
policies, the ccxt feed and exchange broker, restart reconciliation with an exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import signal
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import numpy as np
import numpy.typing as npt

from agents.bundle import EnvSettings
from agents.callbacks import LearningCallback
from agents.hooks import (
    DEFAULT_BACKOFF_BARS,
    DEFAULT_REDUCE_FACTOR,
    DEFAULT_SKIP_BARS,
    HookEvent,
    LearnedOrderHook,
)
from agents.switches import LearningSwitches
from agents.wrappers import INFO_CONDITIONS, INFO_EVENTS, INFO_VERSION
from envs.broker import Broker
from envs.clock import DAY_NS
from envs.core import Execution, StepResult, TradingCore
from envs.errors import ConfigError
from envs.events import OrderStatus
from envs.features import DEFAULT_CLIP, FeatureConfig, NormalizationStats, compute_features, min_rows
from envs.live import Bar, BarFeed, PaperBroker
from envs.market import MarketSpec
from envs.portfolio import Portfolio, PortfolioConfig
from envs.replay import CONTINUOUS, STATE_FEATURES, MarketData

if TYPE_CHECKING:
    import pandas as pd

    from agents.bundle import Bundle
    from learning.manager import UniversalLearningManager
    from learning.state import LearnedState

__all__ = [
    "DEFAULT_MAX_HISTORY",
    "EXIT_RISK_LIMIT",
    "LiveRunner",
    "Policy",
    "RiskLimits",
    "RunnerState",
    "observation_row",
    "step_info",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_HISTORY: Final = 4096
"""Bars of history the features are computed over (recursive indicators have converged long before)."""
HISTORY_FACTOR: Final = 3
"""``max_history`` must be at least this many times :func:`envs.features.min_rows` of the features."""
EXIT_RISK_LIMIT: Final = "risk_limit"
_MAX_TRADE_BARS: Final = math.expm1(DEFAULT_CLIP)
_SET_STATE: Final = "set_learned_state"
_APPLY_RESOLUTION: Final = "apply_resolution"
_NOTHING: Final = Execution((), (), (), ())
_FILLED = OrderStatus.FILLED
_REJECTED = OrderStatus.REJECTED


class Policy(Protocol):
    """What the runner asks for a decision: SB3's ``predict`` (models; anything with the same call)."""

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]: ...


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Live risk limits (both off by default; neither exists in replay, so parity runs leave them off).

    Attributes:
        max_position: cap on the absolute target exposure (fraction of equity, before leverage).
        daily_loss: kill switch: when equity falls this fraction below the UTC day's first equity, the
            position is closed (reduce-only, exit reason ``"risk_limit"``) and no further orders are
            sent until the runner is restarted.
    """

    max_position: float | None = None
    daily_loss: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_position", "daily_loss"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0.0 < value <= 1.0):
                raise ConfigError(
                    f"{name}={value!r} must be a fraction in (0, 1]",
                    where=f"--{name.replace('_', '-')}",
                    fix="e.g. 0.5 (half of equity) or leave it unset",
                )


class RunnerState(Enum):
    """Lifecycle of a :class:`LiveRunner`."""

    NEW = "new"
    BUILT = "built"
    RUNNING = "running"
    STOPPED = "stopped"


# --- the replay's observation and info, as functions ---------------------------------------------------


def observation_row(
    window_values: npt.NDArray[np.float32], book: Portfolio, bars_in_trade: int
) -> npt.NDArray[np.float32]:
    """The observation ``MarketReplayEnv`` builds: the flattened normalized window, then the account state.

    Mirrors ``MarketReplayEnv._observation`` (see the report: it should become this public function).
    """
    wk = len(window_values)
    obs = np.empty(wk + len(STATE_FEATURES), dtype=np.float32)
    obs[:wk] = window_values
    qty = book.qty
    price = book.last_price
    equity = book.cash + qty * price
    clip = DEFAULT_CLIP
    if equity > 0.0 and qty != 0.0:
        exposure = qty * price / equity
        upnl = (price - book.avg_price) * qty / equity
        obs[wk] = clip if exposure > clip else (-clip if exposure < -clip else exposure)
        obs[wk + 1] = clip if upnl > clip else (-clip if upnl < -clip else upnl)
        obs[wk + 2] = math.log1p(bars_in_trade) if bars_in_trade < _MAX_TRADE_BARS else clip
    else:
        obs[wk] = obs[wk + 1] = obs[wk + 2] = 0.0
    return obs


def step_info(book: Portfolio, time_ns: int, step: int, res: StepResult | None) -> dict[str, Any]:
    """The ``info`` dict ``MarketReplayEnv`` returns for a step (mirrors ``MarketReplayEnv._info``)."""
    qty = book.qty
    price = book.last_price
    equity = book.cash + qty * price
    if res is None:
        orders: tuple[Any, ...] = ()
        fills = rejections = errors = trades = vetoed = orders
        bar = None
    else:
        orders, trades, errors, vetoed, bar = res
        fills = tuple(o for o in orders if o.status is _FILLED)
        rejections = tuple(o for o in orders if o.status is _REJECTED)
    return {
        "time_ns": time_ns,
        "step": step,
        "equity": equity,
        "cash": book.cash,
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


class _ActionTable:
    """Action -> target exposure, as ``MarketReplayEnv.target_of`` maps it."""

    def __init__(self, settings: EnvSettings) -> None:
        self.continuous = isinstance(settings.actions, str)
        if self.continuous and settings.actions != CONTINUOUS:
            raise ConfigError(
                f"actions={settings.actions!r}", where="env.actions", fix="a list or 'continuous'"
            )
        self.targets: tuple[float, ...] = (
            () if self.continuous else cast("tuple[float, ...]", settings.actions)
        )
        self.min_target = -1.0 if settings.allow_short else 0.0

    def target_of(self, action: Any) -> float:
        if self.continuous:
            x = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
            if not math.isfinite(x):
                raise ConfigError(
                    f"action {action!r} is not finite", where="policy", fix="return a number in [-1, 1]"
                )
            return min(max(x, self.min_target), 1.0)
        i = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= i < len(self.targets):
            raise ConfigError(
                f"action {i} is outside Discrete({len(self.targets)})",
                where="policy",
                fix="use a policy trained on this bundle's action space",
            )
        return self.targets[i]


# --- LearningCallback's view of the runner -------------------------------------------------------------


class _LiveVecEnv:
    """The runner as the one-environment ``VecEnv`` that :class:`LearningCallback` reads and commands.

    The callback feeds the manager from ``info`` dicts and calls ``env_method("set_learned_state", s)``
    and ``env_method("apply_resolution", r)``; this adapter forwards those to the runner's hook, so the
    manager is fed by the very code that feeds it in training.
    """

    num_envs = 1

    def __init__(self, runner: LiveRunner) -> None:
        self._runner = runner
        self.reset_infos: list[dict[str, Any]] = [{}]

    @property
    def unwrapped(self) -> _LiveVecEnv:
        return self

    def has_attr(self, name: str) -> bool:
        return name in (_SET_STATE, _APPLY_RESOLUTION)

    def env_method(self, name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        if name == _SET_STATE:
            self._runner.set_learned_state(*args)
        elif name == _APPLY_RESOLUTION:
            self._runner.apply_resolution(*args)
        else:
            raise ConfigError(
                f"the live runner has no method {name!r}", where="LearningCallback", fix="report a bug"
            )
        return [None]


class _CallbackHost:
    """What a ``BaseCallback`` reads of its model: the env, the logger and the step count."""

    def __init__(self, env: _LiveVecEnv) -> None:
        from stable_baselines3.common.logger import Logger

        self.env = env
        self.logger = Logger(folder=None, output_formats=[])
        self.num_timesteps = 0

    def get_env(self) -> _LiveVecEnv:
        return self.env


# --- the runner ----------------------------------------------------------------------------------------


class LiveRunner:
    """Trades one symbol from a bar feed with a policy, the learned state and the learning manager.

    Args:
        feed: the closed-bar feed (its back-fill warms the features up).
        policy: the decision maker (an SB3 model; ``predict(obs, deterministic=True)``).
        spec: the market's rules and costs.
        features: the feature config the policy was trained on.
        normalization: the training split's observation statistics.
        env: the trading options of the replay env the policy was trained in.
        switches: the learning switches (``observation_features`` is not supported live yet).
        manager: the learning manager, for ``switches.online`` (the runner does not close it).
        state: the learned snapshot to apply frozen when ``switches.online`` is false.
        broker: where orders go (default: a :class:`~envs.live.PaperBroker` over the runner's account).
        risk: live risk limits.
        id_prefix: first part of the client order ids (deterministic: ``<prefix>-<symbol>-<ms>-<n>``).
        max_history: bars the features are computed over.
        status_every: log the status line every this many bars (0: never).
    """

    def __init__(
        self,
        feed: BarFeed,
        policy: Policy,
        *,
        spec: MarketSpec,
        features: FeatureConfig,
        normalization: NormalizationStats,
        env: EnvSettings,
        switches: LearningSwitches | None = None,
        manager: UniversalLearningManager | None = None,
        state: LearnedState | None = None,
        broker: Broker | None = None,
        risk: RiskLimits | None = None,
        id_prefix: str = "live",
        max_history: int = DEFAULT_MAX_HISTORY,
        status_every: int = 0,
    ) -> None:
        need = HISTORY_FACTOR * min_rows(features)
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < need:
            raise ConfigError(
                f"max_history={max_history!r} is too short for these features' recursive indicators",
                where="max_history",
                fix=f"use at least {need} bars ({HISTORY_FACTOR} x the features' minimum rows)",
            )
        self.feed = feed
        self.policy = policy
        self.spec = spec
        self.feature_config = features
        self.normalization = normalization
        self.settings = env
        self.switches = switches if switches is not None else LearningSwitches(enabled=False)
        self.manager = manager
        self.risk = risk or RiskLimits()
        self.id_prefix = id_prefix
        self.max_history = max_history
        self.status_every = status_every
        self._given_state = state
        self._given_broker = broker
        self._owned: list[Any] = []  # closed by stop() (a manager opened by from_bundle)
        self._lifecycle = RunnerState.NEW
        self._stop_event: asyncio.Event | None = None
        self.infos: list[dict[str, Any]] = []
        """Every step's ``info`` (as MarketReplayEnv and the learning wrapper report it)."""
        self.keep_infos = True

    # --- construction from a bundle --------------------------------------------------------------------
    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        feed: BarFeed,
        *,
        state_dir: Path | None = None,
        policy: Policy | None = None,
        **kwargs: Any,
    ) -> LiveRunner:
        """A runner for a verified bundle (see :func:`agents.bundle.load_bundle`).

        With online learning the manager's store lives in ``state_dir`` (required then); it starts as a
        copy of the bundle's store when ``state_dir`` has none, so the bundle itself is never written.
        """
        from learning.manager import UniversalLearningManager
        from learning.store import STORE_DIRNAME, STORE_FILENAME

        switches = bundle.switches
        manager = None
        state = None
        if switches.enabled and switches.online:
            if state_dir is None:
                raise ConfigError(
                    "online learning needs a state directory for the learning store",
                    where="LiveRunner.from_bundle",
                    fix="pass state_dir= (slf live --state-dir DIR)",
                )
            store = Path(state_dir) / STORE_DIRNAME / STORE_FILENAME
            if not store.exists() and bundle.store is not None:
                store.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(bundle.store, store)
            manager = UniversalLearningManager(
                Path(state_dir), config=bundle.learning_config, market_specs=[bundle.spec]
            )
        elif switches.enabled:
            state = bundle.learned_state()
        runner = cls(
            feed,
            policy if policy is not None else cast("Policy", bundle.load_model()),
            spec=bundle.spec,
            features=bundle.feature_config,
            normalization=bundle.normalization,
            env=bundle.env,
            switches=switches,
            manager=manager,
            state=state,
            **kwargs,
        )
        if manager is not None:
            runner._owned.append(manager)
        return runner

    # --- lifecycle ----------------------------------------------------------------------------------------
    @property
    def lifecycle(self) -> RunnerState:
        return self._lifecycle

    def _expect(self, method: str, *allowed: RunnerState, fix: str) -> None:
        if self._lifecycle not in allowed:
            raise ConfigError(
                f"{method}() called while the runner is {self._lifecycle.value}",
                where=f"LiveRunner.{method}",
                fix=fix,
            )

    def build(self) -> LiveRunner:
        """Make the account, broker, core, hook and learning feed; check the feed against the bundle."""
        self._expect("build", RunnerState.NEW, fix="build() once, then run(), then stop()")
        spec = self.spec
        if self.feed.symbol and self.feed.symbol != spec.symbol:
            raise ConfigError(
                f"the feed trades {self.feed.symbol!r} but the policy was trained on {spec.symbol!r}",
                where="--symbol",
                fix=f"run the bundle on {spec.symbol!r}",
            )
        switches = self.switches
        if switches.enabled and switches.observation_features:
            raise ConfigError(
                "learned observation features are not supported by the live runner yet",
                where="learning.observation_features",
                fix="promote a run trained with observation_features: false",
            )
        s = self.settings
        self._table = _ActionTable(s)
        self.book = Portfolio(
            spec.symbol,
            PortfolioConfig(
                initial_cash=s.initial_cash,
                allow_short=s.allow_short,
                leverage=s.leverage,
                borrow_rate=s.borrow_rate,
            ),
            snapshot=self._snapshot_of,
        )
        self.broker: Broker = (
            self._given_broker if self._given_broker is not None else PaperBroker(spec, self.book)
        )
        self.hook: LearnedOrderHook | None = None
        if switches.enabled:
            cost = spec.taker_fee + (spec.spread_bps / 2.0 + spec.slippage_bps) / 1e4
            self.hook = LearnedOrderHook(
                switches, None, qty_step=spec.qty_step, leverage=s.leverage, cost_rate=cost
            )
        self.core = TradingCore(
            spec,
            self.book,
            self.broker,
            rebalance_band=s.rebalance_band,
            order_hook=self.hook,
            id_prefix=self.id_prefix,
        )
        self._callback: LearningCallback | None = None
        if switches.enabled:
            self._vec = _LiveVecEnv(self)
            self._host = _CallbackHost(self._vec)
            self._callback = LearningCallback(
                self.manager, switches, state=None if switches.online else self._given_state
            )
            self._callback.init_callback(self._host)  # type: ignore[arg-type]
        elif self._given_state is not None:
            raise ConfigError("state= given but learning is off", where="LiveRunner", fix="drop state=")

        self._times: list[int] = []
        self._ohlcv: list[list[float]] = [[], [], [], [], []]
        self._rows = 0  # bars seen (back-fill included): the next bar's row
        self._first_row = 0  # row of self._times[0]
        self._groups: dict[str, dict[str, float]] = {}
        self._snapshots: OrderedDict[int, dict[str, dict[str, float]]] = OrderedDict()
        self._schema_checked = False
        self._started = False
        self._pending = _NOTHING
        self._step = 0
        self._policy_state: Any = None
        self._halted = False
        self._day = -1
        self._day_equity = s.initial_cash
        self.last_decision = "none yet"
        self.last_rules: tuple[str, ...] = ()
        self.last_time_ns = 0
        self.bars = 0

        history = self.feed.history()
        self._append_frame(history)
        if len(history) >= min_rows(self.feature_config):
            self._check_schema(compute_features(self._frame(), self.feature_config))
        self._lifecycle = RunnerState.BUILT
        return self

    async def run(self) -> None:
        """Trade every closed bar of the feed until it ends, :meth:`stop` is called, or SIGINT/SIGTERM.

        Always ends with :meth:`stop` (learning state flushed).
        """
        self._expect("run", RunnerState.BUILT, fix="call build() first; a stopped runner cannot run again")
        self._lifecycle = RunnerState.RUNNING
        self._stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
                handled.append(sig)
        bars = self.feed.bars().__aiter__()
        stop_wait = asyncio.ensure_future(self._stop_event.wait())
        try:
            while not self._stop_event.is_set():
                next_bar = asyncio.ensure_future(anext(bars))
                done, _ = await asyncio.wait({next_bar, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if next_bar not in done:
                    next_bar.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await next_bar
                    break
                try:
                    bar = next_bar.result()
                except StopAsyncIteration:
                    break
                self.on_bar(bar)
                if bar.last:
                    break
        finally:
            stop_wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_wait
            for sig in handled:
                loop.remove_signal_handler(sig)
            self.stop()

    def request_stop(self, reason: str = "requested") -> None:
        """Ask :meth:`run` to stop after the current bar (what SIGINT/SIGTERM do)."""
        log.info("stopping the live runner (%s)", reason)
        if self._stop_event is not None:
            self._stop_event.set()

    def stop(self) -> None:
        """Flush and close the learning state (idempotent). The runner cannot run again."""
        if self._lifecycle is RunnerState.STOPPED:
            return
        self._expect("stop", RunnerState.BUILT, RunnerState.RUNNING, fix="build() and run() the runner first")
        self._lifecycle = RunnerState.STOPPED
        if self._stop_event is not None:
            self._stop_event.set()
        try:
            if self._callback is not None and self._started:
                self._callback.on_training_end()  # logs, flushes the manager
            elif self.manager is not None and not self.manager.read_only:
                self.manager.flush()
        finally:
            for owned in self._owned:
                owned.close()
            self._owned.clear()
        log.info("live runner stopped: %s", self.status())

    # --- learned state (what LearningCallback commands through _LiveVecEnv) ------------------------------
    def set_learned_state(self, state: LearnedState | None) -> None:
        """Apply a new snapshot from the next order on (as ``LearningManagerWrapper.set_learned_state``)."""
        if self.hook is None:
            return
        self.hook.set_state(state)
        if self._groups:
            self.hook.prepare(self._groups)

    def apply_resolution(self, resolution: str) -> None:
        """Act on the manager's error resolution (as ``LearningManagerWrapper.apply_resolution``)."""
        if self.hook is None or not self.switches.error_resolutions:
            return
        self.hook.apply_resolution(
            resolution,
            backoff_bars=DEFAULT_BACKOFF_BARS,
            skip_bars=DEFAULT_SKIP_BARS,
            reduce_factor=DEFAULT_REDUCE_FACTOR,
        )

    @property
    def learned_state(self) -> LearnedState | None:
        return None if self.hook is None else self.hook.state

    # --- history and features -----------------------------------------------------------------------
    def _append_frame(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        times = np.asarray(frame.index.as_unit("ns").asi8, dtype=np.int64)  # type: ignore[attr-defined]
        self._times.extend(int(t) for t in times)
        for column, values in zip(("open", "high", "low", "close", "volume"), self._ohlcv, strict=True):
            values.extend(float(x) for x in frame[column].to_numpy(np.float64))
        self._rows += len(frame)
        self._trim()

    def _append(self, bar: Bar) -> None:
        if self._times and bar.time_ns <= self._times[-1]:
            raise ConfigError(
                f"bar at {bar.time_ns} does not come after the previous one ({self._times[-1]})",
                where="feed",
                fix="the feed must yield closed bars in time order, each once",
            )
        self._times.append(bar.time_ns)
        for values, x in zip(self._ohlcv, (bar.open, bar.high, bar.low, bar.close, bar.volume), strict=True):
            values.append(float(x))
        self._rows += 1
        self._trim()

    def _trim(self) -> None:
        extra = len(self._times) - self.max_history
        if extra > 0:
            del self._times[:extra]
            for values in self._ohlcv:
                del values[:extra]
            self._first_row += extra

    def _frame(self) -> pd.DataFrame:
        import pandas as pd

        index = pd.DatetimeIndex(np.asarray(self._times, dtype="datetime64[ns]")).tz_localize("UTC")
        index.name = "timestamp"
        names = ("open", "high", "low", "close", "volume")
        return pd.DataFrame(
            {n: np.asarray(v, dtype=np.float64) for n, v in zip(names, self._ohlcv, strict=True)}, index=index
        )

    def _check_schema(self, matrix: Any) -> None:
        try:
            self.normalization.check(matrix)
        except ConfigError as exc:
            raise ConfigError(
                exc.problem, where="live features vs the bundle's feature schema", fix=exc.fix
            ) from None
        self._schema_checked = True

    def _snapshot_of(self, row: int) -> Mapping[str, Mapping[str, float]]:
        snap = self._snapshots.get(row)
        return {} if snap is None else {group: dict(values) for group, values in snap.items()}

    def _market(self) -> tuple[MarketData, int] | None:
        """The market data of the history window and the row of the newest bar, once features are ready."""
        if len(self._times) < min_rows(self.feature_config):
            return None
        frame = self._frame()
        matrix = compute_features(frame, self.feature_config)
        if not self._schema_checked:
            self._check_schema(matrix)
        row = len(frame) - 1
        if row < matrix.warmup + self.settings.window - 1:
            return None
        return MarketData(frame, matrix, self.spec.symbol, self.spec), row

    def _observation(self, md: MarketData, row: int) -> npt.NDArray[np.float32]:
        flat, _ = md.observations(self.normalization, (0, 1), DEFAULT_CLIP)
        k = len(md.features.columns)
        end = (row + 1) * k
        return observation_row(
            flat[end - self.settings.window * k : end], self.book, self.core.bars_in_trade()
        )

    # --- one bar --------------------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> dict[str, Any] | None:
        """Process one closed bar (``run`` calls it; tests may too). Returns the step's ``info``."""
        self._expect("on_bar", RunnerState.BUILT, RunnerState.RUNNING, fix="build() the runner first")
        self._append(bar)
        row = self._rows - 1
        self.bars += 1
        self.last_time_ns = bar.time_ns
        result: StepResult | None = None
        if self._started:
            bar_event = self.core.mark(bar.time_ns, bar.close)
            p = self._pending
            result = StepResult(p.orders, p.trades, p.errors, p.vetoed, bar_event)
            self._pending = _NOTHING
            self._step += 1
        market = self._market()
        if market is None:
            if self._started:  # pragma: no cover - features stay ready once they are
                raise ConfigError("features stopped being ready", where="LiveRunner", fix="report a bug")
            return None
        md, local = market
        groups = md.snapshot(local)
        self._groups = groups
        obs = self._observation(md, local) if self._started else None
        hook = self.hook
        events: tuple[HookEvent, ...] = ()
        first = not self._started
        if first:
            # MarketReplayEnv.reset: all cash, marked at the first decision bar's close.
            self.book.mark(bar.close)
            obs = self._observation(md, local)
            if hook is not None:
                hook.new_episode()
                hook.prepare(groups)
        elif hook is not None:
            events = hook.drain()
            hook.tick()
            hook.prepare(groups)
        info = step_info(self.book, bar.time_ns, self._step, result)
        if hook is not None:
            info[INFO_EVENTS] = events
            info[INFO_CONDITIONS] = hook.conditions
            info[INFO_VERSION] = -1 if hook.state is None else hook.state.version
        self.last_rules = tuple(
            f"{e.reason.value}{'(' + ','.join(e.rule_ids) + ')' if e.rule_ids else ''}" for e in events
        )
        if result is not None and result.orders:
            o = result.orders[-1]
            state = "filled" if o.filled else f"{o.status.value}: {o.message}"
            self.last_decision = f"{o.side.value} {o.requested_qty:g} @ {o.price:.6g} {state}"
        self._learn(info, first=first, done=bar.last)
        if self.keep_infos and not first:
            self.infos.append(info)
        self._snapshots[row] = groups
        if self.book.qty == 0.0:
            # Entry snapshots are read when a trade closes; flat, no open trade needs the older ones.
            for old in [r for r in self._snapshots if r != row]:
                del self._snapshots[old]
        self._started = True
        if self.status_every and self.bars % self.status_every == 0:
            log.info("%s", self.status())
        if not bar.last:
            self._decide(bar, row, cast("npt.NDArray[np.float32]", obs), first=first)
        return info

    def _learn(self, info: dict[str, Any], *, first: bool, done: bool) -> None:
        callback = self._callback
        if callback is None:
            return
        if first:
            self._vec.reset_infos = [info]
            callback.on_training_start({}, {})
            return
        self._host.num_timesteps += 1
        callback.update_locals({"infos": [info], "dones": np.array([done])})
        callback.on_step()

    def _decide(self, bar: Bar, row: int, obs: npt.NDArray[np.float32], *, first: bool) -> None:
        quote = self.feed.quote()
        self._check_daily_loss(bar, quote)
        action, self._policy_state = self.policy.predict(
            obs, state=self._policy_state, episode_start=np.array([first]), deterministic=True
        )
        target = self._table.target_of(action)
        limit = self.risk.max_position
        if limit is not None:
            target = min(max(target, -limit), limit)
        if self._halted:
            target = 0.0
        if quote is None:
            log.warning("no quote after the bar at %s: decision not sent", _iso(bar.time_ns))
            return
        ex = self.core.execute(
            target,
            time_ns=quote.time_ns,
            price=quote.price,
            volume=quote.volume,
            decision_time_ns=bar.time_ns,
            decision_row=row,
        )
        p = self._pending
        self._pending = Execution(
            p.orders + ex.orders, p.trades + ex.trades, p.errors + ex.errors, p.vetoed + ex.vetoed
        )

    def _check_daily_loss(self, bar: Bar, quote: Any) -> None:
        limit = self.risk.daily_loss
        if limit is None or self._halted:
            return
        day = bar.time_ns // DAY_NS
        equity = self.book.equity
        if day != self._day:
            self._day = day
            self._day_equity = equity
            return
        if equity >= self._day_equity * (1.0 - limit):
            return
        self._halted = True
        log.warning(
            "kill switch: equity %.2f is %.1f%% below the day's start %.2f; closing, no more orders",
            equity,
            100.0 * (1.0 - equity / self._day_equity),
            self._day_equity,
        )
        if quote is not None:
            self._pending = self.core.close_position(
                EXIT_RISK_LIMIT,
                time_ns=quote.time_ns,
                price=quote.price,
                volume=quote.volume,
                decision_time_ns=bar.time_ns,
            )

    # --- status -------------------------------------------------------------------------------------------
    @property
    def halted(self) -> bool:
        """The daily-loss kill switch fired."""
        return self._halted

    def status(self) -> str:
        """One line: time, position, equity and PnL, the last decision and the learned rules applied."""
        if self._lifecycle is RunnerState.NEW:
            return "live runner not built"
        book = self.book
        equity = book.equity
        initial = self.settings.initial_cash
        pnl = equity - initial
        rules = ", ".join(self.last_rules) or "none"
        when = _iso(self.last_time_ns) if self.last_time_ns else "-"
        kill = " | KILL SWITCH" if self._halted else ""
        return (
            f"{self.spec.symbol} {when} bars {self.bars} | position {book.qty:g} "
            f"(exposure {book.exposure:+.2f}) "
            f"| equity {equity:.2f} pnl {pnl:+.2f} ({pnl / initial:+.2%}) | last {self.last_decision} "
            f"| rules {rules}{kill}"
        )


def _iso(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC).isoformat(timespec="minutes")
