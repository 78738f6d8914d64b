"""Rebuild the bundled CSVs from gym-anytrading's originals (run once; the outputs are committed).

Usage::

    pip download --no-deps gym-anytrading==2.0.0 -d ga && unzip -q ga/*.whl -d ga
    python -m envs.datasets._build ga/gym_anytrading/datasets/data

The original time formats are parsed explicitly (never guessed), so the day-first EURUSD dates cannot
be read month-first. The output is byte-for-byte reproducible (gzip without a timestamp).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Final

import pandas as pd

HERE: Final = Path(__file__).parent
# original file -> (bundled file, time column, its exact format)
CONVERSIONS: Final[dict[str, tuple[str, str, str]]] = {
    "FOREX_EURUSD_1H_ASK.csv": ("eurusd_1h.csv.gz", "Time", "%d.%m.%Y %H:%M:%S.%f"),
    "STOCKS_GOOGL.csv": ("googl_1d.csv.gz", "Date", "%Y-%m-%d"),
}
COLUMNS: Final = ("open", "high", "low", "close", "volume")


def convert(original: Path, out: Path, time_column: str, fmt: str) -> int:
    """Write ``original`` as a canonical CSV: ISO UTC timestamps, lower-case OHLCV columns."""
    raw = pd.read_csv(original)
    times = pd.to_datetime(raw[time_column], format=fmt, utc=True)
    frame = pd.DataFrame({c: raw[c.capitalize()].astype("float64") for c in COLUMNS})
    frame.insert(0, "timestamp", times.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    text = frame.to_csv(index=False, lineterminator="\n")
    with out.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    return len(frame)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    source = Path(argv[0])
    for name, (target, column, fmt) in CONVERSIONS.items():
        rows = convert(source / name, HERE / target, column, fmt)
        print(f"{name} -> {target}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
