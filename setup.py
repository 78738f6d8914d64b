"""Build of the compiled trading core; everything else about the package is in pyproject.toml.

The per-bar path of the environment (``envs/portfolio.py``, ``envs/broker.py``, ``envs/core.py``,
``envs/cursor.py``) is plain Python. When Cython and a C compiler are available, those modules are also
compiled, with the C types declared beside them in ``.pxd`` files; the ``.py`` files stay the one source
and run interpreted wherever the compiled modules are missing, stale or switched off
(``SLF_PURE_PYTHON=1``; see ``envs/_native.py``). The arithmetic is the same IEEE double arithmetic in
both modes (no fused multiply-add, no fast-math), and a test compares their rollouts bit for bit.

Set ``SLF_BUILD_PURE=1`` to install without compiling. A failed compilation warns and installs the
pure-Python package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# envs/_native.py names the compiled modules and digests their sources (it checks them at import);
# loaded by path because the package itself cannot be imported before it is installed.
_spec = importlib.util.spec_from_file_location("_slf_native", ROOT / "envs" / "_native.py")
if _spec is None or _spec.loader is None:
    raise ImportError("envs/_native.py is missing: run the build from a complete source tree")
native = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(native)

DIRECTIVES = {
    "language_level": 3,
    # The C types come from the .pxd files only; the .py annotations are for mypy and readers.
    "annotation_typing": False,
    "binding": True,
    "embedsignature": True,
}
# Bit-identical to the interpreter: no contraction into fused multiply-adds, no fast-math.
CFLAGS = ["-O2", "-ffp-contract=off", "-fno-fast-math"]


class OptionalBuildExt(build_ext):
    """Compile the core if possible; otherwise warn and leave the pure-Python modules in charge."""

    def run(self) -> None:
        if not self.extensions:
            return
        # The record goes beside the compiled modules: the source tree (editable) or the build tree.
        record_path = Path(self.get_ext_fullpath(native.COMPILED_MODULES[0])).parent / native.BUILD_RECORD
        record_path.unlink(missing_ok=True)
        try:
            import numpy
            from Cython.Build import cythonize

            for ext in self.extensions:
                # .py -> .c, keeping setuptools' own extension objects
                ext.include_dirs.append(numpy.get_include())
                (done,) = cythonize([ext], compiler_directives=DIRECTIVES, quiet=True, force=True)
                ext.sources = done.sources
            super().run()
        except Exception as exc:  # a missing compiler or headers: the package still works, slower
            self._warn(exc)
            return
        record = {"modules": {m: native.source_digest(m, ROOT) for m in native.DIGESTED_MODULES}}
        record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)
            raise

    @staticmethod
    def _warn(exc: BaseException) -> None:
        print(
            f"warning: the compiled trading core was not built ({exc}); the pure-Python core is used "
            "(same results, slower). Install a C compiler and the Python headers, then reinstall.",
            file=sys.stderr,
        )


def extensions() -> list[Extension]:
    if os.environ.get("SLF_BUILD_PURE", "") not in ("", "0"):
        return []
    # Cythonized in OptionalBuildExt.run, where a failure falls back to the pure-Python package.
    return [
        Extension(
            m,
            [str(Path(*m.split(".")).with_suffix(".py"))],
            extra_compile_args=CFLAGS,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for m in native.COMPILED_MODULES
    ]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
