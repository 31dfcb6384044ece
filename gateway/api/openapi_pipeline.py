"""What the request pipeline answers on every operation, written into the OpenAPI document.

The pipeline (:mod:`gateway.api.pipeline`, :mod:`gateway.api.server`) answers some things
the same way whatever the route: it records every request and names the record in
``Dsgw-Record-Id``/``Dsgw-Record-Hash``; it refuses hostile path and query input with a
400 ``validation`` problem before any handler runs; the HTTP server answers an oversized
URL or header with 414/431; an escaped bug still leaves its ``internal-error`` record
before its 500; a record that cannot be committed withholds the answer with a 503 that
carries no record headers. Describing that once here, rather than in each operation of
``openapi.json`` and its fragments, keeps the description true for routes added later:
an area's fragment documents what its handlers answer, and :func:`document_pipeline` adds
what every request may get. Nothing an operation documents itself is replaced.
"""

from __future__ import annotations

import re
from typing import Any, Final

from gateway.api.pipeline import PROBES

__all__ = ["PIPELINE_RESPONSES", "document_pipeline"]

_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
_RECORD_HEADERS: Final = {
    "Dsgw-Record-Id": {"$ref": "#/components/headers/Dsgw-Record-Id"},
    "Dsgw-Record-Hash": {"$ref": "#/components/headers/Dsgw-Record-Hash"},
}
# A 503 may be the refusal of a dependency (recorded) or the withheld answer of a record
# that could not be committed (no record to name): the headers are optional there.
_MAYBE_RECORD_HEADERS: Final = {
    "Dsgw-Record-Id": {"$ref": "#/components/headers/Dsgw-Record-Id-If-Logged"},
    "Dsgw-Record-Hash": {"$ref": "#/components/headers/Dsgw-Record-Hash-If-Logged"},
}

#: Responses every recorded operation may give, by status, as ``components/responses``
#: names (defined in ``openapi.json``).
PIPELINE_RESPONSES: Final = {
    "400": "InvalidInput",
    "414": "UriTooLong",
    "431": "HeaderTooLarge",
    "500": "LoggedServerError",
    "503": "LogUnavailable",
}
# The parser's refusals reach probes too: it answers before any route is known.
_PROBE_RESPONSES: Final = ("414", "431")
_BODY_RESPONSES: Final = {"413": "LoggedPayloadTooLarge", "415": "LoggedUnsupportedJson"}
_UNAUTHENTICATED: Final = "Unauthenticated"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _resolve(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ref = response.get("$ref")
    if ref is None:
        return response
    name = ref.rsplit("/", 1)[1]
    target: dict[str, Any] = document["components"]["responses"][name]
    return target


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in _METHODS
    ]


def document_pipeline(document: dict[str, Any]) -> dict[str, Any]:
    """Add to every operation of ``document`` the answers of the request pipeline that it
    does not describe itself, and the record headers to every recorded response; returns
    ``document`` (changed in place)."""
    for path, operation in _operations(document):
        responses: dict[str, Any] = operation["responses"]
        if path in PROBES:
            for status in _PROBE_RESPONSES:
                responses.setdefault(status, _ref(PIPELINE_RESPONSES[status]))
            continue
        for status, name in PIPELINE_RESPONSES.items():
            responses.setdefault(status, _ref(name))
        if re.search(r"{\w+}", path):
            # A path parameter value that matches no route (an encoded "/" in an id, say)
            # reaches no handler: the pipeline answers 404 itself.
            responses.setdefault("404", _ref("NotFound"))
        if "requestBody" in operation:
            for status, name in _BODY_RESPONSES.items():
                responses.setdefault(status, _ref(name))
        if operation.get("security"):
            responses.setdefault("401", _ref(_UNAUTHENTICATED))
        for status, response in responses.items():
            headers = _resolve(document, response).setdefault("headers", {})
            for name, header in (
                _MAYBE_RECORD_HEADERS if status == "503" else _RECORD_HEADERS
            ).items():
                headers.setdefault(name, header)
    return document
