"""Fault injection (POST /__sim/faults) seen through the real SDK and the receiver: throttling and
unavailability with and without Retry-After, latency, callback drop/duplicate/reorder/delay, webhook
retries, an incoming call that expires, and a recording download cut mid-body then resumed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier, TextSource
from azure.core.exceptions import HttpResponseError, IncompleteReadError

from simulator.engine import Config
from simulator.runner import RunningSimulator, SimulatorThread
from tests.conftest import AI_ENDPOINT, control
from tests.support.receiver import Receiver
from tests.support.recording_host import point_recording_host_at_loopback, sdk_client, wait_until

AGENT = "8:acs:agent"
BOB = "8:acs:bob"


def outbound(client: CallAutomationClient, receiver: Receiver) -> str:
    props = client.create_call(
        CommunicationUserIdentifier(AGENT), receiver.url + "/cb", cognitive_services_endpoint=AI_ENDPOINT
    )
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    return props.call_connection_id


def requests_for(ctl: Any, ccid: str, operation: str) -> list[tuple[int, str]]:
    timeline = ctl("GET", f"/__sim/calls/{ccid}/timeline")
    return [
        (e["status"], "fault" if "(fault)" in e["summary"] else "")
        for e in timeline
        if e["kind"] == "request" and e["operation"] == operation
    ]


def settle(ctl: Any) -> None:
    assert ctl("GET", "/__sim/idle")["idle"] is True


# -- requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_throttled_or_unavailable_with_retry_after_is_retried_and_runs_once(client, receiver, ctl, status) -> None:
    ccid = outbound(client, receiver)
    connection = client.get_call_connection(ccid)
    ctl("POST", "/__sim/faults", {"kind": "request", "match": "AddParticipant", "status": status, "retry_after": 0.1})
    ctl("POST", "/__sim/faults", {"kind": "request", "match": "Play", "status": status, "retry_after": 0.1})

    result = connection.add_participant(CommunicationUserIdentifier(BOB), operation_context="add-bob")
    assert result.participant.identifier.raw_id == BOB
    connection.play_media(TextSource(text="hello"), operation_context="hello")
    receiver.wait_for("AddParticipantSucceeded", call_connection_id=ccid)
    receiver.wait_for("PlayCompleted", call_connection_id=ccid)
    settle(ctl)

    # The first attempt was refused before it did anything; the SDK's retry did it exactly once.
    assert requests_for(ctl, ccid, "AddParticipant") == [(status, "fault"), (202, "")]
    assert requests_for(ctl, ccid, "Play") == [(status, "fault"), (202, "")]
    assert len(receiver.events("AddParticipantSucceeded", ccid)) == 1
    assert len(receiver.events("PlayStarted", ccid)) == 1
    assert len(receiver.events("PlayCompleted", ccid)) == 1
    assert sorted(p.identifier.raw_id for p in connection.list_participants()) == [AGENT, BOB]
    faults = ctl("GET", "/__sim/faults")
    assert faults["active"] == []
    assert [(f["kind"], f["name"]) for f in faults["fired"]] == [("request", "AddParticipant"), ("request", "Play")]


def test_unavailable_create_call_is_retried_with_one_call_created(client, receiver, ctl) -> None:
    ctl("POST", "/__sim/faults", {"kind": "request", "match": "CreateCall", "status": 503, "retry_after": 0.1})
    ccid = outbound(client, receiver)
    log = [(r["operation"], r["status"]) for r in ctl("GET", "/__sim/requests") if r["operation"] == "CreateCall"]
    assert log == [("CreateCall", 503), ("CreateCall", 201)]
    assert len(ctl("GET", "/__sim/calls")) == 1
    assert len(receiver.events("CallConnected")) == 1
    assert ctl("GET", f"/__sim/calls/{ccid}")["connections"][0]["state"] == "connected"


def test_throttled_post_without_retry_after_reaches_the_caller(client, receiver, ctl) -> None:
    ccid = outbound(client, receiver)
    connection = client.get_call_connection(ccid)
    ctl("POST", "/__sim/faults", {"kind": "request", "match": "Play", "status": 429, "retry_after": None})
    with pytest.raises(HttpResponseError) as excinfo:
        connection.play_media(TextSource(text="hello"))
    error = excinfo.value
    assert error.status_code == 429
    assert "Retry-After" not in error.response.headers
    assert error.response.json()["error"]["code"] == "TooManyRequests"
    assert requests_for(ctl, ccid, "Play") == [(429, "fault")]  # no retry
    settle(ctl)
    assert receiver.events("PlayStarted", ccid) == []

    # The rule is spent; the app's own retry goes through.
    connection.play_media(TextSource(text="hello"))
    receiver.wait_for("PlayCompleted", call_connection_id=ccid)
    assert requests_for(ctl, ccid, "Play") == [(429, "fault"), (202, "")]


def test_throttled_get_without_retry_after_is_still_retried(client, receiver, ctl) -> None:
    """GETs are idempotent, so azure-core retries a 429 on them even without Retry-After."""
    ccid = outbound(client, receiver)
    ctl("POST", "/__sim/faults", {"kind": "request", "match": "GetCall", "status": 429, "retry_after": None})
    assert client.get_call_connection(ccid).get_call_properties().call_connection_state == "connected"
    assert requests_for(ctl, ccid, "GetCall") == [(429, "fault"), (200, "")]


def test_latency(client, receiver, ctl) -> None:
    ccid = outbound(client, receiver)
    connection = client.get_call_connection(ccid)
    ctl("POST", "/__sim/faults", {"kind": "request", "match": "GetCall", "latency": 0.3})
    began = time.monotonic()
    assert connection.get_call_properties().call_connection_state == "connected"
    assert time.monotonic() - began >= 0.3
    assert requests_for(ctl, ccid, "GetCall") == [(200, "")]


def test_latency_beyond_the_client_timeout(client, receiver, ctl) -> None:
    """A GET slower than the client's read timeout is retried by the SDK and succeeds, while the
    service still finishes the first one: the server sees the operation twice."""
    ccid = outbound(client, receiver)
    connection = client.get_call_connection(ccid)
    ctl("POST", "/__sim/faults", {"kind": "request", "match": "GetCall", "latency": 0.4})
    assert connection.get_call_properties(read_timeout=0.15).call_connection_state == "connected"
    wait_until(lambda: len(requests_for(ctl, ccid, "GetCall")) == 2)  # the slow one finishes later
    assert requests_for(ctl, ccid, "GetCall") == [(200, ""), (200, "")]


def test_bad_fault_rules_are_refused(ctl) -> None:
    import urllib.error

    for rule in (
        {"kind": "request", "status": 404},
        {"kind": "request"},
        {"kind": "callback", "action": "explode"},
        {"kind": "download"},
        {"kind": "incoming_context"},
        {"kind": "nonsense"},
    ):
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            ctl("POST", "/__sim/faults", rule)
        assert excinfo.value.code == 400, rule
    assert ctl("GET", "/__sim/faults")["active"] == []


# -- callbacks ------------------------------------------------------------------------------------


def test_callback_drop(client, receiver, ctl) -> None:
    ctl("POST", "/__sim/faults", {"kind": "callback", "match": "ParticipantsUpdated", "action": "drop"})
    ccid = outbound(client, receiver)
    connection = client.get_call_connection(ccid)
    connection.play_media(TextSource(text="hello"))
    receiver.wait_for("PlayCompleted", call_connection_id=ccid)
    settle(ctl)
    assert receiver.types(ccid) == ["CallConnected", "PlayStarted", "PlayCompleted"]
    sent = [e["type"].rsplit(".", 1)[-1] for e in ctl("GET", "/__sim/events")["webhook"]]
    assert sent == ["CallConnected", "ParticipantsUpdated", "PlayStarted", "PlayCompleted"]
    timeline = ctl("GET", f"/__sim/calls/{ccid}/timeline")
    assert any(e.get("dropped") for e in timeline if e["kind"] == "event")


def test_callback_duplicate_has_the_same_cloud_event_id(client, receiver, ctl) -> None:
    ctl("POST", "/__sim/faults", {"kind": "callback", "match": "CallConnected", "action": "duplicate"})
    ccid = outbound(client, receiver)
    receiver.wait_for("ParticipantsUpdated", call_connection_id=ccid)
    settle(ctl)
    assert receiver.types(ccid) == ["CallConnected", "CallConnected", "ParticipantsUpdated"]
    first, second = receiver.events("CallConnected", ccid)
    assert first["id"] == second["id"]
    assert first == second


def test_callback_reorder_flips_two_events(client, receiver, ctl) -> None:
    ctl("POST", "/__sim/faults", {"kind": "callback", "match": "CallConnected", "action": "reorder"})
    ccid = outbound(client, receiver)
    settle(ctl)
    assert receiver.types(ccid) == ["ParticipantsUpdated", "CallConnected"]
    sent = [e["type"].rsplit(".", 1)[-1] for e in ctl("GET", "/__sim/events")["webhook"]]
    assert sent == ["CallConnected", "ParticipantsUpdated"]
    # Later events are in order again.
    client.get_call_connection(ccid).play_media(TextSource(text="hello"))
    receiver.wait_for("PlayCompleted", call_connection_id=ccid)
    assert receiver.types(ccid)[2:] == ["PlayStarted", "PlayCompleted"]


def test_callback_delay_holds_the_queue(client, receiver, ctl) -> None:
    ctl("POST", "/__sim/faults", {"kind": "callback", "match": "CallConnected", "action": "delay", "delay": 0.3})
    began = time.monotonic()
    props = client.create_call(CommunicationUserIdentifier(AGENT), receiver.url + "/cb")
    receiver.wait_for("ParticipantsUpdated", call_connection_id=props.call_connection_id)
    assert time.monotonic() - began >= 0.3
    # Delivery per connection stays in order: the event behind the delayed one waited for it.
    assert receiver.types(props.call_connection_id) == ["CallConnected", "ParticipantsUpdated"]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_webhook_retried_when_the_receiver_fails(client, receiver, ctl, status) -> None:
    receiver.fail_status = status
    receiver.fail_next = 2
    ccid = outbound(client, receiver)
    receiver.wait_for("ParticipantsUpdated", call_connection_id=ccid)
    (connected,) = receiver.events("CallConnected", ccid)
    posts = [r for r in receiver.requests if any(e["id"] == connected["id"] for e in r["body"])]
    assert len(posts) == 3  # two failures, then delivered
    assert all(p["headers"]["authorization"].startswith("Bearer ") for p in posts)  # every attempt is signed
    assert receiver.types(ccid) == ["CallConnected", "ParticipantsUpdated"]
    timeline = ctl("GET", f"/__sim/calls/{ccid}/timeline")
    attempts = [(e.get("status"), e.get("attempt")) for e in timeline if e["kind"] == "event"]
    assert attempts[:3] == [(status, 1), (status, 2), (200, 3)]


def test_webhook_client_error_is_not_retried(client, receiver, ctl) -> None:
    receiver.fail_status = 400
    receiver.fail_next = 1
    props = client.create_call(CommunicationUserIdentifier(AGENT), receiver.url + "/cb")
    receiver.wait_for("ParticipantsUpdated", call_connection_id=props.call_connection_id)
    settle(ctl)
    assert receiver.types(props.call_connection_id) == ["ParticipantsUpdated"]  # CallConnected was lost
    timeline = ctl("GET", f"/__sim/calls/{props.call_connection_id}/timeline")
    (failed,) = [e for e in timeline if e["kind"] == "event" and e.get("failed")]
    assert (failed["type"], failed["status"], failed["attempt"]) == ("CallConnected", 400, 1)


# -- incoming call context ------------------------------------------------------------------------


def test_answering_an_expired_incoming_call_is_a_400_in_the_acs_envelope(client, receiver, ctl) -> None:
    ctl("POST", "/__sim/faults", {"kind": "incoming_context", "ttl": 0.05})
    ring = ctl("POST", "/__sim/calls", {"from": "+14255550100", "to": "+18005550100"})
    time.sleep(0.15)
    with pytest.raises(HttpResponseError) as excinfo:
        client.answer_call(ring["incomingCallContext"], receiver.url + "/cb")
    error = excinfo.value
    assert error.status_code == 400
    body = error.response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "8528"
    assert body["error"]["target"] == "incomingCallContext"
    assert error.error is not None and error.error.code == "8528"
    assert ctl("GET", f"/__sim/calls/{ring['serverCallId']}")["outcome"] == "missed"

    # The fault was used up: the next call can be answered.
    ring = ctl("POST", "/__sim/calls", {"from": "+14255550100", "to": "+18005550100"})
    props = client.answer_call(ring["incomingCallContext"], receiver.url + "/cb")
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)


# -- recording downloads --------------------------------------------------------------------------


@pytest.fixture
def tls_sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    point_recording_host_at_loopback(monkeypatch)
    config = Config(recording_seconds=20.0, recording_dir=str(tmp_path))
    with SimulatorThread(config=config, tls_port=0) as running:
        yield running


def test_download_cut_mid_body_resumes_with_a_range(tls_sim: RunningSimulator, receiver: Receiver) -> None:
    client = sdk_client(tls_sim)
    verify = str(tls_sim.ca_file)
    control(tls_sim, "POST", "/__sim/eventgrid/subscriptions", {"endpoint": receiver.url + "/eg"})
    ccid = outbound(client, receiver)
    recording = client.start_recording(call_connection_id=ccid)
    client.stop_recording(recording.recording_id)
    (event,) = receiver.wait_for("RecordingFileStatusUpdated", grid=True)
    (chunk,) = event["data"]["recordingStorageInfo"]["recordingChunks"]
    url = chunk["contentLocation"]
    cut = 100_000
    control(
        tls_sim, "POST", "/__sim/faults", {"kind": "download", "match": chunk["documentId"], "cut_after_bytes": cut}
    )

    received = bytearray()
    response = client.download_recording(url, connection_verify=verify)
    assert response.status_code == 200
    size = int(response.headers["Content-Length"])
    assert size > 5 * cut
    with pytest.raises(IncompleteReadError):
        for block in response.iter_bytes():
            received += block
    assert 0 < len(received) <= cut

    resumed = client.download_recording(url, offset=len(received), connection_verify=verify)
    assert resumed.status_code == 206
    assert resumed.headers["Content-Range"] == f"bytes {len(received)}-{size - 1}/{size}"
    received += b"".join(resumed.iter_bytes())

    whole = b"".join(client.download_recording(url, connection_verify=verify).iter_bytes())
    assert len(whole) == size
    assert bytes(received) == whole
    (stored,) = control(tls_sim, "GET", "/__sim/recordings")
    assert stored["documents"][0]["downloads"] == 3
