"""The job record: what the service stores about a curation or build job and returns to clients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobKind = Literal["curate", "build"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running"})
RETRYABLE_STATES: frozenset[str] = frozenset({"failed", "cancelled", "interrupted"})


def utc_now() -> str:
    """ISO-8601 UTC timestamp, the format of every time in a job record."""
    return datetime.now(UTC).isoformat()


class Job(BaseModel):
    """One job. ``key`` is the content hash of its request: identical requests share a job."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: JobKind
    key: str
    state: JobState = "queued"
    request: dict[str, Any]
    progress: float | None = Field(default=None, description="percent done, 0-100, when known")
    docs_done: int = 0
    docs_total: int | None = None
    step: str | None = None
    eta_s: float | None = None
    result: str | None = Field(default=None, description="the version the job produced")
    error: str | None = None
    attempt: int = 1
    created_at: str = Field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    owner_pid: int | None = Field(default=None, description="service process supervising the worker")
    owner_started: int | None = None
    worker_pid: int | None = None
