"""Feature pipeline throughput and memory: ``python benchmarks/bench_features.py [--bars N] [--strict]``.

1,000,000 seeded synthetic 1-minute bars (generated inline with numpy), default ``FeatureConfig``.

* time: best of 3 runs of ``compute_features`` in this process (wall clock, ``perf_counter``), plus one
  timed run of each feature group for the breakdown;
* memory: measured in a fresh subprocess that only generates the bars and computes the features once.
  Its peak resident set size (``VmHWM``) is reset through ``/proc/self/clear_refs`` after the bars are
  built, so the figure is the peak RSS during ``compute_features`` minus the RSS just before it (the
  output matrix included). Where that reset is unavailable it falls back to ``ru_maxrss`` (peak since the
  process started, so an upper bound) and says so. A tracemalloc peak (Python and numpy allocations
  only) is printed beside it.

Targets: <= 3 s and <= 1 GiB. Exits 0 (``--strict``: exits 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

from envs.features import (  # noqa: E402  (after the sys.path fix above)
    FeatureConfig,
    compute_features,
    indicators,
    regime,
    timeframes,
    volume,
)

TARGET_SECONDS = 3.0
TARGET_MIB = 1024.0
DEFAULT_BARS = 1_000_000
SEED = 20240101
REPEATS = 3


def synthetic_bars(n: int, seed: int = SEED) -> pd.DataFrame:
    """Seeded 1-minute OHLCV: a random walk with slowly switching volatility and lognormal volume."""
    rng = np.random.default_rng(seed)
    regime_vol = np.repeat(rng.choice([4e-4, 1e-3, 2.5e-3], size=n // 500 + 1), 500)[:n]
    close = 30_000.0 * np.exp(np.cumsum(rng.standard_t(4, n) * regime_vol / np.sqrt(2.0)))
    open_ = np.empty(n)
    open_[0] = close[0]
    open_[1:] = close[:-1]
    wick = np.abs(rng.normal(0.0, 1.0, (2, n))) * regime_vol
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume_ = rng.lognormal(2.0, 1.0, n) * (regime_vol / 1e-3)
    index = pd.date_range("2023-01-01", periods=n, freq="1min", tz="UTC", unit="ns", name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume_}, index=index
    )


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_memory(n: int) -> dict[str, float | str]:
    """Run in a fresh process: peak RSS increase during one ``compute_features`` call."""
    bars = synthetic_bars(n)
    gc.collect()
    rss_kib = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
        reset = rss_kib is not None
    except OSError:
        reset = False
    if reset:
        method = "VmHWM reset through clear_refs: peak RSS during the call"
    else:  # ru_maxrss is the peak since the process started: an upper bound of the call's peak
        method = "ru_maxrss: peak RSS since process start (upper bound)"
    before_kib = rss_kib if rss_kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    matrix = compute_features(bars)
    peak_kib = (_status_kib("VmHWM") if reset else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del matrix
    gc.collect()

    tracemalloc.start()
    matrix = compute_features(bars)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "rss_increase_mib": (peak_kib - before_kib) / 1024.0,
        "baseline_rss_mib": before_kib / 1024.0,
        "tracemalloc_peak_mib": traced_peak / 2**20,
        "matrix_mib": matrix.values.nbytes / 2**20,
        "method": method,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=DEFAULT_BARS, help="number of 1-minute bars")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        print(json.dumps(measure_memory(args.bars)))
        return 0

    bars = synthetic_bars(args.bars)
    config = FeatureConfig()
    compute_features(bars.iloc[:5000], config)  # import and first-call costs out of the timing
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        matrix = compute_features(bars, config)
        times.append(time.perf_counter() - start)
    best = min(times)

    cols = {c: bars[c].to_numpy() for c in ("high", "low", "close", "volume")}
    stamps = np.asarray(pd.DatetimeIndex(bars.index).asi8)
    base_ns = timeframes.infer_base_timeframe_ns(stamps)
    breakdown = {}
    for name, run in (
        ("entry signals", lambda: indicators.entry_signals(cols["high"], cols["low"], cols["close"], config)),
        (
            "market conditions",
            lambda: regime.market_conditions(cols["high"], cols["low"], cols["close"], config),
        ),
        (
            "timeframe alignment",
            lambda: timeframes.timeframe_alignment(stamps, cols["close"], base_ns, config),
        ),
        (
            "volume profile",
            lambda: volume.volume_profile(cols["high"], cols["low"], cols["close"], cols["volume"], config),
        ),
    ):
        start = time.perf_counter()
        run()
        breakdown[name] = time.perf_counter() - start

    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--bars", str(args.bars)],
        capture_output=True,
        text=True,
        check=True,
    )
    memory = json.loads(child.stdout.strip().splitlines()[-1])

    rows, n_features = matrix.values.shape
    print(f"compute_features: {rows:,} bars x {n_features} features, warmup {matrix.warmup} rows")
    print(f"  time   best of {REPEATS}: {best:6.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times)})")
    for name, seconds in breakdown.items():
        print(f"         {name:<20} {seconds:6.2f} s")
    print(
        f"  memory peak RSS increase: {memory['rss_increase_mib']:7.1f} MiB   "
        f"[{memory['method']}; baseline RSS {memory['baseline_rss_mib']:.0f} MiB with the bars loaded]"
    )
    print(
        f"         tracemalloc peak:  {memory['tracemalloc_peak_mib']:7.1f} MiB   "
        f"(output matrix {memory['matrix_mib']:.1f} MiB)"
    )
    time_ok = best <= TARGET_SECONDS
    memory_ok = memory["rss_increase_mib"] <= TARGET_MIB
    print(f"  target time   <= {TARGET_SECONDS:.0f} s:     {'met' if time_ok else 'MISSED'}")
    print(f"  target memory <= {TARGET_MIB:.0f} MiB:  {'met' if memory_ok else 'MISSED'}")
    if args.strict and not (time_ok and memory_ok):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
