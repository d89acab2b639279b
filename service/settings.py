"""Service settings: from ``MIDMIX_*`` environment variables, a config file, or CLI flags.

Everything a client may not choose is here: who may read and write (tokens, lists so a team can
rotate them without downtime), which local folders and URL prefixes a curation may read
(``input_roots``, ``input_url_prefixes``), the executors curations and builds run on, job slots
and retention.

Reads are open when no read tokens are set, writes when no write tokens are set; read tokens
without write tokens are refused (writes would be the open half). ``midmix serve`` also refuses a
non-loopback address unless tokens are set (``check_exposure``).

``shard_store`` names an object-store mirror (``s3://bucket/prefix``, ``memory://bucket``) that
``midmix mixtures push`` and ``midmix datasets push`` fill; versions missing locally are served from it, by ``redirect`` to a
signed URL where the store can sign one, else by ``proxy`` (the service streams the bytes).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from midmix.config_files import read_mapping_file
from midmix.errors import MidmixError, validation_problems
from midmix.paths import DEFAULT_DATA_DIR
from midmix.pipelines.executors import LocalExecutor, RayExecutor, SlurmExecutor

Executor = Annotated[LocalExecutor | RayExecutor | SlurmExecutor, Field(discriminator="kind")]


class ServiceSettings(BaseSettings):
    """Everything the service needs: data, tokens, what clients may read, executors, job slots."""

    model_config = SettingsConfigDict(env_prefix="MIDMIX_", extra="forbid")

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    write_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    read_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    write_tokens_file: Path | None = Field(None, description="file with more write tokens, one per line (a secret)")
    read_tokens_file: Path | None = Field(None, description="file with more read tokens, one per line (a secret)")
    public_reads: bool = Field(False, description="let a non-loopback service answer reads without a token")
    input_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="local folders curation inputs, eval files, models and tokenizers may come from",
    )
    input_url_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="URL prefixes (s3://bucket/corpora/) curation inputs and models may come from"
    )
    curation_executor: Executor = Field(default_factory=LocalExecutor, description="where curations run")
    build_executor: Executor = Field(default_factory=LocalExecutor, description="where mixture builds run")
    slurm_poll_s: float = Field(30.0, gt=0, description="how often a job waiting on Slurm checks the queue")
    job_workers: int = Field(default=1, ge=1, le=64)
    job_retention_days: float = Field(30.0, gt=0, description="finished jobs older than this are pruned")
    job_retention_count: int = Field(10_000, ge=1, description="at most this many finished jobs are kept")
    shard_store: str | None = None
    shard_store_mode: Literal["redirect", "proxy"] = "redirect"

    @field_validator("write_tokens", "read_tokens", "input_roots", "input_url_prefixes", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        # Environment variables carry lists as "a,b".
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("input_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"input_roots must be absolute paths, got {relative}")
        return [Path(os.path.realpath(root)) for root in roots]

    @field_validator("input_url_prefixes")
    @classmethod
    def _url_prefixes(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            if "://" not in prefix or "::" in prefix or ".." in prefix.split("/"):
                raise ValueError(
                    f"input_url_prefixes entry {prefix!r} must be a plain URL such as s3://bucket/corpora/"
                )
        # A prefix names a folder: s3://b/corpora must not admit s3://b/corpora-private.
        return [prefix if prefix.endswith("/") else prefix + "/" for prefix in prefixes]

    @model_validator(mode="after")
    def _tokens_complete(self) -> ServiceSettings:
        self.write_tokens = _merged(self.write_tokens, self.write_tokens_file)
        self.read_tokens = _merged(self.read_tokens, self.read_tokens_file)
        if self.read_tokens and not self.write_tokens:
            raise ValueError(
                "read_tokens are set but write_tokens are not, so anyone could start jobs while reads need a "
                "token; set write_tokens (MIDMIX_WRITE_TOKENS or write_tokens_file)"
            )
        return self


def _merged(tokens: list[str], token_file: Path | None) -> list[str]:
    """The tokens given inline plus those in ``token_file`` (one per line or comma-separated), once each."""
    if token_file is None:
        return tokens
    try:
        text = token_file.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read token file {token_file}: {error.strerror}") from None
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    from_file = [token.strip() for line in lines for token in line.split(",") if token.strip()]
    return list(dict.fromkeys([*tokens, *from_file]))


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


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def check_exposure(settings: ServiceSettings, host: str, insecure: bool) -> list[str]:
    """Refuse to listen beyond loopback without tokens; with ``insecure`` the refusals become warnings.

    A service on 127.0.0.1 is reachable only from this machine, so it may run without tokens (the
    demo does); anywhere else, writes need write tokens and reads need read tokens or ``public_reads``.
    """
    if is_loopback(host):
        return []
    problems = []
    if not settings.write_tokens:
        problems.append(
            f"listening on {host} without write tokens lets anyone who reaches the port start jobs; "
            "set write_tokens (MIDMIX_WRITE_TOKENS or write_tokens_file)"
        )
    if not settings.read_tokens and not settings.public_reads:
        problems.append(
            f"listening on {host} without read tokens lets anyone who reaches the port download every version; "
            "set read_tokens (MIDMIX_READ_TOKENS or read_tokens_file), or public_reads: true if that is intended"
        )
    if problems and not insecure:
        raise MidmixError("refusing to start: " + "; ".join(problems) + " (or pass --insecure to accept the risk)")
    return problems
