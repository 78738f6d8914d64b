"""``LearningCallback``: feeds the learning manager from a training run and logs it to TensorBoard.

The manager lives in the main process; environments (possibly in subprocesses) only emit events in
``info`` and apply the snapshot they were pushed (see :mod:`agents.wrappers`). After every
``VecEnv.step`` the callback reads ``self.locals["infos"]`` and ``["dones"]`` and, per environment:

* closed trades -> ``learn_from_trade``;
* refused or failed orders -> ``learn_from_error`` (and ``learn_order_minimums`` for minimum
  rejections); with ``error_resolutions`` on, the resolution the manager suggests for the error's
  signature is applied to that environment (``env_method("apply_resolution", ...)``: pause entries,
  shrink the next one, or nothing when the learned minimum does the resizing) and the outcome of the
  environment's *next* order (filled or not) is reported with ``record_resolution``;
* entries vetoed by avoidance rules (the wrapper's ``info["learned"]`` events) -> ``record_veto``, and
  ``veto_horizon`` bars later (or at the end of the episode, if sooner) the counterfactual ->
  ``record_veto_outcome``: the vetoed entry *would have won* when the close then, compared with the
  entry's reference price (the open it would have filled at), moved in the entry's direction by more
  than the round-trip cost (twice fee + half spread + slippage);
* then once per step ``manager.on_bar(now, conditions)``, with the raw market-condition features of the
  observation's bar (``info["market_conditions"]``, taken from environment ``k mod n_envs`` at the k-th
  step, so every environment's markets are sampled), and, when ``manager.version`` changed, the new
  snapshot is pushed with ``env_method("set_learned_state", snapshot)``.

``now`` is the :class:`~agents.experience_clock.ExperiencedMarketClock` paced by environment 0; every
event of environment ``i`` is re-timed by ``now - info_i["time_ns"]`` (zero for a single environment
replaying sequentially), so the manager sees one monotonic timeline.

Logged through the SB3 logger: ``learning/*`` at the end of every rollout and of training (the
manager's :meth:`track_learning_effectiveness` scalars plus the callback's own counts),
``trading/*`` for every finished episode (averaged over the episodes finished between two dumps, see
:class:`EpisodeTracker`), the algorithm and switches as TensorBoard hparams at the start, and the
learning report (Markdown) as text at the end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam

from agents.experience_clock import ExperiencedMarketClock
from agents.hooks import HookEvent, HookReason
from agents.switches import LearningSwitches
from agents.wrappers import INFO_CONDITIONS, INFO_EVENTS
from envs.clock import DAY_NS
from envs.errors import ConfigError
from envs.events import ErrorEvent, OrderResult, TradeResult
from learning.error_patterns import Resolution
from learning.manager import UniversalLearningManager
from learning.records import format_ns
from learning.report import render_markdown
from learning.state import LearnedState

__all__ = [
    "DEFAULT_VETO_HORIZON",
    "EpisodeTracker",
    "LearningCallback",
    "veto_would_have_won",
]

log = logging.getLogger(__name__)

DEFAULT_VETO_HORIZON: Final = 10
"""Bars after which a vetoed entry's counterfactual outcome is judged."""
TRADING_PREFIX: Final = "trading/"
LEARNING_PREFIX: Final = "learning/"
REPORT_KEY: Final = "learning/report"
HPARAMS_KEY: Final = "hparams"
# Text and hparams go to TensorBoard only: the other SB3 writers cannot show them.
_TB_ONLY: Final = ("stdout", "log", "json", "csv")
_SET_STATE: Final = "set_learned_state"
_APPLY_RESOLUTION: Final = "apply_resolution"


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
            self.max_drawdown = max(self.max_drawdown, min(1.0, 1.0 - equity / self._peak))
        for fill in info.get("fills", ()):
            self.fees += fill.fee
            self.notional += fill.filled_qty * fill.price
        self.rejections += len(info.get("rejections", ()))
        self.errors += len(info.get("errors", ()))
        trades: Sequence[TradeResult] = info.get("trades", ())
        if trades:  # most bars close no trade and carry no hook event: skip the generators
            self.trades += len(trades)
            self.wins += sum(t.pnl > 0.0 for t in trades)
        events = info.get(INFO_EVENTS, ())
        if events:
            self.vetoes += sum(e.reason is HookReason.RULE_VETO for e in events)
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


class LearningCallback(BaseCallback):
    """Feeds a :class:`~learning.manager.UniversalLearningManager` from training and logs to TensorBoard.

    See the module docstring for what is fed, when, and how market time is kept.

    Args:
        manager: the learning manager (main process). May be ``None`` when ``switches.enabled`` is false
            or ``switches.online`` is false and ``state`` is given.
        switches: which parts of the manager act (see :class:`~agents.switches.LearningSwitches`).
        state: with ``online=False``, the snapshot to apply (default: ``manager.snapshot()``).
        veto_horizon: bars after which a vetoed entry's counterfactual is judged.
        verbose: SB3 verbosity.

    Attributes:
        clock: the experienced market clock (set at training start).
        episodes: metrics of every finished episode, in the order they finished.
        counts: running totals of what the learned state did and what was fed (also logged).
    """

    def __init__(
        self,
        manager: UniversalLearningManager | None,
        switches: LearningSwitches,
        *,
        state: LearnedState | None = None,
        veto_horizon: int = DEFAULT_VETO_HORIZON,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
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
        self._given_state = state
        self._feeding = switches.enabled and switches.online and manager is not None
        self.clock = ExperiencedMarketClock()
        self.episodes: list[dict[str, float]] = []
        self.counts: dict[str, int] = dict.fromkeys(
            (
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
            ),
            0,
        )
        self._applied: LearnedState | None = None
        self._pushed_version: int | None = None
        self._start_ns: int | None = None
        self._trackers: list[EpisodeTracker] = []
        self._pending_res: list[_PendingResolution | None] = []
        self._pending_vetoes: list[list[_PendingVeto]] = []
        self._pacer_reset = False

    @property
    def feeding(self) -> bool:
        """Whether the manager learns from this run (enabled, online and present)."""
        return self._feeding

    # --- lifecycle -----------------------------------------------------------------------------------
    def _reset_infos(self) -> list[Mapping[str, Any]]:
        env = self.training_env
        infos = getattr(env.unwrapped, "reset_infos", None)
        if infos is None or len(infos) != env.num_envs:
            return [{} for _ in range(env.num_envs)]
        return [info or {} for info in infos]

    def _on_training_start(self) -> None:
        env = self.training_env
        n = env.num_envs
        # learn(reset_num_timesteps=False) continues the envs' episodes: their reset infos are stale.
        fresh = self.model.num_timesteps == 0
        reset_infos = self._reset_infos() if fresh else [{} for _ in range(n)]
        self._trackers = [EpisodeTracker(_equity(info)) for info in reset_infos]
        self._pending_res = [None] * n
        self._pending_vetoes = [[] for _ in range(n)]
        manager = self.manager
        self.clock = ExperiencedMarketClock(manager.clock.now_ns() if manager is not None else 0)
        self._start_ns = None
        first = reset_infos[0].get("time_ns")
        if first is not None:
            self.clock.observe(int(first))
        if self.switches.enabled:
            if not env.has_attr(_SET_STATE):
                raise ConfigError(
                    "the training envs are not wrapped for the learning manager",
                    where="LearningCallback",
                    fix="wrap every env with agents.wrappers.wrap_env(env, switches) before vectorizing",
                )
            if self._feeding and manager is not None:
                self._push(manager.snapshot())
            else:
                state = self._given_state
                if state is None and manager is not None:
                    state = manager.snapshot()
                if state is not None:
                    self._push(state)
        self._record_hparams(n)

    def _record_hparams(self, n_envs: int) -> None:
        model = self.model
        hparams: dict[str, bool | str | float | None] = {"algorithm": type(model).__name__, "n_envs": n_envs}
        for name in ("learning_rate", "gamma", "n_steps", "batch_size", "ent_coef"):
            value = getattr(model, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                hparams[name] = value
        for name, value in self.switches.model_dump().items():
            hparams[f"switches/{name}"] = bool(value)
        metrics = {
            f"{TRADING_PREFIX}return": 0.0,
            f"{TRADING_PREFIX}sharpe": 0.0,
            f"{TRADING_PREFIX}max_drawdown": 0.0,
        }
        self.logger.record(HPARAMS_KEY, HParam(hparams, metrics), exclude=_TB_ONLY)

    def _on_rollout_end(self) -> None:
        self._log_learning()

    def _on_training_end(self) -> None:
        self._log_learning()
        report = self._report()
        if report:
            self.logger.record(REPORT_KEY, report, exclude=_TB_ONLY)
        self.logger.dump(self.num_timesteps)
        if self._feeding and self.manager is not None:
            self.manager.flush()

    # --- the step ----------------------------------------------------------------------------------
    def _on_step(self) -> bool:
        infos: Sequence[dict[str, Any]] = self.locals["infos"]
        dones: Sequence[bool] = self.locals["dones"]
        n = len(infos)
        clock = self.clock
        now = clock.observe(int(infos[0]["time_ns"]), new_episode=self._pacer_reset)
        self._pacer_reset = False
        if self._start_ns is None:
            self._start_ns = now
        # Only a feeding callback touches the manager; a frozen one just applies its snapshot.
        manager = self.manager if self._feeding else None
        directives: dict[int, Resolution] = {}
        for i, info in enumerate(infos):
            events: tuple[HookEvent, ...] = info.get(INFO_EVENTS, ())
            if events:
                self._count_events(events)
            self._trackers[i].update(info)
            if manager is not None:
                self._feed(manager, i, info, events, now - int(info["time_ns"]), now, directives)
            if dones[i]:
                self._finish_episode(manager, i, info, now)
        if dones[0]:
            reset_time = self._reset_infos()[0].get("time_ns")
            if reset_time is not None:
                clock.observe(int(reset_time), new_episode=True)
            else:
                self._pacer_reset = True
        if manager is not None:
            conditions = infos[(self.n_calls - 1) % n].get(INFO_CONDITIONS)
            manager.on_bar(now, conditions)
            if manager.version != self._pushed_version:
                self._push(manager.snapshot())
            for i, resolution in sorted(directives.items()):
                self.training_env.env_method(_APPLY_RESOLUTION, str(resolution), indices=[i])
                self.counts["resolutions_applied"] += 1
        return True

    def _count_events(self, events: Sequence[HookEvent]) -> None:
        counts = self.counts
        for e in events:
            reason = e.reason
            if reason is HookReason.RULE_VETO:
                counts["vetoed_entries"] += 1
            elif reason is HookReason.PAUSED:
                counts["paused_entries"] += 1
            elif reason is HookReason.MIN_RESIZE:
                counts["min_resized_orders"] += 1
            elif reason is HookReason.MIN_SKIP:
                counts["min_skipped_orders"] += 1
            elif reason is HookReason.REDUCED_SIZE:
                counts["reduced_orders"] += 1
            else:
                counts["condition_adjusted_orders"] += 1

    def _feed(
        self,
        manager: UniversalLearningManager,
        i: int,
        info: Mapping[str, Any],
        events: Sequence[HookEvent],
        offset: int,
        now: int,
        directives: dict[int, Resolution],
    ) -> None:
        """Teach the manager what environment ``i`` reported this step (times shifted by ``offset``)."""
        counts = self.counts
        for trade in info.get("trades", ()):
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
                if self.switches.error_resolutions:
                    self._pending_res[i] = _PendingResolution(match.signature, match.suggestion)
                    directives[i] = match.suggestion
        pending_vetoes = self._pending_vetoes[i]
        for e in events:
            if e.reason is HookReason.RULE_VETO:
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
        self, manager: UniversalLearningManager | None, i: int, info: Mapping[str, Any], now: int
    ) -> None:
        metrics = self._trackers[i].metrics()
        self.episodes.append(metrics)
        for key, value in metrics.items():
            self.logger.record_mean(f"{TRADING_PREFIX}{key}", value)
        if manager is not None and self._pending_vetoes[i]:
            price = float(info["price"])
            for pv in self._pending_vetoes[i]:
                self._judge(manager, pv, price, now)
            self._pending_vetoes[i] = []
        self._trackers[i] = EpisodeTracker(_equity(self._reset_infos()[i]))

    def _push(self, state: LearnedState) -> None:
        self.training_env.env_method(_SET_STATE, state)
        self._applied = state
        self._pushed_version = state.version
        self.counts["snapshot_pushes"] += 1

    # --- logging -----------------------------------------------------------------------------------
    def _log_learning(self) -> None:
        if not self.switches.enabled:
            return
        logger = self.logger
        now = self.clock.now_ns()
        if self._feeding and self.manager is not None:
            for key, value in self.manager.track_learning_effectiveness(now).as_scalars().items():
                logger.record(key, value)
        elif self._applied is not None:
            state = self._applied
            logger.record(f"{LEARNING_PREFIX}avoidance_rules", float(len(state.rules)))
            logger.record(f"{LEARNING_PREFIX}top_patterns", float(len(state.top_patterns)))
        applied = self._applied
        version = applied.version if applied is not None else -1
        logger.record(f"{LEARNING_PREFIX}snapshot_version", float(version))
        logger.record(f"{LEARNING_PREFIX}minimums", float(len(applied.minimums) if applied else 0))
        start = self._start_ns
        logger.record(f"{LEARNING_PREFIX}market_days", (now - start) / DAY_NS if start is not None else 0.0)
        for key, value in self.counts.items():
            logger.record(f"{LEARNING_PREFIX}{key}", float(value))

    def _report(self) -> str:
        if not self.switches.enabled:
            return ""
        if self._feeding and self.manager is not None:
            return render_markdown(self.manager.build_report(self.clock.now_ns()))
        return _snapshot_markdown(self._applied)


def _equity(info: Mapping[str, Any]) -> float | None:
    value = info.get("equity")
    return float(value) if value is not None else None


def _snapshot_markdown(state: LearnedState | None) -> str:
    """A short report of the frozen snapshot an offline run applied."""
    if state is None:
        return "# Learned state\n\nNo learned state was applied."
    lines = [
        "# Learned state (frozen)",
        "",
        f"Version {state.version}, taken at {format_ns(state.time_ns)}.",
        "",
        "## Avoidance rules",
        "",
    ]
    lines += [f"- {rule.explain()}" for rule in state.rules] or ["(none)"]
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
