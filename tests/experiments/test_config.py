"""Experiment configs: shipped files, defaults, round trips, splits and one-line errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from envs.errors import ConfigError
from envs.features import FeatureConfig
from envs.replay import DEFAULT_WINDOW, LONG_ONLY_ACTIONS
from experiments.config import (
    FEATURE_FIELDS,
    FeaturesConfig,
    RunConfig,
    Span,
    SplitsConfig,
    apply_overrides,
    config_to_yaml,
    load_config,
    write_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
MINIMAL = "name: tiny\ndata:\n  dataset: eurusd_1h\n"


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def hourly_times(n: int) -> np.ndarray:
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)


# --- shipped configs and defaults ------------------------------------------------------------------


def test_the_shipped_configs_exist() -> None:
    names = {p.name for p in SHIPPED}
    assert names == {
        "ppo_eurusd_1h.yaml",
        "maskable_ppo_synth_btcusdt_1m.yaml",
        "dqn_googl_1d.yaml",
        "ablation_ppo_eurusd_1h.yaml",
        "walkforward_ppo_eurusd_1h.yaml",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
    written = write_config(config, tmp_path / "config.yaml")
    assert load_config(written) == config


def test_ablation_config_has_two_arms_differing_only_in_learning() -> None:
    config = load_config(CONFIGS / "ablation_ppo_eurusd_1h.yaml")
    arms = config.arms()
    assert [name for name, _ in arms] == ["learning", "no_learning"]
    on, off = (cfg for _, cfg in arms)
    assert on.learning.enabled
    assert not off.learning.enabled
    assert on.model_copy(update={"learning": off.learning}) == off
    assert on.ablation is None


def test_resolved_config_fills_every_default_and_reloads_equal(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    text = config_to_yaml(config)
    for key in ("splits:", "embargo:", "window:", "learning_rate:", "win_rate_threshold:", "timesteps:"):
        assert key in text
    assert config.env.window == DEFAULT_WINDOW
    assert load_config(write(tmp_path, text, "resolved.yaml")) == config


def test_long_only_default_actions_follow_allow_short(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "env:\n  allow_short: false\n"))
    assert config.env.actions == LONG_ONLY_ACTIONS


def test_features_section_mirrors_every_feature_config_field() -> None:
    mirrored = set(FeaturesConfig.model_fields) - {"normalization"}
    assert mirrored == set(FEATURE_FIELDS)
    assert FeaturesConfig().feature_config() == FeatureConfig()


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    seen.add(model)
    for field in model.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in seen:
                _models(candidate, seen)


def test_every_config_field_is_documented_and_every_section_forbids_unknown_keys() -> None:
    seen: set[type[BaseModel]] = set()
    _models(RunConfig, seen)
    assert len(seen) >= 10
    for model in seen:
        assert model.model_config.get("extra") == "forbid", model.__name__
        assert model.model_config.get("frozen") is True, model.__name__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ValueError, match="frozen"):
        config.train.timesteps = 5  # type: ignore[misc]


def test_relative_data_path_is_read_from_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "bars.csv").write_text("x", encoding="utf-8")
    config = load_config(write(tmp_path, "name: f\ndata:\n  path: bars.csv\n"))
    assert config.data.path == str((tmp_path / "bars.csv").resolve())


def test_overrides_replace_dotted_keys_and_revalidate(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    changed = apply_overrides(config, {"train.timesteps": 512, "algo.algo": "dqn"})
    assert changed.train.timesteps == 512
    assert changed.algo.algo.value == "dqn"
    with pytest.raises(ConfigError, match=r"train\.timestep.*did you mean 'train\.timesteps'"):
        apply_overrides(config, {"train.timestep": 1})


def test_for_seed_keeps_one_seed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "train:\n  seeds: [0, 1, 2]\n"))
    assert config.for_seed(1).train.seeds == (1,)


# --- errors --------------------------------------------------------------------------------------


def test_misspelled_key_names_file_line_path_and_closest_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "env:\n  windw: 8\n")
    assert "run.yaml:5" in message
    assert "'env.windw'" in message
    assert "did you mean 'env.window'?" in message


def test_misspelled_nested_learning_key_gets_full_path(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "learning:\n  config:\n    min_suport: 3\n")
    assert "'learning.config.min_suport'" in message
    assert "did you mean 'learning.config.min_support'?" in message


def test_misspelled_section_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "trian:\n  timesteps: 5\n")
    assert "did you mean 'train'?" in message


def test_unknown_key_without_a_close_match_lists_the_valid_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "train:\n  zzz: 5\n")
    assert "'train.zzz'" in message
    assert "timesteps" in message
    assert "seeds" in message


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "env:\n  window: many\n")
    assert "run.yaml:5" in message
    assert "'env.window'" in message
    assert "expects integer" in message
    assert "'many'" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "env:\n  window: [1, 2\n  reward: x\n")
    assert "run.yaml:" in message
    assert "invalid YAML" in message


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "env:\n  window: 8\n  window: 9\n")
    assert "duplicate key 'window'" in message
    assert "run.yaml:6" in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_dataset_suggests_the_closest(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: x\ndata:\n  dataset: eurusd_1hh\n")
    assert "'data.dataset'" in message
    assert "did you mean 'eurusd_1h'" in message


def test_unknown_algorithm_suggests_the_closest(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "algo:\n  algo: ppp\n")
    assert "'algo.algo'" in message
    assert "did you mean 'ppo'" in message


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("env:\n  actions: [0, 2]\n", "not a target position"),
        ("env:\n  allow_short: false\n  actions: [-1, 1]\n", "short targets"),
        ("env:\n  max_drawdown: 2\n", "env.max_drawdown"),
        ("train:\n  seeds: [1, 1]\n", "repeat a seed"),
        ("train:\n  seeds: []\n", "train.seeds"),
        ("train:\n  vec_env: threads\n", "train.vec_env"),
        ("features:\n  macd: [30, 20, 9]\n", "macd"),
        ("env:\n  faults:\n    timeout: 1.5\n", "env.faults.timeout"),
    ],
)
def test_invalid_values_are_one_line_errors(tmp_path: Path, extra: str, fragment: str) -> None:
    assert fragment in error_of(tmp_path, MINIMAL + extra)


def test_both_or_no_data_source_is_refused(tmp_path: Path) -> None:
    assert "exactly one data source" in error_of(tmp_path, "name: x\ndata:\n  calendar: auto\n")


def test_config_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping of sections" in error_of(tmp_path, "- a\n- b\n")


# --- splits ----------------------------------------------------------------------------------------


def test_share_splits_are_ordered_with_an_embargo_between_them() -> None:
    splits = SplitsConfig(train=0.6, validation=0.2, test=0.2, embargo=10).resolve(
        hourly_times(1000), 0, 1000
    )
    assert splits.train == Span(0, 600)
    assert splits.validation == Span(610, 800)
    assert splits.test == Span(810, 1000)


def test_share_splits_respect_the_data_bounds() -> None:
    splits = SplitsConfig(train=0.5, validation=0.25, test=0.25, embargo=0).resolve(
        hourly_times(1000), 200, 600
    )
    assert splits == (Span(200, 400), Span(400, 500), Span(500, 600))


def test_date_splits_resolve_to_rows_and_apply_the_embargo() -> None:
    times = hourly_times(24 * 30)
    config = SplitsConfig(
        train=("2024-01-01", "2024-01-11"),
        validation=("2024-01-11", "2024-01-21"),
        test=("2024-01-21", "2024-01-31"),
        embargo=5,
    )
    splits = config.resolve(times, 0, len(times))
    assert splits.train == Span(0, 240)
    assert splits.validation == Span(245, 480)
    assert splits.test == Span(485, 720)


def test_overlapping_date_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="must not overlap"):
        SplitsConfig(
            train=("2024-01-01", "2024-01-15"),
            validation=("2024-01-10", "2024-01-20"),
            test=("2024-01-21", "2024-01-31"),
        )


def test_mixed_shares_and_dates_are_refused() -> None:
    with pytest.raises(ValueError, match="mix shares and date ranges"):
        SplitsConfig(train=0.5, validation=("2024-01-10", "2024-01-20"), test=0.2)


def test_split_emptied_by_the_embargo_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"validation split is empty"):
        SplitsConfig(train=0.5, validation=0.01, test=0.2, embargo=50).resolve(hourly_times(1000), 0, 1000)


def test_splits_never_overlap_for_any_shares() -> None:
    rng = np.random.default_rng(0)
    times = hourly_times(500)
    for _ in range(200):
        shares = rng.dirichlet([1.0, 1.0, 1.0]) * rng.uniform(0.6, 1.0)
        if min(shares) < 0.05:
            continue
        embargo = int(rng.integers(0, 10))
        s = SplitsConfig(train=shares[0], validation=shares[1], test=shares[2], embargo=embargo)
        train, validation, test = s.resolve(times, 0, len(times))
        assert 0 <= train.start < train.end <= validation.start - embargo
        assert validation.end <= test.start - embargo
        assert test.end <= len(times)


def test_config_dataclass_fields_match_feature_config_defaults() -> None:
    defaults = FeatureConfig()
    section = FeaturesConfig()
    for f in dataclasses.fields(FeatureConfig):
        value: Any = getattr(section, f.name)
        assert value == getattr(defaults, f.name), f.name
