"""The LLM gateway: the only module that talks to model endpoints.

Async over the official `openai` client with its own retries off (one retry policy, here, with
tenacity). Per (endpoint, model): pacing from configured RPM/TPM, corrected by `x-ratelimit-*`
headers, adaptive concurrency where no headers come, `retry-after` honoured. Retryable failures
(rate-limit 429, 408, 409, 5xx, timeouts, connection errors) are retried with jittered
exponential backoff; fatal ones (quota, request too large, 400/401/403/404/422) raise
FatalAPIError naming the endpoint. Every success is journaled before it is returned, and a
request whose content key is journaled is never sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from tasks.adapters.errors import FatalAPIError, RetryableAPIError
from tasks.adapters.journal import Journal, journal_at
from tasks.adapters.ratelimit import Limiter, limiter_for
from tasks.adapters.settings import Settings, secret_from_env
from tasks.core.chat import ChatRequest, ChatResult, Usage
from tasks.core.pool import Endpoint, PoolConfig
from tasks.core.tokens import estimate_prompt_tokens

_FATAL_429_CODES = {"insufficient_quota", "credit_balance_exhausted"}
_FATAL_STATUS = {400, 401, 403, 404, 422}
_backoff = wait_random_exponential(multiplier=0.5, max=30)


def _retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (numeric forms), if present and sane."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        try:
            seconds = float(value) * scale
        except (TypeError, ValueError):
            continue
        if 0 < seconds <= 600:
            return seconds
    return None


def _wait(state) -> float:
    """Server's retry-after when given (plus a little jitter), else jittered exponential backoff."""
    exc = state.outcome.exception() if state.outcome else None
    hinted = getattr(exc, "retry_after", None)
    return hinted * 1.05 if hinted else _backoff(state)


def _error_body(exc: openai.APIStatusError) -> dict:
    body = exc.body if isinstance(exc.body, dict) else {}
    return body.get("error", body) if isinstance(body.get("error", body), dict) else {}


class Gateway:
    """Sends ChatRequests for the models of a pool; see the module docstring."""

    def __init__(self, pool: PoolConfig, journal: Journal | None, api_keys: dict[str, str]):
        self.pool = pool
        self.journal = journal
        self._keys = api_keys
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        self._usage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    # -- public -------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> ChatResult:
        """One request: from the journal if paid before, else sent (with retries) and journaled."""
        spec = self.pool.models.get(request.model)
        if spec is None:
            raise FatalAPIError("?", f"model {request.model!r} is not in the pool")
        api_model = self.pool.api_model(request.model)
        params = {**spec.sampling, **request.params}
        key = request.key(api_model, params)
        stats = self._usage[request.model]
        if self.journal is not None and (hit := self.journal.get(key)) is not None:
            stats["from_journal"] += 1
            return hit.model_copy(update={"from_journal": True})
        endpoint = self.pool.endpoints[spec.endpoint]
        limiter = limiter_for(endpoint.base_url, api_model, self.pool.limits(request.model))
        result = ChatResult(key=key, model=request.model, api_model=api_model,
                            endpoint=spec.endpoint)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(endpoint.max_attempts), wait=_wait, reraise=True,
                retry=retry_if_exception_type(RetryableAPIError),
            ):
                with attempt:
                    result.attempts += 1
                    await self._send(spec.endpoint, endpoint, limiter, api_model,
                                     list(request.messages), params, result)
        except RetryableAPIError as exc:
            stats["failed"] += 1
            return result.model_copy(update={"error": f"gave up after {result.attempts} "
                                                      f"attempts: {exc}"})
        stats["requests"] += 1
        stats["prompt_tokens"] += result.usage.prompt_tokens
        stats["completion_tokens"] += result.usage.completion_tokens
        stats["cost_usd"] += spec.price.cost(result.usage.prompt_tokens,
                                             result.usage.completion_tokens)
        if self.journal is not None:
            self.journal.put(result)
        return result

    async def complete_all(self, requests: Iterable[ChatRequest]) -> list[ChatResult]:
        """All requests concurrently, results in input order; a fatal error cancels the rest."""
        tasks = [asyncio.create_task(self.complete(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def usage(self) -> list[dict[str, Any]]:
        """Per model: requests paid, journal hits, failures, tokens and cost (USD)."""
        rows = []
        for model, s in sorted(self._usage.items()):
            spec = self.pool.models[model]
            rows.append({
                "model": model, "api_model": self.pool.api_model(model),
                "endpoint": spec.endpoint, "requests": int(s["requests"]),
                "from_journal": int(s["from_journal"]), "failed": int(s["failed"]),
                "prompt_tokens": int(s["prompt_tokens"]),
                "completion_tokens": int(s["completion_tokens"]),
                "cost_usd": round(s["cost_usd"], 6),
            })
        return rows

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    # -- one HTTP attempt ---------------------------------------------------------------------
    def _client(self, name: str, endpoint: Endpoint) -> openai.AsyncOpenAI:
        if name not in self._clients:
            self._clients[name] = openai.AsyncOpenAI(
                base_url=endpoint.base_url, api_key=self._keys.get(name) or "not-needed",
                max_retries=0, timeout=endpoint.timeout_s)
        return self._clients[name]

    async def _send(self, name: str, endpoint: Endpoint, limiter: Limiter, api_model: str,
                    messages: list[dict], params: dict, result: ChatResult) -> None:
        """One attempt; fills `result` on success, raises Retryable/Fatal otherwise."""
        n = int(params.get("n", 1))
        reserved = estimate_prompt_tokens(messages) + int(
            params.get("max_tokens") or params.get("max_completion_tokens") or 0) * n
        await limiter.admit(reserved)
        started = time.monotonic()
        used = latency = None
        try:
            raw = await self._client(name, endpoint).chat.completions.with_raw_response.create(
                model=api_model, messages=messages, **params)
            latency = time.monotonic() - started
            limiter.observe(raw.headers)
            completion = raw.parse()
        except openai.APIStatusError as exc:
            limiter.observe(exc.response.headers)
            self._raise_classified(name, exc, limiter)
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise RetryableAPIError(f"{type(exc).__name__}: {exc}") from None
        finally:
            if latency is None:
                limiter.finish(reserved=reserved, used=None, latency=None)
        choice = completion.choices[0]
        usage = completion.usage
        used = usage.total_tokens if usage else None
        limiter.finish(reserved=reserved, used=used, latency=latency)
        result.text = choice.message.content
        result.finish_reason = choice.finish_reason
        result.usage = Usage(prompt_tokens=usage.prompt_tokens if usage else 0,
                             completion_tokens=usage.completion_tokens if usage else 0)
        result.latency_s = round(latency, 4)

    def _raise_classified(self, name: str, exc: openai.APIStatusError, limiter: Limiter):
        status = exc.status_code
        err = _error_body(exc)
        message = self._redact(str(err.get("message") or exc.message))
        code = str(err.get("code") or err.get("type") or "")
        if status == 429 and (code in _FATAL_429_CODES or err.get("type") in _FATAL_429_CODES):
            raise FatalAPIError(name, f"quota exhausted (429 {code}): {message}") from None
        if status == 429 and message.startswith("Request too large"):
            raise FatalAPIError(name, f"request too large (429): {message}") from None
        if status in _FATAL_STATUS:
            raise FatalAPIError(name, f"HTTP {status} {code}: {message}") from None
        retry_after = _retry_after(exc.response.headers)
        if status in (429, 503):
            limiter.overloaded(retry_after)
        raise RetryableAPIError(f"HTTP {status} {code}: {message}", retry_after, status) from None

    def _redact(self, text: str) -> str:
        for key in self._keys.values():
            if key:
                text = text.replace(key, "***")
        return text


def resolve_api_keys(pool: PoolConfig) -> dict[str, str]:
    """API key per endpoint, from its environment variable or Prefect Secret block."""
    keys = {}
    for name, ep in pool.endpoints.items():
        if ep.api_key_env:
            keys[name] = secret_from_env(ep.api_key_env, owner=f"endpoint {name!r}").get_secret_value()
        elif ep.api_key_secret:
            from prefect.blocks.system import Secret

            keys[name] = Secret.load(ep.api_key_secret, _sync=True).get()
    return keys


def load_pool(settings: Settings) -> PoolConfig:
    """The pool named by settings, with every endpoint redirected when an override is set."""
    pool = PoolConfig.load(settings.pool_path)
    return pool.with_base_url(settings.endpoint_base_url) if settings.endpoint_base_url else pool


@asynccontextmanager
async def open_gateway(settings: Settings, pool: PoolConfig | None = None) -> AsyncIterator[Gateway]:
    """A Gateway over `pool` (default: settings' pool) journaling to settings' journal dir."""
    pool = pool or load_pool(settings)
    gateway = Gateway(pool, journal_at(settings.journal), resolve_api_keys(pool))
    try:
        yield gateway
    finally:
        await gateway.aclose()
