"""Call records: reading Event Grid's calling events, folding a call's rows into one record (any
order, any number of deliveries), flow outcomes, and the store's compare-and-swap and listing
index, against an in-memory table with Table Storage's ETag rules."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from core import control
from core.control import RequestError
from core.events import CallEvent, EventFormatError, parse_call_event
from core.flows.engine import FlowEngine, RecordingOptions
from core.records import (
    LIST_PARTITION,
    RECORD_ROW,
    CallRecordEvent,
    RecordStore,
    build_record,
    call_key,
    flow_outcome,
    flow_row,
    index_key,
    iso,
    parse_time,
    safe_key,
)
from core.state import CallState
from handlers import records as handlers
from tests.support.spec import definition_errors

SERVER_CALL = "eyJJZCI6ICJhYmMiLCAiUmVnaW9uIjogInNpbSJ9"
CORRELATION = "7f0f6d7e-1b8b-4b8e-9d64-0c9f1d2b3a4c"
CALLER = "4:+14255550001"
AGENT = "4:+14255550101"
T0 = datetime(2026, 3, 12, 9, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def phone(raw: str) -> dict[str, Any]:
    return {"rawId": raw, "kind": "phoneNumber", "phoneNumber": {"value": raw[2:]}}


def calling(**extra: Any) -> dict[str, Any]:
    data = {
        "startedBy": {"communicationIdentifier": phone(CALLER), "role": "Attendee"},
        "serverCallId": SERVER_CALL,
        "isTwoParty": True,
        "correlationId": CORRELATION,
        "isRoomsCall": False,
    }
    data.update(extra)
    return data


def participant(raw: str, name: str = "") -> dict[str, Any]:
    return calling(
        user={"communicationIdentifier": phone(raw), "role": "Attendee"},
        displayName=name,
        participantId=f"pid-{raw}",
        userAgent="acs-simulator/1.0",
    )


def ended_data(duration: float) -> dict[str, Any]:
    return calling(
        callDurationInSeconds=duration,
        reason={"code": 0, "subCode": 0, "phrase": "This conversation has ended."},
        endedBy={"communicationIdentifier": phone(CALLER), "type": "Participant", "name": ""},
    )


SPEC_MODELS = {
    "CallStarted": "AcsCallStartedEventData",
    "CallEnded": "AcsCallEndedEventData",
    "CallParticipantAdded": "AcsCallParticipantAddedEventData",
    "CallParticipantRemoved": "AcsCallParticipantRemovedEventData",
}


def event(event_id: str, kind: str, seconds: float, data: dict[str, Any]) -> CallRecordEvent:
    assert definition_errors("eg", SPEC_MODELS[kind], data) == [], "the test's payload follows the spec"
    return CallRecordEvent.parse(event_id, f"Microsoft.Communication.{kind}", at(seconds), data)


def a_call() -> list[CallRecordEvent]:
    """Caller rings in at 0, the agent joins at 12 (a transfer), the caller hangs up at 40."""
    return [
        event("e-start", "CallStarted", 0.5, calling()),
        event("e-add-caller", "CallParticipantAdded", 0.5, participant(CALLER, "Caller")),
        event("e-add-agent", "CallParticipantAdded", 12, participant(AGENT)),
        event("e-rm-caller", "CallParticipantRemoved", 40, participant(CALLER)),
        event("e-rm-agent", "CallParticipantRemoved", 40, participant(AGENT)),
        event("e-end", "CallEnded", 40, ended_data(39.5)),
    ]


# -- reading the events -----------------------------------------------------------------------------


def test_events_are_read_as_the_spec_describes_them():
    started, added, _, _, _, ended = a_call()
    assert started.type == "CallStarted" and started.server_call_id == SERVER_CALL and started.time == at(0.5)
    assert started.fields["started_by"] == {"id": CALLER, "role": "Attendee"}
    assert started.fields["correlation_id"] == CORRELATION and started.fields["is_two_party"] is True
    assert added.fields["participant"] == {"id": CALLER, "role": "Attendee"}
    assert added.fields["display_name"] == "Caller" and added.fields["participant_id"] == f"pid-{CALLER}"
    assert ended.fields["duration_seconds"] == 39.5
    assert ended.fields["end_reason"] == {"code": 0, "sub_code": 0, "phrase": "This conversation has ended."}
    assert ended.fields["ended_by"] == {"id": CALLER, "kind": "Participant"}


def test_events_are_read_tolerantly():
    # No rawId (kind-specific part only), unknown fields, a 7-digit fraction, group and room ids.
    data = {
        "startedBy": {"communicationIdentifier": {"communicationUser": {"id": "8:acs:u1"}}},
        "serverCallId": SERVER_CALL,
        "correlationId": CORRELATION,
        "group": {"id": "g-1"},
        "room": {"id": "r-1"},
        "somethingNew": {"x": 1},
    }
    parsed = CallRecordEvent.parse("e1", "Microsoft.Communication.CallStarted", "2026-03-12T09:00:00.1234567Z", data)
    assert parsed.fields["started_by"] == {"id": "8:acs:u1"}
    assert parsed.fields["group_call_id"] == "g-1" and parsed.fields["room_id"] == "r-1"
    assert parsed.time == "2026-03-12T09:00:00.123456Z"
    # The server call id from the subject when the data lacks it; an event with no time.
    minimal = CallRecordEvent.parse("e2", "CallEnded", None, {}, subject=f"call/{SERVER_CALL}/startedBy/8:acs:u1")
    assert minimal.server_call_id == SERVER_CALL and minimal.time is None and minimal.fields == {}


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("CallStarted", {"correlationId": "x"}, "no serverCallId"),
        ("CallParticipantAdded", calling(), "names no participant"),
        ("CallParticipantRemoved", calling(user={"role": "Attendee"}), "names no participant"),
        ("CallStarted", ["not", "an", "object"], "must be an object"),
        ("IncomingCall", calling(), "not a calling event"),
    ],
)
def test_malformed_events_are_refused_with_the_reason(kind, data, message):
    with pytest.raises(EventFormatError, match=message):
        CallRecordEvent.parse("e1", f"Microsoft.Communication.{kind}", at(0), data)


# -- the fold -------------------------------------------------------------------------------------------


def rows_of(events: list[CallRecordEvent]) -> list[dict[str, Any]]:
    return [e.row() for e in events]


def test_a_call_folds_into_one_record():
    record = build_record(SERVER_CALL, rows_of(a_call()))
    assert record["status"] == "ended" and record["complete"] is True
    assert record["started_at"] == at(0.5) and record["started_at_source"] == "CallStarted"
    assert record["ended_at"] == at(40) and record["duration_seconds"] == 39.5
    assert record["started_by"] == {"id": CALLER, "role": "Attendee"}
    assert record["ended_by"] == {"id": CALLER, "kind": "Participant"}
    assert record["end_reason"]["phrase"] == "This conversation has ended."
    assert record["correlation_id"] == CORRELATION
    caller, agent = record["participants"]
    assert (caller["id"], caller["joined_at"], caller["left_at"]) == (CALLER, at(0.5), at(40))
    assert caller["display_name"] == "Caller" and caller["sessions"] == [{"joined_at": at(0.5), "left_at": at(40)}]
    assert (agent["id"], agent["joined_at"], agent["left_at"]) == (AGENT, at(12), at(40))
    assert [e["type"] for e in record["events"]] == [
        "CallStarted",
        "CallParticipantAdded",
        "CallParticipantAdded",
        "CallParticipantRemoved",
        "CallParticipantRemoved",
        "CallEnded",
    ]


def test_any_order_and_any_number_of_deliveries_give_the_same_record():
    rows = rows_of(a_call())
    expected = build_record(SERVER_CALL, rows)
    for order in itertools.permutations(rows):
        assert build_record(SERVER_CALL, order) == expected
    shuffled = random.Random(5)
    for _ in range(50):
        redelivered = rows + shuffled.sample(rows, k=3)
        shuffled.shuffle(redelivered)
        assert build_record(SERVER_CALL, redelivered) == expected


def test_call_ended_before_call_started():
    events = a_call()
    only_end = build_record(SERVER_CALL, rows_of([events[-1]]))
    assert only_end["status"] == "ended" and only_end["complete"] is False
    # Until CallStarted arrives the start is the end less the duration.
    assert only_end["started_at"] == at(0.5) and only_end["started_at_source"] == "estimated"
    assert only_end["duration_seconds"] == 39.5 and only_end["started_by"] == {"id": CALLER, "role": "Attendee"}
    both = build_record(SERVER_CALL, rows_of([events[-1], events[0]]))
    assert both["complete"] is True and both["started_at_source"] == "CallStarted"


def test_a_leave_before_its_join_and_a_rejoin():
    events = [
        event("r1", "CallParticipantRemoved", 20, participant(AGENT)),
        event("a2", "CallParticipantAdded", 30, participant(AGENT)),
        event("a1", "CallParticipantAdded", 10, participant(AGENT)),
        event("r2", "CallParticipantRemoved", 35, participant(AGENT)),
        event("a3", "CallParticipantAdded", 50, participant(AGENT)),
    ]
    [agent] = build_record(SERVER_CALL, rows_of(events))["participants"]
    assert agent["sessions"] == [
        {"joined_at": at(10), "left_at": at(20)},
        {"joined_at": at(30), "left_at": at(35)},
        {"joined_at": at(50), "left_at": None},
    ]
    assert agent["joined_at"] == at(10) and agent["left_at"] is None, "still in the call"
    [early] = build_record(SERVER_CALL, rows_of([events[0]]))["participants"]
    assert early["sessions"] == [{"joined_at": None, "left_at": at(20)}] and early["left_at"] == at(20)


def test_without_call_ended_the_call_is_active_and_its_duration_unknown():
    record = build_record(SERVER_CALL, rows_of(a_call()[:3]))
    assert record["status"] == "active" and record["ended_at"] is None and record["duration_seconds"] is None


def test_duration_from_the_times_when_call_ended_has_none():
    events = a_call()
    no_duration = event("e-end2", "CallEnded", 40, calling())
    record = build_record(SERVER_CALL, rows_of([events[0], no_duration]))
    assert record["duration_seconds"] == 39.5 and record["end_reason"] is None


# -- flow outcomes ------------------------------------------------------------------------------------


def transferred_state() -> CallState:
    return CallState(
        call_ref="ref-1",
        flow="customer_service",
        status="ended",
        caller=CALLER,
        callee="4:+18005550123",
        call_connection_id="conn-1",
        server_call_id=SERVER_CALL,
        correlation_id=CORRELATION,
        recording_id="rec-1",
        connected_at=at(1),
        ended_at=at(13.25),
        outcome={
            "menu": [{"node": "main_menu", "choice": "sales", "by": "dtmf"}],
            "transfer_target": "+14255550101",
            "transfer_result": "accepted",
            "ended": "Call transferred.",
        },
    )


def test_a_flow_outcome_carries_what_the_flow_did():
    flow = flow_outcome(transferred_state())
    assert flow["menu_choices"] == [{"node": "main_menu", "choice": "sales", "by": "dtmf"}]
    assert (flow["transfer_target"], flow["transfer_result"]) == ("+14255550101", "accepted")
    assert flow["recording_id"] == "rec-1" and flow["ended_reason"] == "Call transferred."
    assert flow["call_connection_id"] == "conn-1" and flow["duration_seconds"] == 12.25
    assert flow["tones"] == [] and flow["outcome"]["transfer_result"] == "accepted"


def test_flow_outcomes_join_the_record_in_any_order():
    flow = flow_row(flow_outcome(transferred_state()))
    rows = [*rows_of(a_call()), flow]
    expected = build_record(SERVER_CALL, rows)
    assert expected["flows"] == [flow["data"]]
    assert build_record(SERVER_CALL, [flow, *reversed(rows[:-1])]) == expected
    # Only the flow is known (no Event Grid subscription): the start comes from the app's leg.
    alone = build_record(SERVER_CALL, [flow])
    assert alone["started_at"] == at(1) and alone["started_at_source"] == "estimated"
    assert alone["correlation_id"] == CORRELATION and alone["participants"] == []


def engine_event(kind: str, time: str, **data: Any) -> CallEvent:
    payload = {"callConnectionId": "conn-1", "serverCallId": SERVER_CALL, "correlationId": CORRELATION, **data}
    return parse_call_event({"id": f"id-{kind}", "type": kind, "data": payload, "time": time})


def test_the_engine_keeps_the_times_of_the_apps_leg():
    engine = FlowEngine({}, RecordingOptions(mode="off", channel="unmixed", content="audio", format="wav"))
    state = CallState(call_ref="ref-1", status="connected")
    engine.handle(state, engine_event("CallConnected", at(1)))
    engine.handle(state, engine_event("CallDisconnected", at(5)))
    engine.handle(state, engine_event("CallDisconnected", at(9)))  # a redelivery changes nothing
    assert (state.connected_at, state.ended_at) == (at(1), at(5))


# -- listing keys -----------------------------------------------------------------------------------


def test_listing_keys_sort_newest_first_and_never_come_back():
    older = index_key({"started_at": at(0), "started_at_source": "CallStarted"}, "call-a")
    newer = index_key({"started_at": at(60), "started_at_source": "CallStarted"}, "call-b")
    assert newer < older
    estimate = index_key({"started_at": at(0), "started_at_source": "estimated"}, "call-a")
    assert estimate != older, "a known start never reuses an estimate's key"
    assert index_key({"started_at": None}, "call-a") is None


def test_keys_are_table_safe():
    assert call_key("a/b#c?d") == call_key("a/b#c?d") and call_key("x") != call_key("y")
    assert not set("/\\#?") & set(call_key("a/b#c?d"))
    assert safe_key("0f1e-22") == "0f1e-22"
    assert not set("/\\#?") & set(safe_key("a/b"))
    assert iso("2026-03-12T10:00:00+01:00") == "2026-03-12T09:00:00.000000Z"
    assert parse_time("not a time") is None


# -- the store ------------------------------------------------------------------------------------------


class Entity(dict):
    metadata: dict[str, Any]


class FakeTable:
    """Table Storage's rules that matter here: unique keys, ETags, range reads in key order."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        self._etags = itertools.count(1)
        self.before_update: list[Any] = []
        self.queries: list[str] = []

    def create_table(self) -> None:
        pass

    def _put(self, entity: dict[str, Any]) -> dict[str, str]:
        etag = f'W/"{next(self._etags)}"'
        self.rows[(entity["PartitionKey"], entity["RowKey"])] = (dict(entity), etag)
        return {"etag": etag}

    def create_entity(self, entity: dict[str, Any]) -> dict[str, str]:
        if (entity["PartitionKey"], entity["RowKey"]) in self.rows:
            raise ResourceExistsError("exists")
        return self._put(entity)

    def upsert_entity(self, entity: dict[str, Any], mode: str = "merge") -> dict[str, str]:
        return self._put(entity)

    def update_entity(self, entity: dict[str, Any], mode: str, etag: str, match_condition: Any) -> dict[str, str]:
        hooks, self.before_update = self.before_update, []
        for hook in hooks:
            hook()
        key = (entity["PartitionKey"], entity["RowKey"])
        if key not in self.rows:
            raise ResourceNotFoundError("gone")
        if self.rows[key][1] != etag:
            raise ResourceModifiedError("etag")
        return self._put(entity)

    def get_entity(self, partition_key: str, row_key: str) -> Entity:
        if (partition_key, row_key) not in self.rows:
            raise ResourceNotFoundError("missing")
        data, etag = self.rows[(partition_key, row_key)]
        entity = Entity(data)
        entity.metadata = {"etag": etag}
        return entity

    def delete_entity(self, partition_key: str, row_key: str) -> None:
        self.rows.pop((partition_key, row_key), None)

    def query_entities(self, query_filter: str, results_per_page: int | None = None, select: Any = None):
        self.queries.append(query_filter)
        partition = query_filter.split("'")[1]
        for (pk, _rk), (data, _) in sorted(self.rows.items()):
            if pk == partition:
                yield Entity(data)

    def index(self) -> list[str]:
        return [rk for (pk, rk) in sorted(self.rows) if pk == LIST_PARTITION]


def test_the_store_keeps_each_event_once_and_folds_the_record():
    table = FakeTable()
    store = RecordStore(table)
    for e in a_call() + a_call()[:2]:  # two redeliveries
        store.add_event(e)
    record = store.get(SERVER_CALL)
    assert record == build_record(SERVER_CALL, rows_of(a_call()))
    assert len([k for k in table.rows if k[0] == call_key(SERVER_CALL)]) == 7  # 6 events + the summary
    assert table.index() == [index_key(record, SERVER_CALL)]
    assert store.get("unknown-call") is None


def test_a_concurrent_change_is_folded_in_not_lost():
    table = FakeTable()
    store, other = RecordStore(table), RecordStore(table)
    start, add, *_, end = a_call()
    store.add_event(start)
    # While the first delivery folds, another lands an event and its summary: the first must retry.
    table.before_update.append(lambda: other.add_event(end))
    store.add_event(add)
    summary = json.loads(table.rows[(call_key(SERVER_CALL), RECORD_ROW)][0]["summary"])
    assert summary["status"] == "ended" and summary["participant_count"] == 1
    assert summary == json.loads(json.dumps(handlers_summary(store)))


def handlers_summary(store: RecordStore) -> dict[str, Any]:
    from core.records import summarize

    return summarize(store.get(SERVER_CALL))


def test_conflicts_that_never_stop_fail_the_delivery():
    from core.records import RecordConflict

    table = FakeTable()
    store = RecordStore(table, attempts=3)
    start, add, *_ = a_call()
    store.add_event(start)

    def meddle() -> None:
        data, _ = table.rows[(call_key(SERVER_CALL), RECORD_ROW)]
        table._put(data)
        table.before_update.append(meddle)

    table.before_update.append(meddle)
    with pytest.raises(RecordConflict):
        store.add_event(add)


def test_the_listing_key_moves_as_the_start_becomes_known_and_old_keys_go():
    table = FakeTable()
    store = RecordStore(table)
    start, add_caller, _, removed, _, end = a_call()
    store.add_event(removed)
    first_key = table.index()
    store.add_event(end)  # start estimated from the duration: earlier
    second_key = table.index()
    store.add_event(add_caller)  # no earlier than the estimate: the key stays
    assert table.index() == second_key
    store.add_event(start)
    final = table.index()
    assert len(first_key) == len(second_key) == len(final) == 1
    assert len({first_key[0], second_key[0], final[0]}) == 3
    assert final == [index_key(store.get(SERVER_CALL), SERVER_CALL)] and "-s-" in final[0]


def test_recent_lists_newest_first_and_skips_leftover_index_rows():
    table = FakeTable()
    store = RecordStore(table)
    for n in range(3):
        call = f"call-{n}"
        store.add_event(CallRecordEvent("s", "CallStarted", call, at(100 * n), {"correlation_id": f"c{n}"}))
    # A key left behind by an earlier estimate (a crash between the summary and the index).
    table.upsert_entity({"PartitionKey": LIST_PARTITION, "RowKey": "0000000000000000000-e-x", "serverCallId": "call-1"})
    listed = store.recent(10)
    assert [r["server_call_id"] for r in listed] == ["call-2", "call-1", "call-0"]
    assert "0000000000000000000-e-x" not in table.index(), "the leftover is dropped"
    assert [r["server_call_id"] for r in store.recent(2)] == ["call-2", "call-1"]
    assert all(q == f"PartitionKey eq '{LIST_PARTITION}'" or q.startswith("PartitionKey eq 'c") for q in table.queries)


def test_a_flow_outcome_is_rewritten_not_added_when_the_hook_runs_again(monkeypatch):
    table = FakeTable()
    store = RecordStore(table)
    monkeypatch.setattr(handlers, "_store", lambda settings=None: store)
    state, runtime = transferred_state(), SimpleNamespace(settings=None)
    handlers.record_flow_outcome(state, runtime)
    handlers.record_flow_outcome(state, runtime)
    record = store.get(SERVER_CALL)
    assert len(record["flows"]) == 1 and record["flows"][0]["transfer_result"] == "accepted"
    # A call that never got a server call id has no record to join.
    handlers.record_flow_outcome(CallState(call_ref="ref-2", status="ended"), runtime)
    assert len(table.rows) == 3  # the flow row, the summary, the index row


def test_the_flow_outcome_hook_is_registered():
    from core import lifecycle

    assert handlers.record_flow_outcome in lifecycle._call_ended


# -- the API ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "101", "ten", "-3"])
def test_limit_out_of_range_is_refused_naming_the_field(value):
    with pytest.raises(RequestError) as caught:
        handlers.parse_limit(value)
    assert caught.value.status == 400 and caught.value.fields[0]["field"] == "limit"


def test_limit_defaults_to_twenty():
    assert handlers.parse_limit(None) == handlers.parse_limit("") == 20
    assert handlers.parse_limit("100") == 100


def test_an_unknown_call_is_a_404():
    with pytest.raises(RequestError) as caught:
        handlers.get_record("nope", store=RecordStore(FakeTable()))
    assert caught.value.status == 404


def test_openapi_lists_the_records_routes():
    paths = control.openapi()["paths"]
    listing = paths["/api/records"]["get"]
    assert listing["operationId"] == "list_records"
    assert listing["parameters"] == [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "How many calls (1-100, default 20)",
            "schema": {"type": "integer"},
        }
    ]
    one = paths["/api/records/{server_call_id}"]["get"]
    assert one["operationId"] == "get_record" and one["parameters"][0]["name"] == "server_call_id"


def test_the_records_table_is_a_setting_of_its_own():
    from core.settings import load
    from tests.unit.test_settings import base_env

    assert load(base_env()).storage.records_table == "callrecords"
    storage = load(base_env(RECORDS_TABLE="reports", OUTBOUND_TABLE="campaigns")).storage
    assert (storage.records_table, storage.outbound_table) == ("reports", "campaigns")
