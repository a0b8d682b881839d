"""How the gateway classifies what endpoints send back, against a scripted HTTP server.

The simulator produces the common failures; these rarer ones (401, 404, 413, odd bodies) come
from a small real HTTP server that answers from a script, spoken to by the real openai client.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from tasks.adapters.errors import FatalAPIError
from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.llm.journal import Journal
from tasks.adapters.llm.ratelimit import limiter_for
from tasks.core.chat import ChatRequest
from tasks.core.pool import PoolConfig
from tasks.core.usage import usage_of

KEY = "sk-test-SECRET-9876543210"
OK = (200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})


def err(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
    return (status, {"error": {"message": message, "type": type_, "param": None, "code": code}})


class ScriptedServer:
    """Answers each chat request with the next scripted (status, body); counts requests."""

    def __init__(self):
        self.script: list[tuple[int, object]] = []
        self.requests = 0

        async def chat(request):
            await request.body()
            self.requests += 1
            status, body = self.script.pop(0) if self.script else OK
            if isinstance(body, str):
                return PlainTextResponse(body, status)
            return JSONResponse(body, status)

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)

    def stop(self):
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.stop()


def gateway_for(server: ScriptedServer, tmp_path, max_attempts: int = 4) -> Gateway:
    pool = PoolConfig.model_validate({
        "endpoints": {"ep": {"base_url": server.base_url, "max_attempts": max_attempts,
                             "limits": {"rpm": 60000, "max_concurrency": 4}}},
        "models": {"m": {"endpoint": "ep", "sampling": {"max_tokens": 16}}}})
    return Gateway(pool, Journal(tmp_path / "journal.sqlite"), {"ep": KEY})


def complete(gateway: Gateway, text: str = "hi"):
    async def go():
        try:
            request = ChatRequest(model="m", messages=({"role": "user", "content": text},))
            return await gateway.complete(request)
        finally:
            await gateway.aclose()
    return asyncio.run(go())


def slots_in_use(gateway: Gateway) -> int:
    ep = gateway.pool.endpoints["ep"]
    return limiter_for(ep.base_url, "m", gateway.pool.limits("m")).slots.in_flight


@pytest.mark.parametrize(("reply", "reason"), [
    (err(400, "Invalid value for 'temperature'"), "HTTP 400"),
    (err(401, f"Incorrect API key provided: {KEY}."), "HTTP 401"),
    (err(403, "Project does not have access to model"), "HTTP 403"),
    (err(404, "The model 'm' does not exist"), "HTTP 404"),
    (err(422, "Unprocessable"), "HTTP 422"),
    (err(413, "Payload too big", code="request_too_large"), "request too large"),
    ((429, "Request too large for gpt-4 on tokens per min (TPM): Limit 10, Requested 99."),
     "request too large"),
    (err(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota"), "quota"),
    (err(429, "You have no credits remaining", "invalid_request_error", "credit_balance_exhausted"),
     "quota"),
])
def test_fatal_replies_stop_at_once_and_never_show_the_key(server, tmp_path, reply, reason):
    server.script = [reply]
    gateway = gateway_for(server, tmp_path)
    with pytest.raises(FatalAPIError) as info:
        complete(gateway)
    assert info.value.endpoint == "ep" and reason in info.value.reason
    assert KEY not in str(info.value)
    assert server.requests == 1 and len(gateway.journal) == 0 and slots_in_use(gateway) == 0


@pytest.mark.parametrize("reply", [
    err(408, "timeout"), err(409, "conflict"), err(500, "boom", "server_error"),
    err(502, "bad gateway", "server_error"), err(503, "overloaded", "server_error"),
    (429, {"error": {"message": "Rate limit reached on requests per min (RPM)", "type": "requests",
                     "code": "rate_limit_exceeded"}}),
    (200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}),
    (200, "not json at all"),
])
def test_retryable_replies_are_retried_until_success(server, tmp_path, reply):
    server.script = [reply]
    gateway = gateway_for(server, tmp_path)
    result = complete(gateway)
    assert result.ok and result.text == "hello" and result.attempts == 2
    assert server.requests == 2 and len(gateway.journal) == 1 and slots_in_use(gateway) == 0


def test_exhausted_retries_come_back_as_an_error_and_are_not_journaled(server, tmp_path):
    server.script = [err(500, "boom", "server_error")] * 3
    gateway = gateway_for(server, tmp_path, max_attempts=3)
    result = complete(gateway)
    assert not result.ok and "gave up after 3 attempts" in result.error
    assert server.requests == 3 and len(gateway.journal) == 0 and slots_in_use(gateway) == 0
    assert usage_of("test", [result], gateway.pool.cost)[0].failed == 1


def test_a_request_rejected_on_its_own_merits_is_recorded_not_fatal(server, tmp_path):
    server.script = [err(400, "This model's maximum context length is 4097 tokens",
                         code="context_length_exceeded")]
    gateway = gateway_for(server, tmp_path)
    result = complete(gateway)
    assert not result.ok and "context_length_exceeded" in result.error
    assert server.requests == 1 and len(gateway.journal) == 0


def test_a_request_larger_than_the_token_limit_is_refused_before_it_is_sent(server, tmp_path):
    pool = PoolConfig.model_validate({
        "endpoints": {"ep": {"base_url": server.base_url, "limits": {"tpm": 100}}},
        "models": {"m": {"endpoint": "ep", "sampling": {"max_tokens": 500}}}})
    with pytest.raises(FatalAPIError, match="request too large"):
        complete(Gateway(pool, None, {}))
    assert server.requests == 0


def test_two_api_keys_on_one_url_are_paced_as_separate_accounts(server, tmp_path):
    first = gateway_for(server, tmp_path)
    second = Gateway(first.pool, None, {"ep": "sk-test-another-account"})
    assert complete(first).ok and complete(second).ok
    ep, limits = first.pool.endpoints["ep"], first.pool.limits("m")
    mine = limiter_for(ep.base_url, "m", limits, first._accounts["ep"])
    theirs = limiter_for(ep.base_url, "m", limits, second._accounts["ep"])
    assert mine is not theirs
    assert KEY not in first._accounts["ep"] and first._accounts["ep"] != second._accounts["ep"]
