"""The dialogue driver: turns advance concurrently across dialogues; a fatal error stops them all."""

import asyncio

import pytest

from tasks.adapters.errors import FatalAPIError
from tasks.core.chat import ChatResult, Usage
from tasks.core.ultrachat.dialogue import DialogueState
from tasks.core.ultrachat.openings import Opening
from tasks.core.ultrachat.recipe import UltraChatRecipe
from tasks.ultrachat.dialogues import grow_dialogues

RECIPE = UltraChatRecipe(seed=1)


class SlowGateway:
    """Answers every request after `delay` seconds; the `fatal_at`-th request raises FatalAPIError."""

    def __init__(self, delay=0.01, fatal_at=None):
        self.delay, self.fatal_at, self.sent = delay, fatal_at, 0

    async def complete(self, request):
        self.sent += 1
        if self.sent == self.fatal_at:
            raise FatalAPIError("local", "quota exhausted (429 insufficient_quota)")
        await asyncio.sleep(self.delay)
        user = request.messages[0]["role"] == "system" and "playing the user" in \
            request.messages[0]["content"]
        text = f"And what about case {self.sent}?" if user else f"Answer number {self.sent}."
        return ChatResult(key=str(self.sent), model=request.model, api_model=request.model,
                          endpoint="local", text=text, finish_reason="stop",
                          usage=Usage(prompt_tokens=10, completion_tokens=5))


def states(n=20):
    return [DialogueState(RECIPE, Opening.make("world", f"Why is the sky blue, case {i}?"))
            for i in range(n)]


async def test_every_dialogue_runs_to_its_target_and_results_are_kept_per_role():
    gw, ss = SlowGateway(), states()
    sink = await grow_dialogues(gw, ss)
    assert all(s.stop_reason == "target_rounds" for s in ss)
    assert len(sink["assistant"]) == sum(s.rounds for s in ss)
    assert len(sink["user_simulator"]) == sum(s.rounds - 1 for s in ss)
    assert gw.sent == len(sink["assistant"]) + len(sink["user_simulator"])


async def test_a_fatal_error_cancels_the_other_dialogues_at_once():
    gw, ss = SlowGateway(fatal_at=30), states()
    with pytest.raises(FatalAPIError, match="quota"):  # itself, not an exception group
        await grow_dialogues(gw, ss)
    at_error = gw.sent
    assert at_error <= 30 + len(ss)  # at most the turns already under way when it failed
    await asyncio.sleep(0.2)  # time for ~20 more turns per dialogue, were any still running
    assert gw.sent == at_error
    assert not any(s.stop_reason == "target_rounds" for s in ss)
