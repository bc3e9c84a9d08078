"""What the simulator sends conforms to the official specs (../shared/specs).

One module-wide run drives a broad, realistic set of calls with the real client and scripted parties:
an IVR (every kind of recognize, plays, cancels, continuous DTMF, send DTMF, hold, mute, recording,
participants), transfers, outbound calls, connects, rejects and redirects. Then every event the
simulator sent (GET /__sim/events) and every REST response it gave (GET /__sim/requests) is checked
against the Call Automation, common and Event Grid specs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    CommunicationUserIdentifier,
    FileSource,
    PhoneNumberIdentifier,
    RecognitionChoice,
    TextSource,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError

from simulator import hmac_auth
from simulator.engine import Config
from simulator.runner import RunningSimulator, SimulatorThread
from simulator.server import NOT_SIMULATED, ROUTES, Simulator
from tests.conftest import AI_ENDPOINT, control
from tests.support import spec
from tests.support.receiver import Receiver

CALLER = "+14255550100"
CALLER_RAW = "4:" + CALLER
OUR_NUMBER = "+18005550123"
AGENT = "8:acs:agent"
DECLINER = "8:acs:decliner"
BUSY = "8:acs:busy"
SLOW = "8:acs:slow"
TRANSFER_TARGET = "8:acs:transfer-target"
MEMBER = "8:acs:member"

EXPECTED_CALLBACKS = {
    "CallConnected",
    "CallDisconnected",
    "ConnectFailed",
    "CreateCallFailed",
    "CallTransferAccepted",
    "CallTransferFailed",
    "AddParticipantSucceeded",
    "AddParticipantFailed",
    "CancelAddParticipantSucceeded",
    "CancelAddParticipantFailed",
    "RemoveParticipantSucceeded",
    "RemoveParticipantFailed",
    "ParticipantsUpdated",
    "PlayStarted",
    "PlayCompleted",
    "PlayFailed",
    "PlayCanceled",
    "RecognizeCompleted",
    "RecognizeFailed",
    "RecognizeCanceled",
    "RecordingStateChanged",
    "ContinuousDtmfRecognitionToneReceived",
    "ContinuousDtmfRecognitionStopped",
    "SendDtmfTonesCompleted",
    "HoldFailed",
}
EXPECTED_EVENTGRID = {
    "IncomingCall",
    "CallStarted",
    "CallEnded",
    "CallParticipantAdded",
    "CallParticipantRemoved",
    "RecordingFileStatusUpdated",
}
# Callback models the simulator has no way to produce (features it does not simulate, or failures of them).
NEVER_SENT = {
    "AnswerFailed",
    "StartRecordingFailed",
    "ContinuousDtmfRecognitionToneFailed",
    "SendDtmfTonesFailed",
    "MoveParticipantSucceeded",
    "MoveParticipantFailed",
    "MediaStreamingStarted",
    "MediaStreamingStopped",
    "MediaStreamingFailed",
    "TranscriptionStarted",
    "TranscriptionStopped",
    "TranscriptionUpdated",
    "TranscriptionFailed",
}


@dataclass
class World:
    thread: SimulatorThread
    sim: RunningSimulator
    rx: Receiver
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    eventgrid: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    errors_seen: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    thread = SimulatorThread(config=Config())
    with thread as sim, Receiver() as rx:
        client = CallAutomationClient(sim.endpoint, AzureKeyCredential(sim.access_key))
        result = World(thread, sim, rx)
        drive(result, client)
        ctl = partial(control, sim)
        ctl("GET", "/__sim/idle?timeout=5")
        events = ctl("GET", "/__sim/events")
        result.callbacks = events["webhook"]
        result.eventgrid = events["eventgrid"]
        result.requests = ctl("GET", "/__sim/requests")
        yield result


def short(event_type: str) -> str:
    return event_type.rsplit(".", 1)[-1]


def drive(world: World, client: CallAutomationClient) -> None:
    """Calls of every kind, so that the simulator sends every event it can."""
    rx = world.rx
    ctl = partial(control, world.sim)
    ctl("POST", "/__sim/eventgrid/subscriptions", {"endpoint": rx.url + "/eg"})
    ctl(
        "POST",
        "/__sim/parties",
        {
            AGENT: {"answer": "accept", "display_name": "Agent Smith", "delay": 0.01},
            DECLINER: {"answer": "decline", "delay": 0.01},
            BUSY: {"answer": "busy", "delay": 0.01},
            SLOW: {"answer": "no_answer"},
            TRANSFER_TARGET: {"answer": "accept", "delay": 0.01},
            MEMBER: {"answer": "accept"},
        },
    )
    ivr(world, client, ctl)
    transfers(world, client, ctl)
    outbound(world, client, ctl)
    connects(world, client, ctl)
    pre_call(world, client, ctl)


def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def expect_error(world: World, call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(HttpResponseError) as info:
        call(*args, **kwargs)
    world.errors_seen.append(info.value.status_code)


def ivr(world: World, client: CallAutomationClient, ctl: Any) -> None:
    rx = world.rx
    placed = ctl(
        "POST",
        "/__sim/calls",
        {
            "from": CALLER,
            "to": OUR_NUMBER,
            "display_name": "Pat Caller",
            "custom_context": {"sipHeaders": {"X-MS-Custom-Tag": "ivr"}, "voipHeaders": {"tag": "ivr"}},
            "script": [
                {"on": "recognize", "match": "menu-dtmf", "press": "123"},
                {"on": "recognize", "match": "menu-stop", "press": "9#"},
                {"on": "recognize", "match": "menu-choice-tone", "press": "2"},
                {"on": "recognize", "match": "menu-choice-say", "say": "billing please"},
                {"on": "recognize", "match": "free-speech", "say": "my order is late"},
                {"on": "continuous_dtmf", "press": "45"},
            ],
        },
    )
    props = client.answer_call(
        placed["incomingCallContext"],
        rx.url + "/cb/ivr",
        cognitive_services_endpoint=AI_ENDPOINT,
        operation_context="ivr",
    )
    ccid = props.call_connection_id
    wait = partial(rx.wait_for, call_connection_id=ccid)
    wait("CallConnected")
    conn = client.get_call_connection(ccid)
    caller = PhoneNumberIdentifier(CALLER)
    conn.get_call_properties()

    # Recognize: dtmf (max tones, stop tone), choices by tone and by speech, free speech, silence, bad prompt.
    conn.start_recognizing_media(
        "dtmf",
        caller,
        play_prompt=TextSource(text="Enter your three digit code"),
        dtmf_max_tones_to_collect=3,
        operation_context="menu-dtmf",
    )
    wait("RecognizeCompleted", count=1)
    conn.start_recognizing_media(
        "dtmf",
        caller,
        play_prompt=FileSource(url="https://media.example/enter-code.wav"),
        dtmf_max_tones_to_collect=5,
        dtmf_stop_tones=["pound"],
        operation_context="menu-stop",
    )
    wait("RecognizeCompleted", count=2)
    choices = [
        RecognitionChoice(label="sales", phrases=["sales", "buy"], tone="one"),
        RecognitionChoice(label="billing", phrases=["billing", "invoice"], tone="two"),
    ]
    for count, context in enumerate(("menu-choice-tone", "menu-choice-say"), start=3):
        conn.start_recognizing_media(
            "choices",
            caller,
            choices=choices,
            play_prompt=TextSource(text="Say sales or billing"),
            operation_context=context,
        )
        wait("RecognizeCompleted", count=count)
    conn.start_recognizing_media("speech", caller, end_silence_timeout=1, operation_context="free-speech")
    wait("RecognizeCompleted", count=5)
    conn.start_recognizing_media("dtmf", caller, initial_silence_timeout=1, operation_context="silent")
    wait("RecognizeFailed", count=1)
    conn.start_recognizing_media(
        "dtmf", caller, play_prompt=FileSource(url="https://media.example/unreachable.wav"), operation_context="bad"
    )
    wait("RecognizeFailed", count=2)

    # Play: completed, failed, and a looping play with a queued recognize, both canceled.
    conn.play_media(TextSource(text="Welcome to Contoso", voice_name="en-US-NovaTurboMultilingualNeural"))
    wait("PlayCompleted", count=1)
    conn.play_media([FileSource(url="https://media.example/hold.mp3")], [caller], operation_context="bad-format")
    wait("PlayFailed", count=1)
    conn.play_media(FileSource(url="https://media.example/music.wav"), loop=True, operation_context="loop")
    conn.start_recognizing_media("dtmf", caller, initial_silence_timeout=60, operation_context="queued")
    wait("PlayStarted", count=2)
    expect_error(world, conn.start_recognizing_media, "dtmf", caller, operation_context="second")  # 8507
    conn.cancel_all_media_operations()
    wait("PlayCanceled")
    wait("RecognizeCanceled")

    # DTMF both ways, hold with music that cannot be fetched, mute.
    conn.start_continuous_dtmf_recognition(caller, operation_context="cdtmf")
    wait("ContinuousDtmfRecognitionToneReceived", count=2)
    conn.stop_continuous_dtmf_recognition(caller, operation_context="cdtmf")
    wait("ContinuousDtmfRecognitionStopped")
    conn.send_dtmf_tones(["one", "two", "pound"], caller, operation_context="send")
    wait("SendDtmfTonesCompleted")
    conn.hold(caller, play_source=FileSource(url="https://media.example/unreachable.wav"), operation_context="hold")
    wait("HoldFailed")
    conn.unhold(caller, operation_context="unhold")
    conn.mute_participant(caller, operation_context="mute")

    # Recording: mixed mp3 through its life, then unmixed wav paused on start.
    recording = client.start_recording(call_connection_id=ccid, recording_state_callback_url=rx.url + "/cb/rec")
    wait("RecordingStateChanged", count=1)
    client.pause_recording(recording.recording_id)
    wait("RecordingStateChanged", count=2)
    client.resume_recording(recording.recording_id)
    wait("RecordingStateChanged", count=3)
    client.get_recording_properties(recording.recording_id)
    client.stop_recording(recording.recording_id)
    wait("RecordingStateChanged", count=4)
    rx.wait_for("RecordingFileStatusUpdated", grid=True)
    expect_error(world, client.get_recording_properties, recording.recording_id)  # 404: stopped
    unmixed = client.start_recording(
        server_call_id=props.server_call_id,
        recording_channel_type="unmixed",
        recording_format_type="wav",
        audio_channel_participant_ordering=[caller],
        pause_on_start=True,
    )
    wait("RecordingStateChanged", count=5)
    client.resume_recording(unmixed.recording_id)
    wait("RecordingStateChanged", count=6)

    # Participants: one accepts, one declines, one is canceled while ringing, a cancel comes too late.
    added = conn.add_participant(CommunicationUserIdentifier(AGENT), operation_context="add-agent")
    wait("AddParticipantSucceeded")
    declined = conn.add_participant(CommunicationUserIdentifier(DECLINER), operation_context="add-decliner")
    wait("AddParticipantFailed")
    slow = conn.add_participant(CommunicationUserIdentifier(SLOW), invitation_timeout=60, operation_context="add-slow")
    conn.cancel_add_participant_operation(slow.invitation_id, operation_context="cancel-slow")
    wait("CancelAddParticipantSucceeded")
    conn.cancel_add_participant_operation(declined.invitation_id, operation_context="cancel-late")
    wait("CancelAddParticipantFailed")
    assert added.invitation_id
    list(conn.list_participants())
    conn.get_participant(CommunicationUserIdentifier(AGENT))
    expect_error(world, conn.get_participant, CommunicationUserIdentifier(SLOW))  # 404: not in the call
    conn.remove_participant(CommunicationUserIdentifier(AGENT), operation_context="remove-agent")
    wait("RemoveParticipantSucceeded")
    conn.add_participant(CommunicationUserIdentifier(MEMBER), operation_context="add-member")
    wait("AddParticipantSucceeded", count=2)
    remove_twice_at_once(world, ccid, MEMBER)
    wait("RemoveParticipantSucceeded", count=2)
    wait("RemoveParticipantFailed")

    # The app ends the call for everyone: the running recording stops and its files are announced.
    conn.hang_up(is_for_everyone=True)
    wait("CallDisconnected")
    rx.wait_for("RecordingFileStatusUpdated", grid=True, count=2)
    rx.wait_for("CallEnded", grid=True)
    expect_error(world, conn.get_call_properties)  # 404: the call is over


def remove_twice_at_once(world: World, ccid: str, raw_id: str) -> None:
    """Two removals of one participant, the second before the first took effect (an app retrying too
    eagerly): the service accepts both and the second fails. Done on the simulator's loop so that both
    requests land in the same instant, which two HTTP requests cannot guarantee."""
    engine = world.sim.sim.engine
    body = {"participantToRemove": {"rawId": raw_id}, "operationContext": "remove-twice"}

    async def both() -> None:
        await engine.op_remove_participant(ccid, dict(body))
        await engine.op_remove_participant(ccid, dict(body))

    world.thread.call(both())


def transfers(world: World, client: CallAutomationClient, ctl: Any) -> None:
    rx = world.rx
    placed = ctl("POST", "/__sim/calls", {"from": CALLER, "to": OUR_NUMBER})
    props = client.answer_call(placed["incomingCallContext"], rx.url + "/cb/transfer")
    ccid = props.call_connection_id
    wait = partial(rx.wait_for, call_connection_id=ccid)
    wait("CallConnected")
    conn = client.get_call_connection(ccid)
    conn.transfer_call_to_participant(CommunicationUserIdentifier(BUSY), operation_context="to-busy")
    wait("CallTransferFailed")
    conn.transfer_call_to_participant(
        CommunicationUserIdentifier(TRANSFER_TARGET),
        operation_context="to-target",
        sip_headers={"X-MS-Custom-Reason": "escalation"},
    )
    wait("CallTransferAccepted")
    wait("CallDisconnected")
    ctl("POST", f"/__sim/calls/{props.server_call_id}/hangup", {"participant": CALLER_RAW})
    ctl("POST", f"/__sim/calls/{props.server_call_id}/hangup", {"participant": TRANSFER_TARGET})
    rx.wait_for("CallEnded", grid=True, count=2)


def outbound(world: World, client: CallAutomationClient, ctl: Any) -> None:
    rx = world.rx
    # To an ACS user, hung up by the app.
    props = client.create_call(
        CommunicationUserIdentifier(AGENT), rx.url + "/cb/out", cognitive_services_endpoint=AI_ENDPOINT
    )
    rx.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    client.get_call_connection(props.call_connection_id).hang_up(is_for_everyone=False)
    rx.wait_for("CallDisconnected", call_connection_id=props.call_connection_id)
    # To a phone, from one of our numbers, ended by the callee.
    phone = client.create_call(
        PhoneNumberIdentifier("+14255550199"),
        rx.url + "/cb/out",
        source_caller_id_number=PhoneNumberIdentifier(OUR_NUMBER),
        source_display_name="Contoso",
        operation_context="pstn",
    )
    rx.wait_for("CallConnected", call_connection_id=phone.call_connection_id)
    ctl("POST", f"/__sim/calls/{phone.server_call_id}/hangup", {})
    rx.wait_for("CallDisconnected", call_connection_id=phone.call_connection_id)
    # Declined.
    failed = client.create_call(CommunicationUserIdentifier(DECLINER), rx.url + "/cb/out", operation_context="nope")
    rx.wait_for("CreateCallFailed", call_connection_id=failed.call_connection_id)


def connects(world: World, client: CallAutomationClient, ctl: Any) -> None:
    rx = world.rx
    group = ctl("POST", "/__sim/group-calls", {"members": [AGENT, MEMBER]})
    props = client.connect_call(
        rx.url + "/cb/connect",
        group_call_id=group["groupCallId"],
        operation_context="grp",
        cognitive_services_endpoint=AI_ENDPOINT,
    )
    rx.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    conn = client.get_call_connection(props.call_connection_id)
    conn.play_media(TextSource(text="This call is recorded"), operation_context="notice")
    rx.wait_for("PlayCompleted", call_connection_id=props.call_connection_id)
    conn.hang_up(is_for_everyone=False)
    rx.wait_for("CallDisconnected", call_connection_id=props.call_connection_id)
    room = ctl("POST", "/__sim/group-calls", {"members": [MEMBER], "room_id": "room-1"})
    in_room = client.connect_call(rx.url + "/cb/connect", room_id=room["roomId"])
    rx.wait_for("CallConnected", call_connection_id=in_room.call_connection_id)
    client.get_call_connection(in_room.call_connection_id).hang_up(is_for_everyone=True)
    rx.wait_for("CallDisconnected", call_connection_id=in_room.call_connection_id)
    missing = client.connect_call(rx.url + "/cb/connect", server_call_id="no-such-call", operation_context="gone")
    rx.wait_for("ConnectFailed", call_connection_id=missing.call_connection_id)


def pre_call(world: World, client: CallAutomationClient, ctl: Any) -> None:
    rx = world.rx
    rejected = ctl("POST", "/__sim/calls", {"from": CALLER, "to": OUR_NUMBER})
    client.reject_call(rejected["incomingCallContext"], call_reject_reason="busy")
    expect_error(world, client.answer_call, rejected["incomingCallContext"], rx.url + "/cb/late")  # 8527
    redirected = ctl("POST", "/__sim/calls", {"from": CALLER, "to": OUR_NUMBER})
    client.redirect_call(redirected["incomingCallContext"], CommunicationUserIdentifier(AGENT))
    until(lambda: ctl("GET", f"/__sim/calls/{redirected['serverCallId']}")["state"] == "established")
    ctl("POST", f"/__sim/calls/{redirected['serverCallId']}/hangup", {"participant": AGENT})
    ctl("POST", f"/__sim/calls/{redirected['serverCallId']}/hangup", {"participant": CALLER_RAW})
    until(lambda: any(e["data"]["serverCallId"] == redirected["serverCallId"] for e in rx.grid("CallEnded")))


# -- events -----------------------------------------------------------------------------------------


def test_every_callback_event_conforms(world: World) -> None:
    assert world.callbacks
    failures = spec.validate_all(world.callbacks, spec.validate_callback_event)
    assert not failures, "\n\n".join(failures)


def test_every_eventgrid_event_conforms(world: World) -> None:
    assert world.eventgrid
    failures = spec.validate_all(world.eventgrid, spec.validate_eventgrid_event)
    assert not failures, "\n\n".join(failures)


def test_callback_event_types_covered(world: World) -> None:
    sent = {short(e["type"]) for e in world.callbacks}
    assert sent >= EXPECTED_CALLBACKS, f"never sent: {sorted(EXPECTED_CALLBACKS - sent)}"
    in_spec = {short(t) for t in spec.callback_event_types()}
    assert sent <= in_spec
    # The spec's other callback models are the ones the simulator cannot produce; keep the list honest.
    assert in_spec - sent == NEVER_SENT, sorted(in_spec - sent)


def test_recognize_completed_covers_every_recognition_type(world: World) -> None:
    kinds = Counter(e["data"]["recognitionType"] for e in world.callbacks if short(e["type"]) == "RecognizeCompleted")
    assert set(kinds) == {"dtmf", "choices", "speech"}
    spoken = [e["data"]["choiceResult"] for e in world.callbacks if "choiceResult" in e["data"]]
    assert {"label": "billing"} in spoken
    assert any(c.get("recognizedPhrase") == "billing" for c in spoken)


def test_eventgrid_event_types_covered(world: World) -> None:
    sent = {short(e["eventType"]) for e in world.eventgrid}
    assert sent == EXPECTED_EVENTGRID
    assert {"Microsoft.Communication." + t for t in sent} <= set(spec.eventgrid_event_types())
    recorded = [e["data"] for e in world.eventgrid if short(e["eventType"]) == "RecordingFileStatusUpdated"]
    assert {(d["recordingChannelType"], d["recordingFormatType"]) for d in recorded} == {
        ("Mixed", "Mp3"),
        ("Unmixed", "Wav"),
    }


def test_every_event_was_delivered_as_sent(world: World) -> None:
    """What /__sim/events reports is what the app received (so validating the former checks the latter)."""
    received = {c["event"]["id"]: c["event"] for c in world.rx.callbacks}
    for event in world.callbacks:
        assert received.get(event["id"]) == event
    grid = {c["event"]["id"]: c["event"] for c in world.rx.eventgrid}
    for event in world.eventgrid:
        assert grid.get(event["id"]) == event


# -- REST responses ---------------------------------------------------------------------------------


def test_every_rest_response_conforms(world: World) -> None:
    logged = [r for r in world.requests if "operation" in r]
    assert logged
    failures = []
    for entry in logged:
        try:
            spec.validate_response(entry["operation"], entry["status"], entry.get("response"))
        except spec.SpecViolation as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


def test_every_simulated_operation_was_exercised(world: World) -> None:
    ok = {r["operation"] for r in world.requests if "operation" in r and r["status"] < 400}
    routed = {route.operation for route in ROUTES}
    assert routed - ok == set(), f"never answered successfully: {sorted(routed - ok)}"
    assert sorted(set(world.errors_seen)) == [400, 404]


# -- routes and api-version -------------------------------------------------------------------------


def _concrete(path: str) -> str:
    return (
        path.replace("{callConnectionId}", "cc-1")
        .replace("{recordingId}", "rec-1")
        .replace("{participantRawId}", "8:acs:someone")
    )


def test_every_spec_operation_is_routed_or_declared_not_simulated() -> None:
    missing = []
    not_simulated = []
    for op in spec.operations():
        route, _ = Simulator._match(op.method, _concrete(op.path))
        if route is not None:
            assert route.operation == op.short_name, f"{op.method} {op.path} is routed as {route.operation}"
            continue
        tail = op.path.rsplit(":", 1)[-1]
        (not_simulated if tail in NOT_SIMULATED else missing).append(op.operation_id)
    assert missing == []
    assert sorted(not_simulated) == [
        "CallConnection_MoveParticipants",
        "CallMedia_StartMediaStreaming",
        "CallMedia_StartTranscription",
        "CallMedia_StopMediaStreaming",
        "CallMedia_StopTranscription",
        "CallMedia_UpdateTranscription",
    ]


def test_every_route_is_a_spec_operation() -> None:
    by_name = {op.short_name: op for op in spec.operations()}
    for route in ROUTES:
        op = by_name.get(route.operation)
        assert op is not None, f"{route.operation} is not in the spec"
        assert route.method == op.method
        assert route.pattern.match(_concrete(op.path)), f"{route.operation} does not serve {op.path}"
    tails = {op.path.rsplit(":", 1)[-1] for op in spec.operations()}
    assert NOT_SIMULATED <= tails


def signed(sim: RunningSimulator, method: str, path_qs: str, body: Any = None, key: str | None = None):
    """A request signed as the SDK signs it; returns (status, parsed body or None)."""
    data = json.dumps(body).encode() if body is not None else b""
    host = urllib.parse.urlsplit(sim.endpoint).netloc
    date = hmac_auth.http_date()
    body_hash = hmac_auth.content_hash(data)
    signature = hmac_auth.sign(key or sim.access_key, method, path_qs, date, host, body_hash)
    request = urllib.request.Request(
        sim.endpoint + path_qs,
        data=data if method != "GET" else None,
        method=method,
        headers={
            "x-ms-date": date,
            "x-ms-content-sha256": body_hash,
            "Authorization": f"HMAC-SHA256 SignedHeaders={hmac_auth.SIGNED_HEADERS}&Signature={signature}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw) if raw else None


@pytest.mark.parametrize("version", ["2023-10-15", "2025-05-15", "2026-03-12-preview", ""])
def test_wrong_api_version_is_refused(sim: RunningSimulator, version: str) -> None:
    query = f"?api-version={version}" if version else ""
    status, body = signed(sim, "GET", "/calling/callConnections/cc-1" + query)
    assert status == 400
    spec.validate_response("GetCall", status, body)
    assert version not in spec.api_version_values()
    status, body = signed(sim, "POST", "/calling/callConnections" + query, {"targets": [], "callbackUri": "x"})
    assert status == 400
    assert "api-version" in body["error"]["message"]


def test_the_spec_api_version_is_accepted(sim: RunningSimulator) -> None:
    (version,) = spec.api_version_values()
    status, body = signed(sim, "GET", f"/calling/callConnections/cc-1?api-version={version}")
    assert status == 404  # signed and versioned correctly: the call simply does not exist
    spec.validate_response("GetCall", status, body)
    status, body = signed(sim, "GET", f"/calling/callConnections/cc-1?api-version={version}", key="AAAA")
    assert status == 401
    spec.validate_response("GetCall", status, body)


def test_not_simulated_operations_answer_501(sim: RunningSimulator) -> None:
    for op in spec.operations():
        tail = op.path.rsplit(":", 1)[-1]
        if tail in NOT_SIMULATED:
            status, body = signed(sim, op.method, _concrete(op.path) + f"?api-version={spec.API_VERSION}", {})
            assert status == 501, op.operation_id
            spec.validate_response(op.operation_id, status, body)


# -- the validator itself ---------------------------------------------------------------------------


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    base = {"callConnectionId": "c", "serverCallId": "s", "correlationId": "x"}
    return {
        "id": "1",
        "source": "calling/callConnections/c",
        "type": "Microsoft.Communication." + name,
        "specversion": "1.0",
        "time": "2026-03-12T10:00:00.1234567Z",
        "datacontenttype": "application/json",
        "data": base | data,
    }


def test_validator_accepts_a_good_event() -> None:
    good = _event(
        "RecognizeCompleted",
        {
            "resultInformation": {"code": 200, "subCode": 8531, "message": "ok"},
            "recognitionType": "dtmf",
            "dtmfResult": {"tones": ["one", "pound"]},
            "version": "2026-03-12",
            "publicEventType": "Microsoft.Communication.RecognizeCompleted",
        },
    )
    assert spec.validate_callback_event(good) == "RecognizeCompleted"


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("RecognizeCompleted", {"dtmfResult": {"tones": ["1"]}}, "is not one of"),
        ("RecognizeCompleted", {"recognitionType": "Dtmf"}, "is not one of"),
        ("PlayFailed", {"failedPlaySourceIndex": "0"}, "is not of type 'integer'"),
        ("PlayFailed", {"resultInformation": {"code": 400.0}}, "is not of type 'integer'"),
        ("PlayFailed", {"resultInformation": {"code": 2**31}}, "is greater than the maximum"),
        ("CallConnected", {"unexpected": True}, "Unevaluated properties are not allowed"),
        ("CallTransferAccepted", {"transferee": None}, "is not of type 'object'"),
        ("ParticipantsUpdated", {"participants": [{"identifier": {"rawId": "8:acs:x"}}]}, "'kind' is a required"),
        ("RecordingStateChanged", {"startDateTime": "yesterday"}, "is not a 'date-time'"),
        ("CallConnected", {"publicEventType": "Microsoft.Communication.CallDisconnected"}, "publicEventType"),
        ("NoSuchEvent", {}, "is not a callback event"),
    ],
)
def test_validator_rejects(name: str, data: dict[str, Any], problem: str) -> None:
    with pytest.raises(spec.SpecViolation, match=problem.replace("(", r"\(").replace("'", "'")):
        spec.validate_callback_event(_event(name, data))


def test_validator_checks_envelopes_and_eventgrid_types() -> None:
    bad = _event("CallConnected", {})
    bad["specversion"] = "0.3"
    with pytest.raises(spec.SpecViolation, match="specversion"):
        spec.validate_callback_event(bad)
    grid = {
        "id": "1",
        "topic": "/subscriptions/x",
        "subject": "call/x",
        "eventType": "Microsoft.Communication.ParticipantAdded",
        "eventTime": "2026-03-12T10:00:00Z",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "data": {},
    }
    with pytest.raises(spec.SpecViolation, match="not an ACS calling"):
        spec.validate_eventgrid_event(grid)
    grid["eventType"] = "Microsoft.Communication.RecordingFileStatusUpdated"
    grid["data"] = {"recordingStorageInfo": {"recordingChunks": []}, "recordingFormatType": "wav"}
    with pytest.raises(spec.SpecViolation, match="is not one of"):
        spec.validate_eventgrid_event(grid)


def test_validator_checks_responses() -> None:
    spec.validate_response("CallRecording_StartRecording", 200, {"recordingId": "r", "recordingState": "active"})
    spec.validate_response("Play", 202, b"")
    with pytest.raises(spec.SpecViolation, match="has no body"):
        spec.validate_response("CancelAllMediaOperations", 202, {})
    with pytest.raises(spec.SpecViolation, match="declares"):
        spec.validate_response("Play", 200, None)
    with pytest.raises(spec.SpecViolation, match="'message' is a required"):
        spec.validate_response("GetCall", 404, {"error": {"code": "8522"}})
