"""What every toolbox request passes first: the ``Host`` header is one the server answers (DNS rebinding), no
cross-origin request, no body over the upload limit (refused before it is read), and the page's safety headers."""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: The page's content security policy: its own origin only (inline CSS/JS are the page's own; eval stays allowed
#: because browser automation, Playwright's wait_for_function among it, evaluates strings in the page).
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
#: Bytes a multipart form adds around the file (boundaries, part headers).
FORM_OVERHEAD = 64 << 10
#: Most bytes of a refused request read (and dropped) so that the client, still sending, sees the 413 answer.
DRAIN_LIMIT = 256 << 20


async def drain(request: Request, seen: int = 0) -> None:
    """Read and drop the rest of a refused request's body (up to :data:`DRAIN_LIMIT`): a client that is still
    sending when the connection closes sees a reset instead of the answer."""
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                break
    except Exception:   # the client gave up: nothing left to answer
        pass


def too_large(size: int, limit: int) -> JSONResponse:
    """The 413 answer to a request of ``size`` bytes (or more) over an upload limit of ``limit`` bytes."""
    return JSONResponse({"detail": f"the request is {size / 2**20:.1f} MB (or more); uploads are limited to "
                                   f"{limit / 2**20:.0f} MB"}, status_code=413, headers={"Connection": "close"})


def cross_site(request: Request) -> str | None:
    """Why a request sent by another site's page is refused (``None``: it is not one). Browsers say where a request
    comes from in ``Sec-Fetch-Site``; another site's ``<img>`` or form could otherwise queue renders and uploads
    here. Only a top-level visit to the page itself (a link followed) is let through."""
    site = request.headers.get("sec-fetch-site")
    if site not in ("cross-site", "same-site"):
        return None   # same-origin, a typed address or bookmark ("none"), or a client that is not a browser
    if request.method == "GET" and request.url.path == "/" and request.headers.get("sec-fetch-mode") == "navigate":
        return None
    return (f"a request from another site's page ({site}) is refused: the toolbox answers its own page only; "
            "open the toolbox's address yourself")


def add_guard(app: FastAPI, max_upload: int, allowed_hosts: Sequence[str] | None) -> None:
    """Guard every request of ``app``: ``Host`` among ``allowed_hosts`` (``None``: any), same origin only, bodies up
    to ``max_upload`` bytes plus the form's overhead; answers carry no-sniff, no-referrer and no-framing headers."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        name = urlsplit(f"//{host}").hostname or ""
        if allowed_hosts is not None and name not in allowed_hosts:
            return JSONResponse({"detail": f"unexpected Host header {host!r}: this server answers "
                                           f"{', '.join(allowed_hosts)} only (luminate serve --allow-host NAME "
                                           "adds a name)"}, status_code=400)
        refused = cross_site(request)
        if refused:
            return JSONResponse({"detail": refused}, status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            return JSONResponse({"detail": f"cross-origin request from {origin!r} refused: the toolbox answers "
                                           "its own page only"}, status_code=403)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload + FORM_OVERHEAD:
            await drain(request)
            return too_large(int(length), max_upload)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response
