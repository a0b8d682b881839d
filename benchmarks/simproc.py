"""Run the simulator in its own process for benchmarks, so its CPU is not billed to the client."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def simulator_process(preset: str, overrides: list[str]) -> Iterator[str]:
    """Start `python -m infra.simulator` on a free loopback port; yield its /v1 base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "infra.simulator", "--preset", preset, "--host", "127.0.0.1",
           "--port", str(port)]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd)
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError("simulator did not start")
        yield f"{root}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def stats(base_url: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + "/stats", timeout=10).json()
