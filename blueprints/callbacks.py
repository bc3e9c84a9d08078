"""HTTP trigger for every mid-call callback: POST /api/callbacks/{call_ref}?sig=..."""

import json
import time

import azure.functions as func

from blueprints._http import route_value
from core.calls.dispatch import handle_callback
from core.platform.observability import server_timing, timings
from core.services import get_services
from handlers.callbacks import MID_CALL_EVENTS

bp = func.Blueprint()


@bp.function_name("callbacks")
@bp.route(route="callbacks/{call_ref}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def callbacks(req: func.HttpRequest) -> func.HttpResponse:
    # Server-Timing: the app's time on this callback ("handler"), and within it the time spent waiting on ACS ("acs")
    # and on Table Storage ("storage"). Benchmarks read it (bench/callback_latency.py); it carries no call data.
    started = time.perf_counter()
    call_ref, sig = route_value(req, "call_ref", ""), req.params.get("sig")
    with timings() as spent:
        # The body is read only after its declared size is checked (the host caps what it reads before that).
        reply = handle_callback(call_ref, sig, dict(req.headers), req.get_body, get_services(), MID_CALL_EVENTS)
    spent = {"handler": (time.perf_counter() - started) * 1000, **spent}
    return func.HttpResponse(
        json.dumps(reply.body),
        status_code=reply.status,
        headers={**reply.headers, "Server-Timing": server_timing(spent)},
        mimetype="application/json",
    )
