"""JSON from outside the app, read within bounds: a body's declared size before the body, then a parse
that cannot recurse without end.

``json.loads`` recurses once per nesting level: a body of 100,000 ``[`` raises ``RecursionError``, which
no handler expects (a 500, and a sender that retries it forever). ``parse_json`` answers that, and any
nesting deeper than ``max_depth``, with ``JsonError`` (400 and the reason), as it answers a body that
is not JSON. Depth is only measured when the body holds more brackets than the limit, so a usual body
costs two ``bytes.count`` more than ``json.loads``.

Every JSON entry point of the app goes through here: the callback endpoint (``core/calls/dispatch.py``) and
the control API (``core.outbound.control.parse``). Event Grid triggers get events the host has parsed already.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 32  # ACS events nest 5 levels, the control API's bodies 4


class JsonError(ValueError):
    """A body that cannot be taken: ``status`` (400, 411 or 413) and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length a request declares (header names in any case), None when it declares none; a value that
    is not a length is refused (400)."""
    value = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise JsonError(400, "Content-Length is not a length")
    return int(value)


CHUNKED_REFUSAL = (
    "send the body with a Content-Length: the Functions host passes no body of a chunked request to the function"
)


def check_length(headers: Mapping[str, str], max_bytes: int) -> None:
    """Refuse (413) a request whose declared size exceeds ``max_bytes``, before its body is looked at; and (411) a
    chunked one, whose body the Functions host drops (it reads a body only when Content-Length > 0,
    Azure/azure-functions-host#7930): better a clear refusal than a body that looks empty."""
    length = declared_length(headers)
    if length is None and any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers.items()):
        raise JsonError(411, CHUNKED_REFUSAL)
    if length is not None and length > max_bytes:
        raise JsonError(413, f"body of {length} bytes exceeds {max_bytes}")


def parse_json(body: bytes | str, max_depth: int = MAX_DEPTH, max_bytes: int | None = None) -> Any:
    """Parse a JSON body: 413 beyond ``max_bytes``, 400 when it is not JSON or nests deeper than ``max_depth``."""
    if max_bytes is not None and len(body) > max_bytes:
        raise JsonError(413, f"body of {len(body)} bytes exceeds {max_bytes}")
    try:
        value = json.loads(body)
    except RecursionError:
        raise JsonError(400, f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise JsonError(400, f"body is not JSON: {exc}") from None
    opening = (b"[", b"{") if isinstance(body, bytes | bytearray) else ("[", "{")
    if body.count(opening[0]) + body.count(opening[1]) > max_depth and depth(value, max_depth) > max_depth:
        raise JsonError(400, f"JSON nested deeper than {max_depth} levels")
    return value


def depth(value: Any, limit: int | None = None) -> int:
    """How deep arrays and objects nest in parsed JSON (a scalar is 0), without recursion; stops once past
    ``limit``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if limit is not None and deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest
