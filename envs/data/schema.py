"""Names and defaults shared by every part of ``envs.data``: the canonical OHLCV layout and timeframes.

A canonical OHLCV frame has exactly the columns :data:`OHLCV_COLUMNS` (float64) and a tz-aware UTC
``DatetimeIndex`` with unit ``"ns"`` named :data:`TIMESTAMP`. A bar's timestamp is its **open** time;
the bar closes at ``timestamp + timeframe``.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import pandas as pd

from envs.errors import ConfigError

__all__ = [
    "DEFAULT_MIN_ROWS",
    "OHLCV_COLUMNS",
    "PRICE_COLUMNS",
    "RESAMPLE_ORIGIN",
    "SYMBOL",
    "TIMESTAMP",
    "TIME_COLUMN_CANDIDATES",
    "format_timeframe",
    "parse_timeframe",
]

OPEN: Final = "open"
HIGH: Final = "high"
LOW: Final = "low"
CLOSE: Final = "close"
VOLUME: Final = "volume"
OHLCV_COLUMNS: Final[tuple[str, ...]] = (OPEN, HIGH, LOW, CLOSE, VOLUME)
PRICE_COLUMNS: Final[tuple[str, ...]] = (OPEN, HIGH, LOW, CLOSE)

TIMESTAMP: Final = "timestamp"
SYMBOL: Final = "symbol"
# Accepted names of the time column, in order of preference (matched case-insensitively).
TIME_COLUMN_CANDIDATES: Final[tuple[str, ...]] = (TIMESTAMP, "datetime", "date", "time")

# Two bars are the least from which a bar spacing (the timeframe) can be inferred.
DEFAULT_MIN_ROWS: Final = 2

# Bins of every resampling start from a Monday at midnight UTC, so that hourly, daily and weekly bars
# line up with the calendar whatever the first bar of the data is.
RESAMPLE_ORIGIN: Final = pd.Timestamp("1970-01-05", tz="UTC")

_UNIT_ALIASES: Final[dict[str, Literal["s", "min", "h", "D", "W"]]] = {
    "s": "s",
    "sec": "s",
    "m": "min",
    "min": "min",
    "t": "min",
    "h": "h",
    "hr": "h",
    "d": "D",
    "w": "W",
}
_TIMEFRAME_RE: Final = re.compile(r"^\s*(\d+)\s*([a-zA-Z]+)\s*$")
_DISPLAY_UNITS: Final[tuple[tuple[str, pd.Timedelta], ...]] = (
    ("w", pd.Timedelta(weeks=1)),
    ("d", pd.Timedelta(days=1)),
    ("h", pd.Timedelta(hours=1)),
    ("m", pd.Timedelta(minutes=1)),
    ("s", pd.Timedelta(seconds=1)),
)


def parse_timeframe(text: str | pd.Timedelta) -> pd.Timedelta:
    """Parse a bar length such as ``"1m"``, ``"1min"``, ``"15m"``, ``"4h"``, ``"1d"`` or ``"1w"``.

    Units are case-insensitive except that ``"M"`` (a month in ccxt) is refused, since months have no
    fixed length.

    Raises:
        ConfigError: the text is not a positive whole number of seconds, minutes, hours, days or weeks.
    """
    if isinstance(text, pd.Timedelta):
        value = text
    else:
        match = _TIMEFRAME_RE.match(str(text))
        unit = match.group(2) if match else ""
        alias = _UNIT_ALIASES.get(unit.lower()) if unit != "M" else None
        if match is None or alias is None:
            raise ConfigError(
                f"cannot read timeframe {text!r}",
                fix="write a number and a unit: 30s, 1m, 15m, 1h, 4h, 1d or 1w",
            )
        value = pd.Timedelta(int(match.group(1)), unit=alias)
    if value <= pd.Timedelta(0):
        raise ConfigError(f"timeframe {text!r} must be positive", fix="use e.g. 1m, 1h or 1d")
    return value


def format_timeframe(value: pd.Timedelta | None) -> str:
    """Short ccxt-style name of a bar length: ``"1m"``, ``"4h"``, ``"1d"``; ``"?"`` when unknown."""
    if value is None:
        return "?"
    for suffix, unit in _DISPLAY_UNITS:
        if value >= unit and value % unit == pd.Timedelta(0):
            return f"{value // unit}{suffix}"
    return str(value)
