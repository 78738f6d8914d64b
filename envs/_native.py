"""Which build of the trading core runs: the compiled one, or the pure-Python sources.

The per-bar path (``envs/portfolio.py``, ``envs/broker.py``, ``envs/core.py``, ``envs/cursor.py``) is
compiled by ``setup.py`` when Cython and a C compiler are there, with C types from the ``.pxd`` file next
to each module. The ``.py`` files stay the one source: both builds give the same results, bit for bit.
The only code of the compiled build not in them is ``_fast.pxd``: C versions of the two allocation
helpers of ``_fast.py``.

Python imports a compiled module even when its ``.py`` has been edited since, which would silently run
old code. So when :mod:`envs` is imported, :func:`select` compares each module's source with the digest
recorded when it was built (``_native_build.json``). If any module changed (or was never built, or
``SLF_PURE_PYTHON=1`` is set) the four modules are all imported from their ``.py`` files (they are compiled
against each other's layouts, so it is all or none), with a warning naming the fix when the build is stale.

This file imports nothing from the package: ``setup.py`` loads it by path to record the digests.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

__all__ = [
    "BUILD_RECORD",
    "COMPILED_MODULES",
    "DIGESTED_MODULES",
    "PURE_ENV",
    "compiled",
    "select",
    "source_digest",
    "status",
]

COMPILED_MODULES: Final = ("envs.portfolio", "envs.broker", "envs.core", "envs.cursor")
"""The modules of the compiled core (setup.py builds exactly these)."""
DIGESTED_MODULES: Final = (*COMPILED_MODULES, "envs._fast")
"""Sources whose digests a build records: the compiled modules and the C helpers they inline
(``_fast.pxd``; ``_fast.py`` is their pure-Python definition and is not compiled itself)."""
PURE_ENV: Final = "SLF_PURE_PYTHON"
"""Set to 1 to run the pure-Python core even where the compiled one is built."""
BUILD_RECORD: Final = "_native_build.json"
"""Written beside the compiled modules by setup.py: the source digest of each."""

_PACKAGE_DIR: Final = Path(__file__).resolve().parent
_state: dict[str, str] = {}


def source_digest(module: str, root: Path | None = None) -> str:
    """sha256 of a compiled module's ``.py`` and ``.pxd`` sources (``root``: the directory holding
    the package, by default the one this file is in)."""
    base = (root or _PACKAGE_DIR.parent).joinpath(*module.split("."))
    h = hashlib.sha256()
    for suffix in (".py", ".pxd"):
        path = base.with_suffix(suffix)
        h.update(suffix.encode())
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()


def _compiled_file(module: str) -> Path | None:
    stem = module.rsplit(".", 1)[-1]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _PACKAGE_DIR / f"{stem}{suffix}"
        if path.exists():
            return path
    return None


def _decide() -> tuple[str, list[str]]:
    """(``"compiled"``, ``"pure: <why>"``), and the modules whose build no longer matches its source."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"pure: {PURE_ENV} is set", []
    missing = [m for m in COMPILED_MODULES if _compiled_file(m) is None]
    if len(missing) == len(COMPILED_MODULES):
        return "pure: not compiled (no C compiler or Cython at install time)", []
    try:
        recorded = json.loads((_PACKAGE_DIR / BUILD_RECORD).read_text(encoding="utf-8"))["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    stale = [m for m in DIGESTED_MODULES if m in missing or recorded.get(m) != source_digest(m)]
    if stale:
        return "pure: the compiled build is older than its sources", stale
    return "compiled", []


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the core's modules from their ``.py`` files, ahead of any compiled module."""

    def __init__(self, modules: Sequence[str]) -> None:
        self._modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._modules:
            return None
        source = _PACKAGE_DIR.joinpath(*fullname.split(".")[1:]).with_suffix(".py")
        return importlib.util.spec_from_file_location(fullname, source)


def select() -> str:
    """Decide which build runs (once per process, before the core's modules are imported); return it."""
    if _state:
        return _state["build"]
    build, stale = _decide()
    _state["build"] = build
    if build != "compiled":
        if any(m in sys.modules for m in COMPILED_MODULES):  # pragma: no cover - import order bug
            raise ImportError("envs._native.select() must run before the trading core is imported")
        sys.meta_path.insert(0, _SourceFirst(COMPILED_MODULES))
    if stale:
        warnings.warn(
            f"the compiled trading core is older than its sources ({', '.join(stale)} changed since it "
            "was built); running the pure-Python core (same results, slower). Fix: reinstall "
            "(`make setup`, or `pip install -e .`) to rebuild it.",
            RuntimeWarning,
            stacklevel=3,
        )
    return build


def status() -> str:
    """``"compiled"``, or ``"pure: <why>"`` (the build this process runs)."""
    return select()


def compiled() -> bool:
    """Whether this process runs the compiled trading core."""
    return select() == "compiled"
