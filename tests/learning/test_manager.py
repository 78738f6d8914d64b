"""The facade: market-time cadences, determinism, lifecycle, effectiveness tracking and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.clock import DAY_NS, MINUTE_NS, MarketClock
from envs.errors import StateError
from envs.events import ErrorEvent, ErrorKind
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager

from .conftest import (
    CALM,
    MACD_NEG,
    MACD_POS,
    RSI_OVERSOLD,
    RSI_STRONG,
    START_NS,
    ManagerFactory,
    dump_store,
    make_trade,
)


def _story(manager: UniversalLearningManager, flush_every: int = 0) -> None:
    """A day of mixed trades and errors, with periodic work on every 5th bar (``flush_every``: also
    write the store after every that many bars, as an owner with idle time may)."""
    for k in range(400):
        if flush_every and k % flush_every == flush_every - 1:
            manager.flush()
        now = START_NS + k * MINUTE_NS
        won = k % 3 == 0
        signals = {**RSI_STRONG, **MACD_POS} if won else {**RSI_OVERSOLD, **MACD_NEG}
        manager.learn_from_trade(make_trade(k, (k % 7) + 0.5 if won else -1.0, exit_ns=now, signals=signals))
        if k % 40 == 0:
            match = manager.learn_from_error(
                ErrorEvent(now, "BTC/USDT", ErrorKind.RATE_LIMIT, f"429 Too many requests (id {k})")
            )
            manager.record_resolution(
                match.signature, manager.choose_resolution(match.signature), k % 80 == 0
            )
        if k % 5 == 0:
            manager.on_bar(now, CALM)


def test_same_inputs_give_the_same_learned_state(manager_factory: ManagerFactory, tmp_path: Path) -> None:
    states = []
    for name in ("a", "b"):
        manager = manager_factory(name, LearningConfig(exploration_rate=0.3, seed=11))
        _story(manager)
        states.append((manager.snapshot(), manager.track_learning_effectiveness(START_NS + DAY_NS)))
        manager.close()
    assert states[0] == states[1]
    assert states[0][0].rules
    assert states[0][0].strategy_weights
    assert dump_store(tmp_path / "a") == dump_store(tmp_path / "b")


def test_when_the_store_is_written_does_not_change_what_is_learned(
    manager_factory: ManagerFactory, tmp_path: Path
) -> None:
    """The durability contract HostedVecEnv's idle writes rely on: extra flushes at any time leave the
    learning, and in the end the store, as they are."""
    states = []
    for name, flush_every in (("own", 0), ("every", 1), ("seventh", 7)):
        manager = manager_factory(name, LearningConfig(exploration_rate=0.3, seed=11))
        _story(manager, flush_every)
        if flush_every == 1:  # only the trade learned since the last flush waits
            assert manager.pending_trades == 1
            assert manager.unsaved
        states.append((manager.snapshot(), manager.track_learning_effectiveness(START_NS + DAY_NS)))
        manager.flush()
        assert not manager.unsaved
        manager.close()
    assert states[0] == states[1] == states[2]
    assert dump_store(tmp_path / "own") == dump_store(tmp_path / "every") == dump_store(tmp_path / "seventh")


def test_periodic_work_follows_market_time_cadences(manager: UniversalLearningManager) -> None:
    for n in range(10):
        signals = {**RSI_STRONG, **MACD_POS} if n % 2 else {**RSI_OVERSOLD, **MACD_NEG}
        manager.learn_from_trade(make_trade(n, 1.0 if n % 2 else -1.0, signals=signals))
    assert manager.periodic(START_NS)  # first call: evolution, reinforcement, failure analysis all run
    steps = len(manager.evolution_history())
    assert not manager.periodic(START_NS + 59 * MINUTE_NS)  # evolution and analysis every 60 minutes
    assert len(manager.evolution_history()) == steps
    manager.periodic(START_NS + 60 * MINUTE_NS)  # due, but no trade closed since: nothing new to learn
    assert len(manager.evolution_history()) == steps
    manager.learn_from_trade(make_trade(10, 1.0, exit_ns=START_NS + 61 * MINUTE_NS))
    manager.periodic(START_NS + 61 * MINUTE_NS)
    assert len(manager.evolution_history()) == steps + 1


def test_on_bar_adapts_on_the_5_minute_cadence(manager: UniversalLearningManager) -> None:
    for n in range(10):
        manager.learn_from_trade(make_trade(n, -1.0))
    assert manager.on_bar(START_NS, CALM)
    assert manager.snapshot().adjustment_for(CALM).active
    assert manager.adaptations == 1


def test_internal_clock_follows_event_times_and_survives_reopen(manager_factory: ManagerFactory) -> None:
    m = manager_factory("own")
    m.learn_from_trade(make_trade(1, 1.0, exit_ns=START_NS + 5))
    assert m.clock.now_ns() == START_NS + 5
    m.learn_from_trade(make_trade(2, 1.0, exit_ns=START_NS))  # late event: time never goes back
    assert m.clock.now_ns() == START_NS + 5
    m.close()
    assert manager_factory("own").clock.now_ns() == START_NS + 5


def test_injected_clock_is_read_not_moved(manager_factory: ManagerFactory) -> None:
    clock = MarketClock(START_NS)
    m = manager_factory(clock=clock)
    m.learn_from_trade(make_trade(1, 1.0, exit_ns=START_NS + DAY_NS))
    assert clock.now_ns() == START_NS
    clock.advance_by(DAY_NS)
    assert m.snapshot().time_ns == START_NS + DAY_NS


def test_closed_manager_refuses_work_and_close_is_idempotent(manager_factory: ManagerFactory) -> None:
    with manager_factory() as m:
        m.learn_from_trade(make_trade(1, 1.0))
    m.close()
    with pytest.raises(StateError, match="closed"):
        m.learn_from_trade(make_trade(2, 1.0))


def test_effectiveness_scalars_and_trends(manager: UniversalLearningManager) -> None:
    for n in range(100):
        manager.learn_from_trade(make_trade(n, 1.0 if n >= 50 else -1.0, exit_ns=START_NS + n))
    eff = manager.track_learning_effectiveness()
    scalars = eff.as_scalars()
    for key in (
        "learning/patterns",
        "learning/avoidance_rules",
        "learning/vetoes",
        "learning/error_resolution_rate",
        "learning/adaptations",
        "learning/win_rate",
        "learning/profit_trend",
    ):
        assert isinstance(scalars[key], float)
    assert eff.win_rate == 0.5
    assert eff.win_rate_trend == 1.0  # older half all lost, newer half all won
    assert eff.profit_trend == 2.0
    assert eff.patterns == 1
    assert eff.trades == 100


def test_report_is_written_as_markdown_and_self_contained_html(
    manager: UniversalLearningManager, tmp_path: Path
) -> None:
    _story(manager)
    manager.track_learning_effectiveness()
    md, html = manager.write_report(tmp_path / "report")
    text = md.read_text()
    assert text.startswith("# Learning report")
    assert "## Avoidance rules" in text
    assert "avoid:rsi_14=oversold" in text
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page


def test_store_remembers_its_config_and_drops_keys_it_does_not_know(manager_factory: ManagerFactory) -> None:
    first = manager_factory("cfg", LearningConfig(win_rate_threshold=0.4, seed=5))
    first._store.set_meta(
        "config", {**LearningConfig(win_rate_threshold=0.4).model_dump(), "retired_knob": 1}
    )
    first.close()
    again = manager_factory("cfg")
    assert again.config.win_rate_threshold == 0.4
    assert again.config.seed == 0  # the injected meta above carries the default seed


def test_pattern_listing_includes_stored_and_uncompacted_trades(manager: UniversalLearningManager) -> None:
    first = manager.learn_from_trade(make_trade(1, 1.0, signals=RSI_OVERSOLD))
    manager.compact()
    second = manager.learn_from_trade(make_trade(2, 1.0, signals=RSI_STRONG))
    manager.learn_from_trade(make_trade(3, -1.0, signals=RSI_OVERSOLD))
    listed = {p.signature: p.count for p in manager.patterns()}
    assert listed == {first: 2, second: 1}
    assert manager.pattern_count() == 2
