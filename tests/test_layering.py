"""The one-way import rule of DESIGN.md: envs <- learning <- agents <- backtests <- experiments.

Checked statically on every module's import statements, so a violation fails even when the import is
lazy (inside a function), plus at run time for the promises users rely on (``import envs`` and
``slf --help`` never import torch).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["envs", "learning", "agents", "backtests", "experiments"]
# Third-party packages a layer must never import, even lazily.
FORBIDDEN = {
    "envs": {"torch", "stable_baselines3", "sb3_contrib"},
    "learning": {"torch", "stable_baselines3", "sb3_contrib", "gymnasium"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_layers_below_it(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    bad: list[str] = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        wrong = _imports(path) & (above | FORBIDDEN.get(layer, set()))
        bad.extend(f"{path.relative_to(ROOT)} imports {name}" for name in sorted(wrong))
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize(
    "code",
    [
        "import envs",
        "import learning",
        "from experiments.cli import main; main(['--help'])",
    ],
)
def test_light_entry_points_do_not_import_torch(code: str) -> None:
    check = f"import sys\n{code}\nassert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, cwd=ROOT)
