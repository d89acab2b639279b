"""HTTP client for the midmix service: the only way the trainer and remote CLI talk to it.

Imports httpx, tenacity and the core only, so a trainer can depend on it without pulling in
FastAPI or the pipelines. A service that is briefly down (restart, deploy) must not kill a long
training run, so connection errors, timeouts and 5xx answers are retried with exponential backoff
and full jitter (tenacity) - but only requests that are safe to send twice: reads, DELETE (cancel
answers the same when repeated), the plan dry run, and POSTs that create or retry jobs, which carry
an ``Idempotency-Key`` so a repeat gets the first answer's job. 4xx answers are user mistakes and
raise at once with the server's ``detail``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from midmix.errors import ConflictError, ForbiddenError, MidmixError, NotFoundError
from midmix.hashing import sha256_file
from midmix.publish import commit_file

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
_CHUNK = 1 << 20
_MAX_BACKOFF_S = 8.0
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class MidmixClient:
    """Typed wrapper over the service's HTTP API (see docs/ARCHITECTURE.md)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.25,
    ):
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Redirects are followed: a service may send shard downloads to a signed object-store URL
        # (httpx drops the Authorization header when the redirect leaves the service's origin).
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- service --------------------------------------------------------------------------

    def health(self) -> dict:
        """Liveness: ``{"status": "ok"}``."""
        return self._json("GET", "/health")

    def version(self) -> dict:
        """The service's code version: ``{"version": "0.1.0"}``."""
        return self._json("GET", "/version")

    def classifiers(self) -> list[dict]:
        """Registered fastText models with task, labels, metrics and sha256."""
        return self._json("GET", "/classifiers")

    # --- datasets -------------------------------------------------------------------------

    def datasets(self) -> list[dict]:
        """Curated dataset versions, newest first."""
        return self._json("GET", "/datasets")

    def dataset(self, version: str) -> dict:
        """One curated dataset's manifest (counts, steps, histograms, files)."""
        return self._json("GET", f"/datasets/{_seg(version)}")

    def curate(self, config: dict) -> dict:
        """Start a curation job (inputs, fields, tokenizer, heuristics, classifiers, dedup, decontam); returns the job."""
        return self._json("POST", "/datasets", json=config, idempotency_key=_new_key())

    # --- mixtures -------------------------------------------------------------------------

    def plan(self, spec: dict) -> dict:
        """Dry-run a mixture spec: the plan (budgets, epochs, thresholds) without building."""
        return self._json("POST", "/mixtures/plan", json=spec, safe=True)

    def build(self, spec: dict) -> dict:
        """Start (or join the identical running) build of a mixture spec; returns the job."""
        return self._json("POST", "/mixtures", json=spec, idempotency_key=_new_key())

    def mixtures(self) -> list[dict]:
        """Mixture versions, newest first."""
        return self._json("GET", "/mixtures")

    def manifest(self, version: str) -> dict:
        """One mixture version's manifest (phases, components, shards, eval, lineage)."""
        return self._json("GET", f"/mixtures/{_seg(version)}")

    def diff(self, a: str, b: str, page_size: int = 10_000) -> dict:
        """Per phase and component token changes, docs added and removed, from ``a`` to ``b``.

        The service pages doc ids; this fetches every page and returns whole lists.
        """
        url = f"/mixtures/{_seg(a)}/diff/{_seg(b)}"
        diff = self._json("GET", url, params={"limit": page_size})
        while diff["next_offset"] is not None:
            page = self._json("GET", url, params={"limit": page_size, "offset": diff["next_offset"]})
            for phase, more in zip(diff["phases"], page["phases"]):
                for component, extra in zip(phase["components"], more["components"]):
                    component["docs_added"] += extra["docs_added"]
                    component["docs_removed"] += extra["docs_removed"]
            diff["next_offset"] = page["next_offset"]
        return diff

    def shards(self, version: str, phase: str) -> list[dict]:
        """The shards of one phase in training order, with sha256, bytes, rows and tokens."""
        return self._json("GET", f"/mixtures/{_seg(version)}/phases/{_seg(phase)}/shards")

    def download(self, version: str, path: str, dest: Path) -> Path:
        """Stream the version's file at relative ``path`` to ``dest`` atomically.

        Bytes go to ``dest.part`` first; an interrupted download (this call's retries or an
        earlier process) resumes from the partial file with a Range request. The finished
        file is checked against the ETag (its sha256) before the rename into place.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        url = f"/mixtures/{_seg(version)}/files/{quote(path, safe='/')}"
        etag = self._retrying(lambda: self._download_into(url, partial))
        if etag and sha256_file(partial) != etag:
            partial.unlink()
            raise MidmixError(
                f"download of {path} from {self.base_url} did not match its sha256 {etag}; "
                "the partial file was removed, run again"
            )
        commit_file(partial, dest)
        return dest

    # --- jobs -----------------------------------------------------------------------------

    def jobs(self, limit: int = 100, offset: int = 0) -> list[dict]:
        """Jobs, newest first, one page."""
        return self._json("GET", "/jobs", params={"limit": limit, "offset": offset})

    def job(self, job_id: str) -> dict:
        """One job: state, progress (0-100), docs_done, step, eta_s, result, error."""
        return self._json("GET", f"/jobs/{_seg(job_id)}")

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job; returns it (cancelling a cancelled job answers the same)."""
        return self._json("DELETE", f"/jobs/{_seg(job_id)}")

    def retry(self, job_id: str) -> dict:
        """Run a failed, cancelled or interrupted job again; returns the (new) job."""
        return self._json("POST", f"/jobs/{_seg(job_id)}/retry", idempotency_key=_new_key())

    def wait(
        self,
        job_id: str,
        poll: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[dict], None] | None = None,
    ) -> dict:
        """Poll a job until it reaches a terminal state and return it (whatever the state).

        ``on_progress`` gets every polled job dict, so callers can draw a progress bar.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["state"] in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise MidmixError(f"job {job_id} is still {job['state']} after {timeout:g} s; wait longer")
            time.sleep(poll)

    # --- transport ------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        url: str,
        json: Any = None,
        params: dict | None = None,
        idempotency_key: str | None = None,
        safe: bool = False,
    ) -> Any:
        """Send one request; retried only if sending it twice is harmless (see the module docstring)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}

        def send() -> httpx.Response:
            response = self._http.request(method, url, json=json, params=params, headers=headers)
            _raise_for_status(response)
            return response

        repeatable = safe or idempotency_key is not None or method in _IDEMPOTENT_METHODS
        return self._retrying(send, attempts=self.retries + 1 if repeatable else 1).json()

    def _download_into(self, url: str, partial: Path) -> str | None:
        """One attempt: append to ``partial`` from its current size; returns the ETag."""
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:
                # The partial file is not a prefix of this file (it is longer): start over.
                partial.unlink()
                raise _Retryable(f"partial download of {url} was longer than the file")
            _raise_for_status(response)
            mode = "ab" if response.status_code == 206 else "wb"
            with open(partial, mode) as handle:
                handle.writelines(response.iter_bytes(_CHUNK))
            # After a redirect the store's own ETag is not a sha256; the service's 307 carries it.
            answered = response.history[0] if response.history else response
            return answered.headers.get("etag", "").strip('"') or None

    def _retrying(self, attempt: Callable[[], Any], attempts: int | None = None) -> Any:
        """Run ``attempt``, retrying transport errors and 5xx with jittered exponential backoff."""
        attempts = attempts or self.retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=self.backoff, max=_MAX_BACKOFF_S),
            retry=retry_if_exception_type((httpx.TransportError, _Retryable)),
        )
        try:
            return retrying(attempt)
        except RetryError as error:
            last_error = error.last_attempt.exception()
        raise MidmixError(
            f"the midmix service at {self.base_url} is unreachable after {attempts} attempts "
            f"({last_error}); check that `midmix serve` is running there"
        )


class _Retryable(Exception):
    """A failure worth another attempt: a 5xx answer or a stale partial download."""


def _raise_for_status(response: httpx.Response) -> None:
    """Map 4xx to project errors carrying the server's ``detail``; 5xx to a retry."""
    status = response.status_code
    if status < 400:
        return
    if status >= 500:
        raise _Retryable(f"HTTP {status} from {response.request.url}")
    response.read()
    detail = _detail(response)
    if status == 404:
        raise NotFoundError(detail)
    if status == 409:
        raise ConflictError(detail)
    if status == 401 or (status == 403 and "token" in detail):
        raise MidmixError(f"{detail} (pass a valid token with --token or MIDMIX_TOKEN)")
    if status == 403:
        raise ForbiddenError(detail)
    raise MidmixError(detail)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    return f"HTTP {response.status_code}: {detail if detail is not None else body}"


def _new_key() -> str:
    """A fresh Idempotency-Key: one per logical request, reused by its retries."""
    return uuid.uuid4().hex


def _seg(value: str) -> str:
    """Quote one path segment so names cannot inject path separators."""
    return quote(str(value), safe="")
