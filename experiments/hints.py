"""Commands the CLI prints for the user to run next (``tensorboard --logdir ...``), runnable as printed.

``make setup`` installs ``slf`` and ``tensorboard`` into ``.venv/bin`` without activating the virtual
environment, so a bare ``tensorboard`` is often not on ``PATH``. A hint names a console script bare only
when ``PATH`` finds this interpreter's own copy (the venv is active); otherwise it names that copy by its
path, relative to the working directory when it lies below it (``.venv/bin/tensorboard``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
from pathlib import Path

__all__ = ["script", "shell_command"]


def _scripts_dir() -> Path:
    """Where this interpreter's console scripts are installed (``.venv/bin`` for the project's venv)."""
    return Path(sysconfig.get_path("scripts"))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def script(name: str) -> str:
    """How to invoke the console script ``name`` from the current shell, as a path or a bare name."""
    own = _scripts_dir() / name
    found = shutil.which(name)
    if not own.is_file() or (found is not None and _same_file(Path(found), own)):
        return name
    relative = os.path.relpath(own, Path.cwd())
    if relative.startswith(os.pardir):
        return str(own)
    # A path with a slash runs as is; a bare relative name would be looked up on PATH again.
    return relative if os.sep in relative else os.path.join(os.curdir, relative)


def shell_command(name: str, *args: str | os.PathLike[str]) -> str:
    """``script(name)`` and its arguments, quoted for a POSIX shell."""
    return shlex.join([script(name), *(os.fspath(a) for a in args)])
