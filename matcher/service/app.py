"""The FastAPI application of ``icd serve``: routes, the bearer token, error bodies and request timing, on a
:class:`~matcher.service.core.ServiceCore` (models loaded once, one open index).

Routes (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``)::

    POST   /match?top_k=&min_score=   multipart "file": its matches in the index, with evidence
    POST   /score                     multipart "query" and "reference": one pair's fused score and evidence
    POST   /references                multipart "id" and "file": add one reference (201 added, 200 already)
    DELETE /references/{id}           remove one reference (404 when not indexed)
    GET    /health                    liveness (no token needed; index path and count only with the token)
    GET    /stats                     counts, models, uptime, requests and latency percentiles per route

Every refusal is JSON ``{"error": <code>, "detail": <message>}`` with a 4xx status: 400 (empty upload, bad id,
malformed form), 401 (token missing or wrong), 404, 409 (id indexed with other content), 413 (upload over the
limit, image over the loader's pixel limit), 415 (not multipart), 422 (not an image, truncated, too small, bad
query parameters). Uploads are read into memory only (nothing is written outside the index).
"""
from __future__ import annotations

import contextlib
import hmac
import os
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

try:
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as _exc:  # pragma: no cover - depends on the install
    raise ImportError(f"the HTTP service needs the 'serve' extra: pip install \"icd-matcher[serve]\" ({_exc})") from None

from matcher.config import MatcherConfig
from matcher.service import TOKEN_ENV
from matcher.service.core import ServiceCore, ServiceError
from matcher.service.uploads import FormPart, check_reference_id, read_multipart, upload_name

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "TOKEN_ENV", "create_app"]

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_BEARER = HTTPBearer(auto_error=False, description=f"the token given to `icd serve --token` or ${TOKEN_ENV}")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


# ---------------------------------------------------------------------------------------------------- schemas
class ErrorBody(BaseModel):
    error: str = Field(description="short code, e.g. not_an_image, too_many_pixels, too_large, unauthorized")
    detail: str = Field(description="what is wrong, naming the upload")


class MatchResponse(BaseModel):
    query: str
    references: int = Field(description="references in the index")
    threshold: float
    matches: list[dict[str, Any]] = Field(description="best first; each the row of `icd match --format jsonl` "
                                          "(matcher.isc.formats.COLUMNS: score, is_copy, evidence, contributions)")
    seconds: dict[str, float]


class ReferenceResponse(BaseModel):
    id: str
    status: str = Field(description="added, already or removed")
    references: int = Field(description="references in the index after the change")


class HealthResponse(BaseModel):
    status: str
    index: str | None = None
    references: int | None = None


def _form_body(fields: dict[str, dict[str, str]], required: list[str]) -> dict[str, Any]:
    """OpenAPI request body of a multipart form (the uploads are parsed by hand, so it is declared here)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": required, "properties": fields}}}}}


_FILE = {"type": "string", "format": "binary"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorBody, "description": d} for c, d in (
        (400, "empty upload, missing part, bad id or malformed form"), (401, "bearer token missing or wrong"),
        (413, "upload over the size limit, or image over the pixel limit"), (415, "not multipart/form-data"),
        (422, "not an image, truncated, too small, or bad query parameters"))}


# ---------------------------------------------------------------------------------------------------- timing
class _Timing:
    """ASGI middleware recording each request's route template, status and wall time in the core's stats."""

    def __init__(self, app: ASGIApp, core: ServiceCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "(no route)"
            self.core.stats.record(f"{scope['method']} {path}", status, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------- the app
def _file_part(form: dict[str, FormPart], field: str) -> tuple[str, bytes]:
    part = form.get(field)
    if part is None or part.filename is None:
        raise ServiceError(400, "missing_file", f"no file in form field '{field}' (e.g. curl -F {field}=@picture.jpg)")
    return upload_name(part), bytes(part.data)


def create_app(index_dir: str | os.PathLike[str] | None = None, *, token: str | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, config: MatcherConfig | None = None,
               inference_slots: int = 1, core: ServiceCore | None = None) -> FastAPI:
    """The service application on the index folder ``index_dir`` (or an opened ``core``): models are loaded
    here, once. ``token``: when set (non-empty), every route but ``/health``, ``/docs`` and ``/openapi.json``
    needs ``Authorization: Bearer <token>``. ``max_upload_bytes``: largest accepted image file. ``config``:
    None uses the index's stored configuration. ``inference_slots``: model inferences run at once."""
    token = token or None
    max_upload_bytes = int(max_upload_bytes)
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    if core is None:
        if index_dir is None:
            raise ValueError("give index_dir (a folder made by `icd index`) or core")
        core = ServiceCore.open(index_dir, config, inference_slots=inference_slots)

    def authorised(credentials: HTTPAuthorizationCredentials | None) -> bool:
        return token is None or (credentials is not None and hmac.compare_digest(
            credentials.credentials.encode("utf-8"), token.encode("utf-8")))

    async def require_token(credentials: Credentials) -> None:
        if not authorised(credentials):
            raise ServiceError(401, "unauthorized", "wrong bearer token" if credentials is not None else
                               "missing bearer token (send the header Authorization: Bearer <token>)")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(core.close)

    guarded = [Depends(require_token)] if token is not None else []
    app = FastAPI(title="icd-matcher", summary="Image copy detection against one reference index",
                  version=_version(), lifespan=lifespan)
    app.state.core = core
    app.add_middleware(_Timing, core=core)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                             for e in exc.errors())
        return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.get("/health", response_model=HealthResponse, response_model_exclude_none=True,
             summary="Liveness; the index path and reference count need the token when one is set")
    async def health(credentials: Credentials) -> dict[str, Any]:
        return await run_in_threadpool(core.health, authorised(credentials))

    @app.get("/stats", dependencies=guarded, responses=_ERRORS,
             summary="Index counts, models, uptime, request counts and latency percentiles per route")
    async def stats() -> dict[str, Any]:
        return await run_in_threadpool(core.describe)

    @app.post("/match", dependencies=guarded, response_model=MatchResponse, responses=_ERRORS,
              openapi_extra=_form_body({"file": {**_FILE, "description": "the query picture"}}, ["file"]),
              summary="Match one uploaded picture against the index")
    async def match(request: Request,
                    top_k: int | None = Query(None, ge=1, le=1000, description="matches returned (default: config "
                                              "top_k)"),
                    min_score: float | None = Query(None, ge=0.0, le=1.0, description="only matches scoring at "
                                                    "least this")) -> dict[str, Any]:
        form = await read_multipart(request, max_file_bytes=max_upload_bytes)
        name, data = _file_part(form, "file")
        return await run_in_threadpool(lambda: core.match(name, data, top_k=top_k, min_score=min_score))

    @app.post("/score", dependencies=guarded, responses=_ERRORS,
              openapi_extra=_form_body({"query": _FILE, "reference": _FILE}, ["query", "reference"]),
              summary="Fused score and evidence of one uploaded pair (the index is not used)")
    async def score(request: Request) -> dict[str, Any]:
        form = await read_multipart(request, max_file_bytes=max_upload_bytes, files=2)
        pair = _file_part(form, "query"), _file_part(form, "reference")
        return await run_in_threadpool(core.score, *pair)

    @app.post("/references", dependencies=guarded, response_model=ReferenceResponse, status_code=201,
              responses={**_ERRORS, 200: {"model": ReferenceResponse, "description": "already indexed"},
                         409: {"model": ErrorBody, "description": "id indexed with other content"}},
              openapi_extra=_form_body({"id": {"type": "string", "maxLength": 200}, "file": _FILE}, ["id", "file"]),
              summary="Add one reference picture under an id")
    async def add_reference(request: Request) -> JSONResponse:
        form = await read_multipart(request, max_file_bytes=max_upload_bytes)
        id_part = form.get("id")
        if id_part is None or id_part.filename is not None:
            raise ServiceError(400, "missing_id", "no form field 'id' (e.g. curl -F id=poster-17 -F file=@p.jpg)")
        try:
            ref_id = check_reference_id(bytes(id_part.data).decode("utf-8"))
        except UnicodeDecodeError:
            raise ServiceError(400, "bad_id", "reference id is not UTF-8 text") from None
        name, data = _file_part(form, "file")
        status, body = await run_in_threadpool(core.add, ref_id, name, data)
        return JSONResponse(body, status_code=status)

    @app.delete("/references/{ref_id}", dependencies=guarded, response_model=ReferenceResponse,
                responses={**_ERRORS, 404: {"model": ErrorBody, "description": "id not indexed"}},
                summary="Remove one reference; it is never matched again")
    async def remove_reference(ref_id: str) -> dict[str, Any]:
        return await run_in_threadpool(core.remove, check_reference_id(ref_id))

    return app


def _version() -> str:
    from matcher import __version__

    return __version__
