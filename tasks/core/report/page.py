"""The report as one self-contained HTML page: plotly's JavaScript inline once in the head (the
figures leave it out), no external file, font or script, so it opens offline from disk."""

from __future__ import annotations

import html
import re

import plotly.io as pio
from plotly.offline import get_plotlyjs

from tasks.core.report.figures import Section
from tasks.core.report.rows import ReportData

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_CODE = re.compile(r"`([^`]+)`")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 24px 48px;
       color: #1f2933; }
header { border-bottom: 1px solid #d9e2ec; margin-bottom: 12px; }
h1 { margin: 24px 0 4px; } h2 { margin: 36px 0 4px; font-size: 1.3em; }
.meta, .caption { color: #52606d; margin: 4px 0 12px; } .empty { color: #9f580a; font-style: italic; }
nav a { margin-right: 14px; white-space: nowrap; }
table { border-collapse: collapse; } td, th { padding: 2px 12px 2px 0; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f0f4f8; padding: 0 3px; border-radius: 3px; }
"""


def _text(text: str) -> str:
    """Escaped text with `backticked` parts as code."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def _section(s: Section) -> str:
    if s.figure is None:
        body = f'<p class="empty">{_text(s.empty)}</p>'
    else:
        body = pio.to_html(s.figure, full_html=False, include_plotlyjs=False,
                           div_id=f"figure-{s.key}", config=PLOT_CONFIG)
    return (f'<section id="{s.key}"><h2>{_text(s.title)}</h2>'
            f'<p class="caption">{_text(s.caption)}</p>\n{body}</section>')


def _overview(data: ReportData) -> str:
    if not data.tables:
        return '<p class="empty">No warehouse views yet: run a flow of the factory first.</p>'
    rows = "".join(f"<tr><td><code>{html.escape(t.table)}</code></td><td class=\"n\">{t.rows:,}"
                   f"</td></tr>" for t in data.tables)
    return f"<table><tr><th>view</th><th>rows</th></tr>{rows}</table>"


def render(data: ReportData, sections: list[Section]) -> str:
    """The whole page: header, contents, the warehouse's views, then every section."""
    where = f"warehouse {data.warehouse}" if data.warehouse else "no warehouse file yet"
    nav = " ".join(f'<a href="#{s.key}">{_text(s.title)}</a>' for s in sections)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ultraforge report</title>", f"<style>{_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head><body>",
        "<header><h1>ultraforge report</h1>",
        f'<p class="meta">generated {data.generated_at:%Y-%m-%d %H:%M:%S %Z} · lake '
        f"<code>{html.escape(data.lake)}</code> · {html.escape(where)}</p>",
        f"<nav>{nav}</nav></header>",
        f'<section id="overview"><h2>What the warehouse holds</h2>{_overview(data)}</section>',
        *(_section(s) for s in sections),
        "</body></html>", ""])
