"""Process settings (pydantic-settings). The only module that reads the environment."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.adapters.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "flows" / "recipes"
ENV_FILE = ".env"  # read from the working directory, like docker-compose does


class Settings(BaseSettings):
    """Where data lands and how to reach it. Env vars: ULTRAFORGE_<FIELD> (e.g. ULTRAFORGE_LAKE_URL)."""

    model_config = SettingsConfigDict(env_prefix="ULTRAFORGE_", env_file=ENV_FILE, extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Root for local lake, warehouse, journal.")
    lake_url: str | None = Field(default=None, description="Local path or s3://bucket/prefix.")
    warehouse_path: Path | None = Field(default=None, description="DuckDB file.")
    journal_dir: Path | None = Field(default=None, description="Where paid responses are journaled.")
    pool_path: Path = Field(default=RECIPES_DIR / "pool.yaml")
    s3_endpoint_url: str | None = Field(default=None, description="MinIO/moto/any S3 endpoint.")
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    endpoint_base_url: str | None = Field(
        default=None, description="Point every pool endpoint at this URL (demo, tests, one vLLM).")
    journal_segment_s: float = Field(
        default=5.0, ge=0, description="Land the journal's new replies in the lake (_journal/) "
        "this often, for other machines; 0: the journal stays on this machine.")
    part_grace_s: float = Field(
        default=60.0, ge=0, description="Once a run with parts has every shard landed, how long "
        "a part still running may take to end before it counts as lost with its worker and is "
        "marked Crashed (docs/operations.md#scale-out).")
    pushgateway_url: str | None = Field(
        default=None, description="Prometheus Pushgateway (http://host:9091): every process that "
        "runs flows pushes its metrics there periodically and at exit (tasks/adapters/metrics.py).")

    @property
    def lake(self) -> str:
        return self.lake_url or str(self.data_dir / "lake")

    @property
    def warehouse(self) -> Path:
        return self.warehouse_path or self.data_dir / "ultraforge.duckdb"

    @property
    def journal(self) -> Path:
        return self.journal_dir or self.data_dir / "journal"

    def storage_options(self) -> dict:
        """fsspec/s3fs options for the lake; empty for local paths."""
        if not self.lake.startswith("s3://"):
            return {}
        opts: dict = {"client_kwargs": {"region_name": self.s3_region}}
        if self.s3_endpoint_url:
            opts["endpoint_url"] = self.s3_endpoint_url
        if self.s3_access_key_id and self.s3_secret_access_key:
            opts["key"] = self.s3_access_key_id.get_secret_value()
            opts["secret"] = self.s3_secret_access_key.get_secret_value()
        return opts


def launched_flow_run_id() -> str | None:
    """The flow run this process was started for by a Prefect worker or runner (they set
    PREFECT__FLOW_RUN_ID in the child's environment); None in a process that may run several
    flows, like `ultraforge run` or the demo."""
    return os.environ.get("PREFECT__FLOW_RUN_ID") or None


def secret_from_env(var: str, *, owner: str) -> SecretStr:
    """Variable `var` from the environment or the `.env` file, else a ConfigError naming `owner`."""
    value = os.environ.get(var) or dotenv_values(ENV_FILE).get(var)
    if not value:
        raise ConfigError(f"{owner}: environment variable {var} is not set (it should hold the API key)")
    return SecretStr(value)
