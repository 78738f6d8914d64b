"""HostedVecEnv: the envs and the learning manager in one host process beside the policy.

The contract: a hosted run learns exactly what the same run learns with DummyVecEnv and
LearningCallback in one process (same policy, same learned state, same counts and logged values), and
every failure of the host reaches the policy's process as a clear error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.callbacks import HostedLearningCallback, LearningCallback
from agents.feeder import learning_scalars
from agents.hosted import SB3_INFO_KEYS, HostedVecEnv, ManagerSpec, hosted
from agents.policies import AlgoConfig, build_model
from agents.switches import LearningSwitches
from agents.wrappers import wrap_env
from envs.data import generate_synthetic
from envs.errors import ConfigError, StateError
from envs.market import MarketSpec
from envs.replay import MarketReplayEnv
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager

SYMBOL = "BTC/USDT"
SPEC = MarketSpec(SYMBOL, taker_fee=0.001, min_notional=100.0, qty_step=1e-5, min_qty=1e-5)
FAULTS = {"rate_limit": 0.05, "timeout": 0.05}
STEPS = 512


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_synthetic([SYMBOL], 900, 5).frames[SYMBOL]


def make_env(
    frame: pd.DataFrame,
    switches: LearningSwitches,
    order_id_prefix: str,
    actions: tuple[float, ...] | str = (0.0, 0.08, 0.5),
) -> gym.Env[Any, Any]:
    """Small long-only orders, some below the minimum notional, with exchange faults: trades, minimum
    rejections, errors and their resolutions all happen within a few hundred steps."""
    env = MarketReplayEnv(
        data=frame,
        market=SPEC,
        window=4,
        episode_length=120,
        initial_cash=1000.0,
        actions=actions,
        allow_short=False,
        faults=FAULTS,
        order_id_prefix=order_id_prefix,
    )
    return Monitor(wrap_env(env, switches))


def factories(
    frame: pd.DataFrame, switches: LearningSwitches, actions: tuple[float, ...] | str = (0.0, 0.08, 0.5)
) -> list[Callable[[], gym.Env[Any, Any]]]:
    return [functools.partial(make_env, frame, switches, f"e{i}-", actions) for i in range(2)]


def model_config(algo: str = "ppo") -> AlgoConfig:
    return AlgoConfig.model_validate(
        {"algo": algo, "n_steps": 64, "batch_size": 32, "n_epochs": 2, "net_arch": (16,)}
    )


def learned(manager: UniversalLearningManager) -> dict[str, object]:
    """Everything the manager learned (module-level: the host runs it on its manager)."""
    return {
        "snapshot": manager.snapshot().to_dict(),
        "patterns": manager.patterns(),
        "weights": manager.strategy_weights(),
        "evolution": manager.evolution_history(),
        "rules": manager.rules(),
        "errors": manager.error_patterns(),
        "minimums": manager.minimums(),
        "adjustments": manager.adjustments(),
        "describe": manager.describe(),
    }


def has_unsaved(manager: UniversalLearningManager) -> bool:
    return manager.unsaved


def weights(model: Any) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in model.policy.state_dict().values()]


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_a_hosted_run_learns_exactly_what_the_same_run_learns_in_one_process(
    frame: pd.DataFrame, tmp_path: Path, algo: str
) -> None:
    """MaskablePPO also asks the envs for their action masks before every step (through the host)."""
    switches = LearningSwitches()
    config = LearningConfig()

    inline_venv = DummyVecEnv(factories(frame, switches))
    inline_venv.seed(3)
    with UniversalLearningManager(tmp_path / "inline", config=config, market_specs=[SPEC]) as manager:
        callback = LearningCallback(manager, switches)
        inline_model = build_model(model_config(algo), inline_venv, seed=3)
        inline_model.learn(STEPS, callback=callback)
        inline_learned = learned(manager)
        inline_counts = dict(callback.counts)
        inline_episodes = list(callback.episodes)
        inline_scalars = learning_scalars(callback.feeder)
    inline_venv.close()

    venv = HostedVecEnv(
        factories(frame, switches),
        manager=ManagerSpec(tmp_path / "hosted", config, (SPEC,)),
        switches=switches,
    )
    try:
        venv.seed(3)
        hosted_callback = HostedLearningCallback(switches)
        model = build_model(model_config(algo), venv, seed=3)
        model.learn(STEPS, callback=hosted_callback)
        hosted_learned = venv.with_manager(learned)
        assert hosted_callback.counts == inline_counts
        assert hosted_callback.episodes == inline_episodes
        assert venv.learning_scalars() == inline_scalars
        version = inline_learned["describe"]["version"]  # type: ignore[index]
        assert venv.get_attr("learned_version") == [version, version]
    finally:
        venv.close()

    # The run exercised every kind of learning, so the comparison covers them.
    assert inline_counts["trades_fed"] > 0
    assert inline_counts["errors_fed"] > 0
    assert inline_counts["minimum_rejections_fed"] > 0
    assert inline_counts["resolutions_recorded"] > 0
    assert inline_counts["snapshot_pushes"] > 2
    assert hosted_learned == inline_learned
    for a, b in zip(weights(model), weights(inline_model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("algo", "actions"),
    [
        ("dqn", (0.0, 0.08, 0.5)),
        ("qrdqn", (0.0, 0.08, 0.5)),
        ("a2c", (0.0, 0.08, 0.5)),
        ("recurrent_ppo", (0.0, 0.08, 0.5)),
        ("sac", "continuous"),
        ("td3", "continuous"),
    ],
)
def test_every_other_algorithm_learns_the_same_hosted(
    frame: pd.DataFrame, tmp_path: Path, algo: str, actions: tuple[float, ...] | str
) -> None:
    """Replay buffers (DQN, QR-DQN, SAC, TD3), LSTM states (RecurrentPPO), A2C and Box actions (SAC,
    TD3) through the host: the same policy and the same learned state as in one process."""
    switches = LearningSwitches()
    config = LearningConfig()
    algo_config = AlgoConfig.model_validate(
        {
            "algo": algo,
            "n_steps": 32,
            "batch_size": 16,
            "learning_starts": 32,
            "buffer_size": 500,
            "net_arch": (16,),
        }
    )
    steps = 192

    inline_venv = DummyVecEnv(factories(frame, switches, actions))
    inline_venv.seed(5)
    with UniversalLearningManager(tmp_path / "inline", config=config, market_specs=[SPEC]) as manager:
        inline_model = build_model(algo_config, inline_venv, seed=5)
        callback = LearningCallback(manager, switches)
        inline_model.learn(steps, callback=callback)
        inline_learned = learned(manager)
        inline_counts = dict(callback.counts)
    inline_venv.close()

    venv = HostedVecEnv(
        factories(frame, switches, actions),
        manager=ManagerSpec(tmp_path / "hosted", config, (SPEC,)),
        switches=switches,
    )
    try:
        venv.seed(5)
        model = build_model(algo_config, venv, seed=5)
        hosted_callback = HostedLearningCallback(switches)
        model.learn(steps, callback=hosted_callback)
        hosted_learned = venv.with_manager(learned)
        hosted_counts = dict(hosted_callback.counts)
    finally:
        venv.close()
    assert inline_counts["trades_fed"] > 0
    assert hosted_counts == inline_counts
    assert hosted_learned == inline_learned
    for a, b in zip(weights(model), weights(inline_model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_writing_in_the_hosts_idle_time_changes_when_the_store_is_written_not_what_is_learned(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    """Idle writes after every step (whatever the step cost) against none: the same learning and the
    same policy; with them, nothing learned waits for a write after a step, without them it does."""
    switches = LearningSwitches()
    config = LearningConfig()

    def run(name: str, every: int) -> tuple[dict[str, object], list[np.ndarray], list[bool]]:
        venv = HostedVecEnv(
            factories(frame, switches),
            manager=ManagerSpec(tmp_path / name, config, (SPEC,)),
            switches=switches,
            idle_write_steps=every,
            idle_write_within_us=1e9,
        )
        unsaved: list[bool] = []

        class Probe(HostedLearningCallback):
            def _on_step(self) -> bool:
                unsaved.append(bool(venv.with_manager(has_unsaved)))
                return super()._on_step()

        try:
            venv.seed(3)
            model = build_model(model_config(), venv, seed=3)
            model.learn(256, callback=Probe(switches))
            return venv.with_manager(learned), weights(model), unsaved  # type: ignore[return-value]
        finally:
            venv.close()

    idle_learned, idle_weights, idle_unsaved = run("idle", 1)
    own_learned, own_weights, own_unsaved = run("own", 0)
    assert idle_learned == own_learned
    for a, b in zip(idle_weights, own_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any(idle_unsaved)  # written after every step
    assert any(own_unsaved)  # left to the manager's own cadence, learned changes wait


def test_the_host_keeps_what_it_learned_when_closed(frame: pd.DataFrame, tmp_path: Path) -> None:
    switches = LearningSwitches()
    spec = ManagerSpec(tmp_path, LearningConfig())
    venv = HostedVecEnv(factories(frame, switches), manager=spec, switches=switches)
    try:
        callback = HostedLearningCallback(switches)
        build_model(model_config(), venv, seed=0).learn(256, callback=callback)
        fed = callback.counts["trades_fed"]
    finally:
        venv.close()
    assert fed > 0
    with UniversalLearningManager(tmp_path, read_only=True, create=False) as manager:
        assert manager.describe()["trades"] == fed
    venv.close()  # closing twice is harmless


def test_learning_off_still_logs_episodes_and_needs_no_manager(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    # (spin_us=0: both sides block on their pipe instead of polling it first.)
    venv = HostedVecEnv(factories(frame, switches), manager=None, switches=switches, spin_us=0)
    try:
        callback = HostedLearningCallback(switches)
        build_model(model_config(), venv, seed=0).learn(256, callback=callback)
        assert callback.episodes
        assert all("return" in e for e in callback.episodes)
        assert venv.snapshot() is None
        assert venv.learning_scalars() == {}
        assert venv.with_manager(learned) is None
    finally:
        venv.close()


# --- errors ------------------------------------------------------------------------------------------


def bare_env(frame: pd.DataFrame) -> gym.Env[Any, Any]:
    return MarketReplayEnv(data=frame, market=SPEC, window=4, episode_length=50)


def test_envs_not_wrapped_for_the_manager_are_refused_with_a_clear_error(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not wrapped for the learning manager"):
        HostedVecEnv(
            [functools.partial(bare_env, frame)],
            manager=ManagerSpec(tmp_path, LearningConfig()),
            switches=LearningSwitches(),
        )


class Exploding(gym.Wrapper[Any, Any, Any, Any]):
    """Raises on its third step (an env bug inside the host)."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("boom in the env")
        return self.env.step(action)


def exploding_env(frame: pd.DataFrame) -> gym.Env[Any, Any]:
    return Exploding(bare_env(frame))


def test_an_error_in_a_hosted_env_is_raised_in_the_policys_process(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    venv = HostedVecEnv([functools.partial(exploding_env, frame)], manager=None, switches=switches)
    try:
        venv.reset()
        for _ in range(2):
            venv.step(np.array([1]))
        with pytest.raises(RuntimeError, match="boom in the env") as raised:
            venv.step(np.array([1]))
        assert any("learning host" in note for note in getattr(raised.value, "__notes__", []))
    finally:
        venv.close()


def test_a_dead_host_gives_a_clear_error(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    venv = HostedVecEnv([functools.partial(bare_env, frame)], manager=None, switches=switches)
    venv.reset()
    venv._process.kill()
    venv._process.join()
    with pytest.raises(StateError, match="ended unexpectedly"):
        venv.step(np.array([1]))
    with pytest.raises(StateError, match="closed"):
        venv.step(np.array([1]))
    venv.close()


def test_the_hosted_callback_needs_a_hosted_vec_env(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    venv = DummyVecEnv([functools.partial(bare_env, frame)])
    with pytest.raises(ConfigError, match="needs a HostedVecEnv"):
        build_model(model_config(), venv, seed=0).learn(64, callback=HostedLearningCallback(switches))
    assert hosted(venv) is None


def test_bad_arguments_are_refused(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    with pytest.raises(ConfigError, match="at least one env"):
        HostedVecEnv([], manager=None, switches=switches)
    with pytest.raises(ConfigError, match="spin_us"):
        HostedVecEnv([functools.partial(bare_env, frame)], manager=None, switches=switches, spin_us=-1)
    bad: Any
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="idle_write_steps"):
            HostedVecEnv(
                [functools.partial(bare_env, frame)], manager=None, switches=switches, idle_write_steps=bad
            )
    with pytest.raises(ConfigError, match="idle_write_within_us"):
        HostedVecEnv(
            [functools.partial(bare_env, frame)],
            manager=None,
            switches=switches,
            idle_write_within_us=float("nan"),
        )


def test_the_vec_env_api_reaches_the_hosted_envs(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    fns = [functools.partial(bare_env, frame) for _ in range(2)]
    venv = HostedVecEnv(fns, manager=None, switches=switches)
    try:
        venv.seed(7)
        first = venv.reset()
        venv.seed(7)
        again = venv.reset()
        assert isinstance(first, np.ndarray)
        assert isinstance(again, np.ndarray)
        assert np.array_equal(again, first)  # seeded resets repeat
        assert venv.get_attr("window") == [4, 4]
        venv.set_attr("custom", 5, indices=[1])
        assert venv.get_attr("custom", indices=[1]) == [5]
        assert venv.env_is_wrapped(Monitor) == [False, False]
        obs, rewards, _, infos = venv.step(np.array([1, 2]))
        assert isinstance(obs, np.ndarray)
        assert obs.shape == first.shape
        assert rewards.shape == (2,)
        assert infos == [{}, {}]
        assert venv.env_method("get_wrapper_attr", "window", indices=[0]) == [4]
    finally:
        venv.close()


def test_one_usable_core_is_warned_about(
    frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import agents.hosted

    monkeypatch.setattr(agents.hosted, "_usable_cpus", lambda: 1)
    switches = LearningSwitches(enabled=False)
    with caplog.at_level("WARNING", logger="agents.hosted"):
        venv = HostedVecEnv([functools.partial(bare_env, frame)], manager=None, switches=switches, spin_us=0)
    venv.close()
    assert "one usable core" in caplog.text


def test_ctrl_c_is_left_to_the_policys_process(frame: pd.DataFrame) -> None:
    """SIGINT (Ctrl-C reaches the whole process group) does not stop the host in mid-learning; the
    policy's process handles it and closes the host, which writes what it learned."""
    import os
    import signal

    switches = LearningSwitches(enabled=False)
    venv = HostedVecEnv([functools.partial(bare_env, frame)], manager=None, switches=switches, spin_us=0)
    try:
        venv.reset()
        venv.step(np.array([1]))
        pid = venv._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        venv.step(np.array([1]))  # the host is still there
        assert venv._process.is_alive()
    finally:
        venv.close()


def test_an_attribute_that_cannot_leave_the_host_is_a_clear_error(frame: pd.DataFrame) -> None:
    switches = LearningSwitches(enabled=False)
    venv = HostedVecEnv([functools.partial(bare_env, frame)], manager=None, switches=switches, spin_us=0)
    try:
        with pytest.raises(ConfigError, match=r"get_attr\('core'\) cannot be sent"):
            venv.get_attr("core")  # the compiled trading core: not picklable
        assert venv.has_attr("action_masks") is False
        assert venv.has_attr("window") is True
        assert venv.get_attr("window") == [4]  # the host is still serving
    finally:
        venv.close()


def test_a_system_without_posix_pipes_is_refused(
    frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agents.hosted

    monkeypatch.setattr(agents.hosted.os, "name", "nt")
    with pytest.raises(ConfigError, match="POSIX"):
        HostedVecEnv(
            [functools.partial(bare_env, frame)], manager=None, switches=LearningSwitches(enabled=False)
        )


class Counter(gym.Env[np.int64, np.int64]):
    """Discrete observations (not a Box): the host sends its steps pickled instead of as raw arrays."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Discrete(4)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return np.int64(0), {}

    def step(self, action: np.int64) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return np.int64(self.t % 4), float(action), False, self.t >= 3, {"t": self.t}


def test_other_observation_spaces_step_through_the_host_pickled() -> None:
    switches = LearningSwitches(enabled=False)
    venv = HostedVecEnv([Counter, Counter], manager=None, switches=switches, spin_us=0)
    reference = DummyVecEnv([Counter, Counter])
    try:
        np.testing.assert_array_equal(np.asarray(venv.reset()), np.asarray(reference.reset()))
        for step in range(4):
            actions = np.array([step % 2, 1])
            got, want = venv.step(actions), reference.step(actions)
            for a, b in zip(got[:3], want[:3], strict=True):
                np.testing.assert_array_equal(a, b)
            # SB3's keys of ended episodes come through; the rest stays in the host.
            expected = [
                {k for k in i if k in SB3_INFO_KEYS} if d else set()
                for i, d in zip(want[3], want[2], strict=True)
            ]
            assert [set(i) for i in got[3]] == expected
    finally:
        venv.close()
        reference.close()


def test_the_channel_frames_messages_of_any_size_in_order() -> None:
    """Back-to-back messages arrive whole and in order, whatever one read brings: several small ones,
    and one larger than a pipe's buffer (written while the other side reads)."""
    import multiprocessing as mp
    import threading

    from agents.hosted import _Channel

    r1, w1 = mp.Pipe(duplex=False)
    r2, w2 = mp.Pipe(duplex=False)
    sender = _Channel(r2, w1, spin_s=0.0, alive=lambda: True)
    receiver = _Channel(r1, w2, spin_s=0.001, alive=lambda: True)
    big = bytes(range(256)) * 1200  # 300 KB
    messages = [(1, b"a"), (2, b""), (3, b"xyz" * 10), (4, big), (5, b"end")]

    def send_all() -> None:
        for kind, payload in messages:
            sender.send(kind, payload)

    writer = threading.Thread(target=send_all)
    writer.start()
    received = [receiver.recv() for _ in messages]
    writer.join()
    assert received == messages
    sender.close()
    with pytest.raises(EOFError):
        receiver.recv()
    receiver.close()
