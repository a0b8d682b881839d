"""An OpenAI-compatible LLM simulator: rate limits, 429s, faults, latency and role-aware content.

A stand-in for real endpoints in the demo, the tests, the benchmarks and docker-compose; nothing
in the factory may special-case it. See server.py for how to run it.
"""

from infra.simulator.app import build_app
from infra.simulator.config import SimConfig, load_config, preset_names
from infra.simulator.server import SimulatorServer, serve

__all__ = ["SimConfig", "SimulatorServer", "build_app", "load_config", "preset_names", "serve"]
