"""One plotly figure per report section, from the typed rows of rows.py (docs/monitoring.md#report).

A builder returns a `Section`: title, a one-line caption of what the plot shows, and the figure,
or no figure and a note saying what would make the data when there is none yet. Builders only
arrange counts that DuckDB already aggregated; the binning they do (time buckets, margin bins)
is in `time_buckets` and `margin_bins`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tasks.core.report.rows import (
    UNPARSED,
    FlagCount,
    Landed,
    LossCurve,
    MarginCount,
    ModelPicks,
    RatingCount,
    ReportData,
    RoundCount,
    StopCount,
)
from tasks.core.usage import UsageRow

MAX_BUCKETS = 60  # time buckets of the requests plot
MARGIN_BIN = 0.5  # width of a margin bin (overall scores move in steps of 0.5)
TEMPLATE = "plotly_white"
TRACE_COLORS = qualitative.Plotly  # for traces that keep one colour across subplots


@dataclass(frozen=True)
class Section:
    """One section of the report: a figure with its caption, or a note when there is no data."""

    key: str
    title: str
    caption: str
    figure: go.Figure | None
    empty: str


def sections(data: ReportData) -> list[Section]:
    """Every section of the report, in page order."""
    return [timeline(data.landed, data.endpoint_of), usage(data.usage), ratings(data.ratings),
            margins(data.margins), win_rates(data.picks), dialogues(data.rounds, data.stops),
            flags(data.flags, data.translated_sets), training(data.training)]


def _figure(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, template=TEMPLATE, height=height,
                      margin={"t": 80, "b": 60, "l": 70, "r": 20})
    return fig


# -- requests over time ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Buckets:
    """Calls per endpoint in equal time buckets from the first landed shard on."""

    starts: list[datetime]
    width_s: int
    requests: dict[str, list[int]]
    retries: dict[str, list[int]]
    failed: dict[str, list[int]]


def time_buckets(landed: Iterable[Landed], endpoint_of: Mapping[str, str],
                 max_buckets: int = MAX_BUCKETS) -> Buckets:
    """Sum each landed shard's calls into the bucket of its write time, per endpoint (a model
    not in `endpoint_of` is its own endpoint). Buckets are whole seconds (file times have a
    resolution of one second), at most `max_buckets` of them."""
    if max_buckets < 1:
        raise ValueError(f"max_buckets must be at least 1, got {max_buckets}")
    points = list(landed)
    if not points:
        return Buckets([], 1, {}, {}, {})
    first = min(p.landed_at for p in points)
    span = (max(p.landed_at for p in points) - first).total_seconds()
    width = max(1, math.ceil(span / max_buckets))
    n = int(span // width) + 1
    counts = {name: defaultdict(lambda: [0] * n) for name in ("requests", "retries", "failed")}
    for p in points:
        i = int((p.landed_at - first).total_seconds() // width)
        endpoint = endpoint_of.get(p.model, p.model)
        for name, series in counts.items():
            series[endpoint][i] += getattr(p, name)
    return Buckets(starts=[first + timedelta(seconds=i * width) for i in range(n)], width_s=width,
                   **{name: dict(sorted(series.items())) for name, series in counts.items()})


def timeline(landed: list[Landed], endpoint_of: Mapping[str, str]) -> Section:
    """Paid requests per second per endpoint, with retried attempts and failed calls below."""
    title = "Requests/s and retries over time per endpoint"
    caption = ("Paid requests per second (top) and retried attempts (429s, 5xx, timeouts) of "
               "generation calls and calls failed for good (bottom), by the time each shard "
               "landed.")
    empty = ("No shards landed yet: run `ultraforge run ultrafeedback` or `ultraforge run "
             "ultrachat`.")
    b = time_buckets(landed, endpoint_of)
    if not b.starts:
        return Section("requests", title, caption, None, empty)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=(f"paid requests/s ({b.width_s}-s buckets)",
                                        "retried attempts and failed calls per bucket"))
    for endpoint, counts in b.requests.items():
        fig.add_trace(go.Scatter(x=b.starts, y=[c / b.width_s for c in counts], name=endpoint,
                                 mode="lines+markers", legendgroup=endpoint), row=1, col=1)
    for label, series in (("retried", b.retries), ("failed", b.failed)):
        for endpoint, counts in series.items():
            if any(counts):
                fig.add_trace(go.Bar(x=b.starts, y=counts, name=f"{label}: {endpoint}",
                                     legendgroup=endpoint), row=2, col=1)
    fig.update_xaxes(title_text="time the shard landed (UTC)", row=2, col=1)
    fig.update_yaxes(title_text="requests/s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="attempts", rangemode="tozero", row=2, col=1)
    return Section("requests", title, caption, _figure(fig, title, 560), empty)


# -- tokens and cost ------------------------------------------------------------------------------

def usage(rows: list[UsageRow]) -> Section:
    """Tokens (prompt, completion) and cost (per route) of paid requests per model."""
    title = "Tokens and cost per model"
    caption = ("Tokens of paid requests per model, prompt and completion (left), and their cost "
               "at the pool's prices per route, online or batch (right); journal replays are free.")
    empty = "No usage landed yet: run `ultraforge run ultrafeedback` or `ultraforge run ultrachat`."
    paid = [r for r in rows if r.requests]
    if not paid:
        return Section("usage", title, caption, None, empty)
    tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    cost: dict[tuple[str, str], float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    for r in paid:
        tokens[r.model][0] += r.prompt_tokens
        tokens[r.model][1] += r.completion_tokens
        cost[r.model, r.route] += r.cost_usd
        total[r.model] += r.cost_usd
    models = sorted(tokens, key=lambda m: (-total[m], m))  # the most expensive first
    fig = make_subplots(rows=1, cols=2, subplot_titles=("tokens", "cost (USD)"))
    for i, kind in enumerate(("prompt", "completion")):
        fig.add_trace(go.Bar(x=models, y=[tokens[m][i] for m in models], name=f"{kind} tokens"),
                      row=1, col=1)
    for route in sorted({route for _, route in cost}):
        fig.add_trace(go.Bar(x=models, y=[round(cost.get((m, route), 0.0), 6) for m in models],
                             name=f"{route} cost"), row=1, col=2)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="model", tickangle=-45)
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    fig.update_yaxes(title_text="USD", row=1, col=2)
    return Section("usage", title, caption, _figure(fig, title, 480), empty)


# -- UltraFeedback ratings ------------------------------------------------------------------------

def _rating_order(rating: str) -> tuple[int, float, str]:
    """Numbers ascending, then N/A, then unparsed, then anything else by name."""
    try:
        return (0, float(rating), "")
    except ValueError:
        return ({"N/A": 1, UNPARSED: 2}.get(rating, 3), 0.0, rating)


def ratings(rows: list[RatingCount]) -> Section:
    """How many annotations of each aspect got each rating."""
    title = "Ratings per aspect (UltraFeedback annotations)"
    caption = ("Annotations per rating for each aspect the judge rated; N/A: not applicable, "
               "unparsed: no rating after the re-asks.")
    empty = "No annotations yet: run `ultraforge run ultrafeedback`."
    if not rows:
        return Section("ratings", title, caption, None, empty)
    categories = sorted({r.rating for r in rows}, key=_rating_order)
    by_aspect: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        by_aspect[r.aspect][r.rating] = by_aspect[r.aspect].get(r.rating, 0) + r.count
    fig = go.Figure([go.Bar(x=categories, y=[counts.get(c, 0) for c in categories], name=aspect)
                     for aspect, counts in sorted(by_aspect.items())])
    fig.update_layout(barmode="group", xaxis={"title": "rating", "type": "category"},
                      yaxis={"title": "annotations"})
    return Section("ratings", title, caption, _figure(fig, title), empty)


# -- DPO pairs ------------------------------------------------------------------------------------

def margin_bins(rows: Iterable[MarginCount], width: float = MARGIN_BIN) -> dict[str, dict[float, int]]:
    """Pairs per `<set> <split>` and margin bin [start, start + width), keyed by bin start."""
    if width <= 0:
        raise ValueError(f"margin bin width must be positive, got {width}")
    bins: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        # rounded first: 4.1 − 3.6 is 0.4999… and belongs to the bin that starts at 0.5
        start = math.floor(round(r.margin / width, 6)) * width
        bins[f"{r.set} {r.split}"][start] += r.pairs
    return {name: dict(sorted(b.items())) for name, b in sorted(bins.items())}


def margins(rows: list[MarginCount]) -> Section:
    """Histogram of score_chosen − score_rejected per DPO set and split."""
    title = "Chosen − rejected score margins (DPO set)"
    caption = (f"Preference pairs per margin between the chosen and the rejected answer's score, "
               f"in bins of {MARGIN_BIN:g}; the bar at 0 holds the ties.")
    empty = "No DPO set yet: run `ultraforge export dpo`."
    bins = margin_bins(rows)
    if not bins:
        return Section("margins", title, caption, None, empty)
    fig = go.Figure([go.Bar(x=list(b), y=list(b.values()), name=name, width=MARGIN_BIN,
                            offset=0) for name, b in bins.items()])
    fig.update_layout(barmode="stack", xaxis={"title": "score_chosen − score_rejected"},
                      yaxis={"title": "pairs"})
    return Section("margins", title, caption, _figure(fig, title), empty)


def win_rates(rows: list[ModelPicks]) -> Section:
    """Share of a DPO set's pairs whose chosen answer came from each model."""
    title = "Model win rates (DPO chosen model share)"
    caption = ("Share of the pairs whose chosen answer each model wrote; above each bar, the "
               "pairs it won of those it is in (chosen or rejected).")
    empty = "No DPO set yet: run `ultraforge export dpo`."
    by_set: dict[str, list[ModelPicks]] = defaultdict(list)
    for r in rows:
        by_set[r.set].append(r)
    traces = []
    for name, picks in sorted(by_set.items()):
        pairs = sum(p.chosen for p in picks)
        if not pairs:
            continue
        picks = sorted(picks, key=lambda p: (-p.chosen, p.model))
        traces.append(go.Bar(
            x=[p.model for p in picks], y=[100.0 * p.chosen / pairs for p in picks], name=name,
            customdata=[[p.chosen, p.rejected, 100.0 * p.chosen / (p.chosen + p.rejected)]
                        for p in picks],
            text=[f"{p.chosen}/{p.chosen + p.rejected}" for p in picks], textposition="outside",
            hovertemplate="%{x}: %{y:.1f}% of pairs<br>chosen %{customdata[0]}, rejected "
                          "%{customdata[1]}, win rate %{customdata[2]:.0f}%<extra></extra>"))
    if not traces:
        return Section("win-rates", title, caption, None, empty)
    fig = go.Figure(traces)
    fig.update_layout(barmode="group", xaxis={"title": "model", "tickangle": -45},
                      yaxis={"title": "pairs chosen (%)"})
    return Section("win-rates", title, caption, _figure(fig, title, 460), empty)


# -- UltraChat dialogues --------------------------------------------------------------------------

def dialogues(rounds: list[RoundCount], stops: list[StopCount]) -> Section:
    """Rounds per dialogue and why dialogues stopped, per sector."""
    title = "Dialogue rounds and stop reasons (UltraChat)"
    caption = ("Dialogues per number of rounds (left) and per stop reason (right), stacked by "
               "sector; target_rounds is a dialogue that ran its sampled length.")
    empty = "No UltraChat dialogues yet: run `ultraforge run ultrachat`."
    if not rounds and not stops:
        return Section("dialogues", title, caption, None, empty)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("rounds", "stop reasons"))
    sectors = sorted({r.sector for r in rounds} | {s.sector for s in stops})
    reasons = sorted({s.stop_reason for s in stops})
    span = range(min((r.rounds for r in rounds), default=0), max((r.rounds for r in rounds),
                                                                  default=-1) + 1)
    for i, sector in enumerate(sectors):
        per_round = {r.rounds: r.dialogues for r in rounds if r.sector == sector}
        per_reason = {s.stop_reason: s.dialogues for s in stops if s.sector == sector}
        color = TRACE_COLORS[i % len(TRACE_COLORS)]
        fig.add_trace(go.Bar(x=list(span), y=[per_round.get(n, 0) for n in span], name=sector,
                             legendgroup=sector, marker_color=color), row=1, col=1)
        fig.add_trace(go.Bar(x=reasons, y=[per_reason.get(r, 0) for r in reasons], name=sector,
                             legendgroup=sector, marker_color=color, showlegend=False),
                      row=1, col=2)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="rounds (a user turn and its reply)", dtick=1, row=1, col=1)
    fig.update_xaxes(title_text="stop reason", row=1, col=2)
    fig.update_yaxes(title_text="dialogues")
    return Section("dialogues", title, caption, _figure(fig, title), empty)


# -- translation ----------------------------------------------------------------------------------

def flags(rows: list[FlagCount], translated_sets: int) -> Section:
    """Records flagged per reason in each translated set."""
    title = "Translation flags by reason"
    caption = ("Records of each translated set flagged for each reason after the retranslations "
               "(hover: how many were left out of the set); a record can have several reasons.")
    if not rows:
        empty = (f"{translated_sets} translated set(s), no record flagged." if translated_sets
                 else "No translation yet: run `ultraforge translate --set dpo --lang ja`.")
        return Section("flags", title, caption, None, empty)
    by_set: dict[str, list[FlagCount]] = defaultdict(list)
    for r in rows:
        by_set[r.set].append(r)
    reasons = sorted({r.reason for r in rows})
    fig = go.Figure()
    for name, found in sorted(by_set.items()):
        per_reason = {r.reason: r for r in found}
        fig.add_trace(go.Bar(
            x=reasons, y=[per_reason[r].records if r in per_reason else 0 for r in reasons],
            name=name, customdata=[per_reason[r].excluded if r in per_reason else 0
                                   for r in reasons],
            hovertemplate="%{x}: %{y} records, %{customdata} left out<extra>" + name + "</extra>"))
    fig.update_layout(barmode="group", xaxis={"title": "reason"},
                      yaxis={"title": "flagged records"})
    return Section("flags", title, caption, _figure(fig, title), "")


# -- training -------------------------------------------------------------------------------------

def training(curves: list[LossCurve]) -> Section:
    """Training loss per logged step of each run, with its final eval loss."""
    title = "Training loss"
    caption = ("Training loss per logged optimizer step of each SFT/DPO run (lines) and its eval "
               "loss at the end (diamonds).")
    empty = ("No training run yet: `ultraforge train sft` (or `ultraforge demo --train`) writes "
             "<data dir>/models/<kind>/metrics.json.")
    curves = [c for c in curves if c.steps]
    if not curves:
        return Section("training", title, caption, None, empty)
    fig = go.Figure()
    for i, c in enumerate(curves):
        color = TRACE_COLORS[i % len(TRACE_COLORS)]
        fig.add_trace(go.Scatter(x=c.steps, y=c.loss, name=c.run, mode="lines+markers",
                                 legendgroup=c.run, line_color=color))
        if c.eval_loss is not None:
            fig.add_trace(go.Scatter(x=[c.steps[-1]], y=[c.eval_loss], name=f"{c.run} eval",
                                     mode="markers", legendgroup=c.run,
                                     marker={"symbol": "diamond", "size": 11, "color": color}))
    last = max(c.steps[-1] for c in curves)
    fig.update_layout(xaxis={"title": "optimizer step", "dtick": max(1, math.ceil(last / 10))},
                      yaxis={"title": "loss"})  # whole steps, about ten ticks
    return Section("training", title, caption, _figure(fig, title), empty)

