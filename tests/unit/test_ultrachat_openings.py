"""Openings: generation plans per sector, parsing, dedup (exact + MinHash), selection, materials."""

from tasks.core.chat import ChatResult
from tasks.core.ultrachat import openings as op
from tasks.core.ultrachat.dedup import dedup
from tasks.core.ultrachat.openings import MaterialTask, Opening, Passage
from tasks.core.ultrachat.recipe import UltraChatRecipe

RECIPE = UltraChatRecipe(seed=3, sectors={"world": {"dialogues": 20, "subtopics_per_topic": 4,
                                                    "questions_per_subtopic": 5},
                                          "writing": {"dialogues": 10},
                                          "materials": {"dialogues": 10, "tasks_per_passage": 2}})


def res(text, finish="stop"):
    return ChatResult(key="k", model="m", api_model="m", endpoint="e", text=text,
                      finish_reason=finish)


def test_level_prompts_carry_counts_and_subjects():
    [req] = op.subtopic_requests(RECIPE, ["Oceans"])
    prompt = req.messages[0]["content"]
    assert "Generate 4 subtopics" in prompt and '"Oceans"' in prompt
    assert req.model == RECIPE.models.opening_generator
    [req] = op.question_requests(RECIPE, [("Oceans", "Tides")])
    assert "Write 5 questions" in req.messages[0]["content"]
    [req] = op.instruction_requests(RECIPE, ["poem"])
    assert "Write 6 instructions" in req.messages[0]["content"]


def test_subtopics_are_spread_round_robin_over_topics():
    topics = ["A", "B", "C"]
    subs = [[f"{t}{i}" for i in range(4)] for t in topics]
    pairs = op.choose_subtopics(RECIPE, topics, subs)
    assert len(pairs) == 6  # ceil(20 * 1.5 / 5)
    assert [t for t, _ in pairs] == ["A", "B", "C", "A", "B", "C"]
    assert pairs == op.choose_subtopics(RECIPE, topics, subs)


def test_questions_parsed_only_when_they_are_questions_and_cut_lists_lose_the_tail():
    pairs = [("Oceans", "Tides"), ("Oceans", "Waves")]
    results = [res("1. Why are there two tides a day?\n2. Tides are cool.\n3. What is a neap tide?"),
               res("1. How do waves form?\n2. Why do waves brea", finish="length")]
    got = op.world_openings(pairs, results, limit=5)
    assert [o.text for o in got] == ["Why are there two tides a day?", "What is a neap tide?",
                                     "How do waves form?"]
    assert got[0].origin == {"topic": "Oceans", "subtopic": "Tides"}
    assert got[0].opening_id == Opening.make("world", "Why are there two tides a day?").opening_id


def test_expansion_replaces_text_or_keeps_original():
    o = Opening.make("writing", "Write a poem about rain.", writing_type="poem", expanded=False)
    e = op.expanded_opening(o, res("Please write a sad eight-line poem about rain for my mother."))
    assert e.text.startswith("Please write") and e.origin["expanded"] is True
    assert e.origin["instruction"] == o.text and e.opening_id != o.opening_id
    assert op.expanded_opening(o, res("I'm sorry, but I can't help with that.")) == o
    assert op.expanded_opening(o, res("Please write", finish="length")) == o
    chosen = op.choose_expansions(RECIPE, [Opening.make("writing", f"t{i}") for i in range(10)])
    assert len(chosen) == 8


def test_materials_merge_passages_into_templates_deterministically():
    tasks = [MaterialTask(kind="summarize", template="Summarize:\n\n{passage}"),
             MaterialTask(kind="translate", template="{passage}\n\nInto French.", other_language=True),
             MaterialTask(kind="title", template="Title this: {passage}")]
    text = "Rain falls on the roof. " * 20
    passages = op.clean_passages(RECIPE.sectors.materials,
                                 [Passage(passage_id="b", text=text), Passage(passage_id="a", text=text),
                                  Passage(passage_id="short", text="Too short.")])
    assert [p.passage_id for p in passages] == ["a", "b"]
    got = op.material_openings(RECIPE, passages, tasks)
    assert len(got) == 4 and all(text.strip() in o.text for o in got)
    assert got == op.material_openings(RECIPE, passages, tasks)
    assert {o.origin["passage_id"] for o in got} == {"a", "b"}


def test_task_template_must_have_one_slot():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly once"):
        MaterialTask(kind="x", template="no slot")


def test_dedup_exact_then_near_then_distinct():
    items = [Opening.make("world", t) for t in (
        "What causes the tides in the ocean every single day on our planet?",
        "what causes the TIDES in the ocean, every single day on our planet",   # exact (normalised)
        "What causes the tides in the ocean every single day on our planet Earth?",  # near
        "How do volcanoes form and why do some of them erupt violently?",
    )]
    kept, dropped = dedup(items, key=lambda o: o.opening_id, text=lambda o: o.text, threshold=0.7)
    assert [o.text for o in kept] == [items[0].text, items[3].text]
    assert [(d.reason, d.of) for d in dropped] == [("exact_duplicate", items[0].opening_id),
                                                   ("near_duplicate", items[0].opening_id)]
    assert dropped[1].similarity >= 0.7
    again, _ = dedup(items, key=lambda o: o.opening_id, text=lambda o: o.text, threshold=0.7)
    assert again == kept


def test_selection_is_seeded_and_sorted():
    cands = [Opening.make("world", f"Question number {i}?") for i in range(50)]
    a = op.select(RECIPE, "world", cands, 10)
    assert len(a) == 10 and a == sorted(a, key=lambda o: o.opening_id)
    assert a == op.select(RECIPE, "world", list(reversed(cands)), 10)
    assert a != op.select(RECIPE.model_copy(update={"seed": 4}), "world", cands, 10)
    assert op.select(RECIPE, "world", cands[:5], 10) == sorted(cands[:5], key=lambda o: o.opening_id)


def test_opening_rows_round_trip():
    o = Opening.make("materials", "Summarize: x", passage_id="p1", task="summarize")
    assert Opening.from_row(o.row()) == o


def test_dedup_checks_new_items_against_a_kept_set_without_returning_it():
    sea = Opening.make("writing", "Write a poem about the sea and the gulls over the harbour at dawn.")
    new = [Opening.make("writing", sea.text + " Please."),
           Opening.make("writing", "Tell a story about a dragon who is afraid of heights and fire.")]
    kept, dropped = dedup(new, key=lambda o: o.opening_id, text=lambda o: o.text, against=[sea])
    assert kept == [new[1]]
    assert [(d.item, d.reason, d.of) for d in dropped] == [(new[0], "near_duplicate", sea.opening_id)]


INSTRUCTIONS = {
    "poem": ["Write a poem about the rain falling on a quiet village at night in late autumn.",
             "Write a poem about a fox crossing a frozen river at dawn while the town sleeps.",
             "Write a poem about my grandmother's kitchen garden in July with bees and beans."],
    "story": ["Write a story about a lighthouse keeper who finds a message in a bottle in a storm.",
              "Write a story about two rival bakers who must share one oven for a whole week.",
              "Write a story about a robot who learns to paint by watching children in a park."],
}
LONG = ("I would like a warm, rhyming piece for my daughter's tenth birthday card, about twelve lines, "
        "mentioning her love of horses, the summer we spent at the lake, and her brave first swim.")


class ScriptedGateway:
    """Answers opening-generation requests from a script, without a network."""

    def __init__(self, expand):
        self.expand = expand

    async def complete_all(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            kind = next((t for t in INSTRUCTIONS if f"produce a {t}." in prompt), None)
            if kind:
                out.append(res("\n".join(f"{i}. {t}" for i, t in enumerate(INSTRUCTIONS[kind], 1))))
            else:
                instruction = prompt.split("\n\n")[1]
                out.append(res(self.expand(instruction)))
        return out


def test_expansions_that_repeat_selected_openings_or_each_other_are_not_selected():
    import asyncio

    from tasks.ultrachat.openings import opening_rows

    poem, story = INSTRUCTIONS["poem"], INSTRUCTIONS["story"]
    script = {poem[0]: LONG,
              poem[1]: LONG + " Thanks a lot.",                   # near-duplicates the first
              poem[2]: "I'm sorry, but I can't help with that.",  # failed: the original stays
              story[0]: poem[2] + " Please.",                      # near-duplicates a selected one
              story[1]: "Please write a funny story for teenagers about two rival bakers who share "
                        "one oven for a week; under 800 words, ending with a truce over bread.",
              story[2]: "A short story for my art class about a robot who learns to paint by "
                        "watching children in a park, in simple language, with a hopeful end."}
    recipe = UltraChatRecipe(seed=5, sectors={"writing": {"dialogues": 6, "instructions_per_type": 3,
                                                          "expand_fraction": 1.0}})
    rows, _ = asyncio.run(opening_rows(ScriptedGateway(script.__getitem__), recipe, "writing",
                                       {"types": ["poem", "story"]}))
    by_text = {r["text"]: r for r in rows}
    selected = [r for r in rows if r["status"] == "selected"]
    assert len(selected) == 6  # every original or its one accepted expansion
    again, dropped = dedup(selected, key=lambda r: r["opening_id"], text=lambda r: r["text"])
    assert dropped == []  # no two selected openings repeat each other, exactly or nearly

    near_story = by_text[poem[2] + " Please."]
    assert (near_story["status"], near_story["dup_of"]) == \
        ("near_duplicate", by_text[poem[2]]["opening_id"])
    assert by_text[story[0]]["status"] == by_text[poem[2]]["status"] == "selected"
    long_rows = [by_text[LONG], by_text[LONG + " Thanks a lot."]]
    assert sorted(r["status"] for r in long_rows) == ["near_duplicate", "selected"]
    assert sorted(by_text[t]["status"] for t in poem[:2]) == ["expanded", "selected"]
    assert {by_text[t]["status"] for t in story[1:]} == {"expanded"}
