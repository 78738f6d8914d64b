"""Compare trained policies and baselines on the same test split, honestly: over seeds, with intervals.

:func:`compare_runs` finds the run directories under the given paths, groups them by arm
(``<experiment>/<arm>/<algo>``, e.g. ``demo/learning/ppo``; one run per seed), refuses runs whose data
or test split differ from the first run's, backtests every run on its test split (the learning manager
frozen for runs trained with it, see :mod:`experiments.backtest`) and the baselines on the same bars, and
computes per arm:

* mean and 95% Student-t interval over seeds of return, CAGR, Sharpe, Sortino, max drawdown, win rate
  and trades, clipped to the values each metric can take (win rate 0..100%, trades >= 0, drawdown
  <= 0); one seed shows ``n=1, no interval`` and two seeds ``n=2, too few seeds for an interval`` (a
  two-sample t-interval spans +-12.7 standard errors; it is kept in the CSV and JSON with that note);
* the probabilistic Sharpe ratio (``P(true SR > 0)``) of each seed, averaged;
* the deflated Sharpe ratio of the arm's best seed, with ``n_trials`` = every (arm, seed) backtest of the
  comparison (policies and baselines) and the variance of all their per-bar Sharpe ratios;
* a Newey-West test of the per-bar returns against buy-and-hold on the same bars: of the arm's
  seed-averaged returns (an equal-weight ensemble of its seeds), plus how many seeds alone are
  significant at 5%.

Deterministic baselines (buy-and-hold, flat, SMA crossover) have one result; ``random`` runs with the
runs' seeds; ``learned_weights`` with each learning run's snapshot (one per seed).

:func:`write_comparison` writes ``comparison.md``, ``comparison.csv`` (long format: one row per arm and
metric), ``comparison.html`` (self-contained, plots embedded) and the plots ``equity_bands.png`` (equity
per arm, seed-mean line and min-max band over seeds) and ``sharpe_ci.png`` (mean Sharpe with its
interval).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from backtests.results import BacktestResult
from envs.errors import ConfigError, DataError, StateError

if TYPE_CHECKING:
    from experiments.config import RunConfig
    from experiments.train import PreparedData
    from learning.state import LearnedState

__all__ = [
    "DEFAULT_BASELINES",
    "ArmStats",
    "Comparison",
    "compare_runs",
    "discover_runs",
    "interval_cell",
    "summarize",
    "write_comparison",
]

DEFAULT_BASELINES: Final = ("buy_and_hold", "flat", "random", "sma_crossover", "learned_weights")
BENCHMARK: Final = "buy_and_hold"
TABLE_METRICS: Final = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "trades")
_PERCENT: Final = frozenset({"total_return", "cagr", "max_drawdown", "win_rate"})
_LABELS: Final = {
    "total_return": "return",
    "cagr": "CAGR",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "max DD",
    "win_rate": "win rate",
    "trades": "trades",
}
ALPHA: Final = 0.05
CONFIDENCE: Final = 0.95
FILES: Final = {
    "markdown": "comparison.md",
    "html": "comparison.html",
    "csv": "comparison.csv",
    "json": "comparison.json",
    "equity": "equity_bands.png",
    "sharpe": "sharpe_ci.png",
}


@dataclass
class ArmStats:
    """What one arm (or baseline) scored over its seeds.

    Attributes:
        name: the arm (``demo/learning/ppo``) or baseline name.
        kind: ``"policy"`` or ``"baseline"``.
        seeds: seed of each result.
        psr: probabilistic Sharpe ratio (vs 0) of each seed (NaN for a constant curve).
        dsr: deflated Sharpe ratio of the best seed (NaN when undefined).
        test: Newey-West test of the seed-averaged returns against buy-and-hold (``None``: this is
            buy-and-hold, or there is none).
        significant_seeds: seeds whose own returns differ from buy-and-hold at 5%.
    """

    name: str
    kind: str
    seeds: list[int]
    psr: list[float] = field(default_factory=list)
    dsr: float = math.nan
    test: Any = None
    significant_seeds: int = 0


@dataclass
class Comparison:
    """Every backtest of a comparison and its statistics.

    Attributes:
        results: arm or baseline name -> one result per seed.
        stats: arm or baseline name -> :class:`ArmStats`.
        table: :func:`backtests.stats.seed_table` of :data:`TABLE_METRICS` (long format).
        n_trials: backtests the deflated Sharpe ratio counts as trials.
        split: the test split's rows and first/last bar times.
        data: the data reference (dataset, rows, digest).
        runs: run directory of each (arm, seed).
        notes: what was skipped and why.
    """

    results: dict[str, list[BacktestResult]]
    stats: dict[str, ArmStats]
    table: pd.DataFrame
    n_trials: int
    split: dict[str, Any]
    data: dict[str, Any]
    runs: dict[str, dict[int, str]]
    notes: list[str] = field(default_factory=list)


# --- discovery -------------------------------------------------------------------------------------


def discover_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Every run directory at or below each path (a run directory itself, or a parent of several).

    Raises:
        StateError: a path that does not exist or holds no run directory.
    """
    from experiments.runs import find_runs

    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise StateError("no such directory", where=str(path), fix="give run directories or their parent")
        runs = [r for r in find_runs(path) if (r / "run.json").is_file()]
        if not runs:
            raise StateError(
                "holds no run directory (no config.yaml with run.json below it)",
                where=str(path),
                fix="give a directory written by `slf train`, e.g. runs/<name>",
            )
        found.extend(r for r in runs if r not in found)
    return found


def _arm_of(config: RunConfig, run_dir: Path) -> str:
    from experiments.config import arm_name

    arm = run_dir.parent.name if run_dir.parent.name in (arm_name(True), arm_name(False)) else None
    parts = [config.name, *([arm] if arm else []), config.algo.algo.value]
    return "/".join(parts)


def _check_same_data(infos: Mapping[Path, Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shared data reference and test split, or :class:`ConfigError` naming the mismatching runs."""
    first_dir, first = next(iter(infos.items()))
    for run_dir, info in infos.items():
        for key, what in (("data", "data"), ("splits", "test split")):
            a = first[key] if key == "data" else first[key]["test"]
            b = info[key] if key == "data" else info[key]["test"]
            if key == "data":
                a = {k: a.get(k) for k in ("digest", "symbol", "rows")}
                b = {k: b.get(k) for k in ("digest", "symbol", "rows")}
            if a != b:
                raise ConfigError(
                    f"the runs' {what} differ: {first_dir} has {a}, {run_dir} has {b}",
                    where="slf compare",
                    fix="compare runs trained on the same data with the same test split "
                    "(same data and data.splits in their configs)",
                )
    return dict(first["data"]), dict(first["splits"]["test"])


# --- statistics ------------------------------------------------------------------------------------


def _returns(result: BacktestResult) -> pd.Series:
    return result.returns.astype(np.float64)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _psr(result: BacktestResult) -> float:
    from backtests.stats import probabilistic_sharpe_ratio

    try:
        return probabilistic_sharpe_ratio(_returns(result).to_numpy())
    except DataError:
        return math.nan


def _sharpe(result: BacktestResult) -> float:
    from backtests.stats import sharpe_ratio

    try:
        return sharpe_ratio(_returns(result).to_numpy())
    except DataError:
        return math.nan


def _mean_returns(results: Sequence[BacktestResult]) -> pd.Series:
    frame = pd.concat([_returns(r).rename(i) for i, r in enumerate(results)], axis=1, join="inner")
    return frame.mean(axis=1)


def summarize(results: Mapping[str, Sequence[BacktestResult]], kinds: Mapping[str, str]) -> Comparison:
    """Statistics of a set of results per arm (see the module docstring); nothing is run."""
    from backtests.stats import compare_returns, deflated_sharpe_ratio, seed_table

    table = seed_table(results, TABLE_METRICS, CONFIDENCE)
    n_trials = sum(len(rs) for rs in results.values())
    trial_sharpes = _finite([_sharpe(r) for rs in results.values() for r in rs])
    bench = results.get(BENCHMARK)
    bench_returns = _returns(bench[0]) if bench else None
    stats: dict[str, ArmStats] = {}
    for name, rs in results.items():
        s = ArmStats(
            name=name,
            kind=kinds.get(name, "policy"),
            seeds=[int(r.meta.get("seed", i)) for i, r in enumerate(rs)],
            psr=[_psr(r) for r in rs],
        )
        sharpes = [_sharpe(r) for r in rs]
        if _finite(sharpes) and len(trial_sharpes) >= 2:
            best = rs[int(np.nanargmax(np.asarray(sharpes, dtype=np.float64)))]
            try:
                s.dsr = deflated_sharpe_ratio(
                    _returns(best).to_numpy(), max(n_trials, 1), trial_sharpes=trial_sharpes
                ).dsr
            except DataError:
                s.dsr = math.nan
        if bench_returns is not None and name != BENCHMARK:
            joined = pd.concat(
                [_mean_returns(rs).rename("a"), bench_returns.rename("b")], axis=1, join="inner"
            )
            try:
                s.test = compare_returns(joined["a"].to_numpy(), joined["b"].to_numpy())
            except DataError:
                s.test = None
            for r in rs:
                pair = pd.concat([_returns(r).rename("a"), bench_returns.rename("b")], axis=1, join="inner")
                try:
                    if compare_returns(pair["a"].to_numpy(), pair["b"].to_numpy()).p_value < ALPHA:
                        s.significant_seeds += 1
                except DataError:
                    pass
        stats[name] = s
    return Comparison(
        results=dict((k, list(v)) for k, v in results.items()),
        stats=stats,
        table=table,
        n_trials=n_trials,
        split={},
        data={},
        runs={},
    )


# --- running ---------------------------------------------------------------------------------------


def compare_runs(
    paths: Sequence[str | Path],
    *,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Backtest every run under ``paths`` and the ``baselines`` on the same test split.

    Args:
        paths: run directories, or parents of several (e.g. ``runs/demo``).
        baselines: baseline names (see :data:`DEFAULT_BASELINES`).
        progress: called with a label before each backtest.

    Raises:
        StateError: a path without runs, or unfinished runs.
        ConfigError: runs whose data or test split differ; two runs of one arm with the same seed; an
            unknown baseline.
    """
    from experiments.backtest import backtest_baseline, backtest_run, check_baseline, load_run
    from experiments.runs import read_json
    from experiments.train import prepare_data

    for name in baselines:
        check_baseline(name)
    run_dirs = discover_runs(paths)
    configs: dict[Path, RunConfig] = {}
    infos: dict[Path, dict[str, Any]] = {}
    for run_dir in run_dirs:
        configs[run_dir] = load_run(run_dir)[0]
        infos[run_dir] = read_json(run_dir / "run.json")
    data_ref, test_split = _check_same_data(infos)

    arms: dict[str, dict[int, Path]] = {}
    for run_dir, config in configs.items():
        arm = _arm_of(config, run_dir)
        seed = config.train.seeds[0]
        other = arms.setdefault(arm, {}).get(seed)
        if other is not None:
            raise ConfigError(
                f"two runs of arm {arm!r} with seed {seed}: {other} and {run_dir}",
                where="slf compare",
                fix="give each run directory once (or the parent of both, not both)",
            )
        arms[arm][seed] = run_dir

    prepared_cache: dict[str, PreparedData] = {}

    def prepared_for(config: RunConfig) -> PreparedData:
        key = json.dumps(
            [config.data.model_dump(mode="json"), config.features.model_dump(mode="json")], sort_keys=True
        )
        if key not in prepared_cache:
            prepared_cache[key] = prepare_data(config)
        return prepared_cache[key]

    results: dict[str, list[BacktestResult]] = {}
    kinds: dict[str, str] = {}
    learned_states: list[tuple[int, LearnedState]] = []
    for arm in sorted(arms):
        kinds[arm] = "policy"
        for seed in sorted(arms[arm]):
            run_dir = arms[arm][seed]
            if progress is not None:
                progress(f"{arm} seed {seed}")
            bt = backtest_run(run_dir, split="test", prepared=prepared_for(configs[run_dir]))
            try:
                results.setdefault(arm, []).append(bt.result)
                if bt.state is not None and configs[run_dir].learning.enabled:
                    learned_states.append((seed, bt.state))
            finally:
                bt.close()

    notes: list[str] = []
    reference_dir = run_dirs[0]
    reference = configs[reference_dir]
    seeds = sorted({s for by_seed in arms.values() for s in by_seed})
    for name in baselines:
        kinds[name] = "baseline"
        if name == "learned_weights":
            if not learned_states:
                notes.append("learned_weights skipped: no run trained with the learning manager")
                kinds.pop(name)
                continue
            runs_for: list[tuple[int, LearnedState | None]] = list(learned_states)
        elif name == "random":
            runs_for = [(seed, None) for seed in seeds]
        else:
            runs_for = [(0, None)]
        for seed, state in runs_for:
            if progress is not None:
                progress(f"{name} seed {seed}")
            result = backtest_baseline(
                name,
                config=reference,
                split="test",
                seed=seed,
                learned_state=state,
                prepared=prepared_for(reference),
            )
            results.setdefault(name, []).append(result)
    if BENCHMARK not in results:
        notes.append("no buy_and_hold in the baselines: no significance test")
    comparison = summarize(results, kinds)
    comparison.split = test_split
    comparison.data = data_ref
    comparison.runs = {arm: {s: str(p) for s, p in by_seed.items()} for arm, by_seed in arms.items()}
    comparison.notes = notes
    return comparison


# --- output ----------------------------------------------------------------------------------------


def _fmt(metric: str, x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if metric in _PERCENT:
        return f"{x:+.2%}" if metric in ("total_return", "cagr") else f"{x:.2%}"
    if metric == "trades":
        return f"{x:.1f}"
    return f"{x:.3f}"


def interval_cell(n: int, mean: str, low: str, high: str) -> str:
    """``mean [low, high]``, or the mean and why there is no interval (fewer than 3 seeds)."""
    from backtests.stats import MIN_INTERVAL_SAMPLES

    if n == 1:
        return f"{mean} (n=1, no interval)"
    if n < MIN_INTERVAL_SAMPLES:
        return f"{mean} (n={n}, too few seeds for an interval)"
    return f"{mean} [{low}, {high}]"


def _cell(row: Any, metric: str) -> str:
    n = int(row["n"])
    if n == 0:
        return "n/a"
    return interval_cell(
        n,
        _fmt(metric, float(row["mean"])),
        _fmt(metric, float(row["low"])),
        _fmt(metric, float(row["high"])),
    )


def _p(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (one row per arm or baseline)."""
    header = [
        "policy",
        "kind",
        "seeds",
        *(_LABELS[m] for m in TABLE_METRICS),
        "PSR (mean)",
        "DSR (best seed)",
        "vs buy&hold: t, p",
        "seeds p<0.05",
    ]
    rows = []
    table = comparison.table.set_index(["policy", "metric"])
    for name, s in comparison.stats.items():
        cells = [_cell(table.loc[(name, m)], m) for m in TABLE_METRICS]
        psr = _finite(s.psr)
        test = "-" if s.test is None else f"{s.test.statistic:+.2f}, p={s.test.p_value:.3f}"
        sig = "-" if s.test is None else f"{s.significant_seeds}/{len(s.seeds)}"
        rows.append(
            [
                name,
                s.kind,
                str(len(s.seeds)),
                *cells,
                _p(float(np.mean(psr))) if psr else "n/a",
                _p(s.dsr),
                test,
                sig,
            ]
        )
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _explanation(comparison: Comparison) -> list[str]:
    split = comparison.split
    data = comparison.data
    return [
        f"Test split: rows {split.get('rows')} ({split.get('first')} .. {split.get('last')}) of "
        f"{data.get('dataset') or data.get('path')} ({data.get('symbol')}), strictly out of sample.",
        "Cells: mean over seeds [95% Student-t confidence interval, clipped to the values the metric can "
        "take: win rate 0..100%, trades >= 0, max drawdown <= 0]. Fewer than 3 seeds give no interval "
        "(with 2 seeds it would span +-12.7 standard errors; the CSV keeps it with a note).",
        "PSR: probability that the true per-bar Sharpe ratio exceeds 0 (mean over seeds). "
        f"DSR: the best seed's PSR against the Sharpe ratio the best of {comparison.n_trials} unskilled "
        "trials (every policy/baseline x seed backtested here) would reach by luck.",
        "vs buy&hold: Newey-West HAC t-test of the per-bar return difference of the arm's seed-averaged "
        "returns against buy-and-hold on the same bars (two-sided); seeds p<0.05 counts seeds that are "
        "significant on their own.",
    ]


def _equity_png(comparison: Comparison, path: Path | None) -> bytes:
    from backtests.plots import _figure, _png

    fig, ax = _figure()
    colors = [f"C{i % 10}" for i in range(len(comparison.results))]
    for color, (name, rs) in zip(colors, comparison.results.items(), strict=True):
        frame = pd.concat(
            [(r.equity / r.equity.iloc[0]).rename(i) for i, r in enumerate(rs)], axis=1, join="outer"
        ).ffill()
        mean = frame.mean(axis=1)
        ax.plot(mean.index, mean.to_numpy(), color=color, lw=1.1, label=f"{name} (n={len(rs)})")
        if len(rs) > 1:
            ax.fill_between(
                frame.index,
                frame.min(axis=1).to_numpy(),
                frame.max(axis=1).to_numpy(),
                color=color,
                alpha=0.18,
            )
    ax.set_title("Equity on the test split (mean over seeds, band: min-max over seeds)")
    ax.set_ylabel("equity / initial")
    ax.legend(loc="best", fontsize=7)
    return _png(fig, path)


def _sharpe_png(comparison: Comparison, path: Path | None) -> bytes:
    from backtests.plots import _figure, _png
    from backtests.stats import MIN_INTERVAL_SAMPLES

    fig, ax = _figure()
    table = comparison.table[comparison.table["metric"] == "sharpe"].set_index("policy")
    names = list(comparison.stats)
    means = table.loc[names, "mean"].to_numpy(dtype=np.float64)
    low = table.loc[names, "low"].to_numpy(dtype=np.float64)
    high = table.loc[names, "high"].to_numpy(dtype=np.float64)
    counts = table.loc[names, "n"].to_numpy(dtype=np.int64)
    has_ci = np.isfinite(low) & np.isfinite(high) & (counts >= MIN_INTERVAL_SAMPLES)
    err = np.vstack([np.where(has_ci, means - low, 0.0), np.where(has_ci, high - means, 0.0)])
    x = np.arange(len(names))
    colors = ["#1f5fa8" if comparison.stats[n].kind == "policy" else "#8a8a8a" for n in names]
    ax.bar(x, np.nan_to_num(means), color=colors, yerr=np.nan_to_num(err), capsize=4)
    for i, ok in enumerate(has_ci):
        if not ok:
            label = f"n={counts[i]}"
            ax.annotate(label, (x[i], np.nan_to_num(means[i])), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=7)
    ax.axhline(0.0, color="#444", lw=0.8)
    ax.set_title(f"Annualized Sharpe ratio: mean over seeds with 95% CI (n >= {MIN_INTERVAL_SAMPLES})")
    return _png(fig, path)


def _csv(comparison: Comparison) -> pd.DataFrame:
    rows = [comparison.table]
    extra = []
    for name, s in comparison.stats.items():
        psr = _finite(s.psr)
        for metric, value in (
            ("psr", float(np.mean(psr)) if psr else math.nan),
            ("dsr", s.dsr),
            ("nw_t_vs_buy_and_hold", math.nan if s.test is None else s.test.statistic),
            ("nw_p_vs_buy_and_hold", math.nan if s.test is None else s.test.p_value),
        ):
            extra.append((name, metric, len(s.seeds), value, math.nan, math.nan, math.nan, ""))
    rows.append(pd.DataFrame(extra, columns=list(comparison.table.columns)))
    out = pd.concat(rows, ignore_index=True)
    out.insert(1, "kind", [comparison.stats[p].kind for p in out["policy"]])
    return out


def write_comparison(
    comparison: Comparison, out_dir: str | Path, *, save_results: bool = True
) -> dict[str, Path]:
    """Write the comparison's Markdown, HTML, CSV, JSON and plots (and each backtest) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in FILES.items()}
    header, rows = table_rows(comparison)
    explanation = _explanation(comparison)
    equity_png = _equity_png(comparison, paths["equity"])
    sharpe_png = _sharpe_png(comparison, paths["sharpe"])
    md = [
        "# Comparison on the test split",
        "",
        *(f"- {line}" for line in explanation),
        *(f"- Note: {note}" for note in comparison.notes),
        "",
        _markdown(header, rows),
        "",
        f"![equity]({FILES['equity']})",
        "",
        f"![sharpe]({FILES['sharpe']})",
        "",
        "## Runs",
        "",
        *(
            f"- `{arm}` seed {seed}: `{run}`"
            for arm, by_seed in comparison.runs.items()
            for seed, run in sorted(by_seed.items())
        ),
        "",
    ]
    paths["markdown"].write_text("\n".join(md), encoding="utf-8")
    _csv(comparison).to_csv(paths["csv"], index=False)
    paths["html"].write_text(
        _html(comparison, header, rows, explanation, equity_png, sharpe_png), encoding="utf-8"
    )
    summary = {
        "data": comparison.data,
        "split": comparison.split,
        "n_trials": comparison.n_trials,
        "runs": comparison.runs,
        "notes": comparison.notes,
        "table": [dict(zip(header, row, strict=True)) for row in rows],
    }
    paths["json"].write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    if save_results:
        for name, rs in comparison.results.items():
            for r in rs:
                r.save(out / "backtests" / name.replace("/", "_") / f"seed{r.meta.get('seed', 0)}")
    return paths


_CSS: Final = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1250px;"
    "color:#222;padding:0 1em}table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid "
    "#d5d5d5;padding:4px 8px;font-size:13px;text-align:right}th{background:#f3f5f7}td:first-child,"
    "th:first-child{text-align:left}img{max-width:100%;display:block;margin:.4em 0 1em}li{font-size:13px}"
)


def _html(
    comparison: Comparison,
    header: list[str],
    rows: list[list[str]],
    explanation: list[str],
    equity_png: bytes,
    sharpe_png: bytes,
) -> str:
    esc = html.escape

    def img(png: bytes, alt: str) -> str:
        return f"<img alt='{esc(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"

    table = (
        "<table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
        + "</table>"
    )
    return "\n".join(
        [
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Comparison</title>",
            f"<style>{_CSS}</style></head><body>",
            "<h1>Comparison on the test split</h1>",
            "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in [*explanation, *comparison.notes]) + "</ul>",
            table,
            "<h2>Equity</h2>",
            img(equity_png, "equity per arm with seed bands"),
            "<h2>Sharpe ratio</h2>",
            img(sharpe_png, "Sharpe ratio with confidence intervals"),
            "</body></html>",
        ]
    )
