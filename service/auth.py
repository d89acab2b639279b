"""Bearer-token auth as FastAPI dependencies: a read token reads, a write token reads and writes.

Every router is mounted behind ``require_read`` (``service.app``); routes that change state add
``require_write``. With no read tokens configured reads are open, with no write tokens writes are
(a loopback-only service: ``settings.check_exposure`` refuses anything else). The checks are async
(they do no I/O) so FastAPI does not hop to its thread pool for them.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from midmix.service.settings import ServiceSettings

_bearer = HTTPBearer(auto_error=False, description="a read or write token from the service settings")


def _matches(token: str, allowed: list[str]) -> bool:
    # Compare against every token in constant time so timing reveals neither token nor position.
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def _settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def _presented_token(credentials: HTTPAuthorizationCredentials | None, needs: str) -> str:
    """The bearer token sent, or a 401 saying which kind of token the request needs."""
    if credentials is None:
        raise HTTPException(
            401, f"{needs}: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    return credentials.credentials


async def require_read(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """Allow the request if reads are open or it carries a read or write token."""
    settings = _settings(request)
    if not settings.read_tokens:
        return
    token = _presented_token(credentials, "this service needs a token (a read token to read, a write token to change)")
    if not (_matches(token, settings.read_tokens) or _matches(token, settings.write_tokens)):
        raise HTTPException(
            401, "the bearer token is not a valid read token for this service", headers={"WWW-Authenticate": "Bearer"}
        )


async def require_write(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """Allow the request if writes are open or it carries a write token."""
    settings = _settings(request)
    if not settings.write_tokens:
        return
    token = _presented_token(credentials, "this endpoint changes state and needs a write token")
    if not _matches(token, settings.write_tokens):
        raise HTTPException(403, "the bearer token is not a write token; use a token listed in write_tokens")
