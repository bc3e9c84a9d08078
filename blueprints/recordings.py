"""Event Grid trigger for Microsoft.Communication.RecordingFileStatusUpdated."""

import logging

import azure.functions as func

from core.calls.events import EventFormatError, RecordingFileStatus, read_event
from core.platform.observability import call_scope
from core.services import get_services
from handlers.recordings import handle_recording_file_status, server_call_id_of

bp = func.Blueprint()
log = logging.getLogger("blueprints.recordings")


@bp.function_name("recording_file_status")
@bp.event_grid_trigger(arg_name="event")
def recording_file_status(event: func.EventGridEvent) -> None:
    if event.event_type != "Microsoft.Communication.RecordingFileStatusUpdated":
        log.warning("ignored %s %s: this function takes RecordingFileStatusUpdated only", event.event_type, event.id)
        return
    try:
        status = read_event(RecordingFileStatus.parse, event.id, event.subject or "", event.get_json())
    except EventFormatError as exc:
        # Redelivery cannot fix a malformed event; log it and let it go (returning acknowledges it).
        log.error("malformed RecordingFileStatusUpdated %s: %s", event.id, exc)
        return
    with call_scope("RecordingFileStatusUpdated", server_call_id=server_call_id_of(status.subject)):
        report = handle_recording_file_status(status, get_services())
        log.info("recording event %s: %d chunk(s) copied", event.id, len(report.chunks))
