"""The UltraChat recipe: sampling parameter names and pool models are checked before any call."""

import pytest

from tasks.adapters.errors import ConfigError
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.pool import SAMPLING_PARAMS, PoolConfig
from tasks.core.ultrachat.recipe import (
    UltraChatRecipe,
    check_against_pool,
    load_ultrachat_recipe,
)

RECIPE = RECIPES_DIR / "ultrachat.yaml"


def test_bundled_recipe_uses_pool_models_and_known_params():
    recipe = load_ultrachat_recipe(RECIPE)
    assert check_against_pool(recipe, set(PoolConfig.load(RECIPES_DIR / "pool.yaml").models)) == []
    assert recipe.params_for("assistant") == {"temperature": 0.7, "max_tokens": 1024}


@pytest.mark.parametrize("role", ["assistant", "user_simulator", "opening_generator"])
def test_unknown_sampling_parameter_is_an_error_naming_the_key(role):
    with pytest.raises(ConfigError) as err:
        load_ultrachat_recipe(RECIPE, [f"params.{role}.max_tokns=5"])
    msg = str(err.value)
    assert "ultrachat.yaml (with --set):" in msg and f"params.{role}:" in msg
    assert "unknown sampling parameter(s) 'max_tokns'" in msg and "max_tokens" in msg


def test_every_known_sampling_parameter_is_accepted():
    params = {name: 1 for name in SAMPLING_PARAMS}
    assert UltraChatRecipe(params={"assistant": params}).params_for("assistant") == params


def test_every_role_model_is_checked_against_the_pool():
    recipe = UltraChatRecipe(models={"assistant": "nope", "user_simulator": "gpt-4",
                                     "opening_generator": "gpt-5-typo"})
    assert check_against_pool(recipe, {"gpt-4", "gpt-3.5-turbo"}) == [
        "models.assistant: 'nope' is not in the model pool",
        "models.opening_generator: 'gpt-5-typo' is not in the model pool"]
