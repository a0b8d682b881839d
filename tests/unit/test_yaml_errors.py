"""A YAML syntax error in the pool or a recipe is one line: file, line, column and PyYAML's problem."""

from __future__ import annotations

import pytest

from tasks.adapters.errors import ConfigError
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.pool import PoolConfig
from tasks.core.ultrachat.recipe import load_ultrachat_recipe
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe
from tasks.core.yamlconf import load_recipe

BROKEN_POOL = """\
endpoints:
  local:
    base_url: http://127.0.0.1:8900/v1
    limits: {rpm: 5000, tpm: 2000000
models: {}
"""


def _error(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_pool_syntax_error_names_file_line_column_and_problem(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text(BROKEN_POOL)
    message = _error(lambda: PoolConfig.load(path))
    # PyYAML sees the unclosed flow mapping when `models:` starts on line 5, column 7
    assert message == (f"{path}:5:7: not valid YAML: expected ',' or '}}', but got ':' "
                       "(while parsing a flow mapping started at line 4, column 13)")


@pytest.mark.parametrize("overrides", [[], ["plan.n_models=2"]])
def test_ultrafeedback_recipe_syntax_error(tmp_path, overrides):
    path = tmp_path / "uf.yaml"
    text = (RECIPES_DIR / "ultrafeedback.yaml").read_text().splitlines()
    text.insert(2, "\tplan: {n_models: 4}")  # a tab where YAML wants spaces, on line 3
    path.write_text("\n".join(text) + "\n")
    message = _error(lambda: load_recipe(path, UltraFeedbackRecipe, overrides))
    assert message == (f"{path}:3:1: not valid YAML: found character '\\t' that cannot start any "
                       "token (while scanning for the next token)")


@pytest.mark.parametrize("overrides", [(), ("sectors.world.dialogues=5",)])
def test_ultrachat_recipe_syntax_error(tmp_path, overrides):
    path = tmp_path / "uc.yaml"
    path.write_text('name: "broken\nsectors: {}\n')  # an unterminated quoted scalar
    message = _error(lambda: load_ultrachat_recipe(path, overrides))
    assert message.startswith(f"{path}:3:1: not valid YAML: found unexpected end of stream")
    assert message.endswith("(while scanning a quoted scalar started at line 1, column 7)")


def test_a_bad_character_gets_its_line_and_column_too(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text("endpoints: {}\nmodels: {a: \x07}\n")
    message = _error(lambda: PoolConfig.load(path))
    assert message.startswith(f"{path}:2:13: not valid YAML: unacceptable character #x0007")
