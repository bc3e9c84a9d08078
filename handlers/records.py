"""Call records: Event Grid's calling events and the flows' outcomes into one record per call,
and the two reads of the records API (recent calls, one call). See core/records/."""

from __future__ import annotations

import logging
from typing import Any

from core.calls.state import CallState
from core.outbound.control import RequestError
from core.outbound.responses import CallRecord, RecordList, RecordSummary
from core.records.events import CallRecordEvent, flow_outcome
from core.services import Services

log = logging.getLogger("handlers.records")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def handle_call_record_event(event: CallRecordEvent, services: Services) -> dict[str, Any]:
    """CallStarted, CallEnded, CallParticipantAdded or CallParticipantRemoved: into the call's record."""
    record = services.records.add_event(event)
    log.info(
        "%s %s recorded: call %s, %d participant(s)",
        event.type,
        event.id,
        record["status"],
        len(record["participants"]),
    )
    return record


def record_flow_outcome(state: CallState, services: Services) -> None:
    """When a call ends for the app (a call-ended hook, ``core.services``): its flow's outcome into the call's record
    (rerun: same row)."""
    if not state.server_call_id:
        log.info("call %s ended with no server call id: no record to add its outcome to", state.call_ref)
        return
    services.records.add_flow(state.server_call_id, flow_outcome(state))
    log.info("flow outcome of %s recorded", state.call_ref)


def parse_limit(value: str | None) -> int:
    if value in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise RequestError(
            f"invalid request: limit {value!r}",
            [{"field": "limit", "message": f"an integer from 1 to {MAX_LIMIT}"}],
        )
    return limit


def list_records(limit: str | None, services: Services) -> dict[str, Any]:
    """GET /api/records?limit=N: the latest calls, newest first."""
    summaries = services.records.recent(parse_limit(limit))
    return RecordList(records=[RecordSummary.of(s) for s in summaries]).dump()


def get_record(server_call_id: str, services: Services) -> dict[str, Any]:
    """GET /api/records/{server_call_id}: one call's full record."""
    record = services.records.get(server_call_id)
    if record is None:
        raise RequestError(f"no record of call {server_call_id!r}", status=404)
    return CallRecord.of(record).dump()
