"""The callback endpoint, end to end: every webhook event type reaches its handler; bad input
is refused with the right status and loses nothing; duplicates and out-of-order deliveries act
once; a failed handler is retried by the sender and its work is done exactly once."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from core.calls.callback_auth import sign_call_ref
from core.calls.events import WEBHOOK_EVENTS


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def live_call(stack):
    """A call parked in the menu (the caller stays silent for long): a target for posted events."""
    call = stack.place(**{"from": "+14255550010", "script": [{"on": "recognize", "delay": 30, "hangup": True}]})
    stack.wait_for(call["serverCallId"], "Recognize [main_menu#2]")
    answer = stack.requests(call["serverCallId"], "AnswerCall")[0]
    callback = answer["body"]["callbackUri"]
    parsed = urllib.parse.urlparse(callback)
    call_ref = urllib.parse.unquote(parsed.path.rsplit("/", 1)[1])
    return {"call": call, "callback": callback, "call_ref": call_ref, "ccid": stack.connection_id(call["serverCallId"])}


def event(kind: str, ccid: str, **data) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "source": f"calling/callConnections/{ccid}",
        "type": f"Microsoft.Communication.{kind}",
        "specversion": "1.0",
        "time": "2026-11-27T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "callConnectionId": ccid,
            "serverCallId": "s",
            "correlationId": "c",
            "operationContext": "nowhere#999",
            "resultInformation": {"code": 200, "subCode": 0, "message": "ok"},
            **data,
        },
    }


def auth(stack, token: str | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": "Bearer " + (token or stack.sim.sim.signer.token())}


@pytest.mark.parametrize("kind", WEBHOOK_EVENTS)
def test_every_webhook_event_type_reaches_its_handler(stack, live_call, kind):
    body = json.dumps([event(kind, live_call["ccid"])]).encode()
    status, reply = post(live_call["callback"], body, auth(stack))
    assert (status, reply) == (200, {"handled": 1, "duplicates": 0, "unknown": 0})


def test_unknown_event_type_is_acknowledged_and_logged(stack, live_call):
    body = json.dumps([event("SomethingNew", live_call["ccid"])]).encode()
    status, reply = post(live_call["callback"], body, auth(stack))
    assert (status, reply["unknown"]) == (200, 1)
    assert "unknown event type SomethingNew" in stack.app.logs()


def test_unknown_fields_and_single_object_bodies_are_tolerated(stack, live_call):
    e = event("PlayStarted", live_call["ccid"], brandNewField={"x": 1})
    e["extension"] = "value"
    status, reply = post(live_call["callback"], json.dumps(e).encode(), auth(stack))
    assert (status, reply["handled"]) == (200, 1)


def test_bad_input_is_refused_with_reasons_and_nothing_is_lost(stack, live_call):
    url, ccid = live_call["callback"], live_call["ccid"]
    good = event("ParticipantsUpdated", ccid)
    good_body = json.dumps([good]).encode()
    signer = stack.sim.sim.signer
    cases = [
        ("malformed JSON", url, b"[{not json", auth(stack), 400),
        ("wrong content type", url, good_body, {**auth(stack), "Content-Type": "text/plain"}, 415),
        (
            "missing fields",
            url,
            json.dumps([{"id": "x", "type": "Microsoft.Communication.PlayCompleted"}]).encode(),
            auth(stack),
            400,
        ),
        (
            "no callConnectionId",
            url,
            json.dumps([{"id": "x", "type": "T", "data": {"a": 1}}]).encode(),
            auth(stack),
            400,
        ),
        ("empty batch", url, b"[]", auth(stack), 400),
        ("no token", url, good_body, {"Content-Type": "application/json"}, 401),
        ("forged token", url, good_body, auth(stack, signer.token()[:-4] + "AAAA"), 401),
        ("expired token", url, good_body, auth(stack, signer.token(now=time.time() - 3600)), 401),
        ("wrong audience", url, good_body, auth(stack, signer.token(audience="another-resource")), 401),
        ("wrong sig", url.split("?")[0] + "?sig=" + "A" * 43, good_body, auth(stack), 401),
        ("no sig", url.split("?")[0], good_body, auth(stack), 401),
        ("oversized", url, b"[" + b" " * (1024 * 1024 + 10) + b"]", auth(stack), 413),
    ]
    for name, target, body, headers, expected in cases:
        status, reply = post(target, body, headers)
        assert status == expected, f"{name}: {status} {reply}"
        assert reply.get("error"), name
    logs = stack.app.logs()
    assert "callback refused with 401" in logs and "callback refused with 400" in logs
    # The same event, sent properly after all that, is processed: nothing was swallowed.
    status, reply = post(url, good_body, auth(stack))
    assert (status, reply["handled"]) == (200, 1)


def test_another_calls_sig_is_refused(stack, live_call):
    secret = __import__("base64").b64decode(stack.app.env["CALLBACK_SECRET"])
    other_ref = "someone-else"
    url = (
        live_call["callback"].split("/callbacks/")[0]
        + f"/callbacks/{other_ref}?sig="
        + sign_call_ref(secret, live_call["call_ref"])
    )
    status, _ = post(url, json.dumps([event("PlayStarted", live_call["ccid"])]).encode(), auth(stack))
    assert status == 401


def test_a_duplicate_event_id_is_dropped(stack, live_call):
    e = event("ParticipantsUpdated", live_call["ccid"])
    body = json.dumps([e]).encode()
    assert post(live_call["callback"], body, auth(stack))[1]["handled"] == 1
    status, reply = post(live_call["callback"], body, auth(stack))
    assert (status, reply) == (200, {"handled": 0, "duplicates": 1, "unknown": 0})


def test_duplicated_callbacks_act_once(stack):
    # Every RecognizeFailed and RecognizeCompleted arrives twice.
    stack.ctl(
        "POST",
        "/__sim/faults",
        [
            {"kind": "callback", "match": "RecognizeFailed", "action": "duplicate", "count": -1},
            {"kind": "callback", "match": "RecognizeCompleted", "action": "duplicate", "count": -1},
        ],
    )
    call = stack.place(
        **{"from": "+14255550011", "script": [{"on": "recognize", "silence": True}, {"on": "recognize", "press": "2"}]}
    )
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "delivered again (duplicate fault)" in text
    assert len(stack.requests(call["serverCallId"], "Recognize")) == 2  # the menu and one retry, not two
    assert len(stack.requests(call["serverCallId"], "TransferToParticipant")) == 1


def test_duplicated_incoming_call_answers_once(stack):
    stack.ctl("POST", "/__sim/faults", {"kind": "eventgrid", "match": "IncomingCall", "action": "duplicate"})
    call = stack.place(**{"from": "+14255550012", "script": [{"on": "recognize", "press": "1"}]})
    stack.wait_finished(call["serverCallId"])
    summary = stack.summary(call["serverCallId"])
    assert len(summary["connections"]) == 1
    answers = stack.requests(call["serverCallId"], "AnswerCall")
    assert 1 <= len(answers) <= 2
    assert all(a["status"] == 200 for a in answers)
    assert len(stack.requests(call["serverCallId"], "TransferToParticipant")) == 1


def test_out_of_order_and_late_events_act_once(stack):
    # PlayCompleted of the welcome arrives after the next event; a late duplicate of it must not re-run the menu.
    stack.ctl(
        "POST",
        "/__sim/faults",
        [
            {"kind": "callback", "match": "PlayCompleted", "action": "reorder"},
            {"kind": "callback", "match": "PlayStarted", "action": "duplicate", "count": -1},
        ],
    )
    call = stack.place(**{"from": "+14255550013", "script": [{"on": "recognize", "press": "1"}]})
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "held back to arrive out of order" in text
    assert len(stack.requests(call["serverCallId"], "Recognize")) == 1
    assert len(stack.requests(call["serverCallId"], "TransferToParticipant")) == 1


def test_a_failed_handler_is_redelivered_and_acts_once(stack):
    # ACS throttles the menu's Recognize twice with no Retry-After: the SDK gives up, the handler fails,
    # the app answers 500, ACS delivers the callback again, and the menu starts exactly once.
    stack.ctl(
        "POST",
        "/__sim/faults",
        {"kind": "request", "match": "Recognize", "status": 429, "retry_after": None, "count": 2},
    )
    call = stack.place(**{"from": "+14255550014", "script": [{"on": "recognize", "press": "1"}]})
    stack.wait_finished(call["serverCallId"])
    recognizes = stack.requests(call["serverCallId"], "Recognize")
    assert [r["status"] for r in recognizes] == [429, 429, 202]
    text = stack.timeline(call["serverCallId"])
    assert "PlayCompleted -> 500; retrying" in text
    assert len(stack.requests(call["serverCallId"], "TransferToParticipant")) == 1
    assert "CallTransferAccepted -> 200" in text
