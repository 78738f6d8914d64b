"""Market time.

Every time rule in trading and learning logic ("every 5 minutes", "the last 7 days") is measured on bar
timestamps through a :class:`Clock`, never on the wall clock, so replay and live behave the same and
tests can drive time by hand. Times are integer nanoseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["DAY_NS", "HOUR_NS", "MINUTE_NS", "SECOND_NS", "Clock", "MarketClock"]

SECOND_NS = 1_000_000_000
MINUTE_NS = 60 * SECOND_NS
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the current market time."""

    def now_ns(self) -> int:
        """Current market time, nanoseconds since the epoch (UTC)."""
        ...


class MarketClock:
    """A clock that moves only when told to: by each closed bar in replay and live, by hand in tests.

    Time never goes backwards; :meth:`advance_to` refuses an earlier time.
    """

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = int(start_ns)

    def now_ns(self) -> int:
        return self._now

    def advance_to(self, time_ns: int) -> None:
        """Move to ``time_ns`` (a bar's timestamp). Raises ``ValueError`` if that is in the past."""
        t = int(time_ns)
        if t < self._now:
            raise ValueError(f"market time cannot go backwards: {t} < {self._now}")
        self._now = t

    def advance_by(self, delta_ns: int) -> None:
        """Move forward by ``delta_ns`` nanoseconds."""
        if delta_ns < 0:
            raise ValueError(f"delta must be >= 0, got {delta_ns}")
        self._now += int(delta_ns)

    def reset(self, time_ns: int = 0) -> None:
        """Start over at ``time_ns`` (a new episode)."""
        self._now = int(time_ns)
