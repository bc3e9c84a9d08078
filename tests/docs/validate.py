"""Checks of a page's blocks that need no server: marked flows, routing rules, scenarios and request bodies, read
with the app's and the simulator's own parsers, and every curl's JSON body to ``/api/...`` against the control API's
OpenAPI document (and the request model the app parses it with), so a wrong body in a doc fails even where the
block is never run."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from tests.docs.markdown import Block
from tests.docs.shell import curls

# What a shell variable in a body or URL stands for when read statically: any value fits where it stands.
UNKNOWN = "__SHELL_VALUE__"
VARIABLE = re.compile(r"\$(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")
# The documented names of the stack's addresses (see docs/walkthrough.md).
KNOWN = {"APP": "http://127.0.0.1:7071/api", "SIM": "http://127.0.0.1:8090"}


@cache
def openapi() -> dict[str, Any]:
    from core.outbound import control

    return control.openapi()


def _models() -> dict[tuple[str, str], type[BaseModel] | None]:
    from core.outbound import control

    return {(op.method.upper(), f"/api/{op.path}"): op.request for op in control.OPERATIONS}


def find_route(method: str, path: str) -> str | None:
    """The OpenAPI path template that ``method path`` is (``{x}`` takes any one segment), most literal first."""
    wanted = path.rstrip("/").split("/")
    best: tuple[int, str] | None = None
    for template, operations in openapi()["paths"].items():
        if method.lower() not in operations:
            continue
        parts = template.split("/")
        if len(parts) != len(wanted):
            continue
        literal = 0
        for have, want in zip(parts, wanted, strict=True):
            if have.startswith("{"):
                if not want:
                    break
            elif have == want:
                literal += 1
            else:
                break
        else:
            if best is None or literal > best[0]:
                best = (literal, template)
    return best[1] if best else None


def _mentions_unknown(value: Any) -> bool:
    if isinstance(value, str):
        return UNKNOWN in value
    if isinstance(value, dict):
        return any(_mentions_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_unknown(v) for v in value)
    return False


def request_problems(method: str, route: str, body: Any) -> list[str]:
    """What is wrong with ``body`` as the request of ``method route``: against openapi.json's request schema and the
    model the app parses it with. A value standing for a shell variable (``UNKNOWN``) is not judged."""
    template = find_route(method, route)
    if template is None:
        return [f"{method} {route}: no such route in openapi.json"]
    operation = openapi()["paths"][template][method.lower()]
    if "requestBody" not in operation:
        return [f"{method} {template} takes no request body"]
    schema = dict(operation["requestBody"]["content"]["application/json"]["schema"])
    schema["components"] = openapi()["components"]
    problems = []
    for error in Draft202012Validator(schema).iter_errors(body):
        if _mentions_unknown(error.instance):
            continue
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        problems.append(f"{method} {template}: openapi.json: {where}: {error.message}")
    model = _models().get((method.upper(), template))
    if model is not None:
        try:
            model.model_validate(body)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                if _mentions_unknown(error.get("input")):
                    continue
                where = ".".join(str(p) for p in error["loc"]) or "(body)"
                problems.append(f"{method} {template}: the app: {where}: {error['msg']}")
    return problems


def _static(text: str) -> str:
    """A shell word with its variables replaced: the known addresses by their values, the rest by ``UNKNOWN``."""
    def value(match: re.Match[str]) -> str:
        name = match[1].strip("{}")
        return KNOWN.get(name, UNKNOWN)

    return VARIABLE.sub(value, text)


def api_path(url: str) -> str | None:
    """The ``/api/...`` path of a URL as written (variables read statically, the query left off), if it has one."""
    url = _static(url)
    at = url.find("/api/")
    if at < 0:
        return None
    return url[at:].split("?", 1)[0].split("#", 1)[0]


def curl_problems(block: Block) -> list[str]:
    """Each curl of a shell block that sends JSON to ``/api/...``: its body against the route's request schema; in
    a run or background block, every curl must fail on an HTTP error (``--fail-with-body`` or ``-f``)."""
    problems = []
    runs = block.marker is not None and block.marker.kind in ("run", "background")
    for curl in curls(block.text):
        if runs and not curl.fails:
            problems.append(
                f"{block.where}: curl without --fail-with-body (or -f): an HTTP error would pass unnoticed"
                f" ({' '.join(curl.words)[:100]})"
            )
        paths = [p for p in (api_path(u) for u in curl.urls) if p]
        if not paths or not curl.bodies:
            continue
        for body in curl.bodies:
            if body.startswith("@"):
                continue  # a file's contents: not readable here
            try:
                data = json.loads(_static(body))
            except ValueError as exc:
                problems.append(f"{block.where}: the body of {curl.method} {paths[0]} is not JSON ({exc}): {body[:80]}")
                continue
            problems += [f"{block.where}: {p}" for p in request_problems(curl.method, paths[0], data)]
    return problems


def flows_problems(data: Any) -> list[str]:
    """A flows document read as the app reads it: the models, then the graph checks."""
    from core.flows.model import FlowSet

    try:
        return FlowSet.model_validate(data).check()
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]


def routing_problems(data: Any) -> list[str]:
    from core.calls.routing import RoutingRules

    try:
        RoutingRules.model_validate(data)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
    return []


def scenario_problems(data: Any) -> list[str]:
    from simulator.scenario import ScenarioError, parse

    try:
        parse(data)
    except ScenarioError as exc:
        return [str(exc)]
    return []


def block_problems(block: Block) -> list[str]:
    """What is wrong with a marked block that needs no server: each problem as ``file:line: what``."""
    marker = block.marker
    problems = curl_problems(block) if block.language in ("bash", "sh", "shell", "console") else []
    if marker is None or marker.kind not in ("json flows", "json routing", "json request", "yaml scenario"):
        return problems
    try:
        data = yaml.safe_load(block.text) if marker.kind == "yaml scenario" else json.loads(block.text)
    except ValueError as exc:
        return [*problems, f"{block.where}: not valid {block.language} ({exc})"]
    if marker.kind == "json flows":
        found = flows_problems(data)
    elif marker.kind == "json routing":
        found = routing_problems(data)
    elif marker.kind == "yaml scenario":
        found = scenario_problems(data)
    else:
        found = request_problems(marker.method, marker.route, data)
    return [*problems, *(f"{block.where}: {marker.kind}: {p}" for p in found)]
