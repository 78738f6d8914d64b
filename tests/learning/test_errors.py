"""Error messages become signatures; resolutions are chosen by their record, with seeded exploration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.clock import MarketClock
from envs.events import ErrorEvent, ErrorKind
from learning.error_patterns import MatchKind, Resolution
from learning.manager import UniversalLearningManager
from learning.signatures import error_signature, extract_code, normalize_message

from .conftest import START_NS, ManagerFactory


def _event(message: str, kind: ErrorKind = ErrorKind.MIN_NOTIONAL, code: str | None = None) -> ErrorEvent:
    return ErrorEvent(
        time_ns=START_NS, symbol="BTC/USDT", kind=kind, message=message, code=code, context={"notional": 2.0}
    )


@pytest.mark.parametrize(
    ("message", "normalized"),
    [
        ("Filter failure: NOTIONAL", "filter failure: notional"),
        ('binance {"code":-1013,"msg":"Filter failure: NOTIONAL"}', "filter failure: notional"),
        ("Order 0x1f3a qty 0.0001 < min 10.5 for 'BTC/USDT'", "order <id> qty <n> < min <n> for <q>"),
        ("id 550e8400-e29b-41d4-a716-446655440000 ref ab12cd34ef failed", "id <id> ref <id> failed"),
        ("Too many   requests; retry after 1200ms", "too many requests; retry after <n>ms"),
    ],
)
def test_variable_parts_are_stripped_from_messages(message: str, normalized: str) -> None:
    assert normalize_message(message) == normalized


def test_binance_json_body_gives_its_code() -> None:
    body = 'binance {"code":-1013,"msg":"Filter failure: NOTIONAL"}'
    assert extract_code(body) == "-1013"
    assert error_signature("min_notional", body) == "min_notional|-1013|filter failure: notional"
    assert (
        error_signature("min_notional", "Filter failure: NOTIONAL")
        == "min_notional|-|filter failure: notional"
    )


@given(st.text(max_size=80))
def test_normalization_is_idempotent(message: str) -> None:
    once = normalize_message(message)
    assert normalize_message(once) == once


def test_new_error_is_stored_with_message_context_time_and_no_attempts(
    manager: UniversalLearningManager,
) -> None:
    match = manager.learn_from_error(_event("Filter failure: NOTIONAL"), context={"attempt": 1})
    assert match.match is MatchKind.NEW
    (pattern,) = manager.error_patterns()
    assert pattern.signature == match.signature
    assert pattern.message == "Filter failure: NOTIONAL"
    assert pattern.context["notional"] == 2.0
    assert pattern.context["attempt"] == 1
    assert pattern.first_seen_ns == START_NS
    assert pattern.attempts == ()


def test_the_same_error_reworded_matches_the_known_pattern(manager: UniversalLearningManager) -> None:
    first = manager.learn_from_error(_event("Order 17 rejected: Filter failure: NOTIONAL"))
    exact = manager.learn_from_error(_event("Order 99 rejected: Filter failure: NOTIONAL"))
    similar = manager.learn_from_error(
        _event('binance {"code":-1013,"msg":"Order 5 rejected: Filter failure: NOTIONAL"}')
    )
    other_kind = manager.learn_from_error(
        _event("Order 5 rejected: Filter failure: NOTIONAL", ErrorKind.LOT_SIZE)
    )
    assert exact.match is MatchKind.EXACT
    assert exact.signature == first.signature
    assert similar.match is MatchKind.SIMILAR
    assert similar.signature == first.signature
    assert other_kind.match is MatchKind.NEW
    assert [p.count for p in manager.error_patterns() if p.signature == first.signature] == [3]


@pytest.mark.parametrize(
    ("kind", "preferred"),
    [
        (ErrorKind.MIN_NOTIONAL, Resolution.RESIZE_TO_LEARNED_MINIMUM),
        (ErrorKind.LOT_SIZE, Resolution.RESIZE_TO_LEARNED_MINIMUM),
        (ErrorKind.RATE_LIMIT, Resolution.RETRY_WITH_BACKOFF),
        (ErrorKind.TIMEOUT, Resolution.RETRY_WITH_BACKOFF),
        (ErrorKind.INSUFFICIENT_BALANCE, Resolution.REDUCE_SIZE),
    ],
)
def test_priors_prefer_the_natural_resolution_of_each_kind(
    manager_factory: ManagerFactory, kind: ErrorKind, preferred: Resolution
) -> None:
    from learning.config import LearningConfig

    greedy = manager_factory(config=LearningConfig(exploration_rate=0.0))
    match = greedy.learn_from_error(_event("something went wrong", kind))
    assert match.suggestion is preferred


def test_failures_move_the_choice_to_a_resolution_that_works(manager_factory: ManagerFactory) -> None:
    from learning.config import LearningConfig

    m = manager_factory(config=LearningConfig(exploration_rate=0.0))
    sig = m.learn_from_error(_event("Filter failure: NOTIONAL")).signature
    # Prior 3:1 for resizing, 1:2 for the others: six failures bring it to 3:7, below 1:2.
    for _ in range(6):
        m.record_resolution(sig, Resolution.RESIZE_TO_LEARNED_MINIMUM, success=False)
    assert m.choose_resolution(sig) is not Resolution.RESIZE_TO_LEARNED_MINIMUM
    m.record_resolution(sig, Resolution.REDUCE_SIZE, success=True)
    m.record_resolution(sig, Resolution.REDUCE_SIZE, success=True)
    assert m.choose_resolution(sig) is Resolution.REDUCE_SIZE
    assert m.resolution_success_rate(sig) == pytest.approx(2 / 8)
    assert m.resolution_success_rate(sig, Resolution.REDUCE_SIZE) == 1.0
    assert m.resolution_success_rate(sig, "halt") == 0.0
    assert [a.success for a in m.error_patterns()[0].attempts] == [False] * 6 + [True, True]


def test_exploration_is_seeded_and_tries_other_resolutions(manager_factory: ManagerFactory) -> None:
    from learning.config import LearningConfig

    def choices(name: str, seed: int) -> list[Resolution]:
        m = manager_factory(name, config=LearningConfig(exploration_rate=0.3, seed=seed))
        sig = m.learn_from_error(_event("Filter failure: NOTIONAL")).signature
        return [m.choose_resolution(sig) for _ in range(40)]

    first = choices("a", 3)
    assert first == choices("b", 3)
    assert first != choices("c", 4)
    assert len(set(first)) > 1  # exploration happened
    assert first.count(Resolution.RESIZE_TO_LEARNED_MINIMUM) > len(first) / 2  # but greedy dominates


def test_resolution_record_survives_reopening(manager_factory: ManagerFactory, clock: MarketClock) -> None:
    m = manager_factory("r", clock=clock)
    sig = m.learn_from_error(_event("Too many requests", ErrorKind.RATE_LIMIT)).signature
    m.record_resolution(sig, Resolution.RETRY_WITH_BACKOFF, success=True)
    m.close()
    again = manager_factory("r", clock=clock)
    assert again.resolution_success_rate(sig, Resolution.RETRY_WITH_BACKOFF) == 1.0
    assert again.choose_resolution(_event("Too many requests", ErrorKind.RATE_LIMIT)) in set(Resolution)


def test_unknown_signature_is_a_clear_error(manager: UniversalLearningManager) -> None:
    with pytest.raises(KeyError, match="learn_from_error"):
        manager.record_resolution("nope", Resolution.HALT, success=True)
