"""Experiment configuration: one YAML file validated by frozen pydantic models.

A :class:`RunConfig` describes one training experiment completely: the data and its splits, the
features, the environment, the algorithm, the learning manager and the training budget. Every section
rejects unknown keys; :func:`load_config` turns every validation problem into one
:class:`~envs.errors.ConfigError` line naming the file, the line, the full key path (``env.window``)
and, for a misspelled key, the closest valid one.

The *resolved* config (every default filled in) is what a run directory stores as ``config.yaml``; it
loads back to an equal object, so a run can be reproduced from its own directory::

    config = load_config("experiments/configs/ppo_eurusd_1h.yaml")
    write_config(config, run_dir / "config.yaml")
    assert load_config(run_dir / "config.yaml") == config

Relative data paths are read relative to the config file and stored absolute in the resolved config.
Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.policies import AlgoConfig
from agents.switches import LearningSwitches
from envs.broker import FaultConfig
from envs.core import DEFAULT_REBALANCE_BAND
from envs.errors import ConfigError, DataError
from envs.features import FeatureConfig, NormalizationMethod
from envs.market import MarketSpec, SlippageModel
from envs.replay import CONTINUOUS, DEFAULT_ACTIONS, LONG_ONLY_ACTIONS, MarketReplayEnv
from learning.config import LearningConfig

__all__ = [
    "AblationConfig",
    "Calendar",
    "DataConfig",
    "EnvConfig",
    "FaultsConfig",
    "FeaturesConfig",
    "LearningSection",
    "MarketOverrides",
    "RunConfig",
    "Span",
    "Splits",
    "SplitsConfig",
    "TrainConfig",
    "VecEnvKind",
    "apply_overrides",
    "config_to_yaml",
    "load_config",
    "parse_config",
    "write_config",
]

# One definition of each environment default: MarketReplayEnv's own signature.
_ENV_DEFAULTS: Final = {
    name: p.default
    for name, p in inspect.signature(MarketReplayEnv.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}
_FEATURE_DEFAULTS: Final = FeatureConfig()

DEFAULT_SPLITS: Final = (0.7, 0.15, 0.15)
"""Train, validation and test shares of the data when a config gives none."""
DEFAULT_EMBARGO_BARS: Final = 48
"""Bars left out between consecutive splits, so that no training reward or feature window of one
split reaches into the next (at least the default feature window)."""
DEFAULT_TIMESTEPS: Final = 100_000
DEFAULT_EVAL_EVERY: Final = 10_000
DEFAULT_CHECKPOINT_EVERY: Final = 10_000
_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Floating-point slack when checking that split shares add up to at most 1.
_SHARE_TOLERANCE: Final = 1e-9


class _Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- data ------------------------------------------------------------------------------------------

DateRange: TypeAlias = tuple[str, str]
SplitBound: TypeAlias = float | DateRange


class Calendar(StrEnum):
    """When the market trades, for annualizing per-bar statistics.

    ``auto``: 24/7 when the data has weekend bars, else trading days. ``always``: every day of the
    year (crypto). ``trading_days``: 252 trading days a year (stocks, FX)."""

    AUTO = "auto"
    ALWAYS = "24/7"
    TRADING_DAYS = "trading_days"


class Span(NamedTuple):
    """Rows ``[start, end)`` of the data."""

    start: int
    end: int

    def __len__(self) -> int:  # type: ignore[override]
        return self.end - self.start


class Splits(NamedTuple):
    """The three resolved, non-overlapping, ordered spans of a run."""

    train: Span
    validation: Span
    test: Span


def _split_bound(value: object, name: str) -> object:
    """Accept a share in (0, 1) or a ``[start, end)`` pair of times; anything else is refused here."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a share in (0, 1) or a [start, end] pair of dates, not {value!r}")
    if isinstance(value, int | float):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(f"{name}={value!r}: a share must be in (0, 1)")
        return float(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        start, end = (_timestamp(v, name) for v in value)
        if not start < end:
            raise ValueError(f"{name}: the start {value[0]!r} must be before the end {value[1]!r}")
        return (str(value[0]), str(value[1]))
    raise ValueError(f"{name} must be a share in (0, 1) or a [start, end] pair of dates, got {value!r}")


def _timestamp(value: object, name: str) -> int:
    """Epoch nanoseconds of a date or time (naive times are UTC)."""
    import pandas as pd

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name}: {value!r} is not a date such as '2017-06-01'")
    try:
        ts = pd.Timestamp(str(value))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: cannot read {value!r} as a date such as '2017-06-01'") from None
    if ts is pd.NaT:
        raise ValueError(f"{name}: {value!r} is not a date")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


class SplitsConfig(_Section):
    """Train, validation and test periods: shares of the data or date ranges, in time order.

    With shares, the boundaries fall at ``train`` and ``train + validation`` of the rows (from
    ``data.start`` to ``data.end``) and the test split runs from the second boundary for ``test`` of the
    rows. With date ranges (``[start, end)``, naive times are UTC), each split covers its range. Either
    way the validation split starts at least ``embargo`` bars after the end of the training split and
    the test split at least ``embargo`` bars after the end of the validation split; ranges that overlap
    are refused.
    """

    train: SplitBound = Field(
        default=DEFAULT_SPLITS[0],
        description="Training period: a share of the rows in (0, 1), or a [start, end) pair of dates.",
    )
    validation: SplitBound = Field(
        default=DEFAULT_SPLITS[1],
        description="Validation period (model selection, periodic evaluation): a share or a date pair.",
    )
    test: SplitBound = Field(
        default=DEFAULT_SPLITS[2],
        description="Held-out test period (reported only): a share or a date pair.",
    )
    embargo: int = Field(
        default=DEFAULT_EMBARGO_BARS,
        ge=0,
        description="Bars left out between train and validation and between validation and test.",
    )

    @field_validator("train", "validation", "test", mode="before")
    @classmethod
    def _bound(cls, value: object, info: Any) -> object:
        return _split_bound(value, info.field_name)

    @model_validator(mode="after")
    def _consistent(self) -> SplitsConfig:
        bounds = (self.train, self.validation, self.test)
        shares = [b for b in bounds if isinstance(b, float)]
        if shares and len(shares) != len(bounds):
            raise ValueError(
                "the splits mix shares and date ranges; give all three as shares (0.7, 0.15, 0.15) or all "
                "three as [start, end] date pairs"
            )
        if shares:
            if sum(shares) > 1.0 + _SHARE_TOLERANCE:
                raise ValueError(
                    f"the split shares add up to {sum(shares):g} > 1; lower train, validation or test"
                )
            return self
        ranges = typing.cast("list[DateRange]", list(bounds))
        names = ("train", "validation", "test")
        for (a, ra), (b, rb) in zip(
            zip(names, ranges, strict=True), zip(names[1:], ranges[1:], strict=True), strict=False
        ):
            if _timestamp(rb[0], b) < _timestamp(ra[1], a):
                raise ValueError(
                    f"{b} starts at {rb[0]} before {a} ends at {ra[1]}: splits must not overlap and "
                    "must follow each other in time (train, validation, test)"
                )
        return self

    def resolve(self, time_ns: npt.NDArray[np.int64], first: int, stop: int) -> Splits:
        """The row spans of the three splits within rows ``[first, stop)`` of bars at ``time_ns``.

        Raises:
            ConfigError: a split that is empty after the embargo, or a date range outside the data.
        """
        n = stop - first
        if isinstance(self.train, float):
            shares = typing.cast("tuple[float, float, float]", (self.train, self.validation, self.test))
            b1 = first + round(n * shares[0])
            b2 = first + round(n * (shares[0] + shares[1]))
            b3 = min(stop, first + round(n * sum(shares)))
            raw = [Span(first, b1), Span(b1, b2), Span(b2, b3)]
        else:
            raw = []
            for name, value in (("train", self.train), ("validation", self.validation), ("test", self.test)):
                lo, hi = (typing.cast("DateRange", value)[i] for i in (0, 1))
                s = int(np.searchsorted(time_ns, _timestamp(lo, name), side="left"))
                e = int(np.searchsorted(time_ns, _timestamp(hi, name), side="left"))
                raw.append(Span(max(s, first), min(e, stop)))
        train = raw[0]
        validation = Span(max(raw[1].start, train.end + self.embargo), raw[1].end)
        test = Span(max(raw[2].start, validation.end + self.embargo), raw[2].end)
        out = Splits(train, validation, test)
        for name, span in zip(Splits._fields, out, strict=True):
            if span.end <= span.start:
                raise ConfigError(
                    f"the {name} split is empty (rows {span.start}..{span.end} of {first}..{stop}, "
                    f"embargo {self.embargo} bars)",
                    where=f"data.splits.{name}",
                    fix="widen the split, shorten the embargo, or use more data",
                )
        return out


class DataConfig(_Section):
    """Where the bars come from and how they are divided."""

    dataset: str | None = Field(
        default=None,
        description="Name of a bundled or synthetic dataset (see `slf data list`); or give path.",
    )
    path: str | None = Field(
        default=None,
        description="CSV or Parquet file of OHLCV bars (relative paths are read from the config file's "
        "directory); or give dataset.",
    )
    symbol: str | None = Field(
        default=None, description="Symbol to trade in a multi-symbol file (a dataset knows its own)."
    )
    start: str | None = Field(
        default=None,
        description="First bar the splits divide (a date; earlier bars only warm up the features). "
        "Default: the first bar.",
    )
    end: str | None = Field(
        default=None,
        description="End (exclusive) of the bars the splits divide (a date). Default: the last bar.",
    )
    calendar: Calendar = Field(
        default=Calendar.AUTO,
        description="Trading calendar for annualized metrics: auto, 24/7 or trading_days.",
    )
    splits: SplitsConfig = Field(
        default_factory=lambda: SplitsConfig(),
        description="Train, validation and test periods with an embargo.",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, value: object, info: Any) -> object:
        if value is None:
            return None
        _timestamp(value, info.field_name)
        return str(value)

    @field_validator("dataset", mode="after")
    @classmethod
    def _known_dataset(cls, value: str | None) -> str | None:
        if value is not None:
            from envs.data import dataset_info

            try:
                dataset_info(value)
            except DataError as exc:
                raise ValueError(f"{exc.problem}; {exc.fix}") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.dataset is None) == (self.path is None):
            raise ValueError(
                "give exactly one data source; set data.dataset (a name from `slf data list`) or data.path "
                "(a CSV or Parquet file)"
            )
        if (
            self.start is not None
            and self.end is not None
            and _timestamp(self.start, "start") >= _timestamp(self.end, "end")
        ):
            raise ValueError(f"data.start {self.start} must be before data.end {self.end}")
        return self


# --- features --------------------------------------------------------------------------------------


def _feature_default(name: str) -> Any:
    return getattr(_FEATURE_DEFAULTS, name)


class FeaturesConfig(_Section):
    """The feature pipeline (:class:`envs.features.FeatureConfig`) and how observations are normalized.

    Periods count bars of the data's base timeframe.
    """

    rsi_period: int = Field(default=_feature_default("rsi_period"), description="Wilder RSI length.")
    macd: tuple[int, int, int] = Field(
        default=_feature_default("macd"), description="MACD (fast, slow, signal) EMA lengths, fast < slow."
    )
    bb_period: int = Field(default=_feature_default("bb_period"), description="Bollinger band SMA length.")
    bb_std: float = Field(
        default=_feature_default("bb_std"), description="Bollinger band width in standard deviations (> 0)."
    )
    breakout_period: int = Field(
        default=_feature_default("breakout_period"),
        description="Breakout compares the close with the high/low of this many prior bars.",
    )
    momentum_period: int = Field(
        default=_feature_default("momentum_period"), description="Momentum is the return over this many bars."
    )
    atr_period: int = Field(
        default=_feature_default("atr_period"), description="Average True Range length (Wilder)."
    )
    adx_period: int = Field(
        default=_feature_default("adx_period"), description="ADX length (trend strength)."
    )
    realized_vol_period: int = Field(
        default=_feature_default("realized_vol_period"),
        description="Bars of log returns in realized volatility.",
    )
    regime_vol_window: int = Field(
        default=_feature_default("regime_vol_window"),
        description="Bars of realized volatility whose rolling median is the usual volatility.",
    )
    regime_vol_threshold: float = Field(
        default=_feature_default("regime_vol_threshold"),
        description="Volatility is high when realized volatility / its rolling median exceeds this.",
    )
    regime_trend_threshold: float = Field(
        default=_feature_default("regime_trend_threshold"),
        description="The market is trending when ADX is at or above this (0-100).",
    )
    trend_period: int = Field(
        default=_feature_default("trend_period"),
        description="EMA length, in bars of each timeframe, of the trend direction.",
    )
    higher_timeframes: tuple[int, ...] = Field(
        default=_feature_default("higher_timeframes"),
        description="Multiples of the base timeframe on which trend direction is also measured.",
    )
    base_timeframe: str | None = Field(
        default=_feature_default("base_timeframe"),
        description="Base bar spacing as a pandas offset ('1min', '1h'); null infers it from the data.",
    )
    volume_period: int = Field(
        default=_feature_default("volume_period"), description="Bars in the mean volume of relative volume."
    )
    vwap_period: int = Field(
        default=_feature_default("vwap_period"),
        description="Bars in the rolling volume-weighted average price.",
    )
    vap_period: int = Field(
        default=_feature_default("vap_period"),
        description="Bars in the rolling volume-at-price distribution.",
    )
    normalization: NormalizationMethod = Field(
        default=NormalizationMethod.ZSCORE,
        description="How observations are scaled, fitted on the training split only: zscore or robust.",
    )

    @model_validator(mode="after")
    def _valid_pipeline(self) -> FeaturesConfig:
        try:
            self.feature_config()
        except ConfigError as exc:
            raise ValueError(f"{exc.problem}; {exc.fix}") from None
        return self

    def feature_config(self) -> FeatureConfig:
        """The :class:`FeatureConfig` of these fields."""
        values = self.model_dump(exclude={"normalization"})
        return FeatureConfig(**values)


# --- environment -----------------------------------------------------------------------------------


class FaultsConfig(_Section):
    """Per-order probabilities of injected exchange faults (0 = off), as in :class:`FaultConfig`."""

    rate_limit: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability of an HTTP 429 refusal.")
    timeout: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability of a timeout (not filled).")
    maintenance: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability of an HTTP 503 refusal.")

    @model_validator(mode="after")
    def _valid(self) -> FaultsConfig:
        try:
            self.fault_config()
        except ConfigError as exc:
            raise ValueError(f"{exc.problem}; {exc.fix}") from None
        return self

    def fault_config(self) -> FaultConfig:
        return FaultConfig(**self.model_dump())


class MarketOverrides(_Section):
    """Changes to the dataset's market spec (null keeps the dataset's value; see MarketSpec)."""

    taker_fee: float | None = Field(
        default=None, ge=0.0, lt=1.0, description="Taker fee, fraction of notional."
    )
    maker_fee: float | None = Field(
        default=None, ge=0.0, lt=1.0, description="Maker fee, fraction of notional."
    )
    spread_bps: float | None = Field(default=None, ge=0.0, description="Full quoted spread in basis points.")
    slippage_bps: float | None = Field(
        default=None, ge=0.0, description="Extra adverse move per order, in bps."
    )
    slippage_model: SlippageModel | None = Field(
        default=None, description="fixed or volume (square-root impact)."
    )
    impact_bps: float | None = Field(default=None, ge=0.0, description="Volume-impact coefficient in bps.")
    min_qty: float | None = Field(
        default=None, ge=0.0, description="Smallest base quantity the exchange accepts."
    )
    qty_step: float | None = Field(
        default=None, ge=0.0, description="Lot size; quantities are floored to it."
    )
    min_notional: float | None = Field(
        default=None, ge=0.0, description="Smallest order value (qty x price) the exchange accepts."
    )
    price_tick: float | None = Field(default=None, ge=0.0, description="Price increment.")

    def apply(self, spec: MarketSpec) -> MarketSpec:
        """``spec`` with the given fields replaced (validated by :class:`MarketSpec`)."""
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        if not changes:
            return spec
        return MarketSpec.from_dict({**spec.to_dict(), **changes})


class EnvConfig(_Section):
    """Options of :class:`envs.replay.MarketReplayEnv` for training and evaluation."""

    window: int = Field(
        default=_ENV_DEFAULTS["window"], ge=1, description="Bars of features in each observation."
    )
    actions: tuple[float, ...] | Literal["continuous"] = Field(
        default=DEFAULT_ACTIONS,
        description="Target positions (fractions of equity in [-1, 1]) of a discrete action space, or "
        "'continuous' for a Box target exposure. Default [-1, 0, 1], [0, 1] when allow_short is false.",
    )
    reward: Literal["log_return", "differential_sharpe"] = Field(
        default=_ENV_DEFAULTS["reward"], description="Reward: log_return or differential_sharpe."
    )
    episode_length: int | None = Field(
        default=_ENV_DEFAULTS["episode_length"],
        ge=1,
        description="Training episode length in bars, from random starts; null runs each episode from "
        "the start to the end of the training split. Evaluation always runs the whole split.",
    )
    initial_cash: float = Field(
        default=_ENV_DEFAULTS["initial_cash"], gt=0.0, description="Starting cash (quote)."
    )
    leverage: float = Field(
        default=_ENV_DEFAULTS["leverage"], gt=0.0, description="Cap on exposure per unit equity."
    )
    allow_short: bool = Field(
        default=_ENV_DEFAULTS["allow_short"], description="Whether short positions are allowed."
    )
    borrow_rate: float = Field(
        default=_ENV_DEFAULTS["borrow_rate"],
        ge=0.0,
        description="Per-bar borrow cost as a fraction of short notional.",
    )
    max_drawdown: float | None = Field(
        default=_ENV_DEFAULTS["max_drawdown"],
        gt=0.0,
        lt=1.0,
        description="End the episode after losing this fraction of its equity peak; null: never.",
    )
    rebalance_band: float = Field(
        default=DEFAULT_REBALANCE_BAND,
        ge=0.0,
        lt=1.0,
        description="No-trade band as a fraction of equity (smaller targets are flat).",
    )
    close_at_end: bool = Field(
        default=_ENV_DEFAULTS["close_at_end"], description="Close the position when an episode is truncated."
    )
    faults: FaultsConfig = Field(
        default_factory=lambda: FaultsConfig(), description="Injected exchange faults."
    )
    market: MarketOverrides = Field(
        default_factory=lambda: MarketOverrides(), description="Overrides of the dataset's market spec."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_actions(cls, data: Any) -> Any:
        # The default target set depends on allow_short: fill it in before validation, so the resolved
        # config states the actions the run really used.
        if isinstance(data, Mapping) and data.get("actions") is None:
            allow_short = data.get("allow_short", _ENV_DEFAULTS["allow_short"])
            data = {
                **data,
                "actions": list(DEFAULT_ACTIONS if allow_short is not False else LONG_ONLY_ACTIONS),
            }
        return data

    @field_validator("actions", mode="before")
    @classmethod
    def _actions(cls, value: object) -> object:
        if isinstance(value, str):
            if value != CONTINUOUS:
                raise ValueError(f"actions={value!r}: write a list of target positions or 'continuous'")
            return value
        if not isinstance(value, Sequence) or isinstance(value, bytes):
            raise ValueError(f"actions must be a list of target positions or 'continuous', got {value!r}")
        targets = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float) or not -1.0 <= item <= 1.0:
                raise ValueError(f"actions: {item!r} is not a target position in [-1, 1]")
            targets.append(float(item))
        if len(targets) < 2:
            raise ValueError("actions: give at least two target positions, e.g. [0, 1]")
        return tuple(targets)

    @model_validator(mode="after")
    def _shorts(self) -> EnvConfig:
        if not self.allow_short and isinstance(self.actions, tuple) and any(a < 0 for a in self.actions):
            raise ValueError(
                f"actions {list(self.actions)} include short targets but allow_short is false; "
                "use long-only actions such as [0, 1] or set allow_short: true"
            )
        return self


# --- learning --------------------------------------------------------------------------------------


class LearningSection(LearningSwitches):
    """The learning manager beside the policy: which of its effects apply, and its thresholds.

    The switches are those of :class:`agents.switches.LearningSwitches` (``enabled: false`` is the bare
    policy, the control arm of an ablation); ``config`` overrides fields of
    :class:`learning.config.LearningConfig` (the seed's values by default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: LearningConfig = Field(
        default_factory=lambda: LearningConfig(),
        description="Thresholds, windows and cadences of the learning manager (LearningConfig).",
    )

    def switches(self) -> LearningSwitches:
        """The switches alone."""
        return LearningSwitches(**self.model_dump(exclude={"config"}))


# --- training --------------------------------------------------------------------------------------


class VecEnvKind(StrEnum):
    """How the training environments run: in this process, one subprocess each, or all of them with the
    learning manager in one host process beside the policy (:class:`agents.hosted.HostedVecEnv`)."""

    DUMMY = "dummy"
    SUBPROC = "subproc"
    HOSTED = "hosted"


class TrainConfig(_Section):
    """The training budget, seeds, parallelism, evaluation and checkpoint cadence."""

    timesteps: int = Field(
        default=DEFAULT_TIMESTEPS, ge=1, description="Environment steps to train for (all envs)."
    )
    seeds: tuple[int, ...] = Field(
        default=(0,),
        min_length=1,
        description="One run per seed; a run is a pure function of config, seed, data.",
    )
    n_envs: int = Field(default=1, ge=1, description="Training environments stepped together.")
    vec_env: VecEnvKind = Field(
        default=VecEnvKind.DUMMY,
        description="dummy: the envs and the learning manager in the policy's process; subproc: one "
        "subprocess per env (the manager in the policy's process); hosted: the envs and the manager in one "
        "host process beside the policy, which learns on a second core while the policy computes (the same "
        "results as dummy, to the bit; needs 2 cores to be faster).",
    )
    eval_every: int = Field(
        default=DEFAULT_EVAL_EVERY,
        ge=0,
        description="Evaluate on the validation split every N environment steps, keeping the best model "
        "(0: never; the final model is evaluated anyway).",
    )
    eval_episodes: int = Field(
        default=1,
        ge=1,
        description="Episodes per periodic evaluation (each runs the whole validation split).",
    )
    checkpoint_every: int = Field(
        default=DEFAULT_CHECKPOINT_EVERY,
        ge=0,
        description="Save a resumable checkpoint every N environment steps (0: never).",
    )
    progress_bar: bool = Field(default=True, description="Show a progress bar while training.")

    @field_validator("seeds", mode="after")
    @classmethod
    def _seeds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 0 for s in value):
            raise ValueError(f"seeds {list(value)} must be integers >= 0")
        if len(set(value)) != len(value):
            raise ValueError(f"seeds {list(value)} repeat a seed; list each seed once")
        return value


class AblationConfig(_Section):
    """Train the same policy in several arms that differ only in the learning manager.

    Each arm trains into ``<runs>/<name>/<arm>/``: ``learning`` (manager on) and ``no_learning`` (off).
    """

    learning: tuple[bool, ...] = Field(
        default=(True, False),
        min_length=1,
        description="learning.enabled of each arm: [true, false] trains both arms.",
    )

    @field_validator("learning", mode="after")
    @classmethod
    def _distinct(cls, value: tuple[bool, ...]) -> tuple[bool, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"ablation arms {list(value)} repeat an arm")
        return value


class WalkForwardMode(StrEnum):
    """How a walk-forward window's training part moves: a fixed length, or from the first bar."""

    ROLLING = "rolling"
    EXPANDING = "expanding"


class WalkForwardConfig(_Section):
    """Walk-forward evaluation (``slf walkforward``): train on a window, test on the window after it.

    The bars from ``data.start`` to ``data.end`` are cut into ``windows + 1`` equal blocks; window
    ``i`` tests on block ``i + 1`` and trains on the block before it (``rolling``) or on every block
    before it (``expanding``), ending ``embargo`` bars before the test block. The last
    ``validation_share`` of the training part is the window's validation split (model selection);
    normalization is fitted on the rest. ``data.splits`` is not used.
    """

    windows: int = Field(default=4, ge=1, description="Number of train -> test windows.")
    mode: WalkForwardMode = Field(
        default=WalkForwardMode.ROLLING, description="rolling (fixed-length training) or expanding."
    )
    embargo: int = Field(
        default=DEFAULT_EMBARGO_BARS, ge=0, description="Bars left out between training and test."
    )
    validation_share: float = Field(
        default=0.15,
        gt=0.0,
        lt=1.0,
        description="Share of each window's training part held out for validation (model selection).",
    )


ARM_LEARNING: Final = "learning"
ARM_NO_LEARNING: Final = "no_learning"


def arm_name(enabled: bool) -> str:
    """Directory name of an ablation arm."""
    return ARM_LEARNING if enabled else ARM_NO_LEARNING


class RunConfig(_Section):
    """One experiment: data, features, environment, algorithm, learning manager and training."""

    name: Annotated[str, Field(pattern=_NAME_PATTERN)] = Field(
        ..., description="Experiment name: the run directory is <runs>/<name>/ (letters, digits, _ . -)."
    )
    data: DataConfig = Field(..., description="Bars and their train/validation/test splits.")
    features: FeaturesConfig = Field(
        default_factory=lambda: FeaturesConfig(), description="Feature pipeline."
    )
    env: EnvConfig = Field(default_factory=lambda: EnvConfig(), description="Trading environment options.")
    algo: AlgoConfig = Field(
        default_factory=lambda: AlgoConfig.model_validate({}),
        description="RL algorithm and its hyperparameters.",
    )
    learning: LearningSection = Field(
        default_factory=lambda: LearningSection(), description="Learning manager."
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(), description="Budget, seeds and cadences."
    )
    ablation: AblationConfig | None = Field(
        default=None,
        description="Train arms with and without the learning manager (null: one arm, as configured).",
    )
    walkforward: WalkForwardConfig | None = Field(
        default=None, description="Walk-forward windows for `slf walkforward` (null: not used)."
    )

    def arms(self) -> list[tuple[str | None, RunConfig]]:
        """``(arm name, config)`` per ablation arm; ``[(None, self)]`` without an ablation."""
        if self.ablation is None:
            return [(None, self)]
        out: list[tuple[str | None, RunConfig]] = []
        for enabled in self.ablation.learning:
            learning = self.learning.model_copy(update={"enabled": enabled})
            out.append((arm_name(enabled), self.model_copy(update={"learning": learning, "ablation": None})))
        return out

    def for_seed(self, seed: int) -> RunConfig:
        """The config of the single run with ``seed`` (what its run directory stores)."""
        train = self.train.model_copy(update={"seeds": (seed,)})
        return self.model_copy(update={"train": train})


# --- loading and writing ---------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})", mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    if not path.is_file():
        raise ConfigError(
            "config file not found" if not path.exists() else "is not a file",
            where=str(path),
            fix="give the path to a YAML config, e.g. experiments/configs/ppo_eurusd_1h.yaml",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config ({exc})", where=str(path), fix="check the file") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"invalid YAML: {problem}", where=where, fix="fix the YAML syntax at that line"
        ) from None
    return data, node


def _line_of(node: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """1-based line of the deepest node along ``path`` that the document has."""
    line = None
    current = node
    for part in path:
        if isinstance(current, yaml.MappingNode):
            match = next((kv for kv in current.value if kv[0].value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            current = match[1]
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            current = current.value[part]
            line = current.start_mark.line + 1
        else:
            break
    return line


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``), else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if origin is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = _type_name(args[0]) if args else "value"
        return f"list of {inner}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, StrEnum):
            return " or ".join(repr(m.value) for m in annotation)
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {"int": "integer", "float": "number", "str": "string", "bool": "true/false"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


class _Located(NamedTuple):
    path: tuple[str | int, ...]  # the real keys (and list indices) of the error's location
    model: type[BaseModel] | None  # the model holding the last key
    annotation: Any  # the annotation of the last key (None for an unknown key)


def _locate(root: type[BaseModel], loc: Sequence[str | int]) -> _Located:
    """Follow ``loc`` through the models, dropping pydantic's union-member tags."""
    path: list[str | int] = []
    model: type[BaseModel] | None = root
    holder: type[BaseModel] | None = root
    annotation: Any = root
    for part in loc:
        if model is not None:
            holder = model
            path.append(part)
            field = model.model_fields.get(str(part))
            if field is None:
                return _Located(tuple(path), holder, None)
            annotation = field.annotation
            model = _model_in(annotation)
        elif isinstance(part, int) or typing.get_origin(annotation) is dict:
            path.append(part)
    return _Located(tuple(path), holder, annotation)


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _config_error(exc: ValidationError, source: str, node: yaml.Node | None) -> ConfigError:
    """One ConfigError for the first problem of a validation error (the others are counted)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    located = _locate(RunConfig, first["loc"])
    key = _dotted(located.path)
    line = _line_of(node, located.path)
    where = f"{source}:{line}" if line is not None else source
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        valid = sorted(located.model.model_fields) if located.model is not None else []
        bad = str(located.path[-1])
        close = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
        parent = _dotted(located.path[:-1]) if len(located.path) > 1 else "the top level"
        if close:
            fix = f"did you mean {_dotted((*located.path[:-1], close[0]))!r}?"
        else:
            fix = f"remove it; valid keys of {parent}: {', '.join(valid)}"
        return ConfigError(f"unknown key {key!r}{more}", where=where, fix=fix)
    if first["type"] == "missing":
        return ConfigError(f"missing key {key!r}{more}", where=where, fix=f"add {key} to the config")
    message = str(first["msg"]).removeprefix("Value error, ")
    remedy: str | None = None
    if first["type"] == "value_error" and "; " in message:
        # Our validators write "problem; remedy".
        message, remedy = message.split("; ", 1)
    got = first.get("input")
    shown = "" if isinstance(got, Mapping) or first["type"] == "value_error" else f" (got {got!r})"
    if remedy is None:
        if located.annotation is not None and _model_in(located.annotation) is None:
            remedy = f"{key} expects {_type_name(located.annotation)}"
        else:
            remedy = f"see the field descriptions of {key} (experiments/config.py)"
    return ConfigError(f"key {key!r}: {message}{shown}{more}", where=where, fix=remedy)


def parse_config(
    data: Any, *, source: str = "config", node: yaml.Node | None = None, base_dir: Path | None = None
) -> RunConfig:
    """Validate a mapping (e.g. parsed YAML) into a :class:`RunConfig`.

    Args:
        data: the mapping.
        source: name of its origin for error messages (a file name).
        node: the YAML node tree, to name the line of a bad key.
        base_dir: directory that relative ``data.path`` values are read from.

    Raises:
        ConfigError: the first problem, naming ``source``, the line, the key path and the fix.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the config must be a mapping of sections, not {type(data).__name__}",
            where=source,
            fix="start with keys such as name:, data:, env:, algo:, train:",
        )
    section = data.get("data")
    if base_dir is not None and isinstance(section, Mapping) and isinstance(section.get("path"), str):
        path = Path(section["path"]).expanduser()
        if not path.is_absolute():
            data = {**data, "data": {**section, "path": str((base_dir / path).resolve())}}
    try:
        return RunConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise _config_error(exc, source, node) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config file.

    Raises:
        ConfigError: a missing file, a YAML syntax error (with its line) or an invalid config.
    """
    file = Path(path)
    data, node = _read_yaml(file)
    return parse_config(data, source=str(file), node=node, base_dir=file.parent)


def config_to_yaml(config: RunConfig) -> str:
    """The resolved config as YAML (every default filled in, sections in declaration order)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def write_config(config: RunConfig, path: str | Path) -> Path:
    """Write the resolved config to ``path`` (it loads back to an equal object)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(config_to_yaml(config), encoding="utf-8")
    return target


def apply_overrides(
    config: RunConfig, overrides: Mapping[str, Any], *, source: str = "overrides"
) -> RunConfig:
    """A new config with dotted keys replaced (``{"train.timesteps": 512}``), validated again.

    Raises:
        ConfigError: an unknown key or an invalid value, naming the dotted key.
    """
    data: dict[str, Any] = config.model_dump(mode="json")
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        target = data
        for part in parts[:-1]:
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"{part!r} is not a section", where=f"{source}: {dotted}", fix="override a leaf key"
                )
            target = child
        target[parts[-1]] = value
    return parse_config(data, source=source)


# Every FeatureConfig field must have its mirror here (checked by a test, kept cheap to read).
FEATURE_FIELDS: Final = tuple(f.name for f in dataclass_fields(FeatureConfig))
