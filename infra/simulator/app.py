"""The HTTP surface: an OpenAI-compatible Starlette app around one `Simulator`."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.simulator.batch import Batches
from infra.simulator.config import SimConfig
from infra.simulator.engine import Simulator
from infra.simulator.multipart import parse_form


def build_app(config: SimConfig) -> Starlette:
    """Routes: /v1/chat/completions, /v1/models, the Batch API (/v1/files, /v1/batches), /stats,
    /stats/reset, /health."""
    sim = Simulator(config)
    batches = Batches(sim)

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        except ClientDisconnect:  # the caller died mid-request (kill tests): nobody to answer
            return Response(status_code=499)
        status, payload, headers = await sim.complete(body)
        return JSONResponse(payload, status, headers)

    async def models(request: Request) -> JSONResponse:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "ultraforge-sim"} for m in sim.models]
        return JSONResponse({"object": "list", "data": data})

    async def upload_file(request: Request) -> JSONResponse:
        form = parse_form(request.headers.get("content-type", ""), await request.body())
        return _json(batches.upload(form))

    async def file(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            return _json(batches.delete(request.path_params["file_id"]))
        return _json(batches.file(request.path_params["file_id"]))

    async def file_content(request: Request) -> Response:
        status, content = batches.content(request.path_params["file_id"])
        if isinstance(content, dict):
            return JSONResponse(content, status)
        return Response(content, status, media_type="application/octet-stream")

    async def create_batch(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        return _json(batches.create(body))

    async def list_batches(request: Request) -> JSONResponse:
        query = request.query_params
        return _json(batches.listing(query.get("limit"), query.get("after")))

    async def batch(request: Request) -> JSONResponse:
        return _json(batches.retrieve(request.path_params["batch_id"]))

    async def cancel_batch(request: Request) -> JSONResponse:
        return _json(batches.cancel(request.path_params["batch_id"]))

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(sim.stats.snapshot() | {"batch": batches.snapshot()})

    async def reset(request: Request) -> JSONResponse:
        sim.reset()
        batches.reset()
        return JSONResponse({"status": "reset"})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/files", upload_file, methods=["POST"]),
            Route("/v1/files/{file_id}", file, methods=["GET", "DELETE"]),
            Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
            Route("/v1/batches", create_batch, methods=["POST"]),
            Route("/v1/batches", list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/stats/reset", reset, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.simulator = sim
    app.state.batches = batches
    return app


def _json(reply: tuple[int, dict]) -> JSONResponse:
    status, payload = reply
    return JSONResponse(payload, status)
