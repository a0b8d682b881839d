"""`ultraforge report` over a small real run: UltraFeedback with 429s, UltraChat, the SFT and DPO
sets, a Japanese translation with flags and a tiny SFT training run, all against the simulator on
a real Prefect API; then the dashboard opens in headless Chromium with no console error, no
request off the machine and every plot drawn, and its screenshot is kept as a test artifact
(`$ULTRAFORGE_TEST_ARTIFACTS`, default tests/artifacts/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import main
from tasks.adapters.errors import UltraforgeError
from tasks.adapters.settings import Settings
from tasks.adapters.warehouse import Warehouse
from tasks.core.report.rows import RatingCount
from tasks.core.report.sql import USAGE_VIEWS
from tasks.report.dashboard import loss_curves, read_report, typed
from tasks.training.config import CPU_SMOKE_SFT
from tests.fixtures.factory import fast_pool, settings_env, write_prompts, write_recipe

ARTIFACTS = Path(os.environ.get("ULTRAFORGE_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "artifacts")
# 429s and malformed judge replies for the factory; untranslated replies for the translator
FAULTS = {"faults.rate_429": 0.1, "faults.retry_after_s": 0.02, "faults.malformed": 0.05,
          "faults.untranslated": 0.5, "latency.ttft_s": 0.01}
SMALL_UC = ["sectors.world.dialogues=3", "sectors.writing.dialogues=3",
            "sectors.materials.dialogues=2"]
SPLITS = ["splits.test_size=0.25"]


def one(wh: Warehouse, sql: str):
    return next(iter(wh.query(sql)[0].values()))


def ultraforge(*args: str) -> dict:
    """Run a command as a user would (in this process); the JSON summary it ends with (the
    trainer prints its log lines before it)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{\n"):])


def sets(*overrides: str, flag: str = "--set") -> list[str]:
    return [arg for o in overrides for arg in (flag, o)]


@pytest.mark.slow
def test_the_report_of_a_small_run_opens_in_chromium_with_every_plot_and_no_error(
        prefect_api, make_simulator, chromium, tmp_path, monkeypatch):
    sim = make_simulator("unlimited", seed=5, overrides=FAULTS)
    data = tmp_path / "data"
    settings = Settings(_env_file=None, data_dir=data)
    for key, value in settings_env(settings, sim.base_url, fast_pool(tmp_path)).items():
        monkeypatch.setenv(key, value)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 8)
    recipe = write_recipe(tmp_path, [{"name": "small", "path": str(prompts)}], shard_prompts=2)

    # the run, as the README's commands (the flows' JSON summaries on stdout)
    ultraforge("run", "ultrafeedback", "--recipe", str(recipe))
    ultraforge("run", "ultrachat", *sets(*SMALL_UC))
    ultraforge("export", "sft", *sets(*SPLITS))
    ultraforge("export", "dpo", *sets(*SPLITS))
    translated = ultraforge("translate", "--set", "dpo", *sets("limit=4", flag="--param"))
    smoke = [f"{k}={json.dumps(v)}" for k, v in {**CPU_SMOKE_SFT, "max_steps": 4}.items()]
    trained = ultraforge("train", "sft", "--model", "tiny", *sets(*smoke))

    out = tmp_path / "copy" / "report.html"
    files = ultraforge("report", "--output", str(out))
    assert all(files["plotted"].values()), files["plotted"]  # every section has data here
    page = Path(files["latest"])
    assert page.read_bytes() == Path(files["dashboard"]).read_bytes() == out.read_bytes()
    assert files["dashboard"].startswith(str(data / "lake" / "reports"))

    # what the plots show is what the warehouse and the runs hold
    shown = read_report.fn()
    with Warehouse.from_settings(Settings(), read_only=True) as wh:
        assert sum(r.count for r in shown.ratings) == one(wh, "SELECT count(*) FROM uf_annotations")
        paid = one(wh, "SELECT " + " + ".join(f"(SELECT sum(requests) FROM {t})" for t in USAGE_VIEWS))
        assert sum(p.requests for p in shown.landed) == sum(u.requests for u in shown.usage) == paid
        retries = one(wh, "SELECT sum(attempts - 1) FROM uf_completions")
        assert retries > 0 and sum(p.retries for p in shown.landed) == retries  # the 429s, retried
        assert sum(r.dialogues for r in shown.rounds) == one(wh, "SELECT count(*) FROM ultrachat_dialogues")
    pairs = sum(r.pairs for r in shown.margins)
    assert pairs > 0 and sum(p.chosen for p in shown.picks) == sum(p.rejected for p in shown.picks) == pairs
    assert "unknown" not in {p.model for p in shown.picks}  # every answer traced to its model
    assert sum(f.records for f in shown.flags) >= translated["counts"]["records_flagged"] > 0
    assert [c.steps for c in shown.training] == [list(range(1, trained["steps"] + 1))]
    assert {u.stage for u in shown.usage} >= {"ultrafeedback/generation", "ultrafeedback/annotation",
                                             "ultrachat/assistant", "translate/translation"}

    check = chromium.open(page, selectors=(".plotly-graph-div", ".main-svg", ".trace", ".empty"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-dashboard.png"
    shot.write_bytes(check.screenshot)
    print(f"\nreport screenshot: {shot}")
    assert check.errors == [], check.errors
    assert check.requests == [], check.requests  # usable offline: nothing fetched
    assert check.counts[".plotly-graph-div"] == len(files["plotted"]) and check.counts[".empty"] == 0
    assert check.counts[".main-svg"] >= len(files["plotted"])
    assert check.counts[".trace"] >= 2 * len(files["plotted"])  # drawn traces, not empty axes
    assert len(check.screenshot) > 100_000  # a tall page of coloured plots, not a blank one
    assert_link_artifact(files["link"])


def assert_link_artifact(link: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["report"])))
    # Prefect's link to this report (other tests of the session publish reports of their own)
    assert [a.data for a in found].count(f"[ultraforge report]({link})") == 1


def test_a_bad_row_or_metrics_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(UltraforgeError, match=r"uf_annotations: row 1: count: .*greater than or "
                                              r"equal to 0 \(got -2\)"):
        typed(RatingCount, [{"aspect": "a", "rating": "1", "count": 3},
                            {"aspect": "a", "rating": "2", "count": -2}], "uf_annotations")
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "metrics.json").write_text('{"kind": "sft"}')
    with pytest.raises(UltraforgeError, match=r"sft/metrics.json: preset: Field required"):
        loss_curves(tmp_path)
    (tmp_path / "sft" / "metrics.json").write_text("{")
    with pytest.raises(UltraforgeError, match="sft/metrics.json: not readable as JSON"):
        loss_curves(tmp_path)
