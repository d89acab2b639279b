"""Service settings: from ``MIDMIX_*`` environment variables, a config file, or CLI flags.

Tokens are lists so a team can rotate them without downtime. With no read tokens reads are
open; with no write tokens writes are open too (a local, single-user service).

``shard_store`` names an object-store mirror (``s3://bucket/prefix``, ``memory://bucket``) that
``midmix mixtures push`` and ``midmix datasets push`` fill; versions missing locally are served from it, by ``redirect`` to a
signed URL where the store can sign one, else by ``proxy`` (the service streams the bytes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from midmix.config_files import read_mapping_file
from midmix.errors import MidmixError, validation_problems
from midmix.paths import DEFAULT_DATA_DIR


class ServiceSettings(BaseSettings):
    """Everything the service needs: where the data is, who may read and write, job slots."""

    model_config = SettingsConfigDict(env_prefix="MIDMIX_", extra="forbid")

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    write_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    read_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    job_workers: int = Field(default=1, ge=1, le=64)
    shard_store: str | None = None
    shard_store_mode: Literal["redirect", "proxy"] = "redirect"

    @field_validator("write_tokens", "read_tokens", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        # Environment variables carry lists as "tok1,tok2".
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value


def load_settings(config_file: Path | None = None, **overrides: object) -> ServiceSettings:
    """Settings from env vars, then ``config_file`` (YAML or JSON), then explicit overrides."""
    values: dict[str, object] = {}
    if config_file is not None:
        values.update(read_mapping_file(config_file, "service config file"))
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return ServiceSettings(**values)
    except ValidationError as error:
        raise MidmixError(f"invalid service settings: {validation_problems(error.errors())}") from None
