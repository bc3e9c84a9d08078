"""The app, end to end: IncomingCall over Event Grid, the customer-service IVR over callbacks,
state in Azurite. Each test plays one scripted caller and checks the service side (the
simulator's timeline) and what the app stored."""

from __future__ import annotations

import json

from azure.data.tables import TableClient


def stored_state(stack, azurite, server_call_id: str) -> dict:
    table = TableClient.from_connection_string(azurite.connection_string, table_name="callstate")
    for entity in table.query_entities(f"serverCallId eq '{server_call_id}'"):
        return json.loads(entity["data"])
    raise AssertionError(f"no state stored for {server_call_id}")


def test_caller_picks_sales_by_dtmf(stack, azurite):
    call = stack.place(**{"from": "+14255550001", "script": [{"on": "recognize", "press": "1"}]})
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "AnswerCall [answer] -> 200" in text
    assert "hears: Thank you for calling Contoso." in text
    assert "4:+14255550001 presses 1" in text
    assert "hears: Connecting you to sales." in text
    assert 'transfer to 4:+14255550101 with headers {"sipHeaders": {"X-MS-Custom-Queue": "sales"}}' in text
    assert "CallTransferAccepted -> 200" in text
    assert len(stack.requests(call["serverCallId"], "TransferToParticipant")) == 1
    state = stored_state(stack, azurite, call["serverCallId"])
    assert state["outcome"]["menu"] == [{"node": "main_menu", "choice": "sales", "by": "dtmf"}]
    assert state["outcome"]["transfer_result"] == "accepted"
    assert state["status"] == "ended"


def test_caller_says_support(stack, azurite):
    call = stack.place(**{"from": "+14255550002", "script": [{"on": "recognize", "say": "I need help please"}]})
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "transfer to 8:acs:support-agent" in text
    assert "CallTransferAccepted -> 200" in text
    state = stored_state(stack, azurite, call["serverCallId"])
    assert state["outcome"]["menu"] == [{"node": "main_menu", "choice": "support", "by": "speech"}]


def test_caller_presses_nothing_and_reaches_the_operator_after_two_retries(stack, azurite):
    call = stack.place(**{"from": "+14255550003", "script": []})
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    recognizes = stack.requests(call["serverCallId"], "Recognize")
    assert len(recognizes) == 3  # the menu, then two retries
    assert text.count("hears: Sorry, I did not hear a choice.") == 2
    assert "transfer to 4:+14255550100" in text
    state = stored_state(stack, azurite, call["serverCallId"])
    assert state["outcome"]["menu_misses"] == ["no input", "no input", "no input"]
    assert state["outcome"]["transfer_target"] == "+14255550100"


def test_invalid_choice_gets_the_invalid_prompt(stack, azurite):
    call = stack.place(
        **{"from": "+14255550006", "script": [{"on": "recognize", "press": "7"}, {"on": "recognize", "press": "2"}]}
    )
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "hears: Sorry, that is not one of the choices." in text
    assert "transfer to 8:acs:support-agent" in text
    state = stored_state(stack, azurite, call["serverCallId"])
    assert state["outcome"]["menu_misses"] == ["invalid"]


def test_caller_hangs_up_mid_menu(stack, azurite):
    call = stack.place(**{"from": "+14255550004", "script": [{"on": "recognize", "hangup": True, "delay": 0.02}]})
    summary = stack.wait_finished(call["serverCallId"])
    assert summary["state"] == "ended"
    text = stack.timeline(call["serverCallId"])
    assert "4:+14255550004 hangs up" in text
    assert "CallDisconnected -> 200" in text
    assert not stack.requests(call["serverCallId"], "TransferToParticipant")
    state = stored_state(stack, azurite, call["serverCallId"])
    assert state["status"] == "ended" and state["node"] == "main_menu"


def test_agent_declines_the_transfer_caller_hears_apology_and_call_ends(stack, azurite):
    call = stack.place(
        **{
            "from": "+14255550005",
            "parties": {"+14255550101": {"answer": "decline"}},
            "script": [{"on": "recognize", "press": "1"}],
        }
    )
    summary = stack.wait_finished(call["serverCallId"])
    assert summary["state"] == "ended"
    text = stack.timeline(call["serverCallId"])
    assert "4:+14255550101 declines" in text
    assert "CallTransferFailed -> 200" in text
    assert "hears: Sorry, nobody can take your call right now." in text
    assert "TerminateCall" in text
    state = stored_state(stack, azurite, call["serverCallId"])
    assert state["outcome"]["transfer_result"].startswith("failed")
    assert state["outcome"]["ended_by_flow"] == "apology"


def test_star_reaches_the_operator_from_anywhere(stack, azurite):
    # The caller presses * while the welcome prompt plays: continuous DTMF takes them to the operator.
    call = stack.place(**{"from": "+14255550007", "script": [{"on": "play", "match": "Thank you", "press": "*"}]})
    stack.wait_finished(call["serverCallId"])
    text = stack.timeline(call["serverCallId"])
    assert "ContinuousDtmfRecognitionToneReceived -> 200" in text
    assert "transfer to 4:+14255550100" in text
    state = stored_state(stack, azurite, call["serverCallId"])
    assert state["outcome"]["tones"] == ["*"]


def test_every_log_line_of_a_call_carries_its_ids(stack):
    call = stack.place(**{"from": "+14255550008", "script": [{"on": "recognize", "press": "1"}]})
    stack.wait_finished(call["serverCallId"])
    ccid = stack.connection_id(call["serverCallId"])
    correlation = call["correlationId"]
    lines = [line for line in stack.app.logs().splitlines() if ccid in line]
    assert any("handlers.callbacks" in line and "recognized choices: sales" in line for line in lines)
    assert all(
        f"server_call={call['serverCallId']}" in line and f"correlation={correlation}" in line
        for line in lines
        if "handlers." in line
    )
    # The IncomingCall trigger's lines carry the server call and correlation ids too (and the caller's number
    # masked: its last four digits only).
    incoming = [
        line for line in stack.app.logs().splitlines() if "handlers.incoming_call" in line and "+*******0008" in line
    ]
    assert incoming and all(f"correlation={correlation}" in line for line in incoming)
    assert "14255550008" not in stack.app.logs()


def test_health_details_report_settings_and_dependencies(stack):
    import urllib.request

    with urllib.request.urlopen(stack.app.api + "/health", timeout=10) as response:
        assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})  # liveness: nothing more
    status, report = stack.app.call_api("GET", "health/details")
    assert status == 200
    assert report["status"] == "ok"
    assert report["settings"]["flows"] == [
        "appointment_reminder", "customer_service", "number_masking", "number_masking_unknown", "outage_notice"
    ]
    assert report["settings"]["acs_auth"] == "access key"
    assert set(report["dependencies"]) == {"acs", "callback_keys", "state_table"}
    assert all(d["ok"] for d in report["dependencies"].values())
    assert stack.app.env["CALLBACK_SECRET"] not in json.dumps(report)
