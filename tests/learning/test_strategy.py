"""Strategy evolution (7 days, x1.1, bounded and normalized) and reinforcement (top 10%, x1.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.clock import DAY_NS, MINUTE_NS, MarketClock
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
from learning.strategy import normalize_weights

from .conftest import MACD_NEG, MACD_POS, RSI_OVERSOLD, RSI_STRONG, START_NS, ManagerFactory, make_trade

WINNER_SIGNALS = {**RSI_OVERSOLD, **MACD_POS}
LOSER_SIGNALS = {**RSI_STRONG, **MACD_NEG}
WEEK = 7 * DAY_NS


def _winners_and_losers(
    manager: UniversalLearningManager, exit_ns: int, winners: int = 5, losers: int = 5
) -> None:
    for n in range(winners):
        manager.learn_from_trade(make_trade(n, 1.0, exit_ns=exit_ns, signals=WINNER_SIGNALS))
    for n in range(losers):
        manager.learn_from_trade(make_trade(100 + n, -1.0, exit_ns=exit_ns, signals=LOSER_SIGNALS))


def test_evolution_boosts_factors_common_among_winners_by_1_1(manager: UniversalLearningManager) -> None:
    _winners_and_losers(manager, START_NS)
    step = manager.evolve_trading_strategy(START_NS)
    assert step is not None
    assert set(step.boosted) >= {"rsi_14=oversold", "macd_hist=pos"}
    assert "rsi_14=strong" not in step.boosted
    weights = manager.strategy_weights()
    assert weights["rsi_14=oversold"] / weights["rsi_14=strong"] == pytest.approx(1.1)
    assert sum(weights.values()) / len(weights) == pytest.approx(1.0)
    state = manager.snapshot()
    assert state.strategy_weights == weights
    assert state.signal_weight(WINNER_SIGNALS) > 1.0 > state.signal_weight(LOSER_SIGNALS)


@pytest.mark.parametrize(("age", "evolves"), [(WEEK, True), (WEEK + 1, False), (WEEK - MINUTE_NS, True)])
def test_evolution_window_is_the_last_7_market_days(
    manager: UniversalLearningManager, age: int, evolves: bool
) -> None:
    _winners_and_losers(manager, START_NS)
    assert (manager.evolve_trading_strategy(START_NS + age) is not None) is evolves


def test_evolution_needs_minimum_support(manager: UniversalLearningManager) -> None:
    _winners_and_losers(manager, START_NS, winners=4)
    assert manager.evolve_trading_strategy(START_NS) is None
    assert manager.strategy_weights() == {}


def test_repeated_evolution_stays_bounded_normalized_and_is_kept_in_history(
    manager_factory: ManagerFactory, clock: MarketClock
) -> None:
    m = manager_factory("evo", clock=clock)
    _winners_and_losers(m, START_NS)
    for k in range(60):
        assert m.evolve_trading_strategy(START_NS + k) is not None
    weights = m.strategy_weights()
    assert all(0.2 <= w <= 5.0 for w in weights.values())
    assert sum(weights.values()) / len(weights) == pytest.approx(1.0)
    m.close()
    again = manager_factory("evo", clock=clock)
    history = again.evolution_history()
    assert [s.step for s in history] == list(range(1, 61))
    assert history[-1].weights == again.strategy_weights()


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefgh"), st.floats(0.2, 5.0), min_size=1),
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=4), max_size=30),
)
def test_weights_stay_bounded_and_mean_one_for_any_sequence_of_evolutions(
    start: dict[str, float], boosts: list[list[str]]
) -> None:
    weights = normalize_weights(start, 0.2, 5.0)
    for boosted in boosts:
        for factor in boosted:
            weights[factor] = weights.get(factor, 1.0) * 1.1
        weights = normalize_weights(weights, 0.2, 5.0)
        assert all(0.2 <= w <= 5.0 for w in weights.values())
        assert sum(weights.values()) / len(weights) == pytest.approx(1.0, abs=1e-9)


def _ranked_trades(
    manager: UniversalLearningManager, pnls: list[float], exit_ns: int = START_NS
) -> list[str]:
    """One trade per PnL, each in its own pattern (the regime code differs)."""
    return [
        manager.learn_from_trade(make_trade(n, pnl, exit_ns=exit_ns, conditions={"regime": float(n)}))
        for n, pnl in enumerate(pnls)
    ]


def test_trades_at_or_above_the_90th_percentile_boost_their_pattern_by_1_2(
    manager: UniversalLearningManager,
) -> None:
    signatures = _ranked_trades(manager, [float(p) for p in range(11)])  # 90th percentile: exactly 9.0
    before = manager.version
    changed = manager.reinforce_successful_behaviors()
    assert set(changed) == {signatures[9], signatures[10]}  # at and above
    weights = {s: manager.pattern(s).weight for s in signatures}  # type: ignore[union-attr]
    assert weights[signatures[10]] == pytest.approx(1.2)
    assert weights[signatures[9]] == pytest.approx(1.2)
    assert weights[signatures[8]] == 1.0  # just below
    assert manager.version > before
    top = manager.snapshot().top_patterns
    assert {p.signature for p in top} == {signatures[9], signatures[10]}  # only reinforced patterns rank
    assert all(p.weight == pytest.approx(1.2) for p in top)


def test_each_trade_reinforces_once_and_weights_stay_bounded(manager_factory: ManagerFactory) -> None:
    m = manager_factory(config=LearningConfig(min_support=1))
    sig = m.learn_from_trade(make_trade(0, 5.0))
    assert m.reinforce_successful_behaviors(START_NS) == [sig]
    assert m.reinforce_successful_behaviors(START_NS) == []  # the same trade does not compound
    for n in range(1, 40):
        m.learn_from_trade(make_trade(n, 5.0, exit_ns=START_NS + n))
        m.reinforce_successful_behaviors(START_NS + n)
    pattern = m.pattern(sig)
    assert pattern is not None
    assert pattern.weight == pytest.approx(5.0)


def test_losing_top_decile_and_old_trades_are_not_reinforced(manager: UniversalLearningManager) -> None:
    _ranked_trades(manager, [-float(p) for p in range(1, 12)])
    assert manager.reinforce_successful_behaviors(START_NS) == []
    _ranked_trades(manager, [float(p) for p in range(11)], exit_ns=START_NS - 8 * DAY_NS)
    assert manager.reinforce_successful_behaviors(START_NS) == []
