"""The learning manager: learns from every trade, error and market condition. Never imports torch,
SB3 or gymnasium.

The public names are loaded lazily, so that unpickling a :class:`LearnedState` inside an environment
subprocess imports only the small stdlib-only modules it needs (no sqlite3, numpy or pandas).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learning.conditions import AdaptationOutcome, MarketConditionAdapter
    from learning.config import LearningConfig
    from learning.discretize import BinRule, ConditionClassifier, Discretizer
    from learning.error_patterns import ErrorMatch, ErrorPattern, ErrorPatternLearner, Resolution
    from learning.failures import FailureAnalyzer
    from learning.manager import UniversalLearningManager
    from learning.memory import ArchiveResult
    from learning.minimums import OrderMinimumLearner
    from learning.patterns import PatternRecognitionEngine
    from learning.records import AvoidanceRule, ConditionAdjustment, LearnedMinimum, PatternScore
    from learning.state import LearnedState
    from learning.store import LearningStore
    from learning.strategy import EvolutionStep, StrategyOptimizer
    from learning.tracking import LearningEffectiveness

__all__ = [
    "AdaptationOutcome",
    "ArchiveResult",
    "AvoidanceRule",
    "BinRule",
    "ConditionAdjustment",
    "ConditionClassifier",
    "Discretizer",
    "ErrorMatch",
    "ErrorPattern",
    "ErrorPatternLearner",
    "EvolutionStep",
    "FailureAnalyzer",
    "LearnedMinimum",
    "LearnedState",
    "LearningConfig",
    "LearningEffectiveness",
    "LearningStore",
    "MarketConditionAdapter",
    "OrderMinimumLearner",
    "PatternRecognitionEngine",
    "PatternScore",
    "Resolution",
    "StrategyOptimizer",
    "UniversalLearningManager",
]

_HOME = {
    "AdaptationOutcome": "conditions",
    "MarketConditionAdapter": "conditions",
    "LearningConfig": "config",
    "BinRule": "discretize",
    "ConditionClassifier": "discretize",
    "Discretizer": "discretize",
    "ErrorMatch": "error_patterns",
    "ErrorPattern": "error_patterns",
    "ErrorPatternLearner": "error_patterns",
    "Resolution": "error_patterns",
    "FailureAnalyzer": "failures",
    "UniversalLearningManager": "manager",
    "ArchiveResult": "memory",
    "OrderMinimumLearner": "minimums",
    "PatternRecognitionEngine": "patterns",
    "AvoidanceRule": "records",
    "ConditionAdjustment": "records",
    "LearnedMinimum": "records",
    "PatternScore": "records",
    "LearnedState": "state",
    "LearningStore": "store",
    "EvolutionStep": "strategy",
    "StrategyOptimizer": "strategy",
    "LearningEffectiveness": "tracking",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'learning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"learning.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
