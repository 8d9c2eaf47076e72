"""Gate reports: JSON for machines and an HTML page for people (tables, and the win rates with their CIs).

Reports live at HOME/reports/<tenant_id>/<version>/report.{json,html}; the registry links the JSON one.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

PLOT_WIDTH, ROW_HEIGHT, LEFT, RIGHT = 560, 34, 150, 20


def report_dir(home: Path, tenant_id: str, version_id: str) -> Path:
    """Where a version's gate report is kept."""
    return Path(home) / "reports" / tenant_id / version_id


def win_rate_svg(suites: list[dict[str, Any]]) -> str:
    """An inline SVG: each suite's win rate as a dot, its 95% CI as a bar, 50% and the threshold marked."""
    shown = [s for s in suites if {"win_rate", "ci_low", "ci_high"} <= set(s.get("metrics", {}))]
    if not shown:
        return ""
    height = 40 + ROW_HEIGHT * len(shown)
    span = PLOT_WIDTH - LEFT - RIGHT

    def x(p: float) -> float:
        return round(LEFT + span * p, 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_WIDTH}" height="{height}" role="img" '
        f'aria-label="win rate with 95% confidence interval" font-family="sans-serif" font-size="12">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        dash = "" if tick == 0.5 else ' stroke-dasharray="2,3"'
        parts.append(f'<line x1="{x(tick)}" y1="10" x2="{x(tick)}" y2="{height - 22}" stroke="#999"{dash}/>')
        parts.append(f'<text x="{x(tick)}" y="{height - 6}" text-anchor="middle">{tick:.0%}</text>')
    for i, suite in enumerate(shown):
        m, y = suite["metrics"], 28 + ROW_HEIGHT * i
        color = "#2a7d2e" if suite["passed"] else "#b3261e"
        # Escaped here: the SVG reaches the page as markup, past the template's own escaping.
        name = html.escape(str(suite["name"]))
        parts.append(f'<text x="{LEFT - 8}" y="{y + 4}" text-anchor="end">{name}</text>')
        parts.append(
            f'<line x1="{x(m["ci_low"])}" y1="{y}" x2="{x(m["ci_high"])}" y2="{y}" '
            f'stroke="{color}" stroke-width="4"/>'
        )
        parts.append(
            f'<circle cx="{x(m["win_rate"])}" cy="{y}" r="6" fill="{color}"><title>'
            f"{m['win_rate']:.0%} (95% CI {m['ci_low']:.0%}–{m['ci_high']:.0%}, n={m['n']})</title></circle>"
        )
        if "threshold" in m:
            t = x(m["threshold"])
            parts.append(
                f'<line x1="{t}" y1="{y - 10}" x2="{t}" y2="{y + 10}" stroke="#333" stroke-width="2"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """The report as a self-contained HTML page."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("tuneloop.evaluate", "templates"), autoescape=select_autoescape())
    env.filters["cell"] = _cell
    template = env.get_template("report.html")
    return template.render(r=report, plot=Markup(win_rate_svg(report["suites"])))


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into `out_dir` (each atomically) and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (
        ("report.json", json.dumps(report, indent=2, ensure_ascii=False, default=str)),
        ("report.html", render_html(report)),
    ):
        path = out_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]
