"""Toll fraud, end to end (issue 13, item 4, and the control API's field limits of item 8): the app under the
local Functions host, the ACS simulator and Azurite.

Whoever holds a function key, or can call into a flow that takes its target from what the caller keys in, tries
to make the app ring premium-rate and foreign numbers (International Revenue Share Fraud), on every path that
makes ACS ring someone: a call placed through the control API (one target, several, and a flow target filled in
from ``vars``), a campaign, add-participant and transfer through the API, a masking session, the routing rules'
redirect and sim-ring targets and a flow's fixed target (at start-up), and a flow's transfer whose target the
caller keyed in (at run time). Each attack must be refused with a 4xx naming the reason (or the app must not
start), and NOTHING may ring: the simulator's log of requests holds no CreateCall, AddParticipant,
TransferToParticipant or RedirectCall naming the number. Then the daily cap on calls placed (``DIAL_DAILY_CAP=3``:
the fourth is 429, the simulator saw three), ``connect`` to a call the app never heard of (403, no Connect
request), and the control API's field limits (ACS's documented header limits, bounded display names and
variables, https audio; 400, nothing sent).

Worked before 6582a5e (all 39 attacks here, run on f82571e in a worktree): every one of ATTACKS (201 or 202:
the call placed, the campaign dialing, the participant invited, the call transferred, the masking session
stored), the stored masking session, the run-time transfer to the keyed-in number, the start-up redirect, sim-ring
and flow target (the app started, and rang the premium number when called), the cap (a fourth call placed; no
Retry-After), the three connects (201, Connect sent) and every field limit (202 or 201 and the request sent to
ACS; a 100,000-character variable made a 500). ``test_an_allowed_number_keyed_in_is_transferred`` is the control
(passes before and after).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient

from simulator.engine import Config
from simulator.runner import SimulatorThread
from tests.e2e.conftest import AppStack
from tools.apphost import DEFAULT_ROUTING, start_app, subscribe_eventgrid

ROOT = Path(__file__).resolve().parents[2]
CALLER_ID = "+18005550100"  # one of the app's numbers: the caller id of outbound calls
LINE = "+18005550150"  # answered into "greet": a live call for the mid-call attacks
DIAL_OUT = "+18005550160"  # answered into "dial_out": the caller keys in the number to be connected to
RING_OPERATIONS = {"CreateCall", "AddParticipant", "TransferToParticipant", "RedirectCall"}
FLOWS = {
    **json.loads((ROOT / "flows" / "default.json").read_text()),
    "greet": {"start": "hello", "nodes": {"hello": {"type": "play", "prompt": {"text": "Hello."}}}},
    # A flow that transfers to whoever {agent} names (given as a call variable by whoever places the call).
    "relay": {
        "start": "go",
        "nodes": {
            "go": {"type": "transfer", "target": {"to": "{agent}"}, "on_failure": "bye"},
            "bye": {"type": "hangup"},
        },
    },
    # The classic PBX fraud: "enter the number you want to reach": the target comes from the caller's keys.
    "dial_out": {
        "start": "ask",
        "nodes": {
            "ask": {
                "type": "collect_digits",
                "prompt": {"text": "Enter the number to call, then press pound."},
                "max_digits": 15,
                "stop_keys": "#",
                "store_as": "dest",
                "next": "connect",
                "on_failure": "bye",
            },
            "connect": {"type": "transfer", "target": {"to": "+{dest}"}, "on_failure": "sorry"},
            "sorry": {"type": "hangup", "prompt": {"text": "Sorry, that number cannot be reached."}},
            "bye": {"type": "hangup"},
        },
    },
}
ROUTING = {
    "rules": [
        *DEFAULT_ROUTING["rules"],
        {"name": "line", "match": {"to": LINE}, "action": {"type": "answer", "flow": "greet"}},
        {"name": "dial-out", "match": {"to": DIAL_OUT}, "action": {"type": "answer", "flow": "dial_out"}},
    ],
    "default": DEFAULT_ROUTING["default"],
}


def tables() -> dict[str, str]:
    """Tables of this module's own (the session's Azurite is shared): the daily count starts at zero."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "STATE_TABLE": f"tfstate{suffix}",
        "EVENTS_TABLE": f"tfevents{suffix}",
        "OUTBOUND_TABLE": f"tfoutbound{suffix}",
        "RECORDS_TABLE": f"tfrecords{suffix}",
    }


def subscribe_incoming_calls_only(sim: Any, app: Any) -> None:
    """Event Grid delivers IncomingCall, not the call events: the app hears of no call it is not part of, so a
    group call made in the simulator is one it knows nothing about (the connect attack)."""
    subscribe_eventgrid(sim, app, ("incoming_call",))


def make_stack(azurite: Any, **settings: str) -> Iterator[AppStack]:
    with SimulatorThread(config=Config()) as sim:
        app = start_app(
            sim, azurite.connection_string, routing=ROUTING, flows=FLOWS, subscribe=False, **tables(), **settings
        )
        try:
            subscribe_incoming_calls_only(sim, app)
            yield AppStack(sim, app)
        finally:
            app.stop()


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[AppStack]:
    yield from make_stack(azurite)


# -- helpers -----------------------------------------------------------------------------------------------




def hang_up(stack: AppStack, scid: str) -> None:
    """End the call, unless the flow already did (a refused transfer takes the flow's failure path: it may hang up)."""
    try:
        stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise


def sent(stack: AppStack, operations: set[str] | None = None) -> list[dict[str, Any]]:
    """Every request the simulator (ACS) received of these operations."""
    log = stack.ctl("GET", "/__sim/requests")
    return [r for r in log if r.get("operation") in (operations or RING_OPERATIONS)]


def rang(stack: AppStack, number: str) -> list[dict[str, Any]]:
    """Requests that asked ACS to ring ``number`` (in either spelling)."""
    digits = number.rsplit("+", 1)[-1]
    return [r for r in sent(stack) if digits in json.dumps(r.get("body"))]


def dial_out(stack: AppStack, caller: str, keys: str) -> dict[str, Any]:
    """A caller rings the dial-out line and keys in the number to be connected to."""
    return stack.place(**{"from": caller, "to": DIAL_OUT, "script": [{"on": "recognize", "press": keys}]})


def answered(stack: AppStack, caller: str) -> str:
    """A caller rings the app's line and is answered into "greet": the call connection id of a live call."""
    placed = stack.place(**{"from": caller, "to": LINE})
    stack.wait_for(placed["serverCallId"], "PlayCompleted -> 200")
    return stack.connection_id(placed["serverCallId"])


def stored_state(azurite: Any, stack: AppStack, server_call_id: str) -> dict[str, Any]:
    table = TableClient.from_connection_string(azurite.connection_string, table_name=stack.app.env["STATE_TABLE"])
    for entity in table.query_entities(f"serverCallId eq '{server_call_id}'"):
        return json.loads(entity["data"])
    raise AssertionError(f"no state stored for {server_call_id}")


def refused(status: int, body: Any, statuses: tuple[int, ...] = (403,)) -> None:
    assert status in statuses, (status, body)
    assert isinstance(body, dict) and body.get("error"), body


# -- the attack table: every dialing path of the control API ----------------------------------------------

# (name, method, path, body, the number that must not ring, the field the refusal names). "{ccid}" is a live call.
ATTACKS: list[tuple[str, str, str, dict[str, Any], str, str]] = [
    ("place: premium rate", "POST", "calls",
     {"targets": [{"to": "+19005550101"}], "caller_id": CALLER_ID}, "+19005550101", "targets.0.to"),
    ("place: premium rate as a raw id", "POST", "calls",
     {"targets": [{"to": "4:+19005550102"}], "caller_id": CALLER_ID}, "+19005550102", "targets.0.to"),
    ("place: Jamaica, a one-ring scam range", "POST", "calls",
     {"targets": [{"to": "+18765550103"}], "caller_id": CALLER_ID}, "+18765550103", "targets.0.to"),
    ("place: abroad (UK)", "POST", "calls",
     {"targets": [{"to": "+442071230104"}], "caller_id": CALLER_ID}, "+442071230104", "targets.0.to"),
    ("place: international premium rate", "POST", "calls",
     {"targets": [{"to": "+97912340105"}], "caller_id": CALLER_ID}, "+97912340105", "targets.0.to"),
    ("place: satellite", "POST", "calls",
     {"targets": [{"to": "4:+881612340106"}], "caller_id": CALLER_ID}, "+881612340106", "targets.0.to"),
    ("place: several targets, one premium among them", "POST", "calls",
     {"targets": [{"to": "+14255550107"}, {"to": "8:acs:tf-user"}, {"to": "+18095550107"}], "caller_id": CALLER_ID},
     "+18095550107", "targets.2.to"),
    ("place: a flow whose target a call variable fills with premium", "POST", "calls",
     {"targets": [{"to": "+14255550108"}], "caller_id": CALLER_ID, "flow": "relay",
      "vars": {"agent": "+19005550108"}}, "+19005550108", "vars"),
    ("campaign: premium and foreign numbers", "POST", "campaigns",
     {"numbers": ["+14255550109", "+19005550109", "4:+12685550109"], "caller_id": CALLER_ID,
      "vars": {"message": "Outage."}}, "+19005550109", "numbers.1"),
    ("campaign: a raw-id premium number", "POST", "campaigns",
     {"numbers": ["4:+19005550110"], "caller_id": CALLER_ID, "vars": {"message": "Outage."}},
     "+19005550110", "numbers.0"),
    ("add participant: premium rate", "POST", "calls/{ccid}/add-participant",
     {"target": {"to": "+19005550111", "caller_id": CALLER_ID}}, "+19005550111", "target.to"),
    ("add participant: Dominican Republic as a raw id", "POST", "calls/{ccid}/add-participant",
     {"target": {"to": "4:+18295550112", "caller_id": CALLER_ID}}, "+18295550112", "target.to"),
    ("transfer: premium rate", "POST", "calls/{ccid}/transfer",
     {"target": {"to": "+19005550113", "caller_id": CALLER_ID}}, "+19005550113", "target.to"),
    ("transfer: abroad (France) as a raw id", "POST", "calls/{ccid}/transfer",
     {"target": {"to": "4:+33140000114", "caller_id": CALLER_ID}}, "+33140000114", "target.to"),
    ("masking: a premium party", "POST", "masking",
     {"masked_number": "+18005550177", "party_a": "+14255550115", "party_b": "+19005550115"},
     "+19005550115", "party_b"),
    ("masking: a foreign party as a raw id", "POST", "masking",
     {"masked_number": "+18005550177", "party_a": "4:+12425550116", "party_b": "+14255550116"},
     "+12425550116", "party_a"),
]


@pytest.fixture(scope="module")
def live_call(stack: AppStack) -> str:
    return answered(stack, "+14255550199")


_callers = iter(range(100, 1000))


def call_for(stack: AppStack, live_call: str, path: str) -> str:
    """The call an attack acts on: a fresh 1:1 call for a transfer (the service transfers a group call's
    participant only with a transferee: the attack must not fail for that reason on the code before), else the
    shared live call."""
    if "transfer" in path:
        return answered(stack, f"+14255551{next(_callers)}")
    return live_call


@pytest.mark.parametrize(("name", "method", "path", "body", "number", "field"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_premium_or_foreign_destination_is_refused_on_every_api_path_and_nothing_rings(
    stack, live_call, name, method, path, body, number, field
):
    path = path.replace("{ccid}", call_for(stack, live_call, path)) if "{ccid}" in path else path
    status, reply = stack.app.call_api(method, path, body)
    refused(status, reply)
    assert field in [f["field"] for f in reply["fields"]], reply
    assert "DIAL_" in json.dumps(reply) or "not a destination" in reply["error"], reply
    stack.ctl("GET", "/__sim/idle?timeout=5")
    assert rang(stack, number) == [], f"{name}: ACS was asked to ring {number}"
    if path == "calls" and len(body.get("targets", [])) > 1:  # refused whole: none of the targets rang
        assert rang(stack, body["targets"][0]["to"]) == []


def test_a_masking_session_refused_is_not_stored(stack, azurite):
    status, reply = stack.app.call_api(
        "POST", "masking", {"masked_number": "+18005550178", "party_a": "+14255550117", "party_b": "+19005550117"}
    )
    refused(status, reply)
    table = TableClient.from_connection_string(azurite.connection_string, table_name=stack.app.env["OUTBOUND_TABLE"])
    try:
        rows = list(table.query_entities("PartitionKey eq 'mask-+18005550178'"))
    except Exception:  # the table was never made
        rows = []
    assert rows == []


# -- run time: a flow's transfer whose target the caller keyed in ----------------------------------------


def test_a_flow_transfer_to_a_number_the_caller_keyed_in_is_refused_at_run_time(stack, azurite):
    """The target is a call variable (the digits collected), known only on the call: start-up could not check
    it, the executor does. ACS is never asked to transfer; the callback is answered (no redelivery loop) and the
    refusal is in the call's history."""
    placed = dial_out(stack, "+14255550120", "19005550120#")
    scid = placed["serverCallId"]
    stack.wait_for(scid, "ACS -> app  RecognizeCompleted -> 200")
    stack.ctl("GET", "/__sim/idle?timeout=5")
    assert rang(stack, "+19005550120") == []
    assert not stack.requests(scid, "TransferToParticipant")
    text = stack.timeline(scid)
    assert text.count("RecognizeCompleted") == 1, text  # answered once: the refusal is no failure to retry
    history = " | ".join(stored_state(azurite, stack, scid)["history"])
    assert "destination refused" in history and "DIAL_DENIED_PREFIXES" in history, history
    hang_up(stack, scid)


def test_a_flow_transfer_refused_at_run_time_takes_the_failure_path(stack):
    """Worked before f82571e: the keyed-in premium number was rung. Refused now, and the flow goes on as after a
    failed transfer (its apology), instead of leaving the caller waiting in silence."""
    placed = dial_out(stack, "+14255550121", "19005550121#")
    scid = placed["serverCallId"]
    try:
        stack.wait_for(scid, "hears: Sorry, that number cannot be reached.", timeout=5)
        assert rang(stack, "+19005550121") == []
    finally:
        hang_up(stack, scid)


def test_an_allowed_number_keyed_in_is_transferred(stack):
    """The same flow with a number the policy allows: the check refuses only what it must."""
    placed = dial_out(stack, "+14255550122", "14255550123#")
    scid = placed["serverCallId"]
    stack.wait_for(scid, "ACS -> app  CallTransferAccepted -> 200")
    assert [r["body"]["targetParticipant"]["rawId"] for r in stack.requests(scid, "TransferToParticipant")] == [
        "4:+14255550123"
    ]
    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})


# -- start-up: the routing rules' redirect and sim-ring targets, a flow's fixed target ----------------------


def _start_or_refuse(azurite: Any, probe: Callable[[AppStack], None], **settings: Any) -> str:
    """Start the app with these settings. It must refuse to start (its message is returned); if it starts (the
    code before this change did), ``probe`` shows what it then rings, and the attack worked."""
    with SimulatorThread(config=Config()) as sim:
        try:
            app = start_app(sim, azurite.connection_string, timeout=20, **tables(), **settings)
        except RuntimeError as exc:
            return str(exc)
        try:
            probe(AppStack(sim, app))
        finally:
            app.stop()
    raise AssertionError("the app started with a premium destination in its settings")


def _ring_the_rule(number: str) -> Callable[[AppStack], None]:
    def probe(stack: AppStack) -> None:
        placed = stack.place(**{"from": "+14255550130", "to": "+18005550199"})
        time.sleep(1.5)
        stack.ctl("GET", "/__sim/idle?timeout=5")
        assert rang(stack, number) == [], f"the app rang {number}:\n{stack.timeline(placed['serverCallId'])}"

    return probe


@pytest.mark.parametrize(
    ("name", "targets", "number"),
    [
        ("redirect to premium rate", ["+19005550131"], "+19005550131"),
        ("redirect to a one-ring range as a raw id", ["4:+18765550132"], "+18765550132"),
        ("sim-ring with a premium target among users", ["8:acs:agent-a", "4:+19005550133"], "+19005550133"),
    ],
)
def test_a_routing_rule_that_would_ring_a_premium_number_stops_start_up(azurite, name, targets, number):
    routing = {
        "rules": [
            {"name": "forward", "match": {"to": "+18005550199"}, "action": {"type": "redirect", "targets": targets}}
        ],
        "default": {"type": "answer", "flow": "customer_service"},
    }
    message = _start_or_refuse(azurite, _ring_the_rule(number), routing=routing)
    assert "setting ROUTING_RULES: rule 'forward' redirects to" in message and "policy refuses" in message, message


def test_a_flow_node_with_a_premium_target_stops_start_up(azurite):
    flows = json.loads((ROOT / "flows" / "default.json").read_text())
    flows["customer_service"]["nodes"]["sales"]["target"]["to"] = "+19005550134"

    def probe(stack: AppStack) -> None:  # the old code: a caller picks sales, the app transfers to +1900
        placed = stack.place(**{"from": "+14255550134", "script": [{"on": "recognize", "press": "1"}]})
        time.sleep(3)
        stack.ctl("GET", "/__sim/idle?timeout=5")
        assert rang(stack, "+19005550134") == [], stack.timeline(placed["serverCallId"])

    message = _start_or_refuse(azurite, probe, flows=flows)
    assert "flow 'customer_service' node 'sales' rings '+19005550134'" in message, message
    assert "+1900 numbers are denied (DIAL_DENIED_PREFIXES" in message, message


# -- the daily cap -------------------------------------------------------------------------------------------


@pytest.fixture
def capped(azurite: Any) -> Iterator[AppStack]:
    yield from make_stack(azurite, DIAL_DAILY_CAP="3")


def test_the_fourth_call_of_the_day_is_refused_with_429(capped):
    """DIAL_DAILY_CAP=3: two calls placed and a phone added to a call count three; the fourth of any kind (a
    call, a campaign, an add, a transfer) is 429 with Retry-After, and ACS saw three rings to phones."""
    for i in range(2):
        status, reply = capped.app.call_api(
            "POST", "calls", {"targets": [{"to": f"+1425555014{i}"}, {"to": f"8:acs:tf-{i}"}], "caller_id": CALLER_ID}
        )
        assert status == 201, reply
    ccid = answered(capped, "+14255550149")
    status, reply = capped.app.call_api(
        "POST", f"calls/{ccid}/add-participant", {"target": {"to": "+14255550142", "caller_id": CALLER_ID}}
    )
    assert status == 202, reply
    over = [
        ("calls", {"targets": [{"to": "+14255550143"}], "caller_id": CALLER_ID}),
        ("campaigns", {"numbers": ["+14255550144"], "caller_id": CALLER_ID, "vars": {"message": "Outage."}}),
        (f"calls/{ccid}/add-participant", {"target": {"to": "+14255550145", "caller_id": CALLER_ID}}),
        (f"calls/{ccid}/transfer", {"target": {"to": "+14255550146", "caller_id": CALLER_ID}}),
    ]
    for path, body in over:
        status, reply = capped.app.call_api("POST", path, body)
        refused(status, reply, (429,))
        assert "DIAL_DAILY_CAP" in reply["error"], reply
    capped.ctl("GET", "/__sim/idle?timeout=5")
    phones = [r for r in sent(capped) if "+1425555014" in json.dumps(r.get("body"))]
    assert [r["operation"] for r in phones] == ["CreateCall", "CreateCall", "AddParticipant"], phones
    # Users of ACS cost nothing per minute and are not counted: still placed.
    status, reply = capped.app.call_api("POST", "calls", {"targets": [{"to": "8:acs:tf-free"}]})
    assert status == 201, reply


def dial_counts(azurite: Any, stack: AppStack) -> list[int]:
    table = TableClient.from_connection_string(azurite.connection_string, table_name=stack.app.env["OUTBOUND_TABLE"])
    try:
        return [e["count"] for e in table.query_entities("PartitionKey eq 'dialcap'")]
    except Exception:  # no table yet
        return []


def test_a_call_the_service_refuses_is_given_back_and_429_carries_retry_after(capped, azurite):
    """A call ACS refuses (here: it wants an https callback URL) rang nobody: it does not count, and leaves no
    row. Then three calls fit, and the fourth is refused with Retry-After (seconds to 00:00 UTC)."""
    config = capped.sim.sim.config
    config.require_https_callbacks = True
    try:
        status, reply = capped.app.call_api(
            "POST", "calls", {"targets": [{"to": "+14255550158"}], "caller_id": CALLER_ID}
        )
        assert status == 400 and "refused" in reply["error"], reply
    finally:
        config.require_https_callbacks = False
    assert dial_counts(azurite, capped) == []
    for i in range(3):
        body = {"targets": [{"to": f"+1425555015{i}"}], "caller_id": CALLER_ID}
        assert capped.app.call_api("POST", "calls", body)[0] == 201
    request = urllib.request.Request(
        capped.app.api + "/calls",
        data=json.dumps({"targets": [{"to": "+14255550159"}], "caller_id": CALLER_ID}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "x-functions-key": capped.app.function_key},
    )
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("a fourth call was placed")
    except urllib.error.HTTPError as exc:
        assert exc.code == 429 and 0 < int(exc.headers["Retry-After"]) <= 86400
    assert dial_counts(azurite, capped) == [3]


# -- connect: only to calls the app knows ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["server call", "group call", "room"])
def test_connect_to_a_call_the_app_never_heard_of_is_refused(stack, kind):
    """Someone else's call in the same resource (a meeting, a room): the app was not told of it, so it may not
    join it (and record it, or play into it)."""
    before = len(sent(stack, {"Connect"}))
    if kind == "room":
        room = f"tf-room-{uuid.uuid4().hex[:6]}"
        group = stack.ctl("POST", "/__sim/group-calls", {"room_id": room, "members": ["8:acs:tf-guest"]})
        locator = {"room_id": group["roomId"]}
    else:
        group = stack.ctl("POST", "/__sim/group-calls", {"members": ["8:acs:tf-ceo", "+14255550160"], "name": "board"})
        key = "server_call_id" if kind == "server call" else "group_call_id"
        locator = {key: group["serverCallId" if kind == "server call" else "groupCallId"]}
    status, reply = stack.app.call_api("POST", "connections", locator)
    refused(status, reply)
    assert [f["field"] for f in reply["fields"]] == list(locator), reply
    assert len(sent(stack, {"Connect"})) == before
    stack.ctl("POST", f"/__sim/calls/{group['serverCallId']}/hangup", {})


# -- the control API's field limits (item 8) -----------------------------------------------------------------

LIMITS: list[tuple[str, str, dict[str, Any], str]] = [
    ("a SIP header without the X-MS-Custom- prefix", "add-participant",
     {"target": {"to": "8:acs:tf-a", "sip_headers": {"P-Asserted-Identity": "sip:+19005550100@evil"}}},
     "target.sip_headers"),
    ("six custom SIP headers", "add-participant",
     {"target": {"to": "8:acs:tf-a", "sip_headers": {f"X-MS-Custom-H{i}": "v" for i in range(6)}}},
     "target.sip_headers"),
    ("a SIP header value of 257 characters", "transfer",
     {"target": {"to": "8:acs:tf-a", "sip_headers": {"X-MS-Custom-Big": "a" * 257}}}, "target.sip_headers"),
    ("a SIP header value with a line break (header injection)", "transfer",
     {"target": {"to": "8:acs:tf-a", "sip_headers": {"X-MS-Custom-Case": "1\r\nX-Evil: 1"}}}, "target.sip_headers"),
    ("a VoIP header value of 1,025 characters", "add-participant",
     {"target": {"to": "8:acs:tf-a", "voip_headers": {"case": "a" * 1025}}}, "target.voip_headers"),
    ("a display name of 10,000 characters", "add-participant",
     {"target": {"to": "8:acs:tf-a", "display_name": "x" * 10_000}}, "target.display_name"),
    ("an audio prompt over http", "play", {"prompts": [{"audio": "http://media.example.com/a.wav"}]}, "prompts"),
    ("hold music over http", "hold", {"who": "+14255550199", "music": {"audio": "http://media.example.com/a.wav"}},
     "music"),
]


@pytest.mark.parametrize(("name", "action", "body", "field"), LIMITS, ids=[x[0] for x in LIMITS])
def test_fields_beyond_acs_limits_are_refused_and_nothing_is_sent(stack, live_call, name, action, body, field):
    ccid = call_for(stack, live_call, action)
    before = len(stack.ctl("GET", "/__sim/requests"))
    status, reply = stack.app.call_api("POST", f"calls/{ccid}/{action}", body)
    refused(status, reply, (400,))
    assert any(f["field"].startswith(field) for f in reply["fields"]), reply
    after = stack.ctl("GET", "/__sim/requests")[before:]
    assert not [r for r in after if r.get("operation") in ("AddParticipant", "TransferToParticipant", "Play", "Hold")]


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("a display name of 10,000 characters", {"display_name": "x" * 10_000}, "display_name"),
        ("21 call variables", {"vars": {f"v{i}": "x" for i in range(21)}}, "vars"),
        ("a variable of 100,000 characters", {"vars": {"name": "x" * 100_000}}, "vars"),
        ("a variable of the flow engine's own (_paused_for)", {"vars": {"_paused_for": "x"}}, "vars"),
    ],
    ids=["display name", "21 variables", "a huge variable", "the engine's own variable"],
)
def test_oversized_call_fields_are_refused_and_no_call_is_placed(stack, name, body, field):
    before = len(sent(stack, {"CreateCall"}))
    request = {"targets": [{"to": "8:acs:tf-size"}], "flow": "greet", **body}
    status, reply = stack.app.call_api("POST", "calls", request)
    refused(status, reply, (400,))
    assert any(f["field"].startswith(field) for f in reply["fields"]), reply
    assert len(sent(stack, {"CreateCall"})) == before
