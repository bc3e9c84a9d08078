"""Outbound use cases over the control API: campaigns (bounded concurrency) and number-masking sessions."""

import azure.functions as func

from blueprints._http import route_value
from blueprints._json_api import answer
from core.outbound import control
from core.services import get_services
from handlers import campaigns, masking

bp = func.Blueprint()
KEY = func.AuthLevel.FUNCTION


@bp.function_name("start_campaign")
@bp.route(route="campaigns", methods=["POST"], auth_level=KEY)
def start_campaign(req: func.HttpRequest) -> func.HttpResponse:
    return answer(
        201,
        lambda: campaigns.start_campaign(control.parse(control.StartCampaign, req.get_body()), get_services()),
        req,
    )


@bp.function_name("get_campaign")
@bp.route(route="campaigns/{campaign_id}", methods=["GET"], auth_level=KEY)
def get_campaign(req: func.HttpRequest) -> func.HttpResponse:
    return answer(200, lambda: campaigns.get_campaign(route_value(req, "campaign_id"), get_services()))


@bp.function_name("create_masking_session")
@bp.route(route="masking", methods=["POST"], auth_level=KEY)
def create_masking_session(req: func.HttpRequest) -> func.HttpResponse:
    return answer(
        201,
        lambda: masking.create_session(control.parse(control.MaskingSessionRequest, req.get_body()), get_services()),
        req,
    )
