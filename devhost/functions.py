"""The host's table of functions, built from the worker's function metadata (its raw bindings), as the host
builds it: which HTTP routes, methods and auth levels, and which Event Grid triggers, devhost serves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .routes import route_pattern, route_precedence

ALL_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"})


@dataclass(frozen=True)
class FunctionEntry:
    """One function as the worker reports it: its name, id and bindings (each the JSON the SDK wrote)."""

    name: str
    function_id: str
    bindings: tuple[dict[str, Any], ...]

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if str(b.get("type", "")).endswith("Trigger"))


@dataclass
class HttpFunction:
    name: str
    route: str
    pattern: re.Pattern[str]
    methods: set[str]
    auth_level: str
    function_id: str = ""
    arg_name: str = "req"
    precedence: tuple[int, ...] = ()


@dataclass
class EventGridFunction:
    name: str
    function_id: str = ""
    arg_name: str = "event"


@dataclass
class Index:
    """What the host serves of the app."""

    http: list[HttpFunction] = field(default_factory=list)
    eventgrid: dict[str, EventGridFunction] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)


def entries_from_metadata(metadata: Iterable[Any]) -> list[FunctionEntry]:
    """The worker's ``RpcFunctionMetadata`` list (from a FunctionsMetadataRequest) as entries."""
    return [
        FunctionEntry(m.name, m.function_id, tuple(json.loads(raw) for raw in m.raw_bindings)) for m in metadata
    ]


def index(entries: Iterable[FunctionEntry], route_prefix: str) -> Index:
    found = Index()
    for entry in entries:
        trigger = entry.trigger
        kind = trigger.get("type")
        if kind == "httpTrigger":
            methods = {str(m).upper() for m in trigger.get("methods") or []} or set(ALL_METHODS)
            route = trigger.get("route") or entry.name
            found.http.append(
                HttpFunction(
                    entry.name,
                    route,
                    route_pattern(route_prefix, route),
                    methods,
                    str(trigger.get("authLevel") or "function").lower(),
                    function_id=entry.function_id,
                    arg_name=trigger["name"],
                    precedence=route_precedence(route),
                )
            )
        elif kind == "eventGridTrigger":
            found.eventgrid[entry.name] = EventGridFunction(entry.name, entry.function_id, trigger["name"])
        else:
            found.other.append(f"{entry.name} ({kind})")
    found.http.sort(key=lambda f: f.precedence)  # stable: registration order breaks ties
    return found
