"""``LiveRunner``: the replay's loop driven by a live bar feed (asyncio), restart-safe, explicit lifecycle.

``build() -> run() -> stop()``, as NautilusTrader's nodes: :meth:`LiveRunner.build` makes the account,
broker, trading core, learned order hook and learning feed, checks the feature schema and restores the
checkpoint of ``state_dir``; :meth:`LiveRunner.run` connects (:meth:`LiveRunner.connect`), then iterates
the feed's closed bars until the feed ends, :meth:`LiveRunner.stop` is called, SIGINT/SIGTERM arrives
or ``max_bars`` new bars were traded; :meth:`LiveRunner.stop` flushes the learning manager's state (it
is idempotent and also runs when ``run`` ends). Calling them out of order raises a
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
   to the broker at the feed's current quote.

**Brokers.** A synchronous :class:`~envs.broker.Broker` (the default :class:`~envs.live.PaperBroker`)
runs the replay's code path unchanged (``TradingCore.execute``), so paper results equal the replay's
bit for bit. An :class:`~envs.broker.AsyncBroker` (:class:`~envs.exchange.ExchangeBroker`) is awaited:
:meth:`LiveRunner.connect` takes the exchange's lot step, minimum quantity, minimum notional and price
tick where they differ from the bundle's (with a warning; the cost model stays the bundle's), books the
orders the exchange already has (below) and adopts the exchange's balances, logging any difference;
per decision ``TradingCore.plan`` -> ``await broker.submit`` -> ``TradingCore.book`` (the same
arithmetic), and after every fill the exchange's balances are adopted again (a buy's commission may be
charged in the base asset). A transient failure (rate limit, timeout, 5xx, network) is retried within
the bar as the learned resolution says (see :meth:`LiveRunner._submit_with_retries` and
:class:`RetryPolicy`; wall-time back-off between attempts, every attempt fed to the error learner, the
retried attempts reported in ``info["retries"]``). An attempt whose fate a failure left open is looked
up several times before anything else is sent; if the exchange cannot be asked, the order stays logged
as sent, no new order goes out, and it is settled (booked, or void if the exchange never had it) at the
next bar or at restart. A balance fetch that fails after a fill is repeated at the next bar.

**Backlog.** After a pause a live feed yields the bars that closed meanwhile in a burst
(``feed.backlog > 0`` while the bar is not the newest): those bars are marked, extend the history and
are learned from, but only the newest is decided on; one warning says how many were not traded.

**Restart safety** (with ``state_dir``, see :mod:`agents.runner_state`). After every bar and every
booked order a checkpoint is committed: the account (cash, position, average price, the open trade and
its entry snapshot), the last bar processed and the last decided, step and bar counts, the order-id
sequence, the events still to report, the risk limits' day, day equity and kill switch, the hook's
pauses and events, and the learning feed's pending resolution and veto bookkeeping. With online
learning it is committed in the same SQLite transaction as the learning of the bar and the manager is
flushed every bar, so learning and checkpoint never disagree. Every order is logged before it leaves
and marked booked with the broker's answer after. On restart the runner restores the checkpoint, takes
bars it already processed only into its history, books the logged-but-unbooked orders the broker knows
(``known(client id)``: the fill is recorded and fed to the learner at the next bar), and decides again a
bar whose decision was interrupted when that bar is still the newest (same features, observation and
deterministic client order ids, so nothing is sent twice; an id the exchange never received is sent
again); if newer bars have closed meanwhile, its unsent orders are void. A paper restart: the paper
exchange lives in the runner's process, so its account is the checkpoint's and an order in flight at
the crash died with it; replaying the same data re-decides that bar and sends the order again at the
same quote, which gives exactly the uninterrupted run.

Market time comes from bar timestamps only; the wall clock paces network retries and the status log.

Not supported yet: ``observation_features`` (learned features in the observation), baselines as live
policies, recurrent policies' hidden state across a restart (it starts afresh), in-bar retries with a
synchronous broker (paper faults are learned from as in replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import secrets
import shutil
import signal
import string
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from agents.bundle import EnvSettings
from agents.callbacks import LearningCallback
from agents.experience_clock import ExperiencedMarketClock
from agents.hooks import (
    DEFAULT_BACKOFF_BARS,
    DEFAULT_REDUCE_FACTOR,
    DEFAULT_SKIP_BARS,
    HookEvent,
    LearnedOrderHook,
)
from agents.policies import Policy
from agents.runner_state import SENT, RunnerStore, SentOrder, decode_record, encode_record
from agents.switches import LearningSwitches
from agents.wrappers import INFO_CONDITIONS, INFO_EVENTS, INFO_VERSION
from envs.broker import AccountSnapshot, AsyncBroker, Broker, OrderIntent, Quote
from envs.clock import DAY_NS
from envs.core import Execution, StepResult, TradingCore
from envs.errors import COUNTER_MAX, ConfigError, RetryableBrokerError, StateError, saved_int
from envs.events import ErrorEvent, ErrorKind, OrderResult, OrderStatus, Side
from envs.features import DEFAULT_CLIP, FeatureConfig, NormalizationStats, compute_features, min_rows
from envs.live import Bar, BarFeed, PaperBroker
from envs.market import MarketSpec
from envs.portfolio import EXIT_SIGNAL, Portfolio, PortfolioConfig
from envs.replay import CONTINUOUS, MarketData, build_observation, step_info
from learning.error_patterns import Resolution

if TYPE_CHECKING:
    import pandas as pd

    from agents.bundle import Bundle
    from learning.manager import UniversalLearningManager
    from learning.state import LearnedState

__all__ = [
    "DEFAULT_MAX_HISTORY",
    "EXIT_RISK_LIMIT",
    "INFO_RETRIES",
    "LiveRunner",
    "Policy",
    "RetryPolicy",
    "RiskLimits",
    "RunnerState",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_HISTORY: Final = 4096
"""Bars of history the features are computed over (recursive indicators have converged long before)."""
HISTORY_FACTOR: Final = 3
"""``max_history`` must be at least this many times :func:`envs.features.min_rows` of the features."""
EXIT_RISK_LIMIT: Final = "risk_limit"
EXIT_DUST: Final = "dust"
"""Exit reason of a trade whose remainder below the lot step is closed after its last order."""
INFO_RETRIES: Final = "retries"
"""``info`` key of the failed attempts retried within the previous decision (already fed to the learner)."""
_EXCHANGE_RULES: Final = ("min_qty", "qty_step", "min_notional", "price_tick")
# Row keys of snapshots restored from a checkpoint (no bar's row ever reaches them): the open trade's
# entry, and the last processed bar (the decision an order booked at restart was made on).
_RESTORED_ROW: Final = 2**62
_RESTORED_DECISION_ROW: Final = 2**62 + 1
_SET_STATE: Final = "set_learned_state"
_APPLY_RESOLUTION: Final = "apply_resolution"
_NOTHING: Final = Execution((), (), (), ())
MAX_CLIENT_ID_CHARS: Final = 36
"""Binance's limit on a client order id (``^[.A-Z:/a-z0-9_-]{1,36}$``), the strictest of the venues."""
_CLIENT_ID: Final = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_TOKEN_CHARS: Final = string.ascii_lowercase + string.digits
TOKEN_CHARS: Final = 4
"""Length of the random per-state token in client order ids (36**4, 1.7 million, values)."""
_SYMBOL_ID_CHARS: Final = 12  # envs.core keeps this many characters of the symbol in an id
_MS_DIGITS: Final = 13  # a millisecond timestamp until the year 2286
_SEQ_DIGITS: Final = 1  # orders per decision: the kill switch's close and the policy's order
_FILLED = OrderStatus.FILLED
_REJECTED = OrderStatus.REJECTED


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Live risk limits (both off by default; neither exists in replay, so parity runs leave them off).

    Attributes:
        max_position: cap on the absolute target exposure (fraction of equity, before leverage).
        daily_loss: kill switch: when equity falls this fraction below the UTC day's first equity, the
            position is closed (reduce-only, exit reason ``"risk_limit"``) and no further orders are
            sent; bars are still marked and learned from. It does not reset at the next UTC day, and
            the switch is part of the checkpoint, so a restart with the same state directory stays
            halted (a new state directory starts afresh).
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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """In-bar retries of orders an asynchronous broker reports as transiently failed (rate limit,
    timeout, maintenance or 5xx, network).

    Attributes:
        max_attempts: attempts per order, the first included (1: never retry).
        backoff_seconds: wall time waited before the first retry, doubled before each further one (a
            network wait: it never enters trading or learning logic).
        max_backoff_seconds: cap on one wait.
        lookups: how many times the exchange is asked about an order whose fate a failure left open
            (timeout, 5xx, network, "execution status unknown"), with the same back-off between the
            questions: the order counts as absent (and is sent again under a new id) only when the
            exchange, asked all these times, answered "unknown order" to the last question and to at
            least one other (a request that timed out may still reach the matching engine a little
            later); when the
            questions themselves keep failing, its fate stays unknown and the order is left to the next
            bar (nothing is sent meanwhile).
    """

    max_attempts: int = 3
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0
    lookups: int = 4

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ConfigError(
                f"max_attempts={self.max_attempts!r} must be an integer >= 1", where="retry", fix="e.g. 3"
            )
        if isinstance(self.lookups, bool) or not isinstance(self.lookups, int) or self.lookups < 1:
            raise ConfigError(
                f"lookups={self.lookups!r} must be an integer >= 1", where="retry", fix="e.g. 4"
            )
        for name in ("backoff_seconds", "max_backoff_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"{name}={value!r} must be >= 0", where="retry", fix="e.g. 0.5")

    def wait(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        return float(min(self.backoff_seconds * 2.0 ** (retry - 1), self.max_backoff_seconds))


class _Fate(Enum):
    """What the exchange says about an order whose request failed ambiguously."""

    FOUND = "found"
    ABSENT = "absent"
    UNKNOWN = "unknown"


class _Submitted(NamedTuple):
    """What :meth:`LiveRunner._submit_with_retries` ends with."""

    result: OrderResult
    retries: tuple[OrderResult, ...]
    fed: bool
    """The final result's error was already fed to the learner."""
    unknown: bool = False
    """The last attempt's fate is unknown (the exchange could not be asked): nothing is booked."""
    sent_id: str = ""
    chosen: tuple[str, Resolution] | None = None


class _Decision(NamedTuple):
    """A closed bar the policy decides on: the bar, its row and its observation."""

    bar: Bar
    row: int
    obs: npt.NDArray[np.float32]
    first: bool
    resumed: bool = False


class _AwaitedBroker:
    """Stands in the trading core for an asynchronous broker, which the runner awaits itself."""

    def submit(self, order: OrderIntent, quote: Quote) -> OrderResult:
        raise ConfigError(
            "an asynchronous broker was called synchronously", where="LiveRunner", fix="report a bug"
        )


def _merge(a: Execution, b: Execution) -> Execution:
    return Execution(a.orders + b.orders, a.trades + b.trades, a.errors + b.errors, a.vetoed + b.vetoed)


class LiveRunner:
    """Trades one symbol from a bar feed with a policy, the learned state and the learning manager.

    Args:
        feed: the closed-bar feed (its back-fill warms the features up; a feed with an ``async start()``
            is started by :meth:`connect`).
        policy: the decision maker (an SB3 model; ``predict(obs, deterministic=True)``).
        spec: the market's rules and costs.
        features: the feature config the policy was trained on.
        normalization: the training split's observation statistics.
        env: the trading options of the replay env the policy was trained in.
        switches: the learning switches (``observation_features`` is not supported live yet).
        manager: the learning manager, for ``switches.online`` (the runner does not close it).
        state: the learned snapshot to apply frozen when ``switches.online`` is false.
        broker: where orders go: a :class:`~envs.broker.Broker` (default: a
            :class:`~envs.live.PaperBroker` over the runner's account) or an
            :class:`~envs.broker.AsyncBroker` (an exchange).
        risk: live risk limits.
        id_prefix: first part of the client order ids, followed by a short random token of the state
            directory: ids are ``<prefix><token>-<symbol>-<decision ms>-<n>`` (``-r<k>`` for retries).
            The token is drawn at the first start and kept in the checkpoint, so a restarted runner
            sends the same ids (the exchange deduplicates them), while two runners on one account and
            symbol (two bundles, two timeframes) never share an id. With an exchange, the ids must fit
            Binance's 36 characters: :meth:`build` refuses a prefix that makes them too long.
        id_token: the token itself (tests; ``None``: the checkpoint's, else a fresh random one). A
            checkpoint's token always wins over this one.
        max_history: bars the features are computed over.
        status_every: log the status line every this many bars (0: never).
        state_dir: where the checkpoint and the order log go (see :mod:`agents.runner_state`); ``None``
            runs without them (not restart-safe).
        retry: in-bar retries of transient failures (asynchronous brokers).
        max_bars: :meth:`run` stops after this many new bars (0: when the feed ends or on a signal).
        capital: exchange only: the quote cash the runner may use (default: the bundle's initial cash).
            At a fresh start (no checkpoint) the runner's cash is the smaller of the exchange's quote
            balance and ``capital``; afterwards it is what the runner booked, never more than the
            exchange holds: quote money that arrives on the account later is not imported (a
            commission charged in the base asset is the one correction: the runner booked it in quote
            currency, so the booked amount comes back to its cash while the base quantity shrinks).
        adopt_position: exchange only: at a fresh start, take a base-asset holding the account already
            has (worth at least the market's minimum notional) as the runner's position. Without it the
            runner refuses to start: the policy would trade that holding (sell it when it wants to be
            flat). The base asset on the account is always counted as the runner's position: give a
            runner an account (or sub-account) whose base asset only it trades.
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
        broker: Broker | AsyncBroker | None = None,
        risk: RiskLimits | None = None,
        id_prefix: str = "live",
        id_token: str | None = None,
        max_history: int = DEFAULT_MAX_HISTORY,
        status_every: int = 0,
        state_dir: Path | None = None,
        retry: RetryPolicy | None = None,
        max_bars: int = 0,
        capital: float | None = None,
        adopt_position: bool = False,
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
        self._given_token = id_token
        self.max_history = max_history
        self.status_every = status_every
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.retry = retry or RetryPolicy()
        if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 0:
            raise ConfigError(
                f"max_bars={max_bars!r} must be an integer >= 0", where="--max-bars", fix="e.g. 100"
            )
        self.max_bars = max_bars
        if capital is not None and not (
            isinstance(capital, int | float) and not isinstance(capital, bool) and math.isfinite(capital)
            and capital > 0.0
        ):  # fmt: skip
            raise ConfigError(f"capital={capital!r} must be > 0", where="--capital", fix="e.g. 1000")
        self.capital = capital
        self.adopt_position = adopt_position
        self._given_state = state
        self._given_broker = broker
        self._owned: list[Any] = []  # closed by stop() (a manager opened by from_bundle, the runner store)
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
        The runner's checkpoint and order log go to ``state_dir`` too.
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
        try:
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
                state_dir=state_dir,
                **kwargs,
            )
        except BaseException:
            if manager is not None:
                manager.close()
            raise
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

    @property
    def is_async(self) -> bool:
        """Whether orders go to an :class:`~envs.broker.AsyncBroker` (awaited, with in-bar retries)."""
        return self._async

    def build(self) -> LiveRunner:
        """Make the account, broker, core, hook and learning feed; check the feed against the bundle;
        restore the checkpoint of ``state_dir`` when there is one."""
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
        self._portfolio_config = PortfolioConfig(
            initial_cash=s.initial_cash,
            allow_short=s.allow_short,
            leverage=s.leverage,
            borrow_rate=s.borrow_rate,
        )
        self._callback: LearningCallback | None = None
        feeding = switches.enabled and switches.online and self.manager is not None
        self._store: RunnerStore | None = None
        if self.state_dir is not None:
            if feeding:
                self._store = RunnerStore.with_learning(cast("UniversalLearningManager", self.manager))
            else:
                self._store = RunnerStore.open(self.state_dir)
                self._owned.append(self._store)
        checkpoint = self._store.load_checkpoint() if self._store is not None else None
        if checkpoint is not None and checkpoint.get("symbol") != spec.symbol:
            raise StateError(
                f"the state directory holds a runner of {checkpoint.get('symbol')!r}, not {spec.symbol!r}",
                where=str(self.state_dir),
                fix="give each symbol its own --state-dir",
            )
        broker = self._given_broker
        venue = "paper" if broker is None else type(broker).__name__
        if checkpoint is not None and checkpoint.get("venue") != venue:
            raise StateError(
                f"the state directory holds a runner that traded through {checkpoint.get('venue')!r}, "
                f"not {venue!r}",
                where=str(self.state_dir),
                fix="give paper and exchange runs their own --state-dir",
            )
        self._venue = venue
        if checkpoint is not None:
            self.id_token = str(checkpoint.get("id_token", ""))  # older checkpoints: no token
        elif self._given_token is not None:
            self.id_token = self._given_token
        else:
            self.id_token = "".join(secrets.choice(_TOKEN_CHARS) for _ in range(TOKEN_CHARS))
        self._check_ids(isinstance(broker, AsyncBroker))
        self._snapshots: OrderedDict[int, dict[str, dict[str, float]]] = OrderedDict()
        if checkpoint is None:
            self.book = Portfolio(spec.symbol, self._portfolio_config, snapshot=self._snapshot_of)
        else:
            self.book = self._restore_book(checkpoint)
        self._async = isinstance(broker, AsyncBroker)
        self.broker: Broker | AsyncBroker = broker if broker is not None else PaperBroker(spec, self.book)
        self.hook: LearnedOrderHook | None = None
        if switches.enabled:
            cost = spec.taker_fee + (spec.spread_bps / 2.0 + spec.slippage_bps) / 1e4
            self.hook = LearnedOrderHook(
                switches, None, qty_step=spec.qty_step, leverage=s.leverage, cost_rate=cost
            )
        self.core = TradingCore(
            spec,
            self.book,
            _AwaitedBroker() if self._async else cast("Broker", self.broker),
            rebalance_band=s.rebalance_band,
            order_hook=self.hook,
            id_prefix=self.id_prefix + self.id_token,
        )
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
        self._schema_checked = False
        self._started = False
        self._pending = _NOTHING
        self._retries: tuple[OrderResult, ...] = ()
        self._step = 0
        self._policy_state: Any = None
        self._halted = False
        self._day = -1
        self._day_equity = s.initial_cash
        self._initial_equity: float | None = s.initial_cash
        self._done_ns = -1  # the last bar processed (restart: bars up to it only extend the history)
        self._decided_ns = -1  # the last bar whose decision is complete
        self._connected = False
        self._unsettled: dict[str, tuple[SentOrder, int]] = {}  # orders whose fate is unknown, their row
        self._adopt_due: tuple[str, float] | None = None  # a fill whose balances are not fetched yet
        self._stale = 0  # backlog bars learned from but not traded, not yet reported
        self._stale_ns = 0  # the last of them
        self._skipping = False
        self._row_map: dict[int, int] = {}  # rows of the checkpoint -> rows of this process
        self.last_decision = "none yet"
        self.last_rules: tuple[str, ...] = ()
        self.last_time_ns = 0
        self.bars = 0
        if checkpoint is not None:
            self._restore(checkpoint)
        if not self._async and self._store is not None:
            for logged in self._store.unbooked():
                self._reconcile_sync(logged)
        if not callable(getattr(self.feed, "start", None)):
            self._load_history()
        self._lifecycle = RunnerState.BUILT
        if not self._async:
            decision = self._resume_at_start()
            if decision is not None:
                self._decide(decision)
        return self

    def _check_ids(self, exchange: bool) -> None:
        """Refuse an id prefix that makes client order ids invalid (or, on an exchange, too long)."""
        first = self.id_prefix + self.id_token
        retry = len(f"-r{self.retry.max_attempts - 1}") if self.retry.max_attempts > 1 else 0
        symbol = min(len(re.sub(r"[^A-Za-z0-9]", "", self.spec.symbol)), _SYMBOL_ID_CHARS) or 1
        longest = len(first) + 1 + symbol + 1 + _MS_DIGITS + 1 + _SEQ_DIGITS + retry
        if not first or "-" in first or not _CLIENT_ID.fullmatch(first):
            raise ConfigError(
                f"id prefix {self.id_prefix!r} is not usable in client order ids",
                where="--id-prefix",
                fix="letters, digits, '.', ':', '/' or '_' (no '-'), e.g. 'live'",
            )
        if exchange and longest > MAX_CLIENT_ID_CHARS:
            room = len(self.id_prefix) - (longest - MAX_CLIENT_ID_CHARS)
            raise ConfigError(
                f"id prefix {self.id_prefix!r} makes client order ids up to {longest} characters long "
                f"(the exchange allows {MAX_CLIENT_ID_CHARS}: prefix, {len(self.id_token)}-character "
                f"token, symbol, decision time, number and retry suffix)",
                where="--id-prefix",
                fix=f"use a prefix of at most {max(room, 0)} characters"
                if room >= 0
                else "use an empty prefix and fewer retry attempts",
            )

    async def connect(self) -> None:
        """Start the feed (back-fill) and the broker (market rules, order and balance reconciliation).

        :meth:`run` calls it; call it yourself only to drive :meth:`process` by hand. With an
        :class:`~envs.broker.AsyncBroker`: the exchange's lot step, minimum quantity, minimum notional
        and price tick replace the bundle's where they differ (a warning names them); orders logged as
        sent but never booked are looked up by client order id and booked when the exchange has them;
        then the exchange's balances are adopted (a warning shows any difference from the checkpoint).
        """
        self._expect("connect", RunnerState.BUILT, RunnerState.RUNNING, fix="build() the runner first")
        if self._connected:
            return
        start = getattr(self.feed, "start", None)
        if callable(start):
            await start()
            self._load_history()
        if self._async:
            broker = cast("AsyncBroker", self.broker)
            self._use_exchange_rules(await broker.start())
            fees = 0.0  # commissions of buys booked now (see _adopt)
            if self._store is not None:
                for logged in self._store.unbooked():
                    fate, found = await self._settle(logged.sent_id, logged.intent, logged.quote)
                    cid = logged.intent.client_order_id
                    if found is not None:
                        self._book_logged(logged, found)
                        fees += _buy_fee(found) if found.filled else 0.0
                    elif fate is _Fate.UNKNOWN:
                        log.warning(
                            "order %s, sent before the restart: the exchange cannot be asked about it; "
                            "no order is sent until it can",
                            logged.sent_id,
                        )
                        self._unsettled[cid] = (logged, self._row_map.get(logged.decision_row, -1))
                    elif logged.intent.decision_time_ns <= self._decided_ns:
                        log.warning(
                            "order %s (sent as %s) never reached the exchange: void", cid, logged.sent_id
                        )
                        self._store.mark_void(cid)
            self._adopt(await broker.account(), fee=fees)
        self._connected = True
        log.info("live runner connected: %s", self.status())
        if self._async:
            decision = self._resume_at_start()
            if decision is not None:
                await self._decide_async(decision)

    async def run(self) -> None:
        """Trade every closed bar of the feed until it ends, :meth:`stop` is called, or SIGINT/SIGTERM.

        Always ends with :meth:`stop` (learning state flushed; the broker's connection closed).
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
        stop_wait = asyncio.ensure_future(self._stop_event.wait())
        try:
            await self.connect()
            first_bar = self.bars
            bars = self.feed.bars().__aiter__()
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
                await self.process(bar)
                if bar.last or (self.max_bars and self.bars - first_bar >= self.max_bars):
                    break
        finally:
            stop_wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_wait
            for sig in handled:
                loop.remove_signal_handler(sig)
            try:
                await self._close_connections()
            finally:
                self.stop()

    async def _close_connections(self) -> None:
        for owner in (self.broker if self._async else None, self.feed):
            close = getattr(owner, "close", None)
            if callable(close):
                result = close()
                if asyncio.iscoroutine(result):
                    await result

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
    def _load_history(self) -> None:
        history = self.feed.history()
        self._append_frame(history)
        if len(history) >= min_rows(self.feature_config):
            self._check_schema(compute_features(self._frame(), self.feature_config))

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
        return build_observation(flat, row, len(md.features.columns), self.settings.window, self.core)

    # --- one bar --------------------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> dict[str, Any] | None:
        """Process one closed bar with a synchronous broker (``run`` calls :meth:`process`; tests may
        call this). Returns the step's ``info`` (``None`` for warm-up bars and bars already processed
        before a restart)."""
        self._expect("on_bar", RunnerState.BUILT, RunnerState.RUNNING, fix="build() the runner first")
        if self._async:
            raise ConfigError(
                "on_bar() drives synchronous brokers only",
                where="LiveRunner.on_bar",
                fix="await runner.process(bar) after await runner.connect(), or run() the runner",
            )
        info, decision = self._process(bar)
        decision = self._unless_stale(decision)
        if decision is not None:
            self._decide(decision)
        return info

    def _unless_stale(self, decision: _Decision | None) -> _Decision | None:
        """``decision`` if its bar is the newest the feed has; ``None`` for a bar of a backlog.

        After a pause (a network outage, a slow restart) a live feed yields the bars that closed
        meanwhile one after the other; their quotes are the next candle's open, long past. Those bars
        are marked, extend the history and are learned from, but only the newest is decided on (one
        order at the market now, not one per missed bar). A replayed feed has no backlog.
        """
        if decision is None:
            return None
        if getattr(self.feed, "backlog", 0) > 0:
            if self._stale == 0:
                log.warning(
                    "catching up on bars that closed while the runner was away: trading only the newest"
                )
            self._stale += 1
            self._stale_ns = decision.bar.time_ns
            self._decided(decision.bar.time_ns)
            return None
        if self._stale:
            log.warning(
                "%d stale bar(s) up to %s were learned from but not traded",
                self._stale,
                _iso(self._stale_ns),
            )
            self._stale = 0
        return decision

    async def process(self, bar: Bar) -> dict[str, Any] | None:
        """Process one closed bar (what :meth:`run` does per bar); returns the step's ``info``."""
        self._expect("process", RunnerState.BUILT, RunnerState.RUNNING, fix="build() the runner first")
        if not self._connected:
            await self.connect()
        if self._async:
            if self._unsettled:
                await self._settle_unsettled()
            if self._adopt_due is not None:
                await self._adopt_after(*self._adopt_due)
        info, decision = self._process(bar)
        decision = self._unless_stale(decision)
        if decision is not None:
            if self._async:
                await self._decide_async(decision)
            else:
                self._decide(decision)
        return info

    def _process(self, bar: Bar) -> tuple[dict[str, Any] | None, _Decision | None]:
        if bar.time_ns <= self._done_ns:
            # Processed before the restart: it only extends the history (and may resume its decision).
            if not self._skipping:
                self._skipping = True
                log.info(
                    "bars up to %s were traded before the restart (checkpoint in %s): skipping them",
                    _iso(self._done_ns),
                    self.state_dir,
                )
            self._append(bar)
            if bar.time_ns == self._done_ns and self._decided_ns < self._done_ns:
                return None, self._resume_decision(bar)
            return None, None
        if self._decided_ns < self._done_ns:
            self._abandon_decision()
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
        retries, self._retries = self._retries, ()
        market = self._market()
        if market is None:
            if self._started:  # pragma: no cover - features stay ready once they are
                raise ConfigError("features stopped being ready", where="LiveRunner", fix="report a bug")
            return None, None
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
            if self._initial_equity is None:
                self._initial_equity = self.book.equity
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
        if retries:
            info[INFO_RETRIES] = retries
        self.last_rules = tuple(
            f"{e.reason.value}{'(' + ','.join(e.rule_ids) + ')' if e.rule_ids else ''}" for e in events
        )
        if result is not None and result.orders:
            o = result.orders[-1]
            state = "filled" if o.filled else f"{o.status.value}: {o.message}"
            self.last_decision = f"{o.side.value} {o.requested_qty:g} @ {o.price:.6g} {state}"
        store = self._store
        if store is None:
            self._learn(info, first=first, done=bar.last)
        if self.keep_infos and not first:
            self.infos.append(info)
        self._snapshots[row] = groups
        if self.book.qty == 0.0:
            # Entry snapshots are read when a trade closes; flat, no open trade needs the older ones.
            for old in [r for r in self._snapshots if r != row]:
                del self._snapshots[old]
        self._started = True
        self._done_ns = bar.time_ns
        if bar.last:
            self._decided_ns = bar.time_ns
        if store is not None:
            # The bar's learning and the checkpoint that says it was learned commit together.
            with store.transaction():
                self._learn(info, first=first, done=bar.last)
                if self._callback is not None and self._callback.feeding and self.manager is not None:
                    self.manager.flush()
                self._save_checkpoint()
        if self.status_every and self.bars % self.status_every == 0:
            log.info("%s", self.status())
        if bar.last:
            return info, None
        return info, _Decision(bar, row, cast("npt.NDArray[np.float32]", obs), first)

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

    # --- deciding -------------------------------------------------------------------------------------
    def _target(self, d: _Decision) -> float:
        action, self._policy_state = self.policy.predict(
            d.obs, state=self._policy_state, episode_start=np.array([d.first]), deterministic=True
        )
        target = self._table.target_of(action)
        limit = self.risk.max_position
        if limit is not None:
            target = min(max(target, -limit), limit)
        if self._halted:
            target = 0.0
        return target

    def _close_intent(self, quote: Quote, decision_ns: int) -> OrderIntent | None:
        """The kill switch's reduce-only close, as :meth:`TradingCore.close_position` builds it."""
        intent, _ = self.core.plan(0.0, quote.time_ns, quote.price, quote.volume, decision_ns)
        return None if intent is None else intent._replace(reduce_only=True)

    def _quote(self, d: _Decision) -> Quote | None:
        """The feed's quote; for a decision resumed at start before the feed has one (a live feed quotes
        once it yields a bar), the decision bar's close at its close time, as a feed quotes a bar
        whose successor has not opened yet."""
        quote = self.feed.quote()
        if quote is None and d.resumed and len(self._times) >= 2:
            quote = Quote(d.bar.time_ns + self._times[-1] - self._times[-2], d.bar.close, math.nan)
        return quote

    def _decide(self, d: _Decision) -> None:
        bar = d.bar
        quote = self._quote(d)
        store = self._store
        if self._daily_loss_fires(bar) and quote is not None:
            if store is None:
                self._pending = self.core.close_position(
                    EXIT_RISK_LIMIT,
                    time_ns=quote.time_ns,
                    price=quote.price,
                    volume=quote.volume,
                    decision_time_ns=bar.time_ns,
                )
            else:
                close = self._close_intent(quote, bar.time_ns)
                if close is not None:
                    self._send_sync(close, quote, -1, EXIT_RISK_LIMIT)
        target = self._target(d)
        if quote is None:
            log.warning("no quote after the bar at %s: decision not sent", _iso(bar.time_ns))
            self._decided(bar.time_ns)
            return
        if store is None:
            ex = self.core.execute(
                target,
                time_ns=quote.time_ns,
                price=quote.price,
                volume=quote.volume,
                decision_time_ns=bar.time_ns,
                decision_row=d.row,
            )
            self._pending = _merge(self._pending, ex)
            self._decided_ns = bar.time_ns
            return
        intent, vetoed = self.core.plan(target, quote.time_ns, quote.price, quote.volume, bar.time_ns)
        if intent is not None:
            self._send_sync(intent, quote, d.row, EXIT_SIGNAL)
        elif vetoed is not None:
            self._pending = _merge(self._pending, Execution((), (), (), (vetoed,)))
        self._decided(bar.time_ns)

    async def _decide_async(self, d: _Decision) -> None:
        bar = d.bar
        if self._unsettled:
            log.warning(
                "the fate of order(s) %s is unknown: no order for the bar at %s",
                ", ".join(self._unsettled),
                _iso(bar.time_ns),
            )
            self._decided(bar.time_ns)
            return
        quote = self._quote(d)
        if self._daily_loss_fires(bar) and quote is not None:
            close = self._close_intent(quote, bar.time_ns)
            if close is not None:
                await self._send_async(close, quote, -1, EXIT_RISK_LIMIT)
        target = self._target(d)
        if quote is None:
            log.warning("no quote after the bar at %s: decision not sent", _iso(bar.time_ns))
            self._decided(bar.time_ns)
            return
        intent, vetoed = self.core.plan(target, quote.time_ns, quote.price, quote.volume, bar.time_ns)
        if intent is not None:
            await self._send_async(intent, quote, d.row, EXIT_SIGNAL)
        elif vetoed is not None:
            self._pending = _merge(self._pending, Execution((), (), (), (vetoed,)))
        self._decided(bar.time_ns)

    def _decided(self, decision_ns: int) -> None:
        self._decided_ns = decision_ns
        if self._store is not None:
            self._save_checkpoint()

    def _daily_loss_fires(self, bar: Bar) -> bool:
        """The daily-loss kill switch (checked at every decision): whether it fires now."""
        limit = self.risk.daily_loss
        if limit is None or self._halted:
            return False
        day = bar.time_ns // DAY_NS
        equity = self.book.equity
        if day != self._day:
            self._day = day
            self._day_equity = equity
            return False
        if equity >= self._day_equity * (1.0 - limit):
            return False
        self._halted = True
        log.warning(
            "kill switch: equity %.2f is %.1f%% below the day's start %.2f; closing, no more orders",
            equity,
            100.0 * (1.0 - equity / self._day_equity),
            self._day_equity,
        )
        return True

    # --- sending, with the order log --------------------------------------------------------------------
    def _send_sync(self, intent: OrderIntent, quote: Quote, row: int, reason: str) -> None:
        """Log, send to the synchronous broker, book (a logged-and-booked id is not sent again)."""
        store = cast("RunnerStore", self._store)
        logged = store.get(intent.client_order_id)
        if logged is not None and logged.status != SENT:
            log.info(
                "order %s was %s before the restart; not sent again", intent.client_order_id, logged.status
            )
            return
        store.record_sent(intent, quote, row, reason)  # committed before the order leaves
        result = cast("Broker", self.broker).submit(intent, quote)
        self._book(intent.client_order_id, result, row, reason, intent.decision_time_ns)

    async def _send_async(self, intent: OrderIntent, quote: Quote, row: int, reason: str) -> None:
        """Log, send to the exchange with in-bar retries, book (see :meth:`_submit_with_retries`)."""
        store = self._store
        cid = intent.client_order_id
        logged = store.get(cid) if store is not None else None
        if logged is not None and logged.status != SENT:
            log.info("order %s was %s before the restart; not sent again", cid, logged.status)
            return
        if cid in self._unsettled:
            log.info("order %s: its fate is still unknown; not sent again", cid)
            return
        if store is not None and logged is None:
            store.record_sent(intent, quote, row, reason)  # committed before the order leaves
        sub = await self._submit_with_retries(intent, quote, logged)
        if sub.unknown:
            # Logged as sent, not booked: settled at the next bar (or by the restart's reconciliation).
            kept = store.get(cid) if store is not None else None
            if kept is None:
                kept = SentOrder(
                    intent, sub.sent_id, quote, row, reason, SENT, None, len(sub.retries) + 1,
                    sub.retries, None if sub.chosen is None else (sub.chosen[0], str(sub.chosen[1])),
                )  # fmt: skip
            self._unsettled[cid] = (kept, row)
            return
        self._retries += sub.retries
        result = sub.result
        self._book(cid, result, row, reason, intent.decision_time_ns, withhold_error=sub.fed)
        if result.filled:
            await self._adopt_after(result.order_id, _buy_fee(result))

    async def _adopt_after(self, order_id: str, fee: float = 0.0) -> None:
        """Adopt the exchange's balances after a fill (if it cannot be asked now: at the next bar)."""
        try:
            account = await cast("AsyncBroker", self.broker).account()
        except RetryableBrokerError as exc:
            log.warning(
                "cannot fetch the balances after order %s (%s): adopting them at the next bar",
                order_id,
                exc.problem,
            )
            self._adopt_due = (order_id, fee)
            return
        self._adopt_due = None
        self._adopt(account, after=order_id, fee=fee)

    async def _settle(
        self, client_order_id: str, intent: OrderIntent | None = None, quote: Quote | None = None
    ) -> tuple[_Fate, OrderResult | None]:
        """Ask the exchange what became of ``client_order_id`` (see :attr:`RetryPolicy.lookups`).

        ``FOUND`` with the exchange's answer as soon as it has the order. Otherwise the exchange is asked
        all :attr:`RetryPolicy.lookups` times, :meth:`RetryPolicy.wait` seconds apart (a request that
        timed out may still reach the matching engine a little later): ``ABSENT`` when the last answer
        and at least one more (or the only one, with one lookup) were "unknown order"; ``UNKNOWN`` when
        the exchange could not be asked often enough to tell.
        """
        broker = cast("AsyncBroker", self.broker)
        policy = self.retry
        need = min(2, policy.lookups)
        absent = 0
        last_absent = False
        for k in range(1, policy.lookups + 1):
            try:
                if intent is not None and _takes_intent(broker):
                    # The exchange's answer then carries the intent's side, size and slippage.
                    ask = cast("Any", broker.known)
                    found = await ask(
                        client_order_id, intent._replace(client_order_id=client_order_id), quote
                    )
                else:
                    found = await broker.known(client_order_id)
            except RetryableBrokerError as exc:
                log.warning("cannot ask the exchange about order %s (%s)", client_order_id, exc.problem)
                last_absent = False
            else:
                if found is not None:
                    return _Fate.FOUND, found
                absent += 1
                last_absent = True
            if k < policy.lookups:
                wait = policy.wait(k)
                if wait > 0.0:
                    await asyncio.sleep(wait)
        if last_absent and absent >= need:
            return _Fate.ABSENT, None
        return _Fate.UNKNOWN, None

    async def _settle_unsettled(self) -> None:
        """At a new bar: settle the orders whose fate was unknown (book them, or void them if absent)."""
        for cid, (logged, row) in list(self._unsettled.items()):
            fate, found = await self._settle(logged.sent_id, logged.intent, logged.quote)
            if fate is _Fate.UNKNOWN:
                continue
            del self._unsettled[cid]
            if found is not None:
                self._book_logged(logged, found, row=row)
                if found.filled:
                    await self._adopt_after(found.order_id, _buy_fee(found))
            else:
                log.warning(
                    "order %s (sent as %s) never reached the exchange: void, not sent again",
                    cid,
                    logged.sent_id,
                )
                if self._store is not None:
                    self._store.mark_void(cid)

    def _book(
        self,
        client_order_id: str,
        result: OrderResult,
        row: int,
        reason: str,
        decision_ns: int,
        *,
        withhold_error: bool = False,
    ) -> None:
        """Book the broker's answer into the account and the next step's events; checkpoint with it."""
        ex = self.core.book(result, decision_row=row, exit_reason=reason)
        if withhold_error:
            # The runner fed this error to the learner when it chose the retry resolution.
            ex = ex._replace(errors=())
        self._pending = _merge(self._pending, ex)
        store = self._store
        if store is None:
            return
        if reason == EXIT_SIGNAL:
            self._decided_ns = max(self._decided_ns, decision_ns)
        with store.transaction():
            store.mark_booked(client_order_id, result)
            self._save_checkpoint()

    async def _submit_with_retries(
        self, intent: OrderIntent, quote: Quote, logged: SentOrder | None
    ) -> _Submitted:
        """Send ``intent``; retry transient failures within the bar as the learned resolution says.

        An attempt whose fate is open (a timeout, 5xx or network error; not a rate limit, which the
        exchange refused outright) is settled first by asking the exchange for its client order id: if
        it filled, that fill is the answer and nothing went wrong. Every other failed transient attempt
        is fed to the error learner (with online learning), which
        suggests a resolution: ``retry_with_backoff`` and ``resize_to_learned_minimum`` retry the same
        size, ``reduce_size`` retries with ``DEFAULT_REDUCE_FACTOR`` of it, ``skip_symbol`` and ``halt``
        stop retrying and pause entries through the hook. Before a retry the runner waits
        :meth:`RetryPolicy.wait` seconds of wall time (a network wait) and, unless the exchange refused
        the attempt outright (rate limit), asks whether it arrived after all (a timeout may have
        filled); each retry goes out under ``<client order id>-r<k>`` at the feed's fresh quote and is
        logged, with the resolution that chose it, before it is sent. The outcome of each retry is
        reported as the success or failure of that resolution; a resolution that stops retrying is
        reported on the next order, as in replay. ``logged`` resumes an order logged before a restart
        whose last attempt never reached the exchange (it is sent again under the same id).

        The question is asked :attr:`RetryPolicy.lookups` times at most (wall-time back-off between
        them): an attempt is sent again under a new id only once the exchange has said twice that it
        does not know the original; when the exchange cannot be asked (the lookups fail too), the
        order's fate is unknown: nothing more is sent and the order stays logged as sent, to be settled
        at the next bar (or by a restart's reconciliation).

        Returns the final result, the failed attempts retried before it, whether the final result's
        error was already fed to the learner, and whether the last attempt's fate is unknown.
        """
        broker = cast("AsyncBroker", self.broker)
        store = self._store
        cid = intent.client_order_id
        policy = self.retry
        manager = self.manager if self._callback is not None and self._callback.feeding else None
        choose = manager is not None and self.switches.error_resolutions
        current = intent
        retries: list[OrderResult] = []
        chosen: tuple[str, Resolution] | None = None
        if logged is not None:
            current = intent._replace(client_order_id=logged.sent_id, qty=logged.intent.qty)
            retries = list(logged.retries)
            if logged.chosen is not None and choose:
                chosen = (logged.chosen[0], Resolution(logged.chosen[1]))
        while True:
            result = await broker.submit(current, quote)
            kind = result.kind
            transient = not result.filled and kind is not None and kind.retryable
            if transient and kind is not ErrorKind.RATE_LIMIT:
                # A timeout, 5xx or dropped connection leaves the order's fate open: settle it first.
                fate, found = await self._settle(current.client_order_id, current, quote)
                if found is not None:
                    # The exchange has the order: its answer is the order's (filled or not).
                    log.info(
                        "order %s reached the exchange after all (%s)",
                        current.client_order_id,
                        found.status.value,
                    )
                    result, transient = found, False
                elif fate is _Fate.UNKNOWN:
                    log.warning(
                        "order %s failed (%s: %s) and the exchange cannot be asked about it: its fate is "
                        "unknown; not sent again, asked again at the next bar",
                        current.client_order_id,
                        kind,
                        result.message,
                    )
                    return _Submitted(result, tuple(retries), False, True, current.client_order_id, chosen)
            if manager is not None and chosen is not None:
                with self._transaction():
                    manager.record_resolution(chosen[0], chosen[1], result.filled, result.time_ns)
                chosen = None
            if not transient:
                return _Submitted(result, tuple(retries), False)
            attempt = len(retries) + 1
            resolution = Resolution.RETRY_WITH_BACKOFF
            signature = ""
            if manager is not None:
                book = self.book
                error = ErrorEvent.from_order(
                    result, position_qty=book.qty, equity=book.equity_at(result.price)
                )
                with self._transaction():
                    match = manager.learn_from_error(error)
                signature = match.signature
                if choose:
                    resolution = match.suggestion
            exhausted = attempt >= policy.max_attempts
            if exhausted or resolution in (Resolution.SKIP_SYMBOL, Resolution.HALT):
                log.warning(
                    "order %s failed (%s: %s); not retried (%s)",
                    current.client_order_id,
                    kind,
                    result.message,
                    "attempts exhausted" if exhausted else resolution.value,
                )
                if choose:
                    self.apply_resolution(str(resolution))
                    self._callback_pending_resolution(signature, resolution)
                return _Submitted(result, tuple(retries), manager is not None)
            retries.append(result)
            if choose:
                chosen = (signature, resolution)
            wait = policy.wait(attempt)
            log.info(
                "order %s failed (%s: %s); %s, retry %d in %.1fs",
                current.client_order_id,
                kind,
                result.message,
                resolution.value,
                attempt,
                wait,
            )
            if wait > 0.0:
                await asyncio.sleep(wait)
            qty = current.qty * DEFAULT_REDUCE_FACTOR if resolution is Resolution.REDUCE_SIZE else current.qty
            current = current._replace(client_order_id=f"{cid}-r{attempt}", qty=qty)
            quote = self.feed.quote() or quote
            if store is not None:
                store.record_retry(
                    cid,
                    current.client_order_id,
                    qty,
                    quote,
                    result,
                    None if chosen is None else (chosen[0], str(chosen[1])),
                )

    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        return self._store.transaction() if self._store is not None else contextlib.nullcontext()

    def _callback_pending_resolution(self, signature: str, resolution: Resolution) -> None:
        """Have the learning callback report ``resolution``'s outcome on the next order (as it does for
        the errors it feeds itself)."""
        if self._callback is not None and self._started:
            self._callback.feeder.expect_resolution_outcome(0, signature, resolution)

    # --- exchange start: rules, orders, balances ----------------------------------------------------------
    def _use_exchange_rules(self, exchange: MarketSpec) -> None:
        mine = self.spec
        if exchange.symbol != mine.symbol:
            raise ConfigError(
                f"the exchange answered for {exchange.symbol!r}, not {mine.symbol!r}",
                where="--symbol",
                fix=f"run the bundle on {mine.symbol!r}",
            )
        changed = {
            name: getattr(exchange, name)
            for name in _EXCHANGE_RULES
            if getattr(exchange, name) != getattr(mine, name)
        }
        if not changed:
            return
        log.warning(
            "the exchange's rules for %s differ from the bundle's (%s); trading with the exchange's",
            mine.symbol,
            ", ".join(f"{k} {getattr(mine, k):g} -> {v:g}" for k, v in changed.items()),
        )
        self.spec = dataclasses.replace(mine, **changed)
        self.core.spec = self.spec
        if self.hook is not None:
            self.hook.qty_step = self.spec.qty_step
        manager = self.manager
        if self._callback is not None and self._callback.feeding and manager is not None:
            with self._transaction():
                manager.seed_minimums([self.spec])

    def _adopt(self, account: AccountSnapshot, after: str | None = None, fee: float = 0.0) -> None:
        """Reconcile the account with the exchange's balances.

        The base quantity is the exchange's (at start and after every fill, ``after``: its client order
        id; ``fee``: that fill's commission in quote currency). The cash is ``min(exchange quote,
        capital)`` at a fresh start and afterwards what the runner booked, capped by the exchange's
        quote balance (unrelated money on the account is not imported). An exchange may charge a buy's
        commission in the base asset (Binance without BNB): it then holds a little less than the
        quantity filled while the runner booked the fee in quote currency; the shortfall's value (at
        most ``fee``) comes back to the cash, so the equity counts the fee once and the next sell fits
        what the exchange holds. A fresh start refuses a base holding worth the minimum notional
        unless ``adopt_position`` is set.
        """
        book = self.book
        price = book.last_price
        if price <= 0.0:
            quote = self.feed.quote()
            price = quote.price if quote is not None else (self._ohlcv[3][-1] if self._times else 0.0)
        spec = self.spec
        qty = account.qty
        if abs(qty) < max(spec.min_qty, spec.qty_step):
            qty = 0.0  # dust the exchange would not let us trade
        lot = max(spec.min_qty, spec.qty_step)
        if qty == 0.0 and 0.0 < abs(book.qty) < lot and book.to_state()["trade"] is not None and price > 0:
            self._close_dust(price)
        fresh = not self._started
        start = fresh and after is None
        if start and qty != 0.0 and abs(qty) * price >= spec.min_notional and not self.adopt_position:
            raise ConfigError(
                f"the exchange account already holds {qty:g} {spec.base or 'of the base asset'} (about "
                f"{abs(qty) * price:.2f} {spec.quote}) and this state directory has no checkpoint: the "
                "runner would adopt that holding as its own position and the policy would trade it "
                "(sell it whenever it wants to be flat)",
                where="--adopt-position",
                fix="move the holding to another account or sub-account, or pass --adopt-position to let "
                "the runner trade it",
            )
        if start:
            capital = self.capital if self.capital is not None else self.settings.initial_cash
            cash = min(float(account.cash), capital)
        else:
            refund = 0.0
            short = book.qty - qty
            if fee > 0.0 and short > 0.0 and price > 0.0:
                refund = min(fee, short * price)  # a buy's commission charged in the base asset
            cash = min(book.cash + refund, float(account.cash))
        same_cash = math.isclose(book.cash, cash, rel_tol=1e-9, abs_tol=1e-9)
        same_qty = math.isclose(book.qty, qty, rel_tol=1e-9, abs_tol=1e-12)
        if same_cash and same_qty:
            if after is None:
                log.info(
                    "account reconciled with the exchange: cash %.8g, %s %.8g",
                    book.cash,
                    spec.symbol,
                    book.qty,
                )
            return
        (log.info if fresh or after is not None else log.warning)(
            "%s%s: the exchange holds cash %.8g and position %.8g; the runner %s cash %.8g and position %.8g "
            "(difference cash %+.8g, position %+.8g): adopting the exchange's balances "
            "(the runner's cash: %.8g)",
            spec.symbol,
            "" if after is None else f" after order {after}",
            account.cash,
            qty,
            "starts with" if fresh else "had",
            book.cash,
            book.qty,
            account.cash - book.cash,
            qty - book.qty,
            cash,
        )
        state = book.to_state()
        state["cash"] = cash
        state["qty"] = float(qty)
        trade = state["trade"]
        if qty == 0.0:
            if trade is not None:
                log.warning(
                    "the open trade %s was closed outside the runner: no trade recorded", trade["trade_id"]
                )
            state["trade"] = None
        elif trade is not None and (trade["side"] > 0) is (qty > 0.0):
            trade["qty"] = abs(qty)
        else:
            when = self.feed.quote()
            time_ns = when.time_ns if when is not None else (self._times[-1] if self._times else 0)
            state["trade"] = {
                "trade_id": f"{self.id_prefix}{self.id_token}-adopted-{time_ns // 1_000_000}",
                "side": 1 if qty > 0.0 else -1,
                "entry_time_ns": time_ns,
                "entry_bar": self.core.bar_index,
                "entry_ref": -1,
                "qty": abs(qty),
                "avg_price": price,
                "fees": 0.0,
                "borrow": 0.0,
                "slices": 0,
            }
            if price <= 0.0:
                log.warning("no price known yet: the adopted position's entry price is 0")
        if book.last_price <= 0.0:
            state["last_price"] = price
        self.book = Portfolio.from_state(state, self._portfolio_config, snapshot=self._snapshot_of)
        self.core.portfolio = self.book
        if fresh and after is None:
            self._initial_equity = None  # measured at the first bar's close
            self._day_equity = self.book.equity
        if self._store is not None and self._started:  # before the first bar there is no checkpoint yet
            self._save_checkpoint()

    def _close_dust(self, price: float) -> None:
        """Close the open trade's remainder below the lot step at ``price`` (exit reason ``"dust"``).

        A buy's commission charged in the base asset leaves the exchange holding a little less than was
        bought; the closing sell is floored to the lot step, and the rest cannot be sold. The trade
        ends here, so its result reaches the learning manager with the next step.
        """
        book = self.book
        qty = abs(book.qty)
        when = self.feed.quote()
        time_ns = when.time_ns if when is not None else (self._times[-1] if self._times else 0)
        side = Side.SELL if book.qty > 0.0 else Side.BUY
        fill = OrderResult(
            "dust", self.spec.symbol, side, time_ns, qty, price, OrderStatus.FILLED, qty, 0.0, 0.0
        )
        trades = book.apply_fill(fill, bar_index=self.core.bar_index, exit_reason=EXIT_DUST)
        self._pending = _merge(self._pending, Execution((), trades, (), ()))
        log.info(
            "%s: %g left below the lot step after the closing order; trade closed at %.8g (dust)",
            self.spec.symbol,
            qty,
            price,
        )

    # --- restart ------------------------------------------------------------------------------------------
    def _reconcile_sync(self, logged: SentOrder) -> None:
        known = getattr(self.broker, "known", None)
        found = known(logged.sent_id) if callable(known) else None
        if found is not None:
            self._book_logged(logged, found)

    def _book_logged(self, logged: SentOrder, result: OrderResult, *, row: int | None = None) -> None:
        log.info(
            "order %s, sent before the restart, is known to the broker: booking it (%s)",
            logged.sent_id,
            result.status.value,
        )
        manager = self.manager if self._callback is not None and self._callback.feeding else None
        if manager is not None and logged.chosen is not None and self.switches.error_resolutions:
            with self._transaction():
                manager.record_resolution(
                    logged.chosen[0], Resolution(logged.chosen[1]), result.filled, result.time_ns
                )
        self._retries += logged.retries
        self._book(
            logged.intent.client_order_id,
            result,
            self._row_map.get(logged.decision_row, -1) if row is None else row,
            logged.exit_reason,
            logged.intent.decision_time_ns,
        )

    def _resume_at_start(self) -> _Decision | None:
        """The interrupted decision of the checkpoint's last bar, if that bar is the newest one known."""
        if self._decided_ns >= self._done_ns or not self._times:
            return None
        newest = self._times[-1]
        if newest < self._done_ns:
            return None  # a replayed feed will yield the bar again
        if newest > self._done_ns:
            self._abandon_decision()
            return None
        i = len(self._times) - 1
        o, h, lo, c, v = (values[i] for values in self._ohlcv)
        return self._resume_decision(Bar(newest, o, h, lo, c, v))

    def _resume_decision(self, bar: Bar) -> _Decision | None:
        """Decide the checkpoint's last bar again (same features, observation and order ids)."""
        market = self._market()
        if market is None:
            self._abandon_decision()
            return None
        md, local = market
        groups = md.snapshot(local)
        self._groups = groups
        row = self._rows - 1
        self._snapshots[row] = groups
        if self.hook is not None:
            self.hook.prepare(groups)
        log.info("resuming the decision of the bar at %s, interrupted by the restart", _iso(bar.time_ns))
        return _Decision(bar, row, self._observation(md, local), False, resumed=True)

    def _abandon_decision(self) -> None:
        """A newer bar closed before the interrupted decision could be resumed: its unsent orders are void."""
        store = self._store
        if store is not None:
            for logged in store.unbooked():
                if logged.intent.client_order_id in self._unsettled:
                    continue  # its fate is unknown: settled when the exchange can be asked
                log.warning(
                    "order %s never reached the exchange and its bar has passed: void, not sent",
                    logged.sent_id,
                )
                store.mark_void(logged.intent.client_order_id)
        self._decided(self._done_ns)

    def _save_checkpoint(self) -> None:
        store = cast("RunnerStore", self._store)
        book = self.book.to_state()
        trade = book["trade"]
        entry = None
        if trade is not None and trade["entry_ref"] >= 0:
            entry = self._snapshots.get(trade["entry_ref"])
        p = self._pending
        callback = self._callback
        cb: dict[str, Any] | None = None
        if callback is not None and self._started:
            feeder = callback.feeder
            cb = {
                **feeder.env_state(0),
                "counts": dict(callback.counts),
                "clock_ns": feeder.clock.now_ns(),
                "num_timesteps": self._host.num_timesteps,
            }
        hook = self.hook
        store.save_checkpoint(
            {
                "symbol": self.spec.symbol,
                "venue": self._venue,
                "id_token": self.id_token,
                "done_ns": self._done_ns,
                "decided_ns": self._decided_ns,
                "bars": self.bars,
                "step": self._step,
                "book": book,
                "entry_snapshot": entry,
                "last_row": self._rows - 1,
                "last_groups": self._groups,
                # The bar count and the order-id sequence of the decision in progress.
                "core": self.core.sequence_state(),
                "pending": {
                    "orders": [encode_record(r) for r in p.orders],
                    "trades": [encode_record(r) for r in p.trades],
                    "errors": [encode_record(r) for r in p.errors],
                    "vetoed": [encode_record(r) for r in p.vetoed],
                    "retries": [encode_record(r) for r in self._retries],
                },
                "risk": {"day": self._day, "day_equity": self._day_equity, "halted": self._halted},
                "hook": None
                if hook is None
                else {
                    "pause_bars": hook.pause_bars,
                    "size_factor": hook.size_factor,
                    "events": [encode_record(e) for e in hook.events],
                },
                "callback": cb,
                "status": {
                    "initial_equity": self._initial_equity,
                    "last_decision": self.last_decision,
                    "last_time_ns": self.last_time_ns,
                },
            }
        )

    def _restore_book(self, checkpoint: Mapping[str, Any]) -> Portfolio:
        state = dict(checkpoint["book"])
        trade = state.get("trade")
        entry = checkpoint.get("entry_snapshot")
        if trade is not None and entry is not None:
            # Rows are renumbered after a restart (the back-fill may differ): the entry snapshot gets a
            # row of its own that no new bar can reach.
            state["trade"] = {**trade, "entry_ref": _RESTORED_ROW}
            self._snapshots[_RESTORED_ROW] = entry
        return Portfolio.from_state(state, self._portfolio_config, snapshot=self._snapshot_of)

    def _restore(self, checkpoint: Mapping[str, Any]) -> None:
        self._snapshots[_RESTORED_DECISION_ROW] = checkpoint["last_groups"]
        self._row_map = {int(checkpoint["last_row"]): _RESTORED_DECISION_ROW}
        self._done_ns = int(checkpoint["done_ns"])
        self._decided_ns = int(checkpoint["decided_ns"])
        self.bars = int(checkpoint["bars"])
        # Reported through step_info, a C Py_ssize_t in the compiled core: checked here, before it grows.
        self._step = saved_int(
            checkpoint, "step", where=f"runner checkpoint in {self.state_dir}", high=COUNTER_MAX
        )
        self._started = True
        self.core.restore_sequence(checkpoint["core"])
        pending = checkpoint["pending"]
        self._pending = Execution(
            *(tuple(decode_record(r) for r in pending[k]) for k in ("orders", "trades", "errors", "vetoed"))
        )
        self._retries = tuple(decode_record(r) for r in pending["retries"])
        risk = checkpoint["risk"]
        self._day = int(risk["day"])
        self._day_equity = float(risk["day_equity"])
        self._halted = bool(risk["halted"])
        status = checkpoint["status"]
        self._initial_equity = status["initial_equity"]
        self.last_decision = str(status["last_decision"])
        self.last_time_ns = int(status["last_time_ns"])
        hook = self.hook
        if hook is not None and checkpoint.get("hook") is not None:
            hook.new_episode()
            hook.pause_bars = int(checkpoint["hook"]["pause_bars"])
            hook.size_factor = float(checkpoint["hook"]["size_factor"])
            hook.events.extend(decode_record(e) for e in checkpoint["hook"]["events"])
        callback = self._callback
        if callback is not None:
            self._vec.reset_infos = [{"time_ns": self._done_ns, "equity": self.book.equity}]
            callback.on_training_start({}, {})
            cb = checkpoint.get("callback")
            if cb is not None:
                feeder = callback.feeder
                # The feed's market time continues where it was (the manager's own clock may be ahead:
                # it also follows event times).
                feeder.clock = ExperiencedMarketClock(int(cb["clock_ns"]))
                feeder.clock.observe(self._done_ns)
                feeder.restore_env_state(0, cb)
                callback.counts.update(cb["counts"])
                self._host.num_timesteps = int(cb["num_timesteps"])
        log.info(
            "restarted from the checkpoint of the bar at %s: %d bars, position %g, cash %.8g",
            _iso(self._done_ns),
            self.bars,
            self.book.qty,
            self.book.cash,
        )

    # --- status -------------------------------------------------------------------------------------------
    @property
    def halted(self) -> bool:
        """The daily-loss kill switch fired."""
        return self._halted

    @property
    def decided_ns(self) -> int:
        """Bar time of the last bar whose decision is complete (its orders answered and booked)."""
        return self._decided_ns if self._lifecycle is not RunnerState.NEW else -1

    @property
    def store(self) -> RunnerStore | None:
        """The checkpoint and order log (``None`` without a state directory)."""
        return self._store if self._lifecycle is not RunnerState.NEW else None

    def status(self) -> str:
        """One line: time, position, equity and PnL, the last decision and the learned rules applied."""
        if self._lifecycle is RunnerState.NEW:
            return "live runner not built"
        book = self.book
        equity = book.equity
        initial = self._initial_equity if self._initial_equity else self.settings.initial_cash
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


def _takes_intent(broker: Any) -> bool:
    """Whether ``broker.known`` also takes the intent and the quote (an exchange broker does)."""
    import inspect

    try:
        return len(inspect.signature(broker.known).parameters) >= 3
    except (TypeError, ValueError):
        return False


def _buy_fee(result: OrderResult) -> float:
    """A buy's commission (in quote currency): what may have been charged in the base asset instead."""
    return result.fee if result.side is Side.BUY else 0.0


def _iso(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC).isoformat(timespec="minutes")
