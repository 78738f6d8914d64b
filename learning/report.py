"""The learning report: what has been learned and whether it helps, as Markdown and self-contained HTML."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from learning.error_patterns import ErrorPattern
from learning.records import (
    MARKET_TIME_NOTE,
    AvoidanceRule,
    ConditionAdjustment,
    LearnedMinimum,
    PatternScore,
    TimeFormat,
    format_market_time,
)
from learning.tracking import LearningEffectiveness

__all__ = ["LearningReport", "render_html", "render_markdown", "write_report"]

REPORT_STEM = "learning_report"
_SPARK_WIDTH = 240
_SPARK_HEIGHT = 40


@dataclass(frozen=True)
class LearningReport:
    """Everything the report shows (built by ``UniversalLearningManager.build_report``)."""

    effectiveness: LearningEffectiveness
    history: Sequence[LearningEffectiveness]
    rules: Sequence[AvoidanceRule]
    strategy_weights: Mapping[str, float]
    top_patterns: Sequence[PatternScore]
    minimums: Mapping[str, LearnedMinimum]
    error_patterns: Sequence[ErrorPattern]
    adjustments: Mapping[str, ConditionAdjustment]


Table = tuple[list[str], list[list[str]]]


def _time_format(report: LearningReport) -> TimeFormat:
    """Market times relative to the report's T (the manager's clock when it was built): a training
    store's experienced market clock does not read calendar dates."""
    now = report.effectiveness.time_ns

    def fmt(time_ns: int | None) -> str:
        return format_market_time(time_ns, now)

    return fmt


def _tables(report: LearningReport) -> list[tuple[str, Table]]:
    when = _time_format(report)
    eff = report.effectiveness
    metrics = [[k.removeprefix("learning/"), f"{v:.4g}"] for k, v in eff.as_scalars().items()]
    rules = [
        [
            r.rule_id,
            "active" if r.active else "retired",
            str(r.support),
            f"{r.occurrence:.0%}",
            f"{r.lift:.2f}",
            when(r.created_ns),
            str(r.vetoes),
            r.explain(when),
        ]
        for r in report.rules
    ]
    weights = sorted(report.strategy_weights.items(), key=lambda kv: (-kv[1], kv[0]))
    patterns = [
        [
            p.signature,
            str(p.count),
            f"{p.win_rate:.0%}",
            f"{p.total_pnl:.4g}",
            f"{p.score:+.3f}",
            f"{p.weight:.3f}",
        ]
        for p in report.top_patterns
    ]
    minimums = [
        [
            m.symbol,
            f"{m.min_qty:.8g}",
            f"{m.min_notional:.8g}",
            str(m.rejections),
            m.source,
            when(m.updated_ns),
        ]
        for m in report.minimums.values()
    ]
    errors = [
        [
            e.signature,
            str(e.count),
            str(len(e.attempts)),
            f"{sum(a.success for a in e.attempts) / len(e.attempts):.0%}" if e.attempts else "-",
            when(e.last_seen_ns),
        ]
        for e in report.error_patterns
    ]
    adjustments = [
        [
            a.condition_key,
            "active" if a.active else "relaxed",
            f"{a.win_rate:.0%}",
            str(a.trades),
            f"{a.exposure_multiplier:.2f}",
            f"{a.entry_threshold:.2f}",
            f"{a.max_position:.2f}",
        ]
        for a in report.adjustments.values()
    ]
    return [
        ("Effectiveness", (["metric", "value"], metrics)),
        (
            "Avoidance rules",
            (["rule", "status", "support", "occurrence", "lift", "created", "vetoes", "explanation"], rules),
        ),
        ("Strategy weights", (["factor", "weight"], [[f, f"{w:.4f}"] for f, w in weights])),
        ("Top patterns", (["signature", "trades", "win rate", "pnl", "score", "weight"], patterns)),
        (
            "Order minimums",
            (["symbol", "min qty", "min notional", "rejections", "source", "updated"], minimums),
        ),
        ("Error patterns", (["signature", "seen", "attempts", "success", "last seen"], errors)),
        (
            "Condition adjustments",
            (
                ["condition", "state", "win rate", "trades", "exposure x", "entry threshold", "max position"],
                adjustments,
            ),
        ),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: LearningReport) -> str:
    """The report as GitHub-flavoured Markdown."""
    when = _time_format(report)
    lines = ["# Learning report", "", MARKET_TIME_NOTE, ""]
    for title, (header, rows) in _tables(report):
        lines += [f"## {title}", ""]
        if not rows:
            lines += ["(none)", ""]
            continue
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    if report.history:
        lines += [
            "## History",
            "",
            "| time | patterns | rules | win rate | profit trend |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {when(h.time_ns)} | {h.patterns} | {h.avoidance_rules} | {h.win_rate:.0%} "
            f"| {h.profit_trend:.4g} |"
            for h in report.history
        ]
        lines.append("")
    return "\n".join(lines)


def _sparkline(values: Sequence[float]) -> str:
    """An inline SVG polyline of ``values`` (empty string for fewer than two points)."""
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = _SPARK_WIDTH / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{_SPARK_HEIGHT - (v - lo) / span * _SPARK_HEIGHT:.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg width="{_SPARK_WIDTH}" height="{_SPARK_HEIGHT}" role="img" aria-label="win rate over time">'
        f'<polyline fill="none" stroke="#2a6" stroke-width="2" points="{points}"/></svg>'
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:0 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}"
    "th{background:#f3f3f3}h1{margin-top:0}.none{color:#888}"
)


def render_html(report: LearningReport) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no external resources)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Learning report</title>",
        f"<style>{_CSS}</style></head><body><h1>Learning report</h1>",
        f"<p>{esc(MARKET_TIME_NOTE)}</p>",
    ]
    spark = _sparkline([h.win_rate for h in report.history])
    if spark:
        parts.append(f"<h2>Win rate over time</h2>{spark}")
    for title, (header, rows) in _tables(report):
        parts.append(f"<h2>{esc(title)}</h2>")
        if not rows:
            parts.append("<p class='none'>(none)</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: LearningReport, directory: Path) -> tuple[Path, Path]:
    """Write ``learning_report.md`` and ``learning_report.html`` into ``directory``; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / f"{REPORT_STEM}.md"
    page = directory / f"{REPORT_STEM}.html"
    md.write_text(render_markdown(report), encoding="utf-8")
    page.write_text(render_html(report), encoding="utf-8")
    return md, page
