"""Outbound use cases over the control API: campaigns (bounded concurrency) and number-masking sessions.

Importing this blueprint registers the campaigns' call-ended hook (handlers/campaigns.py).
"""

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func

from core import control
from core.control import RequestError
from core.runtime import get_runtime
from handlers import campaigns, masking

bp = func.Blueprint()
KEY = func.AuthLevel.FUNCTION


def _json(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _answer(success: int, work: Callable[[], Any]) -> func.HttpResponse:
    try:
        return _json(success, work())
    except RequestError as exc:
        return _json(exc.status, exc.body())


@bp.function_name("start_campaign")
@bp.route(route="campaigns", methods=["POST"], auth_level=KEY)
def start_campaign(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(
        201, lambda: campaigns.start_campaign(control.parse(control.StartCampaign, req.get_body()), get_runtime())
    )


@bp.function_name("get_campaign")
@bp.route(route="campaigns/{campaign_id}", methods=["GET"], auth_level=KEY)
def get_campaign(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(200, lambda: campaigns.get_campaign(req.route_params["campaign_id"], get_runtime()))


@bp.function_name("create_masking_session")
@bp.route(route="masking", methods=["POST"], auth_level=KEY)
def create_masking_session(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(
        201,
        lambda: masking.create_session(control.parse(control.MaskingSessionRequest, req.get_body()), get_runtime()),
    )
