"""``slf learning``: show what the learning manager has learned, and write its report.

``DIR`` is a run directory (holding ``learning/state.sqlite``), its ``learning/`` directory, or the
store file itself. The store is opened read-only, so a run may keep writing meanwhile. A missing,
corrupt or foreign store is a :class:`envs.errors.StateError` (printed on one line, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from envs.errors import StateError

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Show what the learning manager has learned.")

_DEFAULT_ROWS = 20


def _open(directory: Path) -> Any:
    # Imported here so that `slf --help` does not pay for numpy and the learning engines.
    from learning.manager import UniversalLearningManager
    from learning.store import storage_root

    if not directory.exists():
        raise StateError("does not exist", where=str(directory), fix="give a run directory")
    return UniversalLearningManager(storage_root(directory), create=False, read_only=True)


def _show_json(manager: Any) -> None:
    from learning.records import format_market_time

    state = manager.snapshot()
    data = state.to_dict()

    # Market times relative to the snapshot's clock T, as in the report (the *_ns fields stay raw).
    def when(time_ns: int | None) -> str:
        return format_market_time(time_ns, state.time_ns)

    data["rules"] = [
        {**{k: getattr(r, k) for k in r.__dataclass_fields__}, "explanation": r.explain(when)}
        for r in manager.rules()
    ]
    data["error_patterns"] = [
        {
            "signature": e.signature,
            "kind": str(e.kind),
            "message": e.message,
            "count": e.count,
            "first_seen_ns": e.first_seen_ns,
            "last_seen_ns": e.last_seen_ns,
            "attempts": [
                {"resolution": str(a.resolution), "success": a.success, "time_ns": a.time_ns}
                for a in e.attempts
            ],
        }
        for e in manager.error_patterns()
    ]
    data["effectiveness"] = manager.track_learning_effectiveness().as_scalars()
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    if not rows:
        table.caption = "(none)"
    return table


def _pattern_row(p: Any) -> list[str]:
    return [
        p.signature,
        str(p.count),
        f"{p.win_rate:.0%}",
        f"{p.total_pnl:.4g}",
        f"{p.score:+.3f}",
        f"{p.weight:.3f}",
    ]


def _show_tables(manager: Any, rows: int) -> None:
    from functools import partial

    from learning.records import MARKET_TIME_NOTE, format_market_time

    # Not calendar dates: a training store's clock is the experienced market clock (see the note).
    when = partial(format_market_time, now_ns=manager.clock.now_ns())
    console = Console()
    console.print(MARKET_TIME_NOTE, highlight=False)
    eff = manager.track_learning_effectiveness()
    console.print(
        _table(
            f"Learning state (version {manager.version})",
            ["metric", "value"],
            [[k.removeprefix("learning/"), f"{v:.4g}"] for k, v in eff.as_scalars().items()],
        )
    )
    rules = manager.rules()
    console.print(
        _table(
            "Avoidance rules",
            ["rule", "status", "support", "occurrence", "lift", "created", "vetoes (wrong/judged)"],
            [
                [
                    r.rule_id,
                    "active" if r.active else "retired",
                    f"{r.support}/{r.losers}",
                    f"{r.occurrence:.0%}",
                    f"{r.lift:.2f}",
                    when(r.created_ns),
                    f"{r.vetoes} ({r.wrong}/{r.judged})",
                ]
                for r in rules
            ],
        )
    )
    for rule in rules:
        console.print(f"- {rule.explain(when)}", highlight=False)
    weights = sorted(manager.strategy_weights().items(), key=lambda kv: (-kv[1], kv[0]))[:rows]
    console.print(_table("Strategy weights", ["factor", "weight"], [[f, f"{w:.4f}"] for f, w in weights]))
    console.print(
        _table(
            "Top patterns (reinforced)",
            ["signature", "trades", "win rate", "pnl", "score", "weight"],
            [_pattern_row(p) for p in manager.top_patterns(rows)],
        )
    )
    console.print(
        _table(
            "Most traded patterns",
            ["signature", "trades", "win rate", "pnl", "score", "weight"],
            [_pattern_row(p) for p in manager.most_traded_patterns(rows)],
        )
    )
    console.print(
        _table(
            "Order minimums",
            ["symbol", "min qty", "min notional", "rejections", "source", "updated"],
            [
                [
                    m.symbol,
                    f"{m.min_qty:.8g}",
                    f"{m.min_notional:.8g}",
                    str(m.rejections),
                    m.source,
                    when(m.updated_ns),
                ]
                for m in manager.minimums().values()
            ],
        )
    )
    console.print(
        _table(
            "Error patterns",
            ["signature", "seen", "attempts", "success", "last seen"],
            [
                [
                    e.signature,
                    str(e.count),
                    str(len(e.attempts)),
                    f"{sum(a.success for a in e.attempts) / len(e.attempts):.0%}" if e.attempts else "-",
                    when(e.last_seen_ns),
                ]
                for e in manager.error_patterns()
            ],
        )
    )
    console.print(
        _table(
            "Condition adjustments",
            ["condition", "state", "win rate", "trades", "exposure x", "entry threshold", "max position"],
            [
                [
                    a.condition_key,
                    "active" if a.active else "relaxed",
                    f"{a.win_rate:.0%}",
                    str(a.trades),
                    f"{a.exposure_multiplier:.2f}",
                    f"{a.entry_threshold:.2f}",
                    f"{a.max_position:.2f}",
                ]
                for a in manager.adjustments().values()
            ],
        )
    )


DirectoryArg = Annotated[
    Path, typer.Argument(help="Run directory (or its learning/ directory, or the store file).")
]


@app.command()
def show(
    directory: DirectoryArg,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON instead of tables (times as stored, in ns; explanations relative to the "
            "learning clock T).",
        ),
    ] = False,
    rows: Annotated[
        int, typer.Option("--rows", min=1, help="Rows of weights and patterns to show.")
    ] = _DEFAULT_ROWS,
) -> None:
    """Patterns, avoidance rules with their evidence, weights, minimums and error patterns."""
    manager = _open(directory)
    try:
        if as_json:
            _show_json(manager)
        else:
            _show_tables(manager, rows)
    finally:
        manager.close()


@app.command()
def report(
    directory: DirectoryArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory for the report (default: the run directory).")
    ] = None,
) -> None:
    """Write the learning report as Markdown and self-contained HTML."""
    manager = _open(directory)
    try:
        md, page = manager.write_report(out if out is not None else manager.root)
    finally:
        manager.close()
    typer.echo(f"wrote {md}")
    typer.echo(f"wrote {page}")
