"""One dialogue as a state machine: which request comes next, and what a reply does to the dialogue.

The driver (tasks/ultrachat.py) only loops `request = state.next_request()` → send →
`state.receive(result)`. Every turn is its own gateway request whose messages are the dialogue so
far, so a rerun replays finished turns from the journal and resumes at the first unpaid one.

Accepted turns always alternate user/assistant, start with the opening and end with an assistant
turn. A failed turn is never appended: it is kept in `turns` (the audit log) and, for an
assistant failure, the user turn it answered is dropped too, so the dialogue ends on the last good
round. The opening is never dropped: when the first assistant reply fails, the dialogue keeps only
the opening, has no complete round, and the filters reject it (`no_complete_round`). Stop reasons:

    target_rounds              the sampled number of rounds was reached (the normal end)
    token_budget               the dialogue reached max_dialogue_tokens before the next round
    empty_turn                 an empty reply (user simulator or assistant)
    refusal                    a reply that declines to continue
    truncated_turn             a reply cut by max_tokens (finish_reason "length"); for the user
                               simulator only after re-asks
    repeated_turn              a reply that repeats an earlier turn of the same role
    user_reads_like_assistant  the user simulator kept answering like an assistant after re-asks
    role_leakage               role labels or role-play meta text left after stripping and re-asks
    request_failed             the gateway gave up on a request (the shard is retried, not landed)
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.chat import ChatRequest, ChatResult
from tasks.core.ids import content_key
from tasks.core.prompts import render
from tasks.core.tokens import estimate_prompt_tokens
from tasks.core.ultrachat.openings import Opening
from tasks.core.ultrachat.recipe import UltraChatRecipe
from tasks.core.ultrachat.turns import (
    has_role_leakage,
    is_refusal,
    reads_like_assistant,
    same_turn,
    strip_leading_label,
    strip_role_labels,
)

STOP_REASONS = ("target_rounds", "token_budget", "empty_turn", "refusal", "truncated_turn",
                "repeated_turn", "user_reads_like_assistant", "role_leakage", "request_failed")
FAILED_TAIL = frozenset({"empty_turn", "refusal", "truncated_turn", "repeated_turn"})
# User-simulator failures worth another sample (with a corrective note) before stopping.
REASKED = frozenset({"user_reads_like_assistant", "role_leakage", "truncated_turn"})


def shard_plan(selected: list[tuple[str, int]], shard_size: int) -> list[tuple[str, int]]:
    """(openings shard key, slice index) for every dialogue shard, from (key, selected count)."""
    return [(key, i) for key, n in selected for i in range(-(-n // shard_size))]


def sample_rounds(recipe: UltraChatRecipe, opening: Opening) -> int:
    """Rounds for this opening's dialogue, uniform in its sector's range, seeded by opening id."""
    lo, hi = recipe.sector(opening.sector).rounds
    return random.Random(content_key(recipe.seed, "rounds", opening.opening_id)).randint(lo, hi)


def dialogue_key(recipe: UltraChatRecipe, opening: Opening) -> str:
    """Id of the dialogue grown from `opening` under this recipe's models, params and limits."""
    return content_key("ultrachat/dialogue", opening.opening_id, recipe.seed,
                       recipe.models.model_dump(), recipe.params.model_dump(),
                       recipe.dialogue.model_dump(exclude={"shard_size", "shard_concurrency"}),
                       sample_rounds(recipe, opening))


class Turn(BaseModel):
    """One reply received for a dialogue, accepted or not (the turns table)."""

    model_config = ConfigDict(extra="forbid")

    dialogue_id: str
    seq: int
    round: int
    role: Literal["user", "assistant"]
    model: str
    request_key: str
    sample_index: int
    raw: str | None
    text: str | None
    verdict: str  # "ok", "stripped" or the stop/re-ask reason
    accepted: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class DialogueState:
    """A dialogue being grown: its accepted messages, its audit log and why it stopped."""

    def __init__(self, recipe: UltraChatRecipe, opening: Opening):
        self.recipe = recipe
        self.opening = opening
        self.dialogue_id = dialogue_key(recipe, opening)
        self.target_rounds = sample_rounds(recipe, opening)
        self.messages: list[dict[str, str]] = [{"role": "user", "content": opening.text}]
        self.finish_reasons: list[str | None] = [None]
        self.turns: list[Turn] = []
        self.stop_reason: str | None = None
        self.stop_role: str | None = None
        self.error: str | None = None
        self.reasks = 0
        self.stripped = 0
        self._pending: tuple[str, ChatRequest] | None = None

    @property
    def rounds(self) -> int:
        return len(self.messages) // 2

    @property
    def pending_role(self) -> str | None:
        """"user" or "assistant" while a request is out, else None."""
        return self._pending[0] if self._pending else None

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    # -- requests --------------------------------------------------------------------------------

    def next_request(self) -> ChatRequest | None:
        """The next paid call, or None once the dialogue has stopped."""
        if self.done:
            return None
        if self.messages[-1]["role"] == "user":
            req = self._assistant_request()
            self._pending = ("assistant", req)
            return req
        if self.rounds >= self.target_rounds:
            return self._stop("target_rounds", None)
        if estimate_prompt_tokens(self.messages) >= self.recipe.dialogue.max_dialogue_tokens:
            return self._stop("token_budget", None)
        req = self._user_request()
        self._pending = ("user", req)
        return req

    def _assistant_request(self) -> ChatRequest:
        system = self.recipe.dialogue.assistant_system_prompt
        head = ({"role": "system", "content": system},) if system else ()
        return ChatRequest(model=self.recipe.models.assistant,
                           messages=head + tuple(dict(m) for m in self.messages),
                           params=self.recipe.params_for("assistant"))

    def _user_request(self) -> ChatRequest:
        """The user simulator sees the dialogue as a transcript in one message (any chat
        template accepts that, unlike a role-flipped history that starts with an assistant)."""
        system = render("ultrachat/user_simulator_system.j2", sector=self.opening.sector)
        prompt = render("ultrachat/user_simulator_turn.j2", messages=self.messages, retry=self.reasks > 0)
        params = self.recipe.params_for("user_simulator")
        if self.reasks:  # a different sample: no two re-asks may send the same body
            params["seed"] = int(params.get("seed") or 0) + self.reasks
        return ChatRequest(model=self.recipe.models.user_simulator,
                           messages=({"role": "system", "content": system},
                                     {"role": "user", "content": prompt}),
                           params=params, sample_index=self.reasks)

    # -- replies ---------------------------------------------------------------------------------

    def receive(self, result: ChatResult) -> None:
        """Apply the reply to the pending request."""
        if self._pending is None:
            raise RuntimeError("receive() without a pending request")
        role, req = self._pending
        self._pending = None
        if not result.ok:
            self.error = result.error
            self._log(role, req, result, None, "request_failed", False)
            self._stop("request_failed", role)
            return
        if role == "assistant":
            self._receive_assistant(req, result)
        else:
            self._receive_user(req, result)

    def _receive_assistant(self, req: ChatRequest, result: ChatResult) -> None:
        text, stripped = strip_leading_label(result.text or "")
        verdict = ("empty_turn" if not text
                   else "truncated_turn" if result.finish_reason == "length"
                   else "refusal" if is_refusal(text)
                   else "repeated_turn" if any(same_turn(text, m["content"])
                                               for m in self.messages if m["role"] == "assistant")
                   else "ok")
        if verdict == "ok" and stripped:
            verdict = "stripped"
        self._log("assistant", req, result, text, verdict, verdict in ("ok", "stripped"))
        if verdict in ("ok", "stripped"):
            self.messages.append({"role": "assistant", "content": text})
            self.finish_reasons.append(result.finish_reason)
            return
        if len(self.messages) > 1:  # drop the user turn it answered: end on the last good round
            self.messages.pop()
            self.finish_reasons.pop()
        self._stop(verdict, "assistant")

    def _receive_user(self, req: ChatRequest, result: ChatResult) -> None:
        raw = result.text or ""
        text, stripped = strip_role_labels(raw)
        if not raw.strip():
            verdict = "empty_turn"
        elif result.finish_reason == "length":
            verdict = "truncated_turn"
        elif text and is_refusal(text):
            verdict = "refusal"
        elif not text or reads_like_assistant(text):
            verdict = "user_reads_like_assistant"
        elif has_role_leakage(text):
            verdict = "role_leakage"
        elif any(same_turn(text, m["content"]) for m in self.messages if m["role"] == "user"):
            verdict = "repeated_turn"
        else:
            verdict = "stripped" if stripped else "ok"
        accepted = verdict in ("ok", "stripped")
        self._log("user", req, result, text, verdict, accepted)
        if accepted:
            self.messages.append({"role": "user", "content": text})
            self.finish_reasons.append(result.finish_reason)
            self.stripped += stripped
            self.reasks = 0
        elif verdict in REASKED and self.reasks < self.recipe.dialogue.max_reasks:
            self.reasks += 1  # the next request re-asks with a corrective note
        else:
            self._stop(verdict, "user")

    # -- bookkeeping -----------------------------------------------------------------------------

    def _stop(self, reason: str, role: str | None) -> None:
        self.stop_reason, self.stop_role = reason, role
        return None

    def _log(self, role: str, req: ChatRequest, result: ChatResult, text: str | None,
             verdict: str, accepted: bool) -> None:
        self.turns.append(Turn(
            dialogue_id=self.dialogue_id, seq=len(self.turns), round=self.rounds + (role == "user"),
            role=role, model=req.model, request_key=result.key, sample_index=req.sample_index,
            raw=result.text, text=text, verdict=verdict, accepted=accepted,
            finish_reason=result.finish_reason, prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens))

    def record(self) -> dict[str, Any]:
        """The dialogues-table row."""
        return {
            "dialogue_id": self.dialogue_id, "opening_id": self.opening.opening_id,
            "sector": self.opening.sector, "target_rounds": self.target_rounds,
            "rounds": self.rounds, "stop_reason": self.stop_reason, "stop_role": self.stop_role,
            "messages": [dict(m) for m in self.messages], "finish_reasons": self.finish_reasons,
            "user_turns_stripped": self.stripped,
            "user_reasks": sum(t.role == "user" and t.sample_index > 0 for t in self.turns),
            "other_language_ok": bool(self.opening.origin.get("other_language", False)),
        }


class DialogueRecord(BaseModel):
    """A landed dialogue, as the filters and exports read it back."""

    model_config = ConfigDict(extra="ignore")

    dialogue_id: str
    opening_id: str
    sector: str
    target_rounds: int
    rounds: int
    stop_reason: str
    stop_role: str | None = None
    messages: list[dict[str, str]]
    finish_reasons: list[str | None] = Field(default_factory=list)
    user_turns_stripped: int = 0
    user_reasks: int = 0
    other_language_ok: bool = False
