"""RecordingFileStatusUpdated: copy every chunk of the recording into the QA container.

Each chunk is streamed from ACS into Blob Storage, verified, and (for unmixed audio) split per
participant; see core/recordings/. A failure raises, so Event Grid delivers the event
again and the copy is redone. A URL that is not exactly on the allow-list (or, with bring-your-own-storage,
not in the QA container), a redirect, or a field that would make an odd blob name (an unknown format, a
traversal) is refused: logged, acknowledged, never fetched, never written, never retried.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from core.calls.events import RecordingFileStatus
from core.recordings.copier import CallInfo, ChunkResult
from core.recordings.errors import Refused

log = logging.getLogger("handlers.recordings")


class EventBusy(Exception):
    """Another delivery of this event holds its claim: the event must come again later."""


@dataclass(frozen=True)
class RecordingReport:
    event_id: str
    server_call_id: str
    chunks: list[ChunkResult] = field(default_factory=list)
    refused: str | None = None
    duplicate: bool = False


def server_call_id_of(subject: str) -> str:
    """``/recording/call/{callId}/serverCallId/{serverCallId}`` -> the server call id: the rest of the subject, since
    a server call id is standard base64 and may itself hold ``/``."""
    m = re.search(r"/serverCallId/(.+)$", subject or "")
    return m.group(1) if m else ""


def handle_recording_file_status(status: RecordingFileStatus, services: Any) -> RecordingReport:
    """Copy every chunk (or, with bring-your-own-storage, verify and index it where ACS wrote it);
    ``services.events`` (the duplicate filter) keeps a duplicate delivery from working at the same time as the first."""
    copier, store, events = services.copier, services.store, services.events
    in_place = services.settings.recording.storage == "byos"
    server_call_id = server_call_id_of(status.subject)
    claim = events.try_claim("recordings", status.event_id) if events is not None else "claimed"
    if claim == "done":
        log.info("duplicate recording event %s: already handled", status.event_id)
        return RecordingReport(status.event_id, server_call_id, duplicate=True)
    if claim == "busy":
        # Being copied by another delivery, or by a process that died less than a lease ago: acknowledging
        # it now would lose the recording if that copy never finishes. Fail, so Event Grid delivers it again.
        raise EventBusy(f"recording event {status.event_id} is being handled by another delivery; retry later")
    try:
        report = _copy_all(status, server_call_id, copier, store, in_place)
    except Exception:
        if events is not None:
            try:
                events.release("recordings", status.event_id)
            except Exception as exc:  # storage is down: the claim lapses with its lease
                log.warning("could not release the claim on recording event %s: %s", status.event_id, exc)
        raise
    if events is not None:
        events.done("recordings", status.event_id)
    return report


def _copy_all(
    status: RecordingFileStatus, server_call_id: str, copier: Any, store: Any, in_place: bool
) -> RecordingReport:
    state = store.find_by_server_call(server_call_id) if server_call_id else None
    info = CallInfo(
        server_call_id=server_call_id or "unknown-call",
        recording_id=state.recording_id if state else "",
        caller=state.caller if state else "",
        call_connection_id=state.call_connection_id if state else "",
    )
    results = []
    try:
        for chunk in sorted(status.chunks, key=lambda c: c.index):
            work = copier.index_in_place if in_place else copier.copy_chunk
            results.append(
                work(
                    chunk,
                    info,
                    start_time=status.start_time,
                    channel_type=status.channel_type,
                    format_type=status.format_type,
                    duration_ms=status.duration_ms,
                )
            )
    except Refused as exc:
        # Never fetched and never retried: a URL or a name like this is a misconfiguration or an attack.
        log.error("recording event %s refused: %s", status.event_id, exc)
        return RecordingReport(status.event_id, server_call_id, results, refused=str(exc))
    return RecordingReport(status.event_id, server_call_id, results)
