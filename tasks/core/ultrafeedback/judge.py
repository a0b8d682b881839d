"""Judge requests: rubric rendering, world knowledge, seeded shuffles, re-asks, critique prompts.

Templates are ours, under `tasks/core/templates/ultrafeedback/` (jinja2, StrictUndefined):
`judge_system.j2` + one rubric per aspect (`instruction_following`, `honesty`, `truthfulness`,
`helpfulness`, `overall_rating`), each ending with `## Annotation` and the texts labelled
`<text 1>` … `<text N>`; `critique_system.j2` + `critique.j2` for the 1-10 teacher pass.

- **One call per (prompt, aspect)** rates all of the prompt's completions together, shown in a
  seeded order (`shuffle_order`) and mapped back by the caller (docs/datasets.md#annotation,
  SHUFFLE_NUM=1).
- **World knowledge** goes to the truthfulness rubric only, as in the published code: TruthfulQA's
  correct and incorrect answers, FalseQA's false-premise note, FLAN's reference answers.
- **Re-asks** after an unparseable reply are distinct paid calls: `sample_index = attempt` and a
  short format reminder numbered by the attempt appended to the last user message (it stays the
  message holding the texts, so the reply contract is unchanged). The body itself differs per
  attempt: an endpoint sees a new request, never a repeat of one it already answered.
- **Ids** (`annotation_id`, `critique_id`) cover the rendered messages (so the responses and the
  rubric text), the judge model and its sampling: editing a rubric or regenerating a response
  re-judges instead of reusing stale rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tasks.core.chat import ChatRequest, Route
from tasks.core.ids import content_key
from tasks.core.prompts import render
from tasks.core.ultrafeedback.intake import PromptRecord
from tasks.core.ultrafeedback.parse import RatingsParse, parse_ratings
from tasks.core.ultrafeedback.principles import critique_note
from tasks.core.ultrafeedback.recipe import OVERALL_ASPECT, JudgeSpec

TYPED_ASPECTS = frozenset({"truthfulness", "helpfulness"})
NA_ASPECTS = frozenset({"honesty"})
NO_KNOWLEDGE = ("No additional world knowledge is provided for this instruction; "
                "rely on your own knowledge.")
FALSE_PREMISE = ("The question is based on a false premise: what it takes for granted is not "
                 "true, so a good answer points this out instead of answering as asked.")


def _render(name: str, **values: Any) -> str:
    return render(f"ultrafeedback/{name}", **values)


def template_name(aspect: str) -> str:
    return "overall_rating.j2" if aspect == OVERALL_ASPECT else f"{aspect}.j2"


def world_knowledge(prompt: PromptRecord) -> str:
    """The truthfulness rubric's world-knowledge block for this prompt's source."""
    if prompt.source == "false_qa":
        return FALSE_PREMISE
    lines = []
    if prompt.correct_answers:
        lines.append("Correct answers: " + "; ".join(prompt.correct_answers))
    if prompt.incorrect_answers:
        lines.append("Incorrect answers: " + "; ".join(prompt.incorrect_answers))
    return "\n".join(lines) if lines else NO_KNOWLEDGE


def shuffle_order(seed: int, prompt_id: str, aspect: str, completion_ids: list[str]) -> list[int]:
    """`order[j]` = index (in `completion_ids`) of the completion shown as text j+1."""
    return sorted(range(len(completion_ids)), key=lambda i: content_key(
        "ultrafeedback/shuffle", seed, prompt_id, aspect, completion_ids[i]))


def with_reask(messages: tuple[dict[str, Any], ...], attempt: int,
               n_texts: int | None) -> tuple[dict[str, Any], ...]:
    """Messages for attempt `attempt` (0 = first ask): a format reminder on the last user turn."""
    if attempt == 0:
        return messages
    last = dict(messages[-1])
    last["content"] = last["content"] + "\n\n" + _render("reask.j2", n=n_texts, attempt=attempt)
    return (*messages[:-1], last)


class JudgeJob(BaseModel):
    """A judge call and its re-asks: same messages, a format reminder and a new sample index."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_id: str
    messages: tuple[dict[str, Any], ...]
    judge_model: str
    params: dict[str, Any]
    route: Route = "online"
    stage: Literal["annotation", "critique"]  # set by each kind of job

    @property
    def n_texts(self) -> int | None:
        """How many texts the reply must cover (for the re-ask reminder); None for one text."""
        return None

    def request(self, attempt: int) -> ChatRequest:
        """The paid call of attempt `attempt` (0 = first ask, then re-asks)."""
        return ChatRequest(model=self.judge_model, params=self.params, sample_index=attempt,
                           messages=with_reask(self.messages, attempt, self.n_texts),
                           route=self.route, stage=self.stage)


class AnnotationJob(JudgeJob):
    """One (prompt, aspect) rating call over all of the prompt's completions."""

    stage: Literal["annotation"] = "annotation"
    annotation_id: str
    aspect: str
    completion_ids: list[str]
    order: list[int]

    @property
    def job_id(self) -> str:
        return self.annotation_id

    @property
    def n_texts(self) -> int:
        return len(self.order)


class CritiqueJob(JudgeJob):
    """One critique call for one completion."""

    stage: Literal["critique"] = "critique"
    critique_id: str
    completion_id: str

    @property
    def job_id(self) -> str:
        return self.critique_id


def annotation_job(seed: int, spec: JudgeSpec, aspect: str, prompt: PromptRecord,
                   completions: list[tuple[str, str]]) -> AnnotationJob:
    """The rating call for `aspect` over `completions` [(completion_id, response)] in plan order."""
    ids = [cid for cid, _ in completions]
    order = shuffle_order(seed, prompt.prompt_id, aspect, ids)
    values: dict[str, Any] = {"instruction": prompt.instruction,
                              "texts": [completions[i][1] for i in order]}
    if aspect == "truthfulness":
        values["world_knowledge"] = world_knowledge(prompt)
    messages = (
        {"role": "system", "content": _render("judge_system.j2", n=len(ids))},
        {"role": "user", "content": _render(template_name(aspect), **values)},
    )
    key = content_key("ultrafeedback/annotation", prompt.prompt_id, aspect, ids, order,
                      list(messages), spec.judge_model, spec.params)
    return AnnotationJob(annotation_id=key, prompt_id=prompt.prompt_id, aspect=aspect,
                         completion_ids=ids, order=order, messages=messages,
                         judge_model=spec.judge_model, params=dict(spec.params),
                         route=spec.route_of(spec.judge_model))


def critique_job(spec: JudgeSpec, prompt: PromptRecord, completion_id: str, principle: str,
                 system_prompt: str, response: str) -> CritiqueJob:
    """The teacher-feedback call for one completion (instruction + `Note:` + response)."""
    note = critique_note(principle, system_prompt)
    messages = (
        {"role": "system", "content": _render("critique_system.j2")},
        {"role": "user", "content": _render("critique.j2", instruction=prompt.instruction,
                                            note=note, response=response)},
    )
    key = content_key("ultrafeedback/critique", completion_id, list(messages),
                      spec.judge_model, spec.params)
    return CritiqueJob(critique_id=key, completion_id=completion_id, prompt_id=prompt.prompt_id,
                       messages=messages, judge_model=spec.judge_model, params=dict(spec.params),
                       route=spec.route_of(spec.judge_model))


def parse_annotation_reply(job: AnnotationJob, text: str | None) -> RatingsParse:
    """Parse a rating reply for `job`'s aspect (Type lines for typed aspects, N/A for honesty)."""
    return parse_ratings(text, len(job.order), typed=job.aspect in TYPED_ASPECTS,
                         allow_na=job.aspect in NA_ASPECTS, aspect=job.aspect)


def answered_completions(plan: Iterable[Any], responses: dict[str, str]
                         ) -> dict[str, list[tuple[Any, str]]]:
    """prompt_id → [(plan item, response)] for the completions that have a response, in plan
    (rank) order: what the judge rates."""
    grouped: dict[str, list[tuple[Any, str]]] = {}
    for it in plan:
        if it.completion_id in responses:
            grouped.setdefault(it.prompt_id, []).append((it, responses[it.completion_id]))
    return grouped


def annotation_jobs(seed: int, spec: Any, prompts: dict[str, PromptRecord],
                    answered: dict[str, list[tuple[Any, str]]]) -> list[AnnotationJob]:
    """One job per (prompt, aspect of `spec`) over its answered completions
    (`answered`: prompt_id → [(plan item, response)] in rank order)."""
    return [annotation_job(seed, spec, aspect, prompts[pid],
                           [(it.completion_id, response) for it, response in items])
            for pid, items in answered.items() for aspect in spec.aspects]


def critique_jobs(spec: Any, prompts: dict[str, PromptRecord],
                  answered: dict[str, list[tuple[Any, str]]]) -> list[CritiqueJob]:
    """One job per answered completion (`answered`: prompt_id → [(plan item, response)])."""
    return [critique_job(spec, prompts[pid], it.completion_id, it.principle,
                         it.custom_system_prompt, response)
            for pid, items in answered.items() for it, response in items]
