"""Run directories: where one training run writes everything it produces, and nothing else.

Layout (``<runs>`` is ``--runs-dir``, ``runs`` by default)::

    <runs>/<name>/[<arm>/]<algo>-seed<k>/
        config.yaml            the resolved config of this run (one seed; loads back equal)
        command.txt            the command lines that produced it (one per start or resume)
        versions.json          python, numpy, torch, stable-baselines3, gymnasium, pandas, this package
        run.json               status, data reference (dataset, rows, digest), split rows and times
        normalization.json     observation normalization, fitted on the training split only
        tensorboard/           SB3 scalars (train/*, rollout/*, eval/*) and learning/*, trading/*
        checkpoints/           the latest resumable checkpoint (model, replay buffer, learning state)
        evaluations.npz        periodic validation results (SB3 EvalCallback format)
        model.zip              the final model
        best_model.zip         the model with the best validation reward
        best_learned_state.pkl the learned snapshot the best model was evaluated with (learning on)
        learning/state.sqlite  the learning manager's store (its storage root is the run directory)
        learned_state.json     the final learned snapshot, readable
        metrics.json           validation and test metrics of the final and the best model

``<arm>`` is ``learning`` or ``no_learning`` for an ablation config and absent otherwise. ``slf learning
show <run dir>`` reads the learning store while or after a run writes it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import platform
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from envs.errors import StateError

if TYPE_CHECKING:
    from learning.state import LearnedState

__all__ = [
    "DEFAULT_RUNS_DIR",
    "RunPaths",
    "find_runs",
    "load_learned",
    "package_versions",
    "quiet_learning_logs",
    "read_json",
    "run_dir_for",
    "save_learned",
    "write_json",
]

DEFAULT_RUNS_DIR: Final = "runs"
PACKAGE: Final = "self-learning-flow"
LEARNING_LOGGER: Final = "learning"
# Distributions whose versions decide a run's numbers, in the order versions.json lists them.
VERSIONED: Final = (
    "numpy",
    "torch",
    "stable-baselines3",
    "sb3-contrib",
    "gymnasium",
    "pandas",
    "pydantic",
    PACKAGE,
)


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The files of one run directory (see the module docstring)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def command(self) -> Path:
        return self.root / "command.txt"

    @property
    def versions(self) -> Path:
        return self.root / "versions.json"

    @property
    def info(self) -> Path:
        return self.root / "run.json"

    @property
    def normalization(self) -> Path:
        return self.root / "normalization.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations.npz"

    @property
    def model(self) -> Path:
        return self.root / "model.zip"

    @property
    def best_model(self) -> Path:
        return self.root / "best_model.zip"

    @property
    def best_learned_state(self) -> Path:
        return self.root / "best_learned_state.pkl"

    @property
    def learned_state(self) -> Path:
        return self.root / "learned_state.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    def create(self) -> None:
        """Make the directory; refuse one that already holds a run (resume it instead)."""
        if self.root.exists() and any(self.root.iterdir()):
            raise StateError(
                "the run directory already holds a run",
                where=str(self.root),
                fix="resume it with --resume, pick another --name, or remove the directory",
            )
        self.root.mkdir(parents=True, exist_ok=True)

    def check_resumable(self) -> None:
        """Raise :class:`StateError` unless this looks like a run directory."""
        if not self.root.is_dir():
            raise StateError(
                "no such run directory", where=str(self.root), fix="give a directory that `slf train` made"
            )
        if not self.config.is_file():
            raise StateError(
                f"is not a run directory (no {self.config.name})",
                where=str(self.root),
                fix="give a run directory such as runs/<name>/<algo>-seed<k>",
            )

    def append_command(self, argv: Sequence[str]) -> None:
        """Record the command line that started or resumed the run."""
        with self.command.open("a", encoding="utf-8") as fh:
            fh.write(shlex.join(argv) + "\n")


def run_dir_for(runs_dir: Path, name: str, arm: str | None, algo: str, seed: int) -> Path:
    """``<runs>/<name>/[<arm>/]<algo>-seed<seed>``."""
    base = runs_dir / name
    if arm is not None:
        base = base / arm
    return base / f"{algo}-seed{seed}"


def find_runs(root: Path) -> list[Path]:
    """Every run directory at or below ``root`` (directories holding a ``config.yaml``), sorted."""
    return sorted(p.parent for p in root.rglob("config.yaml") if p.parent.name != "checkpoints")


def package_versions() -> dict[str, str]:
    """Versions of Python and of the distributions that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def save_learned(state: LearnedState, path: Path) -> None:
    """Pickle a learned snapshot (a run's own file; small, immutable, stdlib-only classes)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(state, fh)
    os.replace(tmp, path)


def load_learned(path: Path) -> LearnedState | None:
    """A snapshot written by :func:`save_learned`, or ``None`` when there is none.

    Like SB3 model files this is a pickle: load only run directories you trust.
    """
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        state: LearnedState = pickle.load(fh)
    return state


def quiet_learning_logs() -> None:
    """Keep the learning manager's per-event INFO lines (archiving, rule changes) out of a progress bar.

    Left alone with ``slf -v`` (root logger at DEBUG); everything is also in TensorBoard and the store.
    """
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger(LEARNING_LOGGER).setLevel(logging.WARNING)


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (a crash leaves the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, allow_nan=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path) -> Any:
    """Read a JSON file of a run directory.

    Raises:
        StateError: a missing or unreadable file.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError("file not found", where=str(path), fix="check the run directory") from None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read ({exc})", where=str(path), fix="check the run directory") from None
