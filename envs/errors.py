"""One exception tree for everything a user can get wrong or an exchange can refuse.

Every message names the thing at fault (file, row, column, key) and says how to fix it, on one line,
so that the CLI can print it without a traceback and exit 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BrokerError",
    "ConfigError",
    "DataError",
    "RetryableBrokerError",
    "SlfError",
    "StateError",
    "did_you_mean",
]


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
