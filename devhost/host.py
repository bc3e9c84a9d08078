"""The local Functions host: index, route, invoke."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re
import secrets
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
from aiohttp import web

log = logging.getLogger("devhost")
EVENTGRID_PATH = "/runtime/webhooks/eventgrid"


@dataclass
class HttpFunction:
    name: str
    route: str
    pattern: re.Pattern[str]
    methods: set[str]
    auth_level: str
    target: Any


@dataclass
class EventGridFunction:
    name: str
    target: Any


@dataclass
class Index:
    """What the host found in function_app.py."""

    http: list[HttpFunction] = field(default_factory=list)
    eventgrid: dict[str, EventGridFunction] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)


def load_app(app_dir: Path) -> func.FunctionApp:
    """Import function_app.py as the worker does and return its FunctionApp."""
    path = app_dir / "function_app.py"
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    spec = importlib.util.spec_from_file_location("function_app", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    spec.loader.exec_module(module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        raise RuntimeError(f"{path} must define exactly one FunctionApp, found {len(apps)}")
    return apps[0]


def route_pattern(prefix: str, route: str) -> re.Pattern[str]:
    """A Functions route template (``a/{id}``, ``{id:int}``, ``{opt?}``, ``{*rest}``) as a regex."""
    parts = []
    for segment in route.strip("/").split("/"):

        def param(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("*"):
                return f"(?P<{name[1:].split(':')[0]}>.*)"
            optional = name.endswith("?")
            name = name.rstrip("?").split(":")[0]
            return f"(?P<{name}>[^/]+)" + ("?" if optional else "")

        parts.append(re.sub(r"\{([^}]+)\}", param, re.escape(segment).replace(r"\{", "{").replace(r"\}", "}")))
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    return re.compile("^" + base + "/" + "/".join(parts) + "/?$")


def index(app: func.FunctionApp, route_prefix: str) -> Index:
    found = Index()
    for function in app.get_functions():
        trigger = function.get_trigger()
        name = function.get_function_name()
        if trigger.type == "httpTrigger":
            methods = {str(getattr(m, "value", m)).upper() for m in (trigger.methods or [])} or {
                "GET",
                "POST",
                "PUT",
                "DELETE",
                "PATCH",
                "HEAD",
                "OPTIONS",
            }
            level = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
            route = trigger.route or name
            found.http.append(
                HttpFunction(
                    name, route, route_pattern(route_prefix, route), methods, level, function.get_user_function()
                )
            )
        elif trigger.type == "eventGridTrigger":
            found.eventgrid[name] = EventGridFunction(name, function.get_user_function())
        else:
            found.other.append(f"{name} ({trigger.type})")
    return found


@dataclass
class Keys:
    """Host keys, as the Functions host checks them (code= or x-functions-key)."""

    master: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    function: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    eventgrid: str | None = None  # the eventgrid_extension system key; None: not required (like Core Tools)

    def allows(self, level: str, presented: str | None) -> bool:
        if level == "anonymous":
            return True
        if level == "admin":
            return presented == self.master
        return presented in (self.function, self.master)


class Host:
    def __init__(self, app_dir: Path, *, keys: Keys | None = None, max_workers: int | None = None) -> None:
        self.app_dir = app_dir
        host_json = json.loads((app_dir / "host.json").read_text())
        self.route_prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        self.keys = keys or Keys()
        self.app = load_app(app_dir)
        self.index = index(self.app, self.route_prefix)
        self.invocations = 0
        self.web = web.Application(client_max_size=100 * 1024 * 1024)
        self.web.router.add_route("*", EVENTGRID_PATH, self._eventgrid)
        self.web.router.add_route("*", "/{tail:.*}", self._http)
        if max_workers:
            from concurrent.futures import ThreadPoolExecutor

            self.web.on_startup.append(
                lambda _app: asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers))
            )

    def describe(self) -> list[str]:
        lines = [
            f"  {f.name}: [{','.join(sorted(f.methods))}] /{self.route_prefix}/{f.route} ({f.auth_level})"
            for f in self.index.http
        ]
        lines += [f"  {name}: eventGridTrigger {EVENTGRID_PATH}?functionName={name}" for name in self.index.eventgrid]
        lines += [f"  {entry}: not served by the local host" for entry in self.index.other]
        return lines

    @staticmethod
    def _presented_key(request: web.Request) -> str | None:
        return request.headers.get("x-functions-key") or request.query.get("code")

    async def _http(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        for function in self.index.http:
            m = function.pattern.match(path)
            if not m:
                continue
            if request.method not in function.methods:
                return web.Response(status=405)
            if not self.keys.allows(function.auth_level, self._presented_key(request)):
                return web.Response(status=401)
            body = await request.read()
            req = func.HttpRequest(
                method=request.method,
                url=str(request.url),
                headers=dict(request.headers),
                params={k: v for k, v in request.query.items() if k != "code"},
                route_params={k: v for k, v in m.groupdict().items() if v is not None},
                body=body,
            )
            self.invocations += 1
            try:
                response = await asyncio.to_thread(function.target, req)
            except Exception:
                log.exception("function %s failed", function.name)
                return web.Response(status=500)
            return web.Response(
                status=response.status_code,
                body=response.get_body(),
                headers={k: v for k, v in response.headers.items() if k.lower() != "content-length"},
            )
        return web.Response(status=404, text="no function at this route")

    async def _eventgrid(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405)
        name = request.query.get("functionName", "")
        function = self.index.eventgrid.get(name)
        if function is None:
            return web.json_response({"error": f"no Event Grid function named {name!r}"}, status=404)
        if self.keys.eventgrid and self._presented_key(request) != self.keys.eventgrid:
            return web.Response(status=401)
        kind = request.headers.get("aeg-event-type", "")
        try:
            events = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(events, list):
            events = [events]
        if kind == "SubscriptionValidation":
            for event in events:
                if event.get("eventType") == "Microsoft.EventGrid.SubscriptionValidationEvent":
                    return web.json_response({"validationResponse": event["data"]["validationCode"]})
            return web.json_response({"error": "no validation event"}, status=400)
        if kind not in ("Notification", "Unsubscribe"):
            return web.json_response({"error": "aeg-event-type header is required"}, status=400)
        if kind == "Unsubscribe":
            return web.Response(status=202)
        for event in events:
            try:
                grid_event = _to_event_grid_event(event)
            except (KeyError, TypeError, ValueError) as exc:
                return web.json_response({"error": f"not an Event Grid event: {exc}"}, status=400)
            self.invocations += 1
            try:
                await asyncio.to_thread(function.target, grid_event)
            except Exception:
                log.exception("function %s failed on event %s", name, event.get("id"))
                # As the Functions host does: a failed invocation is a 500, and Event Grid retries.
                return web.Response(status=500)
        return web.Response(status=200)


def _to_event_grid_event(event: dict[str, Any]) -> func.EventGridEvent:
    if "specversion" in event:  # CloudEvents schema
        return func.EventGridEvent(
            id=event["id"],
            data=event.get("data"),
            topic=event.get("source", ""),
            subject=event.get("subject", ""),
            event_type=event["type"],
            event_time=_time(event.get("time")),
            data_version=event.get("dataversion", ""),
        )
    return func.EventGridEvent(
        id=event["id"],
        data=event.get("data"),
        topic=event.get("topic", ""),
        subject=event.get("subject", ""),
        event_type=event["eventType"],
        event_time=_time(event.get("eventTime")),
        data_version=event.get("dataVersion", ""),
    )


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def eventgrid_url(base: str, function_name: str, key: str | None = None) -> str:
    query = {"functionName": function_name}
    if key:
        query["code"] = key
    return f"{base.rstrip('/')}{EVENTGRID_PATH}?{urlencode(query)}"
