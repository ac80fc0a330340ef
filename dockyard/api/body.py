"""Request bodies for /v1: JSON, or a form as `curl -d` and `curl -F` send it."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from dockyard.api.errors import ApiError

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"
_EXAMPLE = '{"name": "My Docker Hub", "registry_type": "docker_hub"}'


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    # isascii(): "²".isdigit() is true, and int() of it fails; a length of more digits than
    # the limit's is over it (int() refuses thousands of digits).
    digits = (declared or "").lstrip("0")
    if (
        digits.isascii()
        and digits.isdigit()
        and (len(digits) > len(str(limit)) or int(digits) > limit)
    ):
        raise ApiError(413, f"Request body is too large; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"Request body is too large; the limit is {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ApiError(
            400, f"Request body is not valid JSON ({exc}); send e.g. {_EXAMPLE}"
        ) from None
    except RecursionError:
        raise ApiError(
            400, f"Request body is JSON nested too deeply; send a flat object, e.g. {_EXAMPLE}"
        ) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, f"Request body must be a JSON object, e.g. {_EXAMPLE}")
    return parsed


def _parse_form(raw: bytes) -> dict[str, Any]:
    try:
        # errors="strict": a percent-encoded byte that is not UTF-8 (%FF) must be refused,
        # not silently stored as U+FFFD in a name or a password.
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise ApiError(400, "Form body must be UTF-8 text") from None


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, but a field that is not UTF-8 is refused (Starlette reads it as
    Latin-1), and a body that stops before its closing boundary is noticed (Starlette
    returns the fields it got so far: a PATCH cut short would be applied in part)."""

    complete = False

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                part.data.decode(self._charset)
            except (UnicodeDecodeError, LookupError):
                raise MultiPartException(
                    f"field {part.field_name[:100]!r} is not {self._charset} text"
                ) from None
        super().on_part_end()

    def on_end(self) -> None:
        self.complete = True


async def _parse_multipart(request: Request, raw: bytes) -> dict[str, Any]:
    async def replay() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = _StrictMultiPartParser(request.headers, replay(), max_files=0)
    try:
        form = await parser.parse()
    except (MultiPartException, ValueError, KeyError) as exc:
        raise ApiError(400, f"Multipart form body is malformed: {exc}") from None
    if not parser.complete:
        raise ApiError(400, "Multipart form body is malformed: it ends before its closing boundary")
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            raise ApiError(400, "File uploads are not accepted here; send plain fields")
        fields[key] = value
    return fields


async def read_fields(request: Request, limit: int) -> dict[str, Any]:
    """The body's fields as a dict; an empty body is an empty dict."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await _read_capped(request, limit)
    if not raw.strip():
        return {}
    if content_type == MULTIPART:
        return await _parse_multipart(request, raw)
    if content_type == JSON or content_type.endswith("+json"):
        return _parse_json(raw)
    if content_type == FORM:
        return _parse_form(raw)
    if not content_type:
        # curl --data without a header, or a client that forgot it: be liberal in
        # what we accept, as long as it is unambiguous.
        return _parse_json(raw) if raw.lstrip().startswith(b"{") else _parse_form(raw)
    raise ApiError(415, f"Content-Type {content_type} is not supported; send {JSON} or {FORM}")
