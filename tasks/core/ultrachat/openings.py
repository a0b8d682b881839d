"""Opening user turns for the three sectors: generation requests, parsing, merging and selection.

World questions and writing instructions are generated level by level (one batch of requests per
level); material openings are passages merged into task templates without any model call. Every
function here is pure: the task module sends the requests and hands the results back.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.core.chat import ChatRequest, ChatResult
from tasks.core.ids import content_key
from tasks.core.prompts import render
from tasks.core.ultrachat.recipe import (
    MaterialsSector,
    Sector,
    UltraChatRecipe,
    WorldSector,
    WritingSector,
)
from tasks.core.ultrachat.text import cut_at_sentence, parse_numbered_list
from tasks.core.ultrachat.turns import is_refusal, strip_role_labels


class Opening(BaseModel):
    """The first user turn of one dialogue, with where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    opening_id: str
    sector: Sector
    text: str
    origin: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def make(cls, sector: Sector, text: str, **origin: Any) -> Opening:
        text = text.strip()
        return cls(opening_id=opening_key(sector, text), sector=sector, text=text, origin=origin)

    def row(self) -> dict[str, Any]:
        return {"opening_id": self.opening_id, "sector": self.sector, "text": self.text,
                "origin": json.dumps(self.origin, sort_keys=True, ensure_ascii=False)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Opening:
        return cls(opening_id=row["opening_id"], sector=row["sector"], text=row["text"],
                   origin=json.loads(row["origin"] or "{}"))


class MaterialTask(BaseModel):
    """A task template applied to a passage; `template` contains `{passage}` exactly once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    template: str
    other_language: bool = Field(
        default=False, description="The answer is expected in another language (translation).")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, v: str) -> str:
        if v.count("{passage}") != 1:
            raise ValueError("a task template must contain {passage} exactly once")
        return v


class MaterialTasks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[MaterialTask] = Field(min_length=1)


class Passage(BaseModel):
    model_config = ConfigDict(frozen=True)

    passage_id: str
    text: str


def opening_key(sector: Sector, text: str) -> str:
    return content_key("ultrachat/opening", sector, text.strip())


def candidates_needed(recipe: UltraChatRecipe, dialogues: int) -> int:
    """Candidate openings to generate so that dedup still leaves `dialogues` to choose from."""
    return math.ceil(dialogues * recipe.oversample)


def _rng(recipe: UltraChatRecipe, *parts: Any) -> random.Random:
    return random.Random(content_key(recipe.seed, *parts))


def _request(recipe: UltraChatRecipe, prompt: str) -> ChatRequest:
    return ChatRequest(model=recipe.models.opening_generator,
                       messages=({"role": "user", "content": prompt},),
                       params=recipe.params_for("opening_generator"))


def list_items(result: ChatResult, limit: int) -> list[str]:
    """Items of a list reply; the last one is dropped when the reply was cut by max_tokens."""
    items = parse_numbered_list(result.text or "")
    if result.finish_reason == "length" and items:
        items = items[:-1]
    return items[:limit]


# -- Questions about the World -------------------------------------------------------------------

def subtopic_requests(recipe: UltraChatRecipe, topics: list[str]) -> list[ChatRequest]:
    """Level 1: one request per meta-topic for its subtopics."""
    cfg: WorldSector = recipe.sectors.world
    return [_request(recipe, render("ultrachat/world_subtopics.j2", topic=t, n=cfg.subtopics_per_topic))
            for t in topics]


def choose_subtopics(recipe: UltraChatRecipe, topics: list[str],
                     subtopics: list[list[str]]) -> list[tuple[str, str]]:
    """The (topic, subtopic) pairs to ask questions about: enough for the candidates needed,
    taken round-robin over topics (each topic's list shuffled by seed) for topical spread."""
    cfg = recipe.sectors.world
    wanted = math.ceil(candidates_needed(recipe, cfg.dialogues) / cfg.questions_per_subtopic)
    queues = []
    for topic, subs in zip(topics, subtopics, strict=True):
        subs = list(dict.fromkeys(subs))
        _rng(recipe, "world/subtopics", topic).shuffle(subs)
        queues.append([(topic, s) for s in subs])
    pairs: list[tuple[str, str]] = []
    while len(pairs) < wanted and any(queues):
        for q in queues:
            if q and len(pairs) < wanted:
                pairs.append(q.pop(0))
    return pairs


def question_requests(recipe: UltraChatRecipe, pairs: list[tuple[str, str]]) -> list[ChatRequest]:
    """Level 2: one request per chosen subtopic for specific questions."""
    n = recipe.sectors.world.questions_per_subtopic
    return [_request(recipe, render("ultrachat/world_questions.j2", topic=t, subtopic=s, n=n))
            for t, s in pairs]


def entity_requests(recipe: UltraChatRecipe, entities: list[str]) -> list[ChatRequest]:
    n = recipe.sectors.world.questions_per_entity
    return [_request(recipe, render("ultrachat/world_entity_questions.j2", entity=e, n=n)) for e in entities]


def choose_entities(recipe: UltraChatRecipe, entities: list[str]) -> list[str]:
    cfg = recipe.sectors.world
    entities = sorted(dict.fromkeys(e.strip() for e in entities if e.strip()))
    if cfg.max_entities and len(entities) > cfg.max_entities:
        entities = sorted(_rng(recipe, "world/entities").sample(entities, cfg.max_entities))
    return entities


def world_openings(pairs: list[tuple[str, str]], results: list[ChatResult], limit: int,
                   *, entity: bool = False) -> list[Opening]:
    """Questions parsed from level-2 (or entity) replies; only lines that are questions count."""
    out = []
    for (topic, subtopic), res in zip(pairs, results, strict=True):
        for q in list_items(res, limit):
            if q.endswith("?"):
                origin = {"entity": topic} if entity else {"topic": topic, "subtopic": subtopic}
                out.append(Opening.make("world", q, **origin))
    return out


# -- Writing and Creation ------------------------------------------------------------------------

def instruction_requests(recipe: UltraChatRecipe, types: list[str]) -> list[ChatRequest]:
    n = recipe.sectors.writing.instructions_per_type
    return [_request(recipe, render("ultrachat/writing_instructions.j2", writing_type=t, n=n)) for t in types]


def writing_openings(types: list[str], results: list[ChatResult], limit: int) -> list[Opening]:
    return [Opening.make("writing", text, writing_type=t, expanded=False)
            for t, res in zip(types, results, strict=True) for text in list_items(res, limit)]


def choose_expansions(recipe: UltraChatRecipe, selected: list[Opening]) -> list[Opening]:
    """The selected instructions to expand (expand_fraction of them, chosen by seed)."""
    cfg: WritingSector = recipe.sectors.writing
    k = round(cfg.expand_fraction * len(selected))
    ordered = sorted(selected, key=lambda o: o.opening_id)
    return sorted(_rng(recipe, "writing/expand").sample(ordered, k), key=lambda o: o.opening_id)


def expansion_requests(recipe: UltraChatRecipe, chosen: list[Opening]) -> list[ChatRequest]:
    return [_request(recipe, render("ultrachat/writing_expand.j2", instruction=o.text)) for o in chosen]


def expanded_opening(original: Opening, result: ChatResult) -> Opening:
    """The expanded request, or the original when the reply is empty, refused or cut off."""
    text, _ = strip_role_labels(result.text or "")
    for label in ("rewritten request:", "request:", "expanded request:"):
        if text.lower().startswith(label):
            text = text[len(label):].strip()
    if not text or is_refusal(text) or result.finish_reason == "length":
        return original
    return Opening.make("writing", text, **{**original.origin, "expanded": True,
                                            "instruction": original.text})


# -- Assistance on Existent Materials ------------------------------------------------------------

def clean_passages(cfg: MaterialsSector, passages: list[Passage]) -> list[Passage]:
    """Passages long enough to work on, cut at a sentence to max_chars, in id order."""
    out = []
    for p in sorted(passages, key=lambda p: p.passage_id):
        paragraphs = (" ".join(par.split()) for par in p.text.split("\n\n"))
        text = cut_at_sentence("\n\n".join(par for par in paragraphs if par), cfg.passages.max_chars)
        if len(text) >= cfg.passages.min_chars:
            out.append(Passage(passage_id=p.passage_id, text=text))
    return out


def material_openings(recipe: UltraChatRecipe, passages: list[Passage],
                      tasks: list[MaterialTask]) -> list[Opening]:
    """Each passage merged into up to tasks_per_passage templates (chosen per passage by seed)."""
    k = min(recipe.sectors.materials.tasks_per_passage, len(tasks))
    out = []
    for p in passages:
        for t in _rng(recipe, "materials/tasks", p.passage_id).sample(tasks, k):
            text = t.template.replace("{passage}", p.text)
            out.append(Opening.make("materials", text, passage_id=p.passage_id, task=t.kind,
                                    other_language=t.other_language))
    return out


# -- selection -----------------------------------------------------------------------------------

def select(recipe: UltraChatRecipe, sector: Sector, candidates: list[Opening],
           n: int) -> list[Opening]:
    """`n` openings drawn by seed from the (deduplicated) candidates, returned in id order."""
    ordered = sorted(candidates, key=lambda o: o.opening_id)
    if len(ordered) <= n:
        return ordered
    return sorted(_rng(recipe, "select", sector).sample(ordered, n), key=lambda o: o.opening_id)
