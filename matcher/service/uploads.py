"""Reading uploads: a bounded ``multipart/form-data`` reader that keeps everything in memory (nothing is spooled
to temporary files), and the checks on reference ids and upload names.

A request body is read at most up to its limit: a declared ``Content-Length`` over it is refused before reading
(413), a streamed body is counted as it arrives, and each file part is held to ``max_file_bytes``. The rest of a
refused body is read and dropped (up to a cap), so that ordinary clients, which send the whole body before
reading the answer, see the 413 instead of a reset connection.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from matcher.service.core import ServiceError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import AsyncIterator

    from starlette.requests import Request

__all__ = ["FormPart", "check_reference_id", "read_multipart", "upload_name"]

MAX_ID_LENGTH = 200
_FORM_OVERHEAD = 64 * 1024  # part headers, boundaries and small fields on top of the files
_DRAIN_FACTOR = 8  # a refused body is read and dropped up to this many times its limit, then the connection closes
_MB = 1024 * 1024


@dataclass
class FormPart:
    """One part of a multipart form: field name, file name (None for a plain field), content type, bytes."""

    name: str
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)


def _size(n: int) -> str:
    return f"{n / _MB:.1f} MB" if n >= _MB else f"{n} bytes"


class _Collector:
    """python-multipart callbacks filling :class:`FormPart` objects, with per-part limits."""

    def __init__(self, max_file_bytes: int, max_field_bytes: int, max_parts: int) -> None:
        self.parts: list[FormPart] = []
        self.max_file_bytes = max_file_bytes
        self.max_field_bytes = max_field_bytes
        self.max_parts = max_parts
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._part: FormPart | None = None

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
                "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self._headers = {}
        self._part = None
        if len(self.parts) >= self.max_parts:
            raise ServiceError(400, "bad_form", f"too many form parts (at most {self.max_parts})")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise ServiceError(400, "bad_form", 'a form part has no name (Content-Disposition: form-data; name="...")')
        name = options[b"name"].decode("utf-8", "replace")
        filename = options[b"filename"].decode("utf-8", "replace") if b"filename" in options else None
        ctype = self._headers.get(b"content-type", b"").decode("latin-1")
        self._part = FormPart(name, filename, ctype)
        self.parts.append(self._part)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part is None:  # pragma: no cover - the parser always finishes headers first
            return
        part.data += data[start:end]
        limit = self.max_file_bytes if part.filename is not None else self.max_field_bytes
        if len(part.data) > limit:
            what = upload_name(part) if part.filename is not None else f"form field '{part.name}'"
            raise ServiceError(413, "too_large", f"{what}: over the upload limit of {_size(limit)}")

    def on_end(self) -> None:
        self.ended = True


async def _drain(chunks: AsyncIterator[bytes], budget: int) -> None:
    """Read and drop up to ``budget`` more bytes of a request body."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > budget:
            return


async def read_multipart(request: Request, *, max_file_bytes: int, files: int = 1, max_parts: int = 4,
                         max_field_bytes: int = 4096) -> dict[str, FormPart]:
    """The parts of a ``multipart/form-data`` request by field name (the first part of each name), read into
    memory. The body may hold ``files`` files of at most ``max_file_bytes`` each plus small fields.
    :class:`ServiceError`: 413 when over a limit, 415 when not multipart, 400 when malformed."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise ServiceError(415, "not_multipart", "send the image as multipart/form-data (e.g. curl -F "
                           "file=@picture.jpg)")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ServiceError(400, "bad_form", "multipart/form-data without a boundary")
    limit = files * max_file_bytes + _FORM_OVERHEAD
    chunks = request.stream()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= _DRAIN_FACTOR * limit and "100-continue" not in request.headers.get("expect", ""):
            await _drain(chunks, int(declared))
        raise ServiceError(413, "too_large", f"request body of {_size(int(declared))} is over the limit of "
                           f"{_size(limit)} ({files} file(s) of at most {_size(max_file_bytes)})")
    collector = _Collector(max_file_bytes, max_field_bytes, max_parts)
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:
        raise ServiceError(400, "bad_form", f"unusable multipart boundary ({exc})") from None
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > limit:
                raise ServiceError(413, "too_large", f"request body over the limit of {_size(limit)}")
            parser.write(chunk)
        parser.finalize()
    except ServiceError as exc:
        if exc.status == 413:
            await _drain(chunks, (_DRAIN_FACTOR - 1) * limit)
        raise
    except FormParserError as exc:
        raise ServiceError(400, "bad_form", f"malformed multipart body ({exc})") from None
    if not collector.ended:
        raise ServiceError(400, "bad_form", "incomplete multipart body (no closing boundary)")
    out: dict[str, FormPart] = {}
    for part in collector.parts:
        out.setdefault(part.name, part)
    return out


def upload_name(part: FormPart) -> str:
    """A printable, bounded name of an uploaded file for messages and query ids (its file name, or the field
    name when it has none)."""
    raw = part.filename or part.name
    clean = "".join(c for c in raw if unicodedata.category(c)[0] != "C").strip()
    return (clean or part.name)[:120]


def check_reference_id(ref_id: str) -> str:
    """``ref_id`` when usable as a reference id: 1-200 characters, no path separators, no control characters,
    no surrounding spaces, not "." or "..". :class:`ServiceError` (400) naming the problem otherwise."""
    problem = None
    if not ref_id:
        problem = "is empty"
    elif len(ref_id) > MAX_ID_LENGTH:
        problem = f"is longer than {MAX_ID_LENGTH} characters"
    elif "/" in ref_id or "\\" in ref_id:
        problem = "contains a path separator"
    elif any(unicodedata.category(c)[0] == "C" for c in ref_id):
        problem = "contains control characters"
    elif ref_id != ref_id.strip():
        problem = "starts or ends with white space"
    elif ref_id in (".", ".."):
        problem = "is '.' or '..'"
    if problem is not None:
        raise ServiceError(400, "bad_id", f"reference id {ref_id[:60]!r} {problem}")
    return ref_id
