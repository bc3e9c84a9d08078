"""Bad input at volume, end to end: the control API fuzzed from its own OpenAPI document (schemathesis,
valid and invalid requests) and by hand-written strategies (malformed bodies, wrong types, odd ids), and
the callback endpoint fuzzed with generated CloudEvents (hypothesis).

Properties: no 5xx and no crash (the host still serves); a refused request (4xx) writes no state: the
app's tables hold no new row after it. Example counts are bounded for ``make test``; set
``FUZZ_EXAMPLES`` (examples per test, default 40) for a larger, randomized run, e.g.
``FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/e2e/test_bad_input.py``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.data.tables import TableServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.calls.events import EXTRA_WEBHOOK_EVENTS, WEBHOOK_EVENTS
from simulator.engine import Config
from simulator.runner import SimulatorThread
from tests.e2e.conftest import AppStack
from tools.apphost import start_app

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written to the work tree
    derandomize="FUZZ_EXAMPLES" not in os.environ,  # make test: the same examples every run
    suppress_health_check=list(HealthCheck),
)
TABLES = {
    "STATE_TABLE": "fuzzstate",
    "EVENTS_TABLE": "fuzzevents",
    "OUTBOUND_TABLE": "fuzzoutbound",
    "RECORDS_TABLE": "fuzzrecords",
}


class Fuzzed(AppStack):
    """The stack, a plain HTTP session, and the app's tables (for "no state written")."""

    def __init__(self, sim: Any, app: Any, connection_string: str) -> None:
        super().__init__(sim, app)
        self.http = requests.Session()
        self.http.trust_env = False
        self.tables = TableServiceClient.from_connection_string(connection_string)

    def rows(self, setting: str) -> dict[tuple[str, str], dict[str, Any]]:
        try:
            table = self.tables.get_table_client(TABLES[setting])
            return {(e["PartitionKey"], e["RowKey"]): e for e in table.list_entities()}
        except Exception:  # not created yet
            return {}

    def keys(self) -> dict[str, set[tuple[str, str]]]:
        return {setting: set(self.rows(setting)) for setting in ("STATE_TABLE", "OUTBOUND_TABLE", "EVENTS_TABLE")}

    def handled(self, ids: set[str]) -> list[str]:
        """Which of these event ids a call's state counts as handled (or holds a lease on)."""
        found = []
        for (_, rk), e in self.rows("STATE_TABLE").items():
            if rk == "state":
                state = json.loads(e["data"])
                found += [i for i in ids if i in state.get("handled", []) or i in state.get("leases", {})]
        return found

    def new_rows(self, before: dict[str, set[tuple[str, str]]]) -> list[str]:
        """Rows written since ``before`` that a refused request could have written. Rows the app writes on its own
        meanwhile are left out: events of calls placed earlier (the events table), and the calls a campaign places
        as earlier calls end (their state names the campaign)."""
        after = self.keys()
        new = [f"{s}:{k}" for s in ("OUTBOUND_TABLE",) for k in after[s] - before[s]]
        added = after["STATE_TABLE"] - before["STATE_TABLE"]
        if added:
            rows = self.rows("STATE_TABLE")
            campaign_calls = {
                pk for (pk, rk), e in rows.items() if rk == "state" and json.loads(e["data"]).get("campaign")
            }
            for pk, rk in added:
                ref = rows.get((pk, rk), {}).get("callRef", pk)
                if ref not in campaign_calls:
                    new.append(f"STATE_TABLE:{(pk, rk)}")
        return new

    def alive(self) -> None:
        assert self.app.process.poll() is None, "the host died:\n" + self.app.logs()[-3000:]
        assert self.http.get(self.app.api + "/health", timeout=10).status_code in (200, 503)


@pytest.fixture(scope="module")
def fuzzed(azurite: Any) -> Iterator[Fuzzed]:
    with SimulatorThread(config=Config()) as sim:
        app = start_app(sim, azurite.connection_string, **TABLES)
        try:
            yield Fuzzed(sim, app, azurite.connection_string)
        finally:
            app.stop()


def server_errors(logs: str) -> list[str]:
    return [line for line in logs.splitlines() if " ERROR " in line][:5]


# -- the control API, from its OpenAPI document ------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_control_api_fuzzed_from_its_openapi_document(fuzzed, mode):
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(fuzzed.app.api + "/openapi.json")
    headers = {"x-functions-key": fuzzed.app.function_key}
    seen: dict[int, int] = {}

    @FUZZ
    @given(case=schema.as_strategy(generation_mode=GenerationMode(mode)))
    def check(case: Any) -> None:
        before = fuzzed.keys()
        response = case.call(base_url=fuzzed.app.base_url, session=fuzzed.http, headers=headers, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        where = f"{case.operation.label} -> {response.status_code} {response.text[:300]}\n{case.as_curl_command()}"
        assert response.status_code < 500, where + "\n" + "\n".join(server_errors(fuzzed.app.logs()))
        if response.status_code >= 400:
            assert not fuzzed.new_rows(before), f"a refused request wrote state: {fuzzed.new_rows(before)}\n{where}"
            content_type = (response.headers.get("content-type") or response.headers.get("Content-Type") or [""])[0]
            if response.status_code != 401 and content_type.startswith("application/json"):
                assert "error" in json.loads(response.text), where  # the reason, for the caller

    check()
    fuzzed.alive()
    assert any(400 <= code < 500 for code in seen), seen  # some requests were refused, so the property was tried


# -- the control API, by hand: what a schema does not describe ---------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
ODD_SEGMENT = ODD_TEXT.filter(bool).map(lambda s: urllib.parse.quote(s, safe=""))
ROUTES = st.sampled_from(
    [
        ("POST", "calls"),
        ("POST", "connections"),
        ("POST", "campaigns"),
        ("POST", "masking"),
        ("GET", "records"),
        ("GET", "calls/{id}"),
        ("GET", "calls/{id}/participants"),
        ("GET", "calls/{id}/participants/{id}"),
        ("POST", "calls/{id}/{action}"),
        ("GET", "campaigns/{id}"),
        ("GET", "records/{id}"),
    ]
)
ACTIONS = st.sampled_from(
    ["play", "recognize", "transfer", "add-participant", "mute", "hold", "send-dtmf", "start-recording",
     "stop-recording", "terminate", "hang-up", "cancel-media", "no-such-action"]
)
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.just(b""),
    st.just(b"{"),
    st.just(b"\xff\xfe"),
    st.just(b"null"),
    st.just(json.dumps({"targets": [{"to": "8:acs:x/y#z"}]}).encode()),
    st.just(json.dumps({"numbers": ["+14255550100"] * 3, "caller_id": "+14255550000", "concurrency": 0}).encode()),
)


@pytest.mark.timeout(600)
def test_the_control_api_refuses_malformed_requests_without_writing(fuzzed):
    @FUZZ
    @given(
        route=ROUTES,
        ids=st.lists(ODD_SEGMENT, min_size=2, max_size=2),
        action=ACTIONS,
        body=BODIES,
        content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]),
        limit=st.one_of(st.none(), ODD_TEXT),
    )
    def check(route, ids, action, body, content_type, limit):
        method, template = route
        path = template.replace("{action}", action).replace("{id}", ids[0], 1).replace("{id}", ids[1])
        headers = {"x-functions-key": fuzzed.app.function_key}
        if content_type:
            headers["Content-Type"] = content_type
        params = {"limit": limit} if limit is not None and template == "records" else None
        before = fuzzed.keys()
        response = fuzzed.http.request(
            method, f"{fuzzed.app.api}/{path}", data=body if method == "POST" else None, headers=headers,
            params=params, timeout=30,
        )
        where = f"{method} /api/{path} {body[:120]!r} -> {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where + "\n" + "\n".join(server_errors(fuzzed.app.logs()))
        if response.status_code >= 400:
            assert not fuzzed.new_rows(before), f"a refused request wrote state: {fuzzed.new_rows(before)}\n{where}"

    check()
    fuzzed.alive()


def test_a_call_the_service_refuses_leaves_no_state(fuzzed):
    """ACS refuses to place or connect the call (here: it wants an https callback URL): the app answers with the
    service's 400, and the state it wrote ahead of the request is gone."""
    # ``connect`` joins only calls the app knows: Event Grid tells it about this one first (its CallStarted).
    told = {
        "id": str(uuid.uuid4()),
        "topic": fuzzed.sim.sim.config.topic,
        "subject": "call/some-call",
        "eventType": "Microsoft.Communication.CallStarted",
        "eventTime": "2026-11-27T10:00:00Z",
        "data": {"serverCallId": "some-call", "correlationId": "c"},
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }
    headers = {"Content-Type": "application/json", "aeg-event-type": "Notification"}
    told_status = fuzzed.http.post(fuzzed.app.eventgrid_url("call_records"), json=[told], headers=headers, timeout=30)
    assert told_status.status_code in (200, 202), told_status.text
    config = fuzzed.sim.sim.config
    config.require_https_callbacks = True
    try:
        for path, request in (
            ("calls", {"targets": [{"to": "8:acs:someone"}], "flow": "customer_service"}),
            ("connections", {"server_call_id": "some-call", "flow": "customer_service"}),
        ):
            before = fuzzed.keys()
            status, body = fuzzed.app.call_api("POST", path, request)
            assert status == 400 and "refused" in body["error"], body
            assert not fuzzed.new_rows(before), (path, fuzzed.new_rows(before))
    finally:
        config.require_https_callbacks = False


def test_the_api_refuses_ids_no_service_would_take(fuzzed):
    for body in (
        {"targets": [{"to": "8:acs:a/b"}]},
        {"targets": [{"to": "nobody"}]},
        {"targets": [{"to": "8:acs:agent", "caller_id": "8:acs:not-a-number"}]},
    ):
        status, reply = fuzzed.app.call_api("POST", "calls", body)
        assert status == 400 and reply["fields"], (body, reply)
    status, reply = fuzzed.app.call_api(
        "POST", "masking", {"masked_number": "+14255550900", "party_a": "4:+1/425", "party_b": "+14255550901"}
    )
    assert status == 400 and reply["fields"][0]["field"] == "party_a", reply


# -- the callback endpoint ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_call(fuzzed: Fuzzed) -> dict[str, Any]:
    """A call parked in the menu (the caller stays silent a long time): the target of the generated events."""
    call = fuzzed.place(**{"from": "+14255550777", "script": [{"on": "recognize", "delay": 300, "hangup": True}]})
    fuzzed.wait_for(call["serverCallId"], "Recognize [main_menu#2]")
    answer = fuzzed.requests(call["serverCallId"], "AnswerCall")[0]
    return {"call": call, "callback": answer["body"]["callbackUri"], "ccid": fuzzed.connection_id(call["serverCallId"])}


EVENT_TYPES = st.sampled_from([*WEBHOOK_EVENTS, *EXTRA_WEBHOOK_EVENTS]).map(
    lambda t: "Microsoft.Communication." + t
) | st.text(max_size=30)
IDENTIFIER = st.one_of(
    st.fixed_dictionaries({"rawId": st.sampled_from(["4:+14255550777", "8:acs:agent", "4:+14255550100"]) | ODD_TEXT}),
    st.fixed_dictionaries({"phoneNumber": st.fixed_dictionaries({"value": ODD_TEXT})}),
    JSON,
)
CONTEXTS = st.sampled_from(["main_menu#2", "main_menu#1", "welcome#1", "sales#3", "api:play:x", "nowhere#999"])
DATA_FIELDS = {
    "operationContext": CONTEXTS | ODD_TEXT | JSON,
    "resultInformation": st.fixed_dictionaries(
        {"code": st.integers() | JSON, "subCode": st.integers() | JSON, "message": ODD_TEXT | JSON}
    )
    | JSON,
    "recognitionType": st.sampled_from(["dtmf", "choices", "speech"]) | JSON,
    "dtmfResult": st.fixed_dictionaries({"tones": st.lists(st.sampled_from(["one", "two", "zero", "asterisk"]) | JSON,
                                                           max_size=4)}) | JSON,
    "choiceResult": st.fixed_dictionaries({"label": st.sampled_from(["sales", "support", "operator"]) | JSON}) | JSON,
    "speechResult": st.fixed_dictionaries({"speech": ODD_TEXT | JSON}) | JSON,
    "participants": st.lists(st.fixed_dictionaries({"identifier": IDENTIFIER}) | JSON, max_size=3) | JSON,
    "participant": IDENTIFIER,
    "transferTarget": IDENTIFIER,
    "tone": st.sampled_from(["asterisk", "one"]) | JSON,
    "sequenceId": st.integers() | JSON,
    "recordingId": ODD_TEXT | JSON,
    "state": st.sampled_from(["active", "inactive"]) | JSON,
    "invitationId": ODD_TEXT | JSON,
    "serverCallId": ODD_TEXT | JSON,
    "correlationId": ODD_TEXT | JSON,
    "failedPlaySourceIndex": st.integers() | JSON,
}


def events(ccid: str) -> st.SearchStrategy[Any]:
    data = st.fixed_dictionaries(
        {"callConnectionId": st.just(ccid) | ODD_TEXT | JSON},
        optional=DATA_FIELDS,
    )
    event = st.fixed_dictionaries(
        {
            "id": st.uuids().map(str) | ODD_TEXT | JSON,
            "type": EVENT_TYPES | JSON,
            "data": data | JSON,
        },
        optional={
            "source": st.just(f"calling/callConnections/{ccid}") | ODD_TEXT,
            "specversion": st.just("1.0"),
            "time": st.just("2026-11-27T10:00:00Z") | ODD_TEXT | JSON,
            "subject": ODD_TEXT | JSON,
        },
    )
    return st.one_of(st.lists(event, min_size=0, max_size=3), event, JSON)


def event_ids(payload: Any) -> set[str]:
    return {str(e.get("id")) for e in (payload if isinstance(payload, list) else [payload]) if isinstance(e, dict)}


@pytest.mark.timeout(600)
def test_the_callback_endpoint_fuzzed_with_generated_events(fuzzed, live_call):
    signer = fuzzed.sim.sim.signer
    seen: dict[int, int] = {}

    @FUZZ
    @given(payload=events(live_call["ccid"]), raw=st.booleans(), junk=st.binary(max_size=64))
    def check(payload, raw, junk):
        body = junk if raw and junk else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + signer.token()}
        before, handled_before = fuzzed.keys(), fuzzed.handled(event_ids(payload))
        response = fuzzed.http.post(live_call["callback"], data=body, headers=headers, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        where = f"{body[:400]!r} -> {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where + "\n" + "\n".join(server_errors(fuzzed.app.logs()))
        if response.status_code >= 400:
            # The parked call's own events go on meanwhile: only rows of the refused request's events count.
            ids = event_ids(payload)
            new = fuzzed.new_rows(before)
            new += [f"EVENTS_TABLE:{k}" for k in fuzzed.keys()["EVENTS_TABLE"] - before["EVENTS_TABLE"] if k[1] in ids]
            new += [f"handled:{i}" for i in set(fuzzed.handled(ids)) - set(handled_before)]
            assert not new, f"a refused callback wrote state: {new}\n{where}"

    check()
    fuzzed.alive()
    assert 200 in seen and any(400 <= code < 500 for code in seen), seen


@pytest.mark.timeout(600)
def test_unauthenticated_callbacks_are_refused_and_write_nothing(fuzzed, live_call):
    signer = fuzzed.sim.sim.signer
    base = live_call["callback"].split("?")[0]
    good_sig = live_call["callback"].split("sig=")[1]

    @FUZZ
    @given(
        token=st.sampled_from(["none", "garbage", "expired", "audience", "good"]),
        sig=st.sampled_from(["none", "garbage", "good"]) | ODD_SEGMENT,
        other_ref=st.booleans(),
        payload=events(live_call["ccid"]),
    )
    def check(token, sig, other_ref, payload):
        if token == "good" and sig == "good" and not other_ref:
            return  # authentic: the other test's business
        url = base.rsplit("/", 1)[0] + "/" + str(uuid.uuid4()) if other_ref else base
        if sig != "none":
            url += "?sig=" + {"garbage": "A" * 43, "good": good_sig}.get(sig, sig)
        headers = {"Content-Type": "application/json"}
        tokens = {
            "garbage": "x.y.z",
            "expired": signer.token(now=time.time() - 3600),
            "audience": signer.token(audience="someone-else"),
            "good": signer.token(),
        }
        if token != "none":
            headers["Authorization"] = "Bearer " + tokens[token]
        before, handled_before = fuzzed.keys(), fuzzed.handled(event_ids(payload))
        response = fuzzed.http.post(url, data=json.dumps(payload).encode(), headers=headers, timeout=30)
        assert response.status_code == 401, f"{token} {sig} {other_ref} -> {response.status_code} {response.text}"
        ids = event_ids(payload)
        assert not [k for k in fuzzed.keys()["EVENTS_TABLE"] - before["EVENTS_TABLE"] if k[1] in ids]
        assert not set(fuzzed.handled(ids)) - set(handled_before)
        assert not fuzzed.new_rows(before)

    check()
    fuzzed.alive()


def test_the_parked_call_was_not_disturbed_into_a_crash(fuzzed, live_call):
    """After all that, the app still answers its control API for the call and its state reads back."""
    status, body = fuzzed.app.call_api("GET", f"calls/{live_call['ccid']}")
    assert status == 200 and body["app"]["flow"] == "customer_service", body
