"""Error patterns and the resolutions that fix them.

An :class:`envs.events.ErrorEvent` is reduced to a signature (:mod:`learning.signatures`) and matched
against known patterns: exactly, else by token similarity among patterns of the same kind with a
compatible code. A new pattern is stored with its first message, context and time and no resolution
attempts. Resolutions are chosen epsilon-greedily on each option's posterior success rate: a Beta prior
per error kind (minimum errors favour resizing to the learned minimum, transient errors favour backing
off, ``halt`` is a last resort everywhere) updated by every reported attempt.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from envs.events import ErrorEvent, ErrorKind
from learning.signatures import error_signature, message_tokens
from learning.store import OnRollback

__all__ = [
    "ErrorMatch",
    "ErrorPattern",
    "ErrorPatternLearner",
    "MatchKind",
    "Resolution",
    "ResolutionAttempt",
    "resolution_prior",
]


class Resolution(StrEnum):
    """What the trading loop can do about an exchange error."""

    RETRY_WITH_BACKOFF = "retry_with_backoff"
    RESIZE_TO_LEARNED_MINIMUM = "resize_to_learned_minimum"
    REDUCE_SIZE = "reduce_size"
    SKIP_SYMBOL = "skip_symbol"
    HALT = "halt"


class MatchKind(StrEnum):
    EXACT = "exact"
    SIMILAR = "similar"
    NEW = "new"


# Beta(alpha, beta) priors: the favoured resolution of a kind starts at a 3:1 success belief, the others
# at 1:2, halting at 1:4 so that it is chosen only when everything else keeps failing.
_FAVOURED = (3.0, 1.0)
_OTHER = (1.0, 2.0)
_LAST_RESORT = (1.0, 4.0)
_FAVOURITE: Mapping[ErrorKind, Resolution] = {
    ErrorKind.MIN_NOTIONAL: Resolution.RESIZE_TO_LEARNED_MINIMUM,
    ErrorKind.LOT_SIZE: Resolution.RESIZE_TO_LEARNED_MINIMUM,
    ErrorKind.INSUFFICIENT_BALANCE: Resolution.REDUCE_SIZE,
    ErrorKind.RATE_LIMIT: Resolution.RETRY_WITH_BACKOFF,
    ErrorKind.TIMEOUT: Resolution.RETRY_WITH_BACKOFF,
    ErrorKind.MAINTENANCE: Resolution.RETRY_WITH_BACKOFF,
    ErrorKind.NETWORK: Resolution.RETRY_WITH_BACKOFF,
    ErrorKind.INVALID_ORDER: Resolution.SKIP_SYMBOL,
    ErrorKind.UNKNOWN: Resolution.RETRY_WITH_BACKOFF,
}
_NO_CODE = "-"


def resolution_prior(kind: ErrorKind, resolution: Resolution) -> tuple[float, float]:
    """The Beta prior ``(alpha, beta)`` of ``resolution`` fixing an error of ``kind``."""
    if resolution is Resolution.HALT:
        return _LAST_RESORT
    return _FAVOURED if _FAVOURITE.get(kind) is resolution else _OTHER


@dataclass(frozen=True, slots=True)
class ResolutionAttempt:
    """One reported attempt to resolve an error pattern."""

    resolution: Resolution
    success: bool
    time_ns: int


@dataclass(frozen=True, slots=True)
class ErrorPattern:
    """A known kind of exchange trouble.

    Attributes:
        signature: ``"<kind>|<code>|<normalized message>"``.
        kind: error family.
        message: the first message seen, verbatim.
        context: the first event's context (plus the caller's extra context).
        first_seen_ns / last_seen_ns: market times; count: events matched to it.
        attempts: resolution attempts reported for it, oldest first.
    """

    signature: str
    kind: ErrorKind
    message: str
    context: Mapping[str, object]
    first_seen_ns: int
    last_seen_ns: int
    count: int
    attempts: tuple[ResolutionAttempt, ...] = ()

    @property
    def resolved(self) -> bool:
        """Whether some resolution has worked at least once."""
        return any(a.success for a in self.attempts)


@dataclass(frozen=True, slots=True)
class ErrorMatch:
    """What :meth:`ErrorPatternLearner.learn` made of an error: its pattern and what to try."""

    signature: str
    match: MatchKind
    suggestion: Resolution
    similarity: float = 1.0

    @property
    def is_new(self) -> bool:
        return self.match is MatchKind.NEW


class _Pattern:
    __slots__ = (
        "attempts",
        "code",
        "context",
        "count",
        "first_seen",
        "kind",
        "last_seen",
        "message",
        "tokens",
    )

    def __init__(
        self,
        kind: ErrorKind,
        code: str,
        message: str,
        context: dict[str, object],
        first_seen: int,
        last_seen: int,
        count: int,
        tokens: frozenset[str],
    ) -> None:
        self.kind = kind
        self.code = code
        self.message = message
        self.context = context
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.count = count
        self.tokens = tokens
        self.attempts: list[ResolutionAttempt] = []


def _parts(signature: str) -> tuple[str, str, str]:
    kind, _, rest = signature.partition("|")
    code, _, text = rest.partition("|")
    return kind, code, text


class ErrorPatternLearner:
    """Recognises exchange errors and learns which resolution fixes each.

    Args:
        conn: the store connection (patterns and attempts are loaded at construction).
        rng: the seeded generator of the exploration draws.
        exploration_rate: probability of trying a non-greedy resolution.
        similarity: token Jaccard similarity at which a message matches a known pattern.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        rng: np.random.Generator,
        *,
        exploration_rate: float,
        similarity: float,
    ) -> None:
        self._rng = rng
        self._epsilon = exploration_rate
        self._similarity = similarity
        self._patterns: dict[str, _Pattern] = {}
        self._dirty: set[str] = set()
        self._pending_attempts: list[tuple[str, str, int, int]] = []
        for sig, kind, message, context, first, last, count in conn.execute(
            "SELECT signature, kind, message, context, first_seen_ns, last_seen_ns, count FROM error_patterns"
        ):
            _, code, text = _parts(sig)
            self._patterns[sig] = _Pattern(
                ErrorKind(kind), code, message, json.loads(context), first, last, count, message_tokens(text)
            )
        for sig, resolution, success, time_ns in conn.execute(
            "SELECT signature, resolution, success, time_ns FROM resolution_attempts ORDER BY id"
        ):
            if sig in self._patterns:
                self._patterns[sig].attempts.append(
                    ResolutionAttempt(Resolution(resolution), bool(success), time_ns)
                )

    # --- recognition -------------------------------------------------------------------------------
    def _match(self, kind: ErrorKind, code: str, text: str) -> tuple[str, float] | None:
        tokens = message_tokens(text)
        best: tuple[float, str] | None = None
        for sig in sorted(self._patterns):
            pattern = self._patterns[sig]
            if pattern.kind is not kind or (code != _NO_CODE and pattern.code not in (code, _NO_CODE)):
                continue
            union = tokens | pattern.tokens
            score = len(tokens & pattern.tokens) / len(union) if union else 1.0
            if score >= self._similarity and (best is None or score > best[0]):
                best = (score, sig)
        return (best[1], best[0]) if best is not None else None

    def learn(self, event: ErrorEvent, context: Mapping[str, object] | None = None) -> ErrorMatch:
        """Match ``event`` to a known pattern (or store a new one) and suggest a resolution."""
        signature = error_signature(str(event.kind), event.message, event.code)
        _, code, text = _parts(signature)
        similarity = 1.0
        if signature in self._patterns:
            kind = MatchKind.EXACT
        else:
            found = self._match(event.kind, code, text)
            if found is not None:
                signature, similarity = found
                kind = MatchKind.SIMILAR
            else:
                kind = MatchKind.NEW
                merged: dict[str, object] = {**dict(event.context), **dict(context or {})}
                if event.order_id is not None:
                    merged.setdefault("order_id", event.order_id)
                merged.setdefault("symbol", event.symbol)
                self._patterns[signature] = _Pattern(
                    event.kind,
                    code,
                    event.message,
                    merged,
                    event.time_ns,
                    event.time_ns,
                    0,
                    message_tokens(text),
                )
        pattern = self._patterns[signature]
        pattern.count += 1
        pattern.last_seen = max(pattern.last_seen, event.time_ns)
        self._dirty.add(signature)
        return ErrorMatch(signature, kind, self.choose(signature), similarity)

    def find(self, event: ErrorEvent) -> str | None:
        """The known pattern an event matches (exactly or by similarity), without counting it."""
        signature = error_signature(str(event.kind), event.message, event.code)
        if signature in self._patterns:
            return signature
        _, code, text = _parts(signature)
        found = self._match(event.kind, code, text)
        return found[0] if found is not None else None

    # --- resolutions -------------------------------------------------------------------------------
    def _posterior_means(self, signature: str) -> dict[Resolution, float]:
        pattern = self._require(signature)
        wins = dict.fromkeys(Resolution, 0)
        losses = dict.fromkeys(Resolution, 0)
        for attempt in pattern.attempts:
            if attempt.success:
                wins[attempt.resolution] += 1
            else:
                losses[attempt.resolution] += 1
        means: dict[Resolution, float] = {}
        for resolution in Resolution:
            alpha, beta = resolution_prior(pattern.kind, resolution)
            a = alpha + wins[resolution]
            means[resolution] = a / (a + beta + losses[resolution])
        return means

    def choose(self, signature: str) -> Resolution:
        """Epsilon-greedy: the best posterior success rate, or with probability epsilon another option.

        One uniform draw is taken on every call (and a second when exploring), so the sequence of
        choices depends only on the seed and the sequence of calls.
        """
        means = self._posterior_means(signature)
        # Ties resolve in the enum's order, which lists the gentler resolutions first.
        greedy = max(Resolution, key=lambda r: (means[r], -list(Resolution).index(r)))
        if self._rng.random() < self._epsilon:
            others = [r for r in Resolution if r is not greedy]
            return others[int(self._rng.integers(len(others)))]
        return greedy

    def record(self, signature: str, resolution: Resolution | str, success: bool, time_ns: int) -> None:
        """Report how an attempt went; it updates the pattern's success record."""
        pattern = self._require(signature)
        attempt = ResolutionAttempt(Resolution(resolution), bool(success), time_ns)
        pattern.attempts.append(attempt)
        self._pending_attempts.append((signature, str(attempt.resolution), int(attempt.success), time_ns))

    def success_rate(self, signature: str | None = None, resolution: Resolution | str | None = None) -> float:
        """Observed success share of attempts (filtered by pattern and/or resolution); 0 with none."""
        wanted = Resolution(resolution) if resolution is not None else None
        patterns = [self._require(signature)] if signature is not None else list(self._patterns.values())
        attempts = [a for p in patterns for a in p.attempts if wanted is None or a.resolution is wanted]
        return sum(a.success for a in attempts) / len(attempts) if attempts else 0.0

    def _require(self, signature: str) -> _Pattern:
        pattern = self._patterns.get(signature)
        if pattern is None:
            raise KeyError(f"unknown error pattern {signature!r}; learn_from_error() it first")
        return pattern

    # --- reading -----------------------------------------------------------------------------------
    def patterns(self) -> list[ErrorPattern]:
        """Every known pattern, by signature."""
        return [
            ErrorPattern(
                sig, p.kind, p.message, dict(p.context), p.first_seen, p.last_seen, p.count, tuple(p.attempts)
            )
            for sig, p in sorted(self._patterns.items())
        ]

    def __len__(self) -> int:
        return len(self._patterns)

    def resolved_share(self) -> float:
        """Share of known patterns with at least one successful resolution (0 with none)."""
        if not self._patterns:
            return 0.0
        return sum(any(a.success for a in p.attempts) for p in self._patterns.values()) / len(self._patterns)

    # --- persistence -------------------------------------------------------------------------------
    def flush(self, conn: sqlite3.Connection, on_rollback: OnRollback) -> None:
        """Write changed patterns and new attempts (inside the caller's transaction); should it roll back,
        the undo given to ``on_rollback`` puts them back in the buffers."""
        dirty = self._dirty
        attempts = self._pending_attempts
        if not dirty and not attempts:
            return
        # Handed over before the statements run: whichever of them fails, the rollback puts all back.
        self._dirty = set()
        self._pending_attempts = []
        on_rollback(lambda: self._unwritten(dirty, attempts))
        if dirty:
            conn.executemany(
                "INSERT INTO error_patterns (signature, kind, message, context, first_seen_ns, last_seen_ns, "
                "count) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(signature) DO UPDATE SET "
                "last_seen_ns = excluded.last_seen_ns, count = excluded.count",
                [
                    (
                        sig,
                        str(p.kind),
                        p.message,
                        json.dumps(p.context, default=str, sort_keys=True),
                        p.first_seen,
                        p.last_seen,
                        p.count,
                    )
                    for sig in sorted(dirty)
                    for p in (self._patterns[sig],)
                ],
            )
        if attempts:
            conn.executemany(
                "INSERT INTO resolution_attempts (signature, resolution, success, time_ns) "
                "VALUES (?, ?, ?, ?)",
                attempts,
            )

    def _unwritten(self, dirty: set[str], attempts: list[tuple[str, str, int, int]]) -> None:
        self._dirty |= dirty
        self._pending_attempts[:0] = attempts
