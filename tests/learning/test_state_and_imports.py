"""LearnedState is small, immutable, picklable and light to unpickle; `learning` never imports torch/SB3."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from learning import LearnedState
from learning.manager import UniversalLearningManager

from .conftest import MACD_NEG, MACD_POS, RSI_OVERSOLD, RSI_STRONG, START_NS, make_trade


def _state_with_a_rule(manager: UniversalLearningManager) -> LearnedState:
    for n in range(10):
        manager.learn_from_trade(make_trade(n, -1.0, signals={**RSI_OVERSOLD, **MACD_NEG}))
        manager.learn_from_trade(make_trade(100 + n, 1.0, signals={**RSI_STRONG, **MACD_POS}))
    manager.analyze_failure_patterns(START_NS)
    return manager.snapshot()


def test_snapshot_is_frozen_versioned_and_cached(manager: UniversalLearningManager) -> None:
    empty = manager.snapshot()
    assert empty.version == 0
    assert empty.rules == ()
    assert manager.snapshot() is empty  # unchanged version: same object
    state = _state_with_a_rule(manager)
    assert state.version > empty.version
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.version = 0  # type: ignore[misc]


def test_snapshot_round_trips_through_pickle(manager: UniversalLearningManager) -> None:
    state = _state_with_a_rule(manager)
    blob = pickle.dumps(state)
    clone = pickle.loads(blob)
    assert clone == state
    assert clone.vetoes({"rsi_14": 10.0}) == state.vetoes({"rsi_14": 10.0}) == ("avoid:rsi_14=oversold",)
    assert len(blob) < 10_000
    assert isinstance(clone.to_dict()["rules"][0]["factor"], str)


def test_unpickling_a_snapshot_imports_no_store_and_no_heavy_library(
    manager: UniversalLearningManager, tmp_path: Path
) -> None:
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps(_state_with_a_rule(manager)))
    code = (
        "import pickle, sys\n"
        f"state = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "assert state.vetoes({'rsi_14': 10.0})\n"
        "heavy = {'sqlite3', '_sqlite3', 'numpy', 'pandas', 'pyarrow', 'pydantic', 'torch', 'envs'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_learning_does_not_import_torch_or_stable_baselines3() -> None:
    code = (
        "import sys\n"
        "import learning\n"
        "from learning import UniversalLearningManager, LearnedState, LearningConfig\n"
        "import learning.manager, learning.report, learning.memory\n"
        "print(sorted({'torch', 'stable_baselines3', 'sb3_contrib'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_learning_sources_never_import_torch_sb3_or_gymnasium() -> None:
    import learning

    package = Path(learning.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        for banned in ("import torch", "stable_baselines3", "import gymnasium", "from gymnasium"):
            assert banned not in text, f"{source.name} mentions {banned}"
