"""``POST /api/images`` (multipart field ``file``; checked before decoding) and ``GET /api/images/ID.png`` (the
image as the model sees it)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser

from luminate.images import png_bytes
from luminate.serve.guard import FORM_OVERHEAD, drain, too_large
from luminate.serve.routes.common import ToolboxDep
from luminate.serve.toolbox import Toolbox
from luminate.serve.uploads import UploadError

router = APIRouter()


async def _form_file(request: Request, limit: int) -> bytes | Response:
    """The bytes of the form's ``file`` field, or the 413 answer once the body passes ``limit`` plus the form's
    overhead (a body without Content-Length is capped while it arrives)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit + FORM_OVERHEAD:
            await drain(request, len(body))
            return too_large(len(body), limit)

    async def received():
        yield bytes(body)

    try:
        form = await MultiPartParser(request.headers, received(), max_files=1, max_fields=4).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"the multipart form cannot be read: {exc.message}") from None
    try:
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise HTTPException(400, "no file in the form field 'file'")
        return await file.read(limit + 1)
    finally:
        await form.close()


@router.post("/api/images")
async def upload(request: Request, box: Toolbox = ToolboxDep):
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(400, "send the image as multipart/form-data with the file in the field 'file'")
    data = await _form_file(request, box.max_upload)
    if isinstance(data, Response):
        return data
    try:
        return await run_in_threadpool(box.add_image, data)
    except UploadError as exc:
        retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        raise HTTPException(exc.status, str(exc), headers=retry) from None


@router.get("/api/images/{name}")
def image_png(name: str, box: Toolbox = ToolboxDep) -> Response:
    key = name.removesuffix(".png")
    return Response(png_bytes(box.image(key).pixels), media_type="image/png")
