"""Typed views of what ACS and Event Grid post, read tolerantly.

Each class takes only the fields its handlers need, accepts older field names, and ignores
everything else: real payloads carry fields the specs do not list. A payload that lacks a
field a handler needs raises ``EventFormatError``, which the HTTP layer turns into a 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREFIX = "Microsoft.Communication."

# The webhook events of the service's event table (wire names), plus the ones the REST spec adds.
WEBHOOK_EVENTS = (
    "CallConnected",
    "CallDisconnected",
    "ConnectFailed",
    "CallTransferAccepted",
    "CallTransferFailed",
    "AddParticipantSucceeded",
    "AddParticipantFailed",
    "CancelAddParticipantSucceeded",
    "CancelAddParticipantFailed",
    "RemoveParticipantSucceeded",
    "RemoveParticipantFailed",
    "ParticipantsUpdated",
    "PlayCompleted",
    "PlayFailed",
    "PlayCanceled",
    "RecognizeCompleted",
    "RecognizeCanceled",
    "RecognizeFailed",
    "RecordingStateChanged",
    "ContinuousDtmfRecognitionToneReceived",
    "ContinuousDtmfRecognitionToneFailed",
    "ContinuousDtmfRecognitionStopped",
    "SendDtmfTonesCompleted",
    "SendDtmfTonesFailed",
)
EXTRA_WEBHOOK_EVENTS = ("PlayStarted", "CreateCallFailed", "AnswerFailed", "HoldFailed", "StartRecordingFailed")


class EventFormatError(ValueError):
    """A payload lacks something its handler needs."""


def _text(value: Any) -> str | None:
    """A string field, or None when absent or of another JSON type (a tolerant reader never crashes on it)."""
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def raw_id(identifier: Any) -> str | None:
    """The raw id of a CommunicationIdentifierModel, from rawId or the kind-specific part."""
    if not isinstance(identifier, dict):
        return None
    if identifier.get("rawId"):
        return str(identifier["rawId"])
    if isinstance(identifier.get("phoneNumber"), dict) and identifier["phoneNumber"].get("value"):
        return "4:" + identifier["phoneNumber"]["value"]
    if isinstance(identifier.get("communicationUser"), dict) and identifier["communicationUser"].get("id"):
        return str(identifier["communicationUser"]["id"])
    if isinstance(identifier.get("microsoftTeamsUser"), dict) and identifier["microsoftTeamsUser"].get("userId"):
        return "8:orgid:" + identifier["microsoftTeamsUser"]["userId"]
    return None


@dataclass(frozen=True)
class ResultInfo:
    code: int | None = None
    sub_code: int | None = None
    message: str = ""

    @classmethod
    def of(cls, data: dict[str, Any]) -> ResultInfo:
        info = data.get("resultInformation") or data.get("resultInfo") or {}
        if not isinstance(info, dict):
            return cls()
        return cls(_int(info.get("code")), _int(info.get("subCode")), str(info.get("message") or ""))


@dataclass(frozen=True)
class CallEvent:
    """One mid-call CloudEvent."""

    id: str
    type: str  # short name, e.g. "PlayCompleted"
    call_connection_id: str
    server_call_id: str
    correlation_id: str
    operation_context: str | None
    result: ResultInfo
    data: dict[str, Any] = field(repr=False)
    time: str | None = None

    # -- fields some events carry ----------------------------------------------------------

    @property
    def participant(self) -> str | None:
        return raw_id(self.data.get("participant"))

    @property
    def participants(self) -> list[str]:
        out = []
        listed = self.data.get("participants")
        for p in listed if isinstance(listed, list) else []:
            rid = raw_id(p.get("identifier") if isinstance(p, dict) else None)
            if rid:
                out.append(rid)
        return out

    @property
    def tone(self) -> str | None:
        return _text(self.data.get("tone"))

    @property
    def sequence_id(self) -> int | None:
        return _int(self.data.get("sequenceId"))

    @property
    def recognition(self) -> tuple[str | None, list[str], str | None, str | None]:
        """(recognitionType, tones, choice label, speech text)."""
        data = self.data

        def tones_in(result: Any) -> list[str]:
            listed = _object(result).get("tones")
            return [t for t in listed if isinstance(t, str)] if isinstance(listed, list) else []

        kind = _text(data.get("recognitionType"))
        # Older payloads collected tones under collectTonesResult.
        tones = tones_in(data.get("dtmfResult")) or tones_in(data.get("collectTonesResult"))
        label = _text(_object(data.get("choiceResult")).get("label"))
        speech = _text(_object(data.get("speechResult")).get("speech"))
        return kind, tones, label, speech

    @property
    def recognized_phrase(self) -> str | None:
        return _text(_object(self.data.get("choiceResult")).get("recognizedPhrase"))

    @property
    def recording_id(self) -> str | None:
        return _text(self.data.get("recordingId"))

    @property
    def recording_state(self) -> str | None:
        return _text(self.data.get("state"))

    @property
    def invitation_id(self) -> str | None:
        return _text(self.data.get("invitationId"))


def parse_call_event(event: Any) -> CallEvent:
    """Read one CloudEvent; require only what every handler needs."""
    if not isinstance(event, dict):
        raise EventFormatError("each event must be a JSON object")
    missing = [k for k in ("id", "type", "data") if not event.get(k)]
    if missing:
        raise EventFormatError(f"event is missing {', '.join(missing)}")
    data = event["data"]
    if not isinstance(data, dict):
        raise EventFormatError("event data must be an object")
    kind = str(event["type"])
    short = kind[len(PREFIX) :] if kind.startswith(PREFIX) else kind
    call_connection_id = _text(data.get("callConnectionId")) or _from_subject(
        event.get("subject") or event.get("source")
    )
    if not call_connection_id:
        raise EventFormatError(f"{short} event {event['id']} has no callConnectionId")
    # Fields of another JSON type than the contract's are read as absent: such an event is handled (or ignored)
    # like any other, never a handler's crash that the sender would redeliver forever.
    return CallEvent(
        id=str(event["id"]),
        type=short,
        call_connection_id=call_connection_id,
        server_call_id=_text(data.get("serverCallId")) or "",
        correlation_id=_text(data.get("correlationId")) or "",
        operation_context=_text(data.get("operationContext")),
        result=ResultInfo.of(data),
        data=data,
        time=_text(event.get("time")),
    )


def _from_subject(subject: Any) -> str | None:
    if isinstance(subject, str) and "callConnections/" in subject:
        return subject.rsplit("callConnections/", 1)[1].split("/")[0] or None
    return None


@dataclass(frozen=True)
class IncomingCall:
    """The data of Microsoft.Communication.IncomingCall (Event Grid)."""

    event_id: str
    to: str
    caller: str
    incoming_call_context: str
    server_call_id: str
    correlation_id: str
    caller_display_name: str
    sip_headers: dict[str, str]
    voip_headers: dict[str, str]
    event_time: str | None

    @classmethod
    def parse(cls, event_id: str, data: Any, event_time: str | None = None) -> IncomingCall:
        if not isinstance(data, dict):
            raise EventFormatError("IncomingCall data must be an object")
        to, caller = raw_id(data.get("to")), raw_id(data.get("from"))
        context = data.get("incomingCallContext")
        if not to or not caller or not context:
            raise EventFormatError("IncomingCall needs to, from and incomingCallContext")
        custom = data.get("customContext") or {}
        return cls(
            event_id=event_id,
            to=to,
            caller=caller,
            incoming_call_context=str(context),
            server_call_id=str(data.get("serverCallId") or ""),
            correlation_id=str(data.get("correlationId") or ""),
            caller_display_name=str(data.get("callerDisplayName") or ""),
            sip_headers={str(k): str(v) for k, v in (custom.get("sipHeaders") or {}).items()},
            voip_headers={str(k): str(v) for k, v in (custom.get("voipHeaders") or {}).items()},
            event_time=event_time,
        )


@dataclass(frozen=True)
class RecordingChunk:
    document_id: str
    index: int
    content_location: str
    metadata_location: str
    delete_location: str | None
    end_reason: str | None


@dataclass(frozen=True)
class RecordingFileStatus:
    """The data of Microsoft.Communication.RecordingFileStatusUpdated (Event Grid)."""

    event_id: str
    subject: str
    chunks: list[RecordingChunk]
    start_time: str | None
    duration_ms: int | None
    content_type: str | None
    channel_type: str | None
    format_type: str | None

    @classmethod
    def parse(cls, event_id: str, subject: str, data: Any) -> RecordingFileStatus:
        if not isinstance(data, dict):
            raise EventFormatError("RecordingFileStatusUpdated data must be an object")
        info = data.get("recordingStorageInfo") or {}
        raw_chunks = info.get("recordingChunks") if isinstance(info, dict) else None
        if not raw_chunks:
            raise EventFormatError("RecordingFileStatusUpdated has no recordingStorageInfo.recordingChunks")
        chunks = []
        for chunk in raw_chunks:
            if not chunk.get("contentLocation") or not chunk.get("metadataLocation"):
                raise EventFormatError("a recording chunk needs contentLocation and metadataLocation")
            chunks.append(
                RecordingChunk(
                    document_id=str(chunk.get("documentId") or ""),
                    index=int(chunk.get("index") or 0),
                    content_location=chunk["contentLocation"],
                    metadata_location=chunk["metadataLocation"],
                    delete_location=chunk.get("deleteLocation"),
                    end_reason=chunk.get("endReason"),
                )
            )
        return cls(
            event_id=event_id,
            subject=subject,
            chunks=chunks,
            start_time=data.get("recordingStartTime"),
            duration_ms=data.get("recordingDurationMs"),
            content_type=data.get("recordingContentType"),
            channel_type=data.get("recordingChannelType"),
            format_type=data.get("recordingFormatType"),
        )
