"""`ultraforge demo`: the whole factory on the bundled data, against the simulator, on this machine.

Starts the OpenAI-compatible simulator on a free loopback port, points every pool endpoint at
it (through the process's resources, not the environment), runs the `ultrafeedback` and
`ultrachat` flows with their default recipes, and reports where
everything landed. A second run pays for nothing: every response comes from the journal.
"""

from __future__ import annotations

from typing import Any

from infra.simulator import SimulatorServer, load_config
from tasks.adapters.resources import Resources, activate
from tasks.adapters.settings import Settings

# Tier-5 limits with short latency, so the demo takes a minute or two rather than ten.
DEMO_LATENCY = {"latency.ttft_s": 0.05, "latency.per_token_s": 0.0005, "latency.jitter": 0.2}


def run_demo(preset: str = "tier5", seed: int = 0) -> dict[str, Any]:
    """Run both flows against a fresh simulator; return their summaries and the simulator's counts."""
    from flows.ultrachat import UltraChatParams, ultrachat
    from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback

    settings = Settings()
    with SimulatorServer(load_config(preset, seed, DEMO_LATENCY)) as sim:
        activate(Resources.build(settings.model_copy(update={"endpoint_base_url": sim.base_url})))
        try:
            feedback = ultrafeedback(UltraFeedbackParams())
            chat = ultrachat(UltraChatParams())
        finally:
            activate(None)
        stats = sim.stats()
    return {"ultrafeedback": feedback, "ultrachat": chat, "simulator": stats,
            "lake": settings.lake, "warehouse": str(settings.warehouse),
            "journal": str(settings.journal)}
