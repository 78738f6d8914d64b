"""MarketReplayEnv: the Gymnasium contract, determinism, no look-ahead, accounting and episode rules."""

from __future__ import annotations

import itertools
import math
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.utils.env_checker import data_equivalence
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs.registration  # noqa: F401 - registers slf/MarketReplay-v0
from envs.broker import MSG_INSUFFICIENT_BALANCE, MSG_LOT_SIZE, MSG_NOTIONAL
from envs.core import OrderProposal, StepResult
from envs.errors import ConfigError, DataError
from envs.events import ErrorKind, OrderStatus, PositionSide
from envs.features import FeatureMatrix, NormalizationStats, compute_features
from envs.market import MarketSpec
from envs.replay import (
    ENV_ID,
    STATE_FEATURES,
    DifferentialSharpe,
    MarketReplayEnv,
    build_observation,
    step_info,
)

N_BARS = 900
WINDOW = 8
SPEC = MarketSpec("TEST/USD", taker_fee=0.001, spread_bps=4.0, slippage_bps=1.0)
FAULTS = {"rate_limit": 0.05, "timeout": 0.05, "maintenance": 0.02}


def make_bars(n: int = N_BARS, seed: int = 0) -> pd.DataFrame:
    """A random walk of minute bars with consistent OHLC and positive volume."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.r_[100.0, close[:-1]] * (1.0 + rng.normal(0.0, 0.0003, n))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.001, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.001, n)))
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="timestamp")
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(50.0, 150.0, n)},
        index=index,
    )
    frame.attrs["symbol"] = "TEST/USD"
    return frame


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return make_bars()


def make_env(bars: pd.DataFrame, **kw: Any) -> MarketReplayEnv:
    kw.setdefault("market", SPEC)
    kw.setdefault("window", WINDOW)
    return MarketReplayEnv(data=bars, **kw)


def _no_warnings(fn: Callable[[], object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn()


# --- the Gymnasium and SB3 contracts ----------------------------------------------------------------


@pytest.mark.parametrize("actions", [None, "continuous"])
def test_gymnasium_check_env_passes_without_warnings(bars: pd.DataFrame, actions: str | None) -> None:
    env = gym.make(
        ENV_ID, data=bars, market=SPEC, window=WINDOW, actions=actions, episode_length=50, faults=FAULTS
    )
    _no_warnings(lambda: gym_check_env(env.unwrapped))


@pytest.mark.parametrize("actions", [None, "continuous"])
def test_sb3_check_env_passes_without_warnings(bars: pd.DataFrame, actions: str | None) -> None:
    env = make_env(bars, actions=actions, episode_length=50, faults=FAULTS)
    _no_warnings(lambda: sb3_check_env(env, warn=True))


def test_gym_make_bundled_dataset_steps() -> None:
    env = gym.make(ENV_ID, dataset="eurusd_1h", episode_length=20)
    total = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the passive env checker of gym.make must stay silent
        obs, info = env.reset(seed=3)
        assert obs.shape == env.observation_space.shape
        for _ in range(20):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            total += float(reward)
            assert env.observation_space.contains(obs)
    assert truncated
    assert not terminated
    assert math.isfinite(total)
    assert info["equity"] > 0.0
    assert env.unwrapped.symbol == "EUR/USD"


def test_spaces_and_observation_layout(bars: pd.DataFrame) -> None:
    env = make_env(bars)
    k = len(env.market_data.features.columns)
    assert env.observation_space.shape == (WINDOW * k + len(STATE_FEATURES),)
    assert env.observation_space.dtype == np.float32
    assert np.all(np.isfinite(env.observation_space.low))
    assert np.all(np.isfinite(env.observation_space.high))
    assert env.action_space == gym.spaces.Discrete(3)
    obs, _ = env.reset(seed=0)
    # the feature window is the last `window` rows of the normalized matrix, oldest first
    t = env.row
    normalized = env.normalization.apply(env.market_data.features).values
    expected = np.clip(normalized[t - WINDOW + 1 : t + 1], -10, 10).reshape(-1)
    np.testing.assert_array_equal(obs[: WINDOW * k], expected)
    assert tuple(obs[-3:]) == (0.0, 0.0, 0.0)  # flat: no exposure, no PnL, no time in trade


# --- determinism and no look-ahead ----------------------------------------------------------------------


def _rollout(env: MarketReplayEnv, seed: int, steps: int) -> list[tuple[Any, ...]]:
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    out: list[tuple[Any, ...]] = [(obs, info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            out.append((obs, info))
    return out


@pytest.mark.parametrize("actions", [None, "continuous"])
def test_seeded_two_copy_rollouts_are_identical(bars: pd.DataFrame, actions: str | None) -> None:
    kw: dict[str, Any] = {
        "actions": actions,
        "episode_length": 60,
        "faults": FAULTS,
        "reward": "differential_sharpe",
    }
    a = _rollout(make_env(bars, **kw), seed=11, steps=200)
    b = _rollout(make_env(bars, **kw), seed=11, steps=200)
    assert data_equivalence(a, b, exact=True)
    c = _rollout(make_env(bars, **kw), seed=12, steps=200)
    assert not data_equivalence(a, c)
    # the events really happened: orders, refusals and closed trades
    infos = [step[-1] for step in a]
    assert sum(len(i["fills"]) for i in infos) > 10
    assert sum(len(i["errors"]) for i in infos) > 0
    assert sum(len(i["trades"]) for i in infos) > 0


def _perturb_after(frame: pd.DataFrame, t: int, seed: int = 99) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    n = len(frame) - t - 1
    scale = np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    for column in ("open", "high", "low", "close"):
        out.iloc[t + 1 :, out.columns.get_loc(column)] *= scale
    out.iloc[t + 1 :, out.columns.get_loc("volume")] *= rng.uniform(0.1, 10.0, n)
    return out


def _policy(obs: np.ndarray) -> int:
    """Deterministic, and sensitive to every bit of the observation."""
    return int(abs(hash(obs.tobytes()))) % 3


def _trace_until(env: MarketReplayEnv, t: int, start: int) -> list[tuple[Any, ...]]:
    obs, _ = env.reset(seed=5, options={"start": start})
    trace: list[tuple[Any, ...]] = [("obs", start, obs)]
    while env.row < t:
        action = _policy(obs)
        obs, reward, _, _, info = env.step(action)
        trace.append(("step", env.row, action, obs, reward, info["fills"], info["errors"], info["equity"]))
    return trace


def _look_ahead_differs(features_of: Callable[[pd.DataFrame], FeatureMatrix | None]) -> tuple[bool, bool]:
    """(anything up to t changed, something after t changed) when every bar after t is perturbed."""
    original = make_bars(seed=3)
    t = 600
    perturbed = _perturb_after(original, t)
    base = compute_features(original)
    stats = NormalizationStats.fit(base, base.warmup, t + 1)  # fitted on data up to t only
    envs_ = []
    for frame in (original, perturbed):
        features = features_of(frame)
        kw: dict[str, Any] = {} if features is None else {"features": features}
        envs_.append(make_env(frame, normalization=stats, faults=FAULTS, **kw))
    start = envs_[0]._t_min
    traces = [_trace_until(env, t, start) for env in envs_]
    upto_t_same = data_equivalence(traces[0], traces[1], exact=True)
    after = [env.step(1)[0] for env in envs_]
    return (not upto_t_same), not np.array_equal(after[0], after[1])


def test_no_look_ahead_perturbing_bars_after_t_changes_nothing_up_to_t() -> None:
    changed_up_to_t, changed_after_t = _look_ahead_differs(lambda frame: None)
    assert not changed_up_to_t
    assert changed_after_t  # the perturbation is visible once t + 1 is observed


def test_no_look_ahead_check_catches_a_leaky_feature() -> None:
    def leaky(frame: pd.DataFrame) -> FeatureMatrix:
        m = compute_features(frame)
        values = np.array(m.values)
        values[:-1, 0] = frame["close"].to_numpy()[1:] / 100.0  # tomorrow's close in column 0
        return FeatureMatrix(values, m.columns, m.index, m.groups, m.warmup, m.categorical, m.config)

    changed_up_to_t, _ = _look_ahead_differs(leaky)
    assert changed_up_to_t


# --- accounting by hand ---------------------------------------------------------------------------


def test_long_step_fills_at_next_open_with_spread_slippage_and_fee(bars: pd.DataFrame) -> None:
    env = make_env(bars, rebalance_band=0.0)
    start = env._t_min + 10
    env.reset(seed=0, options={"start": start})
    _, reward, _, _, info = env.step(2)  # target +1
    open_, close = bars["open"].iloc[start + 1], bars["close"].iloc[start + 1]
    fill = open_ * (1 + 3e-4)  # half of 4 bps spread + 1 bps slippage
    qty = 10_000.0 / (fill * 1.001)  # the whole equity, fee reserved
    fee = qty * fill * 0.001
    cash = 10_000.0 - qty * fill - fee
    (order,) = info["fills"]
    assert order.price == pytest.approx(fill, rel=1e-12)
    assert order.filled_qty == pytest.approx(qty, rel=1e-9)
    assert order.fee == pytest.approx(fee, rel=1e-9)
    assert order.slippage == pytest.approx(qty * (fill - open_), rel=1e-9)
    assert order.time_ns == bars.index[start + 1].value
    assert info["cash"] == pytest.approx(cash, abs=1e-6)
    assert info["equity"] == pytest.approx(cash + qty * close, rel=1e-12)
    assert reward == pytest.approx(math.log((cash + qty * close) / 10_000.0), rel=1e-9)


def test_short_step_pays_borrow_on_the_close(bars: pd.DataFrame) -> None:
    env = make_env(bars, rebalance_band=0.0, borrow_rate=0.001, market=MarketSpec("TEST/USD", taker_fee=0.0))
    start = env._t_min
    env.reset(seed=0, options={"start": start})
    _, _, _, _, info = env.step(0)  # target -1
    open_, close = bars["open"].iloc[start + 1], bars["close"].iloc[start + 1]
    qty = 10_000.0 / open_
    borrow = qty * close * 0.001
    assert info["position"] == pytest.approx(-qty)
    assert info["cash"] == pytest.approx(10_000.0 + qty * open_ - borrow)
    assert info["equity"] == pytest.approx(10_000.0 - qty * (close - open_) - borrow)
    _, _, _, _, info = env.step(1)  # flat: the trade carries its borrow
    (trade,) = info["trades"]
    next_open = bars["open"].iloc[start + 2]
    assert trade.side is PositionSide.SHORT
    assert trade.pnl == pytest.approx(qty * (open_ - next_open) - borrow)


@pytest.mark.parametrize(
    ("market", "kind", "message", "code"),
    [
        (MarketSpec("TEST/USD", min_notional=1e9), ErrorKind.MIN_NOTIONAL, MSG_NOTIONAL, "-1013"),
        (MarketSpec("TEST/USD", min_qty=1e9), ErrorKind.LOT_SIZE, MSG_LOT_SIZE, "-1013"),
        (MarketSpec("TEST/USD", qty_step=1e9), ErrorKind.LOT_SIZE, MSG_LOT_SIZE, "-1013"),
    ],
)
def test_exchange_rejections_reach_info_with_wording_and_code(
    bars: pd.DataFrame, market: MarketSpec, kind: ErrorKind, message: str, code: str
) -> None:
    env = make_env(bars, market=market)
    env.reset(seed=0)
    _, _, _, _, info = env.step(2)
    (rejected,) = info["rejections"]
    (error,) = info["errors"]
    assert (rejected.kind, rejected.message, rejected.code) == (kind, message, code)
    assert (error.kind, error.message, error.code, error.order_id) == (kind, message, code, rejected.order_id)
    assert info["fills"] == ()
    assert info["position"] == 0.0
    assert pickle.loads(pickle.dumps(info)) == info


def test_order_hook_oversizing_is_refused_for_insufficient_balance(bars: pd.DataFrame) -> None:
    def greedy(p: OrderProposal) -> OrderProposal:
        return p._replace(qty=p.qty * 2)

    env = make_env(bars, order_hook=greedy)
    env.reset(seed=0)
    _, _, _, _, info = env.step(2)
    (rejected,) = info["rejections"]
    assert (rejected.kind, rejected.message, rejected.code) == (
        ErrorKind.INSUFFICIENT_BALANCE,
        MSG_INSUFFICIENT_BALANCE,
        "-2010",
    )


def test_order_hook_veto_is_reported_and_removable(bars: pd.DataFrame) -> None:
    env = make_env(bars)
    env.set_order_hook(lambda p: None)
    env.reset(seed=0)
    _, _, _, _, info = env.step(2)
    assert info["orders"] == ()
    assert len(info["vetoed"]) == 1
    env.set_order_hook(None)
    _, _, _, _, info = env.step(2)
    assert len(info["fills"]) == 1


def test_fault_injection_in_the_env_is_seeded_and_near_its_rate(bars: pd.DataFrame) -> None:
    def faults(seed: int) -> list[ErrorKind | None]:
        env = make_env(bars, faults={"timeout": 0.3}, rebalance_band=0.0)
        env.reset(seed=seed)
        kinds = []
        for i in range(300):
            *_, terminated, truncated, info = env.step(2 * (i % 2))  # alternate long/short
            kinds += [o.kind for o in info["orders"]]
            if terminated or truncated:
                env.reset()
        return kinds

    a = faults(1)
    assert a == faults(1)
    assert a != faults(2)
    rate = a.count(ErrorKind.TIMEOUT) / len(a)
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(a))


def test_closed_trade_carries_the_entry_row_snapshot(bars: pd.DataFrame) -> None:
    env = make_env(bars)
    env.reset(seed=0)
    entry_row = env.row
    env.step(2)
    for _ in range(3):
        env.step(2)
    *_, info = env.step(1)
    (trade,) = info["trades"]
    snapshot = env.market_data.features.snapshot(entry_row)
    assert trade.entry_signals == snapshot["entry_signals"]
    assert trade.market_conditions == snapshot["market_conditions"]
    assert trade.timeframe_alignment == snapshot["timeframe_alignment"]
    assert trade.volume_profile == snapshot["volume_profile"]
    assert trade.duration_bars == 4
    assert trade.exit_reason == "signal"


# --- episodes --------------------------------------------------------------------------------------


def test_random_starts_come_from_np_random_and_episode_length_truncates(bars: pd.DataFrame) -> None:
    env = make_env(bars, episode_length=7)
    starts = set()
    for seed in range(8):
        env.reset(seed=seed)
        starts.add(env.row)
        for i in range(7):
            *_, terminated, truncated, _ = env.step(1)
            assert truncated is (i == 6)
            assert not terminated
    assert len(starts) > 1
    env.reset(seed=3)
    first = env.row
    env.reset(seed=3)
    assert env.row == first


def test_end_of_data_truncates_and_can_close_the_position(bars: pd.DataFrame) -> None:
    env = make_env(bars, close_at_end=True)
    env.reset(seed=0, options={"start": N_BARS - 3})
    env.step(2)
    *_, terminated, truncated, info = env.step(2)
    assert truncated
    assert not terminated
    (trade,) = info["trades"]
    assert trade.exit_reason == "end_of_data"
    assert info["position"] == 0.0
    with pytest.raises(ConfigError, match="reset"):
        env.step(1)


def _crash(frame: pd.DataFrame, row: int, factor: float) -> pd.DataFrame:
    out = frame.copy()
    for column in ("open", "high", "low", "close"):
        out.iloc[row:, out.columns.get_loc(column)] *= factor
    return out


@pytest.mark.parametrize(
    ("kw", "reason"),
    [({"max_drawdown": 0.2}, "max_drawdown"), ({"leverage": 3.0}, "ruin")],
)
def test_ruin_and_max_drawdown_terminate_and_close_the_position(
    bars: pd.DataFrame, kw: dict[str, float], reason: str
) -> None:
    start = 500
    env = make_env(_crash(bars, start + 3, 0.5), **kw)
    env.reset(seed=0, options={"start": start})
    for _ in range(5):
        *_, reward, terminated, truncated, info = env.step(2)
        if terminated:
            break
    assert terminated
    assert not truncated
    assert math.isfinite(reward)
    assert info["trades"][-1].exit_reason == reason
    assert info["position"] == 0.0


def test_many_envs_share_one_read_only_matrix_and_resets_do_not_copy(bars: pd.DataFrame) -> None:
    a, b = make_env(bars), make_env(bars.copy())  # equal content: the cache matches by digest
    assert a.market_data is b.market_data
    assert a.market_data.features.values is b.market_data.features.values
    assert not a.market_data.features.values.flags.writeable
    assert not a.market_data.close.flags.writeable
    assert a._flat is b._flat
    obs, _ = a.reset(seed=0)
    assert not np.shares_memory(obs, a._flat)  # observations are copies the user may keep


def _expected_observation(env: MarketReplayEnv, normalized: np.ndarray) -> np.ndarray:
    """The observation at ``env.row`` worked out from the normalized matrix and the account."""
    t = env.row
    window = np.clip(normalized[t - env.window + 1 : t + 1], -10, 10).reshape(-1)
    book = env.core.portfolio
    equity = book.cash + book.qty * book.last_price
    if book.qty == 0.0 or equity <= 0.0:
        state = [0.0, 0.0, 0.0]
    else:
        state = [
            min(max(book.qty * book.last_price / equity, -10.0), 10.0),
            min(max((book.last_price - book.avg_price) * book.qty / equity, -10.0), 10.0),
            min(math.log1p(env.core.bars_in_trade()), 10.0),
        ]
    return np.concatenate([window, np.asarray(state, dtype=np.float32)])


def test_observations_are_new_arrays_that_later_steps_leave_alone(bars: pd.DataFrame) -> None:
    # Runs to the last bar of the data, where the window ends at the matrix's last row.
    env = make_env(bars, faults=FAULTS)
    env.action_space.seed(4)
    obs, _ = env.reset(seed=4)
    normalized = env.normalization.apply(env.market_data.features).values
    kept = [(obs, obs.copy())]
    truncated = False
    while not truncated:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        np.testing.assert_array_equal(obs, _expected_observation(env, normalized))
        assert obs.flags.writeable
        assert obs.flags.owndata
        kept.append((obs, obs.copy()))
    assert env.row == len(bars) - 1
    for returned, copy in kept:
        np.testing.assert_array_equal(returned, copy)  # later steps did not write into it
    assert len({id(o) for o, _ in kept}) == len(kept)
    assert any(o[-3] != 0.0 for o, _ in kept)  # the account state was really written


def test_public_builders_give_exactly_what_the_env_returns(bars: pd.DataFrame) -> None:
    env = make_env(bars, faults=FAULTS, episode_length=120)
    env.action_space.seed(8)
    obs, info = env.reset(seed=8)
    k = len(env.market_data.features.columns)
    flat, _ = env.market_data.observations(env.normalization, (0, 1), 10.0)
    book = env.core.portfolio
    assert data_equivalence(step_info(book, info["time_ns"], 0, None), info, exact=True)
    seen_orders = 0
    for _ in range(120):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        built = build_observation(flat, env.row, k, env.window, env.core)
        assert built.dtype == np.float32
        assert built.tobytes() == obs.tobytes()
        result = StepResult(info["orders"], info["trades"], info["errors"], info["vetoed"], info["bar"])
        assert data_equivalence(step_info(book, info["time_ns"], info["step"], result), info, exact=True)
        seen_orders += len(info["orders"])
        if terminated or truncated:
            break
    assert seen_orders > 10


def test_trade_snapshots_are_new_dicts_equal_to_the_feature_matrix_snapshot(bars: pd.DataFrame) -> None:
    md = make_env(bars).market_data
    for row in (md.features.warmup, len(md) // 2, len(md) - 1):
        first, second = md.snapshot(row), md.snapshot(row)
        assert first == md.features.snapshot(row)
        assert all(type(v) is float for group in first.values() for v in group.values())
        assert all(first[g] is not second[g] for g in first)


def test_continuous_long_only_treats_negative_targets_as_flat(bars: pd.DataFrame) -> None:
    env = make_env(bars, actions="continuous", allow_short=False)
    env.reset(seed=0)
    *_, info = env.step(np.array([-0.8], dtype=np.float32))
    assert info["orders"] == ()
    *_, info = env.step(np.array([0.5], dtype=np.float32))
    assert info["position"] > 0.0
    assert info["exposure"] == pytest.approx(0.5, abs=0.01)


def test_differential_sharpe_matches_moody_saffell_by_hand() -> None:
    dsr = DifferentialSharpe(eta=0.1)
    equity = [100.0, 101.0, 100.5, 102.0, 101.0]
    a = b = 0.0
    for prev, now in itertools.pairwise(equity):
        r = now / prev - 1
        da, db = r - a, r * r - b
        var = b - a * a
        expected = (b * da - 0.5 * a * db) / var**1.5 if var > 1e-12 else 0.0
        assert dsr(prev, now, None) == pytest.approx(max(min(expected, 10.0), -10.0))  # type: ignore[arg-type]
        a, b = a + 0.1 * da, b + 0.1 * db
    dsr.reset()
    assert dsr(100.0, 101.0, None) == 0.0  # type: ignore[arg-type]


def test_user_reward_callable_is_used_and_reset(bars: pd.DataFrame) -> None:
    class Count:
        def __init__(self) -> None:
            self.resets = 0

        def reset(self) -> None:
            self.resets += 1

        def __call__(self, prev: float, equity: float, result: object) -> float:
            return equity - prev

    reward = Count()
    env = make_env(bars, reward=reward)
    env.reset(seed=0)
    _, r, *_, info = env.step(2)
    assert reward.resets == 1
    assert r == pytest.approx(info["equity"] - 10_000.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"windw": 8}, "did you mean 'window'"),
        ({"reward": "sharpe_ratio"}, "unknown reward"),
        ({"actions": [-1, 0, 1], "allow_short": False}, "allow_short=False"),
        ({"actions": "box"}, "continuous"),
        ({"episode_length": 10**6}, "exceeds"),
        ({"max_drawdown": 1.5}, "fraction"),
        ({"market": MarketSpec("OTHER/USD")}, "bars are 'TEST/USD'"),
    ],
)
def test_bad_arguments_raise_config_errors_with_fixes(
    bars: pd.DataFrame, kw: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        make_env(bars, **kw)


def test_too_few_bars_for_the_window_is_a_data_error(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="no room for a step"):
        make_env(bars, window=N_BARS)


def test_fill_status_values_in_info_are_consistent(bars: pd.DataFrame) -> None:
    env = make_env(bars, faults={"maintenance": 0.5}, episode_length=40)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(40):
        *_, info = env.step(env.action_space.sample())
        assert all(o.status is OrderStatus.FILLED for o in info["fills"])
        assert all(o.status is OrderStatus.REJECTED for o in info["rejections"])
        assert len(info["errors"]) == len(info["orders"]) - len(info["fills"])
        assert info["equity"] == pytest.approx(info["cash"] + info["position"] * info["price"])


def test_start_and_end_bound_the_replay_and_the_fitted_normalization(bars: pd.DataFrame) -> None:
    env = make_env(bars, start="2024-01-01 07:00", end=800, episode_length=20)
    start_row = int(np.searchsorted(bars.index, pd.Timestamp("2024-01-01 07:00", tz="UTC")))
    assert env.normalization.fit_span == (start_row, 800)
    rows = set()
    for seed in range(20):
        env.reset(seed=seed)
        rows.add(env.row)
        for _ in range(20):
            env.step(1)
        assert env.row < 800
    assert min(rows) >= start_row
    with pytest.raises(ConfigError, match="outside"):
        env.reset(options={"start": 10})


@pytest.mark.parametrize("action", [3, -1])
def test_an_action_outside_the_table_is_refused_and_the_account_is_untouched(
    bars: pd.DataFrame, action: int
) -> None:
    env = MarketReplayEnv(data=bars, window=8)
    env.reset(seed=0)
    row, equity = env.row, env.core.portfolio.equity
    with pytest.raises(ConfigError, match=r"outside Discrete\(3\).*0\.\.2"):
        env.step(action)
    assert (env.row, env.core.portfolio.equity) == (row, equity)
    env.step(2)  # the episode goes on
    assert env.row == row + 1


def test_stepping_a_finished_episode_says_to_reset(bars: pd.DataFrame) -> None:
    env = MarketReplayEnv(data=bars, window=8, episode_length=2)
    env.reset(seed=0)
    env.step(1)
    assert env.step(1)[3]  # truncated
    with pytest.raises(ConfigError, match="reset"):
        env.step(1)
