"""Sector inputs read from data files: bad rows and duplicate passage ids name the file, row, field."""

import pytest

from tasks.adapters.errors import ConfigError
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.ultrachat.recipe import load_ultrachat_recipe
from tasks.ultrachat.openings import sector_inputs

RECIPE = RECIPES_DIR / "ultrachat.yaml"
TEXT = "Rain falls on the roof of the old house. " * 8


def _materials(passages_path, *more):
    recipe = load_ultrachat_recipe(RECIPE, [f"sectors.materials.passages.path={passages_path}", *more])
    return sector_inputs(recipe, "materials")


def test_bad_passage_row_names_the_row_and_field(tmp_path):
    passages = tmp_path / "p.jsonl"
    passages.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "body": "no text"}\n')
    with pytest.raises(ConfigError, match=r"row 2: field 'text' is missing"):
        _materials(passages)
    passages.write_text('{"id": "a", "text": "fine"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"p.jsonl row 2: not valid JSON"):
        _materials(passages)
    passages.write_text('{"id": "a", "text": "fine"}\n{"text": "no id"}\n')
    with pytest.raises(ConfigError, match=r"p.jsonl row 2: field 'id' is missing \(set "
                                          r"sectors.materials.passages.id_field: null"):
        _materials(passages)
    bad_topics = tmp_path / "topics.txt"
    bad_topics.write_text("# only a comment\n")
    recipe = load_ultrachat_recipe(RECIPE, [f"sectors.world.meta_topics={bad_topics}"])
    with pytest.raises(ConfigError, match="meta-topics file .*topics.txt: no entries"):
        sector_inputs(recipe, "world")


def test_duplicate_passage_ids_name_the_file_both_rows_and_the_id_field(tmp_path):
    passages = tmp_path / "p.jsonl"
    passages.write_text("".join(f'{{"pid": "{pid}", "text": "{TEXT} {i}"}}\n'
                                for i, pid in enumerate(["a", "b", "c", "b"])))
    with pytest.raises(ConfigError) as err:
        _materials(passages, "sectors.materials.passages.id_field=pid")
    assert str(err.value) == (f"passages {passages}: rows 2 and 4 have the same 'pid' 'b'; "
                              "passage ids must be unique")


def test_passages_without_an_id_field_are_numbered_by_row(tmp_path):
    passages = tmp_path / "p.jsonl"
    passages.write_text(f'{{"text": "{TEXT}"}}\n{{"text": "{TEXT} Again."}}\n')
    got = _materials(passages, "sectors.materials.passages.id_field=null")["passages"]
    assert [p.passage_id for p in got] == ["row1", "row2"]
