"""Normalization statistics: fitted on the training span only, applied without touching codes, persisted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.errors import ConfigError, DataError, StateError
from envs.features import FeatureConfig, FeatureMatrix, NormalizationStats, compute_features
from envs.features import columns as col
from tests.envs.test_features import random_bars

TRAIN_END = 900


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return random_bars(1200, seed=21)


@pytest.fixture(scope="module")
def matrix(bars: pd.DataFrame) -> FeatureMatrix:
    return compute_features(bars)


@pytest.fixture(scope="module")
def stats(matrix: FeatureMatrix) -> NormalizationStats:
    return NormalizationStats.fit(matrix, 0, TRAIN_END)


def with_rows(matrix: FeatureMatrix, rows: slice, values: float) -> FeatureMatrix:
    changed = matrix.values.copy()
    changed[rows] = values
    return replace(matrix, values=changed)


def same_stats(a: NormalizationStats, b: NormalizationStats) -> bool:
    return a.center.tobytes() == b.center.tobytes() and a.scale.tobytes() == b.scale.tobytes()


def test_stats_ignore_rows_outside_the_training_span(matrix: FeatureMatrix) -> None:
    fitted = NormalizationStats.fit(matrix, 400, TRAIN_END)
    before = with_rows(matrix, slice(0, 400), 1e6)
    after = with_rows(matrix, slice(TRAIN_END, None), -1e6)
    assert same_stats(NormalizationStats.fit(before, 400, TRAIN_END), fitted)
    assert same_stats(NormalizationStats.fit(after, 400, TRAIN_END), fitted)
    # ...and the check can fail: a row inside the span does move them.
    inside = with_rows(matrix, slice(500, 501), 1e3)
    assert not same_stats(NormalizationStats.fit(inside, 400, TRAIN_END), fitted)


def test_stats_do_not_change_when_later_bars_change(bars: pd.DataFrame, stats: NormalizationStats) -> None:
    later = bars.copy()
    later.iloc[TRAIN_END:, :5] *= 3.0
    assert same_stats(NormalizationStats.fit(compute_features(later), 0, TRAIN_END), stats)


def test_stats_skip_warmup_nans_and_standardize_the_span(
    matrix: FeatureMatrix, stats: NormalizationStats
) -> None:
    assert np.isfinite(stats.center).all()
    assert (stats.scale > 0).all()
    normalized = stats.apply(matrix).values[matrix.warmup : TRAIN_END].astype(np.float64)
    for j, name in enumerate(matrix.columns):
        if name in matrix.categorical or name == col.REL_VOLUME:  # heavy tail: clipped at 10 sigma
            continue
        assert abs(normalized[:, j].mean()) < 1e-3, name
        assert normalized[:, j].std() == pytest.approx(1.0, abs=1e-3), name


def test_categorical_columns_pass_through_bit_for_bit(
    matrix: FeatureMatrix, stats: NormalizationStats
) -> None:
    normalized = stats.apply(matrix)
    for name in matrix.categorical:
        assert normalized.column(name).tobytes() == matrix.column(name).tobytes(), name
    assert normalized.column(col.RSI).tobytes() != matrix.column(col.RSI).tobytes()


def test_applied_matrix_is_read_only_float32_clipped_and_keeps_nans(
    matrix: FeatureMatrix, stats: NormalizationStats
) -> None:
    spiky = with_rows(matrix, slice(1000, 1001), 1e9)
    normalized = stats.apply(spiky)
    assert normalized.values.dtype == np.float32
    assert normalized.values.flags.c_contiguous
    assert not normalized.values.flags.writeable
    numeric = [j for j, name in enumerate(matrix.columns) if name not in matrix.categorical]
    assert (normalized.values[1000, numeric] == np.float32(stats.clip)).all()
    assert np.array_equal(np.isnan(normalized.values), np.isnan(matrix.values))
    assert normalized.columns == matrix.columns
    assert normalized.warmup == matrix.warmup


def test_robust_stats_use_median_and_iqr(matrix: FeatureMatrix) -> None:
    robust = NormalizationStats.fit(matrix, 0, TRAIN_END, method="robust")
    j = matrix.position(col.RSI)
    rsi = matrix.values[matrix.warmup : TRAIN_END, j].astype(np.float64)
    assert robust.center[j] == pytest.approx(np.median(rsi))
    q25, q75 = np.percentile(rsi, [25, 75])
    assert robust.scale[j] == pytest.approx((q75 - q25) / 1.3489795, rel=1e-6)


def test_save_and_load_round_trip_exactly(
    tmp_path: Path, matrix: FeatureMatrix, stats: NormalizationStats
) -> None:
    path = tmp_path / "run" / "normalization.json"
    stats.save(path)
    loaded = NormalizationStats.load(path)
    assert same_stats(loaded, stats)
    assert loaded.columns == matrix.columns
    assert loaded.categorical == matrix.categorical
    assert loaded.feature_config == FeatureConfig().to_dict()
    assert loaded.fit_span == (0, TRAIN_END)
    assert loaded.apply(matrix).values.tobytes() == stats.apply(matrix).values.tobytes()
    assert [p.name for p in path.parent.iterdir()] == ["normalization.json"]  # no temp file left


def test_loading_against_other_columns_names_the_mismatch(
    tmp_path: Path, bars: pd.DataFrame, stats: NormalizationStats
) -> None:
    stats.save(tmp_path / "stats.json")
    other = compute_features(bars, FeatureConfig(higher_timeframes=(4, 8)))
    with pytest.raises(ConfigError, match=r"missing \['trend_dir_x16'\], unexpected \['trend_dir_x8'\]"):
        NormalizationStats.load(tmp_path / "stats.json").apply(other)


def test_same_columns_but_another_feature_config_is_refused(
    bars: pd.DataFrame, stats: NormalizationStats
) -> None:
    other = compute_features(bars, FeatureConfig(rsi_period=21))
    with pytest.raises(ConfigError, match=r"rsi_period: fitted 14 vs 21"):
        stats.apply(other)


def test_missing_or_foreign_files_raise_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not found"):
        NormalizationStats.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StateError, match="cannot read"):
        NormalizationStats.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(StateError, match="not a normalization statistics file"):
        NormalizationStats.load(tmp_path / "other.json")


@pytest.mark.parametrize(("start", "end"), [(-1, 10), (10, 10), (0, 10_000)])
def test_bad_training_span_is_refused(matrix: FeatureMatrix, start: int, end: int) -> None:
    with pytest.raises(ConfigError, match="training span"):
        NormalizationStats.fit(matrix, start, end)


def test_span_inside_the_warmup_has_nothing_to_fit(matrix: FeatureMatrix) -> None:
    with pytest.raises(DataError, match=r"rows \[0, 10\) end before the warm-up row 319"):
        NormalizationStats.fit(matrix, 0, 10)


def test_unknown_method_is_refused(matrix: FeatureMatrix) -> None:
    with pytest.raises(ConfigError, match="unknown normalization method 'minmax'"):
        NormalizationStats.fit(matrix, 0, TRAIN_END, method="minmax")
