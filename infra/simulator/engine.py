"""One chat completion, start to finish: quota, admission, faults, content, latency, accounting.

The order mirrors the real API: a spent quota and a too-large request are refused before the
buckets are touched; a full waiting queue (vLLM-like presets with `latency.max_waiting`) next;
rate limits after that; only admitted requests count as an attempt of their body and draw faults,
so fault decisions do not depend on timing.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from dataclasses import replace

from infra.simulator import errors
from infra.simulator.config import SimConfig
from infra.simulator.content import compose
from infra.simulator.faults import draw_fault, draw_twist, rng_for
from infra.simulator.latency import Scheduler, pause
from infra.simulator.ratelimit import RateLimiter
from infra.simulator.routes import Ask, Prompt, classify
from infra.simulator.stats import Stats
from infra.simulator.tokens import count_tokens, prompt_tokens, truncate

Reply = tuple[int, dict, dict[str, str]]  # status, JSON body, headers


class ChatRequest:
    """The fields of a valid request body that admission and generation use."""

    def __init__(self, body: dict, default_max_tokens: int):
        self.model: str = body["model"]
        self.messages: list[dict] = body["messages"]
        self.n: int = body.get("n") or 1
        self.max_tokens: int | None = body.get("max_completion_tokens") or body.get("max_tokens")
        self.prompt_tokens = prompt_tokens(self.messages)
        self.reserved = (self.max_tokens or default_max_tokens) * self.n
        self.cost = self.prompt_tokens + self.reserved


class Simulator:
    """All state of one simulated endpoint; `reset()` returns it to a fresh start."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Full buckets, zero counters, unspent quota, empty queue."""
        self.limiter = RateLimiter(self.config.limits)
        self.scheduler = Scheduler(self.config.latency)
        self.stats = Stats()
        self.attempts: dict[int, int] = {}  # admitted requests per body
        self.spent_tokens = 0
        self.models = dict.fromkeys(self.config.models)  # an ordered set; grows with use

    async def complete(self, body: object) -> Reply:
        """Answer one POST /v1/chat/completions body."""
        started = time.perf_counter()
        status, payload, headers = await self._complete(body)
        headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
        headers["openai-processing-ms"] = str(round((time.perf_counter() - started) * 1000))
        return status, payload, headers

    async def _complete(self, body: object) -> Reply:
        problem = invalid(body)
        if problem:
            self.stats.count("bad_request")
            return 400, errors.invalid_request(*problem), {}
        req = ChatRequest(body, self.config.limits.default_max_tokens)
        self.models.setdefault(req.model)
        refusal, headers = self._admit(req)
        if refusal:
            return refusal
        key = content_key(body)
        body_id = int(key[:16], 16)  # 64 bits: compact keys for the per-body counters
        attempt = self.attempts.get(body_id, 0)
        self.attempts[body_id] = attempt + 1
        fault_rng = rng_for(self.config.seed, key, attempt, "fault")
        fault = draw_fault(self.config.faults, fault_rng)
        if fault:
            self.stats.count(fault)
        if fault == "hang":  # answered late, when the client has normally given up
            await pause(self.config.faults.hang_s)
        elif fault:
            return self._fault(fault, req, fault_rng, headers)
        return 200, await self._answer(req, key, body_id, attempt, fault), headers

    def _admit(self, req: ChatRequest) -> tuple[Reply | None, dict[str, str]]:
        """Quota, request size, the waiting queue, then the buckets: a 429 or 503 reply, or None
        and the headers."""
        limits = self.config.limits
        if limits.quota_tokens is not None and self.spent_tokens >= limits.quota_tokens:
            return self._refuse("insufficient_quota", errors.insufficient_quota(), req.model), {}
        if self.limiter.too_large(req.cost):
            payload = errors.too_large(req.model, limits.tpm, req.cost)
            return self._refuse("request_too_large", payload, req.model), {}
        if self.scheduler.overloaded():  # every slot busy and max_waiting already waiting
            self.stats.count("queue_full")
            return (503, errors.queue_full(), {}), {}
        verdict = self.limiter.admit(req.model, req.cost)
        if not verdict.rejected:
            return None, verdict.headers
        self.stats.count(f"rate_limit_{verdict.rejected}")
        requested = 1 if verdict.rejected == "requests" else req.cost
        payload = errors.rate_limit(
            verdict.rejected, req.model, verdict.limit, verdict.used, requested, verdict.retry_after
        )
        headers = verdict.headers | errors.retry_after_headers(verdict.retry_after, limits)
        return (429, payload, headers), {}

    def _fault(self, fault: str, req: ChatRequest, rng: random.Random, headers: dict) -> Reply:
        """The reply of an injected 429 or 5xx."""
        if fault != "injected_429":
            status = int(fault.removeprefix("error_"))
            return status, errors.server_error(status), headers
        limits, wait = self.config.limits, self.config.faults.retry_after_s
        kind = rng.choice(["requests", "tokens"])
        limit = (limits.rpm if kind == "requests" else limits.tpm) or 0
        requested = 1 if kind == "requests" else req.cost
        payload = errors.rate_limit(kind, req.model, limit, limit, requested, wait)
        return 429, payload, headers | errors.retry_after_headers(wait, limits)

    async def _answer(
        self, req: ChatRequest, key: str, body_id: int, attempt: int, fault: str | None
    ) -> dict:
        """Generate the choices, wait out the latency, account, and build the completion."""
        cfg = self.config
        choices, content_faults, kind = self.generate(req, key, attempt)
        sizes = [count_tokens(c["message"]["content"]) for c in choices]
        await self.scheduler.serve(max(sizes), rng_for(cfg.seed, key, attempt, "latency"))

        completion_tokens = sum(sizes)
        if not fault:  # a hung request was counted when it hung
            self.stats.answered(
                body_id, req.model, kind, content_faults, req.prompt_tokens, completion_tokens
            )
            self.spent_tokens += req.prompt_tokens + completion_tokens
            if cfg.limits.true_up:
                self.limiter.refund(req.model, req.reserved - completion_tokens)
        return self.completion(req, key, attempt, choices, completion_tokens)

    def generate(self, req: ChatRequest, key: str, attempt: int) -> tuple[list[dict], list[str], str]:
        """The choices of one attempt at a body, their content faults (each choice's twist and
        "length" for a cut one) and the route kind: a pure function of (seed, body, attempt),
        shared with batch lines so a batched request reads like an online one."""
        cfg = self.config
        prompt = Prompt.of(req.messages)
        route, match = classify(prompt)
        budget = min(req.max_tokens or cfg.content.max_tokens, cfg.content.max_tokens)
        choices, faults = [], []
        for i in range(req.n):
            twist_rng = rng_for(cfg.seed, key, attempt, "twist", i)
            content_rng = rng_for(cfg.seed, key, "content", i)  # not the attempt: retries read alike
            ask = Ask(prompt, route, match, content_rng, budget, cfg.content)
            twist = draw_twist(cfg.faults, twist_rng, ask)  # may depend on the ask's text
            text = compose(replace(ask, twist=twist))
            forced = twist_rng.random() < cfg.faults.length
            text, finish = _truncated(text, req.max_tokens, forced)
            faults += [f for f in (twist, finish) if f and f != "stop"]
            choices.append(_choice(i, text, finish))
        return choices, faults, route.kind

    def completion(
        self, req: ChatRequest, key: str, attempt: int, choices: list[dict], completion_tokens: int
    ) -> dict:
        """The chat.completion body of one attempt at a body."""
        return {
            "id": f"chatcmpl-{content_key(self.config.seed, key, attempt)[:29]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": req.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": req.prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_ultraforge_sim",
        }

    def _refuse(self, outcome: str, payload: dict, model: str) -> Reply:
        """A fatal 429: rate-limit headers, but no retry-after."""
        self.stats.count(outcome)
        return 429, payload, self.limiter.headers(model)


def _truncated(text: str, max_tokens: int | None, forced: bool) -> tuple[str, str]:
    """Cut text that exceeds max_tokens; a forced cut (the `length` fault) of shorter text keeps
    half of it."""
    tokens = count_tokens(text)
    if max_tokens and tokens > max_tokens:
        limit = max_tokens
    elif forced:
        limit = max(1, tokens // 2)
    else:
        return text, "stop"
    return truncate(text, limit), "length"


def content_key(*parts: object) -> str:
    """sha256 hex of the parts as canonical JSON (sorted keys, no spaces): equal bodies, equal keys."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _choice(index: int, text: str, finish: str) -> dict:
    message = {"role": "assistant", "content": text, "refusal": None}
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def invalid(body: object) -> tuple[str, str | None] | None:
    """(message, param) when the body is not a chat completion request we can serve."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a non-empty array of message objects.", "messages"
    n = 1 if body.get("n") is None else body["n"]
    if not isinstance(n, int) or not 1 <= n <= 128:
        return f"{n!r} is not a valid value for 'n': expected an integer from 1 to 128.", "n"
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            return f"Invalid '{name}': expected an integer of at least 1.", name
    if body.get("stream"):
        return "The simulator does not support stream=true.", "stream"
    return None
