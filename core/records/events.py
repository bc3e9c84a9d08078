"""What call records take in: Event Grid's calling events and an app leg's flow outcome, checked and reduced.

Kept apart from the fold and the table so the one place that reads untrusted input is small and testable alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.calls.events import (
    MAX_DISPLAY_NAME,
    MAX_RAW_ID,
    MAX_TEXT,
    PREFIX,
    EventFormatError,
    aware_time,
    parse_time,
    raw_id,
)
from core.calls.state import CallState

EVENT_TYPES = ("CallStarted", "CallEnded", "CallParticipantAdded", "CallParticipantRemoved")


def iso(value: Any) -> str | None:
    """A time as the records write it: UTC, microseconds, ``Z`` (so strings sort as times)."""
    moment = parse_time(value)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z") if moment else None


def _short_text(value: Any, limit: int = MAX_DISPLAY_NAME) -> str | None:
    """A string the records keep, or None when it is another JSON type, empty or longer than ``limit``."""
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _participant(props: Any) -> dict[str, Any] | None:
    """An AcsCallParticipantProperties (or AcsCallEndedByProperties) as {id, role/kind, name}."""
    if not isinstance(props, dict):
        return None
    identifier = raw_id(props.get("communicationIdentifier")) or raw_id(props)
    if not identifier:
        return None
    out: dict[str, Any] = {"id": identifier}
    for source, target in (("role", "role"), ("type", "kind"), ("kind", "kind"), ("name", "name")):
        value = _short_text(props.get(source))
        if value is not None:
            out.setdefault(target, value)
    return out


def _subject_call_id(subject: Any) -> str:
    # Event Grid subjects of calling events: call/{serverCallId}/startedBy/... or .../participant/...
    if isinstance(subject, str) and subject.startswith("call/"):
        return _short_text(subject.split("/", 2)[1], MAX_TEXT) or ""
    return ""


# A field of another JSON type than the spec's, or too long, is read as absent (in all the readers below).


def _common_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields every calling event may carry: correlation, the kind of call, who started it."""
    fields: dict[str, Any] = {}
    if _short_text(data.get("correlationId"), MAX_TEXT):
        fields["correlation_id"] = data["correlationId"]
    for source, target in (("isTwoParty", "is_two_party"), ("isRoomsCall", "is_rooms_call")):
        if isinstance(data.get(source), bool):
            fields[target] = data[source]
    for source, target in (("group", "group_call_id"), ("room", "room_id")):
        value = data.get(source)
        if isinstance(value, dict) and _short_text(value.get("id"), MAX_TEXT):
            fields[target] = value["id"]
    started_by = _participant(data.get("startedBy"))
    if started_by:
        fields["started_by"] = started_by
    return fields


def _participant_fields(short: str, event_id: str, data: dict[str, Any], fields: dict[str, Any]) -> None:
    """CallParticipantAdded/Removed: the participant (required) and what the event says of them."""
    user = _participant(data.get("user"))
    if not user:
        raise EventFormatError(f"{short} {event_id} names no participant (user.communicationIdentifier)")
    fields["participant"] = user
    for source, target in (
        ("displayName", "display_name"),
        ("participantId", "participant_id"),
        ("userAgent", "user_agent"),
    ):
        if _short_text(data.get(source)):
            fields[target] = data[source]


def _ended_fields(data: dict[str, Any], fields: dict[str, Any]) -> None:
    """CallEnded: who ended it, why, and how long it lasted."""
    ended_by = _participant(data.get("endedBy"))
    if ended_by:
        fields["ended_by"] = ended_by
    reason = data.get("reason")
    if isinstance(reason, dict):
        codes = [reason.get(k) for k in ("code", "subCode")]
        code, sub_code = (c if isinstance(c, int) and not isinstance(c, bool) else None for c in codes)
        fields["end_reason"] = {
            "code": code,
            "sub_code": sub_code,
            "phrase": _short_text(reason.get("phrase"), MAX_TEXT) or "",
        }
    duration = data.get("callDurationInSeconds")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and 0 <= duration < 1e9:
        fields["duration_seconds"] = float(duration)


@dataclass(frozen=True)
class CallRecordEvent:
    """One calling event of Event Grid (AcsCallStartedEventData etc.), reduced to what records keep."""

    id: str
    type: str  # short name, e.g. "CallEnded"
    server_call_id: str
    time: str | None
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, event_id: str, event_type: str, event_time: Any, data: Any, subject: str | None = None
    ) -> CallRecordEvent:
        short = event_type[len(PREFIX) :] if event_type.startswith(PREFIX) else event_type
        if short not in EVENT_TYPES:
            raise EventFormatError(f"{event_type} is not a calling event the records take")
        if not event_id or not _short_text(str(event_id), MAX_RAW_ID):
            raise EventFormatError(f"{short} has no id (of at most {MAX_RAW_ID} characters)")
        if not isinstance(data, dict):
            raise EventFormatError(f"{short} data must be an object")
        server_call_id = _short_text(data.get("serverCallId"), MAX_TEXT) or _subject_call_id(subject)
        if not server_call_id:
            raise EventFormatError(f"{short} {event_id} has no serverCallId")
        fields = _common_fields(data)
        if short in ("CallParticipantAdded", "CallParticipantRemoved"):
            _participant_fields(short, event_id, data, fields)
        if short == "CallEnded":
            _ended_fields(data, fields)
        # A time that cannot be read (or leaves the calendar's range once in UTC) is a time not known.
        return cls(str(event_id), short, server_call_id, iso(aware_time(event_time)), fields)

    def row(self) -> dict[str, Any]:
        """As build_record takes it."""
        return {"kind": "event", "id": self.id, "type": self.type, "time": self.time, "data": self.fields}


def flow_outcome(state: CallState) -> dict[str, Any]:
    """What an app leg's flow did, from its final state."""
    outcome = dict(state.outcome)
    connected, ended = parse_time(state.connected_at), parse_time(state.ended_at)
    duration = round((ended - connected).total_seconds(), 3) if connected and ended else None
    return {
        "call_ref": state.call_ref,
        "call_connection_id": state.call_connection_id,
        "correlation_id": state.correlation_id,
        "flow": state.flow,
        "status": state.status,
        "caller": state.caller,
        "callee": state.callee,
        "connected_at": iso(state.connected_at),
        "ended_at": iso(state.ended_at),
        "duration_seconds": duration,
        "menu_choices": outcome.get("menu", []),
        "menu_misses": outcome.get("menu_misses", []),
        "transfer_target": outcome.get("transfer_target"),
        "transfer_result": outcome.get("transfer_result"),
        "tones": outcome.get("tones", []),
        "recording_id": state.recording_id or None,
        "ended_reason": outcome.get("failed") or outcome.get("ended"),
        "ended_by_flow": outcome.get("ended_by_flow"),
        "outcome": outcome,
    }
