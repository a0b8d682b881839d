"""Running the simulator: in a background thread for tests and demos, or blocking for a CLI.

with SimulatorServer(load_config("tier3")) as sim:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test")
    ...
    sim.stats()["ok_repeats"]
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any

import httpx
import uvicorn

from infra.simulator.app import build_app
from infra.simulator.config import SimConfig, SimConfigError, load_config


def _uvicorn_config(config: SimConfig, host: str, port: int) -> uvicorn.Config:
    # Quiet and lean: no access log, no lifespan; a short graceful shutdown so a hung request
    # (the `hang` fault) does not hold up stop().
    return uvicorn.Config(
        build_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


class SimulatorServer:
    """A simulator on a free loopback port, served by uvicorn on its own thread and event loop."""

    def __init__(self, config: SimConfig, host: str = "127.0.0.1", port: int = 0):
        self.config = config
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.base_url = f"{self.url}/v1"
        self._server = uvicorn.Server(_uvicorn_config(config, self.host, self.port))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        """Start serving; returns once the port accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stats(self) -> dict[str, Any]:
        """GET /stats."""
        return httpx.get(f"{self.url}/stats").json()

    def reset(self) -> None:
        """POST /stats/reset: counters, buckets, quota and attempt numbers start afresh."""
        httpx.post(f"{self.url}/stats/reset").raise_for_status()

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    preset: str = "tier3",
    host: str = "127.0.0.1",
    port: int = 8900,
    seed: int = 0,
    overrides: list[str] | dict[str, Any] | None = None,
) -> None:
    """Serve until interrupted (for docker-compose, benchmarks and `ultraforge sim`).

    A bad preset or override exits (SystemExit) with one line on stderr and status 1, whichever
    command line called it.
    """
    try:
        config = load_config(preset, seed, overrides)
    except SimConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(
        f"simulator: preset {preset}, seed {seed}, serving http://{host}:{port}/v1",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.Server(_uvicorn_config(config, host, port)).run()
