"""HTTP responses for immutable content: strong ETags, 304s, Range requests, big read chunks."""

from __future__ import annotations

from fastapi import Request, Response
from starlette.responses import FileResponse

from service.versions import ServedFile

_IMMUTABLE = "public, max-age=31536000, immutable"


class ShardResponse(FileResponse):
    """A file response reading 1 MiB at a time: Starlette's 64 KiB default costs a thread hop per chunk."""

    chunk_size = 1 << 20


def not_modified(request: Request, etag: str) -> bool:
    """Whether the client's If-None-Match already names this ETag."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def file_response(request: Request, served: ServedFile, media_type: str) -> Response:
    """The file's bytes (whole or a Range), or 304 when the client holds this exact content."""
    etag = f'"{served.sha256}"'
    if not_modified(request, etag):
        return Response(status_code=304, headers={"etag": etag, "cache-control": _IMMUTABLE})
    return ShardResponse(served.path, media_type=media_type, headers={"etag": etag, "cache-control": _IMMUTABLE})


def json_bytes_response(request: Request, body: bytes, etag: str) -> Response:
    """Pre-serialised JSON (a cached manifest) with its ETag; 304 when unchanged."""
    if not_modified(request, etag):
        return Response(status_code=304, headers={"etag": etag})
    return Response(content=body, media_type="application/json", headers={"etag": etag})
