"""The local Functions host: keys, routes, the Event Grid webhook; the worker indexes and invokes.

devhost is the host's part only. Which functions exist, how a trigger's input becomes the function's argument and
how its return value becomes a response are decided by Microsoft's ``azure-functions-runtime`` (the Python worker
Azure runs on 3.13), which devhost drives in process over the host-worker protocol (``devhost/rpc``)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from .functions import ALL_METHODS, Index, entries_from_metadata, index
from .routes import request_path
from .rpc import convert
from .rpc.worker import InProcessWorker

log = logging.getLogger("devhost")
EVENTGRID_PATH = "/runtime/webhooks/eventgrid"
# The Functions host refuses HTTP request bodies over FUNCTIONS_REQUEST_BODY_SIZE_LIMIT bytes (default 100 MB)
# with 413; devhost does the same, before reading the body.
REQUEST_BODY_LIMIT_SETTING = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"
DEFAULT_REQUEST_BODY_LIMIT = 104_857_600
# Event Grid never delivers more than 1 MB in one request (an event is at most 1 MB, and a batch at most
# 1,024 KB unless it is one larger event); the room above it is for the batch's brackets and a margin.
EVENTGRID_BODY_LIMIT = 1_048_576 + 65_536
# How deep a delivery's JSON may nest: the default maximum depth of .NET's JSON readers, which the host's
# Event Grid extension parses deliveries with. ACS events nest a handful of levels.
EVENTGRID_MAX_DEPTH = 64
MIN_KEY_LENGTH = 16
# The Event Grid extension allows these origins in the CloudEvents abuse-protection handshake.
EVENTGRID_ORIGINS = (
    "eventgrid.azure.net",
    "eventgrid.azure.us",
    "eventgrid.azure.eaglex.ic.gov",
    "eventgrid.azure.microsoft.scloud",
    "eventgrid.azure.cn",
)


__all__ = ["ALL_METHODS", "Host", "Keys", "check_key", "eventgrid_url"]


def new_key() -> str:
    return secrets.token_urlsafe(32)


def check_key(name: str, key: str) -> str:
    """A key given to the host: long enough to be a secret, and not a placeholder left in a settings file."""
    if len(key) < MIN_KEY_LENGTH or any(c.isspace() or c in "<>" for c in key):
        raise ValueError(
            f"{name} must be at least {MIN_KEY_LENGTH} characters, without spaces or <placeholder> brackets"
            ' (e.g. python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return key


@dataclass
class Keys:
    """Host keys, as the Functions host checks them (code= or x-functions-key). Every key is required: the
    Event Grid webhook takes the ``eventgrid_extension`` system key (or the master key), as in Azure."""

    master: str = field(default_factory=new_key)
    function: str = field(default_factory=new_key)
    eventgrid: str = field(default_factory=new_key)  # the eventgrid_extension system key

    def allows(self, level: str, presented: str | None) -> bool:
        if level == "anonymous":
            return True
        if level == "admin":
            return _same(presented, self.master)
        return _same(presented, self.function) or _same(presented, self.master)

    def allows_eventgrid(self, presented: str | None) -> bool:
        return _same(presented, self.eventgrid) or _same(presented, self.master)


def _same(presented: str | None, key: str | None) -> bool:
    return bool(presented) and bool(key) and secrets.compare_digest(str(presented), str(key))


class BodyTooLarge(Exception):
    pass


class Host:
    """The HTTP front end: every request is routed, its key checked, its input built as the host builds it, and
    handed to the worker; the worker is started (init, index, load) when the web app starts."""

    def __init__(
        self,
        app_dir: Path,
        *,
        keys: Keys | None = None,
        request_body_limit: int = DEFAULT_REQUEST_BODY_LIMIT,
        eventgrid_body_limit: int = EVENTGRID_BODY_LIMIT,
    ) -> None:
        self.app_dir = app_dir
        host_json = json.loads((app_dir / "host.json").read_text())
        self.route_prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        self.keys = keys or Keys()
        self.request_body_limit = request_body_limit
        self.eventgrid_body_limit = eventgrid_body_limit
        self.worker = InProcessWorker(app_dir)
        self.index = Index()
        self.invocations = 0
        self.in_flight = 0  # requests being handled (a drain waits for them)
        self._idle = asyncio.Event()
        self._idle.set()
        # Bodies are read through _read_body (capped, streamed); aiohttp's own cap is only a backstop.
        self.web = web.Application(
            client_max_size=max(request_body_limit, eventgrid_body_limit) + 1, middlewares=[self._count]
        )
        self.web.router.add_route(
            "*", EVENTGRID_PATH, self._eventgrid, expect_handler=self._expect(lambda: self.eventgrid_body_limit)
        )
        self.web.router.add_route(
            "*", "/{tail:.*}", self._http, expect_handler=self._expect(lambda: self.request_body_limit)
        )
        self.web.on_startup.append(self._start_worker)
        self.web.on_cleanup.append(self._stop_worker)

    async def start(self) -> Index:
        """Start the worker and build the routing table from the functions it indexed."""
        metadata = await self.worker.start()
        self.index = index(entries_from_metadata(metadata), self.route_prefix)
        return self.index

    async def _start_worker(self, _app: web.Application) -> None:
        await self.start()
        for line in self.describe():
            print(line, flush=True)

    async def _stop_worker(self, _app: web.Application) -> None:
        await asyncio.to_thread(self.worker.stop)

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every request is counted while it is handled, so that a drain knows when the last one is done."""
        self.in_flight += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def drained(self) -> None:
        """Until no request is being handled (each one's invocations have finished and it was answered)."""
        await self._idle.wait()

    def describe(self) -> list[str]:
        prefix = "/" + self.route_prefix.strip("/") if self.route_prefix.strip("/") else ""
        lines = [
            f"  {f.name}: [{','.join(sorted(f.methods))}] {prefix}/{f.route.strip('/')} ({f.auth_level})"
            for f in self.index.http
        ]
        lines += [f"  {name}: eventGridTrigger {EVENTGRID_PATH}?functionName={name}" for name in self.index.eventgrid]
        lines += [f"  {entry}: not served by the local host" for entry in self.index.other]
        return lines

    @staticmethod
    def _presented_key(request: web.Request) -> str | None:
        return request.headers.get("x-functions-key") or request.query.get("code")

    @staticmethod
    def _expect(limit: Any) -> Any:
        """``Expect: 100-continue``: a body declared too large is refused before the client sends it."""

        async def handler(request: web.Request) -> web.StreamResponse | None:
            if request.content_length is not None and request.content_length > limit():
                return _too_large(limit())
            # What aiohttp does by default.
            if request.version == aiohttp.HttpVersion11:
                if request.headers.get("Expect", "").lower() != "100-continue":
                    raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers.get('Expect')}")
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0
            return None

        return handler

    @staticmethod
    async def _read_body(request: web.Request, limit: int) -> bytes:
        """The request body, refused (BodyTooLarge) when it is over ``limit`` bytes: by its Content-Length
        before anything is read, and, for a chunked body, as soon as more than ``limit`` bytes arrived."""
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge
        body = bytearray()
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
        return bytes(body)

    async def _invoke(self, function_id: str, arg_name: str, data: Any, metadata: dict[str, Any]) -> Any:
        """One invocation through the worker; the response, or RuntimeError with the worker's reason."""
        self.invocations += 1
        response = await self.worker.invoke(function_id, {arg_name: data}, metadata)
        if response.result.status != response.result.Success:
            raise RuntimeError(response.result.exception.message or "the function failed")
        return response

    async def _http(self, request: web.Request) -> web.StreamResponse:
        path = request_path(request.rel_url.raw_path)
        matches = [(f, m) for f in self.index.http if (m := f.pattern.match(path))]
        # As the Functions host routes: the HTTP method is part of the route, so a path served only
        # for other methods is not found (404), not "method not allowed".
        chosen = next(((f, m) for f, m in matches if request.method in f.methods), None)
        if chosen is None:
            return web.Response(status=404, text="no function at this route for this method")
        function, m = chosen
        if not self.keys.allows(function.auth_level, self._presented_key(request)):
            return web.Response(status=401)
        body: bytes | None = None
        if request.content_length:  # the host reads a body only when Content-Length > 0 (rpc/convert.py)
            try:
                body = await self._read_body(request, self.request_body_limit)
            except BodyTooLarge:
                return _too_large(self.request_body_limit)
        route_params = {k: v for k, v in m.groupdict().items() if v}  # an absent optional value is no value
        protos = self.worker.protos
        data = convert.http_input(
            protos,
            method=request.method,
            url=f"{request.scheme}://{request.host}{request.raw_path}",
            headers=request.headers.items(),
            raw_query=request.rel_url.raw_query_string,
            route_params=route_params,
            body=body,
        )
        try:
            response = await self._invoke(
                function.function_id, function.arg_name, data, convert.route_metadata(protos, route_params)
            )
            status, headers, payload = convert.http_output(response.return_value)
        except Exception as exc:
            log.error("function %s failed: %s", function.name, exc)
            return web.Response(status=500)
        return web.Response(status=status, headers=headers, body=payload)

    async def _eventgrid(self, request: web.Request) -> web.Response:
        # As in Azure: the webhook takes the eventgrid_extension system key (or the master key), as code= or
        # x-functions-key, for every request (the handshakes too), before anything else is looked at.
        if not self.keys.allows_eventgrid(self._presented_key(request)):
            return web.Response(status=401)
        name = request.query.get("functionName", "")
        function = self.index.eventgrid.get(name)
        if function is None:
            return web.json_response({"error": f"cannot find function: {name!r}"}, status=404)
        if request.method == "OPTIONS":  # the CloudEvents abuse-protection handshake
            origin = request.headers.get("WebHook-Request-Origin", "")
            allowed = origin if origin in EVENTGRID_ORIGINS else EVENTGRID_ORIGINS[0]
            return web.Response(status=200, headers={"WebHook-Allowed-Origin": allowed})
        # The extension looks at the aeg-event-type header, not the method: SubscriptionValidation, Notification
        # and Unsubscribe are served whatever the method, anything else (a GET without the header) is a 400
        # (Microsoft.Azure.WebJobs.Extensions.EventGrid, TriggerBinding/HttpRequestProcessor.cs).
        kind = request.headers.get("aeg-event-type", "").lower()
        if kind == "unsubscribe":
            return web.Response(status=202)
        if kind not in ("subscriptionvalidation", "notification"):
            return web.json_response({"error": "aeg-event-type header is required"}, status=400)
        try:
            raw = await self._read_body(request, self.eventgrid_body_limit)
        except BodyTooLarge:
            return _too_large(self.eventgrid_body_limit)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return web.json_response({"error": "body is not JSON"}, status=400)
        if _too_deep(body, EVENTGRID_MAX_DEPTH):
            return web.json_response({"error": f"JSON nested deeper than {EVENTGRID_MAX_DEPTH} levels"}, status=400)
        if kind == "subscriptionvalidation":
            code = _validation_code(body)
            if code is None:
                return web.json_response({"error": "no validation code in the request"}, status=400)
            log.info("Event Grid handshake for function %s", name)
            return web.json_response({"validationResponse": code})
        events = body if isinstance(body, list) else [body]
        if not all(isinstance(e, dict) for e in events):
            return web.json_response({"error": "expected a JSON object or an array of objects"}, status=400)

        async def run(event: dict[str, Any]) -> str | None:
            try:
                data = convert.eventgrid_input(self.worker.protos, event)
                await self._invoke(function.function_id, function.arg_name, data, {})
                return None
            except Exception as exc:
                log.error("function %s failed on event %s: %s", name, event.get("id"), exc)
                return str(exc)

        # As the Event Grid extension does: every event of the batch is invoked (concurrently), and one
        # failure fails the whole delivery with 500 and that failure's message, so Event Grid retries the batch.
        failures = [f for f in await asyncio.gather(*(run(e) for e in events)) if f is not None]
        if failures:
            return web.Response(status=500, text=failures[0])
        return web.Response(status=202)


def _too_large(limit: int) -> web.Response:
    response = web.json_response({"error": f"the request body is larger than {limit} bytes"}, status=413)
    response.force_close()  # the rest of the body is not wanted on this connection
    return response


def _too_deep(value: Any, limit: int) -> bool:
    """Whether parsed JSON nests deeper than ``limit`` arrays/objects (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _validation_code(body: Any) -> str | None:
    """The validation code of a SubscriptionValidation request, as the Event Grid extension reads it:
    ``[0].data.validationCode`` of an Event Grid schema array, or ``data.validationCode`` of a CloudEvent
    (whose data may arrive JSON-encoded as a string)."""
    try:
        data = (body[0] if isinstance(body, list) else body)["data"]
        if isinstance(data, str):
            data = json.loads(data)
        code = data["validationCode"]
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    return str(code) if code is not None else None


def eventgrid_url(base: str, function_name: str, key: str | None = None) -> str:
    query = {"functionName": function_name}
    if key:
        query["code"] = key
    return f"{base.rstrip('/')}{EVENTGRID_PATH}?{urlencode(query)}"
