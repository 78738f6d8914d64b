"""One self-contained HTML report of a backtest (and of what the learning manager learned).

:func:`write_report` writes ``report.html`` plus the plots as PNG files (``equity.png``,
``drawdown.png``, ``trades.png`` and, with a learning section, ``weights.png``) into a directory. The
HTML embeds the same PNGs as base64 data URIs and carries its CSS inline: it opens anywhere, offline,
as one file.

The learning section is built from a :class:`~learning.manager.UniversalLearningManager` (read
through its accessors, nothing is written), a :class:`~learning.state.LearnedState` snapshot, or a
:class:`~learning.report.LearningReport`: avoidance rules with their evidence, top patterns, the
strategy-weight evolution (the manager has the history; a snapshot or report gives the current
weights), learned order minimums, and error patterns with their resolution rates.
"""

from __future__ import annotations

import base64
import functools
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from backtests import plots
from backtests.metrics import METRIC_LABELS, Metrics
from envs.errors import ConfigError
from learning.records import (
    AvoidanceRule,
    LearnedMinimum,
    PatternScore,
    TimeFormat,
    format_market_time,
    format_ns,
)

if TYPE_CHECKING:
    from backtests.results import BacktestResult
    from learning.error_patterns import ErrorPattern
    from learning.manager import UniversalLearningManager
    from learning.report import LearningReport
    from learning.state import LearnedState

__all__ = ["REPORT_FILE", "LearningSection", "learning_section", "render_report", "write_report"]

REPORT_FILE: Final = "report.html"
PLOT_FILES: Final = {
    "equity": "equity.png",
    "drawdown": "drawdown.png",
    "trades": "trades.png",
    "weights": "weights.png",
}
TOP_PATTERNS: Final = 15

_CSS: Final = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1150px;"
    "color:#222;padding:0 1em}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;"
    "margin-top:1.8em}.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:.5em 0 1.2em}"
    "th,td{border:1px solid #d5d5d5;padding:4px 9px;text-align:left;vertical-align:top;font-size:13px}"
    "th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "img{max-width:100%;height:auto;display:block;margin:.4em 0 1em}.none{color:#888}"
    ".explain{color:#444;font-size:12px;max-width:520px}"
)


@dataclass(frozen=True)
class LearningSection:
    """What the report's learning section shows (see :func:`learning_section`).

    Attributes:
        source: what it was read from (``"manager"``, ``"snapshot"`` or ``"report"``).
        rules: avoidance rules (active and retired, when the source knows retired ones).
        top_patterns: the highest-weighted patterns.
        weights: the current strategy weights.
        weight_history: ``(market time ns, weights)`` after each evolution step (manager only).
        minimums: learned order minimums by symbol.
        error_patterns: known error patterns with their resolution attempts (manager and report).
        now_ns: the source's market clock when read, ``T``: times show relative to it (a training
            store's experienced market clock does not read calendar dates); ``None``: as dates.
    """

    source: str
    rules: Sequence[AvoidanceRule] = ()
    top_patterns: Sequence[PatternScore] = ()
    weights: Mapping[str, float] = field(default_factory=dict)
    weight_history: Sequence[tuple[int, Mapping[str, float]]] = ()
    minimums: Mapping[str, LearnedMinimum] = field(default_factory=dict)
    error_patterns: Sequence[ErrorPattern] = ()
    now_ns: int | None = None


def learning_section(
    source: UniversalLearningManager | LearnedState | LearningReport | LearningSection,
) -> LearningSection:
    """Read what was learned from a manager, a snapshot or a learning report (never writes)."""
    from learning.manager import UniversalLearningManager
    from learning.report import LearningReport
    from learning.state import LearnedState

    if isinstance(source, LearningSection):
        return source
    if isinstance(source, UniversalLearningManager):
        return LearningSection(
            source="manager",
            rules=source.rules(),
            # Reinforced patterns first, then the best-scoring and most frequent ones (a run without
            # reinforcement still shows what it saw).
            top_patterns=sorted(source.patterns(), key=lambda p: (-p.weight, -p.score, -p.count))[
                :TOP_PATTERNS
            ],
            weights=dict(source.strategy_weights()),
            weight_history=[(step.time_ns, dict(step.weights)) for step in source.evolution_history()],
            minimums=source.minimums(),
            error_patterns=source.error_patterns(),
            now_ns=source.clock.now_ns(),
        )
    if isinstance(source, LearnedState):
        return LearningSection(
            source="snapshot",
            rules=source.rules,
            top_patterns=source.top_patterns,
            weights=dict(source.strategy_weights),
            minimums=dict(source.minimums),
            now_ns=source.time_ns,
        )
    if isinstance(source, LearningReport):
        return LearningSection(
            source="report",
            rules=source.rules,
            top_patterns=source.top_patterns,
            weights=dict(source.strategy_weights),
            minimums=dict(source.minimums),
            error_patterns=source.error_patterns,
            now_ns=source.effectiveness.time_ns,
        )
    raise ConfigError(
        f"cannot build a learning section from {type(source).__name__}",
        where="learning",
        fix="pass a UniversalLearningManager, its snapshot() or its build_report()",
    )


# --- HTML ------------------------------------------------------------------------------------------

_esc = html.escape


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{data}'>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    if not rows:
        return "<p class='none'>(none)</p>"
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{_esc(c)}</td>" if j in numeric else f"<td>{_esc(c)}</td>"
            for j, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_table(metrics: Sequence[Metrics], names: Sequence[str]) -> str:
    rows_by = [dict(m.rows()) for m in metrics]
    rows = [[label, *(r[label] for r in rows_by)] for label in METRIC_LABELS.values()]
    return _table(["Metric", *names], rows, numeric=range(1, len(names) + 1))


def _learning_html(section: LearningSection, weights_png: bytes) -> str:
    now = section.now_ns
    when: TimeFormat = format_ns if now is None else functools.partial(format_market_time, now_ns=now)
    clock = (
        ""
        if now is None
        else " Times are market time relative to T, its market clock when read (T-2.0d: two market days "
        "earlier)."
    )
    parts = [f"<h2>Learning</h2><p class='sub'>Read from the learning {_esc(section.source)}.{clock}</p>"]
    rules = [
        [
            r.rule_id,
            "active" if r.active else "retired",
            str(r.support),
            f"{r.occurrence:.0%}",
            f"{r.lift:.2f}",
            str(r.vetoes),
            f"{r.wrong}/{r.judged}" if r.judged else "-",
            when(r.created_ns),
        ]
        for r in section.rules
    ]
    parts.append("<h3>Avoidance rules</h3>")
    parts.append(
        _table(
            ["rule", "status", "support", "occurrence", "lift", "vetoes", "vetoes wrong", "created"],
            rules,
            numeric=(2, 3, 4, 5),
        )
    )
    if section.rules:
        parts.append(
            "<ul>"
            + "".join(f"<li class='explain'>{_esc(r.explain(when))}</li>" for r in section.rules)
            + "</ul>"
        )
    patterns = [
        [
            p.signature,
            str(p.count),
            f"{p.win_rate:.0%}",
            f"{p.total_pnl:,.2f}",
            f"{p.score:+.3f}",
            f"{p.weight:.3f}",
        ]
        for p in list(section.top_patterns)[:TOP_PATTERNS]
    ]
    parts.append("<h3>Top patterns</h3>")
    parts.append(
        _table(["pattern", "trades", "win rate", "PnL", "score", "weight"], patterns, numeric=(1, 2, 3, 4, 5))
    )
    parts.append("<h3>Strategy weights</h3>")
    parts.append(_img(weights_png, "strategy weight evolution"))
    weights = sorted(section.weights.items(), key=lambda kv: (-abs(kv[1] - 1.0), kv[0]))[:20]
    parts.append(_table(["factor", "weight"], [[k, f"{v:.4f}"] for k, v in weights], numeric=(1,)))
    minimums = [
        [
            m.symbol,
            f"{m.min_qty:.8g}",
            f"{m.min_notional:.8g}",
            str(m.rejections),
            m.source,
            when(m.updated_ns),
        ]
        for m in section.minimums.values()
    ]
    parts.append("<h3>Learned order minimums</h3>")
    parts.append(
        _table(
            ["symbol", "min qty", "min notional", "rejections", "source", "updated"],
            minimums,
            numeric=(1, 2, 3),
        )
    )
    errors = []
    for e in section.error_patterns:
        attempts = len(e.attempts)
        wins = sum(a.success for a in e.attempts)
        by_kind: dict[str, list[int]] = {}
        for a in e.attempts:
            tally = by_kind.setdefault(str(a.resolution), [0, 0])
            tally[0] += int(a.success)
            tally[1] += 1
        detail = ", ".join(f"{k} {s}/{n}" for k, (s, n) in sorted(by_kind.items())) or "-"
        errors.append(
            [
                e.signature,
                str(e.count),
                str(attempts),
                f"{wins / attempts:.0%}" if attempts else "-",
                detail,
                when(e.last_seen_ns),
            ]
        )
    parts.append("<h3>Error patterns</h3>")
    if section.source == "snapshot":
        parts.append("<p class='none'>(a snapshot carries no error patterns: pass the manager)</p>")
    else:
        parts.append(
            _table(
                ["pattern", "seen", "attempts", "resolution rate", "by resolution", "last seen"],
                errors,
                numeric=(1, 2, 3),
            )
        )
    return "\n".join(parts)


def _weights_history(section: LearningSection) -> Sequence[tuple[int, Mapping[str, float]]]:
    if section.weight_history:
        return section.weight_history
    # A snapshot or report knows only the current weights: one point (still shows which factors moved).
    return [(0, section.weights)] if section.weights else []


def _render(
    result: BacktestResult,
    pngs: Mapping[str, bytes],
    *,
    benchmark: BacktestResult | None,
    section: LearningSection | None,
    title: str | None,
) -> str:
    meta = result.meta
    names = [result.name] + ([benchmark.name] if benchmark is not None else [])
    metrics = [result.metrics] + ([benchmark.metrics] if benchmark is not None else [])
    curve = result.curve
    span = f"{curve.index[0]:%Y-%m-%d %H:%M} to {curve.index[-1]:%Y-%m-%d %H:%M} UTC" if len(curve) else "-"
    spec = meta.get("spec") or {}
    costs = (
        f"taker fee {float(spec.get('taker_fee', 0.0)):.4%}, spread {spec.get('spread_bps', 0)} bps, "
        f"slippage {spec.get('slippage_bps', 0)} bps"
        if spec
        else "costs unknown"
    )
    heading = title or f"Backtest: {result.name}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(heading)}</h1>",
        f"<p class='sub'>{_esc(str(meta.get('symbol', '')))} &middot; {_esc(span)} &middot; "
        f"{len(curve):,} bars &middot; engine {_esc(str(meta.get('engine', '?')))} &middot; "
        f"{_esc(costs)}</p>",
        "<p class='sub'>Decisions at each bar's close fill at the next bar's open; every cost is in the "
        "equity. See the README (Accounting conventions) for the conventions.</p>",
        "<h2>Metrics</h2>",
        _metrics_table(metrics, names),
        "<h2>Equity</h2>",
        _img(pngs["equity"], "equity curve"),
        "<h2>Drawdown</h2>",
        _img(pngs["drawdown"], "drawdown"),
        "<h2>Trades</h2>",
        _img(pngs["trades"], "trade entries and exits on price"),
        f"<p class='sub'>{len(result.trades):,} closed trade slices, {len(result.fills):,} fills, "
        f"{len(result.rejections):,} rejections, {len(result.errors):,} errors.</p>",
    ]
    if section is not None:
        parts.append(_learning_html(section, pngs["weights"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _plots(
    result: BacktestResult,
    benchmark: BacktestResult | None,
    section: LearningSection | None,
    directory: Path | None,
) -> dict[str, bytes]:
    def where(key: str) -> Path | None:
        return None if directory is None else directory / PLOT_FILES[key]

    pngs = {
        "equity": plots.plot_equity(result, where("equity"), benchmark=benchmark),
        "drawdown": plots.plot_drawdown(result, where("drawdown")),
        "trades": plots.plot_trades(result, where("trades")),
    }
    if section is not None:
        pngs["weights"] = plots.plot_weight_evolution(_weights_history(section), where("weights"))
    return pngs


def render_report(
    result: BacktestResult,
    *,
    benchmark: BacktestResult | None = None,
    learning: UniversalLearningManager | LearnedState | LearningReport | LearningSection | None = None,
    title: str | None = None,
) -> str:
    """The report as one HTML string (images embedded); nothing is written."""
    section = None if learning is None else learning_section(learning)
    pngs = _plots(result, benchmark, section, None)
    return _render(result, pngs, benchmark=benchmark, section=section, title=title)


def write_report(
    result: BacktestResult,
    directory: str | Path,
    *,
    benchmark: BacktestResult | None = None,
    learning: UniversalLearningManager | LearnedState | LearningReport | LearningSection | None = None,
    title: str | None = None,
) -> Path:
    """Write ``report.html`` and the PNG plots into ``directory``; returns the HTML file's path.

    Args:
        result: the backtest.
        directory: output directory (created if needed).
        benchmark: another result over the same bars (e.g. buy-and-hold), shown beside it.
        learning: what the learning manager learned (see :func:`learning_section`).
        title: page title (default ``"Backtest: <name>"``).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    section = None if learning is None else learning_section(learning)
    pngs = _plots(result, benchmark, section, out)
    page = out / REPORT_FILE
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(_render(result, pngs, benchmark=benchmark, section=section, title=title), encoding="utf-8")
    tmp.replace(page)
    return page
