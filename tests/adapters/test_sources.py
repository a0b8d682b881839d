"""Record sources on real files and a real `datasets` directory: rows, per-row errors, mapping."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.adapters.errors import ConfigError
from tasks.adapters.sources import RowError, SourceRow, get_path, read_records

FIELDS = {"instruction": "q", "source": "meta.kind", "correct_answers": "answers"}


def rows(**kw):
    return list(read_records(**kw))


def test_jsonl_rows_and_per_row_errors(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"q": "one", "meta": {"kind": "flan"}, "answers": ["1"]}\n'
                     b"\n"
                     b'{"q": "broken"\n'
                     b'{"q": "caf\xe9"}\n'
                     b'"just a string"\n'
                     b'{"other": 1}\n')
    out = rows(path=path, fields=FIELDS)
    assert out[0] == SourceRow(1, {"instruction": "one", "source": "flan",
                                   "correct_answers": ["1"]})
    assert isinstance(out[1], RowError) and out[1].row == 3
    assert out[1].reason.startswith("not valid JSON") and out[1].raw.startswith('{"q": "broken"')
    assert out[2].row == 4 and out[2].reason == "not valid UTF-8 (byte 0xe9 at offset 10)"
    assert out[3] == RowError(5, "expected a JSON object, got str", '"just a string"\n')
    assert out[4] == SourceRow(6, {})  # nothing mapped: the caller reports "missing"


def test_json_array_and_wrapped_object(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"q": "a"}, 3]))
    out = rows(path=tmp_path / "a.json", fields={"instruction": "q"})
    assert out == [SourceRow(1, {"instruction": "a"}),
                   RowError(2, "expected a JSON object, got int", "3")]
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"q": "b"}]}))
    assert rows(path=tmp_path / "b.json") == [SourceRow(1, {"q": "b"})]
    (tmp_path / "c.json").write_text("{not json")
    [err] = rows(path=tmp_path / "c.json")
    assert err.row == 0 and err.reason.startswith("file is not valid JSON")


def test_csv_cells_json_lists_and_bad_rows(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b'q,answers\nhello,"[""a"", ""b""]"\nna\xefve,x\ntoo,many,cells\n')
    out = rows(path=path, fields={"instruction": "q", "correct_answers": "answers"})
    assert out[0] == SourceRow(1, {"instruction": "hello", "correct_answers": ["a", "b"]})
    assert out[1] == RowError(2, "not valid UTF-8", "na\ufffdve,x")
    assert out[2].row == 3 and "more cells" in out[2].reason


def test_parquet_and_limit(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"q": [f"q{i}" for i in range(10)],
                             "answers": [[str(i)] for i in range(10)]}), path)
    out = rows(path=path, fields={"instruction": "q", "correct_answers": "answers"}, limit=3)
    assert out == [SourceRow(i + 1, {"instruction": f"q{i}", "correct_answers": [str(i)]})
                   for i in range(3)]


def test_datasets_directory_by_split(tmp_path):
    import datasets

    ds = datasets.DatasetDict({
        "validation": datasets.Dataset.from_list([
            {"question": "Is the Moon made of cheese?", "conv": [{"value": "hi"}],
             "correct_answers": ["No"]}])})
    ds.save_to_disk(str(tmp_path / "hf"))
    out = rows(path=tmp_path / "hf", split="validation",
               fields={"instruction": "question", "first": "conv.0.value"})
    assert out == [SourceRow(1, {"instruction": "Is the Moon made of cheese?", "first": "hi"})]
    with pytest.raises(ConfigError, match="no split 'train'"):
        rows(path=tmp_path / "hf")


def test_unloadable_sources_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        rows(path=tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        rows(path=tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="could not be loaded"):
        rows(dataset="ultraforge/does-not-exist-anywhere")  # offline in tests
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    [err] = rows(path=tmp_path / "bad.parquet")
    assert err.row == 0 and err.reason.startswith("not a readable Parquet file")


def test_get_path():
    record = {"a": [{"b": 1}, {"b": 2}], "c": None}
    assert get_path(record, "a.1.b") == (True, 2)
    assert get_path(record, "a.-1.b") == (True, 2)
    assert get_path(record, "c") == (True, None)
    assert get_path(record, "a.5.b") == (False, None)
    assert get_path(record, "x") == (False, None)


def test_lone_surrogates_anywhere_in_a_row_are_row_errors_naming_the_field(tmp_path):
    # JSON escapes can spell a lone surrogate, which no UTF-8 writer accepts.
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"q": "fine", "answers": ["a", "\\ud800"]}\n'
                     b'{"q": "fine", "meta": {"kind": "fl\\udfffan"}}\n'
                     b'{"q": "fine", "unmapped": [{"deep": "\\udc80"}]}\n'
                     b'{"q": "pair \\ud83d\\ude00 is fine"}\n')
    out = rows(path=path, fields=FIELDS)
    assert [(e.row, e.field, e.reason) for e in out[:3]] == [
        (1, "answers.1", "not valid Unicode: lone surrogate U+D800"),
        (2, "meta.kind", "not valid Unicode: lone surrogate U+DFFF"),
        (3, "unmapped.0.deep", "not valid Unicode: lone surrogate U+DC80")]
    assert out[0].raw == '{"q": "fine", "answers": ["a", "\\ud800"]}'  # ASCII-safe preview
    assert all(e.raw.isascii() for e in out[:3])
    assert out[3] == SourceRow(4, {"instruction": "pair \U0001F600 is fine"})
    (tmp_path / "a.json").write_text('[{"q": "x"}, "\\ud800"]')
    bad = rows(path=tmp_path / "a.json")[1]
    assert bad.row == 2 and bad.reason == "expected a JSON object, got str" and bad.raw.isascii()
    (tmp_path / "c.csv").write_text('q,answers\nhi,"[""\\ud800""]"\n')
    [err] = rows(path=tmp_path / "c.csv")
    assert (err.row, err.field) == (1, "answers.0")
