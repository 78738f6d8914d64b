"""``slf demo``: the whole story on bundled data in a few minutes.

1. Train PPO on EUR/USD hourly bars twice with the same seed: with the learning manager beside it and
   without (the shipped ``ablation_ppo_eurusd_1h.yaml`` with a smaller budget).
2. Evaluate both arms (the model each arm selected on the validation split) and the baselines
   (buy-and-hold, flat, random, SMA crossover, and the learned-weights signal from the learning arm's
   strategy weights) on the held-out test split.
3. Write ``report.md`` and ``equity.png`` (when matplotlib is installed) into the demo directory, print
   the comparison table, where everything is, and how to open TensorBoard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console
from rich.table import Table

from agents.baselines import make_baseline
from experiments.config import ARM_LEARNING, ARM_NO_LEARNING, RunConfig, apply_overrides, load_config
from experiments.evaluate import EvaluationResult, Metrics, metrics_table, report_console, run_split
from experiments.hints import shell_command
from experiments.runs import RunPaths, load_learned

if TYPE_CHECKING:
    from learning.state import LearnedState

__all__ = ["DEFAULT_DEMO_TIMESTEPS", "DemoResult", "demo_config", "run_demo"]

CONFIG_FILE: Final = Path(__file__).parent / "configs" / "ablation_ppo_eurusd_1h.yaml"
DEMO_NAME: Final = "demo"
DEFAULT_DEMO_TIMESTEPS: Final = 40_000
"""Per arm: about three minutes for both arms, their evaluations and the baselines on two cores."""
# Periodic validation about six times per run, checkpoints at the end only: the demo is short.
_EVALS_PER_RUN: Final = 6
REPORT_FILE: Final = "report.md"
PLOT_FILE: Final = "equity.png"
BASELINE_NAMES: Final = ("buy_and_hold", "flat", "random", "sma_crossover", "learned_weights")
_ARM_LABELS: Final = {ARM_LEARNING: "ppo + learning", ARM_NO_LEARNING: "ppo"}
_PLOT_DPI: Final = 110


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    Attributes:
        directory: the demo's directory (``<runs>/demo[-k]``), holding both arms' runs and the report.
        report: the Markdown report.
        plot: the equity plot (``None`` without matplotlib).
        metrics: test-split metrics by row label (arms first, then baselines).
        wall_seconds: how long the demo took.
    """

    directory: Path
    report: Path
    plot: Path | None
    metrics: dict[str, Metrics]
    wall_seconds: float


def _free_name(runs_dir: Path) -> str:
    """``demo``, or ``demo-1``, ``demo-2``... when earlier demos are there (never overwrite a run)."""
    name = DEMO_NAME
    k = 0
    while (runs_dir / name).exists():
        k += 1
        name = f"{DEMO_NAME}-{k}"
    return name


def demo_config(timesteps: int, seed: int, name: str = DEMO_NAME, *, progress: bool = True) -> RunConfig:
    """The demo's ablation config: the shipped one with the demo's budget, seed and name."""
    base = load_config(CONFIG_FILE)
    # An on-policy model changes once per rollout: evaluating more often than that measures nothing new.
    rollout = (base.algo.n_steps or 1) * base.train.n_envs
    every = max(timesteps // _EVALS_PER_RUN, rollout)
    return apply_overrides(
        base,
        {
            "name": name,
            "train.timesteps": timesteps,
            "train.seeds": [seed],
            "train.eval_every": every,
            "train.checkpoint_every": 0,
            "train.progress_bar": progress,
        },
        source="slf demo",
    )


def _plot(curves: dict[str, EvaluationResult], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 5))
    for label, result in curves.items():
        times = result.time_ns.astype("datetime64[ns]")
        ax.plot(
            times, result.equity / result.equity[0], label=label, linewidth=1.6 if "ppo" in label else 1.0
        )
    ax.axhline(1.0, color="grey", linewidth=0.6)
    first = next(iter(curves.values()))
    ax.set_title(f"{first.symbol}: equity on the held-out test split (start = 1)")
    ax.set_ylabel("equity / initial")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_xlim(
        np.min(first.time_ns.astype("datetime64[ns]")), np.max(first.time_ns.astype("datetime64[ns]"))
    )
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=_PLOT_DPI)
    plt.close(fig)
    return path


def _tensorboard_hint(directory: Path) -> str:
    """The command that opens the demo's training curves, runnable as printed (see experiments.hints)."""
    return shell_command("tensorboard", "--logdir", directory)


def _markdown_table(rows: list[list[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _report(
    directory: Path,
    config: RunConfig,
    runs: dict[str, Path],
    selected: dict[str, str],
    metrics: dict[str, Metrics],
    splits: dict[str, Any],
    plot: Path | None,
    wall: float,
    periods_per_year: float,
) -> Path:
    test = splits["test"]
    lines = [
        "# self-learning-flow demo",
        "",
        f"PPO on {config.data.dataset} trained for {config.train.timesteps} steps per arm (seed "
        f"{config.train.seeds[0]}), with and without the learning manager, evaluated deterministically on "
        f"the held-out test split ({test['first']} .. {test['last']}, "
        f"rows {test['rows'][0]}..{test['rows'][1]}; "
        f"an embargo of {config.data.splits.embargo} bars separates the splits, and observation "
        "normalization is fitted on the training split only).",
        "",
        _markdown_table(metrics_table(metrics)),
        "",
        f"Return and max drawdown are over the test split; the Sharpe ratio is annualized with "
        f"{periods_per_year:.0f} bars a year (calendar: {config.data.calendar.value}). `vetoes` are orders "
        "the learned avoidance rules refused; `rejections` are orders the exchange rules refused (lot size, "
        "minimum notional, balance).",
        "",
    ]
    if plot is not None:
        lines += [f"![equity on the test split]({plot.name})", ""]
    lines += ["## Runs", ""]
    for arm, path in runs.items():
        lines.append(f"- `{_ARM_LABELS[arm]}`: `{path}` (evaluated: `{selected[arm]}`)")
    lines += [
        "",
        "Each run directory holds `config.yaml` (resolved), `command.txt`, `versions.json`, `tensorboard/`, "
        "`model.zip`, `best_model.zip`, `normalization.json`, `metrics.json` and, for the learning arm, the "
        f"learning store (`{shell_command('slf', 'learning', 'show', runs[ARM_LEARNING])}`).",
        "",
        f"TensorBoard: `{_tensorboard_hint(directory)}`",
        "",
        f"Wall time: {wall:.0f} s.",
        "",
    ]
    path = directory / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _print_table(console: Console, metrics: dict[str, Metrics]) -> None:
    rows = metrics_table(metrics)
    table = Table(title="held-out test split")
    for i, column in enumerate(rows[0]):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console.print(table)


def run_demo(
    *,
    timesteps: int = DEFAULT_DEMO_TIMESTEPS,
    runs_dir: Path = Path("runs"),
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
    command: list[str] | None = None,
) -> DemoResult:
    """Train both arms, evaluate them and the baselines on the test split, write the report.

    Raises:
        ConfigError, StateError: from training (e.g. a runs directory that cannot be written).
    """
    from agents.policies import load_model
    from experiments.train import evaluate_split, make_env_factory, prepare_data, split_info, train
    from learning.manager import UniversalLearningManager

    console = console or report_console()
    started = time.perf_counter()
    name = _free_name(runs_dir)
    config = demo_config(timesteps, seed, name, progress=progress)
    directory = runs_dir / name
    console.print(
        f"[bold]slf demo[/bold]: PPO on {config.data.dataset}, {timesteps} steps per arm, seed {seed}"
    )
    results = train(config, runs_dir=runs_dir, command=command or ["slf", "demo"])
    arms = {arm: cfg for arm, cfg in config.arms() if arm is not None}
    runs: dict[str, Path] = {}
    for arm, result in zip(arms, results, strict=True):
        runs[arm] = result.run_dir

    prepared = prepare_data(arms[ARM_NO_LEARNING].for_seed(seed))
    curves: dict[str, EvaluationResult] = {}
    selected: dict[str, str] = {}
    learned: LearnedState | None = None
    for arm, arm_cfg in arms.items():
        paths = RunPaths(runs[arm])
        best = paths.best_model.is_file()
        model = load_model(arm_cfg.algo.algo, paths.best_model if best else paths.model)
        selected[arm] = (paths.best_model if best else paths.model).name
        state = None
        if arm_cfg.learning.enabled:
            with UniversalLearningManager(paths.root, create=False, read_only=True) as manager:
                learned = manager.snapshot()
            state = learned
            if best:
                state = load_learned(paths.best_learned_state) or learned
        curves[_ARM_LABELS[arm]] = evaluate_split(
            arm_cfg.for_seed(seed), prepared, model, "test", state=state, seed=seed, name=_ARM_LABELS[arm]
        )
    base_cfg = arms[ARM_NO_LEARNING].for_seed(seed)
    for baseline in BASELINE_NAMES:
        if baseline == "learned_weights" and learned is None:
            continue
        env = make_env_factory(base_cfg, prepared, "test", learning=False)()
        policy = make_baseline(baseline, env, seed=seed, learned_state=learned)
        curves[baseline] = run_split(policy, env, name=baseline, seed=seed, calendar=base_cfg.data.calendar)
        env.close()

    metrics = {label: result.metrics for label, result in curves.items()}
    directory.mkdir(parents=True, exist_ok=True)
    plot = _plot(curves, directory / PLOT_FILE)
    wall = time.perf_counter() - started
    report = _report(
        directory,
        config,
        runs,
        selected,
        metrics,
        split_info(prepared),
        plot,
        wall,
        prepared.periods_per_year,
    )
    _print_table(console, metrics)
    for arm, path in runs.items():
        console.print(f"run ({_ARM_LABELS[arm]}): {path}", soft_wrap=True)
    console.print(f"report: {report}", soft_wrap=True)
    console.print(f"plot: {plot}" if plot else "plot: skipped (matplotlib is not installed)", soft_wrap=True)
    console.print(
        f"learned state: {shell_command('slf', 'learning', 'show', runs[ARM_LEARNING])}", soft_wrap=True
    )
    console.print(f"TensorBoard: {_tensorboard_hint(directory)}", soft_wrap=True)
    console.print(f"demo wall time: {wall:.0f} s")
    return DemoResult(directory=directory, report=report, plot=plot, metrics=metrics, wall_seconds=wall)
