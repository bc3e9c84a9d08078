"""Event Grid trigger for Microsoft.Communication.IncomingCall."""

import logging

import azure.functions as func

from core.calls.events import EventFormatError, IncomingCall, read_event
from core.platform.observability import call_scope
from core.services import get_services
from handlers.incoming_call import handle_incoming_call

bp = func.Blueprint()
log = logging.getLogger("blueprints.incoming_calls")


@bp.function_name("incoming_call")
@bp.event_grid_trigger(arg_name="event")
def incoming_call(event: func.EventGridEvent) -> None:
    if event.event_type != "Microsoft.Communication.IncomingCall":
        log.warning("ignored %s %s: this function takes IncomingCall only", event.event_type, event.id)
        return
    try:
        call = read_event(IncomingCall.parse, event.id, event.get_json(), event.event_time)
    except EventFormatError as exc:
        # Redelivery cannot fix a malformed event; log it and let it go (returning acknowledges it).
        log.error("malformed IncomingCall %s: %s", event.id, exc)
        return
    with call_scope("IncomingCall", server_call_id=call.server_call_id, correlation_id=call.correlation_id):
        outcome = handle_incoming_call(call, get_services())
        log.info("IncomingCall %s: %s by rule %s (%s)", event.id, outcome.action, outcome.rule, outcome.detail)
