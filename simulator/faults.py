"""Faults injected on request, so apps can be tested against what Azure does on a bad day.

A plan is a list of rules, each used ``count`` times (``-1``: until cleared). Rules are set over
the control API (``POST /__sim/faults``) or from a scenario file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUEST_STATUSES = {429, 500, 503}
# twin: two copies posted at once (a delivery ACS retried while the first was still in flight): behind a front
# that spreads a call's callbacks, the two land on different instances at the same time.
CALLBACK_ACTIONS = {"drop", "duplicate", "twin", "reorder", "delay"}


@dataclass
class Rule:
    kind: str  # request | callback | eventgrid | download | incoming_context
    match: str = "*"  # operation id (request), event type (callback/eventgrid)
    count: int = 1
    status: int | None = None
    retry_after: float | None = 0.1
    latency: float = 0.0
    action: str | None = None
    delay: float = 0.0
    cut_after_bytes: int = 0
    ttl: float = 0.0

    def matches(self, name: str) -> bool:
        return self.match in ("*", name) or (self.match.endswith("*") and name.startswith(self.match[:-1]))


def parse_rule(data: dict[str, Any]) -> Rule:
    kind = data.get("kind")
    if kind not in {"request", "callback", "eventgrid", "download", "incoming_context"}:
        raise ValueError(f"fault kind must be request, callback, eventgrid, download or incoming_context, not {kind!r}")
    rule = Rule(
        kind=kind,
        match=str(data.get("match", "*")),
        count=int(data.get("count", 1)),
        status=data.get("status"),
        retry_after=data.get("retry_after", 0.1),
        latency=float(data.get("latency", 0.0)),
        action=data.get("action"),
        delay=float(data.get("delay", 0.0)),
        cut_after_bytes=int(data.get("cut_after_bytes", 0)),
        ttl=float(data.get("ttl", 0.0)),
    )
    if kind == "request" and rule.status is not None and rule.status not in REQUEST_STATUSES:
        raise ValueError(f"request fault status must be one of {sorted(REQUEST_STATUSES)}")
    if kind == "request" and rule.status is None and not rule.latency:
        raise ValueError("a request fault needs a status or a latency")
    if kind == "callback" and rule.action not in CALLBACK_ACTIONS:
        raise ValueError(f"callback fault action must be one of {sorted(CALLBACK_ACTIONS)}")
    if kind == "eventgrid" and rule.action not in CALLBACK_ACTIONS - {"twin"}:
        raise ValueError(f"eventgrid fault action must be one of {sorted(CALLBACK_ACTIONS)}")
    if kind == "download" and rule.cut_after_bytes <= 0 and rule.latency <= 0:
        raise ValueError("a download fault needs cut_after_bytes > 0 or latency > 0 (seconds per MiB sent)")
    if kind == "incoming_context" and rule.ttl <= 0:
        raise ValueError("an incoming_context fault needs ttl > 0 (seconds)")
    return rule


@dataclass
class FaultPlan:
    rules: list[Rule] = field(default_factory=list)
    fired: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rule: Rule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()

    def take(self, kind: str, name: str = "*") -> Rule | None:
        """The first live rule of this kind that matches ``name``; using it spends one count."""
        for rule in self.rules:
            if rule.kind == kind and rule.count != 0 and rule.matches(name):
                if rule.count > 0:
                    rule.count -= 1
                self.fired.append({"kind": kind, "name": name, "rule": rule.match})
                return rule
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [dict(vars(r)) for r in self.rules if r.count != 0]
