"""Array helpers shared by the feature modules.

Rolling sums here are summed window by window (``x[t] + x[t-1] + ...`` in that order) instead of as a
running total: a row then depends on its own window only, bit for bit, whatever precedes or follows it,
and a window of zeros sums to exactly zero (a running total drifts). The work is O(rows x window) but
runs in cache-sized blocks of rows with one vectorized pass per lag, so there is no Python loop over bars.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Rows per block: a handful of float64 arrays of this length (512 KiB each) stay in a core's L2 cache.
CHUNK_ROWS = 65_536


def blocks(first: int, n: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row blocks covering ``first..n-1``."""
    return [(a, min(a + CHUNK_ROWS, n)) for a in range(first, n, CHUNK_ROWS)]


def window_sum(x: FloatArray, window: int) -> FloatArray:
    """``out[t] = x[t] + x[t-1] + ... + x[t-window+1]``; NaN for the first ``window - 1`` rows."""
    n = len(x)
    out = np.full(n, np.nan)
    for a, b in blocks(window - 1, n):
        acc = out[a:b]
        np.copyto(acc, x[a:b])
        for k in range(1, window):
            np.add(acc, x[a - k : b - k], out=acc)
    return out


def lagged(x: FloatArray, lag: int) -> FloatArray:
    """``out[t] = x[t - lag]``; NaN for the first ``lag`` rows."""
    out = np.full(len(x), np.nan)
    if lag < len(x):
        out[lag:] = x[: len(x) - lag]
    return out


def safe_ratio(num: FloatArray, den: FloatArray, fallback: float) -> FloatArray:
    """``num / den`` where ``den != 0``, ``fallback`` where ``den == 0``; NaN stays NaN."""
    out = np.full(len(num), fallback)
    np.divide(num, den, out=out, where=den != 0)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return out
