"""Several instances acting on the same thing at once (``tools/cluster.py``): one call's event handled by two HTTP
instances together, a campaign and a masking session driven through different instances. What must hold is what
holds on one host: each action once, the campaign's concurrency bound and "each number once", one session per party.

Each instance has its own per-process state cache and per-call lock (``core/calls/state.py``); across instances only
the ETag on the row keeps them right. These tests put them side by side on purpose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from simulator.engine import Config
from simulator.runner import SimulatorThread
from tests.e2e.conftest import AppStack
from tests.e2e.test_outbound_flows import CALLER_ID, MASKED, ROUTING, api, most_at_once, wait_campaign
from tools.cluster import Cluster, start_cluster

HTTP_INSTANCES = 3


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[AppStack]:
    """The app on three HTTP instances (and one per Event Grid function) behind the front, with a masking rule."""
    with SimulatorThread(config=Config()) as sim:
        app = start_cluster(sim, azurite.connection_string, http_instances=HTTP_INSTANCES, routing=ROUTING)
        try:
            yield AppStack(sim, app)
        finally:
            app.stop()


def cluster(stack: AppStack) -> Cluster:
    assert isinstance(stack.app, Cluster)
    return stack.app


def accepted(stack: AppStack, server_call_id: str) -> Counter[str]:
    """The operations ACS accepted for a call (repeats of a repeatable request not counted: ACS acted once)."""
    return Counter(
        r["operation"]
        for r in stack.requests(server_call_id)
        if 200 <= r.get("status", 0) < 300 and "repeated request" not in r["summary"]
    )


def test_one_event_handled_by_two_instances_at_once_acts_once(stack):
    """ACS posts each of the call's events twice at once (a retry while the first is in flight); in spread mode the
    two copies land on two instances together. Each instance decides on its own cached copy of the call's state;
    the ETag makes one of them redo its decision on the row, where it finds the event taken."""
    app = cluster(stack)
    app.mode = "spread"
    for event in ("CallConnected", "PlayCompleted", "RecognizeCompleted", "CallTransferAccepted"):
        stack.ctl("POST", "/__sim/faults", {"kind": "callback", "match": event, "action": "twin", "count": 10})
    try:
        call = stack.place(**{"from": "+14255550901", "script": [{"on": "recognize", "press": "1"}]})
        stack.wait_finished(call["serverCallId"])
    finally:
        stack.ctl("DELETE", "/__sim/faults")
        app.mode = "round_robin"
    scid = call["serverCallId"]
    text = stack.timeline(scid)
    twins = text.count("delivered twice at once (twin fault)")
    assert twins >= 4, text
    # Each action exactly once, whichever instance's copy of an event won.
    done = accepted(stack, scid)
    assert (done["AnswerCall"], done["Recognize"], done["TransferToParticipant"]) == (1, 1, 1), (done, text)
    plays = [r["body"].get("operationContext") for r in stack.requests(scid, "Play") if 200 <= r["status"] < 300]
    assert len(plays) == len(set(plays)), plays
    assert "CallTransferAccepted -> 200" in text
    # The copies did meet on different instances: the call's callbacks went to more than one, and every one of them
    # was answered 2xx in the end (a copy that found the other at work is asked again, then acknowledged).
    urls = {e["url"] for e in stack.entries(scid) if e["kind"] == "event" and e.get("url")}
    call_ref = next(p.call_ref for p in app.placed() if p.call_ref and any(p.call_ref in u for u in urls))
    served = [p.instance for p in app.placed(call_ref=call_ref) if p.outcome == "answered"]
    assert len(set(served)) >= 2, served
    assert len(served) >= 2 * twins, (served, twins)


def test_a_campaign_driven_through_several_instances_keeps_its_bound_and_calls_each_number_once(stack):
    """Started through one instance; its calls' callbacks, which advance it, land on all of them; its progress row is
    changed by whichever instance handles a call's end. Still: each number once, never more than two at a time."""
    app = cluster(stack)
    numbers = [f"+1425555081{i}" for i in range(6)]
    stack.ctl("POST", "/__sim/parties", {n: {"script": [{"on": "recognize", "press": "2"}]} for n in numbers})
    before = set(stack.sim.sim.engine.calls)
    placed_before = len(app.placed(group="http"))
    started = api(
        stack,
        "POST",
        "campaigns",
        {"numbers": numbers, "caller_id": CALLER_ID, "vars": {"message": "Test notice."}, "concurrency": 2},
        expect=201,
    )
    campaign = wait_campaign(stack, started["id"], timeout=60)
    assert campaign["counts"] == {"confirmed": 6}, campaign
    assert campaign["peak"] <= 2 and campaign["live"] == 0

    calls = [c for key, c in stack.sim.sim.engine.calls.items() if key not in before]
    dialed = [t for c in calls for t in c.connections[0].targets]
    assert sorted(dialed) == sorted("4:" + n for n in numbers)  # each number once
    assert most_at_once([(c.started_at, c.ended_at) for c in calls]) <= 2
    # The work was spread: the campaign's requests and its calls' callbacks reached every HTTP instance.
    served = {p.instance for p in app.placed(group="http")[placed_before:] if p.outcome == "answered"}
    assert len(served) == HTTP_INSTANCES, served
    # Every instance reads the same progress.
    views = [api(stack, "GET", f"campaigns/{started['id']}") for _ in range(HTTP_INSTANCES)]
    assert all(v == views[0] for v in views)


def test_masking_sessions_through_different_instances_still_allow_one_per_party(stack):
    """Two requests for the same party, on two instances at the turn of the front: the second is refused (409), so a
    caller is never put through to two different people on one number."""
    app = cluster(stack)
    first_party, seller = "+14255550831", "+14255550832"
    start = len(app.placed(group="http"))
    api(stack, "POST", "masking", {"masked_number": MASKED, "party_a": first_party, "party_b": seller}, expect=201)
    status, body = stack.app.call_api(
        "POST", "masking", {"masked_number": MASKED, "party_a": "+14255550833", "party_b": seller}
    )
    assert status == 409 and body["fields"] == [{"field": "party_b", "message": "in another session"}]
    posts = [p.instance for p in app.placed(group="http")[start:] if p.method == "POST"]
    assert len(posts) == 2 and posts[0] != posts[1], posts

    # And the session works end to end with the call's events all over the group.
    app.mode = "spread"
    try:
        call = stack.place(**{"from": first_party, "to": MASKED, "script": []})
        stack.wait_finished(call["serverCallId"])
    finally:
        app.mode = "round_robin"
    [transfer] = stack.requests(call["serverCallId"], "TransferToParticipant")
    assert transfer["body"]["targetParticipant"]["rawId"] == "4:" + seller
    assert transfer["body"]["sourceCallerIdNumber"] == {"value": MASKED}
