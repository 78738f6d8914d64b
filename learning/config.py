"""One frozen configuration for every mechanism of the learning manager.

Each threshold of the seed is a field here with the seed's value as its default; the additions that make
the seed's rules robust (minimum support, lift, weight bounds, exploration, hysteresis ...) sit beside
them. Every time window is in *market* time (bar timestamps through a :class:`envs.clock.Clock`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from envs.clock import DAY_NS, MINUTE_NS
from envs.errors import ConfigError
from learning.discretize import DEFAULT_CONDITION_GLOBS

__all__ = ["LearningConfig"]


class LearningConfig(BaseModel):
    """Thresholds, windows and cadences of the learning manager (seed values as defaults).

    Build from a mapping with :meth:`from_mapping` to get a :class:`~envs.errors.ConfigError` with a
    "did you mean" hint for misspelled keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- seed thresholds -------------------------------------------------------------------------
    win_rate_threshold: float = Field(
        default=0.45,
        gt=0.0,
        lt=1.0,
        description="Market-condition adaptation triggers when the win rate in similar conditions is "
        "below this (seed: 0.45).",
    )
    adaptation_interval_minutes: float = Field(
        default=5.0,
        gt=0.0,
        description="Adaptation runs at most once per this many market-minutes (seed: 5).",
    )
    minimum_bump: float = Field(
        default=1.2,
        gt=1.0,
        description="A rejected order's attempted size times this becomes the learned minimum (seed: x1.2).",
    )
    evolution_window_days: float = Field(
        default=7.0,
        gt=0.0,
        description="Strategy evolution looks at trades closed in the last N market days (seed: 7).",
    )
    evolution_boost: float = Field(
        default=1.1, gt=1.0, description="Weight multiplier for factors common among winners (seed: x1.1)."
    )
    reinforcement_percentile: float = Field(
        default=90.0,
        gt=0.0,
        lt=100.0,
        description="Trades at or above this PnL percentile (numpy 'linear' method) are reinforced "
        "(seed: top 10%).",
    )
    reinforcement_boost: float = Field(
        default=1.2, gt=1.0, description="Pattern weight multiplier for reinforced trades (seed: x1.2)."
    )
    failure_window_days: float = Field(
        default=3.0,
        gt=0.0,
        description="Failure analysis looks at trades closed in the last N market days (seed: 3).",
    )
    failure_occurrence: float = Field(
        default=0.7,
        gt=0.0,
        lt=1.0,
        description="A factor becomes an avoidance rule when its share among losing trades exceeds this "
        "(seed: 0.7).",
    )
    archive_age_days: float = Field(
        default=30.0,
        gt=0.0,
        description="Patterns not seen for more than N market days are archived (seed: 30).",
    )

    # --- additions -------------------------------------------------------------------------------
    min_support: int = Field(
        default=5,
        ge=1,
        description="Minimum number of trades behind any statistical rule (failure rules, common winner "
        "factors, reinforcement percentile).",
    )
    failure_min_winners: int = Field(
        default=5,
        ge=0,
        description="Failure analysis needs at least N winning trades in its window to compare losers "
        "against. With fewer, lift is noise: early in training, when costs make nearly every trade a loser, "
        "every common factor would otherwise become a rule and lock the policy out of the market.",
    )
    failure_significance: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="A failure factor must also be more frequent among losers than among winners beyond "
        "chance: one-sided Fisher exact test p-value below this (1.0 switches the test off).",
    )
    lift_threshold: float = Field(
        default=1.5,
        ge=1.0,
        description="A failure factor must be this many times more frequent among losers than among "
        "winners (winner share Laplace-smoothed: (k+1)/(n+2)).",
    )
    common_feature_share: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="A factor is 'common among winners' when present in at least this share of them.",
    )
    weight_min: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Lower bound of every strategy and pattern weight."
    )
    weight_max: float = Field(
        default=5.0, gt=1.0, description="Upper bound of every strategy and pattern weight."
    )
    pattern_learning_rate: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Step of a pattern's score towards +1 (win) or -1 (loss): an exponential average "
        "bounded in [-1, 1].",
    )
    reinforcement_window_days: float = Field(
        default=7.0,
        gt=0.0,
        description="Reinforcement ranks the trades closed in the last N market days; each trade is "
        "reinforced at most once.",
    )
    adaptation_lookback_days: float = Field(
        default=7.0,
        gt=0.0,
        description="Adaptation measures the win rate of trades in similar conditions over N market days.",
    )
    adaptation_min_trades: int = Field(
        default=10, ge=1, description="Adaptation needs at least this many trades in similar conditions."
    )
    hysteresis_margin: float = Field(
        default=0.05,
        ge=0.0,
        lt=0.5,
        description="Adjustments relax only when the win rate reaches threshold + margin.",
    )
    min_exposure_multiplier: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="Floor of the exposure multiplier applied in bad conditions.",
    )
    max_entry_threshold: float = Field(
        default=0.5,
        ge=0.0,
        lt=1.0,
        description="Ceiling of the entry threshold (minimum |signal| to open a position) in bad conditions.",
    )
    condition_features: tuple[str, ...] = Field(
        default=DEFAULT_CONDITION_GLOBS,
        description="Glob patterns (lower-case) of market-condition features that define a condition "
        "class; when none match, all condition features are used.",
    )
    exploration_rate: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Epsilon of the epsilon-greedy choice among error resolutions.",
    )
    error_similarity: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Token Jaccard similarity at which a new error message matches a known pattern.",
    )
    veto_retire_min_outcomes: int = Field(
        default=10,
        ge=1,
        description="A rule is judged after this many vetoes with a reported counterfactual.",
    )
    veto_retire_win_rate: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="A rule retires when the share of its vetoed trades that would have won exceeds this "
        "(an upper bound: see veto_retire_margin).",
    )
    veto_retire_margin: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="A rule also retires when its vetoed entries would have won more often than the "
        "recent win rate of actual trades (over the failure window) minus this margin: it no longer "
        "filters out clearly worse entries. Needs min_support trades in the window.",
    )
    rule_cooldown_days: float = Field(
        default=3.0,
        ge=0.0,
        description="A retired rule may be re-created from new evidence after N market days.",
    )
    evolution_interval_minutes: float = Field(
        default=60.0,
        gt=0.0,
        description="periodic() evolves strategy weights at most once per N market-minutes.",
    )
    analysis_interval_minutes: float = Field(
        default=60.0,
        gt=0.0,
        description="periodic() reinforces and analyses failures at most once per N market-minutes.",
    )
    memory_interval_minutes: float = Field(
        default=1440.0,
        gt=0.0,
        description="periodic() manages memory (archiving) at most once per N market-minutes.",
    )
    trend_trades: int = Field(
        default=100,
        ge=2,
        description="Win-rate and profit trends compare the newer and older halves of the last N trades.",
    )
    top_patterns: int = Field(default=20, ge=0, description="Number of top patterns carried in a snapshot.")
    flush_every: int = Field(
        default=256,
        ge=1,
        description="Trades are written to the store in batches of this size (and at periodic/close); a "
        "crash loses at most the unflushed batch.",
    )
    persist_interval_minutes: float = Field(
        default=1440.0,
        gt=0.0,
        description="What periodic() and on_bar() learn (evolution, failure rules, adaptations and their "
        "cadence) is written behind: at most once per N market-minutes, or with the next write. A crash "
        "loses at most that much of it (and the unflushed trades). Direct calls write at once.",
    )
    compact_every: int = Field(
        default=131_072,
        ge=1,
        description="Pattern statistics are compacted into the store once this many patterns have "
        "uncompacted trades (also before reads that need them and at close); until then the journal "
        "holds them and a restart replays it.",
    )
    archive_chunk: int = Field(
        default=200_000,
        ge=1,
        description="Maximum patterns per archive file. The periodic memory passes gather this many before "
        "a file is written (what has gathered is also written when the archive is read and at close).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the exploration generator.")

    @model_validator(mode="after")
    def _check_relations(self) -> LearningConfig:
        if self.win_rate_threshold + self.hysteresis_margin >= 1.0:
            raise ValueError("win_rate_threshold + hysteresis_margin must be < 1")
        return self

    # --- derived durations in nanoseconds ------------------------------------------------------
    @property
    def adaptation_interval_ns(self) -> int:
        return round(self.adaptation_interval_minutes * MINUTE_NS)

    @property
    def evolution_interval_ns(self) -> int:
        return round(self.evolution_interval_minutes * MINUTE_NS)

    @property
    def analysis_interval_ns(self) -> int:
        return round(self.analysis_interval_minutes * MINUTE_NS)

    @property
    def memory_interval_ns(self) -> int:
        return round(self.memory_interval_minutes * MINUTE_NS)

    @property
    def persist_interval_ns(self) -> int:
        return round(self.persist_interval_minutes * MINUTE_NS)

    @property
    def evolution_window_ns(self) -> int:
        return round(self.evolution_window_days * DAY_NS)

    @property
    def reinforcement_window_ns(self) -> int:
        return round(self.reinforcement_window_days * DAY_NS)

    @property
    def failure_window_ns(self) -> int:
        return round(self.failure_window_days * DAY_NS)

    @property
    def adaptation_lookback_ns(self) -> int:
        return round(self.adaptation_lookback_days * DAY_NS)

    @property
    def archive_age_ns(self) -> int:
        return round(self.archive_age_days * DAY_NS)

    @property
    def rule_cooldown_ns(self) -> int:
        return round(self.rule_cooldown_days * DAY_NS)

    @property
    def journal_window_ns(self) -> int:
        """How far back the in-memory trade journal must reach for every windowed rule."""
        return max(
            self.evolution_window_ns,
            self.reinforcement_window_ns,
            self.failure_window_ns,
            self.adaptation_lookback_ns,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "learning config") -> LearningConfig:
        """Validate a mapping (e.g. a YAML section), raising ``ConfigError`` that names the bad key."""
        known = set(cls.model_fields)
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(known))}"
                raise ConfigError(f"unknown key {key!r}", where=where, fix=hint)
        try:
            return cls(**dict(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(model)"
            raise ConfigError(
                f"{loc}: {first['msg']}", where=where, fix="see LearningConfig field descriptions"
            ) from exc
