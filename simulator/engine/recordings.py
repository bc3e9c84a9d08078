"""Recording: start (with its format and channel checks), get, pause, resume and stop.

The files a stopped recording leaves are made in ``recording_files``; this module keeps the recording's state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..recording import MAX_UNMIXED_CHANNELS
from .model import Recording, ServerCall, new_recording_id
from .recording_files import RecordingFiles

VALID_FORMATS = {
    ("audio", "mixed", "wav"),
    ("audio", "mixed", "mp3"),
    ("audio", "unmixed", "wav"),
    ("audioVideo", "mixed", "mp4"),
}


class Recordings(RecordingFiles):
    """The recording operations, and RecordingStateChanged after each change."""

    async def op_start_recording(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call = self._call_to_record(body)
        if call.state != "established":
            raise errors.AcsError(400, "8501", "Recording can start only on an established call.")
        if any(not r.stopped for r in call.recordings):
            raise errors.AcsError(400, "8563", "A recording is already in progress on this call.")
        content, channel, fmt = _format_of(body)
        ordering, affinity = self._channels_of(body, channel)
        callback = (
            self._callback(body["recordingStateCallbackUri"], "recordingStateCallbackUri")
            if body.get("recordingStateCallbackUri")
            else None
        )
        recording = Recording(
            id=new_recording_id(call.id),
            call=call,
            content_type=content,
            channel_type=channel,
            format_type=fmt,
            callback_uri=callback,
            ordering=ordering,
            affinity=affinity,
            external_storage=body.get("externalStorage"),
        )
        paused = bool(body.get("pauseOnStart"))
        recording.state = "inactive" if paused else "active"
        if not paused:
            recording.intervals.append([time.monotonic(), None])
        call.recordings.append(recording)
        self.recordings[recording.id] = recording
        call.timeline.add("call", f"recording {channel} {content} {fmt} starts" + (" paused" if paused else ""))
        self.spawn(self._recording_state(recording), "recording-state")
        return 200, {
            "recordingId": recording.id,
            "recordingState": recording.state,
            "recordingKind": "azureCommunicationServices",
        }

    def _call_to_record(self, body: dict[str, Any]) -> ServerCall:
        """The call a StartRecording names: by its connection, or a locator (server call, group call, room)."""
        if body.get("callConnectionId"):
            return self.connection(body["callConnectionId"]).call
        if not isinstance(body.get("callLocator"), dict):
            raise errors.bad_request("callLocator or callConnectionId is required.", "callLocator")
        locator = body["callLocator"]
        call = self.calls.get(locator.get("serverCallId") or "")
        if call is None and (locator.get("groupCallId") or locator.get("roomId")):
            # Group calls and rooms are found by their ids, as Connect finds them.
            call = next(
                (
                    c
                    for c in self.calls.values()
                    if c.state != "ended"
                    and (
                        (locator.get("groupCallId") and c.group_call_id == locator["groupCallId"])
                        or (locator.get("roomId") and c.room_id == locator["roomId"])
                    )
                ),
                None,
            )
        if call is None:
            raise errors.AcsError(404, "8522", "The call to record was not found.", target="callLocator")
        return call

    def _channels_of(self, body: dict[str, Any], channel: str) -> tuple[list[str], dict[str, int]]:
        """audioChannelParticipantOrdering and channelAffinity, checked as the service checks them."""
        ordering = [
            self._identifier(m, "audioChannelParticipantOrdering")
            for m in body.get("audioChannelParticipantOrdering") or []
        ]
        affinity: dict[str, int] = {}
        for entry in body.get("channelAffinity") or []:
            raw = self._identifier((entry or {}).get("participant"), "channelAffinity.participant")
            index = entry.get("channel", len(affinity))
            if not isinstance(index, int) or not 0 <= index < MAX_UNMIXED_CHANNELS:
                raise errors.bad_request(
                    f"channelAffinity.channel must be 0..{MAX_UNMIXED_CHANNELS - 1}.", "channelAffinity"
                )
            if index in affinity.values():
                raise errors.bad_request("Two participants cannot share a channel.", "channelAffinity")
            affinity[raw] = index
        if affinity and channel != "unmixed":
            raise errors.bad_request("channelAffinity applies only to unmixed recordings.", "channelAffinity")
        return ordering, affinity

    async def _recording_state(self, recording: Recording) -> None:
        """RecordingStateChanged, on the first leg that can hear it."""
        await asyncio.sleep(0.005)
        for conn in recording.call.connections:
            if conn.state in ("connected", "transferring") or recording.stopped:
                self.emit(
                    conn,
                    "RecordingStateChanged",
                    {
                        "recordingId": recording.id,
                        "state": recording.state,
                        "startDateTime": recording.started_iso,
                        "recordingKind": "azureCommunicationServices",
                        "resultInformation": rc.info(rc.RECORDING_STATE),
                    },
                    url=recording.callback_uri,
                    include_context=False,
                )
                return

    def recording(self, recording_id: str) -> Recording:
        recording = self.recordings.get(recording_id)
        if recording is None or recording.stopped:
            raise errors.recording_not_found(recording_id)
        return recording

    async def op_get_recording(self, recording_id: str) -> tuple[int, dict[str, Any]]:
        recording = self.recording(recording_id)
        return 200, {
            "recordingId": recording.id,
            "recordingState": recording.state,
            "recordingKind": "azureCommunicationServices",
        }

    async def op_pause_recording(self, recording_id: str, pause: bool) -> tuple[int, None]:
        recording = self.recording(recording_id)
        wanted = "inactive" if pause else "active"
        if recording.state != wanted:
            recording.state = wanted
            if pause and recording.intervals and recording.intervals[-1][1] is None:
                recording.intervals[-1][1] = time.monotonic()
            if not pause:
                recording.intervals.append([time.monotonic(), None])
            recording.call.timeline.add("call", f"recording {'paused' if pause else 'resumed'}")
            self.spawn(self._recording_state(recording), "recording-state")
        return 202, None

    async def op_stop_recording(self, recording_id: str) -> tuple[int, None]:
        recording = self.recording(recording_id)
        self._stop_recording(recording, reason="SessionEnded")
        return 204, None

    def _stop_recording(self, recording: Recording, reason: str) -> None:
        if recording.intervals and recording.intervals[-1][1] is None:
            recording.intervals[-1][1] = time.monotonic()
        recording.state = "inactive"
        recording.stopped = True
        recording.call.timeline.add("call", "recording stops")
        self.spawn(self._recording_state(recording), "recording-state")
        self.spawn(self._produce_files(recording, reason), "recording-files")


def _format_of(body: dict[str, Any]) -> tuple[str, str, str]:
    """Content, channel and format types, with ACS's defaults; a combination ACS lacks is a 400."""
    content = body.get("recordingContentType", "audio")
    channel = body.get("recordingChannelType", "mixed")
    fmt = body.get(
        "recordingFormatType", "wav" if channel == "unmixed" else ("mp4" if content == "audioVideo" else "mp3")
    )
    if (content, channel, fmt) not in VALID_FORMATS:
        raise errors.bad_request(
            f"The combination content={content}, channel={channel}, format={fmt} is not supported.",
            "recordingFormatType",
        )
    return content, channel, fmt
