"""Segments of the translation flow (tasks/core/translate/segments.py): `join(split(t))` is `t`
byte for byte, chunks stay within the token limit where a cut is possible, cuts fall at
paragraphs, then lines, then sentence ends, and whitespace is never a chunk.

hypothesis is not in the venv: the round trip runs over a corpus of tricky texts and over
seeded random texts built from the same kinds of pieces."""

from __future__ import annotations

import random

import pytest

from tasks.core.tokens import estimate_tokens
from tasks.core.translate.segments import is_chunk, join, split
from tasks.core.translate.spans import mask, unmask

CORPUS = [
    "",
    " ",
    "\n",
    "\n\n\n",
    " \t\n \u3000\n",
    "word",
    "  leading and trailing  ",
    "\n\nFirst paragraph.\n\n\n\nSecond after a run of blank lines.\n\n",
    "Line one\nline two\r\nline three\r\n\r\nNew paragraph with CRLF.\r\n",
    "A sentence. Another one! A third? Yes. e.g. this stays. Ends here.",
    "- item one\n- item two\n\n  - nested after a blank line\n\n1. one\n2. two",
    "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |",
    "⟦0⟧\n\nText between ⟦1⟧ and ⟦2⟧.\n\n⟦3⟧",
    "Trailing spaces  \nhard break  \n\n   indented paragraph\n\ttabbed line",
    "No break spaces\u00a0\u00a0between\u00a0words. And 「日本語の文。」 Another sentence.",
    "Ellipsis... then more. Quote.\" Next. (Paren.) Next.",
    "x" * 300,
    ("word " * 200).strip(),
    "Short.\n\n" + "A long paragraph sentence that goes on. " * 30 + "\n\nShort again.",
]
LIMITS = [1, 3, 10, 40, 200, 10_000]


def _check_pieces(text: str, pieces: list[str], max_tokens: int) -> None:
    assert join(pieces) == text
    assert all(pieces), "no empty pieces"
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert is_chunk(a) or is_chunk(b), "separators are merged"
    for piece in pieces:
        if is_chunk(piece):
            assert piece == piece.strip()


@pytest.mark.parametrize("max_tokens", LIMITS)
@pytest.mark.parametrize("text", CORPUS)
def test_join_of_split_is_the_text(text, max_tokens):
    _check_pieces(text, split(text, max_tokens), max_tokens)


ATOMS = ["word", "Word", "a", "⟦7⟧", "⟦12⟧", "end.", "Stop!", "why?", "e.g.", "「文。」", "。", "-", "*",
         "1.", "#", "|", "`", "\u3000", "\u00a0", " ", "  ", "\t", "\n", "\n", "\n\n", "\n\n\n", "\r\n",
         "\n  ", " \n"]


def test_join_of_split_is_the_text_for_random_texts():
    rng = random.Random(20240601)
    for _ in range(400):
        text = "".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 80)))
        max_tokens = rng.choice(LIMITS)
        _check_pieces(text, split(text, max_tokens), max_tokens)


def test_blank_texts_are_not_chunks():
    assert split("", 10) == []
    assert split(" \n\n\t", 10) == [" \n\n\t"]
    assert not is_chunk(" \n") and not is_chunk("") and is_chunk(" x ")


def test_small_text_is_one_chunk_with_its_outer_whitespace_apart():
    assert split("\n\nHello.\n\nWorld.\n", 100) == ["\n\n", "Hello.\n\nWorld.", "\n"]


def test_paragraphs_are_packed_greedily():
    paragraphs = ["a" * 36, "b" * 36, "c" * 36, "d" * 36]  # 9 tokens each
    text = "\n\n".join(paragraphs)
    # two paragraphs and their break are 74 characters, 19 tokens; three are 28
    assert split(text, 20) == [paragraphs[0] + "\n\n" + paragraphs[1], "\n\n",
                               paragraphs[2] + "\n\n" + paragraphs[3]]
    assert split(text, 28) == ["\n\n".join(paragraphs[:3]), "\n\n", paragraphs[3]]
    assert split("\n\n\n".join(paragraphs), 9) == [paragraphs[0], "\n\n\n", paragraphs[1], "\n\n\n",
                                                   paragraphs[2], "\n\n\n", paragraphs[3]]


def test_a_long_paragraph_is_cut_at_lines_then_sentences():
    lines = ["First line of the paragraph.", "Second line of it.", "Third one. Has two sentences."]
    pieces = split("\n".join(lines), 7)
    assert pieces == [lines[0], "\n", lines[1], "\n", "Third one.", " ", "Has two sentences."]


def test_sentence_cuts_skip_abbreviations_and_keep_closers():
    text = "Fruit, e.g. apples, is good. 「Yes.」 She said. (It ended.) Next part here."
    chunks = [p for p in split(text, 3) if is_chunk(p)]
    assert chunks == ["Fruit, e.g. apples, is good.", "「Yes.」", "She said.", "(It ended.)",
                      "Next part here."]


def test_a_sentence_over_the_limit_stays_whole():
    sentence = "This single sentence is far longer than the tiny limit allows, and it has no end inside"
    assert split(sentence + ".", 3) == [sentence + "."]


def test_chunks_stay_within_the_limit_when_cuts_allow():
    text = "\n\n".join(" ".join(f"Sentence {i}.{j} is here." for j in range(12)) for i in range(6))
    for max_tokens in (8, 20, 64):
        chunks = [p for p in split(text, max_tokens) if is_chunk(p)]
        assert all(estimate_tokens(c) <= max_tokens for c in chunks)


def test_cuts_never_fall_inside_a_placeholder():
    masked = mask("Run `a` then `b` then `c` then `d` then `e` then `f` then `g` then `h` now. "
                  "And `i` `j` `k` `l` `m` `n` `o` `p` `q` `r` `s` `t`.")
    for max_tokens in (1, 2, 5, 8):
        for piece in split(masked.text, max_tokens):
            assert piece.count("⟦") == piece.count("⟧")


def test_masked_split_translated_joined_unmasked_is_the_source_when_nothing_changes():
    source = ("# Setup\n\nInstall it:\n\n```bash\npip install ultraforge\n\nultraforge --help\n```\n\n"
              "Then open https://example.com/docs. It explains `run()`.\n\nConfidence: 80%\n")
    masked = mask(source)
    pieces = split(masked.text, 6)
    # an identity "translation" of each chunk, with the outer whitespace a model may add, stripped
    translated = [f"  {p}\n".strip() if is_chunk(p) else p for p in pieces]
    assert unmask(join(translated), masked) == source
    assert "⟦0⟧" in pieces  # the whole code block is one placeholder, never cut
