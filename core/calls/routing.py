"""Routing of IncomingCall: the first rule whose conditions all hold decides; else the default.

A rule matches on the called number, the caller (exact, prefix or regular expression), business hours in a named
time zone, and custom SIP/VoIP headers. Its action answers into a flow, redirects (forward to one target; sim-ring
to several, done by answering and inviting all of them at once, since ACS redirects to one target only), rejects
with ACS's reasons, or masks (connects the caller to the other party of a number-masking session).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from core.calls.events import MAX_RAW_ID, SIP_HEADERS, VOIP_HEADERS
from core.calls.identifiers import InvalidIdentifier, check_target

# Patterns run on what callers control (their number, their custom headers), so they run on RE2, a linear-time
# engine: no pattern can backtrack catastrophically, and one RE2 cannot run (backreferences, lookaround) is refused
# at start-up with the rest of the rules. The values are capped before matching too: a number or raw id of more
# than ``MAX_ID`` characters, and a header beyond ACS's documented limits (``core.calls.events``), are not matched
# at all (as if absent).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_ID = MAX_RAW_ID  # the longest number or raw id routing looks at
MAX_PATTERN = 1000  # characters of a pattern


def compile_pattern(pattern: str) -> Any:
    """A pattern on RE2 (linear time whatever the input); ValueError naming what RE2 refuses."""
    import re2  # google-re2; imported when the rules are read (start-up), only if a rule has a pattern

    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern is longer than {MAX_PATTERN} characters")
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"pattern is not a regular expression RE2 runs (no backreferences or lookaround): {reason}"
        ) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StringMatch(_Strict):
    """One way to compare a string; exactly one of the three is given."""

    exact: str | None = None
    prefix: str | None = None
    pattern: str | None = None
    _compiled: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        given = [x for x in (self.exact, self.prefix, self.pattern) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix, pattern")
        if self.pattern is not None:
            self._compiled = compile_pattern(self.pattern)
        return self

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        if self._compiled is None:
            self._compiled = compile_pattern(self.pattern or "")
        return self._compiled.fullmatch(value) is not None


def _coerce_match(value: Any) -> Any:
    """A bare string means exact; a list means any of them."""
    if isinstance(value, str):
        return [{"exact": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [{"exact": v} if isinstance(v, str) else v for v in value]
    return value


class Hours(_Strict):
    """Opening hours in a named time zone; ``open_now`` compares the call's time against them."""

    timezone: str
    days: list[str] = Field(default_factory=lambda: list(DAYS[:5]))
    open: time = time(9, 0)
    close: time = time(17, 0)
    within: bool = True  # true: match during opening hours; false: match outside them

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones, e.g. "America"
            raise ValueError(f"{value!r} is not a known IANA time zone") from None
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        days: list[str] = []
        for item in value:
            item = item.lower()
            if "-" in item:
                first, _, last = item.partition("-")
                if first not in DAYS or last not in DAYS:
                    raise ValueError(f"{item!r} is not a day range like mon-fri")
                a, b = DAYS.index(first), DAYS.index(last)
                days += [DAYS[i % 7] for i in range(a, b + 1 if b >= a else b + 8)]
            elif item in DAYS:
                days.append(item)
            else:
                raise ValueError(f"{item!r} is not a day (mon..sun)")
        return days

    def open_at(self, moment: datetime) -> bool:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # not the host's local time
        local = moment.astimezone(ZoneInfo(self.timezone))
        day, now = DAYS[local.weekday()], local.time()
        if self.open <= self.close:
            return day in self.days and self.open <= now < self.close
        # Overnight opening: the hours after midnight belong to the day the opening started.
        if now >= self.open:
            return day in self.days
        return now < self.close and DAYS[(local.weekday() - 1) % 7] in self.days

    def matches(self, moment: datetime) -> bool:
        return self.open_at(moment) == self.within


MatchList = Annotated[list[StringMatch], Field(min_length=1)]


class Match(_Strict):
    to: MatchList | None = None
    from_: MatchList | None = Field(default=None, alias="from")
    hours: Hours | None = None
    sip_headers: dict[str, MatchList] | None = None
    voip_headers: dict[str, MatchList] | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    _coerce = field_validator("to", "from_", mode="before")(lambda cls, v: _coerce_match(v))

    @field_validator("sip_headers", "voip_headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _coerce_match(v) for k, v in value.items()}
        return value


class AnswerAction(_Strict):
    type: Literal["answer"]
    flow: str


class RedirectAction(_Strict):
    type: Literal["redirect"]
    targets: list[str] = Field(min_length=1)
    timeout_seconds: int = Field(default=30, ge=5, le=180)  # sim-ring: how long every target rings

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        try:
            return [check_target(t) for t in value]
        except InvalidIdentifier as exc:
            raise ValueError(str(exc)) from None


class RejectAction(_Strict):
    type: Literal["reject"]
    reason: Literal["none", "busy", "forbidden"] = "none"


class MaskAction(_Strict):
    """Number masking on the called number: a caller in a masking session there is answered into ``flow``
    with the call variables ``peer`` (the other party) and ``masked_number``; anyone else is answered into
    ``unknown_flow`` (a polite message), or rejected with ``reason`` when there is none."""

    type: Literal["mask"]
    flow: str = "number_masking"
    unknown_flow: str | None = None
    reason: Literal["none", "busy", "forbidden"] = "none"


Action = Annotated[AnswerAction | RedirectAction | RejectAction | MaskAction, Field(discriminator="type")]


class Rule(_Strict):
    name: str
    match: Match = Field(default_factory=Match)
    action: Action


class RoutingRules(_Strict):
    rules: list[Rule] = Field(default_factory=list)
    default: Action

    def default_rule(self) -> Rule:
        return Rule(name="default", action=self.default)

    @model_validator(mode="after")
    def _unique(self) -> RoutingRules:
        names = [r.name for r in self.rules]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"rule names must be unique: {sorted(duplicates)}")
        return self


class CallFacts(BaseModel):
    """What routing looks at, taken from an IncomingCall event: a number or id longer than ``MAX_ID`` is matched
    as empty, headers beyond ACS's limits (count, key and value lengths) are left out."""

    to: str
    caller: str
    at: datetime
    sip_headers: dict[str, str] = Field(default_factory=dict)
    voip_headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("to", "caller")
    @classmethod
    def _id(cls, value: str) -> str:
        return value if len(value) <= MAX_ID else ""

    @field_validator("sip_headers", "voip_headers")
    @classmethod
    def _capped(cls, value: dict[str, str], info: Any) -> dict[str, str]:
        count, key_limit, value_limit = SIP_HEADERS if info.field_name == "sip_headers" else VOIP_HEADERS
        kept = [(k, v) for k, v in value.items() if len(k) <= key_limit and len(v) <= value_limit]
        return dict(kept[:count])


def _number(raw_id: str) -> str:
    """Rules are written with plain numbers; raw ids of phones carry a '4:' prefix."""
    return raw_id[2:] if raw_id.startswith("4:") else raw_id


def _headers_match(wanted: dict[str, list[StringMatch]] | None, have: dict[str, str]) -> bool:
    if not wanted:
        return True
    lowered = {k.lower(): v for k, v in have.items()}
    return all(any(m.matches(lowered.get(name.lower())) for m in matches) for name, matches in wanted.items())


def rule_matches(rule: Rule, facts: CallFacts) -> bool:
    m = rule.match
    if m.to and not any(x.matches(_number(facts.to)) or x.matches(facts.to) for x in m.to):
        return False
    if m.from_ and not any(x.matches(_number(facts.caller)) or x.matches(facts.caller) for x in m.from_):
        return False
    if m.hours and not m.hours.matches(facts.at):
        return False
    return _headers_match(m.sip_headers, facts.sip_headers) and _headers_match(m.voip_headers, facts.voip_headers)


def route(rules: RoutingRules, facts: CallFacts) -> Rule:
    for rule in rules.rules:
        if rule_matches(rule, facts):
            return rule
    return rules.default_rule()


def resolve_mask(
    action: MaskAction, to: str, peer: str | None
) -> tuple[AnswerAction | RejectAction, dict[str, str]]:
    """What a mask rule does for one call, given the caller's peer in a session on ``to`` (None: no session)."""
    masked = _number(to)
    if peer:
        return AnswerAction(type="answer", flow=action.flow), {"peer": peer, "masked_number": masked}
    if action.unknown_flow:
        return AnswerAction(type="answer", flow=action.unknown_flow), {"masked_number": masked}
    return RejectAction(type="reject", reason=action.reason), {}
