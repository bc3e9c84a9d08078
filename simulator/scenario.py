"""Scenario files: who calls which number, what they do after which prompt, how invitees answer.

The whole vocabulary, with examples, is in docs/simulator.md; ``bin/run-scenario FILE`` plays one against the app.
A scenario is YAML or JSON::

    settings: {time_scale: 0.01, prompt_seconds: 0.05}   # optional, see engine.Config
    eventgrid:                                            # optional, added to --eventgrid-target
      # devhost's Event Grid webhook: code= is its Event Grid system key (DEVHOST_EVENTGRID_KEY), as Azure's
      # subscriptions carry it; without it the app answers 401
      - endpoint: "http://127.0.0.1:7071/runtime/webhooks/eventgrid?functionName=incoming_call&code=EVENTGRID_KEY"
        eventTypes: [Microsoft.Communication.IncomingCall]
    parties:                                              # invitees / transfer targets / outbound callees
      "+14255550199": {answer: decline}
      "8:acs:agent-1": {answer: accept, script: [{after: 0.5, hangup: true}]}
    faults: [{kind: request, match: Play, status: 503, retry_after: 0.1}]
    calls:
      - name: caller picks sales
        from: "+14255550011"         # not a number the flow transfers to (the operator is +14255550100)
        to: "+18005550123"
        at: 0.0                      # seconds after the scenario starts
        custom_context: {sipHeaders: {"X-MS-Custom-Account": "42"}}
        parties: {"+14255550101": {answer: decline}}   # this call's own view of who answers
        script:
          - {on: recognize, press: "1"}
          - {on: play, match: goodbye, hangup: true}
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .engine import Config, ServerCall
from .faults import Rule, parse_rule
from .identifiers import normalize
from .parties import Behaviour, parse_behaviour
from .server import Simulator

SETTINGS = {
    "time_scale",
    "prompt_seconds",
    "tone_seconds",
    "ring_timeout",
    "recording_seconds",
    "recording_bytes",
    "recording_chunks",
    "max_recording_seconds",
    "require_https_callbacks",
}


CALL_KEYS = {"name", "from", "to", "at", "script", "parties", "display_name", "custom_context", "ring_timeout"}


class ScenarioError(ValueError):
    """The scenario file is not valid; the message names the faulty entry."""


@dataclass
class ScriptedCall:
    name: str
    caller: str
    callee: str
    at: float
    behaviour: Behaviour
    display_name: str | None = None
    custom_context: dict[str, Any] | None = None
    ring_timeout: float | None = None
    parties: dict[str, Behaviour] = field(default_factory=dict)


@dataclass
class Scenario:
    calls: list[ScriptedCall] = field(default_factory=list)
    parties: dict[str, Behaviour] = field(default_factory=dict)
    faults: list[Rule] = field(default_factory=list)
    eventgrid: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def load(path: str | Path) -> Scenario:
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    return parse(data or {})


def parse(data: dict[str, Any]) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("a scenario is a mapping with calls, parties, faults, eventgrid and settings")
    unknown = set(data) - {"calls", "parties", "faults", "eventgrid", "settings"}
    if unknown:
        raise ScenarioError(f"unknown top-level keys: {sorted(unknown)}")
    scenario = Scenario()
    settings = data.get("settings") or {}
    bad = set(settings) - SETTINGS
    if bad:
        raise ScenarioError(f"settings: unknown keys {sorted(bad)} (known: {sorted(SETTINGS)})")
    scenario.settings = settings
    for key, spec in (data.get("parties") or {}).items():
        try:
            scenario.parties[normalize(str(key))] = parse_behaviour(spec or {})
        except ValueError as exc:
            raise ScenarioError(f"parties[{key}]: {exc}") from None
    for index, spec in enumerate(data.get("faults") or []):
        try:
            scenario.faults.append(parse_rule(spec))
        except (ValueError, TypeError) as exc:
            raise ScenarioError(f"faults[{index}]: {exc}") from None
    for index, spec in enumerate(data.get("eventgrid") or []):
        if not isinstance(spec, dict) or not spec.get("endpoint"):
            raise ScenarioError(f"eventgrid[{index}]: an endpoint is required")
        scenario.eventgrid.append(spec)
    for index, spec in enumerate(data.get("calls") or []):
        where = f"calls[{index}]"
        if not isinstance(spec, dict) or not spec.get("from") or not spec.get("to"):
            raise ScenarioError(f"{where}: 'from' and 'to' are required")
        unknown_keys = set(spec) - CALL_KEYS
        if unknown_keys:
            raise ScenarioError(f"{where}: unknown keys {sorted(unknown_keys)} (known: {sorted(CALL_KEYS)})")
        try:
            behaviour = parse_behaviour({"script": spec.get("script") or [], "display_name": spec.get("display_name")})
            call_parties = {normalize(str(k)): parse_behaviour(v or {}) for k, v in (spec.get("parties") or {}).items()}
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
        scenario.calls.append(
            ScriptedCall(
                name=spec.get("name") or f"call {index + 1}",
                caller=str(spec["from"]),
                callee=str(spec["to"]),
                at=float(spec.get("at", 0.0)),
                behaviour=behaviour,
                display_name=spec.get("display_name"),
                custom_context=spec.get("custom_context"),
                ring_timeout=spec.get("ring_timeout"),
                parties=call_parties,
            )
        )
    return scenario


def apply_settings(config: Config, settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        setattr(config, key, value)


def finished(call: ServerCall) -> bool:
    """A call is over for the app once it ended or no app leg remains on it."""
    if call.state == "ended":
        return True
    return call.state == "established" and bool(call.connections) and not call.live_connections()


async def run(sim: Simulator, scenario: Scenario, *, timeout: float = 60.0) -> list[ServerCall]:
    """Play every scripted call and wait (bounded) until each is over and all events are delivered."""
    apply_settings(sim.config, scenario.settings)
    sim.engine.parties.update(scenario.parties)
    for rule in scenario.faults:
        sim.faults.add(rule)
    base = sim.config.base_url.rstrip("/")
    for spec in scenario.eventgrid:
        await sim.delivery.subscribe(
            spec["endpoint"], spec.get("eventTypes"), spec.get("name") or "scenario", base + "/__sim/eventgrid/validate"
        )
    started = time.monotonic()
    calls: list[ServerCall] = []
    for scripted in sorted(scenario.calls, key=lambda c: c.at):
        delay = scripted.at - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        call, _ = sim.engine.ring(
            scripted.caller,
            scripted.callee,
            label=scripted.name,
            display_name=scripted.display_name,
            custom_context=scripted.custom_context,
            behaviour=scripted.behaviour,
            ring_timeout=scripted.ring_timeout,
            parties=scripted.parties,
        )
        calls.append(call)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if all(finished(c) for c in calls) and sim.delivery.pending == 0:
            break
        await asyncio.sleep(0.05)
    # Let the last deliveries (CallEnded, recordings) settle.
    try:
        await asyncio.wait_for(sim.delivery.idle.wait(), max(deadline - time.monotonic(), 0.1))
    except TimeoutError:
        pass
    return calls
