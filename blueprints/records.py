"""Call records: the Event Grid trigger for the calling events, and the records API
(GET /api/records, GET /api/records/{server_call_id}; function-key auth)."""

import logging

import azure.functions as func

from blueprints._http import route_value
from blueprints._json_api import answer
from core.calls.events import EventFormatError, read_event
from core.platform.observability import call_scope
from core.records.events import EVENT_TYPES, CallRecordEvent
from core.services import get_services
from handlers import records

bp = func.Blueprint()
log = logging.getLogger("blueprints.records")
TYPES = {"Microsoft.Communication." + t for t in EVENT_TYPES}


@bp.function_name("call_records")
@bp.event_grid_trigger(arg_name="event")
def call_records(event: func.EventGridEvent) -> None:
    if event.event_type not in TYPES:
        log.warning("ignored %s %s: this function takes %s", event.event_type, event.id, ", ".join(EVENT_TYPES))
        return
    try:
        parsed = read_event(
            CallRecordEvent.parse, event.id, event.event_type, event.event_time, event.get_json(), event.subject
        )
    except EventFormatError as exc:
        # Redelivery cannot fix a malformed event; log it and let it go (returning acknowledges it).
        log.error("malformed %s %s: %s", event.event_type, event.id, exc)
        return
    correlation = parsed.fields.get("correlation_id")
    with call_scope(parsed.type, server_call_id=parsed.server_call_id, correlation_id=correlation):
        records.handle_call_record_event(parsed, get_services())


@bp.function_name("list_records")
@bp.route(route="records", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_records(req: func.HttpRequest) -> func.HttpResponse:
    return answer(200, lambda: records.list_records(req.params.get("limit"), get_services()))


@bp.function_name("get_record")
@bp.route(route="records/{server_call_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_record(req: func.HttpRequest) -> func.HttpResponse:
    # A server call id holding "/" comes percent-encoded (%2F), which the Functions host leaves encoded.
    return answer(200, lambda: records.get_record(route_value(req, "server_call_id"), get_services()))
