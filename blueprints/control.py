"""The control API: HTTP triggers with function-key auth, JSON in and out (see core/outbound/control.py)."""

import azure.functions as func

from blueprints._http import route_value
from blueprints._json_api import answer, json_response
from core.outbound import control
from core.services import get_services
from handlers import control as ops

bp = func.Blueprint()
KEY = func.AuthLevel.FUNCTION


@bp.function_name("place_call")
@bp.route(route="calls", methods=["POST"], auth_level=KEY)
def place_call(req: func.HttpRequest) -> func.HttpResponse:
    return answer(201, lambda: ops.place_call(control.parse(control.PlaceCall, req.get_body()), get_services()), req)


@bp.function_name("connect_call")
@bp.route(route="connections", methods=["POST"], auth_level=KEY)
def connect_call(req: func.HttpRequest) -> func.HttpResponse:
    return answer(
        201, lambda: ops.connect_call(control.parse(control.ConnectCall, req.get_body()), get_services()), req
    )


@bp.function_name("get_call")
@bp.route(route="calls/{call_connection_id}", methods=["GET"], auth_level=KEY)
def get_call(req: func.HttpRequest) -> func.HttpResponse:
    return answer(200, lambda: ops.get_call(route_value(req, "call_connection_id"), get_services()))


@bp.function_name("participants")
@bp.route(route="calls/{call_connection_id}/participants/{participant?}", methods=["GET"], auth_level=KEY)
def participants(req: func.HttpRequest) -> func.HttpResponse:
    call, who = route_value(req, "call_connection_id"), route_value(req, "participant")
    if who:
        return answer(200, lambda: ops.get_participant(call, who, get_services()))
    return answer(200, lambda: ops.list_participants(call, get_services()))


@bp.function_name("call_action")
@bp.route(route="calls/{call_connection_id}/{action}", methods=["POST"], auth_level=KEY)
def call_action(req: func.HttpRequest) -> func.HttpResponse:
    call, action = route_value(req, "call_connection_id"), route_value(req, "action")
    return answer(202, lambda: ops.call_action(call, action, req.get_body(), get_services()), req)


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(200, control.openapi())
