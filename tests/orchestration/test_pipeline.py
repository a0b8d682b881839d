"""The `pipeline` flow end to end in this process: raw sets, derived sets, translations, report;
then again for free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.pipeline import PipelineParams, pipeline
from tests.fixtures.factory import fast_pool, settings_env, settings_in

pytestmark = pytest.mark.slow

# a small run: 8 prompts on 2 models, 2 dialogues a sector, a quarter held out, 2 records translated
SMALL = {
    "ultrafeedback": {"overrides": ["sources.0.limit=8", "plan.n_models=2"]},
    "ultrachat": {"overrides": ["sectors.world.dialogues=2", "sectors.writing.dialogues=2",
                                "sectors.materials.dialogues=2"]},
    "sft": {"overrides": ["splits.test_size=0.25"]},
    "dpo": {"overrides": ["splits.test_size=0.25"]},
    "translate": {"sets": ["ultrafeedback", "dpo"], "overrides": ["limit=2"]},
}


def test_the_pipeline_builds_every_set_translates_and_reports_and_a_rerun_pays_nothing(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    sim = make_simulator("unlimited", seed=4)
    settings = settings_in(tmp_path / "data")
    for key, value in settings_env(settings, sim.base_url, fast_pool(tmp_path)).items():
        monkeypatch.setenv(key, value)
    params = PipelineParams.model_validate(json.loads(json.dumps(SMALL)))  # as a form sends it
    out = pipeline(params)
    lake = Path(settings.lake)
    assert Path(out.ultrafeedback).is_file() and Path(out.ultrachat).is_file()
    assert (Path(out.sft) / "dataset_dict.json").is_file() and (Path(out.dpo) / "dataset_dict.json").is_file()
    assert sorted(out.translated) == ["dpo", "ultrafeedback"] and out.models == {}
    for folder in out.translated.values():
        assert "Japanese" in (Path(folder) / "README.md").read_text()
    assert out.report.endswith("dashboard.html") and (lake / "reports/latest.html").is_file()
    paid = sim.stats()["requests"]

    again = pipeline(params)
    assert sim.stats()["requests"] == paid  # every call from the journal or the landed blocks
    assert again.translated == out.translated
