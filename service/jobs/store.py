"""Job records in SQLite (``DATA/jobs/jobs.sqlite3``): atomic claims, idempotency keys, pruning.

Several service processes (``--workers N``) and their job workers share one database. Every
read-modify-write is one ``BEGIN IMMEDIATE`` transaction, so a claim, a cancel or a submit sees
and changes the state atomically; WAL mode lets readers go on while one process writes. A
partial unique index allows one queued or running job per request key, so identical requests
share a job whichever process answers them.

A record is stored whole as JSON (``Job`` is its one definition) beside the few columns that
queries filter on; an idle dispatcher's tick reads two small indexes, whatever the history size.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from midmix.errors import MidmixError, NotFoundError
from midmix.service.jobs.record import FINISHED_STATES, Job, JobKind, utc_now

DB_NAME = "jobs.sqlite3"
IDEMPOTENCY_TTL = timedelta(days=1)
_BUSY_TIMEOUT_MS = 30_000
_FINISHED = tuple(sorted(FINISHED_STATES))
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_finished ON jobs (finished_at) WHERE state IN {_FINISHED};
CREATE UNIQUE INDEX IF NOT EXISTS one_active_job_per_key ON jobs (key) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class IdempotencyKeyReusedError(MidmixError):
    """An Idempotency-Key sent again with a different request (422, as the IETF draft says)."""

    http_status = 422


class Transaction:
    """Reads and writes inside one ``BEGIN IMMEDIATE`` transaction (see ``JobStore.transaction``)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def get(self, job_id: str) -> Job:
        """One job by id; ``NotFoundError`` if there is none."""
        row = self.db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}; list jobs with GET /jobs")
        return Job.model_validate_json(row[0])

    def active_with_key(self, key: str) -> Job | None:
        """The queued or running job for this request key, if any."""
        row = self.db.execute(
            "SELECT record FROM jobs WHERE key = ? AND state IN ('queued', 'running')", (key,)
        ).fetchone()
        return None if row is None else Job.model_validate_json(row[0])

    def put(self, job: Job) -> Job:
        """Insert or replace the record."""
        self.db.execute(
            "INSERT INTO jobs (id, key, state, created_at, finished_at, record) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET key = excluded.key, state = excluded.state, "
            "finished_at = excluded.finished_at, record = excluded.record",
            (job.id, job.key, job.state, job.created_at, job.finished_at, job.model_dump_json()),
        )
        return job

    def jobs_in(self, state: str, limit: int = -1) -> list[Job]:
        """Jobs in ``state``, oldest first."""
        rows = self.db.execute(
            "SELECT record FROM jobs WHERE state = ? ORDER BY created_at, id LIMIT ?", (state, limit)
        ).fetchall()
        return [Job.model_validate_json(row[0]) for row in rows]

    def remembered(self, idempotency_key: str, fingerprint: str) -> Job | None:
        """The job an earlier request with this key got; a different request under the key is refused."""
        row = self.db.execute(
            "SELECT fingerprint, job_id FROM idempotency WHERE key = ?", (idempotency_key,)
        ).fetchone()
        if row is None:
            return None
        if row[0] != fingerprint:
            raise IdempotencyKeyReusedError(
                f"Idempotency-Key {idempotency_key!r} was sent before with a different request; use a new key"
            )
        try:
            return self.get(row[1])
        except NotFoundError:  # the job was pruned: the key no longer means anything
            self.db.execute("DELETE FROM idempotency WHERE key = ?", (idempotency_key,))
            return None

    def remember(self, idempotency_key: str, fingerprint: str, job: Job) -> None:
        """Answer later requests with this key with ``job``."""
        self.db.execute(
            "INSERT OR REPLACE INTO idempotency (key, fingerprint, job_id, created_at) VALUES (?, ?, ?, ?)",
            (idempotency_key, fingerprint, job.id, utc_now()),
        )


class JobStore:
    """Create, read, claim, update and prune job records in ``jobs_dir/jobs.sqlite3``."""

    def __init__(self, jobs_dir: Path):
        jobs_dir.mkdir(parents=True, exist_ok=True)
        self.path = jobs_dir / DB_NAME
        self._local = threading.local()  # sqlite3 connections stay in the thread that opened them
        self._connection().executescript(_SCHEMA)  # idempotent: every process may run it

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL survives a killed process (the case that matters for jobs); power loss
            # may drop the last commits, never corrupt the file.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: other processes' writes wait until it commits or rolls back."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def submit(self, kind: JobKind, key: str, request: dict, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """The active job with this key, or a new queued one; the flag says whether it is new.

        With ``idempotency_key``, a request sent again (a client retry) gets the job the first one
        got, even after that job finished.
        """
        with self.transaction() as tx:
            if idempotency_key and (earlier := tx.remembered(idempotency_key, key)):
                return earlier, False
            job, new = tx.active_with_key(key), False
            if job is None:
                job, new = tx.put(Job(id=f"{kind}-{secrets.token_hex(6)}", kind=kind, key=key, request=request)), True
            if idempotency_key:
                tx.remember(idempotency_key, key, job)
            return job, new

    def get(self, job_id: str) -> Job:
        """One job by id."""
        row = self._connection().execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}; list jobs with GET /jobs")
        return Job.model_validate_json(row[0])

    def list(self, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs newest first, one page."""
        rows = (
            self._connection()
            .execute("SELECT record FROM jobs ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", (limit, offset))
            .fetchall()
        )
        return [Job.model_validate_json(row[0]) for row in rows]

    def count(self) -> int:
        """How many jobs the store holds."""
        return self._connection().execute("SELECT count(*) FROM jobs").fetchone()[0]

    def has_state(self, state: str) -> bool:
        """Whether any job is in ``state`` (one index probe, no transaction)."""
        return self._connection().execute("SELECT 1 FROM jobs WHERE state = ? LIMIT 1", (state,)).fetchone() is not None

    def running(self) -> list[Job]:
        """Jobs in state ``running`` (read without a transaction)."""
        rows = self._connection().execute("SELECT record FROM jobs WHERE state = 'running'").fetchall()
        return [Job.model_validate_json(row[0]) for row in rows]

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Apply ``change`` atomically; it returns the new record, or None to keep it as it is."""
        with self.transaction() as tx:
            job = tx.get(job_id)
            changed = change(job)
            return job if changed is None else tx.put(changed)

    def claim(self, slots: int, start: Callable[[Job], Job]) -> list[Job]:
        """Move the oldest queued jobs to ``running`` (``start`` fills in the owner) while slots are free.

        A job waiting on Slurm (``detached``) holds no slot: its work runs on the cluster.
        """
        with self.transaction() as tx:
            free = slots - sum(not job.detached for job in tx.jobs_in("running"))
            return [tx.put(start(job)) for job in tx.jobs_in("queued", limit=max(free, 0))]

    def prune(self, max_age: timedelta, keep: int) -> int:
        """Delete finished jobs older than ``max_age`` and all but the ``keep`` newest; returns how many."""
        cutoff = (datetime.now(UTC) - max_age).isoformat()
        idempotency_cutoff = (datetime.now(UTC) - IDEMPOTENCY_TTL).isoformat()
        finished = f"state IN {_FINISHED}"
        with self.transaction() as tx:
            old = tx.db.execute(f"DELETE FROM jobs WHERE {finished} AND finished_at < ?", (cutoff,)).rowcount
            surplus = tx.db.execute(
                f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE {finished} "
                "ORDER BY finished_at DESC, id DESC LIMIT -1 OFFSET ?)",
                (keep,),
            ).rowcount
            tx.db.execute(
                "DELETE FROM idempotency WHERE created_at < ? OR job_id NOT IN (SELECT id FROM jobs)",
                (idempotency_cutoff,),
            )
        return old + surplus
