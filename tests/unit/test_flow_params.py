"""Flow parameters are the recipes' own typed fields: a recipe file gives the starting values,
overrides apply on top, and Prefect renders them as a form (descriptions, enums)."""

from __future__ import annotations

import pytest
from prefect.utilities.callables import parameter_schema

from flows.derived import DPOExportParams, SFTExportParams, dpo_export, sft_export
from flows.translate import TranslateParams, translate
from flows.ultrachat import UltraChatParams, ultrachat
from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback
from tasks.adapters.errors import ConfigError

PARAMS = [UltraFeedbackParams, UltraChatParams, SFTExportParams, DPOExportParams, TranslateParams]


@pytest.mark.parametrize("cls", PARAMS)
def test_the_bundled_recipe_as_json_gives_the_same_recipe_as_the_file(cls):
    from_file = cls()
    from_values = cls.model_validate(cls.starting_values())
    assert from_values.recipe == from_file.recipe
    assert from_values.model_dump(mode="json")["recipe"] == cls.starting_values()["recipe"]


def test_overrides_apply_on_top_of_given_values_and_a_bad_one_names_the_key():
    values = UltraFeedbackParams.starting_values()
    params = UltraFeedbackParams.model_validate({**values, "overrides": ["plan.n_models=2"]})
    assert params.recipe.plan.n_models == 2 and params.overrides == []
    with pytest.raises(ConfigError, match=r"plan\.n_modelz: unknown key"):
        UltraFeedbackParams.model_validate({**values, "overrides": ["plan.n_modelz=2"]})


def test_a_recipe_path_loads_the_file_and_its_folder_is_the_base_of_relative_paths(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(DPOExportParams.default_file.read_text())
    params = DPOExportParams(recipe=str(path), overrides=["preset=zephyr"])
    assert params.recipe.preset == "zephyr" and params.base_dir == str(tmp_path)


def test_the_translate_shorthands_set_the_recipe():
    params = TranslateParams(set="dpo", lang="de", overrides=["limit=3"])
    assert (params.recipe.set, params.recipe.lang, params.recipe.limit) == ("dpo", "de", 3)


@pytest.mark.parametrize("flow_", [ultrafeedback, ultrachat, sft_export, dpo_export, translate])
def test_prefect_renders_each_flows_recipe_fields_with_descriptions(flow_):
    schema = parameter_schema(flow_.fn).model_dump(mode="json")
    params = next(iter(schema["properties"]))
    recipe_def = next(d for name, d in schema["definitions"].items()
                      if name.endswith("Recipe") and name != "TrainRecipe")
    assert params == "params" and len(recipe_def["properties"]) >= 3
    described = [p for p in recipe_def["properties"].values() if "description" in p]
    assert described, "no field of the recipe has a description for the form"


def test_choices_render_as_enums():
    schema = parameter_schema(dpo_export.fn).model_dump(mode="json")
    assert set(schema["definitions"]["DPORecipe"]["properties"]["preset"]["enum"]) >= {"zephyr"}
    uf = parameter_schema(ultrafeedback.fn).model_dump(mode="json")
    route = uf["definitions"]["GenerationSpec"]["properties"]["route"]
    assert set(route["enum"]) == {"online", "batch", "auto"}
