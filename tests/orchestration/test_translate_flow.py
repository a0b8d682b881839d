"""The translate flow over each kind of set against the simulator's translation role: every
non-text field identical to the English, code blocks and `Confidence:` lines byte-identical,
originals kept, the same splits; a rerun makes no call; repeated system prompts cost one call."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from flows.translate import TranslateParams, dry_run, translate
from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake
from tasks.adapters.resources import current
from tasks.adapters.warehouse import Warehouse
from tasks.core.derived.binarize import DPO_SCHEMA
from tasks.core.derived.sft import SFT_SCHEMA
from tasks.core.shards import ScaleOut
from tasks.core.translate.fields import slots
from tasks.core.ultrachat.tables import RAW_SCHEMA
from tasks.core.ultrafeedback.export import export_schema
from tasks.translate.sets import plan, shared_chunks
from tests.fixtures.factory import fast_pool, settings_env, settings_in
from tests.fixtures.translate import strip_texts
from tests.orchestration.test_scale_out import children_of

pytestmark = pytest.mark.slow

CODE = "```python\nfor i in range(3):\n    print(i)\n```"
SYSTEM = "You are an AI assistant that helps people find information and explains every step."


def uf_record(i: int) -> dict:
    completion = lambda model, response: {  # noqa: E731
        "model": model, "principle": "honesty", "custom_system_prompt": SYSTEM,
        "response": response,
        "annotations": {"honesty": {"Rating": "4", "Rationale": "Mostly confident."},
                        "truthfulness": {"Type": ["0"], "Rationale": "No errors.", "Rating": "5",
                                         "Rationale For Rating": "Accurate."}},
        "critique": "Explain the loop a little more.", "overall_score": 7.5, "fine-grained_score": 4.5}
    return {"source": "sharegpt", "id": f"S{i}", "instruction": f"How do I print numbers {i} times?",
            "models": ["gpt-4", "wizardlm-7b"],
            "completions": [completion("gpt-4", f"Use a loop like this one for case {i}.\n\n{CODE}\n\n"
                                                "Confidence: 90%"),
                            completion("wizardlm-7b", "Write the numbers by hand, one per line.")],
            "correct_answers": ["None"], "incorrect_answers": ["None"]}


def messages(i: int) -> list[dict]:
    return [{"content": f"What is a good name for a cat number {i}?", "role": "user"},
            {"content": f"Whiskers is a classic choice for cat {i}, short and friendly.",
             "role": "assistant"}]


def write_inputs(lake: Path) -> None:
    def put(relpath: str, rows: list[dict], schema: pa.Schema) -> None:
        (lake / relpath).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), lake / relpath)
    put("exports/ultrafeedback/ultrafeedback.parquet", [uf_record(i) for i in range(6)],
        export_schema(["honesty", "truthfulness"], with_id=True))
    put("exports/ultrachat/ultrachat/ultrachat.parquet",
        [{"id": str(i), "data": [m["content"] for m in messages(i)]} for i in range(5)], RAW_SCHEMA)
    for split, n in (("train_sft", 4), ("test_sft", 2)):
        put(f"exports/sft/ultrachat_200k/data/{split}.parquet",
            [{"prompt": messages(i)[0]["content"], "prompt_id": f"p{i}", "messages": messages(i)}
             for i in range(n)], SFT_SCHEMA)
    put("exports/dpo/ultrafeedback_binarized/data/train_prefs.parquet",
        [{"prompt": messages(i)[0]["content"], "prompt_id": f"p{i}", "chosen": messages(i),
          "rejected": messages(i)[:1] + [{"content": "No idea.", "role": "assistant"}],
          "messages": messages(i), "score_chosen": 8.0, "score_rejected": 2.0} for i in range(3)],
        DPO_SCHEMA)



def setup(monkeypatch, tmp_path: Path, sim) -> Path:
    """Inputs in a fresh lake, the flows pointed at it and at `sim`; the lake's path."""
    settings = settings_in(tmp_path / "data")
    write_inputs(Path(settings.lake))
    for key, value in settings_env(settings, sim.base_url, fast_pool(tmp_path)).items():
        monkeypatch.setenv(key, value)
    return Path(settings.lake)


@pytest.fixture
def env(monkeypatch, tmp_path, make_simulator):
    sim = make_simulator("unlimited", seed=3)
    return sim, setup(monkeypatch, tmp_path, sim)


def read(lake: Path, folder: str, split: str) -> list[dict]:
    return pq.read_table(lake / folder / "data" / f"{split}.parquet").to_pylist()


@pytest.mark.parametrize(("kind", "folder", "inp", "split", "feedback"), [
    ("ultrafeedback", "exports/ultrafeedback-ja/ultrafeedback",
     "exports/ultrafeedback/ultrafeedback.parquet", "train", True),
    ("ultrachat", "exports/ultrachat-ja/ultrachat",
     "exports/ultrachat/ultrachat/ultrachat.parquet", "train", False),
    ("sft", "exports/sft-ja/ultrachat_200k",
     "exports/sft/ultrachat_200k/data/test_sft.parquet", "test_sft", False),
    ("dpo", "exports/dpo-ja/ultrafeedback_binarized",
     "exports/dpo/ultrafeedback_binarized/data/train_prefs.parquet", "train_prefs", False),
])
def test_every_non_text_field_is_identical_and_the_originals_are_kept(
        prefect_api, env, kind, folder, inp, split, feedback):
    sim, lake = env
    overrides = ["feedback=true"] if feedback else []
    out = translate(TranslateParams(set=kind, overrides=overrides))
    english = pq.read_table(lake / inp).to_pylist()
    japanese = read(lake, folder, split)
    assert len(japanese) == len(english) == out.rows[split]
    for en, ja in zip(english, japanese, strict=True):
        assert strip_texts(ja, kind, feedback) == strip_texts(en, kind, feedback)
        assert {k: ja[f"{k}_en"] for k in ja if f"{k}_en" in ja} == {
            k: en[k] for k in ja if f"{k}_en" in ja}  # the originals, as they were
        for a, b in zip(slots(en, kind, feedback), slots(ja, kind, feedback), strict=True):
            assert a.path == b.path and a.text != b.text  # every text translated
    assert out.counts.records_flagged == 0
    assert (lake / folder / "README.md").read_text().count("gpt-4o") >= 1
    assert (lake / folder / "data" / f"{split}.jsonl").read_text().count("\n") == len(english)


def test_code_blocks_and_confidence_lines_are_byte_identical_and_system_prompts_are_one_call(
        prefect_api, env):
    sim, lake = env
    out = translate(TranslateParams(set="ultrafeedback"))
    rows = read(lake, "exports/ultrafeedback-ja/ultrafeedback", "train")
    for row in rows:
        answer = row["completions"][0]["response"]
        assert CODE in answer and answer.endswith("Confidence: 90%")
        assert {c["custom_system_prompt"] for c in row["completions"]} == {
            rows[0]["completions"][0]["custom_system_prompt"]}
    # 6 instructions + 6 first answers (the case number differs) + 1 second answer + 1 system prompt
    assert out.counts.unique_chunks < out.counts.chunks
    requests = sim.stats()["requests"]
    assert requests == out.counts.calls_paid == out.counts.unique_chunks

    again = translate(TranslateParams(set="ultrafeedback"))
    assert sim.stats()["requests"] == requests and again.counts.calls_paid == 0
    assert read(lake, "exports/ultrafeedback-ja/ultrafeedback", "train") == rows


def test_a_parent_with_parts_pays_the_chunks_of_several_blocks_first_and_lands_them_for_its_parts(
        prefect_api, env, monkeypatch):
    sim, lake = env
    # no timed journal segment: the only one landed is the one before the parts start
    monkeypatch.setenv("ULTRAFORGE_JOURNAL_SEGMENT_S", "3600")
    params = TranslateParams(set="ultrafeedback", overrides=["batch_records=2"])
    res = current()
    # in 3 blocks: the system prompt and the second answer; each instruction and first answer
    # is a record's own
    shared = shared_chunks(res, params.recipe, plan(res, params.recipe))
    assert sorted(c.text for c in shared) == sorted([SYSTEM, "Write the numbers by hand, one per line."])

    translate.to_deployment(name="part").apply()  # no worker takes them: the parent does all
    out = translate(params.model_copy(update={"scale": ScaleOut(parts=2)}))
    assert [p.state for p in out.parts] == ["Cancelled", "Cancelled"]
    # the two first, then each block's 4 own chunks; the blocks find the two in the journal
    assert out.counts.calls_paid == sim.stats()["requests"] == 2 + 3 * 4
    assert sim.stats()["ok_repeats"] == 0
    assert out.counts.calls_from_journal == 3 * 2
    # the two were in the lake before the parts were started
    segments = sorted((lake / "_journal").glob("*.parquet"))
    assert [pq.read_metadata(f).num_rows for f in segments] == [2]


def test_a_run_with_parts_but_no_part_deployment_is_a_config_error_that_pays_nothing(
        prefect_api, env):
    sim, _ = env
    # another test of this session may have made it
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_deployment(client.read_deployment_by_name("translate/part").id)
    params = TranslateParams(set="ultrafeedback", overrides=["batch_records=2"], scale={"parts": 2})
    with pytest.raises(ConfigError, match="'translate/part'"):
        translate(params)
    assert sim.stats()["requests"] == 0  # not even the chunks of several blocks


def test_shared_chunks_still_in_a_batch_stop_the_run_before_its_parts_and_the_next_collects_them(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    # "24h" is 6 s here: a batch outlasts the first run's 0.5 s wait
    sim = make_simulator("unlimited", seed=3, overrides={
        "batch.window_s": 6, "batch.validating_s": 0.1, "batch.finalizing_s": 0.1})
    setup(monkeypatch, tmp_path, sim)
    translate.to_deployment(name="part").apply()  # no worker takes them
    batched = ["batch_records=2", "translation.route=batch", "batch.linger_s=0.2", "batch.poll_s=0.2"]

    first = translate(TranslateParams(set="ultrafeedback", overrides=[*batched, "batch.wait_s=0.5"],
                                      scale={"parts": 2}), return_state=True)
    assert first.is_failed() and "still wait in batches" in first.message
    assert children_of(first.state_details.flow_run_id) == []  # no part was started
    created = sim.stats()["batch"]["batches_created"]
    assert created == 1  # the two chunks of several blocks

    out = translate(TranslateParams(set="ultrafeedback", overrides=[*batched, "batch.wait_s=60"],
                                    scale={"parts": 2}))
    assert out.counts.records_written == 6 and out.counts.calls_paid == 14
    stats = sim.stats()["batch"]
    assert stats["custom_id_repeats"] == 0 and stats["batches_created"] > created


def test_splits_of_a_derived_set_are_kept_and_the_dry_run_estimates_before_paying(prefect_api, env):
    sim, lake = env
    estimate = dry_run(TranslateParams(set="sft"))
    assert sim.stats()["requests"] == 0 and estimate["unique_chunks"] > 0
    assert estimate["batch_cost_usd"] == pytest.approx(estimate["online_cost_usd"] / 2, abs=1e-4)
    out = translate(TranslateParams(set="sft"))
    assert out.rows == {"test_sft": 2, "train_sft": 4}
    # prompts shared by the splits are one call: as many as the estimate's unique chunks
    assert out.counts.calls_paid == estimate["unique_chunks"] == sim.stats()["requests"]


def flag_lines(lake: Path, folder: str) -> list[dict]:
    return [json.loads(line) for line in (lake / folder / "flags.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("flagged", ["keep", "exclude"])
def test_records_still_failing_a_check_are_listed_with_reasons_and_kept_or_excluded_by_recipe(
        prefect_api, monkeypatch, tmp_path, make_simulator, flagged):
    sim = make_simulator("unlimited", seed=3, overrides={"faults.commentary": 1.0})
    lake = setup(monkeypatch, tmp_path, sim)
    out = translate(TranslateParams(set="sft", overrides=[f"flagged={flagged}"]))
    folder = "exports/sft-ja/ultrachat_200k"
    lines = flag_lines(lake, folder)
    assert len(lines) == out.counts.records_flagged == 6
    assert all("commentary" in line["reasons"] and line["record"].endswith(")") for line in lines)
    # (an added preamble paragraph also changes the Markdown structure)
    assert out.flagged_records["commentary"] == 6
    assert out.flags["commentary"] == out.counts.unique_chunks
    assert out.counts.retranslations == 2 * out.counts.unique_chunks
    assert sum(out.rows.values()) == (6 if flagged == "keep" else 0)
    assert "flagged records: commentary" in (lake / folder / "README.md").read_text()
    # the warehouse views: each flagged record by reason, and what every block paid
    with Warehouse(lake.parent / "ultraforge.duckdb", Lake(str(lake)), read_only=True) as wh:
        by_reason = {r["reason"]: r["n"] for r in wh.query(
            "SELECT reason, count(*) AS n FROM translate_flags GROUP BY reason")}
        paid = wh.query("SELECT sum(requests) AS n FROM translate_usage")[0]["n"]
    assert by_reason == out.flagged_records and paid == out.counts.calls_paid == sim.stats()["requests"]


def test_a_reply_that_lost_a_protected_span_is_no_translation_even_when_flagged_records_are_kept(
        prefect_api, monkeypatch, tmp_path, make_simulator):
    sim = make_simulator("unlimited", seed=3, overrides={"faults.broken_code": 1.0})
    lake = setup(monkeypatch, tmp_path, sim)
    out = translate(TranslateParams(set="ultrafeedback"))
    folder = "exports/ultrafeedback-ja/ultrafeedback"
    # every record has a code block in its first answer: none can be published with it broken
    assert out.rows == {"train": 0} and out.counts.records_excluded == 6
    assert all(line["excluded"] and "spans_damaged" in line["reasons"]
               for line in flag_lines(lake, folder))


def test_inline_originals_sit_beside_each_text_and_the_overview_layout_lists_each_annotation(
        prefect_api, env):
    sim, lake = env
    translate(TranslateParams(set="ultrafeedback", overrides=[
        "originals=inline", "overview=true", "feedback=true"]))
    folder = lake / "exports/ultrafeedback-ja/ultrafeedback"
    english = pq.read_table(lake / "exports/ultrafeedback/ultrafeedback.parquet").to_pylist()
    japanese = pq.read_table(folder / "data/train.parquet").to_pylist()
    for en, ja in zip(english, japanese, strict=True):
        assert ja["instruction_en"] == en["instruction"] != ja["instruction"]
        assert "completions_en" not in ja  # inline: the originals are inside the completions
        for c_en, c_ja in zip(en["completions"], ja["completions"], strict=True):
            assert c_ja["response_en"] == c_en["response"] != c_ja["response"]
            assert c_ja["custom_system_prompt_en"] == c_en["custom_system_prompt"]
            a_ja, a_en = c_ja["annotations"], c_en["annotations"]
            assert a_ja["honesty"]["Rationale_en"] == a_en["honesty"]["Rationale"]
            assert a_ja["truthfulness"]["Type"] == a_en["truthfulness"]["Type"]
    overview = [json.loads(line) for line in (folder / "overview/train.jsonl").read_text().splitlines()]
    assert len(overview) == len(english)
    for en, ov, ja in zip(english, overview, japanese, strict=True):
        assert list(ov) == ["source", "id", "instruction", "models", "completions"]
        assert (ov["source"], ov["id"], ov["models"]) == (en["source"], en["id"], en["models"])
        assert ov["instruction"] == ja["instruction"]
        first = ov["completions"][0]
        assert list(first) == ["model", "principle", "custom_system_prompt", "response", "annotations"]
        assert first["annotations"]["honesty"] == [{
            "Rating": "4", "Rationale": ja["completions"][0]["annotations"]["honesty"]["Rationale"]}]
        assert list(first["annotations"]["truthfulness"][0]) == [
            "Type", "Rationale", "Rating", "Rationale For Rating"]


def test_an_input_that_holds_the_originals_column_already_is_refused_naming_it(prefect_api, env):
    sim, lake = env
    translate(TranslateParams(set="sft"))
    again = ["input=exports/sft-ja/ultrachat_200k", "name=twice"]
    with pytest.raises(ConfigError, match=r"column 'messages_en'.*translated already"):
        translate(TranslateParams(set="sft", overrides=again))
    assert translate(TranslateParams(set="sft", overrides=[*again, "source_lang=ja1"])).rows


def sft_inputs(lake: Path, n: int) -> None:
    """An SFT set of `n` distinct dialogues (the only set in the lake)."""
    rows = [{"prompt": messages(i)[0]["content"], "prompt_id": f"p{i}", "messages": messages(i)}
            for i in range(n)]
    folder = lake / "exports/sft/many/data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SFT_SCHEMA), folder / "train_sft.parquet")


def published(lake: Path) -> dict[str, bytes]:
    folder = lake / "exports/sft-ja/many"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "dataset" not in p.parts}


def test_a_run_killed_mid_translation_then_rerun_gives_the_same_set_repaying_at_most_the_calls_in_flight(
        prefect_api, make_simulator, tmp_path):
    concurrency = 8
    sim = make_simulator("unlimited", seed=3, overrides={"latency.ttft_s": 0.1,
                                                         "latency.per_token_s": 0.004})
    pool = fast_pool(tmp_path, concurrency=concurrency)
    command = [str(Path(sys.executable).parent / "ultraforge"), "translate", "--set", "sft",
               "--param", "input=exports/sft/many", "--param", "batch_records=5"]

    def env_for(name: str) -> tuple[dict[str, str], Path]:
        settings = settings_in(tmp_path / name)
        sft_inputs(Path(settings.lake), 60)
        return {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING",
                **settings_env(settings, sim.base_url, pool)}, Path(settings.lake)

    clean_env, clean_lake = env_for("clean")
    clean = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr[-3000:]
    unique = sim.stats()["requests"]
    assert unique == json.loads(clean.stdout)["counts"]["unique_chunks"] == 120

    env_, lake = env_for("killed")
    proc = subprocess.Popen(command, env=env_, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while sim.stats()["requests"] < unique + 50:  # well into the run: some blocks landed
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = sim.stats()["requests"] - unique
    assert killed_at < unique, "killed too late: the run had finished"
    assert list((lake / "work/translate").rglob("*.parquet")), "no block had landed before the kill"

    rerun = subprocess.run(command, env=env_, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    repaid = sim.stats()["requests"] - 2 * unique
    # in flight at the kill: at most `concurrency` requests on the wire, plus replies received
    # but not yet committed to the journal, whose slots were already taken by new requests
    # (docs/engine.md#exactly-once)
    assert 0 <= repaid <= 2 * concurrency, (killed_at, repaid)
    assert published(lake) == published(clean_lake)  # the same files, byte for byte


def test_a_split_in_several_hub_files_is_one_split_translated_in_order(prefect_api, env):
    sim, lake = env
    folder = lake / "exports/sft/hub/data"
    folder.mkdir(parents=True)
    rows = [{"prompt": messages(i)[0]["content"], "prompt_id": f"p{i}", "messages": messages(i)}
            for i in range(7)]
    for part, chunk in enumerate((rows[:4], rows[4:])):
        pq.write_table(pa.Table.from_pylist(chunk, schema=SFT_SCHEMA),
                       folder / f"train_sft-{part:05d}-of-00002.parquet")
    out = translate(TranslateParams(set="sft", overrides=["input=exports/sft/hub", "batch_records=3"]))
    assert out.rows == {"train_sft": 7}
    japanese = read(lake, "exports/sft-ja/hub", "train_sft")
    assert [r["prompt_id"] for r in japanese] == [f"p{i}" for i in range(7)]
    assert [r["messages_en"] for r in japanese] == [r["messages"] for r in rows]
