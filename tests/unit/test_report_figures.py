"""The report's figures from small typed inputs: buckets and bins hold the right counts, every
trace the right values in the right order, and a section without data says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tasks.core.report import figures
from tasks.core.report.page import render
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
    TableCount,
)
from tasks.core.usage import UsageRow

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
ENDPOINTS = {"gpt-4": "openai", "gpt-4-judge": "openai", "llama": "vllm"}


def at(seconds: float, model: str, **counts: int) -> Landed:
    return Landed(landed_at=T0 + timedelta(seconds=seconds), model=model, **counts)


def trace(fig, name: str):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


# -- requests over time ---------------------------------------------------------------------------

def test_shards_are_summed_per_endpoint_into_one_second_buckets():
    b = figures.time_buckets([at(0, "gpt-4", requests=10), at(0, "gpt-4-judge", requests=5),
                              at(0, "llama", requests=4), at(2, "gpt-4", requests=6, retries=2),
                              at(2, "mystery", requests=3, failed=1)], ENDPOINTS)
    assert b.width_s == 1 and b.starts == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert b.requests == {"mystery": [0, 0, 3], "openai": [15, 0, 6], "vllm": [4, 0, 0]}
    assert b.retries == {"mystery": [0, 0, 0], "openai": [0, 0, 2], "vllm": [0, 0, 0]}
    assert b.failed["mystery"] == [0, 0, 1]  # a model not in the pool is its own endpoint


def test_a_long_run_gets_at_most_max_buckets_of_whole_seconds():
    b = figures.time_buckets([at(0, "llama", requests=1), at(149, "llama", requests=7),
                              at(150, "llama", requests=2)], ENDPOINTS, max_buckets=60)
    assert b.width_s == 3 and len(b.starts) == 51  # 150 s / 3 s, and the bucket that holds 150
    assert b.requests["vllm"][0] == 1 and b.requests["vllm"][49] == 7
    assert b.requests["vllm"][50] == 2 and sum(b.requests["vllm"]) == 10
    with pytest.raises(ValueError, match="max_buckets must be at least 1, got 0"):
        figures.time_buckets([], ENDPOINTS, max_buckets=0)


def test_the_requests_plot_shows_rates_and_only_the_retries_there_were():
    section = figures.timeline([at(0, "gpt-4", requests=30, retries=3), at(4, "llama", requests=8)],
                               ENDPOINTS)
    fig = section.figure
    assert list(trace(fig, "openai").y) == [30.0, 0, 0, 0, 0]  # requests/s in 1-s buckets
    assert list(trace(fig, "retried: openai").y) == [3, 0, 0, 0, 0]
    assert [t.name for t in fig.data] == ["openai", "vllm", "retried: openai"]
    assert fig.layout.title.text == section.title
    assert fig.layout.yaxis.title.text == "requests/s" and fig.layout.yaxis2.title.text == "attempts"
    assert "landed" in fig.layout.xaxis2.title.text


# -- usage ----------------------------------------------------------------------------------------

def test_tokens_are_stacked_per_model_and_cost_per_route_most_expensive_first():
    rows = [UsageRow(stage="ultrafeedback/generation", model="llama", requests=4, prompt_tokens=40,
                     completion_tokens=400, cost_usd=0.01),
            UsageRow(stage="ultrafeedback/annotation", model="gpt-4-judge", route="batch",
                     requests=2, prompt_tokens=2000, completion_tokens=100, cost_usd=0.5),
            UsageRow(stage="ultrafeedback/critique", model="gpt-4-judge", requests=1,
                     prompt_tokens=1000, completion_tokens=50, cost_usd=0.25),
            UsageRow(stage="ultrachat/assistant", model="replayed", from_journal=9)]
    fig = figures.usage(rows).figure
    prompt, completion = trace(fig, "prompt tokens"), trace(fig, "completion tokens")
    assert list(prompt.x) == ["gpt-4-judge", "llama"]  # a model with journal hits only is not paid
    assert list(prompt.y) == [3000, 40] and list(completion.y) == [150, 400]
    assert list(trace(fig, "batch cost").y) == [0.5, 0.0]
    assert list(trace(fig, "online cost").y) == [0.25, 0.01]
    assert fig.layout.barmode == "stack"


# -- ratings, pairs, dialogues, flags, training ---------------------------------------------------

def test_ratings_are_one_trace_per_aspect_numbers_first_then_na_then_unparsed():
    rows = [RatingCount(aspect="honesty", rating=UNPARSED, count=1),
            RatingCount(aspect="honesty", rating="5", count=7),
            RatingCount(aspect="helpfulness", rating="N/A", count=2),
            RatingCount(aspect="helpfulness", rating="1", count=3),
            RatingCount(aspect="helpfulness", rating="10", count=1)]
    fig = figures.ratings(rows).figure
    assert list(trace(fig, "helpfulness").x) == ["1", "5", "10", "N/A", UNPARSED]
    assert list(trace(fig, "helpfulness").y) == [3, 0, 1, 2, 0]
    assert list(trace(fig, "honesty").y) == [0, 7, 0, 0, 1]
    assert fig.layout.xaxis.title.text == "rating" and fig.layout.yaxis.title.text == "annotations"


def test_margins_fall_in_half_point_bins_from_their_start():
    rows = [MarginCount(set="dpo/x", split="train_prefs", margin=m, pairs=n)
            for m, n in ((0.0, 4), (0.25, 1), (4.1 - 3.6, 2), (1.0, 3), (3.75, 1))]
    rows.append(MarginCount(set="dpo/x", split="test_prefs", margin=1.4, pairs=5))
    assert figures.margin_bins(rows) == {"dpo/x test_prefs": {1.0: 5},
                                         "dpo/x train_prefs": {0.0: 5, 0.5: 2, 1.0: 3, 3.5: 1}}
    fig = figures.margins(rows).figure
    train = trace(fig, "dpo/x train_prefs")
    assert list(train.x) == [0.0, 0.5, 1.0, 3.5] and list(train.y) == [5, 2, 3, 1]
    assert train.width == 0.5 and train.offset == 0  # each bar covers [start, start + 0.5)
    with pytest.raises(ValueError, match="margin bin width must be positive"):
        figures.margin_bins(rows, width=0)


def test_win_rates_are_the_share_of_pairs_chosen_with_the_pairs_won_of_those_in():
    rows = [ModelPicks(set="dpo/x", model="a", chosen=1, rejected=3),
            ModelPicks(set="dpo/x", model="b", chosen=3, rejected=0),
            ModelPicks(set="dpo/x", model="c", chosen=0, rejected=1)]
    bar = trace(figures.win_rates(rows).figure, "dpo/x")
    assert list(bar.x) == ["b", "a", "c"]
    assert list(bar.y) == [75.0, 25.0, 0.0]
    assert list(bar.text) == ["3/3", "1/4", "0/1"]
    assert figures.win_rates([ModelPicks(set="dpo/x", model="a", chosen=0, rejected=0)]).figure is None


def test_dialogues_show_every_round_count_in_the_range_and_stop_reasons_per_sector():
    rounds = [RoundCount(sector="world", rounds=3, dialogues=2),
              RoundCount(sector="world", rounds=6, dialogues=1),
              RoundCount(sector="writing", rounds=2, dialogues=4)]
    stops = [StopCount(sector="world", stop_reason="target_rounds", dialogues=2),
             StopCount(sector="world", stop_reason="refusal", dialogues=1),
             StopCount(sector="writing", stop_reason="target_rounds", dialogues=4)]
    fig = figures.dialogues(rounds, stops).figure
    world_rounds, world_stops = (t for t in fig.data if t.name == "world")  # left, right
    writing_rounds = next(t for t in fig.data if t.name == "writing" and t.xaxis == "x")
    assert list(world_rounds.x) == [2, 3, 4, 5, 6] and list(world_rounds.y) == [0, 2, 0, 0, 1]
    assert list(writing_rounds.y) == [4, 0, 0, 0, 0]
    assert list(world_stops.x) == ["refusal", "target_rounds"] and list(world_stops.y) == [1, 2]
    assert world_rounds.marker.color == world_stops.marker.color  # one colour per sector


def test_flags_are_records_per_reason_per_set_and_no_flag_is_said_so():
    rows = [FlagCount(set="dpo-ja/x", reason="length_ratio", records=3, excluded=1),
            FlagCount(set="sft-ja/y", reason="untranslated", records=2, excluded=0)]
    fig = figures.flags(rows, 2).figure
    dpo = trace(fig, "dpo-ja/x")
    assert list(dpo.x) == ["length_ratio", "untranslated"] and list(dpo.y) == [3, 0]
    assert list(dpo.customdata) == [1, 0]
    assert figures.flags([], 2).empty == "2 translated set(s), no record flagged."
    assert "ultraforge translate" in figures.flags([], 0).empty


def test_training_is_a_loss_line_per_run_with_its_eval_loss_at_the_end():
    curves = [LossCurve(run="sft (sft)", steps=[1, 2, 3], loss=[2.0, 1.5, 1.2], eval_loss=1.3),
              LossCurve(run="dpo (dpo)", steps=[1, 2], loss=[0.69, 0.6])]
    fig = figures.training(curves).figure
    assert list(trace(fig, "sft (sft)").y) == [2.0, 1.5, 1.2]
    eval_point = trace(fig, "sft (sft) eval")
    assert list(eval_point.x) == [3] and list(eval_point.y) == [1.3]
    assert [t.name for t in fig.data] == ["sft (sft)", "sft (sft) eval", "dpo (dpo)"]
    with pytest.raises(ValidationError, match="run 'bad': 2 steps but 1 loss values"):
        LossCurve(run="bad", steps=[1, 2], loss=[1.0])


def test_bad_rows_are_refused_naming_the_field():
    with pytest.raises(ValidationError, match="count"):
        RatingCount(aspect="honesty", rating="5", count=-1)
    with pytest.raises(ValidationError, match="landed_at"):
        Landed(landed_at=datetime(2026, 1, 1), model="a")  # a time without a zone is ambiguous


# -- the page -------------------------------------------------------------------------------------

def empty_data() -> ReportData:
    return ReportData(generated_at=T0, lake="/lake", warehouse=None)


def test_with_no_data_every_section_says_so_and_the_page_has_no_plot():
    data = empty_data()
    sections = figures.sections(data)
    assert [s.key for s in sections] == ["requests", "usage", "ratings", "margins", "win-rates",
                                         "dialogues", "flags", "training"]
    assert all(s.figure is None and s.empty for s in sections)
    page = render(data, sections)
    assert page.count('class="empty"') == len(sections) + 1  # and the warehouse overview
    assert "Plotly.newPlot" not in page and "no warehouse file yet" in page


def test_the_page_is_self_contained_with_one_copy_of_plotly_and_every_figure():
    data = ReportData(generated_at=T0, lake="/data/<lake>", warehouse="/data/uf.duckdb",
                      tables=[TableCount(table="uf_annotations", rows=1234)],
                      ratings=[RatingCount(aspect="honesty", rating="5", count=7)],
                      training=[LossCurve(run="sft (sft)", steps=[1], loss=[1.0])])
    page = render(data, figures.sections(data))
    assert page.count("Plotly.newPlot(") == 2
    assert 'id="figure-ratings"' in page and 'id="figure-training"' in page
    assert page.count("<script") == 3  # plotly.js once in the head, then one per figure
    assert "<script src" not in page and "<link" not in page  # nothing to fetch
    assert "/data/&lt;lake&gt;" in page and "1,234" in page
    assert "<code>ultraforge run ultrafeedback</code>" in page  # a note's command as code
