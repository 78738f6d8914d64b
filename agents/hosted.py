"""Hosted learning: the environments and the learning manager in one process beside the policy.

With ``DummyVecEnv`` and :class:`~agents.callbacks.LearningCallback`, one process does everything in
turn: the policy's forward pass, the environments' step, then the manager's learning from that step.
:class:`HostedVecEnv` moves the environments *and* the manager (with its
:class:`~agents.feeder.ManagerFeeder`) into one host process. After every ``VecEnv.step`` the host
replies with the observations, rewards and dones at once and only then feeds the manager, so the
learning runs on a second core while the policy's process stores the step and computes the next
actions. Two more things wait until after the reply: the learning wrappers' own bookkeeping of the
step (:meth:`~agents.wrappers.LearningManagerWrapper.defer_settling`), and, in steps that leave the
host idle, writing what the manager learned to its store (``idle_write_steps``), so that the market
day's memory pass, which the policy does wait out, has less to write.

The order of everything the environments and the manager see is the same as with ``DummyVecEnv`` in
the policy's process: the host reads the next actions only after the manager has learned from the
previous step and its snapshot (and any error resolution) has reached the environments. A hosted run
therefore learns exactly what the same run learns in one process, to the bit (a test compares their
digests); only the time it takes differs. Its cost: one round trip between the two processes per step,
and a second core.

What the policy's process receives of each step's ``info`` is what SB3 reads: ``episode`` (from
``Monitor``), ``TimeLimit.truncated`` and ``terminal_observation`` (for episodes that ended). The full
``info`` (trades, orders, learned events) stays in the host, where the manager is fed.
:class:`~agents.callbacks.HostedLearningCallback` logs the same ``learning/*`` and ``trading/*`` scalars
as ``LearningCallback``, fetched from the host.

Transport: two pipes with framed messages. A step's actions, observations, rewards and dones travel as
raw array bytes (nothing is pickled on the hot path; ended episodes' infos and every other command are
pickled). Each side polls its pipe with non-blocking reads for up to ``spin_us`` microseconds before it
waits in ``select``: on a virtual machine a blocked process takes tens of microseconds to wake, as long
as a step. Polling uses each process's own core while it would otherwise idle (the host between steps,
the policy's process while the host steps); ``spin_us=0`` waits in ``select`` at once (use it when the
machine has no spare core). A side whose peer died sees the pipe close and raises a clear error.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import pickle
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from agents.feeder import DEFAULT_VETO_HORIZON, ManagerFeeder, learning_report, learning_scalars
from agents.switches import LearningSwitches
from envs.errors import ConfigError, SlfError, StateError
from envs.market import MarketSpec
from learning.config import LearningConfig
from learning.manager import UniversalLearningManager
from learning.state import LearnedState

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SPIN_US",
    "IDLE_WRITE_STEPS",
    "IDLE_WRITE_WITHIN_US",
    "SB3_INFO_KEYS",
    "HostedVecEnv",
    "ManagerSpec",
]

DEFAULT_SPIN_US: Final = 2000
"""How long each side polls its pipe before it blocks (microseconds)."""
SB3_INFO_KEYS: Final = ("episode", "TimeLimit.truncated", "terminal_observation", "is_success")
"""The ``info`` keys of an ended episode that the policy's process receives (what SB3 reads)."""
_CLOSE_TIMEOUT_S: Final = 60.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class ManagerSpec:
    """How the host opens the learning manager (picklable: it is sent to the host process).

    Attributes:
        root: the manager's directory (its store and archive).
        config: the learning config.
        market_specs: the markets whose exchange minimums seed the learned minimums.
    """

    root: Path
    config: LearningConfig
    market_specs: tuple[MarketSpec, ...] = field(default_factory=tuple)

    def open(self) -> UniversalLearningManager:
        return UniversalLearningManager(self.root, config=self.config, market_specs=self.market_specs)


# Message kinds of the framed pipe protocol.
_CALL: Final = 0  # a command other than step (pickled)
_STEP: Final = 1  # a step's actions (raw array)
_OK: Final = 2  # a command's result (pickled)
_ERROR: Final = 3  # a failure in the host (a pickled exception)
_STEPPED: Final = 4  # a step's observations, rewards, dones (raw) and ended episodes' infos (pickled)
_STEPPED_PICKLED: Final = 5  # the same, pickled (observation spaces other than Box)
_HEADER: Final = struct.Struct("<BI")
_ARRAY_META: Final = struct.Struct("<BB")
_LIVENESS_S: Final = 0.05
IDLE_WRITE_STEPS: Final = 8
"""Default: the host writes the manager's pending changes at most every this many steps (see
``HostedVecEnv``'s ``idle_write_steps``). Each write rewrites the store's busiest pages: on the hourly
benchmark config, every 8 steps took the write-ahead log from 58 to 99 MB per 16k training steps (every
4: 126 MB) and waited out as much of the memory pass as every 4."""
IDLE_WRITE_WITHIN_US: Final = 120.0
"""Default: ... and only after a step whose settling and feeding took at most this long (µs)."""
_READ_BYTES: Final = 1 << 16  # one read takes up to a pipe's worth


@functools.lru_cache(maxsize=16)
def _array_meta(dtype: str, shape: tuple[int, ...]) -> bytes:
    return _ARRAY_META.pack(len(dtype), len(shape)) + dtype.encode() + struct.pack(f"<{len(shape)}q", *shape)


def _pack_array(array: Any) -> bytes:
    array = np.ascontiguousarray(array)
    return _array_meta(array.dtype.str, array.shape) + array.tobytes()


def _unpack_array(data: bytes) -> np.ndarray:
    size, ndim = _ARRAY_META.unpack_from(data)
    offset = _ARRAY_META.size
    dtype = np.dtype(data[offset : offset + size].decode())
    offset += size
    shape = struct.unpack_from(f"<{ndim}q", data, offset)
    offset += 8 * ndim
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).copy()


class _Channel:
    """Framed messages (kind, length, payload) over a pair of pipes, with ``os.read``/``os.write``.

    A step's arrays travel as raw bytes, so the hot path pickles nothing. The reader polls its pipe
    (non-blocking reads) for up to ``spin_s`` seconds, then waits in ``select``, checking every 50 ms
    that the other side is ``alive``. The system calls on both sides order the memory accesses, so the
    protocol needs no shared memory and no barrier of its own.
    """

    def __init__(self, read: Connection, write: Connection, spin_s: float, alive: Callable[[], bool]) -> None:
        self._ends = (read, write)  # keep the Connection objects (they own the descriptors)
        self._r = read.fileno()
        self._w = write.fileno()
        os.set_blocking(self._r, False)
        self._buf = bytearray()
        self._spin_s = spin_s
        self._alive = alive

    def send(self, kind: int, payload: bytes) -> None:
        data = _HEADER.pack(kind, len(payload)) + payload
        written = os.write(self._w, data)
        if written < len(data):  # a message larger than the pipe's buffer
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self._w, view) :]

    def recv(self) -> tuple[int, bytes]:
        kind, size = _HEADER.unpack(self._read(_HEADER.size))
        return kind, self._read(size) if size else b""

    def _read(self, size: int) -> bytes:
        """``size`` bytes: from what an earlier read brought beyond its message, then from the pipe
        (a read takes all there is, so a header usually arrives with its payload)."""
        buf = self._buf
        if len(buf) >= size:
            out = bytes(buf[:size])
            del buf[:size]
            return out
        fd = self._r
        deadline = time.perf_counter() + self._spin_s
        while len(buf) < size:
            try:
                chunk = os.read(fd, max(size - len(buf), _READ_BYTES))
            except BlockingIOError:
                if time.perf_counter() < deadline:
                    continue
                if not select.select([fd], [], [], _LIVENESS_S)[0] and not self._alive():
                    raise EOFError("the other process is gone") from None
                continue
            if not chunk:
                raise EOFError("the other process closed the pipe")
            if not buf and len(chunk) == size:
                return chunk
            buf += chunk
        out = bytes(buf[:size])
        del buf[:size]
        return out

    def close(self) -> None:
        for end in self._ends:
            end.close()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Host:
    """The host process's side: a ``DummyVecEnv`` of the environments and the manager's feeder."""

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env[Any, Any]]],
        manager: ManagerSpec | None,
        switches: LearningSwitches,
        state: LearnedState | None,
        veto_horizon: int,
    ) -> None:
        self.feeding = False
        self.closed = False
        self.venv = DummyVecEnv(env_fns)
        space = self.venv.observation_space
        # The step's observations (a Box space; others step through DummyVecEnv itself).
        self.obs_buf: np.ndarray | None = (
            np.zeros((self.venv.num_envs, *space.shape), dtype=space.dtype)
            if isinstance(space, spaces.Box)
            else None
        )
        self.manager = manager.open() if manager is not None else None
        try:
            self.setters = (
                [e.get_wrapper_attr("set_learned_state") for e in self.venv.envs] if switches.enabled else []
            )
        except AttributeError:
            self.close()
            raise ConfigError(
                "the hosted envs are not wrapped for the learning manager",
                where="HostedVecEnv",
                fix="wrap every env with agents.wrappers.wrap_env(env, switches), or switch learning off",
            ) from None
        # The learning wrappers settle each step after the reply (Box observations: the raw path).
        self.settlers: list[Callable[[dict[str, Any]], None]] = []
        if switches.enabled and self.obs_buf is not None:
            for e in self.venv.envs:
                e.get_wrapper_attr("defer_settling")(True)
                self.settlers.append(e.get_wrapper_attr("settle"))
        self.episodes: list[tuple[int, dict[str, float]]] = []
        self.feeder = ManagerFeeder(
            self.manager,
            switches,
            push=self._push,
            apply_resolution=self._apply_resolution,
            state=state,
            veto_horizon=veto_horizon,
            on_episode=lambda i, metrics: self.episodes.append((i, metrics)),
        )
        # The step last replied to, fed after the reply.
        self.pending: tuple[list[dict[str, Any]], Any] | None = None
        # An error of the feeding that follows a reply, raised at the next command.
        self.failure: BaseException | None = None
        self.steps_unwritten = 0
        self.idle_write: tuple[int, float] = (0, 0.0)  # (every n steps, within s); n = 0: never

    def _push(self, state: LearnedState) -> None:
        for set_state in self.setters:
            set_state(state)

    def _apply_resolution(self, i: int, resolution: Any) -> None:
        self.venv.env_method("apply_resolution", str(resolution), indices=[i])

    # --- commands ------------------------------------------------------------------------------------
    def _step_envs(
        self, actions: np.ndarray
    ) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]], bool]:
        """``DummyVecEnv.step`` without its copies: the reply is pickled, and the infos go only to the
        feeder (which reads them). Same calls, in the same order; other observation spaces: its own.
        The last value: whether an episode ended."""
        venv = self.venv
        buf = self.obs_buf
        if buf is None:
            venv.step_async(actions)
            vec_obs, vec_rewards, vec_dones, vec_infos = venv.step_wait()
            return vec_obs, vec_rewards, vec_dones, list(vec_infos), bool(vec_dones.any())
        n = venv.num_envs
        rewards = np.zeros(n, dtype=np.float32)
        dones = np.zeros(n, dtype=bool)
        infos: list[dict[str, Any]] = []
        reset_infos = venv.reset_infos
        settlers = self.settlers
        ended = False
        for i, env in enumerate(venv.envs):
            obs, reward, terminated, truncated, info = env.step(actions[i])
            info["TimeLimit.truncated"] = truncated and not terminated
            if terminated or truncated:
                info["terminal_observation"] = obs
                if settlers:
                    settlers[i](info)
                obs, reset_infos[i] = env.reset()
                dones[i] = ended = True
            buf[i] = obs
            rewards[i] = reward
            infos.append(info)
        return buf, rewards, dones, infos, ended

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        """Step every env; returns (obs, rewards, dones, SB3's infos of the ended episodes and every
        env's latest reset info), the last two ``None`` when no episode ended."""
        obs, rewards, dones, infos, ended = self._step_envs(actions)
        self.pending = (infos, dones)
        if not ended:
            return obs, rewards, dones, None, None
        slim = [
            {k: info[k] for k in SB3_INFO_KEYS if k in info} if done else {}
            for info, done in zip(infos, dones, strict=True)
        ]
        reset_infos = self.venv.reset_infos
        resets = [reset_infos[i] if done else None for i, done in enumerate(dones)]
        return obs, rewards, dones, slim, resets

    def feed(self) -> None:
        """Settle the step just replied to and feed it to the manager (after the reply: this is what
        runs in parallel with the policy)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        infos, dones = pending
        for settle, info in zip(self.settlers, infos, strict=False):
            settle(info)
        if self.feeding:
            self.feeder.step(infos, dones, self.venv.reset_infos if any(dones) else None)

    def write_behind(self, busy_s: float) -> None:
        """Write the manager's pending changes in time the policy does not wait for: after a step
        whose settling and feeding took ``busy_s``, at most every ``idle_write[0]`` steps and only when
        ``busy_s <= idle_write[1]``. When the store is written does not change what is learned (the
        manager's durability contract); what is written in idle time is not left for the market day's
        memory pass, which the policy waits out."""
        self.steps_unwritten += 1
        every, within_s = self.idle_write
        manager = self.manager
        if (
            manager is None
            or not every
            or not self.feeding
            or self.steps_unwritten < every
            or busy_s > within_s
            or not manager.unsaved
        ):
            return
        self.steps_unwritten = 0
        manager.flush()

    def reset(self) -> tuple[VecEnvObs, list[dict[str, Any]]]:
        obs = self.venv.reset()
        return obs, list(self.venv.reset_infos)

    def start_feeding(self, fresh: bool) -> None:
        n = self.venv.num_envs
        self.feeder.start(list(self.venv.reset_infos) if fresh else [{} for _ in range(n)], fresh=fresh)
        self.feeding = True

    def finish_feeding(self) -> None:
        self.feeder.finish()

    def drain_episodes(self) -> list[tuple[int, dict[str, float]]]:
        episodes, self.episodes = self.episodes, []
        return episodes

    def learning_scalars(self) -> dict[str, float]:
        return learning_scalars(self.feeder)

    def learning_report(self) -> str:
        return learning_report(self.feeder)

    def counts(self) -> dict[str, int]:
        return dict(self.feeder.counts)

    def feeder_episodes(self) -> list[dict[str, float]]:
        return list(self.feeder.episodes)

    def snapshot(self) -> LearnedState | None:
        return self.manager.snapshot() if self.manager is not None else None

    def with_manager(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T | None:
        return fn(self.manager, *args) if self.manager is not None else None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.manager is not None and self.feeding:
                self.feeder.finish()
        finally:
            try:
                self.venv.close()
            finally:
                if self.manager is not None:
                    self.manager.close()


# VecEnv methods the host runs on its DummyVecEnv: (name, args, kwargs).
_VENV_CALLS: Final = frozenset(
    {"env_method", "get_attr", "set_attr", "has_attr", "env_is_wrapped", "seed", "set_options"}
)
_COMMANDS: Final = frozenset(
    {
        "reset",
        "start_feeding",
        "finish_feeding",
        "drain_episodes",
        "learning_scalars",
        "learning_report",
        "counts",
        "feeder_episodes",
        "snapshot",
        "with_manager",
    }
)


def _host_main(
    read: Connection,
    write: Connection,
    env_fns: CloudpickleWrapper,
    manager: ManagerSpec | None,
    switches: LearningSwitches,
    state: LearnedState | None,
    veto_horizon: int,
    spin_s: float,
    idle_write: tuple[int, float],
) -> None:
    """The host process: builds the environments and the manager, then serves commands until close."""
    # Ctrl-C reaches the whole process group: the policy's process handles it and closes the host,
    # which then writes what it learned (an interrupted host could stop in the middle of learning).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    chan = _Channel(read, write, spin_s, alive=lambda: os.getppid() == parent)
    try:
        host = _Host(list(env_fns.var), manager, switches, state, veto_horizon)
        host.idle_write = idle_write
    except BaseException as exc:
        chan.send(_ERROR, _dumps(_portable(exc)))
        chan.close()
        return
    venv = host.venv
    chan.send(_OK, _dumps((venv.num_envs, venv.observation_space, venv.action_space, venv.render_mode)))
    try:
        _serve(host, chan)
    finally:
        chan.close()


def _serve(host: _Host, chan: _Channel) -> None:
    venv = host.venv
    raw = host.obs_buf is not None
    while True:
        try:
            kind, payload = chan.recv()
        except EOFError:  # the policy's process is gone: keep what was learned
            host.close()
            return
        if kind == _STEP:
            try:
                if host.failure is not None:
                    failure, host.failure = host.failure, None
                    raise failure
                obs, rewards, dones, slim, resets = host.step(_unpack_array(payload))
            except BaseException as exc:
                chan.send(_ERROR, _dumps(_portable(exc)))
                continue
            if raw:
                extra = _dumps((slim, resets)) if resets is not None else b""
                chan.send(_STEPPED, obs.tobytes() + rewards.tobytes() + dones.tobytes() + extra)
            else:
                if slim is None:
                    slim = [{} for _ in range(len(dones))]
                chan.send(_STEPPED_PICKLED, _dumps((obs, rewards, dones, slim, resets)))
            started = time.perf_counter()
            try:
                host.feed()
                host.write_behind(time.perf_counter() - started)
            except BaseException as exc:  # reported at the next command
                host.failure = exc
            continue
        cmd, args = pickle.loads(payload)
        if cmd == "close":
            # Close even after a failed feeding (what was learned is written), then report it.
            closing: BaseException | None = host.failure
            host.failure = None
            try:
                host.close()
            except BaseException as exc:
                closing = closing or exc
            if closing is None:
                chan.send(_OK, _dumps(None))
            else:
                chan.send(_ERROR, _dumps(_portable(closing)))
            return
        try:
            if host.failure is not None:
                failure, host.failure = host.failure, None
                raise failure
            result: Any
            label = cmd
            if cmd in _VENV_CALLS:
                name, call_args, kwargs = args
                label = f"{cmd}({name or (call_args[0] if call_args else '')!r})"
                if cmd == "env_method":
                    result = venv.env_method(name, *call_args, **kwargs)
                else:
                    result = getattr(venv, cmd)(*call_args, **kwargs)
            elif cmd == "get_images":
                result = venv.get_images()
            elif cmd in _COMMANDS:
                result = getattr(host, cmd)(*args)
            else:
                raise ValueError(f"unknown host command {cmd!r}")
            try:
                reply = _dumps(result)
            except Exception as exc:
                raise ConfigError(
                    f"the result of {label} cannot be sent from the learning host "
                    f"({type(exc).__name__}: {exc})",
                    where="HostedVecEnv",
                    fix="ask the host for plain values (numbers, arrays, dicts of them), not env objects",
                ) from exc
        except BaseException as exc:
            chan.send(_ERROR, _dumps(_portable(exc)))
            continue
        chan.send(_OK, reply)


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class _RemoteError(StateError):
    """A failure inside the host process that could not be sent back as it was."""


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (with the host's traceback in its notes), else a StateError."""
    tb = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return _RemoteError(
            f"the learning host failed: {type(exc).__name__}: {exc}",
            where="HostedVecEnv",
            fix=f"see the host's traceback:\n{tb}",
        )
    if not isinstance(exc, SlfError):
        exc.add_note(f"in the learning host process:\n{tb}")
    return exc


class HostedVecEnv(VecEnv):
    """A VecEnv whose environments and learning manager run in one host process (see the module docstring).

    Args:
        env_fns: builds each environment (picklable, like ``SubprocVecEnv``'s; wrapped with
            :func:`agents.wrappers.wrap_env` when ``switches.enabled``).
        manager: how the host opens the learning manager; ``None``: no manager (learning off, or a
            frozen ``state``).
        switches: the learning switches (the feeder's and the wrappers').
        state: with ``switches.online`` off, the snapshot to apply.
        veto_horizon: bars after which a vetoed entry's counterfactual is judged.
        spin_us: how long each side polls before it blocks (see the module docstring).
        idle_write_steps / idle_write_within_us: the host writes the manager's pending changes in
            its idle time, at most every ``idle_write_steps`` steps (0: never, leaving every write to
            the manager's own cadence) and only after a step whose settling and feeding took at most
            ``idle_write_within_us``, so that the write ends before the policy's next actions arrive.
            What is learned is the same either way; the market day's memory pass, which the policy
            waits out, then has less to write.
        start_method: the multiprocessing start method (``spawn`` by default: the policy's process
            runs PyTorch threads, which ``fork`` does not carry over safely).

    Raises:
        ConfigError: bad arguments, or environments not wrapped for the learning manager.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env[Any, Any]]],
        *,
        manager: ManagerSpec | None,
        switches: LearningSwitches,
        state: LearnedState | None = None,
        veto_horizon: int = DEFAULT_VETO_HORIZON,
        spin_us: float = DEFAULT_SPIN_US,
        idle_write_steps: int = IDLE_WRITE_STEPS,
        idle_write_within_us: float = IDLE_WRITE_WITHIN_US,
        start_method: str = "spawn",
    ) -> None:
        if not env_fns:
            raise ConfigError(
                "HostedVecEnv needs at least one env", where="env_fns", fix="pass one factory per env"
            )
        if os.name != "posix":
            raise ConfigError(
                "HostedVecEnv needs a POSIX system (Linux, macOS): its pipes are polled with select",
                where="HostedVecEnv",
                fix="use train.vec_env: dummy (the same results, in one process)",
            )
        if not spin_us >= 0:
            raise ConfigError(f"spin_us={spin_us!r} must be >= 0", where="spin_us", fix="e.g. 2000, or 0")
        steps_ok = isinstance(idle_write_steps, int) and not isinstance(idle_write_steps, bool)
        if not steps_ok or idle_write_steps < 0:
            raise ConfigError(
                f"idle_write_steps={idle_write_steps!r} must be an integer >= 0",
                where="idle_write_steps",
                fix=f"e.g. {IDLE_WRITE_STEPS}, or 0 to leave writes to the manager",
            )
        if not idle_write_within_us >= 0:
            raise ConfigError(
                f"idle_write_within_us={idle_write_within_us!r} must be >= 0",
                where="idle_write_within_us",
                fix=f"e.g. {IDLE_WRITE_WITHIN_US:g}",
            )
        if _usable_cpus() < 2:
            log.warning(
                "HostedVecEnv on a machine with one usable core: the envs and the learning manager "
                "cannot run beside the policy, only take turns with it (slower than DummyVecEnv); "
                "use train.vec_env: dummy, or spin_us=0"
            )
        ctx: Any = mp.get_context(start_method)
        host_read, main_write = ctx.Pipe(duplex=False)
        main_read, host_write = ctx.Pipe(duplex=False)
        self._spin_s = float(spin_us) * 1e-6
        self._closed = False
        self._process = ctx.Process(
            target=_host_main,
            args=(
                host_read,
                host_write,
                CloudpickleWrapper(list(env_fns)),
                manager,
                switches,
                state,
                veto_horizon,
                self._spin_s,
                (idle_write_steps, float(idle_write_within_us) * 1e-6),
            ),
            name="slf-learning-host",
            daemon=True,
        )
        self._process.start()
        # The host's ends live in the host only: its exit closes them, which this side reads as EOF.
        host_read.close()
        host_write.close()
        self._chan = _Channel(main_read, main_write, self._spin_s, alive=self._process.is_alive)
        try:
            n, observation_space, action_space, render_mode = self._receive()
        except BaseException:
            self._shutdown()
            raise
        self.render_mode = render_mode
        super().__init__(n, observation_space, action_space)
        # The layout of a step's raw reply (Box observations; rewards float32 and dones bool, as
        # DummyVecEnv's).
        self._raw: tuple[np.dtype[Any], tuple[int, ...], int, int] | None = None
        if isinstance(observation_space, spaces.Box):
            dtype = np.dtype(observation_space.dtype)
            shape = (n, *observation_space.shape)
            count = int(np.prod(shape))
            self._raw = (dtype, shape, count, count * dtype.itemsize)
        self.manager_spec = manager
        self.switches = switches

    # --- transport -----------------------------------------------------------------------------------
    def _host_gone(self) -> StateError:
        self._closed = True
        self._process.join(1.0)
        code = self._process.exitcode
        return StateError(
            f"the learning host process ended unexpectedly (exit code {code})",
            where="HostedVecEnv",
            fix="see the messages above for its cause (out of memory, a crash in an env); the learning "
            "store keeps what was written; resume the run from its latest checkpoint",
        )

    def _send(self, kind: int, payload: bytes) -> None:
        if self._closed:
            raise StateError("the hosted envs are closed", where="HostedVecEnv", fix="build a new one")
        try:
            self._chan.send(kind, payload)
        except OSError as exc:
            raise self._host_gone() from exc

    def _recv(self) -> tuple[int, bytes]:
        try:
            kind, payload = self._chan.recv()
        except (EOFError, OSError) as exc:
            raise self._host_gone() from exc
        if kind == _ERROR:
            raise pickle.loads(payload)
        return kind, payload

    def _receive(self) -> Any:
        return pickle.loads(self._recv()[1])

    def _call(self, cmd: str, payload: Any = ()) -> Any:
        self._send(_CALL, _dumps((cmd, payload)))
        return self._receive()

    # --- VecEnv API ----------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        obs, infos = self._call("reset")
        self.reset_infos = infos
        self._reset_seeds()
        self._reset_options()
        return obs  # type: ignore[no-any-return]

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        super().seed(seed)  # keeps this side's record; the host's DummyVecEnv uses its own
        return self._call("seed", (None, (seed,), {}))  # type: ignore[no-any-return]

    def set_options(self, options: list[dict[str, Any]] | dict[str, Any] | None = None) -> None:
        super().set_options(options)
        self._call("set_options", (None, (options,), {}))

    def step_async(self, actions: np.ndarray) -> None:
        self._send(_STEP, _pack_array(actions))

    def step_wait(self) -> VecEnvStepReturn:
        kind, payload = self._recv()
        if kind == _STEPPED and self._raw is not None:
            dtype, shape, count, size = self._raw
            n = self.num_envs
            obs = np.frombuffer(payload, dtype=dtype, count=count).reshape(shape).copy()
            rewards = np.frombuffer(payload, dtype=np.float32, count=n, offset=size).copy()
            dones = np.frombuffer(payload, dtype=np.bool_, count=n, offset=size + 4 * n).copy()
            rest = size + 5 * n
            infos: list[dict[str, Any]] = [{} for _ in range(n)]
            resets = None
            if len(payload) > rest:
                infos, resets = pickle.loads(payload[rest:])
        else:
            obs, rewards, dones, infos, resets = pickle.loads(payload)
        if resets is not None:
            for i, info in enumerate(resets):
                if info is not None:
                    self.reset_infos[i] = info
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Close the envs and the manager in the host (what it learned is written), then end it."""
        if self._closed:
            self._shutdown()
            return
        try:
            self._call("close")
        finally:
            self._closed = True
            self._shutdown()

    def _shutdown(self) -> None:
        chan = getattr(self, "_chan", None)
        if chan is not None:
            chan.close()
        self._process.join(_CLOSE_TIMEOUT_S)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call("get_attr", (None, (attr_name, indices), {}))  # type: ignore[no-any-return]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", (None, (attr_name, value, indices), {}))

    def has_attr(self, attr_name: str) -> bool:
        # Asked in the host: get_attr would have to send the attribute (e.g. a bound method) over.
        return self._call("has_attr", (None, (attr_name,), {}))  # type: ignore[no-any-return]

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return self._call(  # type: ignore[no-any-return]
            "env_method", (method_name, method_args, {"indices": indices, **method_kwargs})
        )

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        return self._call("env_is_wrapped", (None, (wrapper_class, indices), {}))  # type: ignore[no-any-return]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._call("get_images")  # type: ignore[no-any-return]

    # --- the learning manager in the host -------------------------------------------------------------
    def start_feeding(self, *, fresh: bool) -> None:
        """Start feeding the manager (``fresh``: the envs were just reset; else they continue)."""
        self._call("start_feeding", (fresh,))

    def finish_feeding(self) -> None:
        """Write what the manager still holds."""
        self._call("finish_feeding")

    def drain_episodes(self) -> list[tuple[int, dict[str, float]]]:
        """``(env index, metrics)`` of the episodes that finished since the last call, in order."""
        return self._call("drain_episodes")  # type: ignore[no-any-return]

    def learning_scalars(self) -> dict[str, float]:
        """The ``learning/*`` scalars (see :func:`agents.feeder.learning_scalars`)."""
        return self._call("learning_scalars")  # type: ignore[no-any-return]

    def learning_report(self) -> str:
        """The learning report as Markdown (see :func:`agents.feeder.learning_report`)."""
        return self._call("learning_report")  # type: ignore[no-any-return]

    @property
    def counts(self) -> dict[str, int]:
        """The feeder's running totals."""
        return self._call("counts")  # type: ignore[no-any-return]

    @property
    def episodes(self) -> list[dict[str, float]]:
        """Metrics of every finished episode, in the order they finished."""
        return self._call("feeder_episodes")  # type: ignore[no-any-return]

    def snapshot(self) -> LearnedState | None:
        """The manager's current snapshot (``None`` without a manager)."""
        return self._call("snapshot")  # type: ignore[no-any-return]

    def with_manager(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        """Run ``fn(manager, *args)`` in the host (``fn`` picklable, e.g. a module-level function);
        ``None`` without a manager."""
        return self._call("with_manager", (fn, args))  # type: ignore[no-any-return]


def hosted(vec_env: Any) -> HostedVecEnv | None:
    """The :class:`HostedVecEnv` under ``vec_env``'s VecEnv wrappers, if any."""
    env = vec_env
    while env is not None:
        if isinstance(env, HostedVecEnv):
            return env
        env = getattr(env, "venv", None)
    return None
