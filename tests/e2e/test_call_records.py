"""Call records, end to end: the simulator's Event Grid delivers CallStarted, CallEnded,
CallParticipantAdded and CallParticipantRemoved to the app's call_records function, the IVR's
outcome joins them when the call ends for the app, and the records API reads them back from
Azurite. Duplicate and out-of-order deliveries (simulator faults) still give one correct record."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
import urllib.parse
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient

from core.records.events import CallRecordEvent, flow_outcome, iso
from core.records.fold import build_record, summarize
from core.records.layout import (
    INLINE_LIMIT,
    RECORD_ROW,
    call_key,
    flow_entry,
    index_key,
    index_partition,
    index_pending,
    unpack_rows,
)
from core.records.store import RecordStore
from tests.unit import test_records as unit

CALL_EVENTS = ("CallStarted", "CallEnded", "CallParticipantAdded", "CallParticipantRemoved")
SALES = "4:+14255550101"


def sim_events(stack, server_call_id: str) -> list[dict[str, Any]]:
    """What the simulator published to Event Grid for this call."""
    published = stack.ctl("GET", "/__sim/events")["eventgrid"]
    return [
        e
        for e in published
        if e["data"].get("serverCallId") == server_call_id and e["eventType"].rsplit(".", 1)[-1] in CALL_EVENTS
    ]


def deliveries(stack, server_call_id: str) -> list[dict[str, Any]]:
    """Event Grid's successful deliveries to call_records, in the order the app took them."""
    return [
        e
        for e in stack.entries(server_call_id)
        if e["kind"] == "eventgrid" and e.get("subscription") == "call_records" and e.get("id")
    ]


def record_of(stack, server_call_id: str) -> dict[str, Any]:
    status, body = stack.app.call_api("GET", f"records/{quote(server_call_id, safe='')}")
    assert status == 200, body
    return body


def settle(stack) -> None:
    stack.ctl("GET", "/__sim/idle?timeout=15")


def caller_hangs_up_mid_menu(stack, caller: str) -> dict[str, Any]:
    call = stack.place(**{"from": caller, "script": [{"on": "recognize", "hangup": True, "delay": 0.02}]})
    summary = stack.wait_finished(call["serverCallId"])
    assert summary["state"] == "ended"
    settle(stack)
    return call


def assert_matches_what_was_published(stack, record: dict[str, Any], server_call_id: str) -> None:
    """One record whose every part is what the service published: each event once."""
    published = sim_events(stack, server_call_id)
    assert sorted(e["id"] for e in record["events"]) == sorted(e["id"] for e in published)
    by_type = {t: [e for e in published if e["eventType"].endswith("." + t)] for t in CALL_EVENTS}
    [started], [ended] = by_type["CallStarted"], by_type["CallEnded"]
    assert record["status"] == "ended" and record["complete"] is True
    assert record["started_at"] == iso(started["eventTime"]) and record["started_at_source"] == "CallStarted"
    assert record["ended_at"] == iso(ended["eventTime"])
    assert record["duration_seconds"] == pytest.approx(ended["data"]["callDurationInSeconds"])
    assert record["end_reason"]["phrase"] == ended["data"]["reason"]["phrase"]
    assert record["started_by"]["id"] == started["data"]["startedBy"]["communicationIdentifier"]["rawId"]
    assert record["correlation_id"] == started["data"]["correlationId"]
    for kind, edge in (("CallParticipantAdded", "joined_at"), ("CallParticipantRemoved", "left_at")):
        expected = {e["data"]["user"]["communicationIdentifier"]["rawId"]: iso(e["eventTime"]) for e in by_type[kind]}
        assert {p["id"]: p[edge] for p in record["participants"]} == expected, kind


def test_a_transferred_ivr_call_ends_with_one_full_record(stack):
    caller = "+14255550031"
    call = stack.place(**{"from": caller, "script": [{"on": "recognize", "press": "1"}]})
    scid = call["serverCallId"]
    stack.wait_finished(scid)  # the app's leg left after the transfer; the caller and sales talk on
    assert "CallTransferAccepted -> 200" in stack.timeline(scid)
    ccid = stack.connection_id(scid)
    talking = record_of(stack, scid)
    assert talking["status"] == "active" and talking["ended_at"] is None
    assert {p["id"] for p in talking["participants"]} == {"4:" + caller, SALES}

    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {"participant": "4:" + caller})
    settle(stack)
    text = stack.timeline(scid)
    for kind in CALL_EVENTS:
        assert f"{kind} -> 202" in text, kind  # the app's call_records function took each one

    record = record_of(stack, scid)
    assert_matches_what_was_published(stack, record, scid)
    assert record["started_by"]["id"] == "4:" + caller
    people = {p["id"]: p for p in record["participants"]}
    assert set(people) == {"4:" + caller, SALES}
    assert people["4:" + caller]["joined_at"] < people[SALES]["joined_at"] < people[SALES]["left_at"]
    assert people[SALES]["left_at"] <= record["ended_at"]

    [flow] = record["flows"]
    assert flow["flow"] == "customer_service" and flow["call_connection_id"] == ccid
    assert flow["menu_choices"] == [{"node": "main_menu", "choice": "sales", "by": "dtmf"}]
    assert flow["transfer_target"] == "+14255550101" and flow["transfer_result"] == "accepted"
    assert flow["ended_reason"] and flow["duration_seconds"] is not None and flow["duration_seconds"] > 0
    assert flow["connected_at"] <= flow["ended_at"] <= record["ended_at"]
    assert flow["recording_id"] is None  # RECORDING_MODE is off for this app
    assert "Traceback" not in stack.app.logs()


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "eventgrid", "match": "CallEnded", "action": "duplicate"},
        {"kind": "eventgrid", "match": "CallParticipantAdded", "action": "duplicate"},
        {"kind": "eventgrid", "match": "CallEnded", "action": "delay", "delay": 0.8},
    ],
    ids=lambda f: f"{f['match']}-{f['action']}",
)
def test_duplicate_and_late_deliveries_give_one_correct_record(stack, fault):
    stack.ctl("POST", "/__sim/faults", fault)
    call = caller_hangs_up_mid_menu(stack, "+14255550032")
    scid = call["serverCallId"]
    taken = [e["type"] for e in deliveries(stack, scid)]
    if fault["action"] == "duplicate":
        assert taken.count(fault["match"]) == 2, taken  # Event Grid delivered it twice, the app took both
    else:
        assert taken[-1] == "CallEnded", taken  # delivered after everything else
    record = record_of(stack, scid)
    assert_matches_what_was_published(stack, record, scid)
    assert [e["type"] for e in record["events"]].count(fault["match"]) == 1
    [flow] = record["flows"]
    assert flow["menu_choices"] == [] and flow["transfer_target"] is None
    _, listing = stack.app.call_api("GET", "records?limit=100")
    assert [r["server_call_id"] for r in listing["records"]].count(scid) == 1


def test_call_ended_before_call_started_still_gives_a_correct_record(stack):
    stack.ctl("POST", "/__sim/faults", {"kind": "eventgrid", "match": "CallStarted", "action": "delay", "delay": 2.0})
    call = stack.place(**{"from": "+14255550033", "script": [{"on": "recognize", "hangup": True, "delay": 0.02}]})
    scid = call["serverCallId"]
    # Before CallStarted is in: the record knows the call ended, and estimates its start.
    deadline = time.monotonic() + 10
    early: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, early = stack.app.call_api("GET", f"records/{quote(scid, safe='')}")
        if status == 200 and early["status"] == "ended":
            break
        time.sleep(0.05)
    assert early.get("status") == "ended", early
    assert early["complete"] is False and early["started_at_source"] == "estimated"
    assert "CallStarted" not in [e["type"] for e in early["events"]]

    stack.wait_finished(scid)
    settle(stack)
    taken = [e["type"] for e in deliveries(stack, scid)]
    assert taken.index("CallEnded") < taken.index("CallStarted"), taken
    record = record_of(stack, scid)
    assert_matches_what_was_published(stack, record, scid)
    assert early["started_at"] <= record["started_at"] <= record["ended_at"]
    _, listing = stack.app.call_api("GET", "records?limit=100")
    listed = [r for r in listing["records"] if r["server_call_id"] == scid]
    assert len(listed) == 1 and listed[0]["started_at"] == record["started_at"]  # its listing key moved


def test_the_list_shows_recent_calls_newest_first(stack):
    placed = [caller_hangs_up_mid_menu(stack, f"+1425555004{n}")["serverCallId"] for n in range(3)]
    status, body = stack.app.call_api("GET", "records?limit=3")
    assert status == 200, body
    listed = body["records"]
    assert [r["server_call_id"] for r in listed] == list(reversed(placed))
    starts = [r["started_at"] for r in listed]
    assert starts == sorted(starts, reverse=True)
    newest = listed[0]
    assert newest["status"] == "ended" and newest["participant_count"] == 1
    assert newest["participants"] == ["4:+14255550042"] and newest["flows"][0]["flow"] == "customer_service"
    # The default page holds them too, after anything newer.
    _, default = stack.app.call_api("GET", "records")
    assert [r["server_call_id"] for r in default["records"][:3]] == list(reversed(placed))


def test_the_records_api_checks_its_input_and_key(stack):
    status, body = stack.app.call_api("GET", "records?limit=0")
    assert status == 400 and body["fields"][0]["field"] == "limit"
    status, body = stack.app.call_api("GET", "records/no-such-call")
    assert status == 404 and "no-such-call" in body["error"]
    status, _ = stack.app.call_api("GET", "records", key="wrong")
    assert status == 401
    status, _ = stack.app.call_api("GET", "records/no-such-call", key="")
    assert status == 401
    status, spec = stack.app.call_api("GET", "openapi.json")
    assert {"/api/records", "/api/records/{server_call_id}"} <= set(spec["paths"])


# -- the store against Azurite: requests per event, any order, redelivery, concurrent instances -------------------


class CountingTransport(RequestsTransport):
    """The HTTP requests a table client sends (retries included), each as its method and what it addresses."""

    def __init__(self) -> None:
        super().__init__(use_env_settings=False)
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def send(self, request: Any, **kwargs: Any) -> Any:
        path = urllib.parse.unquote(urllib.parse.urlsplit(request.url).path)
        if "RowKey='" in path:
            target = path.split("RowKey='", 1)[1].split("'", 1)[0]
        elif path.endswith("()"):
            target = "query"
        else:
            target = path.rsplit("/", 1)[-1]
        with self._lock:
            self.sent.append(f"{request.method} {target}")
        return super().send(request, **kwargs)

    def during(self, action: Any) -> list[str]:
        with self._lock:
            self.sent.clear()
        action()
        with self._lock:
            return list(self.sent)


def new_table() -> str:
    return "rec" + uuid.uuid4().hex[:12]


def table_client(azurite, name: str, transport: Any = None) -> TableClient:
    return TableClient.from_connection_string(
        azurite.connection_string, table_name=name, transport=transport or RequestsTransport(use_env_settings=False)
    )


def of_call(events: list[CallRecordEvent], server_call_id: str) -> list[CallRecordEvent]:
    return [dataclasses.replace(e, server_call_id=server_call_id) for e in events]


def assert_stored_as_folded(
    store: RecordStore, client: TableClient, server_call_id: str, rows: list[Any], carried: bool = True
) -> None:
    """The record, its summary row (and the rows it carries) and its one listing entry are what the rows fold to."""
    expected = build_record(server_call_id, rows)
    assert store.get(server_call_id) == expected
    summary = client.get_entity(call_key(server_call_id), RECORD_ROW)
    if summary.get("flowPending"):  # a flow outcome came last: the summary takes it in at its next read or write
        assert summarize(expected) in store.recent(100)
        summary = client.get_entity(call_key(server_call_id), RECORD_ROW)
        assert "flowPending" not in summary
    assert json.loads(summary["summary"]) == summarize(expected)
    assert unpack_rows(summary) == (store._rows(call_key(server_call_id)) if carried else None)
    assert not index_pending(summary)
    listed = client.query_entities("(PartitionKey ge 'i' and PartitionKey lt 'j') or PartitionKey eq 'recent'")
    entries = [(e["PartitionKey"], e["RowKey"]) for e in listed if e["RowKey"].endswith(call_key(server_call_id))]
    key = index_key(expected, server_call_id)
    assert entries == [(index_partition(key), key)]


def test_a_new_event_costs_two_requests_and_a_redelivery_one(azurite):
    name, transport = new_table(), CountingTransport()
    store = RecordStore(table_client(azurite, name, transport))
    store.get("warm-up")  # creates the table
    start, add_caller, add_agent, rm_caller, rm_agent, end = unit.a_call()
    # The call's first event: its summary (none yet) and the partition read, the row and the summary in one
    # transaction, the listing key into the index, the summary marked indexed.
    first = transport.during(lambda: store.add_event(start))
    assert first == ["GET record", "GET query", "POST $batch", "POST $batch", "PATCH record"]
    for e in (add_caller, add_agent, rm_caller, rm_agent, end):
        assert transport.during(lambda e=e: store.add_event(e)) == ["GET record", "POST $batch"], e.type
    for e in (end, add_caller):
        assert transport.during(lambda e=e: store.add_event(e)) == ["GET record"], "a redelivery writes nothing"
    flow = flow_outcome(unit.transferred_state())
    # The app's flow outcome: merged onto the summary, marked pending (no read, nothing to conflict with); the
    # listing folds it in.
    assert transport.during(lambda: store.add_flow(unit.SERVER_CALL, flow)) == ["PATCH record"]
    assert transport.during(lambda: store.add_flow(unit.SERVER_CALL, flow)) == ["PATCH record"]
    assert [r["server_call_id"] for r in store.recent(10)] == [unit.SERVER_CALL]
    client = table_client(azurite, name)
    assert_stored_as_folded(store, client, unit.SERVER_CALL, [*unit.rows_of(unit.a_call()), flow_entry(flow)])

    # Out of order: the listing key is an estimate until CallStarted comes; each move costs two requests more.
    other = "call-out-of-order"
    start, add_caller, add_agent, rm_caller, *_ = events = of_call(unit.a_call(), other)
    moved = ["GET record", "POST $batch", "POST $batch", "PATCH record"]
    transport.during(lambda: store.add_event(add_agent))  # estimated from its time
    assert transport.during(lambda: store.add_event(add_caller)) == moved, "an earlier estimate"
    assert transport.during(lambda: store.add_event(start)) == moved, "the start known"
    assert transport.during(lambda: store.add_event(rm_caller)) == ["GET record", "POST $batch"], "no left key again"
    assert_stored_as_folded(store, client, other, unit.rows_of(events[:4]))


def test_redelivery_and_any_order_give_the_same_record_and_one_listing(azurite):
    name = new_table()
    client = table_client(azurite, name)
    stores = [RecordStore(table_client(azurite, name)) for _ in range(3)]  # instances taking deliveries in turn
    chance = random.Random(11)
    flow = flow_outcome(unit.transferred_state())
    calls = [f"call-order-{n}" for n in range(8)]
    for n, server_call_id in enumerate(calls):
        events = of_call(unit.a_call(), server_call_id)
        writes: list[Any] = [adding(e) for e in events] + [lambda s, c=server_call_id: s.add_flow(c, flow)]
        writes = writes if n == 0 else chance.sample(writes, k=len(writes)) + chance.sample(writes, k=3)
        for write in writes:
            write(chance.choice(stores))
        assert_stored_as_folded(stores[0], client, server_call_id, [*unit.rows_of(events), flow_entry(flow)])
    # Every order gives the same record (calls in order, n == 0, and shuffled with redeliveries).
    records = [stores[0].get(c) for c in calls]
    assert all({**r, "server_call_id": ""} == {**records[0], "server_call_id": ""} for r in records)
    listed = [r["server_call_id"] for r in stores[0].recent(100)]
    assert sorted(listed) == sorted(calls), "each call listed once"
    # What the reliability suite counts: one kind == "event" row per event, with its eventId.
    event_ids = [e["eventId"] for e in client.query_entities("kind eq 'event'")]
    assert sorted(event_ids) == sorted(e.id for _ in calls for e in unit.a_call())


def adding(e: CallRecordEvent) -> Any:
    return lambda store: store.add_event(e)


def at_once(actions: list[Any]) -> list[BaseException]:
    """Run the actions in threads released together; what they raised."""
    barrier = threading.Barrier(len(actions))
    failures: list[BaseException] = []

    def run(action: Any) -> None:
        try:
            barrier.wait()
            action()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return failures


@pytest.mark.parametrize("inline_limit", [INLINE_LIMIT, 0], ids=["rows in the summary", "rows by query"])
def test_concurrent_deliveries_of_one_calls_events_lose_nothing(azurite, caplog, inline_limit):
    caplog.set_level(logging.INFO, logger="core.records.store")
    name = new_table()
    client = table_client(azurite, name)
    client.create_table()
    for n in range(6):
        server_call_id = f"call-concurrent-{n}"
        events = of_call(unit.a_call(), server_call_id)
        deliveries = [*events, events[n]]  # six events at once, one of them delivered twice at once
        stores = [RecordStore(table_client(azurite, name), inline_limit=inline_limit) for _ in deliveries]
        for store in stores:
            store.get("warm-up")  # the table is there: the deliveries start together at their first read
        failures = at_once([lambda s=s, e=e: s.add_event(e) for s, e in zip(stores, deliveries, strict=True)])
        assert not failures, failures
        assert_stored_as_folded(stores[0], client, server_call_id, unit.rows_of(events), carried=inline_limit > 0)
    raced = [r.getMessage() for r in caplog.records if "concurrently" in r.getMessage()]
    assert raced, "the deliveries did race for the summary"


def test_a_large_call_rides_in_several_properties_then_is_read_with_a_query(azurite):
    name, transport = new_table(), CountingTransport()
    store = RecordStore(table_client(azurite, name, transport), inline_limit=90_000)
    client = table_client(azurite, name)
    server_call_id = "call-large"
    events = [unit.event("e-start", "CallStarted", 0, unit.calling())]
    for n in range(160):
        who = f"4:+1425556{n:04d}"
        events.append(unit.event(f"e-add-{n}", "CallParticipantAdded", 1 + n, unit.participant(who, "N" * 200)))
        events.append(unit.event(f"e-rm-{n}", "CallParticipantRemoved", 200 + n, unit.participant(who)))
    events = of_call(events, server_call_id)
    chunks = []
    for e in events:
        store.add_event(e)
        chunks.append(client.get_entity(call_key(server_call_id), RECORD_ROW)["rowChunks"])
    # Azurite refuses a property over 32K characters as the service does: the rows went in pieces, then too many.
    assert max(chunks) >= 3 and chunks[-1] == 0
    assert transport.during(lambda: store.add_event(events[-1])) == ["GET record", "GET query"]
    late = of_call(
        [unit.event("e-late", "CallParticipantAdded", 500, unit.participant("4:+14255559999"))], server_call_id
    )
    assert transport.during(lambda: store.add_event(late[0])) == ["GET record", "GET query", "POST $batch"]
    summary = client.get_entity(call_key(server_call_id), RECORD_ROW)
    assert unpack_rows(summary) is None and json.loads(summary["summary"])["participant_count"] == 161
    assert store.get(server_call_id) == build_record(server_call_id, unit.rows_of([*events, *late]))
