"""Unit tests of the simulator's building blocks: HMAC verification (against requests signed by the
SDK's own HMACCredentialsPolicy), repeatability headers, party scripts, fault rules and identifier
models."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.communication.callautomation._shared import policy as sdk_policy
from azure.core.credentials import AzureKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest

from simulator import hmac_auth
from simulator.errors import AcsError
from simulator.faults import parse_rule
from simulator.identifiers import IdentifierError, is_phone, model_of, normalize, raw_id_of
from simulator.parties import TONES, Behaviour, Step, parse_behaviour, parse_step, tones_of
from simulator.repeatability import RepeatabilityCache

KEY = base64.b64encode(os.urandom(32)).decode()
OTHER_KEY = base64.b64encode(os.urandom(32)).decode()
ENDPOINT = "http://127.0.0.1:8123"
HOST = "127.0.0.1:8123"
PATH = "/calling/callConnections/abc-123:play?api-version=2025-05-15"
BODY = json.dumps({"playSources": [{"kind": "text", "text": {"text": "hello"}}]})


def sdk_signed(
    method: str = "POST",
    url: str = ENDPOINT + PATH,
    body: str | None = BODY,
    key: str = KEY,
    endpoint: str = ENDPOINT,
) -> dict[str, str]:
    """The headers the SDK's HMACCredentialsPolicy puts on a request, plus the Host the transport adds."""
    request = HttpRequest(method, url, data=body)
    policy = sdk_policy.HMACCredentialsPolicy(endpoint, AzureKeyCredential(key))
    policy.on_request(PipelineRequest(request, PipelineContext(None)))
    headers = dict(request.headers)
    headers["Host"] = endpoint.split("://", 1)[1]
    return headers


def refused(
    headers: dict[str, str],
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes | None = None,
    key: str = KEY,
    now: datetime | None = None,
) -> AcsError:
    with pytest.raises(AcsError) as info:
        hmac_auth.verify(key, method, path, headers, BODY.encode() if body is None else body, now=now)
    assert info.value.status == 401
    assert info.value.body()["error"]["code"]
    assert info.value.body()["error"]["message"]
    return info.value


# -- HMAC ---------------------------------------------------------------------------------------


def test_sdk_signed_request_passes():
    headers = sdk_signed()
    assert headers["Authorization"].startswith("HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&")
    hmac_auth.verify(KEY, "POST", PATH, headers, BODY.encode())


def test_sdk_signed_get_without_body_passes():
    path = "/calling/callConnections/abc-123?api-version=2025-05-15"
    headers = sdk_signed("GET", ENDPOINT + path, body=None)
    hmac_auth.verify(KEY, "GET", path, headers, b"")


def test_sdk_signed_matches_helper_sign():
    headers = sdk_signed()
    signature = headers["Authorization"].split("Signature=", 1)[1]
    assert signature == hmac_auth.sign(
        KEY, "POST", PATH, headers["x-ms-date"], HOST, hmac_auth.content_hash(BODY.encode())
    )
    assert headers["x-ms-content-sha256"] == hmac_auth.content_hash(BODY.encode())


def test_lowercase_method_is_signed_uppercase():
    headers = sdk_signed()
    hmac_auth.verify(KEY, "post", PATH, headers, BODY.encode())


def test_x_ms_host_overrides_host():
    """Recording downloads go to another host but sign the resource's host, named in x-ms-host."""
    headers = sdk_signed()
    headers["Host"] = "sim.asm.skype.com:443"
    refused(dict(headers))
    headers["x-ms-host"] = HOST
    hmac_auth.verify(KEY, "POST", PATH, headers, BODY.encode())


def test_wrong_key_refused():
    exc = refused(sdk_signed(key=OTHER_KEY))
    assert "signature" in exc.message.lower()


def test_verified_with_wrong_key_refused():
    refused(sdk_signed(), key=OTHER_KEY)


@pytest.mark.parametrize(
    "path",
    [
        "/calling/callConnections/abc-124:play?api-version=2025-05-15",
        "/calling/callConnections/abc-123:recognize?api-version=2025-05-15",
        "/calling/callConnections/abc-123:play?api-version=2024-09-15",
        "/calling/callConnections/abc-123:play",
        "/calling/callConnections/abc-123:play?api-version=2025-05-15&x=1",
    ],
)
def test_tampered_path_or_query_refused(path):
    refused(sdk_signed(), path=path)


def test_tampered_method_refused():
    refused(sdk_signed(), method="PUT")


def test_tampered_body_refused():
    exc = refused(sdk_signed(), body=BODY.replace("hello", "HELLO").encode())
    assert "x-ms-content-sha256" in exc.message


def test_tampered_body_with_matching_hash_refused():
    """A new body with its own (correct) content hash still breaks the signature."""
    headers = sdk_signed()
    other = BODY.replace("hello", "HELLO").encode()
    headers["x-ms-content-sha256"] = hmac_auth.content_hash(other)
    exc = refused(headers, body=other)
    assert "signature" in exc.message.lower()


def test_wrong_host_refused():
    headers = sdk_signed()
    headers["Host"] = "127.0.0.1:9999"
    refused(headers)


def test_signed_for_other_host_refused():
    headers = sdk_signed(endpoint="http://evil.example:8123", url="http://evil.example:8123" + PATH)
    headers["Host"] = HOST
    refused(headers)


@pytest.mark.parametrize("minutes", [16, -16, 60, -24 * 60])
def test_stale_date_refused(minutes):
    headers = sdk_signed()
    sent = datetime.now(UTC)
    exc = refused(headers, now=sent + timedelta(minutes=minutes))
    assert "window" in exc.message


@pytest.mark.parametrize("minutes", [14, -14, 0])
def test_date_within_window_passes(minutes):
    headers = sdk_signed()
    hmac_auth.verify(KEY, "POST", PATH, headers, BODY.encode(), now=datetime.now(UTC) + timedelta(minutes=minutes))


def test_stale_date_from_sdk_clock_refused(monkeypatch):
    """The SDK's own clock 20 minutes behind (or ahead): the signature is right, the date is not."""
    for minutes in (-20, 20):
        stale = hmac_auth.http_date(datetime.now(UTC) + timedelta(minutes=minutes))
        monkeypatch.setattr(sdk_policy, "get_current_utc_time", lambda stale=stale: stale)
        headers = sdk_signed()
        assert headers["x-ms-date"] == stale
        refused(headers)


def test_date_resigned_but_replaced_refused():
    """Changing x-ms-date to a fresh value without re-signing breaks the signature."""
    headers = sdk_signed()
    headers["x-ms-date"] = hmac_auth.http_date(datetime.now(UTC) + timedelta(seconds=5))
    refused(headers)


def test_unparseable_date_refused():
    headers = sdk_signed()
    headers["x-ms-date"] = "yesterday"
    refused(headers)


@pytest.mark.parametrize("missing", ["Authorization", "x-ms-date", "x-ms-content-sha256", "Host"])
def test_missing_header_refused(missing):
    headers = sdk_signed()
    del headers[missing]
    refused(headers)


def test_no_headers_refused():
    refused({})


@pytest.mark.parametrize(
    "auth",
    [
        "Bearer abc",
        "HMAC-SHA256 Signature=xyz",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host&Signature={sig}",
        "HMAC-SHA256 SignedHeaders=host;x-ms-date;x-ms-content-sha256&Signature={sig}",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256;content-type&Signature={sig}",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256",
        "HMAC-SHA1 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={sig}",
    ],
)
def test_bad_authorization_header_refused(auth):
    headers = sdk_signed()
    sig = headers["Authorization"].split("Signature=", 1)[1]
    headers["Authorization"] = auth.format(sig=sig)
    refused(headers)


def test_tampered_signature_refused():
    headers = sdk_signed()
    sig = headers["Authorization"].split("Signature=", 1)[1]
    forged = base64.b64encode(os.urandom(32)).decode()
    assert forged != sig
    headers["Authorization"] = headers["Authorization"].replace(sig, forged)
    refused(headers)


def test_http_date_round_trips_through_verify():
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    date = hmac_auth.http_date(moment)
    assert date == "Thu, 02 Jan 2025 03:04:05 GMT"
    body_hash = hmac_auth.content_hash(b"")
    sig = hmac_auth.sign(KEY, "GET", "/p?q=1", date, HOST, body_hash)
    headers = {
        "Authorization": f"HMAC-SHA256 SignedHeaders={hmac_auth.SIGNED_HEADERS}&Signature={sig}",
        "x-ms-date": date,
        "x-ms-content-sha256": body_hash,
        "Host": HOST,
    }
    hmac_auth.verify(KEY, "GET", "/p?q=1", headers, b"", now=moment + timedelta(minutes=1))


# -- repeatability ------------------------------------------------------------------------------


def _http_date(delta: timedelta = timedelta(0)) -> str:
    return hmac_auth.http_date(datetime.now(UTC) + delta)


def test_repeatability_absent_is_fine():
    assert RepeatabilityCache.validate(None, None) is None


def test_repeatability_valid_returns_normalised_uuid():
    rid = str(uuid.uuid4())
    assert RepeatabilityCache.validate(rid, _http_date()) == rid
    assert RepeatabilityCache.validate(rid.upper(), _http_date()) == rid


def test_repeatability_recent_first_sent_ok():
    rid = str(uuid.uuid4())
    assert RepeatabilityCache.validate(rid, _http_date(-timedelta(minutes=4))) == rid


@pytest.mark.parametrize(
    "request_id,first_sent,needle",
    [
        ("not-a-uuid", "now", "UUID"),
        ("1234", "now", "UUID"),
        (str(uuid.uuid4()) + "0", "now", "UUID"),
        ("{" + str(uuid.uuid4()) + "}", "now", "UUID"),
        ("uuid", None, "Repeatability-First-Sent"),
        (None, "now", "Repeatability-Request-ID"),
        ("uuid", "not a date", "HTTP date"),
        ("uuid", "old", "window"),
    ],
)
def test_repeatability_invalid(request_id, first_sent, needle):
    if request_id == "uuid":
        request_id = str(uuid.uuid4())
    first_sent = {"now": _http_date(), "old": _http_date(-timedelta(minutes=6))}.get(first_sent, first_sent)
    with pytest.raises(AcsError) as info:
        RepeatabilityCache.validate(request_id, first_sent)
    assert info.value.status == 400
    assert info.value.code == "BadRequest"
    assert needle in info.value.message


def test_repeatability_window_uses_now():
    rid = str(uuid.uuid4())
    sent = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    first_sent = hmac_auth.http_date(sent)
    assert RepeatabilityCache.validate(rid, first_sent, now=sent + timedelta(minutes=5)) == rid
    with pytest.raises(AcsError):
        RepeatabilityCache.validate(rid, first_sent, now=sent + timedelta(minutes=5, seconds=1))


async def test_repeatability_cache_acts_once():
    from simulator.repeatability import StoredResponse

    cache = RepeatabilityCache()
    calls = 0

    async def act() -> StoredResponse:
        nonlocal calls
        calls += 1
        return StoredResponse(201, json.dumps({"n": calls}).encode(), {})

    import asyncio

    results = await asyncio.gather(*(cache.run("k", act) for _ in range(5)))
    assert calls == 1
    assert {r.body for r, _ in results} == {b'{"n": 1}'}
    assert sorted(replayed for _, replayed in results) == [False, True, True, True, True]
    assert cache.replays == 4
    # Without a key every request acts.
    await cache.run(None, act)
    await cache.run(None, act)
    assert calls == 3


async def test_repeatability_cache_does_not_keep_server_errors():
    from simulator.repeatability import StoredResponse

    cache = RepeatabilityCache()
    statuses = iter([503, 201])

    async def act() -> StoredResponse:
        return StoredResponse(next(statuses), b"", {})

    first, replayed = await cache.run("k", act)
    assert (first.status, replayed) == (503, False)
    second, replayed = await cache.run("k", act)
    assert (second.status, replayed) == (201, False)
    third, replayed = await cache.run("k", act)
    assert (third.status, replayed) == (201, True)


# -- parties ------------------------------------------------------------------------------------


def test_tones_of():
    assert tones_of("123") == ["one", "two", "three"]
    assert tones_of("*#0") == ["asterisk", "pound", "zero"]
    assert tones_of("aBcD") == ["a", "b", "c", "d"]
    assert tones_of("") == []
    assert set(TONES.values()) == set(tones_of("0123456789*#ABCD"))


@pytest.mark.parametrize("keys", ["E", "12x", "1 2", "+", "é"])
def test_tones_of_rejects_non_dtmf(keys):
    with pytest.raises(ValueError, match="not a DTMF key"):
        tones_of(keys)


def test_parse_step_defaults():
    step = parse_step({})
    assert step == Step(on="recognize")
    assert step.describe() == "stays silent"


def test_parse_step_kinds():
    assert parse_step({"press": 1234}).press == "1234"
    assert parse_step({"press": "12#"}).describe() == "presses 12#"
    assert parse_step({"say": "yes"}).describe() == "says 'yes'"
    assert parse_step({"hangup": True}).describe() == "hangs up"
    assert parse_step({"on": "play", "match": "Welcome", "silence": True}).matches("play", "welcome to contoso")
    assert not parse_step({"on": "play", "match": "bye"}).matches("play", "welcome")
    assert not parse_step({"on": "play"}).matches("recognize", "welcome")
    timed = parse_step({"after": "1.5", "press": "1"})
    assert (timed.on, timed.after) == ("time", 1.5)
    assert parse_step({"delay": "0.2", "say": "x"}).delay == 0.2


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"pres": "1"}, "unknown step keys"),
        ({"on": "ringing"}, "trigger"),
        ({"on": "time", "press": "1"}, "after"),
        ({"press": "1x"}, "DTMF"),
        ({"press": "1", "say": "yes"}, "one thing"),
        ({"hangup": True, "silence": True}, "one thing"),
    ],
)
def test_parse_step_errors(data, needle):
    with pytest.raises(ValueError, match=needle):
        parse_step(data)


def test_parse_step_bad_number():
    with pytest.raises(ValueError):
        parse_step({"delay": "soon"})


def test_parse_behaviour():
    assert parse_behaviour({}) == Behaviour()
    behaviour = parse_behaviour(
        {"answer": "busy", "delay": 0.5, "display_name": "Bob", "script": [{"press": "1"}, {"hangup": True}]}
    )
    assert behaviour.answer == "busy"
    assert behaviour.delay == 0.5
    assert behaviour.display_name == "Bob"
    assert [s.describe() for s in behaviour.script] == ["presses 1", "hangs up"]


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"answer": "maybe"}, "answer must be one of"),
        ({"script": [{"press": "Z"}]}, "DTMF"),
        ({"script": [{"on": "nope"}]}, "trigger"),
    ],
)
def test_parse_behaviour_errors(data, needle):
    with pytest.raises(ValueError, match=needle):
        parse_behaviour(data)


# -- faults -------------------------------------------------------------------------------------


def test_parse_rule_valid():
    rule = parse_rule({"kind": "request", "match": "Play", "status": 503, "count": 2})
    assert (rule.kind, rule.match, rule.status, rule.count) == ("request", "Play", 503, 2)
    assert rule.matches("Play") and not rule.matches("Recognize")
    assert parse_rule({"kind": "request", "latency": 0.5}).latency == 0.5
    assert parse_rule({"kind": "callback", "action": "drop", "match": "Play*"}).matches("PlayCompleted")
    assert parse_rule({"kind": "eventgrid", "action": "delay", "delay": 1}).delay == 1.0
    assert parse_rule({"kind": "download", "cut_after_bytes": 10}).cut_after_bytes == 10
    assert parse_rule({"kind": "incoming_context", "ttl": 0.1}).ttl == 0.1


@pytest.mark.parametrize(
    "data,needle",
    [
        ({}, "fault kind"),
        ({"kind": "bogus"}, "fault kind"),
        ({"kind": "request", "status": 404}, "status must be one of"),
        ({"kind": "request"}, "status or a latency"),
        ({"kind": "callback"}, "callback fault action"),
        ({"kind": "callback", "action": "mangle"}, "callback fault action"),
        ({"kind": "eventgrid", "action": "explode"}, "eventgrid fault action"),
        ({"kind": "download"}, "cut_after_bytes"),
        ({"kind": "download", "cut_after_bytes": -1}, "cut_after_bytes"),
        ({"kind": "incoming_context"}, "ttl"),
        ({"kind": "incoming_context", "ttl": 0}, "ttl"),
    ],
)
def test_parse_rule_errors(data, needle):
    with pytest.raises(ValueError, match=needle):
        parse_rule(data)


def test_parse_rule_bad_numbers():
    with pytest.raises((ValueError, TypeError)):
        parse_rule({"kind": "request", "status": 503, "count": "lots"})


# -- identifiers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,kind,part",
    [
        ("4:+14255550100", "phoneNumber", {"value": "+14255550100"}),
        ("8:acs:res_user-1", "communicationUser", {"id": "8:acs:res_user-1"}),
        (
            "8:orgid:11111111-2222-3333-4444-555555555555",
            "microsoftTeamsUser",
            {"userId": "11111111-2222-3333-4444-555555555555", "isAnonymous": False, "cloud": "public"},
        ),
        (
            "28:orgid:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "microsoftTeamsApp",
            {"appId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "cloud": "public"},
        ),
    ],
)
def test_identifier_round_trip(raw, kind, part):
    model = model_of(raw)
    assert model["rawId"] == raw
    assert model["kind"] == kind
    assert model[kind] == part
    assert raw_id_of(model) == raw
    # Tolerant readers: only rawId, or only the kind-specific part (with or without kind).
    assert raw_id_of({"rawId": raw}) == raw
    assert raw_id_of({kind: part}) == raw
    assert raw_id_of({"kind": kind, kind: part}) == raw
    assert raw_id_of({"rawId": "", kind: part}) == raw


def test_identifier_matches_sdk_models():
    from azure.communication.callautomation import (
        CommunicationUserIdentifier,
        MicrosoftTeamsAppIdentifier,
        MicrosoftTeamsUserIdentifier,
        PhoneNumberIdentifier,
    )
    from azure.communication.callautomation._utils import serialize_identifier

    for identifier in (
        PhoneNumberIdentifier("+14255550100"),
        CommunicationUserIdentifier("8:acs:res_user-1"),
        MicrosoftTeamsUserIdentifier("11111111-2222-3333-4444-555555555555"),
        MicrosoftTeamsAppIdentifier("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
    ):
        model = serialize_identifier(identifier).serialize()
        assert raw_id_of(model) == identifier.raw_id
        assert raw_id_of({k: v for k, v in model.items() if k != "rawId"}) == identifier.raw_id
        ours = model_of(identifier.raw_id)
        (kind,) = set(model) - {"rawId", "kind"}
        assert ours["kind"] == kind
        for key, value in model[kind].items():
            # The SDK writes its cloud enum in capitals; the service (and the simulator) in lower case.
            assert str(ours[kind][key]).lower() == str(value).lower(), (kind, key)


def test_identifier_unknown_kind_model():
    assert model_of("99:whatever") == {"rawId": "99:whatever", "kind": "unknown"}
    assert raw_id_of(model_of("99:whatever")) == "99:whatever"


@pytest.mark.parametrize(
    "model",
    [
        "4:+1425",
        None,
        [],
        {},
        {"rawId": ""},
        {"kind": "phoneNumber"},
        {"phoneNumber": {}},
        {"phoneNumber": "+1425"},
        {"communicationUser": {"id": ""}},
        {"microsoftTeamsUser": {}},
        {"microsoftTeamsApp": {"appId": None}},
    ],
)
def test_identifier_reader_rejects(model):
    with pytest.raises(IdentifierError):
        raw_id_of(model)


def test_normalize_and_is_phone():
    assert normalize("+14255550100") == "4:+14255550100"
    assert normalize("4:+14255550100") == "4:+14255550100"
    assert normalize("8:acs:x") == "8:acs:x"
    assert is_phone("4:+1") and not is_phone("8:acs:x")
