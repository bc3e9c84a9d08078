"""Typed views of what ACS and Event Grid post, read tolerantly.

Each class takes only the fields its handlers need, accepts older field names, and ignores
everything else: real payloads carry fields the specs do not list. A field of another JSON type
than the contract's, or longer than ACS documents, is read as absent (custom headers beyond ACS's
limits are ignored, as ACS ignores them). A payload that lacks a field a handler needs, or has it
in a shape no handler can use, raises ``EventFormatError``: the callback endpoint answers 400, and
an Event Grid trigger logs it and acknowledges it, since a redelivery cannot fix it. A reader never
raises anything else (``read_event`` makes sure), so no malformed event is redelivered forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("core.calls.events")

# Limits of what is read (longer is read as absent, or refused where a handler needs it).
MAX_EVENT_ID = 128  # ACS and Event Grid ids are GUIDs (36); a call's row keeps its latest 100 in the clear
MAX_EVENT_TYPE = 256
MAX_RAW_ID = 256  # raw ids of identifiers ("8:acs:<resource>_<guid>" is about 90)
MAX_TEXT = 1024  # operation contexts, correlation ids, server call ids...
MAX_TIME = 64  # an ISO 8601 time
MAX_DISPLAY_NAME = 256
MAX_INCOMING_CALL_CONTEXT = 64 * 1024
MAX_URL = 2048
MAX_CHUNKS = 1000  # recording chunks in one RecordingFileStatusUpdated
# Custom calling context, as ACS documents it: up to 5 custom SIP headers (X-MS-Custom-..., plus User-to-User), key
# up to 64 characters, value up to 256; VoIP headers: up to 1000 (the docs' figure), key 64, value 1024. A header
# beyond these is ignored (ACS parses only the first 5 valid SIP headers); the counts keep some room.
SIP_HEADERS = (16, 64, 256)  # (how many are read, key length, value length)
VOIP_HEADERS = (1000, 64, 1024)

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
    """A payload lacks something its handler needs, or has it in a shape no handler can use."""


def read_event[R](reader: Callable[..., R], *args: Any) -> R:
    """Run a reader: whatever it raises is a format error (a reader does no I/O: a redelivery would fail the same
    way), so a trigger that acknowledges ``EventFormatError`` never has an event redelivered forever."""
    try:
        return reader(*args)
    except EventFormatError:
        raise
    except Exception as exc:  # a shape no reader foresaw: still the event's fault, never a retry
        log.warning("reader %s failed on an unforeseen shape", getattr(reader, "__qualname__", reader), exc_info=True)
        raise EventFormatError(f"unreadable event ({type(exc).__name__})") from None


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A string field, or None when absent, of another JSON type or longer than ``limit`` (a tolerant reader
    never crashes on it, nor carries a megabyte along)."""
    return value if isinstance(value, str) and len(value) <= limit else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id_text(value: Any) -> str | None:
    """A raw id as ids are: printable ASCII, of a bounded length."""
    text = _text(value, MAX_RAW_ID)
    return text if text and text.isascii() and text.isprintable() else None


def raw_id(identifier: Any) -> str | None:
    """The raw id of a CommunicationIdentifierModel, from rawId or the kind-specific part (None when neither is
    a plausible id: another JSON type, too long, not printable ASCII). A ``4:`` id is not checked as a phone number
    here (a reader takes what ACS reports); turning one into a target does that (``core.calls.identifiers``)."""
    if not isinstance(identifier, dict):
        return None
    found = _id_text(identifier.get("rawId"))
    if found:
        return found
    phone, user, teams = (
        _object(identifier.get(k)) for k in ("phoneNumber", "communicationUser", "microsoftTeamsUser")
    )
    if _id_text(phone.get("value")):
        return _id_text("4:" + phone["value"])
    if _id_text(user.get("id")):
        return user["id"]
    if _id_text(teams.get("userId")):
        return _id_text("8:orgid:" + teams["userId"])
    return None


def _moment(value: Any) -> datetime | None:
    """An aware datetime, in the offset it was written with (UTC when it has none), from an ISO 8601 string (any
    fraction, ``Z`` or offset) or a datetime; None when absent or unreadable, or out of the calendar's range."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and 0 < len(value) <= MAX_TIME:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)  # an offset that moves it out of the calendar's range
    except (OverflowError, ValueError):
        return None
    return moment


def parse_time(value: Any) -> datetime | None:
    """A time in UTC, or None when absent or unreadable."""
    moment = _moment(value)
    return moment.astimezone(UTC) if moment is not None else None


def aware_time(value: Any) -> str | None:
    """A time as an ISO 8601 string with its offset (``Z`` for UTC), or None when absent or unreadable: what
    handlers compute with or build names from gets a time or nothing, never garbage."""
    moment = _moment(value)
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _headers(value: Any, limits: tuple[int, int, int]) -> dict[str, str]:
    """Custom headers: an object of strings (or a list of {key, value}, the SDKs' shape); any other shape is read
    as none, and entries beyond ACS's limits are ignored."""
    count, key_limit, value_limit = limits
    if isinstance(value, dict):
        pairs: Any = value.items()
    elif isinstance(value, list):
        pairs = ((_object(p).get("key"), _object(p).get("value")) for p in value)
    else:
        return {}
    out: dict[str, str] = {}
    for key, text in pairs:
        if len(out) >= count:
            break
        if isinstance(text, int | float) and not isinstance(text, bool):
            text = str(text)
        if _text(key, key_limit) and key.isprintable() and _text(text, value_limit) is not None:
            out[key] = text
    return out


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
        return cls(_int(info.get("code")), _int(info.get("subCode")), _text(info.get("message")) or "")


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
    # Until when this delivery could be replayed (its token's expiry plus the verifier's leeway, epoch seconds):
    # its id is remembered at least that long (``CallLedger.advance``). None: not known (the default applies).
    replayable_until: float | None = None

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


def parse_call_event(event: Any, replayable_until: float | None = None) -> CallEvent:
    """Read one CloudEvent; require only what every handler needs."""
    if not isinstance(event, dict):
        raise EventFormatError("each event must be a JSON object")
    missing = [k for k in ("id", "type", "data") if not event.get(k)]
    if missing:
        raise EventFormatError(f"event is missing {', '.join(missing)}")
    data, event_id, kind = event["data"], event["id"], event["type"]
    if not isinstance(data, dict):
        raise EventFormatError("event data must be an object")
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = str(event_id)
    if not isinstance(event_id, str) or len(event_id) > MAX_EVENT_ID:
        raise EventFormatError(f"event id must be a string of at most {MAX_EVENT_ID} characters")
    if not _text(kind, MAX_EVENT_TYPE):
        raise EventFormatError(f"event type must be a string of at most {MAX_EVENT_TYPE} characters")
    short = kind[len(PREFIX) :] if kind.startswith(PREFIX) else kind
    call_connection_id = _text(data.get("callConnectionId"), MAX_RAW_ID) or _from_subject(
        event.get("subject") or event.get("source")
    )
    if not call_connection_id:
        raise EventFormatError(f"{short} event {event_id} has no callConnectionId")
    # Fields of another JSON type than the contract's are read as absent: such an event is handled (or ignored)
    # like any other, never a handler's crash that the sender would redeliver forever.
    return CallEvent(
        id=event_id,
        type=short,
        call_connection_id=call_connection_id,
        server_call_id=_text(data.get("serverCallId")) or "",
        correlation_id=_text(data.get("correlationId")) or "",
        operation_context=_text(data.get("operationContext")),
        result=ResultInfo.of(data),
        data=data,
        time=_text(event.get("time"), MAX_TIME) if aware_time(event.get("time")) else None,
        replayable_until=replayable_until,
    )


def _from_subject(subject: Any) -> str | None:
    if isinstance(subject, str) and "callConnections/" in subject:
        return _text(subject.rsplit("callConnections/", 1)[1].split("/")[0], MAX_RAW_ID) or None
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
    def parse(cls, event_id: str, data: Any, event_time: Any = None) -> IncomingCall:
        if not isinstance(data, dict):
            raise EventFormatError("IncomingCall data must be an object")
        to, caller = raw_id(data.get("to")), raw_id(data.get("from"))
        context = _text(data.get("incomingCallContext"), MAX_INCOMING_CALL_CONTEXT)
        if not to or not caller or not context:
            raise EventFormatError("IncomingCall needs to, from and incomingCallContext (strings of sane lengths)")
        custom = _object(data.get("customContext"))
        return cls(
            event_id=event_id,
            to=to,
            caller=caller,
            incoming_call_context=context,
            server_call_id=_text(data.get("serverCallId")) or "",
            correlation_id=_text(data.get("correlationId")) or "",
            caller_display_name=(_text(data.get("callerDisplayName"), MAX_TEXT * 64) or "")[:MAX_DISPLAY_NAME],
            sip_headers=_headers(custom.get("sipHeaders"), SIP_HEADERS),
            voip_headers=_headers(custom.get("voipHeaders"), VOIP_HEADERS),
            event_time=aware_time(event_time),
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
        raw_chunks = _object(data.get("recordingStorageInfo")).get("recordingChunks")
        if not isinstance(raw_chunks, list) or not raw_chunks:
            raise EventFormatError("RecordingFileStatusUpdated has no recordingStorageInfo.recordingChunks")
        if len(raw_chunks) > MAX_CHUNKS:
            raise EventFormatError(f"RecordingFileStatusUpdated has more than {MAX_CHUNKS} chunks")
        chunks = [_chunk(chunk) for chunk in raw_chunks]
        duration = data.get("recordingDurationMs")
        if isinstance(duration, float) and duration.is_integer():
            duration = int(duration)
        return cls(
            event_id=event_id,
            subject=subject if isinstance(subject, str) else "",
            chunks=chunks,
            start_time=aware_time(data.get("recordingStartTime")),
            duration_ms=duration if _int(duration) is not None and duration >= 0 else None,
            content_type=_text(data.get("recordingContentType"), MAX_TIME),
            channel_type=_text(data.get("recordingChannelType"), MAX_TIME),
            format_type=_text(data.get("recordingFormatType")),
        )


def _chunk(chunk: Any) -> RecordingChunk:
    """One recording chunk: its locations are needed (strings), and its index names its copy (a whole number)."""
    if not isinstance(chunk, dict):
        raise EventFormatError("a recording chunk must be an object")
    content, metadata = _text(chunk.get("contentLocation"), MAX_URL), _text(chunk.get("metadataLocation"), MAX_URL)
    if not content or not metadata:
        raise EventFormatError("a recording chunk needs contentLocation and metadataLocation (URLs)")
    index = chunk.get("index")
    if index is None or index == "":
        index = 0
    elif isinstance(index, str) and index.isascii() and index.isdigit() and len(index) <= 9:
        index = int(index)
    elif isinstance(index, float) and index.is_integer():
        index = int(index)
    if _int(index) is None or index < 0 or index > 999_999_999:
        raise EventFormatError(f"a recording chunk's index must be a whole number, not {type(index).__name__}")
    return RecordingChunk(
        document_id=_text(chunk.get("documentId"), MAX_RAW_ID) or "",
        index=index,
        content_location=content,
        metadata_location=metadata,
        delete_location=_text(chunk.get("deleteLocation"), MAX_URL),
        end_reason=_text(chunk.get("endReason"), MAX_TIME),
    )
