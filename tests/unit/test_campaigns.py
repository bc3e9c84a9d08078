"""Campaigns: claiming within the bound, results of ended calls, the row's compare-and-swap, and the
call-ended hook's idempotence, with an in-memory table and a fake Call Automation client."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from core.calls.executor import Executor
from core.calls.state import CallState, StateStore
from core.flows.model import Flow
from core.outbound import control
from core.outbound.campaigns import (
    Campaign,
    CampaignCall,
    CampaignNotFound,
    CampaignStore,
    _campaign,
    _entity,
    call_result,
    missing_vars,
)
from core.outbound.control import RequestError
from core.outbound.destinations import DestinationPolicy
from core.outbound.dial_cap import DialCap
from core.platform.settings import DialingSettings
from handlers import campaigns as handler

NOW = "2026-01-01T00:00:00+00:00"


def campaign(n: int = 5, concurrency: int = 2, **extra: Any) -> Campaign:
    return Campaign(
        id="c1",
        flow="outage_notice",
        caller_id="+18005550100",
        concurrency=concurrency,
        created_at=NOW,
        calls=[CampaignCall(number=f"+1425555000{i}") for i in range(n)],
        **extra,
    )


def ref(index: int) -> str:
    return f"ref-{index}"


# -- claiming and finishing -------------------------------------------------------------------------


def test_claim_takes_the_next_pending_numbers_up_to_the_bound() -> None:
    c = campaign()
    first = c.claim("start", NOW, "date", ref)
    assert [e.number for e in first] == ["+14255550000", "+14255550001"]
    assert [e.call_ref for e in first] == ["ref-0", "ref-1"] and all(e.claimed_by == "start" for e in first)
    assert c.live == 2 and c.peak == 2
    assert c.claim("start", NOW, "date", ref) == []  # no room left


def test_finishing_one_call_frees_one_slot_and_is_recorded_once() -> None:
    c = campaign()
    c.claim("start", NOW, "date", ref)
    assert c.finish("ref-0", "confirmed", "", {"notice": "confirmed"}, NOW)
    assert not c.finish("ref-0", "failed", "again", {}, NOW)  # a redelivery changes nothing
    assert c.entry("ref-0").status == "confirmed" and c.entry("ref-0").results == {"notice": "confirmed"}
    [next_one] = c.claim("ref-0", NOW, "date", ref)
    assert next_one.number == "+14255550002" and next_one.claimed_by == "ref-0"
    assert c.live == 2 and c.peak == 2
    assert not c.finish("someone-else", "answered", "", {}, NOW)


def test_a_campaign_is_done_when_every_number_has_a_final_status() -> None:
    c = campaign(n=2)
    c.claim("start", NOW, "date", ref)
    c.finish("ref-0", "no answer", "did not answer", {}, NOW)
    assert c.status == "running" and not c.finished_at
    c.finish("ref-1", "failed", "declined", {}, "later")
    assert c.status == "done" and c.finished_at == "later"
    shown = c.describe()
    assert shown["counts"] == {"no answer": 1, "failed": 1}
    assert shown["numbers"][1] == {
        "number": "+14255550001",
        "status": "failed",
        "detail": "declined",
        "results": {},
        "call_connection_id": None,
        "started_at": NOW,
        "ended_at": "later",
    }


# -- what an ended call means -----------------------------------------------------------------------


def state(**fields: Any) -> CallState:
    return CallState(call_ref="ref-0", campaign="c1", **fields)


@pytest.mark.parametrize(
    ("code", "expected"),
    [(408, ("no answer", "did not answer")), (603, ("failed", "declined")), (486, ("failed", "busy"))],
)
def test_a_call_that_never_connected(code: int, expected: tuple[str, str]) -> None:
    ended = state(status="ended", outcome={"failed": "CreateCallFailed: x", "failed_code": code})
    assert call_result(ended, {}) == (*expected, {})


def test_an_unknown_failure_keeps_its_message() -> None:
    ended = state(status="ended", outcome={"failed": "CreateCallFailed: odd", "failed_code": 500})
    assert call_result(ended, {}) == ("failed", "CreateCallFailed: odd", {})


def test_a_connected_call_is_answered_or_confirmed_by_what_the_flow_stored() -> None:
    given = {"message": "Power is out."}
    listened = state(node="goodbye", vars={**given, "_announced": "x"}, outcome={"ended": "bye"})
    assert call_result(listened, given) == ("answered", "bye", {})
    confirmed = state(node="thanks", vars={**given, "notice": "confirmed"})
    assert call_result(confirmed, given) == ("confirmed", "", {"notice": "confirmed"})
    cancelled = state(node="cancelled", vars={"appointment": "cancelled"})
    assert call_result(cancelled, {}) == ("answered", "", {"appointment": "cancelled"})


def test_missing_vars_names_placeholders_nobody_fills() -> None:
    flow = Flow.model_validate(
        {
            "start": "a",
            "nodes": {
                "a": {"type": "play", "prompt": {"text": "Hi {name}, {message}"}, "next": "b"},
                "b": {
                    "type": "collect_digits",
                    "prompt": {"text": "Code?"},
                    "max_digits": 4,
                    "store_as": "code",
                    "next": "c",
                    "on_failure": "c",
                },
                "c": {"type": "transfer", "target": {"to": "{agent}", "caller_id": "{line}"}, "on_failure": "d"},
                "d": {"type": "hangup", "prompt": {"text": "You entered {code}. {bye}"}},
            },
        }
    )
    assert missing_vars(flow, {"name": "Ada", "line": "+1"}) == ["agent", "bye", "message"]


# -- the row ----------------------------------------------------------------------------------------


class Entity(dict):
    def __init__(self, data: dict[str, Any], etag: str) -> None:
        super().__init__(data)
        self.metadata = {"etag": etag}


class FakeTable:
    """Enough of azure.data.tables.TableClient for the stores: entities with ETags."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        self.etags = itertools.count(1)
        self.conflicts = 0

    def create_table(self) -> None:
        pass

    def create_entity(self, entity: dict[str, Any]) -> None:
        key = (entity["PartitionKey"], entity["RowKey"])
        if key in self.rows:
            raise ResourceExistsError("exists")
        self.rows[key] = (dict(entity), str(next(self.etags)))

    def get_entity(self, partition_key: str, row_key: str) -> Entity:
        if (partition_key, row_key) not in self.rows:
            raise ResourceNotFoundError("no such entity")
        data, etag = self.rows[(partition_key, row_key)]
        return Entity(data, etag)

    def update_entity(self, entity: dict[str, Any], mode: str, etag: str, match_condition: Any) -> dict[str, str]:
        key = (entity["PartitionKey"], entity["RowKey"])
        if key not in self.rows:
            raise ResourceNotFoundError("gone")
        if self.rows[key][1] != etag:
            self.conflicts += 1
            raise ResourceModifiedError("etag")
        new = str(next(self.etags))
        self.rows[key] = (dict(entity), new)
        return {"etag": new}

    def upsert_entity(self, entity: dict[str, Any]) -> None:
        self.rows[(entity["PartitionKey"], entity["RowKey"])] = (dict(entity), str(next(self.etags)))

    def delete_entity(self, partition_key: str, row_key: str, etag: str | None = None, **_: Any) -> None:
        key = (partition_key, row_key)
        if key not in self.rows:
            raise ResourceNotFoundError("gone")
        if etag is not None and self.rows[key][1] != etag:
            self.conflicts += 1
            raise ResourceModifiedError("etag")
        del self.rows[key]


def test_a_large_campaign_is_split_over_several_properties_and_read_back() -> None:
    big = campaign(n=1000, concurrency=50)
    big.claim("start", NOW, "Thu, 01 Jan 2026 00:00:00 GMT", lambda i: f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd")
    entity = _entity(big)
    assert len([k for k in entity if k.startswith("data")]) > 2
    assert all(len(v) <= 30_000 for k, v in entity.items() if k.startswith("data"))
    assert _campaign(entity) == big


def test_two_calls_ending_together_never_exceed_the_bound_nor_claim_a_number_twice() -> None:
    table = FakeTable()
    store = CampaignStore(table)
    store.create(campaign(n=6, concurrency=2))
    store.mutate("c1", lambda c: c.claim("start", NOW, "date", ref))

    def ends(call_ref: str, inner: Any = None):  # noqa: ANN202
        def change(c: Campaign) -> list[CampaignCall]:
            if inner is not None:
                inner()  # the other call's end is written between this one's read and write
            c.finish(call_ref, "answered", "", {}, NOW)
            return c.claim(call_ref, NOW, "date", ref)

        return change

    seen: list[list[str]] = []

    def other() -> None:
        if not seen:
            _, claimed = store.mutate("c1", ends("ref-1"))
            seen.append([e.number for e in claimed])

    result, claimed = store.mutate("c1", ends("ref-0", other))
    assert table.conflicts == 1  # the first write lost the race, read again and redid its change
    assert seen == [["+14255550002"]] and [e.number for e in claimed] == ["+14255550003"]
    assert result.live == 2 and result.peak == 2
    assert [e.status for e in result.calls] == ["answered", "answered", "calling", "calling", "pending", "pending"]


# -- the hook and the placing, with a fake service ---------------------------------------------------


class FakeClient:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.fail: dict[str, Exception] = {}

    def create_call(self, target: Any, callback_url: str, **kwargs: Any) -> Any:
        number = target.raw_id[2:]
        if number in self.fail:
            raise self.fail.pop(number)
        self.created.append({"number": number, "callback": callback_url, **kwargs})
        return SimpleNamespace(call_connection_id=f"ccid-{number}")


def http_error(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"refused with {status}")
    error.status_code = status
    return error


@pytest.fixture
def world() -> SimpleNamespace:
    outbound = CampaignStore(FakeTable())
    cap = DialCap(FakeTable(), 1000)
    client = FakeClient()
    runtime = SimpleNamespace(
        settings=SimpleNamespace(
            flows={"outage_notice": Flow.model_validate(
                {"start": "a", "nodes": {"a": {"type": "hangup", "prompt": {"text": "{message}"}}}}
            )},
            cognitive_services_endpoint="https://ai.example",
            dialing=DialingSettings(),
        ),
        store=StateStore(FakeTable()),
        campaigns=outbound,
        dial_cap=cap,
        executor=Executor(client),  # type: ignore[arg-type]
        callback_url=lambda call_ref: f"https://app/api/callbacks/{call_ref}",
    )
    return SimpleNamespace(runtime=runtime, client=client, campaigns=outbound, cap=cap)


def start(world: SimpleNamespace, numbers: list[str], concurrency: int = 2, **extra: Any) -> dict[str, Any]:
    req = control.StartCampaign(
        id="c1", numbers=numbers, caller_id="+18005550100", vars={"message": "Out."}, concurrency=concurrency, **extra
    )
    return handler.start_campaign(req, world.runtime)


def end(world: SimpleNamespace, number: str, **fields: Any) -> None:
    campaign, _ = world.campaigns.get("c1")
    entry = next(e for e in campaign.calls if e.number == number)
    call, _ = world.runtime.store.get(entry.call_ref)
    call.status = "ended"
    for name, value in fields.items():
        setattr(call, name, value)
    handler.campaign_call_ended(call, world.runtime)


NUMBERS = [f"+1425555010{i}" for i in range(4)]


def test_start_places_the_first_calls_with_their_state_and_repeatability(world: SimpleNamespace) -> None:
    shown = start(world, NUMBERS + [NUMBERS[0]])
    assert [n["number"] for n in shown["numbers"]] == NUMBERS  # the repeat is dropped
    assert [c["number"] for c in world.client.created] == NUMBERS[:2]
    first = world.client.created[0]
    assert first["source_caller_id_number"].raw_id == "4:+18005550100"
    assert first["headers"]["Repeatability-Request-ID"] and first["headers"]["Repeatability-First-Sent"]
    campaign, _ = world.campaigns.get("c1")
    entry = campaign.calls[0]
    assert entry.call_connection_id == "ccid-" + NUMBERS[0]
    call, _ = world.runtime.store.get(entry.call_ref)
    assert call.campaign == "c1" and call.flow == "outage_notice" and call.vars == {"message": "Out."}
    assert first["callback"].endswith(entry.call_ref)


def test_each_end_places_the_next_call_and_a_redelivery_places_nothing(world: SimpleNamespace) -> None:
    start(world, NUMBERS)
    end(world, NUMBERS[0], node="thanks", vars={"message": "Out.", "notice": "confirmed"})
    assert [c["number"] for c in world.client.created] == NUMBERS[:3]
    end(world, NUMBERS[0], node="thanks", vars={"message": "Out.", "notice": "confirmed"})  # redelivered
    assert [c["number"] for c in world.client.created] == NUMBERS[:3]
    end(world, NUMBERS[1], outcome={"failed": "CreateCallFailed: x", "failed_code": 408})
    end(world, NUMBERS[2], node="goodbye")
    end(world, NUMBERS[3], node="goodbye")
    shown = handler.get_campaign("c1", world.runtime)
    assert [c["number"] for c in world.client.created] == NUMBERS
    assert shown["status"] == "done" and shown["peak"] == 2
    assert [n["status"] for n in shown["numbers"]] == ["confirmed", "no answer", "answered", "answered"]


def test_a_number_the_service_refuses_fails_and_frees_its_slot(world: SimpleNamespace) -> None:
    world.client.fail[NUMBERS[1]] = http_error(400)
    shown = start(world, NUMBERS)
    assert [c["number"] for c in world.client.created] == [NUMBERS[0], NUMBERS[2]]
    assert shown["numbers"][1]["status"] == "failed" and "refused with 400" in shown["numbers"][1]["detail"]
    assert shown["live"] == 2


def test_a_transient_failure_is_retried_by_redelivery_without_a_second_call(world: SimpleNamespace) -> None:
    start(world, NUMBERS)
    world.client.fail[NUMBERS[2]] = http_error(503)
    with pytest.raises(HttpResponseError):
        end(world, NUMBERS[0], node="goodbye")  # the event fails: the service delivers it again
    assert [c["number"] for c in world.client.created] == NUMBERS[:2]
    end(world, NUMBERS[0], node="goodbye")
    assert [c["number"] for c in world.client.created] == NUMBERS[:3]
    end(world, NUMBERS[0], node="goodbye")
    assert [c["number"] for c in world.client.created] == NUMBERS[:3]
    campaign, _ = world.campaigns.get("c1")
    assert campaign.live == 2


def test_a_repeated_start_with_the_same_id_places_only_what_is_unplaced(world: SimpleNamespace) -> None:
    world.client.fail[NUMBERS[1]] = http_error(503)
    with pytest.raises(HttpResponseError):
        start(world, NUMBERS)
    assert [c["number"] for c in world.client.created] == [NUMBERS[0]]
    start(world, NUMBERS)
    assert [c["number"] for c in world.client.created] == NUMBERS[:2]
    with pytest.raises(RequestError) as refused:
        start(world, NUMBERS[:1])
    assert refused.value.status == 409


def test_a_call_a_failed_start_left_unplaced_is_placed_by_the_next_calls_end(world: SimpleNamespace) -> None:
    world.client.fail[NUMBERS[1]] = http_error(503)
    with pytest.raises(HttpResponseError):
        start(world, NUMBERS)  # the client never retries
    end(world, NUMBERS[0], node="goodbye")
    assert [c["number"] for c in world.client.created] == NUMBERS[:3]
    campaign, _ = world.campaigns.get("c1")
    assert campaign.live == 2 and all(e.call_connection_id for e in campaign.calls[1:3])


def test_calls_outside_campaigns_are_left_alone(world: SimpleNamespace) -> None:
    handler.campaign_call_ended(CallState(call_ref="x", status="ended"), world.runtime)
    handler.campaign_call_ended(CallState(call_ref="x", status="ended", campaign="gone"), world.runtime)
    assert world.client.created == []


def test_start_refuses_an_unknown_flow_and_missing_variables(world: SimpleNamespace) -> None:
    with pytest.raises(RequestError) as unknown:
        start(world, NUMBERS, flow="nope")
    assert unknown.value.fields[0]["field"] == "flow"
    req = control.StartCampaign(numbers=NUMBERS, caller_id="+18005550100")
    with pytest.raises(RequestError) as missing:
        handler.start_campaign(req, world.runtime)
    assert missing.value.fields == [{"field": "vars.message", "message": "flow outage_notice says {message}"}]


def test_request_validation_names_the_field() -> None:
    def fields(body: dict[str, Any]) -> list[str]:
        with pytest.raises(RequestError) as caught:
            control.parse(control.StartCampaign, __import__("json").dumps(body).encode())
        return [f["field"] for f in caught.value.fields]

    assert fields({"numbers": []}) == ["numbers"]
    assert fields({"numbers": ["+14255550100"], "caller_id": "+18005550100", "concurrency": 0}) == ["concurrency"]
    assert fields({"numbers": ["+1425"], "caller_id": "+18005550100"}) == ["numbers.0"]  # E.164: 7 to 15 digits
    assert fields({"numbers": ["4:1900555"], "caller_id": "+18005550100"}) == ["numbers.0"]  # 4: is a phone
    assert fields({"numbers": ["12"], "caller_id": "+18005550100"}) == ["numbers.0"]
    assert fields({"numbers": ["+14255550100"]}) == ["(body)"]  # caller_id is required for phones
    assert fields({"numbers": ["8:acs:x"], "id": "no spaces"}) == ["id"]
    assert control.parse(control.StartCampaign, b'{"numbers": ["8:acs:x"]}').flow == "outage_notice"


# -- toll fraud: the dialing policy and the daily cap -------------------------------------------------


def test_a_campaign_with_a_refused_number_is_refused_whole_and_places_nothing(world: SimpleNamespace) -> None:
    with pytest.raises(RequestError) as refused:
        start(world, [NUMBERS[0], "+19005550100", "4:+18095550100", NUMBERS[1]])
    assert refused.value.status == 403
    assert [f["field"] for f in refused.value.fields] == ["numbers.1", "numbers.2"]
    assert "DIAL_DENIED_PREFIXES" in refused.value.fields[0]["message"]
    assert world.client.created == [] and world.cap.used() == 0
    with pytest.raises(CampaignNotFound):
        world.campaigns.get("c1")


def test_a_number_the_policy_refuses_at_dial_time_fails_and_frees_its_slot(world: SimpleNamespace) -> None:
    start(world, NUMBERS)
    # The settings changed since the request (a new deployment): the next number is refused when dialed.
    world.runtime.settings.dialing = DialingSettings(policy=DestinationPolicy(allowed=("+1",), denied=(NUMBERS[2],)))
    end(world, NUMBERS[0], node="goodbye")
    shown = handler.get_campaign("c1", world.runtime)
    assert [c["number"] for c in world.client.created] == [NUMBERS[0], NUMBERS[1], NUMBERS[3]]
    assert shown["numbers"][2]["status"] == "failed" and "DIAL_DENIED_PREFIXES" in shown["numbers"][2]["detail"]


def test_the_daily_cap_holds_the_rest_of_a_campaign_until_it_is_requested_again(world: SimpleNamespace) -> None:
    world.cap.cap = 3
    start(world, NUMBERS)
    end(world, NUMBERS[0], node="goodbye")
    end(world, NUMBERS[1], node="goodbye")  # the fourth number would be the fourth call today
    assert [c["number"] for c in world.client.created] == NUMBERS[:3]
    shown = handler.get_campaign("c1", world.runtime)
    assert shown["numbers"][3]["status"] == "pending" and "DIAL_DAILY_CAP" in shown["numbers"][3]["detail"]
    end(world, NUMBERS[2], node="goodbye")
    shown = handler.get_campaign("c1", world.runtime)
    assert shown["status"] == "held" and "DIAL_DAILY_CAP" in shown["held"] and shown["live"] == 0
    with pytest.raises(RequestError) as capped:  # requested again while the cap holds: 429, nothing placed
        start(world, NUMBERS)
    assert capped.value.status == 429 and int(capped.value.headers["Retry-After"]) > 0
    world.cap.cap = 4  # the next day (or a higher cap): the same request places what waited
    shown = start(world, NUMBERS)
    assert [c["number"] for c in world.client.created] == NUMBERS
    assert shown["status"] == "running" and shown["held"] is None and shown["numbers"][3]["status"] == "calling"
    assert world.cap.used() == 4


def test_a_number_the_service_refuses_is_given_back_to_the_cap(world: SimpleNamespace) -> None:
    world.client.fail[NUMBERS[1]] = http_error(400)
    start(world, NUMBERS)
    assert world.cap.used() == 2  # three dialed, one refused by the service: two rang


def test_a_retried_placement_counts_once(world: SimpleNamespace) -> None:
    world.client.fail[NUMBERS[1]] = http_error(503)
    with pytest.raises(HttpResponseError):
        start(world, NUMBERS)
    start(world, NUMBERS)
    assert [c["number"] for c in world.client.created] == NUMBERS[:2] and world.cap.used() == 2


def test_a_retry_of_a_counted_number_goes_on_when_the_cap_is_reached_since(world: SimpleNamespace) -> None:
    world.cap.cap = 2
    world.client.fail[NUMBERS[1]] = http_error(503)  # the second number's placement fails (it may exist)
    with pytest.raises(HttpResponseError):
        start(world, NUMBERS)
    assert world.cap.used() == 2  # both counted: the cap is reached
    start(world, NUMBERS)  # the retry places the second number, already counted
    assert [c["number"] for c in world.client.created] == NUMBERS[:2] and world.cap.used() == 2
    campaign, _ = world.campaigns.get("c1")
    assert campaign.calls[1].status == "calling" and campaign.calls[1].call_connection_id


def test_acs_users_do_not_count_against_the_cap(world: SimpleNamespace) -> None:
    world.cap.cap = 0
    world.client.create_call = lambda target, url, **kw: SimpleNamespace(call_connection_id="ccid-" + target.raw_id)
    shown = handler.start_campaign(
        control.StartCampaign(id="c1", numbers=["8:acs:a", "8:acs:b"], vars={"message": "Out."}), world.runtime
    )
    assert [n["status"] for n in shown["numbers"]] == ["calling", "calling"] and world.cap.used() == 0


def test_variables_that_fill_a_target_with_a_refused_number_are_refused() -> None:
    runtime = SimpleNamespace(
        settings=SimpleNamespace(
            flows={"relay": Flow.model_validate(
                {"start": "t", "nodes": {"t": {"type": "transfer", "target": {"to": "{agent}"}, "on_failure": "b"},
                                         "b": {"type": "hangup"}}}
            )},
            dialing=DialingSettings(),
        )
    )
    from handlers.control import check_flow_targets

    check_flow_targets(runtime, "relay", {"agent": "+14255550100"})
    with pytest.raises(RequestError) as refused:
        check_flow_targets(runtime, "relay", {"agent": "+19005550100"})
    assert refused.value.status == 403 and refused.value.fields[0]["field"] == "vars"
