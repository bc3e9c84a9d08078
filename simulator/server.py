"""The simulator's HTTP face: ACS's REST routes (HMAC-signed), the recording store, the published
webhook keys, and a control API (``/__sim/...``) for tests and people.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from . import API_VERSION, errors, hmac_auth
from .delivery import Delivery
from .engine import Config, Engine
from .faults import FaultPlan, parse_rule
from .parties import parse_behaviour, parse_step
from .repeatability import RepeatabilityCache, StoredResponse
from .signing import JWKS_PATH, OPENID_PATH, WebhookSigner

log = logging.getLogger("simulator.server")

Handler = Callable[..., Awaitable[tuple[int, Any]]]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    repeatable: bool
    call: Callable[[Engine, dict[str, str], dict[str, Any]], Awaitable[tuple[int, Any]]]


def _r(
    method: str,
    path: str,
    operation: str,
    repeatable: bool,
    call: Callable[[Engine, dict[str, str], dict[str, Any]], Awaitable[tuple[int, Any]]],
) -> Route:
    # Raw ids ("8:acs:...", "4:+1...") contain ':' and arrive decoded in request.path.
    pattern = (
        "^"
        + re.sub(
            r"\{(\w+)\}",
            lambda m: f"(?P<{m[1]}>[^/]+)" if m[1] == "rawId" else f"(?P<{m[1]}>[^/:]+)",
            re.escape(path).replace(r"\{", "{").replace(r"\}", "}"),
        )
        + "$"
    )
    return Route(method, re.compile(pattern), operation, repeatable, call)


CC = "/calling/callConnections/{ccid}"
ROUTES: list[Route] = [
    _r("POST", "/calling/callConnections", "CreateCall", True, lambda e, p, b: e.op_create(b)),
    _r("POST", "/calling/callConnections:answer", "AnswerCall", True, lambda e, p, b: e.op_answer(b)),
    _r("POST", "/calling/callConnections:redirect", "RedirectCall", True, lambda e, p, b: e.op_redirect(b)),
    _r("POST", "/calling/callConnections:reject", "RejectCall", True, lambda e, p, b: e.op_reject(b)),
    _r("POST", "/calling/callConnections:connect", "Connect", True, lambda e, p, b: e.op_connect(b)),
    _r("GET", CC, "GetCall", False, lambda e, p, b: e.op_get_call(p["ccid"])),
    _r("DELETE", CC, "HangupCall", False, lambda e, p, b: e.op_hangup(p["ccid"])),
    _r("POST", CC + ":terminate", "TerminateCall", True, lambda e, p, b: e.op_terminate(p["ccid"], b)),
    _r(
        "POST",
        CC + ":transferToParticipant",
        "TransferToParticipant",
        True,
        lambda e, p, b: e.op_transfer(p["ccid"], b),
    ),
    _r("POST", CC + ":play", "Play", False, lambda e, p, b: e.op_play(p["ccid"], b)),
    _r(
        "POST",
        CC + ":cancelAllMediaOperations",
        "CancelAllMediaOperations",
        False,
        lambda e, p, b: e.op_cancel_all_media(p["ccid"]),
    ),
    _r("POST", CC + ":recognize", "Recognize", False, lambda e, p, b: e.op_recognize(p["ccid"], b)),
    _r(
        "POST",
        CC + ":startContinuousDtmfRecognition",
        "StartContinuousDtmfRecognition",
        False,
        lambda e, p, b: e.op_start_continuous_dtmf(p["ccid"], b),
    ),
    _r(
        "POST",
        CC + ":stopContinuousDtmfRecognition",
        "StopContinuousDtmfRecognition",
        False,
        lambda e, p, b: e.op_stop_continuous_dtmf(p["ccid"], b),
    ),
    _r("POST", CC + ":sendDtmfTones", "SendDtmfTones", True, lambda e, p, b: e.op_send_dtmf(p["ccid"], b)),
    _r("POST", CC + ":hold", "Hold", False, lambda e, p, b: e.op_hold(p["ccid"], b, True)),
    _r("POST", CC + ":unhold", "Unhold", False, lambda e, p, b: e.op_hold(p["ccid"], b, False)),
    _r("GET", CC + "/participants", "GetParticipants", False, lambda e, p, b: e.op_list_participants(p["ccid"])),
    _r("POST", CC + "/participants:add", "AddParticipant", True, lambda e, p, b: e.op_add_participant(p["ccid"], b)),
    _r(
        "POST",
        CC + "/participants:remove",
        "RemoveParticipant",
        True,
        lambda e, p, b: e.op_remove_participant(p["ccid"], b),
    ),
    _r("POST", CC + "/participants:mute", "Mute", True, lambda e, p, b: e.op_mute(p["ccid"], b)),
    _r(
        "POST",
        CC + "/participants:cancelAddParticipant",
        "CancelAddParticipant",
        True,
        lambda e, p, b: e.op_cancel_add(p["ccid"], b),
    ),
    _r(
        "GET",
        CC + "/participants/{rawId}",
        "GetParticipant",
        False,
        lambda e, p, b: e.op_get_participant(p["ccid"], urllib.parse.unquote(p["rawId"])),
    ),
    _r("POST", "/calling/recordings", "StartRecording", True, lambda e, p, b: e.op_start_recording(b)),
    _r(
        "GET",
        "/calling/recordings/{rid}",
        "GetRecordingProperties",
        False,
        lambda e, p, b: e.op_get_recording(p["rid"]),
    ),
    _r("DELETE", "/calling/recordings/{rid}", "StopRecording", False, lambda e, p, b: e.op_stop_recording(p["rid"])),
    _r(
        "POST",
        "/calling/recordings/{rid}:pause",
        "PauseRecording",
        False,
        lambda e, p, b: e.op_pause_recording(p["rid"], True),
    ),
    _r(
        "POST",
        "/calling/recordings/{rid}:resume",
        "ResumeRecording",
        False,
        lambda e, p, b: e.op_pause_recording(p["rid"], False),
    ),
]

NOT_SIMULATED = {
    "startTranscription",
    "stopTranscription",
    "updateTranscription",
    "startMediaStreaming",
    "stopMediaStreaming",
    "moveHere",
}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def _error(exc: errors.AcsError) -> web.Response:
    return _json(exc.status, exc.body(), exc.headers)


class Simulator:
    """The whole simulated service, bound to one aiohttp application."""

    def __init__(
        self,
        config: Config,
        access_key: str,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        webhook_retries: int = 3,
        eventgrid_time_scale: float = 0.01,
        eventgrid_max_attempts: int = 6,
    ) -> None:
        self.config = config
        self.access_key = access_key
        self.faults = FaultPlan()
        signer_kwargs: dict[str, str] = {"audience": audience or config.resource_id}
        if issuer:
            signer_kwargs["issuer"] = issuer
        self.signer = WebhookSigner(**signer_kwargs)
        self.delivery = Delivery(
            self.signer,
            self.faults,
            webhook_retries=webhook_retries,
            eventgrid_time_scale=eventgrid_time_scale,
            eventgrid_max_attempts=eventgrid_max_attempts,
        )
        self.engine = Engine(config, self.delivery, self.faults)
        self.repeatability = RepeatabilityCache()
        self.request_log: list[dict[str, Any]] = []
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.router.add_get(OPENID_PATH, self._openid)
        self.app.router.add_get(JWKS_PATH, self._jwks)
        self.app.router.add_route("GET", "/v1/objects/{doc}/content/{what}", self._download)
        self.app.router.add_route("DELETE", "/v1/objects/{doc}", self._delete_document)
        self._add_control_routes()
        self.app.router.add_route("*", "/calling/{tail:.*}", self._calling)
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, _app: web.Application) -> None:
        await self.delivery.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.engine.close()
        await self.delivery.close()

    # -- ACS REST ----------------------------------------------------------------------------

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        hmac_auth.verify(self.access_key, request.method, request.path_qs, request.headers, body)

    async def _calling(self, request: web.Request) -> web.StreamResponse:
        try:
            body_bytes = await request.read()
        except ConnectionResetError:  # the client went away mid-request (its process was killed)
            return web.Response(status=400)
        try:
            self._authenticate(request, body_bytes)
        except errors.AcsError as exc:
            log.info("refused %s %s: %s", request.method, request.path, exc.message)
            self.request_log.append({"method": request.method, "path": request.path, "status": exc.status})
            return _error(exc)
        if request.query.get("api-version") != API_VERSION:
            return _error(
                errors.AcsError(
                    400,
                    "UnsupportedApiVersion",
                    f"api-version must be {API_VERSION}, not {request.query.get('api-version')!r}.",
                )
            )
        route, params = self._match(request.method, request.path)
        if route is None:
            tail = request.path.rsplit(":", 1)[-1]
            if tail in NOT_SIMULATED:
                return _error(errors.AcsError(501, "NotImplemented", f"The simulator does not implement {tail}."))
            return _error(errors.AcsError(404, "NotFound", f"No operation at {request.method} {request.path}."))
        if body_bytes:
            try:
                body = json.loads(body_bytes)
            except ValueError:
                return _error(errors.bad_request("The request body is not valid JSON."))
            if not isinstance(body, dict):
                return _error(errors.bad_request("The request body must be a JSON object."))
        else:
            body = {}

        rule = self.faults.take("request", route.operation)
        if rule is not None:
            if rule.latency:
                await asyncio.sleep(rule.latency)
            if rule.status is not None:
                exc = (
                    errors.throttled(rule.retry_after or 0)
                    if rule.status == 429
                    else errors.AcsError(
                        rule.status,
                        "ServiceUnavailable" if rule.status == 503 else "InternalServerError",
                        "Injected fault.",
                        headers={"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after else {},
                    )
                )
                if not rule.retry_after:
                    exc.headers.pop("Retry-After", None)  # a 429 without Retry-After: clients must not retry POSTs
                self._log(route, params, body, exc.status, note="fault")
                return _error(exc)

        async def act() -> StoredResponse:
            try:
                status, payload = await route.call(self.engine, params, body)
            except errors.AcsError as exc:
                return StoredResponse(exc.status, json.dumps(exc.body()).encode(), exc.headers)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                # A field of the wrong JSON type (a string where an object goes, ...): the service
                # answers 400 in its envelope, not a bare 500 the SDK would retry.
                log.warning("%s: request body has a field of the wrong type", route.operation, exc_info=True)
                invalid = errors.bad_request(f"The request body is invalid: a field has the wrong type ({exc}).")
                return StoredResponse(invalid.status, json.dumps(invalid.body()).encode(), {})
            data = json.dumps(payload).encode() if payload is not None else b""
            return StoredResponse(status, data, {})

        try:
            key = (
                self.repeatability.validate(
                    request.headers.get("Repeatability-Request-ID"), request.headers.get("Repeatability-First-Sent")
                )
                if route.repeatable
                else None
            )
        except errors.AcsError as exc:
            return _error(exc)
        stored, replayed = await self.repeatability.run(key, act)
        headers = dict(stored.headers)
        if key is not None:
            headers["Repeatability-Result"] = "accepted"
        headers["x-ms-client-request-id"] = request.headers.get("x-ms-client-request-id", "")
        self._log(
            route,
            params,
            body,
            stored.status,
            note="repeated request, first result returned" if replayed else "",
            response=stored.body,
        )
        if stored.body:
            return web.Response(
                status=stored.status, body=stored.body, content_type="application/json", headers=headers
            )
        return web.Response(status=stored.status, headers=headers)

    @staticmethod
    def _match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in ROUTES:
            if route.method == method:
                m = route.pattern.match(path)
                if m:
                    return route, m.groupdict()
        return None, {}

    def _log(
        self,
        route: Route,
        params: dict[str, str],
        body: dict[str, Any],
        status: int,
        note: str = "",
        response: bytes = b"",
    ) -> None:
        engine = self.engine
        entry = {"operation": route.operation, "status": status, "params": params, "body": body}
        if response:
            entry["response"] = json.loads(response)
        self.request_log.append(entry)
        timeline = None
        if "ccid" in params and params["ccid"] in engine.connections:
            timeline = engine.connections[params["ccid"]].call.timeline
        elif "rid" in params and params["rid"] in engine.recordings:
            timeline = engine.recordings[params["rid"]].call.timeline
        elif body.get("incomingCallContext") in engine.offers:
            timeline = engine.offers[body["incomingCallContext"]].call.timeline
        elif body.get("callConnectionId") in engine.connections:
            timeline = engine.connections[body["callConnectionId"]].call.timeline
        elif isinstance(body.get("callLocator"), dict) and body["callLocator"].get("serverCallId") in engine.calls:
            timeline = engine.calls[body["callLocator"]["serverCallId"]].timeline
        elif response:
            try:
                answer = json.loads(response)
            except ValueError:
                answer = {}
            if isinstance(answer, dict) and answer.get("serverCallId") in engine.calls:
                timeline = engine.calls[answer["serverCallId"]].timeline
            elif isinstance(answer, dict) and answer.get("recordingId") in engine.recordings:
                # StartRecording located by group call or room id.
                timeline = engine.recordings[answer["recordingId"]].call.timeline
        if timeline is not None:
            context = body.get("operationContext")
            summary = f"{route.operation}" + (f" [{context}]" if context else "") + f" -> {status}"
            if note:
                summary += f" ({note})"
            timeline.add("request", summary, operation=route.operation, status=status, body=body)

    # -- webhook keys --------------------------------------------------------------------------

    async def _openid(self, request: web.Request) -> web.Response:
        return _json(200, self.signer.openid_configuration(self.config.base_url))

    async def _jwks(self, request: web.Request) -> web.Response:
        return _json(200, self.signer.jwks())

    # -- recording store -----------------------------------------------------------------------

    def _document(self, request: web.Request) -> Any:
        try:
            self._authenticate(request, b"")
        except errors.AcsError as exc:
            # The SDK sends x-ms-host as the bare host name but signs the endpoint's host[:port]. Real
            # endpoints have no port; the simulator's has, so also accept the signature over host:port.
            resource = urllib.parse.urlsplit(self.config.base_url)
            headers = CIMultiDict(request.headers)
            try:
                if not resource.port or headers.get("x-ms-host") != resource.hostname:
                    raise exc
                headers["x-ms-host"] = resource.netloc
                hmac_auth.verify(self.access_key, request.method, request.path_qs, headers, b"")
            except errors.AcsError as denied:
                raise web.HTTPUnauthorized(text=json.dumps(denied.body()), content_type="application/json") from None
        doc = self.engine.documents.get(request.match_info["doc"])
        if doc is None or doc.deleted:
            raise web.HTTPNotFound(
                text=json.dumps({"error": {"code": "NotFound", "message": "No such recording."}}),
                content_type="application/json",
            )
        return doc

    async def _download(self, request: web.Request) -> web.StreamResponse:
        doc = self._document(request)
        what = request.match_info["what"]
        if what == "acsmetadata":
            return _json(200, doc.metadata)
        if what not in ("audio", "video"):
            raise web.HTTPNotFound()
        start, end = 0, doc.size - 1
        status = 200
        header = request.headers.get("Range")
        if header:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            unsatisfiable = web.Response(status=416, headers={"Content-Range": f"bytes */{doc.size}"})
            if not m or not (m.group(1) or m.group(2)):
                return unsatisfiable
            if not m.group(1):  # a suffix range: the last N bytes
                start = max(doc.size - int(m.group(2)), 0)
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), doc.size - 1) if m.group(2) else doc.size - 1
            if start >= doc.size or end < start:
                return unsatisfiable
            status = 206
        length = end - start + 1
        headers = {"Content-Length": str(length), "Accept-Ranges": "bytes", "Content-Type": doc.content_type}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{doc.size}"
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        cut = self.faults.take("download", doc.document_id)
        limit = cut.cut_after_bytes if cut and cut.cut_after_bytes > 0 else None
        pause = cut.latency if cut else 0.0  # a slow download: this long before each MiB
        sent = 0
        doc.downloads += 1
        with open(doc.path, "rb") as fh:  # noqa: ASYNC230 - reads go through to_thread below
            fh.seek(start)
            remaining = length
            while remaining > 0:
                block = await asyncio.to_thread(fh.read, min(1024 * 1024, remaining))
                if not block:
                    break
                if pause:
                    await asyncio.sleep(pause)
                if limit is not None and sent + len(block) >= limit:
                    await response.write(block[: max(limit - sent, 0)])
                    # Drop the connection mid-body, as a network fault would.
                    if request.transport is not None:
                        request.transport.close()
                    return response
                try:
                    await response.write(block)
                except ConnectionResetError:  # the client went away (its process was killed): stop sending
                    return response
                sent += len(block)
                remaining -= len(block)
        await response.write_eof()
        return response

    async def _delete_document(self, request: web.Request) -> web.Response:
        doc = self._document(request)
        doc.deleted = True
        doc.path.unlink(missing_ok=True)
        recording = self.engine.recordings.get(doc.recording_id)
        if recording is not None:
            recording.call.timeline.add("call", f"recording chunk {doc.index} deleted from the service")
        return web.Response(status=200)

    # -- control API ---------------------------------------------------------------------------

    def _add_control_routes(self) -> None:
        r = self.app.router
        r.add_get("/__sim/health", self._c_health)
        r.add_post("/__sim/calls", self._c_place_call)
        r.add_post("/__sim/group-calls", self._c_group_call)
        r.add_get("/__sim/calls", self._c_calls)
        # A server call id holds "/" (standard base64, as ACS's): {id} may span segments, the longest routes first.
        r.add_get("/__sim/calls/{id:.+}/timeline", self._c_timeline)
        r.add_post("/__sim/calls/{id:.+}/hangup", self._c_party_hangup)
        r.add_post("/__sim/calls/{id:.+}/input", self._c_party_input)
        r.add_get("/__sim/calls/{id:.+}", self._c_call)
        r.add_post("/__sim/parties", self._c_parties)
        r.add_post("/__sim/eventgrid/subscriptions", self._c_subscribe)
        r.add_get("/__sim/eventgrid/subscriptions", self._c_subscriptions)
        r.add_get("/__sim/eventgrid/validate", self._c_validate)
        r.add_get("/__sim/eventgrid/dead-letters", self._c_dead_letters)
        r.add_post("/__sim/faults", self._c_faults)
        r.add_delete("/__sim/faults", self._c_clear_faults)
        r.add_get("/__sim/faults", self._c_list_faults)
        r.add_get("/__sim/events", self._c_events)
        r.add_get("/__sim/recordings", self._c_recordings)
        r.add_get("/__sim/requests", self._c_requests)
        r.add_get("/__sim/idle", self._c_idle)
        r.add_post("/__sim/deliveries", self._c_deliveries)

    async def _c_health(self, request: web.Request) -> web.Response:
        return _json(
            200,
            {
                "status": "ok",
                "apiVersion": API_VERSION,
                "baseUrl": self.config.base_url,
                "pendingDeliveries": self.delivery.pending,
                "webhooksInFlight": self.delivery.webhooks_in_flight,
            },
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def _c_place_call(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            behaviour = parse_behaviour({"script": body.get("script", []), "display_name": body.get("display_name")})
            call_parties = {k: parse_behaviour(v or {}) for k, v in (body.get("parties") or {}).items()}
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if not body.get("from") or not body.get("to"):
            raise web.HTTPBadRequest(text="'from' and 'to' are required")
        members = body.get("members") or []
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise web.HTTPBadRequest(text="'members' must be a list of ids already in the call")
        call, offer = self.engine.ring(
            body["from"],
            body["to"],
            label=body.get("name", ""),
            display_name=body.get("display_name"),
            custom_context=body.get("custom_context"),
            behaviour=behaviour,
            ring_timeout=body.get("ring_timeout"),
            parties=call_parties,
            members=members,
        )
        return _json(
            201, {"serverCallId": call.id, "correlationId": call.correlation_id, "incomingCallContext": offer.context}
        )

    async def _c_group_call(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        call = self.engine.start_group_call(
            body.get("members", []),
            group_call_id=body.get("group_call_id"),
            room_id=body.get("room_id"),
            label=body.get("name", ""),
        )
        return _json(201, {"serverCallId": call.id, "groupCallId": call.group_call_id, "roomId": call.room_id})

    def _find_call(self, key: str) -> Any:
        engine = self.engine
        call = engine.calls.get(key)
        if call is None and key in engine.connections:
            call = engine.connections[key].call
        if call is None:
            raise web.HTTPNotFound(text=f"no call {key}")
        return call

    def call_summary(self, call: Any) -> dict[str, Any]:
        return {
            "serverCallId": call.id,
            "label": call.timeline.label,
            "state": call.state,
            "outcome": call.outcome,
            "participants": list(call.participants),
            "connections": [{"callConnectionId": c.id, "state": c.state} for c in call.connections],
            "recordings": [
                {
                    "recordingId": r.id,
                    "state": r.state,
                    "stopped": r.stopped,
                    "documents": [d.document_id for d in r.documents],
                }
                for r in call.recordings
            ],
        }

    async def _c_calls(self, request: web.Request) -> web.Response:
        return _json(200, [self.call_summary(c) for c in self.engine.calls.values()])

    async def _c_call(self, request: web.Request) -> web.Response:
        return _json(200, self.call_summary(self._find_call(request.match_info["id"])))

    async def _c_timeline(self, request: web.Request) -> web.Response:
        call = self._find_call(request.match_info["id"])
        if request.query.get("format") == "text":
            return web.Response(text=call.timeline.render() + "\n")
        return _json(200, call.timeline.as_list())

    async def _c_party_hangup(self, request: web.Request) -> web.Response:
        call = self._find_call(request.match_info["id"])
        body = await self._body(request) if request.can_read_body else {}
        raw = body.get("participant") or next(iter(call.participants), None)
        if raw is None:
            raise web.HTTPConflict(text="nobody left to hang up")
        self.engine.party_hangs_up(call, raw)
        return _json(200, self.call_summary(call))

    async def _c_party_input(self, request: web.Request) -> web.Response:
        """A party presses keys or speaks now, outside any script."""
        call = self._find_call(request.match_info["id"])
        body = await self._body(request)
        raw = body.get("participant") or next(iter(call.participants), None)
        party = call.participants.get(raw)
        conns = call.live_connections()
        if party is None or not conns:
            raise web.HTTPConflict(text="no such party in a connected call")
        try:
            step = parse_step({k: v for k, v in body.items() if k != "participant"} | {"on": "time", "after": 0})
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        await self.engine._party_acts(conns[0], party, step, mode=None)
        return _json(200, {"ok": True})

    async def _c_parties(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        from .identifiers import normalize

        try:
            for key, spec in body.items():
                self.engine.parties[normalize(key)] = parse_behaviour(spec)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return _json(200, {"parties": sorted(self.engine.parties)})

    async def _c_subscribe(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not body.get("endpoint"):
            raise web.HTTPBadRequest(text="'endpoint' is required")
        sub = await self.delivery.subscribe(
            body["endpoint"],
            body.get("eventTypes"),
            body.get("name") or f"sub{len(self.delivery.subscriptions) + 1}",
            self.config.base_url.rstrip("/") + "/__sim/eventgrid/validate",
        )
        return _json(201 if sub.state == "Succeeded" else 202, sub.describe())

    async def _c_subscriptions(self, request: web.Request) -> web.Response:
        return _json(200, [s.describe() for s in self.delivery.subscriptions])

    async def _c_validate(self, request: web.Request) -> web.Response:
        if self.delivery.validate_manually(request.query.get("code", "")):
            return web.Response(text="Webhook successfully validated as a subscription endpoint.")
        raise web.HTTPNotFound(text="unknown validation code")

    async def _c_dead_letters(self, request: web.Request) -> web.Response:
        return _json(200, self.delivery.dead_letters)

    async def _c_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        rules = body if isinstance(body, list) else [body]
        try:
            parsed = [parse_rule(r) for r in rules]
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        for rule in parsed:
            self.faults.add(rule)
        return _json(200, self.faults.describe())

    async def _c_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return _json(200, [])

    async def _c_list_faults(self, request: web.Request) -> web.Response:
        return _json(200, {"active": self.faults.describe(), "fired": self.faults.fired})

    async def _c_events(self, request: web.Request) -> web.Response:
        return _json(200, {"webhook": self.engine.sent_events, "eventgrid": self.engine.sent_eventgrid})

    async def _c_recordings(self, request: web.Request) -> web.Response:
        return _json(
            200,
            [
                {
                    "recordingId": r.id,
                    "serverCallId": r.call.id,
                    "state": r.state,
                    "stopped": r.stopped,
                    "documents": [
                        {"documentId": d.document_id, "size": d.size, "deleted": d.deleted, "downloads": d.downloads}
                        for d in r.documents
                    ],
                }
                for r in self.engine.recordings.values()
            ],
        )

    async def _c_requests(self, request: web.Request) -> web.Response:
        return _json(200, self.request_log)

    async def _c_deliveries(self, request: web.Request) -> web.Response:
        """``{"paused": true}``: callbacks wait before their next attempt (those on their way finish);
        ``{"paused": false}``: they go on. For tests that act while the app handles no callback."""
        body = await self._body(request)
        if body.get("paused"):
            self.delivery.flowing.clear()
        else:
            self.delivery.flowing.set()
        return _json(200, {"paused": not self.delivery.flowing.is_set(), "inFlight": self.delivery.webhooks_in_flight})

    async def _c_idle(self, request: web.Request) -> web.Response:
        """Wait (bounded) until no delivery is in flight."""
        timeout = float(request.query.get("timeout", "5"))
        try:
            await asyncio.wait_for(self.delivery.idle.wait(), timeout)
        except TimeoutError:
            return _json(200, {"idle": False, "pending": self.delivery.pending})
        return _json(200, {"idle": True, "pending": 0})
