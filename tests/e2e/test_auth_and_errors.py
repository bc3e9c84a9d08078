"""Over HTTP against the running simulator: request authentication, webhook JWTs, repeatability, and
the error codes ACS answers the usual mistakes with."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
    RecognizeInputType,
    TextSource,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from simulator import API_VERSION, errors, hmac_auth
from simulator.runner import new_access_key
from simulator.signing import DEFAULT_ISSUER, OPENID_PATH, TOKEN_LIFETIME_SECONDS, WebhookSigner
from tests.conftest import AI_ENDPOINT

CALLER = "+14255550100"
CALLER_ID = PhoneNumberIdentifier(CALLER)
RESOURCE_NUMBER = "+18005550123"
STRANGER = CommunicationUserIdentifier("8:acs:nobody-in-this-call")


# -- helpers ------------------------------------------------------------------------------------


def raw_request(
    sim: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    date: str | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    sign: bool = True,
) -> tuple[int, dict[str, str], Any]:
    """A request signed the way the SDK signs it (or deliberately not); returns (status, headers, JSON)."""
    path_qs = f"{path}?api-version={API_VERSION}"
    if data is None:
        data = json.dumps(body).encode() if body is not None else b""
    date = date or hmac_auth.http_date()
    body_hash = hmac_auth.content_hash(data)
    host = f"127.0.0.1:{sim.port}"
    all_headers = {"Content-Type": "application/json"}
    if sign:
        signature = signature or hmac_auth.sign(key or sim.access_key, method, path_qs, date, host, body_hash)
        all_headers.update(
            {
                "x-ms-date": date,
                "x-ms-content-sha256": body_hash,
                "Authorization": f"HMAC-SHA256 SignedHeaders={hmac_auth.SIGNED_HEADERS}&Signature={signature}",
            }
        )
    all_headers.update(headers or {})
    request = urllib.request.Request(
        sim.endpoint + path_qs, data=data if method != "GET" else None, method=method, headers=all_headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got_headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, got_headers, raw = exc.code, dict(exc.headers), exc.read()
    return status, got_headers, json.loads(raw) if raw else None


def assert_envelope(body: Any, expected: errors.AcsError | None = None) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"]
    assert isinstance(error.get("message"), str) and error["message"]
    if expected is not None:
        assert error["code"] == expected.code
    return error


def assert_acs_error(exc: HttpResponseError, expected: errors.AcsError) -> None:
    """The SDK's exception carries the status and the ACS error code the simulator defines."""
    assert exc.status_code == expected.status, exc
    assert exc.error is not None and exc.error.code == expected.code, exc
    assert exc.error.message


def sdk_error(call: Any, *args: Any, **kwargs: Any) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as info:
        call(*args, **kwargs)
    return info.value


def repeat_headers(request_id: str | None = None, first_sent: datetime | None = None) -> dict[str, str]:
    return {
        "Repeatability-Request-ID": request_id or str(uuid.uuid4()),
        "Repeatability-First-Sent": hmac_auth.http_date(first_sent),
    }


def place_call(ctl: Any, **extra: Any) -> dict[str, Any]:
    return ctl("POST", "/__sim/calls", {"from": CALLER, "to": RESOURCE_NUMBER, "script": [], **extra})


def answered(client: CallAutomationClient, receiver: Any, ctl: Any) -> Any:
    """An inbound call the app has answered and that is connected; returns its CallConnectionClient."""
    placed = place_call(ctl)
    props = client.answer_call(
        incoming_call_context=placed["incomingCallContext"],
        callback_url=receiver.url + "/cb",
        cognitive_services_endpoint=AI_ENDPOINT,
    )
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    return client.get_call_connection(props.call_connection_id)


def outbound(client: CallAutomationClient, receiver: Any, **kwargs: Any) -> Any:
    return client.create_call(
        CommunicationUserIdentifier("8:acs:agent"),
        receiver.url + "/cb",
        cognitive_services_endpoint=AI_ENDPOINT,
        **kwargs,
    )


# -- HMAC authentication ------------------------------------------------------------------------


def test_correctly_signed_raw_request_is_accepted(sim):
    """Control for the tests below: the raw signing helper produces requests the simulator accepts."""
    status, _, body = raw_request(sim, "GET", "/calling/callConnections/no-such-call")
    assert status == 404
    assert_envelope(body, errors.call_not_found("no-such-call"))


def test_forged_signature_is_refused(sim, receiver, ctl):
    forged = base64.b64encode(os.urandom(32)).decode()
    body = {"targets": [{"rawId": "8:acs:agent"}], "callbackUri": receiver.url + "/cb"}
    status, headers, answer = raw_request(sim, "POST", "/calling/callConnections", body, signature=forged)
    assert status == 401
    assert headers["Content-Type"].startswith("application/json")
    error = assert_envelope(answer)
    assert error["code"] == "Denied"
    assert "signature" in error["message"].lower()
    assert ctl("GET", "/__sim/calls") == []


def test_request_signed_with_another_key_is_refused(sim):
    status, _, answer = raw_request(sim, "GET", "/calling/callConnections/x", key=new_access_key())
    assert status == 401
    assert_envelope(answer)


@pytest.mark.parametrize("minutes", [-20, 20])
def test_stale_date_is_refused(sim, minutes):
    date = hmac_auth.http_date(datetime.now(UTC) + timedelta(minutes=minutes))
    status, _, answer = raw_request(sim, "GET", "/calling/callConnections/x", date=date)
    assert status == 401
    error = assert_envelope(answer)
    assert "window" in error["message"]


def test_body_tampered_after_signing_is_refused(sim, receiver, ctl):
    signed_for = json.dumps({"targets": [{"rawId": "8:acs:agent"}], "callbackUri": receiver.url + "/cb"}).encode()
    sent = signed_for.replace(b"agent", b"other")
    path_qs = f"/calling/callConnections?api-version={API_VERSION}"
    date = hmac_auth.http_date()
    signature = hmac_auth.sign(
        sim.access_key, "POST", path_qs, date, f"127.0.0.1:{sim.port}", hmac_auth.content_hash(signed_for)
    )
    status, _, answer = raw_request(
        sim,
        "POST",
        "/calling/callConnections",
        data=sent,
        signature=signature,
        headers={"x-ms-content-sha256": hmac_auth.content_hash(signed_for)},
    )
    assert status == 401
    assert "x-ms-content-sha256" in assert_envelope(answer)["message"]
    assert ctl("GET", "/__sim/calls") == []


def test_unsigned_request_is_refused(sim):
    status, _, answer = raw_request(sim, "GET", "/calling/callConnections/x", sign=False)
    assert status == 401
    assert_envelope(answer)
    status, _, answer = raw_request(
        sim, "GET", "/calling/callConnections/x", sign=False, headers={"Authorization": "Bearer abc"}
    )
    assert status == 401
    assert_envelope(answer)


def test_sdk_with_wrong_access_key_gets_401(sim, receiver, ctl):
    wrong = CallAutomationClient(sim.endpoint, AzureKeyCredential(new_access_key()))
    with pytest.raises(ClientAuthenticationError) as info:
        outbound(wrong, receiver)
    assert info.value.status_code == 401
    assert info.value.error is not None and info.value.error.code == "Denied"
    with pytest.raises(HttpResponseError) as info2:
        wrong.get_call_connection("whatever").get_call_properties()
    assert info2.value.status_code == 401
    assert ctl("GET", "/__sim/calls") == []
    refused = [r for r in ctl("GET", "/__sim/requests") if r.get("status") == 401]
    assert len(refused) == 2


# -- webhook JWTs -------------------------------------------------------------------------------


def _jwks_client(sim: Any) -> tuple[dict[str, Any], jwt.PyJWKClient]:
    with urllib.request.urlopen(sim.endpoint + OPENID_PATH, timeout=10) as response:
        config = json.loads(response.read())
    return config, jwt.PyJWKClient(config["jwks_uri"], cache_keys=False)


def _verify(token: str, jwks: jwt.PyJWKClient, audience: str) -> dict[str, Any]:
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=DEFAULT_ISSUER)


def test_callbacks_carry_a_jwt_that_verifies_against_published_keys(sim, client, receiver):
    props = outbound(client, receiver)
    receiver.wait_for("ParticipantsUpdated", call_connection_id=props.call_connection_id)
    config, jwks = _jwks_client(sim)
    assert config["issuer"] == DEFAULT_ISSUER
    assert config["jwks_uri"].startswith(sim.endpoint)
    audience = sim.sim.config.resource_id
    assert len(receiver.callbacks) >= 2
    for callback in receiver.callbacks:
        auth = callback["headers"].get("authorization", "")
        scheme, _, token = auth.partition(" ")
        assert scheme == "Bearer" and token
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        claims = _verify(token, jwks, audience)
        assert claims["iss"] == DEFAULT_ISSUER
        assert claims["aud"] == audience
        assert claims["exp"] - claims["iat"] == TOKEN_LIFETIME_SECONDS == 300
        assert 280 <= claims["exp"] - time.time() <= 305
        with pytest.raises(jwt.InvalidAudienceError):
            _verify(token, jwks, "00000000-0000-4000-8000-00000000ffff")


def test_token_signed_by_another_key_fails_verification(sim, client, receiver):
    outbound(client, receiver)
    receiver.wait_for("CallConnected")
    _, jwks = _jwks_client(sim)
    audience = sim.sim.config.resource_id
    genuine = receiver.callbacks[0]["headers"]["authorization"].split(" ", 1)[1]
    _verify(genuine, jwks, audience)

    impostor = WebhookSigner(audience=audience)
    # Claiming the simulator's key id: the published key is found, the signature does not match.
    impostor.kid = jwt.get_unverified_header(genuine)["kid"]
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(impostor.token(), jwks, audience)
    # With its own key id: no published key to verify with at all.
    impostor.kid = uuid.uuid4().hex
    with pytest.raises(jwt.PyJWKClientError):
        _verify(impostor.token(), jwks, audience)
    # The genuine token with its claims altered.
    header, payload, sig = genuine.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["aud"] = "someone-else"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(f"{header}.{forged_payload}.{sig}", jwks, "someone-else")


# -- repeatability ------------------------------------------------------------------------------


def _timeline(ctl: Any, call_id: str) -> list[dict[str, Any]]:
    return ctl("GET", f"/__sim/calls/{call_id}/timeline")


def test_create_call_repeated_returns_first_response_and_acts_once(client, receiver, ctl):
    headers = repeat_headers()
    first = outbound(client, receiver, headers=dict(headers))
    second = outbound(client, receiver, headers=dict(headers))
    assert first.call_connection_id == second.call_connection_id
    assert first.server_call_id == second.server_call_id
    receiver.wait_for("CallConnected")
    calls = ctl("GET", "/__sim/calls")
    assert len(calls) == 1
    assert [c["callConnectionId"] for c in calls[0]["connections"]] == [first.call_connection_id]
    requests = [e for e in _timeline(ctl, first.call_connection_id) if e["kind"] == "request"]
    assert [e["operation"] for e in requests[:2]] == ["CreateCall", "CreateCall"]
    assert "repeated request" in requests[1]["summary"]
    assert len(receiver.events("CallConnected")) == 1
    # Another id is another request.
    third = outbound(client, receiver, headers=repeat_headers())
    assert third.call_connection_id != first.call_connection_id
    assert len(ctl("GET", "/__sim/calls")) == 2


def test_raw_repeated_create_call_returns_identical_body(sim, receiver, ctl):
    body = {"targets": [{"rawId": "8:acs:agent"}], "callbackUri": receiver.url + "/cb"}
    headers = repeat_headers()
    status1, headers1, answer1 = raw_request(sim, "POST", "/calling/callConnections", body, headers=headers)
    status2, headers2, answer2 = raw_request(sim, "POST", "/calling/callConnections", body, headers=headers)
    assert status1 == status2 == 201
    assert answer1 == answer2
    assert headers1.get("Repeatability-Result") == headers2.get("Repeatability-Result") == "accepted"
    assert len(ctl("GET", "/__sim/calls")) == 1


def test_answer_call_repeated_acts_once(client, receiver, ctl):
    placed = place_call(ctl)
    headers = repeat_headers()

    def answer() -> Any:
        return client.answer_call(
            incoming_call_context=placed["incomingCallContext"],
            callback_url=receiver.url + "/cb",
            cognitive_services_endpoint=AI_ENDPOINT,
            headers=dict(headers),
        )

    first, second = answer(), answer()
    assert first.call_connection_id == second.call_connection_id
    receiver.wait_for("CallConnected")
    calls = ctl("GET", "/__sim/calls")
    assert len(calls) == 1 and len(calls[0]["connections"]) == 1
    # Without the same id, answering again is the usual mistake.
    assert_acs_error(
        sdk_error(
            client.answer_call,
            incoming_call_context=placed["incomingCallContext"],
            callback_url=receiver.url + "/cb",
        ),
        errors.incoming_context_used(),
    )


def test_add_participant_repeated_invites_once(client, receiver, ctl):
    connection = answered(client, receiver, ctl)
    headers = repeat_headers()
    agent = CommunicationUserIdentifier("8:acs:agent-2")
    first = connection.add_participant(agent, operation_context="add", headers=dict(headers))
    second = connection.add_participant(agent, operation_context="add", headers=dict(headers))
    assert first.invitation_id == second.invitation_id
    receiver.wait_for("AddParticipantSucceeded")
    time.sleep(0.1)
    assert len(receiver.events("AddParticipantSucceeded")) == 1
    timeline = _timeline(ctl, connection._call_connection_id)
    invites = [e for e in timeline if e["kind"] == "call" and e["summary"].startswith("invite ")]
    assert len(invites) == 1
    requests = [e for e in timeline if e["kind"] == "request" and e["operation"] == "AddParticipant"]
    assert len(requests) == 2


def test_concurrent_duplicates_act_once(client, receiver, ctl):
    headers = repeat_headers()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: outbound(client, receiver, headers=dict(headers)), range(8)))
    assert len({r.call_connection_id for r in results}) == 1
    receiver.wait_for("CallConnected")
    assert len(ctl("GET", "/__sim/calls")) == 1
    time.sleep(0.1)
    assert len(receiver.events("CallConnected")) == 1


@pytest.mark.parametrize("request_id", ["not-a-uuid", "12345", "g" * 8 + "-0000-0000-0000-" + "0" * 12])
def test_non_uuid_request_id_is_rejected(client, receiver, ctl, request_id):
    exc = sdk_error(outbound, client, receiver, headers=repeat_headers(request_id))
    assert exc.status_code == 400
    assert exc.error is not None and exc.error.code == "BadRequest"
    assert "Repeatability-Request-ID" in exc.error.message
    assert ctl("GET", "/__sim/calls") == []


def test_stale_first_sent_is_rejected(client, receiver, ctl):
    old = datetime.now(UTC) - timedelta(minutes=6)
    exc = sdk_error(outbound, client, receiver, headers=repeat_headers(first_sent=old))
    assert exc.status_code == 400
    assert exc.error is not None and exc.error.code == "BadRequest"
    assert "Repeatability-First-Sent" in exc.error.message
    assert ctl("GET", "/__sim/calls") == []


def test_first_sent_without_request_id_is_rejected(sim, receiver, ctl):
    body = {"targets": [{"rawId": "8:acs:agent"}], "callbackUri": receiver.url + "/cb"}
    status, _, answer = raw_request(
        sim, "POST", "/calling/callConnections", body, headers={"Repeatability-First-Sent": hmac_auth.http_date()}
    )
    assert status == 400
    assert_envelope(answer)
    assert ctl("GET", "/__sim/calls") == []


# -- incoming call context ----------------------------------------------------------------------


def test_answer_with_used_context(client, receiver, ctl):
    placed = place_call(ctl)
    client.answer_call(incoming_call_context=placed["incomingCallContext"], callback_url=receiver.url + "/cb")
    exc = sdk_error(
        client.answer_call, incoming_call_context=placed["incomingCallContext"], callback_url=receiver.url + "/cb"
    )
    assert_acs_error(exc, errors.incoming_context_used())


def test_reject_or_redirect_after_answer_uses_context(client, receiver, ctl):
    placed = place_call(ctl)
    client.answer_call(incoming_call_context=placed["incomingCallContext"], callback_url=receiver.url + "/cb")
    assert_acs_error(sdk_error(client.reject_call, placed["incomingCallContext"]), errors.incoming_context_used())
    assert_acs_error(
        sdk_error(client.redirect_call, placed["incomingCallContext"], CommunicationUserIdentifier("8:acs:x")),
        errors.incoming_context_used(),
    )


@pytest.mark.parametrize("context", ["garbage", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJjYyI6Im5vcGUifQ."])
def test_answer_with_unknown_or_malformed_context(client, receiver, context):
    exc = sdk_error(client.answer_call, incoming_call_context=context, callback_url=receiver.url + "/cb")
    assert_acs_error(exc, errors.incoming_context_invalid())


def test_answer_with_expired_context(client, receiver, ctl):
    placed = place_call(ctl, ring_timeout=0.05)
    deadline = time.monotonic() + 5
    while ctl("GET", f"/__sim/calls/{placed['serverCallId']}")["state"] != "ended":
        assert time.monotonic() < deadline, "the unanswered call never ended"
        time.sleep(0.02)
    exc = sdk_error(
        client.answer_call, incoming_call_context=placed["incomingCallContext"], callback_url=receiver.url + "/cb"
    )
    assert_acs_error(exc, errors.incoming_context_expired())
    assert ctl("GET", f"/__sim/calls/{placed['serverCallId']}")["outcome"] == "missed"


# -- actions on an ended call -------------------------------------------------------------------


def test_actions_on_an_ended_call(client, receiver, ctl):
    connection = answered(client, receiver, ctl)
    ccid = connection._call_connection_id
    connection.hang_up(is_for_everyone=True)
    receiver.wait_for("CallDisconnected", call_connection_id=ccid)
    ended = errors.call_ended(ccid)
    with pytest.raises(ResourceNotFoundError) as info:
        connection.play_media(TextSource(text="anyone there?"))
    assert_acs_error(info.value, ended)
    assert_acs_error(sdk_error(connection.add_participant, CommunicationUserIdentifier("8:acs:late")), ended)
    assert_acs_error(sdk_error(connection.get_call_properties), errors.call_not_found(ccid))
    assert_acs_error(sdk_error(connection.mute_participant, CALLER_ID), ended)
    assert_acs_error(sdk_error(connection.start_recognizing_media, RecognizeInputType.DTMF, CALLER_ID), ended)
    assert_acs_error(sdk_error(connection.hang_up, is_for_everyone=False), ended)


def test_actions_after_the_caller_hangs_up(client, receiver, ctl):
    connection = answered(client, receiver, ctl)
    ccid = connection._call_connection_id
    ctl("POST", f"/__sim/calls/{ccid}/hangup", {})
    receiver.wait_for("CallDisconnected", call_connection_id=ccid)
    assert_acs_error(sdk_error(connection.play_media, TextSource(text="hello?")), errors.call_ended(ccid))
    assert_acs_error(sdk_error(connection.get_call_properties), errors.call_not_found(ccid))


def test_unknown_call_connection(client):
    connection = client.get_call_connection("no-such-connection")
    assert_acs_error(sdk_error(connection.get_call_properties), errors.call_not_found("no-such-connection"))
    assert_acs_error(
        sdk_error(connection.play_media, TextSource(text="x")), errors.call_not_found("no-such-connection")
    )


# -- media -------------------------------------------------------------------------------------


def test_second_recognize_while_one_is_running(client, receiver, ctl):
    connection = answered(client, receiver, ctl)
    # 300 service seconds of initial silence: it stays running for the whole test.
    connection.start_recognizing_media(
        RecognizeInputType.DTMF, CALLER_ID, initial_silence_timeout=300, operation_context="first"
    )
    exc = sdk_error(
        connection.start_recognizing_media,
        RecognizeInputType.DTMF,
        CALLER_ID,
        initial_silence_timeout=5,
        operation_context="second",
    )
    assert_acs_error(exc, errors.recognize_running())
    # Interrupting is allowed: the first is canceled and the second takes its place.
    connection.start_recognizing_media(
        RecognizeInputType.DTMF,
        CALLER_ID,
        initial_silence_timeout=300,
        operation_context="third",
        interrupt_call_media_operation=True,
    )
    connection.hang_up(is_for_everyone=True)
    receiver.wait_for("CallDisconnected")
    assert not receiver.events("RecognizeCompleted")


# -- unknown participants -----------------------------------------------------------------------


def test_unknown_participant(client, receiver, ctl):
    connection = answered(client, receiver, ctl)
    missing = errors.participant_not_found(STRANGER.raw_id)
    with pytest.raises(ResourceNotFoundError) as info:
        connection.mute_participant(STRANGER)
    assert_acs_error(info.value, missing)
    assert_acs_error(sdk_error(connection.remove_participant, STRANGER), missing)
    assert_acs_error(sdk_error(connection.get_participant, STRANGER), missing)
    assert_acs_error(sdk_error(connection.start_recognizing_media, RecognizeInputType.DTMF, STRANGER), missing)
    assert_acs_error(sdk_error(connection.play_media, TextSource(text="psst"), play_to=[STRANGER]), missing)
    assert_acs_error(sdk_error(connection.send_dtmf_tones, ["one"], STRANGER), missing)
    # A known participant is found (and the raw id survives the trip through the URL).
    assert connection.get_participant(CALLER_ID).identifier.raw_id == "4:" + CALLER


# -- invalid request bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,body,field",
    [
        ("/calling/callConnections", {"callbackUri": "https://app.example/cb"}, "targets"),
        ("/calling/callConnections", {"targets": [{"rawId": "8:acs:a"}]}, "callbackUri"),
        ("/calling/callConnections", {"targets": [{}], "callbackUri": "https://app.example/cb"}, "targets"),
        ("/calling/callConnections", {"targets": [{"rawId": "8:acs:a"}], "callbackUri": "not-a-url"}, "callbackUri"),
        (
            "/calling/callConnections",
            {"targets": [{"rawId": "4:+14255550199"}], "callbackUri": "https://app.example/cb"},
            "sourceCallerIdNumber",
        ),
        ("/calling/callConnections:answer", {"callbackUri": "https://app.example/cb"}, "incomingCallContext"),
        ("/calling/callConnections:answer", {"incomingCallContext": "x"}, "callbackUri"),
        ("/calling/callConnections:reject", {}, "incomingCallContext"),
        ("/calling/callConnections:redirect", {"incomingCallContext": "x"}, "target"),
    ],
)
def test_invalid_bodies_name_the_field(sim, ctl, path, body, field):
    status, _, answer = raw_request(sim, "POST", path, body)
    assert status == 400, answer
    error = assert_envelope(answer, errors.bad_request(""))
    assert field in error["message"]
    assert error.get("target") == field
    assert ctl("GET", "/__sim/calls") == []


@pytest.mark.parametrize(
    "suffix,body,field",
    [
        (":play", {}, "playSources"),
        (":play", {"playSources": [{"kind": "video"}]}, "playSources"),
        (":recognize", {"recognizeOptions": {}}, "recognizeInputType"),
        (":recognize", {"recognizeInputType": "dtmf", "recognizeOptions": {}}, "recognizeOptions"),
        (
            ":recognize",
            {
                "recognizeInputType": "dtmf",
                "recognizeOptions": {
                    "targetParticipant": {"rawId": "4:" + CALLER},
                    "dtmfOptions": {"stopTones": ["hash"]},
                },
            },
            "stopTones",
        ),
        (":sendDtmfTones", {"tones": ["one", "eleven"], "targetParticipant": {"rawId": "4:" + CALLER}}, "tones"),
        (":sendDtmfTones", {"tones": ["1"], "targetParticipant": {"rawId": "4:" + CALLER}}, "tones"),
        (":sendDtmfTones", {"targetParticipant": {"rawId": "4:" + CALLER}}, "tones"),
        (":sendDtmfTones", {"tones": ["one"]}, "targetParticipant"),
        ("/participants:add", {}, "participantToAdd"),
        ("/participants:add", {"participantToAdd": {"rawId": "4:+14255550199"}}, "sourceCallerIdNumber"),
        ("/participants:remove", {}, "participantToRemove"),
        ("/participants:mute", {}, "targetParticipants"),
        (":transferToParticipant", {}, "targetParticipant"),
        (":startContinuousDtmfRecognition", {}, "targetParticipant"),
    ],
)
def test_invalid_call_action_bodies_name_the_field(sim, client, receiver, ctl, suffix, body, field):
    connection = answered(client, receiver, ctl)
    path = f"/calling/callConnections/{connection._call_connection_id}{suffix}"
    status, _, answer = raw_request(sim, "POST", path, body)
    assert status == 400, answer
    error = assert_envelope(answer, errors.bad_request(""))
    assert field in error["message"] or field in error.get("target", ""), error


def test_body_that_is_not_json(sim):
    status, _, answer = raw_request(sim, "POST", "/calling/callConnections", data=b"{not json")
    assert status == 400
    assert_envelope(answer, errors.bad_request(""))
    status, _, answer = raw_request(sim, "POST", "/calling/callConnections", [1, 2])
    assert status == 400
    assert_envelope(answer, errors.bad_request(""))


def test_sdk_phone_target_without_caller_id(client, receiver, ctl):
    exc = sdk_error(client.create_call, PhoneNumberIdentifier("+14255550199"), receiver.url + "/cb")
    assert exc.status_code == 400
    assert exc.error is not None and exc.error.code == "BadRequest"
    assert "sourceCallerIdNumber" in exc.error.message
    assert ctl("GET", "/__sim/calls") == []

    connection = answered(client, receiver, ctl)
    exc = sdk_error(connection.add_participant, PhoneNumberIdentifier("+14255550199"))
    assert exc.status_code == 400
    assert "sourceCallerIdNumber" in exc.error.message


def test_sdk_bad_tone_names(client, receiver, ctl):
    connection = answered(client, receiver, ctl)
    exc = sdk_error(connection.send_dtmf_tones, ["one", "eleven"], CALLER_ID)
    assert exc.status_code == 400
    assert "tones" in exc.error.message
    exc = sdk_error(connection.start_recognizing_media, RecognizeInputType.DTMF, CALLER_ID, dtmf_stop_tones=["hash"])
    assert exc.status_code == 400
    assert "tone" in exc.error.message


def test_unsupported_api_version_and_unknown_route(sim):
    date = hmac_auth.http_date()
    path_qs = "/calling/callConnections/x?api-version=1999-01-01"
    body_hash = hmac_auth.content_hash(b"")
    signature = hmac_auth.sign(sim.access_key, "GET", path_qs, date, f"127.0.0.1:{sim.port}", body_hash)
    request = urllib.request.Request(
        sim.endpoint + path_qs,
        method="GET",
        headers={
            "x-ms-date": date,
            "x-ms-content-sha256": body_hash,
            "Authorization": f"HMAC-SHA256 SignedHeaders={hmac_auth.SIGNED_HEADERS}&Signature={signature}",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert assert_envelope(json.loads(info.value.read()))["code"] == "UnsupportedApiVersion"
    status, _, answer = raw_request(sim, "POST", "/calling/nothingHere", {})
    assert status == 404
    assert_envelope(answer)


def test_refused_answer_does_not_use_up_the_context(sim, client, receiver, ctl):
    placed = place_call(ctl)
    body = {"incomingCallContext": placed["incomingCallContext"], "callbackUri": receiver.url + "/cb"}
    status, _, answer = raw_request(sim, "POST", "/calling/callConnections:answer", {**body, "answeredBy": {}})
    assert status == 400
    assert assert_envelope(answer)["target"] == "answeredBy"
    assert ctl("GET", f"/__sim/calls/{placed['serverCallId']}")["connections"] == []
    props = client.answer_call(incoming_call_context=placed["incomingCallContext"], callback_url=receiver.url + "/cb")
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    assert len(ctl("GET", f"/__sim/calls/{placed['serverCallId']}")["connections"]) == 1


@pytest.mark.parametrize(
    "suffix,body,field",
    [
        ("/participants:add", {"participantToAdd": {"rawId": "4:+1"}, "sourceCallerIdNumber": "+1"}, "sourceCallerId"),
        (":play", {"playSources": [{"kind": "text", "text": "hi"}]}, "playSources"),
        (":play", {"playSources": [{"kind": "file", "file": {"uri": 5}}]}, "playSources"),
        (":sendDtmfTones", {"tones": [["one"]], "targetParticipant": {"rawId": "4:" + CALLER}}, None),
        ("/participants:cancelAddParticipant", {"invitationId": ["x"]}, None),
        (":hold", {"targetParticipant": {"rawId": "4:" + CALLER}, "playSourceInfo": "x"}, None),
    ],
)
def test_fields_of_the_wrong_type_get_400_not_500(sim, client, receiver, ctl, suffix, body, field):
    connection = answered(client, receiver, ctl)
    path = f"/calling/callConnections/{connection._call_connection_id}{suffix}"
    status, _, answer = raw_request(sim, "POST", path, body)
    assert status == 400, answer
    error = assert_envelope(answer, errors.bad_request(""))
    if field:
        assert field in error["message"] or field in error.get("target", ""), error
    # The call is still usable afterwards.
    assert connection.get_call_properties().call_connection_state == "connected"


def test_create_call_with_caller_id_of_the_wrong_type(sim, receiver, ctl):
    body = {
        "targets": [{"rawId": "4:+14255550199"}],
        "callbackUri": receiver.url + "/cb",
        "sourceCallerIdNumber": "+18005550123",
    }
    status, _, answer = raw_request(sim, "POST", "/calling/callConnections", body)
    assert status == 400
    assert assert_envelope(answer, errors.bad_request(""))["target"] == "sourceCallerIdNumber"
    assert ctl("GET", "/__sim/calls") == []
