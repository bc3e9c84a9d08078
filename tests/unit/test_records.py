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
from azure.data.tables import TableTransactionError

from core.calls.events import CallEvent, EventFormatError, parse_call_event, parse_time
from core.calls.state import CallState
from core.flows.engine import FlowEngine, RecordingOptions
from core.outbound import control
from core.outbound.control import RequestError
from core.platform.tables import row_key as safe_key
from core.records.events import CallRecordEvent, flow_outcome, iso
from core.records.fold import build_record, summarize
from core.records.layout import (
    INDEX_SHARDS,
    INLINE_CHUNK,
    INLINE_LIMIT,
    LEGACY_PARTITION,
    RECORD_ROW,
    call_key,
    flow_entry,
    flows_of,
    index_key,
    index_partition,
    index_pending,
    is_index_partition,
    pack_rows,
    summary_entity,
    unpack_rows,
)
from core.records.store import RecordStore
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
    flow = flow_entry(flow_outcome(transferred_state()))
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


_COMPARE = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


def matcher(query_filter: str) -> Any:
    """An OData filter of ``<property> <op> '<text>'`` comparisons joined by ``and``, as a test of a row."""
    terms = []
    for term in query_filter.split(" and "):
        name, op, value = term.split(" ", 2)
        assert value.startswith("'") and value.endswith("'"), term
        terms.append((name, _COMPARE[op], value[1:-1].replace("''", "'")))
    return lambda row: all(name in row and compare(row[name], value) for name, compare, value in terms)


class FakeTable:
    """Table Storage's rules that matter here: unique keys, ETags, range reads in key order, and entity group
    transactions (one partition, all or nothing, the failing operation's index in the error). ``calls`` counts
    requests, as the service would bill them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        self._etags = itertools.count(1)
        self.before_update: list[Any] = []
        self.before_index: list[Any] = []
        self.queries: list[str] = []
        self.calls: list[str] = []

    def create_table(self) -> None:
        pass

    def _put(self, entity: dict[str, Any]) -> dict[str, str]:
        etag = f'W/"{next(self._etags)}"'
        self.rows[(entity["PartitionKey"], entity["RowKey"])] = (dict(entity), etag)
        return {"etag": etag}

    def _hooks(self) -> None:
        hooks, self.before_update = self.before_update, []
        for hook in hooks:
            hook()

    def _apply(self, op: str, entity: dict[str, Any], options: dict[str, Any]) -> dict[str, str]:
        """One write; raises (before changing anything) as the service would refuse it."""
        key = (entity["PartitionKey"], entity["RowKey"])
        mode = str(getattr(options.get("mode"), "value", options.get("mode") or "merge")).lower()
        if op == "create":
            if key in self.rows:
                raise ResourceExistsError("exists")
            return self._put(entity)
        if op == "delete":
            if key not in self.rows:
                raise ResourceNotFoundError("missing")
            del self.rows[key]
            return {}
        if op == "update":
            if key not in self.rows:
                raise ResourceNotFoundError("gone")
            if options.get("match_condition") is not None and self.rows[key][1] != options.get("etag"):
                raise ResourceModifiedError("etag")
        base = self.rows[key][0] if mode == "merge" and key in self.rows else {}
        return self._put({**base, **entity})

    def create_entity(self, entity: dict[str, Any]) -> dict[str, str]:
        self.calls.append("create")
        return self._apply("create", entity, {})

    def upsert_entity(self, entity: dict[str, Any], mode: str = "merge") -> dict[str, str]:
        self.calls.append("upsert")
        return self._apply("upsert", entity, {"mode": mode})

    def update_entity(
        self, entity: dict[str, Any], mode: str, etag: str | None = None, match_condition: Any = None
    ) -> dict[str, str]:
        self.calls.append("update")
        self._hooks()
        return self._apply("update", entity, {"mode": mode, "etag": etag, "match_condition": match_condition})

    def submit_transaction(self, operations: list[Any]) -> list[dict[str, str]]:
        self.calls.append("transaction")
        operations = list(operations)
        assert 0 < len(operations) <= 100 and len({op[1]["PartitionKey"] for op in operations}) == 1
        if is_index_partition(operations[0][1]["PartitionKey"]):
            hooks, self.before_index = self.before_index, []
            for hook in hooks:
                hook()
        else:
            self._hooks()
        saved, etags = dict(self.rows), self._etags
        results = []
        for index, (op, entity, *options) in enumerate(operations):
            try:
                results.append(self._apply(op, entity, options[0] if options else {}))
            except (ResourceExistsError, ResourceNotFoundError, ResourceModifiedError) as exc:
                self.rows, self._etags = saved, etags  # all or nothing
                code = {
                    ResourceExistsError: "EntityAlreadyExists",
                    ResourceNotFoundError: "ResourceNotFound",
                    ResourceModifiedError: "UpdateConditionNotSatisfied",
                }[type(exc)]
                error = TableTransactionError(message=f"{index}:{exc}")
                error.error_code = code
                raise error from None
        return results

    def get_entity(self, partition_key: str, row_key: str, select: Any = None) -> Entity:
        self.calls.append("get")
        if (partition_key, row_key) not in self.rows:
            raise ResourceNotFoundError("missing")
        data, etag = self.rows[(partition_key, row_key)]
        entity = Entity({k: v for k, v in data.items() if select is None or k in select})
        entity.metadata = {"etag": etag}
        return entity

    def delete_entity(self, partition_key: str, row_key: str) -> None:
        self.calls.append("delete")  # a missing entity is no error (the SDK takes a 404 as done)
        self.rows.pop((partition_key, row_key), None)

    def query_entities(self, query_filter: str, results_per_page: int | None = None, select: Any = None):
        """Filters of comparisons joined by ``and`` (``PartitionKey ge 'a' and PartitionKey lt 'b'``), in key
        order, as the service answers them; the request counts when the first result is asked for."""
        self.calls.append("query")
        self.queries.append(query_filter)
        return self._query(matcher(query_filter), select)

    def _query(self, match: Any, select: Any):
        for (_pk, _rk), (data, _) in sorted(self.rows.items()):
            if match(data):
                yield Entity({k: v for k, v in data.items() if select is None or k in select})

    def index(self) -> list[str]:
        """The listing index's row keys, newest first, whichever partition they are in."""
        return sorted(rk for (pk, rk) in self.rows if is_index_partition(pk))

    def index_rows(self) -> list[tuple[str, str]]:
        return sorted((pk, rk) for (pk, rk) in self.rows if is_index_partition(pk))

    def summary(self, server_call_id: str = SERVER_CALL) -> dict[str, Any]:
        return self.rows[(call_key(server_call_id), RECORD_ROW)][0]


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
    from core.records.fold import summarize

    return summarize(store.get(SERVER_CALL))


def test_conflicts_that_never_stop_fail_the_delivery():
    from core.records.store import RecordConflict

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
    leftover = "0000000000000000000-e-x"
    table.upsert_entity({"PartitionKey": index_partition(leftover), "RowKey": leftover, "serverCallId": "call-1"})
    listed = store.recent(10)
    assert [r["server_call_id"] for r in listed] == ["call-2", "call-1", "call-0"]
    assert leftover not in table.index(), "the leftover is dropped"
    assert [r["server_call_id"] for r in store.recent(2)] == ["call-2", "call-1"]
    index_reads = [q for q in table.queries if not q.startswith("PartitionKey eq 'c")]
    assert index_reads == 2 * [
        *(f"PartitionKey ge 'i{s:02d}-' and PartitionKey lt 'i{s:02d}.'" for s in range(8)),
        f"PartitionKey eq '{LEGACY_PARTITION}'",
    ], "a listing is one range read per shard and one of the earlier versions' partition"


def test_a_flow_outcome_is_rewritten_not_added_when_the_hook_runs_again():
    table = FakeTable()
    store = RecordStore(table)
    state, services = transferred_state(), SimpleNamespace(records=store)
    handlers.record_flow_outcome(state, services)
    handlers.record_flow_outcome(state, services)
    record = store.get(SERVER_CALL)
    assert len(record["flows"]) == 1 and record["flows"][0]["transfer_result"] == "accepted"
    # A call that never got a server call id has no record to join.
    handlers.record_flow_outcome(CallState(call_ref="ref-2", status="ended"), services)
    assert len(table.rows) == 2  # the summary (which holds the flow outcome), the index row


# -- fewer round trips: the rows ride in the summary, one transaction per row -------------------------------------


def test_rows_ride_in_the_summary_in_pieces_a_property_takes():
    rows = {
        f"ev-{n}": {"kind": "event", "id": str(n), "type": "CallParticipantAdded", "data": {"x": "y" * 90}}
        for n in range(700)
    }
    packed = pack_rows(rows)
    assert packed["rowChunks"] == len([k for k in packed if k.startswith("rows") and k != "rowChunks"]) > 1
    assert all(len(packed[f"rows{n}"]) <= INLINE_CHUNK for n in range(packed["rowChunks"]))
    assert unpack_rows(packed) == rows
    assert pack_rows(rows, limit=1000) == {"rowChunks": 0} and unpack_rows({"rowChunks": 0}) is None
    assert unpack_rows({"summary": "{}"}) is None, "a summary written before the rows rode along"


def test_the_summary_knows_which_listing_key_is_in_the_index():
    start, added, *_ = a_call()
    estimated = {"ev-a": added.row()}
    first = summary_entity(SERVER_CALL, build_record(SERVER_CALL, estimated.values()), estimated, None)
    key = first["indexKey"]
    assert "-e-" in key and first["indexedKey"] == "" and first["staleIndexKeys"] == "[]" and index_pending(first)
    indexed = {**first, "indexedKey": key}  # what the store marks once the index row is in
    assert not index_pending(indexed)
    again = summary_entity(SERVER_CALL, build_record(SERVER_CALL, estimated.values()), estimated, indexed)
    assert again == indexed, "nothing new: the same summary, nothing to write"
    known = {**estimated, "ev-s": start.row()}
    moved = summary_entity(SERVER_CALL, build_record(SERVER_CALL, known.values()), known, indexed)
    assert "-s-" in moved["indexKey"] and moved["indexedKey"] == "" and json.loads(moved["staleIndexKeys"]) == [key]
    assert index_pending(moved)
    # Written by an earlier version: no indexedKey, a left key still listed as stale.
    older = {"indexKey": moved["indexKey"], "staleIndexKeys": json.dumps(["0-e-x"])}
    after = summary_entity(SERVER_CALL, build_record(SERVER_CALL, known.values()), known, older)
    assert after["indexedKey"] == "" and json.loads(after["staleIndexKeys"]) == ["0-e-x"] and index_pending(after)


def test_a_new_event_costs_a_read_and_a_transaction_and_a_redelivery_a_read():
    table = FakeTable()
    store = RecordStore(table)
    start, add_caller, add_agent, rm_caller, rm_agent, end = a_call()
    store.add_event(start)  # no summary yet: the partition is read, the listing key written and marked
    assert table.calls == ["get", "query", "transaction", "transaction", "update"]
    for e in (add_caller, add_agent, rm_caller, rm_agent, end):
        table.calls.clear()
        store.add_event(e)
        assert table.calls == ["get", "transaction"], e.type
    for e in (end, start):
        table.calls.clear()
        store.add_event(e)
        assert table.calls == ["get"], "a redelivery writes nothing"
    flow = flow_outcome(transferred_state())
    table.calls.clear()
    store.add_flow(SERVER_CALL, flow)
    assert table.calls == ["update"]  # merged onto the summary, marked pending: no read, nothing to conflict
    table.calls.clear()
    store.add_flow(SERVER_CALL, flow)
    assert table.calls == ["update"]
    record = store.get(SERVER_CALL)
    assert record == build_record(SERVER_CALL, [*rows_of(a_call()), flow_entry(flow)])  # get takes it in
    assert table.summary()["flowPending"]
    assert json.loads(table.summary()["summary"]) != summarize(record)
    table.calls.clear()
    assert store.recent(10) == [summarize(record)]  # the listing folds the outcome in, from the summary alone
    reads = INDEX_SHARDS + 1  # the shards' range reads and the earlier versions' partition
    assert table.calls[:reads] == ["query"] * reads and "query" not in table.calls[reads:]
    assert table.calls.count("transaction") == 1
    assert "flowPending" not in table.summary()
    table.calls.clear()
    store.add_event(a_call()[0])
    assert table.calls == ["get"], "the outcome is carried by every fold: a redelivery still writes nothing"
    assert unpack_rows(table.summary()) == store._rows(call_key(SERVER_CALL))
    assert table.index() == [index_key(record, SERVER_CALL)] and not index_pending(table.summary())


def test_a_moving_listing_key_costs_two_more_requests_once():
    table = FakeTable()
    store = RecordStore(table)
    start, add_caller, *_ = a_call()
    store.add_event(add_caller)
    estimate = table.index()
    table.calls.clear()
    store.add_event(start)  # the summary, then the index (new key in, old key out), then the mark
    assert table.calls == ["get", "transaction", "transaction", "update"]
    assert table.index() == [index_key(store.get(SERVER_CALL), SERVER_CALL)] != estimate
    assert table.summary()["staleIndexKeys"] == "[]"
    table.calls.clear()
    store.add_event(a_call()[2])
    assert table.calls == ["get", "transaction"], "a left key is deleted once, not on every event after"


@pytest.mark.parametrize("then", ["redelivered", "next event"])
def test_a_crash_between_the_summary_and_the_index_is_mended(then):
    table = FakeTable()
    store = RecordStore(table)
    start, add_caller, *_ = a_call()

    def host_killed() -> None:
        raise RuntimeError("host killed")

    table.before_index.append(host_killed)
    with pytest.raises(RuntimeError):
        store.add_event(start)
    assert table.index() == [] and index_pending(table.summary())
    table.calls.clear()
    store.add_event(start if then == "redelivered" else add_caller)
    if then == "redelivered":
        assert table.calls == ["get", "transaction", "update"], "in the summary already: only the index is written"
    assert table.index() == [index_key(store.get(SERVER_CALL), SERVER_CALL)] and not index_pending(table.summary())


def test_a_write_that_wins_while_another_indexes_leaves_one_listing():
    table = FakeTable()
    store, other = RecordStore(table), RecordStore(table)
    start, add_caller, *_ = a_call()
    # While the first delivery (an estimated start) indexes, the other lands CallStarted and indexes it first.
    table.before_index.append(lambda: other.add_event(start))
    store.add_event(add_caller)
    record = store.get(SERVER_CALL)
    key = index_key(record, SERVER_CALL)
    assert "-s-" in key and not index_pending(table.summary())
    assert json.loads(table.summary()["summary"]) == summarize(record)
    # The first delivery's index row landed after the other deleted it (a key the summary has left): its mark
    # fails on the summary's ETag, it sees the key moved on and deletes its row again.
    assert table.index() == [key]
    assert [r["server_call_id"] for r in store.recent(10)] == [SERVER_CALL]


def test_a_summary_from_before_the_rows_rode_along_is_folded_from_the_rows():
    table = FakeTable()
    partition = call_key(SERVER_CALL)
    start, add_caller, add_agent, *_ = a_call()
    for e in (start, add_caller):  # rows and a summary as the earlier version wrote them
        table.create_entity(
            {
                "PartitionKey": partition,
                "RowKey": f"ev-{e.id}",
                "kind": "event",
                "eventId": e.id,
                "type": e.type,
                "time": e.time,
                "serverCallId": SERVER_CALL,
                "data": json.dumps(e.fields),
            }
        )
    old = build_record(SERVER_CALL, rows_of([start, add_caller]))
    key = index_key(old, SERVER_CALL)
    table.create_entity(
        {
            "PartitionKey": partition,
            "RowKey": RECORD_ROW,
            "serverCallId": SERVER_CALL,
            "status": "active",
            "startedAt": old["started_at"],
            "indexKey": key,
            "staleIndexKeys": json.dumps(["0-e-left"]),
            "summary": json.dumps(summarize(old)),
        }
    )
    for row in (key, "0-e-left"):
        table.upsert_entity({"PartitionKey": index_partition(row), "RowKey": row, "serverCallId": SERVER_CALL})
    table.calls.clear()
    store = RecordStore(table)
    store.add_event(add_agent)
    assert table.calls[:3] == ["get", "query", "transaction"]
    assert unpack_rows(table.summary()) == store._rows(partition) and len(unpack_rows(table.summary())) == 3
    assert table.index() == [key] and not index_pending(table.summary())
    assert store.get(SERVER_CALL) == build_record(SERVER_CALL, rows_of([start, add_caller, add_agent]))
    table.calls.clear()
    store.add_event(a_call()[3])
    assert table.calls == ["get", "transaction"], "from then on the summary carries the rows"


def test_a_row_the_summary_does_not_carry_is_taken_in_on_its_redelivery():
    table = FakeTable()
    store = RecordStore(table)
    start, add_caller, add_agent, *_ = a_call()
    store.add_event(start)
    store.add_event(add_caller)
    # A row an earlier version wrote before it failed to fold it in (the delivery failed, Event Grid retries).
    table.create_entity(
        {
            "PartitionKey": call_key(SERVER_CALL),
            "RowKey": f"ev-{add_agent.id}",
            "kind": "event",
            "eventId": add_agent.id,
            "type": add_agent.type,
            "time": add_agent.time,
            "serverCallId": SERVER_CALL,
            "data": json.dumps(add_agent.fields),
        }
    )
    table.calls.clear()
    store.add_event(add_agent)
    assert table.calls == ["get", "transaction", "get", "query", "transaction"]
    summary = json.loads(table.summary()["summary"])
    assert summary["participant_count"] == 2
    assert unpack_rows(table.summary()) == store._rows(call_key(SERVER_CALL))


def test_refresh_folds_the_summary_again_from_the_rows_in_the_table():
    table = FakeTable()
    store = RecordStore(table)
    start, add_caller, *_ = a_call()
    store.add_event(start)
    table.create_entity(  # a row the summary does not carry
        {
            "PartitionKey": call_key(SERVER_CALL),
            "RowKey": f"ev-{add_caller.id}",
            "kind": "event",
            "eventId": add_caller.id,
            "type": add_caller.type,
            "time": add_caller.time,
            "serverCallId": SERVER_CALL,
            "data": json.dumps(add_caller.fields),
        }
    )
    table.calls.clear()
    assert store.refresh(SERVER_CALL) == build_record(SERVER_CALL, rows_of([start, add_caller]))
    assert table.calls == ["get", "query", "transaction"]
    assert unpack_rows(table.summary()) == store._rows(call_key(SERVER_CALL))
    table.calls.clear()
    store.refresh(SERVER_CALL)
    assert table.calls == ["get", "query"], "nothing new: nothing written"


def test_a_call_with_too_many_rows_for_its_summary_reads_them_with_a_query():
    table = FakeTable()
    store = RecordStore(table, inline_limit=1500)
    events = a_call()
    for e in events:
        table.calls.clear()
        store.add_event(e)
    assert table.summary()["rowChunks"] == 0 and "rows0" not in table.summary()
    assert table.calls == ["get", "query", "transaction"]
    table.calls.clear()
    store.add_event(events[0])
    assert table.calls == ["get", "query"], "a redelivery still writes nothing"
    record = store.get(SERVER_CALL)
    assert record == build_record(SERVER_CALL, rows_of(events))
    assert json.loads(table.summary()["summary"]) == summarize(record)


def test_a_failure_that_is_no_conflict_fails_the_delivery():
    table = FakeTable()
    store = RecordStore(table)

    def too_large(operations: Any) -> Any:
        error = TableTransactionError(message="0:The property value exceeds the maximum allowed size (64KB).")
        error.error_code = "PropertyValueTooLarge"
        raise error

    table.submit_transaction = too_large
    with pytest.raises(TableTransactionError):
        store.add_event(a_call()[0])


def adding(e: CallRecordEvent) -> Any:
    return lambda store: store.add_event(e)


@pytest.mark.parametrize("inline_limit", [INLINE_LIMIT, 0], ids=["rows in the summary", "rows by query"])
@pytest.mark.parametrize("seed", range(25))
def test_any_order_redelivery_and_interleaving_give_the_same_summary_and_listing(seed, inline_limit):
    table = FakeTable()
    stores = [RecordStore(table, inline_limit=inline_limit) for _ in range(3)]
    chance = random.Random(seed)
    flow = flow_outcome(transferred_state())
    writes: list[Any] = [adding(e) for e in a_call()]
    writes.append(lambda s: s.add_flow(SERVER_CALL, flow))
    writes += chance.sample(writes, k=4)  # redeliveries
    chance.shuffle(writes)
    pending = list(writes)
    while pending:
        write = pending.pop()
        hooks: list[Any] = []
        if pending and chance.random() < 0.5:  # another instance lands a write in the middle of this one
            other = pending.pop()
            hooks = chance.choice([table.before_update, table.before_index])
            hooks.append(lambda other=other: other(chance.choice(stores)))
        write(chance.choice(stores))
        for hook in list(hooks):  # not reached (nothing to index, say): it comes after instead
            hooks.remove(hook)
            hook()
    expected = build_record(SERVER_CALL, [*rows_of(a_call()), flow_entry(flow)])
    assert stores[0].get(SERVER_CALL) == expected
    assert json.loads(table.summary()["summary"]) == summarize(expected)
    if inline_limit:
        assert unpack_rows(table.summary()) == stores[0]._rows(call_key(SERVER_CALL))
    assert [r["server_call_id"] for r in stores[0].recent(10)] == [SERVER_CALL]
    assert table.index() == [index_key(expected, SERVER_CALL)]
    assert not index_pending(table.summary())


def test_the_flow_outcome_hook_is_registered():
    from handlers.callbacks import CALL_ENDED_HOOKS

    assert handlers.record_flow_outcome in CALL_ENDED_HOOKS


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
        handlers.get_record("nope", SimpleNamespace(records=RecordStore(FakeTable())))
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
    from core.platform.settings import load
    from tests.unit.test_settings import base_env

    assert load(base_env()).storage.records_table == "callrecords"
    storage = load(base_env(RECORDS_TABLE="reports", OUTBOUND_TABLE="campaigns")).storage
    assert (storage.records_table, storage.outbound_table) == ("reports", "campaigns")


def test_a_flow_outcome_in_a_row_of_its_own_from_an_earlier_version_is_still_folded():
    table = FakeTable()
    store = RecordStore(table)
    for e in a_call():
        store.add_event(e)
    flow = flow_outcome(transferred_state())
    partition = call_key(SERVER_CALL)
    # What the earlier add_flow left: the row, and a mark that the summary did not fold it.
    table.upsert_entity(
        {"PartitionKey": partition, "RowKey": "flow-ref-1", "kind": "flow", "time": flow["connected_at"],
         "data": json.dumps(flow)},
        mode="replace",
    )
    table.update_entity({"PartitionKey": partition, "RowKey": RECORD_ROW, "staleRows": "x"}, mode="merge")
    expected = build_record(SERVER_CALL, [*rows_of(a_call()), flow_entry(flow)])
    assert store.get(SERVER_CALL) == expected
    assert store.recent(10) == [summarize(expected)]
    assert "staleRows" not in table.summary()
    store.add_flow(SERVER_CALL, flow)  # the hook run again by this version: the same leg, counted once
    assert store.recent(10) == [summarize(expected)] and store.get(SERVER_CALL) == expected


def test_a_flow_outcome_too_large_for_a_property_keeps_its_plain_fields():
    flow = flow_outcome(transferred_state()) | {"tones": ["1"] * 20_000}
    entry = flow_entry(flow)
    assert len(json.dumps(entry)) < INLINE_CHUNK
    assert entry["data"]["truncated"] is True and "tones" not in entry["data"]
    assert entry["data"]["transfer_result"] == flow["transfer_result"]
    small = flow_entry(flow_outcome(transferred_state()))
    assert "truncated" not in small["data"] and small["id"] == "flow-ref-1"


def test_a_flow_outcome_that_does_not_parse_is_left_out_of_the_record():
    good = flow_entry(flow_outcome(transferred_state()))
    summary = {"flow_a": "{not json", "flow_b": json.dumps(good), "flow_c": 3, "summary": "{}"}
    assert flows_of(summary) == {good["id"]: good}
