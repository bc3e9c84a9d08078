"""RecordingFileStatusUpdated: a recording's files are ready at ACS.

The streaming copy into Blob Storage (verified, per chunk, per participant) is the recordings
issue's work; here the event is parsed, checked and dispatched, and its chunks are reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.events import RecordingFileStatus

log = logging.getLogger("handlers.recordings")


@dataclass(frozen=True)
class RecordingReport:
    event_id: str
    chunks: int
    documents: tuple[str, ...]


def handle_recording_file_status(status: RecordingFileStatus) -> RecordingReport:
    for chunk in status.chunks:
        log.info("recording chunk %d (%s) ready at %s", chunk.index, chunk.document_id, chunk.content_location)
    return RecordingReport(status.event_id, len(status.chunks), tuple(c.document_id for c in status.chunks))
