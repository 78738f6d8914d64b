"""``ManagerFeeder``: feeds the learning manager from the environments' step reports, framework-free.

The manager lives in the main process; environments (possibly in subprocesses, or the live runner's
trading core) only emit events in ``info`` and apply the snapshot they were pushed (see
:mod:`agents.wrappers`). :meth:`ManagerFeeder.step` takes one step's ``infos`` and ``dones`` (one entry
per environment, as ``VecEnv.step`` returns them) and, per environment:

* closed trades -> ``learn_from_trade``;
* refused or failed orders -> ``learn_from_error`` (and ``learn_order_minimums`` for minimum
  rejections); with ``error_resolutions`` on, the resolution the manager suggests for the error's
  signature is handed to that environment (the ``apply_resolution`` callable: pause entries, shrink the
  next one, or nothing when the learned minimum does the resizing) and the outcome of the environment's
  *next* order (filled or not) is reported with ``record_resolution``;
* entries vetoed by avoidance rules (the wrapper's ``info["learned"]`` events) -> ``record_veto``, and
  ``veto_horizon`` bars later (or at the end of the episode, if sooner) the counterfactual ->
  ``record_veto_outcome``: the vetoed entry *would have won* when the close then, compared with the
  entry's reference price (the open it would have filled at), moved in the entry's direction by more
  than the round-trip cost (twice fee + half spread + slippage);
* then once per step ``manager.on_bar(now, conditions)``, with the raw market-condition features of the
  observation's bar (``info["market_conditions"]``, taken from environment ``k mod n_envs`` at the k-th
  step, so every environment's markets are sampled), and, when ``manager.version`` changed, the new
  snapshot is handed to the ``push`` callable (which applies it to every environment).

``now`` is the :class:`~agents.experience_clock.ExperiencedMarketClock` paced by environment 0; every
event of environment ``i`` is re-timed by ``now - info_i["time_ns"]`` (zero for a single environment
replaying sequentially), so the manager sees one monotonic timeline.

The feeder also measures every environment's episodes (:class:`EpisodeTracker`) and counts what the
learned state did and what was fed. It imports no training framework: the SB3 adapter is
:class:`agents.callbacks.LearningCallback` (which adds the TensorBoard logging); the live runner can drive
it directly with its one environment.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from agents.experience_clock import ExperiencedMarketClock
from agents.hooks import HookEvent, HookReason
from agents.switches import LearningSwitches
from agents.wrappers import INFO_CONDITIONS, INFO_EVENTS
from envs.clock import DAY_NS
from envs.errors import ConfigError
from envs.events import ErrorEvent, OrderResult, TradeResult
from learning.error_patterns import Resolution
from learning.manager import UniversalLearningManager
from learning.records import format_market_time
from learning.report import render_markdown
from learning.state import LearnedState

__all__ = [
    "COUNT_KEYS",
    "DEFAULT_VETO_HORIZON",
    "LEARNING_PREFIX",
    "EpisodeTracker",
    "ManagerFeeder",
    "learning_report",
    "learning_scalars",
    "veto_would_have_won",
]

log = logging.getLogger(__name__)

LEARNING_PREFIX: Final = "learning/"

DEFAULT_VETO_HORIZON: Final = 10
"""Bars after which a vetoed entry's counterfactual outcome is judged."""
COUNT_KEYS: Final = (
    "vetoed_entries",
    "paused_entries",
    "condition_adjusted_orders",
    "min_resized_orders",
    "min_skipped_orders",
    "reduced_orders",
    "trades_fed",
    "errors_fed",
    "minimum_rejections_fed",
    "resolutions_applied",
    "resolutions_recorded",
    "vetoes_recorded",
    "veto_outcomes_recorded",
    "snapshot_pushes",
)
"""The running totals of :attr:`ManagerFeeder.counts`, in logging order."""

# Which count each hook event adds to (every other reason is a condition adjustment).
_EVENT_COUNT: Final = {
    HookReason.RULE_VETO: "vetoed_entries",
    HookReason.PAUSED: "paused_entries",
    HookReason.MIN_RESIZE: "min_resized_orders",
    HookReason.MIN_SKIP: "min_skipped_orders",
    HookReason.REDUCED_SIZE: "reduced_orders",
}
_RULE_VETO: Final = HookReason.RULE_VETO


def veto_would_have_won(
    direction: int, entry_price: float, exit_price: float, round_trip_cost: float
) -> bool:
    """Whether an entry in ``direction`` (+1 long, -1 short) at ``entry_price`` would have won by
    ``exit_price``: its return in its direction beats the round-trip cost."""
    if entry_price <= 0.0 or not math.isfinite(exit_price):
        return False
    return direction * (exit_price / entry_price - 1.0) > round_trip_cost


class EpisodeTracker:
    """Trading metrics of one environment's episode, accumulated from its ``info`` stream in O(1) memory.

    Metrics (keys of :meth:`metrics`, logged as ``trading/<key>``):

    * ``equity``: final equity; ``return``: final / initial equity - 1;
    * ``sharpe``: mean / sample standard deviation of the per-bar simple equity returns (per bar, not
      annualized; 0 with fewer than two returns or no variation);
    * ``max_drawdown``: largest fall from a running equity peak, as a fraction in [0, 1];
    * ``turnover``: filled notional divided by the initial equity; ``fees``: fees paid (quote currency);
    * ``rejections`` (orders refused by exchange rules), ``errors`` (refused or failed orders),
      ``trades`` (closed), ``win_rate`` (of closed trades), ``vetoes`` (entries vetoed by avoidance
      rules), ``length`` (steps).

    Args:
        initial_equity: equity at the episode's start (the reset ``info``); ``None``: the first step's
            equity stands in for it and the first step's return is not counted.
    """

    __slots__ = (
        "_initial",
        "_last",
        "_m2",
        "_mean",
        "_n",
        "_peak",
        "errors",
        "fees",
        "length",
        "max_drawdown",
        "notional",
        "rejections",
        "trades",
        "vetoes",
        "wins",
    )

    def __init__(self, initial_equity: float | None = None) -> None:
        self._initial = initial_equity if initial_equity is not None and initial_equity > 0.0 else None
        self._last = self._initial
        self._peak = self._initial if self._initial is not None else -math.inf
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self.max_drawdown = 0.0
        self.fees = 0.0
        self.notional = 0.0
        self.rejections = 0
        self.errors = 0
        self.trades = 0
        self.wins = 0
        self.vetoes = 0
        self.length = 0

    def update(self, info: Mapping[str, Any]) -> None:
        """Fold one step's ``info`` in."""
        equity = float(info["equity"])
        last = self._last
        if last is None:
            self._initial = equity
        elif last > 0.0:
            r = equity / last - 1.0
            self._n += 1
            d = r - self._mean
            self._mean += d / self._n
            self._m2 += d * (r - self._mean)
        self._last = equity
        if equity > self._peak:
            self._peak = equity
        if self._peak > 0.0:
            drawdown = 1.0 - equity / self._peak
            if drawdown > self.max_drawdown:
                self.max_drawdown = min(1.0, drawdown)
        fills = info.get("fills")
        if fills:
            for fill in fills:
                self.fees += fill.fee
                self.notional += fill.filled_qty * fill.price
        rejections = info.get("rejections")
        if rejections:
            self.rejections += len(rejections)
        errors = info.get("errors")
        if errors:
            self.errors += len(errors)
        trades: Sequence[TradeResult] | None = info.get("trades")
        if trades:  # most bars close no trade and carry no hook event: skip the generators
            self.trades += len(trades)
            self.wins += sum(t.pnl > 0.0 for t in trades)
        events = info.get(INFO_EVENTS)
        if events:
            self.vetoes += sum(e.reason is _RULE_VETO for e in events)
        self.length += 1

    def metrics(self) -> dict[str, float]:
        """The episode's metrics so far (see the class docstring)."""
        initial = self._initial or 0.0
        equity = self._last if self._last is not None else 0.0
        std = math.sqrt(self._m2 / (self._n - 1)) if self._n >= 2 else 0.0
        return {
            "equity": equity,
            "return": equity / initial - 1.0 if initial > 0.0 else 0.0,
            "sharpe": self._mean / std if std > 0.0 else 0.0,
            "max_drawdown": self.max_drawdown,
            "turnover": self.notional / initial if initial > 0.0 else 0.0,
            "fees": self.fees,
            "rejections": float(self.rejections),
            "errors": float(self.errors),
            "trades": float(self.trades),
            "win_rate": self.wins / self.trades if self.trades else 0.0,
            "vetoes": float(self.vetoes),
            "length": float(self.length),
        }


@dataclass(slots=True)
class _PendingVeto:
    rule_ids: tuple[str, ...]
    direction: int
    price: float
    cost: float
    bars_left: int


@dataclass(frozen=True, slots=True)
class _PendingResolution:
    signature: str
    resolution: Resolution


def _shift_trade(trade: TradeResult, offset: int) -> TradeResult:
    if offset == 0:
        return trade
    return trade._replace(
        entry_time_ns=trade.entry_time_ns + offset, exit_time_ns=trade.exit_time_ns + offset
    )


def _shift_order(order: OrderResult, offset: int) -> OrderResult:
    return order if offset == 0 else order._replace(time_ns=order.time_ns + offset)


def _shift_error(error: ErrorEvent, offset: int) -> ErrorEvent:
    return error if offset == 0 else error._replace(time_ns=error.time_ns + offset)


def _equity(info: Mapping[str, Any]) -> float | None:
    value = info.get("equity")
    return float(value) if value is not None else None


PushState = Callable[[LearnedState], None]
"""Applies a snapshot to every environment (``VecEnv.env_method("set_learned_state", s)`` in training)."""
ApplyResolution = Callable[[int, Resolution], None]
"""Hands environment ``i`` the resolution of its latest error (``env_method("apply_resolution", ...)``)."""
EpisodeSink = Callable[[int, dict[str, float]], None]
"""Receives the metrics of environment ``i``'s finished episode (e.g. to log them)."""


class ManagerFeeder:
    """Feeds a :class:`~learning.manager.UniversalLearningManager` from per-step ``infos`` and ``dones``.

    See the module docstring for what is fed, when, and how market time is kept. The feeder is driven
    through three calls: :meth:`start` (with the environments' reset infos), :meth:`step` after every
    step of all environments, and :meth:`finish` at the end (writes the manager's pending state).

    Args:
        manager: the learning manager (main process). May be ``None`` when ``switches.enabled`` is false
            or ``switches.online`` is false and ``state`` is given.
        switches: which parts of the manager act (see :class:`~agents.switches.LearningSwitches`).
        push: applies a snapshot to every environment; called at :meth:`start` (when learning is
            enabled and there is a snapshot) and whenever the manager's version changes.
        apply_resolution: hands an environment the resolution of its error (``error_resolutions`` on).
        state: with ``online=False``, the snapshot to apply (default: ``manager.snapshot()``).
        veto_horizon: bars after which a vetoed entry's counterfactual is judged.
        on_episode: receives ``(env_index, metrics)`` of every finished episode.

    Attributes:
        clock: the experienced market clock (a new one at every :meth:`start`).
        episodes: metrics of every finished episode, in the order they finished.
        counts: running totals of what the learned state did and what was fed (:data:`COUNT_KEYS`).
        applied: the snapshot last pushed (``None`` before the first).
        start_ns: market time of the first step after :meth:`start` (``None`` before it).
        steps: steps fed so far (over every :meth:`start`).
    """

    def __init__(
        self,
        manager: UniversalLearningManager | None,
        switches: LearningSwitches,
        *,
        push: PushState,
        apply_resolution: ApplyResolution,
        state: LearnedState | None = None,
        veto_horizon: int = DEFAULT_VETO_HORIZON,
        on_episode: EpisodeSink | None = None,
    ) -> None:
        if isinstance(veto_horizon, bool) or not isinstance(veto_horizon, int) or veto_horizon < 1:
            raise ConfigError(
                f"veto_horizon={veto_horizon!r} must be an integer >= 1", where="veto_horizon", fix="e.g. 10"
            )
        if switches.enabled and switches.online:
            if manager is None:
                raise ConfigError(
                    "online learning needs a learning manager",
                    where="LearningCallback",
                    fix="pass a UniversalLearningManager, or set switches.online=False with a state",
                )
            if manager.read_only:
                raise ConfigError(
                    "the learning manager is read-only and cannot learn online",
                    where="LearningCallback",
                    fix="open it writable, or set switches.online=False",
                )
            if state is not None:
                raise ConfigError(
                    "state= is the frozen snapshot of an offline run; online, the manager provides it",
                    where="LearningCallback",
                    fix="drop state=, or set switches.online=False",
                )
        self.manager = manager
        self.switches = switches
        self.veto_horizon = veto_horizon
        self._push_fn = push
        self._apply_fn = apply_resolution
        self._on_episode = on_episode
        self._given_state = state
        self._feeding = switches.enabled and switches.online and manager is not None
        self._resolutions = switches.error_resolutions
        self.clock = ExperiencedMarketClock()
        self.episodes: list[dict[str, float]] = []
        self.counts: dict[str, int] = dict.fromkeys(COUNT_KEYS, 0)
        self.applied: LearnedState | None = None
        self._pushed_version: int | None = None
        self.start_ns: int | None = None
        self.steps = 0
        self._trackers: list[EpisodeTracker] = []
        self._pending_res: list[_PendingResolution | None] = []
        self._pending_vetoes: list[list[_PendingVeto]] = []
        self._pacer_reset = False

    @property
    def feeding(self) -> bool:
        """Whether the manager learns from this run (enabled, online and present)."""
        return self._feeding

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self, reset_infos: Sequence[Mapping[str, Any]], *, fresh: bool = True) -> None:
        """Begin (or continue) feeding ``len(reset_infos)`` environments.

        Args:
            reset_infos: every environment's reset ``info`` (initial equity, the pacer's first bar time).
            fresh: the environments were just reset; ``False`` when they continue earlier episodes
                (their reset infos are stale and are ignored).
        """
        n = len(reset_infos)
        infos: Sequence[Mapping[str, Any]] = reset_infos if fresh else [{} for _ in range(n)]
        self._trackers = [EpisodeTracker(_equity(info)) for info in infos]
        self._pending_res = [None] * n
        self._pending_vetoes = [[] for _ in range(n)]
        manager = self.manager
        self.clock = ExperiencedMarketClock(manager.clock.now_ns() if manager is not None else 0)
        self.start_ns = None
        first = infos[0].get("time_ns") if n else None
        if first is not None:
            self.clock.observe(int(first))
        if self.switches.enabled:
            if self._feeding and manager is not None:
                self._push(manager.snapshot())
            else:
                state = self._given_state
                if state is None and manager is not None:
                    state = manager.snapshot()
                if state is not None:
                    self._push(state)

    def finish(self) -> None:
        """Write what the manager still holds (a feeding manager only)."""
        if self._feeding and self.manager is not None:
            self.manager.flush()

    # --- per-environment state (checkpoints) -------------------------------------------------------------
    def env_state(self, i: int) -> dict[str, Any]:
        """What environment ``i`` still owes the manager, as plain JSON-able data (for a checkpoint): the
        resolution whose outcome its next order reports, and its vetoed entries awaiting judgement."""
        res = self._pending_res[i]
        return {
            "pending_resolution": None if res is None else [res.signature, str(res.resolution)],
            "pending_vetoes": [
                [list(v.rule_ids), v.direction, v.price, v.cost, v.bars_left] for v in self._pending_vetoes[i]
            ],
        }

    def restore_env_state(self, i: int, data: Mapping[str, Any]) -> None:
        """Take back what :meth:`env_state` returned (after :meth:`start`)."""
        res = data.get("pending_resolution")
        self._pending_res[i] = None if res is None else _PendingResolution(str(res[0]), Resolution(res[1]))
        self._pending_vetoes[i] = [
            _PendingVeto(tuple(v[0]), int(v[1]), float(v[2]), float(v[3]), int(v[4]))
            for v in data.get("pending_vetoes", ())
        ]

    def expect_resolution_outcome(self, i: int, signature: str, resolution: Resolution | str) -> None:
        """Have environment ``i``'s next order report whether ``resolution`` fixed error ``signature``
        (for errors its owner fed to the manager itself)."""
        self._pending_res[i] = _PendingResolution(signature, Resolution(resolution))

    # --- the step ----------------------------------------------------------------------------------
    def step(
        self,
        infos: Sequence[Mapping[str, Any]],
        dones: Sequence[bool],
        reset_infos: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Feed one step of every environment; returns the market time ``now`` it was fed at.

        Args:
            infos: every environment's step ``info``.
            dones: whether each environment's episode ended with this step (it was reset since).
            reset_infos: every environment's latest reset ``info`` (read only for environments that are
                done: the new episode's equity, and the pacer's first bar time).
        """
        self.steps += 1
        clock = self.clock
        now = clock.observe(int(infos[0]["time_ns"]), new_episode=self._pacer_reset)
        self._pacer_reset = False
        if self.start_ns is None:
            self.start_ns = now
        # Only a feeding feeder touches the manager; a frozen one just applies its snapshot.
        manager = self.manager if self._feeding else None
        directives: dict[int, Resolution] | None = None
        trackers = self._trackers
        pending_vetoes = self._pending_vetoes
        counts = self.counts
        any_done = False
        for i, info in enumerate(infos):
            events: Sequence[HookEvent] = info.get(INFO_EVENTS, ())
            if events:
                for e in events:
                    counts[_EVENT_COUNT.get(e.reason, "condition_adjusted_orders")] += 1
            trackers[i].update(info)
            if manager is not None and (
                events or pending_vetoes[i] or info.get("trades") or info.get("orders")
            ):
                directives = self._feed(manager, i, info, events, now - int(info["time_ns"]), now, directives)
            if dones[i]:
                any_done = True
                self._finish_episode(manager, i, info, now, reset_infos)
        if any_done and dones[0]:
            first = _reset_info(reset_infos, 0).get("time_ns")
            if first is not None:
                clock.observe(int(first), new_episode=True)
            else:
                self._pacer_reset = True
        if manager is not None:
            conditions = infos[(self.steps - 1) % len(infos)].get(INFO_CONDITIONS)
            manager.on_bar(now, conditions)
            if manager.version != self._pushed_version:
                self._push(manager.snapshot())
            if directives:
                for i, resolution in sorted(directives.items()):
                    self._apply_fn(i, resolution)
                    counts["resolutions_applied"] += 1
        return now

    def _feed(
        self,
        manager: UniversalLearningManager,
        i: int,
        info: Mapping[str, Any],
        events: Sequence[HookEvent],
        offset: int,
        now: int,
        directives: dict[int, Resolution] | None,
    ) -> dict[int, Resolution] | None:
        """Teach the manager what environment ``i`` reported this step (times shifted by ``offset``)."""
        counts = self.counts
        trades: Sequence[TradeResult] = info.get("trades", ())
        for trade in trades:
            manager.learn_from_trade(_shift_trade(trade, offset))
            counts["trades_fed"] += 1
        orders: Sequence[OrderResult] = info.get("orders", ())
        if orders:
            errors = {e.order_id: e for e in info.get("errors", ())}
            for order in orders:
                pending = self._pending_res[i]
                if pending is not None:
                    # The environment's next order after an error is the attempt the resolution shaped.
                    manager.record_resolution(pending.signature, pending.resolution, order.filled, now)
                    self._pending_res[i] = None
                    counts["resolutions_recorded"] += 1
                if order.filled:
                    continue
                if order.kind is not None and order.kind.is_minimum:
                    manager.learn_order_minimums(order.symbol, _shift_order(order, offset))
                    counts["minimum_rejections_fed"] += 1
                error = errors.get(order.order_id)
                if error is None:
                    continue
                match = manager.learn_from_error(_shift_error(error, offset))
                counts["errors_fed"] += 1
                if self._resolutions:
                    self._pending_res[i] = _PendingResolution(match.signature, match.suggestion)
                    if directives is None:
                        directives = {}
                    directives[i] = match.suggestion
        pending_vetoes = self._pending_vetoes[i]
        for e in events:
            if e.reason is _RULE_VETO:
                known = tuple(r for r in e.rule_ids if self._record_veto(manager, r, now, e.symbol))
                if known:
                    pending_vetoes.append(
                        _PendingVeto(known, e.direction, e.price, e.round_trip_cost, self.veto_horizon)
                    )
        if pending_vetoes:
            price = float(info["price"])
            still: list[_PendingVeto] = []
            for pv in pending_vetoes:
                pv.bars_left -= 1
                if pv.bars_left > 0:
                    still.append(pv)
                else:
                    self._judge(manager, pv, price, now)
            self._pending_vetoes[i] = still
        return directives

    def _record_veto(self, manager: UniversalLearningManager, rule_id: str, now: int, symbol: str) -> bool:
        try:
            manager.record_veto(rule_id, now, symbol)
        except KeyError:
            # A rule from a snapshot this manager did not make (e.g. built by hand): nothing to count.
            log.debug("veto by unknown rule %s not recorded", rule_id)
            return False
        self.counts["vetoes_recorded"] += 1
        return True

    def _judge(self, manager: UniversalLearningManager, pv: _PendingVeto, price: float, now: int) -> None:
        won = veto_would_have_won(pv.direction, pv.price, price, pv.cost)
        for rule_id in pv.rule_ids:
            manager.record_veto_outcome(rule_id, won, now)
            self.counts["veto_outcomes_recorded"] += 1

    def _finish_episode(
        self,
        manager: UniversalLearningManager | None,
        i: int,
        info: Mapping[str, Any],
        now: int,
        reset_infos: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        metrics = self._trackers[i].metrics()
        self.episodes.append(metrics)
        if self._on_episode is not None:
            self._on_episode(i, metrics)
        if manager is not None and self._pending_vetoes[i]:
            price = float(info["price"])
            for pv in self._pending_vetoes[i]:
                self._judge(manager, pv, price, now)
            self._pending_vetoes[i] = []
        self._trackers[i] = EpisodeTracker(_equity(_reset_info(reset_infos, i)))

    def _push(self, state: LearnedState) -> None:
        self._push_fn(state)
        self.applied = state
        self._pushed_version = state.version
        self.counts["snapshot_pushes"] += 1


_NO_INFO: Mapping[str, Any] = {}


def _reset_info(reset_infos: Sequence[Mapping[str, Any] | None] | None, i: int) -> Mapping[str, Any]:
    if reset_infos is None or i >= len(reset_infos):
        return _NO_INFO
    return reset_infos[i] or _NO_INFO


# --- what a feeder logs --------------------------------------------------------------------------------


def learning_scalars(feeder: ManagerFeeder) -> dict[str, float]:
    """The ``learning/*`` scalars of a feeder and its manager (empty with learning switched off).

    A feeding manager's :meth:`~learning.manager.UniversalLearningManager.track_learning_effectiveness`
    (which records the measurement in its history), or the frozen snapshot's rule and pattern counts;
    then the applied snapshot's version and minimums, the experienced market days and the feeder's counts.
    """
    if not feeder.switches.enabled:
        return {}
    out: dict[str, float] = {}
    now = feeder.clock.now_ns()
    manager = feeder.manager
    applied = feeder.applied
    if feeder.feeding and manager is not None:
        out.update(manager.track_learning_effectiveness(now).as_scalars())
    elif applied is not None:
        out[f"{LEARNING_PREFIX}avoidance_rules"] = float(len(applied.rules))
        out[f"{LEARNING_PREFIX}top_patterns"] = float(len(applied.top_patterns))
    out[f"{LEARNING_PREFIX}snapshot_version"] = float(applied.version if applied is not None else -1)
    out[f"{LEARNING_PREFIX}minimums"] = float(len(applied.minimums) if applied else 0)
    start = feeder.start_ns
    out[f"{LEARNING_PREFIX}market_days"] = (now - start) / DAY_NS if start is not None else 0.0
    for key, value in feeder.counts.items():
        out[f"{LEARNING_PREFIX}{key}"] = float(value)
    return out


def learning_report(feeder: ManagerFeeder) -> str:
    """The learning report (Markdown): the feeding manager's, or a short one of the frozen snapshot
    applied; empty with learning switched off."""
    if not feeder.switches.enabled:
        return ""
    manager = feeder.manager
    if feeder.feeding and manager is not None:
        return render_markdown(manager.build_report(feeder.clock.now_ns()))
    return snapshot_markdown(feeder.applied)


def snapshot_markdown(state: LearnedState | None) -> str:
    """A short report of the frozen snapshot an offline run applied."""
    if state is None:
        return "# Learned state\n\nNo learned state was applied."
    lines = [
        "# Learned state (frozen)",
        "",
        f"Version {state.version}. Times are market time relative to T, the snapshot's market clock "
        "(T-2.0d: two market days earlier).",
        "",
        "## Avoidance rules",
        "",
    ]
    when = functools.partial(format_market_time, now_ns=state.time_ns)
    lines += [f"- {rule.explain(when)}" for rule in state.rules] or ["(none)"]
    lines += ["", "## Order minimums", ""]
    lines += [
        f"- {m.symbol}: min qty {m.min_qty:g}, min notional {m.min_notional:g} ({m.source})"
        for m in state.minimums.values()
    ] or ["(none)"]
    lines += ["", "## Condition adjustments", ""]
    lines += [
        f"- {a.condition_key}: exposure x{a.exposure_multiplier:.2f}, entry threshold "
        f"{a.entry_threshold:.2f}, max position {a.max_position:.2f}"
        for a in state.condition_adjustments.values()
    ] or ["(none)"]
    return "\n".join(lines) + "\n"
