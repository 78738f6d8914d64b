"""Benchmark: PPO training throughput on ``MarketReplayEnv`` with the learning manager, against a bare env.

Three arms train the same PPO (same network, ``n_steps``, batch size, epochs, envs and seed) for the
same number of steps, in this process, one after the other:

* ``bare``: a NumPy env with the same observation and action spaces that does no work (the ceiling:
  what PPO itself costs);
* ``replay``: ``MarketReplayEnv`` alone (no learning manager);
* ``replay+learning``: ``MarketReplayEnv`` under ``agents.wrappers.wrap_env`` with the learning
  manager beside the policy (store in a temporary directory), as ``slf train`` runs the config's
  ``train.vec_env``: ``hosted`` (the shipped config: envs and manager in one host process,
  :class:`agents.hosted.HostedVecEnv` with :class:`agents.callbacks.HostedLearningCallback`) or
  ``dummy`` (everything in this process, :class:`agents.callbacks.LearningCallback`); ``--vec-env``
  picks one.

Each repeat runs the three arms in turn, so every arm sees the machine's load of the same minutes.
Reported: environment steps per second of ``model.learn`` (best of ``--repeats``, and every repeat, to
show the noise), the ratio of each replay arm to the bare env (best against best, and per repeat with
its median: the repeat's arms ran minutes apart under the same load), and the extra wall time per
``VecEnv.step`` over the bare env (what the environment, the wrapper and the callback add). Target:
``replay+learning`` >= 0.9x ``bare``.

Usage: ``python benchmarks/bench_training.py [--timesteps N] [--repeats K] [--n-envs N] [--clock wall|cpu]
[--vec-env dummy|hosted] [--digest]``

``--digest`` instead trains the ``replay+learning`` arm once and prints a SHA-256 of what it learned
(policy weights, snapshot, patterns, archive, strategy weights, evolution history, rules, error
patterns, minimums, adjustments, feeder counts), each part and all together: an optimisation of the
learning side must leave it unchanged (same machine and library versions; PyTorch is deterministic on
CPU for this network).

``--clock cpu`` times the process's CPU time instead of the elapsed time: on a shared machine other
processes' load then barely moves the figures, but time spent waiting on the disk (the learning store's
fsyncs) is not counted, so report both. A hosted arm's CPU time is its own plus its host process's
(read from ``/proc``): the CPU clock shows what the learning costs in all, the wall clock what a user
waits.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

TARGET_RATIO = 0.9
DEFAULT_TIMESTEPS = 16_384
DEFAULT_REPEATS = 2
DEFAULT_N_ENVS = 2
SEED = 0
CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "ppo_eurusd_1h.yaml"
# Distinct observations the bare env cycles through (precomputed: the bare env must cost nothing).
_BARE_POOL = 64


class BareEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """Same spaces and episode length as the replay env; steps cost a few array lookups."""

    def __init__(self, observation_space: spaces.Box, n_actions: int, episode_length: int) -> None:
        self.observation_space = spaces.Box(
            observation_space.low, observation_space.high, observation_space.shape, np.float32
        )
        self.action_space = spaces.Discrete(n_actions)
        self.episode_length = episode_length
        rng = np.random.default_rng(SEED)
        shape = (_BARE_POOL, *observation_space.shape)
        self._pool = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._pool[0], {}

    def step(self, action: np.int64) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        self._t += 1
        obs = self._pool[self._t % _BARE_POOL]
        return obs, 0.0, False, self._t >= self.episode_length, {}


def _host_cpu_s(venv: Any) -> float:
    """CPU seconds used so far by a HostedVecEnv's host process (0 for other VecEnvs; Linux /proc)."""
    process = getattr(venv, "_process", None)
    if process is None or process.pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _learn_rate(
    make_venv: Callable[[], Any],
    timesteps: int,
    callback_factory: Callable[[], Any] | None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    from agents.policies import build_model
    from experiments.config import load_config

    algo = load_config(CONFIG).algo
    venv = make_venv()
    model = build_model(algo, venv, seed=SEED)
    callback = callback_factory() if callback_factory is not None else None
    # The host's CPU counts with the CPU clock only (on the wall clock it runs in parallel).
    host_cpu = _host_cpu_s if clock is time.process_time else (lambda _: 0.0)
    start = clock() + host_cpu(venv)
    model.learn(total_timesteps=timesteps, callback=callback)
    elapsed = clock() + host_cpu(venv) - start
    steps = model.num_timesteps
    venv.close()
    return steps / elapsed


def _dummy(make_env: Callable[[], gym.Env[Any, Any]], n_envs: int) -> Callable[[], Any]:
    from stable_baselines3.common.vec_env import DummyVecEnv

    return lambda: DummyVecEnv([functools.partial(_monitored, make_env) for _ in range(n_envs)])


def _monitored(make_env: Callable[[], gym.Env[Any, Any]]) -> gym.Env[Any, Any]:
    from stable_baselines3.common.monitor import Monitor

    return Monitor(make_env())


def learned_parts(manager: Any) -> dict[str, object]:
    """Everything a manager learned, as comparable values (module-level: a host process runs it too)."""
    return {
        "snapshot": manager.snapshot().to_dict(),
        "patterns": manager.patterns(),
        "archive": manager.load_archive(),
        "strategy_weights": manager.strategy_weights(),
        "evolution_history": manager.evolution_history(),
        "rules": manager.rules(),
        "error_patterns": manager.error_patterns(),
        "minimums": manager.minimums(),
        "adjustments": manager.adjustments(),
    }


def learned_digest(
    make_env: Callable[[], gym.Env[Any, Any]],
    timesteps: int,
    n_envs: int,
    root: Path,
    spec: Any,
    vec_env: str = "dummy",
) -> dict[str, str]:
    """SHA-256 digests of what one seeded ``replay+learning`` run learned (see the module docstring),
    with the envs and the manager in this process (``dummy``) or in a host process (``hosted``)."""
    import hashlib

    from agents.callbacks import HostedLearningCallback, LearningCallback
    from agents.hosted import HostedVecEnv, ManagerSpec
    from agents.policies import build_model
    from experiments.config import load_config
    from learning.manager import UniversalLearningManager

    config = load_config(CONFIG)
    switches = config.learning.switches()
    callback: Any
    if vec_env == "hosted":
        venv: Any = HostedVecEnv(
            [functools.partial(_monitored, make_env) for _ in range(n_envs)],
            manager=ManagerSpec(root, config.learning.config, (spec,)),
            switches=switches,
        )
        callback = HostedLearningCallback(switches)
    else:
        venv = _dummy(make_env, n_envs)()
        manager = UniversalLearningManager(root, config=config.learning.config, market_specs=[spec])
        callback = LearningCallback(manager, switches)
    model = build_model(config.algo, venv, seed=SEED)
    model.learn(total_timesteps=timesteps, callback=callback)
    # What the manager holds at the end of training, read where it lives.
    parts = venv.with_manager(learned_parts) if vec_env == "hosted" else learned_parts(manager)
    parts["counts"] = sorted(callback.counts.items())
    venv.close()
    if vec_env != "hosted":
        manager.close()
    weights = b"".join(t.detach().cpu().numpy().tobytes() for t in model.policy.state_dict().values())
    digests = {"policy": hashlib.sha256(weights).hexdigest()}
    digests.update({k: hashlib.sha256(repr(v).encode()).hexdigest() for k, v in parts.items()})
    digests["all"] = hashlib.sha256("".join(digests.values()).encode()).hexdigest()
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timesteps", type=int, default=DEFAULT_TIMESTEPS, help="steps per arm and repeat")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="best of this many")
    parser.add_argument("--n-envs", type=int, default=DEFAULT_N_ENVS, help="DummyVecEnv size")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (all its threads), which load from "
        "other processes on a shared machine inflates far less (waits on the disk are not counted)",
    )
    parser.add_argument(
        "--vec-env",
        choices=("dummy", "hosted"),
        default=None,
        help="where the replay+learning arm runs its envs and manager (default: the config's train.vec_env)",
    )
    parser.add_argument(
        "--spin-us",
        type=float,
        default=None,
        help="hosted: how long each side polls before it blocks (default: HostedVecEnv's)",
    )
    parser.add_argument(
        "--digest",
        action="store_true",
        help="train the replay+learning arm once and print digests of what it learned (no timing)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("learning").setLevel(logging.WARNING)

    from agents.callbacks import LearningCallback
    from experiments.config import load_config
    from experiments.train import EnvFactory, prepare_data
    from learning.manager import UniversalLearningManager

    config = load_config(CONFIG)
    prepared = prepare_data(config)
    vec_env = args.vec_env or ("hosted" if config.train.vec_env.value == "hosted" else "dummy")

    def replay(learning: bool) -> Callable[[], gym.Env[Any, Any]]:
        factory = EnvFactory(
            config=config,
            spec=prepared.spec,
            normalization=prepared.normalization,
            span=prepared.splits.train,
            episode_length=config.env.episode_length,
            learning=learning,
            monitor=False,
        )
        return factory

    probe = replay(False)()
    obs_space = probe.observation_space
    n_actions = int(probe.action_space.n)  # type: ignore[attr-defined]
    episode = int(config.env.episode_length or 512)
    probe.close()

    workdir = tempfile.TemporaryDirectory(prefix="bench_training_")
    if args.digest:
        digests = learned_digest(
            replay(True), args.timesteps, args.n_envs, Path(workdir.name), prepared.spec, vec_env
        )
        workdir.cleanup()
        print(f"replay+learning ({vec_env}), {args.timesteps} steps, seed {SEED}: learned-state digests")
        for name, digest in digests.items():
            print(f"{name:<18}{digest}")
        return 0

    switches = config.learning.switches()
    spin = {} if args.spin_us is None else {"spin_us": args.spin_us}

    def learning_arm() -> tuple[Callable[[], Any], Callable[[], Any]]:
        """(VecEnv factory, callback factory) of the replay+learning arm; each repeat gets a new store."""
        root = Path(tempfile.mkdtemp(dir=workdir.name))
        if vec_env == "hosted":
            from agents.callbacks import HostedLearningCallback
            from agents.hosted import HostedVecEnv, ManagerSpec

            make = replay(True)
            spec = ManagerSpec(root, config.learning.config, (prepared.spec,))
            fns = [functools.partial(_monitored, make) for _ in range(args.n_envs)]
            return (
                lambda: HostedVecEnv(fns, manager=spec, switches=switches, **spin),
                lambda: HostedLearningCallback(switches),
            )
        managers.append(
            UniversalLearningManager(root, config=config.learning.config, market_specs=[prepared.spec])
        )
        return _dummy(replay(True), args.n_envs), lambda: LearningCallback(managers[-1], switches)

    managers: list[UniversalLearningManager] = []
    bare_env = lambda: BareEnv(obs_space, n_actions, episode)  # type: ignore[arg-type]  # noqa: E731
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    names = ("bare", "replay", "replay+learning")
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        runs["bare"].append(_learn_rate(_dummy(bare_env, args.n_envs), args.timesteps, None, clock))
        runs["replay"].append(_learn_rate(_dummy(replay(False), args.n_envs), args.timesteps, None, clock))
        make_venv, make_callback = learning_arm()
        runs["replay+learning"].append(_learn_rate(make_venv, args.timesteps, make_callback, clock))
    for manager in managers:
        manager.close()
    workdir.cleanup()

    rates = {name: max(values) for name, values in runs.items()}
    bare = rates["bare"]
    print(
        f"PPO {config.algo.net_arch} n_steps={config.algo.n_steps} batch={config.algo.batch_size} "
        f"n_envs={args.n_envs}, {args.timesteps} steps per arm, best of {args.repeats}, "
        f"obs {obs_space.shape}, {n_actions} actions, {args.clock} clock; replay+learning: {vec_env}"
    )
    print(f"{'arm':<18}{'steps/s':>10}{'vs bare':>10}{'+us/vec step':>14}   every repeat (steps/s)")
    for name, rate in rates.items():
        extra = (1.0 / rate - 1.0 / bare) * args.n_envs * 1e6
        every = " ".join(f"{r:.0f}" for r in runs[name])
        print(f"{name:<18}{rate:>10.0f}{rate / bare:>9.2f}x{extra:>14.0f}   {every}")
    per_repeat = [r / b for r, b in zip(runs["replay+learning"], runs["bare"], strict=True)]
    spread = max(max(v) / min(v) - 1.0 for v in runs.values())
    print(
        "replay+learning / bare per repeat: "
        + " ".join(f"{x:.2f}x" for x in per_repeat)
        + f" (median {statistics.median(per_repeat):.2f}x); largest spread of one arm over the repeats: "
        + f"{spread:.0%}"
    )
    ratio = rates["replay+learning"] / bare
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"replay+learning / bare = {ratio:.2f}x: {verdict} the target of >= {TARGET_RATIO}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
