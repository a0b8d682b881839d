"""The Batch API: uploaded files, batches and their processing in the background, in compressed time.

One `Batches` per simulator holds every file and batch in memory (docs/rate-limits.md#batch-api).
A batch validates for `batch.validating_s`, then its lines are answered one at a time, evenly
spread over `batch.progress` × `batch.window_s`, by the online route's content engine
(`Simulator.generate`): attempt numbers count per body, apart from the online ones, so the first
time a body is batched it gets the online route's first-attempt reply. Lines draw no rate limits,
quota or request faults; `batch.line_failure_rate` is their own fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field

from infra.simulator import errors
from infra.simulator.config import Batch
from infra.simulator.engine import ChatRequest, Simulator, content_key, invalid
from infra.simulator.faults import rng_for
from infra.simulator.tokens import count_tokens

Reply = tuple[int, dict]  # status, JSON body
ENDPOINT = "/v1/chat/completions"  # the only endpoint the simulator serves
WINDOW = "24h"  # the only completion window the API accepts
STATUSES = (
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
)
RUNNING = ("in_progress", "finalizing", "cancelling")  # batches whose prompt tokens count as enqueued
CANCELLABLE = ("validating", "in_progress")
REQUIRED = ("custom_id", "method", "url", "body")
UNFINISHED = {  # the error-file line of a request a batch never ran, by how the batch ended
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}
DUPLICATE = ("The custom_id for this request is a duplicate of another request. "
             "The custom_id parameter must be unique for each request in a batch.")


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str  # "batch" (uploads) or "batch_output" (output and error files)
    data: bytes
    created_at: int

    def object(self) -> dict:
        """The file object of GET /v1/files/{id}."""
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "expires_at": None, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


@dataclass
class Line:
    """One valid input line; `attempt` is set when the batch starts."""

    custom_id: str
    req: ChatRequest
    key: str  # content_key of the body, as on the online route
    attempt: int = 0


@dataclass
class Job:
    """One batch: the API object's fields plus what processing needs."""

    id: str
    input_file_id: str
    metadata: dict | None
    created_at: int
    expires_at: int
    deadline: float  # time.monotonic() at expiry
    status: str = "validating"
    stamps: dict[str, int] = field(default_factory=dict)  # "in_progress_at": ..., set on entering a status
    errors: list[dict] = field(default_factory=list)
    model: str | None = None
    digest: str = ""  # sha256 of the input file: seeds the line order
    lines: list[Line] = field(default_factory=list)  # input order
    order: list[Line] = field(default_factory=list)  # answering order
    done: int = 0  # lines of `order` answered
    enqueued: int = 0  # prompt tokens of all lines
    counts: dict[str, int] = field(default_factory=lambda: {"completed": 0, "failed": 0})
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    output: list[dict] = field(default_factory=list)  # rows of the output file
    failures: list[dict] = field(default_factory=list)  # rows of the error file
    output_file_id: str | None = None
    error_file_id: str | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self, status: str) -> None:
        self.status = status
        if status != "validating":
            self.stamps[f"{status}_at"] = int(time.time())

    def object(self) -> dict:
        """The batch object of GET /v1/batches/{id}."""
        prompt, completion = self.tokens["prompt_tokens"], self.tokens["completion_tokens"]
        stamps = {f"{s}_at": self.stamps.get(f"{s}_at") for s in STATUSES if s != "validating"}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": WINDOW,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            **stamps,
            "request_counts": {"total": len(self.lines), **self.counts},
            "metadata": self.metadata,
            "model": self.model,
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            },
        }


class Batches:
    """The files and batches of one simulator; `reset()` forgets them and stops their processing."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self._tasks: set[asyncio.Task] = set()
        self.reset()

    @property
    def cfg(self) -> Batch:
        return self.sim.config.batch

    def reset(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, Job] = {}  # creation order
        self.attempts: dict[str, int] = {}  # lines run per body (key prefix)
        self.submissions: dict[str, int] = {}  # batches that passed validation, per custom_id
        self.uploads = 0
        self.lines = dict.fromkeys(("completed", "failed", "expired", "cancelled"), 0)
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}

    # --- files -------------------------------------------------------------------------------

    def upload(self, form: dict[str, tuple[str | None, bytes]] | None) -> Reply:
        """POST /v1/files: a .jsonl with purpose "batch", at most `batch.max_file_bytes`."""
        if form is None:
            return _bad("The request body must be multipart/form-data.")
        if "file" not in form:
            return _bad("Missing required parameter: 'file'.", "missing_required_parameter", "file")
        purpose = form.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose != "batch":  # the simulator keeps batch input files only
            message = f"Invalid value: '{purpose}'. Supported values are: 'batch'."
            return _bad(message, "invalid_value", "purpose")
        filename, data = form["file"]
        if not (filename or "").endswith(".jsonl"):
            return _bad("Invalid file format for Batch API. Must be .jsonl", "invalid_file_format", "file")
        if len(data) > self.cfg.max_file_bytes:
            message = (f"File is too large: {len(data):,} bytes; files with purpose 'batch' may be at "
                       f"most {self.cfg.max_file_bytes:,} bytes.")
            return _bad(message, "file_too_large", "file")
        self.uploads += 1
        return 200, self._store(filename or "", "batch", data).object()

    def file(self, file_id: str) -> Reply:
        """GET /v1/files/{id}."""
        stored = self.files.get(file_id)
        return (200, stored.object()) if stored else _no_file(file_id)

    def content(self, file_id: str) -> tuple[int, bytes | dict]:
        """GET /v1/files/{id}/content: the bytes, or a 404 body."""
        stored = self.files.get(file_id)
        return (200, stored.data) if stored else _no_file(file_id)

    def delete(self, file_id: str) -> Reply:
        """DELETE /v1/files/{id}."""
        if self.files.pop(file_id, None) is None:
            return _no_file(file_id)
        return 200, {"id": file_id, "object": "file", "deleted": True}

    def _store(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    # --- batches -----------------------------------------------------------------------------

    def create(self, body: object) -> Reply:
        """POST /v1/batches: the batch in `validating`; its processing starts in the background.

        An unknown input file is not a 400 here: like the API, the batch fails validation.
        """
        if not isinstance(body, dict):
            return _bad("The request body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return _bad(f"Missing required parameter: '{name}'.", "missing_required_parameter", name)
        for name, allowed in (("endpoint", ENDPOINT), ("completion_window", WINDOW)):
            if body[name] != allowed:
                message = f"Invalid value: '{body[name]}'. Supported values are: '{allowed}'."
                return _bad(message, "invalid_value", name)
        problem = _metadata_problem(body.get("metadata"))
        if problem:
            return _bad(problem[0], "invalid_type", problem[1])
        now, window = time.time(), self.cfg.window_s
        job = Job(f"batch_{uuid.uuid4().hex}", body["input_file_id"], body.get("metadata"),
                  int(now), int(now + window), time.monotonic() + window)
        self.jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 200, job.object()

    def retrieve(self, batch_id: str) -> Reply:
        """GET /v1/batches/{id}."""
        job = self.jobs.get(batch_id)
        return (200, job.object()) if job else _no_batch(batch_id)

    def cancel(self, batch_id: str) -> Reply:
        """POST /v1/batches/{id}/cancel: `cancelling` now, `cancelled` after `batch.cancelling_s`;
        a 409 once the batch is finalizing or over (cancelling again is fine)."""
        job = self.jobs.get(batch_id)
        if job is None:
            return _no_batch(batch_id)
        if job.status in CANCELLABLE:
            job.enter("cancelling")
            job.cancel.set()
        elif job.status not in ("cancelling", "cancelled"):
            return 409, errors.error_body(f"Cannot cancel a batch with status '{job.status}'.",
                                          "invalid_request_error")
        return 200, job.object()

    def listing(self, limit: str | None, after: str | None) -> Reply:
        """GET /v1/batches: newest first, `limit` (1–100, default 20) after the batch `after`."""
        n = 20 if limit is None else int(limit) if limit.isdigit() else 0
        if not 1 <= n <= 100:
            return _bad("Invalid 'limit': expected an integer from 1 to 100.", "invalid_value", "limit")
        newest = list(reversed(self.jobs.values()))
        if after is not None:
            if after not in self.jobs:
                return _no_batch(after)
            newest = newest[[j.id for j in newest].index(after) + 1:]
        data = [j.object() for j in newest[:n]]
        return 200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None, "has_more": len(newest) > n}

    def snapshot(self) -> dict:
        """The "batch" part of /stats; `tokens` are those of completed lines (the API bills half the
        online price for them)."""
        by_status = dict.fromkeys(STATUSES, 0)
        for job in self.jobs.values():
            by_status[job.status] += 1
        repeated = {cid: n for cid, n in self.submissions.items() if n > 1}
        return {
            "files_uploaded": self.uploads,
            "batches_created": len(self.jobs),
            "by_status": by_status,
            "lines": dict(self.lines),
            "tokens": dict(self.tokens),
            "custom_ids": len(self.submissions),
            "custom_id_repeats": len(repeated),
            "repeated_custom_ids": repeated,
        }

    # --- processing --------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        """validating → in_progress → finalizing → completed, or failed, expired or cancelled."""
        cfg = self.cfg
        if await _wait(job, time.monotonic() + cfg.validating_s):
            return await self._stop(job, "cancelled")
        job.errors = self._validate(job)
        if job.errors:
            job.enter("failed")
            return
        self._start(job)
        n, start, span = len(job.order), time.monotonic(), cfg.progress * cfg.window_s
        stop = n if cfg.expire_after_fraction is None else int(cfg.expire_after_fraction * n)
        for i, line in enumerate(job.order[:stop]):
            due = start + (i + 1) / n * span
            if await _wait(job, min(due, job.deadline)):
                return await self._stop(job, "cancelled")
            if due > job.deadline:
                return await self._stop(job, "expired")
            self._answer(job, line)
        if stop < n:
            return await self._stop(job, "expired")
        job.enter("finalizing")
        await asyncio.sleep(cfg.finalizing_s)
        self._write_files(job)
        job.enter("completed")

    def _validate(self, job: Job) -> list[dict]:
        """The batch's errors (each naming its line where there is one); none sets its lines."""
        cfg = self.cfg
        stored = self.files.get(job.input_file_id)
        if stored is None or stored.purpose != "batch":
            message = f"Cannot find file {job.input_file_id}, or it was not uploaded with purpose 'batch'."
            return [_error("invalid_request", message, "input_file_id")]
        if cfg.fail_validation:
            return [_error("invalid_request", "The input file failed validation (batch.fail_validation).")]
        texts = stored.data.decode("utf-8", "replace").split("\n")
        if not texts[-1].strip():  # the newline that ends the last line
            texts.pop()
        if not texts:
            return [_error("empty_file", "The batch input file is empty.")]
        if len(texts) > cfg.max_requests:
            message = (f"The batch input file has {len(texts):,} requests, more than the "
                       f"{cfg.max_requests:,} allowed per batch.")
            return [_error("too_many_requests", message)]
        problems, lines, seen, model = [], [], set(), None
        default_max_tokens = self.sim.config.limits.default_max_tokens
        for number, text in enumerate(texts, 1):
            row, problem = _check_line(text)
            if not problem and row["custom_id"] in seen:
                problem = ("duplicate_custom_id", DUPLICATE, "custom_id")
            if not problem and model is not None and row["body"]["model"] != model:
                message = (f"Each batch must use one model: the first line uses '{model}', "
                           f"this line '{row['body']['model']}'.")
                problem = ("mismatched_model", message, "body.model")
            if problem:
                problems.append(_error(*problem, line=number))
                continue
            seen.add(row["custom_id"])
            model = model or row["body"]["model"]
            lines.append(Line(row["custom_id"], ChatRequest(row["body"], default_max_tokens),
                              content_key(row["body"])))
        if problems:
            return problems
        enqueued = sum(line.req.prompt_tokens for line in lines)
        if cfg.enqueued_tokens is not None:
            held = sum(j.enqueued for j in self.jobs.values() if j.model == model and j.status in RUNNING)
            if held + enqueued > cfg.enqueued_tokens:
                message = (f"Enqueued token limit reached for {model} in organization {errors.ORG}. "
                           f"Limit: {cfg.enqueued_tokens:,} enqueued tokens. "
                           "Please try submitting your requests again later.")
                return [_error("token_limit_exceeded", message)]
        job.lines, job.model, job.enqueued = lines, model, enqueued
        job.digest = hashlib.sha256(stored.data).hexdigest()
        return []

    def _start(self, job: Job) -> None:
        """Number each line's attempt at its body (in input order), count the custom_ids, fix the
        answering order, and go `in_progress`."""
        for line in job.lines:
            body_id = line.key[:16]
            line.attempt = self.attempts.get(body_id, 0)
            self.attempts[body_id] = line.attempt + 1
            self.submissions[line.custom_id] = self.submissions.get(line.custom_id, 0) + 1
        job.order = list(job.lines)
        if self.cfg.shuffle:  # the API does not keep input order
            rng_for(self.sim.config.seed, "batch_order", job.digest).shuffle(job.order)
        job.enter("in_progress")

    def _answer(self, job: Job, line: Line) -> None:
        """One line's output row: the online route's completion, or a drawn failure."""
        cfg, sim = self.cfg, self.sim
        rng = rng_for(sim.config.seed, line.key, line.attempt, "batch_line")
        if rng.random() < cfg.line_failure_rate:
            status = rng.choice(cfg.line_failure_statuses)
            body = errors.invalid_prompt() if status == 400 else errors.server_error(status)
        else:
            status = 200
            choices, _, _ = sim.generate(line.req, line.key, line.attempt)
            completion_tokens = sum(count_tokens(c["message"]["content"]) for c in choices)
            body = sim.completion(line.req, line.key, line.attempt, choices, completion_tokens)
            for tokens in (job.tokens, self.tokens):
                tokens["prompt_tokens"] += line.req.prompt_tokens
                tokens["completion_tokens"] += completion_tokens
        outcome = "completed" if status == 200 else "failed"
        job.counts[outcome] += 1
        self.lines[outcome] += 1
        response = {"status_code": status, "request_id": uuid.uuid4().hex, "body": body}
        rows = job.output if status == 200 or cfg.failed_lines_in == "output_file" else job.failures
        rows.append(_row(line.custom_id, response, None))
        job.done += 1

    async def _stop(self, job: Job, final: str) -> None:
        """End a batch early: `expired` at once, `cancelled` after `batch.cancelling_s`. Answered
        lines are kept; the rest go to the error file."""
        if final == "cancelled":
            await asyncio.sleep(self.cfg.cancelling_s)
        code, message = UNFINISHED[final]
        job.failures += [_row(line.custom_id, None, {"code": code, "message": message})
                         for line in job.order[job.done:]]
        self.lines[final] += len(job.order) - job.done
        self._write_files(job)
        job.enter(final)

    def _write_files(self, job: Job) -> None:
        """The output and error files, each only when it has a line."""
        if job.output:
            job.output_file_id = self._store(f"{job.id}_output.jsonl", "batch_output", _jsonl(job.output)).id
        if job.failures:
            job.error_file_id = self._store(f"{job.id}_error.jsonl", "batch_output", _jsonl(job.failures)).id


async def _wait(job: Job, until: float) -> bool:
    """Sleep until `until` (time.monotonic()) or a cancel request; True once cancel was requested."""
    timeout = until - time.monotonic()
    if timeout > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.cancel.wait(), timeout)
    else:
        await asyncio.sleep(0)  # lines already due: let requests in between them
    return job.cancel.is_set()


def _check_line(text: str) -> tuple[dict, tuple[str, str, str | None] | None]:
    """The parsed line and its first problem (code, message, param), if any."""
    try:
        row = json.loads(text)
    except ValueError:
        row = None
    if not isinstance(row, dict):
        return {}, ("invalid_json_line", "This line is not parseable as valid JSON.", None)
    for name in REQUIRED:
        if name not in row:
            return row, ("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
    if not isinstance(row["custom_id"], str) or not row["custom_id"]:
        return row, ("invalid_type", "Invalid type for 'custom_id': expected a non-empty string.",
                     "custom_id")
    if row["method"] != "POST":
        return row, ("invalid_value", "Invalid value for 'method': only 'POST' is supported.", "method")
    if row["url"] != ENDPOINT:
        return row, ("invalid_url", "The URL provided for this request does not match the batch endpoint.",
                     "url")
    if not isinstance(row["body"], dict):
        return row, ("invalid_type", "Invalid type for 'body': expected an object.", "body")
    problem = invalid(row["body"])
    if problem and problem[1] == "stream":
        return row, ("streaming_unsupported",
                     "Chat Completions: Streaming is not supported in the Batch API.", "body.stream")
    if problem:
        return row, ("invalid_request", problem[0], f"body.{problem[1]}")
    return row, None


def _metadata_problem(metadata: object) -> tuple[str, str] | None:
    """(message, param) unless metadata is null or at most 16 string pairs (keys ≤ 64, values ≤ 512
    characters)."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        return "Invalid 'metadata': expected an object of at most 16 key-value pairs.", "metadata"
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            return (f"Invalid 'metadata.{key}': keys are strings of at most 64 characters, values "
                    "strings of at most 512."), f"metadata.{key}"
    return None


def _error(code: str, message: str, param: str | None = None, line: int | None = None) -> dict:
    """One entry of a failed batch's `errors.data`."""
    return {"code": code, "message": message, "param": param, "line": line}


def _row(custom_id: str, response: dict | None, error: dict | None) -> dict:
    """One line of an output or error file."""
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": response,
            "error": error}


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _bad(message: str, code: str | None = None, param: str | None = None) -> Reply:
    return 400, errors.error_body(message, "invalid_request_error", code, param)


def _no_file(file_id: str) -> Reply:
    return 404, errors.error_body(f"No such File object: {file_id}", "invalid_request_error", None, "id")


def _no_batch(batch_id: str) -> Reply:
    message = f"No batch found with id '{batch_id}'."
    return 404, errors.error_body(message, "invalid_request_error", None, "id")
