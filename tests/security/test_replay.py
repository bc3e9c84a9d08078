"""Replay of a captured mid-call callback, end to end (the app under the local host, the simulator, Azurite).

An ACS token does not cover the body of its callback: whoever captures one (its JWT and its ``sig`` URL, from
a log or a proxy) can send it again, unchanged, for as long as the token is accepted. The app must then find the
event's id among those it handled, however many events the call has had since.

The captured callback is a ``*`` pressed during continuous DTMF (``on_tone`` of the shipped flow: cancel the
media, announce the operator): acting on it again sends two more requests to ACS. The flow is held there (every
``PlayCompleted`` is dropped by the simulator), so a second ``*`` would act again if it were let through.

Worked before f82571e (all 4 tests failed there): the duplicate filter kept the last 100 ids of a call, so the
replay after 150 and after 1,000 other events, and the capture of a redelivery after 120, were handled again
("handled": 1: the flow cancelled the media and announced the operator once more), and a token valid for 6 hours
was accepted.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import AppStack, _stack


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[AppStack]:
    yield from _stack(azurite)


def post(url: str, body: bytes, token: str) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def held_call(stack: AppStack) -> dict[str, Any]:
    """A call answered into the shipped flow, held at its welcome prompt (PlayCompleted never arrives)."""
    stack.ctl("POST", "/__sim/faults", {"kind": "callback", "match": "PlayCompleted", "action": "drop", "count": -1})
    caller = f"+1425{random.randrange(10**6, 10**7)}"
    call = stack.place(**{"from": caller, "script": []})
    server_call_id = call["serverCallId"]
    stack.wait_for(server_call_id, "StartContinuousDtmfRecognition")
    stack.wait_for(server_call_id, "Play [welcome#1]")
    answer = stack.requests(server_call_id, "AnswerCall")[0]
    callback = answer["body"]["callbackUri"]
    return {"id": server_call_id, "callback": callback, "ccid": stack.connection_id(server_call_id), "caller": caller}


def event(kind: str, call: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "source": f"calling/callConnections/{call['ccid']}",
        "type": f"Microsoft.Communication.{kind}",
        "specversion": "1.0",
        "time": "2026-11-27T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "callConnectionId": call["ccid"],
            "serverCallId": call["id"],
            "correlationId": "c",
            "resultInformation": {"code": 200, "subCode": 0, "message": "ok"},
            **data,
        },
    }


def settled_requests(stack: AppStack, call: dict[str, Any]) -> list[str]:
    stack.ctl("GET", "/__sim/idle?timeout=5")
    time.sleep(0.3)  # an action the app sends after its answer to the callback
    return [e["operation"] for e in stack.requests(call["id"])]


@pytest.mark.parametrize("others", [150, 1_000])
def test_a_captured_callback_replayed_after_many_other_events_is_dropped(stack, others):
    call = held_call(stack)
    signer = stack.sim.sim.signer
    # The capture: a genuine callback (ACS's token, the call's sig URL) that makes the app act.
    captured_token = signer.token()
    captured_body = json.dumps([event("ContinuousDtmfRecognitionToneReceived", call, tone="asterisk", sequenceId=1)])
    before = settled_requests(stack, call)
    status, reply = post(call["callback"], captured_body.encode(), captured_token)
    assert (status, reply) == (200, {"handled": 1, "duplicates": 0, "unknown": 0}), reply
    acted = settled_requests(stack, call)
    assert len(acted) > len(before), "the genuine delivery acts (cancel the media, announce the operator)"

    # The call goes on: many other events, as ACS delivers them (batches, each with its own token).
    participants = [{"identifier": {"rawId": "4:" + call["caller"]}}]
    started = time.perf_counter()
    for first in range(0, others, 100):
        batch = [event("ParticipantsUpdated", call, participants=participants) for _ in range(min(100, others - first))]
        status, reply = post(call["callback"], json.dumps(batch).encode(), signer.token())
        assert (status, reply["handled"]) == (200, len(batch)), reply
    print(f"\n{others} other events delivered in {time.perf_counter() - started:.1f} s")
    after_others = settled_requests(stack, call)

    # The replay: the same body with the same (still valid) token and URL.
    status, reply = post(call["callback"], captured_body.encode(), captured_token)
    assert status == 200 and reply == {"handled": 0, "duplicates": 1, "unknown": 0}, reply
    assert settled_requests(stack, call) == after_others, "the replay made the app act again"
    stack.ctl("DELETE", "/__sim/faults")
    stack.ctl("POST", f"/__sim/calls/{call['id']}/hangup", {"participant": "4:" + call["caller"]})


def test_a_redelivery_with_a_later_token_keeps_the_id_until_that_token_expires(stack):
    """At least once: ACS redelivers an event with a new token. The first delivery's token expires within seconds
    here; the capture of the redelivery (valid for 5 minutes more) is refused after that, and after 120 others."""
    call = held_call(stack)
    signer = stack.sim.sim.signer
    tone = json.dumps([event("ContinuousDtmfRecognitionToneReceived", call, tone="asterisk", sequenceId=1)]).encode()
    first = signer.token(now=time.time() - 300 - 54)  # expired 54 s ago: the leeway takes it for 6 s more
    first_until = time.time() + 6 + 1
    assert post(call["callback"], tone, first)[1]["handled"] == 1
    later = signer.token()  # the redelivery's
    assert post(call["callback"], tone, later)[1]["duplicates"] == 1
    acted = settled_requests(stack, call)
    participants = [{"identifier": {"rawId": "4:" + call["caller"]}}]
    batch = [event("ParticipantsUpdated", call, participants=participants) for _ in range(120)]
    assert post(call["callback"], json.dumps(batch).encode(), signer.token())[1]["handled"] == 120
    time.sleep(max(0.0, first_until - time.time()) + 1)  # the first token is refused now; the id stays
    assert post(call["callback"], tone, first)[0] == 401
    assert post(call["callback"], tone, later)[1] == {"handled": 0, "duplicates": 1, "unknown": 0}
    assert settled_requests(stack, call) == acted
    stack.ctl("DELETE", "/__sim/faults")
    stack.ctl("POST", f"/__sim/calls/{call['id']}/hangup", {"participant": "4:" + call["caller"]})


def test_a_token_valid_for_hours_is_refused(stack):
    """A token whose expiry is beyond what the app can remember ids for is refused (ACS's last 5 minutes)."""
    call = held_call(stack)
    body = json.dumps([event("ParticipantsUpdated", call)]).encode()
    status, reply = post(call["callback"], body, stack.sim.sim.signer.token(lifetime=6 * 3600))
    assert status == 401 and "longer than" in stack.app.logs()
    stack.ctl("DELETE", "/__sim/faults")
    stack.ctl("POST", f"/__sim/calls/{call['id']}/hangup", {"participant": "4:" + call["caller"]})
