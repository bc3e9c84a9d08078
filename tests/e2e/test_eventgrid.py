"""Event Grid as the simulator delivers it: the subscription validation handshake (automatic and manual),
events in the Event Grid schema, retries on 5xx, dead-lettering on 4xx, and eventTypes filters."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.communication.callautomation import CommunicationUserIdentifier

from simulator.engine import Config
from simulator.runner import SimulatorThread
from tests.conftest import control
from tests.support.receiver import Receiver
from tests.support.recording_host import wait_until

CALLER = "+14255550100"
NUMBER = "+18005550100"
EVENT_FIELDS = {"id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion", "metadataVersion"}


class SilentEndpoint:
    """An endpoint that takes every POST with ``status`` and an empty body: it never echoes the code."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = status
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.posts.append(
                    {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": json.loads(raw)}
                )
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/eg"

    def notifications(self) -> list[dict[str, Any]]:
        return [e for p in self.posts if p["headers"].get("aeg-event-type") == "Notification" for e in p["body"]]

    def __enter__(self) -> SilentEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def silent() -> Iterator[SilentEndpoint]:
    with SilentEndpoint() as endpoint:
        yield endpoint


def subscribe(ctl: Any, endpoint: str, **extra: Any) -> dict[str, Any]:
    return ctl("POST", "/__sim/eventgrid/subscriptions", {"endpoint": endpoint, **extra})


def ring(ctl: Any, caller: str = CALLER) -> dict[str, Any]:
    return ctl("POST", "/__sim/calls", {"from": caller, "to": NUMBER})


def posts_of(receiver: Receiver, event_id: str) -> list[dict[str, Any]]:
    """Every Notification POST (failed or not) that carried this event."""
    return [
        r
        for r in receiver.requests
        if r["headers"].get("aeg-event-type") == "Notification" and any(e["id"] == event_id for e in r["body"])
    ]


def test_validation_handshake_succeeds_when_the_endpoint_echoes_the_code(sim, receiver, ctl) -> None:
    sub = subscribe(ctl, receiver.url + "/eg", name="handshake")
    assert sub == {
        "name": "handshake",
        "endpoint": receiver.url + "/eg",
        "eventTypes": None,
        "provisioningState": "Succeeded",
    }
    (handshake,) = receiver.requests
    assert handshake["headers"]["aeg-event-type"] == "SubscriptionValidation"
    assert handshake["headers"]["aeg-subscription-name"] == "HANDSHAKE"
    assert handshake["headers"]["aeg-delivery-count"] == "0"
    assert isinstance(handshake["body"], list) and len(handshake["body"]) == 1
    event = handshake["body"][0]
    assert EVENT_FIELDS <= set(event)
    assert event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert event["data"]["validationUrl"].endswith("?code=" + event["data"]["validationCode"])
    assert ctl("GET", "/__sim/eventgrid/subscriptions") == [sub]
    # The handshake is not an event: nothing was recorded as delivered.
    assert receiver.eventgrid == []


def test_manual_validation_through_the_validation_url(sim, receiver, ctl, silent) -> None:
    sub = subscribe(ctl, silent.url, name="manual")
    assert sub["provisioningState"] == "AwaitingManualAction"
    (handshake,) = silent.posts
    assert handshake["headers"]["aeg-event-type"] == "SubscriptionValidation"
    validation_url = handshake["body"][0]["data"]["validationUrl"]

    # Until someone visits the URL, nothing is delivered.
    subscribe(ctl, receiver.url + "/eg")
    ring(ctl, "+14255550101")
    receiver.wait_for("IncomingCall", grid=True)
    assert ctl("GET", "/__sim/idle")["idle"] is True
    assert silent.notifications() == []

    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(validation_url.replace("code=", "code=x"), timeout=10)
    assert wrong.value.code == 404
    with urllib.request.urlopen(validation_url, timeout=10) as response:
        assert response.status == 200
        assert "validated" in response.read().decode()
    states = {s["name"]: s["provisioningState"] for s in ctl("GET", "/__sim/eventgrid/subscriptions")}
    assert states == {"manual": "Succeeded", "sub2": "Succeeded"}

    incoming = ring(ctl, "+14255550102")
    wait_until(lambda: silent.notifications())
    (event,) = silent.notifications()
    assert event["eventType"] == "Microsoft.Communication.IncomingCall"
    assert event["data"]["serverCallId"] == incoming["serverCallId"]


def test_failed_validation_means_no_deliveries(sim, ctl) -> None:
    with SilentEndpoint(status=403) as refusing:
        assert subscribe(ctl, refusing.url)["provisioningState"] == "Failed"
        ring(ctl)
        assert ctl("GET", "/__sim/idle")["idle"] is True
        assert refusing.notifications() == []
    assert subscribe(ctl, "http://127.0.0.1:9/nobody")["provisioningState"] == "Failed"


def test_call_lifecycle_events_in_event_grid_schema(sim, receiver, ctl, client) -> None:
    subscribe(ctl, receiver.url + "/eg", name="lifecycle")
    ring(ctl)
    (incoming,) = receiver.wait_for("IncomingCall", grid=True)
    # Answer from the event, as an app does.
    props = client.answer_call(incoming["data"]["incomingCallContext"], receiver.url + "/cb")
    ccid = props.call_connection_id
    receiver.wait_for("CallConnected", call_connection_id=ccid)
    connection = client.get_call_connection(ccid)
    connection.add_participant(CommunicationUserIdentifier("8:acs:bob"))
    receiver.wait_for("AddParticipantSucceeded", call_connection_id=ccid)
    connection.remove_participant(CommunicationUserIdentifier("8:acs:bob"))
    receiver.wait_for("RemoveParticipantSucceeded", call_connection_id=ccid)
    connection.hang_up(is_for_everyone=False)
    receiver.wait_for("CallEnded", grid=True)
    receiver.wait_for("CallParticipantRemoved", count=2, grid=True)
    assert ctl("GET", "/__sim/idle")["idle"] is True

    server_call_id = incoming["data"]["serverCallId"]
    topic = Config().topic
    notifications = [r for r in receiver.requests if r["headers"].get("aeg-event-type") == "Notification"]
    for request in notifications:
        headers = request["headers"]
        assert headers["aeg-subscription-name"] == "LIFECYCLE"
        assert headers["aeg-delivery-count"] == "0"
        assert headers["aeg-metadata-version"] == "1"
        assert headers["content-type"] == "application/json"
        assert isinstance(request["body"], list) and len(request["body"]) == 1
        (event,) = request["body"]
        assert set(event) == EVENT_FIELDS
        assert event["topic"] == topic
        assert event["eventType"].startswith("Microsoft.Communication.")
        assert event["dataVersion"] == headers["aeg-data-version"]
        assert event["metadataVersion"] == "1"
        assert datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00")).tzinfo is not None
        assert event["data"]["serverCallId"] == server_call_id
    events = [r["body"][0] for r in notifications]
    assert len({e["id"] for e in events}) == len(events)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["eventType"].rsplit(".", 1)[-1], []).append(event)
    assert {k: len(v) for k, v in by_type.items()} == {
        "IncomingCall": 1,
        "CallStarted": 1,
        "CallParticipantAdded": 2,
        "CallParticipantRemoved": 2,
        "CallEnded": 1,
    }

    caller = "4:" + CALLER
    assert incoming["subject"] == f"/caller/{caller}/recipient/4:{NUMBER}"
    assert incoming["data"]["from"]["rawId"] == caller
    assert incoming["data"]["to"]["rawId"] == "4:" + NUMBER
    (started,) = by_type["CallStarted"]
    assert started["subject"] == f"call/{server_call_id}/startedBy/{caller}"
    assert started["data"]["correlationId"] == incoming["data"]["correlationId"]
    added = {e["data"]["user"]["communicationIdentifier"]["rawId"] for e in by_type["CallParticipantAdded"]}
    removed = {e["data"]["user"]["communicationIdentifier"]["rawId"] for e in by_type["CallParticipantRemoved"]}
    assert added == removed == {caller, "8:acs:bob"}
    for event in by_type["CallParticipantAdded"] + by_type["CallParticipantRemoved"]:
        raw = event["data"]["user"]["communicationIdentifier"]["rawId"]
        assert event["subject"] == f"call/{server_call_id}/participant/{raw}"
    (ended,) = by_type["CallEnded"]
    assert ended["subject"] == f"call/{server_call_id}/startedBy/{caller}"
    assert ended["data"]["callDurationInSeconds"] >= 0


@pytest.mark.parametrize("status", [500, 503])
def test_retries_on_server_errors_until_delivered(sim, receiver, ctl, status) -> None:
    subscribe(ctl, receiver.url + "/eg")
    receiver.fail_status = status
    receiver.fail_next = 2
    incoming = ring(ctl)
    (event,) = receiver.wait_for("IncomingCall", grid=True)
    assert event["data"]["serverCallId"] == incoming["serverCallId"]
    attempts = posts_of(receiver, event["id"])
    assert [a["headers"]["aeg-delivery-count"] for a in attempts] == ["0", "1", "2"]
    assert all(a["body"] == attempts[0]["body"] for a in attempts)  # the same event each time
    assert ctl("GET", "/__sim/idle")["idle"] is True
    assert len(receiver.grid("IncomingCall")) == 1
    assert ctl("GET", "/__sim/eventgrid/dead-letters") == []
    timeline = ctl("GET", f"/__sim/calls/{incoming['serverCallId']}/timeline")
    grid = [e for e in timeline if e["kind"] == "eventgrid"]
    assert [e.get("retry", False) for e in grid] == [True, True, False]


@pytest.mark.parametrize("status", [400, 403, 413])
def test_client_errors_are_not_retried_but_dead_lettered(sim, receiver, ctl, status) -> None:
    subscribe(ctl, receiver.url + "/eg", name="strict")
    receiver.fail_status = status
    receiver.fail_next = 1
    incoming = ring(ctl)
    (dead,) = wait_until(lambda: ctl("GET", "/__sim/eventgrid/dead-letters"))
    assert dead["subscription"] == "strict"
    assert dead["lastStatus"] == status
    assert dead["event"]["eventType"] == "Microsoft.Communication.IncomingCall"
    assert dead["event"]["data"]["serverCallId"] == incoming["serverCallId"]
    assert ctl("GET", "/__sim/idle")["idle"] is True
    attempts = posts_of(receiver, dead["event"]["id"])
    assert [a["headers"]["aeg-delivery-count"] for a in attempts] == ["0"]
    assert receiver.eventgrid == []

    # The subscription itself is still healthy: the next event goes through.
    ring(ctl, "+14255550199")
    receiver.wait_for("IncomingCall", grid=True)


def test_dead_lettered_after_the_last_attempt(receiver) -> None:
    with SimulatorThread(config=Config(), eventgrid_max_attempts=3) as running:
        control(running, "POST", "/__sim/eventgrid/subscriptions", {"endpoint": receiver.url + "/eg"})
        receiver.fail_next = 100
        control(running, "POST", "/__sim/calls", {"from": CALLER, "to": NUMBER})
        (dead,) = wait_until(lambda: control(running, "GET", "/__sim/eventgrid/dead-letters"))
        assert dead["lastStatus"] == 500
        counts = [a["headers"]["aeg-delivery-count"] for a in posts_of(receiver, dead["event"]["id"])]
        assert counts == ["0", "1", "2"]


def test_event_types_filter(sim, receiver, ctl, client) -> None:
    subscribe(ctl, receiver.url + "/all", name="all")
    wanted = ["Microsoft.Communication.IncomingCall", "Microsoft.Communication.CallEnded"]
    sub = subscribe(ctl, receiver.url + "/some", name="some", eventTypes=wanted)
    assert sub["eventTypes"] == wanted and sub["provisioningState"] == "Succeeded"
    ring(ctl)
    incoming = receiver.wait_for("IncomingCall", count=2, grid=True)[0]
    props = client.answer_call(incoming["data"]["incomingCallContext"], receiver.url + "/cb")
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    client.get_call_connection(props.call_connection_id).hang_up(is_for_everyone=True)
    receiver.wait_for("CallEnded", count=2, grid=True)
    assert ctl("GET", "/__sim/idle")["idle"] is True

    def types(path: str) -> list[str]:
        return sorted(e["event"]["eventType"].rsplit(".", 1)[-1] for e in receiver.eventgrid if e["path"] == path)

    assert types("/some") == ["CallEnded", "IncomingCall"]
    assert types("/all") == sorted(
        ["IncomingCall", "CallStarted", "CallParticipantAdded", "CallParticipantRemoved", "CallEnded"]
    )
    assert {e["headers"]["aeg-subscription-name"] for e in receiver.eventgrid if e["path"] == "/some"} == {"SOME"}


def test_eventgrid_faults_drop_and_duplicate(sim, receiver, ctl) -> None:
    subscribe(ctl, receiver.url + "/eg")
    ctl("POST", "/__sim/faults", [{"kind": "eventgrid", "match": "IncomingCall", "action": "drop"}])
    dropped = ring(ctl)
    assert ctl("GET", "/__sim/idle")["idle"] is True
    assert receiver.eventgrid == []
    timeline = ctl("GET", f"/__sim/calls/{dropped['serverCallId']}/timeline")
    assert any("DROPPED" in e["summary"] for e in timeline if e["kind"] == "eventgrid")

    ctl("POST", "/__sim/faults", [{"kind": "eventgrid", "match": "IncomingCall", "action": "duplicate"}])
    ring(ctl)
    first, second = receiver.wait_for("IncomingCall", count=2, grid=True)
    assert first == second  # the same event (same id) twice, as Event Grid's at-least-once delivery allows
