"""The real client places a call through the simulator and hears it end."""

from azure.communication.callautomation import CommunicationUserIdentifier, TextSource

from tests.conftest import AI_ENDPOINT


def test_outbound_call_plays_and_hangs_up(client, receiver, ctl):
    props = client.create_call(
        CommunicationUserIdentifier("8:acs:agent"), receiver.url + "/cb", cognitive_services_endpoint=AI_ENDPOINT
    )
    assert props.call_connection_state == "connecting"
    receiver.wait_for("CallConnected")
    connection = client.get_call_connection(props.call_connection_id)
    assert connection.get_call_properties().call_connection_state == "connected"
    assert [p.identifier.raw_id for p in connection.list_participants()] == ["8:acs:agent"]
    connection.play_media_to_all(TextSource(text="hello"), operation_context="greeting")
    completed = receiver.wait_for("PlayCompleted")
    assert completed[0]["data"]["operationContext"] == "greeting"
    connection.hang_up(is_for_everyone=False)
    receiver.wait_for("CallDisconnected")
    assert receiver.types() == [
        "CallConnected",
        "ParticipantsUpdated",
        "PlayStarted",
        "PlayCompleted",
        "CallDisconnected",
    ]
    timeline = ctl("GET", f"/__sim/calls/{props.call_connection_id}/timeline")
    operations = [e["operation"] for e in timeline if e["kind"] == "request"]
    assert operations == ["CreateCall", "GetCall", "GetParticipants", "Play", "HangupCall"]
