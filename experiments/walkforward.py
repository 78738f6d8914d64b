"""Walk-forward evaluation: train on a window, test out of sample on the window after it, and stitch.

:func:`plan_windows` cuts rows ``[first, stop)`` into ``windows + 1`` equal blocks (the remainder goes
to the last test block). Window ``i`` tests on block ``i + 1``; its training part ends ``embargo`` bars
before that block and starts one block earlier (``rolling``) or at ``first`` (``expanding``). So for
every window ``train.end + embargo <= test.start``: no training bar is within ``embargo`` bars of its
test window, and no test bar is ever trained on by its own window.

:func:`run_walkforward` trains every window with :func:`experiments.train.train` (the last
``validation_share`` of the training part is its validation split; normalization is fitted on the rest
only), backtests each trained run on its test block with :func:`experiments.backtest.backtest_run`, and
aggregates: a per-window table, the stitched out-of-sample equity curve per seed (test-block returns
chained), its metrics, and mean / 95% CI over seeds. :func:`write_walkforward` writes
``walkforward.md``, ``walkforward.csv``, ``walkforward.json`` and ``walkforward_equity.png``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
import pandas as pd

from envs.errors import ConfigError, StateError

if TYPE_CHECKING:
    from backtests.results import BacktestResult
    from experiments.config import RunConfig, WalkForwardConfig

__all__ = [
    "WalkForward",
    "Window",
    "min_training_bars",
    "plan_windows",
    "run_walkforward",
    "write_walkforward",
]

FILES: Final = {
    "markdown": "walkforward.md",
    "csv": "walkforward.csv",
    "json": "walkforward.json",
    "equity": "walkforward_equity.png",
}
AGG_METRICS: Final = ("total_return", "cagr", "sharpe", "max_drawdown", "trades")


class Window(NamedTuple):
    """One walk-forward window: rows ``[start, end)`` of its training part and of its test block."""

    number: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def plan_windows(
    first: int, stop: int, windows: int, mode: str, embargo: int, *, min_train: int = 2
) -> list[Window]:
    """The windows over rows ``[first, stop)`` (see the module docstring).

    Args:
        min_train: the fewest bars a training part may have (see :func:`min_training_bars`).

    Raises:
        ConfigError: a bad mode, or too few bars for that many windows and that embargo.
    """
    if mode not in ("rolling", "expanding"):
        raise ConfigError(f"unknown mode {mode!r}", where="walkforward.mode", fix="use rolling or expanding")
    if windows < 1 or embargo < 0:
        raise ConfigError(
            f"windows={windows}, embargo={embargo}", where="walkforward", fix="windows >= 1, embargo >= 0"
        )
    bars = stop - first
    block = bars // (windows + 1)
    if block - embargo < max(min_train, 2):
        need = max(min_train, 2) + embargo
        most = bars // need - 1
        fewer = f"use at most {most} windows, " if most >= 1 else ""
        raise ConfigError(
            f"{bars} bars cut into {windows + 1} blocks of {block} bars leave each window "
            f"{max(block - embargo, 0)} bars to train on after the embargo of {embargo} bars: too few, "
            f"each block needs at least {need} bars ({max(min_train, 2)} to train and validate on, plus "
            "the embargo)",
            where="--windows (walkforward.windows)",
            fix=f"{fewer}a shorter --embargo or env.episode_length, or more data",
        )
    out = []
    for i in range(windows):
        test_start = first + (i + 1) * block
        test_end = stop if i == windows - 1 else test_start + block
        train_end = test_start - embargo
        train_start = first if mode == "expanding" else test_start - block
        out.append(Window(i, train_start, train_end, test_start, test_end))
    return out


def min_training_bars(lead: int, episode_length: int | None, validation_share: float) -> int:
    """The fewest bars a window's training part needs.

    Its training split (the part before the last ``validation_share``, at least 2 bars) must leave one
    episode of steps (one step without an episode length) after ``lead`` rows that come before the first
    observation (feature warm-up and observation window, where they overlap the part), as
    :func:`experiments.train.prepare_data` requires.
    """
    need = episode_length or 1
    n = need + lead + 1
    while n - max(round(n * validation_share), 2) - 1 - lead < need:
        n += 1
    return n


@dataclass
class WalkForward:
    """Everything a walk-forward produced.

    Attributes:
        windows: the planned windows.
        table: one row per (window, seed): rows, dates, the run directory and its test metrics.
        results: seed -> the test-block backtests, in window order.
        stitched: seed -> stitched out-of-sample equity curve (starts at the initial cash).
        aggregate: metric -> {n, mean, low, high, note} over seeds of the stitched curves' metrics.
        settings: mode, embargo, windows, seeds, timesteps.
    """

    windows: list[Window]
    table: pd.DataFrame
    results: dict[int, list[BacktestResult]]
    stitched: dict[int, pd.Series]
    aggregate: dict[str, dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)


def _iso(times: np.ndarray[Any, Any], row: int) -> str:
    """The time of ``row`` (``len(times)``: just after the last bar), as an ISO string."""
    ns = int(times[row]) if row < len(times) else int(times[-1]) + 1
    return str(pd.Timestamp(ns, unit="ns", tz="UTC").isoformat())


def _window_config(
    config: RunConfig, window: Window, times: np.ndarray[Any, Any], wf: WalkForwardConfig
) -> RunConfig:
    """The run config of one window: date-range splits train | validation | test with the embargo."""
    from experiments.config import apply_overrides

    n_train = window.train_end - window.train_start
    val_start = window.train_end - max(round(n_train * wf.validation_share), 2)
    # The validation split follows the training split directly and ends `embargo` bars before the test
    # block; the embargo between train and validation is 0 because both lie in the training part.
    splits = {
        "train": [_iso(times, window.train_start), _iso(times, val_start)],
        "validation": [_iso(times, val_start), _iso(times, window.train_end)],
        "test": [_iso(times, window.test_start), _iso(times, window.test_end)],
        "embargo": 0,
    }
    return apply_overrides(
        config,
        {
            "name": f"{config.name}-w{window.number}",
            "data.splits": splits,
            "walkforward": None,
            "ablation": None,
        },
        source="walk-forward",
    )


def _check_free(configs: Sequence[RunConfig], runs_dir: Path, name: str) -> None:
    """Refuse, before anything trains, a window run directory that already holds a run."""
    from experiments.runs import run_dir_for

    for cfg in configs:
        for arm, arm_cfg in cfg.arms():
            for seed in arm_cfg.train.seeds:
                run_dir = run_dir_for(runs_dir, cfg.name, arm, arm_cfg.algo.algo.value, seed)
                if run_dir.exists() and any(run_dir.iterdir()):
                    raise StateError(
                        "the window's run directory already holds a run (from an earlier walk-forward)",
                        where=str(run_dir),
                        fix=f"give another --runs-dir, or remove the earlier window directories "
                        f"({runs_dir / name}-w*)",
                    )


def _stitch(results: Sequence[BacktestResult], initial: float) -> pd.Series:
    """Chain the test blocks' per-bar returns into one equity curve starting at ``initial``."""
    parts = [r.returns for r in results]
    returns = pd.concat(parts).sort_index()
    returns = returns[~returns.index.duplicated(keep="first")]
    first_time = results[0].curve.index[0]
    equity = initial * (1.0 + returns).cumprod()
    return pd.concat([pd.Series([initial], index=[first_time]), equity]).rename("equity")


def run_walkforward(
    config: RunConfig,
    *,
    runs_dir: Path,
    windows: int | None = None,
    mode: str | None = None,
    embargo: int | None = None,
    timesteps: int | None = None,
    seeds: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> WalkForward:
    """Train and test every window (see the module docstring); arguments override ``config.walkforward``.

    Raises:
        ConfigError: bad settings, or too little data for the windows.
    """
    from backtests.metrics import METRIC_BOUNDS, compute_metrics
    from backtests.stats import UNBOUNDED, mean_ci
    from experiments.backtest import _row, backtest_run
    from experiments.config import WalkForwardConfig, apply_overrides
    from experiments.train import prepare_data, train

    wf = config.walkforward or WalkForwardConfig()
    updates: dict[str, Any] = {}
    if windows is not None:
        updates["windows"] = windows
    if mode is not None:
        updates["mode"] = mode
    if embargo is not None:
        updates["embargo"] = embargo
    if updates:
        try:
            wf = WalkForwardConfig.model_validate({**wf.model_dump(), **updates})
        except ValueError as exc:
            raise ConfigError(str(exc).splitlines()[0], where="walkforward", fix="see --help") from None
    overrides: dict[str, Any] = {"ablation": None}
    if timesteps is not None:
        overrides["train.timesteps"] = timesteps
    if seeds is not None:
        overrides["train.seeds"] = list(seeds)
    base = apply_overrides(config, overrides, source="command line")
    prepared = prepare_data(base)
    md = prepared.market
    first = 0 if base.data.start is None else _row(md.time_ns, base.data.start, "data.start")
    stop = len(md) if base.data.end is None else _row(md.time_ns, base.data.end, "data.end")
    # The first window's training part starts at `first`, so it is the one the warm-up eats into.
    lead = max(md.features.warmup + base.env.window - 1 - first, 0)
    min_train = min_training_bars(lead, base.env.episode_length, wf.validation_share)
    plan = plan_windows(first, stop, wf.windows, str(wf.mode), wf.embargo, min_train=min_train)
    configs = [_window_config(base, window, md.time_ns, wf) for window in plan]
    _check_free(configs, runs_dir, base.name)
    rows = []
    results: dict[int, list[BacktestResult]] = {s: [] for s in base.train.seeds}
    for window, cfg in zip(plan, configs, strict=True):
        if progress is not None:
            progress(f"window {window.number + 1}/{len(plan)}: training")
        trained = train(cfg, runs_dir=runs_dir)
        for run in trained:
            seed = run.config.train.seeds[0]
            if progress is not None:
                progress(f"window {window.number + 1}/{len(plan)}: testing seed {seed}")
            bt = backtest_run(run.run_dir, split="test")
            try:
                result = bt.result
            finally:
                bt.close()
            info = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
            train_rows = info["splits"]["train"]["rows"]
            val_rows = info["splits"]["validation"]["rows"]
            test_rows = info["splits"]["test"]["rows"]
            m = result.metrics
            rows.append(
                {
                    "window": window.number,
                    "seed": seed,
                    "train_first": info["splits"]["train"]["first"],
                    "train_last": info["splits"]["validation"]["last"],
                    "test_first": info["splits"]["test"]["first"],
                    "test_last": info["splits"]["test"]["last"],
                    "train_rows": f"{train_rows[0]}..{val_rows[1]}",
                    "test_rows": f"{test_rows[0]}..{test_rows[1]}",
                    "total_return": m.total_return,
                    "sharpe": m.sharpe,
                    "max_drawdown": m.max_drawdown,
                    "trades": m.trades,
                    "run_dir": str(run.run_dir),
                }
            )
            results[seed].append(result)
    initial = base.env.initial_cash
    stitched = {seed: _stitch(rs, initial) for seed, rs in results.items()}
    per_seed = {seed: compute_metrics(curve) for seed, curve in stitched.items()}
    aggregate: dict[str, dict[str, Any]] = {}
    for metric in AGG_METRICS:
        if metric == "trades":  # the stitched curve has no journal: count the windows' trades
            values = [float(sum(r.metrics.trades for r in rs)) for rs in results.values()]
        else:
            values = [float(getattr(m, metric)) for m in per_seed.values()]
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            aggregate[metric] = {"n": 0, "mean": math.nan, "low": math.nan, "high": math.nan, "note": "n/a"}
            continue
        s = mean_ci(finite, bounds=METRIC_BOUNDS.get(metric, UNBOUNDED))
        aggregate[metric] = {"n": s.n, "mean": s.mean, "low": s.low, "high": s.high, "note": s.note}
    return WalkForward(
        windows=plan,
        table=pd.DataFrame(rows),
        results=results,
        stitched=stitched,
        aggregate=aggregate,
        settings={
            "mode": str(wf.mode),
            "windows": wf.windows,
            "embargo": wf.embargo,
            "validation_share": wf.validation_share,
            "seeds": list(base.train.seeds),
            "timesteps": base.train.timesteps,
        },
    )


def _fmt(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if metric in ("total_return", "cagr", "max_drawdown"):
        return f"{value:+.2%}"
    return f"{value:.3f}"


def write_walkforward(wf: WalkForward, out_dir: str | Path) -> dict[str, Path]:
    """Write the per-window table (CSV, Markdown), the aggregate (JSON) and the stitched equity (PNG)."""
    from backtests.plots import _figure, _png
    from experiments.compare import interval_cell

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in FILES.items()}
    wf.table.to_csv(paths["csv"], index=False)
    fig, ax = _figure()
    for seed, curve in wf.stitched.items():
        ax.plot(curve.index, curve.to_numpy(), lw=1.0, label=f"seed {seed}")
    for w in wf.windows[1:]:
        start = wf.table.loc[wf.table["window"] == w.number, "test_first"]
        if len(start):
            ax.axvline(pd.Timestamp(start.iloc[0]), color="#999", lw=0.6, ls="--")  # type: ignore[arg-type]
    ax.set_title("Stitched out-of-sample equity (test blocks chained; dashed: window starts)")
    ax.legend(loc="best", fontsize=7)
    _png(fig, paths["equity"])
    agg_lines = []
    for metric, a in wf.aggregate.items():
        if a["n"] == 0:
            cell = "n/a"
        else:
            low, high = _fmt(metric, a["low"]), _fmt(metric, a["high"])
            cell = interval_cell(a["n"], _fmt(metric, a["mean"]), low, high)
        agg_lines.append(f"| {metric} | {cell} |")
    cols = [
        "window",
        "seed",
        "train_first",
        "train_last",
        "test_first",
        "test_last",
        "total_return",
        "sharpe",
    ]
    table = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in wf.table.iterrows():
        cells = [_fmt(c, float(row[c])) if c in ("total_return", "sharpe") else str(row[c]) for c in cols]
        table.append("| " + " | ".join(cells) + " |")
    s = wf.settings
    md = [
        "# Walk-forward (out of sample)",
        "",
        f"{s['windows']} windows, {s['mode']}, embargo {s['embargo']} bars, seeds {s['seeds']}, "
        f"{s['timesteps']} timesteps per run. Each window trains (and fits its normalization) on its "
        "training part only and is tested on the block after it.",
        "",
        "## Stitched out-of-sample metrics (mean [95% CI] over seeds)",
        "",
        "Student-t intervals, clipped to the values a metric can take (trades >= 0, max drawdown <= 0); "
        "fewer than 3 seeds give no interval.",
        "",
        "| metric | value |",
        "|---|---|",
        *agg_lines,
        "",
        "## Windows",
        "",
        *table,
        "",
        f"![stitched equity]({FILES['equity']})",
        "",
    ]
    paths["markdown"].write_text("\n".join(md), encoding="utf-8")
    summary = {
        "settings": wf.settings,
        "windows": [w._asdict() for w in wf.windows],
        "aggregate": wf.aggregate,
        "final_equity": {str(seed): float(c.iloc[-1]) for seed, c in wf.stitched.items()},
    }
    paths["json"].write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return paths
