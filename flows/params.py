"""What a flow takes: its recipe's own fields, typed, so that a deployment's run form in the
Prefect UI shows them (field descriptions, choices as enums) rather than a path and strings.

A recipe file still gives the starting values: `recipe` may be a path (the CLI, tests), and
`ultraforge deploy` fills each deployment's default parameters from its bundled file. Overrides
(`key.path=value`, as `--set` on the command line) apply on top, which is handy from CI:
`--params '{"params": {"overrides": ["limit=50"]}}'`.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.adapters.settings import RECIPES_DIR
from tasks.core.shards import ScaleOut
from tasks.core.yamlconf import apply_overrides, load_recipe, parse_yaml_model

# each flow's `recipe` field: filled by the validator below, from the bundled file if not given
RECIPE: Any = Field(default=None, description="The recipe's values (default: the bundled "
                    "recipe file's), or the path of a recipe YAML.")


class RecipeParams(BaseModel):
    """A flow's parameters: `recipe` (its fields, or a YAML path), `overrides`, `base_dir`.

    Validation leaves `recipe` final: a path is loaded with the overrides applied (errors name
    the file and line); given values get the overrides applied and are validated again. So the
    flow reads `params.recipe` and nothing else applies overrides.
    """

    model_config = ConfigDict(extra="forbid")

    default_file: ClassVar[Path]  # the bundled recipe: the values when none are given
    recipe: BaseModel = RECIPE
    overrides: list[str] = Field(default_factory=list, description="`key.path=value` "
                                 "overrides on top of the recipe, like `--set` (applied already "
                                 "once validated).")
    base_dir: str | None = Field(default=None, description="Folder the recipe's relative paths "
                                 "(prompt files, seeds) are relative to; default: the folder of "
                                 "the recipe file given, else the bundled recipes' folder.")

    @property
    def base(self) -> Path:
        """The folder relative paths of the recipe resolve against (on this machine)."""
        return Path(self.base_dir) if self.base_dir else RECIPES_DIR

    @classmethod
    def recipe_type(cls) -> type[BaseModel]:
        return cls.model_fields["recipe"].annotation

    @classmethod
    def starting_values(cls) -> dict[str, Any]:
        """The bundled recipe's values, as JSON: a deployment's default parameters."""
        return {"recipe": load_recipe(cls.default_file, cls.recipe_type()).model_dump(mode="json")}

    @classmethod
    def shorthand(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Turn a flow's shorthand keys (the CLI's options) into overrides; none by default."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _final_recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = cls.shorthand(dict(data))
        overrides = list(data.get("overrides") or [])
        recipe = data.get("recipe")
        if recipe is None or isinstance(recipe, str | PurePath):
            path = Path(recipe) if recipe is not None else cls.default_file
            data["recipe"] = load_recipe(path, cls.recipe_type(), overrides)
            if recipe is not None:
                data.setdefault("base_dir", str(path.resolve().parent))
        elif overrides:
            values = recipe.model_dump(mode="json") if isinstance(recipe, BaseModel) else recipe
            data["recipe"] = parse_yaml_model(
                yaml.safe_dump(apply_overrides(values, overrides), sort_keys=False),
                cls.recipe_type(), "recipe (with overrides)", with_lines=False)
        data["overrides"] = []
        return data


class ShardedParams(RecipeParams):
    """A flow that runs shards: its recipe, and how it spreads them over the work pool."""

    scale: ScaleOut = Field(default_factory=ScaleOut, description="Share the run's shards with "
                            "child runs on the work pool (docs/operations.md#scale-out).")
