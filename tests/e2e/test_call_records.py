"""Call records, end to end: the simulator's Event Grid delivers CallStarted, CallEnded,
CallParticipantAdded and CallParticipantRemoved to the app's call_records function, the IVR's
outcome joins them when the call ends for the app, and the records API reads them back from
Azurite. Duplicate and out-of-order deliveries (simulator faults) still give one correct record."""

from __future__ import annotations

import time
from typing import Any

import pytest

from core.records import iso

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
    status, body = stack.app.call_api("GET", f"records/{server_call_id}")
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
        status, early = stack.app.call_api("GET", f"records/{scid}")
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
