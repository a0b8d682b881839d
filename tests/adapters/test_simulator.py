"""The simulator over real HTTP with the official openai client: limits, 429s, faults, content."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import openai
import pytest

from infra.simulator import SimConfigError, load_config, preset_names
from infra.simulator.ratelimit import go_duration
from infra.simulator.tokens import count_tokens, prompt_tokens, truncate
from tests.fixtures.sim import ZERO_LATENCY

RATELIMIT_HEADERS = [
    f"x-ratelimit-{what}-{dim}" for what in ("limit", "remaining", "reset") for dim in ("requests", "tokens")
]
GO_DURATION = re.compile(r"^(?:\d+h)?(?:\d+m)?(?:\d+(?:\.\d+)?s|\d+ms)$")
TYPED_BLOCK = re.compile(
    r"#### Output for Text (\d+)\nType: (?:None|[1-3](?:, [1-3])*)\nRationale: [^\n]+\n"
    r"Rating: (?:[1-5]|N/A)\nRationale for Rating: [^\n]+"
)
PLAIN_BLOCK = re.compile(r"#### Output for Text (\d+)\nRating: (?:[1-5]|N/A)\nRationale: [^\n]+")
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def client(sim, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, **kwargs)


def ask(sim, content: str, system: str | None = None, **params):
    """One raw chat completion (headers + parsed body)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    params.setdefault("model", "gpt-4o-mini")
    return client(sim).chat.completions.with_raw_response.create(messages=messages, **params)


def text_of(sim, content: str, system: str | None = None, **params) -> str:
    return ask(sim, content, system, **params).parse().choices[0].message.content


def rejection(sim, content: str = "hi", **params) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        ask(sim, content, **params)
    return info.value


def judge_prompt(texts: int, typed: bool) -> str:
    fmt = "Type: <types>\nRationale: ...\nRating: <1-5>\n" if typed else "Rating: <1-5 or N/A>\n"
    body = "\n".join(f"<text {i}> Candidate answer number {i}." for i in range(1, texts + 1))
    return f"Rate each text.\nFormat:\n#### Output for Text 1\n{fmt}\n<instruction> Bake bread.\n{body}"


# --- headers, usage, admission -------------------------------------------------------------


def test_go_duration_format():
    assert [go_duration(s) for s in (0, 0.012, 0.0001, 1, 1.5, 20, 360, 3725.5)] == [
        "0s", "12ms", "1ms", "1s", "1.5s", "20s", "6m0s", "1h2m5.5s"
    ]  # fmt: skip


def test_ok_response_has_usage_and_the_six_headers(make_simulator):
    sim = make_simulator("tier1", overrides=ZERO_LATENCY)
    raw = ask(sim, "Explain photosynthesis.", max_tokens=100)
    usage = raw.parse().usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "500" and h["x-ratelimit-limit-tokens"] == "500000"
    # 1 of 8.33 requests and prompt+100 of 8333 tokens left the per-second buckets.
    assert h["x-ratelimit-remaining-requests"] == "440"
    assert 490_000 < int(h["x-ratelimit-remaining-tokens"]) < 494_000
    assert h["x-ratelimit-reset-requests"] == "120ms"
    assert all(GO_DURATION.match(h[f"x-ratelimit-reset-{d}"]) for d in ("requests", "tokens"))
    assert h["x-request-id"].startswith("req_") and int(h["openai-processing-ms"]) >= 0


def test_requests_429_is_retryable_after_the_hinted_wait(make_simulator):
    sim = make_simulator("tier1", overrides={**ZERO_LATENCY, "limits.rpm": 120})  # 2 per second
    started = time.monotonic()
    for _ in range(2):
        ask(sim, "hi", max_tokens=5)
    err = rejection(sim, max_tokens=5)
    elapsed = time.monotonic() - started
    body = err.body
    assert err.status_code == 429
    assert (body["type"], body["code"]) == ("requests", "rate_limit_exceeded")
    assert "on requests per min (RPM): Limit 120" in body["message"]
    h = err.response.headers
    assert all(name in h for name in RATELIMIT_HEADERS)
    # The bucket is (nearly) empty: remaining counts what refilled since, in per-minute units
    # (2 requests a second are 120 units a second; a GC pause in the client makes it more).
    assert int(h["x-ratelimit-remaining-requests"]) <= 120 * elapsed + 1
    assert GO_DURATION.match(h["x-ratelimit-reset-requests"])
    assert h["retry-after"] == "1" and 0 < int(h["retry-after-ms"]) <= 500
    time.sleep(int(h["retry-after-ms"]) / 1000)
    assert ask(sim, "hi", max_tokens=5).http_response.status_code == 200
    assert sim.stats()["by_outcome"]["rate_limit_requests"] == 1


def test_tokens_429_and_large_requests_go_into_debt(make_simulator):
    sim = make_simulator("tier1", overrides={**ZERO_LATENCY, "limits.tpm": 6000})  # 100 per second
    # 1000 tokens exceed the per-second bucket but not the minute: admitted while the bucket is full.
    assert ask(sim, "hi", max_tokens=1000).http_response.status_code == 200
    err = rejection(sim, max_tokens=10)
    assert (err.body["type"], err.body["code"]) == ("tokens", "rate_limit_exceeded")
    assert "on tokens per min (TPM): Limit 6000" in err.body["message"]
    h = err.response.headers
    assert h["x-ratelimit-remaining-tokens"] == "0"
    assert h["retry-after"] == "10" and 9_000 < int(h["retry-after-ms"]) <= 10_100
    assert all(name in h for name in RATELIMIT_HEADERS)


def test_request_too_large_is_fatal_without_retry_after(make_simulator):
    sim = make_simulator("tier1", overrides={**ZERO_LATENCY, "limits.tpm": 1000})
    err = rejection(sim, max_tokens=2000)
    assert isinstance(err, openai.RateLimitError)
    assert err.body["message"].startswith("Request too large for gpt-4o-mini")
    assert "Limit 1000, Requested 2005." in err.body["message"]
    assert "retry-after" not in err.response.headers
    assert "retry-after-ms" not in err.response.headers
    assert all(name in err.response.headers for name in RATELIMIT_HEADERS)
    assert sim.stats()["by_outcome"]["request_too_large"] == 1


def test_insufficient_quota_once_spent(make_simulator):
    sim = make_simulator("tier5", overrides={**ZERO_LATENCY, "limits.quota_tokens": 20})
    assert ask(sim, "Tell me about tides.", max_tokens=100).http_response.status_code == 200
    for _ in range(2):
        err = rejection(sim, "Another question")
        assert err.body["type"] == err.body["code"] == "insufficient_quota"
        assert "retry-after" not in err.response.headers
    assert sim.stats()["by_outcome"]["insufficient_quota"] == 2


def test_retry_after_headers_can_be_switched_off(make_simulator):
    sim = make_simulator("tier1", overrides={**ZERO_LATENCY, "limits.rpm": 60, "limits.retry_after": False})
    ask(sim, "hi", max_tokens=5)
    h = rejection(sim, max_tokens=5).response.headers
    assert "retry-after" not in h and "retry-after-ms" in h


def test_true_up_refunds_unused_tokens(make_simulator):
    def second_request_after_a_big_one(true_up: bool):
        overrides = {**ZERO_LATENCY, "limits.tpm": 60_000, "limits.true_up": true_up}
        sim = make_simulator("tier1", overrides=overrides)
        ask(sim, "hi", max_tokens=5000)  # 5005 reserved of a 1000-token bucket; ≤ 400 used
        return ask(sim, "hi", max_tokens=1)

    with pytest.raises(openai.RateLimitError):
        second_request_after_a_big_one(False)
    refunded = second_request_after_a_big_one(True)
    assert int(refunded.headers["x-ratelimit-remaining-tokens"]) > 30_000


# --- faults and determinism ----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_injected_5xx(make_simulator, status):
    sim = make_simulator(overrides={f"faults.rate_{status}": 1.0})
    err = rejection(sim)
    assert err.status_code == status and err.body["type"] == "server_error"
    assert sim.stats()["by_outcome"][f"error_{status}"] == 1


def test_injected_429_carries_retry_after(make_simulator):
    sim = make_simulator(overrides={"faults.rate_429": 1.0, "faults.retry_after_s": 2.5})
    err = rejection(sim)
    assert err.status_code == 429 and err.body["code"] == "rate_limit_exceeded"
    assert err.response.headers["retry-after"] == "3"
    assert err.response.headers["retry-after-ms"] == "2500"


def test_hang_makes_the_client_time_out(make_simulator):
    sim = make_simulator(overrides={"faults.hang": 1.0, "faults.hang_s": 0.5})
    with pytest.raises(openai.APITimeoutError):
        client(sim, timeout=0.1).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert sim.stats()["by_outcome"]["hang"] == 1


def test_content_depends_only_on_seed_and_body(make_simulator):
    a, b, c = (make_simulator(seed=s) for s in (0, 0, 1))
    prompt = "Explain how vaccines train the immune system."
    first = text_of(a, prompt, max_tokens=200)
    assert first == text_of(b, prompt, max_tokens=200) == text_of(a, prompt, max_tokens=200)
    assert first != text_of(c, prompt, max_tokens=200)
    assert first != text_of(a, prompt, max_tokens=200, temperature=0.5)
    choices = ask(a, prompt, n=3, max_tokens=200).parse().choices
    assert len({ch.message.content for ch in choices}) == 3


def test_fault_decisions_are_reproducible_regardless_of_order(make_simulator):
    overrides = {"faults.rate_5xx": 0.4}
    prompts = [f"Question {i} about rivers" for i in range(30)]

    def outcomes(sim, order):
        out = {}
        for p in order:
            try:
                out[p] = ask(sim, p, max_tokens=100).http_response.status_code
            except openai.APIStatusError as err:
                out[p] = err.status_code
        return out

    first = outcomes(make_simulator(overrides=overrides), prompts)
    assert first == outcomes(make_simulator(overrides=overrides), prompts[::-1])
    assert {200, 500, 502, 503} <= set(first.values())
    # A failed body is retried until it succeeds; each retry is a fresh, seeded attempt.
    sim = make_simulator(overrides=overrides)
    failed = next(p for p, status in first.items() if status != 200)
    for _ in range(20):
        try:
            ask(sim, failed, max_tokens=100)
            break
        except openai.APIStatusError:
            continue
    stats = sim.stats()
    assert stats["by_outcome"]["ok"] == 1 and stats["ok_repeats"] == 0


def test_stats_count_outcomes_models_kinds_and_repeats(simulator):
    ask(simulator, "What is a black hole?", max_tokens=50)
    ask(simulator, "What is a black hole?", max_tokens=50)  # the same paid call again
    ask(simulator, "List 3 topics about space.", model="gpt-4o", max_tokens=50)
    stats = simulator.stats()
    assert stats["requests"] == 3 and stats["by_outcome"]["ok"] == 3
    assert sum(stats["by_outcome"].values()) == 3
    assert stats["ok_repeats"] == 1 and stats["ok_repeats_by_kind"] == {"answer": 1}
    assert stats["by_model"]["gpt-4o-mini"]["ok"] == 2 and stats["by_model"]["gpt-4o"]["ok"] == 1
    assert stats["by_model"]["gpt-4o"]["completion_tokens"] > 0
    assert stats["by_kind"] == {"answer": 2, "list": 1}
    simulator.reset()
    assert simulator.stats()["requests"] == 0 and simulator.stats()["ok_repeats"] == 0


def test_length_fault_truncates(make_simulator):
    sim = make_simulator(overrides={"faults.length": 1.0})
    choice = ask(sim, "Describe the water cycle.", max_tokens=300).parse().choices[0]
    assert choice.finish_reason == "length"
    full = text_of(make_simulator(), "Describe the water cycle.", max_tokens=300)
    assert full.startswith(choice.message.content) and len(choice.message.content) < len(full)
    assert sim.stats()["by_outcome"]["length"] == 1


def test_malformed_judge_and_critique_break_the_contract(make_simulator):
    sim = make_simulator(overrides={"faults.malformed": 1.0})
    broken = 0
    for seed_text in range(6):
        text = text_of(sim, judge_prompt(3, typed=False) + f"\n#{seed_text}")
        broken += len(PLAIN_BLOCK.findall(text)) < 3
        score = text_of(sim, f"Grade this answer {seed_text}. End with Overall Score: <1-10>")
        assert not re.search(r"^Overall Score: ([1-9]|10)(/10)?$", score, re.M)
    assert broken == 6
    assert sim.stats()["by_outcome"]["malformed"] == 12


def test_bad_request_is_400(simulator):
    r = httpx.post(f"{simulator.base_url}/chat/completions", json={"model": "m"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


# --- role-aware content --------------------------------------------------------------------


@pytest.mark.parametrize("typed", [True, False])
def test_judge_returns_one_block_per_text(simulator, typed):
    text = text_of(simulator, judge_prompt(4, typed))
    blocks = text.split("\n\n")
    pattern = TYPED_BLOCK if typed else PLAIN_BLOCK
    assert len(blocks) == 4
    assert [int(pattern.fullmatch(b).group(1)) for b in blocks] == [1, 2, 3, 4]


def test_judge_uses_na_only_when_offered(simulator):
    ratings = []
    for i in range(40):
        ratings += re.findall(r"^Rating: (.+)$", text_of(simulator, judge_prompt(4, False) + f" {i}"), re.M)
    assert "N/A" in ratings and set(ratings) <= {"1", "2", "3", "4", "5", "N/A"}
    assert ratings.count("N/A") < 0.2 * len(ratings)
    plain = text_of(simulator, judge_prompt(4, True))
    assert "N/A" not in plain


def test_critique_ends_with_an_overall_score(simulator):
    scores = []
    for i in range(40):
        text = text_of(simulator, f"Give feedback on answer {i}. End with Overall Score: <1-10>")
        assert text.startswith("### Feedback\n")
        scores.append(re.search(r"\nOverall Score: (\d+)(?:/10)?$", text).group(1))
    assert {int(s) for s in scores} <= set(range(1, 11)) and len(set(scores)) >= 5


def test_user_turn_follows_up_on_the_assistant(make_simulator):
    sim = make_simulator()
    system = "You are playing the user in a chat with an AI assistant. Ask the next question."
    reused = 0
    for i in range(10):
        assistant = f"Sourdough fermentation needs patience; keep the starter warm. ({i})"
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": "How do I bake sourdough bread?"},
            {"role": "assistant", "content": assistant},
        ]
        reply = client(sim).chat.completions.create(model="m", messages=messages)
        turn = reply.choices[0].message.content
        assert turn.endswith("?") and not turn.startswith(("User:", "As an AI"))
        reused += any(w in turn.lower() for w in ("sourdough", "fermentation", "patience", "starter"))
    assert reused >= 5
    assert sim.stats()["by_kind"] == {"user_turn": 10}


def test_role_leak_fault(make_simulator):
    sim = make_simulator(overrides={"faults.role_leak": 1.0})
    turn = text_of(sim, "hello", system="You're simulating the user. Continue the conversation.")
    assert turn.startswith(("User: ", "As an AI assistant", "Certainly!"))
    assert sim.stats()["by_outcome"]["role_leak"] == 1


def test_translation_is_japanese_and_keeps_structure(simulator):
    source = (
        "#### Output for Text 1\nRating: 4\nRationale: The answer explains the steps clearly.\n\n"
        "```python\nprint('keep me')\n```\n\n"
        "Overall the response is helpful and accurate, with a small gap in the details.\n"
        "Confidence: 80%"
    )
    text = text_of(simulator, f"Translate the following text into Japanese.\n\n{source}")
    assert JAPANESE.search(text)
    assert "Rating: 4" in text.splitlines() and "Confidence: 80%" in text.splitlines()
    assert "```python\nprint('keep me')\n```" in text
    assert text.count("\n\n") == source.count("\n\n")
    assert not re.search(r"\b(the|answer|response)\b", text)
    assert 0.2 < len(text) / len(source) < 1.0


@pytest.mark.parametrize(
    ("prompt", "count", "question"),
    [
        ("Generate 7 questions about the history of jazz music.", 7, True),
        ("List 12 subtopics of renewable energy, numbered.", 12, False),
        ("Please write 5 instructions a user might give an assistant about cooking.", 5, False),
    ],
)
def test_list_returns_n_distinct_numbered_items(simulator, prompt, count, question):
    lines = text_of(simulator, prompt).splitlines()
    assert [int(line.split(".", 1)[0]) for line in lines] == list(range(1, count + 1))
    items = [line.split(". ", 1)[1] for line in lines]
    assert len(set(items)) == count
    assert all(item.endswith("?") for item in items) == question


def test_answer_with_confidence_line(simulator):
    system = "Answer honestly. End your answer with a line 'Confidence: NN%'."
    text = text_of(simulator, "Why is the sky blue?", system=system, max_tokens=300)
    assert re.search(r"\n\nConfidence: \d{2,3}%$", text)
    assert len(text.split("\n\n")) >= 2 and count_tokens(text) <= 300


# --- presets -------------------------------------------------------------------------------


def test_presets_are_fault_free_and_overrides_are_validated():
    assert {"tier1", "tier2", "tier3", "tier4", "tier5", "vllm", "unlimited"} <= set(preset_names())
    for name in preset_names():
        faults = load_config(name).faults
        assert all(v == 0 for k, v in faults.model_dump().items() if not k.endswith("_s"))
    assert load_config("tier3", overrides=["limits.rpm=6000"]).limits.rpm == 6000
    with pytest.raises(SimConfigError, match="limits.rmp: unknown key"):
        load_config("tier3", overrides=["limits.rmp=1"])
    with pytest.raises(SimConfigError, match="preset 'tier9' unknown"):
        load_config("tier9")


def test_vllm_has_no_ratelimit_headers_and_slows_under_load(make_simulator):
    overrides = {
        "latency.ttft_s": 0.1,
        "latency.per_token_s": 0,
        "latency.jitter": 0,
        "latency.max_num_seqs": 4,
    }
    sim = make_simulator("vllm", overrides=overrides)
    raw = ask(sim, "hi", max_tokens=20)
    assert not [h for h in raw.headers if h.startswith("x-ratelimit")]

    async def burst(k: int) -> float:
        aclient = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        start = time.perf_counter()
        await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=20
                )
                for i in range(k)
            )
        )
        return time.perf_counter() - start

    single, loaded = asyncio.run(burst(1)), asyncio.run(burst(12))
    # 12 requests in 4 slots: three waves, each slowed ×3 by full slots (time_factor_under_load).
    assert single < 0.3 and loaded > 3 * single and loaded > 0.6


def test_vllm_full_waiting_queue_answers_503_at_once(make_simulator):
    overrides = {"latency.ttft_s": 0.3, "latency.per_token_s": 0, "latency.jitter": 0,
                 "latency.max_num_seqs": 2, "latency.max_waiting": 1}
    sim = make_simulator("vllm", overrides=overrides)

    async def burst(k: int) -> list:
        aclient = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        try:
            return await asyncio.gather(*(
                aclient.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(k)), return_exceptions=True)
        finally:
            await aclient.close()

    replies = asyncio.run(burst(5))
    refused = [r for r in replies if isinstance(r, openai.APIStatusError)]
    # 2 running + 1 waiting; the other 2 are refused without waiting for a slot
    assert len(refused) == 2 and all(r.status_code == 503 for r in refused)
    body = refused[0].body
    assert body["type"] == "server_error" and "overloaded" in body["message"]
    assert "retry-after" not in refused[0].response.headers
    stats = sim.stats()
    assert stats["by_outcome"]["queue_full"] == 2 and stats["by_outcome"]["ok"] == 3
    # the default vllm preset queues without bound
    sim = make_simulator("vllm", overrides={**overrides, "latency.max_waiting": None})
    assert not [r for r in asyncio.run(burst(8)) if isinstance(r, Exception)]
    assert sim.stats()["by_outcome"]["queue_full"] == 0


def test_tokens_are_counted_by_the_simulators_own_rule(simulator):
    from tasks.core.tokens import estimate_prompt_tokens  # the gateway's estimate, for contrast

    assert count_tokens("") == count_tokens("  \n ") == 0
    assert count_tokens("Hello, world!") == 4  # two words, two punctuation marks
    assert count_tokens("internationalization") == 4  # 20 letters: one token per six
    assert count_tokens("1234567") == 3 and count_tokens("日本語") == 3
    assert truncate("Hello, world! Again.", 3) == "Hello, world"
    messages = [{"role": "user", "content": "Well... what?! (Really?) -- yes; no: maybe."}]
    usage = client(simulator).chat.completions.create(model="m", messages=messages).usage
    assert usage.prompt_tokens == prompt_tokens(messages) == 19 + 4  # 19 pieces + framing
    assert usage.prompt_tokens != estimate_prompt_tokens(messages)  # not the gateway's chars/4


@pytest.mark.parametrize("command", ["module", "ultraforge"])
def test_a_bad_override_is_one_line_and_exit_code_1(command):
    if command == "module":
        cmd = [sys.executable, "-m", "infra.simulator", "--port", "1", "--set", "limits.rmp=1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        code, out = proc.returncode, proc.stderr
    else:
        from click.testing import CliRunner

        from flows.cli import main as cli

        result = CliRunner().invoke(cli, ["sim", "--port", "1", "--set", "limits.rmp=1"])
        code, out = result.exit_code, result.output
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert out.startswith("error: presets.yaml preset 'tier3' (with overrides): limits.rmp: unknown key")


def test_module_entry_point_serves_until_terminated():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "infra.simulator", "--preset", "tier3", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--seed", "3", "--set", "latency.ttft_s=0"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health").raise_for_status()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        remote = SimpleNamespace(base_url=f"http://127.0.0.1:{port}/v1")
        assert ask(remote, "hi", max_tokens=5).headers["x-ratelimit-limit-requests"] == "5000"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
