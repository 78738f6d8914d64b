"""Is the learning working? Counts and trends, as a record, as TensorBoard scalars, and over time.

Trends compare the newer half of the latest ``trend_trades`` trades with the older half:
``win_rate_trend = win_rate(newer) - win_rate(older)`` and ``profit_trend = mean_pnl(newer) -
mean_pnl(older)``; positive means improving. With fewer than two trades both are 0.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["SCALAR_PREFIX", "LearningEffectiveness", "load_history", "record", "trends"]

SCALAR_PREFIX = "learning/"


@dataclass(frozen=True, slots=True)
class LearningEffectiveness:
    """One measurement of the learning manager's effectiveness.

    Attributes:
        time_ns: market time of the measurement.
        patterns: active trade patterns; archived_patterns: patterns moved to the archive.
        trades: trades journaled.
        avoidance_rules: active rules; retired_rules: retired ones; vetoes: entries vetoed by any rule.
        error_patterns: known error patterns.
        error_resolution_rate: share of reported resolution attempts that succeeded.
        error_patterns_resolved: share of error patterns with at least one successful resolution.
        adaptations: market-condition adjustments applied or relaxed; evolutions: strategy steps.
        reinforcements: trades whose pattern was reinforced.
        win_rate: win rate of the latest ``trend_trades`` trades.
        win_rate_trend / profit_trend: newer half minus older half (see module docstring).
        mean_pnl: mean PnL of the latest ``trend_trades`` trades.
    """

    time_ns: int
    patterns: int
    archived_patterns: int
    trades: int
    avoidance_rules: int
    retired_rules: int
    vetoes: int
    error_patterns: int
    error_resolution_rate: float
    error_patterns_resolved: float
    adaptations: int
    evolutions: int
    reinforcements: int
    win_rate: float
    win_rate_trend: float
    profit_trend: float
    mean_pnl: float

    def as_scalars(self) -> dict[str, float]:
        """Flat ``learning/<name>`` -> float mapping for TensorBoard (``time_ns`` left out)."""
        return {f"{SCALAR_PREFIX}{k}": float(v) for k, v in asdict(self).items() if k != "time_ns"}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _win_rate(pnls: Sequence[float]) -> float:
    return sum(p > 0.0 for p in pnls) / len(pnls) if pnls else 0.0


def _mean(pnls: Sequence[float]) -> float:
    return sum(pnls) / len(pnls) if pnls else 0.0


def trends(pnls: Sequence[float]) -> tuple[float, float, float, float]:
    """``(win_rate, win_rate_trend, profit_trend, mean_pnl)`` of PnLs given oldest first."""
    if len(pnls) < 2:
        return _win_rate(pnls), 0.0, 0.0, _mean(pnls)
    half = len(pnls) // 2
    older, newer = pnls[:half], pnls[half:]
    return (
        _win_rate(pnls),
        _win_rate(newer) - _win_rate(older),
        _mean(newer) - _mean(older),
        _mean(pnls),
    )


def record(conn: sqlite3.Connection, measurement: LearningEffectiveness) -> None:
    """Append a measurement to the ``effectiveness`` history (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO effectiveness (time_ns, metrics) VALUES (?, ?)",
        (measurement.time_ns, measurement.to_json()),
    )


def load_history(conn: sqlite3.Connection) -> list[LearningEffectiveness]:
    """Every recorded measurement, oldest first (unknown keys from other versions are ignored)."""
    fields = set(LearningEffectiveness.__dataclass_fields__)
    out: list[LearningEffectiveness] = []
    for (metrics,) in conn.execute("SELECT metrics FROM effectiveness ORDER BY id"):
        data = {k: v for k, v in json.loads(metrics).items() if k in fields}
        if set(data) == fields:
            out.append(LearningEffectiveness(**data))
    return out
