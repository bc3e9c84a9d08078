"""The service's feature list, row by row, through the app: the control API (function-key HTTP
triggers) and the routing of IncomingCall, against the simulator and Azurite.

Each test checks the service side (the simulator's timeline and the requests it got) and what the
app received (its callbacks in the timeline, and the results it keeps for GET /api/calls/{id})."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from azure.data.tables import TableClient

from core.outbound import control
from tests.e2e.conftest import AppStack, _stack
from tests.support.calls import until
from tools.apphost import DEFAULT_ROUTING

ROOT = Path(__file__).resolve().parents[2]
LINE = "+18005550150"  # the app's number for these tests: answered into the short "greet" flow
GREETING = "Hello, you are connected."
FLOWS = {
    **json.loads((ROOT / "flows" / "default.json").read_text()),
    "greet": {"start": "hello", "nodes": {"hello": {"type": "play", "prompt": {"text": GREETING}}}},
}
ROUTING = {
    "rules": [
        *DEFAULT_ROUTING["rules"],
        {"name": "control-line", "match": {"to": LINE}, "action": {"type": "answer", "flow": "greet"}},
    ],
    "default": DEFAULT_ROUTING["default"],
}


ROOMS = "team-31,room-7"  # the group call and the room the connect tests join (CONNECT_ALLOWED_ROOMS)


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[AppStack]:
    yield from _stack(azurite, routing=ROUTING, flows=FLOWS, CONNECT_ALLOWED_ROOMS=ROOMS)


# -- helpers -------------------------------------------------------------------------------------


def api(stack: AppStack, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
    status, answer = stack.app.call_api(method, path, body)
    if expect is not None:
        assert status == expect, (method, path, status, answer)
    return answer


def act(stack: AppStack, ccid: str, action: str, body: Any = None) -> dict[str, Any]:
    """A call action through the API; returns its answer (operation_context, ids)."""
    return api(stack, "POST", f"calls/{ccid}/{action}", body if body is not None else {}, expect=202)


def view(stack: AppStack, ccid: str) -> dict[str, Any]:
    return api(stack, "GET", f"calls/{ccid}", expect=200)




def seen(stack: AppStack, server_call_id: str, line: str, times: int | None = None) -> str:
    """Wait until the timeline shows ``line`` (exactly ``times`` times, if given); the timeline.

    An event's line is written when the app has answered it, just after the app acted on it."""
    want = times or 1
    text = until(
        lambda: (t := stack.timeline(server_call_id)).count(line) >= want and t,
        message=f"{line!r} x{want} not in:\n{stack.timeline(server_call_id)}",
    )
    if times is not None:
        assert text.count(line) == times, text
    return text


def api_result(stack: AppStack, ccid: str, context: str, timeout: float = 10.0) -> dict[str, Any]:
    """The result the app kept for one API action (from the event its context names)."""
    return until(
        lambda: view(stack, ccid)["app"]["outcome"].get("api", {}).get(context),
        timeout,
        f"no result for {context}: {view(stack, ccid)}",
    )


def app_participants(stack: AppStack, ccid: str, expected: set[str]) -> list[str]:
    return until(
        lambda: (p := view(stack, ccid)["app"]["participants"]) and set(p) == expected and p,
        message=f"app participants {view(stack, ccid)['app']['participants']} != {expected}",
    )


def callback_uri(stack: AppStack, server_call_id: str) -> str:
    """The callback URL the app gave when it answered, placed or connected the call."""
    for request in stack.requests(server_call_id):
        if request["operation"] in ("AnswerCall", "CreateCall", "Connect"):
            return request["body"]["callbackUri"]
    raise AssertionError("the app never joined the call")


def body_of(stack: AppStack, server_call_id: str, operation: str, context: str | None = None) -> dict[str, Any]:
    found = [
        r["body"]
        for r in stack.requests(server_call_id, operation)
        if context is None or r["body"].get("operationContext") == context
    ]
    assert found, f"no {operation} request:\n{stack.timeline(server_call_id)}"
    return found[-1]


def answered(stack: AppStack, caller: str, **call: Any) -> tuple[str, str]:
    """A caller rings the app's line; the app answers into the greet flow. (server call id, connection id)"""
    placed = stack.place(**{"from": caller, "to": LINE, **call})
    server_call_id = placed["serverCallId"]
    stack.wait_for(server_call_id, "PlayCompleted -> 200")  # the greeting is over: no media running
    return server_call_id, stack.connection_id(server_call_id)


def stored_state(azurite: Any, server_call_id: str) -> dict[str, Any]:
    table = TableClient.from_connection_string(azurite.connection_string, table_name="callstate")
    for entity in table.query_entities(f"serverCallId eq '{server_call_id}'"):
        return json.loads(entity["data"])
    raise AssertionError(f"no state stored for {server_call_id}")


def end(stack: AppStack, ccid: str) -> None:
    act(stack, ccid, "terminate")


# -- pre-call: answer, place, redirect, reject, connect --------------------------------------------


def test_answer_a_one_to_one_call(stack):
    scid, ccid = answered(stack, "+14255551001")
    text = stack.wait_for(scid, "EG  -> app  IncomingCall -> 202")
    assert "AnswerCall [answer] -> 200" in text
    seen(stack, scid, "ACS -> app  CallConnected -> 200")
    assert f"hears: {GREETING}" in text
    app = view(stack, ccid)["app"]
    assert (app["flow"], app["status"], app["node"]) == ("greet", "connected", "hello")
    assert app_participants(stack, ccid, {"4:+14255551001"}) == ["4:+14255551001"]
    end(stack, ccid)
    stack.wait_finished(scid)


def test_answer_a_group_call_and_keep_its_participants_current(stack):
    members = ["8:acs:member-1", "4:+14255551012"]
    scid, ccid = answered(stack, "+14255551011", members=["8:acs:member-1", "+14255551012"])
    text = stack.timeline(scid)
    assert "4:+14255551011 calls 4:+18005550150 from a call with 8:acs:member-1, 4:+14255551012" in text
    assert "AnswerCall [answer] -> 200" in text
    seen(stack, scid, "ACS -> app  ParticipantsUpdated -> 200")
    everyone = {"4:+14255551011", *members}
    app_participants(stack, ccid, everyone)
    listed = api(stack, "GET", f"calls/{ccid}/participants", expect=200)["participants"]
    assert {p["id"] for p in listed} == everyone
    # A member leaves: ParticipantsUpdated brings the app's list up to date.
    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {"participant": "8:acs:member-1"})
    app_participants(stack, ccid, everyone - {"8:acs:member-1"})
    end(stack, ccid)
    stack.wait_finished(scid)


def test_place_an_outbound_call_to_a_phone_with_caller_id_into_a_flow(stack):
    placed = api(
        stack,
        "POST",
        "calls",
        {"targets": [{"to": "+14255551020"}], "caller_id": LINE, "display_name": "Contoso", "flow": "greet"},
        expect=201,
    )
    scid, ccid = placed["server_call_id"], placed["call_connection_id"]
    assert placed["call_ref"] and ccid
    stack.wait_for(scid, "PlayCompleted -> 200")
    create = body_of(stack, scid, "CreateCall")
    assert [t["rawId"] for t in create["targets"]] == ["4:+14255551020"]
    assert create["sourceCallerIdNumber"] == {"value": LINE}
    assert create["sourceDisplayName"] == "Contoso"
    text = stack.timeline(scid)
    assert "4:+14255551020 answers" in text
    seen(stack, scid, "ACS -> app  CallConnected -> 200")
    assert f"hears: {GREETING}" in text
    app = view(stack, ccid)["app"]
    assert (app["call_ref"], app["flow"], app["status"]) == (placed["call_ref"], "greet", "connected")
    end(stack, ccid)
    stack.wait_finished(scid)


def test_place_an_outbound_call_to_several_endpoints(stack):
    targets = ["+14255551021", "8:acs:user-21", "8:orgid:teams-user-21"]
    placed = api(stack, "POST", "calls", {"targets": [{"to": t} for t in targets], "caller_id": LINE}, expect=201)
    scid, ccid = placed["server_call_id"], placed["call_connection_id"]
    stack.wait_for(scid, "ACS -> app  ParticipantsUpdated -> 200")
    create = body_of(stack, scid, "CreateCall")
    assert [t["rawId"] for t in create["targets"]] == ["4:+14255551021", "8:acs:user-21", "8:orgid:teams-user-21"]
    assert create["targets"][2]["microsoftTeamsUser"]["userId"] == "teams-user-21"
    assert "outbound call to 4:+14255551021, 8:acs:user-21, 8:orgid:teams-user-21" in stack.timeline(scid)
    app_participants(stack, ccid, {"4:+14255551021", "8:acs:user-21", "8:orgid:teams-user-21"})
    assert view(stack, ccid)["app"]["flow"] == ""  # no flow: the app only joined
    end(stack, ccid)
    stack.wait_finished(scid)


def test_redirect_forwards_a_vip_call_by_its_sip_header(stack):
    placed = stack.place(**{"from": "+14255551005", "custom_context": {"sipHeaders": {"X-MS-Custom-Tier": "vip"}}})
    scid = placed["serverCallId"]
    stack.wait_for(scid, "4:+14255550199 joins the call")
    text = stack.wait_for(scid, "EG  -> app  IncomingCall -> 202")
    redirect = body_of(stack, scid, "RedirectCall")
    assert redirect["target"]["rawId"] == "4:+14255550199"
    assert not stack.requests(scid, "AnswerCall")
    assert "redirected to 4:+14255550199" in text
    assert "ACS -> app" not in text  # a redirect is no call of the app's: no callbacks
    assert set(stack.summary(scid)["participants"]) == {"4:+14255551005", "4:+14255550199"}
    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})
    stack.wait_finished(scid)


def test_sim_ring_rings_several_endpoints_and_the_first_to_answer_gets_the_call(stack, azurite):
    placed = stack.place(**{"from": "+14255551006", "to": "+18005550199", "parties": {"8:acs:agent-b": {"delay": 1.0}}})
    scid = placed["serverCallId"]
    stack.wait_for(scid, "HangupCall")
    stack.wait_for(scid, "ACS -> app  AddParticipantSucceeded -> 200")
    adds = stack.requests(scid, "AddParticipant")
    assert sorted(r["body"]["participantToAdd"]["rawId"] for r in adds) == ["8:acs:agent-a", "8:acs:agent-b"]
    seen(stack, scid, "ACS -> app  AddParticipantSucceeded -> 200")
    assert len(stack.requests(scid, "CancelAddParticipant")) == 1
    summary = stack.summary(scid)
    assert summary["state"] == "established"
    assert set(summary["participants"]) == {"4:+14255551006", "8:acs:agent-a"}
    state = stored_state(azurite, scid)
    assert state["outcome"]["simring_answered_by"] == "8:acs:agent-a"
    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})
    stack.wait_finished(scid)


def test_reject_a_blocked_caller(stack):
    placed = stack.place(**{"from": "+19005550100"})
    scid = placed["serverCallId"]
    until(lambda: stack.summary(scid)["state"] == "ended", message="the call was not rejected")
    reject = body_of(stack, scid, "RejectCall")
    assert reject["callRejectReason"] == "forbidden"
    # The call ends as the app rejects it; Event Grid's acknowledgement of the delivery is logged just after.
    text = stack.wait_for(scid, "EG  -> app  IncomingCall -> 202")
    assert "rejected with reason forbidden" in text
    assert not stack.requests(scid, "AnswerCall")
    assert stack.summary(scid)["outcome"] == "rejected (forbidden)"


def told_about(stack: AppStack, server_call_id: str) -> None:
    """Until Event Grid has told the app about the call (its CallStarted is in the call's record): the app
    connects only to calls it placed, answered or was told about."""
    path = f"records/{quote(server_call_id, safe='')}"
    until(lambda: stack.app.call_api("GET", path)[0] == 200, message="no CallStarted")


def test_connect_to_an_ongoing_call(stack):
    group = stack.ctl("POST", "/__sim/group-calls", {"members": ["8:acs:m-31", "+14255551031"], "name": "ongoing"})
    scid = group["serverCallId"]
    told_about(stack, scid)
    connected = api(stack, "POST", "connections", {"server_call_id": scid, "flow": "greet"}, expect=201)
    ccid = connected["call_connection_id"]
    assert connected["server_call_id"] == scid
    stack.wait_for(scid, "PlayCompleted -> 200")
    locator = body_of(stack, scid, "Connect")["callLocator"]
    assert (locator.get("kind"), locator["serverCallId"]) == ("serverCallLocator", scid)
    text = stack.timeline(scid)
    assert "the app connects to the ongoing call" in text
    seen(stack, scid, "ACS -> app  CallConnected -> 200")
    assert f"hears: {GREETING}" in text
    app_participants(stack, ccid, {"8:acs:m-31", "4:+14255551031"})
    act(stack, ccid, "hang-up")
    stack.wait_finished(scid)
    assert stack.summary(scid)["state"] == "established"  # the call goes on without the app
    # A group call, found by its group call id.
    team = stack.ctl("POST", "/__sim/group-calls", {"group_call_id": "team-31", "members": ["8:acs:m-32"]})
    joined = api(stack, "POST", "connections", {"group_call_id": "team-31"}, expect=201)
    assert joined["server_call_id"] == team["serverCallId"]
    seen(stack, team["serverCallId"], "ACS -> app  CallConnected -> 200")
    locator = body_of(stack, team["serverCallId"], "Connect")["callLocator"]
    assert (locator.get("kind"), locator["groupCallId"]) == ("groupCallLocator", "team-31")
    end(stack, joined["call_connection_id"])
    stack.wait_finished(team["serverCallId"])


def test_connect_to_a_room(stack):
    room = stack.ctl("POST", "/__sim/group-calls", {"room_id": "room-7", "members": ["8:acs:guest-7", "8:acs:host-7"]})
    scid = room["serverCallId"]
    connected = api(stack, "POST", "connections", {"room_id": "room-7"}, expect=201)
    ccid = connected["call_connection_id"]
    stack.wait_for(scid, "ACS -> app  ParticipantsUpdated -> 200")
    locator = body_of(stack, scid, "Connect")["callLocator"]
    assert (locator.get("kind"), locator["roomId"]) == ("roomCallLocator", "room-7")
    seen(stack, scid, "ACS -> app  CallConnected -> 200")
    app_participants(stack, ccid, {"8:acs:guest-7", "8:acs:host-7"})
    end(stack, ccid)
    assert stack.wait_finished(scid)["state"] == "ended"


# -- mid-call --------------------------------------------------------------------------------------


def test_add_endpoints_with_custom_sip_and_voip_headers(stack):
    scid, ccid = answered(stack, "+14255551040")
    phone = act(
        stack,
        ccid,
        "add-participant",
        {"target": {"to": "+14255551041", "caller_id": LINE, "sip_headers": {"X-MS-Custom-Case": "A-17"}}},
    )
    user = act(stack, ccid, "add-participant", {"target": {"to": "8:acs:expert-42", "voip_headers": {"case": "A-17"}}})
    assert phone["invitation_id"] and user["invitation_id"]
    assert api_result(stack, ccid, phone["operation_context"])["event"] == "AddParticipantSucceeded"
    assert api_result(stack, ccid, user["operation_context"])["event"] == "AddParticipantSucceeded"
    text = stack.timeline(scid)
    assert 'invite 4:+14255551041 with headers {"sipHeaders": {"X-MS-Custom-Case": "A-17"}}' in text
    assert 'invite 8:acs:expert-42 with headers {"voipHeaders": {"case": "A-17"}}' in text
    seen(stack, scid, "ACS -> app  AddParticipantSucceeded -> 200", 2)
    add = body_of(stack, scid, "AddParticipant", phone["operation_context"])
    assert add["sourceCallerIdNumber"] == {"value": LINE}
    assert add["operationCallbackUri"] == callback_uri(stack, scid)  # the call's own callback URL
    app_participants(stack, ccid, {"4:+14255551040", "4:+14255551041", "8:acs:expert-42"})
    end(stack, ccid)
    stack.wait_finished(scid)


def test_cancel_adding_an_endpoint(stack):
    scid, ccid = answered(stack, "+14255551042", parties={"8:acs:slow-agent": {"answer": "no_answer"}})
    added = act(stack, ccid, "add-participant", {"target": {"to": "8:acs:slow-agent"}, "timeout_seconds": 120})
    canceled = act(stack, ccid, "cancel-add-participant", {"invitation_id": added["invitation_id"]})
    assert api_result(stack, ccid, canceled["operation_context"])["event"] == "CancelAddParticipantSucceeded"
    cancel = body_of(stack, scid, "CancelAddParticipant")
    assert cancel["invitationId"] == added["invitation_id"]
    assert cancel["operationCallbackUri"] == callback_uri(stack, scid)
    text = stack.timeline(scid)
    assert "8:acs:slow-agent stops ringing (invitation canceled)" in text
    seen(stack, scid, "ACS -> app  CancelAddParticipantSucceeded -> 200")
    assert "8:acs:slow-agent joins" not in text
    end(stack, ccid)
    stack.wait_finished(scid)


def test_play_an_audio_file(stack):
    scid, ccid = answered(stack, "+14255551043")
    url = "https://media.example.com/prompts/welcome.wav"
    played = act(stack, ccid, "play", {"prompts": [{"audio": url}]})
    result = api_result(stack, ccid, played["operation_context"])
    assert (result["event"], result["code"]) == ("PlayCompleted", 200)
    play = body_of(stack, scid, "Play", played["operation_context"])
    assert play["playSources"] == [{"kind": "file", "file": {"uri": url}}]
    assert play["operationCallbackUri"] == callback_uri(stack, scid)
    text = stack.timeline(scid)
    assert f"hears: {url}" in text
    # A file the service cannot play: PlayFailed, kept with its codes.
    bad = act(stack, ccid, "play", {"prompts": [{"audio": "https://media.example.com/prompts/welcome.mp3"}]})
    failed = api_result(stack, ccid, bad["operation_context"])
    assert (failed["event"], failed["code"], failed["subCode"]) == ("PlayFailed", 400, 8535)
    stack.wait_for(scid, "ACS -> app  PlayFailed -> 200")
    end(stack, ccid)
    stack.wait_finished(scid)


def test_play_text_to_speech_to_one_participant(stack):
    scid, ccid = answered(stack, "+14255551044")
    played = act(
        stack,
        ccid,
        "play",
        {"prompts": [{"text": "Your order has shipped.", "voice": "en-US-JennyNeural"}], "to": "+14255551044"},
    )
    assert api_result(stack, ccid, played["operation_context"])["event"] == "PlayCompleted"
    play = body_of(stack, scid, "Play", played["operation_context"])
    assert play["playSources"][0]["kind"] == "text"
    assert play["playSources"][0]["text"]["text"] == "Your order has shipped."
    assert play["playSources"][0]["text"]["voiceName"] == "en-US-JennyNeural"
    assert [t["rawId"] for t in play["playTo"]] == ["4:+14255551044"]
    text = stack.timeline(scid)
    assert "hears: Your order has shipped." in text
    seen(stack, scid, "ACS -> app  PlayCompleted -> 200", 2)  # the greeting, then this
    end(stack, ccid)
    stack.wait_finished(scid)


def test_recognize_dtmf(stack):
    caller = "+14255551045"
    scid, ccid = answered(stack, caller, script=[{"on": "recognize", "press": "42#"}])
    asked = act(
        stack,
        ccid,
        "recognize",
        {"mode": "dtmf", "target": caller, "prompt": {"text": "Enter your PIN."}, "max_tones": 4, "stop_keys": "#"},
    )
    result = api_result(stack, ccid, asked["operation_context"])
    assert (result["event"], result["recognitionType"]) == ("RecognizeCompleted", "dtmf")
    assert result["tones"] == ["four", "two"]
    recognize = body_of(stack, scid, "Recognize", asked["operation_context"])
    assert recognize["recognizeInputType"] == "dtmf"
    assert recognize["recognizeOptions"]["dtmfOptions"]["maxTonesToCollect"] == 4
    assert recognize["recognizeOptions"]["dtmfOptions"]["stopTones"] == ["pound"]
    assert recognize["operationCallbackUri"] == callback_uri(stack, scid)
    # Without a script: the caller presses a key while the recognize listens.
    listening = act(stack, ccid, "recognize", {"mode": "dtmf", "target": caller, "timeout_seconds": 120})
    until(lambda: stack.requests(scid, "Recognize")[-1]["body"]["operationContext"] == listening["operation_context"])
    time.sleep(0.05)
    stack.ctl("POST", f"/__sim/calls/{scid}/input", {"press": "5"})
    assert api_result(stack, ccid, listening["operation_context"])["tones"] == ["five"]
    text = stack.timeline(scid)
    assert "hears: Enter your PIN." in text
    assert "4:+14255551045 presses 42#" in text and "4:+14255551045 presses 5" in text
    seen(stack, scid, "ACS -> app  RecognizeCompleted -> 200", 2)
    end(stack, ccid)
    stack.wait_finished(scid)


def test_recognize_voice_speech_and_choices(stack):
    caller = "+14255551046"
    script = [{"on": "recognize", "say": "I would like to check my balance"}, {"on": "recognize", "say": "yes please"}]
    scid, ccid = answered(stack, caller, script=script)
    speech = act(stack, ccid, "recognize", {"mode": "speech", "target": caller, "prompt": {"text": "How can I help?"}})
    result = api_result(stack, ccid, speech["operation_context"])
    assert (result["recognitionType"], result["speech"]) == ("speech", "I would like to check my balance")
    choices = act(
        stack,
        ccid,
        "recognize",
        {
            "mode": "choices",
            "target": caller,
            "prompt": {"text": "Shall I text you the balance?"},
            "choices": [{"label": "yes", "phrases": ["yes", "sure"], "key": "1"}, {"label": "no", "phrases": ["no"]}],
        },
    )
    picked = api_result(stack, ccid, choices["operation_context"])
    assert (picked["event"], picked["recognitionType"], picked["label"]) == ("RecognizeCompleted", "choices", "yes")
    recognize = body_of(stack, scid, "Recognize", choices["operation_context"])
    assert recognize["recognizeInputType"] == "choices"
    assert [c["label"] for c in recognize["recognizeOptions"]["choices"]] == ["yes", "no"]
    assert body_of(stack, scid, "Recognize", speech["operation_context"])["recognizeInputType"] == "speech"
    text = stack.timeline(scid)
    assert "says 'I would like to check my balance'" in text and "says 'yes please'" in text
    seen(stack, scid, "ACS -> app  RecognizeCompleted -> 200", 2)
    end(stack, ccid)
    stack.wait_finished(scid)


def test_start_and_stop_continuous_dtmf(stack):
    caller = "+14255551047"
    scid, ccid = answered(stack, caller)
    started = act(stack, ccid, "start-continuous-dtmf", {"who": caller})
    stack.wait_for(scid, f"continuous DTMF on for 4:{caller}")
    stack.ctl("POST", f"/__sim/calls/{scid}/input", {"press": "7"})
    tone = api_result(stack, ccid, started["operation_context"])
    assert (tone["event"], tone["code"]) == ("ContinuousDtmfRecognitionToneReceived", 200)
    seen(stack, scid, "ACS -> app  ContinuousDtmfRecognitionToneReceived -> 200", 1)
    stopped = act(stack, ccid, "stop-continuous-dtmf", {"who": caller})
    stack.wait_for(scid, "ACS -> app  ContinuousDtmfRecognitionStopped -> 200")
    stop = body_of(stack, scid, "StopContinuousDtmfRecognition", stopped["operation_context"])
    assert stop["targetParticipant"]["rawId"] == f"4:{caller}"
    assert stop["operationCallbackUri"] == callback_uri(stack, scid)
    stack.ctl("POST", f"/__sim/calls/{scid}/input", {"press": "8"})
    text = stack.wait_for(scid, f"nobody listens to 4:{caller}'s tone 'eight'")
    assert text.count("ContinuousDtmfRecognitionToneReceived -> 200") == 1  # none after the stop
    end(stack, ccid)
    stack.wait_finished(scid)


def test_send_dtmf(stack):
    caller = "+14255551048"
    scid, ccid = answered(stack, caller)
    sent = act(stack, ccid, "send-dtmf", {"to": caller, "tones": "12#"})
    assert api_result(stack, ccid, sent["operation_context"])["event"] == "SendDtmfTonesCompleted"
    body = body_of(stack, scid, "SendDtmfTones", sent["operation_context"])
    assert body["tones"] == ["one", "two", "pound"]
    assert body["operationCallbackUri"] == callback_uri(stack, scid)
    text = stack.timeline(scid)
    assert f"4:{caller} hears tones 12#" in text
    seen(stack, scid, "ACS -> app  SendDtmfTonesCompleted -> 200")
    end(stack, ccid)
    stack.wait_finished(scid)


def test_mute_and_get_a_participant(stack):
    caller = "+14255551049"
    scid, ccid = answered(stack, caller)
    before = api(stack, "GET", f"calls/{ccid}/participants/{quote('4:' + caller, safe='')}", expect=200)
    assert before == {"id": f"4:{caller}", "is_muted": False, "is_on_hold": False}
    act(stack, ccid, "mute", {"who": caller})
    assert body_of(stack, scid, "Mute")["targetParticipants"][0]["rawId"] == f"4:{caller}"
    stack.wait_for(scid, f"4:{caller} is muted")
    after = api(stack, "GET", f"calls/{ccid}/participants/4:{caller}", expect=200)
    assert after["is_muted"] is True
    assert len(stack.requests(scid, "GetParticipant")) == 2
    stack.wait_for(scid, "ACS -> app  ParticipantsUpdated -> 200")
    # Hold and unhold too (with music).
    act(stack, ccid, "hold", {"who": caller, "music": {"audio": "https://media.example.com/hold.wav"}})
    stack.wait_for(scid, f"4:{caller} on hold with music https://media.example.com/hold.wav")
    assert api(stack, "GET", f"calls/{ccid}/participants/4:{caller}", expect=200)["is_on_hold"] is True
    act(stack, ccid, "unhold", {"who": caller})
    stack.wait_for(scid, f"4:{caller} taken off hold")
    end(stack, ccid)
    stack.wait_finished(scid)


def test_remove_endpoints(stack):
    scid, ccid = answered(stack, "+14255551050", members=["8:acs:member-50", "+14255551051"])
    removed = act(stack, ccid, "remove-participant", {"who": "8:acs:member-50"})
    removed_phone = act(stack, ccid, "remove-participant", {"who": "+14255551051"})
    assert api_result(stack, ccid, removed["operation_context"])["event"] == "RemoveParticipantSucceeded"
    assert api_result(stack, ccid, removed_phone["operation_context"])["event"] == "RemoveParticipantSucceeded"
    remove = body_of(stack, scid, "RemoveParticipant", removed["operation_context"])
    assert remove["participantToRemove"]["rawId"] == "8:acs:member-50"
    assert remove["operationCallbackUri"] == callback_uri(stack, scid)
    text = stack.timeline(scid)
    assert "8:acs:member-50 is removed" in text and "4:+14255551051 is removed" in text
    seen(stack, scid, "ACS -> app  RemoveParticipantSucceeded -> 200", 2)
    app_participants(stack, ccid, {"4:+14255551050"})
    assert set(stack.summary(scid)["participants"]) == {"4:+14255551050"}
    end(stack, ccid)
    stack.wait_finished(scid)


def test_blind_transfer_a_one_to_one_call_with_voip_headers(stack, azurite):
    scid, ccid = answered(stack, "+14255551052")
    moved = act(stack, ccid, "transfer", {"target": {"to": "8:acs:agent-77", "voip_headers": {"ticket": "T-9"}}})
    text = stack.wait_for(scid, "ACS -> app  CallDisconnected -> 200")
    assert 'transfer to 8:acs:agent-77 with headers {"voipHeaders": {"ticket": "T-9"}}' in text
    seen(stack, scid, "ACS -> app  CallTransferAccepted -> 200")
    transfer = body_of(stack, scid, "TransferToParticipant", moved["operation_context"])
    assert transfer["targetParticipant"]["rawId"] == "8:acs:agent-77"
    assert transfer["customCallingContext"] == {"voipHeaders": {"ticket": "T-9"}}
    assert transfer["operationCallbackUri"] == callback_uri(stack, scid)
    summary = stack.wait_finished(scid)
    assert set(summary["participants"]) == {"4:+14255551052", "8:acs:agent-77"}  # the app left; they talk
    stack.ctl("GET", "/__sim/idle?timeout=10")
    state = stored_state(azurite, scid)
    assert state["outcome"]["api"][moved["operation_context"]]["event"] == "CallTransferAccepted"
    assert state["status"] == "ended"
    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})


def test_blind_transfer_a_participant_of_a_group_call_with_sip_headers(stack):
    scid, ccid = answered(stack, "+14255551053", members=["8:acs:member-53", "+14255551054"])
    moved = act(
        stack,
        ccid,
        "transfer",
        {
            "target": {"to": "+14255551055", "caller_id": LINE, "sip_headers": {"X-MS-Custom-Reason": "escalate"}},
            "transferee": "+14255551054",
        },
    )
    result = api_result(stack, ccid, moved["operation_context"])
    assert result["event"] == "CallTransferAccepted"
    transfer = body_of(stack, scid, "TransferToParticipant", moved["operation_context"])
    assert transfer["transferee"]["rawId"] == "4:+14255551054"
    assert transfer["sourceCallerIdNumber"] == {"value": LINE}
    text = stack.timeline(scid)
    assert 'transfer to 4:+14255551055 with headers {"sipHeaders": {"X-MS-Custom-Reason": "escalate"}}' in text
    seen(stack, scid, "ACS -> app  CallTransferAccepted -> 200")
    # The transferee left, the target joined, and the app is still in the call.
    everyone = {"4:+14255551053", "8:acs:member-53", "4:+14255551055"}
    app_participants(stack, ccid, everyone)
    assert set(stack.summary(scid)["participants"]) == everyone
    assert view(stack, ccid)["state"] == "connected"
    end(stack, ccid)
    stack.wait_finished(scid)


def test_hang_up_leaves_a_group_call_going(stack):
    scid, ccid = answered(stack, "+14255551056", members=["8:acs:member-56"])
    act(stack, ccid, "hang-up")
    summary = stack.wait_finished(scid)
    assert summary["state"] == "established"
    assert set(summary["participants"]) == {"4:+14255551056", "8:acs:member-56"}
    text = stack.timeline(scid)
    assert "HangupCall -> 204" in text and "the app hangs up" in text
    seen(stack, scid, "ACS -> app  CallDisconnected -> 200")
    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {})


def test_terminate_ends_the_call_for_everyone_then_actions_get_the_services_404(stack):
    scid, ccid = answered(stack, "+14255551057", members=["8:acs:member-57"])
    act(stack, ccid, "terminate")
    summary = stack.wait_finished(scid)
    assert summary["state"] == "ended" and summary["participants"] == []
    text = stack.timeline(scid)
    assert "TerminateCall -> 204" in text and "the app terminates the call for everyone" in text
    seen(stack, scid, "ACS -> app  CallDisconnected -> 200")
    # The service is done with the call: an action on it gets the service's 404, passed through.
    status, body = stack.app.call_api("POST", f"calls/{ccid}/play", {"prompts": [{"text": "Anyone?"}]})
    assert status == 404 and "Communication Services refused" in body["error"] and "has ended" in body["error"]
    # The app still shows what it knows of the call.
    after = view(stack, ccid)
    assert (after["state"], after["app"]["status"]) == ("disconnected", "ended")


def test_cancel_media_operations(stack):
    scid, ccid = answered(stack, "+14255551058")
    played = act(stack, ccid, "play", {"prompts": [{"audio": "https://media.example.com/music.wav"}], "loop": True})
    stack.wait_for(scid, "hears: https://media.example.com/music.wav (looping)")
    act(stack, ccid, "cancel-media")
    result = api_result(stack, ccid, played["operation_context"])
    assert (result["event"], result["subCode"]) == ("PlayCanceled", 8508)
    text = stack.timeline(scid)
    assert "CancelAllMediaOperations -> 202" in text and "all media operations canceled" in text
    seen(stack, scid, "ACS -> app  PlayCanceled -> 200")
    end(stack, ccid)
    stack.wait_finished(scid)


# -- queries and recording -------------------------------------------------------------------------


def test_get_call_state_and_list_participants(stack):
    caller = "+14255551059"
    placed = stack.place(**{"from": caller, "to": LINE})
    scid = placed["serverCallId"]
    stack.wait_for(scid, "PlayCompleted -> 200")
    ccid = stack.connection_id(scid)
    call = view(stack, ccid)
    assert call["call_connection_id"] == ccid
    assert (call["server_call_id"], call["correlation_id"]) == (scid, placed["correlationId"])
    assert (call["state"], call["source"], call["targets"]) == ("connected", f"4:{LINE}", [f"4:{caller}"])
    assert call["app"]["status"] == "connected" and call["app"]["flow"] == "greet"
    listed = api(stack, "GET", f"calls/{ccid}/participants", expect=200)
    assert listed == {"participants": [{"id": f"4:{caller}", "is_muted": False, "is_on_hold": False}]}
    assert stack.requests(scid, "GetCall") and stack.requests(scid, "GetParticipants")
    end(stack, ccid)
    stack.wait_finished(scid)


def test_start_pause_resume_stop_recording(stack):
    scid, ccid = answered(stack, "+14255551060")
    started = act(stack, ccid, "start-recording", {"channel": "mixed", "content": "audio", "format": "wav"})
    recording_id = started["recording_id"]
    assert recording_id and started["recording_state"] == "active"
    start = body_of(stack, scid, "StartRecording")
    assert start["callLocator"]["serverCallId"] == scid
    assert (start["recordingChannelType"], start["recordingContentType"]) == ("mixed", "audio")
    assert start["recordingStateCallbackUri"] == callback_uri(stack, scid)
    until(lambda: view(stack, ccid)["app"]["recording_id"] == recording_id, message="no RecordingStateChanged")
    act(stack, ccid, "pause-recording", {"recording_id": recording_id})
    stack.wait_for(scid, "recording paused")
    act(stack, ccid, "resume-recording", {"recording_id": recording_id})
    stack.wait_for(scid, "recording resumed")
    act(stack, ccid, "stop-recording", {"recording_id": recording_id})
    text = stack.wait_for(scid, "recording stops")
    for operation in ("StartRecording", "PauseRecording", "ResumeRecording", "StopRecording"):
        assert stack.requests(scid, operation), operation
    until(lambda: stack.timeline(scid).count("ACS -> app  RecordingStateChanged -> 200") == 4, message=text)
    assert stack.summary(scid)["recordings"][0]["stopped"] is True
    end(stack, ccid)
    stack.wait_finished(scid)


def test_pause_resume_and_stop_without_an_id_act_on_the_calls_own_recording(stack):
    scid, ccid = answered(stack, "+14255551061")
    status, body = stack.app.call_api("POST", f"calls/{ccid}/stop-recording", {})
    assert status == 409 and "give recording_id" in body["error"], body  # nothing recording yet: nothing to guess
    stack.ctl("POST", "/__sim/deliveries", {"paused": True})  # no RecordingStateChanged reaches the app meanwhile
    try:
        started = act(stack, ccid, "start-recording", {})
        recording_id = started["recording_id"]
        assert view(stack, ccid)["app"]["recording_id"] == recording_id  # kept from the start's answer at once
        act(stack, ccid, "pause-recording", {})
    finally:
        stack.ctl("POST", "/__sim/deliveries", {"paused": False})
    stack.wait_for(scid, "recording paused")
    act(stack, ccid, "stop-recording", {})
    stack.wait_for(scid, "recording stops")
    [stop] = stack.requests(scid, "StopRecording")
    assert stop["status"] in (200, 202, 204), stop
    [recording] = stack.summary(scid)["recordings"]
    assert recording["recordingId"] == recording_id and recording["stopped"] is True  # the call's own recording
    end(stack, ccid)
    stack.wait_finished(scid)


# -- the API itself --------------------------------------------------------------------------------


def test_validation_errors_name_the_field(stack):
    status, body = stack.app.call_api("POST", "calls", {})
    assert status == 400 and body["fields"][0]["field"] == "targets", body
    status, body = stack.app.call_api("POST", "calls", {"targets": [{"to": "+14255551070"}]})
    assert status == 400 and "caller_id is required" in json.dumps(body["fields"]), body
    status, body = stack.app.call_api("POST", "calls", {"targets": [{"to": "8:acs:x"}], "flow": "nope"})
    assert status == 400 and [f["field"] for f in body["fields"]] == ["flow"], body
    assert "greet" in body["fields"][0]["message"]
    status, body = stack.app.call_api("POST", "connections", {"server_call_id": "a", "room_id": "b"})
    assert status == 400 and "exactly one of" in body["fields"][0]["message"], body
    status, body = stack.app.call_api("POST", "calls/some-call/send-dtmf", {"to": "+14255551070", "tones": "12x"})
    assert status == 400 and "'x' are not DTMF keys" in body["fields"][0]["message"], body
    status, body = stack.app.call_api("POST", "calls/some-call/play", {"prompts": [{"text": "a", "audio": "b"}]})
    assert status == 400 and body["fields"][0]["field"].startswith("prompts.0"), body
    status, body = stack.app.call_api("POST", "calls/some-call/mute", {"who": "nobody", "extra": 1})
    assert status == 400 and {f["field"] for f in body["fields"]} == {"who", "extra"}, body


def test_unknown_action_is_404_and_the_function_key_is_required(stack):
    status, body = stack.app.call_api("POST", "calls/some-call/dance", {})
    assert status == 404 and "unknown action 'dance'" in body["error"], body
    assert stack.app.call_api("GET", "calls/some-call", key="")[0] == 401
    assert stack.app.call_api("POST", "calls", {"targets": [{"to": "8:acs:x"}]}, key="wrong")[0] == 401
    assert stack.app.call_api("POST", "calls/some-call/terminate", {}, key="wrong")[0] == 401
    # An unknown call: the service's 404 comes through.
    status, body = stack.app.call_api("GET", "calls/no-such-call")
    assert status == 404 and "Communication Services refused" in body["error"], body


def test_openapi_document_is_served(stack):
    import urllib.request

    with urllib.request.urlopen(stack.app.api + "/openapi.json", timeout=10) as response:
        assert json.loads(response.read()) == json.loads(json.dumps(control.openapi()))
