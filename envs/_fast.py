"""Allocation helpers of the per-bar path: a new observation array and a new event record.

This module is the pure-Python definition. The compiled trading core (see ``setup.py``) does not call it:
``_fast.pxd`` holds C versions of the same functions, inlined into each compiled module that uses them
(through ``from envs cimport _fast``), which allocate the array or the record directly instead of going
through ``numpy.empty`` or ``tuple.__new__``. Both give equal results (``tests/envs/test_native.py``).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["new_observation", "new_record"]

_R = TypeVar("_R", bound=tuple[Any, ...])
_FLOAT32 = np.dtype(np.float32)


def new_observation(
    flat: npt.NDArray[np.float32], start: int, count: int, a: float, b: float, c: float
) -> npt.NDArray[np.float32]:
    """A new float32 array: ``flat[start:start + count]`` followed by ``a``, ``b`` and ``c``."""
    if start < 0 or count < 0 or start + count > len(flat):
        raise IndexError(f"window {start}:{start + count} is outside the {len(flat)} values")
    obs = np.empty(count + 3, _FLOAT32)
    obs[:count] = flat[start : start + count]
    obs[count] = a
    obs[count + 1] = b
    obs[count + 2] = c
    return obs


def new_record(cls: type[_R], values: tuple[Any, ...]) -> _R:
    """An instance of the tuple subclass ``cls`` (a NamedTuple record) holding ``values``, every field
    given in order (the record's own ``__new__``, with its defaults, is not run)."""
    return tuple.__new__(cls, values)
