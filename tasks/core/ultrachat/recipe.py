"""The UltraChat recipe: sectors, models, turn ranges, dedup, filters (YAML → pydantic, strict).

Checks that need the model pool (every `models.*` names a pool model) are in `check_against_pool`,
called when the flow loads the recipe, so the errors still name the recipe key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.core.pool import Sampling
from tasks.core.yamlconf import load_recipe

Sector = Literal["world", "writing", "materials"]
SECTORS: tuple[Sector, ...] = ("world", "writing", "materials")
Role = Literal["opening_generator", "user_simulator", "assistant"]
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SectorBase(Strict):
    enabled: bool = True
    dialogues: int = Field(default=0, ge=0, description="Dialogues (= selected openings) to make.")
    rounds: tuple[int, int] = Field(description="Inclusive range of user/assistant rounds.")

    @field_validator("rounds")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"expected [min, max] with 1 <= min <= max, got {list(v)}")
        return v


class WorldSector(SectorBase):
    """Questions about the World: meta-topic → subtopics → questions (plus optional entities)."""

    rounds: tuple[int, int] = (3, 7)
    meta_topics: str = Field(default="ultrachat/meta_topics.txt", description="One topic a line.")
    subtopics_per_topic: int = Field(default=8, ge=1, le=50)
    questions_per_subtopic: int = Field(default=5, ge=1, le=50)
    entities: str | None = Field(
        default=None, description="Optional file of named entities (one a line) to seed questions.")
    questions_per_entity: int = Field(default=5, ge=1, le=50)
    max_entities: int = Field(default=0, ge=0, description="Entities used (seeded sample); 0 = all.")


class WritingSector(SectorBase):
    """Writing and Creation: writing types × instructions, part of them expanded."""

    rounds: tuple[int, int] = (2, 4)
    writing_types: str = "ultrachat/writing_types.txt"
    instructions_per_type: int = Field(default=6, ge=1, le=50)
    expand_fraction: float = Field(
        default=0.8, ge=0, le=1, description="Share of selected instructions rewritten in detail.")


class PassageSource(Strict):
    """Where passages come from: a local file (txt/jsonl/json/parquet/csv) or an HF dataset."""

    path: str = "ultrachat/passages.jsonl"
    text_field: str = "text"
    id_field: str | None = "id"
    split: str = "train"
    limit: int | None = Field(default=None, ge=1, description="Read at most this many passages.")
    min_chars: int = Field(default=200, ge=0)
    max_chars: int = Field(default=2500, ge=1, description="Longer passages are cut at a sentence.")


class MaterialsSector(SectorBase):
    """Assistance on Existent Materials: passages × task templates."""

    rounds: tuple[int, int] = (2, 4)
    passages: PassageSource = Field(default_factory=PassageSource)
    task_templates: str = "ultrachat/material_tasks.yaml"
    tasks_per_passage: int = Field(default=5, ge=1, le=20)


class Sectors(Strict):
    world: WorldSector = Field(default_factory=WorldSector)
    writing: WritingSector = Field(default_factory=WritingSector)
    materials: MaterialsSector = Field(default_factory=MaterialsSector)


class Models(Strict):
    """Pool model names per role; the user simulator may sit on another endpoint than the assistant."""

    assistant: str = "gpt-3.5-turbo"
    user_simulator: str = "gpt-3.5-turbo"
    opening_generator: str = "gpt-3.5-turbo"


class Params(Strict):
    """Sampling parameters sent with each role's requests."""

    assistant: Sampling = Field(default_factory=lambda: {"temperature": 0.7, "max_tokens": 1024})
    user_simulator: Sampling = Field(default_factory=lambda: {"temperature": 1.0, "max_tokens": 256})
    opening_generator: Sampling = Field(
        default_factory=lambda: {"temperature": 1.0, "max_tokens": 1024})


class DialogueConfig(Strict):
    max_dialogue_tokens: int = Field(
        default=8000, ge=100, description="Stop before the next round once the dialogue is this long.")
    max_reasks: int = Field(
        default=2, ge=0, description="Re-asks of a user turn that reads like an assistant answer.")
    assistant_system_prompt: str | None = None
    shard_size: int = Field(default=200, ge=1, description="Dialogues per Prefect task.")
    shard_concurrency: int = Field(default=2, ge=1, description="Dialogue shards run at once.")


class DedupConfig(Strict):
    near_duplicate_threshold: float = Field(
        default=0.8, gt=0, le=1, description="Estimated Jaccard of word shingles above which two "
        "openings are near duplicates.")
    num_perm: int = Field(default=128, ge=16)
    shingle_words: int = Field(default=3, ge=1)


class FilterConfig(Strict):
    language: str | None = Field(default="en", description="Expected language; null: no check.")
    min_rounds: int | None = Field(
        default=None, ge=1, description="Default: the minimum of the dialogue's sector range.")
    drop_failed_tail: bool = Field(
        default=True, description="A dialogue stopped by an empty/refused/truncated assistant turn "
        "loses that last round (kept in the turns table) instead of being rejected whole.")


class ExportConfig(Strict):
    prefix: str = Field(default="exports/ultrachat", description="Lake path of the exports.")


class UltraChatRecipe(Strict):
    """A whole UltraChat job. Relative data paths are resolved against the recipe's folder."""

    name: str = Field(default="ultrachat", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    oversample: float = Field(
        default=1.5, ge=1, description="World sector: candidate questions generated per selected "
        "one (dedup slack); the other sectors' candidate counts follow from their inputs.")
    models: Models = Field(default_factory=Models)
    params: Params = Field(default_factory=Params)
    sectors: Sectors = Field(default_factory=Sectors)
    dialogue: DialogueConfig = Field(default_factory=DialogueConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    def enabled(self) -> list[tuple[Sector, SectorBase]]:
        """(name, config) of each enabled sector with dialogues to make, in the fixed sector order."""
        return [(n, getattr(self.sectors, n)) for n in SECTORS
                if getattr(self.sectors, n).enabled and getattr(self.sectors, n).dialogues > 0]

    def sector(self, name: Sector) -> SectorBase:
        return getattr(self.sectors, name)

    def params_for(self, role: Role) -> dict[str, Any]:
        return dict(getattr(self.params, role))

    def min_rounds(self, sector: Sector) -> int:
        """Fewest rounds a kept dialogue may have: filters.min_rounds, else the sector's minimum."""
        return self.filters.min_rounds or self.sector(sector).rounds[0]

    def resolved(self, base_dir: str | Path) -> UltraChatRecipe:
        """A copy with every relative data path made absolute against `base_dir`."""
        def fix(p: str | None) -> str | None:
            if p is None or "://" in p or p.startswith("hf:") or Path(p).is_absolute():
                return p
            return str((Path(base_dir) / p).resolve())

        s = self.sectors
        world = s.world.model_copy(update={"meta_topics": fix(s.world.meta_topics),
                                           "entities": fix(s.world.entities)})
        writing = s.writing.model_copy(update={"writing_types": fix(s.writing.writing_types)})
        passages = s.materials.passages.model_copy(update={"path": fix(s.materials.passages.path)})
        materials = s.materials.model_copy(update={
            "passages": passages, "task_templates": fix(s.materials.task_templates)})
        sectors = Sectors(world=world, writing=writing, materials=materials)
        return self.model_copy(update={"sectors": sectors})


def check_against_pool(recipe: UltraChatRecipe, pool_models: set[str]) -> list[str]:
    """Problems between the recipe's models and the pool's model names, each naming the recipe key."""
    return [f"models.{role}: {name!r} is not in the model pool"
            for role, name in recipe.models.model_dump().items() if name not in pool_models]


def load_ultrachat_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                          ) -> UltraChatRecipe:
    """Load and validate a recipe file (+ `--set` overrides); data paths resolved against it."""
    return load_recipe(path, UltraChatRecipe, list(overrides)).resolved(Path(path).parent)
