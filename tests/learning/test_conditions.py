"""Market-condition adaptation: every 5 market-minutes, tighten below a 0.45 win rate, relax with
hysteresis."""

from __future__ import annotations

import pytest

from envs.clock import DAY_NS, MINUTE_NS
from learning.manager import UniversalLearningManager

from .conftest import CALM, START_NS, WILD, make_trade

CADENCE = 5 * MINUTE_NS


def _feed(
    manager: UniversalLearningManager, wins: int, losses: int, *, start: int = 0, exit_ns: int = START_NS
) -> None:
    for n in range(wins + losses):
        manager.learn_from_trade(
            make_trade(start + n, 1.0 if n < wins else -1.0, exit_ns=exit_ns, conditions=CALM)
        )


@pytest.mark.parametrize(("wins", "tightened"), [(89, True), (90, False), (91, False)])
def test_win_rate_just_below_0_45_tightens_and_at_0_45_does_not(
    manager: UniversalLearningManager, wins: int, tightened: bool
) -> None:
    _feed(manager, wins, 200 - wins)  # 89/200 = 0.445, 90/200 = 0.45
    outcome = manager.adapt_to_market_conditions(START_NS, CALM)
    assert outcome.ran
    assert outcome.changed is tightened
    assert outcome.adjustment.active is tightened
    assert (outcome.adjustment.exposure_multiplier < 1.0) is tightened
    assert manager.adaptations == int(tightened)


def test_adaptation_runs_at_most_every_5_market_minutes(manager: UniversalLearningManager) -> None:
    assert manager.adapt_to_market_conditions(START_NS, CALM).ran
    assert not manager.adapt_to_market_conditions(START_NS + CADENCE - 1, CALM).ran
    _feed(manager, 0, 10)
    skipped = manager.adapt_to_market_conditions(START_NS + CADENCE - 1, CALM)
    assert not skipped.ran
    assert not skipped.adjustment.active
    ran = manager.adapt_to_market_conditions(START_NS + CADENCE, CALM)
    assert ran.ran
    assert ran.adjustment.active


def test_too_few_trades_in_similar_conditions_change_nothing(manager: UniversalLearningManager) -> None:
    _feed(manager, 0, 9)
    assert not manager.adapt_to_market_conditions(START_NS, CALM).changed
    _feed(manager, 0, 1, start=9)
    assert manager.adapt_to_market_conditions(START_NS + CADENCE, CALM).changed


def test_adjustments_scale_with_how_bad_the_win_rate_is(manager: UniversalLearningManager) -> None:
    _feed(manager, 9, 31)  # win rate 0.225: severity (0.45 - 0.225) / 0.45 = 0.5
    adj = manager.adapt_to_market_conditions(START_NS, CALM).adjustment
    assert adj.win_rate == pytest.approx(0.225)
    assert adj.trades == 40
    assert adj.exposure_multiplier == pytest.approx(1 - 0.5 * 0.75)
    assert adj.entry_threshold == pytest.approx(0.5 * 0.5)
    assert adj.max_position == pytest.approx(1 - 0.5 * 0.75 / 2)
    state = manager.snapshot()
    assert state.adjustment_for(CALM) == adj
    assert not state.adjustment_for(WILD).active  # another condition class is untouched


def test_hysteresis_keeps_the_tightening_until_threshold_plus_margin(
    manager: UniversalLearningManager,
) -> None:
    _feed(manager, 8, 12)  # 8/20 = 0.40: tighten
    t = START_NS
    assert manager.adapt_to_market_conditions(t, CALM).adjustment.active
    for n, win_rate in ((2, 10 / 22), (1, 11 / 23)):  # 0.4545 and 0.478: inside [0.45, 0.50)
        _feed(manager, n, 0, start=100 + int(win_rate * 1000))
        t += CADENCE
        kept = manager.adapt_to_market_conditions(t, CALM)
        assert kept.ran
        assert not kept.changed
        assert kept.adjustment.active
        assert kept.adjustment.win_rate == pytest.approx(0.40)
    _feed(manager, 1, 0, start=200)  # 12/24 = 0.50: relax
    t += CADENCE
    relaxed = manager.adapt_to_market_conditions(t, CALM)
    assert relaxed.changed
    assert not relaxed.adjustment.active
    assert relaxed.adjustment.exposure_multiplier == 1.0
    assert relaxed.adjustment.win_rate == pytest.approx(0.50)
    assert manager.adaptations == 2


def test_trades_older_than_the_lookback_do_not_count(manager: UniversalLearningManager) -> None:
    _feed(manager, 0, 20, exit_ns=START_NS)
    now = START_NS + 7 * DAY_NS + 1
    assert not manager.adapt_to_market_conditions(now, CALM).changed


def test_due_tells_whether_an_adaptation_would_run(manager: UniversalLearningManager) -> None:
    adapter = manager._adapter
    for minutes in (0, 1, 4, 5, 6, 9, 10, 17, 20):
        t = START_NS + minutes * MINUTE_NS
        due = adapter.due(t)
        assert manager.adapt_to_market_conditions(t, CALM).ran is due
    runs = adapter.runs
    assert runs == 4  # minutes 0, 5, 10 and 17
    # on_bar skips the classification between runs and leaves the cadence where adapt() would.
    for minutes in range(21, 40):
        manager.on_bar(START_NS + minutes * MINUTE_NS, WILD)
    assert adapter.runs == runs + 4  # minutes 22, 27, 32 and 37
    assert adapter.last_run_ns == START_NS + 37 * MINUTE_NS
