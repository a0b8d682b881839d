"""Records for one chat-completion request and its outcome, shared by the gateway and the flows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.ids import content_key

# How a call is sent: one request at a time, or in a Batch API file (tasks/adapters/llm/batch.py).
Route = Literal["online", "batch"]


class ChatRequest(BaseModel):
    """One paid call. `sample_index` separates deliberate repeats (re-asks, extra samples)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Pool model name (a key of the pool's `models`).")
    messages: tuple[dict[str, Any], ...]
    params: dict[str, Any] = Field(default_factory=dict, description="Sampling parameters.")
    sample_index: int = 0
    route: Route = Field(default="online", description="How it is sent; not part of the key: "
                         "a batched and an online answer to the same call are the same answer.")
    stage: str = Field(default="", description="The flow stage asking (for batch records and "
                       "errors); not part of the key.")

    def key(self, api_model: str, params: dict[str, Any]) -> str:
        """Content key of the call as sent: API model name, messages, resolved params, index."""
        return content_key(api_model, list(self.messages), params, self.sample_index)


class Usage(BaseModel):
    """Token usage as reported by the endpoint."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatResult(BaseModel):
    """What came back for a ChatRequest. `error` is set (and `text` None) when it failed."""

    key: str
    model: str
    api_model: str
    endpoint: str
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    attempts: int = 0
    rate_limited: int = Field(default=0, description="Attempts the endpoint refused with a 429.")
    sent_at: float | None = Field(default=None, description="Unix time the last attempt went "
                                  "out (with `latency_s`, when the reply came: throughput over time).")
    from_journal: bool = False
    route: Route = "online"
    error: str | None = None
    pending: str | None = Field(default=None, description="Set (to the batch id) while the call "
                                "waits in a batch that has not finished; a later run collects it.")

    @property
    def ok(self) -> bool:
        return self.error is None and self.pending is None
