"""LearningConfig carries the seed's numbers; the discretizer bins any feature the same way everywhere."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from envs.errors import ConfigError
from learning.config import LearningConfig
from learning.discretize import NAN_LABEL, BinRule, ConditionClassifier, Discretizer


def test_config_defaults_are_the_seed_numbers() -> None:
    cfg = LearningConfig()
    assert cfg.win_rate_threshold == 0.45
    assert cfg.adaptation_interval_minutes == 5.0
    assert cfg.minimum_bump == 1.2
    assert (cfg.evolution_window_days, cfg.evolution_boost) == (7.0, 1.1)
    assert (cfg.reinforcement_percentile, cfg.reinforcement_boost) == (90.0, 1.2)
    assert (cfg.failure_window_days, cfg.failure_occurrence) == (3.0, 0.7)
    assert cfg.archive_age_days == 30.0


def test_config_is_frozen_rejects_unknown_fields_and_documents_every_field() -> None:
    cfg = LearningConfig()
    with pytest.raises(ValidationError):
        cfg.win_rate_threshold = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        LearningConfig(win_rate=0.5)  # type: ignore[call-arg]
    assert all(field.description for field in LearningConfig.model_fields.values())


def test_config_from_mapping_suggests_the_misspelled_key() -> None:
    with pytest.raises(ConfigError, match="did you mean 'win_rate_threshold'"):
        LearningConfig.from_mapping({"win_rate_treshold": 0.5})
    with pytest.raises(ConfigError, match="win_rate_threshold"):
        LearningConfig.from_mapping({"win_rate_threshold": 1.5})


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (29.999, "oversold"),
        (30.0, "weak"),
        (49.9, "weak"),
        (50.0, "strong"),
        (69.9, "strong"),
        (70.0, "overbought"),
    ],
)
def test_rsi_bands_put_an_edge_value_in_the_bin_above(value: float, label: str) -> None:
    assert Discretizer().factor("RSI_14", value) == f"RSI_14={label}"


@pytest.mark.parametrize(
    ("name", "value", "factor"),
    [
        ("macd_hist", -0.1, "macd_hist=neg"),
        ("macd_hist", 0.0, "macd_hist=zero"),
        ("breakout_20", 1.0, "breakout_20=up"),
        ("market_regime", 2.4, "market_regime=r2"),
        ("align_4h", -1.0, "align_4h=against"),
        ("rel_volume", 3.5, "rel_volume=extreme"),
        ("bb_pctb", 1.2, "bb_pctb=above"),
        ("some_zscore", -2.0, "some_zscore=neg_hi"),
        ("some_zscore", 0.3, "some_zscore=pos"),
        ("some_zscore", float("nan"), f"some_zscore={NAN_LABEL}"),
        ("some_zscore", float("inf"), f"some_zscore={NAN_LABEL}"),
    ],
)
def test_known_names_and_default_binning(name: str, value: float, factor: str) -> None:
    assert Discretizer().factor(name, value) == factor


def test_factors_are_sorted_deduplicated_and_first_value_wins() -> None:
    factors = Discretizer().factors({"rsi_14": 25.0, "macd_hist": 1.0}, {"rsi_14": 80.0, "a|b=c": 0.0})
    assert factors == ("a/b:c=zero", "macd_hist=pos", "rsi_14=oversold")


def test_custom_rules_and_descriptions() -> None:
    disc = Discretizer([BinRule("spread*", (1.0, 5.0), ("tight", "normal", "wide"))])
    assert disc.factor("spread_bps", 7.0) == "spread_bps=wide"
    assert disc.describe("spread_bps=normal") == "1 <= spread_bps < 5"
    assert Discretizer().describe("rsi_14=oversold") == "rsi_14 < 30"
    with pytest.raises(ValueError, match="labels"):
        BinRule("x", (1.0,), ("only-one",))


def test_discretizer_and_classifier_survive_pickling() -> None:
    clf = ConditionClassifier(Discretizer(), ("*regime*",))
    clone = pickle.loads(pickle.dumps(clf))
    conditions = {"regime": 1.0, "adx": 30.0}
    assert clone == clf
    assert clone.key(conditions) == clf.key(conditions) == "regime=r1"
    assert clf.key({"adx": 30.0}) == "adx=pos_hi"  # no regime feature: every condition decides
    assert clf.key({}) == "any"


@given(st.dictionaries(st.text(min_size=1, max_size=12), st.floats(allow_nan=True, allow_infinity=True)))
def test_discretizing_is_total_sorted_and_deterministic(features: dict[str, float]) -> None:
    disc = Discretizer()
    factors = disc.factors(features)
    assert list(factors) == sorted(factors)
    assert factors == Discretizer().factors(features)
    for name, value in features.items():
        label = disc.label(name, value)
        assert (label == NAN_LABEL) == (not math.isfinite(value))
