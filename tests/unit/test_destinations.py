"""The dialing policy (core/outbound/destinations.py), the executor's check of every ring (core/calls/executor.py)
and the daily cap's store (core/outbound/dial_cap.py, with an in-memory table): pure, no service."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from core.calls.executor import Executor
from core.flows.actions import AddParticipant, Mute, Transfer
from core.flows.model import Flow, Target
from core.outbound.destinations import (
    DEFAULT_DENIED,
    DEFAULT_POLICY,
    DestinationPolicy,
    DestinationRefused,
    fill_targets,
    flow_targets,
    parse_prefixes,
    phone_of,
)
from core.outbound.dial_cap import DialCap, DialCapReached, seconds_to_midnight
from tests.unit.test_campaigns import FakeTable

ALLOWED = [
    "+14255550100",  # Washington
    "4:+14255550100",  # the same, as a raw id
    "+18005550100",  # toll free
    "+16135550100",  # Canada
    "+17875550100",  # Puerto Rico: domestic rate
    "+13405550100",  # US Virgin Islands
    "8:acs:11111111-2222-3333-4444-555555555555_0000",  # an ACS user
    "8:orgid:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",  # a Teams user
    "28:orgid:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",  # a Teams app
]
REFUSED = {
    "+19005550100": "+1900 numbers are denied",  # NANP premium rate
    "4:+19005550100": "+1900 numbers are denied",  # the same behind a raw id
    "+18765550100": "+1876 numbers are denied",  # Jamaica
    "4:+18095550100": "+1809 numbers are denied",  # Dominican Republic
    "+12685550100": "+1268 numbers are denied",  # Antigua
    "+16495550100": "+1649 numbers are denied",  # Turks and Caicos
    "+442071234567": "outside the allowed prefixes +1",  # abroad
    "+881612345678": "+881 numbers are denied",  # satellite
    "+97912345678": "+979 numbers are denied",  # international premium rate
    "4:19005550100": "E.164",  # a 4: id without its +
    "4:+1 900 555 0100": "E.164",
    "4:": "E.164",
    "+1900555": "10 digits",  # a +1 number of the wrong length
    "+14251550100": "10 digits",  # an exchange starting with 1
    "+123": "E.164",
    "19005550100": "E.164",  # digits without their +
    "9:+19005550100": "nor an ACS or Teams identity",  # an unknown kind
    "8:acs:": "nor an ACS or Teams identity",
    "": "nor an ACS or Teams identity",
}


@pytest.mark.parametrize("target", ALLOWED)
def test_the_default_policy_allows_north_american_numbers_and_identities(target: str) -> None:
    DEFAULT_POLICY.check(target)


@pytest.mark.parametrize(("target", "says"), REFUSED.items())
def test_the_default_policy_refuses_premium_foreign_and_malformed_destinations(target: str, says: str) -> None:
    with pytest.raises(DestinationRefused) as refused:
        DEFAULT_POLICY.check(target)
    assert says in refused.value.reason and refused.value.status_code == 403
    assert "5550100" not in refused.value.reason  # the whole number is never repeated (logs)


def test_the_longest_prefix_decides_and_a_tie_is_a_denial() -> None:
    policy = DestinationPolicy(allowed=("+1", "+44", "+1876555"), denied=("+1876", "+449", "+44"))
    assert policy.allows("+18765550100")  # a longer allowed prefix wins over the denied country
    assert not policy.allows("+18765560100")
    assert not policy.allows("+442071234567")  # +44 both allowed and denied: denied
    everything = DestinationPolicy(allowed=("+",), denied=DEFAULT_DENIED)
    assert everything.allows("+33123456789") and not everything.allows("+88212345678")
    assert not DestinationPolicy(allowed=(), denied=()).allows("+14255550100")


def test_prefixes_are_parsed_and_checked() -> None:
    assert parse_prefixes(" +1, +44 ,") == ("+1", "+44")
    assert parse_prefixes("none") == () and parse_prefixes("+") == ("+",)
    for bad in ("1", "+1-800", "+12345678901234567", "+1,x"):
        with pytest.raises(ValueError):
            parse_prefixes(bad)


def test_phone_of_reads_both_spellings() -> None:
    assert phone_of("+14255550100") == phone_of("4:+14255550100") == "+14255550100"
    assert phone_of("8:acs:x") is None


def test_flow_targets_and_their_variables() -> None:
    flow = Flow.model_validate(
        {
            "start": "t",
            "nodes": {
                "t": {"type": "transfer", "target": {"to": "{agent}"}, "on_failure": "a"},
                "a": {"type": "add_participant", "target": {"to": "+1{digits}"}, "next": "b", "on_failure": "b"},
                "b": {"type": "hangup"},
            },
        }
    )
    assert flow_targets(flow) == [("t", "{agent}"), ("a", "+1{digits}")]
    assert fill_targets(flow_targets(flow), {"agent": "+19005550100"}) == [("t", "+19005550100")]


# -- the executor: every ring, whoever asked -------------------------------------------------------


class Client:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_call_connection(self, call_connection_id: str) -> Any:
        self.calls.append(call_connection_id)
        return SimpleNamespace(
            transfer_call_to_participant=lambda *a, **k: self.calls.append("transfer"),
            add_participant=lambda *a, **k: self.calls.append("add") or SimpleNamespace(invitation_id="i"),
            mute_participant=lambda *a, **k: self.calls.append("mute"),
        )


@pytest.mark.parametrize(
    "action",
    [
        Transfer(target=Target(to="+19005550100")),
        Transfer(target=Target(to="4:+18765550100", caller_id="+18005550100")),
        AddParticipant(target=Target(to="+442071234567")),
        AddParticipant(target=Target(to="4:1900555")),
    ],
)
def test_the_executor_refuses_a_ring_before_the_service_is_asked(action: Any) -> None:
    client = Client()
    with pytest.raises(DestinationRefused):
        Executor(client, policy=DEFAULT_POLICY).run("ccid", "", action)  # type: ignore[arg-type]
    assert client.calls == []


def test_the_executor_lets_allowed_rings_and_other_actions_through() -> None:
    client = Client()
    executor = Executor(client, policy=DEFAULT_POLICY)  # type: ignore[arg-type]
    executor.run("ccid", "", Transfer(target=Target(to="+14255550100")))
    executor.run("ccid", "", AddParticipant(target=Target(to="8:acs:agent")))
    executor.run("ccid", "", Mute(who="4:+19005550100"))  # a participant already in the call: nothing rings
    assert client.calls == ["ccid", "transfer", "ccid", "add", "ccid", "mute"]


def test_the_executor_uses_the_given_policy_or_the_safe_default() -> None:
    assert Executor(Client()).policy == DEFAULT_POLICY  # type: ignore[arg-type]  # no settings here


# -- the daily cap -----------------------------------------------------------------------------------

NOON = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)


def test_the_cap_counts_per_day_and_refuses_past_it() -> None:
    table = FakeTable()
    cap = DialCap(table, 3)
    cap.take(2, NOON)
    cap.take(1, NOON)
    with pytest.raises(DialCapReached) as reached:
        cap.take(1, NOON)
    assert reached.value.retry_after == 12 * 3600 and "DIAL_DAILY_CAP" in reached.value.message
    assert reached.value.status_code == 429
    with pytest.raises(DialCapReached):
        DialCap(table, 4).take(2, NOON)  # all or nothing: two do not fit in the one left
    assert cap.used(NOON) == 3 and table.rows[("dialcap", "2026-03-12")][0]["count"] == 3
    cap.take(3, datetime(2026, 3, 13, 0, 0, tzinfo=UTC))  # a new day
    assert cap.take(0, NOON).count == 0  # nothing to count (ACS users): no row touched


def test_a_cap_of_zero_refuses_every_phone() -> None:
    with pytest.raises(DialCapReached):
        DialCap(FakeTable(), 0).take(1, NOON)


def test_a_refused_call_is_given_back_and_a_row_back_at_zero_is_removed() -> None:
    table = FakeTable()
    cap = DialCap(table, 3)
    first = cap.take(2, NOON)
    second = cap.take(1, NOON)
    cap.give_back(second)
    assert cap.used(NOON) == 2
    cap.give_back(first)
    assert table.rows == {}  # a refused request leaves no row behind


def test_two_instances_never_pass_the_cap_together() -> None:
    table = FakeTable()
    a, b = DialCap(table, 2), DialCap(table, 2)
    original = table.update_entity
    raced = []

    def racing(entity: dict[str, Any], **kwargs: Any) -> Any:
        if not raced:  # the other instance takes the last call between this one's read and write
            raced.append(True)
            b.take(1, NOON)
        return original(entity, **kwargs)

    a.take(1, NOON)
    table.update_entity = racing  # type: ignore[method-assign]
    with pytest.raises(DialCapReached):
        a.take(1, NOON)  # its write met b's on the ETag, it read again: no room left
    assert table.conflicts == 1 and a.used(NOON) == 2


def test_seconds_to_midnight() -> None:
    assert seconds_to_midnight(datetime(2026, 3, 12, 23, 59, 59, 500000, tzinfo=UTC)) == 1
