"""Failure analysis: factors in more than 70% of the last 3 days' losers (and rarer among winners) become
explainable avoidance rules that count their vetoes and retire when the vetoes prove wrong."""

from __future__ import annotations

import pickle
from functools import partial

import pytest

from envs.clock import DAY_NS
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
from learning.records import format_market_time

from .conftest import MACD_NEG, MACD_POS, RSI_OVERSOLD, RSI_STRONG, START_NS, ManagerFactory, make_trade

RULE = "avoid:rsi_14=oversold"
THREE_DAYS = 3 * DAY_NS


def _losers(
    manager: UniversalLearningManager, with_factor: int, without: int, exit_ns: int = START_NS
) -> None:
    for n in range(with_factor):
        manager.learn_from_trade(make_trade(n, -1.0, exit_ns=exit_ns, signals={**RSI_OVERSOLD, **MACD_NEG}))
    for n in range(without):
        manager.learn_from_trade(
            make_trade(50 + n, -1.0, exit_ns=exit_ns, signals={**RSI_STRONG, **MACD_NEG})
        )


def _winners(manager: UniversalLearningManager, count: int, signals: dict[str, float] | None = None) -> None:
    for n in range(count):
        sig = signals if signals is not None else {**RSI_STRONG, **MACD_POS}
        manager.learn_from_trade(make_trade(200 + n, 1.0, signals=sig))


@pytest.mark.parametrize(("with_factor", "created"), [(7, False), (8, True)])
def test_occurrence_must_exceed_0_7_among_losers(
    manager: UniversalLearningManager, with_factor: int, created: bool
) -> None:
    _losers(manager, with_factor, 10 - with_factor)  # 7/10 = 0.7 is not above 0.7; 8/10 is
    _winners(manager, 10)
    rules = manager.analyze_failure_patterns(START_NS)
    assert (RULE in {r.rule_id for r in rules}) is created
    assert "avoid:macd_hist=neg" in {r.rule_id for r in rules}  # in every loser, no winner


def test_rule_carries_its_evidence_and_explains_itself(manager: UniversalLearningManager) -> None:
    _losers(manager, 9, 1)
    _winners(manager, 10)
    manager.analyze_failure_patterns(START_NS)
    rule = next(r for r in manager.rules() if r.rule_id == RULE)
    assert (rule.support, rule.losers) == (9, 10)
    assert rule.occurrence == pytest.approx(0.9)
    assert rule.winner_occurrence == pytest.approx(1 / 12)  # Laplace: (0 + 1) / (10 + 2)
    assert rule.lift == pytest.approx(0.9 * 12)
    assert rule.created_ns == START_NS
    assert rule.window_days == 3.0
    text = rule.explain()
    assert "rsi_14 < 30" in text
    assert "9 of 10 losing trades" in text
    assert "lift 10.80" in text
    relative = rule.explain(partial(format_market_time, now_ns=START_NS + 2 * DAY_NS + DAY_NS // 2))
    assert "created T-2.5d." in relative
    assert "UTC" not in relative


def test_market_times_are_written_relative_to_the_clock() -> None:
    now = START_NS + 10 * DAY_NS
    assert format_market_time(now, now) == "T"
    assert format_market_time(now - 12 * DAY_NS - DAY_NS // 4, now) == "T-12.2d"
    assert format_market_time(now - 5 * 3600 * 10**9, now) == "T-5.0h"
    assert format_market_time(now - 20 * 60 * 10**9, now) == "T-20m"
    assert format_market_time(now + 3 * DAY_NS, now) == "T+3.0d"
    assert format_market_time(None, now) == "-"


def test_minimum_support_and_lift_guard_against_weak_rules(manager_factory: ManagerFactory) -> None:
    few = manager_factory("few")
    _losers(few, 4, 0)  # occurrence 1.0 but only 4 losers
    assert few.analyze_failure_patterns(START_NS) == []
    common = manager_factory("common")
    _losers(common, 10, 0)
    _winners(common, 10, signals={**RSI_OVERSOLD, **MACD_POS})  # just as common among winners
    assert RULE not in {r.rule_id for r in common.analyze_failure_patterns(START_NS)}


@pytest.mark.parametrize(("winners", "created"), [(4, False), (5, True)])
def test_no_rules_without_enough_winners_to_compare_against(
    manager: UniversalLearningManager, winners: int, created: bool
) -> None:
    # Early training: costs make almost every trade a loser; a factor common to all of them is no
    # evidence of failure until there are winners to compare with (failure_min_winners, default 5).
    _losers(manager, 10, 0)
    _winners(manager, winners)
    assert (RULE in {r.rule_id for r in manager.analyze_failure_patterns(START_NS)}) is created


@pytest.mark.parametrize(("age", "created"), [(THREE_DAYS, True), (THREE_DAYS + 1, False)])
def test_failure_window_is_the_last_3_market_days(
    manager: UniversalLearningManager, age: int, created: bool
) -> None:
    _losers(manager, 10, 0, exit_ns=START_NS - age)
    _winners(manager, 10)
    assert (RULE in {r.rule_id for r in manager.analyze_failure_patterns(START_NS)}) is created


def test_snapshot_vetoes_entries_matching_a_rule_and_counts_them(manager: UniversalLearningManager) -> None:
    _losers(manager, 10, 0)
    _winners(manager, 10)
    manager.analyze_failure_patterns(START_NS)
    state = pickle.loads(pickle.dumps(manager.snapshot()))  # as an env subprocess would see it
    assert RULE in state.vetoes({"rsi_14": 20.0, "macd_hist": 1.0})
    assert state.vetoes({"rsi_14": 55.0, "macd_hist": 1.0}) == ()
    assert state.vetoes({"unrelated": 1.0}) == ()
    manager.record_veto(RULE, symbol="BTC/USDT")
    assert next(r for r in manager.rules() if r.rule_id == RULE).vetoes == 1
    assert manager.track_learning_effectiveness().vetoes == 1


@pytest.mark.parametrize(("would_have_won", "retired"), [(5, False), (6, True)])
def test_rule_retires_when_its_vetoes_prove_wrong(
    manager: UniversalLearningManager, would_have_won: int, retired: bool
) -> None:
    # 30 winners and 10 losers: the base win rate (75%) minus the margin is above the seed's 50% bound,
    # so the absolute bound decides here: 5 of 10 (50%) is not above it, 6 of 10 is.
    _losers(manager, 10, 0)
    _winners(manager, 30)
    manager.analyze_failure_patterns(START_NS)
    for _ in range(10):
        manager.record_veto(RULE)
    version = manager.version
    for k in range(10):
        rule = manager.record_veto_outcome(RULE, would_have_won=k < would_have_won)
    assert (rule.judged, rule.wrong) == (10, would_have_won)
    assert rule.active is not retired
    assert (RULE in {r.rule_id for r in manager.snapshot().rules}) is not retired
    assert (manager.version > version) is retired
    if retired:
        assert "6 of 10 vetoed entries would have won" in rule.explain()


def test_retired_rule_returns_only_after_the_cooldown(manager_factory: ManagerFactory) -> None:
    m = manager_factory(config=LearningConfig(veto_retire_min_outcomes=1))
    _losers(m, 10, 0)
    _winners(m, 10)
    m.analyze_failure_patterns(START_NS)
    m.record_veto(RULE)
    assert not m.record_veto_outcome(RULE, would_have_won=True, time_ns=START_NS).active
    assert RULE not in {r.rule_id for r in m.analyze_failure_patterns(START_NS + DAY_NS)}
    _losers(m, 10, 0, exit_ns=START_NS + THREE_DAYS)
    revived = {r.rule_id: r for r in m.analyze_failure_patterns(START_NS + THREE_DAYS)}
    assert revived[RULE].active
    assert revived[RULE].vetoes == 0


def test_rules_and_their_vetoes_persist(manager_factory: ManagerFactory) -> None:
    first = manager_factory("v")
    _losers(first, 10, 0)
    _winners(first, 10)
    first.analyze_failure_patterns(START_NS)
    first.record_veto(RULE, symbol="BTC/USDT")
    first.record_veto_outcome(RULE, would_have_won=False)
    first.close()
    rule = next(r for r in manager_factory("v").rules() if r.rule_id == RULE)
    assert (rule.vetoes, rule.judged, rule.wrong) == (1, 1, 0)
    assert rule.support == 10


def test_each_outcome_goes_to_its_rules_oldest_unjudged_veto_across_reopening(
    manager_factory: ManagerFactory,
) -> None:
    first = manager_factory("v")
    _losers(first, 10, 0)
    _winners(first, 10)
    first.analyze_failure_patterns(START_NS)
    for k in range(3):
        first.record_veto(RULE, time_ns=START_NS + k, symbol="BTC/USDT")
    first.record_veto_outcome(RULE, would_have_won=True, time_ns=START_NS + 5)
    first.close()
    again = manager_factory("v")
    again.record_veto_outcome(RULE, would_have_won=False, time_ns=START_NS + 6)
    again.record_veto(RULE, time_ns=START_NS + 7, symbol="BTC/USDT")
    again.record_veto_outcome(RULE, would_have_won=True, time_ns=START_NS + 8)
    again.flush()
    rows = again._store.conn.execute("SELECT id, time_ns, outcome FROM vetoes ORDER BY id").fetchall()
    start = rows[0][0]
    assert rows == [
        (start, START_NS, 1),
        (start + 1, START_NS + 1, 0),
        (start + 2, START_NS + 2, 1),
        (start + 3, START_NS + 7, None),
    ]


def test_fisher_exact_p_value_matches_hand_computation() -> None:
    from math import comb

    from learning.failures import fisher_greater

    # 5 of 6 losers vs 5 of 10 winners carry the factor: P(X >= 5), X ~ Hypergeom(16, 10, 6).
    expected = sum(comb(10, k) * comb(6, 6 - k) for k in (5, 6)) / comb(16, 6)
    assert fisher_greater(5, 6, 5, 10) == pytest.approx(expected)
    assert fisher_greater(0, 6, 5, 10) == pytest.approx(1.0)
    assert fisher_greater(10, 10, 0, 10) == pytest.approx(1 / comb(20, 10))


def test_a_split_that_chance_explains_makes_no_rule(manager: UniversalLearningManager) -> None:
    # 5 of 6 losers vs 5 of 10 winners: occurrence 83% > 70% and lift 1.67, but p ~ 0.17.
    _losers(manager, 5, 1)
    _winners(manager, 5, signals={**RSI_OVERSOLD, **MACD_POS})
    _winners(manager, 5)
    assert RULE not in {r.rule_id for r in manager.analyze_failure_patterns(START_NS)}


def test_rule_retires_when_vetoes_win_about_as_often_as_actual_trades(
    manager_factory: ManagerFactory,
) -> None:
    # Base win rate in the window: 10 of 20 = 50%. A rule whose vetoed entries would have won 46% of
    # the time filters out nothing (46% > 50% - 5% margin) and retires, although 46% < 0.5.
    m = manager_factory(config=LearningConfig(veto_retire_min_outcomes=50))
    _losers(m, 10, 0)
    _winners(m, 10)
    m.analyze_failure_patterns(START_NS)
    for n in range(50):
        m.record_veto(RULE)
        rule = m.record_veto_outcome(RULE, would_have_won=n % 50 < 23, time_ns=START_NS)
    assert not rule.active
    assert "46% > 45%" in rule.retire_reason


def test_rule_that_filters_clearly_worse_entries_stays(manager_factory: ManagerFactory) -> None:
    m = manager_factory(config=LearningConfig(veto_retire_min_outcomes=50))
    _losers(m, 10, 0)
    _winners(m, 10)
    m.analyze_failure_patterns(START_NS)
    for n in range(50):
        m.record_veto(RULE)
        rule = m.record_veto_outcome(RULE, would_have_won=n % 50 < 15, time_ns=START_NS)  # 30%
    assert rule.active
