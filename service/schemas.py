"""Response models of the HTTP API (request bodies are in ``service.requests``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from midmix.service.jobs.record import Job, JobKind, JobState


class Health(BaseModel):
    """Liveness answer."""

    status: str


class VersionInfo(BaseModel):
    """The code version; part of every version hash, so clients can tell builds apart."""

    version: str


class JobView(BaseModel):
    """What clients see of a job: state and progress, not the supervisor's bookkeeping."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: JobKind
    state: JobState
    progress: float | None
    docs_done: int
    docs_total: int | None
    step: str | None
    eta_s: float | None
    result: str | None
    error: str | None
    attempt: int
    created_at: str
    started_at: str | None
    finished_at: str | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        """The public view of a stored job."""
        return cls.model_validate(job.model_dump(include=set(cls.model_fields)))


class ShardEntry(BaseModel):
    """One shard of a phase, in training order."""

    name: str
    path: str
    sha256: str
    bytes: int
    rows: int
    tokens: int
    component: str


class PhaseSummary(BaseModel):
    """A phase as listed with its mixture: budget and what the build realised."""

    name: str
    token_budget: int | None = None
    tokens: int | None = None
    docs: int | None = None


class MixtureSummary(BaseModel):
    """One mixture version in ``GET /mixtures``."""

    version: str
    name: str | None = None
    created_at: str
    tokenizer: str | None = None
    phases: list[PhaseSummary]


class DatasetSummary(BaseModel):
    """One curated dataset version in ``GET /datasets``."""

    version: str
    created_at: str
    docs: int | None = None
    tokens: int | None = None
    inputs: list[str]
