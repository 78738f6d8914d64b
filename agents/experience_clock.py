"""The experienced market clock: monotonic market time for a learning manager fed by parallel replays.

Training runs several environments that replay different periods, and every reset jumps back (or
forward) in the data, so no single environment's bar time is a clock. The learning manager still needs
one monotonic market time for its cadences ("every 5 minutes") and windows ("the last 7 days").

:class:`ExperiencedMarketClock` advances by the replayed bar time *elapsed* in one pacer environment
(environment 0 of the VecEnv): the time between its consecutive bars. A reset, or any jump backwards,
advances it by one bar duration (the smallest positive step seen so far, so weekend gaps do not
inflate it) instead of following the jump. Hence:

* one environment replaying its data sequentially (no resets): the clock reads exactly the replayed bar
  times, offset by a constant (zero unless a resumed manager's clock was already later), which is what
  the live runner feeds the manager, so replay and live schedule the same learning;
* several environments: the clock runs at the pace of one replay and never goes backwards; events of
  the other environments are re-timed onto it by the callback (their offset to their own bar time is
  kept), so the manager's windows and cadences see one consistent timeline.
"""

from __future__ import annotations

__all__ = ["ExperiencedMarketClock"]


class ExperiencedMarketClock:
    """Market time accumulated from one replay's elapsed bar time (implements :class:`envs.clock.Clock`).

    Args:
        floor_ns: the clock never reads earlier than this (a resumed manager's clock).
    """

    __slots__ = ("_bar_ns", "_floor", "_last", "_now")

    def __init__(self, floor_ns: int = 0) -> None:
        self._floor = int(floor_ns)
        self._now: int | None = None
        self._last: int | None = None
        self._bar_ns: int | None = None

    @property
    def started(self) -> bool:
        return self._now is not None

    @property
    def bar_ns(self) -> int:
        """The bar duration used for resets (0 until a positive step has been seen)."""
        return self._bar_ns or 0

    def now_ns(self) -> int:
        """Current experienced market time (the floor before the first bar)."""
        return self._floor if self._now is None else self._now

    def observe(self, bar_time_ns: int, *, new_episode: bool = False) -> int:
        """Advance with the pacer's next bar time; returns the new time.

        Args:
            bar_time_ns: the pacer environment's bar time (``info["time_ns"]``).
            new_episode: the bar starts a new episode (after a reset): advance by one bar duration.
        """
        t = int(bar_time_ns)
        if self._now is None:
            self._now = max(t, self._floor)
        else:
            last = self._last if self._last is not None else t
            delta = t - last
            if new_episode or delta <= 0:
                self._now += self.bar_ns
            else:
                if self._bar_ns is None or delta < self._bar_ns:
                    self._bar_ns = delta
                self._now += delta
        self._last = t
        return self._now
