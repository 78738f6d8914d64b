"""``UniversalLearningManager``: the facade over the learning engines and their store.

It owns no algorithm; it routes events to the engines, keeps market time, decides when the periodic
work is due, versions the learned state, and groups the engines' writes into transactions.

Durability contract:

* The trade journal is the record. :meth:`UniversalLearningManager.learn_from_trade` buffers journal
  rows and writes them in one transaction when ``flush_every`` (256) are pending, and at every other
  write. A process killed at any moment loses at most the trades not yet written (fewer than
  ``flush_every``); what was committed loads intact. Veto records and veto outcomes (which can come
  every bar) are buffered the same way, except an outcome that retires a rule, written at once.
* Pattern statistics are a materialized view of the journal: they are folded into the store in large
  id-ordered batches (``compact_every`` patterns pending, before reads that need them, before
  reinforcement and archiving, at close), in the same transaction as a watermark naming the last
  journal row they include. On open, journal rows past the watermark are replayed, so after a crash the
  statistics again agree exactly with the journal (sum of pattern counts == journal rows, until
  archiving moves patterns out). Reinforcement run by the periodic work folds them in memory and they
  are written with its boosts (below), each batch as it would have been written at once: a pattern's
  score depends on how its trades were grouped, and these are the same groups.
* The periodic work run by :meth:`UniversalLearningManager.periodic` and
  :meth:`UniversalLearningManager.on_bar` (evolution steps, reinforcement boosts, failure rules,
  condition adaptations, the cadence bookkeeping) is written behind: with the next write, and at the
  latest once ``persist_interval_minutes`` (a market day by default) of market time have passed since
  the last write. On hourly bars it changes almost every bar; writing the whole weight table and the
  history on each of them cost more than the learning, and a reinforcement's transaction (about one
  bar in six) cost several times the rest of that bar's learning. A kill therefore also loses at most the
  periodic work of the last ``persist_interval_minutes`` of market time (and what depends on it),
  never more: boosts and the journal's marks of the trades that caused them are written together.
* The periodic memory pass moves the stale patterns, in its transaction, from the active patterns into
  a durable archive queue (they leave the learned state; a pattern seen again starts afresh). Queued
  rows go to Parquet files (fsync'd) once a file's worth (``archive_chunk``) is queued, by a background
  thread, and leave the queue when the file is recorded at the next pass; whatever is queued is written
  at once when the archive is read and at close. (On hourly bars a daily pass archives about a dozen
  patterns: a Parquet file for each took a quarter of the learning's CPU time.) A kill loses nothing:
  queued rows stay queued, with at worst an unrecorded duplicate file (see :mod:`learning.memory`).
* Every other update (errors, resolutions, minimums, effectiveness history, and the same periodic
  methods when called directly, reinforcement and archiving included) is written through at once.
* Every write is one transaction carrying everything pending (buffered trades and vetoes, written-behind
  periodic work) in event order, so the store always holds a prefix of the event sequence.
* A write that fails (disk full, the store locked ...: ``StateError``) is rolled back and loses nothing:
  what it was writing stays pending, and the next write or :meth:`UniversalLearningManager.close`
  after the cause is fixed writes it, once. (A trade whose write failed is learned: do not feed it
  again.) An archive file that cannot be written (``StateError`` naming the archive directory) leaves
  its patterns in the durable archive queue, for a later pass or close.
* SQLite runs in WAL mode with ``synchronous=NORMAL``: a killed process never loses a commit and never
  corrupts the file; a power loss may also roll back the latest commits, to a consistent state.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from envs.clock import Clock, MarketClock
from envs.errors import StateError
from envs.events import ErrorEvent, OrderResult, TradeResult
from envs.market import MarketSpec
from learning.conditions import AdaptationOutcome, MarketConditionAdapter
from learning.config import LearningConfig
from learning.discretize import FACTOR_SEPARATOR, ConditionClassifier, Discretizer
from learning.error_patterns import ErrorMatch, ErrorPattern, ErrorPatternLearner, Resolution
from learning.failures import FailureAnalyzer
from learning.journal import JournalEntry, TradeJournal
from learning.memory import (
    ArchiveJob,
    ArchiveResult,
    finish_archive,
    load_archive,
    queue_stale_patterns,
    queued_patterns,
    start_archive,
)
from learning.minimums import OrderMinimumLearner
from learning.patterns import PatternRecognitionEngine
from learning.records import AvoidanceRule, ConditionAdjustment, LearnedMinimum, PatternScore
from learning.report import LearningReport, write_report
from learning.state import LearnedState
from learning.store import ARCHIVE_DIRNAME, RECOVERY_FIX, STORE_DIRNAME, STORE_FILENAME, LearningStore
from learning.strategy import EvolutionStep, StrategyOptimizer
from learning.tracking import LearningEffectiveness, load_history, record, trends

__all__ = ["UniversalLearningManager"]

log = logging.getLogger(__name__)

# meta keys (one definition each)
_META_CONFIG = "config"
_META_VERSION = "version"
_META_CLOCK = "clock_ns"
_META_RNG = "rng_state"
_META_COUNTERS = "counters"
_META_LAST_RUN = "last_run_ns"
_META_PATTERNS_SEQ = "patterns_journal_seq"

_ADAPT = "adaptation"
_EVOLVE = "evolution"
_ANALYZE = "analysis"
_MEMORY = "memory"


class UniversalLearningManager:
    """Learns from every trade, error and market condition; persists it; serves read-only snapshots.

    Args:
        root: storage root, normally the run directory; the store goes to ``root/learning/state.sqlite``
            and archives to ``root/archive/``.
        config: thresholds and cadences; ``None`` uses the config saved in an existing store, else the
            defaults (the seed's values).
        clock: market clock to read when a method is called without ``now``. ``None`` uses an internal
            clock advanced by event and bar times.
        market_specs: exchange specs to seed the order minimums from (a sequence or a symbol mapping).
        discretizer: how feature values become factors (default binning when ``None``).
        create: create the store when missing; ``False`` makes a missing store a ``StateError``.
        read_only: inspect without writing (CLI, reports while a run is writing): every method that
            would write raises ``StateError``; effectiveness measurements are not recorded.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        root: Path,
        config: LearningConfig | None = None,
        clock: Clock | None = None,
        market_specs: Iterable[MarketSpec] | Mapping[str, MarketSpec] = (),
        *,
        discretizer: Discretizer | None = None,
        create: bool = True,
        read_only: bool = False,
    ) -> None:
        self.root = Path(root)
        self.read_only = read_only
        self.store_path = self.root / STORE_DIRNAME / STORE_FILENAME
        self.archive_dir = self.root / ARCHIVE_DIRNAME
        self._store = LearningStore(self.store_path, create=create, read_only=read_only)
        self._closed = False
        try:
            self._setup(config, clock, market_specs, discretizer)
        except sqlite3.DatabaseError as exc:
            # Damage that the opening checks cannot see (a bad page, a mangled table) shows up here.
            self._store.close()
            raise StateError(
                f"the learning store cannot be read ({exc})", where=str(self.store_path), fix=RECOVERY_FIX
            ) from exc
        except BaseException:
            self._store.close()
            raise

    def _setup(
        self,
        config: LearningConfig | None,
        clock: Clock | None,
        market_specs: Iterable[MarketSpec] | Mapping[str, MarketSpec],
        discretizer: Discretizer | None,
    ) -> None:
        store = self._store
        saved = store.get_meta(_META_CONFIG)
        if config is None:
            config = self._saved_config(saved)
        self.config = config
        cfg = config
        # Only an internal clock follows event times; an injected clock belongs to the caller.
        self._internal_clock: MarketClock | None = None
        if clock is None:
            self._internal_clock = MarketClock(int(store.get_meta(_META_CLOCK, 0)))
            clock = self._internal_clock
        self._clock: Clock = clock
        self._discretizer = discretizer if discretizer is not None else Discretizer()
        self._classifier = ConditionClassifier(self._discretizer, cfg.condition_features)
        self._rng = np.random.default_rng(cfg.seed)
        rng_state = store.get_meta(_META_RNG)
        if rng_state is not None:
            self._rng.bit_generator.state = rng_state
        conn = store.conn
        bounds = (cfg.weight_min, cfg.weight_max)
        self._journal = TradeJournal(conn, cfg.journal_window_ns, cfg.trend_trades)
        self._baseline_cache: tuple[tuple[int, int], float | None] | None = None
        # Journal size when evolution / analysis last ran (periodic() skips them while it is unchanged).
        self._fed: dict[str, int] = {}
        self._patterns = PatternRecognitionEngine(
            conn,
            self._discretizer,
            learning_rate=cfg.pattern_learning_rate,
            weight_bounds=bounds,
        )
        watermark = int(store.get_meta(_META_PATTERNS_SEQ, 0))
        replayed = self._patterns.replay(conn, watermark)
        # The journal row the compacted pattern statistics cover (written with them, as the watermark).
        self._compacted_seq = watermark
        if replayed:
            log.info("replayed %d journal rows not yet compacted into pattern statistics", replayed)
        self._errors = ErrorPatternLearner(
            conn, self._rng, exploration_rate=cfg.exploration_rate, similarity=cfg.error_similarity
        )
        self._minimums = OrderMinimumLearner(conn, bump=cfg.minimum_bump)
        self._adapter = MarketConditionAdapter(
            conn,
            self._classifier,
            threshold=cfg.win_rate_threshold,
            margin=cfg.hysteresis_margin,
            interval_ns=cfg.adaptation_interval_ns,
            lookback_ns=cfg.adaptation_lookback_ns,
            min_trades=cfg.adaptation_min_trades,
            min_exposure=cfg.min_exposure_multiplier,
            max_entry_threshold=cfg.max_entry_threshold,
        )
        self._strategy = StrategyOptimizer(
            conn,
            evolution_boost=cfg.evolution_boost,
            common_share=cfg.common_feature_share,
            min_support=cfg.min_support,
            weight_bounds=bounds,
            percentile=cfg.reinforcement_percentile,
        )
        self._failures = FailureAnalyzer(
            conn,
            self._discretizer,
            occurrence=cfg.failure_occurrence,
            min_support=cfg.min_support,
            min_winners=cfg.failure_min_winners,
            lift_threshold=cfg.lift_threshold,
            significance=cfg.failure_significance,
            window_days=cfg.failure_window_days,
            retire_min_outcomes=cfg.veto_retire_min_outcomes,
            retire_win_rate=cfg.veto_retire_win_rate,
            cooldown_ns=cfg.rule_cooldown_ns,
            retire_margin=cfg.veto_retire_margin,
        )
        counters: dict[str, int] = store.get_meta(_META_COUNTERS, {})
        self._version = int(store.get_meta(_META_VERSION, 0))
        self._reinforcements = int(counters.get("reinforcements", 0))
        self._last_run: dict[str, int | None] = {
            _EVOLVE: None,
            _ANALYZE: None,
            _MEMORY: None,
            **store.get_meta(_META_LAST_RUN, {}),
        }
        self._adapter.restore(
            self._last_run.get(_ADAPT),
            int(counters.get("adaptations", 0)),
            int(counters.get("adaptation_runs", 0)),
        )
        self._snapshot: LearnedState | None = None
        # The periodic memory pass writes its archive files in a background thread; the rows leave the
        # store when they are durable (finished before anything else reads or writes those tables).
        self._archiving: ArchiveJob | None = None
        self._archiver: ThreadPoolExecutor | None = None
        # Written-behind periodic work (see the durability contract): inside periodic() and on_bar(),
        # changes are marked unsaved instead of flushed; flush() records the market time it wrote.
        self._defer = False
        self._unsaved = False
        self._persisted_ns = self._clock.now_ns()
        if saved != cfg.model_dump(mode="json") and not self.read_only:
            store.set_meta(_META_CONFIG, cfg.model_dump(mode="json"))
        specs = list(market_specs.values()) if isinstance(market_specs, Mapping) else list(market_specs)
        if specs:
            self.seed_minimums(specs)

    def _saved_config(self, saved: Mapping[str, Any] | None) -> LearningConfig:
        """The config a store was written with; keys this version does not know are dropped (with a
        warning), missing ones take their defaults."""
        if saved is None:
            return LearningConfig()
        known = {k: v for k, v in saved.items() if k in LearningConfig.model_fields}
        if len(known) != len(saved):
            log.warning("ignoring unknown saved config keys %s", sorted(set(saved) - set(known)))
        return LearningConfig.from_mapping(known, where=f"{self.store_path}: saved config")

    # --- time and persistence ---------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def version(self) -> int:
        """Increases whenever the snapshot's content changes (see :class:`LearnedState`)."""
        return self._version

    def _now(self, now: int | None) -> int:
        if now is None:
            return self._clock.now_ns()
        self._advance(now)
        return int(now)

    def _advance(self, time_ns: int) -> None:
        clock = self._internal_clock
        if clock is not None and time_ns > clock.now_ns():
            clock.advance_to(time_ns)

    def _bump(self) -> None:
        self._version += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(
                "the learning manager is closed", where=str(self.store_path), fix="open a new one"
            )

    def flush(self) -> None:
        """Write everything pending in one transaction.

        Should it fail (``StateError``: disk full ...), everything stays pending: once the cause is
        fixed, the next flush (or close) writes it, once.
        """
        self._check_open()
        store = self._store
        # Keep the in-memory journal to the analysis window even if periodic() is never called.
        self._journal.prune(self._clock.now_ns())
        with store.transaction() as conn:
            # Each engine clears what it writes and hands over how to put it back should the
            # transaction roll back (a later statement failing, or the caller's transaction).
            on_rollback = store.on_rollback
            if self._unsaved:
                on_rollback(self._unsave)
            self._journal.flush(conn, on_rollback)
            patterns = self._patterns
            if patterns.unwritten:
                # Compacted in memory by reinforcement: written with the journal rows it covers.
                patterns.write(conn, on_rollback)
                store.set_meta(_META_PATTERNS_SEQ, self._compacted_seq)
            self._errors.flush(conn, on_rollback)
            self._minimums.flush(conn, on_rollback)
            self._adapter.flush(conn, on_rollback)
            self._strategy.flush(conn, on_rollback)
            self._failures.flush(conn, on_rollback)
            store.set_meta(_META_VERSION, self._version)
            store.set_meta(_META_CLOCK, self._clock.now_ns())
            store.set_meta(_META_RNG, self._rng.bit_generator.state)
            store.set_meta(
                _META_COUNTERS,
                {
                    "adaptations": self._adapter.adaptations,
                    "adaptation_runs": self._adapter.runs,
                    "reinforcements": self._reinforcements,
                },
            )
            store.set_meta(_META_LAST_RUN, {**self._last_run, _ADAPT: self._adapter.last_run_ns})
        self._unsaved = False
        self._persisted_ns = self._clock.now_ns()

    def _unsave(self) -> None:
        self._unsaved = True

    def _changed(self) -> None:
        """Write a change now, or, for periodic work, leave it to the next write (durability contract).

        A deferred write still prunes the in-memory journal as the write would have, so the windows the
        rules see do not depend on when the store is written.
        """
        if self._defer:
            self._journal.prune(self._clock.now_ns())
            self._unsaved = True
        else:
            self.flush()

    def compact(self) -> None:
        """Flush, then fold every pending pattern update into the store (one transaction)."""
        self._check_open()
        with self._store.transaction() as conn:
            self.flush()
            self._compact_patterns(conn)

    def _compact_patterns(self, conn: sqlite3.Connection | None) -> None:
        """Fold pending pattern updates into the patterns' statistics. With ``conn`` (the caller's
        transaction, which must also write the journal rows up to the watermark) they are written at
        once with their journal watermark; without, they are written by the next :meth:`flush`."""
        patterns = self._patterns
        written = conn is not None and patterns.unwritten
        if patterns.pending:
            # Before the write, which may fail: the fold holds anyway (kept for the next write).
            self._compacted_seq = self._journal.last_seq
            written = conn is not None
        patterns.compact(conn, None if conn is None else self._store.on_rollback)
        if written:
            self._store.set_meta(_META_PATTERNS_SEQ, self._compacted_seq)

    @property
    def trade_count(self) -> int:
        """Trades journaled (written or still buffered)."""
        return self._journal.total

    @property
    def unsaved(self) -> bool:
        """Whether learned changes wait for a write (trades, vetoes, compacted patterns, periodic work
        written behind): what a :meth:`flush` now would write. When the store is written does not
        change what is learned, so an owner with idle time may flush then (``HostedVecEnv`` does)."""
        return bool(
            self._unsaved or self._journal.pending or self._failures.pending or self._patterns.unwritten
        )

    @property
    def pending_trades(self) -> int:
        """Trades learned but not yet written to the store."""
        return self._journal.pending

    # --- trades ------------------------------------------------------------------------------------
    def learn_from_trade(self, trade: TradeResult) -> str:
        """Fold a closed trade into its pattern and journal it; returns the pattern signature.

        The signature is the sorted factors of the trade's entry signals, market conditions, timeframe
        alignment and volume profile. Buffered: see the module's durability contract. A ``StateError``
        from the write it may cause leaves the trade learned (and pending): do not feed it again.
        """
        if self._closed:
            self._check_open()
        pnl = trade.pnl
        if not math.isfinite(pnl):
            raise ValueError(f"trade {trade.trade_id}: pnl must be finite, got {pnl}")
        # This is the hot path (see benchmarks/bench_learning.py): no extra calls or allocations here.
        factors = self._discretizer.factors(
            trade.entry_signals, trade.market_conditions, trade.timeframe_alignment, trade.volume_profile
        )
        signature = FACTOR_SEPARATOR.join(factors)
        pid = self._patterns.observe(
            signature, pnl=pnl, entry_time_ns=trade.entry_time_ns, exit_time_ns=trade.exit_time_ns
        )
        journal = self._journal
        journal.append_trade(trade, pid, signature, factors, self._classifier.key(trade.market_conditions))
        clock = self._internal_clock
        if clock is not None and trade.exit_time_ns > clock.now_ns():
            clock.advance_to(trade.exit_time_ns)
        if self._patterns.pending >= self.config.compact_every:
            self.compact()
        elif journal.pending >= self.config.flush_every:
            self.flush()
        return signature

    def pattern(self, signature: str) -> PatternScore | None:
        """Current statistics of one pattern, or ``None`` if unknown or archived."""
        return self._patterns.get(signature)

    def pattern_count(self) -> int:
        """Active patterns, including those only in uncompacted trades."""
        return self._patterns.count()

    def patterns(self) -> list[PatternScore]:
        """Every active pattern, by signature (uncompacted trades included)."""
        return self._patterns.all()

    def trade_factors(self, trade: TradeResult) -> tuple[str, ...]:
        """The factors a trade's snapshots discretize to."""
        return self._discretizer.factors(
            trade.entry_signals, trade.market_conditions, trade.timeframe_alignment, trade.volume_profile
        )

    # --- errors ------------------------------------------------------------------------------------
    def learn_from_error(self, error: ErrorEvent, context: Mapping[str, object] | None = None) -> ErrorMatch:
        """Recognise an exchange error (or store it as a new pattern) and suggest a resolution.

        Minimum rejections teach order minimums through :meth:`learn_order_minimums`, not here.
        """
        self._check_open()
        self._advance(error.time_ns)
        match = self._errors.learn(error, context)
        self.flush()
        return match

    def choose_resolution(self, signature: str | ErrorEvent) -> Resolution:
        """The resolution to try for a known error pattern (epsilon-greedy on its success record)."""
        self._check_open()
        sig = signature if isinstance(signature, str) else self._errors.find(signature)
        if sig is None:
            raise KeyError("unknown error; learn_from_error() it first")
        return self._errors.choose(sig)

    def record_resolution(
        self, signature: str, resolution: Resolution | str, success: bool, now: int | None = None
    ) -> None:
        """Report whether ``resolution`` fixed the error ``signature``."""
        self._check_open()
        self._errors.record(signature, resolution, success, self._now(now))
        self.flush()

    def resolution_success_rate(
        self, signature: str | None = None, resolution: Resolution | str | None = None
    ) -> float:
        """Observed success share of attempts, for one pattern and/or resolution (0 with none)."""
        return self._errors.success_rate(signature, resolution)

    def error_patterns(self) -> list[ErrorPattern]:
        """Every known error pattern with its resolution attempts."""
        return self._errors.patterns()

    # --- minimums ----------------------------------------------------------------------------------
    def seed_minimums(self, specs: Iterable[MarketSpec] | Mapping[str, MarketSpec]) -> list[str]:
        """Start the order minimums from exchange specs; returns the symbols that changed."""
        self._check_open()
        items = list(specs.values()) if isinstance(specs, Mapping) else list(specs)
        changed = self._minimums.seed(items, self._clock.now_ns())
        if changed:
            self._bump()
            self.flush()
        return changed

    def learn_order_minimums(self, symbol: str, order_result: OrderResult) -> LearnedMinimum | None:
        """Learn from an order outcome: a minimum rejection raises the symbol's learned minimum to
        ``minimum_bump x`` the attempt. Returns the new minimum, or ``None`` when nothing was learned."""
        self._check_open()
        learned = self._minimums.learn(symbol, order_result)
        if learned is None:
            return None
        self._advance(order_result.time_ns)
        self._bump()
        self.flush()
        return learned

    def minimums(self) -> dict[str, LearnedMinimum]:
        return self._minimums.all()

    # --- market conditions -------------------------------------------------------------------------
    def adapt_to_market_conditions(
        self, now: int | None, conditions: Mapping[str, float]
    ) -> AdaptationOutcome:
        """Tighten or relax the adjustment of the current condition class (at most every
        ``adaptation_interval_minutes`` of market time)."""
        self._check_open()
        outcome = self._adapter.adapt(self._now(now), conditions, self._journal)
        if outcome.changed:
            self._bump()
            self._changed()
        return outcome

    def adjustments(self) -> dict[str, ConditionAdjustment]:
        return self._adapter.adjustments()

    @property
    def adaptations(self) -> int:
        return self._adapter.adaptations

    # --- strategy ----------------------------------------------------------------------------------
    def evolve_trading_strategy(self, now: int | None = None) -> EvolutionStep | None:
        """Boost the factors common among the winners of the evolution window (``None``: too few)."""
        self._check_open()
        t = self._now(now)
        step = self._strategy.evolve(t, self._journal.stats(t, self.config.evolution_window_ns))
        if step is not None:
            self._bump()
            self._changed()
        return step

    def reinforce_successful_behaviors(self, now: int | None = None) -> list[str]:
        """Boost the patterns of the window's top-percentile winning trades; returns the patterns changed."""
        self._check_open()
        t = self._now(now)
        targets = self._strategy.reinforcement_targets(
            self._journal.stats(t, self.config.reinforcement_window_ns)
        )
        if not targets:
            return []
        signatures = [e.signature for e in targets]
        boost = self.config.reinforcement_boost
        if self._defer:
            # Periodic work: compacted (boosting needs every pattern's statistics) and boosted in memory,
            # written behind with the rest (durability contract).
            self._compact_patterns(None)
            changed = self._patterns.boost(self._store.conn, signatures, boost)
            self._reinforced_trades(targets, changed)
            self._changed()
            return changed
        # One transaction: compaction, the boosts, and one write of everything pending (the journal rows
        # the compaction's watermark covers included).
        with self._store.transaction() as conn:
            self._compact_patterns(conn)
            changed = self._patterns.boost(conn, signatures, boost)
            self._reinforced_trades(targets, changed)
            self.flush()
        return changed

    def _reinforced_trades(self, targets: list[JournalEntry], changed: list[str]) -> None:
        self._journal.mark_reinforced(targets)
        self._reinforcements += len(targets)
        if changed:
            self._bump()

    def strategy_weights(self) -> dict[str, float]:
        return self._strategy.weights

    def evolution_history(self) -> list[EvolutionStep]:
        return self._strategy.history

    # --- failures ----------------------------------------------------------------------------------
    def analyze_failure_patterns(self, now: int | None = None) -> list[AvoidanceRule]:
        """Turn factors dominating the failure window's losing trades into avoidance rules."""
        self._check_open()
        t = self._now(now)
        rules = self._failures.analyze(t, self._journal.stats(t, self.config.failure_window_ns))
        if rules:
            self._bump()
            self._changed()
        return rules

    def record_veto(self, rule_id: str, time_ns: int | None = None, symbol: str = "") -> AvoidanceRule:
        """Count an entry that rule ``rule_id`` vetoed (buffered like trades: a veto can repeat every bar)."""
        if self._closed:
            self._check_open()
        rule = self._failures.record_veto(rule_id, self._now(time_ns), symbol)
        if self._failures.pending >= self.config.flush_every:
            self.flush()
        return rule

    def _baseline_win_rate(self, now: int) -> float | None:
        """Win rate of actual trades over the failure window ending at ``now`` (None: too few trades).

        Cached per (now, journal size): outcomes of many vetoes are reported at the same bar.
        """
        key = (now, self._journal.total)
        if self._baseline_cache is not None and self._baseline_cache[0] == key:
            return self._baseline_cache[1]
        window = self._journal.stats(now, self.config.failure_window_ns)
        rate = window.wins / window.trades if window.trades >= self.config.min_support else None
        self._baseline_cache = (key, rate)
        return rate

    def record_veto_outcome(
        self, rule_id: str, would_have_won: bool, time_ns: int | None = None
    ) -> AvoidanceRule:
        """Report what a vetoed entry would have done; a rule proven wrong often enough retires."""
        if self._closed:
            self._check_open()
        before = self._failures.get(rule_id)
        now = self._now(time_ns)
        rule = self._failures.record_outcome(rule_id, would_have_won, now, self._baseline_win_rate(now))
        if before is not None and before.active and not rule.active:
            log.info("avoidance rule retired: %s", rule.retire_reason)
            self._bump()
            self.flush()
        elif self._failures.pending >= self.config.flush_every:
            self.flush()
        return rule

    def rules(self, *, active_only: bool = False) -> list[AvoidanceRule]:
        return self._failures.rules(active_only=active_only)

    # --- memory ------------------------------------------------------------------------------------
    def manage_learning_memory(self, now: int | None = None) -> ArchiveResult:
        """Archive patterns not seen for more than ``archive_age_days``: move them out of the active
        patterns at once, into a durable queue whose rows go to Parquet files (then leave the queue).

        Called directly, the archive files are complete on return. From :meth:`periodic` and
        :meth:`on_bar`, a file is written (by a background thread, recorded at the next pass) only once
        a file's worth (``archive_chunk``) is queued; whatever is queued is also written when the
        archive is read and at close.

        An archive file that cannot be written raises ``StateError`` (naming the archive directory)
        once the move is committed: the patterns wait in the queue, to be written by a later pass.
        """
        self._check_open()
        t = self._now(now)
        cutoff = t - self.config.archive_age_ns
        # The previous batch's files are recorded first: an archive directory that cannot be written
        # stops the pass before it moves more patterns into the queue.
        self._record_archive()
        # One transaction for the compaction, the move to the queue and what the move changed.
        with self._store.transaction() as conn:
            self._compact_patterns(conn)  # its watermark's journal rows are written by the flush below
            ids = queue_stale_patterns(self._store, cutoff_ns=cutoff)
            self._patterns.forget(ids, self._store.on_rollback)
            self._journal.prune(t)
            if ids:
                self._bump()
            self.flush()
        files: tuple[str, ...] = ()
        if not self._defer:
            files = self._write_queue(t)
        elif queued_patterns(self._store) >= self.config.archive_chunk:
            job = self._start_archive(t, full_only=True, background=True)
            self._archiving = job
            # Inside a caller's transaction that rolls back, its rows leave the queue: the file is
            # not to be recorded (left unrecorded, like a crash's).
            self._store.on_rollback(lambda: self._drop_archive(job))
            files = job.result.files
        if ids:
            log.info("archived %d patterns%s", len(ids), f" to {', '.join(files)}" if files else "")
        return ArchiveResult(files, len(ids), tuple(ids))

    def _start_archive(self, t: int, *, full_only: bool, background: bool) -> ArchiveJob:
        return start_archive(
            self._store,
            self.archive_dir,
            now_ns=t,
            chunk=self.config.archive_chunk,
            full_only=full_only,
            submit=self._archive_writer().submit if background else None,
        )

    def _archive_writer(self) -> ThreadPoolExecutor:
        if self._archiver is None:
            self._archiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slf-archive")
        return self._archiver

    def _record_archive(self) -> None:
        """Record the background archive's files (waiting for them) and take their rows off the queue."""
        job = self._archiving
        if job is None:
            return
        self._archiving = None  # a job that failed is not retried: its rows stay queued for the next
        finish_archive(self._store, job)
        # Inside a caller's transaction that rolls back, the files are still to be recorded.
        self._store.on_rollback(lambda: setattr(self, "_archiving", job))

    def _drop_archive(self, job: ArchiveJob) -> None:
        job.wait()  # no writer left behind to race the next job for a file name
        if self._archiving is job:
            self._archiving = None

    def _write_queue(self, t: int) -> tuple[str, ...]:
        """Write every queued pattern to archive files now; returns the files."""
        self._record_archive()
        job = self._start_archive(t, full_only=False, background=False)
        finish_archive(self._store, job)
        return job.result.files

    def load_archive(self) -> list[PatternScore]:
        """Every archived pattern, read back from the archive files (checksums verified)."""
        if not self._closed and not self.read_only:
            self._write_queue(self._clock.now_ns())
        return load_archive(self._store, self.archive_dir)

    # --- periodic work -----------------------------------------------------------------------------
    def _due(self, name: str, now_ns: int, interval_ns: int) -> bool:
        last = self._last_run.get(name)
        if last is not None and now_ns - last < interval_ns:
            return False
        self._last_run[name] = now_ns
        return True

    def periodic(self, now: int | None = None) -> bool:
        """Run whatever periodic work is due at market time ``now``; returns whether the state changed.

        Evolution every ``evolution_interval_minutes``, reinforcement and failure analysis every
        ``analysis_interval_minutes``, memory management every ``memory_interval_minutes`` (market time).
        Evolution and analysis run only when trades have closed since their last run: their input is
        the trade journal, and running them again on the same trades would compound the same evidence.
        What they change is written behind (see the module's durability contract).
        """
        self._check_open()
        if self._defer:
            return self._periodic(now)
        self._defer = True
        try:
            return self._periodic(now)
        finally:
            self._defer = False

    def _periodic(self, now: int | None) -> bool:
        t = self._now(now)
        before = self._version
        ran = False
        cfg = self.config
        total = self._journal.total
        if self._fed.get(_EVOLVE) != total and self._due(_EVOLVE, t, cfg.evolution_interval_ns):
            ran = True
            self._fed[_EVOLVE] = total
            self.evolve_trading_strategy(t)
        if self._fed.get(_ANALYZE) != total and self._due(_ANALYZE, t, cfg.analysis_interval_ns):
            self._fed[_ANALYZE] = total
            ran = True
            self.reinforce_successful_behaviors(t)
            self.analyze_failure_patterns(t)
        if self._due(_MEMORY, t, cfg.memory_interval_ns):
            ran = True
            self.manage_learning_memory(t)
        journal = self._journal
        if ran:
            journal.prune(t)
            self._changed()
        if journal.pending >= cfg.flush_every or (
            self._unsaved and t - self._persisted_ns >= cfg.persist_interval_ns
        ):
            journal.prune(t)
            self.flush()
        return self._version != before

    def on_bar(self, now: int, conditions: Mapping[str, float] | None = None) -> bool:
        """Advance market time to a closed bar, adapt to its conditions (cadence-limited) and run the
        periodic work; returns whether the learned state changed (written behind, like periodic())."""
        self._check_open()
        before = self._version
        self._defer = True
        try:
            t = self._now(now)
            # Between adaptations (minute bars: 4 bars in 5) there is nothing to classify.
            if conditions is not None and self._adapter.due(t):
                self.adapt_to_market_conditions(t, conditions)
            self._periodic(t)
        finally:
            self._defer = False
        return self._version != before

    # --- tracking and reporting --------------------------------------------------------------------
    def track_learning_effectiveness(self, now: int | None = None) -> LearningEffectiveness:
        """Measure patterns, rules, resolutions, adaptations and trends; appended to the history."""
        self._check_open()
        t = self._now(now)
        win_rate, win_trend, profit_trend, mean_pnl = trends(self._journal.recent_pnls())
        rules = self._failures.rules()
        recorded = self._store.conn.execute("SELECT COALESCE(SUM(rows), 0) FROM archives").fetchone()[0]
        archived = int(recorded) + queued_patterns(self._store)
        measurement = LearningEffectiveness(
            time_ns=t,
            patterns=self.pattern_count(),
            archived_patterns=archived,
            trades=self._journal.total,
            avoidance_rules=sum(r.active for r in rules),
            retired_rules=sum(not r.active for r in rules),
            vetoes=self._failures.total_vetoes,
            error_patterns=len(self._errors),
            error_resolution_rate=self._errors.success_rate(),
            error_patterns_resolved=self._errors.resolved_share(),
            adaptations=self._adapter.adaptations,
            evolutions=len(self._strategy.history),
            reinforcements=self._reinforcements,
            win_rate=win_rate,
            win_rate_trend=win_trend,
            profit_trend=profit_trend,
            mean_pnl=mean_pnl,
        )
        if not self.read_only:
            with self._store.transaction() as conn:
                record(conn, measurement)
                self.flush()
        return measurement

    def build_report(self, now: int | None = None) -> LearningReport:
        """Everything the learning report shows (takes a fresh effectiveness measurement)."""
        effectiveness = self.track_learning_effectiveness(now)
        return LearningReport(
            effectiveness=effectiveness,
            history=load_history(self._store.conn),
            rules=self._failures.rules(),
            strategy_weights=self._strategy.weights,
            top_patterns=self._patterns.top(self.config.top_patterns),
            minimums=self._minimums.all(),
            error_patterns=self._errors.patterns(),
            adjustments=self._adapter.adjustments(),
        )

    def write_report(self, directory: Path, now: int | None = None) -> tuple[Path, Path]:
        """Write ``learning_report.md`` and ``learning_report.html`` into ``directory``."""
        return write_report(self.build_report(now), directory)

    # --- snapshot ----------------------------------------------------------------------------------
    def top_patterns(self, k: int | None = None) -> tuple[PatternScore, ...]:
        """The highest-weighted (reinforced) patterns, pending trades included."""
        return self._patterns.top(self.config.top_patterns if k is None else k)

    def most_traded_patterns(self, k: int = 20) -> tuple[PatternScore, ...]:
        """The patterns with the most trades (for inspection)."""
        return self._patterns.most_traded(k)

    def snapshot(self) -> LearnedState:
        """The learned state as an immutable, picklable :class:`LearnedState` (cached per version)."""
        self._check_open()
        if self._snapshot is not None and self._snapshot.version == self._version:
            return self._snapshot
        self._snapshot = LearnedState(
            version=self._version,
            time_ns=self._clock.now_ns(),
            rules=self._failures.active_rules(),
            # Shared with earlier snapshots while unchanged (none of them is ever changed in place).
            strategy_weights=self._strategy.weights_view,
            minimums=self._minimums.view(),
            condition_adjustments=self._adapter.view(),
            top_patterns=self.top_patterns(),
            classifier=self._classifier,
        )
        return self._snapshot

    # --- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Write everything pending and the archive files of the queued patterns, then close the store
        (idempotent).

        The learned state is written first. If that fails (``StateError``: disk full ...) the manager
        stays open, nothing lost: fix the cause and call :meth:`close` again. If then an archive file
        cannot be written (``StateError`` naming the archive directory), the store is closed anyway;
        the archived patterns wait in its archive queue, written by the next manager that closes it.
        """
        if self._closed:
            return
        if not self.read_only:
            self.compact()
        try:
            if not self.read_only:
                self._write_queue(self._clock.now_ns())
        finally:
            self._closed = True
            if self._archiver is not None:
                self._archiver.shutdown(wait=True)
            self._store.close()

    def __enter__(self) -> UniversalLearningManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UniversalLearningManager(root={str(self.root)!r}, version={self._version})"

    def describe(self) -> dict[str, Any]:
        """Counts for logs and the CLI."""
        return {
            "version": self._version,
            "patterns": self.pattern_count(),
            "trades": self._journal.total,
            "rules": len(self._failures.rules(active_only=True)),
            "error_patterns": len(self._errors),
            "minimums": len(self._minimums.all()),
        }
