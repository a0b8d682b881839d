"""The batch route: ChatRequests answered through the OpenAI Batch API of their endpoints, exactly
once across runs and crashes (docs/rate-limits.md#batch-api).

`BatchRoute.complete_all(requests, wait_s=...)` gives one outcome per request, in input order: a
journaled ChatResult at once; a ChatResult collected from a finished batch (journaled before it
is returned), with `error` set when the batch did not answer that line; or a `Pending` while its
batch still runs when `wait_s` is up. A line that failed for a passing reason (HTTP 408/409/429/
5xx, the unanswered rest of an expired batch, a batch the endpoint lost) is retried within the
call, `max_resubmits` times, in a new batch or online (`retry`); an answered one is a journal hit,
never paid again. A later call with the same requests polls a batch still running and collects
it. Batch records and errors name the requests' `stage`.

Registry: each batch file is a `BatchRecord` in the lake at
`_batches/<endpoint>/<input key>-<generation>.json`, beside its input
`_batches/<endpoint>/<input key>.jsonl` (input key: sha256 of the JSONL, whose custom_ids are the
requests' content keys; generation: 0, or the next one after a collected batch of the same file).
Each step is persisted before the next one starts:

  1. the input file, then the record (written only if absent): its keys are now claimed;
  2. the file uploaded, its id written;
  3. the batch created, its id written;
  4. polled: status, file ids and counts written as they change;
  5. collected: every answered line journaled, then the record marked collected.

A run killed between any two steps finds the record and goes on from there: without a file id it
uploads (an upload whose id was lost is an orphan file, never a second batch); with a file id but
no batch id it looks among the endpoint's batches for one of that input file and adopts it, and
creates one only if there is none; with a batch id it polls (a batch the endpoint no longer knows,
HTTP 404, is `lost`: its lines are retried); terminal but not collected, it collects again
(journal writes are idempotent). Keys of an uncollected record never go into another batch, nor
online (`claimed`: the gateway sends such calls here whatever their stage's route). Calls of one
process may overlap: a key another call is working on is awaited, not submitted, and a record
both touch is one instance, collected once. Across processes the engine's shard leases keep
the keys apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Literal, NamedTuple, TypeVar

import openai
from openai.types import Batch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from tasks.adapters import metrics
from tasks.adapters.errors import ConfigError, FatalAPIError, RetryableAPIError
from tasks.adapters.lake import Lake
from tasks.adapters.llm.gateway import (
    Gateway,
    backoff,
    error_body,
    reply_of,
    retry_after_of,
    root_cause,
)
from tasks.core.chat import ChatRequest, ChatResult
from tasks.core.ids import canonical_json

REGISTRY = "_batches"
URL = "/v1/chat/completions"
# A batch a record adopts is created after the record; older ones are skipped, with this margin
# for the endpoint's clock.
_CLOCK_SKEW_S = 86_400
_RETRY_STATUS = {408, 409, 429}  # and every 5xx

Status = Literal["unsubmitted", "validating", "in_progress", "finalizing", "completed", "failed",
                 "expired", "cancelling", "cancelled", "refused", "lost"]
# `refused`: the endpoint would not take the input file (too large); its keys are free again.
# `lost`: the endpoint answers 404 for the batch (deleted, or another account or region).
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", "refused", "lost"})
Retry = Literal["batch", "online", "none"]
_RETRY_CODES = {"batch_expired"}  # error codes of lines worth another try
T = TypeVar("T")


class BatchSettings(BaseModel):
    """How the route cuts and watches batch files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_requests: int = Field(default=50_000, gt=0, description="Lines per file (the API's limit).")
    max_file_bytes: int = Field(default=200_000_000, gt=0,
                                description="Bytes per file (the API's limit, 200 MB).")
    poll_s: float = Field(default=30.0, gt=0, description="Seconds between polls of running batches.")
    retry: Retry = Field(default="batch", description="Where lines that failed for a passing "
                         "reason are retried within the call: a new batch, online, or not.")
    max_resubmits: int = Field(default=2, ge=0, description="Retry rounds within one call.")


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchRecord(BaseModel):
    """One batch file of the registry: what it holds and how far its submission got."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="`<input_key>-<generation>`, the record's file name.")
    endpoint: str
    model: str = Field(description="Pool model of every line.")
    api_model: str
    stage: str
    custom_ids: list[str] = Field(description="Content keys of the lines, in file order.")
    input_key: str = Field(description="sha256 of the input JSONL, its name in the registry.")
    input_file_id: str | None = None
    batch_id: str | None = None
    status: Status = "unsubmitted"
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    problem: str | None = Field(default=None, description="Why the batch failed or was refused.")
    created_at: float = Field(description="time.time() when the record was written.")
    collected_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class Pending(BaseModel):
    """A request whose line is in a batch that has not finished: a later call collects it."""

    model_config = ConfigDict(frozen=True)

    key: str
    model: str
    endpoint: str
    record: str
    batch_id: str
    status: Status


class _LineError(BaseModel):
    code: str | None = None
    message: str | None = None


class _ErrorEnvelope(BaseModel):
    error: _LineError | None = None


class _Response(BaseModel):
    status_code: int
    body: Any = None


class _OutputLine(BaseModel):
    """One line of a batch's output or error file."""

    custom_id: str
    response: _Response | None = None
    error: _LineError | None = None


# Requests still to answer: content key → (the first request with it, api model, params).
_Wanted = dict[str, tuple[ChatRequest, str, dict[str, Any]]]


class _Chunk(NamedTuple):
    endpoint: str
    model: str
    api_model: str
    stage: str
    keys: list[str]
    data: bytes


class BatchRoute:
    """Answers ChatRequests through the Batch API; shares the gateway's pool, journal, keys and
    HTTP clients (`gateway.aclose()` closes them)."""

    def __init__(self, gateway: Gateway, lake: Lake, settings: BatchSettings | None = None):
        if gateway.journal is None:
            raise ConfigError("the batch route needs a journal: it is what keeps answered lines "
                              "from being paid again")
        self.gateway = gateway
        self.pool = gateway.pool
        self.journal = gateway.journal
        self.lake = lake
        self.settings = settings or BatchSettings()
        self._claims: asyncio.Task[set[str]] | None = None
        self._working: dict[str, asyncio.Future[ChatResult | Pending]] = {}  # key → its outcome
        self._known: dict[str, BatchRecord] = {}  # name → the record, as this process has it
        self._collections: dict[str, asyncio.Future[tuple[dict[str, ChatResult], set[str]]]] = {}

    async def claimed(self) -> set[str]:
        """Keys held by uncollected records of any endpoint: read from the registry once, then
        kept up to date by this route."""
        if self._claims is None:
            async def load() -> set[str]:
                records = await self._records(sorted(self.pool.endpoints))
                return {k for r in records if r.collected_at is None for k in r.custom_ids}
            self._claims = asyncio.ensure_future(load())
        return await self._claims

    async def _release(self, record: BatchRecord) -> None:
        if self._claims is not None:
            (await self._claims).difference_update(record.custom_ids)

    async def complete_all(self, requests: Iterable[ChatRequest], *,
                           wait_s: float) -> list[ChatResult | Pending]:
        """One outcome per request, in input order (see the module docstring): journal hits at
        once; the others' batches submitted (or resumed) and polled every `poll_s` until all are
        done or `wait_s` is up, failed lines retried on the way. A batch that failed validation
        raises FatalAPIError after the other finished batches are collected."""
        if self.gateway.fatal is not None:
            raise self.gateway.fatal
        requests = list(requests)
        resolved = [self.gateway.resolve(r) for r in requests]
        hits = self.journal.get_many(k for _, _, k in resolved)
        wanted: _Wanted = {}
        for request, (api_model, params, key) in zip(requests, resolved, strict=True):
            if key not in hits:
                wanted.setdefault(key, (request, api_model, params))
        # keys another call of this process is working on: take its outcome, never submit again
        elsewhere = {k: self._working[k] for k in wanted if k in self._working}
        wanted = {k: v for k, v in wanted.items() if k not in elsewhere}
        loop = asyncio.get_running_loop()
        mine = {k: loop.create_future() for k in wanted}
        self._working.update(mine)
        try:
            results, in_record = await self._work(wanted, wait_s)
        except BaseException as exc:
            for future in mine.values():
                future.set_exception(exc)
                future.exception()  # retrieved: a call that needed none of them is not told
            raise
        finally:
            for key in mine:
                del self._working[key]
        own: dict[str, ChatResult | Pending] = {}
        for key, future in mine.items():
            r = in_record[key]
            own[key] = results.get(key) or Pending(key=key, model=r.model, endpoint=r.endpoint,
                                                   record=r.name, batch_id=r.batch_id, status=r.status)
            future.set_result(own[key])
        theirs = dict(zip(elsewhere, await asyncio.gather(*elsewhere.values()), strict=True))

        outcomes: list[ChatResult | Pending] = []
        returned: set[str] = set()
        for request, (_, _, key) in zip(requests, resolved, strict=True):
            result = hits.get(key) or own.get(key) or theirs[key]
            if isinstance(result, Pending):
                outcomes.append(result)
            elif key in hits or key in theirs or (key in returned and result.ok):
                # a repeat, or another call's answer (that call bills it): a replay here
                metrics.CALLS.labels(request.model, result.endpoint, "journal").inc()
                outcomes.append(result.model_copy(update={"from_journal": True}))
            else:
                outcomes.append(result)
                returned.add(key)
        return outcomes

    async def _work(self, wanted: _Wanted,
                    wait_s: float) -> tuple[dict[str, ChatResult], dict[str, BatchRecord]]:
        """Rounds of submitting, settling and retrying `wanted`: the results, and the record
        each key was last in."""
        deadline = time.monotonic() + wait_s
        records = await self._open_records(wanted)
        results: dict[str, ChatResult] = {}
        in_record: dict[str, BatchRecord] = {}
        for round_no in itertools.count():
            settled, retry = await self._round(wanted, records, deadline)
            retry &= wanted.keys()  # a record of an earlier run may hold other calls' keys
            results.update(settled)
            in_record.update((k, r) for r in records for k in r.custom_ids)
            if not retry or round_no == self.settings.max_resubmits or self.settings.retry == "none":
                break
            wanted, records = {k: wanted[k] for k in retry}, []
            if self.settings.retry == "online":
                again = [request.model_copy(update={"route": "online"}) for request, _, _ in wanted.values()]
                results.update((r.key, r) for r in await self.gateway.complete_all(again))
                break
        return results, in_record

    async def _round(self, wanted: _Wanted, records: list[BatchRecord],
                     deadline: float) -> tuple[dict[str, ChatResult], set[str]]:
        """Submit the keys of `wanted` that no record of `records` holds, resume those records,
        and settle them all: the collected results and the keys worth retrying."""
        claimed = {k for record in records for k in record.custom_ids}
        inputs: dict[str, bytes] = {}
        for chunk in self._chunks({k: v for k, v in wanted.items() if k not in claimed}):
            record = await self._register(chunk)
            if record.name not in {r.name for r in records}:
                records.append(record)
                inputs[record.name] = chunk.data
        await asyncio.gather(*(self._submit(r, inputs.get(r.name)) for r in records))
        return await self._settle(records, deadline)

    # -- registry -----------------------------------------------------------------------------
    async def _open_records(self, wanted: _Wanted) -> list[BatchRecord]:
        """Uncollected records of the endpoints of `wanted` that hold any of its keys."""
        endpoints = sorted({self.pool.models[r.model].endpoint for r, _, _ in wanted.values()})
        return [r for r in await self._records(endpoints)
                if r.collected_at is None and not wanted.keys().isdisjoint(r.custom_ids)]

    async def _records(self, endpoints: list[str]) -> list[BatchRecord]:
        names = await asyncio.gather(*(asyncio.to_thread(self.lake.ls, f"{REGISTRY}/{e}")
                                       for e in endpoints))
        paths = [f"{REGISTRY}/{e}/{n}" for e, found in zip(endpoints, names, strict=True)
                 for n in found if n.endswith(".json")]
        blobs = await asyncio.gather(*(asyncio.to_thread(self.lake.read_bytes, p) for p in paths))
        return [self._shared(BatchRecord.model_validate_json(b)) for b in blobs]

    def _shared(self, record: BatchRecord) -> BatchRecord:
        """The process's one instance of a record, so that overlapping calls see one state."""
        return self._known.setdefault(record.name, record)

    def _chunks(self, fresh: _Wanted) -> Iterator[_Chunk]:
        """Batch files of the unclaimed requests: one model and stage each, in input order,
        within the settings' limits on lines and bytes."""
        limits = self.settings
        groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        for key, (request, api_model, params) in fresh.items():
            line = (canonical_json({"custom_id": key, "method": "POST", "url": URL, "body": {
                "model": api_model, "messages": list(request.messages), **params}}) + "\n").encode()
            if len(line) > limits.max_file_bytes:
                endpoint = self.pool.models[request.model].endpoint
                raise ConfigError(f"stage {request.stage!r}, endpoint {endpoint!r}: "
                                  f"request {key[:12]} is {len(line):,} bytes as a batch line, more "
                                  f"than max_file_bytes ({limits.max_file_bytes:,})")
            groups.setdefault((request.model, request.stage), []).append((key, line))
        for (model, stage), lines in groups.items():
            endpoint, api_model = self.pool.models[model].endpoint, self.pool.api_model(model)
            start, size = 0, 0
            for i, (_, line) in enumerate(lines):
                if i > start and (i - start == limits.max_requests
                                  or size + len(line) > limits.max_file_bytes):
                    yield _chunk(endpoint, model, api_model, stage, lines[start:i])
                    start, size = i, 0
                size += len(line)
            yield _chunk(endpoint, model, api_model, stage, lines[start:])

    async def _register(self, chunk: _Chunk) -> BatchRecord:
        """Step 1: the input file, then its record (only if absent). A record of the same file
        that was collected before takes the next generation; an uncollected one is the same work
        registered by a twin, and is returned to be resumed, never submitted twice."""
        input_key = hashlib.sha256(chunk.data).hexdigest()
        await asyncio.to_thread(self.lake.create_bytes, _input_path(chunk.endpoint, input_key), chunk.data)
        for generation in itertools.count():
            record = BatchRecord(name=f"{input_key}-{generation}", endpoint=chunk.endpoint,
                                 model=chunk.model, api_model=chunk.api_model,
                                 stage=chunk.stage or "batch", custom_ids=chunk.keys,
                                 input_key=input_key, created_at=time.time())
            path = _record_path(record)
            if await asyncio.to_thread(self.lake.create_bytes, path, _blob(record)):
                (await self.claimed()).update(record.custom_ids)
                return self._shared(record)
            existing = self._shared(BatchRecord.model_validate_json(
                await asyncio.to_thread(self.lake.read_bytes, path)))
            if existing.collected_at is None:
                return existing

    async def _save(self, record: BatchRecord) -> None:
        await asyncio.to_thread(self.lake.write_bytes, _record_path(record), _blob(record))

    # -- submission ---------------------------------------------------------------------------
    async def _submit(self, record: BatchRecord, data: bytes | None) -> None:
        """Steps 2 and 3, from wherever the record stopped (`data`: its input, if at hand)."""
        if record.batch_id is not None:
            return
        uploaded_before = record.input_file_id is not None  # then a batch of it may exist
        if not uploaded_before:
            await self._upload(record, data)
        await self._create(record, look_first=uploaded_before)

    async def _upload(self, record: BatchRecord, data: bytes | None) -> None:
        if data is None:
            path = _input_path(record.endpoint, record.input_key)
            data = await asyncio.to_thread(self.lake.read_bytes, path)
        client = self._client(record.endpoint)

        async def send():
            try:
                return await client.files.create(file=(f"{record.input_key}.jsonl", data), purpose="batch")
            except openai.APIStatusError as exc:
                err = error_body(exc)
                message = self.gateway.redact(str(err.get("message") or exc.message))
                if not (exc.status_code == 413 or "too large" in message.lower()
                        or err.get("code") in ("file_too_large", "request_too_large")):
                    raise
                # released, so that smaller files (a lower max_file_bytes) may carry its keys
                record.status, record.problem, record.collected_at = "refused", message, time.time()
                await self._save(record)
                await self._release(record)
                raise FatalAPIError(record.endpoint, f"stage {record.stage!r}: batch file {record.name} "
                                    f"({len(data):,} bytes, {len(record.custom_ids)} requests) was "
                                    f"refused as too large: {message} (lower the batch route's "
                                    "max_file_bytes)") from None

        uploaded = await self._call(record.endpoint, f"stage {record.stage!r}: upload of batch "
                                    f"file {record.name}", send)
        record.input_file_id = uploaded.id
        await self._save(record)

    async def _create(self, record: BatchRecord, look_first: bool) -> None:
        client = self._client(record.endpoint)
        look = look_first

        async def send() -> Batch:
            nonlocal look
            found = await self._find(client, record) if look else None
            look = True  # a create that failed on the wire may have created the batch all the same
            return found or await client.batches.create(
                input_file_id=record.input_file_id, endpoint=URL, completion_window="24h",
                metadata={"ultraforge_record": record.name, "ultraforge_stage": record.stage[:512]})

        batch = await self._call(record.endpoint, f"stage {record.stage!r}: creating the batch of "
                                 f"file {record.name}", send)
        record.batch_id = batch.id
        self._observe(record, batch)
        await self._save(record)

    @staticmethod
    async def _find(client: openai.AsyncOpenAI, record: BatchRecord) -> Batch | None:
        """The endpoint's batch of the record's input file, if one was created (the list is
        newest first, so it stops at batches older than the record)."""
        async for batch in client.batches.list(limit=100):
            if batch.input_file_id == record.input_file_id:
                return batch
            if batch.created_at < record.created_at - _CLOCK_SKEW_S:
                return None
        return None

    # -- polling and collecting ---------------------------------------------------------------
    async def _settle(self, records: list[BatchRecord],
                      deadline: float) -> tuple[dict[str, ChatResult], set[str]]:
        """Poll until every record is terminal or `deadline` (time.monotonic()) is past; the
        collected outcomes of the lines of those that finished, and the keys worth retrying."""
        results: dict[str, ChatResult] = {}
        retry: set[str] = set()
        running = records
        while True:
            await asyncio.gather(*(self._poll(r) for r in running if not r.terminal))
            done = [r for r in running if r.terminal]
            for collected, again in await asyncio.gather(*(self._collect(r) for r in done)):
                results.update(collected)
                retry |= again
            failed = next((r for r in done if r.status == "failed" and not _queue_full(r)), None)
            if failed is not None:
                raise FatalAPIError(failed.endpoint, f"stage {failed.stage!r}: batch {failed.batch_id} "
                                    f"(file {failed.name}, {len(failed.custom_ids)} requests) failed "
                                    f"validation: {failed.problem}")
            running = [r for r in running if not r.terminal]
            left = deadline - time.monotonic()
            if self.gateway.fatal is not None:  # another call stopped the run: stop waiting
                raise self.gateway.fatal
            if not running or left <= 0:
                return results, retry
            await asyncio.sleep(min(self.settings.poll_s, left, FATAL_CHECK_S))

    async def _poll(self, record: BatchRecord) -> None:
        client = self._client(record.endpoint)

        async def fetch() -> Batch | None:
            try:
                return await client.batches.retrieve(record.batch_id)
            except openai.NotFoundError:
                return None

        batch = await self._call(record.endpoint, f"stage {record.stage!r}: polling batch "
                                 f"{record.batch_id}", fetch)
        if batch is None:
            record.status = "lost"
            record.problem = f"the endpoint no longer knows batch {record.batch_id} (HTTP 404)"
            await self._save(record)
        elif self._observe(record, batch):
            await self._save(record)

    @staticmethod
    def _observe(record: BatchRecord, batch: Batch) -> bool:
        """Take the batch's state into the record; whether anything changed."""
        before = record.model_dump()
        record.status = batch.status
        record.output_file_id, record.error_file_id = batch.output_file_id, batch.error_file_id
        if batch.request_counts is not None:
            record.request_counts = RequestCounts.model_validate(batch.request_counts.model_dump())
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        if errors:
            first = errors[0]
            where = f" at line {first.line}" if first.line is not None else ""
            more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
            record.problem = f"{first.code}{where}: {first.message}{more}"
        return record.model_dump() != before

    async def _collect(self, record: BatchRecord) -> tuple[dict[str, ChatResult], set[str]]:
        """Step 5, once per record in this process (overlapping calls whose keys share a
        record, written by an earlier run, share its collection)."""
        if record.name not in self._collections:
            self._collections[record.name] = asyncio.ensure_future(self._collect_once(record))
        return await asyncio.shield(self._collections[record.name])

    async def _collect_once(self, record: BatchRecord) -> tuple[dict[str, ChatResult], set[str]]:
        """One result per line of a finished batch, and the keys of the lines worth another
        try; the answered ones journaled before the record is marked collected."""
        lines: dict[str, _OutputLine] = {}
        gone: list[str] = []
        for file_id in (record.output_file_id, record.error_file_id):
            if file_id is not None:
                rows = await self._download(record, file_id)
                if rows is None:
                    gone.append(file_id)
                lines.update((row.custom_id, row) for row in rows or [])
        results = {key: self._result(record, key, lines.get(key), gone) for key in record.custom_ids}
        await asyncio.gather(*(self.journal.put(r) for r in results.values() if r.ok))
        for result in results.values():
            self._count(result)
        record.collected_at = time.time()
        await self._save(record)
        await self._release(record)
        retry = {k for k in record.custom_ids if not results[k].ok and _passing(lines.get(k))}
        return results, retry

    async def _download(self, record: BatchRecord, file_id: str) -> list[_OutputLine] | None:
        """The lines of an output or error file; None if the endpoint no longer has it."""
        client = self._client(record.endpoint)

        async def fetch() -> str | None:
            try:
                return (await client.files.content(file_id)).text
            except openai.NotFoundError:
                return None

        text = await self._call(record.endpoint, f"stage {record.stage!r}: download of file "
                                f"{file_id} of batch {record.batch_id}", fetch)
        if text is None:
            return None
        rows = []
        for line in text.splitlines():
            try:
                rows.append(_OutputLine.model_validate_json(line))
            except ValidationError:  # unreadable: its request is reported as missing
                continue
        return rows

    def _result(self, record: BatchRecord, key: str, line: _OutputLine | None,
                gone: list[str]) -> ChatResult:
        """The ChatResult of line `key`: answered (status 200), or `error` saying what became of it."""
        result = ChatResult(key=key, model=record.model, api_model=record.api_model,
                            endpoint=record.endpoint, attempts=1, route="batch")
        where = f"batch {record.batch_id} ({record.status}, stage {record.stage!r})"
        if line is None:
            error = f"{where}: no line in its output or error file"
            if gone:
                error += f" (file {', '.join(gone)} not found)"
        elif line.response is not None and line.response.status_code == 200:
            try:
                text, finish_reason, usage = reply_of(line.response.body)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                error = f"{where}: malformed response: {type(exc).__name__}: {exc}"
            else:
                return result.model_copy(update={"text": text, "finish_reason": finish_reason,
                                                 "usage": usage})
        elif line.response is not None:
            try:
                err = _ErrorEnvelope.model_validate(line.response.body).error or _LineError()
            except ValidationError:
                err = _LineError()
            error = f"{where}: HTTP {line.response.status_code} {err.code or ''}: {err.message or ''}"
        else:
            err = line.error or _LineError()
            error = f"{where}: {err.code}: {err.message}"
        return result.model_copy(update={"error": self.gateway.redact(error)})

    # -- plumbing -----------------------------------------------------------------------------
    def _client(self, endpoint: str) -> openai.AsyncOpenAI:
        return self.gateway.client(endpoint, self.pool.endpoints[endpoint])

    async def _call(self, endpoint: str, what: str, send: Callable[[], Awaitable[T]]) -> T:
        """One call of the Batch API with the endpoint's retry budget (429, 408, 409, 5xx,
        timeouts and connection errors retried); FatalAPIError naming `what` otherwise."""
        attempts = self.pool.endpoints[endpoint].max_attempts
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(attempts), wait=backoff, reraise=True,
                                               retry=retry_if_exception_type(RetryableAPIError)):
                with attempt:
                    try:
                        return await send()
                    except openai.APIStatusError as exc:
                        err = error_body(exc)
                        message = self.gateway.redact(str(err.get("message") or exc.message))
                        reason = f"HTTP {exc.status_code} {err.get('code') or ''}: {message}"
                        if exc.status_code in _RETRY_STATUS or exc.status_code >= 500:
                            raise RetryableAPIError(reason, retry_after_of(exc.response.headers),
                                                    exc.status_code) from None
                        raise FatalAPIError(endpoint, f"{what}: {reason}") from None
                    except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                        raise RetryableAPIError(f"{type(exc).__name__}: {root_cause(exc)}") from None
        except RetryableAPIError as exc:
            raise FatalAPIError(endpoint, f"{what}: gave up after {attempts} attempts: {exc}") from None

    def _count(self, result: ChatResult) -> None:
        """A collected line into the process-wide metrics, at the batch price."""
        metrics.CALLS.labels(result.model, result.endpoint, "paid" if result.ok else "failed").inc()
        if result.ok:
            pt, ct = result.usage.prompt_tokens, result.usage.completion_tokens
            metrics.TOKENS.labels(result.model, "prompt").inc(pt)
            metrics.TOKENS.labels(result.model, "completion").inc(ct)
            metrics.COST.labels(result.model).inc(self.pool.cost(result.model, pt, ct, route="batch"))


def _chunk(endpoint: str, model: str, api_model: str, stage: str,
           lines: list[tuple[str, bytes]]) -> _Chunk:
    return _Chunk(endpoint, model, api_model, stage, [k for k, _ in lines],
                  b"".join(line for _, line in lines))


def _queue_full(record: BatchRecord) -> bool:
    """Failed for the model's queue of enqueued tokens: the work is fine, the timing was not."""
    return (record.problem or "").startswith("token_limit_exceeded")


def _passing(line: _OutputLine | None) -> bool:
    """Whether a line that was not answered may be answered by another try: no line at all (a
    lost batch or output file), a retryable HTTP status, or the expired rest of a batch."""
    if line is None:
        return True
    if line.response is not None:
        code = line.response.status_code
        return code != 200 and (code in _RETRY_STATUS or code >= 500)
    return (line.error or _LineError()).code in _RETRY_CODES


def _input_path(endpoint: str, input_key: str) -> str:
    return f"{REGISTRY}/{endpoint}/{input_key}.jsonl"


def _record_path(record: BatchRecord) -> str:
    return f"{REGISTRY}/{record.endpoint}/{record.name}.json"


def _blob(record: BatchRecord) -> bytes:
    return record.model_dump_json(indent=1).encode()


FATAL_CHECK_S = 1.0  # how often a waiting round looks whether the run was stopped


class BatchCollector:
    """The gateway's way to the batch route: calls that arrive within `linger_s` of each other
    (a block's prompt pipelines, say) go to the route together as one round and so share batch
    files; rounds overlap, so calls arriving while earlier batches run are submitted at once.
    Each caller gets ChatResults; a call whose batch is still running after `wait_s` comes back
    with `pending` set to its batch id, neither paid nor failed."""

    def __init__(self, route: BatchRoute):
        self.route = route
        self.wait_s, self.linger_s = 3600.0, 2.0
        self._queue: list[tuple[list[ChatRequest], asyncio.Future]] = []
        self._gathering: asyncio.Task | None = None  # the round still taking calls
        self._rounds: set[asyncio.Task] = set()

    def configure(self, *, wait_s: float, linger_s: float, poll_s: float, retry: Retry,
                  max_resubmits: int) -> None:
        """A run's batch settings (the recipe's `batch`)."""
        self.wait_s, self.linger_s = wait_s, linger_s
        self.route.settings = self.route.settings.model_copy(update={
            "poll_s": poll_s, "retry": retry, "max_resubmits": max_resubmits})

    async def complete_all(self, requests: list[ChatRequest]) -> list[ChatResult]:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((requests, future))
        if self._gathering is None:
            self._gathering = asyncio.create_task(self._round())
            self._rounds.add(self._gathering)
            self._gathering.add_done_callback(self._rounds.discard)
        return await future

    async def _round(self) -> None:
        callers: list[tuple[list[ChatRequest], asyncio.Future]] = []
        try:
            await asyncio.sleep(self.linger_s)
            # later calls start the next round, which runs beside this one
            callers, self._queue, self._gathering = self._queue, [], None
            requests = [r for reqs, _ in callers for r in reqs]
            outcomes = await self.route.complete_all(requests, wait_s=self.wait_s)
            start = 0
            for reqs, future in callers:
                part = [self._result(r, o) for r, o in zip(reqs, outcomes[start:start + len(reqs)],
                                                           strict=True)]
                if not future.done():
                    future.set_result(part)
                start += len(reqs)
        except BaseException as exc:  # no caller is left waiting: each sees the error
            if not callers:  # stopped while gathering: its callers are the queue
                callers, self._queue, self._gathering = self._queue, [], None
            if isinstance(exc, FatalAPIError):
                self.route.gateway.abort(exc)  # the online calls of other shards stop too
            for _, future in callers:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _result(self, request: ChatRequest, outcome: ChatResult | Pending) -> ChatResult:
        """The caller's result, under the caller's pool model (models may share an API model)."""
        if isinstance(outcome, ChatResult):
            return outcome.model_copy(update={"model": request.model})
        return ChatResult(key=outcome.key, model=request.model, endpoint=outcome.endpoint,
                          api_model=self.route.pool.api_model(request.model), route="batch",
                          pending=outcome.batch_id or outcome.record)
