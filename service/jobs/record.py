"""The job record: what the service stores about a curation or build job and returns to clients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobKind = Literal["curate", "build"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running"})
RETRYABLE_STATES: frozenset[str] = frozenset({"failed", "cancelled", "interrupted"})
FINISHED_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
# Job ids are "<kind>-<12 hex digits>"; routes refuse anything else before touching the store.
JOB_ID_PATTERN = r"^(curate|build)-[0-9a-f]{12}$"


def utc_now() -> str:
    """ISO-8601 UTC timestamp, the format of every time in a job record (sorts as text)."""
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
    owner_started: float | None = Field(default=None, description="its start time, to tell a reused pid apart")
    worker_pid: int | None = Field(default=None, description="the worker; also its process group id")
    worker_started: float | None = None
    executor: Literal["local", "ray", "slurm"] | None = Field(default=None, description="where its work runs")
    detached: bool = Field(default=False, description="its work runs elsewhere (Slurm): it holds no job slot")

    def finished(self, state: JobState, **update: Any) -> Job:
        """This job ended in ``state`` now (``update`` adds result or error)."""
        return self.model_copy(update={"state": state, "finished_at": utc_now(), "eta_s": None, **update})
