"""A text's plan and its reassembly (tasks/core/translate/work.py): separators between chunks."""

from tasks.core.translate.work import ChunkOutcome, TranslationSpec, assemble, plan_text

# one paragraph of sentences, then another: cut at sentences under a small chunk limit
TEXT = ("The first sentence is about apples and pears. The second one is about plums and cherries. "
        "The third one closes the paragraph.\n\nA new paragraph starts here.")


def translated(lang: str) -> str:
    plan = plan_text(TEXT, TranslationSpec(lang=lang, max_chunk_tokens=16))
    assert len(plan.chunks) >= 3
    outcomes = {c.text: ChunkOutcome(text=f"«{i}»") for i, c in enumerate(plan.chunks)}
    return assemble(plan, outcomes).text


def test_japanese_sentences_are_joined_without_the_english_space_and_paragraphs_stay_apart():
    out = translated("ja")
    assert " " not in out and out.count("\n\n") == 1, out


def test_a_spaced_language_keeps_the_space_between_sentences():
    out = translated("fr")
    assert "» «" in out and out.count("\n\n") == 1, out
