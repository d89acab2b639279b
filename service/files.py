"""HTTP responses for immutable content: strong ETags, 304s, Range requests, big read chunks."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi import Request, Response
from starlette.responses import FileResponse, RedirectResponse, StreamingResponse

from midmix import storage
from midmix.service.versions import MirroredFile, ServedFile

_IMMUTABLE = "public, max-age=31536000, immutable"
_PROXY_CHUNK = 1 << 20
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class ShardResponse(FileResponse):
    """Starlette's FileResponse (Range, If-Range, 416, HEAD; reads in its thread pool) with bigger chunks.

    Reads stay off the event loop (a cold shard can wait on the disk). 256 KiB chunks: 1 MiB was
    no faster in an A/B run (bench/RESULTS.md, Service), and smaller chunks keep the socket fed.
    """

    chunk_size = 256 << 10


def not_modified(request: Request, etag: str) -> bool:
    """Whether the client's If-None-Match already names this ETag."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def file_response(
    request: Request, served: ServedFile | MirroredFile, media_type: str, redirect: bool = False
) -> Response:
    """The file's bytes (whole or a Range), or 304 when the client holds this exact content.

    A mirrored file answers 307 to a signed URL when ``redirect`` is on and its store can sign
    one (the 307 carries the sha256 ETag so clients can still verify), else it is proxied.
    """
    etag = f'"{served.sha256}"'
    if not_modified(request, etag):
        return Response(status_code=304, headers={"etag": etag, "cache-control": _IMMUTABLE})
    if isinstance(served, MirroredFile):
        signed = storage.signed_url(served.location) if redirect else None
        if signed is not None:
            return RedirectResponse(signed, status_code=307, headers={"etag": etag, "cache-control": "no-store"})
        return _proxy_response(request, served, media_type, etag)
    return ShardResponse(
        served.path, media_type=media_type, stat_result=served.stat, headers={"etag": etag, "cache-control": _IMMUTABLE}
    )


def _proxy_response(request: Request, served: MirroredFile, media_type: str, etag: str) -> Response:
    """Stream a mirrored file with the same headers as a local one: one byte range, If-Range, HEAD."""
    headers = {"etag": etag, "cache-control": _IMMUTABLE, "accept-ranges": "bytes"}
    start, end, status = 0, served.size - 1, 200
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    # Several ranges in one header are answered with the whole file (allowed by RFC 9110).
    if wanted and "," not in wanted and (if_range is None or if_range == etag):
        bounds = _byte_range(wanted, served.size)
        if bounds is None:
            return Response(status_code=416, headers=headers | {"content-range": f"bytes */{served.size}"})
        start, end, status = *bounds, 206
        headers["content-range"] = f"bytes {start}-{end}/{served.size}"
    headers["content-length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    body = _read_range(served.location, start, end)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for one ``bytes=a-b`` / ``a-`` / ``-n`` range, None if unsatisfiable."""
    match = _SINGLE_RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0:
            return None
        return max(size - int(last), 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def _read_range(location: str, start: int, end: int) -> Iterator[bytes]:
    """The bytes ``start..end`` of a stored file (a sync iterator: Starlette runs it in a thread)."""
    remaining = end - start + 1
    with storage.open_file(location) as handle:
        handle.seek(start)
        while remaining > 0:
            chunk = handle.read(min(_PROXY_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def json_bytes_response(request: Request, body: bytes, etag: str) -> Response:
    """Pre-serialised JSON (a cached manifest) with its ETag; 304 when unchanged."""
    if not_modified(request, etag):
        return Response(status_code=304, headers={"etag": etag})
    return Response(content=body, media_type="application/json", headers={"etag": etag})
