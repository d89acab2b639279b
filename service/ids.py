"""Path and header parameters validated at the edge: a malformed id is a 422 before any lookup.

Patterns and lengths bound every id a route passes to the stores, so no request can reach the
filesystem or the database with a name that could escape a folder or overflow a file name.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path

from midmix.pipelines.mixtures.spec import NAME_PATTERN
from midmix.service.jobs.record import JOB_ID_PATTERN
from midmix.service.versions import VERSION_PATTERN

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, max_length=32, description="curate-<12 hex> or build-<12 hex>")]
Version = Annotated[str, Path(pattern=VERSION_PATTERN, max_length=128, description="a version id such as mix-…")]
PhaseName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)]
ShardName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=255)]
VersionFile = Annotated[str, Path(min_length=1, max_length=1024, description="a path the manifest lists")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[A-Za-z0-9_.:-]{8,128}$",
        description="send the same key when retrying a request: the retry gets the first answer's job",
    ),
]
