"""Number masking: the routing action ``mask``, what it decides for known and unknown callers, the
sessions' rows (one party, one peer per masked number) and the API's request model."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

from core.calls.routing import AnswerAction, CallFacts, MaskAction, RejectAction, RoutingRules, resolve_mask, route
from core.outbound import control
from core.outbound.control import RequestError
from core.outbound.masking import MaskingConflict, MaskingSession, MaskingStore, new_session, plain
from core.platform.settings import DialingSettings, SettingsError, load
from handlers import masking as handler
from tests.unit.test_campaigns import FakeTable
from tests.unit.test_settings import base_env

MASKED, BUYER, SELLER = "+18005550177", "+14255550501", "+14255550502"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = RoutingRules.model_validate(
    {
        "rules": [{"name": "masked", "match": {"to": MASKED}, "action": {"type": "mask"}}],
        "default": {"type": "answer", "flow": "customer_service"},
    }
)


# -- routing --------------------------------------------------------------------------------------


def test_a_mask_rule_matches_the_masked_number_and_has_defaults() -> None:
    rule = route(RULES, CallFacts(to="4:" + MASKED, caller="4:" + BUYER, at=NOW))
    assert rule.name == "masked"
    assert rule.action == MaskAction(type="mask", flow="number_masking", unknown_flow=None, reason="none")
    assert route(RULES, CallFacts(to="4:+18005550100", caller="4:" + BUYER, at=NOW)).name == "default"


def test_a_caller_in_a_session_is_answered_into_the_masking_flow_with_the_peer() -> None:
    action, call_vars = resolve_mask(MaskAction(type="mask"), "4:" + MASKED, SELLER)
    assert action == AnswerAction(type="answer", flow="number_masking")
    assert call_vars == {"peer": SELLER, "masked_number": MASKED}


def test_an_unknown_caller_gets_the_polite_flow_or_is_rejected() -> None:
    polite = MaskAction(type="mask", unknown_flow="number_masking_unknown")
    assert resolve_mask(polite, "4:" + MASKED, None) == (
        AnswerAction(type="answer", flow="number_masking_unknown"),
        {"masked_number": MASKED},
    )
    strict = MaskAction(type="mask", reason="forbidden")
    assert resolve_mask(strict, "4:" + MASKED, None) == (RejectAction(type="reject", reason="forbidden"), {})


def test_a_mask_rule_is_validated() -> None:
    with pytest.raises(ValueError, match="reason"):
        RoutingRules.model_validate({"rules": [], "default": {"type": "mask", "reason": "maybe"}})
    with pytest.raises(ValueError, match="extra"):
        RoutingRules.model_validate({"rules": [], "default": {"type": "mask", "peer": "+1"}})


def masking_routing(**action: str) -> str:
    return json.dumps(
        {
            "rules": [{"name": "masked", "match": {"to": MASKED}, "action": {"type": "mask", **action}}],
            "default": {"type": "answer", "flow": "customer_service"},
        }
    )


def test_settings_name_a_mask_rules_missing_flows() -> None:
    with pytest.raises(SettingsError, match="rule 'masked' answers into unknown flow 'nope'"):
        load(base_env(ROUTING_RULES=masking_routing(unknown_flow="nope")))
    with pytest.raises(SettingsError, match="unknown flow 'number_masking'"):
        load(base_env(ROUTING_RULES=masking_routing(), FLOWS=json.dumps({"customer_service": _hangup()})))
    settings = load(base_env(ROUTING_RULES=masking_routing(unknown_flow="number_masking_unknown")))
    assert settings.routing.rules[0].action.flow == "number_masking"


def _hangup() -> dict[str, Any]:
    return {"start": "bye", "nodes": {"bye": {"type": "hangup"}}}


# -- sessions -------------------------------------------------------------------------------------


def test_a_session_knows_each_partys_peer_and_when_it_ends() -> None:
    session = new_session("s1", MASKED, "4:" + BUYER, SELLER, 60, NOW)
    assert (session.party_a, session.party_b) == (BUYER, SELLER)
    assert session.peer_of(BUYER) == SELLER and session.peer_of(SELLER) == BUYER and session.peer_of(MASKED) is None
    assert not session.expired(NOW + timedelta(minutes=59))
    assert session.expired(NOW + timedelta(minutes=60))
    assert plain("4:+1425") == "+1425" and plain("8:acs:x") == "8:acs:x"


class TransactionTable(FakeTable):
    def submit_transaction(self, operations: list[Any]) -> None:
        for op in operations:  # check everything first: all or nothing
            kind, entity = op[0], op[1]
            key = (entity["PartitionKey"], entity["RowKey"])
            if kind == "create" and key in self.rows:
                raise ResourceExistsError("exists")
            if kind == "update" and (key not in self.rows or self.rows[key][1] != op[2]["etag"]):
                raise ResourceModifiedError("etag")
        for op in operations:
            self.upsert_entity(op[1])


def test_sessions_are_found_by_masked_number_and_caller_only_while_live() -> None:
    store = MaskingStore(TransactionTable())
    store.create(new_session("s1", MASKED, BUYER, SELLER, 60, NOW), NOW)
    assert store.find("4:" + MASKED, "4:" + BUYER, NOW).peer_of(BUYER) == SELLER
    assert store.find(MASKED, SELLER, NOW).id == "s1"
    assert store.find(MASKED, "+14255550999", NOW) is None
    assert store.find("+18005550100", BUYER, NOW) is None
    assert store.find(MASKED, BUYER, NOW + timedelta(hours=2)) is None


def test_a_party_has_one_peer_per_masked_number_until_the_session_expires() -> None:
    store = MaskingStore(TransactionTable())
    store.create(new_session("s1", MASKED, BUYER, SELLER, 60, NOW), NOW)
    store.create(new_session("s2", MASKED, SELLER, BUYER, 120, NOW), NOW)  # the same pair: renewed
    assert store.find(MASKED, BUYER, NOW + timedelta(minutes=90)).id == "s2"
    with pytest.raises(MaskingConflict) as taken:
        store.create(new_session("s3", MASKED, "+14255550503", SELLER, 60, NOW), NOW)
    assert taken.value.party == SELLER
    store.create(new_session("s4", "+18005550178", "+14255550503", SELLER, 60, NOW), NOW)  # another number: fine
    later = NOW + timedelta(hours=3)
    store.create(new_session("s5", MASKED, "+14255550503", SELLER, 60, later), later)  # s2 has expired
    assert store.find(MASKED, SELLER, later).peer_of(SELLER) == "+14255550503"


def test_a_concurrent_change_between_read_and_write_is_a_conflict() -> None:
    table = TransactionTable()
    store = MaskingStore(table)
    store.create(new_session("s1", MASKED, BUYER, SELLER, 60, NOW), NOW)
    original = table.submit_transaction

    def racing(operations: list[Any]) -> None:
        table.upsert_entity(dict(operations[0][1]))  # someone rewrote the row meanwhile
        original(operations)

    table.submit_transaction = racing  # type: ignore[method-assign]
    with pytest.raises(MaskingConflict):
        store.create(new_session("s2", MASKED, BUYER, SELLER, 60, NOW), NOW)


def test_the_handler_routes_by_the_stored_session() -> None:
    store = MaskingStore(TransactionTable())
    runtime = SimpleNamespace(settings=SimpleNamespace(dialing=DialingSettings()), masking=store)
    req = control.MaskingSessionRequest(masked_number=MASKED, party_a=BUYER, party_b=SELLER)
    created = handler.create_session(req, runtime)
    assert created["party_a"] == BUYER and MaskingSession.model_validate(created).peer_of(SELLER) == BUYER
    action = MaskAction(type="mask")
    assert handler.route_masked(action, "4:" + MASKED, "4:" + SELLER, runtime) == (
        AnswerAction(type="answer", flow="number_masking"),
        {"peer": BUYER, "masked_number": MASKED},
    )
    assert handler.route_masked(action, "4:" + MASKED, "4:+14255550999", runtime)[0].type == "reject"
    taken = control.MaskingSessionRequest(masked_number=MASKED, party_a="+14255550503", party_b=SELLER)
    with pytest.raises(RequestError) as refused:
        handler.create_session(taken, runtime)
    assert refused.value.status == 409 and refused.value.fields[0]["field"] == "party_b"


@pytest.mark.parametrize(
    ("party_a", "party_b", "fields"),
    [
        ("+19005550100", SELLER, ["party_a"]),  # premium rate
        (BUYER, "4:+18765550100", ["party_b"]),  # Jamaica: international rates, as a raw id
        ("+442071234567", "+19005550101", ["party_a", "party_b"]),  # abroad, and premium
    ],
)
def test_a_session_with_a_party_the_policy_refuses_is_refused_and_stores_nothing(
    party_a: str, party_b: str, fields: list[str]
) -> None:
    table = TransactionTable()
    runtime = SimpleNamespace(settings=SimpleNamespace(dialing=DialingSettings()), masking=MaskingStore(table))
    req = control.MaskingSessionRequest(masked_number=MASKED, party_a=party_a, party_b=party_b)
    with pytest.raises(RequestError) as refused:
        handler.create_session(req, runtime)
    assert refused.value.status == 403 and [f["field"] for f in refused.value.fields] == fields
    assert table.rows == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"masked_number": "18005550177", "party_a": BUYER, "party_b": SELLER}, "masked_number"),
        ({"masked_number": MASKED, "party_a": "4:1900555", "party_b": SELLER}, "party_a"),  # a 4: id is a phone
        ({"masked_number": MASKED, "party_a": "buyer", "party_b": SELLER}, "party_a"),
        ({"masked_number": MASKED, "party_a": BUYER, "party_b": "4:" + BUYER}, "(body)"),
        ({"masked_number": MASKED, "party_a": MASKED, "party_b": SELLER}, "(body)"),
        ({"masked_number": MASKED, "party_a": BUYER, "party_b": SELLER, "ttl_minutes": 0}, "ttl_minutes"),
    ],
)
def test_masking_requests_name_the_faulty_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as caught:
        control.parse(control.MaskingSessionRequest, json.dumps(body).encode())
    assert [f["field"] for f in caught.value.fields] == [field]
