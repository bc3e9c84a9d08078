"""HTTP trigger for every mid-call callback: POST /api/callbacks/{call_ref}?sig=..."""

import json

import azure.functions as func

import handlers.callbacks  # noqa: F401 - registers the event handlers in the dispatch table
from core.dispatch import handle_callback
from core.runtime import get_runtime

bp = func.Blueprint()


@bp.function_name("callbacks")
@bp.route(route="callbacks/{call_ref}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def callbacks(req: func.HttpRequest) -> func.HttpResponse:
    reply = handle_callback(
        req.route_params.get("call_ref", ""), req.params.get("sig"), dict(req.headers), req.get_body(), get_runtime()
    )
    return func.HttpResponse(
        json.dumps(reply.body), status_code=reply.status, headers=reply.headers, mimetype="application/json"
    )
