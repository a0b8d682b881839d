"""The judge parsers over the corpus of judge replies in tests/data/judge_replies/: never a wrong
value, and at least 99.5 % of the readable values read.

Each entry's expectation is what a careful reader takes from the reply, written down with the
reply, not produced by the parser: for ratings one `{Rating, Type?}` or null per text, for
critiques the score or null. A null is a text or reply that must be refused (ambiguous, or
against the contract in a way that would need a guess).
"""

import json
import re
from pathlib import Path

from tasks.core.ultrafeedback.judge import NA_ASPECTS, TYPED_ASPECTS
from tasks.core.ultrafeedback.parse import parse_critique, parse_ratings

CORPUS = Path(__file__).resolve().parents[1] / "data" / "judge_replies"
MIN_PARSE_RATE = 0.995
SCORE_LINE = re.compile(r"^\W*overall\s+score\b", re.IGNORECASE | re.MULTILINE)


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (CORPUS / name).read_text(encoding="utf-8").splitlines()]


def read_ratings(entry: dict) -> list[dict | None]:
    aspect = entry["aspect"]
    out = parse_ratings(entry["reply"], entry["n"], typed=aspect in TYPED_ASPECTS,
                        allow_na=aspect in NA_ASPECTS, aspect=aspect)
    return [None if a is None else {k: a[k] for k in ("Rating", "Type") if k in a}
            for a in out.annotations]


def test_corpus_has_the_planned_size_and_every_aspect():
    ratings, critiques = load("ratings.jsonl"), load("critiques.jsonl")
    assert len(ratings) >= 200 and len(critiques) >= 100
    assert {e["aspect"] for e in ratings} == {"instruction_following", "honesty", "truthfulness",
                                              "helpfulness"}
    assert any(None in e["expected"] for e in ratings)
    assert any(e["expected_score"] is None for e in critiques)
    assert len({e["id"] for e in ratings}) == len(ratings)
    assert len({e["id"] for e in critiques}) == len(critiques)


def test_rating_replies_never_give_a_wrong_value_and_read_at_least_99_5_percent(capsys):
    wrong, missed, readable, replies_full, replies_readable = [], [], 0, 0, 0
    for entry in load("ratings.jsonl"):
        got = read_ratings(entry)
        assert len(got) == entry["n"] == len(entry["expected"]), entry["id"]
        for k, (want, have) in enumerate(zip(entry["expected"], got, strict=True), 1):
            if have is not None and have != want:
                wrong.append((entry["id"], k, want, have))
            elif want is not None and have is None:
                missed.append((entry["id"], k))
            readable += want is not None
        if None not in entry["expected"]:
            replies_readable += 1
            replies_full += None not in got
    rate = 1 - len(missed) / readable
    with capsys.disabled():
        print(f"\n[judge corpus] ratings: {readable - len(missed)}/{readable} readable texts read "
              f"({rate:.2%}), {replies_full}/{replies_readable} fully readable replies read "
              f"completely, {len(wrong)} wrong")
    assert wrong == []
    assert rate >= MIN_PARSE_RATE, missed
    assert replies_full / replies_readable >= MIN_PARSE_RATE, missed


def test_critique_replies_never_give_a_wrong_score_and_read_at_least_99_5_percent(capsys):
    wrong, missed, readable = [], [], 0
    for entry in load("critiques.jsonl"):
        out = parse_critique(entry["reply"])
        have, want = (out.score if out.ok else None), entry["expected_score"]
        if out.ok:  # the feedback is text, never the score line itself
            assert out.feedback and not SCORE_LINE.search(out.feedback), entry["id"]
        if have is not None and have != want:
            wrong.append((entry["id"], want, have))
        elif want is not None and have is None:
            missed.append((entry["id"], out.error))
        readable += want is not None
    rate = 1 - len(missed) / readable
    with capsys.disabled():
        print(f"\n[judge corpus] critiques: {readable - len(missed)}/{readable} readable scores "
              f"read ({rate:.2%}), {len(wrong)} wrong")
    assert wrong == []
    assert rate >= MIN_PARSE_RATE, missed
