"""JSON in and out for the control API's HTTP triggers: one way to answer, one way to refuse."""

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func

from core.control import RequestError


def json_response(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def answer(success: int, work: Callable[[], Any]) -> func.HttpResponse:
    """Run an operation: its result with ``success``, or the refusal's status and reasons."""
    try:
        return json_response(success, work())
    except RequestError as exc:
        return json_response(exc.status, exc.body())
