"""The readers of what ACS and Event Grid post (core/calls/events.py, the call records' reader), the depth-safe JSON
parse (core/platform/jsonsafe.py), the checks of targets (core/calls/identifiers.py), and the memory of replayable
event ids a call's state keeps (core/calls/state.py), without a host.

Every reader failure is an ``EventFormatError`` (acknowledged by the Event Grid triggers, 400 on the callback
endpoint): a malformed shape is never an AttributeError or a ValueError that Event Grid would redeliver 30 times.
Worked before f82571e: 17 of the 33 shapes of ``MALFORMED`` (marked ``before``): they raised AttributeError,
ValueError, TypeError or OverflowError (a 500, redelivered), or were taken as they came (an object for a context,
megabytes for an id, a negative chunk index).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from core.calls.callback_auth import LEEWAY_SECONDS, MAX_TOKEN_LIFETIME_SECONDS, AuthError, CallbackAuthenticator
from core.calls.dispatch import MAX_BODY_BYTES, handle_callback
from core.calls.events import (
    SIP_HEADERS,
    VOIP_HEADERS,
    EventFormatError,
    IncomingCall,
    RecordingFileStatus,
    aware_time,
    parse_call_event,
    raw_id,
    read_event,
)
from core.calls.identifiers import InvalidIdentifier, check_target, phone_number
from core.calls.state import HANDLED_LIMIT, REMEMBERED_CAPACITY, CallState, TooManyEvents
from core.platform.jsonsafe import JsonError, check_length, depth, parse_json
from core.records.events import CallRecordEvent

CALLER = {"rawId": "4:+14255550100", "phoneNumber": {"value": "+14255550100"}}
NUMBER = {"rawId": "4:+18005550123", "phoneNumber": {"value": "+18005550123"}}


def incoming(**data: Any) -> dict[str, Any]:
    return {"to": NUMBER, "from": CALLER, "incomingCallContext": "ctx", "serverCallId": "s", **data}


def recording(**chunk: Any) -> dict[str, Any]:
    base = {"documentId": "d", "index": 0, "contentLocation": "https://x/c", "metadataLocation": "https://x/m"}
    return {
        "recordingStorageInfo": {"recordingChunks": [{**base, **chunk}]},
        "recordingStartTime": "2026-01-02T03:04:05Z",
    }


def read_incoming(data: Any, event_time: Any = None) -> IncomingCall:
    return read_event(IncomingCall.parse, "e1", data, event_time)


def read_recording(data: Any) -> RecordingFileStatus:
    return read_event(RecordingFileStatus.parse, "e1", "call/s/recordingId/r", data)


def read_record(data: Any, event_time: Any = "2026-01-02T03:04:05Z", subject: Any = None) -> CallRecordEvent:
    return read_event(CallRecordEvent.parse, "e1", "Microsoft.Communication.CallEnded", event_time, data, subject)


# -- malformed shapes: each an EventFormatError (refused) or read tolerantly, never another exception -------------

HUGE = "x" * 2_000_000

# (name, reader, payload, refused: True = EventFormatError, False = read with the odd field taken as absent)
MALFORMED: list[tuple[str, Any, Any, bool]] = [
    ("IncomingCall customContext a string", read_incoming, incoming(customContext="sip=1"), False),  # before
    ("IncomingCall sipHeaders a list", read_incoming, incoming(customContext={"sipHeaders": ["a"]}), False),  # before
    ("IncomingCall voipHeaders a number", read_incoming, incoming(customContext={"voipHeaders": 5}), False),  # before
    ("IncomingCall data null", read_incoming, None, True),
    ("IncomingCall data a list", read_incoming, [incoming()], True),
    ("IncomingCall data a string", read_incoming, "incoming", True),
    ("IncomingCall from a number", read_incoming, incoming(**{"from": 14255550100}), True),
    ("IncomingCall rawId an object", read_incoming, incoming(to={"rawId": {"x": 1}}), True),  # before
    ("IncomingCall context a number", read_incoming, incoming(incomingCallContext=12), True),  # before
    ("IncomingCall context huge", read_incoming, incoming(incomingCallContext=HUGE), True),  # before
    ("IncomingCall rawId huge", read_incoming, incoming(to={"rawId": "4:+1" + "0" * 10_000}), True),  # before
    ("IncomingCall serverCallId an object", read_incoming, incoming(serverCallId={"a": 1}), False),
    ("IncomingCall display name huge", read_incoming, incoming(callerDisplayName=HUGE), False),
    ("RecordingFileStatus chunk a number", read_recording, {"recordingStorageInfo": {"recordingChunks": [1]}}, True),  # noqa: E501 before
    ("RecordingFileStatus chunks an object", read_recording, {"recordingStorageInfo": {"recordingChunks": {}}}, True),
    ("RecordingFileStatus storage info a list", read_recording, {"recordingStorageInfo": []}, True),
    ("RecordingFileStatus index 'abc'", read_recording, recording(index="abc"), True),  # before
    ("RecordingFileStatus index -1", read_recording, recording(index=-1), True),  # before
    ("RecordingFileStatus index an object", read_recording, recording(index={"n": 1}), True),  # before
    ("RecordingFileStatus index true", read_recording, recording(index=True), True),  # before
    ("RecordingFileStatus location a number", read_recording, recording(contentLocation=5), True),  # before
    ("RecordingFileStatus location huge", read_recording, recording(contentLocation="https://" + HUGE), True),  # before
    ("RecordingFileStatus bad start time", read_recording, {**recording(), "recordingStartTime": "yesterday"}, False),
    ("RecordingFileStatus start time an object", read_recording, {**recording(), "recordingStartTime": {}}, False),
    ("RecordingFileStatus duration a string", read_recording, {**recording(), "recordingDurationMs": "5"}, False),
    ("RecordingFileStatus data null", read_recording, None, True),
    ("CallRecord data a list", read_record, [], True),
    ("CallRecord serverCallId an object", read_record, {"serverCallId": {"a": 1}}, True),  # before
    ("CallRecord reason code a string", read_record, {"serverCallId": "s", "reason": {"code": "x"}}, False),
    ("CallRecord isTwoParty a string", read_record, {"serverCallId": "s", "isTwoParty": "yes"}, False),
    ("CallRecord subject a number", lambda d: read_record(d, subject=5), {}, True),  # before
    (
        "CallRecord time out of range",
        lambda d: read_record(d, "0001-01-01T00:00:00+01:00"),  # before
        {"serverCallId": "s"},
        False,
    ),
    ("CallRecord correlationId huge", read_record, {"serverCallId": "s", "correlationId": HUGE}, False),
]


@pytest.mark.parametrize(("name", "reader", "payload", "refused"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_shape_is_a_format_error_or_read_tolerantly(name, reader, payload, refused):
    if refused:
        with pytest.raises(EventFormatError):
            reader(payload)
    else:
        reader(payload)  # anything else than EventFormatError fails the test


def test_odd_fields_are_read_as_absent_and_the_rest_kept():
    call = read_incoming(incoming(customContext="sip=1", callerDisplayName=HUGE, serverCallId={"a": 1}))
    assert (call.sip_headers, call.voip_headers, call.server_call_id) == ({}, {}, "")
    assert call.caller_display_name == "" and call.to == "4:+18005550123"  # megabytes: absent
    assert read_incoming(incoming(callerDisplayName="n" * 1000)).caller_display_name == "n" * 256  # cut
    status = read_recording({**recording(), "recordingStartTime": "yesterday", "recordingDurationMs": "5"})
    assert status.start_time is None and status.duration_ms is None and status.chunks[0].content_location
    record = read_record({"serverCallId": "s", "reason": {"code": "x", "phrase": 5}, "isTwoParty": "yes"})
    assert record.fields == {"end_reason": {"code": None, "sub_code": None, "phrase": ""}}


def test_custom_headers_are_capped_as_acs_documents_them():
    sip = {f"X-MS-Custom-{n}": "v" for n in range(40)}
    sip["X-MS-Custom-long"] = "v" * 257
    voip = {"k" * 65: "v", "tier": "gold", "big": "v" * 1025, "n": 7}
    call = read_incoming(incoming(customContext={"sipHeaders": sip, "voipHeaders": voip}))
    assert len(call.sip_headers) == SIP_HEADERS[0] and "X-MS-Custom-long" not in call.sip_headers
    assert call.voip_headers == {"tier": "gold", "n": "7"}
    assert VOIP_HEADERS == (1000, 64, 1024)
    # The SDKs' shape (a list of key/value objects) is read too.
    listed = read_incoming(incoming(customContext={"sipHeaders": [{"key": "X-MS-Custom-a", "value": "1"}, 5]}))
    assert listed.sip_headers == {"X-MS-Custom-a": "1"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z"),
        ("2026-01-02T03:04:05.1234567+02:00", "2026-01-02T03:04:05.123456+02:00"),
        ("2026-01-02T03:04:05", "2026-01-02T03:04:05Z"),  # no offset: UTC
        (datetime(2026, 1, 2, tzinfo=UTC), "2026-01-02T00:00:00Z"),
        ("yesterday", None),
        ("0001-01-01T00:00:00+01:00", None),
        (12, None),
        ("2026-01-02T03:04:05Z" + " " * 100, None),
    ],
)
def test_times_are_aware_iso_strings_or_nothing(given, expected):
    assert aware_time(given) == expected
    if expected:
        assert datetime.fromisoformat(expected.replace("Z", "+00:00")).tzinfo is not None  # what the copier does


def test_a_recording_chunk_index_may_be_a_digit_string():
    assert read_recording(recording(index="3")).chunks[0].index == 3
    assert read_recording(recording(index=None)).chunks[0].index == 0


def test_read_event_turns_an_unforeseen_failure_into_a_format_error():
    def broken(data: Any) -> None:
        return data["x"].upper()

    with pytest.raises(EventFormatError, match="unreadable event"):
        read_event(broken, {"x": 5})


@pytest.mark.parametrize(
    "event",
    [
        {"id": {"a": 1}, "type": "Microsoft.Communication.PlayCompleted", "data": {"callConnectionId": "c"}},
        {"id": "x" * 129, "type": "Microsoft.Communication.PlayCompleted", "data": {"callConnectionId": "c"}},
        {"id": "e", "type": ["PlayCompleted"], "data": {"callConnectionId": "c"}},
        {"id": "e", "type": "PlayCompleted", "data": {"callConnectionId": "c" * 300}},
        {"id": "e", "type": "PlayCompleted", "data": "callConnectionId"},
    ],
)
def test_callback_events_of_odd_shapes_are_refused(event):
    with pytest.raises(EventFormatError):
        parse_call_event(event)


def test_a_callback_event_keeps_its_replay_window_and_drops_an_unreadable_time():
    event = parse_call_event(
        {"id": 7, "type": "PlayCompleted", "time": "soon", "data": {"callConnectionId": "c"}}, replayable_until=5.0
    )
    assert (event.id, event.time, event.replayable_until) == ("7", None, 5.0)


def test_raw_ids_are_read_only_when_plausible():
    assert raw_id({"rawId": "8:acs:a"}) == "8:acs:a"
    assert raw_id({"rawId": 5, "phoneNumber": {"value": "+14255550100"}}) == "4:+14255550100"
    assert raw_id({"rawId": "8:acs:\x00"}) is None and raw_id({"communicationUser": {"id": ["x"]}}) is None


# -- identifiers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "number"),
    [("+19005550100", "+19005550100"), ("4:+19005550100", "+19005550100"), ("8:acs:agent", None), ("28:orgid:b", None)],
)
def test_a_phone_target_gives_its_number_in_either_spelling(target, number):
    assert phone_number(target) == number
    assert check_target(target) == target


@pytest.mark.parametrize(
    "target", ["4:+1 900 555", "4:19005550100", "4:+1900555010012345", "4:abc", "+1-900", "19005550100", "4:", "+"]
)
def test_a_phone_target_that_is_no_e164_number_is_refused(target):
    with pytest.raises(InvalidIdentifier):
        phone_number(target)
    with pytest.raises(InvalidIdentifier):
        check_target(target)


@pytest.mark.parametrize("target", ["", "agent", "8:acs:a/b", "8:acs:a b", "8:acs:\x07", "x" * 300, "a:b"])
def test_a_target_that_is_no_raw_id_is_refused(target):
    with pytest.raises(InvalidIdentifier):
        check_target(target)


# -- JSON ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [33, 1_000, 100_000])
def test_deeply_nested_json_is_a_400_never_a_recursion_error(levels):
    for body in (b"[" * levels + b"]" * levels, b'{"a":' * levels + b"1" + b"}" * levels, b"[" * levels):
        with pytest.raises(JsonError) as caught:
            parse_json(body)
        assert caught.value.status == 400


def test_json_within_the_depth_and_size_is_parsed():
    body = json.dumps({"a": [[{"b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]]}).encode()
    assert parse_json(body)["a"][0][0]["b"].startswith("[")
    assert depth([[[1]]]) == 3 and depth(1) == 0
    with pytest.raises(JsonError) as caught:
        parse_json(b"[1]", max_bytes=2)
    assert caught.value.status == 413


@pytest.mark.parametrize(("value", "status"), [(str(MAX_BODY_BYTES + 1), 413), ("12abc", 400), ("-1", 400)])
def test_a_declared_length_is_checked_before_the_body(value, status):
    with pytest.raises(JsonError) as caught:
        check_length({"Content-Length": value}, MAX_BODY_BYTES)
    assert caught.value.status == status
    check_length({"content-length": str(MAX_BODY_BYTES)}, MAX_BODY_BYTES)
    check_length({}, MAX_BODY_BYTES)


def test_a_chunked_body_is_refused_with_411_as_the_host_would_drop_it():
    # The Functions host passes no body of a request without Content-Length (Azure/azure-functions-host#7930):
    # a chunked callback or control API request is refused with the reason, not parsed as an empty body.
    for headers in ({"Transfer-Encoding": "chunked"}, {"transfer-encoding": "gzip, Chunked"}):
        with pytest.raises(JsonError) as caught:
            check_length(headers, MAX_BODY_BYTES)
        assert caught.value.status == 411 and "Content-Length" in caught.value.reason
    check_length({"Transfer-Encoding": "chunked", "Content-Length": "10"}, MAX_BODY_BYTES)  # a length wins


def test_the_callback_endpoint_refuses_a_declared_oversized_body_without_reading_it():
    """Worked before f82571e: the body was read (and measured) whatever the request declared."""
    read: list[bool] = []

    def body() -> bytes:
        read.append(True)
        return b"[]"

    headers = {"Content-Length": str(MAX_BODY_BYTES + 1), "Content-Type": "application/json"}
    reply = handle_callback("ref", "sig", headers, body, services=None)
    assert reply.status == 413 and read == []


# -- the memory of replayable event ids -----------------------------------------------------------------------------


def test_an_id_is_remembered_until_its_token_expires_whatever_the_count():
    state = CallState(call_ref="r")
    now = time.time()
    state.mark_handled("captured", now + 360)
    for n in range(1_000):
        state.mark_handled(f"other-{n}", now + 360)
    assert state.remembers("captured") and len(state.handled) == HANDLED_LIMIT
    assert len(state.remembered) == (1_001 - HANDLED_LIMIT) * 12
    # Expired ones are forgotten once pushed out of the latest HANDLED_LIMIT.
    old = CallState(call_ref="r")
    old.mark_handled("gone", now - 1)
    for n in range(HANDLED_LIMIT):
        old.mark_handled(f"other-{n}", now + 360)
    assert not old.remembers("gone") and old.remembered == b""


def test_a_later_token_extends_the_memory_and_a_row_from_before_keeps_its_ids():
    state = CallState(call_ref="r")
    now = time.time()
    state.mark_handled("e", now + 10)
    assert state.remember("e", now + 400) is True and state.remember("e", now + 300) is False
    for n in range(HANDLED_LIMIT + 5):
        state.mark_handled(f"o{n}", now + 10)
    assert state.remember("e", now + 500) is True and state.remembers("e")
    legacy = CallState.model_validate_json(json.dumps({"call_ref": "r", "handled": ["a", "b"]}))
    assert legacy.handled_until == [0, 0] and legacy.remembers("a")
    assert "remembered" not in legacy.model_dump_json()


def test_a_full_memory_refuses_a_new_event_and_forgets_nothing():
    state = CallState(call_ref="r")
    until = time.time() + 360
    state.remembered = b"".join(
        n.to_bytes(8, "little") + int(until).to_bytes(4, "little") for n in range(REMEMBERED_CAPACITY)
    )
    state.handled = [f"h{n}" for n in range(HANDLED_LIMIT)]
    state.handled_until = [int(until)] * HANDLED_LIMIT
    with pytest.raises(TooManyEvents):
        state.mark_handled("one-more", until)
    assert "one-more" not in state.handled and state.remembers("h0")


# -- tokens -------------------------------------------------------------------------------------------------------


def test_a_token_valid_for_longer_than_the_cap_is_refused_and_verify_says_until_when_to_remember(monkeypatch):
    auth = CallbackAuthenticator(openid_config_url="x", issuer="i", audience="a", secret=b"k")
    claims = {"exp": int(time.time()) + 300}
    monkeypatch.setattr(auth, "verify_call_token", lambda call_ref, sig: None)

    class Keys:
        def get_signing_key_from_jwt(self, token: str) -> Any:
            return type("K", (), {"key": "k"})()

    import jwt

    monkeypatch.setattr(auth, "_keys", lambda: Keys())
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: dict(claims))
    assert auth.verify("Bearer t", "ref", "sig") == claims["exp"] + LEEWAY_SECONDS + 1
    claims["exp"] = int(time.time()) + MAX_TOKEN_LIFETIME_SECONDS + LEEWAY_SECONDS + 10
    with pytest.raises(AuthError, match="longer than"):
        auth.verify("Bearer t", "ref", "sig")
    claims["exp"] = "123"
    with pytest.raises(AuthError, match="not a number"):
        auth.verify("Bearer t", "ref", "sig")
