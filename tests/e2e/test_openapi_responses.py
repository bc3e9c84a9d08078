"""The control API's OpenAPI document against what the app answers: every operation of the document called through
the app (devhost, the simulator, Azurite) with a valid request, and every refusal the API writes provoked, each answer
checked: its status is documented for its operation, its body matches the documented schema (``jsonschema``), and the
headers documented for it (Retry-After) are there.

The cases are keyed by operation id, and the tests are generated from the document's operations: an operation added
to the document without a case here fails (``test_every_operation_answers_as_documented[<id>]``), and so does a case
left for an operation the document no longer has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
import requests
from azure.data.tables import TableServiceClient, UpdateMode
from jsonschema import Draft202012Validator

from core.outbound import control
from tests.e2e.conftest import AppStack, _stack
from tests.e2e.test_control_api import FLOWS, LINE, ROUTING, answered, told_about
from tests.support.calls import until

DOC = control.openapi()
OPERATIONS = sorted(op["operationId"] for item in DOC["paths"].values() for op in item.values())
ROOM = "room-oas"
CAP = 50
TABLES = {
    "STATE_TABLE": "oasstate",
    "EVENTS_TABLE": "oasevents",
    "OUTBOUND_TABLE": "oasoutbound",
    "RECORDS_TABLE": "oasrecords",
}
ERROR_STATUSES = {"400", "401", "403", "404", "409", "411", "413", "429", "502"}


class Contract:
    """Calls operations by their id and checks each answer against the document the app serves."""

    def __init__(self, stack: AppStack, doc: dict[str, Any]) -> None:
        self.stack = stack
        self.doc = doc
        self.operations = {
            op["operationId"]: (method.upper(), path, op)
            for path, item in doc["paths"].items()
            for method, op in item.items()
        }
        self.http = requests.Session()
        self.http.trust_env = False
        self.seen: dict[str, set[str]] = {}  # operation id -> statuses answered (as documented)

    def call(
        self,
        op_id: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        *,
        expect: int,
        key: str | None = None,
        query: dict[str, str] | None = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request to ``op_id`` (path parameters from ``params``); its answer, checked, with status ``expect``."""
        method, path, _ = self.operations[op_id]
        url = self.stack.app.base_url + re.sub(r"\{(\w+)\}", lambda m: quote((params or {})[m[1]], safe=""), path)
        sent = {"x-functions-key": self.stack.app.function_key if key is None else key, **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        reply = self.http.request(
            method, url, json=body, data=data, headers=sent, params=query, timeout=60, allow_redirects=False
        )
        self.check(op_id, reply)
        assert reply.status_code == expect, f"{op_id}: {reply.status_code} {reply.text[:500]}"
        return reply.json() if reply.content else None

    def check(self, op_id: str, reply: requests.Response) -> None:
        _, _, op = self.operations[op_id]
        status = str(reply.status_code)
        documented = op["responses"].get(status) or op["responses"].get(f"{status[0]}XX")
        where = f"{op_id} -> {status} {reply.text[:500]}"
        assert documented is not None, f"not documented: {where}"
        if "content" not in documented:
            assert reply.content == b"", where
        else:
            assert reply.headers.get("Content-Type", "").startswith("application/json"), where
            schema = documented["content"]["application/json"]["schema"]
            validator = Draft202012Validator({**schema, "components": self.doc["components"]})
            problems = [
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(reply.json())
            ]
            assert not problems, f"{where}\n" + "\n".join(problems)
        for header in documented.get("headers", {}):
            assert reply.headers.get(header, "").isdigit(), f"{header} missing: {where}"
        self.seen.setdefault(op_id, set()).add(status)

    # -- calls to act on -------------------------------------------------------------------------------------

    def answered(self, caller: str, **call: Any) -> tuple[str, str]:
        """A caller rings the app's line and is answered into the greet flow: (server call id, connection id)."""
        return answered(self.stack, caller, **call)

    def act(self, ccid: str, action: str, body: Any = None, expect: int = 202) -> Any:
        return self.call(f"call_{action.replace('-', '_')}", {"call_connection_id": ccid}, body or {}, expect=expect)

    def end(self, scid: str, ccid: str) -> None:
        self.act(ccid, "terminate")
        self.stack.wait_finished(scid)

    def recording(self, ccid: str) -> str:
        """Start recording the call; the recording id, once the app knows it (RecordingStateChanged)."""
        started = self.act(ccid, "start-recording")
        until(
            lambda: self.call("get_call", {"call_connection_id": ccid}, expect=200)["app"]["recording_id"],
            message="no RecordingStateChanged",
        )
        return started["recording_id"]


@pytest.fixture(scope="module")
def contract(azurite: Any) -> Iterator[Contract]:
    stack = _stack(azurite, routing=ROUTING, flows=FLOWS, CONNECT_ALLOWED_ROOMS=ROOM, DIAL_DAILY_CAP=str(CAP), **TABLES)
    running = next(stack)
    try:
        served = running.app.call_api("GET", "openapi.json")[1]
        yield Contract(running, served)
    finally:
        stack.close()


@pytest.fixture(autouse=True)
def _clear_faults(contract: Contract) -> Iterator[None]:
    yield
    contract.stack.ctl("DELETE", "/__sim/faults")


# -- one case per operation of the document: a valid request, and the refusals particular to it ------------------

Case = Callable[[Contract, str], None]  # (the contract, the operation id it is run for)
CASES: dict[str, Case] = {}


def case(*op_ids: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        for op_id in op_ids:
            assert op_id not in CASES, op_id
            CASES[op_id] = fn
        return fn

    return register


@case("place_call")
def _place(c: Contract, op_id: str) -> None:
    placed = c.call(
        "place_call", body={"targets": [{"to": "+14255557001"}], "caller_id": LINE, "flow": "greet"}, expect=201
    )
    c.stack.wait_for(placed["server_call_id"], "PlayCompleted -> 200")
    c.end(placed["server_call_id"], placed["call_connection_id"])
    c.call("place_call", body={"targets": [{"to": "+19005557001"}], "caller_id": LINE}, expect=403)


@case("connect_call")
def _connect(c: Contract, op_id: str) -> None:
    room = c.stack.ctl("POST", "/__sim/group-calls", {"room_id": ROOM, "members": ["8:acs:guest-oas"]})
    joined = c.call("connect_call", body={"room_id": ROOM}, expect=201)
    assert joined["server_call_id"] == room["serverCallId"]
    c.stack.wait_for(room["serverCallId"], "ACS -> app  CallConnected -> 200")
    c.end(room["serverCallId"], joined["call_connection_id"])
    c.call("connect_call", body={"room_id": "not-listed"}, expect=403)


@case("get_call", "list_participants", "get_participant")
def _queries(c: Contract, op_id: str) -> None:
    caller = "+14255557002"
    scid, ccid = c.answered(caller)
    call = c.call("get_call", {"call_connection_id": ccid}, expect=200)
    assert call["server_call_id"] == scid and call["app"]["flow"] == "greet"
    listed = c.call("list_participants", {"call_connection_id": ccid}, expect=200)
    assert [p["id"] for p in listed["participants"]] == [f"4:{caller}"]
    one = c.call("get_participant", {"call_connection_id": ccid, "participant": f"4:{caller}"}, expect=200)
    assert one["id"] == f"4:{caller}"
    c.end(scid, ccid)
    # Once the service forgot the call, the app still answers with what it knows: the same shape.
    after = c.call("get_call", {"call_connection_id": ccid}, expect=200)
    assert (after["state"], after["targets"], after["app"]["status"]) == ("disconnected", [], "ended")
    for op_id, params in (
        ("get_call", {"call_connection_id": "no-such-call"}),
        ("list_participants", {"call_connection_id": "no-such-call"}),
        ("get_participant", {"call_connection_id": "no-such-call", "participant": "4:+14255557002"}),
    ):
        c.call(op_id, params, expect=404)


# Actions that leave the call as it was (or nearly): one call, each with a body the API takes.
ON_A_CALL: dict[str, Callable[[str], dict[str, Any]]] = {
    "play": lambda caller: {"prompts": [{"text": "One moment."}]},
    "recognize": lambda caller: {"mode": "dtmf", "target": caller, "timeout_seconds": 1},
    "mute": lambda caller: {"who": caller},
    "hold": lambda caller: {"who": caller},
    "unhold": lambda caller: {"who": caller},
    "send-dtmf": lambda caller: {"to": caller, "tones": "1#"},
    "start-continuous-dtmf": lambda caller: {"who": caller},
    "stop-continuous-dtmf": lambda caller: {"who": caller},
    "cancel-media": lambda caller: {},
}


@case(*(f"call_{name.replace('-', '_')}" for name in ON_A_CALL))
def _simple_action(c: Contract, op_id: str) -> None:
    caller = "+14255557010"
    name = op_id.removeprefix("call_").replace("_", "-")
    scid, ccid = c.answered(caller)
    answer = c.act(ccid, name, ON_A_CALL[name](caller))
    assert answer["operation_context"].startswith(f"api:{name}:")
    c.end(scid, ccid)


@case("call_add_participant", "call_cancel_add_participant", "call_remove_participant")
def _participants(c: Contract, op_id: str) -> None:
    scid, ccid = c.answered("+14255557011", parties={"8:acs:slow-oas": {"answer": "no_answer"}})
    if op_id == "call_remove_participant":
        c.act(ccid, "add-participant", {"target": {"to": "8:acs:expert-oas"}})
        until(lambda: "8:acs:expert-oas" in c.stack.summary(scid)["participants"], message="no one joined")
        c.act(ccid, "remove-participant", {"who": "8:acs:expert-oas"})
    else:
        added = c.act(ccid, "add-participant", {"target": {"to": "8:acs:slow-oas"}, "timeout_seconds": 120})
        assert added["invitation_id"]
        if op_id == "call_cancel_add_participant":
            c.act(ccid, "cancel-add-participant", {"invitation_id": added["invitation_id"]})
    c.end(scid, ccid)


@case("call_transfer")
def _transfer(c: Contract, op_id: str) -> None:
    scid, ccid = c.answered("+14255557012")
    c.act(ccid, "transfer", {"target": {"to": "+19005557012", "caller_id": LINE}}, expect=403)
    c.act(ccid, "transfer", {"target": {"to": "8:acs:agent-oas"}})
    c.stack.wait_finished(scid)
    c.stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})


@case("call_hang_up", "call_terminate")
def _leave(c: Contract, op_id: str) -> None:
    scid, ccid = c.answered("+14255557013", members=["8:acs:member-oas"])
    c.act(ccid, op_id.removeprefix("call_").replace("_", "-"))
    c.stack.wait_finished(scid)
    if op_id == "call_hang_up":
        c.stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})


@case("call_start_recording", "call_pause_recording", "call_resume_recording", "call_stop_recording")
def _recording(c: Contract, op_id: str) -> None:
    scid, ccid = c.answered("+14255557014")
    if op_id != "call_start_recording":
        c.act(ccid, op_id.removeprefix("call_").replace("_", "-"), expect=409)  # no recording yet: nothing to act on
    recording_id = c.recording(ccid)
    assert recording_id
    if op_id != "call_start_recording":
        c.act(ccid, op_id.removeprefix("call_").replace("_", "-"), {"recording_id": recording_id})
    c.end(scid, ccid)


@case("start_campaign", "get_campaign")
def _campaign(c: Contract, op_id: str) -> None:
    numbers = ["8:acs:campaign-oas-1", "8:acs:campaign-oas-2"]
    body = {"id": "oas-campaign", "numbers": numbers, "vars": {"message": "Power is back."}, "concurrency": 1}
    started = c.call("start_campaign", body=body, expect=201)
    assert [n["number"] for n in started["numbers"]] == numbers
    shown = c.call("get_campaign", {"campaign_id": "oas-campaign"}, expect=200)
    assert shown["id"] == "oas-campaign"
    c.call("start_campaign", body={**body, "numbers": numbers[:1]}, expect=409)
    c.call("start_campaign", body={**body, "id": "oas-premium", "numbers": ["+19005557020"], "caller_id": LINE},
           expect=403)  # fmt: skip
    c.call("get_campaign", {"campaign_id": "no-such-campaign"}, expect=404)


@case("create_masking_session")
def _masking(c: Contract, op_id: str) -> None:
    session = {"masked_number": "+14255557900", "party_a": "+14255557901", "party_b": "+14255557902"}
    created = c.call("create_masking_session", body=session, expect=201)
    assert (created["party_a"], created["party_b"]) == ("+14255557901", "+14255557902")
    c.call("create_masking_session", body={**session, "party_b": "+14255557903"}, expect=409)
    c.call("create_masking_session", body={**session, "party_b": "+19005557903"}, expect=403)


@case("list_records", "get_record")
def _records(c: Contract, op_id: str) -> None:
    scid, ccid = c.answered("+14255557030")
    told_about(c.stack, scid)
    c.end(scid, ccid)
    record = until(
        lambda: (r := c.call("get_record", {"server_call_id": scid}, expect=200))["status"] == "ended" and r,
        message="no CallEnded in the record",
    )
    assert record["server_call_id"] == scid and record["participants"]
    listing = c.call("list_records", query={"limit": "100"}, expect=200)
    assert scid in [r["server_call_id"] for r in listing["records"]]
    c.call("list_records", query={"limit": "0"}, expect=400)
    c.call("get_record", {"server_call_id": "no-such-call"}, expect=404)


@case("health_details")
def _health(c: Contract, op_id: str) -> None:
    # 200, or 503 when a dependency does not answer: both documented, with the same report.
    _, path, _ = c.operations[op_id]
    reply = c.http.get(c.stack.app.base_url + path, headers={"x-functions-key": c.stack.app.function_key}, timeout=30)
    c.check(op_id, reply)
    assert reply.status_code in (200, 503) and reply.json()["settings"]["flows"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op_id", OPERATIONS)
def test_every_operation_answers_as_documented(contract: Contract, op_id: str) -> None:
    run = CASES.get(op_id)
    assert run is not None, f"no case for {op_id}: add one to {__name__}"
    run(contract, op_id)
    _, _, op = contract.operations[op_id]
    success = next(code for code in op["responses"] if code.startswith("2"))
    assert success in contract.seen[op_id], contract.seen[op_id]


def test_every_case_is_an_operation_of_the_served_document(contract: Contract) -> None:
    assert contract.doc == json.loads(json.dumps(DOC))  # the document served is the one the tests were made from
    assert set(CASES) == set(contract.operations), set(CASES) ^ set(contract.operations)


# -- every refusal the API writes, one of each, each as documented ------------------------------------------------


def test_refusals_answer_as_documented(contract: Contract, azurite: Any) -> None:
    c = contract
    seen: set[str] = set()

    def refused(op_id: str, expect: int, **request: Any) -> dict[str, Any] | None:
        seen.add(str(expect))
        return c.call(op_id, expect=expect, **request)

    # 400: each field at fault named.
    body = refused("place_call", 400, body={"targets": [{"to": "nobody"}], "extra": 1})
    assert {f["field"] for f in body["fields"]} == {"targets.0.to", "extra"}
    # 401: the host answers, with no body.
    refused("place_call", 401, body={"targets": [{"to": "8:acs:x"}]}, key="wrong")
    refused("get_call", 401, params={"call_connection_id": "some-call"}, key="")
    # 403, 404 (the service's, passed through), 409.
    body = refused("place_call", 403, body={"targets": [{"to": "+19005557040"}], "caller_id": LINE})
    assert [f["field"] for f in body["fields"]] == ["targets.0.to"]
    refused("call_play", 404, params={"call_connection_id": "no-such-call"}, body={"prompts": [{"text": "hi"}]})
    scid, ccid = c.answered("+14255557041")
    refused("call_stop_recording", 409, params={"call_connection_id": ccid}, body={})
    # 411: a chunked body (the Functions host would drop it); 413: a body declared larger than the API takes.
    chunks = iter([b'{"prompts": ', b'[{"text": "hi"}]}'])
    refused("call_play", 411, params={"call_connection_id": ccid}, data=chunks,
            headers={"Content-Type": "application/json"})  # fmt: skip
    refused("call_play", 413, params={"call_connection_id": ccid}, data=b" " * (256 * 1024 + 1),
            headers={"Content-Type": "application/json"})  # fmt: skip
    # 502: the service fails (500, its retries too).
    c.stack.ctl("POST", "/__sim/faults", {"kind": "request", "match": "GetCall", "status": 500, "count": -1})
    try:
        body = refused("get_call", 502, params={"call_connection_id": ccid})
        assert "Communication Services failed" in body["error"]
    finally:
        c.stack.ctl("DELETE", "/__sim/faults")
    c.end(scid, ccid)
    # 429: the day's dial count at the cap; Retry-After says when it resets.
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table_if_not_exists(
        TABLES["OUTBOUND_TABLE"]
    )
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    before = next(iter(table.query_entities(f"PartitionKey eq 'dialcap' and RowKey eq '{day}'")), None)
    table.upsert_entity({"PartitionKey": "dialcap", "RowKey": day, "count": CAP}, mode=UpdateMode.REPLACE)
    try:
        body = refused("place_call", 429, body={"targets": [{"to": "+14255557042"}], "caller_id": LINE})
        assert "DIAL_DAILY_CAP" in body["error"]
    finally:
        if before is None:
            table.delete_entity("dialcap", day)
        else:
            table.upsert_entity(before, mode=UpdateMode.REPLACE)
    assert seen == ERROR_STATUSES
