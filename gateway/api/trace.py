"""Leak tracing over HTTP: a supervisor (or the authority) uploads a leaked file and gets the
ranked candidate recipients, with the record ids and bundle URLs of the deliveries that
implicate each named one.

Leaked files are larger than any other request body, so this one route reads its body
itself, up to ``trace_upload_max_bytes``, instead of raising the application-wide limit
(``max_body_bytes``) for every other route too.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader

from gateway.api.admin import staff_actor
from gateway.api.appkeys import POLICY, RECORD, SETTINGS, TRACER
from gateway.api.problems import json_response
from gateway.errors import PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError
from gateway.tracing.files import read_leaked_bytes

__all__ = ["LEAK_MEDIA_TYPES", "add_routes", "bundle_url"]

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
LEAK_MEDIA_TYPES = frozenset(
    {
        "text/csv",
        "text/tab-separated-values",
        "text/plain",
        XLSX,
        "application/json",
        "application/x-ndjson",
        "application/octet-stream",
    }
)
_CHUNK = 64 * 1024
_FORM_FIELDS = {"dataset", "sheet"}


def bundle_url(record_id: str) -> str:
    """Where staff who may read the log fetch the evidence bundle of ``calls/<seq>``."""
    return f"/admin/bundles/{record_id}"


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"leaked file larger than {limit} bytes (setting trace_upload_max_bytes); "
        "trace a sample of its rows or raise the limit"
    )


async def _read_stream(stream: StreamReader | BodyPartReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if isinstance(stream, BodyPartReader):
            chunk = await stream.read_chunk(_CHUNK)
        else:
            chunk = await stream.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)


async def _upload(request: web.Request, limit: int) -> tuple[bytes, str, str, dict[str, str]]:
    """The leaked file's bytes, name, media type, and form fields of a multipart upload."""
    if request.content_length is not None and request.content_length > limit + _CHUNK:
        raise _too_large(limit)
    media_type = request.content_type
    if media_type in LEAK_MEDIA_TYPES:
        data = await _read_stream(request.content, limit)
        return data, request.query.get("name", ""), media_type, {}
    if media_type != "multipart/form-data":
        raise UnsupportedMediaTypeError(
            "send the leaked file as text/csv, application/json, the XLSX media type or "
            "multipart/form-data with a `file` part"
        )
    try:
        reader = await request.multipart()
        found: tuple[bytes, str, str] | None = None
        fields: dict[str, str] = {}
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValidationError("nested multipart bodies are not accepted")
            if part.name == "file":
                if found is not None:
                    raise ValidationError("send one `file` part")
                data = await _read_stream(part, limit)
                found = (data, part.filename or "", part.headers.get("Content-Type", ""))
            elif part.name in _FORM_FIELDS:
                fields[part.name] = (await _read_stream(part, 1024)).decode("utf-8", "replace")
            else:
                raise ValidationError(
                    f"unexpected form part {part.name!r}; send `file` and optionally "
                    "`dataset`, `sheet`"
                )
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        # aiohttp's multipart parser reports a malformed body with these (a part header it
        # cannot read, e.g. with a control character, as HttpProcessingError). Their text
        # quotes the input, so only their kind is told.
        raise ValidationError(
            f"malformed multipart body ({type(exc).__name__}); send a `file` part and "
            "optionally `dataset` and `sheet`",
            field="body",
        ) from exc
    if found is None:
        raise ValidationError("the multipart body has no `file` part")
    return found[0], found[1], found[2], fields


async def trace_leak(request: web.Request) -> web.Response:
    """Trace a leaked file; the call itself is recorded with the file's digest."""
    actor = await staff_actor(request)
    tracer = request.app[TRACER]
    # The tracer's rule, asked before the upload is read: a caller without the role cannot
    # make the gateway read a large file (LeakTracer.trace asks again).
    tracer.authorize(actor)
    settings = request.app[SETTINGS]
    data, name, media_type, fields = await _upload(request, settings.trace.upload_max_bytes)
    dataset_id = fields.get("dataset") or request.query.get("dataset") or None
    sheet = fields.get("sheet") or request.query.get("sheet") or None
    record = request[RECORD]
    record.dataset_id = dataset_id
    record.parameters = {
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "file_bytes": len(data),
    }
    if dataset_id is not None and dataset_id not in (await request.app[POLICY].current()).datasets:
        raise ValidationError(f"no dataset {dataset_id!r} in the catalog")
    # Parsing a large file is CPU work: keep the event loop serving other calls.
    table = await asyncio.to_thread(
        read_leaked_bytes,
        data,
        name=name,
        media_type=media_type,
        sheet=sheet,
        max_rows=settings.trace.max_rows,
    )
    record.parameters["rows"] = len(table.rows)
    report = await tracer.trace(actor, table, dataset_id=dataset_id)
    document: dict[str, Any] = report.to_dict()
    for candidate in document["candidates"]:
        if candidate["verdict"] != "named":
            continue
        for delivery in candidate["deliveries"]:
            delivery["bundle"] = bundle_url(delivery["record_id"])
    return json_response(document)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/trace", trace_leak)
