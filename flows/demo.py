"""`ultraforge demo`: the whole factory on the bundled data, against the simulator, on this machine.

Starts the OpenAI-compatible simulator on a free loopback port, points every pool endpoint at
it (through the process's resources, not the environment), runs the `ultrafeedback` and
`ultrachat` flows with their default recipes, builds the SFT and DPO sets from what they landed,
translates the first records of each of the four sets into Japanese and, with `train=True`,
trains the tiny model on them (SFT, then DPO from the SFT model). It reports where everything
landed. A second run pays for nothing: every response comes from the journal.
"""

from __future__ import annotations

from typing import Any

from infra.simulator import SimulatorServer, load_config
from tasks.adapters.resources import Resources, activate
from tasks.adapters.settings import Settings

# Tier-5 limits with short latency, so the demo takes a minute or two rather than ten.
DEMO_LATENCY = {"latency.ttft_s": 0.05, "latency.per_token_s": 0.0005, "latency.jitter": 0.2}
# The bundled sets are small: hold out a tenth, not HF's 2,000 pairs.
DEMO_DPO = ["splits.test_size=0.1"]
# A few records of each set in Japanese (each split of a derived set): a sample, not the sets.
DEMO_TRANSLATE = ["limit=5"]
SETS = ("ultrafeedback", "ultrachat", "sft", "dpo")


def run_demo(preset: str = "tier5", seed: int = 0, train: bool = False) -> dict[str, Any]:
    """Run the flows against a fresh simulator; return their summaries and the simulator's
    counts."""
    from flows.derived import DPOExportParams, SFTExportParams, dpo_export, sft_export
    from flows.translate import TranslateParams, translate
    from flows.ultrachat import UltraChatParams, ultrachat
    from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback

    settings = Settings()
    with SimulatorServer(load_config(preset, seed, DEMO_LATENCY)) as sim:
        activate(Resources.build(settings.model_copy(update={"endpoint_base_url": sim.base_url})))
        try:
            feedback = ultrafeedback(UltraFeedbackParams())
            chat = ultrachat(UltraChatParams())
            sft_set = sft_export(SFTExportParams())
            dpo_set = dpo_export(DPOExportParams(overrides=DEMO_DPO))
            japanese = {kind: translate(TranslateParams(set=kind, overrides=DEMO_TRANSLATE))
                        for kind in SETS}
        finally:
            activate(None)
        stats = sim.stats()
    out = {"ultrafeedback": feedback, "ultrachat": chat, "sft_set": sft_set, "dpo_set": dpo_set,
           "japanese": japanese, "simulator": stats, "lake": settings.lake,
           "warehouse": str(settings.warehouse), "journal": str(settings.journal)}
    if train:
        out |= train_tiny(settings, sft_set.published.dataset_dict,
                          dpo_set.published.dataset_dict)
    return out


def train_tiny(settings: Settings, sft_set: str, dpo_set: str) -> dict[str, Any]:
    """The tiny SFT → DPO run on the demo's sets (a few CPU steps, docs/training.md)."""
    from flows.train import DPOParams, SFTParams, dpo, sft
    from tasks.training.config import CPU_SMOKE_DPO, CPU_SMOKE_SFT, TINY

    models = settings.data_dir.resolve() / "models"
    sft_run = sft(SFTParams(dataset=sft_set, output_dir=str(models / "sft"), model=TINY,
                            overrides=CPU_SMOKE_SFT))
    # 30 steps: the demo's ~75 pairs need about three passes before the DPO loss moves down
    dpo_run = dpo(DPOParams(dataset=dpo_set, output_dir=str(models / "dpo"),
                            model=sft_run.model_dir, overrides={**CPU_SMOKE_DPO, "max_steps": 30}))
    return {"sft_train": sft_run, "dpo_train": dpo_run}
