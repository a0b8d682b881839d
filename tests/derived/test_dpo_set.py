"""The DPO set (issue 8): HF's binarization rule on a hand-built raw export, each option changing
exactly what it says, the presets, decontamination, the splits and the published shape. Real
DuckDB over real Parquet, in a local lake and in S3 (moto)."""

from __future__ import annotations

import hashlib
import math

import datasets
import pyarrow.parquet as pq
import pytest

from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.resources import Resources, activate
from tasks.core.derived.binarize import DPORecipe
from tasks.core.ultrafeedback.export import export_schema
from tasks.core.ultrafeedback.recipe import FINE_GRAINED_ASPECTS
from tasks.derived import dpo as dpo_task
from tasks.derived.dpo import export_dpo

INPUT = "exports/ultrafeedback/fixture.parquet"
MESSAGES = datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")})
# docs/datasets.md#ultrafeedback_binarized, the card's schema
SPEC_FEATURES = datasets.Features({
    "prompt": datasets.Value("string"), "prompt_id": datasets.Value("string"),
    "chosen": MESSAGES, "rejected": MESSAGES, "messages": MESSAGES,
    "score_chosen": datasets.Value("float64"), "score_rejected": datasets.Value("float64")})


def completion(model: str, score: float | None, response: str | None = None,
               honesty: str = "4", fine: float | None = None) -> dict:
    untyped = {"Rating": honesty, "Rationale": "r"}
    typed = {"Type": ["None"], "Rationale": "r", "Rating": "3", "Rationale For Rating": "r"}
    return {"model": model, "principle": "helpfulness", "custom_system_prompt": "",
            "response": response or f"answer of {model}",
            "annotations": {"instruction_following": untyped, "honesty": untyped,
                            "truthfulness": typed, "helpfulness": typed},
            "critique": "c", "overall_score": score, "fine-grained_score": fine}


def row(instruction: str, *completions: dict, source: str = "sharegpt") -> dict:
    return {"source": source, "instruction": instruction, "models": [c["model"] for c in completions],
            "completions": list(completions), "correct_answers": ["None"],
            "incorrect_answers": ["None"]}


ROWS = {
    "ties": row("Tied?", completion("a", 8.0), completion("b", 8.0), completion("c", 5.0),
                completion("d", 3.0)),
    "one_scored": row("Only one?", completion("a", 7.0), completion("b", None),
                      completion("c", None)),
    "nulls": row("Nulls?", completion("a", None), completion("b", 6.0),
                 completion("c", math.nan), completion("d", 4.0)),
    "bug": row("Bug?", completion("a", 1.0), completion("b", 9.0), completion("c", 5.0),
               completion("d", 2.0)),
    "truthful": row("What happens if you crack your knuckles a lot?", completion("a", 9.0),
                    completion("b", 2.0), source="truthful_qa"),
    "same_question": row("what happens if you crack your knuckles a LOT", completion("a", 9.0),
                         completion("b", 2.0), source="evol_instruct"),
    "listed": row("Can pigs fly?", completion("a", 6.0), completion("b", 2.0), source="flan"),
    "identical": row("Twins?", completion("a", 5.0, "same"), completion("a", 5.0, "same")),
    "all_tied": row("All tied?", completion("a", 6.0), completion("b", 6.0), completion("c", 6.0)),
    "single": row("Alone?", completion("a", 9.0)),
}
MANY = [row(f"Question number {i}?", *(completion(m, float(s)) for m, s in
                                        zip("abcd", (9, 7, 5, 3), strict=True)))
        for i in range(240)]


@pytest.fixture
def lake(any_settings):
    res = activate(Resources.build(any_settings))
    yield res.lake
    activate(None)


def land(lake: Lake, rows: list[dict], relpath: str = INPUT, **schema_args) -> None:
    lake.write_bytes(relpath, parquet_bytes(rows, export_schema(FINE_GRAINED_ASPECTS,
                                                                **schema_args)))


def build(lake: Lake, rows: list[dict] | None = None, tmp_path=None, **recipe) -> tuple:
    land(lake, list(ROWS.values()) if rows is None else rows)
    out = export_dpo.fn(DPORecipe(input=INPUT, **{"splits": {"test_size": 2}, **recipe}),
                        str(tmp_path or "."))
    pairs = {}
    for split in ("train_prefs", "test_prefs"):
        for r in pq.read_table(lake.fs.open(out.published.parquet[split])).to_pylist():
            pairs[r["prompt"]] = r
    return out, pairs


def answer(pair: dict, side: str) -> str:
    return pair[side][1]["content"]


def test_chosen_is_the_first_highest_rejected_another_scored_one_and_short_rows_are_dropped(lake):
    out, pairs = build(lake, preset="zephyr")
    c = out.counts
    assert c.rows_read == 10 and c.dropped_source == 0
    assert c.dropped_fewer_than_2_scored == 2  # one_scored (7, null, null) and single
    assert c.dropped_no_different_completion == 1  # two identical completions
    assert set(pairs) == {"Tied?", "Nulls?", "Bug?", ROWS["truthful"]["instruction"],
                          ROWS["same_question"]["instruction"], "Can pigs fly?",
                          "All tied?"} and c.pairs == 7
    # ties are kept: every completion of "All tied?" scores 6, so its pair is a tie
    assert pairs["All tied?"]["score_chosen"] == pairs["All tied?"]["score_rejected"] == 6.0
    assert answer(pairs["All tied?"], "chosen") == "answer of a" and c.ties_kept >= 1
    assert answer(pairs["Tied?"], "chosen") == "answer of a"  # first of the two 8s
    assert pairs["Tied?"]["score_chosen"] == 8.0
    assert answer(pairs["Tied?"], "rejected") != "answer of a"
    # null and NaN scores take no part: 6 beats 4, and 4 is the only other scored one
    assert (answer(pairs["Nulls?"], "chosen"), answer(pairs["Nulls?"], "rejected")) == (
        "answer of b", "answer of d")
    p = pairs["Nulls?"]
    assert p["chosen"][0] == {"content": "Nulls?", "role": "user"} and p["messages"] == p["chosen"]
    assert p["prompt_id"] == hashlib.sha256(b"Nulls?").hexdigest()


def test_zephyr_reads_a_critique_score_of_1_as_10_and_current_keeps_it(lake):
    _, zephyr = build(lake, preset="zephyr")
    assert answer(zephyr["Bug?"], "chosen") == "answer of a"
    assert zephyr["Bug?"]["score_chosen"] == 10.0
    _, current = build(lake, preset="current")
    assert answer(current["Bug?"], "chosen") == "answer of b"
    assert current["Bug?"]["score_chosen"] == 9.0
    assert "Bug?" in current and current["Bug?"]["score_rejected"] in (1.0, 5.0, 2.0)


def test_current_drops_truthful_qa_rows_and_matching_prompts_exactly_and_normalized(
        lake, tmp_path):
    (tmp_path / "questions.txt").write_text("Can pigs fly?\n\nWho is the Queen?\n")
    out, pairs = build(lake, tmp_path=tmp_path, preset="current",
                       decontamination={"questions": ["questions.txt"]})
    c = out.counts
    assert (c.dropped_source, c.dropped_question_exact, c.dropped_question_normalized) == (1, 1, 1)
    assert "Can pigs fly?" not in pairs and ROWS["truthful"]["instruction"] not in pairs
    assert ROWS["same_question"]["instruction"] not in pairs
    assert set(pairs) == {"Tied?", "Nulls?", "Bug?", "All tied?"}
    # without normalized matching the case-and-punctuation variant stays
    out, pairs = build(lake, tmp_path=tmp_path, preset="current",
                       decontamination={"questions": ["questions.txt"], "normalized": False})
    assert out.counts.dropped_question_normalized == 0
    assert ROWS["same_question"]["instruction"] in pairs


def test_the_rejected_pick_is_seeded_uniform_and_depends_only_on_the_row(lake):
    _, first = build(lake, MANY, preset="zephyr")
    _, again = build(lake, list(reversed(MANY)), preset="zephyr")
    assert {k: answer(v, "rejected") for k, v in first.items()} == {
        k: answer(v, "rejected") for k, v in again.items()}
    picks = [answer(p, "rejected") for p in first.values()]
    assert "answer of a" not in picks
    shares = {m: picks.count(f"answer of {m}") / len(picks) for m in "bcd"}
    assert all(0.22 < s < 0.45 for s in shares.values()), shares  # ~1/3 each over 240 rows
    _, other_seed = build(lake, MANY, preset="zephyr", seed=7)
    changed = sum(answer(other_seed[k], "rejected") != answer(v, "rejected")
                  for k, v in first.items())
    assert changed > 100  # a new seed redraws about two thirds of the picks


def test_each_option_changes_exactly_what_it_says(lake):
    _, base = build(lake, preset="zephyr")
    ties = {k for k, v in base.items() if v["score_chosen"] == v["score_rejected"]}
    assert "All tied?" in ties
    out, no_ties = build(lake, preset="zephyr", drop_ties=True)
    assert no_ties == {k: v for k, v in base.items() if k not in ties}
    assert out.counts.dropped_ties == len(ties)
    out, margin = build(lake, preset="zephyr", min_margin=5)
    assert margin == {k: v for k, v in base.items()
                      if v["score_chosen"] - v["score_rejected"] >= 5}
    assert out.counts.dropped_below_margin == len(base) - len(margin)
    _, lowest = build(lake, preset="zephyr", rejected="lowest")
    assert {k: (answer(v, "chosen"), v["score_rejected"]) for k, v in lowest.items()} == {
        "Tied?": ("answer of a", 3.0), "Nulls?": ("answer of b", 4.0),
        "Bug?": ("answer of a", 2.0), ROWS["truthful"]["instruction"]: ("answer of a", 2.0),
        ROWS["same_question"]["instruction"]: ("answer of a", 2.0),
        "Can pigs fly?": ("answer of a", 2.0), "All tied?": ("answer of a", 6.0)}


def test_aspect_and_mean_scores_rank_by_their_own_values(lake):
    rows = [row("Aspect?", completion("a", 9.0, honesty="2", fine=1.5),
                completion("b", 2.0, honesty="5", fine=4.0),
                completion("c", 5.0, honesty="N/A", fine=3.0)),
            row("Second?", completion("a", 1.0, fine=2.0), completion("b", 1.0, fine=3.0))]
    _, by_aspect = build(lake, rows, splits={"test_size": 1}, score="aspect:honesty",
                         preset="zephyr")
    # N/A is no score: only a (2) and b (5) take part
    assert (answer(by_aspect["Aspect?"], "chosen"), answer(by_aspect["Aspect?"], "rejected"),
            by_aspect["Aspect?"]["score_chosen"]) == ("answer of b", "answer of a", 5.0)
    _, by_mean = build(lake, rows, splits={"test_size": 1}, score="mean_aspects")
    assert answer(by_mean["Aspect?"], "chosen") == "answer of b"
    assert by_mean["Aspect?"]["score_chosen"] == 4.0


def storage(lake: Lake) -> dict | None:
    return None if lake.is_local else dict(lake.fs.storage_options)  # datasets adds keys to it


def test_splits_follow_the_spec_sizes_and_shapes_and_load_with_datasets(lake, tmp_path):
    out, _ = build(lake, MANY, splits={"test_size": 40})
    rows = out.published.rows
    assert rows == {"train_prefs": 200, "train_sft": 200, "train_gen": 200, "test_prefs": 40,
                    "test_sft": 20, "test_gen": 20}
    dd = datasets.load_from_disk(out.published.dataset_dict, storage_options=storage(lake))
    assert {s: len(d) for s, d in dd.items()} == rows
    for split in dd.values():
        assert split.features == SPEC_FEATURES
    assert dd["train_prefs"].to_list() == dd["train_sft"].to_list()
    gen = dd["test_gen"].to_list()
    sft = dd["test_sft"].to_list()
    assert [g["prompt_id"] for g in gen] == [s["prompt_id"] for s in sft]
    assert all(g["messages"] == s["chosen"][:1] for g, s in zip(gen, sft, strict=True))
    test_ids = {r["prompt_id"] for r in dd["test_prefs"]}
    assert {r["prompt_id"] for r in dd["test_sft"]} <= test_ids
    assert not test_ids & {r["prompt_id"] for r in dd["train_prefs"]}
    files = {}
    for s in ("train_prefs", "test_prefs"):  # copied out: tests run with the Hub offline
        files[s] = str(tmp_path / f"{s}.parquet")
        lake.fs.get(out.published.parquet[s], files[s])
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "c"))
    assert loaded["test_prefs"].features == SPEC_FEATURES
    assert all(r["prompt_id"] == hashlib.sha256(r["prompt"].encode()).hexdigest()
               for r in loaded["train_prefs"])
    card = lake.read_bytes(f"exports/dpo/{DPORecipe().name}/README.md").decode()
    assert "| test_prefs | 40 |" in card and "path: data/train_prefs.parquet" in card
    assert "preset `current`" in card


def test_a_rerun_writes_the_same_bytes(lake):
    first, _ = build(lake, MANY)
    before = {s: lake.fs.cat_file(u) for s, u in first.published.parquet.items()}
    again, _ = build(lake, MANY)
    assert {s: lake.fs.cat_file(u) for s, u in again.published.parquet.items()} == before


def test_a_source_id_is_carried_as_a_last_column(lake):
    rows = [dict(r, id=f"src-{i}") for i, r in enumerate(MANY[:10])]
    land(lake, rows, with_id=True)
    out = export_dpo.fn(DPORecipe(input=INPUT, splits={"test_size": 2}), ".")
    table = pq.read_table(lake.fs.open(out.published.parquet["train_prefs"]))
    assert table.column_names[-1] == "id"
    by_prompt = {r["instruction"]: r["id"] for r in rows}
    assert all(by_prompt[r["prompt"]] == r["id"] for r in table.to_pylist())


def test_bad_inputs_are_one_line_config_errors_naming_the_problem(lake):
    with pytest.raises(ConfigError, match="no such file"):
        export_dpo.fn(DPORecipe(input="exports/missing.parquet"), ".")
    land(lake, list(ROWS.values()))
    with pytest.raises(ConfigError, match="no aspect 'honesy'"):
        export_dpo.fn(DPORecipe(input=INPUT, score="aspect:honesy"), ".")
    with pytest.raises(ConfigError, match="holds out 2000 of 7 pairs"):
        export_dpo.fn(DPORecipe(input=INPUT, preset="zephyr"), ".")
    land(lake, list(ROWS.values()), score_revision="zephyr")
    with pytest.raises(ConfigError, match="score_revision zephyr"):
        export_dpo.fn(DPORecipe(input=INPUT, preset="current"), ".")
    with pytest.raises(ConfigError, match="only local paths, lake paths and s3:// URLs"):
        export_dpo.fn(DPORecipe(input="https://example.org/uf.parquet"), ".")


def test_normalized_matching_keeps_other_scripts_apart(lake):
    rows = [row("量子コンピュータとは何ですか？", completion("a", 9.0), completion("b", 2.0),
                source="truthful_qa"),
            row("量子コンピュータとは何ですか", completion("a", 9.0), completion("b", 2.0)),
            row("東京の人口は？", completion("a", 9.0), completion("b", 2.0)),
            row("Qu'est-ce qu'un café ?", completion("a", 9.0), completion("b", 2.0)),
            row("?!", completion("a", 9.0), completion("b", 2.0), source="truthful_qa"),
            row("...", completion("a", 9.0), completion("b", 2.0))]
    out, pairs = build(lake, rows, splits={"test_size": 1})
    c = out.counts
    assert (c.dropped_source, c.dropped_question_normalized) == (2, 1)
    # the same question without its final mark is caught; an unrelated one and a punctuation-only
    # prompt (whose normal form is empty) are not
    assert set(pairs) == {"東京の人口は？", "Qu'est-ce qu'un café ?", "..."}


def test_a_row_without_instruction_or_a_null_response_takes_no_part(lake):
    rows = [*MANY[:4], row(None, completion("a", 9.0), completion("b", 2.0)),
            row("Null response?", completion("a", 9.0), completion("b", 5.0),
                completion("c", 3.0))]
    rows[-1]["completions"][0]["response"] = None
    out, pairs = build(lake, rows, splits={"test_size": 1})
    assert out.counts.dropped_no_prompt == 1 and None not in pairs
    assert answer(pairs["Null response?"], "chosen") == "answer of b"


def test_row_groups_and_batch_edges_do_not_move_any_pair(lake, monkeypatch):
    rows = [dict(r) for r in MANY]
    for r in rows[::7]:  # rows dropped here and there, on both sides of batch edges
        r["completions"] = r["completions"][:1]
    _, whole = build(lake, rows)
    monkeypatch.setattr(dpo_task, "BATCH_ROWS", 7)
    _, edged = build(lake, rows)
    assert edged == whole and len(whole) == len(rows) - len(rows[::7])


def test_rows_that_all_share_one_prompt_are_a_config_error_not_an_empty_train_split(lake):
    rows = [row("Same?", completion("a", 9.0, f"x{i}"), completion("b", 2.0, f"y{i}"))
            for i in range(5)]
    with pytest.raises(ConfigError, match="every one of the 5 pairs lands in the test part"):
        build(lake, rows, splits={"test_size": 1})
