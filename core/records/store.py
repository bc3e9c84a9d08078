"""Call records for reporting, in Azure Table Storage: one record per server call id.

A record is folded from rows, never edited in place, so it comes out the same whatever order
the rows arrive in and however often each arrives:

- one row per Event Grid event (CallStarted, CallEnded, CallParticipantAdded,
  CallParticipantRemoved), keyed by the event's id: a redelivery writes nothing new;
- one flow outcome per app leg, keyed by the call's reference: what the flow did when the call ended
  for the app (a call-ended hook); a rerun of the hook rewrites the same outcome. It is kept on the
  summary itself (a ``flow_<hash>`` property), not in a row of its own: see below.

Table layout (one table, ``RECORDS_TABLE``):

    PartitionKey                RowKey                              what
    c<hash of server call id>   ev-<event id>                       one Event Grid event's fields
    c<hash of server call id>   flow-<call ref>                     one app leg's flow outcome (written by
                                                                    earlier versions; still read)
    c<hash of server call id>   record                              the folded summary (ETag-guarded), the
                                                                    rows it was folded from while they fit,
                                                                    and the app legs' flow outcomes
    recent                      <inverted start time>-<s|e>-<hash>  the listing index: newest first

A row is written in one entity group transaction with the summary folded again with it, compare-and-swap on the
summary's ETag (a conflict re-reads and refolds): the row and the summary that takes it in land together or not
at all, and concurrent deliveries of one call's events cannot lose each other's rows. The summary carries the rows
(``rowChunks``, ``rows0``..), so the fold needs only the summary: a new event costs a point read and one
transaction, a redelivery the point read alone (the event is among the rows: nothing to write). Without them (no
summary yet, rows too many for an entity, a summary written before they rode along) the rows are read with a query
of the partition after the summary, as any row written since would have changed the summary's ETag.
An app leg's flow outcome is the exception: it is merged onto the summary with a mark (``flowPending``) that
the summary's record does not take it in yet, one request that cannot conflict (see ``add_flow``); the next fold,
or the listing, folds it in. Every fold carries the outcomes over to the summary it writes.

The summary names its listing key; the key is the call's start (``s``: from CallStarted) or, until CallStarted
arrives, the earliest moment known of it (``e``). Keys only move to new values (an ``e`` estimate only ever goes
down, an ``s`` key is never an ``e`` key), so a key the summary has left is never used again and can be deleted;
the listing also skips and removes any such leftover. The index is written after the summary, and only when the key
moved or is not yet known written (``indexedKey``): the new key in and the left keys out in one transaction, then
the summary marked indexed (unless it changed since: whoever changed it indexes it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from core.platform import tables
from core.platform.tables import TableBacked, row_key

log = logging.getLogger("core.records.store")

EVENT_TYPES = ("CallStarted", "CallEnded", "CallParticipantAdded", "CallParticipantRemoved")
EVENT_ROW = "ev-"
FLOW_ROW = "flow-"
RECORD_ROW = "record"
LIST_PARTITION = "recent"
MAX_MICROS = 9_999_999_999_999_999  # inverted timestamps: 19 digits, good for centuries
LISTED_PARTICIPANTS = 50
_ORDER = {"CallStarted": 0, "CallParticipantAdded": 1, "CallParticipantRemoved": 2, "CallEnded": 3}


class RecordConflict(Exception):
    """The summary kept changing under us: let the delivery fail and come again."""


# -- times ------------------------------------------------------------------------------------


def iso(value: Any) -> str | None:
    """A time as the records write it: UTC, microseconds, ``Z`` (so strings sort as times)."""
    moment = parse_time(value)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z") if moment else None


def _micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# -- keys -------------------------------------------------------------------------------------


def call_key(server_call_id: str) -> str:
    """The partition of a call: a hash, since server call ids may hold characters keys cannot."""
    return "c" + hashlib.sha256(server_call_id.encode()).hexdigest()[:40]


def index_key(record: dict[str, Any], server_call_id: str) -> str | None:
    """The listing key of a record: newest first, ``s`` when the start is known, ``e`` while estimated."""
    moment = parse_time(record.get("started_at"))
    if moment is None:
        return None
    flag = "s" if record.get("started_at_source") == "CallStarted" else "e"
    return f"{MAX_MICROS - _micros(moment):019d}-{flag}-{call_key(server_call_id)}"


# -- Event Grid events ------------------------------------------------------------------------


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
        # A field of another JSON type than the spec's, or too long, is read as absent.
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
        if short in ("CallParticipantAdded", "CallParticipantRemoved"):
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
        if short == "CallEnded":
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
        # A time that cannot be read (or leaves the calendar's range once in UTC) is a time not known.
        return cls(str(event_id), short, server_call_id, iso(aware_time(event_time)), fields)

    def row(self) -> dict[str, Any]:
        """As build_record takes it."""
        return {"kind": "event", "id": self.id, "type": self.type, "time": self.time, "data": self.fields}


# -- flow outcomes ----------------------------------------------------------------------------


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


# -- the fold ---------------------------------------------------------------------------------


def _sessions(moves: list[tuple[str | None, int, str]]) -> list[dict[str, str | None]]:
    """Join/leave moves of one participant (time, 0 added / 1 removed, event id) as sessions."""
    sessions: list[dict[str, str | None]] = []
    open_session: dict[str, str | None] | None = None
    for moment, move, _ in sorted(moves, key=lambda m: (m[0] or "", m[1], m[2])):
        if move == 0:
            if open_session is None:  # a second join while in: the first one counts
                open_session = {"joined_at": moment, "left_at": None}
                sessions.append(open_session)
        elif open_session is not None:
            open_session["left_at"] = moment
            open_session = None
        else:  # a leave whose join has not arrived (or never will)
            sessions.append({"joined_at": None, "left_at": moment})
    return sessions


def build_record(server_call_id: str, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Fold a call's rows into its record. The same rows in any order give the same record."""
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:  # a row seen twice (the same event id, the same app leg) counts once
        unique.setdefault((row.get("kind") or "", row.get("id") or ""), row)
    events = sorted(
        (r for r in unique.values() if r.get("kind") == "event" and r.get("type") in _ORDER),
        key=lambda r: (r.get("time") or "", _ORDER[r["type"]], r.get("id") or ""),
    )
    flows = sorted(
        (r["data"] for r in unique.values() if r.get("kind") == "flow"),
        key=lambda f: (f.get("connected_at") or f.get("ended_at") or "", f.get("call_ref") or ""),
    )
    started = [e for e in events if e["type"] == "CallStarted"]
    ended = [e for e in events if e["type"] == "CallEnded"]

    def first(name: str, among: list[dict[str, Any]] = events) -> Any:
        for e in among:
            if e["data"].get(name) not in (None, ""):
                return e["data"][name]
        return None

    def last(name: str) -> Any:
        for e in reversed(events):
            if e["data"].get(name) is not None:
                return e["data"][name]
        return None

    record: dict[str, Any] = {
        "server_call_id": server_call_id,
        "correlation_id": first("correlation_id") or next((f.get("correlation_id") for f in flows), None) or None,
        "status": "ended" if ended else "active",
        "complete": bool(started and ended),
        "group_call_id": first("group_call_id"),
        "room_id": first("room_id"),
        "is_two_party": last("is_two_party"),
        "is_rooms_call": any(e["data"].get("is_rooms_call") for e in events),
        "started_by": first("started_by", started) or first("started_by"),
    }

    # Start and end: the service's events when they are in, else what the rows imply.
    ended_at = ended[-1]["time"] if ended else None
    duration = first("duration_seconds", ended) if ended else None
    if started:
        record["started_at"], record["started_at_source"] = started[0]["time"], "CallStarted"
    else:
        candidates = [parse_time(e["time"]) for e in events] + [
            parse_time(f.get(k)) for f in flows for k in ("connected_at", "ended_at")
        ]
        if ended_at and duration is not None:
            end = parse_time(ended_at)
            candidates.append(end - timedelta(seconds=duration) if end else None)
        known = [c for c in candidates if c is not None]
        record["started_at"] = iso(min(known)) if known else None
        record["started_at_source"] = "estimated" if known else None
    record["ended_at"] = ended_at
    if duration is None and record["started_at_source"] == "CallStarted" and ended_at:
        start, end = parse_time(record["started_at"]), parse_time(ended_at)
        duration = round((end - start).total_seconds(), 3) if start and end else None
    record["duration_seconds"] = duration
    record["ended_by"] = first("ended_by", ended) if ended else None
    record["end_reason"] = first("end_reason", ended) if ended else None

    # Participants: each join and leave, in time order, paired into sessions.
    people: dict[str, dict[str, Any]] = {}
    moves: dict[str, list[tuple[str | None, int, str]]] = {}
    for e in events:
        if e["type"] not in ("CallParticipantAdded", "CallParticipantRemoved"):
            continue
        who = e["data"]["participant"]
        person = people.setdefault(
            who["id"], {"id": who["id"], "role": None, "display_name": None, "user_agent": None, "participant_ids": []}
        )
        person["role"] = who.get("role") or person["role"]
        for key in ("display_name", "user_agent"):
            person[key] = e["data"].get(key) or person[key]
        pid = e["data"].get("participant_id")
        if pid and pid not in person["participant_ids"]:
            person["participant_ids"].append(pid)
        moves.setdefault(who["id"], []).append((e["time"], 0 if e["type"] == "CallParticipantAdded" else 1, e["id"]))
    participants = []
    for who, person in people.items():
        sessions = _sessions(moves[who])
        joins = [s["joined_at"] for s in sessions if s["joined_at"]]
        leaves = [s["left_at"] for s in sessions if s["left_at"]]
        still_in = bool(sessions) and sessions[-1]["left_at"] is None
        participants.append(
            {
                **person,
                "participant_ids": sorted(person["participant_ids"]),
                "joined_at": min(joins) if joins else None,
                "left_at": None if still_in or not leaves else max(leaves),
                "sessions": sessions,
            }
        )
    participants.sort(key=lambda p: (p["joined_at"] or p["left_at"] or "", p["id"]))
    record["participants"] = participants
    record["flows"] = flows
    record["events"] = [{"id": e["id"], "type": e["type"], "time": e["time"]} for e in events]
    return record


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


# -- storage ----------------------------------------------------------------------------------

STALE_ROWS = "staleRows"  # on a summary (from earlier versions): a row was written without folding it in; query
FLOW_PENDING = "flowPending"  # on a summary: a flow outcome was merged onto it and is not in its record yet
FLOW_PROPERTY = "flow_"  # the summary's properties that hold flow outcomes: flow_<hash of the row key>
INLINE_CHUNK = 30_000  # characters a property holds: Table Storage takes 32K UTF-16 units, and the JSON is ASCII
INLINE_LIMIT = 240_000  # the most row text a summary carries (~480 KB of an entity's 1 MiB); beyond, a query
_EXISTS = "EntityAlreadyExists"
_CHANGED = ("UpdateConditionNotSatisfied", "ConditionNotMet")
_MISSING = ("EntityNotFound", "ResourceNotFound")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def row_of(entity: dict[str, Any]) -> dict[str, Any] | None:
    """An event or flow row as build_record takes it; None for any other row (the summary)."""
    kind = entity.get("kind")
    if kind not in ("event", "flow"):
        return None
    return {
        "kind": kind,
        "id": entity.get("eventId") or entity["RowKey"],
        "type": entity.get("type"),
        "time": entity.get("time") or None,
        "data": json.loads(entity.get("data") or "{}"),
    }


def flow_property(key: str) -> str:
    """The summary property that holds the flow outcome with this row key (property names are identifiers)."""
    return FLOW_PROPERTY + hashlib.sha256(key.encode()).hexdigest()[:32]


def flows_of(summary: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The flow outcomes a summary holds, as build_record takes them, by row key; one that does not parse is left
    out (and logged) rather than failing the whole record."""
    flows: dict[str, dict[str, Any]] = {}
    for name, value in (summary or {}).items():
        if not name.startswith(FLOW_PROPERTY) or not isinstance(value, str):
            continue
        try:
            row = json.loads(value)
            flows[row["id"]] = row
        except (ValueError, TypeError, KeyError):
            log.warning("flow outcome %s of a call record does not parse; left out", name)
    return flows


def flow_entry(flow: dict[str, Any]) -> dict[str, Any]:
    """An app leg's flow outcome as build_record takes it, keyed by its leg. One too large for a property (a very
    long call's tones, say) keeps its plain fields and says it was cut."""
    key = FLOW_ROW + row_key(flow.get("call_ref") or flow.get("call_connection_id") or "app")
    row = {"kind": "flow", "id": key, "type": None, "time": flow.get("connected_at") or flow.get("ended_at") or None}
    if len(_dumps(flow)) > INLINE_CHUNK - 1_000:
        flow = {k: v for k, v in flow.items() if not isinstance(v, (list, dict))} | {"truncated": True}
    return row | {"data": flow}


def pack_rows(rows: dict[str, dict[str, Any]], limit: int = INLINE_LIMIT) -> dict[str, Any]:
    """A call's rows (by row key) as properties of its summary: ``rowChunks`` and ``rows0``, ``rows1``..
    of at most INLINE_CHUNK characters each; ``rowChunks`` 0 and no rows when they come to more than ``limit``."""
    text = _dumps(rows)
    if len(text) > limit:
        return {"rowChunks": 0}
    chunks = [text[at : at + INLINE_CHUNK] for at in range(0, len(text), INLINE_CHUNK)]
    return {"rowChunks": len(chunks), **{f"rows{n}": chunk for n, chunk in enumerate(chunks)}}


def unpack_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The rows a summary carries, by row key; None when it carries none (too many, or an older summary)."""
    count = summary.get("rowChunks")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return None
    return json.loads("".join(summary[f"rows{n}"] for n in range(count)))


def summary_entity(
    server_call_id: str,
    record: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    current: dict[str, Any] | None,
    inline_limit: int = INLINE_LIMIT,
    flows: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The summary row of a call folded into ``record`` from ``rows`` and ``flows`` (the flow outcomes it carries),
    following ``current`` (the row it replaces).

    ``indexKey`` is the record's listing key; ``indexedKey`` the key whose index row is known to be written (set
    after the index row is, so a key new to the summary starts unconfirmed); ``staleIndexKeys`` the keys the summary
    has left whose index rows may still be there."""
    key = index_key(record, server_call_id) or ""
    before = current or {}
    stale = set(json.loads(before.get("staleIndexKeys") or "[]"))
    stale.update(k for k in (before.get("indexKey"), before.get("indexedKey")) if k and k != key)
    stale.discard(key)
    return {
        "PartitionKey": call_key(server_call_id),
        "RowKey": RECORD_ROW,
        "serverCallId": server_call_id,
        "status": record["status"],
        "startedAt": record.get("started_at") or "",
        "indexKey": key,
        "indexedKey": key if key and before.get("indexedKey") == key else "",
        "staleIndexKeys": _dumps(sorted(stale)),
        "summary": _dumps(summarize(record)),
        **pack_rows(rows, inline_limit),
        **{flow_property(key): _dumps(row) for key, row in (flows or {}).items()},
    }


def index_pending(summary: dict[str, Any]) -> bool:
    """Whether the listing index may lag a summary: its key's row not known written, or a left key's row not gone."""
    key = summary.get("indexKey") or ""
    return bool(json.loads(summary.get("staleIndexKeys") or "[]")) or bool(key and summary.get("indexedKey") != key)


def _failure(exc: Exception) -> str | None:
    """What a failed write ran into: "exists", "changed", "missing", or None (anything else)."""
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

    code = getattr(exc, "error_code", None)
    code = str(getattr(code, "value", code) or "")
    if code == _EXISTS or isinstance(exc, ResourceExistsError):
        return "exists"
    if code in _CHANGED or isinstance(exc, ResourceModifiedError):
        return "changed"
    if code in _MISSING or isinstance(exc, ResourceNotFoundError):
        return "missing"
    return None


class _Fold:
    """One write of ``RecordStore._fold`` as ``tables.mutate`` takes it: read the summary, fold, then write the row and
    the summary in one entity group transaction (the summary's ETag guarding it)."""

    def __init__(
        self,
        store: RecordStore,
        server_call_id: str,
        entity: dict[str, Any] | None,
        create: bool,
        query: bool,
        flow: dict[str, Any] | None,
    ) -> None:
        self.store, self.server_call_id, self.entity, self.create = store, server_call_id, entity, create
        self.query, self.flow = query, flow
        self.partition = call_key(server_call_id)
        self.row = row_of(entity) if entity is not None else None
        self.write_row = False
        self.summary: dict[str, Any] = {}
        self.etag = ""  # the summary's, once written

    def read(self) -> tuple[Any, str | None]:
        current = tables.get(self.store._table, self.partition, RECORD_ROW)
        return current, current.metadata["etag"] if current is not None else None

    def fold(self, current: Any) -> dict[str, Any]:
        """The call's record with the row in; the summary to write (``self.summary``)."""
        entity = self.entity
        rows = None if self.query or current is None or current.get(STALE_ROWS) else unpack_rows(current)
        if rows is None:  # read after the summary: a row written since changed the summary's ETag
            rows = self.store._rows(self.partition)
        flows = flows_of(current)
        if self.flow is not None:
            flows[self.flow["id"]] = self.flow
        self.write_row = False
        if entity is not None:
            known = rows.get(entity["RowKey"])
            self.write_row = known is None if self.create else known != self.row
            if self.write_row:
                rows[entity["RowKey"]] = self.row
            elif self.create:
                log.info("%s %s is in the record already (a redelivery)", entity.get("type"), entity.get("eventId"))
        record = build_record(self.server_call_id, [*flows.values(), *rows.values()])  # the first of a key counts
        self.summary = summary_entity(self.server_call_id, record, rows, current, self.store._inline_limit, flows)
        return record

    def write(self, current: Any, etag: str | None) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import TableTransactionError

        ops: list[Any] = []
        if self.write_row:
            ops.append(("create", self.entity) if self.create else ("upsert", self.entity, {"mode": "replace"}))
        if current is None:
            ops.append(("create", self.summary))
        elif self.write_row or dict(current) != self.summary:  # a row written always moves the summary's ETag on
            guard = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            ops.append(("update", self.summary, {"mode": "replace", **guard}))
        if not ops:  # nothing new: a redelivery, or a flow outcome written again unchanged
            self.etag = etag or ""
            return
        try:
            self.etag = self.store._table.submit_transaction(ops)[-1]["etag"]
        except (TableTransactionError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            failure = _failure(exc)
            if failure is None:
                raise
            if failure == "exists" and self.write_row and self.create and getattr(exc, "index", 0) == 0:
                # The row is in but the summary did not carry it (written by an earlier version): read the rows.
                self.query = True
            raise tables.Conflict(failure) from exc


class RecordStore(TableBacked):
    """Rows per call, the folded summary with ETag concurrency, and the newest-first index.

    A write of a row is one entity group transaction with the summary's compare-and-swap: the row and the summary
    that folds it in land together or not at all. The summary carries the rows it was folded from (while they fit),
    so the next write folds from the summary alone: a point read and one transaction per new event, a point read
    alone for a redelivery. Without those rows (no summary yet, too many rows, a summary from before the summary
    carried them) the rows are read with a query of the partition, after the summary, as before."""

    def __init__(self, table: Any, attempts: int = 12, inline_limit: int = INLINE_LIMIT) -> None:
        super().__init__(table)
        self._attempts = attempts
        self._inline_limit = inline_limit

    # -- writes -----------------------------------------------------------------------------

    def add_event(self, event: CallRecordEvent) -> dict[str, Any]:
        """Keep one Event Grid event (once, however often delivered) and refold the call's summary."""
        self._ensure()
        time_ = event.time or iso(datetime.now(UTC))  # no eventTime: the moment it first came
        entity = {
            "PartitionKey": call_key(event.server_call_id),
            "RowKey": EVENT_ROW + row_key(event.id),
            "kind": "event",
            "eventId": event.id,
            "type": event.type,
            "time": time_,
            "serverCallId": event.server_call_id,
            "data": _dumps(event.fields),
        }
        return self._fold(event.server_call_id, entity, create=True)

    def add_flow(self, server_call_id: str, flow: dict[str, Any]) -> None:
        """Keep (or rewrite) an app leg's flow outcome, in one request. The call-ended hook that writes it runs in
        the app's ``CallDisconnected`` callback, at the moment the call's Event Grid events fold into the same
        summary, and a fold there would meet their compare-and-swap. So the outcome is merged onto the summary,
        unconditionally (it cannot conflict; it makes a fold in flight fold again, with it), and marked
        ``flowPending``: the next fold (the next Event Grid event's, or the listing's) takes it into the record.
        ``get`` reads it anyway. A call with no summary yet is folded now, so that it is listed."""
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure()
        row = flow_entry(flow)
        mark = {
            "PartitionKey": call_key(server_call_id),
            "RowKey": RECORD_ROW,
            flow_property(row["id"]): _dumps(row),
            FLOW_PENDING: iso(datetime.now(UTC)),
        }
        try:
            self._table.update_entity(mark, mode="merge")
        except ResourceNotFoundError:
            self._fold(server_call_id, None, create=False, flow=row)  # no summary yet: the first fold of the call

    def refresh(self, server_call_id: str) -> dict[str, Any]:
        """Fold the call's rows, read from the table, into its summary again, and bring its index up to date."""
        self._ensure()
        return self._fold(server_call_id, None, create=False, query=True)

    def _fold(
        self,
        server_call_id: str,
        entity: dict[str, Any] | None,
        create: bool,
        query: bool = False,
        flow: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``entity`` (a new row when ``create``, else a row to replace; None: no row) together with the
        summary that folds it in (and ``flow``, a flow outcome, when given), compare-and-swap (a conflict reads and
        folds again), then index the summary."""
        fold = _Fold(self, server_call_id, entity, create, query, flow)
        _, record = tables.mutate(
            fold.read,
            fold.fold,
            fold.write,
            attempts=self._attempts,
            what=f"record of {server_call_id}",
            gave_up=RecordConflict,
            pause=tables.jitter(0.002, 0.01, start=0),  # the first conflict folds again at once: 2 or 3 writers meet
            logger=log,
        )
        if index_pending(fold.summary):
            self._index(server_call_id, fold.summary, fold.etag)
        return record

    def _index(self, server_call_id: str, summary: dict[str, Any], etag: str) -> None:
        """The summary's listing key into the index and the keys it left out of it (one transaction, the index being
        one partition), then mark the summary indexed unless it changed since (whoever changed it does this)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import TableTransactionError

        key, stale = summary["indexKey"], json.loads(summary["staleIndexKeys"])
        entry = {"PartitionKey": LIST_PARTITION, "RowKey": key, "serverCallId": server_call_id}
        ops: list[Any] = [("upsert", entry, {"mode": "replace"})] if key else []
        ops += [("delete", {"PartitionKey": LIST_PARTITION, "RowKey": old}) for old in stale]
        one_by_one = len(ops) > 100  # more than a transaction takes (not seen: marking indexed clears left keys)
        if not one_by_one:
            try:
                self._table.submit_transaction(ops)
            except (TableTransactionError, ResourceNotFoundError) as exc:
                if _failure(exc) != "missing":
                    raise
                one_by_one = True  # a left key's row is gone already (the listing drops leftovers too)
        if one_by_one:
            if key:
                self._table.upsert_entity(entry, mode="replace")
            for old in stale:
                tables.delete(self._table, LIST_PARTITION, old)
        try:
            self._table.update_entity(
                {
                    "PartitionKey": summary["PartitionKey"],
                    "RowKey": RECORD_ROW,
                    "indexedKey": key,
                    "staleIndexKeys": "[]",
                },
                mode="merge",
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            log.info("record of %s changed while indexing: the change indexes it", server_call_id)

    # -- reads ------------------------------------------------------------------------------

    def _rows(self, partition: str, flows: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """The event and flow rows of a call, by row key; the flow outcomes its summary holds into ``flows``."""
        rows = {}
        for entity in self._table.query_entities(f"PartitionKey eq '{partition}'"):
            row = row_of(entity)
            if row is not None:
                rows[entity["RowKey"]] = row
            elif flows is not None and entity.get("RowKey") == RECORD_ROW:
                flows.update(flows_of(entity))
        return rows

    def get(self, server_call_id: str) -> dict[str, Any] | None:
        """One call's full record, folded now from its rows and flow outcomes; None when nothing is known of it."""
        self._ensure()
        flows: dict[str, dict[str, Any]] = {}
        rows = self._rows(call_key(server_call_id), flows)
        return build_record(server_call_id, [*flows.values(), *rows.values()]) if rows or flows else None

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest calls, newest first: a range read of the index, each checked against its summary."""
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure()
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        query = self._table.query_entities(
            f"PartitionKey eq '{LIST_PARTITION}'",
            results_per_page=min(limit + 5, 1000),
            select=["RowKey", "serverCallId"],
        )
        for entry in query:
            server_call_id = entry.get("serverCallId") or ""
            try:
                current = self._table.get_entity(
                    partition_key=call_key(server_call_id),
                    row_key=RECORD_ROW,
                    select=["indexKey", "summary", STALE_ROWS, FLOW_PENDING],
                )
                if current.get(STALE_ROWS) or current.get(FLOW_PENDING):  # a flow outcome not folded in yet: now
                    # (the summary the fold writes names the key: no read again)
                    record = self._fold(server_call_id, None, create=False, query=bool(current.get(STALE_ROWS)))
                    key = index_key(record, server_call_id) or ""
                    current = {"indexKey": key, "summary": _dumps(summarize(record))}
            except ResourceNotFoundError:
                current = None
            if current is None or current.get("indexKey") != entry["RowKey"] or server_call_id in seen:
                # Left behind by a summary whose start moved (keys are never reused): drop it.
                tables.delete(self._table, LIST_PARTITION, entry["RowKey"])
                continue
            seen.add(server_call_id)
            out.append(json.loads(current["summary"]))
            if len(out) >= limit:
                break
        return out
