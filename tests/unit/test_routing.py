"""Routing of IncomingCall: caller and called number, business hours, SIP/VoIP headers, rule order,
and the validation of the rules themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from core.calls.routing import AnswerAction, CallFacts, Hours, RedirectAction, RejectAction, RoutingRules, route

MONDAY_NOON_UTC = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)  # a Monday


def rules(*rule_list: dict[str, Any], default: dict[str, Any] | None = None) -> RoutingRules:
    return RoutingRules.model_validate(
        {"rules": list(rule_list), "default": default or {"type": "answer", "flow": "fallback"}}
    )


def rule(name: str, match: dict[str, Any] | None = None, flow: str | None = None) -> dict[str, Any]:
    return {"name": name, "match": match or {}, "action": {"type": "answer", "flow": flow or name}}


def facts(
    to: str = "4:+18005550100",
    caller: str = "4:+14255551234",
    at: datetime = MONDAY_NOON_UTC,
    sip: dict[str, str] | None = None,
    voip: dict[str, str] | None = None,
) -> CallFacts:
    return CallFacts(to=to, caller=caller, at=at, sip_headers=sip or {}, voip_headers=voip or {})


def routed(r: RoutingRules, f: CallFacts) -> str:
    return route(r, f).name


# -- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "written"),
    [
        ("4:+18005550100", "+18005550100"),  # rules are written with plain numbers
        ("+18005550100", "+18005550100"),
        ("4:+18005550100", "4:+18005550100"),  # or with the raw id
    ],
)
def test_called_number_exact_plain_or_raw(to: str, written: str) -> None:
    r = rules(rule("line", {"to": written}))
    assert routed(r, facts(to=to)) == "line"
    assert routed(r, facts(to=to.replace("0100", "0199"))) == "default"


def test_called_number_list_is_any_of() -> None:
    r = rules(rule("lines", {"to": ["+18005550100", "+18005550101"]}))
    assert routed(r, facts(to="4:+18005550101")) == "lines"
    assert routed(r, facts(to="4:+18005550102")) == "default"


def test_called_acs_user_exact() -> None:
    r = rules(rule("bot", {"to": "8:acs:resource_bot"}))
    assert routed(r, facts(to="8:acs:resource_bot")) == "bot"
    assert routed(r, facts(to="8:acs:resource_other")) == "default"


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("4:+14255551234", "redmond"),
        ("+14255551234", "redmond"),
        ("4:+12065551234", "default"),
        ("4:+4425", "default"),  # the prefix is on the number, not on the raw id's "4:"
    ],
)
def test_caller_prefix(caller: str, expected: str) -> None:
    r = rules(rule("redmond", {"from": {"prefix": "+1425"}}))
    assert routed(r, facts(caller=caller)) == expected


def test_caller_prefix_on_raw_ids() -> None:
    r = rules(rule("teams", {"from": {"prefix": "8:orgid:"}}), rule("acs", {"from": {"prefix": "8:acs:"}}))
    assert routed(r, facts(caller="8:orgid:00000000-aaaa")) == "teams"
    assert routed(r, facts(caller="8:acs:res_user")) == "acs"
    assert routed(r, facts(caller="4:+14255551234")) == "default"


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("4:+14255551234", "us"),
        ("+12065550000", "us"),
        ("4:+142555512345", "default"),  # fullmatch: one digit too many
        ("4:+441234567890", "default"),
    ],
)
def test_caller_pattern_is_a_full_match(caller: str, expected: str) -> None:
    r = rules(rule("us", {"from": {"pattern": r"\+1\d{10}"}}))
    assert routed(r, facts(caller=caller)) == expected


def test_pattern_on_called_number_and_raw_id() -> None:
    r = rules(rule("tollfree", {"to": {"pattern": r"\+18(00|88)\d{7}"}}), rule("raw", {"to": {"pattern": r"4:\+44.*"}}))
    assert routed(r, facts(to="4:+18885550100")) == "tollfree"
    assert routed(r, facts(to="+18005550100")) == "tollfree"
    assert routed(r, facts(to="4:+442079460000")) == "raw"
    assert routed(r, facts(to="4:+19005550100")) == "default"


def test_caller_exact_and_mixed_list() -> None:
    r = rules(rule("vip", {"from": ["+14255550001", {"prefix": "+1206555"}, {"pattern": r"8:acs:vip_.*"}]}))
    assert routed(r, facts(caller="4:+14255550001")) == "vip"
    assert routed(r, facts(caller="4:+12065559999")) == "vip"
    assert routed(r, facts(caller="8:acs:vip_jane")) == "vip"
    assert routed(r, facts(caller="4:+14255550002")) == "default"


def test_all_conditions_of_a_rule_must_hold() -> None:
    r = rules(rule("both", {"to": "+18005550100", "from": {"prefix": "+1425"}}))
    assert routed(r, facts()) == "both"
    assert routed(r, facts(to="4:+18005550199")) == "default"
    assert routed(r, facts(caller="4:+12065551234")) == "default"


# -- business hours -------------------------------------------------------------------------------


def at_local(zone: str, *args: int) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)  # type: ignore[misc]


NY = "America/New_York"


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        (at_local(NY, 2024, 6, 3, 9, 0), True),  # Monday, opening minute
        (at_local(NY, 2024, 6, 3, 8, 59), False),
        (at_local(NY, 2024, 6, 3, 16, 59), True),
        (at_local(NY, 2024, 6, 3, 17, 0), False),  # closing time is closed
        (at_local(NY, 2024, 6, 7, 12, 0), True),  # Friday
        (at_local(NY, 2024, 6, 8, 12, 0), False),  # Saturday
        (at_local(NY, 2024, 6, 9, 12, 0), False),  # Sunday
        (datetime(2024, 6, 3, 12, 0, tzinfo=UTC), False),  # 08:00 in New York
        (datetime(2024, 6, 3, 13, 0, tzinfo=UTC), True),  # 09:00 in New York (EDT, UTC-4)
        (datetime(2024, 6, 3, 22, 0, tzinfo=timezone(timedelta(hours=9))), True),  # Tokyo 22:00 = NY 09:00
    ],
)
def test_business_hours_mon_fri_in_a_named_zone(moment: datetime, is_open: bool) -> None:
    r = rules(rule("open", {"hours": {"timezone": NY, "days": ["mon-fri"], "open": "09:00", "close": "17:00"}}))
    assert routed(r, facts(at=moment)) == ("open" if is_open else "default")


def test_default_days_are_mon_fri_nine_to_five() -> None:
    hours = Hours(timezone=NY)
    assert hours.days == ["mon", "tue", "wed", "thu", "fri"]
    assert hours.open_at(at_local(NY, 2024, 6, 4, 10, 0))
    assert not hours.open_at(at_local(NY, 2024, 6, 8, 10, 0))


def test_outside_hours_rule_with_within_false() -> None:
    r = rules(
        rule(
            "after_hours", {"hours": {"timezone": "Europe/Berlin", "days": ["mon-fri"], "within": False}}, "voicemail"
        ),
        rule("office", {}),
    )
    assert routed(r, facts(at=at_local("Europe/Berlin", 2024, 6, 3, 10, 0))) == "office"
    assert routed(r, facts(at=at_local("Europe/Berlin", 2024, 6, 3, 18, 0))) == "after_hours"
    assert routed(r, facts(at=at_local("Europe/Berlin", 2024, 6, 1, 10, 0))) == "after_hours"  # Saturday


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (["mon-fri"], ["mon", "tue", "wed", "thu", "fri"]),
        (["Sat", "SUN"], ["sat", "sun"]),
        (["fri-mon"], ["fri", "sat", "sun", "mon"]),  # a range can wrap the week
        (["mon", "wed-thu"], ["mon", "wed", "thu"]),
        (["tue-tue"], ["tue"]),
    ],
)
def test_day_ranges(days: list[str], expected: list[str]) -> None:
    assert Hours(timezone="UTC", days=days).days == expected


def test_weekend_range_that_wraps() -> None:
    hours = Hours(timezone="UTC", days=["sat-sun"], open="10:00", close="14:00")
    assert hours.open_at(datetime(2024, 6, 1, 11, 0, tzinfo=UTC))  # Saturday
    assert hours.open_at(datetime(2024, 6, 2, 13, 59, tzinfo=UTC))  # Sunday
    assert not hours.open_at(datetime(2024, 6, 3, 11, 0, tzinfo=UTC))  # Monday


def test_overnight_hours() -> None:
    # A night line: opens Monday to Friday at 22:00, closes at 06:00 the next morning.
    hours = Hours(timezone="UTC", days=["mon-fri"], open="22:00", close="06:00")
    assert hours.open_at(datetime(2024, 6, 3, 22, 0, tzinfo=UTC))  # Monday night
    assert hours.open_at(datetime(2024, 6, 3, 23, 59, tzinfo=UTC))
    assert hours.open_at(datetime(2024, 6, 4, 5, 59, tzinfo=UTC))  # Tuesday early: Monday's night
    assert not hours.open_at(datetime(2024, 6, 4, 6, 0, tzinfo=UTC))
    assert not hours.open_at(datetime(2024, 6, 4, 12, 0, tzinfo=UTC))
    assert not hours.open_at(datetime(2024, 6, 3, 21, 59, tzinfo=UTC))
    # Friday's night runs into Saturday morning; Sunday night is not open, so Monday early is closed.
    assert hours.open_at(datetime(2024, 6, 8, 3, 0, tzinfo=UTC))
    assert not hours.open_at(datetime(2024, 6, 8, 22, 30, tzinfo=UTC))  # Saturday night
    assert not hours.open_at(datetime(2024, 6, 3, 3, 0, tzinfo=UTC))  # Monday early: Sunday's night


def test_overnight_hours_outside_rule() -> None:
    r = rules(
        rule(
            "day",
            {"hours": {"timezone": "UTC", "days": ["mon-sun"], "open": "20:00", "close": "08:00", "within": False}},
        )
    )
    assert routed(r, facts(at=datetime(2024, 6, 3, 12, 0, tzinfo=UTC))) == "day"
    assert routed(r, facts(at=datetime(2024, 6, 3, 21, 0, tzinfo=UTC))) == "default"
    assert routed(r, facts(at=datetime(2024, 6, 4, 7, 0, tzinfo=UTC))) == "default"


def test_spring_forward_day() -> None:
    # 2024-03-10: New York moves from EST (UTC-5) to EDT (UTC-4) at 02:00.
    hours = Hours(timezone=NY, days=["sun"], open="09:00", close="17:00")
    assert not hours.open_at(datetime(2024, 3, 10, 12, 59, tzinfo=UTC))  # 08:59 EDT
    assert hours.open_at(datetime(2024, 3, 10, 13, 0, tzinfo=UTC))  # 09:00 EDT
    assert hours.open_at(datetime(2024, 3, 10, 20, 59, tzinfo=UTC))  # 16:59 EDT
    assert not hours.open_at(datetime(2024, 3, 10, 21, 0, tzinfo=UTC))  # 17:00 EDT
    # The Sunday before, still on EST: 13:00 UTC is 08:00.
    assert not hours.open_at(datetime(2024, 3, 3, 13, 0, tzinfo=UTC))
    assert hours.open_at(datetime(2024, 3, 3, 14, 0, tzinfo=UTC))


def test_fall_back_day() -> None:
    # 2024-10-27: London moves from BST (UTC+1) to GMT at 02:00; 01:30 happens twice.
    hours = Hours(timezone="Europe/London", days=["sun"], open="01:00", close="02:00")
    assert hours.open_at(datetime(2024, 10, 27, 0, 30, tzinfo=UTC))  # 01:30 BST
    assert hours.open_at(datetime(2024, 10, 27, 1, 30, tzinfo=UTC))  # 01:30 GMT, the second time
    assert not hours.open_at(datetime(2024, 10, 27, 2, 0, tzinfo=UTC))  # 02:00 GMT
    assert not hours.open_at(datetime(2024, 10, 26, 23, 59, tzinfo=UTC))  # 00:59 BST


def test_hours_in_the_southern_hemisphere() -> None:
    hours = Hours(timezone="Australia/Sydney", days=["mon-fri"])
    assert hours.open_at(datetime(2024, 6, 2, 23, 30, tzinfo=UTC))  # Monday 09:30 AEST (UTC+10)
    assert hours.open_at(datetime(2024, 1, 1, 22, 30, tzinfo=UTC))  # Tuesday 09:30 AEDT (UTC+11)
    assert not hours.open_at(datetime(2024, 1, 1, 21, 30, tzinfo=UTC))  # Tuesday 08:30 AEDT


def test_a_time_without_zone_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    # Not the machine's local time: the same rules must route the same on any host.
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        hours = Hours(timezone=NY, days=["mon"])
        assert hours.open_at(datetime(2024, 6, 3, 13, 0))  # 09:00 in New York
        assert not hours.open_at(datetime(2024, 6, 3, 12, 0))
    finally:
        monkeypatch.undo()
        time.tzset()


# -- headers --------------------------------------------------------------------------------------


def test_sip_header_names_are_case_insensitive() -> None:
    r = rules(rule("queue", {"sip_headers": {"X-MS-Custom-Queue": "vip"}}))
    assert routed(r, facts(sip={"x-ms-custom-queue": "vip"})) == "queue"
    assert routed(r, facts(sip={"X-MS-CUSTOM-QUEUE": "vip"})) == "queue"
    assert routed(r, facts(sip={"X-MS-Custom-Queue": "VIP"})) == "default"  # values are compared exactly
    assert routed(r, facts(sip={"X-MS-Custom-Other": "vip"})) == "default"
    assert routed(r, facts()) == "default"


def test_sip_header_written_in_lower_case_matches_any_case() -> None:
    r = rules(rule("queue", {"sip_headers": {"x-ms-custom-queue": {"prefix": "sal"}}}))
    assert routed(r, facts(sip={"X-MS-Custom-Queue": "sales"})) == "queue"


def test_voip_headers_with_matches_and_all_must_hold() -> None:
    r = rules(
        rule(
            "partner",
            {"voip_headers": {"Tier": ["gold", "platinum"], "Region": {"pattern": "eu-.*"}}},
        )
    )
    assert routed(r, facts(voip={"tier": "gold", "region": "eu-west"})) == "partner"
    assert routed(r, facts(voip={"TIER": "platinum", "Region": "eu-north"})) == "partner"
    assert routed(r, facts(voip={"tier": "silver", "region": "eu-west"})) == "default"
    assert routed(r, facts(voip={"tier": "gold"})) == "default"
    # SIP headers do not satisfy a VoIP header condition.
    assert routed(r, facts(sip={"tier": "gold", "region": "eu-west"})) == "default"


# -- order and default ----------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    r = rules(
        rule("vip", {"from": "+14255551234"}),
        rule("redmond", {"from": {"prefix": "+1425"}}),
        rule("everyone", {}),
    )
    assert routed(r, facts(caller="4:+14255551234")) == "vip"
    assert routed(r, facts(caller="4:+14255559999")) == "redmond"
    assert routed(r, facts(caller="4:+12065559999")) == "everyone"


def test_default_rule_when_nothing_matches() -> None:
    r = rules(rule("vip", {"from": "+14255550000"}), default={"type": "reject", "reason": "busy"})
    chosen = route(r, facts())
    assert chosen.name == "default"
    assert isinstance(chosen.action, RejectAction) and chosen.action.reason == "busy"


def test_no_rules_at_all() -> None:
    r = RoutingRules.model_validate({"default": {"type": "answer", "flow": "main"}})
    chosen = route(r, facts())
    assert chosen.name == "default" and isinstance(chosen.action, AnswerAction) and chosen.action.flow == "main"


def test_actions() -> None:
    r = rules(
        {
            "name": "ring",
            "match": {"to": "+18005550101"},
            "action": {"type": "redirect", "targets": ["+14255550001", "4:+14255550002"]},
        },
        {"name": "block", "match": {"from": {"prefix": "+1900"}}, "action": {"type": "reject", "reason": "forbidden"}},
    )
    ring = route(r, facts(to="4:+18005550101")).action
    assert isinstance(ring, RedirectAction) and ring.timeout_seconds == 30
    assert ring.targets == ["+14255550001", "4:+14255550002"]
    block = route(r, facts(caller="4:+19005550000")).action
    assert isinstance(block, RejectAction) and block.reason == "forbidden"


# -- validation -----------------------------------------------------------------------------------


def invalid(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        RoutingRules.model_validate(data)
    return str(caught.value)


DEFAULT = {"type": "reject"}


def test_bad_regex() -> None:
    message = invalid({"rules": [rule("x", {"from": {"pattern": "+1425("}})], "default": DEFAULT})
    assert "regular expression" in message


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "EST5EDT-nope", "", "America"])
def test_unknown_timezone(zone: str) -> None:
    message = invalid({"rules": [rule("x", {"hours": {"timezone": zone}})], "default": DEFAULT})
    assert "time zone" in message


@pytest.mark.parametrize("days", [["funday"], ["monday"], ["mon-xyz"], ["mon-"], ["mon–fri"]])
def test_bad_day(days: list[str]) -> None:
    message = invalid({"rules": [rule("x", {"hours": {"timezone": "UTC", "days": days}})], "default": DEFAULT})
    assert "day" in message


def test_duplicate_rule_names() -> None:
    message = invalid({"rules": [rule("same"), rule("same"), rule("other")], "default": DEFAULT})
    assert "unique" in message and "same" in message


@pytest.mark.parametrize(
    "match",
    [
        {"exact": "+1", "prefix": "+1"},
        {"prefix": "+1", "pattern": r"\+1.*"},
        {"exact": "+1", "pattern": r"\+1"},
        {"exact": "+1", "prefix": "+1", "pattern": ".*"},
        {},
    ],
)
def test_exactly_one_of_exact_prefix_pattern(match: dict[str, str]) -> None:
    message = invalid({"rules": [rule("x", {"to": match})], "default": DEFAULT})
    assert "exactly one of exact, prefix, pattern" in message


@pytest.mark.parametrize(
    "data",
    [
        {"rules": []},  # no default
        {"default": {"type": "forward"}},
        {"default": {"type": "reject", "reason": "busy", "extra": 1}},
        {"default": {"type": "reject", "reason": "maybe"}},
        {"default": {"type": "redirect", "targets": []}},
        {"default": {"type": "redirect", "targets": ["+1"], "timeout_seconds": 1}},
        {"default": DEFAULT, "rules": [{"name": "x", "match": {"caller": "+1"}, "action": DEFAULT}]},
        {"default": DEFAULT, "rules": [{"name": "x", "match": {"to": []}, "action": DEFAULT}]},
        {
            "default": DEFAULT,
            "rules": [{"name": "x", "match": {"hours": {"timezone": "UTC", "open": "25:00"}}, "action": DEFAULT}],
        },
        {"default": DEFAULT, "rules": [{"name": "x", "action": {"type": "answer"}}]},
    ],
)
def test_other_invalid_rules(data: dict[str, Any]) -> None:
    invalid(data)


# -- hostile input: catastrophic patterns, long values, targets ------------------------------------------------------

REDOS = [r"(a+)+", r"(a|aa)+", r"(\d+)+$", r"(.*a){20}"]


@pytest.mark.parametrize("pattern", REDOS)
def test_a_catastrophic_pattern_runs_in_linear_time_on_10_kb(pattern: str) -> None:
    """Patterns run on RE2. Measured in a child process with a deadline (a backtracking engine would never return).
    Worked before f82571e: Python's re, on ``(a|aa)+``, takes 0.3 s at 33 characters and 7 times longer every 4."""
    import subprocess
    import sys
    import textwrap

    probe = textwrap.dedent(f"""
        import time
        from core.calls.routing import StringMatch
        match = StringMatch(pattern={pattern!r})
        started = time.perf_counter()
        for value in ("a" * 10_000 + "!", "1" * 10_000 + "x"):
            match.matches(value)
        print(f"{{(time.perf_counter() - started) * 1000:.2f}}")
    """)
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=20, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{pattern!r} on 10 KB did not finish in 20 s")
    spent_ms = float(done.stdout.strip())
    print(f"\n{pattern!r} on two 10 KB values: {spent_ms:.2f} ms")
    assert spent_ms < 1000


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"(?<!b)a", "a" * 1001])
def test_a_pattern_re2_cannot_run_is_refused_at_start_up(pattern: str) -> None:
    """Worked before f82571e: backreferences, lookaround and any length were taken (and backtracked)."""
    message = invalid({"rules": [rule("x", {"from": {"pattern": pattern}})], "default": DEFAULT})
    assert "pattern" in message


def test_routing_inputs_beyond_documented_lengths_are_not_matched() -> None:
    """Numbers and ids beyond 256 characters, SIP header values beyond 256 and VoIP beyond 1024 (ACS's limits) are
    not matched. Worked before f82571e: any length was matched."""
    r = rules(
        rule("long-caller", {"from": {"pattern": ".*"}}),
        rule("tier", {"sip_headers": {"X-MS-Custom-Tier": {"prefix": "g"}}}),
        rule("voip", {"voip_headers": {"tier": {"prefix": "g"}}}),
    )
    long_caller = "4:+1" + "5" * 300
    assert route(r, facts(caller=long_caller)).name == "long-caller"  # ".*" matches the empty value
    assert route(rules(rule("p", {"from": {"prefix": "4:+1"}})), facts(caller=long_caller)).name == "default"
    only_headers = rules(
        rule("tier", {"sip_headers": {"X-MS-Custom-Tier": {"prefix": "g"}}}),
        rule("voip", {"voip_headers": {"tier": {"prefix": "g"}}}),
    )
    assert route(only_headers, facts(sip={"X-MS-Custom-Tier": "g" * 257})).name == "default"
    assert route(only_headers, facts(sip={"X-MS-Custom-Tier": "g" * 256})).name == "tier"
    assert route(only_headers, facts(voip={"tier": "g" * 1025})).name == "default"
    assert route(only_headers, facts(voip={"tier": "g" * 1024})).name == "voip"


@pytest.mark.parametrize("target", ["4:+1900 555 0100", "4:abc", "+1-900", "8:acs:a/b", "sip:x@y", ""])
def test_a_redirect_target_that_is_no_e164_number_or_raw_id_is_refused(target: str) -> None:
    """Worked before f82571e: any string was taken as a redirect target (``4:`` ids skipped every phone check)."""
    data = {"rules": [], "default": {"type": "redirect", "targets": [target]}}
    assert "targets" in invalid(data)
