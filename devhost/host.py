"""The local Functions host: index, route, invoke."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import re
import secrets
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import azure.functions as func
from aiohttp import web
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from multidict import CIMultiDict

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
ALL_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"})
# The Event Grid extension allows these origins in the CloudEvents abuse-protection handshake.
EVENTGRID_ORIGINS = (
    "eventgrid.azure.net",
    "eventgrid.azure.us",
    "eventgrid.azure.eaglex.ic.gov",
    "eventgrid.azure.microsoft.scloud",
    "eventgrid.azure.cn",
)


@dataclass
class HttpFunction:
    name: str
    route: str
    pattern: re.Pattern[str]
    methods: set[str]
    auth_level: str
    target: Any
    arg_name: str = "req"
    precedence: tuple[int, ...] = ()


@dataclass
class EventGridFunction:
    name: str
    target: Any
    arg_name: str = "event"


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
    previous = sys.modules.get("function_app")
    sys.modules["function_app"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop("function_app", None)
        else:
            sys.modules["function_app"] = previous
        raise
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        raise RuntimeError(f"{path} must define exactly one FunctionApp, found {len(apps)}")
    return apps[0]


# ASP.NET Core route constraints the Functions host applies to route parameters. Constraints not listed
# here (min, max, range, length, minlength, maxlength, regex, required, datetime) are accepted but not
# enforced: the parameter then matches any one segment.
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[a-z]+",
    "guid": r"\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?",
    "double": r"-?(?:\d+\.?\d*|\.\d+)",
    "float": r"-?(?:\d+\.?\d*|\.\d+)",
    "decimal": r"-?(?:\d+\.?\d*|\.\d+)",
}
_PARAM = re.compile(r"\{([^{}]+)\}")
# Inbound precedence of a segment, as ASP.NET Core ranks routes: lower is tried first.
_LITERAL, _COMPLEX, _CONSTRAINED, _PARAMETER, _CATCH_ALL = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class _Param:
    name: str
    regex: str
    optional: bool
    catch_all: bool
    constrained: bool


def _parse_param(text: str) -> _Param:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    optional = text.endswith("?")
    text = text.rstrip("?")
    text, has_default, _default = text.partition("=")
    name, *constraints = text.split(":")
    name = name.strip()
    if not name.isidentifier():
        raise ValueError(f"route parameter {name!r} is not a name this host can serve")
    regex = r"[^/]+"
    for constraint in constraints:
        known = _CONSTRAINTS.get(constraint.strip().lower())
        if known:
            regex = known
            break
    return _Param(name, regex, optional or bool(has_default), catch_all, bool(constraints))


def _segment(segment: str) -> tuple[str, int]:
    """One path segment of a route template as (regex including its leading slash, precedence)."""
    whole = _PARAM.fullmatch(segment)
    if whole:
        param = _parse_param(whole.group(1))
        if param.catch_all:
            return f"(?:/(?P<{param.name}>.*))?", _CATCH_ALL
        piece = f"/(?P<{param.name}>{param.regex})"
        if param.optional:
            return f"(?:{piece})?", _PARAMETER
        return piece, _CONSTRAINED if param.constrained else _PARAMETER
    if not _PARAM.search(segment):
        return "/" + re.escape(segment), _LITERAL
    # A complex segment: literal text around parameters, e.g. ``{name}.{ext}``.
    pieces, pos = [], 0
    for m in _PARAM.finditer(segment):
        pieces.append(re.escape(segment[pos : m.start()]))
        param = _parse_param(m.group(1))
        # Greedy: delimiters are matched from the right, as ASP.NET Core does ({a}.{b} on x.y.z: a=x.y, b=z).
        pieces.append(f"(?P<{param.name}>{param.regex})" + ("?" if param.optional else ""))
        pos = m.end()
    pieces.append(re.escape(segment[pos:]))
    return "/" + "".join(pieces), _COMPLEX


def _segments(route: str) -> list[str]:
    return [s for s in route.strip("/").split("/") if s] if route.strip("/") else []


def route_pattern(prefix: str, route: str) -> re.Pattern[str]:
    """A Functions route template (``a/{id}``, ``{id:int}``, ``{opt?}``, ``{*rest}``) under the host's
    routePrefix as a regex over the request path. Like the host, literals match case-insensitively, an
    optional or catch-all parameter may be left out together with its slash, and a trailing slash is
    allowed."""
    body = "".join("/" + re.escape(s) for s in _segments(prefix))
    body += "".join(_segment(s)[0] for s in _segments(route))
    return re.compile("^" + body + "/?$", re.IGNORECASE)


def route_precedence(route: str) -> tuple[int, ...]:
    """How the host orders routes that match the same path: literal segments before parameters,
    constrained parameters before free ones, catch-alls last."""
    return tuple(_segment(s)[1] for s in _segments(route))


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def index(app: func.FunctionApp, route_prefix: str) -> Index:
    found = Index()
    for function in app.get_functions():
        trigger = function.get_trigger()
        name = function.get_function_name()
        if trigger.type == "httpTrigger":
            methods = {_value(m).upper() for m in (trigger.methods or [])} or set(ALL_METHODS)
            level = _value(trigger.auth_level or "function").lower()
            route = trigger.route or name
            found.http.append(
                HttpFunction(
                    name,
                    route,
                    route_pattern(route_prefix, route),
                    methods,
                    level,
                    function.get_user_function(),
                    arg_name=trigger.name,
                    precedence=route_precedence(route),
                )
            )
        elif trigger.type == "eventGridTrigger":
            found.eventgrid[name] = EventGridFunction(name, function.get_user_function(), arg_name=trigger.name)
        else:
            found.other.append(f"{name} ({trigger.type})")
    found.http.sort(key=lambda f: f.precedence)  # stable: registration order breaks ties
    return found


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


class _Context(func.Context):
    """The ``context`` argument the Python worker passes to functions that declare one."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class BodyTooLarge(Exception):
    pass


class Host:
    def __init__(
        self,
        app_dir: Path,
        *,
        keys: Keys | None = None,
        max_workers: int | None = None,
        request_body_limit: int = DEFAULT_REQUEST_BODY_LIMIT,
        eventgrid_body_limit: int = EVENTGRID_BODY_LIMIT,
    ) -> None:
        self.app_dir = app_dir
        host_json = json.loads((app_dir / "host.json").read_text())
        self.route_prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        self.keys = keys or Keys()
        self.request_body_limit = request_body_limit
        self.eventgrid_body_limit = eventgrid_body_limit
        self.app = load_app(app_dir)
        self.index = index(self.app, self.route_prefix)
        self.invocations = 0
        # Bodies are read through _read_body (capped, streamed); aiohttp's own cap is only a backstop.
        self.web = web.Application(client_max_size=max(request_body_limit, eventgrid_body_limit) + 1)
        self.web.router.add_route(
            "*", EVENTGRID_PATH, self._eventgrid, expect_handler=self._expect(lambda: self.eventgrid_body_limit)
        )
        self.web.router.add_route(
            "*", "/{tail:.*}", self._http, expect_handler=self._expect(lambda: self.request_body_limit)
        )
        if max_workers:
            from concurrent.futures import ThreadPoolExecutor

            async def use_pool(_app: web.Application) -> None:
                asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers))

            self.web.on_startup.append(use_pool)

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

    async def _call(self, name: str, target: Any, arg_name: str, value: Any) -> Any:
        """Call a user function the way the worker binds it: the trigger by its argument name, and a
        ``context`` when the function declares one; async functions on the loop, others in a thread."""
        parameters = inspect.signature(target).parameters
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        if arg_name in parameters:
            kwargs[arg_name] = value
        else:
            args = (value,)
        if "context" in parameters and arg_name != "context":
            kwargs["context"] = _Context(name, str(self.app_dir))
        self.invocations += 1
        if inspect.iscoroutinefunction(target):
            return await target(*args, **kwargs)
        return await asyncio.to_thread(target, *args, **kwargs)

    async def _http(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        matches = [(f, m) for f in self.index.http if (m := f.pattern.match(path))]
        # As the Functions host routes: the HTTP method is part of the route, so a path served only
        # for other methods is not found (404), not "method not allowed".
        chosen = next(((f, m) for f, m in matches if request.method in f.methods), None)
        if chosen is None:
            return web.Response(status=404, text="no function at this route for this method")
        function, m = chosen
        if not self.keys.allows(function.auth_level, self._presented_key(request)):
            return web.Response(status=401)
        try:
            body = await self._read_body(request, self.request_body_limit)
        except BodyTooLarge:
            return _too_large(self.request_body_limit)
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params={k: v for k, v in request.query.items() if k != "code"},
            route_params={k: v for k, v in m.groupdict().items() if v},  # an absent catch-all is no value
            body=body,
        )
        try:
            response = await self._call(function.name, function.target, function.arg_name, req)
            return _web_response(response)
        except Exception:
            log.exception("function %s failed", function.name)
            return web.Response(status=500)

    async def _eventgrid(self, request: web.Request) -> web.Response:
        if request.method not in ("POST", "OPTIONS"):
            return web.Response(status=405)
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
        try:
            converted = [_to_trigger_value(e) for e in events]
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": f"not an Event Grid event: {exc}"}, status=400)

        async def run(event: dict[str, Any], value: Any) -> bool:
            try:
                await self._call(name, function.target, function.arg_name, value)
                return True
            except Exception:
                log.exception("function %s failed on event %s", name, event.get("id"))
                return False

        # As the Event Grid extension does: every event of the batch is invoked (concurrently), and one
        # failure fails the whole delivery with 500, so Event Grid retries the batch.
        results = await asyncio.gather(*(run(e, v) for e, v in zip(events, converted, strict=True)))
        return web.Response(status=202 if all(results) else 500)


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


def _to_trigger_value(event: dict[str, Any]) -> Any:
    """What the Python worker hands an eventGridTrigger function: the azure-functions library's own
    converter decides, so an Event Grid schema event is a ``func.EventGridEvent`` and a CloudEvents
    schema event (one with ``specversion``) is a ``func.CloudEvent``."""
    datum = meta.Datum(type="json", value=json.dumps(event))
    return EventGridEventInConverter.decode(datum, trigger_metadata={})


def _web_response(result: Any) -> web.Response:
    """The function's return value as the worker and host turn it into an HTTP response."""
    if isinstance(result, str):
        return web.Response(status=200, body=result.encode(), content_type="text/plain", charset="utf-8")
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not func.HttpResponse or str")
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in result.headers.items():
        if key.lower() not in ("content-length", "transfer-encoding"):
            headers.add(key, value)
    if "content-type" not in headers:
        mimetype = result.mimetype or "text/plain"
        headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
    return web.Response(status=result.status_code, body=result.get_body() or b"", headers=headers)


def eventgrid_url(base: str, function_name: str, key: str | None = None) -> str:
    query = {"functionName": function_name}
    if key:
        query["code"] = key
    return f"{base.rstrip('/')}{EVENTGRID_PATH}?{urlencode(query)}"
