"""The `ultrafeedback` flow against real components: the simulator over HTTP, a DuckDB file, the
lake on moto's S3 server or a local directory, and a real Prefect API.

Must-shows (issue 3): 200 prompts × 4 models with faults; SIGKILL mid-generation then rerun gives
a byte-identical export with no paid call repeated beyond those in flight; bad prompt files are
quarantined and the run completes; raising N / adding a model only generates what is missing
and leaves no duplicate ids. Also: calls that failed for good (generation or judge) are retried
and land on the next run, with exit code 2 meanwhile; config errors exit 1 naming the file or
source.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from flows.cli import main as cli
from flows.ultrafeedback import UltraFeedbackParams, dry_run, ultrafeedback
from tasks.adapters.lake import Lake
from tasks.adapters.settings import RECIPES_DIR, Settings
from tasks.adapters.warehouse import Warehouse
from tasks.core.ids import prompt_id
from tasks.core.ultrafeedback.plan import rank_models
from tests.fixtures.factory import (
    fast_pool,
    raw_duplicates,
    settings_env,
    write_prompts,
    write_recipe,
)

ROOT = Path(__file__).resolve().parents[2]
# The fault mix; a little constant latency keeps the gateway's adaptive concurrency steady
# when the simulator shares this process (its floor would otherwise be an idle ~2 ms sample).
FAULTS = {"faults.rate_429": 0.05, "faults.rate_5xx": 0.01, "faults.malformed": 0.03,
          "faults.retry_after_s": 0.05, "latency.ttft_s": 0.05}

pytestmark = pytest.mark.slow


# ---- helpers ------------------------------------------------------------------------------------

def run_in_process(monkeypatch, env: dict[str, str], recipe: Path, *overrides: str):
    """Run the flow here; return (result, flow run id)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    state = ultrafeedback(UltraFeedbackParams(recipe=str(recipe), overrides=list(overrides)),
                          return_state=True)
    assert state.is_completed(), state
    return state.result().model_dump(), state.state_details.flow_run_id


def summary_table(flow_run_id, name: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"ultrafeedback-summary-{name}"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(found) == 1
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else data


def one(wh: Warehouse, sql: str):
    return next(iter(wh.query(sql)[0].values()))


ID_COLUMNS = (("uf_prompts", "prompt_id"), ("uf_plan", "completion_id"),
              ("uf_completions", "completion_id"), ("uf_critiques", "critique_id"),
              ("uf_annotations", "annotation_id || completion_id"))


def assert_no_duplicate_ids(wh: Warehouse, without: tuple[str, ...] = ()) -> None:
    """Every id table (but those a recipe turned off) has a view with one row per id, and no
    result id was landed twice in the lake's files."""
    landed_twice = raw_duplicates(wh.lake)
    views = {r["view_name"] for r in wh.query("SELECT view_name FROM duckdb_views()")}
    for table, key in ID_COLUMNS:
        if table in without:
            continue
        assert table in views, table
        assert one(wh, f"SELECT count(*) - count(DISTINCT {key}) FROM {table}") == 0, table
        assert landed_twice.get(table, 0) == 0, table


def assert_summary_matches_warehouse(wh: Warehouse, summary: dict) -> None:
    """The run's counts equal what the warehouse holds (one plan, nothing stale in it)."""
    assert one(wh, "SELECT count(*) FROM uf_prompts") == summary["prompts"]
    assert one(wh, "SELECT count(*) FROM uf_plan") == summary["planned_completions"]
    assert one(wh, "SELECT count(*) FROM uf_completions") == summary["exported_completions"]


# ---- 200 prompts × 4 models, faults on, lake on S3 ------------------------------------------------

def test_200_prompts_by_4_models_with_faults_on_s3(prefect_api, make_simulator, s3_settings,
                                                   tmp_path, monkeypatch, capsys):
    sim = make_simulator("unlimited", seed=3, overrides=FAULTS)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 200)
    recipe = write_recipe(tmp_path, [{"name": "two-hundred", "path": str(prompts)}])
    env = settings_env(s3_settings, sim.base_url, fast_pool(tmp_path))

    started = time.perf_counter()
    out, run_id = run_in_process(monkeypatch, env, recipe)
    wall = time.perf_counter() - started
    stats = sim.stats()
    counts = out["counts"]

    # every completion present, ≥ 99 % of aspect ratings parsed
    assert counts["prompts"] == 200 and counts["planned_completions"] == 800
    assert counts["exported_completions"] == 800 and counts["failed_completions"] == 0
    assert counts["aspect_ratings"] == 3200
    assert counts["aspect_ratings_parsed"] / counts["aspect_ratings"] >= 0.99
    assert stats["by_outcome"]["injected_429"] > 0 and stats["by_outcome"]["malformed"] > 0
    assert stats["ok_repeats"] == 0

    # zero duplicate ids, and the summary artifact agrees with the warehouse
    summary = {r["count"]: r["value"] for r in summary_table(run_id, "counts")}
    assert summary == counts
    with Warehouse.from_settings(s3_settings, read_only=True) as wh:
        assert_no_duplicate_ids(wh)
        assert_summary_matches_warehouse(wh, summary)
        assert one(wh, "SELECT count(*) FROM uf_annotations WHERE annotation IS NOT NULL") == \
            summary["aspect_ratings_parsed"]
        assert one(wh, "SELECT count(*) FROM uf_critiques WHERE overall_score IS NOT NULL") == \
            summary["critiques_parsed"]
        assert one(wh, "SELECT count(DISTINCT annotation_id) FROM uf_annotations") == \
            summary["annotation_calls_planned"]
        assert one(wh, "SELECT count(*) FROM uf_annotations WHERE request_key IS NULL "
                       "OR finish_reason IS NULL OR prompt_tokens = 0") == 0
        usage = summary_table(run_id, "usage")
        assert one(wh, "SELECT sum(requests) FROM uf_usage") == sum(u["requests"] for u in usage)
        ratings = wh.query("SELECT aspect, rating, count(*) AS n FROM uf_annotations "
                           "GROUP BY ALL")
    histogram = {r["aspect"]: r for r in summary_table(run_id, "ratings")}
    for r in ratings:
        assert histogram[r["aspect"]][r["rating"] or "unparsed"] == r["n"]

    # the export: docs/datasets.md#schema shape, unique prompts, loadable with `datasets`
    lake = Lake.from_settings(s3_settings)
    jsonl = lake.read_bytes("exports/ultrafeedback/ultrafeedback.jsonl")
    parquet = lake.read_bytes("exports/ultrafeedback/ultrafeedback.parquet")
    records = [json.loads(line) for line in jsonl.decode().splitlines()]
    assert len({prompt_id(r["instruction"]) for r in records}) == len(records) == 200
    assert all(len(r["models"]) == len(set(r["models"])) == 4 for r in records)
    (tmp_path / "x.jsonl").write_bytes(jsonl)
    (tmp_path / "x.parquet").write_bytes(parquet)
    import datasets

    from_json = datasets.load_dataset("json", data_files=str(tmp_path / "x.jsonl"), split="train",
                                      cache_dir=str(tmp_path / "hf"))
    from_parquet = datasets.load_dataset("parquet", data_files=str(tmp_path / "x.parquet"),
                                         split="train", cache_dir=str(tmp_path / "hf"))
    assert from_json.num_rows == from_parquet.num_rows == 200
    assert from_json.features == from_parquet.features
    assert from_parquet[0]["completions"][0]["annotations"]["truthfulness"] is not None

    # the first run paid for every call it made
    assert counts["generation_requests_paid"] == 800 and counts["requests_from_journal"] == 0
    assert counts["annotation_requests_paid"] >= 800 and counts["critique_requests_paid"] >= 800

    # rerun: nothing new is paid for or landed, and the export is unchanged
    requests_before = stats["requests"]
    shards_before = {t: lake.shard_keys(t) for t in ("uf_completions", "uf_annotations",
                                                      "uf_critiques", "uf_usage", "uf_plan")}
    again, _ = run_in_process(monkeypatch, env, recipe)
    assert sim.stats()["requests"] == requests_before
    assert {t: lake.shard_keys(t) for t in shards_before} == shards_before
    assert lake.read_bytes("exports/ultrafeedback/ultrafeedback.jsonl") == jsonl

    with capsys.disabled():
        print(f"\n[ultrafeedback 200x4] wall {wall:.1f}s, {stats['requests']} requests "
              f"({stats['requests'] / wall:.0f}/s), judge reply parse-failure rate "
              f"{counts['judge_reply_parse_failure_rate']:.2%}, aspect ratings parsed "
              f"{counts['aspect_ratings_parsed']}/{counts['aspect_ratings']}")


# ---- SIGKILL mid-generation, rerun: byte-identical export -----------------------------------------

def _cli(env: dict[str, str], recipe: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ultraforge"), "run", "ultrafeedback", "--recipe",
         str(recipe)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _journaled(data_dir: Path, generation_only: bool = False) -> int:
    """Responses in the journal (generation calls only: every model but the judge)."""
    path = data_dir / "journal" / "journal.sqlite"
    if not path.exists():
        return 0
    where = " WHERE json_extract(result, '$.model') != 'gpt-4-judge'" if generation_only else ""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute(f"SELECT count(*) FROM responses{where}").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_mid_generation_then_rerun_gives_a_byte_identical_export(
        prefect_api, make_simulator, tmp_path, capsys):
    shard, parallel, n_prompts = 10, 2, 80
    # at most 8 calls of a prompt are in flight at once (4 ratings + 4 critiques)
    in_flight_bound = shard * parallel * 8
    # Judge calls are in flight at the kill too and are sent again by the rerun; the simulator
    # draws faults per attempt, so a malformed reply would make the rerun's re-asks differ from
    # the straight run's. Rate limits and 5xx (retried, same content) stay on.
    faults = {k: v for k, v in FAULTS.items() if k != "faults.malformed"}
    sim = make_simulator("unlimited", seed=5, overrides={**faults, "latency.ttft_s": 0.25})
    prompts = write_prompts(tmp_path / "prompts.jsonl", n_prompts)
    recipe = write_recipe(tmp_path, [{"name": "kill", "path": str(prompts)}],
                          shard_prompts=shard, max_parallel_shards=parallel)
    pool = fast_pool(tmp_path)
    base = {"PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING"}

    def env_for(name: str) -> dict[str, str]:
        settings = Settings(data_dir=tmp_path / name)
        return {**base, **settings_env(settings, sim.base_url, pool)}

    # uninterrupted run
    proc = _cli(env_for("straight"), recipe)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["counts"]["exported_completions"] == n_prompts * 4

    # same simulator state (attempt numbers, counters), killed mid-generation, then rerun
    sim.reset()
    killed_dir = tmp_path / "killed"
    proc = _cli(env_for("killed"), recipe)
    deadline = time.monotonic() + 120
    while _journaled(killed_dir, generation_only=True) < n_prompts * 4 * 0.4:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "generation never got going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    at_kill = _journaled(killed_dir, generation_only=True)
    assert at_kill < n_prompts * 4, "killed too late: generation had finished"
    journaled_at_kill = _journaled(killed_dir)
    landed = landed_calls(killed_dir, journaled_at_kill)
    proc = _cli(env_for("killed"), recipe)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    rerun = json.loads(stdout)["counts"]
    # the rerun pays for the completions not journaled at the kill, replays every journaled
    # call that had not landed, and pays nothing for the landed ones
    assert rerun["generation_requests_paid"] == n_prompts * 4 - at_kill
    assert rerun["requests_from_journal"] == journaled_at_kill - landed

    # the killed shards' rows landed once, on the rerun
    assert not any(raw_duplicates(Lake(str(killed_dir / "lake"))).values())
    for suffix in ("jsonl", "parquet"):
        rel = f"exports/ultrafeedback/ultrafeedback.{suffix}"
        straight = (tmp_path / "straight" / "lake" / rel).read_bytes()
        assert (killed_dir / "lake" / rel).read_bytes() == straight, suffix
    repeats = sim.stats()["ok_repeats"]
    assert repeats <= in_flight_bound
    with capsys.disabled():
        print(f"\n[ultrafeedback kill] killed with {at_kill}/{n_prompts * 4} completions "
              f"journaled, {landed} landed; rerun paid {repeats} repeated calls "
              f"(bound {in_flight_bound} in flight)")


def landed_calls(data_dir: Path, journaled: int) -> int:
    """Calls whose results are in landed shards (≤ journaled: a shard lands only once the
    journal holds every reply it used): completions, and every call of each judge job."""
    lake = Lake(str(data_dir / "lake"))
    completions = lake.read_table("uf_completions", columns=["completion_id"]).num_rows
    ann = lake.read_table("uf_annotations", columns=["annotation_id", "calls"]).to_pylist()
    crit = lake.read_table("uf_critiques", columns=["critique_id", "calls"]).to_pylist()
    judged = sum({r["annotation_id"]: r["calls"] for r in ann}.values()) + sum(
        r["calls"] for r in crit)
    assert completions + judged <= journaled
    return completions + judged


# ---- bad prompt files ---------------------------------------------------------------------------

def test_bad_prompt_files_are_quarantined_and_the_run_completes(
        prefect_api, make_simulator, local_settings, tmp_path, monkeypatch):
    sim = make_simulator("unlimited", seed=2)
    good = [{"instruction": "Name three primary colours.", "source": "flan",
             "correct_answers": ["red, yellow and blue"]},
            {"instruction": "Why do cats purr?", "source": "sharegpt"}]
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b"\n".join([
        json.dumps(good[0]).encode(),
        b'{"instruction": "Unclosed object", "source": "flan"',           # 2 broken JSON
        json.dumps({"instruction": "", "source": "flan"}).encode(),      # 3 empty
        json.dumps({"instruction": 42, "source": "flan"}).encode(),      # 4 wrong type
        json.dumps({"instruction": "Fine text", "source": "flan",
                    "correct_answers": {"a": 1}}).encode(),               # 5 wrong type
        b'{"instruction": "Caf\xe9 au lait?", "source": "sharegpt"}',     # 6 not UTF-8
        b"[1, 2, 3]",                                                     # 7 not an object
        json.dumps({"instruction": "x" * 400, "source": "ultrachat"}).encode(),  # 8 too long
        json.dumps(good[0]).encode(),                                     # 9 duplicate
        json.dumps({"prompt": "no instruction field", "source": "flan"}).encode(),  # 10 missing
        json.dumps(good[1]).encode(),
        b'{"instruction": "Lone half", "source": "truthful_qa", '
        b'"correct_answers": ["ok", "\\ud800"]}',                         # 12 lone surrogate
        b'{"instruction": "Bad label", "source": "fl\\udfffan"}',        # 13 lone surrogate
    ]) + b"\n")
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"instruction,source\nWhat is a haiku?,evol_instruct\n"
                    b"Na\xefve question,sharegpt\n")
    recipe = write_recipe(
        tmp_path, [{"name": "jsonl", "path": str(jsonl)},
                   {"name": "csv", "path": str(csv)}],
        max_instruction_chars=300, plan={"n_models": 2},
        annotation={"mode": "overall_rating"}, critique={"enabled": False})
    env = settings_env(local_settings, sim.base_url, fast_pool(tmp_path))
    out, _ = run_in_process(monkeypatch, env, recipe)

    counts = out["counts"]
    assert counts["prompts"] == 3 and counts["duplicates"] == 1
    with Warehouse.from_settings(local_settings, read_only=True) as wh:
        rows = wh.query("SELECT origin, row, field, reason, raw FROM uf_quarantine "
                        "ORDER BY origin, row")
    got = {(r["origin"], r["row"]): (r["field"], r["reason"]) for r in rows}
    raw = {(r["origin"], r["row"]): r["raw"] for r in rows}
    assert counts["quarantined"] == len(got) == 11
    assert got[("jsonl", 2)][1].startswith("not valid JSON")
    assert got[("jsonl", 3)] == ("instruction", "empty")
    assert got[("jsonl", 4)] == ("instruction", "expected a string, got int")
    assert got[("jsonl", 5)] == ("correct_answers", "expected a list of strings, got dict")
    assert got[("jsonl", 6)][1].startswith("not valid UTF-8")
    assert got[("jsonl", 7)][1] == "expected a JSON object, got list"
    assert got[("jsonl", 8)] == ("instruction", "400 characters, over the limit of 300")
    assert got[("jsonl", 10)] == ("instruction", "missing")
    assert got[("csv", 2)][1] == "not valid UTF-8"
    assert got[("jsonl", 12)] == ("correct_answers.1", "not valid Unicode: lone surrogate U+D800")
    assert got[("jsonl", 13)] == ("source", "not valid Unicode: lone surrogate U+DFFF")
    assert "\\ud800" in raw[("jsonl", 12)]  # the preview keeps the escape, readable as ASCII

    records = [json.loads(x) for x in Path(out["jsonl"]).read_text().splitlines()]
    assert sorted(r["instruction"] for r in records) == sorted(
        [good[0]["instruction"], good[1]["instruction"], "What is a haiku?"])
    for r in records:
        assert len(r["completions"]) == 2
        for c in r["completions"]:
            assert list(c["annotations"]) == ["overall-rating"]
            assert c["critique"] is None and c["overall_score"] is None
    flan = next(r for r in records if r["source"] == "flan")
    assert flan["correct_answers"] == ["red, yellow and blue"]
    assert flan["incorrect_answers"] == ["None"]


# ---- raising N, adding a model: only the missing work ---------------------------------------------

def test_raising_n_or_adding_a_model_generates_only_what_is_missing(
        prefect_api, make_simulator, local_settings, tmp_path, monkeypatch):
    sim = make_simulator("unlimited", seed=4)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 12)
    models = ["gpt-4", "bard", "alpaca-7b", "starchat", "vicuna-33b"]
    recipe = write_recipe(tmp_path, [{"name": "few", "path": str(prompts)}],
                          plan={"models": models, "n_models": 2}, critique={"enabled": False})
    env = settings_env(local_settings, sim.base_url, fast_pool(tmp_path))

    first, _ = run_in_process(monkeypatch, env, recipe)
    assert first["counts"]["generation_requests_paid"] == 24

    # --dry-run tells landed work from new: the same recipe has nothing new; raising N makes every
    # rating call new, as a rating call covers all of a prompt's completions
    same = dry_run(UltraFeedbackParams(recipe=str(recipe)))["counts"]
    assert (same["completions_landed"], same["completions_new"]) == (24, 0)
    assert (same["annotation_calls_landed"], same["annotation_calls_new"]) == (48, 0)
    more = dry_run(UltraFeedbackParams(recipe=str(recipe), overrides=["plan.n_models=3"]))
    assert (more["counts"]["completions_landed"], more["counts"]["completions_new"]) == (24, 12)
    assert (more["counts"]["annotation_calls_landed"],
            more["counts"]["annotation_calls_new"]) == (0, 48)
    before = {(r["instruction"], c["model"]): c["response"]
              for r in map(json.loads, Path(first["jsonl"]).read_text().splitlines())
              for c in r["completions"]}

    raised, run_id = run_in_process(monkeypatch, env, recipe, "plan.n_models=3")
    assert raised["counts"]["generation_requests_paid"] == 12
    summary = {r["count"]: r["value"] for r in summary_table(run_id, "counts")}
    assert summary == raised["counts"]
    with Warehouse.from_settings(local_settings, read_only=True) as wh:
        assert_no_duplicate_ids(wh, without=("uf_critiques",))  # critique is off in this recipe
        assert_summary_matches_warehouse(wh, summary)
    after = {(r["instruction"], c["model"]): c["response"]
             for r in map(json.loads, Path(raised["jsonl"]).read_text().splitlines())
             for c in r["completions"]}
    assert len(after) == 36 and all(after[k] == v for k, v in before.items())

    seed = yaml.safe_load(recipe.read_text())["seed"]
    ids = [prompt_id(json.loads(line)["instruction"])
           for line in prompts.read_text().splitlines()]
    expected = sum("pythia-12b" in rank_models(seed, pid, [*models, "pythia-12b"])[:3]
                   for pid in ids)
    added, _ = run_in_process(monkeypatch, env, recipe, "plan.n_models=3",
                              f"plan.models=[{', '.join([*models, 'pythia-12b'])}]")
    assert 0 < expected < 12
    assert added["counts"]["generation_requests_paid"] == expected
    assert sim.stats()["ok_repeats"] == 0


# ---- failed calls: retried by the next run, and they land ------------------------------------------

def split_pool(tmp: Path, generation_url: str, judge_url: str) -> Path:
    """The bundled pool with generators and the judge on two endpoints, one attempt per call."""
    pool = yaml.safe_load((RECIPES_DIR / "pool.yaml").read_text())
    local = {**pool["endpoints"]["local"], "max_attempts": 1,
             "limits": {"max_concurrency": 64, "initial_concurrency": 64}}
    pool["endpoints"] = {"local": {**local, "base_url": generation_url},
                         "judge": {**local, "base_url": judge_url}}
    pool["models"]["gpt-4-judge"]["endpoint"] = "judge"
    path = tmp / f"pool-{abs(hash((generation_url, judge_url)))}.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


def test_failed_calls_are_retried_by_the_next_run_and_land(
        prefect_api, make_simulator, local_settings, tmp_path, monkeypatch):
    broken = make_simulator("unlimited", seed=6, overrides={"faults.rate_5xx": 1.0})
    healthy = make_simulator("unlimited", seed=6)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    recipe = write_recipe(tmp_path, [{"name": "six", "path": str(prompts)}],
                          plan={"n_models": 2}, shard_prompts=2)
    monkeypatch.delenv("ULTRAFORGE_ENDPOINT_BASE_URL", raising=False)

    def run(generation, judge, exit_code):
        env = settings_env(local_settings, None, split_pool(tmp_path, generation.base_url,
                                                            judge.base_url))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(cli, ["run", "ultrafeedback", "--recipe", str(recipe)])
        assert result.exit_code == exit_code, result.output[-3000:]
        return json.loads(result.stdout)

    # every call fails: nothing is answered, all of it is counted as failed (exit 2: partial)
    first = run(broken, broken, 2)["counts"]
    assert first["planned_completions"] == 12 and first["failed_completions"] == 12
    assert first["exported_completions"] == 0

    # generation recovers, the judge does not: completions land, judge calls fail visibly
    second = run(healthy, broken, 2)["counts"]
    assert second["exported_completions"] == 12 and second["failed_completions"] == 0
    assert second["aspect_ratings_parsed"] == 0 and second["critiques_parsed"] == 0
    assert second["annotation_calls_failed"] == 6 * 4
    assert second["critique_calls_failed"] == 12

    # all healthy: the judge calls land and the export is complete; generation is not paid again
    out = run(healthy, healthy, 0)
    third = out["counts"]
    assert third["exported_completions"] == 12 and third["aspect_ratings_parsed"] == 48
    assert third["critiques_parsed"] == 12
    assert third["annotation_calls_failed"] == third["critique_calls_failed"] == 0
    assert third["generation_requests_paid"] == 0
    assert third["annotation_requests_paid"] == 24 and third["critique_requests_paid"] == 12
    records = [json.loads(x) for x in Path(out["jsonl"]).read_text().splitlines()]
    assert all(c["annotations"]["honesty"] is not None and c["overall_score"] is not None
               for r in records for c in r["completions"])
    with Warehouse.from_settings(local_settings, read_only=True) as wh:
        assert_no_duplicate_ids(wh)
        assert one(wh, "SELECT count(*) FROM uf_completions") == 12
        assert one(wh, "SELECT count(*) FROM uf_failures WHERE stage = 'generation'") == 12


def test_cli_config_errors_exit_1_naming_the_file_or_source(prefect_api, local_settings, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("ULTRAFORGE_DATA_DIR", str(local_settings.data_dir))
    missing = tmp_path / "no.yaml"
    result = CliRunner().invoke(cli, ["run", "ultrafeedback", "--recipe", str(missing)])
    assert result.exit_code == 1
    assert result.stderr == f"error: {missing}: cannot read: No such file or directory\n"
    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    recipe = write_recipe(tmp_path, [{"name": "mine", "path": str(prompts)}])
    for extra in (["--dry-run"], []):
        result = CliRunner().invoke(cli, ["run", "ultrafeedback", "--recipe", str(recipe), *extra,
                                          "--set", "sources.0.fields.instruction=question"])
        assert result.exit_code == 1, result.output
        last = result.stderr.splitlines()[-1]
        assert last.startswith("error: source 'mine' ") and "yielded no prompts" in last
        assert "row 1 instruction: missing" in last
        if extra:  # nothing ran: the error is the only line
            assert result.stderr == last + "\n"
