"""Every Call Automation operation, driven by the real sync client against the simulator.

Each test checks both sides: what the service did (the simulator's per-call timeline and call
state) and what the app hears back (the callbacks the receiver got: types, order,
operationContext and resultInformation).
"""

from __future__ import annotations

import time

import pytest
from azure.communication.callautomation import (
    CallConnectionState,
    CallRejectReason,
    ChannelAffinity,
    CommunicationUserIdentifier,
    DtmfTone,
    FileSource,
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    SsmlSource,
    TextSource,
)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.conftest import AI_ENDPOINT
from tests.support.calls import (
    CALLER,
    CALLER_RAW,
    OUR_NUMBER,
    QuickReceiver,
    answer,
    call_state,
    data,
    idle,
    operations,
    parties,
    request_body,
    requests_seen,
    result,
    ring,
    summaries,
    wait_until,
)

AGENT = "8:acs:agent"
AGENT_ID = CommunicationUserIdentifier(AGENT)
CALLER_ID = PhoneNumberIdentifier(CALLER)
MUSIC = "https://media.example.com/hold-music.wav"


@pytest.fixture
def receiver():
    with QuickReceiver() as rx:
        yield rx


CHOICES = [
    RecognitionChoice(label="Sales", phrases=["sales", "buy"], tone=DtmfTone.ONE),
    RecognitionChoice(label="Support", phrases=["support", "help"], tone=DtmfTone.TWO),
]


def raw_ids(participants) -> list[str]:
    return [p.identifier.raw_id for p in participants]


def roster(event_data: dict) -> dict[str, dict]:
    return {p["identifier"]["rawId"]: p for p in event_data["participants"]}


# -- creating, answering, redirecting, rejecting, connecting ---------------------------------------


def test_create_call_one_to_one(client, receiver, ctl):
    props = client.create_call(
        AGENT_ID,
        receiver.url + "/cb",
        operation_context="outbound",
        source_display_name="Contoso",
        cognitive_services_endpoint=AI_ENDPOINT,
    )
    assert props.call_connection_state == CallConnectionState.CONNECTING
    assert [t.raw_id for t in props.targets] == [AGENT]
    assert props.source_display_name == "Contoso"
    connected = data(receiver, "CallConnected", props.call_connection_id)
    assert connected["operationContext"] == "outbound"
    assert result(connected) == (200, 0)
    assert connected["serverCallId"] == props.server_call_id
    updated = data(receiver, "ParticipantsUpdated", props.call_connection_id)
    assert list(roster(updated)) == [AGENT]
    assert receiver.types(props.call_connection_id) == ["CallConnected", "ParticipantsUpdated"]

    fetched = client.get_call_connection(props.call_connection_id).get_call_properties()
    assert fetched.call_connection_state == CallConnectionState.CONNECTED
    assert fetched.server_call_id == props.server_call_id
    assert fetched.correlation_id == props.correlation_id
    assert fetched.callback_url == receiver.url + "/cb"

    assert requests_seen(ctl, props.call_connection_id)[:2] == [("CreateCall", 201), ("GetCall", 200)]
    assert request_body(ctl, props.call_connection_id, "CreateCall")["callIntelligenceOptions"] == {
        "cognitiveServicesEndpoint": AI_ENDPOINT
    }
    assert summaries(ctl, props.call_connection_id, "party") == [f"{AGENT} rings", f"{AGENT} answers"]
    state = call_state(ctl, props.server_call_id)
    assert state["state"] == "established"
    assert state["participants"] == [AGENT]


def test_create_call_to_phone_needs_and_shows_caller_id(client, receiver, ctl):
    target = PhoneNumberIdentifier("+14255550199")
    with pytest.raises(HttpResponseError) as refused:
        client.create_call(target, receiver.url + "/cb")
    assert refused.value.status_code == 400
    assert "sourceCallerIdNumber" in str(refused.value)

    props = client.create_call(target, receiver.url + "/cb", source_caller_id_number=PhoneNumberIdentifier(OUR_NUMBER))
    assert props.source_caller_id_number.raw_id == "4:" + OUR_NUMBER
    receiver.wait_for("ParticipantsUpdated", call_connection_id=props.call_connection_id)
    connection = client.get_call_connection(props.call_connection_id)
    assert raw_ids(connection.list_participants()) == ["4:+14255550199"]
    assert connection.get_call_properties().source_caller_id_number.raw_id == "4:" + OUR_NUMBER
    body = request_body(ctl, props.call_connection_id, "CreateCall")
    assert body["sourceCallerIdNumber"] == {"value": OUR_NUMBER}
    assert body["targets"][0]["rawId"] == "4:+14255550199"
    # Nothing reached the app for the refused attempt.
    assert receiver.types() == ["CallConnected", "ParticipantsUpdated"]


def test_create_group_call_rings_every_target_and_joins_those_who_answer(client, receiver, ctl):
    parties(ctl, {"8:acs:busy": {"answer": "busy"}})
    targets = [AGENT_ID, CommunicationUserIdentifier("8:acs:second"), CommunicationUserIdentifier("8:acs:busy")]
    with pytest.warns(DeprecationWarning):
        props = client.create_group_call(targets, receiver.url + "/cb", operation_context="group")
    assert sorted(t.raw_id for t in props.targets) == sorted(["8:acs:agent", "8:acs:second", "8:acs:busy"])
    connected = data(receiver, "CallConnected", props.call_connection_id)
    assert connected["operationContext"] == "group"
    updated = data(receiver, "ParticipantsUpdated", props.call_connection_id)
    assert sorted(roster(updated)) == ["8:acs:agent", "8:acs:second"]
    connection = client.get_call_connection(props.call_connection_id)
    assert sorted(raw_ids(connection.list_participants())) == ["8:acs:agent", "8:acs:second"]
    party_lines = summaries(ctl, props.call_connection_id, "party")
    assert {"8:acs:agent rings", "8:acs:second rings", "8:acs:busy rings", "8:acs:busy is busy"} <= set(party_lines)
    assert "8:acs:busy answers" not in party_lines
    assert len(request_body(ctl, props.call_connection_id, "CreateCall")["targets"]) == 3


def test_create_call_nobody_answers_gives_create_call_failed(client, receiver, ctl):
    parties(ctl, {"8:acs:a": {"answer": "decline"}, "8:acs:b": {"answer": "decline"}})
    props = client.create_call(
        [CommunicationUserIdentifier("8:acs:a"), CommunicationUserIdentifier("8:acs:b")],
        receiver.url + "/cb",
        operation_context="doomed",
    )
    failed = data(receiver, "CreateCallFailed", props.call_connection_id)
    assert failed["operationContext"] == "doomed"
    assert result(failed) == (603, 0)
    assert receiver.types(props.call_connection_id) == ["CreateCallFailed"]
    assert call_state(ctl, props.server_call_id)["state"] == "ended"
    with pytest.raises(ResourceNotFoundError):
        client.get_call_connection(props.call_connection_id).get_call_properties()


def test_answer_call(client, receiver, ctl):
    inbound = ring(ctl)
    props = client.answer_call(
        inbound.incoming_call_context,
        receiver.url + "/cb",
        cognitive_services_endpoint=AI_ENDPOINT,
        operation_context="inbound",
    )
    assert props.call_connection_state == CallConnectionState.CONNECTING
    assert props.server_call_id == inbound.server_call_id
    assert props.correlation_id == inbound.correlation_id
    assert props.source.raw_id == "4:" + OUR_NUMBER
    assert props.answered_for.raw_id == "4:" + OUR_NUMBER  # the PSTN number the caller dialled
    assert [t.raw_id for t in props.targets] == [CALLER_RAW]
    connected = data(receiver, "CallConnected", props.call_connection_id)
    assert connected["operationContext"] == "inbound"
    assert connected["correlationId"] == inbound.correlation_id
    updated = data(receiver, "ParticipantsUpdated", props.call_connection_id)
    assert list(roster(updated)) == [CALLER_RAW]
    assert receiver.types(props.call_connection_id) == ["CallConnected", "ParticipantsUpdated"]

    # An incoming call can be answered once.
    with pytest.raises(HttpResponseError) as again:
        client.answer_call(inbound.incoming_call_context, receiver.url + "/cb")
    assert again.value.status_code == 400
    assert again.value.error.code == "8527"

    assert operations(ctl, inbound.server_call_id) == ["AnswerCall", "AnswerCall"]
    assert requests_seen(ctl, inbound.server_call_id)[-1] == ("AnswerCall", 400)
    state = call_state(ctl, inbound.server_call_id)
    assert state["state"] == "established"
    assert state["outcome"] == "answered"
    assert state["connections"] == [{"callConnectionId": props.call_connection_id, "state": "connected"}]


def test_redirect_call(client, receiver, ctl):
    inbound = ring(ctl)
    assert client.redirect_call(inbound.incoming_call_context, AGENT_ID) is None
    wait_until(lambda: call_state(ctl, inbound.server_call_id)["state"] == "established")
    state = call_state(ctl, inbound.server_call_id)
    assert state["state"] == "established"
    assert state["outcome"] == f"redirected to {AGENT}"
    assert state["participants"] == [CALLER_RAW, AGENT]
    assert state["connections"] == []  # the app never joined the call
    assert request_body(ctl, inbound.server_call_id, "RedirectCall")["target"]["rawId"] == AGENT
    assert f"{AGENT} answers" in summaries(ctl, inbound.server_call_id, "party")
    with pytest.raises(HttpResponseError) as used:
        client.answer_call(inbound.incoming_call_context, receiver.url + "/cb")
    assert used.value.error.code == "8527"
    idle(ctl)
    assert receiver.callbacks == []


@pytest.mark.parametrize("reason", [None, CallRejectReason.NONE, CallRejectReason.BUSY, CallRejectReason.FORBIDDEN])
def test_reject_call(client, receiver, ctl, reason):
    inbound = ring(ctl)
    kwargs = {} if reason is None else {"call_reject_reason": reason}
    assert client.reject_call(inbound.incoming_call_context, **kwargs) is None
    expected = "none" if reason is None else reason.value
    state = call_state(ctl, inbound.server_call_id)
    assert state["state"] == "ended"
    assert state["outcome"] == f"rejected ({expected})"
    assert state["participants"] == []
    body = request_body(ctl, inbound.server_call_id, "RejectCall")
    assert body.get("callRejectReason", "none") == expected
    assert f"rejected with reason {expected}; the caller hears the call fail" in summaries(
        ctl, inbound.server_call_id, "call"
    )
    with pytest.raises(HttpResponseError):
        client.answer_call(inbound.incoming_call_context, receiver.url + "/cb")
    idle(ctl)
    assert receiver.callbacks == []


def test_reject_call_with_unknown_reason_is_refused(client, ctl):
    inbound = ring(ctl)
    with pytest.raises(HttpResponseError) as refused:
        client.reject_call(inbound.incoming_call_context, call_reject_reason="maybeLater")
    assert refused.value.status_code == 400
    assert call_state(ctl, inbound.server_call_id)["state"] == "ringing"


def test_connect_call_to_ongoing_group_call(client, receiver, ctl):
    group = ctl("POST", "/__sim/group-calls", {"members": ["8:acs:a", "8:acs:b"]})
    props = client.connect_call(
        receiver.url + "/cb", server_call_id=group["serverCallId"], operation_context="join-server"
    )
    assert props.server_call_id == group["serverCallId"]
    connected = data(receiver, "CallConnected", props.call_connection_id)
    assert connected["operationContext"] == "join-server"
    assert sorted(roster(data(receiver, "ParticipantsUpdated", props.call_connection_id))) == ["8:acs:a", "8:acs:b"]
    connection = client.get_call_connection(props.call_connection_id)
    assert sorted(raw_ids(connection.list_participants())) == ["8:acs:a", "8:acs:b"]
    body = request_body(ctl, group["serverCallId"], "Connect")
    assert body["callLocator"] == {"kind": "serverCallLocator", "serverCallId": group["serverCallId"]}
    assert "the app connects to the ongoing call" in summaries(ctl, group["serverCallId"], "call")

    # The same call, found by its group call id, takes a second connection.
    second = client.connect_call(receiver.url + "/second", group_call_id=group["groupCallId"])
    assert second.server_call_id == group["serverCallId"]
    receiver.wait_for("CallConnected", call_connection_id=second.call_connection_id)
    state = call_state(ctl, group["serverCallId"])
    assert [c["state"] for c in state["connections"]] == ["connected", "connected"]
    assert [
        c["path"] for c in receiver.callbacks if c["event"]["data"]["callConnectionId"] == second.call_connection_id
    ][0] == "/second"


def test_connect_call_to_a_room(client, receiver, ctl):
    room = ctl("POST", "/__sim/group-calls", {"members": ["8:acs:host"], "room_id": "room-42"})
    props = client.connect_call(receiver.url + "/cb", room_id="room-42", operation_context="room")
    assert props.server_call_id == room["serverCallId"]
    assert data(receiver, "CallConnected", props.call_connection_id)["operationContext"] == "room"
    assert request_body(ctl, room["serverCallId"], "Connect")["callLocator"] == {
        "kind": "roomCallLocator",
        "roomId": "room-42",
    }
    assert raw_ids(client.get_call_connection(props.call_connection_id).list_participants()) == ["8:acs:host"]


def test_connect_call_to_unknown_call_fails(client, receiver, ctl):
    props = client.connect_call(receiver.url + "/cb", server_call_id="no-such-call", operation_context="lost")
    failed = data(receiver, "ConnectFailed", props.call_connection_id)
    assert failed["operationContext"] == "lost"
    assert result(failed) == (404, 8522)
    assert receiver.types(props.call_connection_id) == ["ConnectFailed"]
    assert call_state(ctl, props.call_connection_id)["connections"] == [
        {"callConnectionId": props.call_connection_id, "state": "disconnected"}
    ]
    with pytest.raises(ResourceNotFoundError):
        client.get_call_connection(props.call_connection_id).get_call_properties()


# -- ending calls ----------------------------------------------------------------------------------


def test_hang_up_leaves_a_call_that_others_stay_in(client, receiver, ctl):
    group = ctl("POST", "/__sim/group-calls", {"members": ["8:acs:a", "8:acs:b"]})
    props = client.connect_call(receiver.url + "/cb", server_call_id=group["serverCallId"], operation_context="g")
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    connection = client.get_call_connection(props.call_connection_id)
    connection.hang_up(False)
    disconnected = data(receiver, "CallDisconnected", props.call_connection_id)
    assert disconnected["operationContext"] == "g"
    assert result(disconnected) == (200, 0)
    assert receiver.types(props.call_connection_id) == ["CallConnected", "ParticipantsUpdated", "CallDisconnected"]
    state = call_state(ctl, group["serverCallId"])
    assert state["state"] == "established"  # the others are still talking
    assert sorted(state["participants"]) == ["8:acs:a", "8:acs:b"]
    assert state["connections"] == [{"callConnectionId": props.call_connection_id, "state": "disconnected"}]
    assert requests_seen(ctl, group["serverCallId"])[-1] == ("HangupCall", 204)
    with pytest.raises(ResourceNotFoundError):
        connection.get_call_properties()


def test_hang_up_in_a_one_to_one_call_ends_it(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    call.connection.hang_up(is_for_everyone=False)
    disconnected = data(receiver, "CallDisconnected", call.ccid)
    assert result(disconnected) == (200, 0)
    state = call_state(ctl, call.server_call_id)
    assert state["state"] == "ended"
    assert "the app hangs up" in summaries(ctl, call.server_call_id, "call")
    assert operations(ctl, call.server_call_id) == ["AnswerCall", "HangupCall"]


def test_hang_up_for_everyone_terminates(client, receiver, ctl):
    group = ctl("POST", "/__sim/group-calls", {"members": ["8:acs:a", "8:acs:b"]})
    props = client.connect_call(receiver.url + "/cb", server_call_id=group["serverCallId"])
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    connection = client.get_call_connection(props.call_connection_id)
    connection.hang_up(is_for_everyone=True)
    disconnected = data(receiver, "CallDisconnected", props.call_connection_id)
    assert result(disconnected) == (200, 5001)
    state = call_state(ctl, group["serverCallId"])
    assert state["state"] == "ended"
    assert state["participants"] == []
    assert requests_seen(ctl, group["serverCallId"])[-1] == ("TerminateCall", 204)
    assert "the app terminates the call for everyone" in summaries(ctl, group["serverCallId"], "call")
    with pytest.raises(ResourceNotFoundError):
        connection.get_call_properties()
    with pytest.raises(ResourceNotFoundError):
        connection.hang_up(True)


# -- transfer --------------------------------------------------------------------------------------


def test_transfer_accepted_with_voip_headers(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    transferred = call.connection.transfer_call_to_participant(
        AGENT_ID, operation_context="xfer", voip_headers={"x-queue": "billing"}
    )
    assert transferred.operation_context == "xfer"
    accepted = data(receiver, "CallTransferAccepted", call.ccid)
    assert accepted["operationContext"] == "xfer"
    assert result(accepted) == (202, 7015)
    assert accepted["transferTarget"]["rawId"] == AGENT
    assert accepted["transferee"]["rawId"] == CALLER_RAW
    disconnected = data(receiver, "CallDisconnected", call.ccid)
    assert disconnected["operationContext"] == "xfer"
    assert receiver.types(call.ccid) == [
        "CallConnected",
        "ParticipantsUpdated",
        "CallTransferAccepted",
        "CallDisconnected",
    ]
    assert request_body(ctl, call.ccid, "TransferToParticipant")["customCallingContext"] == {
        "voipHeaders": {"x-queue": "billing"}
    }
    assert f'transfer to {AGENT} with headers {{"voipHeaders": {{"x-queue": "billing"}}}}' in summaries(
        ctl, call.server_call_id, "call"
    )
    state = call_state(ctl, call.server_call_id)
    assert state["participants"] == [CALLER_RAW, AGENT]
    assert state["outcome"] == f"transferred to {AGENT}"
    assert state["connections"][0]["state"] == "disconnected"


def test_transfer_to_phone_with_sip_headers_and_transferee(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    target = PhoneNumberIdentifier("+14255550111")
    call.connection.transfer_call_to_participant(
        target,
        transferee=CALLER_ID,
        sip_headers={"X-MS-Custom-Case": "42"},
        source_caller_id_number=PhoneNumberIdentifier(OUR_NUMBER),
        operation_callback_url=receiver.url + "/xfer",
    )
    accepted = data(receiver, "CallTransferAccepted", call.ccid)
    assert "operationContext" not in accepted
    assert accepted["transferTarget"]["rawId"] == "4:+14255550111"
    assert accepted["transferee"]["rawId"] == CALLER_RAW
    paths = {c["event"]["type"].rsplit(".", 1)[-1]: c["path"] for c in receiver.callbacks}
    assert paths["CallTransferAccepted"] == "/xfer"
    body = request_body(ctl, call.ccid, "TransferToParticipant")
    assert body["customCallingContext"] == {"sipHeaders": {"X-MS-Custom-Case": "42"}}
    assert body["transferee"]["rawId"] == CALLER_RAW
    assert body["sourceCallerIdNumber"] == {"value": OUR_NUMBER}
    assert call_state(ctl, call.server_call_id)["participants"] == [CALLER_RAW, "4:+14255550111"]


def test_transfer_declined(client, receiver, ctl):
    parties(ctl, {AGENT: {"answer": "decline"}})
    call = answer(client, receiver, ctl)
    call.connection.transfer_call_to_participant(AGENT_ID, operation_context="xfer")
    failed = data(receiver, "CallTransferFailed", call.ccid)
    assert failed["operationContext"] == "xfer"
    assert result(failed) == (603, 0)
    assert f"{AGENT} declines" in summaries(ctl, call.server_call_id, "party")
    # The app keeps the caller.
    assert call.connection.get_call_properties().call_connection_state == CallConnectionState.CONNECTED
    assert raw_ids(call.connection.list_participants()) == [CALLER_RAW]
    idle(ctl)
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "CallTransferFailed"]


# -- participants ----------------------------------------------------------------------------------


def test_add_participant_accepted(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    added = call.connection.add_participant(
        AGENT_ID, operation_context="add-agent", invitation_timeout=30, voip_headers={"x-case": "7"}
    )
    assert added.operation_context == "add-agent"
    assert added.invitation_id
    assert added.participant.identifier.raw_id == AGENT
    succeeded = data(receiver, "AddParticipantSucceeded", call.ccid)
    assert succeeded["operationContext"] == "add-agent"
    assert result(succeeded) == (200, 0)
    assert succeeded["participant"]["rawId"] == AGENT
    updated = receiver.wait_for("ParticipantsUpdated", count=2, call_connection_id=call.ccid)[-1]["data"]
    assert sorted(roster(updated)) == sorted([CALLER_RAW, AGENT])
    assert receiver.types(call.ccid) == [
        "CallConnected",
        "ParticipantsUpdated",
        "AddParticipantSucceeded",
        "ParticipantsUpdated",
    ]
    assert sorted(raw_ids(call.connection.list_participants())) == sorted([CALLER_RAW, AGENT])
    assert request_body(ctl, call.ccid, "AddParticipant")["invitationTimeoutInSeconds"] == 30
    assert f'invite {AGENT} with headers {{"voipHeaders": {{"x-case": "7"}}}}' in summaries(
        ctl, call.server_call_id, "call"
    )
    assert f"{AGENT} joins the call" in summaries(ctl, call.server_call_id, "party")


def test_add_phone_participant_needs_caller_id(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    with pytest.raises(HttpResponseError) as refused:
        call.connection.add_participant(PhoneNumberIdentifier("+14255550123"))
    assert refused.value.status_code == 400
    added = call.connection.add_participant(
        PhoneNumberIdentifier("+14255550123"),
        source_caller_id_number=PhoneNumberIdentifier(OUR_NUMBER),
        sip_headers={"X-MS-Custom-Ticket": "99"},
        operation_context="pstn",
    )
    succeeded = data(receiver, "AddParticipantSucceeded", call.ccid)
    assert succeeded["participant"]["rawId"] == "4:+14255550123"
    assert succeeded["operationContext"] == "pstn"
    assert added.participant.identifier.raw_id == "4:+14255550123"
    body = request_body(ctl, call.ccid, "AddParticipant")
    assert body["customCallingContext"] == {"sipHeaders": {"X-MS-Custom-Ticket": "99"}}
    assert body["sourceCallerIdNumber"] == {"value": OUR_NUMBER}
    assert [s for op, s in requests_seen(ctl, call.ccid) if op == "AddParticipant"] == [400, 202]


@pytest.mark.parametrize(("behaviour", "expected"), [("decline", (603, 0)), ("busy", (486, 0))])
def test_add_participant_refused(client, receiver, ctl, behaviour, expected):
    parties(ctl, {AGENT: {"answer": behaviour}})
    call = answer(client, receiver, ctl)
    call.connection.add_participant(AGENT_ID, operation_context="add")
    failed = data(receiver, "AddParticipantFailed", call.ccid)
    assert failed["operationContext"] == "add"
    assert result(failed) == expected
    assert failed["participant"]["rawId"] == AGENT
    assert raw_ids(call.connection.list_participants()) == [CALLER_RAW]
    assert call_state(ctl, call.server_call_id)["participants"] == [CALLER_RAW]
    idle(ctl)
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "AddParticipantFailed"]


def test_add_participant_no_answer_times_out(client, receiver, ctl):
    parties(ctl, {AGENT: {"answer": "no_answer"}})
    call = answer(client, receiver, ctl)
    started = time.monotonic()
    call.connection.add_participant(AGENT_ID, operation_context="ring", invitation_timeout=5)
    failed = data(receiver, "AddParticipantFailed", call.ccid)
    assert time.monotonic() - started < 5  # service seconds run at time_scale
    assert failed["operationContext"] == "ring"
    assert result(failed) == (408, 10004)
    assert request_body(ctl, call.ccid, "AddParticipant")["invitationTimeoutInSeconds"] == 5
    assert f"{AGENT} does not answer" in summaries(ctl, call.server_call_id, "party")
    assert call_state(ctl, call.server_call_id)["participants"] == [CALLER_RAW]
    with pytest.raises(HttpResponseError) as too_long:
        call.connection.add_participant(AGENT_ID, invitation_timeout=181)
    assert too_long.value.status_code == 400


def test_cancel_add_participant(client, receiver, ctl):
    parties(ctl, {AGENT: {"answer": "no_answer"}})
    call = answer(client, receiver, ctl)
    added = call.connection.add_participant(AGENT_ID, operation_context="add", invitation_timeout=60)
    canceled = call.connection.cancel_add_participant_operation(added.invitation_id, operation_context="cancel")
    assert canceled.invitation_id == added.invitation_id
    assert canceled.operation_context == "cancel"
    succeeded = data(receiver, "CancelAddParticipantSucceeded", call.ccid)
    assert succeeded["operationContext"] == "cancel"
    assert succeeded["invitationId"] == added.invitation_id
    assert result(succeeded) == (200, 0)
    assert f"{AGENT} stops ringing (invitation canceled)" in summaries(ctl, call.server_call_id, "party")
    assert request_body(ctl, call.ccid, "CancelAddParticipant")["invitationId"] == added.invitation_id
    time.sleep(0.8)  # longer than the (scaled) invitation timeout: the canceled invite must stay quiet
    idle(ctl)
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "CancelAddParticipantSucceeded"]
    assert call_state(ctl, call.server_call_id)["participants"] == [CALLER_RAW]
    with pytest.raises(HttpResponseError) as unknown:
        call.connection.cancel_add_participant_operation("00000000-0000-0000-0000-000000000000")
    assert unknown.value.status_code == 404


def test_cancel_add_participant_too_late(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    added = call.connection.add_participant(AGENT_ID)
    receiver.wait_for("AddParticipantSucceeded", call_connection_id=call.ccid)
    call.connection.cancel_add_participant_operation(added.invitation_id, operation_context="late")
    failed = data(receiver, "CancelAddParticipantFailed", call.ccid)
    assert failed["operationContext"] == "late"
    assert failed["invitationId"] == added.invitation_id
    assert result(failed) == (400, 8522)
    assert AGENT in call_state(ctl, call.server_call_id)["participants"]


def test_remove_participant(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    call.connection.add_participant(AGENT_ID)
    receiver.wait_for("AddParticipantSucceeded", call_connection_id=call.ccid)
    removed = call.connection.remove_participant(AGENT_ID, operation_context="remove-agent")
    assert removed.operation_context == "remove-agent"
    succeeded = data(receiver, "RemoveParticipantSucceeded", call.ccid)
    assert succeeded["operationContext"] == "remove-agent"
    assert succeeded["participant"]["rawId"] == AGENT
    assert result(succeeded) == (200, 0)
    updated = receiver.wait_for("ParticipantsUpdated", count=3, call_connection_id=call.ccid)[-1]["data"]
    assert list(roster(updated)) == [CALLER_RAW]
    assert receiver.types(call.ccid)[-2:] == ["RemoveParticipantSucceeded", "ParticipantsUpdated"]
    assert raw_ids(call.connection.list_participants()) == [CALLER_RAW]
    assert f"{AGENT} is removed" in summaries(ctl, call.server_call_id, "call")
    assert call_state(ctl, call.server_call_id)["participants"] == [CALLER_RAW]
    with pytest.raises(ResourceNotFoundError):
        call.connection.remove_participant(AGENT_ID)


def test_mute_participant(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    call.connection.add_participant(AGENT_ID)
    receiver.wait_for("AddParticipantSucceeded", call_connection_id=call.ccid)
    assert call.connection.get_participant(AGENT_ID).is_muted is False
    muted = call.connection.mute_participant(AGENT_ID, operation_context="mute")
    assert muted.operation_context == "mute"
    assert call.connection.get_participant(AGENT_ID).is_muted is True
    assert call.connection.get_participant(CALLER_ID).is_muted is False
    updated = receiver.wait_for("ParticipantsUpdated", count=3, call_connection_id=call.ccid)[-1]["data"]
    assert roster(updated)[AGENT]["isMuted"] is True
    assert roster(updated)[CALLER_RAW]["isMuted"] is False
    assert f"{AGENT} is muted" in summaries(ctl, call.server_call_id, "call")
    assert request_body(ctl, call.ccid, "Mute")["targetParticipants"][0]["rawId"] == AGENT
    with pytest.raises(ResourceNotFoundError):
        call.connection.mute_participant(CommunicationUserIdentifier("8:acs:stranger"))


def test_list_and_get_participants(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    participants = list(call.connection.list_participants())
    assert raw_ids(participants) == [CALLER_RAW]
    assert isinstance(participants[0].identifier, PhoneNumberIdentifier)
    assert participants[0].identifier.properties["value"] == CALLER
    assert participants[0].is_muted is False
    assert participants[0].is_on_hold is False
    fetched = call.connection.get_participant(CALLER_ID)
    assert fetched.identifier.raw_id == CALLER_RAW
    with pytest.raises(ResourceNotFoundError) as missing:
        call.connection.get_participant(AGENT_ID)
    assert missing.value.error.code == "8523"
    assert requests_seen(ctl, call.ccid)[1:] == [
        ("GetParticipants", 200),
        ("GetParticipant", 200),
        ("GetParticipant", 404),
    ]


def test_hold_with_music_and_unhold(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    call.connection.hold(CALLER_ID, play_source=FileSource(MUSIC), operation_context="hold")
    assert call.connection.get_participant(CALLER_ID).is_on_hold is True
    updated = receiver.wait_for("ParticipantsUpdated", count=2, call_connection_id=call.ccid)[-1]["data"]
    assert roster(updated)[CALLER_RAW]["isOnHold"] is True
    body = request_body(ctl, call.ccid, "Hold")
    assert body["playSourceInfo"] == {"kind": "file", "file": {"uri": MUSIC}}
    assert body["operationContext"] == "hold"
    assert f"{CALLER_RAW} on hold with music {MUSIC}" in summaries(ctl, call.server_call_id, "call")

    call.connection.unhold(CALLER_ID, operation_context="unhold")
    assert call.connection.get_participant(CALLER_ID).is_on_hold is False
    updated = receiver.wait_for("ParticipantsUpdated", count=3, call_connection_id=call.ccid)[-1]["data"]
    assert roster(updated)[CALLER_RAW]["isOnHold"] is False
    assert f"{CALLER_RAW} taken off hold" in summaries(ctl, call.server_call_id, "call")
    idle(ctl)
    assert "HoldFailed" not in receiver.types(call.ccid)


@pytest.mark.parametrize(
    ("music", "cognitive", "expected"),
    [
        (FileSource("https://unreachable.example.com/music.wav"), True, (400, 8536)),
        (FileSource("https://media.example.com/music.mp3"), True, (400, 8535)),
        (TextSource(text="Please hold"), False, (400, 8565)),
    ],
    ids=["unreachable", "not-wav", "tts-without-ai"],
)
def test_hold_music_failures(client, receiver, ctl, music, cognitive, expected):
    call = answer(client, receiver, ctl, cognitive=cognitive)
    call.connection.hold(CALLER_ID, play_source=music, operation_context="hold")
    failed = data(receiver, "HoldFailed", call.ccid)
    assert failed["operationContext"] == "hold"
    assert result(failed) == expected
    # The caller is held all the same; only the music failed.
    assert call.connection.get_participant(CALLER_ID).is_on_hold is True


def test_hold_with_an_invalid_play_source_is_refused(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    with pytest.raises(HttpResponseError) as refused:
        call.connection.hold(CALLER_ID, play_source=FileSource(""), operation_context="hold")
    assert refused.value.status_code == 400
    assert call.connection.get_participant(CALLER_ID).is_on_hold is False
    assert not any("on hold" in s for s in summaries(ctl, call.server_call_id, "call"))
    idle(ctl)
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated"]


@pytest.mark.parametrize(
    "operation",
    [
        lambda c: c.move_participants([AGENT_ID], "some-other-call-connection"),
        lambda c: c.start_transcription(locale="en-US"),
        lambda c: c.update_transcription(locale="fr-FR"),
        lambda c: c.stop_transcription(),
        lambda c: c.start_media_streaming(),
        lambda c: c.stop_media_streaming(),
    ],
    ids=[
        "move_participants",
        "start_transcription",
        "update_transcription",
        "stop_transcription",
        "start_media_streaming",
        "stop_media_streaming",
    ],
)
def test_operations_the_simulator_does_not_implement_say_so(client, receiver, ctl, operation):
    call = answer(client, receiver, ctl)
    with pytest.raises(HttpResponseError) as refused:
        operation(call.connection)
    assert refused.value.status_code == 501
    assert refused.value.error.code == "NotImplemented"
    # The call is untouched.
    assert call.connection.get_call_properties().call_connection_state == CallConnectionState.CONNECTED


# -- media: play -----------------------------------------------------------------------------------


def test_play_tts_with_voice_and_locale_to_one_participant(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    source = TextSource(
        text="Welcome to Contoso", voice_name="en-US-NancyNeural", source_locale="en-US", voice_kind="female"
    )
    call.connection.play_media(source, [CALLER_ID], operation_context="welcome")
    completed = data(receiver, "PlayCompleted", call.ccid)
    assert completed["operationContext"] == "welcome"
    assert result(completed) == (200, 0)
    assert data(receiver, "PlayStarted", call.ccid)["operationContext"] == "welcome"
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "PlayStarted", "PlayCompleted"]
    body = request_body(ctl, call.ccid, "Play")
    assert body["playSources"] == [
        {
            "kind": "text",
            "text": {
                "text": "Welcome to Contoso",
                "sourceLocale": "en-US",
                "voiceKind": "female",
                "voiceName": "en-US-NancyNeural",
            },
        }
    ]
    assert [t["rawId"] for t in body["playTo"]] == [CALLER_RAW]
    assert body["playOptions"] == {"loop": False}
    assert "hears: Welcome to Contoso" in summaries(ctl, call.server_call_id, "party")


def test_play_ssml(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    ssml = '<speak version="1.0" xml:lang="en-US"><voice name="en-US-JennyNeural">Goodbye</voice></speak>'
    call.connection.play_media(SsmlSource(ssml_text=ssml), operation_context="ssml")
    assert data(receiver, "PlayCompleted", call.ccid)["operationContext"] == "ssml"
    assert request_body(ctl, call.ccid, "Play")["playSources"] == [{"kind": "ssml", "ssml": {"ssmlText": ssml}}]
    assert any(s.startswith("hears: <speak") for s in summaries(ctl, call.server_call_id, "party"))


def test_play_wav_file_and_several_sources(client, receiver, ctl):
    call = answer(client, receiver, ctl, cognitive=False)
    call.connection.play_media(
        [FileSource("https://media.example.com/a.wav"), FileSource("https://media.example.com/b.wav")],
        operation_context="files",
    )
    assert data(receiver, "PlayCompleted", call.ccid)["operationContext"] == "files"
    assert len(request_body(ctl, call.ccid, "Play")["playSources"]) == 2
    assert "hears: https://media.example.com/a.wav https://media.example.com/b.wav" in summaries(
        ctl, call.server_call_id, "party"
    )


@pytest.mark.parametrize(
    ("source", "cognitive", "expected"),
    [
        (FileSource("https://media.example.com/prompt.mp3"), True, (400, 8535)),
        (FileSource("https://unreachable.example.com/prompt.wav"), True, (400, 8536)),
        (TextSource(text="needs speech services"), False, (400, 8565)),
    ],
    ids=["not-wav", "unreachable", "tts-without-ai"],
)
def test_play_failures(client, receiver, ctl, source, cognitive, expected):
    call = answer(client, receiver, ctl, cognitive=cognitive)
    call.connection.play_media(source, operation_context="bad")
    failed = data(receiver, "PlayFailed", call.ccid)
    assert failed["operationContext"] == "bad"
    assert result(failed) == expected
    assert failed["failedPlaySourceIndex"] == 0
    idle(ctl)
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "PlayFailed"]
    assert not any(s.startswith("hears:") for s in summaries(ctl, call.server_call_id, "party"))


def test_play_loop_then_cancel_all_media(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    call.connection.play_media(FileSource(MUSIC), loop=True, operation_context="loop")
    receiver.wait_for("PlayStarted", call_connection_id=call.ccid)
    time.sleep(0.2)  # several prompt lengths: a looping play does not complete by itself
    assert "PlayCompleted" not in receiver.types(call.ccid)
    call.connection.cancel_all_media_operations()
    canceled = data(receiver, "PlayCanceled", call.ccid)
    assert canceled["operationContext"] == "loop"
    assert result(canceled) == (400, 8508)
    time.sleep(0.1)
    idle(ctl)
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "PlayStarted", "PlayCanceled"]
    assert request_body(ctl, call.ccid, "Play")["playOptions"] == {"loop": True}
    assert f"hears: {MUSIC} (looping)" in summaries(ctl, call.server_call_id, "party")
    assert "all media operations canceled" in summaries(ctl, call.server_call_id, "call")
    assert requests_seen(ctl, call.ccid)[-1] == ("CancelAllMediaOperations", 202)


def test_play_media_to_all(client, receiver, ctl):
    group = ctl("POST", "/__sim/group-calls", {"members": ["8:acs:a", "8:acs:b"]})
    props = client.connect_call(
        receiver.url + "/cb", server_call_id=group["serverCallId"], cognitive_services_endpoint=AI_ENDPOINT
    )
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    connection = client.get_call_connection(props.call_connection_id)
    with pytest.warns(DeprecationWarning):
        connection.play_media_to_all(TextSource(text="Attention everyone"), operation_context="all")
    assert data(receiver, "PlayCompleted", props.call_connection_id)["operationContext"] == "all"
    body = request_body(ctl, group["serverCallId"], "Play")
    assert body["playTo"] == []
    assert "hears: Attention everyone" in summaries(ctl, group["serverCallId"], "party")


def test_queued_plays_run_in_order_and_cancel_all_cancels_every_one(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    call.connection.play_media(FileSource(MUSIC), loop=True, operation_context="first")
    call.connection.play_media(FileSource("https://media.example.com/next.wav"), operation_context="second")
    receiver.wait_for("PlayStarted", call_connection_id=call.ccid)
    call.connection.cancel_all_media_operations()
    canceled = receiver.wait_for("PlayCanceled", count=2, call_connection_id=call.ccid)
    assert [e["data"]["operationContext"] for e in canceled] == ["first", "second"]
    idle(ctl)
    # The queued play never started.
    assert [e["data"]["operationContext"] for e in receiver.events("PlayStarted", call.ccid)] == ["first"]


# -- media: recognize ------------------------------------------------------------------------------


def recognize_dtmf(call, **kwargs):
    call.connection.start_recognizing_media(
        RecognizeInputType.DTMF,
        CALLER_ID,
        play_prompt=TextSource(text="Enter your account number"),
        operation_context="account",
        **kwargs,
    )


def test_recognize_dtmf_max_tones(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "match": "account", "press": "1234"}])
    # A generous inter-tone timeout (0.6 s wall clock): the party's key presses must not time out under load.
    recognize_dtmf(call, dtmf_max_tones_to_collect=3, dtmf_inter_tone_timeout=60, initial_silence_timeout=10)
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert completed["operationContext"] == "account"
    assert result(completed) == (200, 8531)
    assert completed["recognitionType"] == "dtmf"
    assert completed["dtmfResult"]["tones"] == ["one", "two", "three"]
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "RecognizeCompleted"]
    body = request_body(ctl, call.ccid, "Recognize")
    assert body["recognizeInputType"] == "dtmf"
    assert body["recognizeOptions"]["dtmfOptions"]["maxTonesToCollect"] == 3
    assert body["recognizeOptions"]["initialSilenceTimeoutInSeconds"] == 10
    assert summaries(ctl, call.server_call_id, "party")[-2:] == [
        "hears: Enter your account number",
        f"{CALLER_RAW} presses 1234",
    ]


def test_recognize_dtmf_stop_tone(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "press": "42#"}])
    recognize_dtmf(
        call,
        dtmf_max_tones_to_collect=10,
        dtmf_inter_tone_timeout=60,
        dtmf_stop_tones=[DtmfTone.POUND, DtmfTone.ASTERISK],
    )
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert result(completed) == (200, 8514)
    assert completed["dtmfResult"]["tones"] == ["four", "two"]
    assert request_body(ctl, call.ccid, "Recognize")["recognizeOptions"]["dtmfOptions"]["stopTones"] == [
        "pound",
        "asterisk",
    ]


def test_recognize_dtmf_inter_tone_timeout(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "press": "7"}])
    recognize_dtmf(call, dtmf_max_tones_to_collect=4, dtmf_inter_tone_timeout=2)
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert result(completed) == (200, 8532)
    assert completed["dtmfResult"]["tones"] == ["seven"]


def test_recognize_initial_silence_timeout(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "silence": True}])
    recognize_dtmf(call, initial_silence_timeout=3)
    failed = data(receiver, "RecognizeFailed", call.ccid)
    assert failed["operationContext"] == "account"
    assert result(failed) == (400, 8510)
    assert f"{CALLER_RAW} stays silent" in summaries(ctl, call.server_call_id, "party")
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated", "RecognizeFailed"]


def test_recognize_choices_by_phrase(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "say": "I want to buy something"}])
    call.connection.start_recognizing_media(
        RecognizeInputType.CHOICES,
        CALLER_ID,
        choices=CHOICES,
        play_prompt=TextSource(text="Say sales or support"),
        operation_context="menu",
    )
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert completed["operationContext"] == "menu"
    assert result(completed) == (200, 8545)
    assert completed["recognitionType"] == "choices"
    assert completed["choiceResult"]["label"] == "Sales"
    assert completed["choiceResult"]["recognizedPhrase"] == "buy"
    body = request_body(ctl, call.ccid, "Recognize")
    assert body["recognizeOptions"]["choices"] == [
        {"label": "Sales", "phrases": ["sales", "buy"], "tone": "one"},
        {"label": "Support", "phrases": ["support", "help"], "tone": "two"},
    ]
    assert f"{CALLER_RAW} says 'I want to buy something'" in summaries(ctl, call.server_call_id, "party")


def test_recognize_choices_by_tone(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "press": "2"}])
    call.connection.start_recognizing_media(
        RecognizeInputType.CHOICES, CALLER_ID, choices=CHOICES, operation_context="menu"
    )
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert result(completed) == (200, 8533)
    assert completed["recognitionType"] == "choices"
    assert completed["choiceResult"]["label"] == "Support"


def test_recognize_choices_no_match(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "say": "billing"}])
    call.connection.start_recognizing_media(
        RecognizeInputType.CHOICES, CALLER_ID, choices=CHOICES, operation_context="menu"
    )
    failed = data(receiver, "RecognizeFailed", call.ccid)
    assert result(failed) == (400, 8547)


def test_recognize_speech(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "say": "my bill is wrong"}])
    call.connection.start_recognizing_media(
        RecognizeInputType.SPEECH,
        CALLER_ID,
        play_prompt=SsmlSource(ssml_text="<speak>How can I help?</speak>"),
        end_silence_timeout=2,
        speech_language="en-US",
        operation_context="speech",
    )
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert completed["operationContext"] == "speech"
    assert result(completed) == (200, 8568)
    assert completed["recognitionType"] == "speech"
    assert completed["speechResult"]["speech"] == "my bill is wrong"
    options = request_body(ctl, call.ccid, "Recognize")["recognizeOptions"]
    assert options["speechOptions"] == {"endSilenceTimeoutInMs": 2000}
    assert options["speechLanguage"] == "en-US"


def test_recognize_speech_needs_ai_services(client, receiver, ctl):
    call = answer(client, receiver, ctl, cognitive=False, script=[{"on": "recognize", "say": "hello"}])
    call.connection.start_recognizing_media(RecognizeInputType.SPEECH, CALLER_ID, operation_context="speech")
    failed = data(receiver, "RecognizeFailed", call.ccid)
    assert result(failed) == (400, 8565)


@pytest.mark.parametrize(
    ("step", "kind", "field", "value"),
    [
        ({"press": "5"}, "dtmf", "dtmfResult", {"tones": ["five"]}),
        ({"say": "agent please"}, "speech", "speechResult", {"speech": "agent please", "confidence": 0.92}),
    ],
    ids=["dtmf", "speech"],
)
def test_recognize_speech_or_dtmf(client, receiver, ctl, step, kind, field, value):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", **step}])
    call.connection.start_recognizing_media(
        RecognizeInputType.SPEECH_OR_DTMF,
        CALLER_ID,
        play_prompt=TextSource(text="Press or say"),
        dtmf_max_tones_to_collect=1,
        operation_context="either",
    )
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert completed["operationContext"] == "either"
    assert completed["recognitionType"] == kind
    assert completed[field] == value
    options = request_body(ctl, call.ccid, "Recognize")["recognizeOptions"]
    assert "dtmfOptions" in options and "speechOptions" in options


def test_second_recognize_while_one_runs_is_refused(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    recognize_dtmf(call, initial_silence_timeout=60)
    with pytest.raises(HttpResponseError) as refused:
        recognize_dtmf(call)
    assert refused.value.error.code == "8507"
    call.connection.cancel_all_media_operations()
    canceled = data(receiver, "RecognizeCanceled", call.ccid)
    assert canceled["operationContext"] == "account"
    assert result(canceled) == (400, 8508)
    assert [s for _, s in requests_seen(ctl, call.ccid)] == [200, 202, 400, 202]


def test_recognize_with_several_prompts(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "recognize", "match": "second", "press": "9"}])
    recognize_dtmf_prompts = [TextSource(text="first prompt"), FileSource("https://media.example.com/second.wav")]
    call.connection.start_recognizing_media(
        RecognizeInputType.DTMF, CALLER_ID, play_prompt=recognize_dtmf_prompts, operation_context="two-prompts"
    )
    completed = data(receiver, "RecognizeCompleted", call.ccid)
    assert completed["dtmfResult"]["tones"] == ["nine"]
    assert [p["kind"] for p in request_body(ctl, call.ccid, "Recognize")["playPrompts"]] == ["text", "file"]
    assert "hears: first prompt https://media.example.com/second.wav" in summaries(ctl, call.server_call_id, "party")


def test_interrupting_media_operations(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    recognize_dtmf(call, initial_silence_timeout=60)
    with pytest.warns(DeprecationWarning):
        call.connection.play_media_to_all(
            FileSource("https://media.example.com/urgent.wav"),
            interrupt_call_media_operation=True,
            operation_context="urgent",
        )
    receiver.wait_for("PlayCompleted", call_connection_id=call.ccid)
    assert receiver.types(call.ccid)[2:] == ["RecognizeCanceled", "PlayStarted", "PlayCompleted"]
    assert receiver.events("RecognizeCanceled", call.ccid)[0]["data"]["operationContext"] == "account"
    assert request_body(ctl, call.ccid, "Play")["interruptCallMediaOperation"] is True

    # A recognize that interrupts replaces the one running instead of being refused.
    recognize_dtmf(call, initial_silence_timeout=60)
    call.connection.start_recognizing_media(
        RecognizeInputType.DTMF,
        CALLER_ID,
        interrupt_call_media_operation=True,
        initial_silence_timeout=1,
        operation_context="replacement",
    )
    failed = data(receiver, "RecognizeFailed", call.ccid)
    assert failed["operationContext"] == "replacement"
    assert [e["data"]["operationContext"] for e in receiver.events("RecognizeCanceled", call.ccid)] == [
        "account",
        "account",
    ]


# -- media: DTMF -----------------------------------------------------------------------------------


def test_continuous_dtmf_recognition(client, receiver, ctl):
    call = answer(client, receiver, ctl, script=[{"on": "continuous_dtmf", "press": "42"}])
    call.connection.start_continuous_dtmf_recognition(CALLER_ID, operation_context="dtmf")
    tones = receiver.wait_for("ContinuousDtmfRecognitionToneReceived", count=2, call_connection_id=call.ccid)
    assert [(e["data"]["tone"], e["data"]["sequenceId"]) for e in tones] == [("four", 1), ("two", 2)]
    assert all(e["data"]["operationContext"] == "dtmf" for e in tones)
    assert result(tones[0]) == (200, 0)
    ctl("POST", f"/__sim/calls/{call.ccid}/input", {"press": "9"})
    nine = receiver.wait_for("ContinuousDtmfRecognitionToneReceived", count=3, call_connection_id=call.ccid)[-1]
    assert (nine["data"]["tone"], nine["data"]["sequenceId"]) == ("nine", 3)

    call.connection.stop_continuous_dtmf_recognition(CALLER_ID, operation_context="dtmf-stop")
    stopped = data(receiver, "ContinuousDtmfRecognitionStopped", call.ccid)
    assert stopped["operationContext"] == "dtmf-stop"
    assert result(stopped) == (200, 0)
    # After stopping, key presses reach nobody.
    ctl("POST", f"/__sim/calls/{call.ccid}/input", {"press": "1"})
    idle(ctl)
    assert receiver.types(call.ccid) == [
        "CallConnected",
        "ParticipantsUpdated",
        "ContinuousDtmfRecognitionToneReceived",
        "ContinuousDtmfRecognitionToneReceived",
        "ContinuousDtmfRecognitionToneReceived",
        "ContinuousDtmfRecognitionStopped",
    ]
    assert f"nobody listens to {CALLER_RAW}'s tone 'one'" in summaries(ctl, call.server_call_id, "call")
    assert operations(ctl, call.ccid)[1:] == ["StartContinuousDtmfRecognition", "StopContinuousDtmfRecognition"]
    assert f"continuous DTMF on for {CALLER_RAW}" in summaries(ctl, call.server_call_id, "call")


def test_send_dtmf_tones(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    sent = call.connection.send_dtmf_tones(
        [DtmfTone.ONE, DtmfTone.TWO, DtmfTone.POUND], CALLER_ID, operation_context="dial"
    )
    assert sent.operation_context == "dial"
    completed = data(receiver, "SendDtmfTonesCompleted", call.ccid)
    assert completed["operationContext"] == "dial"
    assert result(completed) == (200, 0)
    assert f"{CALLER_RAW} hears tones 12#" in summaries(ctl, call.server_call_id, "party")
    assert request_body(ctl, call.ccid, "SendDtmfTones")["tones"] == ["one", "two", "pound"]
    with pytest.raises(HttpResponseError) as too_many:
        call.connection.send_dtmf_tones(["one"] * 19, CALLER_ID)
    assert too_many.value.status_code == 400


def test_cancel_all_media_with_nothing_running(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    call.connection.cancel_all_media_operations()
    idle(ctl)
    assert receiver.types(call.ccid) == ["CallConnected", "ParticipantsUpdated"]
    assert requests_seen(ctl, call.ccid)[-1] == ("CancelAllMediaOperations", 202)


# -- recording -------------------------------------------------------------------------------------


def recording_events(receiver, ccid):
    return [(e["data"]["state"], e["data"]["recordingId"]) for e in receiver.events("RecordingStateChanged", ccid)]


def test_recording_lifecycle(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    started = client.start_recording(
        call_connection_id=call.ccid, recording_state_callback_url=receiver.url + "/recording"
    )
    rid = started.recording_id
    assert started.recording_state == "active"
    assert started.recording_kind == "azureCommunicationServices"
    receiver.wait_for("RecordingStateChanged", call_connection_id=call.ccid)
    assert [c["path"] for c in receiver.callbacks if c["event"]["type"].endswith("RecordingStateChanged")] == [
        "/recording"
    ]

    client.pause_recording(rid)
    receiver.wait_for("RecordingStateChanged", count=2, call_connection_id=call.ccid)
    assert client.get_recording_properties(rid).recording_state == "inactive"
    client.resume_recording(rid)
    receiver.wait_for("RecordingStateChanged", count=3, call_connection_id=call.ccid)
    assert client.get_recording_properties(rid).recording_state == "active"
    client.stop_recording(rid)
    receiver.wait_for("RecordingStateChanged", count=4, call_connection_id=call.ccid)
    assert recording_events(receiver, call.ccid) == [
        ("active", rid),
        ("inactive", rid),
        ("active", rid),
        ("inactive", rid),
    ]
    changed = receiver.events("RecordingStateChanged", call.ccid)[0]["data"]
    assert changed["recordingKind"] == "azureCommunicationServices"
    assert changed["startDateTime"]
    with pytest.raises(ResourceNotFoundError):
        client.get_recording_properties(rid)

    assert requests_seen(ctl, call.server_call_id)[1:] == [
        ("StartRecording", 200),
        ("PauseRecording", 202),
        ("GetRecordingProperties", 200),
        ("ResumeRecording", 202),
        ("GetRecordingProperties", 200),
        ("StopRecording", 204),
        ("GetRecordingProperties", 404),
    ]
    calls_lines = summaries(ctl, call.server_call_id, "call")
    assert [s for s in calls_lines if s.startswith("recording")][:4] == [
        "recording mixed audio mp3 starts",
        "recording paused",
        "recording resumed",
        "recording stops",
    ]
    recording = call_state(ctl, call.server_call_id)["recordings"][0]
    assert recording["recordingId"] == rid
    assert recording["stopped"] is True


def test_recording_unmixed_with_channel_affinity(client, receiver, ctl, sim):
    call = answer(client, receiver, ctl)
    call.connection.add_participant(AGENT_ID)
    receiver.wait_for("AddParticipantSucceeded", call_connection_id=call.ccid)
    ctl("POST", "/__sim/eventgrid/subscriptions", {"endpoint": receiver.url + "/eventgrid"})
    started = client.start_recording(
        server_call_id=call.server_call_id,
        recording_content_type="audio",
        recording_channel_type="unmixed",
        recording_format_type="wav",
        channel_affinity=[ChannelAffinity(AGENT_ID, 0), ChannelAffinity(CALLER_ID, 1)],
    )
    assert started.recording_state == "active"
    body = request_body(ctl, call.server_call_id, "StartRecording")
    assert body["callLocator"] == {"kind": "serverCallLocator", "serverCallId": call.server_call_id}
    assert [(a["participant"]["rawId"], a["channel"]) for a in body["channelAffinity"]] == [
        (AGENT, 0),
        (CALLER_RAW, 1),
    ]
    receiver.wait_for("RecordingStateChanged", call_connection_id=call.ccid)
    client.stop_recording(started.recording_id)
    receiver.wait_for("RecordingStateChanged", count=2, call_connection_id=call.ccid)
    file_status = receiver.wait_for("RecordingFileStatusUpdated", grid=True)[0]["data"]
    assert file_status["recordingChannelType"] == "Unmixed"
    assert file_status["recordingFormatType"] == "Wav"
    assert "recording unmixed audio wav starts" in summaries(ctl, call.server_call_id, "call")
    assert "recording chunk 0 ready" in " ".join(summaries(ctl, call.server_call_id, "call"))
    chunk = file_status["recordingStorageInfo"]["recordingChunks"][0]
    metadata = sim.sim.engine.documents[chunk["documentId"]].metadata
    assert metadata["recordingInfo"]["audioConfiguration"]["channels"] == 2
    assert metadata["participants"] == [
        {"participantId": AGENT, "channel": 0},
        {"participantId": CALLER_RAW, "channel": 1},
    ]


def test_recording_located_by_group_call_and_room(client, receiver, ctl):
    group = ctl("POST", "/__sim/group-calls", {"members": ["8:acs:a", "8:acs:b"]})
    props = client.connect_call(receiver.url + "/cb", group_call_id=group["groupCallId"])
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    started = client.start_recording(group_call_id=group["groupCallId"], pause_on_start=True)
    assert started.recording_state == "inactive"
    changed = data(receiver, "RecordingStateChanged", props.call_connection_id)
    assert (changed["recordingId"], changed["state"]) == (started.recording_id, "inactive")
    body = request_body(ctl, group["serverCallId"], "StartRecording")
    assert body["callLocator"] == {"kind": "groupCallLocator", "groupCallId": group["groupCallId"]}
    assert body["pauseOnStart"] is True
    assert "recording mixed audio mp3 starts paused" in summaries(ctl, group["serverCallId"], "call")
    client.resume_recording(started.recording_id)
    assert client.get_recording_properties(started.recording_id).recording_state == "active"

    room = ctl("POST", "/__sim/group-calls", {"members": ["8:acs:host"], "room_id": "room-7"})
    in_room = client.connect_call(receiver.url + "/room", room_id="room-7")
    receiver.wait_for("CallConnected", call_connection_id=in_room.call_connection_id)
    recorded = client.start_recording(room_id="room-7")
    assert recorded.recording_state == "active"
    assert call_state(ctl, room["serverCallId"])["recordings"][0]["recordingId"] == recorded.recording_id
    with pytest.raises(ResourceNotFoundError):
        client.start_recording(room_id="no-such-room")


def test_recording_channel_affinity_needs_unmixed(client, receiver, ctl):
    call = answer(client, receiver, ctl)
    with pytest.raises(HttpResponseError) as refused:
        client.start_recording(
            call_connection_id=call.ccid,
            recording_channel_type="mixed",
            channel_affinity=[ChannelAffinity(CALLER_ID, 0)],
        )
    assert refused.value.status_code == 400
    assert call_state(ctl, call.server_call_id)["recordings"] == []
