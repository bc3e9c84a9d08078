"""The front of a local cluster (``tools/cluster.py``): one address for the app, each request placed on an instance
of the scale group that serves it, as Flex Consumption's front end places requests on a scaled-out app.

Groups: ``http`` serves every HTTP-triggered function; each Event Grid function has a group of its own, named after
it, and only that group receives ``/runtime/webhooks/eventgrid?functionName=<it>``. Every instance is a whole
devhost (in Flex each group's instances load the whole app): the front alone decides which group serves what.

Within a group the front takes turns (``round_robin``), or, in ``spread`` mode, sends each mid-call callback
(``POST /<routePrefix>/callbacks/{call_ref}``) to another instance than the call's previous callback went to, so that
one call's events are handled all over the group. Membership changes while it serves (``add``, ``stop_sending``,
``remove``). A request is placed once: when the instance refuses the connection (it died, or closed its listener to
drain), nothing was sent and the next instance is tried; once any byte was sent, a lost answer is a 502 to the
caller (which retries, as ACS and Event Grid do), never a second try elsewhere.

It runs in process, on its own event loop in a daemon thread, on 127.0.0.1; ``placed()`` and ``counts()`` say which
instance served what.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from devhost.host import EVENTGRID_PATH

T = TypeVar("T")
HTTP_GROUP = "http"
MODES = ("round_robin", "spread")
# Regardless of the function timeout, Azure's front end gives an HTTP-triggered function 230 s to answer (Azure
# Load Balancer's idle timeout): https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout
UPSTREAM_SECONDS = 230.0
CONNECT_SECONDS = 5.0
BUFFERED_BODY = 8 * 1024 * 1024  # bodies up to this size are read before placing; larger ones are streamed through
# Headers that belong to one connection, not to the request or response (RFC 9110 7.6.1), and the length and framing
# the front sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)


@dataclass
class Member:
    """An instance as the front sees it."""

    name: str
    group: str
    url: str
    accepting: bool = True  # False: no new request is placed on it (draining, or removed)
    down: bool = False  # it refused a connection: it is gone (no new request either)
    in_flight: int = 0  # requests placed on it and not answered yet
    unsent: int = 0  # of those, requests whose head has not reached it yet
    answered: int = 0
    refused: int = 0
    lost: int = 0


@dataclass(frozen=True)
class Placed:
    """One request through the front: where it went and what the caller got."""

    seq: int
    method: str
    path: str  # the raw path, without the query
    group: str | None  # None: no group serves it (an unknown Event Grid function)
    function: str | None  # the Event Grid function of a webhook delivery
    call_ref: str | None  # the call of a mid-call callback
    instance: str | None  # the instance that answered, or lost it; None when none was reached
    status: int  # what the caller got
    outcome: str  # answered | lost (sent, then no answer: 502) | no_instance (503) | not_found (404)
    refused_by: tuple[str, ...] = ()  # instances that refused the connection first (nothing was sent to them)


@dataclass
class _Attempt:
    member: Member
    sent: bool = False


class Front:
    """The reverse proxy. ``start()`` it, ``add()`` instances, then point callers at ``base_url``."""

    def __init__(
        self,
        mode: str = "round_robin",
        *,
        route_prefix: str = "api",
        eventgrid_functions: Iterable[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.mode = mode
        self.eventgrid_functions = frozenset(eventgrid_functions)
        prefix = route_prefix.strip("/")
        self._callbacks = (f"/{prefix}/callbacks/" if prefix else "/callbacks/").lower()  # routes ignore case
        self._host = host
        self._lock = threading.Lock()
        self._members: dict[str, Member] = {}
        self._turns: Counter[str] = Counter()  # per group: requests placed, for taking turns
        self._last: dict[str, str] = {}  # call_ref -> the instance its latest callback went to
        self._placed: list[Placed] = []
        self._seq = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cluster-front", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.base_url = ""

    # -- life ----------------------------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._mode = mode

    def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (``port``, or a free one); the base URL."""
        self._thread.start()
        self.base_url = self._call(self._start(port))
        return self.base_url

    async def _start(self, port: int) -> str:
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_headers_sent)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),  # a connection per request: no stale ones
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_SECONDS, sock_connect=CONNECT_SECONDS),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trace_configs=[trace],
        )
        app = web.Application(client_max_size=1 << 40)  # bodies are read (or streamed) by the handler, unbounded
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{self._host}:{bound}"

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._stop(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    # -- membership ----------------------------------------------------------------------------------------------

    def add(self, name: str, group: str, url: str) -> None:
        """Place requests for ``group`` on this instance from now on."""
        with self._lock:
            if name in self._members:
                raise ValueError(f"{name} is already a member")
            self._members[name] = Member(name, group, url.rstrip("/"))

    def stop_sending(self, name: str) -> None:
        """Place no new request on this instance; those it has go on."""
        with self._lock:
            self._members[name].accepting = False

    def remove(self, name: str) -> None:
        with self._lock:
            member = self._members.get(name)
            if member is not None:
                member.accepting = False

    def members(self, group: str | None = None) -> list[Member]:
        """Copies of every instance the front knows (also those it no longer sends to), in the order added."""
        with self._lock:
            return [replace(m) for m in self._members.values() if group is None or m.group == group]

    def in_flight(self, name: str) -> int:
        with self._lock:
            return self._members[name].in_flight

    def wait_sent(self, name: str, timeout: float = 5.0) -> bool:
        """Until every request placed on this instance has reached it (its head sent), or ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._members[name].unsent:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    # -- what it did ---------------------------------------------------------------------------------------------

    def placed(self) -> list[Placed]:
        with self._lock:
            return list(self._placed)

    def counts(self, group: str | None = None) -> dict[str, int]:
        """Requests each instance answered, by instance name (every instance known, answered or not)."""
        with self._lock:
            return {m.name: m.answered for m in self._members.values() if group is None or m.group == group}

    # -- placing -------------------------------------------------------------------------------------------------

    def route(self, method: str, path: str, function_name: str | None) -> tuple[str | None, str | None, str | None]:
        """(group, Event Grid function, call_ref) of a request: the Event Grid webhook goes to its function's group
        (None for a function no group serves), anything else to the HTTP group."""
        if path == EVENTGRID_PATH:
            function = function_name or ""
            return (function if function in self.eventgrid_functions else None), function, None
        call_ref = None
        if method == "POST" and path.lower().startswith(self._callbacks):
            rest = path[len(self._callbacks) :]
            if rest and "/" not in rest:
                call_ref = rest
        return HTTP_GROUP, None, call_ref

    def _pick(self, group: str, call_ref: str | None, refused: list[str]) -> Member | None:
        with self._lock:
            live = [
                m
                for m in self._members.values()
                if m.group == group and m.accepting and not m.down and m.name not in refused
            ]
            if not live:
                return None
            turn = self._turns[group]
            self._turns[group] = turn + 1
            member = live[turn % len(live)]
            if self._mode == "spread" and call_ref is not None and len(live) > 1:
                # The group's turn, unless that is where this call's previous callback went: then the next one.
                previous = self._last.get(call_ref)
                if member.name == previous:
                    member = live[(turn + 1) % len(live)]
            if call_ref is not None:
                self._last[call_ref] = member.name
            member.in_flight += 1
            member.unsent += 1
            return member

    def _settle(self, attempt: _Attempt, outcome: str) -> None:
        with self._lock:
            member = attempt.member
            member.in_flight -= 1
            if not attempt.sent:
                member.unsent -= 1
            if outcome == "answered":
                member.answered += 1
            elif outcome == "refused":
                member.refused += 1
                member.down = True
            elif outcome == "lost":
                member.lost += 1

    def _sent(self, attempt: _Attempt) -> None:
        with self._lock:
            if not attempt.sent:
                attempt.sent = True
                attempt.member.unsent -= 1

    def _record(self, request: web.Request, group: str | None, function: str | None, call_ref: str | None,
                instance: str | None, status: int, outcome: str, refused: list[str]) -> None:
        with self._lock:
            self._placed.append(
                Placed(next(self._seq), request.method, request.rel_url.raw_path, group, function, call_ref, instance,
                       status, outcome, tuple(refused))
            )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        group, function, call_ref = self.route(request.method, request.rel_url.raw_path,
                                               request.query.get("functionName"))
        if group is None:  # as devhost answers a function it does not have
            self._record(request, None, function, None, None, 404, "not_found", [])
            return web.json_response({"error": f"cannot find function: {function!r}"}, status=404)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        data: Any = None
        if request.body_exists:
            if request.content_length is not None and request.content_length <= BUFFERED_BODY:
                data = await request.read()
            else:  # streamed through: read only once a connection is made, so a refused one leaves it unread
                data = request.content
                if request.content_length is not None:
                    headers["Content-Length"] = str(request.content_length)
        refused: list[str] = []
        assert self._session is not None
        while True:
            member = self._pick(group, call_ref, refused)
            if member is None:
                self._record(request, group, function, call_ref, None, 503, "no_instance", refused)
                return web.Response(status=503, headers={"Retry-After": "1"},
                                    text=f"no instance of the {group} group takes requests")
            attempt = _Attempt(member)
            try:
                async with self._session.request(
                    request.method,
                    URL(member.url + request.rel_url.raw_path_qs, encoded=True),
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    trace_request_ctx=SimpleNamespace(sent=lambda a=attempt: self._sent(a)),
                ) as upstream:
                    payload = await upstream.read()
                    status, upstream_headers = upstream.status, upstream.headers
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                # Nothing was sent: the instance is gone (or closed its listener); the next one is tried.
                self._settle(attempt, "refused")
                refused.append(member.name)
                continue
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # Sent, and the answer lost (the instance died holding it, or did not answer in time).
                self._settle(attempt, "lost")
                self._record(request, group, function, call_ref, member.name, 502, "lost", refused)
                return web.Response(status=502, text=f"the instance serving the request failed ({type(exc).__name__})")
            self._settle(attempt, "answered")
            self._record(request, group, function, call_ref, member.name, status, "answered", refused)
            out = CIMultiDict((k, v) for k, v in upstream_headers.items() if k.lower() not in HOP_BY_HOP)
            return web.Response(status=status, headers=out, body=payload)


async def _headers_sent(_session: Any, context: SimpleNamespace, _params: Any) -> None:
    sent = getattr(context.trace_request_ctx, "sent", None)
    if sent is not None:
        sent()


__all__ = ["HTTP_GROUP", "MODES", "Front", "Member", "Placed"]
