"""Run every benchmark: ``python -m benchmarks`` (what ``make bench`` does).

Each benchmark is its own script (so peers that change global state, such as warning filters, run in
their own process) and prints its figures; this runner runs them in turn and reports which failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
# Order matters only for reading: data first, then features, the environment, learning, training.
SCRIPTS = [
    "bench_data.py",
    "bench_features.py",
    "env_throughput.py",
    "bench_learning.py",
    "bench_training.py",
    "bench_backtest.py",
]


def main() -> int:
    only = set(sys.argv[1:])
    failed: list[str] = []
    for name in SCRIPTS:
        path = HERE / name
        if not path.exists() or (only and path.stem not in only):
            continue
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(path)])
        print(f"--- {name}: exit {rc} in {time.perf_counter() - start:.1f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
