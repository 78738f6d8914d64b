"""Normalization statistics fitted on a training span only, stored with the run.

Fitting reads rows ``[start, end)`` of the matrix and nothing else, so the statistics cannot leak the
validation or test period. Codes and directions (the matrix's ``categorical`` columns) pass through
unchanged. Saved as JSON with the column names and the feature config, so loading them against a matrix
computed differently fails loudly instead of scaling the wrong columns.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.errors import ConfigError, DataError, StateError
from envs.features.matrix import FeatureMatrix

__all__ = ["DEFAULT_CLIP", "NormalizationMethod", "NormalizationStats"]

DEFAULT_CLIP = 10.0
"""Normalized values are clipped to +-this many scale units, so a data spike cannot dominate a network."""

_FORMAT = "slf.feature-normalization"
_VERSION = 1
# IQR of a standard normal distribution: dividing by it makes the robust scale comparable to a std.
_NORMAL_IQR = 1.3489795003921634


class NormalizationMethod(StrEnum):
    """``zscore``: mean and standard deviation. ``robust``: median and IQR / 1.349."""

    ZSCORE = "zscore"
    ROBUST = "robust"


@dataclass(frozen=True, eq=False)
class NormalizationStats:
    """Per-column centre and scale: ``normalized = clip((x - center) / scale, -clip, clip)``.

    Attributes:
        columns: the feature names the statistics belong to, in matrix order.
        center: per-column centre (0 for categorical columns).
        scale: per-column scale, > 0 (1 for categorical and constant columns).
        categorical: columns left untouched.
        method: how centre and scale were estimated.
        clip: bound of the normalized values.
        fit_span: the ``[start, end)`` rows they were fitted on.
        fit_times: ISO timestamps of the first and last row actually fitted (provenance).
        feature_config: the feature configuration of the fitted matrix, as a plain dict.
    """

    columns: tuple[str, ...]
    center: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    categorical: frozenset[str]
    method: NormalizationMethod
    clip: float
    fit_span: tuple[int, int]
    fit_times: tuple[str, str]
    feature_config: dict[str, Any] | None

    @classmethod
    def fit(
        cls,
        matrix: FeatureMatrix,
        start: int,
        end: int,
        *,
        method: NormalizationMethod | str = NormalizationMethod.ZSCORE,
        clip: float = DEFAULT_CLIP,
    ) -> NormalizationStats:
        """Estimate the statistics from rows ``[start, end)`` of ``matrix``, skipping warm-up rows.

        Raises:
            ConfigError: a span outside the matrix, an unknown method or a bad clip.
            DataError: a span that ends before the matrix's warm-up row.
        """
        n = len(matrix)
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= n):
            raise ConfigError(
                f"training span [{start}, {end}) is not a non-empty range of rows within 0..{n}",
                where="normalization",
                fix="fit on the training split's rows, e.g. NormalizationStats.fit(matrix, warmup, split)",
            )
        try:
            method = NormalizationMethod(method)
        except ValueError:
            raise ConfigError(
                f"unknown normalization method {method!r}",
                where="normalization",
                fix=f"use one of {[m.value for m in NormalizationMethod]}",
            ) from None
        if not (math.isfinite(clip) and clip > 0):
            raise ConfigError(f"clip={clip!r} must be > 0", where="normalization", fix="use e.g. 10")

        # Only rows the policy will see: from the warm-up on, where every feature is finite.
        first = max(start, matrix.warmup)
        if first >= end:
            raise DataError(
                f"rows [{start}, {end}) end before the warm-up row {matrix.warmup}: nothing to fit",
                where="normalization",
                fix=f"make the training span reach past row {matrix.warmup}",
            )
        span = matrix.values[first:end].astype(np.float64)
        center = np.zeros(len(matrix.columns))
        scale = np.ones(len(matrix.columns))
        for j, name in enumerate(matrix.columns):
            if name not in matrix.categorical:
                center[j], scale[j] = _estimate(span[:, j], method)
        return cls(
            columns=matrix.columns,
            center=center,
            scale=scale,
            categorical=matrix.categorical,
            method=method,
            clip=float(clip),
            fit_span=(start, end),
            fit_times=(matrix.index[first].isoformat(), matrix.index[end - 1].isoformat()),
            feature_config=matrix.config.to_dict() if matrix.config is not None else None,
        )

    def check(self, matrix: FeatureMatrix) -> None:
        """Raise :class:`ConfigError` unless ``matrix`` has the fitted columns and feature config."""
        if tuple(matrix.columns) != self.columns:
            missing = [c for c in self.columns if c not in matrix.columns]
            extra = [c for c in matrix.columns if c not in self.columns]
            detail = f"missing {missing}, unexpected {extra}" if missing or extra else "in a different order"
            raise ConfigError(
                f"the matrix's feature columns differ from the fitted ones: {detail}",
                where="normalization stats",
                fix="compute the features with the feature config the statistics were fitted with, or refit",
            )
        if matrix.config is not None and self.feature_config is not None:
            current = matrix.config.to_dict()
            differing = sorted(
                k
                for k in current.keys() | self.feature_config.keys()
                if current.get(k) != self.feature_config.get(k)
            )
            if differing:
                changes = ", ".join(
                    f"{k}: fitted {self.feature_config.get(k)!r} vs {current.get(k)!r}" for k in differing
                )
                raise ConfigError(
                    f"the matrix was computed with a different feature config ({changes})",
                    where="normalization stats",
                    fix="use the feature config stored with the statistics, or refit",
                )

    def apply(self, matrix: FeatureMatrix) -> FeatureMatrix:
        """A new read-only float32 matrix with every non-categorical column normalized and clipped.

        NaN stays NaN; categorical columns are copied bit for bit.
        """
        self.check(matrix)
        numeric = [j for j, name in enumerate(self.columns) if name not in self.categorical]
        out = np.array(matrix.values, dtype=np.float32, order="C", copy=True)
        if numeric:
            block = matrix.values[:, numeric].astype(np.float64)
            block -= self.center[numeric]
            block /= self.scale[numeric]
            np.clip(block, -self.clip, self.clip, out=block)  # NaN passes through clip unchanged
            out[:, numeric] = block
        return FeatureMatrix(
            values=out,
            columns=matrix.columns,
            index=matrix.index,
            groups=matrix.groups,
            warmup=matrix.warmup,
            categorical=matrix.categorical,
            config=matrix.config,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; floats are written with ``repr`` so they load back exactly."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "method": self.method.value,
            "clip": self.clip,
            "fit_span": list(self.fit_span),
            "fit_times": list(self.fit_times),
            "columns": list(self.columns),
            "categorical": sorted(self.categorical),
            "center": [float(x) for x in self.center],
            "scale": [float(x) for x in self.scale],
            "feature_config": self.feature_config,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics as JSON, atomically (a crash leaves the old file or the new one)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NormalizationStats:
        """Read statistics written by :meth:`save`.

        Raises:
            StateError: a missing, unreadable or foreign file.
        """
        where = str(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StateError(
                "normalization statistics not found", where=where, fix="fit and save them"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(
                f"cannot read normalization statistics ({exc})", where=where, fix="refit and save them"
            ) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise StateError(
                "not a normalization statistics file", where=where, fix="point to a file saved by the run"
            )
        if data.get("version") != _VERSION:
            raise StateError(
                f"normalization statistics version {data.get('version')!r} is not {_VERSION}",
                where=where,
                fix="refit the statistics with this version",
            )
        try:
            columns = tuple(str(c) for c in data["columns"])
            center = np.asarray(data["center"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            stats = cls(
                columns=columns,
                center=center,
                scale=scale,
                categorical=frozenset(str(c) for c in data["categorical"]),
                method=NormalizationMethod(data["method"]),
                clip=float(data["clip"]),
                fit_span=(int(data["fit_span"][0]), int(data["fit_span"][1])),
                fit_times=(str(data["fit_times"][0]), str(data["fit_times"][1])),
                feature_config=data["feature_config"],
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise StateError(
                f"normalization statistics are incomplete ({exc!r})", where=where, fix="refit and save them"
            ) from None
        if not (len(center) == len(scale) == len(columns)) or not np.all(scale > 0):
            raise StateError(
                "normalization statistics are inconsistent (lengths or scales)",
                where=where,
                fix="refit and save them",
            )
        return stats


def _estimate(col: npt.NDArray[np.float64], method: NormalizationMethod) -> tuple[float, float]:
    if method is NormalizationMethod.ROBUST:
        q25, center, q75 = np.percentile(col, [25.0, 50.0, 75.0])
        scale = (q75 - q25) / _NORMAL_IQR
        if not scale > 0:  # more than half the values equal: fall back to the standard deviation
            scale = float(np.std(col))
    else:
        center, scale = float(np.mean(col)), float(np.std(col))
    # A constant column carries no information to scale; leave its spread as it is.
    return float(center), float(scale) if math.isfinite(scale) and scale > 0 else 1.0
