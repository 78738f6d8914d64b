"""Causal features: computed once per dataset, vectorized, into a read-only float32 matrix.

Four groups, named like the entry snapshot of :class:`envs.events.TradeResult`: entry signals, market
conditions (with the trend/range x volatility regime), timeframe alignment (from completed higher bars
only) and volume profile. Row t uses bars <= t only. Normalization statistics are fitted on a training
span and stored with the run.

    matrix = compute_features(bars)                      # FeatureConfig() defaults
    stats = NormalizationStats.fit(matrix, matrix.warmup, train_end)
    observations = stats.apply(matrix)
"""

from envs.features.columns import (
    ENTRY_SIGNALS,
    FEATURE_GROUPS,
    MARKET_CONDITIONS,
    TIMEFRAME_ALIGNMENT,
    VOLUME_PROFILE,
    feature_layout,
    trend_dir_column,
)
from envs.features.config import FeatureConfig
from envs.features.matrix import FeatureMatrix
from envs.features.normalize import DEFAULT_CLIP, NormalizationMethod, NormalizationStats
from envs.features.pipeline import OHLCV_COLUMNS, compute_features, min_rows
from envs.features.regime import Regime

__all__ = [
    "DEFAULT_CLIP",
    "ENTRY_SIGNALS",
    "FEATURE_GROUPS",
    "MARKET_CONDITIONS",
    "OHLCV_COLUMNS",
    "TIMEFRAME_ALIGNMENT",
    "VOLUME_PROFILE",
    "FeatureConfig",
    "FeatureMatrix",
    "NormalizationMethod",
    "NormalizationStats",
    "Regime",
    "compute_features",
    "feature_layout",
    "min_rows",
    "trend_dir_column",
]
