"""Judge calls in rounds through a real Gateway whose HTTP attempt is faked: re-asks only what did
not parse, a failed call ends its job, and a fatal error stops every call still in flight."""

import asyncio

import pytest
import yaml

from tasks.adapters.errors import FatalAPIError, RetryableAPIError
from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.chat import Usage
from tasks.core.pool import PoolConfig
from tasks.core.ultrafeedback.intake import to_prompt
from tasks.core.ultrafeedback.judge import annotation_job, parse_annotation_reply
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe
from tasks.ultrafeedback.blocks import ask_all

GOOD = "\n\n".join(f"#### Output for Text {k}\nRating: 4\nRationale: Fine." for k in (1, 2))


class FakeHttpGateway(Gateway):
    """The real Gateway (retries, journal-less, complete_all) with the HTTP attempt replaced by
    `script(instruction, retry)`: a reply text, an exception to raise, or a (delay, text) pair."""

    def __init__(self, pool: PoolConfig, script):
        super().__init__(pool, None, {})
        self.script = script
        self.sent: list[tuple[str, bool]] = []
        self.answered = 0

    async def _send(self, name, endpoint, limiter, api_model, messages, params, result, budget=None):
        last = messages[-1]["content"]
        instruction = last.split("Instruction: ", 1)[1].split("\n", 1)[0]
        retry = "(retry " in last
        self.sent.append((instruction, retry))
        outcome = self.script(instruction, retry)
        delay, outcome = outcome if isinstance(outcome, tuple) else (0.0, outcome)
        await asyncio.sleep(delay)
        if isinstance(outcome, Exception):
            raise outcome
        self.answered += 1
        result.text, result.finish_reason = outcome, "stop"
        result.usage = Usage(prompt_tokens=100, completion_tokens=20)
        result.latency_s = delay


@pytest.fixture
def pool(tmp_path) -> PoolConfig:
    data = yaml.safe_load((RECIPES_DIR / "pool.yaml").read_text())
    data["endpoints"]["local"]["max_attempts"] = 1  # a retryable error fails the call at once
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data))
    return PoolConfig.load(path)


def jobs(*instructions):
    recipe = UltraFeedbackRecipe(sources=[{"name": "s", "path": "x"}])
    out = []
    for i, text in enumerate(instructions):
        prompt = to_prompt("s", i, {"instruction": text, "source": "sharegpt"}, source=None,
                           max_chars=100)
        out.append(annotation_job(0, recipe.annotation, "instruction_following", prompt,
                                  [(f"{i}-a", "first answer"), (f"{i}-b", "second answer")]))
    return out


def test_re_asks_only_unparsed_replies_and_a_failed_call_ends_its_job(pool):
    def script(instruction, retry):
        if instruction == "garbled once":
            return GOOD if retry else "I like them both."
        if instruction == "fails on re-ask":
            return RetryableAPIError("HTTP 500") if retry else "No blocks here."
        return GOOD

    gw = FakeHttpGateway(pool, script)
    todo = jobs("fine", "garbled once", "fails on re-ask")
    fine, garbled, failed = asyncio.run(ask_all(gw, todo, parse_annotation_reply, max_reasks=3, sink=[]))
    assert sorted(gw.sent) == sorted([("fine", False), ("garbled once", False),
                                      ("fails on re-ask", False), ("garbled once", True),
                                      ("fails on re-ask", True)])
    assert fine.final and fine.calls == 1 and fine.parses[0].complete
    assert garbled.final and garbled.calls == 2 and garbled.parses[-1].complete
    assert not failed.final and failed.calls == 2 and "HTTP 500" in failed.error


def test_a_fatal_error_cancels_the_calls_still_in_flight(pool):
    def script(instruction, retry):
        if instruction == "quota gone":
            return 0.01, FatalAPIError("local", "quota exhausted (429 insufficient_quota)")
        return 0.3, GOOD

    gw = FakeHttpGateway(pool, script)

    async def run():
        with pytest.raises(FatalAPIError, match="quota exhausted"):
            await ask_all(gw, jobs("quota gone", *[f"slow {i}" for i in range(6)]),
                          parse_annotation_reply, max_reasks=0, sink=[])
        await asyncio.sleep(0.6)  # long enough for any call left running to finish

    asyncio.run(run())
    assert len(gw.sent) == 7 and gw.answered == 0
