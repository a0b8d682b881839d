"""The SFT set (ultrachat_200k shape) from hand-written dialogues: repairs, drops counted by
reason and phrase, the filters, the splits and the published shape. Real DuckDB over real
Parquet, in a local lake and in S3 (moto)."""

from __future__ import annotations

import hashlib
import re

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.resources import Resources, activate
from tasks.core.derived import sft as rules
from tasks.core.derived.sft import DISCLAIMERS, SFTRecipe, phrases
from tasks.core.ultrachat.tables import MESSAGES_SCHEMA, RAW_SCHEMA
from tasks.derived import sft as sft_task
from tasks.derived.sft import export_sft

INPUT = "exports/ultrachat/fixture/messages.parquet"
SPLITS = ("train_sft", "test_sft", "train_gen", "test_gen")
# docs/datasets.md#ultrachat_200k, the card's schema
SPEC_FEATURES = datasets.Features({
    "prompt": datasets.Value("string"), "prompt_id": datasets.Value("string"),
    "messages": datasets.List({"content": datasets.Value("string"),
                               "role": datasets.Value("string")})})
AS_AN_AI = r"as an ai\b"
AS_AN_AI_MODEL = r"as an ai (?:language )?model"
NO_FEELINGS = next(p for p, _ in phrases(str(DISCLAIMERS))
                   if p.startswith("i (?:do not|don't) have (?:any )?(?:personal |real"))
CUTOFF = next(p for p, _ in phrases(str(DISCLAIMERS)) if p.startswith("as of my"))


def turns(*texts: str, roles: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    roles = roles or tuple("user" if i % 2 == 0 else "assistant" for i in range(len(texts)))
    return [{"content": t, "role": r} for t, r in zip(texts, roles, strict=True)]


# (id, messages) in input order; the row number in the file is the position here
DIALOGUES: list[tuple[str | None, list[dict[str, str]]]] = [
    ("tc-both", turns("hello. how are you?", "i am fine. thanks for asking!")),
    ("tc-answer", turns("What is two plus two?", "it is four. easy.")),
    ("clean", turns("Name a colour.", "Blue.", "Another one?", "Green.")),
    ("dis-ai", turns("Can you taste soup?", "As an AI language model, I cannot taste.")),
    ("dis-ai-late", turns("Do you dream?", "Sure.", "Really?", "As an AI, I do not sleep.")),
    ("dis-opinion", turns("Which party is best?", "I don't have personal opinions on that.")),
    ("dis-curly", turns("Are you sad?", "I don’t have emotions, but I hear you.")),
    ("dis-cutoff", turns("Who won?", "As of my last knowledge cutoff, nobody had.")),
    ("user-says-ai", turns("As an AI, do you have opinions? I don't have emotions today.",
                           "People hold many views on that.")),
    ("bad-order", turns("Hi.", "Hello.", roles=("assistant", "user"))),
    ("empty", turns("Hi there.", "   ")),
    ("trailing", turns("Tell a joke.", "Why did the chicken cross the road?", "Why?")),
    (None, []),
    ("lonely", turns("Anyone there?")),
    ("two-users", turns("First.", "Second.", roles=("user", "user"))),
    ("system", turns("Hello.", "Be brief.", roles=("user", "system"))),
    *((f"filler-{i}", turns(f"Question number {i}?", f"Answer number {i}."))
      for i in range(12)),
]
MALFORMED = ["row 9 (id bad-order): messages[0].role is 'assistant', expected 'user'",
             "row 10 (id empty): messages[1].content is empty",
             "row 12: no messages",
             "row 13 (id lonely): no assistant turn",
             "row 14 (id two-users): messages[1].role is 'user', expected 'assistant'"]
KEPT_IDS = ["tc-both", "tc-answer", "clean", "user-says-ai", "trailing",
            *(f"filler-{i}" for i in range(12))]


def messages_rows(dialogues=DIALOGUES) -> list[dict]:
    """The UltraChat messages export's shape: id, sector, prompt, prompt_id, messages."""
    return [{"id": i, "sector": "world", "prompt": m[0]["content"] if m else "",
             "prompt_id": hashlib.sha256((m[0]["content"] if m else "").encode()).hexdigest(),
             "messages": m} for i, m in dialogues]


@pytest.fixture
def lake(any_settings):
    res = activate(Resources.build(any_settings))
    yield res.lake
    activate(None)


@pytest.fixture
def local_lake(local_settings):
    """For the option matrices: the local lake only, to keep the suite fast."""
    res = activate(Resources.build(local_settings))
    yield res.lake
    activate(None)


def land(lake: Lake, rows: list[dict] | None = None, relpath: str = INPUT,
         schema: pa.Schema = MESSAGES_SCHEMA) -> None:
    lake.write_bytes(relpath, parquet_bytes(messages_rows() if rows is None else rows, schema))


def build(lake: Lake, rows: list[dict] | None = None, base_dir: str = ".", **recipe):
    land(lake, rows)
    return export_sft.fn(SFTRecipe(input=INPUT, **recipe), base_dir)


def read(lake: Lake, out, split: str) -> list[dict]:
    return pq.read_table(lake.fs.open(out.published.parquet[split])).to_pylist()


def kept_by_prompt(lake: Lake, out) -> dict[str, dict]:
    return {r["prompt"]: r for s in ("train_sft", "test_sft") for r in read(lake, out, s)}


def storage(lake: Lake) -> dict | None:
    return None if lake.is_local else dict(lake.fs.storage_options)  # datasets adds keys to it


def test_counts_per_phrase_drops_and_malformed_examples_are_exact_and_on_the_card(lake):
    out = build(lake)
    c = out.counts
    assert (c.rows_read, c.dropped_malformed, c.dropped_disclaimer, c.dropped_rounds,
            c.dropped_length, c.kept) == (28, 6, 5, 0, 0, 17)
    assert (c.messages_truecased, c.dialogues_truecased) == (3, 2)
    assert out.disclaimer_phrases == {AS_AN_AI_MODEL: 1, AS_AN_AI: 1, CUTOFF: 1, NO_FEELINGS: 2}
    assert out.malformed_examples == MALFORMED  # the 6th (system role) is counted, not named
    card = lake.read_bytes(f"exports/sft/{SFTRecipe().name}/README.md").decode()
    for line in ("| rows read | 28 |", "| dropped malformed | 6 |", "| dropped disclaimer | 5 |",
                 "| kept | 17 |", r"| dropped for 'as an ai\b' | 1 |", "| train_sft | 15 |",
                 "| test_sft | 2 |", "path: data/train_gen.parquet"):
        assert line in card, line
    escaped = NO_FEELINGS.replace("|", "\\|")
    assert f"| dropped for '{escaped}' | 2 |" in card
    counts = card.split("## Counts", 1)[1].split("## Recipe", 1)[0]
    rows = [ln for ln in counts.splitlines() if ln.startswith("| ")]
    assert len(rows) == 1 + 8 + 4  # header, SFTCounts, one per phrase
    # every row has two cells: a phrase's own `|` is escaped, not a column break
    assert all(len(re.split(r"(?<!\\)\|", ln)) == 4 for ln in rows), rows


def test_kept_dialogues_are_truecased_trimmed_and_keyed_by_their_first_user_turn(lake):
    out = build(lake)
    kept = kept_by_prompt(lake, out)
    first_turns = {i: m[0]["content"].lower() for i, m in DIALOGUES if m}
    assert sorted(p.lower() for p in kept) == sorted(first_turns[i] for i in KEPT_IDS)
    both = kept["Hello. How are you?"]
    assert both["messages"] == turns("Hello. How are you?", "I am fine. Thanks for asking!")
    assert kept["What is two plus two?"]["messages"][1]["content"] == "It is four. Easy."
    assert kept["Tell a joke."]["messages"] == turns("Tell a joke.",
                                                     "Why did the chicken cross the road?")
    assert "As an AI, do you have opinions? I don't have emotions today." in kept
    for r in kept.values():
        assert r["prompt"] == r["messages"][0]["content"]
        assert r["prompt_id"] == hashlib.sha256(r["prompt"].encode("utf-8")).hexdigest()
        assert list(r) == ["prompt", "prompt_id", "messages"]
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * (
            len(r["messages"]) // 2)
    assert not any("taste" in m["content"] or "dream" in m["content"]
                   for r in kept.values() for m in r["messages"])


def test_four_splits_have_the_spec_features_load_with_datasets_and_gen_ends_at_a_user_turn(
        lake, tmp_path):
    out = build(lake, splits={"test_size": 5})
    assert out.published.rows == {"train_sft": 12, "test_sft": 5, "train_gen": 12,
                                  "test_gen": 5}
    dd = datasets.load_from_disk(out.published.dataset_dict, storage_options=storage(lake))
    assert list(dd) == list(SPLITS)
    assert {s: len(d) for s, d in dd.items()} == out.published.rows
    for split in dd.values():
        assert split.features == SPEC_FEATURES
    for part in ("train", "test"):
        sft, gen = dd[f"{part}_sft"].to_list(), dd[f"{part}_gen"].to_list()
        assert [g["prompt_id"] for g in gen] == [s["prompt_id"] for s in sft]
        for g, s in zip(gen, sft, strict=True):
            assert g["prompt"] == s["prompt"] and g["messages"] == s["messages"][:-1]
            assert g["messages"][-1]["role"] == "user" and s["messages"][-1]["role"] == "assistant"
    train = {r["prompt_id"] for r in dd["train_sft"]}
    test = {r["prompt_id"] for r in dd["test_sft"]}
    assert not train & test and len(train | test) == 17
    files = {}
    for s in SPLITS:  # copied out: tests run with the Hub offline
        files[s] = str(tmp_path / f"{s}.parquet")
        lake.fs.get(out.published.parquet[s], files[s])
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "c"))
    assert {s: loaded[s].features for s in SPLITS} == dict.fromkeys(SPLITS, SPEC_FEATURES)
    assert loaded["test_gen"].to_list() == dd["test_gen"].to_list()


@pytest.mark.parametrize(("test_size", "test_rows"), [(3, 3), (0.25, 4), (0.01, 1), (16, 16)])
def test_split_sizes_follow_test_size_as_a_count_or_a_fraction(local_lake, test_size,
                                                               test_rows):
    out = build(local_lake, splits={"test_size": test_size})
    rows = out.published.rows
    assert rows == {"train_sft": 17 - test_rows, "test_sft": test_rows,
                    "train_gen": 17 - test_rows, "test_gen": test_rows}


def test_a_rerun_writes_the_same_bytes_and_input_order_does_not_change_the_splits(lake):
    first = build(lake)
    before = {s: lake.fs.cat_file(u) for s, u in first.published.parquet.items()}
    assert {s: lake.fs.cat_file(u) for s, u in build(lake).published.parquet.items()} == before

    def members(out) -> dict[str, list[str]]:  # rows keep the input's order within a split
        return {s: sorted(pq.read_table(lake.fs.open(u)).column("prompt_id").to_pylist())
                for s, u in out.published.parquet.items()}
    first_members = members(first)
    again = build(lake, list(reversed(messages_rows())))
    assert members(again) == first_members and again.counts == first.counts


def test_raw_ultrachat_input_with_id_and_data_gives_the_same_set(lake):
    from_messages = build(lake)
    expected = {s: lake.fs.cat_file(u) for s, u in from_messages.published.parquet.items()}
    # the raw shape has no roles: only the dialogues whose roles alternate from the user
    raw = [{"id": i, "data": [m["content"] for m in msgs]} for i, msgs in DIALOGUES
           if i not in ("bad-order", "two-users", "system")]
    lake.write_bytes("exports/ultrachat/fixture/ultrachat.parquet",
                     parquet_bytes(raw, RAW_SCHEMA))
    out = export_sft.fn(SFTRecipe(input="exports/ultrachat/fixture/ultrachat.parquet"), ".")
    assert (out.counts.rows_read, out.counts.dropped_malformed, out.counts.kept) == (25, 3, 17)
    assert out.malformed_examples == ["row 9 (id empty): messages[1].content is empty",
                                      "row 11: no messages",
                                      "row 12 (id lonely): no assistant turn"]
    assert {s: lake.fs.cat_file(u) for s, u in out.published.parquet.items()} == expected


def test_disclaimers_null_keeps_the_disclaiming_dialogues(lake):
    out = build(lake, disclaimers=None)
    assert out.counts.dropped_disclaimer == 0 and out.disclaimer_phrases == {}
    assert out.counts.kept == 22
    assert "Can you taste soup?" in kept_by_prompt(lake, out)
    card = lake.read_bytes(f"exports/sft/{SFTRecipe().name}/README.md").decode()
    assert "AI-disclaimer" not in card and "dropped for" not in card


def test_a_phrase_file_relative_to_the_recipe_replaces_the_builtin_list(local_lake, tmp_path):
    (tmp_path / "mine.txt").write_text("# only this\nchicken\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_text("fine\n[unclosed\n", encoding="utf-8")
    out = build(local_lake, base_dir=str(tmp_path), disclaimers="mine.txt")
    assert out.disclaimer_phrases == {"chicken": 1} and out.counts.kept == 21
    assert out.counts.dropped_disclaimer == 1  # the builtin phrases are not used
    with pytest.raises(ConfigError, match=re.escape(f"disclaimers: {tmp_path / 'bad.txt'} line 2: "
                                                    "not a regular expression")):
        export_sft.fn(SFTRecipe(input=INPUT, disclaimers="bad.txt"), str(tmp_path))
    with pytest.raises(ConfigError, match=r"disclaimers: .*nope\.txt: No such file"):
        export_sft.fn(SFTRecipe(input=INPUT, disclaimers="nope.txt"), str(tmp_path))


# rounds 1..4, each short and long; every turn is 4 characters and its padding
SIZED = [(f"r{r}-{size}", turns(*(f"{'QA'[k % 2]}{r}{k}{size[0]}" + "." * pad
                                  for k in range(2 * r))))
         for r in (1, 2, 3, 4) for size, pad in (("short", 3), ("long", 39))]
ROUNDS_CHARS = {"r1-short": (1, 14), "r1-long": (1, 86), "r2-short": (2, 28),
                "r2-long": (2, 172), "r3-short": (3, 42), "r3-long": (3, 258),
                "r4-short": (4, 56), "r4-long": (4, 344)}


@pytest.mark.parametrize(("bounds", "kept", "dropped_rounds", "dropped_length"), [
    ({"min_rounds": 2}, {"r2-short", "r2-long", "r3-short", "r3-long", "r4-short", "r4-long"},
     2, 0),
    ({"max_rounds": 3}, {"r1-short", "r1-long", "r2-short", "r2-long", "r3-short", "r3-long"},
     2, 0),
    ({"min_chars": 86}, {"r1-long", "r2-long", "r3-long", "r4-long"}, 0, 4),
    ({"max_chars": 172}, {"r1-short", "r1-long", "r2-short", "r2-long", "r3-short",
                          "r4-short"}, 0, 2),
    # rounds are checked first: r4-long is out on both counts and counted under rounds
    ({"min_rounds": 2, "max_rounds": 3, "max_chars": 150}, {"r2-short", "r3-short"}, 4, 2),
])
def test_round_and_length_filters_each_drop_exactly_the_dialogues_outside(
        local_lake, bounds, kept, dropped_rounds, dropped_length):
    assert {n: (len(m) // 2, sum(len(t["content"]) for t in m)) for n, m in SIZED} == ROUNDS_CHARS
    out = build(local_lake, messages_rows(SIZED), splits={"test_size": 1}, **bounds)
    got = kept_by_prompt(local_lake, out)
    name = {m[0]["content"]: n for n, m in SIZED}
    assert {name[p] for p in got} == kept
    assert (out.counts.dropped_rounds, out.counts.dropped_length, out.counts.kept) == (
        dropped_rounds, dropped_length, len(kept))
    card = local_lake.read_bytes(f"exports/sft/{SFTRecipe().name}/README.md").decode()
    bound_text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in bounds.items())
    assert f"Drop dialogues outside {bound_text}." in card


def test_bad_inputs_are_one_line_config_errors_naming_the_problem(lake):
    with pytest.raises(ConfigError, match=r"exports/missing\.parquet: no such file \(run the "
                                          "ultrachat flow first"):
        export_sft.fn(SFTRecipe(input="exports/missing.parquet"), ".")
    land(lake, [{"id": "a", "text": "no dialogue here"}], relpath="exports/text.parquet",
         schema=pa.schema([("id", pa.string()), ("text", pa.string())]))
    with pytest.raises(ConfigError, match=r"text\.parquet: no `messages` or `data` column"):
        export_sft.fn(SFTRecipe(input="exports/text.parquet"), ".")
    lake.write_bytes("exports/notes.parquet", b"not parquet at all")
    with pytest.raises(ConfigError, match="not a Parquet file"):
        export_sft.fn(SFTRecipe(input="exports/notes.parquet"), ".")
    land(lake)
    with pytest.raises(ConfigError, match=r"splits\.test_size: 2000 holds out 2000 of 17 "
                                          "dialogues, leaving none for training"):
        export_sft.fn(SFTRecipe(input=INPUT, splits={"test_size": 2000}), ".")
    with pytest.raises(ConfigError, match=r"holds out 17 of 17 dialogues"):
        export_sft.fn(SFTRecipe(input=INPUT, splits={"test_size": 17}), ".")
    with pytest.raises(ConfigError, match=r"splits\.test_size: a fraction must be in \(0, 1\)"):
        export_sft.fn(SFTRecipe(input=INPUT, splits={"test_size": 1.5}), ".")
    land(lake, messages_rows([d for d in DIALOGUES if d[0] in ("bad-order", "lonely")]))
    with pytest.raises(ConfigError, match=r"no dialogue kept of 2 .*row 0 \(id bad-order\)"):
        export_sft.fn(SFTRecipe(input=INPUT), ".")


def test_batch_edges_do_not_move_any_row_between_splits(local_lake, monkeypatch):
    whole = build(local_lake)
    before = {s: pq.read_table(local_lake.fs.open(u)).to_pylist()
              for s, u in whole.published.parquet.items()}
    monkeypatch.setattr(sft_task, "BATCH_ROWS", 4)
    edged = build(local_lake)
    assert {s: pq.read_table(local_lake.fs.open(u)).to_pylist()
            for s, u in edged.published.parquet.items()} == before


def test_a_message_that_is_not_a_message_is_malformed_not_a_crash():
    assert rules.as_messages([{"role": "user", "content": "Hi."}, None], None) == (
        "messages[1] is NoneType, not a message")
