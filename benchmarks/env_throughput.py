"""Environment throughput, reset scaling and shared memory: ``python benchmarks/env_throughput.py``.

Measured on the same seeded synthetic minute bars (``envs.data.generate_synthetic``), each environment
in its own subprocess (gym-trading-env turns every warning into an error when imported). The peers run
under their own interpreter (``--peers-python``, default ``$SLF_PEERS_PYTHON`` or ``.venv-peers/bin/python``
as ``make bench-peers`` creates it, with the project's numpy, pandas and gymnasium versions): gym-trading-env
pins ``ccxt==3.0.59``, which must not replace the project's ccxt 4. The bars (and, for gym-trading-env, our
feature matrix) are handed to the peer processes in a NumPy file, so they import neither ``envs`` nor
anything of this project.

* **steps/s**, random actions, on the raw env (``.unwrapped``, no wrappers for anyone): best of
  ``--repeats`` runs of ``--steps`` steps in each of ``--rounds`` rounds that interleave the envs, by
  the stepping process's CPU time (``--clock wall`` for wall time; on an idle machine they agree):

  - ``MarketReplayEnv`` with every friction on: 0.1% taker fee, 2 bps spread, 1 bps slippage plus a
    volume-participation impact, lot step, minimum quantity and notional, price tick, 2.5% of orders
    hit by injected faults; window 32, default features, actions ``[-1, 0, 1]``, 1000-bar episodes;
  - gym-anytrading ``stocks-v0`` (window 32, its own price features and fees, actions sell/buy);
  - gym-trading-env ``TradingEnv`` (windows 32, our default features as its ``feature_*`` columns,
    positions ``[-1, 0, 1]``, 0.1% fees, borrow interest, 1000-step episodes). Its index is made
    tz-naive: with pandas 3 its own ``DatetimeIndex.values`` call raises a deprecation warning, which it
    has turned into an error.

* **reset scaling**: mean ``reset()`` time (random starts) over ``--reset-count`` resets, best of 5
  batches, on 10k and 1M bars.
* **shared memory**: resident memory (psutil RSS) growth per extra env when eight envs replay one
  1M-bar dataset (they share one read-only feature matrix).

Targets: >= 1.0x gym-anytrading, >= 5x gym-trading-env steps/s; reset at 1M bars within 1.2x of reset at
10k bars; < 5 MB RSS per extra env. Ours runs the compiled trading core when it is built (the run
prints which; ``--pure`` measures the pure-Python core). Exits 0 (``--strict``: 1 when a target is
missed). A missing peer interpreter or peer package is reported and the peer skipped. Shorter runs:
``--steps 10000 --repeats 2 --reset-count 500 --memory-bars 200000``; ``--only ours anytrading``
measures only the steps/s of those.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

SEED = 20240101
SYMBOL = "BTC/USDT"
WINDOW = 32
EPISODE = 1_000
DEFAULT_BARS = 100_000
DEFAULT_STEPS = 50_000
DEFAULT_REPEATS = 3
DEFAULT_ROUNDS = 2
RESET_BARS = (10_000, 1_000_000)
RESET_COUNT = 2_000
RESET_BATCHES = 5
MEMORY_BARS = 1_000_000
MEMORY_ENVS = 8
MEMORY_STEPS = 200

PEERS = ("anytrading", "trading-env")
PEER_LABELS = {"anytrading": "gym-anytrading", "trading-env": "gym-trading-env"}
PEERS_PYTHON_ENV = "SLF_PEERS_PYTHON"
DEFAULT_PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"

TARGET_VS_ANYTRADING = 1.0
TARGET_VS_TRADING_ENV = 5.0
TARGET_RESET_RATIO = 1.2
TARGET_MB_PER_ENV = 5.0


def _bars(n: int) -> Any:
    from envs.data import generate_synthetic

    return generate_synthetic([SYMBOL], n, SEED).frames[SYMBOL]


def _spec() -> Any:
    from envs.market import MarketSpec, SlippageModel

    return MarketSpec(
        SYMBOL,
        taker_fee=0.001,
        spread_bps=2.0,
        slippage_bps=1.0,
        slippage_model=SlippageModel.VOLUME,
        impact_bps=10.0,
        min_qty=1e-5,
        qty_step=1e-5,
        min_notional=5.0,
        price_tick=0.01,
    )


FAULTS = {"rate_limit": 0.01, "timeout": 0.01, "maintenance": 0.005}


def _ours(bars: Any, **kw: Any) -> Any:
    from envs.replay import MarketReplayEnv

    return MarketReplayEnv(
        data=bars, market=_spec(), faults=FAULTS, window=WINDOW, episode_length=EPISODE, **kw
    )


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def _run(env: Any, actions: list[int], repeats: int, clock: str) -> float:
    """Best steps/s over ``repeats`` runs of ``len(actions)`` random steps (auto-reset on episode end)."""
    now = CLOCKS[clock]
    best = 0.0
    for r in range(repeats):
        env.reset(seed=r)
        step = env.step
        start = now()
        for a in actions:
            out = step(a)
            if out[2] or out[3]:
                env.reset()
        best = max(best, len(actions) / (now() - start))
    return best


def write_peer_data(bars_n: int, path: Path) -> None:
    """The bars and our feature matrix, as plain arrays for the peer processes."""
    from envs.features import compute_features

    bars = _bars(bars_n)
    matrix = compute_features(bars)
    np.savez(
        path,
        time_ns=bars.index.as_unit("ns").asi8,
        ohlcv=bars[["open", "high", "low", "close", "volume"]].to_numpy(np.float64),
        features=np.asarray(matrix.values, dtype=np.float64),
        feature_names=np.asarray(matrix.columns, dtype=str),
        warmup=np.asarray(matrix.warmup),
    )


def _peer_frame(path: str) -> tuple[Any, Any]:
    """(bars, features) read back in a peer process: tz-naive UTC index, ``feature_*`` columns."""
    import pandas as pd

    with np.load(path) as data:
        index = pd.DatetimeIndex(data["time_ns"].astype("datetime64[ns]"))
        bars = pd.DataFrame(data["ohlcv"], index=index, columns=["open", "high", "low", "close", "volume"])
        features = pd.DataFrame(
            data["features"], index=index, columns=[f"feature_{c}" for c in data["feature_names"]]
        )
        warmup = int(data["warmup"])
    return bars, features.iloc[warmup:]


def child_steps(
    name: str, bars_n: int, steps: int, repeats: int, peer_data: str | None, clock: str
) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    build = None
    if name == "ours":
        from envs import _native

        env = _ours(_bars(bars_n))
        actions = rng.integers(0, 3, steps)
        build = _native.status()
    elif name == "anytrading":
        bars, _ = _peer_frame(str(peer_data))
        import gym_anytrading  # noqa: F401 - registers stocks-v0
        import gymnasium as gym

        frame = bars.rename(columns=str.capitalize)
        env = gym.make("stocks-v0", df=frame, window_size=WINDOW, frame_bound=(WINDOW, len(frame))).unwrapped
        actions = rng.integers(0, 2, steps)
    elif name == "trading-env":
        # Read before importing the peer: gym-trading-env makes warnings errors. The index is tz-naive
        # (with pandas 3 its own DatetimeIndex.values call on a tz-aware index warns, hence raises).
        bars, features = _peer_frame(str(peer_data))
        import pandas as pd

        frame = pd.concat([bars, features], axis=1).iloc[len(bars) - len(features) :]
        import gym_trading_env  # noqa: F401 - registers TradingEnv
        import gymnasium as gym

        env = gym.make(
            "TradingEnv",
            df=frame,
            positions=[-1, 0, 1],
            trading_fees=0.001,
            borrow_interest_rate=1e-6,
            windows=WINDOW,
            max_episode_duration=EPISODE,
            verbose=0,
        ).unwrapped
        actions = rng.integers(0, 3, steps)
    else:
        raise SystemExit(f"unknown env {name!r}")
    return {"steps_per_s": _run(env, [int(a) for a in actions], repeats, clock), "build": build}


def child_reset(bars_n: int, count: int) -> dict[str, Any]:
    env = _ours(_bars(bars_n))
    env.reset(seed=0)
    best = float("inf")
    for batch in range(RESET_BATCHES):
        env.reset(seed=batch)
        start = time.perf_counter()
        for _ in range(count):
            env.reset()
        best = min(best, (time.perf_counter() - start) / count)
    return {"reset_us": best * 1e6}


def child_memory(bars_n: int, n_envs: int) -> dict[str, Any]:
    import psutil

    proc = psutil.Process()
    bars = _bars(bars_n)
    rng = np.random.default_rng(SEED)
    envs: list[Any] = []

    def add() -> None:
        env = _ours(bars)
        env.reset(seed=len(envs))
        for a in rng.integers(0, 3, MEMORY_STEPS):
            env.step(int(a))
        envs.append(env)
        gc.collect()

    add()
    first = proc.memory_info().rss
    for _ in range(n_envs - 1):
        add()
    last = proc.memory_info().rss
    shared = envs[0].market_data.features.values
    return {
        "rss_first_mb": first / 1e6,
        "rss_all_mb": last / 1e6,
        "mb_per_extra_env": (last - first) / 1e6 / (n_envs - 1),
        "shared": all(e.market_data.features.values is shared for e in envs),
        "matrix_mb": shared.nbytes / 1e6,
    }


def peers_python(given: str | None) -> Path:
    """The peers' interpreter: ``--peers-python``, else ``$SLF_PEERS_PYTHON``, else ``.venv-peers``."""
    return Path(given or os.environ.get(PEERS_PYTHON_ENV) or DEFAULT_PEERS_PYTHON)


def _child(
    *args: str, python: Path | None = None, quiet_missing: bool = False, pure: bool = False
) -> dict[str, Any] | None:
    exe = str(python) if python is not None else sys.executable
    env = {**os.environ, "SLF_PURE_PYTHON": "1"} if pure else None
    proc = subprocess.run(
        [exe, str(Path(__file__).resolve()), "--child", *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        tail = lines[-1]
        if quiet_missing and "ModuleNotFoundError" in tail:
            print(f"  ! {args[1]} skipped: {tail} in {exe} (make bench-peers installs the peers)", flush=True)
        else:
            print(f"  ! {' '.join(args)} failed: {tail}", flush=True)
        return None
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=DEFAULT_BARS, help="bars for the steps/s runs")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps per run")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="runs per env (best counts)")
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds of all envs (best counts)"
    )
    parser.add_argument("--reset-count", type=int, default=RESET_COUNT, help="resets per timing batch")
    parser.add_argument("--memory-bars", type=int, default=MEMORY_BARS, help="bars for the memory check")
    parser.add_argument(
        "--peers-python",
        help=f"interpreter with the peers (default ${PEERS_PYTHON_ENV}, else .venv-peers/bin/python)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=("ours", *PEERS), help="measure only the steps/s of these envs"
    )
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="steps/s by the stepping process's CPU time (default: load from other processes on a shared "
        "machine does not count against whichever env it preempts) or by wall time",
    )
    parser.add_argument(
        "--pure",
        action="store_true",
        help="measure our pure-Python core (SLF_PURE_PYTHON=1) instead of the compiled one",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--peer-data", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "steps":
            result = child_steps(rest[0], args.bars, args.steps, args.repeats, args.peer_data, args.clock)
        elif kind == "reset":
            result = child_reset(int(rest[0]), args.reset_count)
        else:
            result = child_memory(args.memory_bars, MEMORY_ENVS)
        print(json.dumps(result))
        return 0

    common = ["--bars", str(args.bars), "--steps", str(args.steps), "--repeats", str(args.repeats)]
    common += ["--clock", args.clock]
    print(
        f"env throughput: {args.bars:,} synthetic 1-minute bars, {args.steps:,} random steps x "
        f"{args.repeats} in each of {args.rounds} interleaved rounds (best), {args.clock} time"
    )
    speed: dict[str, float | None] = {}
    names = [n for n in ("ours", *PEERS) if not args.only or n in args.only]
    peer_exe = peers_python(args.peers_python)
    with tempfile.TemporaryDirectory() as tmp:
        peer_data = Path(tmp) / "bars.npz"
        if any(n in PEERS for n in names):
            write_peer_data(args.bars, peer_data)
        # Rounds interleave the envs, each keeping its best: on a shared machine every env gets the same
        # chances of a quiet moment.
        skipped: set[str] = set()
        for rnd in range(args.rounds):
            for name in names:
                if name in skipped:
                    continue
                out: dict[str, Any] | None
                if name == "ours":
                    out = _child("steps", name, *common, pure=args.pure)
                    if out and rnd == 0:
                        print(f"  ours: {out['build']} trading core", flush=True)
                elif not peer_exe.exists():
                    print(
                        f"  ! {PEER_LABELS[name]} skipped: no peer interpreter at {peer_exe} "
                        f"(run `make bench-peers`, or give --peers-python / ${PEERS_PYTHON_ENV})",
                        flush=True,
                    )
                    out = None
                else:
                    out = _child(
                        "steps",
                        name,
                        *common,
                        "--peer-data",
                        str(peer_data),
                        python=peer_exe,
                        quiet_missing=True,
                    )
                if out is None:
                    skipped.add(name)
                    speed[name] = None
                else:
                    speed[name] = max(speed.get(name) or 0.0, out["steps_per_s"])
                shown = f"{out['steps_per_s']:>10,.0f} steps/s" if out else f"{'skipped':>10}"
                print(f"  round {rnd + 1}  {name:<12} {shown}", flush=True)
    for name in names:
        shown = f"{speed[name]:>10,.0f} steps/s" if speed[name] else f"{'skipped':>10}"
        print(f"  best     {name:<12} {shown}", flush=True)
    if args.only:
        _print_speed(speed)
        return 0
    resets = {}
    for n in RESET_BARS:
        out = _child("reset", str(n), "--reset-count", str(args.reset_count), pure=args.pure)
        resets[n] = out["reset_us"] if out else None
        print(f"  reset at {n:>9,} bars: {resets[n] or float('nan'):8.1f} us", flush=True)
    memory = _child("memory", "--memory-bars", str(args.memory_bars), pure=args.pure)

    rows = _speed_rows(speed)
    small, big = resets[RESET_BARS[0]], resets[RESET_BARS[1]]
    reset_ratio = _ratio(big, small)
    rows.append(
        (
            f"reset 1M bars / reset 10k bars ({big or 0:.1f} / {small or 0:.1f} us)",
            _x(reset_ratio),
            f"<= {TARGET_RESET_RATIO:.1f}x",
            None if reset_ratio is None else reset_ratio <= TARGET_RESET_RATIO,
        )
    )
    if memory:
        per_env = memory["mb_per_extra_env"]
        label = f"RSS per extra env, {MEMORY_ENVS} envs on {args.memory_bars:,} bars"
        rows.append(
            (
                label,
                f"{per_env:.2f} MB",
                f"< {TARGET_MB_PER_ENV:.0f} MB",
                per_env < TARGET_MB_PER_ENV and memory["shared"],
            )
        )
        rows.append(
            (
                f"  (first env {memory['rss_first_mb']:.0f} MB RSS, all {memory['rss_all_mb']:.0f} MB; "
                f"shared matrix {memory['matrix_mb']:.0f} MB)",
                "",
                "",
                None,
            )
        )
    else:
        rows.append(("RSS per extra env", "n/a", f"< {TARGET_MB_PER_ENV:.0f} MB", None))

    missed = _print_rows(rows)
    return 1 if args.strict and missed else 0


Row = tuple[str, str, str, bool | None]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _speed_rows(speed: dict[str, float | None]) -> list[Row]:
    ours = speed.get("ours")
    rows: list[Row] = [("MarketReplayEnv steps/s (all frictions)", f"{ours or 0:,.0f}", "", None)]
    for name, label, target in (
        ("anytrading", "gym-anytrading stocks-v0", TARGET_VS_ANYTRADING),
        ("trading-env", "gym-trading-env TradingEnv", TARGET_VS_TRADING_ENV),
    ):
        if name in speed:
            r = _ratio(ours, speed[name])
            rows.append((f"  vs {label}", _x(r), f">= {target:.1f}x", _ge(r, target)))
    return rows


def _print_speed(speed: dict[str, float | None]) -> None:
    _print_rows(_speed_rows(speed))


def _print_rows(rows: list[Row]) -> bool:
    """Print the table; whether a target was missed."""
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>12}  {'target':>9}  status")
    for label, value, target, ok in rows:
        status = "" if ok is None and not target else ("met" if ok else ("MISSED" if ok is False else "n/a"))
        print(f"{label:<{width}}  {value:>12}  {target:>9}  {status}")
    return any(ok is False for *_, ok in rows)


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _ge(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


if __name__ == "__main__":
    sys.exit(main())
