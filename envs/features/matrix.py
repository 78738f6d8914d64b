"""The feature matrix: one read-only float32 array with named columns, shared by every environment."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from envs.features.columns import FEATURE_GROUPS
from envs.features.config import FeatureConfig

__all__ = ["FeatureMatrix"]


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """Features of every bar, computed once per dataset.

    Attributes:
        values: float32, shape ``(n_bars, n_features)``, C-contiguous and read-only.
        columns: feature names, in column order.
        index: the bars' open timestamps (the input's index).
        groups: group name -> column positions, in :data:`FEATURE_GROUPS` order (a plain dict so the
            matrix pickles; treat it as read-only).
        warmup: first row from which every feature is finite; earlier rows may hold NaN.
        categorical: columns holding codes or directions, which normalization leaves untouched.
        config: the configuration the features were computed with (``None`` if unknown).
    """

    values: npt.NDArray[np.float32]
    columns: tuple[str, ...]
    index: pd.DatetimeIndex
    groups: Mapping[str, tuple[int, ...]]
    warmup: int
    categorical: frozenset[str]
    config: FeatureConfig | None = None
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        # A read-only view: the matrix is shared by many environments and must not change under them.
        values = values.view()
        values.flags.writeable = False
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "groups", {g: tuple(p) for g, p in self.groups.items()})
        object.__setattr__(self, "categorical", frozenset(self.categorical))
        if values.ndim != 2 or values.shape != (len(self.index), len(self.columns)):
            raise ValueError(
                f"values of shape {values.shape} do not match {len(self.index)} rows x "
                f"{len(self.columns)} columns"
            )
        positions = {name: i for i, name in enumerate(self.columns)}
        if len(positions) != len(self.columns):
            raise ValueError(f"duplicate column names in {self.columns}")
        for group, cols in self.groups.items():
            if any(not 0 <= p < len(self.columns) for p in cols):
                raise ValueError(f"group {group!r} refers to a column position out of range: {cols}")
        unknown = sorted(self.categorical - positions.keys())
        if unknown:
            raise ValueError(f"categorical columns {unknown} are not columns of the matrix")
        if not 0 <= self.warmup <= len(self.index):
            raise ValueError(f"warmup {self.warmup} is outside 0..{len(self.index)}")
        object.__setattr__(self, "_positions", positions)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild through __init__ so an unpickled matrix (e.g. in a SubprocVecEnv worker) is read-only too.
        return (
            FeatureMatrix,
            (self.values, self.columns, self.index, self.groups, self.warmup, self.categorical, self.config),
        )

    def position(self, name: str) -> int:
        """Column position of feature ``name``; ``KeyError`` (with a suggestion) if there is none."""
        try:
            return self._positions[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.columns, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; columns are {list(self.columns)}"
            raise KeyError(f"no feature named {name!r}{hint}") from None

    def column(self, name: str) -> npt.NDArray[np.float32]:
        """Read-only view of one feature over all bars."""
        return self.values[:, self.position(name)]

    def snapshot(self, row: int) -> dict[str, dict[str, float]]:
        """Raw feature values at ``row``, by group: ``{group: {feature: value}}``.

        This is the entry snapshot a :class:`envs.events.TradeResult` carries.
        """
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f"row {row} is outside the matrix of {n} rows")
        line = self.values[row]
        return {
            group: {self.columns[p]: float(line[p]) for p in self.groups[group]}
            for group in FEATURE_GROUPS
            if group in self.groups
        }
