"""The discretizer's rules fit the project's own feature matrix: every column is binned by a rule meant
for it, and on real data no column collapses into one constant factor (which would carry no evidence)."""

from __future__ import annotations

import pytest

from envs.data import load_dataset
from envs.features import compute_features
from learning.discretize import DEFAULT_FALLBACK, Discretizer


@pytest.fixture(scope="module")
def matrix():  # type: ignore[no-untyped-def]
    return compute_features(load_dataset("eurusd_1h"))


def test_every_feature_column_has_a_dedicated_rule(matrix) -> None:  # type: ignore[no-untyped-def]
    discretizer = Discretizer()
    fallback = [name for name in matrix.columns if discretizer.rule_for(name) is DEFAULT_FALLBACK]
    assert fallback == []


def test_no_feature_collapses_into_a_single_factor_on_real_data(matrix) -> None:  # type: ignore[no-untyped-def]
    discretizer = Discretizer()
    rows = range(matrix.warmup, len(matrix), 7)
    labels: dict[str, set[str]] = {name: set() for name in matrix.columns}
    for row in rows:
        for group in matrix.snapshot(row).values():
            for name, value in group.items():
                labels[name].add(discretizer.label(name, value))
    constant = sorted(name for name, seen in labels.items() if len(seen) < 2)
    assert constant == []
