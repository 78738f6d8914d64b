"""One exception tree for everything a user can get wrong or an exchange can refuse.

Every message names the thing at fault (file, row, column, key) and says how to fix it, on one line,
so that the CLI can print it without a traceback and exit 2.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "COUNTER_MAX",
    "DAMAGED_STATE_FIX",
    "INT64_MAX",
    "BrokerError",
    "ConfigError",
    "DataError",
    "RetryableBrokerError",
    "SlfError",
    "StateError",
    "did_you_mean",
    "finite_float",
    "saved_float",
    "saved_int",
]

INT64_MAX: Final = 2**63 - 1
"""Largest value of the compiled core's C integers (``Py_ssize_t``, ``long long``; 64-bit builds)."""
COUNTER_MAX: Final = 2**62
"""Largest count (bars, order sequence, slices) restored from saved state. The compiled core adds to its
counts in C integers, where a count past :data:`INT64_MAX` wraps around silently; from here that takes
2**62 more increments (never, in practice)."""

DAMAGED_STATE_FIX: Final = (
    "the saved state is damaged (or not from this version): restore a good copy of it, or start fresh "
    "with a new state directory"
)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` hint for a misspelled name, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SlfError(Exception):
    """Root of every error this project raises on purpose.

    Args:
        problem: what is wrong, in one sentence.
        where: the file, row, column or key at fault (joined in front of the problem).
        fix: what the user should do about it.
    """

    def __init__(self, problem: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.where = where
        self.fix = fix
        text = f"{where}: {problem}" if where else problem
        if fix:
            text = f"{text.rstrip('.')}. Fix: {fix}"
        super().__init__(" ".join(text.split()))


class DataError(SlfError):
    """Market data that cannot be used: a bad file, a bad row, a bad column."""


class ConfigError(SlfError):
    """A configuration value or CLI argument that is invalid."""


class StateError(SlfError):
    """Persisted state (learning store, bundle, run directory) that is missing, corrupt or foreign."""


class BrokerError(SlfError):
    """An order or account request that the broker refused; retrying the same request will not help."""

    def __init__(
        self,
        problem: str,
        *,
        where: str | None = None,
        fix: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(problem, where=where, fix=fix)
        self.code = code


class RetryableBrokerError(BrokerError):
    """A transient broker failure (rate limit, timeout, maintenance): the same request may succeed later."""


def _saved(state: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return state[key]
    except (KeyError, TypeError, IndexError):
        raise StateError(f"{key!r} is missing", where=where, fix=DAMAGED_STATE_FIX) from None


def saved_int(state: Mapping[str, Any], key: str, *, where: str, low: int = 0, high: int = INT64_MAX) -> int:
    """``state[key]`` of saved (JSON) state as an ``int`` in ``low..high``.

    A missing key, a value that is not an integer (``True``, ``"5"``, ``1.5``, ``nan``) or one outside the
    range raises :class:`StateError` naming the key. Checked on the Python value, before the compiled
    core stores it in a C integer (where a value past :data:`INT64_MAX` would be an ``OverflowError``), so
    both builds refuse the same values with the same message.
    """
    raw = _saved(state, key, where)
    # An integer, or a float with an integral value (1e19 from a JSON writer; not 1.5, nan or inf).
    integral = isinstance(raw, float) and raw.is_integer()
    value = (
        int(raw) if integral or (isinstance(raw, numbers.Integral) and not isinstance(raw, bool)) else None
    )
    if value is None or not low <= value <= high:
        raise StateError(
            f"{key}={raw!r} is not an integer in {low}..{high}", where=where, fix=DAMAGED_STATE_FIX
        )
    return value


def finite_float(value: Any) -> float | None:
    """``value`` as a finite ``float``, or ``None`` when it is not a real number (``True``, ``"1"``,
    ``None``), not finite (``nan``, ``inf``) or too large for a float (``10**400``)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def saved_float(state: Mapping[str, Any], key: str, *, where: str, low: float = -math.inf) -> float:
    """``state[key]`` of saved (JSON) state as a finite ``float`` >= ``low``.

    A missing key, a value that is not a number (``True``, ``"5"``), not finite (``nan``, ``inf``: money
    that would poison every later figure) or below ``low`` raises :class:`StateError` naming the key.
    """
    raw = _saved(state, key, where)
    value = finite_float(raw)
    if value is None or value < low:
        bound = "" if low == -math.inf else f" >= {low:g}"
        raise StateError(f"{key}={raw!r} is not a finite number{bound}", where=where, fix=DAMAGED_STATE_FIX)
    return value
