"""``experiments.hints``: printed commands run as printed, with or without an activated venv."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from experiments import hints


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with ``.venv/bin/tensorboard``, as this interpreter's scripts directory."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    tool = bin_dir / "tensorboard"
    tool.write_text("#!/bin/sh\n", encoding="utf-8")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(hints, "_scripts_dir", lambda: bin_dir)
    monkeypatch.chdir(tmp_path)
    return bin_dir


def test_a_script_outside_path_is_named_by_its_path(venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert hints.shell_command("tensorboard", "--logdir", Path("runs/demo")) == (
        ".venv/bin/tensorboard --logdir runs/demo"
    )


def test_a_script_of_the_active_venv_is_named_bare(venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(venv))
    assert hints.shell_command("tensorboard", "--logdir", "runs/demo") == "tensorboard --logdir runs/demo"


def test_a_venv_outside_the_working_directory_is_named_absolutely(
    venv: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert hints.script("tensorboard") == str(venv / "tensorboard")


def test_arguments_are_quoted_for_the_shell(venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(venv))
    assert hints.shell_command("tensorboard", "--logdir", "my runs") == "tensorboard --logdir 'my runs'"
