"""How fast market data loads and validates: ``python benchmarks/bench_data.py``.

Generates one million one-minute bars of one symbol, writes them to Parquet and to CSV in a temporary
folder, and times ``load_ohlcv`` (read + parse + every validation) as wall time with ``perf_counter``,
best of three runs. The target is for Parquet; the CSV figure is for information. Plain
``pandas.read_parquet`` (no validation, no canonical layout) is timed beside it as the floor.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from envs.data import generate_synthetic, load_ohlcv, save_parquet, summarize

BARS = 1_000_000
SYMBOL = "BTC/USDT"
SEED = 1
REPEATS = 3
TARGET_PARQUET_S = 1.0


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Smallest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    start = time.perf_counter()
    market = generate_synthetic([SYMBOL], BARS, SEED)
    frame = market.frames[SYMBOL]
    print(f"generated {BARS:,} bars of {SYMBOL} in {time.perf_counter() - start:.2f} s")

    with tempfile.TemporaryDirectory() as folder:
        parquet = save_parquet(frame, Path(folder) / "bars.parquet")
        csv = Path(folder) / "bars.csv"
        # pyarrow writes ISO timestamps quickly; DataFrame.to_csv would take longer than the benchmark.
        pa_csv.write_csv(pa.Table.from_pandas(frame.reset_index(), preserve_index=False), csv)

        loaded = load_ohlcv(parquet)
        if len(loaded) != BARS or summarize(loaded).timeframe != pd.Timedelta(minutes=1):
            print("error: the loaded frame is not the generated one", file=sys.stderr)
            return 1

        t_parquet = best_of(lambda: load_ohlcv(parquet))
        t_raw = best_of(lambda: pd.read_parquet(parquet))
        t_csv = best_of(lambda: load_ohlcv(csv))

    verdict = "ok" if t_parquet <= TARGET_PARQUET_S else "OVER TARGET"
    rows = f"{BARS:,} rows"
    print(f"load_ohlcv, Parquet, {rows} (read + validate):         {t_parquet:.3f} s  best of {REPEATS}")
    print(f"  target <= {TARGET_PARQUET_S:.1f} s: {verdict}")
    print(f"pandas.read_parquet alone (no validation), same file:    {t_raw:.3f} s  best of {REPEATS}")
    print(f"load_ohlcv, CSV, {rows} (read + parse + validate): {t_csv:.3f} s  best of {REPEATS}")
    print("  (CSV for information; no target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
