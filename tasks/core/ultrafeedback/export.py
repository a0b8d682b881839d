"""The raw export: records in the exact UltraFeedback shape (docs/datasets.md#schema) and their
Arrow schema.

One record per prompt that has at least one completion:
`{source, [id,] instruction, models, completions[{model, principle, custom_system_prompt,
response, annotations{<aspect>: {...} | null}, critique, overall_score, fine-grained_score}],
correct_answers, incorrect_answers}`.

- `id` (the prompt's id in its source dataset) is there only when a recipe source maps one
  (docs/datasets.md#schema has no id; the Japanese overview's records do,
  docs/datasets.md#japanese-versions); it may be null for rows of sources that map none.

- `models` and `completions` are in plan rank order; a completion that failed for good is left
  out (the released data also has rows with fewer than 4 completions, docs/datasets.md#schema).
- `annotations` holds the recipe's aspects (the four of docs/datasets.md#schema, or `overall-rating` in that
  mode); an aspect whose reply never parsed is `null`. `Type: None` is `["None"]` (see parse.py).
- `critique` / `overall_score` are null when the critique pass is off or never parsed.
  `overall_score` is as the judge wrote it under `score_revision: fixed`; under `zephyr` a score
  of 1 is stored as 10, the first release's bug (docs/datasets.md#overall-score-fix).
- `fine-grained_score` = mean of the numeric `Rating`s, skipping `N/A` and unparsed aspects;
  null when nothing was rated (docs/datasets.md#schema: "can be NaN or None").
- `correct_answers` / `incorrect_answers` are `["None"]` when the source has none (docs/datasets.md#schema).
- Records are sorted by prompt_id; with fixed inputs the JSONL text and Parquet bytes are fixed.

`join_records` is the whole join from lake rows to records, and `summarize` the counts and
histograms the run reports; the export task only reads the tables and writes the bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from statistics import fmean
from typing import Any

import pyarrow as pa

from tasks.core.ids import prompt_id
from tasks.core.ultrafeedback.intake import PromptRecord
from tasks.core.ultrafeedback.judge import TYPED_ASPECTS
from tasks.core.ultrafeedback.plan import PlanItem
from tasks.core.ultrafeedback.recipe import ScoreRevision

_UNTYPED = pa.struct([("Rating", pa.string()), ("Rationale", pa.string())])
_TYPED = pa.struct([("Type", pa.list_(pa.string())), ("Rationale", pa.string()),
                    ("Rating", pa.string()), ("Rationale For Rating", pa.string())])


SCORE_REVISION_KEY = b"ultraforge.score_revision"  # Parquet schema metadata of the raw export


def revised_score(score: float | None, revision: ScoreRevision) -> float | None:
    """The overall score as stored under `revision`: as written (`fixed`), or with the first
    release's `score if score > 1 else 10 * score` (`zephyr`, docs/datasets.md#overall-score-fix)."""
    if score is None or revision == "fixed" or score > 1:
        return score
    return 10 * score


def export_schema(aspects: Iterable[str], *, with_id: bool = False,
                  score_revision: ScoreRevision = "fixed") -> pa.Schema:
    """Arrow schema of the export for these annotation aspects (with the source `id` column when
    a source maps one). A `zephyr` revision is marked in the schema metadata, so a derived set
    that needs the fixed scores can refuse it; `fixed` adds none (the files stay as before)."""
    annotations = pa.struct([(a, _TYPED if a in TYPED_ASPECTS else _UNTYPED) for a in aspects])
    completion = pa.struct([
        ("model", pa.string()), ("principle", pa.string()),
        ("custom_system_prompt", pa.string()), ("response", pa.string()),
        ("annotations", annotations), ("critique", pa.string()),
        ("overall_score", pa.float64()), ("fine-grained_score", pa.float64()),
    ])
    return pa.schema([
        ("source", pa.string()), *([("id", pa.string())] if with_id else []),
        ("instruction", pa.string()), ("models", pa.list_(pa.string())),
        ("completions", pa.list_(completion)), ("correct_answers", pa.list_(pa.string())),
        ("incorrect_answers", pa.list_(pa.string())),
    ], metadata={SCORE_REVISION_KEY: b"zephyr"} if score_revision == "zephyr" else None)


def fine_grained_score(annotations: dict[str, dict | None]) -> float | None:
    """Mean of the integer ratings, skipping N/A and missing aspects; None if none."""
    ratings = [int(a["Rating"]) for a in annotations.values()
               if a is not None and str(a.get("Rating", "")).isdigit()]
    return fmean(ratings) if ratings else None


def build_record(prompt: PromptRecord, items: list[PlanItem], responses: dict[str, str],
                 annotations: dict[tuple[str, str], dict | None],
                 critiques: dict[str, tuple[str | None, float | None]],
                 aspects: tuple[str, ...], *, with_id: bool = False,
                 score_revision: ScoreRevision = "fixed") -> dict[str, Any] | None:
    """The export record of one prompt, or None when none of its completions exist.

    Args:
        items: the prompt's plan items in rank order.
        responses: completion_id → response text (successful completions only).
        annotations: (completion_id, aspect) → annotation dict, or None if unparsed.
        critiques: completion_id → (critique text, overall score).
    """
    completions = []
    for item in sorted(items, key=lambda it: it.rank):
        if item.completion_id not in responses:
            continue
        ann = {a: annotations.get((item.completion_id, a)) for a in aspects}
        critique, score = critiques.get(item.completion_id, (None, None))
        completions.append({
            "model": item.model,
            "principle": item.principle,
            "custom_system_prompt": item.custom_system_prompt,
            "response": responses[item.completion_id],
            "annotations": ann,
            "critique": critique,
            "overall_score": revised_score(score, score_revision),
            "fine-grained_score": fine_grained_score(ann),
        })
    if not completions:
        return None
    return {
        "source": prompt.source,
        **({"id": prompt.id} if with_id else {}),
        "instruction": prompt.instruction,
        "models": [c["model"] for c in completions],
        "completions": completions,
        "correct_answers": list(prompt.correct_answers) or ["None"],
        "incorrect_answers": list(prompt.incorrect_answers) or ["None"],
    }


def join_records(prompts: Iterable[PromptRecord], plan: Iterable[PlanItem],
                 completions: Iterable[dict], annotations: Iterable[dict],
                 critiques: Iterable[dict], *, annotation_ids: Iterable[str],
                 critique_ids: Iterable[str], aspects: tuple[str, ...], with_id: bool = False,
                 score_revision: ScoreRevision = "fixed") -> list[dict[str, Any]]:
    """The export records of this plan, sorted, from the rows of the lake tables.

    Only judgements whose ids this recipe asks for are used (`annotation_ids`, `critique_ids`):
    rows of an earlier recipe (say, ratings over 2 completions before `n_models` became 3) stay
    in the lake but never reach the export.

    Args:
        completions: `uf_completions` rows (completion_id, response).
        annotations: `uf_annotations` rows (annotation_id, completion_id, aspect, annotation).
        critiques: `uf_critiques` rows (critique_id, completion_id, critique, overall_score).
    """
    responses = {r["completion_id"]: r["response"] for r in completions
                 if r["response"] is not None}
    wanted_ann, wanted_crit = set(annotation_ids), set(critique_ids)
    ratings = {(r["completion_id"], r["aspect"]): json.loads(r["annotation"])
               if r["annotation"] else None
               for r in annotations if r["annotation_id"] in wanted_ann}
    scores = {r["completion_id"]: (r["critique"], r["overall_score"])
              for r in critiques if r["critique_id"] in wanted_crit}
    by_prompt: dict[str, list[PlanItem]] = {}
    for it in plan:
        by_prompt.setdefault(it.prompt_id, []).append(it)
    records = [rec for p in prompts if (rec := build_record(
        p, by_prompt.get(p.prompt_id, []), responses, ratings, scores, aspects, with_id=with_id,
        score_revision=score_revision))]
    return sorted(records, key=sort_key)


class Summary:
    """What the export holds, accumulated batch by batch: counts, rating and score
    histograms, principles."""

    def __init__(self, aspects: tuple[str, ...]):
        self.aspects = aspects
        self.prompts = self.completions = self.ratings = self.parsed = self.critiques = 0
        self.by_aspect: dict[str, Counter[str]] = {a: Counter() for a in aspects}
        self.scores: Counter[str] = Counter()
        self.principles: Counter[str] = Counter()

    def add(self, records: Iterable[dict[str, Any]]) -> Summary:
        for rec in records:
            self.prompts += 1
            for c in rec["completions"]:
                self.completions += 1
                self.principles[c["principle"]] += 1
                for aspect in self.aspects:
                    a = c["annotations"].get(aspect)
                    self.ratings += 1
                    self.parsed += a is not None
                    self.by_aspect[aspect][a["Rating"] if a else "unparsed"] += 1
                s = c["overall_score"]
                self.critiques += s is not None
                self.scores["none" if s is None else str(int(s))] += 1
        return self

    def result(self) -> dict[str, Any]:
        return {
            "counts": {"exported_prompts": self.prompts,
                       "exported_completions": self.completions,
                       "aspect_ratings": self.ratings, "aspect_ratings_parsed": self.parsed,
                       "critiques_parsed": self.critiques},
            "rating_histogram": [
                {"aspect": a, **{k: self.by_aspect[a].get(k, 0)
                                 for k in ("1", "2", "3", "4", "5", "N/A", "unparsed")}}
                for a in self.aspects],
            "score_histogram": [{"overall_score": k, "completions": self.scores[k]}
                                for k in [*map(str, range(1, 11)), "none"] if self.scores.get(k)],
            "principles": [{"principle": k, "completions": v}
                           for k, v in sorted(self.principles.items())],
        }


def summarize(records: list[dict[str, Any]], aspects: tuple[str, ...]) -> dict[str, Any]:
    """What the export holds: counts, rating and score histograms, principles."""
    return Summary(aspects).add(records).result()


def sort_key(record: dict[str, Any]) -> tuple[str, str]:
    """Deterministic export order: by prompt_id (sha256 of the instruction)."""
    return (prompt_id(record["instruction"]), record["source"])


def to_arrow(records: list[dict[str, Any]], aspects: tuple[str, ...]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=export_schema(aspects))
