"""The fold of a call's rows (its events and its app legs' flow outcomes) into its record, and the record's summary.

Pure, with no storage: the same rows in any order, each seen once or many times, give the same record, which is
what lets the store refold on every delivery and on every conflict without a lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypedDict

from core.calls.events import parse_time
from core.records.events import iso

LISTED_PARTICIPANTS = 50
_ORDER = {"CallStarted": 0, "CallParticipantAdded": 1, "CallParticipantRemoved": 2, "CallEnded": 3}
_JOIN, _LEAVE = 0, 1


class Row(TypedDict):
    """One row as the fold takes it: an Event Grid event (``kind`` "event") or a flow outcome ("flow")."""

    kind: str
    id: str
    type: str | None
    time: str | None
    data: dict[str, Any]


class Session(TypedDict):
    """One stay of a participant in the call; either end may be unknown."""

    joined_at: str | None
    left_at: str | None


Move = tuple[str | None, int, str]  # (time, _JOIN or _LEAVE, event id)


def _sessions(moves: list[Move]) -> list[Session]:
    """Join/leave moves of one participant (time, 0 added / 1 removed, event id) as sessions."""
    sessions: list[Session] = []
    open_session: Session | None = None
    for moment, move, _ in sorted(moves, key=lambda m: (m[0] or "", m[1], m[2])):
        if move == _JOIN:
            if open_session is None:  # a second join while in: the first one counts
                open_session = {"joined_at": moment, "left_at": None}
                sessions.append(open_session)
        elif open_session is not None:
            open_session["left_at"] = moment
            open_session = None
        else:  # a leave whose join has not arrived (or never will)
            sessions.append({"joined_at": None, "left_at": moment})
    return sessions


@dataclass(frozen=True)
class _Rows:
    """A call's rows, each once, in the order the fold reads them: events by time, flow outcomes by connection."""

    events: list[Row]
    flows: list[dict[str, Any]]
    started: list[Row]
    ended: list[Row]

    @classmethod
    def of(cls, rows: Iterable[Row]) -> _Rows:
        unique: dict[tuple[str, str], Row] = {}
        for row in rows:  # a row seen twice (the same event id, the same app leg) counts once
            unique.setdefault((row.get("kind") or "", row.get("id") or ""), row)
        events = sorted(
            (r for r in unique.values() if r.get("kind") == "event" and r.get("type") in _ORDER),
            key=lambda r: (r.get("time") or "", _ORDER[r["type"] or ""], r.get("id") or ""),
        )
        flows = sorted(
            (r["data"] for r in unique.values() if r.get("kind") == "flow"),
            key=lambda f: (f.get("connected_at") or f.get("ended_at") or "", f.get("call_ref") or ""),
        )
        started = [e for e in events if e["type"] == "CallStarted"]
        ended = [e for e in events if e["type"] == "CallEnded"]
        return cls(events, flows, started, ended)

    def first(self, name: str, among: list[Row] | None = None) -> Any:
        """The field's first value that is neither missing nor empty, in ``among`` (all events by default)."""
        for e in self.events if among is None else among:
            if e["data"].get(name) not in (None, ""):
                return e["data"][name]
        return None

    def last(self, name: str) -> Any:
        """The field's last value that is not missing."""
        for e in reversed(self.events):
            if e["data"].get(name) is not None:
                return e["data"][name]
        return None


def _identity(server_call_id: str, rows: _Rows) -> dict[str, Any]:
    """Which call it is, whether it is over, and what kind of call."""
    return {
        "server_call_id": server_call_id,
        "correlation_id": rows.first("correlation_id")
        or next((f.get("correlation_id") for f in rows.flows), None)
        or None,
        "status": "ended" if rows.ended else "active",
        "complete": bool(rows.started and rows.ended),
        "group_call_id": rows.first("group_call_id"),
        "room_id": rows.first("room_id"),
        "is_two_party": rows.last("is_two_party"),
        "is_rooms_call": any(e["data"].get("is_rooms_call") for e in rows.events),
        "started_by": rows.first("started_by", rows.started) or rows.first("started_by"),
    }


def _estimated_start(rows: _Rows, ended_at: str | None, duration: float | None) -> tuple[str | None, str | None]:
    """Without CallStarted: the earliest moment the rows imply (an event, a leg's connection, end less duration)."""
    candidates = [parse_time(e["time"]) for e in rows.events] + [
        parse_time(f.get(k)) for f in rows.flows for k in ("connected_at", "ended_at")
    ]
    if ended_at and duration is not None:
        end = parse_time(ended_at)
        candidates.append(end - timedelta(seconds=duration) if end else None)
    known = [c for c in candidates if c is not None]
    return (iso(min(known)), "estimated") if known else (None, None)


def _times(rows: _Rows) -> dict[str, Any]:
    """Start and end: the service's events when they are in, else what the rows imply; and how the call ended."""
    ended = rows.ended
    ended_at = ended[-1]["time"] if ended else None
    duration = rows.first("duration_seconds", ended) if ended else None
    if rows.started:
        started_at, source = rows.started[0]["time"], "CallStarted"
    else:
        started_at, source = _estimated_start(rows, ended_at, duration)
    if duration is None and source == "CallStarted" and ended_at:
        start, end = parse_time(started_at), parse_time(ended_at)
        duration = round((end - start).total_seconds(), 3) if start and end else None
    return {
        "started_at": started_at,
        "started_at_source": source,
        "ended_at": ended_at,
        "duration_seconds": duration,
        "ended_by": rows.first("ended_by", ended) if ended else None,
        "end_reason": rows.first("end_reason", ended) if ended else None,
    }


@dataclass
class _Person:
    """One participant as their events describe them: the latest non-empty of each field, every join and leave."""

    id: str
    role: str | None = None
    display_name: str | None = None
    user_agent: str | None = None
    participant_ids: list[str] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)

    def take(self, event: Row) -> None:
        data = event["data"]
        self.role = data["participant"].get("role") or self.role
        self.display_name = data.get("display_name") or self.display_name
        self.user_agent = data.get("user_agent") or self.user_agent
        pid = data.get("participant_id")
        if pid and pid not in self.participant_ids:
            self.participant_ids.append(pid)
        move = _JOIN if event["type"] == "CallParticipantAdded" else _LEAVE
        self.moves.append((event["time"], move, event["id"]))

    def as_json(self) -> dict[str, Any]:
        """As the record shows them: their sessions paired from the moves, first join and last leave."""
        sessions = _sessions(self.moves)
        joins = [s["joined_at"] for s in sessions if s["joined_at"]]
        leaves = [s["left_at"] for s in sessions if s["left_at"]]
        still_in = bool(sessions) and sessions[-1]["left_at"] is None
        return {
            "id": self.id,
            "role": self.role,
            "display_name": self.display_name,
            "user_agent": self.user_agent,
            "participant_ids": sorted(self.participant_ids),
            "joined_at": min(joins) if joins else None,
            "left_at": None if still_in or not leaves else max(leaves),
            "sessions": sessions,
        }


def _participants(events: list[Row]) -> list[dict[str, Any]]:
    """Each participant's joins and leaves, in time order, paired into sessions; first to join first."""
    people: dict[str, _Person] = {}
    for e in events:
        if e["type"] in ("CallParticipantAdded", "CallParticipantRemoved"):
            who = e["data"]["participant"]["id"]
            people.setdefault(who, _Person(who)).take(e)
    participants = [person.as_json() for person in people.values()]
    participants.sort(key=lambda p: (p["joined_at"] or p["left_at"] or "", p["id"]))
    return participants


def build_record(server_call_id: str, rows: Iterable[Row]) -> dict[str, Any]:
    """Fold a call's rows into its record. The same rows in any order give the same record."""
    call = _Rows.of(rows)
    return {
        **_identity(server_call_id, call),
        **_times(call),
        "participants": _participants(call.events),
        "flows": call.flows,
        "events": [{"id": e["id"], "type": e["type"], "time": e["time"]} for e in call.events],
    }


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record the listing shows (bounded in size)."""
    return {
        "server_call_id": record["server_call_id"],
        "correlation_id": record.get("correlation_id"),
        "status": record.get("status"),
        "complete": record.get("complete"),
        "started_at": record.get("started_at"),
        "started_at_source": record.get("started_at_source"),
        "ended_at": record.get("ended_at"),
        "duration_seconds": record.get("duration_seconds"),
        "started_by": record.get("started_by"),
        "end_reason": record.get("end_reason"),
        "participant_count": len(record.get("participants") or []),
        "participants": [p["id"] for p in (record.get("participants") or [])][:LISTED_PARTICIPANTS],
        "flows": [
            {
                "flow": f.get("flow"),
                "call_connection_id": f.get("call_connection_id"),
                "menu_choices": [m.get("choice") for m in f.get("menu_choices") or [] if isinstance(m, dict)],
                "transfer_target": f.get("transfer_target"),
                "transfer_result": f.get("transfer_result"),
                "ended_reason": f.get("ended_reason"),
            }
            for f in record.get("flows") or []
        ],
    }
