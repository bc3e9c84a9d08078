"""Outbound use cases as flows, end to end through the app, the simulator and Azurite: an appointment
reminder (confirm or cancel by DTMF or speech, the answer stored), an outage notice campaign with bounded
concurrency, and number masking (buyer and seller reach each other only through the app's number)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableClient

from tests.e2e.conftest import AppStack, _stack
from tools.apphost import DEFAULT_ROUTING

CALLER_ID = "+18005550100"
MASKED = "+18005550177"
ROUTING = {
    **DEFAULT_ROUTING,
    "rules": [
        {
            "name": "masked",
            "match": {"to": MASKED},
            "action": {"type": "mask", "unknown_flow": "number_masking_unknown"},
        },
        *DEFAULT_ROUTING["rules"],
    ],
}


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[AppStack]:
    """The app with the shipped flows and a masking rule for MASKED."""
    yield from _stack(azurite, routing=ROUTING)


def stored_state(azurite: Any, server_call_id: str) -> dict[str, Any]:
    table = TableClient.from_connection_string(azurite.connection_string, table_name="callstate")
    for entity in table.query_entities(f"serverCallId eq '{server_call_id}'"):
        return json.loads(entity["data"])
    raise AssertionError(f"no state stored for {server_call_id}")


def api(stack: AppStack, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, answer = stack.app.call_api(method, path, body)
    assert status == expect, (status, answer, stack.app.logs()[-3000:])
    return answer


def remind(stack: AppStack, number: str, script: list[dict[str, Any]]) -> dict[str, Any]:
    stack.ctl("POST", "/__sim/parties", {number: {"script": script}})
    return api(
        stack,
        "POST",
        "calls",
        {
            "targets": [{"to": number}],
            "caller_id": CALLER_ID,
            "flow": "appointment_reminder",
            "vars": {"name": "Ada", "date": "Monday, March 3", "time": "10:30 AM"},
        },
        expect=201,
    )


def played(stack: AppStack, server_call_id: str) -> list[str]:
    """Every text the app played or prompted with on the call, in order."""
    texts = []
    for request in stack.requests(server_call_id):
        body = request.get("body") or {}
        sources = body.get("playSources") or body.get("playPrompts") or []
        if body.get("playPrompt"):
            sources = [body["playPrompt"]]
        texts += [s["text"]["text"] for s in sources if s.get("text")]
    return texts


# -- appointment reminder ---------------------------------------------------------------------------


def test_reminder_confirmed_by_dtmf(stack, azurite):
    placed = remind(stack, "+14255550301", [{"on": "recognize", "press": "1"}])
    summary = stack.wait_finished(placed["server_call_id"])
    assert summary["state"] == "ended"
    text = stack.timeline(placed["server_call_id"])
    assert "outbound call to 4:+14255550301" in text
    assert "4:+14255550301 presses 1" in text
    texts = played(stack, placed["server_call_id"])
    assert texts[0] == "Hello Ada, this is a reminder of your appointment on Monday, March 3 at 10:30 AM."
    assert any(t.startswith("Thank you, your appointment is confirmed.") for t in texts)
    create = stack.requests(placed["server_call_id"], "CreateCall")[0]["body"]
    assert create["sourceCallerIdNumber"] == {"value": CALLER_ID}
    state = stored_state(azurite, placed["server_call_id"])
    assert state["vars"]["appointment"] == "confirmed"
    assert state["outcome"]["menu"] == [{"node": "confirm", "choice": "confirmed", "by": "dtmf"}]
    assert state["outcome"]["ended_by_flow"] == "confirmed"
    # The control API shows the stored answer, also after the call ended.
    shown = api(stack, "GET", f"calls/{placed['call_connection_id']}")
    assert shown["state"] == "disconnected"
    assert shown["app"]["vars"]["appointment"] == "confirmed" and shown["app"]["flow"] == "appointment_reminder"


def test_reminder_cancelled_by_speech_after_a_silence(stack, azurite):
    script = [{"on": "recognize", "silence": True}, {"on": "recognize", "say": "no, please cancel it"}]
    placed = remind(stack, "+14255550302", script)
    stack.wait_finished(placed["server_call_id"])
    texts = played(stack, placed["server_call_id"])
    assert "Sorry, I did not hear an answer." in texts
    assert any(t.startswith("Your appointment has been cancelled.") for t in texts)
    state = stored_state(azurite, placed["server_call_id"])
    assert state["vars"]["appointment"] == "cancelled"
    assert state["outcome"]["menu"] == [{"node": "confirm", "choice": "cancelled", "by": "speech"}]
    assert state["outcome"]["menu_misses"] == ["no input"]


def test_reminder_without_an_answer_ends_with_a_polite_goodbye(stack, azurite):
    placed = remind(stack, "+14255550303", [])
    stack.wait_finished(placed["server_call_id"])
    assert len(stack.requests(placed["server_call_id"], "Recognize")) == 3  # the question and two retries
    assert played(stack, placed["server_call_id"])[-1].startswith("Sorry, we could not get your answer.")
    state = stored_state(azurite, placed["server_call_id"])
    assert "appointment" not in state["vars"]
    assert state["outcome"]["ended_by_flow"] == "goodbye"


# -- outage notice campaign -------------------------------------------------------------------------


def wait_campaign(stack: AppStack, campaign_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        campaign = api(stack, "GET", f"campaigns/{campaign_id}")
        if campaign["status"] == "done":
            stack.ctl("GET", "/__sim/idle?timeout=5")
            return campaign
        time.sleep(0.1)
    raise AssertionError(f"campaign not done: {campaign}\n{stack.app.logs()[-4000:]}")


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return peak


def test_outage_campaign_calls_each_number_once_at_most_two_at_a_time(stack):
    numbers = [f"+1425555040{i}" for i in range(6)]
    stack.ctl(
        "POST",
        "/__sim/parties",
        {
            numbers[0]: {"script": [{"on": "recognize", "press": "2"}]},  # confirms
            numbers[1]: {"answer": "no_answer"},
            numbers[2]: {"script": [{"on": "recognize", "press": "1"}, {"on": "recognize", "press": "2"}]},
            numbers[3]: {"answer": "decline"},
            numbers[4]: {"script": []},  # listens, presses nothing
            numbers[5]: {"script": [{"on": "play", "match": "service notice", "hangup": True}]},
        },
    )
    sim_calls_before = set(stack.sim.sim.engine.calls)
    started = api(
        stack,
        "POST",
        "campaigns",
        {
            "numbers": numbers + [numbers[0]],  # a repeat is called once
            "caller_id": CALLER_ID,
            "vars": {"message": "Power is out in your area until 6 PM."},
            "concurrency": 2,
        },
        expect=201,
    )
    assert started["flow"] == "outage_notice" and started["concurrency"] == 2
    assert [n["number"] for n in started["numbers"]] == numbers
    assert started["live"] <= 2
    campaign = wait_campaign(stack, started["id"])

    statuses = {n["number"]: (n["status"], n["detail"]) for n in campaign["numbers"]}
    assert statuses[numbers[0]][0] == "confirmed"
    assert statuses[numbers[1]] == ("no answer", "did not answer")
    assert statuses[numbers[2]][0] == "confirmed"
    assert statuses[numbers[3]] == ("failed", "declined")
    assert statuses[numbers[4]][0] == "answered"
    assert statuses[numbers[5]][0] == "answered"
    by_number = {n["number"]: n for n in campaign["numbers"]}
    assert by_number[numbers[0]]["results"] == {"notice": "confirmed"}
    assert by_number[numbers[4]]["results"] == {}
    assert campaign["counts"] == {"confirmed": 2, "answered": 2, "no answer": 1, "failed": 1}
    assert campaign["peak"] == 2 and campaign["live"] == 0 and campaign["finished_at"]

    # The service's view: six outbound calls, one per number, never more than two at once.
    calls = [c for key, c in stack.sim.sim.engine.calls.items() if key not in sim_calls_before]
    dialed = [t for c in calls for t in c.connections[0].targets]
    assert sorted(dialed) == sorted("4:" + n for n in numbers)
    assert all(c.ended_at is not None for c in calls)
    assert most_at_once([(c.started_at, c.ended_at) for c in calls]) == 2
    for call in calls:
        body = stack.requests(call.id, "CreateCall")[0]["body"]
        assert body["sourceCallerIdNumber"] == {"value": CALLER_ID}
    heard = [t for c in calls for t in played(stack, c.id)]
    notice = [t for t in heard if t.startswith("This is Contoso with an important service notice.")]
    assert notice and all(t.endswith("Power is out in your area until 6 PM.") for t in notice)
    assert len(notice) == 5  # the four answered calls heard it, and the third number asked to hear it again

    # Nothing changes once it is done.
    again = api(stack, "GET", f"campaigns/{started['id']}")
    assert again == campaign


def test_campaign_requests_are_validated_and_idempotent_by_id(stack):
    status, body = stack.app.call_api("POST", "campaigns", {"numbers": ["+14255550499"], "caller_id": CALLER_ID})
    assert status == 400 and body["fields"] == [
        {"field": "vars.message", "message": "flow outage_notice says {message}"}
    ]
    status, body = stack.app.call_api("POST", "campaigns", {"numbers": ["+14255550499"], "vars": {"message": "x"}})
    assert status == 400 and "caller_id is required" in body["fields"][0]["message"]
    status, body = stack.app.call_api("POST", "campaigns", {"numbers": ["555"], "caller_id": CALLER_ID})
    assert status == 400 and body["fields"][0]["field"] == "numbers.0"
    status, body = stack.app.call_api(
        "POST", "campaigns", {"numbers": ["+14255550499"], "caller_id": CALLER_ID, "flow": "nope"}
    )
    assert status == 400 and body["fields"][0]["field"] == "flow"
    assert stack.app.call_api("GET", "campaigns/unknown-id")[0] == 404

    number = "+14255550498"
    stack.ctl("POST", "/__sim/parties", {number: {"script": [{"on": "recognize", "press": "2"}]}})
    request = {"id": "notice-42", "numbers": [number], "caller_id": CALLER_ID, "vars": {"message": "Test."}}
    first = api(stack, "POST", "campaigns", request, expect=201)
    second = api(stack, "POST", "campaigns", request, expect=201)
    assert first["id"] == second["id"] == "notice-42"
    done = wait_campaign(stack, "notice-42")
    assert done["counts"] == {"confirmed": 1}
    dialed = [
        c for c in stack.sim.sim.engine.calls.values() if c.connections and c.connections[0].targets == ["4:" + number]
    ]
    assert len(dialed) == 1
    status, body = stack.app.call_api("POST", "campaigns", {**request, "numbers": ["+14255550497"]})
    assert status == 409 and body["fields"] == [{"field": "id", "message": "already used"}]


# -- number masking ---------------------------------------------------------------------------------

BUYER, SELLER = "+14255550501", "+14255550502"


def test_buyer_reaches_seller_through_the_masked_number(stack):
    session = api(
        stack, "POST", "masking", {"masked_number": MASKED, "party_a": BUYER, "party_b": SELLER}, expect=201
    )
    assert session["masked_number"] == MASKED and session["id"]
    call = stack.place(**{"from": BUYER, "to": MASKED, "script": []})
    summary = stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "AnswerCall [answer] -> 200" in text
    assert "hears: Connecting your call." in text
    assert "CallTransferAccepted -> 200" in text
    [transfer] = stack.requests(call["serverCallId"], "TransferToParticipant")
    # The seller's phone rings with the masked number as caller id...
    assert transfer["body"]["targetParticipant"]["rawId"] == "4:" + SELLER
    assert transfer["body"]["sourceCallerIdNumber"] == {"value": MASKED}
    assert sorted(summary["participants"]) == sorted(["4:" + BUYER, "4:" + SELLER])
    # ... and nothing the buyer hears or the app sends toward the buyer carries the seller's number.
    assert all(SELLER not in t for t in played(stack, call["serverCallId"]))
    assert all(
        SELLER not in json.dumps(r.get("body") or {})
        for r in stack.requests(call["serverCallId"])
        if r["operation"] != "TransferToParticipant"
    )


def test_seller_calls_back_and_reaches_the_buyer(stack):
    api(stack, "POST", "masking", {"masked_number": MASKED, "party_a": BUYER, "party_b": SELLER}, expect=201)
    call = stack.place(**{"from": SELLER, "to": MASKED, "script": []})
    stack.wait_finished(call["serverCallId"])
    [transfer] = stack.requests(call["serverCallId"], "TransferToParticipant")
    assert transfer["body"]["targetParticipant"]["rawId"] == "4:" + BUYER
    assert transfer["body"]["sourceCallerIdNumber"] == {"value": MASKED}


def test_unknown_caller_to_a_masked_number_hears_a_polite_no(stack):
    call = stack.place(**{"from": "+14255550599", "to": MASKED, "script": []})
    summary = stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "hears: Sorry, this number cannot connect your call. Goodbye." in text
    assert not stack.requests(call["serverCallId"], "TransferToParticipant")
    assert summary["state"] == "ended"


def test_seller_who_does_not_answer_gets_the_buyer_an_apology(stack):
    buyer, seller = "+14255550511", "+14255550512"
    api(stack, "POST", "masking", {"masked_number": MASKED, "party_a": buyer, "party_b": seller}, expect=201)
    stack.ctl("POST", "/__sim/parties", {seller: {"answer": "no_answer"}})
    call = stack.place(**{"from": buyer, "to": MASKED, "script": []})
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "CallTransferFailed -> 200" in text
    assert "hears: Sorry, the person you are calling is not available right now." in text


def test_a_party_cannot_be_in_two_sessions_on_one_number(stack):
    api(stack, "POST", "masking", {"masked_number": MASKED, "party_a": "+14255550521", "party_b": "+14255550522"},
        expect=201)
    status, body = stack.app.call_api(
        "POST", "masking", {"masked_number": MASKED, "party_a": "+14255550523", "party_b": "+14255550522"}
    )
    assert status == 409 and body["fields"] == [{"field": "party_b", "message": "in another session"}]
    status, body = stack.app.call_api("POST", "masking", {"masked_number": MASKED, "party_a": BUYER, "party_b": BUYER})
    assert status == 400


def test_a_failed_placement_is_retried_by_the_redelivered_event_and_calls_once(stack):
    first, second = "+14255550451", "+14255550452"
    stack.ctl(
        "POST",
        "/__sim/parties",
        {
            first: {"delay": 0.5, "script": [{"on": "recognize", "press": "2"}]},  # rings long enough to arm
            second: {"script": [{"on": "recognize", "press": "2"}]},
        },
    )
    started = api(
        stack,
        "POST",
        "campaigns",
        {"numbers": [first, second], "caller_id": CALLER_ID, "vars": {"message": "Test."}, "concurrency": 1},
        expect=201,
    )
    assert [n["status"] for n in started["numbers"]] == ["calling", "pending"]
    # The service refuses the next CreateCall four times (the SDK's own retries included): the hook of the first
    # call's end fails, the app answers the CallDisconnected with a 500, and the service delivers it again.
    stack.ctl("POST", "/__sim/faults", {"kind": "request", "match": "CreateCall", "status": 503, "count": 4})
    campaign = wait_campaign(stack, started["id"])
    assert [n["status"] for n in campaign["numbers"]] == ["confirmed", "confirmed"]
    fired = stack.ctl("GET", "/__sim/faults")["fired"]
    assert [f["name"] for f in fired if f["kind"] == "request"] == ["CreateCall"] * 4
    assert "handler for CallDisconnected failed" in stack.app.logs()
    created = [
        r for r in stack.ctl("GET", "/__sim/requests")
        if r.get("operation") == "CreateCall" and second in json.dumps(r.get("body"))
    ]
    assert [r["status"] for r in created] == [503] * 4 + [201]  # refused, then placed once
    assert campaign["peak"] == 1
