"""The translation engine against the simulator's translation role over real HTTP: chunks
translated once each, protected spans byte-identical, reruns free, truncated replies
retranslated and then flagged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.llm.journal import Journal
from tasks.core.pool import PoolConfig
from tasks.core.translate.work import TranslationSpec
from tasks.translate.engine import translate_texts

CODE = "```python\nprint('hello')  # keep me\n```"
ANSWER = ("Solar panels turn sunlight into electricity for the whole house during the day.\n\n"
          f"{CODE}\n\nSee https://example.com/solar for the details of the installation.\n\n"
          "Confidence: 85%")
SYSTEM = "You are a helpful assistant who always explains the reasoning behind every answer."


def make_gateway(sim, tmp_path: Path) -> Gateway:
    pool = PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": sim.base_url, "timeout_s": 10}},
        "models": {"gpt-4-translator": {"endpoint": "sim", "api_model": "gpt-4o",
                                        "price": {"input_per_mtok": 2.5, "output_per_mtok": 10}}},
    })
    return Gateway(pool, Journal(tmp_path / "journal.sqlite"), {})


def translate(sim, tmp_path: Path, texts: list[str], spec: TranslationSpec | None = None):
    gateway = make_gateway(sim, tmp_path)

    async def go():
        try:
            return await translate_texts(gateway, spec or TranslationSpec(), texts)
        finally:
            await gateway.aclose()
    return asyncio.run(go())


def japanese_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum("\u3040" <= c <= "\u9fff" for c in letters) / max(1, len(letters))


def test_texts_come_back_japanese_with_code_links_and_confidence_lines_byte_identical(
        make_simulator, tmp_path):
    sim = make_simulator()
    [outcome], run = translate(sim, tmp_path, [ANSWER])
    assert outcome.flags == {} and run.flagged_chunks == 0
    text = outcome.text
    assert CODE in text and "https://example.com/solar" in text
    assert text.endswith("Confidence: 85%")
    assert japanese_share(text.replace(CODE, "").replace("https://example.com/solar", "")) > 0.8
    assert text.count("\n\n") == ANSWER.count("\n\n")  # paragraph breaks are copied


def test_each_unique_chunk_is_one_call_and_a_rerun_makes_none(make_simulator, tmp_path):
    sim = make_simulator()
    texts = [SYSTEM, "Why is the sky blue during the day?", SYSTEM, SYSTEM, ""]
    outcomes, run = translate(sim, tmp_path, texts)
    assert run.chunks == 4 and run.unique_chunks == 2  # the empty text has no chunk
    assert sim.stats()["requests"] == 2
    assert outcomes[0] == outcomes[2] == outcomes[3] and outcomes[4].text == ""

    again, rerun = translate(sim, tmp_path, texts)
    assert again == outcomes and sim.stats()["requests"] == 2
    assert all(r.from_journal for r in rerun.results)


def test_a_truncated_reply_is_retranslated_then_flagged_with_its_reason(make_simulator, tmp_path):
    sim = make_simulator(overrides={"faults.length": 1.0})
    spec = TranslationSpec(max_retranslations=2)
    [outcome], run = translate(sim, tmp_path, [SYSTEM], spec)
    assert "truncated" in outcome.flags and run.flags["truncated"] == 1
    assert run.retranslations == 2 and sim.stats()["requests"] == 3


def test_long_texts_are_cut_into_chunks_under_the_limit_and_joined_back(make_simulator, tmp_path):
    sim = make_simulator()
    paragraphs = [f"Paragraph {i} explains one more step of the method in a few plain words."
                  for i in range(12)]
    text = "\n\n".join(paragraphs)
    [outcome], run = translate(sim, tmp_path, [text], TranslationSpec(max_chunk_tokens=60))
    assert run.chunks > 3 and outcome.flags == {}
    assert outcome.text.count("\n\n") == text.count("\n\n")


@pytest.mark.parametrize(("fault", "reason"), [
    ("faults.untranslated", "untranslated"), ("faults.broken_code", "spans_damaged"),
    ("faults.commentary", "commentary"), ("faults.length", "truncated")])
def test_each_fault_is_caught_retranslated_and_flagged_with_its_reason(
        make_simulator, tmp_path, fault, reason):
    sim = make_simulator(overrides={fault: 1.0})
    [outcome], run = translate(sim, tmp_path, [ANSWER], TranslationSpec(max_retranslations=2))
    assert reason in outcome.flags and run.flags.get(reason) == 1
    assert run.retranslations == 2 and sim.stats()["requests"] == 3  # first ask + 2 retries


@pytest.mark.parametrize("fault", ["faults.untranslated", "faults.broken_code",
                                   "faults.commentary", "faults.length"])
def test_a_fault_that_strikes_sometimes_ends_retranslated_and_clean(make_simulator, tmp_path, fault):
    sim = make_simulator(overrides={fault: 0.5})
    texts = [f"{ANSWER}\n\nCase {i} adds one more sentence about the panels." for i in range(12)]
    outcomes, run = translate(sim, tmp_path, texts, TranslationSpec(max_retranslations=6))
    assert run.retranslations > 0  # some first answers failed a check
    assert all(o.flags == {} and CODE in o.text for o in outcomes)  # and were asked again
