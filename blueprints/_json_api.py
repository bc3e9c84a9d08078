"""JSON in and out for the control API's HTTP triggers: one way to answer, one way to refuse.

A body is refused before it is parsed when its declared size is over ``MAX_BODY_BYTES`` (413; pass ``req``), and
a body nested too deeply is a 400 with the reason, never a 500 (``core/platform/jsonsafe.py``)."""

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from core.outbound.control import RequestError
from core.outbound.responses import ErrorAnswer
from core.platform.jsonsafe import JsonError, check_length

log = logging.getLogger("blueprints.api")
MAX_BODY_BYTES = 256 * 1024  # the control API's largest body (a campaign of 1,000 targets) is under 100 KiB


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers, mimetype="application/json")


def _refusal(status: int, reason: str) -> func.HttpResponse:
    log.warning("control API request refused with %d: %s", status, reason)
    return json_response(status, ErrorAnswer(error=reason, fields=[]).dump())


def answer(success: int, work: Callable[[], Any], req: func.HttpRequest | None = None) -> func.HttpResponse:
    """Run an operation: its result with ``success``, or the refusal's status and reasons. With ``req``, a body
    declared larger than ``MAX_BODY_BYTES`` is refused first, without being read."""
    try:
        if req is not None:
            check_length(dict(req.headers), MAX_BODY_BYTES)
        return json_response(success, work())
    except RequestError as exc:
        return json_response(exc.status, exc.body(), getattr(exc, "headers", None) or None)
    except JsonError as exc:
        return _refusal(exc.status, exc.reason)
