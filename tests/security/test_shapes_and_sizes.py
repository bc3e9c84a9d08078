"""Sizes and shapes, end to end (the app under the local host, the simulator, Azurite): oversized and deeply
nested bodies on every JSON entry point, a catastrophic routing pattern on a caller's header, and malformed
Event Grid events through the real webhook.

What must hold: a body declared too large is a 413, a body nested too deeply a 400 (never a 500, which the
sender retries); a routing pattern answers in linear time whatever the caller sends; every malformed event is
acknowledged (2xx: Event Grid does not redeliver it), logged as malformed, and nothing is done for it (no
request to ACS, no table row), while an odd field that no handler needs is read as absent and the event handled.

Worked before f82571e: 32 of the 46 attacks here (the rows of ``SHAPES`` and ``CONTEXTS`` marked so, and the
tests whose docstrings say so). Deeply nested JSON was a 500 on the callback endpoint,
the control API (and the Event Grid webhook, now the host's); the routing pattern ``(a|aa)+`` on a
41-character SIP header kept the IncomingCall from being answered for 20 s and more (Python's backtracking ``re``);
a string ``customContext``, a list of SIP headers, a non-object chunk, ``index: "abc"`` or an object, a numeric
subject, a naive ``eventTime`` and an unreadable ``recordingStartTime`` made the trigger fail (500), so Event
Grid would have redelivered them 30 times; ids, contexts and locations of another type or of megabytes were
taken and acted on (an AnswerCall with an object for a context, a record under a stringified object).
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from tests.e2e.conftest import AppStack, _stack
from tools.apphost import DEFAULT_ROUTING

TABLES = ("callstate", "callevents", "callrecords")
NESTED = 100_000
ROUTING = {
    **DEFAULT_ROUTING,
    "rules": [
        # A pattern that backtracks catastrophically on Python's re: 2^n ways to split a run of n "a"s.
        {
            "name": "redos",
            "match": {"sip_headers": {"X-MS-Custom-Ref": {"pattern": "(a|aa)+"}}},
            "action": {"type": "reject", "reason": "busy"},
        },
        *DEFAULT_ROUTING["rules"],
    ],
}


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[AppStack]:
    stack_of = _stack(azurite, routing=ROUTING, RECORDING_MODE="on_connect")
    stack = next(stack_of)
    stack.azurite = azurite  # type: ignore[attr-defined]
    yield stack
    next(stack_of, None)


@pytest.fixture(autouse=True)
def _clear_faults(stack: AppStack) -> Iterator[None]:
    yield
    stack.ctl("DELETE", "/__sim/faults")


def send(url: str, body: bytes, headers: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def rows(stack: AppStack) -> int:
    tables = TableServiceClient.from_connection_string(stack.azurite.connection_string)  # type: ignore[attr-defined]
    total = 0
    for name in TABLES:
        try:
            total += sum(1 for _ in tables.get_table_client(name).list_entities())
        except ResourceNotFoundError:
            pass
    return total


def requests_to_acs(stack: AppStack) -> int:
    return len(stack.ctl("GET", "/__sim/requests"))


def quiet(stack: AppStack) -> tuple[int, int]:
    stack.ctl("GET", "/__sim/idle?timeout=10")
    return rows(stack), requests_to_acs(stack)


def caller() -> str:
    return f"+1425{random.randrange(10**6, 10**7)}"


# -- bodies: too large, too deep ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def callback(stack: AppStack) -> dict[str, Any]:
    """A live call's callback URL and a valid token: what an attacker who captured one holds."""
    call = stack.place(**{"from": caller()})
    stack.wait_finished(call["serverCallId"])  # the flow ran its course (the operator): nothing more happens
    answer = stack.requests(call["serverCallId"], "AnswerCall")[0]
    return {"url": answer["body"]["callbackUri"], "call": call}


def auth(stack: AppStack) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": "Bearer " + stack.sim.sim.signer.token()}


def test_a_callback_declared_larger_than_the_cap_is_a_413(stack, callback):
    body = b"[" + b" " * (2 * 1024 * 1024) + b"]"
    status, text = send(callback["url"], body, auth(stack))
    assert status == 413, text
    assert f"body of {len(body)} bytes exceeds" in stack.app.logs()


ENTRY_POINTS = [
    "callback",
    "control API: place a call",
    "control API: call action",
    "control API: campaign",
    "Event Grid webhook",
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    "body", [b"[" * NESTED, b'{"a":' * (NESTED // 5) + b"1" + b"}" * (NESTED // 5)], ids=["arrays", "objects"]
)  # 100 and 120 KB: under every size cap, thousands of levels over Python's recursion limit
def test_deeply_nested_json_is_a_400_on_every_entry_point(stack, callback, entry, body):
    """Worked before f82571e: a 500 (RecursionError) on the callback endpoint and on the control API."""
    app = stack.app
    key = {"Content-Type": "application/json", "x-functions-key": app.function_key}
    target, headers = {
        "callback": (callback["url"], auth(stack)),
        "control API: place a call": (f"{app.api}/calls", key),
        "control API: call action": (f"{app.api}/calls/nobody/play", key),
        "control API: campaign": (f"{app.api}/campaigns", key),
        "Event Grid webhook": (
            app.eventgrid_url("incoming_call"),
            {"Content-Type": "application/json", "aeg-event-type": "Notification"},
        ),
    }[entry]
    before = quiet(stack)
    status, text = send(target, body, headers)
    assert status == 400, f"{entry}: {status} {text[:200]}"
    assert quiet(stack) == before, "nothing is written, nothing is asked of ACS"


# -- a catastrophic routing pattern -----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [41, 200])
def test_a_catastrophic_pattern_on_a_callers_header_answers_at_once(stack, length):
    """The rule's pattern ``(a|aa)+`` against a run of ``a`` and one ``!``: Python's re tries every way to split the
    run (about 1.6^n), RE2 reads it once. The call is routed (no match: the default answers it) in well under a
    second. Worked before f82571e: at 41 characters the call was not answered within 20 s (the match alone takes
    0.31 s at 33 characters and 7 times longer every 4 more); at 200 it would never be."""
    header = "a" * (length - 1) + "!"
    started = time.perf_counter()
    call = stack.place(**{"from": caller(), "custom_context": {"sipHeaders": {"X-MS-Custom-Ref": header}}})
    stack.wait_for(call["serverCallId"], "AnswerCall", timeout=20)
    elapsed = time.perf_counter() - started
    print(f"\nIncomingCall with a {length}-character header routed and answered in {elapsed * 1000:.0f} ms")
    assert elapsed < 1.0
    stack.ctl("POST", f"/__sim/calls/{call['serverCallId']}/hangup", {})


# -- malformed events through Event Grid -------------------------------------------------------------------------------

CONTEXTS = [  # customContext shapes on a real ringing call (the simulator passes them through as given)
    ("customContext a string", "sipHeaders=1", True),
    ("sipHeaders a list", {"sipHeaders": ["X-MS-Custom-A: 1"]}, True),
    ("voipHeaders a number", {"voipHeaders": 5}, True),
    ("a header value an object", {"sipHeaders": {"X-MS-Custom-A": {"v": 1}}}, False),
    ("a header value of 10 KB", {"voipHeaders": {"tier": "g" * 10_000}}, False),
    ("60 SIP headers", {"sipHeaders": {f"X-MS-Custom-{n}": "v" for n in range(60)}}, False),
]


@pytest.mark.parametrize(("name", "context", "before"), CONTEXTS, ids=[c[0] for c in CONTEXTS])
def test_an_incoming_call_with_an_odd_custom_context_is_answered_once(stack, name, context, before):
    """Headers of an odd shape are read as none (or beyond ACS's limits, left out): the call is routed and answered,
    the delivery acknowledged at once (202), never failed and redelivered."""
    call = stack.place(**{"from": caller(), "custom_context": context})
    timeline = stack.wait_for(call["serverCallId"], "AnswerCall", timeout=10)
    stack.ctl("GET", "/__sim/idle?timeout=5")
    timeline = stack.timeline(call["serverCallId"])
    assert "IncomingCall -> 202" in timeline and "IncomingCall -> 500" not in timeline, timeline
    assert len(stack.requests(call["serverCallId"], "AnswerCall")) == 1
    stack.ctl("POST", f"/__sim/calls/{call['serverCallId']}/hangup", {})


def eg(kind: str, data: Any, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "topic": stack_topic,
        "subject": "call/forged",
        "eventType": f"Microsoft.Communication.{kind}",
        "eventTime": "2026-11-27T10:00:00Z",
        "data": data,
        "dataVersion": "1.0",
        "metadataVersion": "1",
        **fields,
    }


stack_topic = "/subscriptions/0/resourceGroups/sim/providers/Microsoft.Communication/communicationServices/sim"
PARTY = {"rawId": "4:+14255550100", "phoneNumber": {"value": "+14255550100"}}
INCOMING = {"to": PARTY, "from": PARTY, "incomingCallContext": "forged", "serverCallId": "forged-call"}
CHUNK = {"documentId": "d", "contentLocation": "https://127.0.0.1:1/c", "metadataLocation": "https://127.0.0.1:1/m"}


def ic(data: Any, **fields: Any) -> tuple[str, dict[str, Any]]:
    return "incoming_call", eg("IncomingCall", data, **fields)


def rec(*listed: Any, data: Any = None) -> tuple[str, dict[str, Any]]:
    if data is None and listed:
        data = {"recordingStorageInfo": {"recordingChunks": list(listed)}, "recordingStartTime": "2026-11-27T10:00:00Z"}
    return "recording_file_status", eg("RecordingFileStatusUpdated", data)


def cr(kind: str, data: Any, **fields: Any) -> tuple[str, dict[str, Any]]:
    return "call_records", eg(kind, data, **fields)


MB = 1_000_000
# (name, (function, event), refused, worked before f82571e): refused = logged as malformed, acknowledged, nothing
# done; not refused = the odd field read as absent, the event handled. Worked before = the trigger failed (500).
SHAPES: list[tuple[str, tuple[str, dict[str, Any]], bool, bool]] = [
    ("IncomingCall data null", ic(None), True, False),
    ("IncomingCall data a string", ic("call"), True, False),
    ("IncomingCall data a number", ic(7), True, False),
    ("IncomingCall data a list", ic([INCOMING]), True, False),
    ("IncomingCall from a number", ic({**INCOMING, "from": 14255550100}), True, False),
    ("IncomingCall to of 20 KB", ic({**INCOMING, "to": {"rawId": "4:+1" + "5" * 20_000}}), True, True),
    ("IncomingCall context an object", ic({**INCOMING, "incomingCallContext": {"a": 1}}), True, True),
    ("IncomingCall customContext a string", ic({**INCOMING, "customContext": "x"}), False, True),
    ("IncomingCall sipHeaders a list", ic({**INCOMING, "customContext": {"sipHeaders": [1]}}), False, True),
    ("IncomingCall naive eventTime", ic(INCOMING, eventTime="2026-11-27T10:00:00"), False, True),
    ("Recording data null", rec(data=None), True, False),
    ("Recording data a list", rec(data=[CHUNK]), True, False),
    ("Recording chunk a string", rec("c"), True, True),
    ("Recording chunk null", rec(None), True, True),
    ("Recording chunks an object", rec(data={"recordingStorageInfo": {"recordingChunks": {"a": 1}}}), True, True),
    ("Recording index 'abc'", rec({**CHUNK, "index": "abc"}), True, True),
    ("Recording index an object", rec({**CHUNK, "index": {}}), True, True),
    ("Recording index -1", rec({**CHUNK, "index": -1}), True, True),
    ("Recording contentLocation a number", rec({**CHUNK, "contentLocation": 5}), True, True),
    ("Recording contentLocation of 1 MB", rec({**CHUNK, "contentLocation": "https://" + "h" * MB}), True, True),
    ("Record data a list", cr("CallEnded", []), True, False),
    ("Record data null", cr("CallEnded", None), True, False),
    ("Record serverCallId an object", cr("CallEnded", {"serverCallId": {"a": 1}}, subject="x"), True, True),
    ("Record subject a number", cr("CallEnded", {}, subject=5), True, True),
    ("Record participant of 1 MB", cr("CallParticipantAdded", {"serverCallId": "f", "user": {"rawId": "u" * MB}}), True, True),  # noqa: E501
    ("Record isTwoParty a string", cr("CallStarted", {"serverCallId": "forged-r", "isTwoParty": "yes"}), False, False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "target", "refused", "before"), SHAPES, ids=[s[0] for s in SHAPES])
def test_a_malformed_event_is_acknowledged_logged_and_nothing_is_done(stack, name, target, refused, before):
    """Through the host's Event Grid webhook, as Event Grid delivers it: 2xx (acknowledged, never retried)."""
    function, event = target
    event = {**event, "id": str(uuid.uuid4())}
    before_rows, before_requests = quiet(stack)
    headers = {"Content-Type": "application/json", "aeg-event-type": "Notification"}
    status, text = send(stack.app.eventgrid_url(function), json.dumps([event]).encode(), headers)
    assert status in (200, 202), f"{name}: {status} {text[:300]} (Event Grid would redeliver it)"
    logs = stack.app.logs()
    assert f"failed on event {event['id']}" not in logs
    if refused:
        assert f"{event['id']}:" in logs and "malformed" in logs.split(event["id"])[0].rsplit("\n", 1)[-1], name
        assert quiet(stack) == (before_rows, before_requests), "nothing is written, nothing is asked of ACS"
    else:
        assert f"malformed {event['eventType'].rsplit('.', 1)[-1]} {event['id']}" not in logs


def test_an_unreadable_recording_start_time_is_a_time_not_known_and_the_copy_is_made(stack):
    """The blob path is built from the start time: the reader gives the copier an aware time or none (then the copy
    is filed under the day it is made), never garbage. Worked before f82571e: ``recordingStartTime: "yesterday"``
    failed the copy (500), and Event Grid would have redelivered it forever."""
    stack.ctl("POST", "/__sim/faults", {"kind": "eventgrid", "match": "RecordingFileStatusUpdated", "action": "drop"})
    call = stack.place(**{"from": caller(), "script": [{"on": "play", "hangup": True}]})
    stack.wait_for(call["serverCallId"], "RecordingFileStatusUpdated DROPPED", timeout=20)
    (original,) = [
        e
        for e in stack.ctl("GET", "/__sim/events")["eventgrid"]
        if e["eventType"].endswith("RecordingFileStatusUpdated") and call["serverCallId"] in e["subject"]
    ]
    for start in ("yesterday", {"when": "now"}):
        event = {**original, "id": str(uuid.uuid4()), "data": {**original["data"], "recordingStartTime": start}}
        headers = {"Content-Type": "application/json", "aeg-event-type": "Notification"}
        status, text = send(stack.app.eventgrid_url("recording_file_status"), json.dumps([event]).encode(), headers)
        assert status in (200, 202), f"{start!r}: {status} {text[:300]}"
        assert f"recording event {event['id']}: 1 chunk(s) copied" in stack.app.logs()
