"""The environment side of the learning manager: switches, the learned order hook and the wrappers.

Every effect is checked twice: that it acts with its switch on, and that it is really gone with it off.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from pydantic import ValidationError
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents.hooks import HookReason, LearnedOrderHook
from agents.switches import LearningSwitches
from agents.wrappers import (
    INFO_CONDITIONS,
    INFO_EVENTS,
    INFO_VERSION,
    LEARNED_FEATURES,
    LearnedFeaturesObservation,
    LearningManagerWrapper,
    wrap_env,
)
from envs.data import generate_synthetic
from envs.errors import ConfigError
from envs.events import ErrorKind
from envs.features.columns import MARKET_CONDITIONS
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from learning.discretize import Discretizer
from learning.records import AvoidanceRule, ConditionAdjustment, LearnedMinimum, PatternScore
from learning.state import LearnedState

SYMBOL = "BTC/USDT"
SPEC = MarketSpec(SYMBOL, taker_fee=0.001, min_notional=100.0, qty_step=1e-5, min_qty=1e-5)
FLAT, SMALL_LONG = 0, 1  # actions of the small long-only env
SHORT, NEUTRAL, LONG = 0, 1, 2  # actions of the default env


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_synthetic([SYMBOL], 700, 11).frames[SYMBOL]


def small_env(frame: pd.DataFrame, **kw: Any) -> MarketReplayEnv:
    """1000 USDT long-only, entries of 8% of equity: about 80 USDT, below the 100 USDT minimum."""
    kw.setdefault("initial_cash", 1000.0)
    kw.setdefault("actions", (0.0, 0.08))
    kw.setdefault("allow_short", False)
    return full_env(frame, **kw)


def full_env(frame: pd.DataFrame, **kw: Any) -> MarketReplayEnv:
    kw.setdefault("market", SPEC)
    kw.setdefault("window", 4)
    return MarketReplayEnv(data=frame, **kw)


def make_rule(factor: str) -> AvoidanceRule:
    return AvoidanceRule(
        rule_id=f"avoid:{factor}",
        factor=factor,
        description=factor,
        support=8,
        losers=10,
        occurrence=0.8,
        winner_occurrence=0.2,
        lift=4.0,
        window_days=3.0,
        created_ns=0,
        updated_ns=0,
    )


def make_state(
    *,
    rules: tuple[AvoidanceRule, ...] = (),
    min_notional: float | None = None,
    adjustments: dict[str, ConditionAdjustment] | None = None,
    version: int = 1,
) -> LearnedState:
    minimums = {}
    if min_notional is not None:
        minimums[SYMBOL] = LearnedMinimum(SYMBOL, 0.0, min_notional, min_notional, 0, 1, "learned")
    return LearnedState(
        version=version,
        time_ns=0,
        rules=rules,
        minimums=minimums,
        condition_adjustments=adjustments or {},
    )


def rule_hitting_row(env: MarketReplayEnv, feature: str = "regime") -> AvoidanceRule:
    """A rule on the factor that ``feature`` of the env's current row discretizes to."""
    flat = {k: v for group in env.market_data.snapshot(env.row).values() for k, v in group.items()}
    return make_rule(Discretizer().factor(feature, flat[feature]))


def adjustment_here(
    env: MarketReplayEnv,
    exposure_multiplier: float = 1.0,
    entry_threshold: float = 0.0,
    max_position: float = 1.0,
) -> dict[str, ConditionAdjustment]:
    """An adjustment for the condition class of the env's current row."""
    conditions = env.market_data.snapshot(env.row)[MARKET_CONDITIONS]
    key = make_state().classifier.key(conditions)
    adjustment = ConditionAdjustment(
        condition_key=key,
        exposure_multiplier=exposure_multiplier,
        entry_threshold=entry_threshold,
        max_position=max_position,
        active=True,
    )
    return {key: adjustment}


def reasons(info: dict[str, Any]) -> list[HookReason]:
    return [e.reason for e in info[INFO_EVENTS]]


def no_warnings(fn: Callable[[], object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Gymnasium's checker says this of every wrapper, whatever it does.
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
        fn()


# --- switches and the wrapper stack ------------------------------------------------------------------


def test_switch_defaults_and_unknown_keys_suggest_the_close_name() -> None:
    switches = LearningSwitches()
    assert all(getattr(switches, name) for name in ("enabled", "online", "vetoes", "learned_minimums"))
    assert not switches.observation_features
    with pytest.raises(ValidationError):
        switches.vetoes = False  # type: ignore[misc]
    with pytest.raises(ConfigError, match="did you mean 'vetoes'"):
        LearningSwitches.from_mapping({"vetos": False})
    with pytest.raises(ConfigError, match="online"):
        LearningSwitches.from_mapping({"online": "maybe"})
    assert LearningSwitches.from_mapping({"vetoes": False}).vetoes is False


def test_wrap_env_leaves_the_env_unchanged_when_learning_is_disabled(frame: pd.DataFrame) -> None:
    env = small_env(frame)
    assert wrap_env(env, LearningSwitches(enabled=False)) is env
    assert env.core.order_hook is None


def test_wrap_env_builds_the_stack_the_switches_ask_for(frame: pd.DataFrame) -> None:
    plain = wrap_env(small_env(frame), LearningSwitches())
    assert isinstance(plain, LearningManagerWrapper)
    assert isinstance(plain.unwrapped, MarketReplayEnv)
    assert isinstance(plain.unwrapped.core.order_hook, LearnedOrderHook)
    featured = wrap_env(small_env(frame), LearningSwitches(observation_features=True))
    assert isinstance(featured, LearnedFeaturesObservation)
    # What VecEnv.env_method reaches through the stack.
    featured.get_wrapper_attr("set_learned_state")(make_state(version=7))
    assert featured.get_wrapper_attr("learned_version") == 7


def test_only_a_market_replay_env_can_be_wrapped() -> None:
    with pytest.raises(ConfigError, match="needs a MarketReplayEnv"):
        wrap_env(gym.make("CartPole-v1"), LearningSwitches())


def test_an_env_with_its_own_order_hook_is_refused(frame: pd.DataFrame) -> None:
    env = small_env(frame, order_hook=lambda p: p)
    with pytest.raises(ConfigError, match="already has an order hook"):
        wrap_env(env, LearningSwitches())


def test_the_wrapper_is_not_built_for_a_disabled_manager(frame: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="wrap_env"):
        LearningManagerWrapper(small_env(frame), LearningSwitches(enabled=False))


@pytest.mark.parametrize("observation_features", [False, True])
def test_wrapped_env_passes_gymnasium_and_sb3_check_env(
    frame: pd.DataFrame, observation_features: bool
) -> None:
    base = full_env(frame, episode_length=50)
    base.reset(seed=0)
    state = make_state(rules=(rule_hitting_row(base),), min_notional=150.0)
    env = wrap_env(base, LearningSwitches(observation_features=observation_features), state=state)
    no_warnings(lambda: gym_check_env(env, skip_render_check=True))
    no_warnings(lambda: sb3_check_env(env, warn=True))


def test_learned_features_extend_the_box_and_show_the_state(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    inner_size = int(np.prod(base.observation_space.shape or ()))
    env = wrap_env(base, LearningSwitches(observation_features=True))
    assert env.observation_space.shape == (inner_size + len(LEARNED_FEATURES),)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[inner_size:], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    adjustments = adjustment_here(base, exposure_multiplier=0.5, entry_threshold=0.2, max_position=0.75)
    factors = Discretizer().factors(*base.market_data.snapshot(base.row).values())
    pattern = PatternScore("|".join(factors), 4, 3, 2.0, 0.4, 1.2, 0, 0)
    state = replace(
        make_state(rules=(rule_hitting_row(base),), adjustments=adjustments),
        strategy_weights={factors[0]: 2.0, "no_such_feature=pos": 0.5},
        top_patterns=(pattern,),
    )
    env.get_wrapper_attr("set_learned_state")(state)
    env.get_wrapper_attr("apply_resolution")("halt")
    features = env.get_wrapper_attr("learned_features")()
    named = dict(zip(LEARNED_FEATURES, features.tolist(), strict=True))
    assert named["learned_signal_weight"] == 2.0  # the one weighted factor of this bar
    assert named["learned_pattern_score"] == pytest.approx(0.4)
    assert named["learned_vetoing_rules"] == 1.0
    assert named["learned_exposure_multiplier"] == 0.5
    assert named["learned_entry_threshold"] == pytest.approx(0.2)
    assert named["learned_max_position"] == 0.75
    assert named["learned_paused"] == 1.0
    obs, *_ = env.step(NEUTRAL)
    assert obs[inner_size + LEARNED_FEATURES.index("learned_paused")] == 1.0


def test_info_carries_events_conditions_and_the_applied_version(frame: pd.DataFrame) -> None:
    env = wrap_env(small_env(frame), LearningSwitches(), state=make_state(version=4))
    _, info = env.reset(seed=0)
    assert info[INFO_EVENTS] == ()
    assert info[INFO_VERSION] == 4
    assert isinstance(env.unwrapped, MarketReplayEnv)
    assert set(info[INFO_CONDITIONS]) == set(env.unwrapped.market_data.snapshot(0)[MARKET_CONDITIONS])
    *_, info = env.step(FLAT)
    assert info[INFO_VERSION] == 4
    assert pickle.loads(pickle.dumps(info))[INFO_CONDITIONS] == info[INFO_CONDITIONS]


# --- vetoes and action masks ----------------------------------------------------------------------


def test_a_rule_veto_keeps_the_account_flat_and_names_the_rule(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    rule = rule_hitting_row(base)
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule,)))
    *_, info = env.step(LONG)
    assert info["orders"] == ()
    assert info["position"] == 0.0
    (event,) = info[INFO_EVENTS]
    assert (event.reason, event.rule_ids, event.direction, event.new_qty) == (
        HookReason.RULE_VETO,
        (rule.rule_id,),
        1,
        0.0,
    )
    assert event.round_trip_cost == pytest.approx(2 * 0.001)
    assert len(info["vetoed"]) == 1  # the core reports the held-back proposal too


def test_a_push_within_a_bar_applies_the_new_rules_and_adjustments(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    set_state = env.get_wrapper_attr("set_learned_state")
    hook = env.get_wrapper_attr("hook")
    rule = rule_hitting_row(base)
    here = adjustment_here(base, max_position=0.5)
    set_state(make_state(version=1))
    assert (hook.rule_hits, hook.adjustment) == ((), None)  # worked out for this bar ...
    set_state(make_state(rules=(rule,), version=2))  # ... and again when a push brings a rule
    assert hook.rule_hits == (rule.rule_id,)
    assert hook.adjustment is None
    set_state(make_state(rules=(replace(rule, vetoes=3),), adjustments=here, version=3))
    assert hook.rule_hits == (rule.rule_id,)  # the same rule (other counts), a new adjustment
    assert hook.adjustment == next(iter(here.values()))
    set_state(make_state(version=4))  # rules and adjustments gone
    assert (hook.rule_hits, hook.adjustment) == ((), None)
    set_state(make_state(rules=(rule,), version=5))
    *_, info = env.step(LONG)
    assert reasons(info) == [HookReason.RULE_VETO]


def test_with_vetoes_off_the_same_entry_goes_through(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches(vetoes=False))
    env.reset(seed=0)
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule_hitting_row(base),)))
    *_, info = env.step(LONG)
    assert len(info["fills"]) == 1
    assert info[INFO_EVENTS] == ()


def test_exits_are_never_vetoed(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    env.step(LONG)
    assert base.core.portfolio.qty > 0.0
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule_hitting_row(base),)))
    *_, info = env.step(NEUTRAL)
    assert len(info["fills"]) == 1
    assert info["position"] == 0.0
    assert info[INFO_EVENTS] == ()


def test_a_vetoed_reversal_only_closes_the_position(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    env.step(LONG)
    long_qty = base.core.portfolio.qty
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule_hitting_row(base),)))
    *_, info = env.step(SHORT)
    (fill,) = info["fills"]
    assert fill.filled_qty == pytest.approx(long_qty)
    assert info["position"] == 0.0
    (event,) = info[INFO_EVENTS]
    assert event.reason is HookReason.RULE_VETO
    assert event.direction == -1
    assert event.new_qty == pytest.approx(long_qty)


def test_action_masks_forbid_vetoed_entries_but_never_the_current_position(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    masks = env.get_wrapper_attr("action_masks")
    np.testing.assert_array_equal(masks(), [True, True, True])  # nothing learned yet
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule_hitting_row(base),)))
    np.testing.assert_array_equal(masks(), [False, True, False])  # flat: no entry either way
    env.get_wrapper_attr("set_learned_state")(None)
    env.step(LONG)
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule_hitting_row(base),)))
    # Long: the reversal is masked; leaving and staying long (the current position) are not.
    np.testing.assert_array_equal(masks(), [False, True, True])


def test_long_only_masks_keep_at_least_the_current_position() -> None:
    bars = generate_synthetic([SYMBOL], 700, 11).frames[SYMBOL]
    base = small_env(bars)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule_hitting_row(base),)))
    mask = env.get_wrapper_attr("action_masks")()
    assert mask.any()
    np.testing.assert_array_equal(mask, [True, False])


@pytest.mark.parametrize("switches", [LearningSwitches(action_masks=False), LearningSwitches(vetoes=False)])
def test_action_masks_allow_everything_when_their_switch_is_off(
    frame: pd.DataFrame, switches: LearningSwitches
) -> None:
    base = full_env(frame)
    env = wrap_env(base, switches)
    env.reset(seed=0)
    env.get_wrapper_attr("set_learned_state")(make_state(rules=(rule_hitting_row(base),)))
    np.testing.assert_array_equal(env.get_wrapper_attr("action_masks")(), [True, True, True])


def test_action_masks_need_discrete_actions(frame: pd.DataFrame) -> None:
    env = wrap_env(full_env(frame, actions="continuous"), LearningSwitches())
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="discrete actions"):
        env.get_wrapper_attr("action_masks")()


# --- learned minimums --------------------------------------------------------------------------------


def test_without_learned_minimums_a_small_entry_is_rejected_for_the_minimum(frame: pd.DataFrame) -> None:
    env = wrap_env(
        small_env(frame), LearningSwitches(learned_minimums=False), state=make_state(min_notional=150)
    )
    env.reset(seed=0)
    *_, info = env.step(SMALL_LONG)
    (rejected,) = info["rejections"]
    assert rejected.kind is ErrorKind.MIN_NOTIONAL
    assert rejected.notional < 100.0
    assert info[INFO_EVENTS] == ()


def test_a_learned_minimum_resizes_a_small_entry_up_to_it(frame: pd.DataFrame) -> None:
    env = wrap_env(small_env(frame), LearningSwitches(), state=make_state(min_notional=150))
    env.reset(seed=0)
    *_, info = env.step(SMALL_LONG)
    (fill,) = info["fills"]
    assert 150.0 <= fill.requested_qty * fill.price < 150.0 * 1.01
    (event,) = info[INFO_EVENTS]
    assert event.reason is HookReason.MIN_RESIZE
    assert event.qty * event.price < 100.0 <= event.new_qty * event.price
    assert round(event.new_qty / 1e-5, 6) == round(event.new_qty / 1e-5)  # on the lot step


def test_an_unaffordable_learned_minimum_skips_the_entry(frame: pd.DataFrame) -> None:
    env = wrap_env(small_env(frame), LearningSwitches(), state=make_state(min_notional=5000))
    env.reset(seed=0)
    *_, info = env.step(SMALL_LONG)
    assert info["orders"] == ()
    assert reasons(info) == [HookReason.MIN_SKIP]


def test_a_small_reduction_is_resized_to_the_minimum_and_a_close_always_passes(frame: pd.DataFrame) -> None:
    base = small_env(frame, actions=(0.0, 0.17, 0.25))
    env = wrap_env(base, LearningSwitches(), state=make_state(min_notional=100))
    env.reset(seed=0)
    env.step(2)
    *_, info = env.step(1)  # 0.25 -> 0.17: a sale of about 80 USDT, below the 100 minimum
    (fill,) = info["fills"]
    assert 100.0 <= fill.filled_qty * fill.price < 101.0
    assert reasons(info) == [HookReason.MIN_RESIZE]
    assert info["exposure"] == pytest.approx(0.15, abs=0.005)
    env.get_wrapper_attr("set_learned_state")(make_state(min_notional=500))
    *_, info = env.step(0)  # the close of 150 USDT is below the learned 500, and still goes
    assert len(info["fills"]) == 1
    assert info["position"] == 0.0
    assert info[INFO_EVENTS] == ()


def test_a_reduction_that_would_leave_dust_sells_the_whole_position(frame: pd.DataFrame) -> None:
    base = small_env(frame, actions=(0.0, 0.17, 0.25))
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    env.step(2)
    env.get_wrapper_attr("set_learned_state")(make_state(min_notional=200))
    *_, info = env.step(1)  # selling 200 of 250 USDT would leave 50, below the minimum: sell all
    assert info["position"] == 0.0
    assert reasons(info) == [HookReason.MIN_RESIZE]
    (fill,) = info["fills"]
    assert info[INFO_EVENTS][0].new_qty == pytest.approx(fill.filled_qty)


# --- market-condition adjustments ----------------------------------------------------------------


def test_condition_adjustments_scale_and_cap_the_entry(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    env.get_wrapper_attr("set_learned_state")(
        make_state(adjustments=adjustment_here(base, exposure_multiplier=0.5))
    )
    *_, info = env.step(LONG)
    assert info["exposure"] == pytest.approx(0.5, abs=0.01)
    assert reasons(info) == [HookReason.CONDITION_SIZE]

    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    env.get_wrapper_attr("set_learned_state")(make_state(adjustments=adjustment_here(base, max_position=0.3)))
    *_, info = env.step(SHORT)
    assert info["exposure"] == pytest.approx(-0.3, abs=0.01)


def test_the_entry_threshold_holds_weak_openings_only(frame: pd.DataFrame) -> None:
    base = full_env(frame, actions="continuous")
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    state = make_state(adjustments=adjustment_here(base, entry_threshold=0.5))
    env.get_wrapper_attr("set_learned_state")(state)
    *_, info = env.step(np.array([0.3], dtype=np.float32))
    assert info["orders"] == ()
    assert reasons(info) == [HookReason.ENTRY_THRESHOLD]
    env.get_wrapper_attr("set_learned_state")(
        make_state(adjustments=adjustment_here(base, entry_threshold=0.5))
    )
    *_, info = env.step(np.array([0.8], dtype=np.float32))
    assert info["exposure"] == pytest.approx(0.8, abs=0.01)


def test_with_condition_adjustments_off_the_full_target_is_traded(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches(condition_adjustments=False))
    env.reset(seed=0)
    state = make_state(adjustments=adjustment_here(base, exposure_multiplier=0.5, max_position=0.3))
    env.get_wrapper_attr("set_learned_state")(state)
    *_, info = env.step(LONG)
    assert info["exposure"] == pytest.approx(1.0, abs=0.01)
    assert info[INFO_EVENTS] == ()


# --- error resolutions -------------------------------------------------------------------------------


def test_backoff_pauses_entries_for_its_bars_and_a_reset_ends_any_pause(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches(), resolution_settings={"backoff_bars": 2})
    env.reset(seed=0)
    env.get_wrapper_attr("apply_resolution")("retry_with_backoff")
    for _ in range(2):
        *_, info = env.step(LONG)
        assert info["orders"] == ()
        assert reasons(info) == [HookReason.PAUSED]
    *_, info = env.step(LONG)
    assert len(info["fills"]) == 1

    env.reset(seed=1)
    env.get_wrapper_attr("apply_resolution")("halt")
    for _ in range(5):
        *_, info = env.step(LONG)
        assert info["orders"] == ()
    env.reset(seed=2)
    *_, info = env.step(LONG)
    assert len(info["fills"]) == 1


def test_reduce_size_shrinks_the_next_entry_only(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    env.get_wrapper_attr("apply_resolution")("reduce_size")
    *_, info = env.step(LONG)
    assert info["exposure"] == pytest.approx(0.5, abs=0.01)
    assert reasons(info) == [HookReason.REDUCED_SIZE]
    env.step(NEUTRAL)
    *_, info = env.step(LONG)
    assert info["exposure"] == pytest.approx(1.0, abs=0.01)


def test_with_error_resolutions_off_nothing_is_paused(frame: pd.DataFrame) -> None:
    env = wrap_env(full_env(frame), LearningSwitches(error_resolutions=False))
    env.reset(seed=0)
    env.get_wrapper_attr("apply_resolution")("halt")
    *_, info = env.step(LONG)
    assert len(info["fills"]) == 1


# --- deferred settling ------------------------------------------------------------------------------


def test_deferred_settling_steps_and_annotates_like_an_undeferred_wrapper(frame: pd.DataFrame) -> None:
    """What HostedVecEnv does: answer first, settle later (explicitly, or by the next call that needs
    it). Every observation, reward, fill, event and mask equals the undeferred wrapper's."""
    settings = {"backoff_bars": 2}
    plain = wrap_env(full_env(frame), LearningSwitches(), resolution_settings=settings)
    deferred = wrap_env(full_env(frame), LearningSwitches(), resolution_settings=settings)
    assert isinstance(plain, LearningManagerWrapper)
    assert isinstance(deferred, LearningManagerWrapper)
    deferred.defer_settling()
    obs_p, _ = plain.reset(seed=0)
    obs_d, _ = deferred.reset(seed=0)
    np.testing.assert_array_equal(obs_p, obs_d)
    regime_rule = rule_hitting_row(plain.unwrapped)  # type: ignore[arg-type]
    script: list[Any] = [LONG, NEUTRAL, "push", LONG, SHORT, "backoff", LONG, LONG, LONG, "masks", SHORT]
    script += ["reset", LONG, NEUTRAL, LONG, "masks", SHORT, LONG] * 3
    keys = (INFO_EVENTS, INFO_CONDITIONS, INFO_VERSION)
    unsettled: dict[str, Any] | None = None  # the deferred step left to settle by the next call
    expected: dict[str, Any] = {}
    events_seen = 0
    for i, item in enumerate(script):
        if item == "push":
            state = make_state(rules=(regime_rule,), version=7)
            plain.set_learned_state(state)
            deferred.set_learned_state(state)
        elif item == "backoff":
            plain.apply_resolution("retry_with_backoff")
            deferred.apply_resolution("retry_with_backoff")
        elif item == "masks":
            np.testing.assert_array_equal(plain.action_masks(), deferred.action_masks())
        elif item == "reset":
            np.testing.assert_array_equal(plain.reset(seed=i)[0], deferred.reset(seed=i)[0])
        else:
            obs_p, reward_p, term_p, trunc_p, info_p = plain.step(item)
            obs_d, reward_d, term_d, trunc_d, info_d = deferred.step(item)
            np.testing.assert_array_equal(obs_p, obs_d)
            assert (reward_p, term_p, trunc_p) == (reward_d, term_d, trunc_d)
            assert info_d["fills"] == info_p["fills"]
            assert info_d["orders"] == info_p["orders"]
            assert INFO_EVENTS not in info_d  # not yet settled
            events_seen += len(info_p[INFO_EVENTS])
            if i % 2:
                outer = dict(info_d)  # an outer wrapper's copy: settle(info) annotates it too
                deferred.settle(outer)
                assert {k: outer[k] for k in keys} == {k: info_p[k] for k in keys}
                assert {k: info_d[k] for k in keys} == {k: info_p[k] for k in keys}
            else:
                unsettled, expected = info_d, {k: info_p[k] for k in keys}
                continue
        if unsettled is not None:  # settled by the call above
            assert {k: unsettled[k] for k in keys} == expected
            unsettled = None
    assert events_seen > 0  # the rule and the backoff acted
    deferred.defer_settling(False)  # settles what is pending, then steps undeferred
    *_, info_p = plain.step(LONG)
    *_, info_d = deferred.step(LONG)
    assert {k: info_d[k] for k in keys} == {k: info_p[k] for k in keys}


# --- pickling --------------------------------------------------------------------------------------


def test_the_hook_and_its_state_pickle_and_keep_working(frame: pd.DataFrame) -> None:
    base = full_env(frame)
    env = wrap_env(base, LearningSwitches())
    env.reset(seed=0)
    state = make_state(rules=(rule_hitting_row(base),), min_notional=150.0)
    env.get_wrapper_attr("set_learned_state")(state)
    hook = base.core.order_hook
    assert isinstance(hook, LearnedOrderHook)
    copy = pickle.loads(pickle.dumps(hook))
    assert copy.state == state
    assert copy.rule_hits == hook.rule_hits == (state.rules[0].rule_id,)
    assert pickle.loads(pickle.dumps(state)).vetoes(hook.features) == hook.rule_hits
