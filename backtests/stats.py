"""Statistics for honest comparisons: intervals over seeds, deflated Sharpe ratios, paired tests.

* :func:`mean_ci`: mean and two-sided confidence interval over seeds (Student's t with ``n - 1`` degrees
  of freedom), clipped to the values the metric can take (a win rate stays in [0, 1], a drawdown <= 0;
  :data:`backtests.metrics.METRIC_BOUNDS`). Clipping never narrows the interval inside that range: the
  true mean lies in the range, so the coverage is unchanged. One seed has no interval: the bounds are NaN
  and ``note`` says so. Fewer than :data:`MIN_INTERVAL_SAMPLES` (3) seeds give an interval that is not
  meaningful (with two, the 95% t-quantile is 12.7, so the interval spans about +-12.7 standard errors);
  it is still computed, and ``note`` and :attr:`SeedSummary.meaningful` say so, and reports show none.
* :func:`probabilistic_sharpe_ratio` (Bailey & López de Prado, 2012): the probability that the true
  Sharpe ratio exceeds a benchmark, given the sample's length, skewness and kurtosis::

      PSR(SR*) = Phi( (SR - SR*) * sqrt(n - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2) )

  with ``SR = mean / std`` (``ddof=1``) per bar (not annualized), ``skew`` and ``kurt`` the sample
  skewness and (non-excess) kurtosis as moment estimators (SciPy's defaults), ``n`` the number of
  returns.
* :func:`deflated_sharpe_ratio` (Bailey & López de Prado, 2014): the PSR against the Sharpe ratio the
  best of ``N`` unskilled trials would reach by luck::

      SR0 = sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))

  with ``V`` the variance of the trials' Sharpe ratios and ``g`` the Euler-Mascheroni constant.
* Against a benchmark (buy-and-hold), on the per-bar return differences ``d = strategy - benchmark``
  of the same bars (paired, so the common market moves cancel):

  - :func:`newey_west_test` (the default of :func:`compare_returns`): ``t = mean(d) / se`` with the
    Newey-West (Bartlett kernel) HAC standard error, robust to the autocorrelation and
    heteroskedasticity of trading returns; lags ``floor(4 (n / 100)^(2/9))`` unless given; two-sided
    p-value from Student's t with ``n - 1`` degrees of freedom.
  - :func:`stationary_bootstrap_test`: Politis & Romano's stationary block bootstrap of ``mean(d)``
    (geometric block lengths of mean ``n^(1/3)`` unless given), seeded; percentile interval and a
    two-sided p-value from the bootstrap distribution centred on the null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

from envs.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from backtests.results import BacktestResult

__all__ = [
    "EULER_GAMMA",
    "MIN_INTERVAL_SAMPLES",
    "DeflatedSharpe",
    "PairedTest",
    "SeedSummary",
    "compare_results",
    "compare_returns",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "mean_ci",
    "newey_west_lags",
    "newey_west_test",
    "probabilistic_sharpe_ratio",
    "seed_table",
    "sharpe_ratio",
    "stationary_bootstrap_test",
]

EULER_GAMMA: Final = 0.5772156649015329
MIN_INTERVAL_SAMPLES: Final = 3
"""Fewest seeds whose t-interval is shown: two give +-12.7 standard errors at 95%, which says nothing."""
UNBOUNDED: Final = (-math.inf, math.inf)
DEFAULT_BOOTSTRAPS: Final = 2_000
_BOOT_CHUNK: Final = 64  # bootstrap replicates generated at once (bounds memory on long series)


def _vector(values: npt.ArrayLike, name: str, *, min_len: int) -> npt.NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) < min_len:
        raise DataError(f"{name} has {len(x)} value(s); at least {min_len} are needed", where=name)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} holds NaN or infinite values", where=name, fix="drop or fill them first")
    return x


# --- over seeds ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """Mean of a metric over seeds, with its confidence interval.

    Attributes:
        n: number of seeds.
        mean: the mean.
        std: sample standard deviation (``ddof=1``; NaN for one seed).
        low, high: bounds of the interval, clipped to the metric's possible values (NaN for one seed:
            no interval from one sample).
        confidence: the interval's coverage, e.g. 0.95.
        note: ``"one seed: no interval"`` when ``n == 1``, a warning when ``n`` is below
            :data:`MIN_INTERVAL_SAMPLES`, else ``""``.
    """

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float
    note: str = ""

    @property
    def meaningful(self) -> bool:
        """Whether the interval is worth showing (at least :data:`MIN_INTERVAL_SAMPLES` seeds)."""
        return self.n >= MIN_INTERVAL_SAMPLES

    def __str__(self) -> str:
        if not self.meaningful:
            return f"{self.mean:.4g} (n={self.n}: {self.note})"
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}] ({self.confidence:.0%} CI, n={self.n})"


def mean_ci(
    values: npt.ArrayLike, confidence: float = 0.95, *, bounds: tuple[float, float] = UNBOUNDED
) -> SeedSummary:
    """Mean and Student-t confidence interval of one value per seed, clipped to ``bounds``.

    Args:
        values: one value per seed.
        confidence: the interval's coverage.
        bounds: the values the metric can take (``(0, 1)`` for a win rate); the interval is clipped to
            them, never narrowed inside them.

    Raises:
        ConfigError: ``confidence`` outside (0, 1), or ``bounds`` with low > high.
        DataError: no value, or a non-finite one.
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r} must be in (0, 1)", fix="e.g. 0.95")
    lower, upper = bounds
    if not lower <= upper:
        raise ConfigError(f"bounds={bounds!r} must be (low, high) with low <= high", where="bounds")
    x = _vector(values, "values", min_len=1)
    n = len(x)
    mean = float(np.mean(x))
    if n == 1:
        return SeedSummary(1, mean, math.nan, math.nan, math.nan, confidence, "one seed: no interval")
    std = float(np.std(x, ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    low, high = max(mean - half, lower), min(mean + half, upper)
    note = "" if n >= MIN_INTERVAL_SAMPLES else f"{n} seeds: too few for a meaningful interval"
    return SeedSummary(n, mean, std, low, high, confidence, note)


# --- Sharpe ratios ---------------------------------------------------------------------------------


def sharpe_ratio(returns: npt.ArrayLike) -> float:
    """Per-bar Sharpe ratio ``mean / std`` (``ddof=1``, no annualization); NaN for a constant series."""
    r = _vector(returns, "returns", min_len=2)
    sd = float(np.std(r, ddof=1))
    return float(np.mean(r)) / sd if sd > 0.0 else math.nan


def probabilistic_sharpe_ratio(returns: npt.ArrayLike, benchmark_sharpe: float = 0.0) -> float:
    """``P(true SR > benchmark_sharpe)`` (per-bar Sharpe ratios; see the module docstring).

    Raises:
        DataError: fewer than three returns or a constant series (no Sharpe ratio).
    """
    from scipy import stats

    r = _vector(returns, "returns", min_len=3)
    sr = sharpe_ratio(r)
    if math.isnan(sr):
        raise DataError("the returns are constant: no Sharpe ratio", where="returns")
    skew = float(stats.skew(r))
    kurt = float(stats.kurtosis(r, fisher=False))
    denominator = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    z = (sr - benchmark_sharpe) * math.sqrt(len(r) - 1) / math.sqrt(denominator)
    return float(stats.norm.cdf(z))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` unskilled trials with this variance of Sharpe ratios.

    One trial: 0 (nothing was selected, so nothing to deflate).
    """
    from scipy import stats

    if isinstance(n_trials, bool) or not isinstance(n_trials, int | np.integer) or n_trials < 1:
        raise ConfigError(f"n_trials={n_trials!r} must be an integer >= 1", where="n_trials")
    if not sharpe_variance >= 0.0:
        raise ConfigError(f"sharpe_variance={sharpe_variance!r} must be >= 0", where="sharpe_variance")
    if n_trials == 1:
        return 0.0
    n = float(n_trials)
    return math.sqrt(sharpe_variance) * (
        (1.0 - EULER_GAMMA) * float(stats.norm.ppf(1.0 - 1.0 / n))
        + EULER_GAMMA * float(stats.norm.ppf(1.0 - 1.0 / (n * math.e)))
    )


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio of the selected strategy.

    Attributes:
        dsr: ``PSR(sr0)``: probability that the true Sharpe ratio beats the best-of-``n_trials`` luck.
        sharpe: the strategy's per-bar Sharpe ratio.
        sr0: expected maximum per-bar Sharpe ratio of ``n_trials`` unskilled trials.
        n_trials: trials the strategy was selected from.
        sharpe_variance: variance of the trials' per-bar Sharpe ratios.
        n: number of returns.
    """

    dsr: float
    sharpe: float
    sr0: float
    n_trials: int
    sharpe_variance: float
    n: int


def deflated_sharpe_ratio(
    returns: npt.ArrayLike,
    n_trials: int,
    *,
    trial_sharpes: npt.ArrayLike | None = None,
    sharpe_variance: float | None = None,
) -> DeflatedSharpe:
    """The deflated Sharpe ratio of ``returns``, selected as the best of ``n_trials``.

    Give the trials' per-bar Sharpe ratios (``trial_sharpes``, their variance is used) or the variance
    itself. Every configuration tried counts as a trial (seeds, hyperparameters, algorithms).

    Raises:
        ConfigError: neither or both of ``trial_sharpes`` and ``sharpe_variance``.
    """
    if (trial_sharpes is None) == (sharpe_variance is None):
        raise ConfigError(
            "give exactly one of trial_sharpes= and sharpe_variance=",
            where="deflated_sharpe_ratio",
            fix="pass the per-bar Sharpe ratios of every trial, or their variance",
        )
    if trial_sharpes is not None:
        srs = _vector(trial_sharpes, "trial_sharpes", min_len=2)
        variance = float(np.var(srs, ddof=1))
    else:
        variance = float(sharpe_variance)  # type: ignore[arg-type]
    sr0 = expected_max_sharpe(n_trials, variance)
    r = _vector(returns, "returns", min_len=3)
    return DeflatedSharpe(
        dsr=probabilistic_sharpe_ratio(r, sr0),
        sharpe=sharpe_ratio(r),
        sr0=sr0,
        n_trials=int(n_trials),
        sharpe_variance=variance,
        n=len(r),
    )


# --- paired tests against a benchmark --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairedTest:
    """A test of ``mean(strategy - benchmark) == 0`` on per-bar return differences.

    Attributes:
        method: ``"newey_west"`` or ``"stationary_bootstrap"``.
        n: number of paired returns.
        mean_diff: mean per-bar return difference (positive: the strategy earned more).
        std_error: its standard error (HAC, or the bootstrap distribution's standard deviation).
        statistic: ``mean_diff / std_error``.
        p_value: two-sided.
        low, high: 95% interval of the mean difference.
        lags: HAC lags (Newey-West), else 0.
        mean_block: mean block length (bootstrap), else 0.
        n_boot: bootstrap replicates, else 0.
        seed: the bootstrap seed, else ``None``.
    """

    method: str
    n: int
    mean_diff: float
    std_error: float
    statistic: float
    p_value: float
    low: float
    high: float
    lags: int = 0
    mean_block: float = 0.0
    n_boot: int = 0
    seed: int | None = None

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def _differences(a: npt.ArrayLike, b: npt.ArrayLike | None) -> npt.NDArray[np.float64]:
    x = _vector(a, "returns", min_len=3)
    if b is None:
        return x
    y = _vector(b, "benchmark returns", min_len=3)
    if len(x) != len(y):
        raise DataError(
            f"paired series differ in length ({len(x)} vs {len(y)})",
            where="returns",
            fix="compare the strategy and the benchmark over the same bars",
        )
    return x - y


def newey_west_lags(n: int) -> int:
    """Newey & West's (1994) rule of thumb ``floor(4 (n / 100)^(2/9))``."""
    return math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))


def newey_west_test(
    returns: npt.ArrayLike, benchmark: npt.ArrayLike | None = None, *, lags: int | None = None
) -> PairedTest:
    """HAC t-test of the mean per-bar difference ``returns - benchmark`` (or of ``returns`` alone).

    The long-run variance is ``g0 + 2 sum_{l=1..L} (1 - l / (L + 1)) g_l`` with ``g_l`` the lag-``l``
    autocovariance (divided by ``n``); the standard error is ``sqrt(variance / n)``.
    """
    from scipy import stats

    d = _differences(returns, benchmark)
    n = len(d)
    lag = newey_west_lags(n) if lags is None else int(lags)
    if not 0 <= lag < n:
        raise ConfigError(f"lags={lags!r} must be in [0, {n})", where="lags")
    mean = float(np.mean(d))
    e = d - mean
    variance = float(e @ e) / n
    for ell in range(1, lag + 1):
        variance += 2.0 * (1.0 - ell / (lag + 1.0)) * float(e[ell:] @ e[:-ell]) / n
    se = math.sqrt(max(variance, 0.0) / n)
    t_stat = (0.0 if mean == 0.0 else math.copysign(math.inf, mean)) if se == 0.0 else mean / se
    p = float(2.0 * stats.t.sf(abs(t_stat), n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return PairedTest("newey_west", n, mean, se, t_stat, p, mean - half, mean + half, lags=lag)


def stationary_bootstrap_test(
    returns: npt.ArrayLike,
    benchmark: npt.ArrayLike | None = None,
    *,
    seed: int,
    n_boot: int = DEFAULT_BOOTSTRAPS,
    mean_block: float | None = None,
) -> PairedTest:
    """Stationary block bootstrap (Politis & Romano, 1994) of the mean per-bar difference.

    Each replicate glues blocks of the (circularly wrapped) differences with uniform random starts and
    geometric lengths of mean ``mean_block``, up to ``n`` values; block sums come from prefix sums, so
    a replicate costs ``O(n / mean_block)``. The p-value is the share of replicate means at least as
    far from the sample mean as the sample mean is from 0 (``(1 + count) / (1 + n_boot)``).
    """
    d = _differences(returns, benchmark)
    n = len(d)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ConfigError(f"n_boot={n_boot!r} must be an integer >= 100", where="n_boot", fix="e.g. 2000")
    block = float(mean_block) if mean_block is not None else max(1.0, n ** (1.0 / 3.0))
    if not 1.0 <= block <= n:
        raise ConfigError(f"mean_block={mean_block!r} must be in [1, {n}]", where="mean_block")
    rng = np.random.default_rng(seed)
    prefix = np.concatenate(([0.0], np.cumsum(np.concatenate((d, d)))))
    p = 1.0 / block
    blocks = int(n / block + 8.0 * math.sqrt(n / block) + 16.0)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, _BOOT_CHUNK):
        m = min(_BOOT_CHUNK, n_boot - lo)
        lengths = rng.geometric(p, size=(m, blocks)).astype(np.int64)
        starts = rng.integers(0, n, size=(m, blocks))
        ends = np.cumsum(lengths, axis=1)
        short = ends[:, -1] < n
        while short.any():  # astronomically rare with this many blocks; extend rather than bias
            more = rng.geometric(p, size=(m, blocks)).astype(np.int64)
            lengths = np.concatenate((lengths, more), axis=1)
            starts = np.concatenate((starts, rng.integers(0, n, size=(m, blocks))), axis=1)
            ends = np.cumsum(lengths, axis=1)
            short = ends[:, -1] < n
        used = np.clip(n - (ends - lengths), 0, lengths)  # the last block is cut at n values
        means[lo : lo + m] = (prefix[starts + used] - prefix[starts]).sum(axis=1) / n
    mean = float(np.mean(d))
    se = float(np.std(means, ddof=1))
    extreme = int(np.count_nonzero(np.abs(means - mean) >= abs(mean)))
    p_value = (1.0 + extreme) / (1.0 + n_boot)
    low, high = (float(x) for x in np.percentile(means, [2.5, 97.5]))
    return PairedTest(
        "stationary_bootstrap",
        n,
        mean,
        se,
        mean / se if se > 0.0 else math.nan,
        p_value,
        low,
        high,
        mean_block=block,
        n_boot=n_boot,
        seed=seed,
    )


def compare_returns(
    returns: npt.ArrayLike,
    benchmark: npt.ArrayLike,
    *,
    method: Literal["newey_west", "stationary_bootstrap"] = "newey_west",
    seed: int = 0,
    **kwargs: float | int | None,
) -> PairedTest:
    """Test a strategy's per-bar returns against a benchmark's (e.g. buy-and-hold) on the same bars."""
    if method == "newey_west":
        lags = kwargs.get("lags")
        return newey_west_test(returns, benchmark, lags=None if lags is None else int(lags))
    if method == "stationary_bootstrap":
        n_boot = kwargs.get("n_boot")
        block = kwargs.get("mean_block")
        return stationary_bootstrap_test(
            returns,
            benchmark,
            seed=seed,
            n_boot=DEFAULT_BOOTSTRAPS if n_boot is None else int(n_boot),
            mean_block=None if block is None else float(block),
        )
    raise ConfigError(
        f"unknown method {method!r}", where="method", fix="use 'newey_west' or 'stationary_bootstrap'"
    )


# --- over backtest results -------------------------------------------------------------------------


def compare_results(
    result: BacktestResult,
    benchmark: BacktestResult,
    *,
    method: Literal["newey_west", "stationary_bootstrap"] = "newey_west",
    seed: int = 0,
    **kwargs: float | int | None,
) -> PairedTest:
    """:func:`compare_returns` of two backtests on the bars they share (per-bar equity returns).

    Raises:
        DataError: fewer than three common bars.
    """
    joined = result.equity.rename("a").to_frame().join(benchmark.equity.rename("b"), how="inner").sort_index()
    returns = (joined / joined.shift(1) - 1.0).iloc[1:]
    if len(returns) < 3:
        raise DataError(
            f"the two backtests share {len(joined)} bar(s)",
            where="compare_results",
            fix="run both over the same span (e.g. the strategy and buy-and-hold on one test split)",
        )
    return compare_returns(
        returns["a"].to_numpy(), returns["b"].to_numpy(), method=method, seed=seed, **kwargs
    )


DEFAULT_TABLE_METRICS: Final = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "trades",
)


def seed_table(
    runs: Mapping[str, Sequence[BacktestResult]],
    metrics: Sequence[str] = DEFAULT_TABLE_METRICS,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean and confidence interval of each metric over the seeds of each named policy.

    Returns one row per ``(policy, metric)`` with ``n``, ``mean``, ``std``, ``low``, ``high`` and
    ``note`` (a policy run with one seed gets no interval, with two an interval that is not meaningful,
    and the note says so). Intervals are clipped to :data:`backtests.metrics.METRIC_BOUNDS`. Non-finite
    metric values (a Sharpe ratio of a flat curve) are left out of that metric's sample.
    """
    import pandas as pd

    from backtests.metrics import METRIC_BOUNDS

    rows = []
    for name, results in runs.items():
        for metric in metrics:
            values = [float(getattr(r.metrics, metric)) for r in results]
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                rows.append((name, metric, 0, math.nan, math.nan, math.nan, math.nan, "no finite value"))
                continue
            s = mean_ci(finite, confidence, bounds=METRIC_BOUNDS.get(metric, UNBOUNDED))
            left_out = len(values) - len(finite)
            note = "; ".join(x for x in (s.note, f"{left_out} non-finite left out" if left_out else "") if x)
            rows.append((name, metric, s.n, s.mean, s.std, s.low, s.high, note))
    return pd.DataFrame(rows, columns=["policy", "metric", "n", "mean", "std", "low", "high", "note"])
