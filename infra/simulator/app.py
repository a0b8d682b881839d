"""The HTTP surface: an OpenAI-compatible Starlette app around one `Simulator`."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.simulator.config import SimConfig
from infra.simulator.engine import Simulator


def build_app(config: SimConfig) -> Starlette:
    """Routes: /v1/chat/completions, /v1/models, /stats, /stats/reset, /health."""
    sim = Simulator(config)

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

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(sim.stats.snapshot())

    async def reset(request: Request) -> JSONResponse:
        sim.reset()
        return JSONResponse({"status": "reset"})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/stats/reset", reset, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.simulator = sim
    return app
