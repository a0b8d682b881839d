"""The LLM gateway: the only module that talks to model endpoints.

Async over the official `openai` client with its own retries off (one retry policy, here, with
tenacity). Per (endpoint, model): pacing from configured RPM/TPM, corrected by `x-ratelimit-*`
headers, adaptive concurrency where no headers come, `retry-after` honoured. Retryable failures
(rate-limit 429, 408, 409, 5xx, timeouts, connection errors, malformed bodies) are retried with
jittered exponential backoff; fatal ones (quota, request too large, any other 4xx) raise
FatalAPIError naming the endpoint; a request the endpoint rejects on its own merits (context
length, content filter) comes back as a ChatResult with `error` set. Every success is journaled
before it is returned (group commits, see journal.py), and a request whose content
key is journaled is never sent again; `complete_all` looks a whole batch up in one query. A
request whose key is on its way already (another shard of the run asked the same thing a moment
earlier) is not sent either: it waits for that call's result.

One Gateway serves a whole run in one process: every shard's requests go through it on one event
loop (tasks/shards.py), over one long-lived HTTP client per endpoint. The first fatal error stops
everything at once: no later request is sent, the calls of every shard that are queued or
waiting to retry raise that error, and the few already on the wire finish and are journaled,
since they are paid for anyway (docs/engine.md#fatal-errors). `preflight` checks every endpoint a run will
use before anything is paid.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

import httpx2
import openai
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from tasks.adapters import metrics
from tasks.adapters.errors import (
    ConfigError,
    FatalAPIError,
    RejectedRequestError,
    RetryableAPIError,
)
from tasks.adapters.llm.budget import SharedBudget, budget_for
from tasks.adapters.llm.journal import Journal
from tasks.adapters.llm.ratelimit import Limiter, limiter_for
from tasks.adapters.settings import Settings, secret_from_env
from tasks.core.chat import ChatRequest, ChatResult, Usage
from tasks.core.pool import Endpoint, PoolConfig, max_tokens_of, merge_sampling
from tasks.core.tokens import estimate_prompt_tokens

if TYPE_CHECKING:  # batch.py imports this module
    from tasks.adapters.llm.batch import BatchCollector

_FATAL_429_CODES = {"insufficient_quota", "credit_balance_exhausted"}
_RETRY_STATUS = {408, 409, 429}  # and every 5xx; any other status stops the run
_TOO_LARGE = re.compile(r"request too large", re.IGNORECASE)
# Rejections of one request that say nothing about the others: recorded, not retried, not fatal.
_REJECTED_CODES = {"context_length_exceeded", "content_filter", "content_policy_violation"}
_backoff = wait_random_exponential(multiplier=0.5, max=30)


def retry_after_of(headers: Any) -> float | None:
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


def backoff(state) -> float:
    """Server's retry-after when given (plus a little jitter), else jittered exponential backoff."""
    exc = state.outcome.exception() if state.outcome else None
    hinted = getattr(exc, "retry_after", None)
    return hinted * 1.05 if hinted else _backoff(state)


def error_body(exc: openai.APIStatusError) -> dict:
    """The `error` object of an OpenAI-style body (a bare string body becomes its message)."""
    body = exc.body
    if isinstance(body, dict):
        body = body.get("error", body)
    if isinstance(body, str):
        return {"message": body}
    return body if isinstance(body, dict) else {}


class Gateway:
    """Sends ChatRequests for the models of a pool; see the module docstring."""

    def __init__(self, pool: PoolConfig, journal: Journal | None, api_keys: dict[str, str]):
        self.pool = pool
        self.journal = journal
        self._keys = api_keys
        self._accounts = {name: hashlib.sha256(key.encode()).hexdigest()[:16]
                          for name, key in api_keys.items() if key}
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        self._in_flight: set[asyncio.Task] = set()
        self._on_the_wire: set[asyncio.Task] = set()
        self._sending: dict[str, asyncio.Future[ChatResult]] = {}  # key → the call paying for it
        self.fatal: FatalAPIError | None = None
        self.fatal_at: float | None = None  # time.monotonic() of the first fatal error
        self.last_sent_at: float | None = None  # time.monotonic() of the last request sent
        self.batches: BatchCollector | None = None  # set by Resources (it needs the lake)

    # -- public -------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> ChatResult:
        """One request: from the journal if paid before, else sent (with retries) and journaled."""
        return (await self.complete_all([request]))[0]

    def resolve(self, request: ChatRequest) -> tuple[str, dict[str, Any], str]:
        """(api model, resolved sampling params, content key) of a request."""
        spec = self.pool.models.get(request.model)
        if spec is None:
            raise FatalAPIError("?", f"model {request.model!r} is not in the pool")
        api_model = self.pool.api_model(request.model)
        params = merge_sampling(spec.sampling, request.params)
        return api_model, params, request.key(api_model, params)

    async def _complete(self, request: ChatRequest, api_model: str, params: dict[str, Any],
                        key: str, hit: ChatResult | None) -> ChatResult:
        spec = self.pool.models[request.model]
        if hit is not None:
            self._count(request.model, spec.endpoint, "journal")
            return hit.model_copy(update={"from_journal": True})
        if self.fatal is not None:
            raise self.fatal
        task = asyncio.current_task()
        while (leader := self._sending.get(key)) is not None:
            try:  # the same key on its way for another call: its result, paid once
                shared = await asyncio.shield(leader)
            except asyncio.CancelledError:
                if task.cancelling():  # this call itself was cancelled
                    raise
                continue  # that call was cancelled before an answer: send it ourselves
            self._count(request.model, spec.endpoint, "journal")
            return shared.model_copy(update={"from_journal": True})
        if self.fatal is not None:
            raise self.fatal
        mine = self._sending[key] = asyncio.get_running_loop().create_future()
        self._in_flight.add(task)
        try:
            result = await self._send_with_retries(request, api_model, params, key)
            mine.set_result(result)
            return result
        except FatalAPIError as exc:
            self.abort(exc)
            raise
        except asyncio.CancelledError:
            if self.fatal is not None:  # cancelled by another call's fatal error: report that
                raise self.fatal from None
            raise
        finally:
            mine.cancel()  # no-op once answered; otherwise the waiters send it themselves
            del self._sending[key]
            self._in_flight.discard(task)

    def abort(self, exc: FatalAPIError) -> None:
        """Stop paying: remember the error and cancel every call (in every shard) that is not
        on the wire yet: queued for admission or waiting to retry. A request already sent is
        paid for whatever we do, so it is let finish and its reply journaled."""
        if self.fatal is None:
            self.fatal, self.fatal_at = exc, time.monotonic()
        current = asyncio.current_task()
        for task in list(self._in_flight - self._on_the_wire):
            if task is not current:
                task.cancel()

    async def _send_with_retries(self, request: ChatRequest, api_model: str,
                                 params: dict[str, Any], key: str) -> ChatResult:
        spec = self.pool.models[request.model]
        endpoint = self.pool.endpoints[spec.endpoint]
        limits = self.pool.limits(request.model)
        limiter = limiter_for(endpoint.base_url, api_model, limits,
                              self._accounts.get(spec.endpoint, ""))
        budget = budget_for(spec.endpoint, api_model, limits.rpm) if limits.shared and limits.rpm else None
        result = ChatResult(key=key, model=request.model, api_model=api_model,
                            endpoint=spec.endpoint)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(endpoint.max_attempts), wait=backoff, reraise=True,
                retry=retry_if_exception_type(RetryableAPIError),
            ):
                with attempt:
                    result.attempts += 1
                    try:
                        await self._send(spec.endpoint, endpoint, limiter, api_model,
                                         list(request.messages), params, result, budget=budget)
                    except RetryableAPIError as exc:
                        metrics.RETRYABLE.labels(request.model, spec.endpoint,
                                                 str(exc.status or "none")).inc()
                        result.rate_limited += exc.status == 429
                        raise
        except RetryableAPIError as exc:
            self._count(request.model, spec.endpoint, "failed")
            return result.model_copy(update={"error": f"{endpoint.base_url}: gave up after "
                                                      f"{result.attempts} attempts: {exc}"})
        except RejectedRequestError as exc:
            self._count(request.model, spec.endpoint, "rejected")
            return result.model_copy(update={"error": f"rejected: {exc}"})
        self._count(request.model, spec.endpoint, "paid", result)
        if self.journal is not None:
            await self.journal.put(result)
        return result

    def _count(self, model: str, endpoint: str, outcome: str, paid: ChatResult | None = None) -> None:
        """One request's outcome, into the process-wide metrics (the accounting that lands is
        tasks/core/usage.py, from the results)."""
        metrics.CALLS.labels(model, endpoint, outcome).inc()
        if paid is None:
            return
        pt, ct = paid.usage.prompt_tokens, paid.usage.completion_tokens
        cost = self.pool.cost(model, pt, ct)
        metrics.TOKENS.labels(model, "prompt").inc(pt)
        metrics.TOKENS.labels(model, "completion").inc(ct)
        metrics.COST.labels(model).inc(cost)
        metrics.LATENCY.labels(model).observe(paid.latency_s)

    async def complete_all(self, requests: Iterable[ChatRequest]) -> list[ChatResult]:
        """All requests concurrently, results in input order, the journal read in one query; a
        fatal error cancels every call in flight. Requests with `route="batch"` go through the
        batch route (`self.batches`, tasks/adapters/llm/batch.py), the others online, but for
        those whose key an uncollected batch holds (a stage switched to online meanwhile)."""
        if self.fatal is not None:
            raise self.fatal
        requests = list(requests)
        batched = [i for i, r in enumerate(requests) if r.route == "batch"]
        if self.batches is not None and len(batched) < len(requests):
            claimed = await self.batches.route.claimed()
            if claimed:  # paid for in a batch not collected yet: collect it, never pay twice
                batched = [i for i, r in enumerate(requests)
                           if r.route == "batch" or self.resolve(r)[2] in claimed]
        if not batched:
            return await self._online_all(requests)
        if self.batches is None:
            raise ConfigError("route batch needs the batch route: build the gateway through "
                              "Resources, which gives it the lake's batch registry")
        online = sorted(set(range(len(requests))) - set(batched))
        by_batch, by_online = await asyncio.gather(
            self.batches.complete_all([requests[i] for i in batched]),
            self._online_all([requests[i] for i in online]))
        out: list[ChatResult | None] = [None] * len(requests)
        for i, r in [*zip(batched, by_batch, strict=True), *zip(online, by_online, strict=True)]:
            out[i] = r
        return out

    async def _online_all(self, requests: list[ChatRequest]) -> list[ChatResult]:
        if not requests:
            return []
        resolved = [self.resolve(r) for r in requests]
        hits = self.journal.get_many(k for _, _, k in resolved) if self.journal is not None else {}
        if len(requests) == 1:  # the common case of sequential turns: no extra task
            api_model, params, key = resolved[0]
            return [await self._complete(requests[0], api_model, params, key, hits.get(key))]
        tasks = [asyncio.create_task(self._complete(r, a, p, k, hits.get(k)))
                 for r, (a, p, k) in zip(requests, resolved, strict=True)]
        try:
            # every call ends quickly after a fatal error (see abort), so wait for all of them:
            # the replies of requests already sent get journaled
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:  # this call itself was cancelled
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, FatalAPIError)), errors[0])
        return list(outcomes)

    async def preflight(self, models: Iterable[str]) -> None:
        """Check that every endpoint serving `models` answers `GET /models` before anything is
        paid; a FatalAPIError naming the endpoint, its URL and the cause otherwise."""
        names = sorted({self.pool.models[m].endpoint for m in models if m in self.pool.models})

        async def check(name: str) -> None:
            endpoint = self.pool.endpoints[name]
            client = self.client(name, endpoint).with_options(timeout=min(10.0, endpoint.timeout_s))
            try:
                await client.models.list()
            except openai.NotFoundError:
                return  # reachable; some OpenAI-compatible servers have no model list
            except openai.AuthenticationError as exc:
                raise FatalAPIError(name, f"{endpoint.base_url}: the API key was refused "
                                          f"(HTTP {exc.status_code})") from None
            except openai.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code == 429:
                    return  # up, but busy: the request path's retries deal with that
                raise FatalAPIError(name, f"{endpoint.base_url}: GET /models answered "
                                          f"HTTP {exc.status_code}") from None
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                raise FatalAPIError(name, f"cannot reach {endpoint.base_url}: "
                                          f"{root_cause(exc)}") from None

        await asyncio.gather(*(check(n) for n in names))

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    # -- one HTTP attempt ---------------------------------------------------------------------
    def client(self, name: str, endpoint: Endpoint) -> openai.AsyncOpenAI:
        if name not in self._clients:
            # aiohttp as the transport: a third to a half of httpx's CPU per request here
            # (benchmarks/factory_throughput.py prints both bare clients side by side)
            self._clients[name] = openai.AsyncOpenAI(
                base_url=endpoint.base_url, api_key=self._keys.get(name) or "not-needed",
                max_retries=0, timeout=endpoint.timeout_s,
                http_client=openai.DefaultAioHttpClient(timeout=endpoint.timeout_s))
        return self._clients[name]

    async def _send(self, name: str, endpoint: Endpoint, limiter: Limiter, api_model: str,
                    messages: list[dict], params: dict, result: ChatResult,
                    budget: SharedBudget | None = None) -> None:
        """One attempt; fills `result` on success, raises Retryable/Fatal/Rejected otherwise.
        With a shared budget (`limits.shared`), the attempt first takes its turn in it."""
        reserved = estimate_prompt_tokens(messages) + max_tokens_of(params, 0) * int(params.get("n", 1))
        if limiter.tokens and reserved > limiter.tokens.per_minute:
            raise FatalAPIError(name, f"request too large: needs ~{reserved} tokens (prompt + max_tokens), "
                                      f"the limit is {limiter.tokens.per_minute} TPM")
        if budget is not None:
            await budget.take()
        await limiter.admit(reserved)
        if self.fatal is not None:  # stopped while this request waited for its turn
            limiter.finish(reserved=reserved, used=None, latency=None)
            raise self.fatal
        started = self.last_sent_at = time.monotonic()
        result.sent_at = time.time()
        used = latency = None
        task = asyncio.current_task()
        self._on_the_wire.add(task)
        try:
            try:
                # The client's own request path (auth, timeouts, error mapping), without its
                # per-request typed-dict transform of the messages and model construction of
                # the reply: together they cost about as much as the HTTP exchange itself.
                raw = await self.client(name, endpoint).post(
                    "/chat/completions", cast_to=httpx2.Response,
                    body={"model": api_model, "messages": messages, **params})
                text, finish_reason, usage = reply_of(raw.json())
            except openai.APIStatusError as exc:
                limiter.observe(exc.response.headers)
                self._raise_classified(name, exc, limiter)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                raise RetryableAPIError(f"{type(exc).__name__}: {root_cause(exc)}") from None
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise RetryableAPIError(f"malformed response: {type(exc).__name__}: {exc}") from None
            latency = time.monotonic() - started
            limiter.observe(raw.headers)
            used = usage.prompt_tokens + usage.completion_tokens
        finally:
            self._on_the_wire.discard(task)
            limiter.finish(reserved=reserved, used=used, latency=latency)
        result.text = text
        result.finish_reason = finish_reason
        result.usage = usage
        result.latency_s = round(latency, 4)

    def _raise_classified(self, name: str, exc: openai.APIStatusError, limiter: Limiter) -> NoReturn:
        """Map an HTTP error to Fatal (stop the run), Rejected (this request only) or Retryable."""
        status = exc.status_code
        err = error_body(exc)
        message = self.redact(str(err.get("message") or exc.message))
        labels = {str(err.get("code") or ""), str(err.get("type") or "")} - {""}
        code = "/".join(sorted(labels))
        if labels & _FATAL_429_CODES:
            raise FatalAPIError(name, f"quota exhausted ({status} {code}): {message}") from None
        if status == 413 or "request_too_large" in labels or _TOO_LARGE.search(message):
            raise FatalAPIError(name, f"request too large ({status}): {message}") from None
        if labels & _REJECTED_CODES:
            raise RejectedRequestError(f"HTTP {status} {code}: {message}") from None
        if status in _RETRY_STATUS or status >= 500:
            retry_after = retry_after_of(exc.response.headers)
            if status in (429, 503):
                limiter.overloaded(retry_after)
            raise RetryableAPIError(f"HTTP {status} {code}: {message}", retry_after, status) from None
        raise FatalAPIError(name, f"HTTP {status} {code}: {message}") from None

    def redact(self, text: str) -> str:
        for key in self._keys.values():
            if key:
                text = text.replace(key, "***")
        return text


def reply_of(body: Any) -> tuple[str | None, str | None, Usage]:
    """(text, finish reason, usage) of a chat.completion body; KeyError/IndexError/TypeError/
    ValueError when it is not one (a malformed body, retried)."""
    choice = body["choices"][0]
    text = choice["message"].get("content")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}, not a string")
    usage = body.get("usage") or {}
    return text, choice.get("finish_reason"), Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0))


def root_cause(exc: BaseException) -> str:
    """The innermost cause of a connection error, e.g. `ConnectError: [Errno 111] Connection
    refused` rather than the SDK's generic `Connection error.`"""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


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
