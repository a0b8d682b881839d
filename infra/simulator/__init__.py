"""An OpenAI-compatible LLM simulator: rate limits, 429s, faults, latency and role-aware content.

A stand-in for real endpoints in the demo, the tests, the benchmarks and docker-compose; nothing
in the factory may special-case it, and it imports nothing from the factory (`tasks`, `flows`): it
counts tokens, hashes bodies and loads its YAML its own way. See server.py for how to run it.
"""

from infra.simulator.app import build_app
from infra.simulator.config import SimConfig, SimConfigError, load_config, preset_names
from infra.simulator.server import SimulatorServer, serve

__all__ = [
    "SimConfig", "SimConfigError", "SimulatorServer", "build_app", "load_config", "preset_names", "serve",
]
