"""The simulated service: calls, connections, participants, media, recordings, and their events.

Each public ``op_*`` coroutine is one REST operation: it validates the request as the service
does, changes state, answers at once, and schedules the events that follow (in the order ACS
sends them) as tasks. Everything runs on one asyncio loop, so state needs no locks.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import errors
from . import result_codes as rc
from .delivery import Delivery
from .faults import FaultPlan
from .identifiers import IdentifierError, is_phone, model_of, normalize, raw_id_of
from .parties import TONE_CHARS, Behaviour, Step, tones_of
from .recording import (
    MAX_UNMIXED_CHANNELS,
    SAMPLE_RATE,
    Document,
    frames_for_bytes,
    metadata_document,
    write_wav,
)
from .timeline import Timeline

log = logging.getLogger("simulator.engine")

EVENT_PREFIX = "Microsoft.Communication."
VALID_TONES = set(TONE_CHARS)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Config:
    base_url: str = "http://127.0.0.1:0"
    recording_base_url: str = ""
    resource_id: str = "00000000-0000-4000-8000-000000000001"
    time_scale: float = 0.01  # service-side seconds (timeouts) are multiplied by this
    prompt_seconds: float = 0.05  # how long one prompt plays (wall clock)
    tone_seconds: float = 0.01
    ring_timeout: float = 30.0  # seconds an incoming call rings before the caller gives up
    require_https_callbacks: bool = False
    recording_dir: str = ""
    recording_seconds: float | None = None  # fixed audio length per chunk, else from the call
    recording_bytes: int | None = None  # fixed file size per chunk (benchmarks)
    recording_chunks: int = 1
    max_recording_seconds: float = 20.0
    topic: str = (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sim/providers/"
        "Microsoft.Communication/communicationServices/sim"
    )

    def scaled(self, seconds: float) -> float:
        return max(seconds * self.time_scale, 0.0)


@dataclass
class Participant:
    raw_id: str
    behaviour: Behaviour
    role: str = "participant"
    is_muted: bool = False
    is_on_hold: bool = False
    joined_at: float = field(default_factory=time.monotonic)
    script_pos: int = 0

    def model(self) -> dict[str, Any]:
        return {"identifier": model_of(self.raw_id), "isMuted": self.is_muted, "isOnHold": self.is_on_hold}

    def next_step(self, trigger: str, text: str) -> Step | None:
        """The head of the script, taken if it answers this trigger."""
        script = self.behaviour.script
        while self.script_pos < len(script) and script[self.script_pos].on == "time":
            # Timed steps run on their own clock; they do not block the reactive ones.
            self.script_pos += 1
        if self.script_pos < len(script) and script[self.script_pos].matches(trigger, text):
            self.script_pos += 1
            return script[self.script_pos - 1]
        return None


@dataclass
class MediaOp:
    kind: str  # play | recognize
    connection: Connection
    request: dict[str, Any]
    context: str | None
    callback_uri: str
    targets: list[str]
    task: asyncio.Task[None] | None = None
    done: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    input: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)


@dataclass
class Invite:
    invitation_id: str
    raw_id: str
    context: str | None
    callback_uri: str
    state: str = "pending"  # pending | accepted | failed | canceled
    task: asyncio.Task[None] | None = None


@dataclass
class Connection:
    id: str
    call: ServerCall
    callback_uri: str
    context: str | None
    cognitive_endpoint: str | None
    state: str = "connecting"
    source: str | None = None
    source_caller_id: str | None = None
    source_display_name: str | None = None
    targets: list[str] = field(default_factory=list)
    answered_by: str | None = None
    answered_for: str | None = None  # the PSTN number an inbound call was placed to
    media_queue: list[MediaOp] = field(default_factory=list)
    media_current: MediaOp | None = None
    continuous_dtmf: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    dtmf_sequence: itertools.count = field(default_factory=lambda: itertools.count(1))
    update_sequence: itertools.count = field(default_factory=lambda: itertools.count(1))
    invites: dict[str, Invite] = field(default_factory=dict)

    def properties(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "callConnectionId": self.id,
            "serverCallId": self.call.id,
            "targets": [model_of(t) for t in self.targets],
            "callConnectionState": self.state,
            "callbackUri": self.callback_uri,
            "correlationId": self.call.correlation_id,
        }
        if self.source:
            body["source"] = model_of(self.source)
        if self.source_caller_id:
            body["sourceCallerIdNumber"] = {"value": self.source_caller_id}
        if self.source_display_name:
            body["sourceDisplayName"] = self.source_display_name
        if self.answered_by:
            body["answeredBy"] = model_of(self.answered_by)["communicationUser"]
        if self.answered_for:
            body["answeredFor"] = model_of(self.answered_for)["phoneNumber"]
        return body


@dataclass
class ServerCall:
    id: str
    correlation_id: str
    timeline: Timeline
    participants: dict[str, Participant] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    state: str = "ringing"  # ringing | established | ended
    started_by: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    group_call_id: str | None = None
    room_id: str | None = None
    recordings: list[Recording] = field(default_factory=list)
    outcome: str = ""
    ever_joined: list[str] = field(default_factory=list)
    parties: dict[str, Behaviour] = field(default_factory=dict)  # this call's own scripted parties

    def live_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.state in ("connecting", "connected", "transferring")]


@dataclass
class Offer:
    context: str
    call: ServerCall
    caller: str
    callee: str
    created: float
    ttl: float
    used_by: str | None = None


@dataclass
class Recording:
    id: str
    call: ServerCall
    content_type: str
    channel_type: str
    format_type: str
    callback_uri: str | None
    ordering: list[str]
    affinity: dict[str, int]
    state: str = "active"
    started_iso: str = field(default_factory=now_iso)
    intervals: list[list[float]] = field(default_factory=list)
    stopped: bool = False
    documents: list[Document] = field(default_factory=list)
    external_storage: dict[str, Any] | None = None

    def active_seconds(self) -> float:
        end = time.monotonic()
        return sum((b if b is not None else end) - a for a, b in self.intervals)


class Engine:
    def __init__(self, config: Config, delivery: Delivery, faults: FaultPlan) -> None:
        self.config = config
        self.delivery = delivery
        self.faults = faults
        self.calls: dict[str, ServerCall] = {}
        self.connections: dict[str, Connection] = {}
        self.offers: dict[str, Offer] = {}
        self.recordings: dict[str, Recording] = {}
        self.documents: dict[str, Document] = {}
        self.parties: dict[str, Behaviour] = {}
        self.sent_events: list[dict[str, Any]] = []
        self.sent_eventgrid: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._own_recording_dir = not config.recording_dir  # a temp dir of ours: removed on close
        self._recording_dir = Path(config.recording_dir or tempfile.mkdtemp(prefix="acs-sim-recordings-"))
        self._recording_dir.mkdir(parents=True, exist_ok=True)

    # -- plumbing ----------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guard(coro, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _guard(coro: Awaitable[Any], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator task %s failed", name)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_recording_dir:
            shutil.rmtree(self._recording_dir, ignore_errors=True)

    def behaviour_of(self, raw_id: str, call: ServerCall | None = None) -> Behaviour:
        if call is not None and raw_id in call.parties:
            return call.parties[raw_id]
        return self.parties.get(raw_id) or Behaviour()

    def emit(
        self,
        conn: Connection,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        url: str | None = None,
        context: str | None = None,
        include_context: bool = True,
    ) -> None:
        """Post one mid-call event, shaped as ACS shapes it, to the app."""
        payload: dict[str, Any] = {
            "callConnectionId": conn.id,
            "serverCallId": conn.call.id,
            "correlationId": conn.call.correlation_id,
        }
        if include_context and context is not None:
            payload["operationContext"] = context
        payload.update(data or {})
        # Real payloads carry fields the spec does not list; apps must tolerate them.
        payload["version"] = "2026-03-12"
        payload["publicEventType"] = EVENT_PREFIX + name
        event = {
            "id": str(uuid.uuid4()),
            "source": f"calling/callConnections/{conn.id}",
            "type": EVENT_PREFIX + name,
            "data": payload,
            "time": now_iso(),
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "subject": f"calling/callConnections/{conn.id}",
        }
        self.sent_events.append(event)
        self.delivery.send_callback(url or conn.callback_uri, event, conn.call.timeline, key=conn.id)

    def publish(self, call: ServerCall | None, event_type: str, subject: str, data: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": str(uuid.uuid4()),
            "topic": self.config.topic,
            "subject": subject,
            "data": data,
            "eventType": EVENT_PREFIX + event_type,
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "eventTime": now_iso(),
        }
        self.sent_eventgrid.append(event)
        self.delivery.publish(event, call.timeline if call else None)
        return event

    def _calling_props(self, call: ServerCall) -> dict[str, Any]:
        starter = call.started_by or next(iter(call.participants), None) or "4:+10000000000"
        props: dict[str, Any] = {
            "startedBy": {"communicationIdentifier": model_of(starter), "role": "Attendee"},
            "serverCallId": call.id,
            "isTwoParty": len(call.ever_joined) <= 2 and call.group_call_id is None and call.room_id is None,
            "correlationId": call.correlation_id,
            "isRoomsCall": call.room_id is not None,
        }
        if call.group_call_id:
            props["group"] = {"id": call.group_call_id}
        if call.room_id:
            props["room"] = {"id": call.room_id}
        return props

    def new_call(self, label: str = "", *, group_call_id: str | None = None, room_id: str | None = None) -> ServerCall:
        server_call_id = _server_call_id()
        call = ServerCall(
            id=server_call_id,
            correlation_id=str(uuid.uuid4()),
            timeline=Timeline(server_call_id, label),
            group_call_id=group_call_id,
            room_id=room_id,
        )
        self.calls[call.id] = call
        return call

    def connection(self, call_connection_id: str, *, must_be_connected: bool = True) -> Connection:
        conn = self.connections.get(call_connection_id)
        if conn is None:
            raise errors.call_not_found(call_connection_id)
        if conn.state == "disconnected":
            raise errors.call_ended(call_connection_id)
        if must_be_connected and conn.state != "connected":
            raise errors.call_not_established(call_connection_id)
        return conn

    def _callback(self, value: Any, field_name: str = "callbackUri") -> str:
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise errors.bad_request(f"The field {field_name} is invalid: an absolute URL is required.", field_name)
        if self.config.require_https_callbacks and not value.startswith("https://"):
            raise errors.bad_request(f"The field {field_name} is invalid: Call Automation needs HTTPS.", field_name)
        return value

    def _identifier(self, value: Any, field_name: str) -> str:
        try:
            return raw_id_of(value)
        except IdentifierError as exc:
            raise errors.bad_request(f"The field {field_name} is invalid: {exc}.", field_name) from None

    @staticmethod
    def _require(body: dict[str, Any], *names: str) -> None:
        for name in names:
            if body.get(name) in (None, "", []):
                raise errors.bad_request(f"The {name} field is required.", name)

    @staticmethod
    def _caller_id(body: dict[str, Any]) -> str | None:
        value = body.get("sourceCallerIdNumber")
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            raise errors.bad_request(
                "The field sourceCallerIdNumber is invalid: a phone number model {value} is required.",
                "sourceCallerIdNumber",
            )
        return value["value"] or None

    def _op_callback(self, conn: Connection, body: dict[str, Any]) -> str:
        if body.get("operationCallbackUri"):
            return self._callback(body["operationCallbackUri"], "operationCallbackUri")
        return conn.callback_uri

    # -- incoming calls (scenario side) ------------------------------------------------------

    def ring(
        self,
        caller: str,
        callee: str,
        *,
        label: str = "",
        display_name: str | None = None,
        custom_context: dict[str, Any] | None = None,
        behaviour: Behaviour | None = None,
        ring_timeout: float | None = None,
        parties: dict[str, Behaviour] | None = None,
        members: list[str] | None = None,
    ) -> tuple[ServerCall, Offer]:
        """A party calls one of the resource's numbers: IncomingCall goes out over Event Grid.

        With ``members``, the call is a group call already going on among the caller and them, into
        which the app is invited (answering it is answering a group call)."""
        caller, callee = normalize(caller), normalize(callee)
        members = [normalize(m) for m in members or []]
        call = self.new_call(label, group_call_id=str(uuid.uuid4()) if members else None)
        call.started_by = caller
        call.parties = {normalize(k): v for k, v in (parties or {}).items()}
        party = Participant(caller, behaviour or self.behaviour_of(caller), role="caller")
        call.participants[caller] = party
        call.ever_joined.append(caller)
        if members:
            call.state = "established"  # the group call goes on whether or not the app answers
            for raw in members:
                self._join(call, raw, quiet=True)
            self.publish(call, "CallStarted", f"call/{call.id}/startedBy/{caller}", self._calling_props(call))
            for raw in [caller, *members]:
                self._participant_added_eg(call, raw)
            for raw in members:
                self._schedule_timed_steps(call, raw)
        ttl = ring_timeout if ring_timeout is not None else self.config.ring_timeout
        rule = self.faults.take("incoming_context")
        if rule is not None:
            ttl = rule.ttl
        context = _incoming_context(call.id)
        offer = Offer(context, call, caller, callee, time.monotonic(), ttl)
        self.offers[context] = offer
        call.timeline.add(
            "party", f"{caller} calls {callee}" + (f" from a call with {', '.join(members)}" if members else "")
        )
        data: dict[str, Any] = {
            "to": model_of(callee),
            "from": model_of(caller),
            "serverCallId": call.id,
            "callerDisplayName": display_name or party.behaviour.display_name or "",
            "incomingCallContext": context,
            "correlationId": call.correlation_id,
        }
        if custom_context:
            data["customContext"] = custom_context
        self.publish(call, "IncomingCall", f"/caller/{caller}/recipient/{callee}", data)
        self.spawn(self._ring_out(offer), "ring")
        return call, offer

    async def _ring_out(self, offer: Offer) -> None:
        await asyncio.sleep(offer.ttl)
        if offer.used_by is None and offer.call.state == "ringing":
            offer.call.timeline.add("call", f"nobody answered within {offer.ttl:g}s: the caller gave up")
            offer.call.outcome = "missed"
            self._end_call(offer.call, reason=None, notify=False)

    def _take_offer(self, context: Any, action: str) -> Offer:
        if not isinstance(context, str) or not context:
            raise errors.bad_request("The incomingCallContext field is required.", "incomingCallContext")
        offer = self.offers.get(context)
        if offer is None:
            raise errors.incoming_context_invalid()
        if offer.used_by is not None:
            raise errors.incoming_context_used()
        if time.monotonic() - offer.created > offer.ttl or offer.call.state == "ended":
            raise errors.incoming_context_expired()
        offer.used_by = action
        return offer

    # -- pre-call operations -----------------------------------------------------------------

    async def op_answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._require(body, "incomingCallContext", "callbackUri")
        callback = self._callback(body["callbackUri"])
        # Validate everything before the offer is taken: a refused answer must not use up the context.
        answered_by = self._identifier(body["answeredBy"], "answeredBy") if body.get("answeredBy") is not None else None
        offer = self._take_offer(body["incomingCallContext"], "answer")
        call = offer.call
        conn = self._new_connection(call, callback, body)
        conn.source = offer.callee
        conn.targets = [offer.caller]
        if is_phone(offer.callee):
            conn.answered_for = offer.callee
        if answered_by is not None:
            conn.answered_by = answered_by
        call.outcome = "answered"
        self.spawn(self._connect(conn, joined=[offer.caller]), "answer")
        return 200, conn.properties()

    def _new_connection(self, call: ServerCall, callback: str, body: dict[str, Any]) -> Connection:
        intelligence = body.get("callIntelligenceOptions") or {}
        conn = Connection(
            id=_connection_id(),
            call=call,
            callback_uri=callback,
            context=body.get("operationContext"),
            cognitive_endpoint=intelligence.get("cognitiveServicesEndpoint")
            if isinstance(intelligence, dict)
            else None,
        )
        call.connections.append(conn)
        self.connections[conn.id] = conn
        return conn

    async def _connect(self, conn: Connection, joined: list[str]) -> None:
        """The app's leg joins: CallConnected, then the roster, then Event Grid's view."""
        await asyncio.sleep(0.005)
        call = conn.call
        if conn.state != "connecting":
            return
        conn.state = "connected"
        first = call.state != "established"
        call.state = "established"
        self.emit(conn, "CallConnected", {"resultInformation": rc.info(rc.CALL_CONNECTED)}, context=conn.context)
        self._participants_updated(call)
        if first:
            self.publish(call, "CallStarted", f"call/{call.id}/startedBy/{call.started_by}", self._calling_props(call))
            for raw in joined:
                self._participant_added_eg(call, raw)
        for raw in joined:
            self._schedule_timed_steps(call, raw)
            party = call.participants.get(raw)
            if party:
                step = party.next_step("connected", "")
                if step:
                    self.spawn(self._party_acts(conn, party, step, mode=None), "party")

    def _participant_added_eg(self, call: ServerCall, raw: str) -> None:
        data = self._calling_props(call)
        data.update(
            {
                "user": {"communicationIdentifier": model_of(raw), "role": "Attendee"},
                "displayName": self.behaviour_of(raw).display_name or "",
                "participantId": str(uuid.uuid4()),
                "userAgent": "acs-simulator/1.0",
            }
        )
        self.publish(call, "CallParticipantAdded", f"call/{call.id}/participant/{raw}", data)

    def _participant_removed_eg(self, call: ServerCall, raw: str) -> None:
        data = self._calling_props(call)
        data.update(
            {
                "user": {"communicationIdentifier": model_of(raw), "role": "Attendee"},
                "displayName": self.behaviour_of(raw).display_name or "",
                "participantId": str(uuid.uuid4()),
                "userAgent": "acs-simulator/1.0",
            }
        )
        self.publish(call, "CallParticipantRemoved", f"call/{call.id}/participant/{raw}", data)

    def _participants_updated(self, call: ServerCall) -> None:
        roster = [p.model() for p in call.participants.values()]
        for conn in call.live_connections():
            if conn.state == "connected":
                self.emit(
                    conn,
                    "ParticipantsUpdated",
                    {
                        "sequenceNumber": next(conn.update_sequence),
                        "participants": roster,
                        "resultInformation": rc.info(rc.SUCCESS),
                    },
                    include_context=False,
                )

    async def op_redirect(self, body: dict[str, Any]) -> tuple[int, None]:
        self._require(body, "incomingCallContext", "target")
        target = self._identifier(body["target"], "target")
        offer = self._take_offer(body["incomingCallContext"], "redirect")
        call = offer.call
        call.outcome = f"redirected to {target}"
        call.timeline.add("call", f"redirected to {target}")
        self.spawn(
            self._ring_human(call, target, on_accept=self._redirect_accepted, on_fail=self._redirect_failed), "redirect"
        )
        return 204, None

    async def _redirect_accepted(self, call: ServerCall, target: str) -> None:
        call.state = "established"
        self._join(call, target)
        self.publish(call, "CallStarted", f"call/{call.id}/startedBy/{call.started_by}", self._calling_props(call))
        for raw in list(call.participants):
            self._participant_added_eg(call, raw)
            self._schedule_timed_steps(call, raw)

    async def _redirect_failed(self, call: ServerCall, target: str, result: rc.Result) -> None:
        call.timeline.add("call", f"redirect target {target} did not take the call ({result[2]})")
        self._end_call(call, reason=None, notify=False)

    async def op_reject(self, body: dict[str, Any]) -> tuple[int, None]:
        self._require(body, "incomingCallContext")
        reason = body.get("callRejectReason", "none")
        if reason not in ("none", "busy", "forbidden"):
            raise errors.bad_request("callRejectReason must be none, busy or forbidden.", "callRejectReason")
        offer = self._take_offer(body["incomingCallContext"], "reject")
        offer.call.outcome = f"rejected ({reason})"
        offer.call.timeline.add("call", f"rejected with reason {reason}; the caller hears the call fail")
        self._end_call(offer.call, reason=None, notify=False)
        return 204, None

    async def op_create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._require(body, "targets", "callbackUri")
        callback = self._callback(body["callbackUri"])
        if not isinstance(body["targets"], list):
            raise errors.bad_request("targets must be a list of identifiers.", "targets")
        targets = [self._identifier(t, "targets") for t in body["targets"]]
        caller_id = self._caller_id(body)
        if any(is_phone(t) for t in targets) and not caller_id:
            raise errors.bad_request("sourceCallerIdNumber is required to call a phone number.", "sourceCallerIdNumber")
        call = self.new_call(body.get("operationContext") or "outbound call")
        app_id = f"28:acs:{self.config.resource_id}_app"
        if isinstance(body.get("source"), dict):
            app_id = self._identifier(body["source"], "source")
        call.started_by = app_id
        conn = self._new_connection(call, callback, body)
        conn.source = app_id
        conn.source_caller_id = caller_id
        conn.source_display_name = body.get("sourceDisplayName")
        conn.targets = targets
        call.timeline.add("call", f"outbound call to {', '.join(targets)}")
        self.spawn(self._dial_out(conn, targets), "create")
        return 201, conn.properties()

    async def _dial_out(self, conn: Connection, targets: list[str]) -> None:
        call = conn.call
        results = await asyncio.gather(*(self._ring_result(call, t) for t in targets))
        accepted = [t for t, r in zip(targets, results, strict=True) if r is None]
        if conn.state != "connecting":
            return
        if not accepted:
            failure = results[0] or rc.CREATE_NO_ANSWER
            conn.state = "disconnected"
            call.outcome = "not answered"
            self.emit(conn, "CreateCallFailed", {"resultInformation": rc.info(failure)}, context=conn.context)
            self._end_call(call, reason=None, notify=False)
            return
        for raw in accepted:
            self._join(call, raw, quiet=True)
        call.outcome = "connected"
        await self._connect(conn, joined=accepted)

    async def _ring_result(self, call: ServerCall, target: str, timeout: float | None = None) -> rc.Result | None:
        """Ring a scripted party; None when they accept, else the failure result."""
        behaviour = self.behaviour_of(target, call)
        call.timeline.add("party", f"{target} rings")
        if behaviour.answer == "no_answer":
            await asyncio.sleep(self.config.scaled(timeout if timeout is not None else 30))
            call.timeline.add("party", f"{target} does not answer")
            return rc.CREATE_NO_ANSWER
        await asyncio.sleep(behaviour.delay)
        if behaviour.answer == "decline":
            call.timeline.add("party", f"{target} declines")
            return rc.CREATE_DECLINED
        if behaviour.answer == "busy":
            call.timeline.add("party", f"{target} is busy")
            return rc.CREATE_BUSY
        call.timeline.add("party", f"{target} answers")
        return None

    async def _ring_human(self, call: ServerCall, target: str, *, on_accept: Any, on_fail: Any) -> None:
        result = await self._ring_result(call, target)
        if result is None:
            await on_accept(call, target)
        else:
            await on_fail(call, target, result)

    def _join(self, call: ServerCall, raw: str, *, quiet: bool = False, role: str = "participant") -> Participant:
        party = Participant(raw, self.behaviour_of(raw, call), role=role)
        call.participants[raw] = party
        if raw not in call.ever_joined:
            call.ever_joined.append(raw)
        if not quiet:
            call.timeline.add("party", f"{raw} joins the call")
        return party

    async def op_connect(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._require(body, "callLocator", "callbackUri")
        callback = self._callback(body["callbackUri"])
        locator = body["callLocator"]
        if not isinstance(locator, dict):
            raise errors.bad_request("callLocator must be an object.", "callLocator")
        kind = locator.get("kind")
        target_call: ServerCall | None = None
        if kind == "serverCallLocator" or (kind is None and locator.get("serverCallId")):
            target_call = self.calls.get(locator.get("serverCallId") or "")
        elif kind == "groupCallLocator":
            gid = locator.get("groupCallId") or ""
            target_call = next((c for c in self.calls.values() if c.group_call_id == gid and c.state != "ended"), None)
        elif kind == "roomCallLocator":
            rid = locator.get("roomId") or ""
            target_call = next((c for c in self.calls.values() if c.room_id == rid and c.state != "ended"), None)
        else:
            raise errors.bad_request(
                "callLocator.kind must be serverCallLocator, groupCallLocator or roomCallLocator.", "callLocator"
            )
        if target_call is None or target_call.state == "ended":
            call = self.new_call("connect")
            conn = self._new_connection(call, callback, body)
            self.spawn(self._connect_failed(conn), "connect")
            return 200, conn.properties()
        conn = self._new_connection(target_call, callback, body)
        conn.source = f"28:acs:{self.config.resource_id}_app"
        target_call.timeline.add("call", "the app connects to the ongoing call")
        self.spawn(self._connect(conn, joined=[]), "connect")
        return 200, conn.properties()

    async def _connect_failed(self, conn: Connection) -> None:
        await asyncio.sleep(0.005)
        conn.state = "disconnected"
        conn.call.state = "ended"
        self.emit(conn, "ConnectFailed", {"resultInformation": rc.info(rc.CONNECT_NOT_FOUND)}, context=conn.context)

    def start_group_call(
        self, members: list[str], *, group_call_id: str | None = None, room_id: str | None = None, label: str = ""
    ) -> ServerCall:
        """A call among scripted parties, for the app to connect to (rooms, group calls)."""
        call = self.new_call(
            label or "group call",
            group_call_id=group_call_id or (None if room_id else str(uuid.uuid4())),
            room_id=room_id,
        )
        members = [normalize(m) for m in members]
        call.started_by = members[0] if members else None
        call.state = "established"
        for raw in members:
            self._join(call, raw)
        self.publish(call, "CallStarted", f"call/{call.id}/startedBy/{call.started_by}", self._calling_props(call))
        for raw in members:
            self._participant_added_eg(call, raw)
            self._schedule_timed_steps(call, raw)
        return call

    # -- call connection operations ----------------------------------------------------------

    async def op_get_call(self, ccid: str) -> tuple[int, dict[str, Any]]:
        conn = self.connections.get(ccid)
        if conn is None or conn.state == "disconnected":
            raise errors.call_not_found(ccid)
        return 200, conn.properties()

    async def op_hangup(self, ccid: str) -> tuple[int, None]:
        conn = self.connection(ccid, must_be_connected=False)
        call = conn.call
        call.timeline.add("call", "the app hangs up")
        humans = len(call.participants)
        if humans <= 1 and len(call.live_connections()) <= 1:
            self._end_call(call, reason=rc.CALL_ENDED_BY_APP, ended_by=conn.source)
        else:
            self._disconnect(conn, rc.CALL_ENDED_BY_APP)
        return 204, None

    async def op_terminate(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid, must_be_connected=False)
        conn.call.timeline.add("call", "the app terminates the call for everyone")
        self._end_call(conn.call, reason=rc.CALL_TERMINATED, ended_by=conn.source)
        return 204, None

    def _disconnect(self, conn: Connection, result: rc.Result | None, context: str | None = None) -> None:
        if conn.state == "disconnected":
            return
        self._cancel_media(conn, emit=False)
        for invite in conn.invites.values():
            if invite.task and not invite.task.done():
                invite.task.cancel()
        conn.state = "disconnected"
        self.emit(
            conn,
            "CallDisconnected",
            {"resultInformation": rc.info(result or rc.CALL_ENDED_BY_PARTICIPANT)},
            context=context if context is not None else conn.context,
        )

    def _end_call(
        self, call: ServerCall, *, reason: rc.Result | None, notify: bool = True, ended_by: str | None = None
    ) -> None:
        if call.state == "ended":
            return
        was_established = call.state == "established"
        for conn in call.live_connections():
            self._disconnect(conn, reason)
        for recording in call.recordings:
            if not recording.stopped:
                self._stop_recording(recording, reason="CallEnded")
        call.state = "ended"
        call.ended_at = time.monotonic()
        if was_established:
            for raw in list(call.participants):
                self._participant_removed_eg(call, raw)
            data = self._calling_props(call)
            data["callDurationInSeconds"] = round(call.ended_at - call.started_at, 3)
            data["reason"] = {"code": 0, "subCode": 0, "phrase": "This conversation has ended."}
            if ended_by:
                data["endedBy"] = {"communicationIdentifier": model_of(ended_by), "type": "Participant", "name": ""}
            self.publish(call, "CallEnded", f"call/{call.id}/startedBy/{call.started_by}", data)
        call.participants.clear()
        call.timeline.add("call", f"call ended ({call.outcome or 'ended'})")

    def party_hangs_up(self, call: ServerCall, raw: str) -> None:
        if call.state == "ended" or raw not in call.participants:
            return
        call.timeline.add("party", f"{raw} hangs up")
        self._leave(call, raw, rc.CALL_ENDED_BY_PARTICIPANT)

    def _leave(self, call: ServerCall, raw: str, result: rc.Result) -> None:
        call.participants.pop(raw, None)
        for conn in call.live_connections():
            for op in [conn.media_current, *conn.media_queue]:
                if op and raw in op.targets and op.kind == "recognize":
                    op.input.put_nowait(("gone", None))
            conn.continuous_dtmf.pop(raw, None)
        # A call ends when nobody is left, or when one person is left and no app leg listens.
        if not call.participants or (len(call.participants) == 1 and not call.live_connections()):
            if call.state == "established":
                self._participant_removed_eg(call, raw)
            self._end_call(call, reason=result, ended_by=raw)
            return
        if call.state == "established":
            self._participant_removed_eg(call, raw)
        self._participants_updated(call)

    # -- transfer and participants -----------------------------------------------------------

    async def op_transfer(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipant")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        transferee = None
        if body.get("transferee"):
            transferee = self._identifier(body["transferee"], "transferee")
            if transferee not in conn.call.participants:
                raise errors.participant_not_found(transferee)
        elif len(conn.call.participants) > 1:
            raise errors.bad_request("transferee is required to transfer in a group call.", "transferee")
        context = body.get("operationContext")
        url = self._op_callback(conn, body)
        headers = body.get("customCallingContext") or {}
        group = len(conn.call.participants) > 1
        conn.state = "transferring"
        conn.call.timeline.add(
            "call", f"transfer to {target}" + (f" with headers {json.dumps(headers)}" if headers else "")
        )
        self.spawn(self._do_transfer(conn, target, transferee, context, url, group=group), "transfer")
        return 202, {"operationContext": context} if context is not None else {}

    async def _do_transfer(
        self, conn: Connection, target: str, transferee: str | None, context: str | None, url: str, group: bool = False
    ) -> None:
        call = conn.call
        result = await self._ring_result(call, target)
        if conn.state == "disconnected":
            return
        if result is not None:
            conn.state = "connected"
            failure = {rc.CREATE_DECLINED: rc.TRANSFER_DECLINED, rc.CREATE_BUSY: rc.TRANSFER_BUSY}.get(
                result, rc.TRANSFER_NO_ANSWER
            )
            self.emit(conn, "CallTransferFailed", {"resultInformation": rc.info(failure)}, url=url, context=context)
            return
        transferee = transferee or next(iter(call.participants), None)
        conn.state = "transferAccepted"
        self.emit(
            conn,
            "CallTransferAccepted",
            {
                "resultInformation": rc.info(rc.TRANSFER_ACCEPTED),
                "transferTarget": model_of(target),
                "transferee": model_of(transferee) if transferee else None,
            },
            url=url,
            context=context,
        )
        if group and transferee:
            # A participant of a group call: they leave, the target takes their place, the app stays.
            conn.state = "connected"
            call.timeline.add("party", f"{transferee} leaves: transferred to {target}")
            self._leave(call, transferee, rc.TRANSFER_ACCEPTED)
            self._join(call, target)
            self._participant_added_eg(call, target)
            self._participants_updated(call)
            self._schedule_timed_steps(call, target)
            return
        self._join(call, target)
        call.outcome = f"transferred to {target}"
        self._participant_added_eg(call, target)
        conn.state = "connected"  # so the disconnect below is sent
        self._disconnect(conn, rc.TRANSFER_ACCEPTED, context=context)
        self._schedule_timed_steps(call, target)

    async def op_add_participant(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "participantToAdd")
        target = self._identifier(body["participantToAdd"], "participantToAdd")
        caller_id = self._caller_id(body)
        if is_phone(target) and not caller_id:
            raise errors.bad_request("sourceCallerIdNumber is required to add a phone number.", "sourceCallerIdNumber")
        timeout = body.get("invitationTimeoutInSeconds", 30)
        if not isinstance(timeout, int) or not 1 <= timeout <= 180:
            raise errors.bad_request(
                "invitationTimeoutInSeconds must be between 1 and 180.", "invitationTimeoutInSeconds"
            )
        context = body.get("operationContext")
        invite = Invite(str(uuid.uuid4()), target, context, self._op_callback(conn, body))
        conn.invites[invite.invitation_id] = invite
        headers = body.get("customCallingContext") or {}
        conn.call.timeline.add("call", f"invite {target}" + (f" with headers {json.dumps(headers)}" if headers else ""))
        invite.task = self.spawn(self._do_invite(conn, invite, timeout), "add")
        response = {
            "participant": {"identifier": model_of(target), "isMuted": False, "isOnHold": False},
            "invitationId": invite.invitation_id,
        }
        if context is not None:
            response["operationContext"] = context
        return 202, response

    async def _do_invite(self, conn: Connection, invite: Invite, timeout: int) -> None:
        call = conn.call
        result = await self._ring_result(call, invite.raw_id, timeout=timeout)
        if invite.state != "pending" or conn.state == "disconnected":
            return
        if result is not None:
            invite.state = "failed"
            failure = {rc.CREATE_DECLINED: rc.ADD_DECLINED, rc.CREATE_BUSY: rc.ADD_BUSY}.get(result, rc.ADD_NO_ANSWER)
            self.emit(
                conn,
                "AddParticipantFailed",
                {"resultInformation": rc.info(failure), "participant": model_of(invite.raw_id)},
                url=invite.callback_uri,
                context=invite.context,
            )
            return
        invite.state = "accepted"
        self._join(call, invite.raw_id)
        self.emit(
            conn,
            "AddParticipantSucceeded",
            {"resultInformation": rc.info(rc.SUCCESS), "participant": model_of(invite.raw_id)},
            url=invite.callback_uri,
            context=invite.context,
        )
        self._participants_updated(call)
        self._participant_added_eg(call, invite.raw_id)
        self._schedule_timed_steps(call, invite.raw_id)

    async def op_cancel_add(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "invitationId")
        invitation_id = body["invitationId"]
        context = body.get("operationContext")
        url = self._op_callback(conn, body)
        invite = conn.invites.get(invitation_id)
        if invite is None:
            raise errors.AcsError(404, "8523", f"Invitation {invitation_id} was not found.", target="invitationId")

        async def settle() -> None:
            await asyncio.sleep(0.005)
            if invite.state == "pending":
                invite.state = "canceled"
                if invite.task:
                    invite.task.cancel()
                conn.call.timeline.add("party", f"{invite.raw_id} stops ringing (invitation canceled)")
                self.emit(
                    conn,
                    "CancelAddParticipantSucceeded",
                    {"invitationId": invitation_id, "resultInformation": rc.info(rc.SUCCESS)},
                    url=url,
                    context=context,
                )
            else:
                self.emit(
                    conn,
                    "CancelAddParticipantFailed",
                    {"invitationId": invitation_id, "resultInformation": rc.info(rc.CANCEL_ADD_TOO_LATE)},
                    url=url,
                    context=context,
                )

        self.spawn(settle(), "cancel-add")
        response: dict[str, Any] = {"invitationId": invitation_id}
        if context is not None:
            response["operationContext"] = context
        return 202, response

    async def op_remove_participant(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "participantToRemove")
        target = self._identifier(body["participantToRemove"], "participantToRemove")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        context = body.get("operationContext")
        url = self._op_callback(conn, body)

        async def remove() -> None:
            await asyncio.sleep(0.005)
            call = conn.call
            if target not in call.participants:
                self.emit(
                    conn,
                    "RemoveParticipantFailed",
                    {"resultInformation": rc.info((404, 8523, "Participant left.")), "participant": model_of(target)},
                    url=url,
                    context=context,
                )
                return
            call.timeline.add("call", f"{target} is removed")
            self.emit(
                conn,
                "RemoveParticipantSucceeded",
                {"resultInformation": rc.info(rc.SUCCESS), "participant": model_of(target)},
                url=url,
                context=context,
            )
            self._leave(call, target, rc.CALL_ENDED_BY_APP)

        self.spawn(remove(), "remove")
        return 202, {"operationContext": context} if context is not None else {}

    async def op_mute(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipants")
        targets = body["targetParticipants"]
        if not isinstance(targets, list) or len(targets) != 1:
            raise errors.bad_request("Exactly one participant can be muted per request.", "targetParticipants")
        target = self._identifier(targets[0], "targetParticipants")
        party = conn.call.participants.get(target)
        if party is None:
            raise errors.participant_not_found(target)
        party.is_muted = True
        conn.call.timeline.add("call", f"{target} is muted")
        self._participants_updated(conn.call)
        context = body.get("operationContext")
        return 200, {"operationContext": context} if context is not None else {}

    async def op_list_participants(self, ccid: str) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        return 200, {"value": [p.model() for p in conn.call.participants.values()]}

    async def op_get_participant(self, ccid: str, raw_id: str) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        party = conn.call.participants.get(raw_id)
        if party is None:
            raise errors.participant_not_found(raw_id)
        return 200, party.model()

    # -- media -------------------------------------------------------------------------------

    def _play_sources(self, sources: Any, field_name: str) -> list[dict[str, Any]]:
        if not isinstance(sources, list) or not sources:
            raise errors.bad_request(f"{field_name} must list at least one play source.", field_name)
        for source in sources:
            kind = source.get("kind") if isinstance(source, dict) else None
            part = source.get(kind) if kind in ("file", "text", "ssml") else None
            part = part if isinstance(part, dict) else {}
            if kind == "file" and not (isinstance(part.get("uri"), str) and part["uri"]):
                raise errors.bad_request("A file play source needs file.uri.", field_name)
            elif kind == "text" and not (isinstance(part.get("text"), str) and part["text"]):
                raise errors.bad_request("A text play source needs text.text.", field_name)
            elif kind == "ssml" and not (isinstance(part.get("ssmlText"), str) and part["ssmlText"]):
                raise errors.bad_request("An ssml play source needs ssml.ssmlText.", field_name)
            elif kind not in ("file", "text", "ssml"):
                raise errors.bad_request("Play source kind must be file, text or ssml.", field_name)
        return sources

    @staticmethod
    def _source_text(source: dict[str, Any]) -> str:
        kind = source.get("kind")
        if kind == "text":
            return source["text"]["text"]
        if kind == "ssml":
            return source["ssml"]["ssmlText"]
        return source["file"]["uri"]

    def _source_problem(self, conn: Connection, sources: list[dict[str, Any]]) -> tuple[int, rc.Result] | None:
        """Why the service could not play one of these sources, as PlayFailed reports it."""
        for index, source in enumerate(sources):
            kind = source["kind"]
            if kind in ("text", "ssml") and not conn.cognitive_endpoint:
                return index, rc.AI_SERVICES_MISSING
            if kind == "file":
                uri = source["file"]["uri"]
                if not uri.startswith(("http://", "https://")) or "unreachable" in uri:
                    return index, rc.PLAY_FILE_UNREACHABLE
                if not uri.lower().split("?")[0].endswith(".wav"):
                    return index, rc.PLAY_FILE_INVALID
        return None

    def _targets(self, conn: Connection, models: Any, field_name: str) -> list[str]:
        if not models:
            return list(conn.call.participants)
        targets = [self._identifier(m, field_name) for m in models]
        for t in targets:
            if t not in conn.call.participants:
                raise errors.participant_not_found(t)
        return targets

    async def op_play(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        sources = self._play_sources(body.get("playSources"), "playSources")
        targets = self._targets(conn, body.get("playTo"), "playTo")
        op = MediaOp(
            "play",
            conn,
            {**body, "playSources": sources},
            body.get("operationContext"),
            self._op_callback(conn, body),
            targets,
        )
        self._enqueue(conn, op, interrupt=bool(body.get("interruptCallMediaOperation")))
        return 202, None

    async def op_recognize(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "recognizeInputType", "recognizeOptions")
        input_type = body["recognizeInputType"]
        if input_type not in ("dtmf", "speech", "speechOrDtmf", "choices"):
            raise errors.bad_request(
                "recognizeInputType must be dtmf, speech, speechOrDtmf or choices.", "recognizeInputType"
            )
        options = body["recognizeOptions"]
        if not isinstance(options, dict) or not options.get("targetParticipant"):
            raise errors.bad_request("recognizeOptions.targetParticipant is required.", "recognizeOptions")
        target = self._identifier(options["targetParticipant"], "recognizeOptions.targetParticipant")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        if input_type == "choices" and not options.get("choices"):
            raise errors.bad_request("choices must be given for a choices recognize.", "recognizeOptions.choices")
        dtmf = options.get("dtmfOptions") or {}
        for tone in dtmf.get("stopTones") or []:
            if tone not in VALID_TONES:
                raise errors.bad_request(f"{tone!r} is not a valid tone.", "recognizeOptions.dtmfOptions.stopTones")
        max_tones = dtmf.get("maxTonesToCollect", 1)
        if not isinstance(max_tones, int) or max_tones < 1:
            raise errors.bad_request("maxTonesToCollect must be a positive integer.", "dtmfOptions.maxTonesToCollect")
        prompts = body.get("playPrompts") or ([body["playPrompt"]] if body.get("playPrompt") else [])
        if prompts:
            self._play_sources(prompts, "playPrompts")
        interrupt = bool(body.get("interruptCallMediaOperation"))
        running = [
            op for op in [conn.media_current, *conn.media_queue] if op and op.kind == "recognize" and not op.done
        ]
        if running and not interrupt:
            raise errors.recognize_running()
        op = MediaOp(
            "recognize",
            conn,
            {**body, "prompts": prompts},
            body.get("operationContext"),
            self._op_callback(conn, body),
            [target],
        )
        self._enqueue(conn, op, interrupt=interrupt)
        return 202, None

    def _enqueue(self, conn: Connection, op: MediaOp, *, interrupt: bool) -> None:
        if interrupt:
            self._cancel_media(conn, emit=True)
        conn.media_queue.append(op)
        if conn.media_current is None:
            self._next_media(conn)

    def _next_media(self, conn: Connection) -> None:
        if conn.media_current is not None or not conn.media_queue or conn.state != "connected":
            return
        op = conn.media_queue.pop(0)
        conn.media_current = op
        runner = self._run_play(op) if op.kind == "play" else self._run_recognize(op)
        op.task = self.spawn(self._media_wrapper(op, runner), op.kind)

    async def _media_wrapper(self, op: MediaOp, runner: Awaitable[None]) -> None:
        try:
            await runner
        finally:
            op.done = True
            op.finished.set()
            conn = op.connection
            if conn.media_current is op:
                conn.media_current = None
                self._next_media(conn)

    def _cancel_media(self, conn: Connection, *, emit: bool, context_filter: str | None = None) -> None:
        ops = [op for op in [conn.media_current, *conn.media_queue] if op is not None and not op.done]
        conn.media_queue.clear()
        for op in ops:
            op.done = True
            if op.task and not op.task.done():
                op.task.cancel()
            if emit:
                name = "PlayCanceled" if op.kind == "play" else "RecognizeCanceled"
                self.emit(
                    conn,
                    name,
                    {"resultInformation": rc.info(rc.OPERATION_CANCELED)},
                    url=op.callback_uri,
                    context=op.context,
                )
        conn.media_current = None

    async def op_cancel_all_media(self, ccid: str) -> tuple[int, None]:
        conn = self.connection(ccid)
        conn.call.timeline.add("call", "all media operations canceled")
        self._cancel_media(conn, emit=True)
        return 202, None

    async def _run_play(self, op: MediaOp) -> None:
        conn = op.connection
        sources = op.request["playSources"]
        problem = self._source_problem(conn, sources)
        if problem:
            index, result = problem
            await asyncio.sleep(0.005)
            self.emit(
                conn,
                "PlayFailed",
                {"resultInformation": rc.info(result), "failedPlaySourceIndex": index},
                url=op.callback_uri,
                context=op.context,
            )
            return
        loop = bool((op.request.get("playOptions") or {}).get("loop"))
        text = " ".join(self._source_text(s) for s in sources)
        self.emit(
            conn, "PlayStarted", {"resultInformation": rc.info(rc.SUCCESS)}, url=op.callback_uri, context=op.context
        )
        conn.call.timeline.add("party", f"hears: {_short(text)}" + (" (looping)" if loop else ""))
        while True:
            await asyncio.sleep(self.config.prompt_seconds * len(sources))
            if not loop:
                break
        op.done = True
        self.emit(
            conn, "PlayCompleted", {"resultInformation": rc.info(rc.SUCCESS)}, url=op.callback_uri, context=op.context
        )
        for raw in op.targets:
            party = conn.call.participants.get(raw)
            if party:
                step = party.next_step("play", f"{text} {op.context or ''}")
                if step:
                    self.spawn(self._party_acts(conn, party, step, mode=None), "party")

    async def _run_recognize(self, op: MediaOp) -> None:
        conn = op.connection
        body = op.request
        options = body["recognizeOptions"]
        input_type = body["recognizeInputType"]
        prompts = body["prompts"]
        needs_ai = input_type in ("speech", "speechOrDtmf", "choices") or any(p["kind"] != "file" for p in prompts)
        if needs_ai and not conn.cognitive_endpoint:
            await asyncio.sleep(0.005)
            self.emit(
                conn,
                "RecognizeFailed",
                {"resultInformation": rc.info(rc.AI_SERVICES_MISSING)},
                url=op.callback_uri,
                context=op.context,
            )
            return
        problem = self._source_problem(conn, prompts) if prompts else None
        if problem:
            index, result = problem
            await asyncio.sleep(0.005)
            self.emit(
                conn,
                "RecognizeFailed",
                {"resultInformation": rc.info(result), "failedPlaySourceIndex": index},
                url=op.callback_uri,
                context=op.context,
            )
            return
        target = op.targets[0]
        party = conn.call.participants.get(target)
        prompt_text = " ".join(self._source_text(p) for p in prompts)
        if prompts:
            conn.call.timeline.add("party", f"hears: {_short(prompt_text)}")
        step = party.next_step("recognize", f"{prompt_text} {op.context or ''}") if party else None
        if step is not None and party is not None:
            self.spawn(
                self._party_acts(conn, party, step, mode="recognize", lead=self.config.prompt_seconds * len(prompts)),
                "party",
            )
        await asyncio.sleep(self.config.prompt_seconds * len(prompts))
        silence = self.config.scaled(options.get("initialSilenceTimeoutInSeconds", 5))
        inter_tone = self.config.scaled((options.get("dtmfOptions") or {}).get("interToneTimeoutInSeconds", 2))
        await self._collect(op, input_type, options, silence, inter_tone)

    async def _collect(
        self, op: MediaOp, input_type: str, options: dict[str, Any], silence: float, inter_tone: float
    ) -> None:
        conn = op.connection
        dtmf = options.get("dtmfOptions") or {}
        stop_tones = set(dtmf.get("stopTones") or [])
        max_tones = dtmf.get("maxTonesToCollect", 1)
        collected: list[str] = []

        def done(name: str, data: dict[str, Any]) -> None:
            op.done = True
            self.emit(conn, name, data, url=op.callback_uri, context=op.context)

        timeout = silence
        while True:
            try:
                kind, value = await asyncio.wait_for(op.input.get(), timeout=timeout)
            except TimeoutError:
                if collected:
                    done(
                        "RecognizeCompleted",
                        {
                            "resultInformation": rc.info(rc.RECOGNIZE_INTERDIGIT_TIMEOUT_COMPLETED),
                            "recognitionType": "dtmf",
                            "dtmfResult": {"tones": collected},
                        },
                    )
                else:
                    done("RecognizeFailed", {"resultInformation": rc.info(rc.RECOGNIZE_INITIAL_SILENCE)})
                return
            if kind == "gone":
                op.done = True
                return
            if kind == "tone":
                if input_type == "speech":
                    continue
                if input_type == "choices":
                    choice = next((c for c in options["choices"] if c.get("tone") == value), None)
                    if choice is None:
                        done("RecognizeFailed", {"resultInformation": rc.info(rc.RECOGNIZE_INCORRECT_TONE)})
                    else:
                        done(
                            "RecognizeCompleted",
                            {
                                "resultInformation": rc.info(rc.RECOGNIZE_DTMF_OPTION),
                                "recognitionType": "choices",
                                "choiceResult": {"label": choice["label"]},
                            },
                        )
                    return
                if value in stop_tones:
                    done(
                        "RecognizeCompleted",
                        {
                            "resultInformation": rc.info(rc.RECOGNIZE_STOP_TONE),
                            "recognitionType": "dtmf",
                            "dtmfResult": {"tones": collected},
                        },
                    )
                    return
                collected.append(value)
                if len(collected) >= max_tones:
                    done(
                        "RecognizeCompleted",
                        {
                            "resultInformation": rc.info(rc.RECOGNIZE_MAX_TONES),
                            "recognitionType": "dtmf",
                            "dtmfResult": {"tones": collected},
                        },
                    )
                    return
                timeout = inter_tone
                continue
            if kind == "speech":
                if input_type == "dtmf":
                    continue
                if input_type == "choices":
                    said = str(value).lower()
                    choice = next(
                        (c for c in options["choices"] if any(p.lower() in said for p in c.get("phrases", []))), None
                    )
                    if choice is None:
                        done("RecognizeFailed", {"resultInformation": rc.info(rc.RECOGNIZE_NO_MATCH)})
                    else:
                        phrase = next(p for p in choice["phrases"] if p.lower() in said)
                        done(
                            "RecognizeCompleted",
                            {
                                "resultInformation": rc.info(rc.RECOGNIZE_CHOICE_MATCHED),
                                "recognitionType": "choices",
                                "choiceResult": {
                                    "label": choice["label"],
                                    "recognizedPhrase": phrase,
                                    "confidence": 0.92,
                                },
                            },
                        )
                    return
                done(
                    "RecognizeCompleted",
                    {
                        "resultInformation": rc.info(rc.RECOGNIZE_SPEECH),
                        "recognitionType": "speech",
                        "speechResult": {"speech": value, "confidence": 0.92},
                    },
                )
                return

    async def _party_acts(
        self, conn: Connection, party: Participant, step: Step, *, mode: str | None, lead: float = 0.0
    ) -> None:
        """Carry out one script step of a party: press, say, stay silent or hang up."""
        await asyncio.sleep(lead + step.delay)
        call = conn.call
        if party.raw_id not in call.participants:
            return
        if step.hangup:
            self.party_hangs_up(call, party.raw_id)
            return
        call.timeline.add("party", f"{party.raw_id} {step.describe()}")
        if step.press:
            for tone in tones_of(step.press):
                self._party_input(call, party.raw_id, "tone", tone)
                await asyncio.sleep(self.config.tone_seconds)
        elif step.say:
            self._party_input(call, party.raw_id, "speech", step.say)

    def _party_input(self, call: ServerCall, raw: str, kind: str, value: str) -> None:
        """Route a party's keypress or words to whatever in the call is listening."""
        for conn in call.live_connections():
            current = conn.media_current
            if current and current.kind == "recognize" and raw in current.targets and not current.done:
                current.input.put_nowait((kind, value))
                return
            if kind == "tone" and raw in conn.continuous_dtmf:
                context, url = conn.continuous_dtmf[raw]
                self.emit(
                    conn,
                    "ContinuousDtmfRecognitionToneReceived",
                    {
                        "tone": value,
                        "sequenceId": next(conn.dtmf_sequence),
                        "resultInformation": rc.info(rc.CONTINUOUS_DTMF_TONE),
                    },
                    url=url,
                    context=context,
                )
                return
        call.timeline.add("call", f"nobody listens to {raw}'s {kind} {value!r}")

    def _schedule_timed_steps(self, call: ServerCall, raw: str) -> None:
        party = call.participants.get(raw)
        if party is None:
            return
        for step in party.behaviour.script:
            if step.on == "time":
                self.spawn(self._timed(call, raw, step), "timed-step")

    async def _timed(self, call: ServerCall, raw: str, step: Step) -> None:
        await asyncio.sleep(step.after or 0)
        party = call.participants.get(raw)
        if party is None or call.state == "ended":
            return
        conns = call.live_connections()
        if step.hangup or not conns:
            if step.hangup:
                call.timeline.add("party", f"{raw} hangs up")
                self._leave(call, raw, rc.CALL_ENDED_BY_PARTICIPANT)
            return
        await self._party_acts(conns[0], party, Step(on="time", press=step.press, say=step.say), mode=None)

    async def op_start_continuous_dtmf(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipant")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        party = conn.call.participants.get(target)
        if party is None:
            raise errors.participant_not_found(target)
        conn.continuous_dtmf[target] = (body.get("operationContext"), self._op_callback(conn, body))
        conn.call.timeline.add("call", f"continuous DTMF on for {target}")
        step = party.next_step("continuous_dtmf", body.get("operationContext") or "")
        if step:
            self.spawn(self._party_acts(conn, party, step, mode=None), "party")
        return 200, None

    async def op_stop_continuous_dtmf(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipant")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        conn.continuous_dtmf.pop(target, None)
        context = body.get("operationContext")
        url = self._op_callback(conn, body)

        async def stopped() -> None:
            await asyncio.sleep(0.005)
            self.emit(
                conn,
                "ContinuousDtmfRecognitionStopped",
                {"resultInformation": rc.info(rc.CONTINUOUS_DTMF_STOPPED)},
                url=url,
                context=context,
            )

        self.spawn(stopped(), "dtmf-stop")
        return 200, None

    async def op_send_dtmf(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "tones", "targetParticipant")
        tones = body["tones"]
        if not isinstance(tones, list) or not tones or any(t not in VALID_TONES for t in tones):
            raise errors.bad_request("tones must be a non-empty list of valid tones.", "tones")
        if len(tones) > 18:
            raise errors.bad_request("At most 18 tones can be sent at a time.", "tones")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        context = body.get("operationContext")
        url = self._op_callback(conn, body)

        async def send() -> None:
            await asyncio.sleep(self.config.tone_seconds * len(tones))
            keys = "".join(TONE_CHARS[t] for t in tones)
            conn.call.timeline.add("party", f"{target} hears tones {keys}")
            self.emit(
                conn,
                "SendDtmfTonesCompleted",
                {"resultInformation": rc.info(rc.SEND_DTMF_DONE)},
                url=url,
                context=context,
            )

        self.spawn(send(), "send-dtmf")
        return 202, {"operationContext": context} if context is not None else {}

    async def op_hold(self, ccid: str, body: dict[str, Any], hold: bool) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipant")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        party = conn.call.participants.get(target)
        if party is None:
            raise errors.participant_not_found(target)
        context = body.get("operationContext")
        music = body.get("playSourceInfo") if hold else None
        if music:
            self._play_sources([music], "playSourceInfo")  # a refused request must not put anyone on hold
        party.is_on_hold = hold
        conn.call.timeline.add(
            "call",
            f"{target} {'on hold' if hold else 'taken off hold'}"
            + (f" with music {_short(self._source_text(music))}" if music else ""),
        )
        if music:
            problem = self._source_problem(conn, [music])
            if problem:
                # The same cause as PlayFailed would give (no AI services for TTS, not a .wav, ...).
                failure = rc.HOLD_MUSIC_FAILED if problem[1] == rc.PLAY_FILE_UNREACHABLE else problem[1]
                self.emit(
                    conn,
                    "HoldFailed",
                    {"resultInformation": rc.info(failure)},
                    url=self._op_callback(conn, body),
                    context=context,
                )
        self._participants_updated(conn.call)
        if hold:
            step = party.next_step("hold", context or "")
            if step:
                self.spawn(self._party_acts(conn, party, step, mode=None), "party")
        return 200, None

    # -- recording ---------------------------------------------------------------------------

    async def op_start_recording(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call: ServerCall | None = None
        if body.get("callConnectionId"):
            conn = self.connection(body["callConnectionId"])
            call = conn.call
        elif isinstance(body.get("callLocator"), dict):
            locator = body["callLocator"]
            call = self.calls.get(locator.get("serverCallId") or "")
            if call is None and (locator.get("groupCallId") or locator.get("roomId")):
                # Group calls and rooms are found by their ids, as Connect finds them.
                call = next(
                    (
                        c
                        for c in self.calls.values()
                        if c.state != "ended"
                        and (
                            (locator.get("groupCallId") and c.group_call_id == locator["groupCallId"])
                            or (locator.get("roomId") and c.room_id == locator["roomId"])
                        )
                    ),
                    None,
                )
            if call is None:
                raise errors.AcsError(404, "8522", "The call to record was not found.", target="callLocator")
        else:
            raise errors.bad_request("callLocator or callConnectionId is required.", "callLocator")
        if call.state != "established":
            raise errors.AcsError(400, "8501", "Recording can start only on an established call.")
        if any(not r.stopped for r in call.recordings):
            raise errors.AcsError(400, "8563", "A recording is already in progress on this call.")
        content = body.get("recordingContentType", "audio")
        channel = body.get("recordingChannelType", "mixed")
        fmt = body.get(
            "recordingFormatType", "wav" if channel == "unmixed" else ("mp4" if content == "audioVideo" else "mp3")
        )
        valid = {
            ("audio", "mixed", "wav"),
            ("audio", "mixed", "mp3"),
            ("audio", "unmixed", "wav"),
            ("audioVideo", "mixed", "mp4"),
        }
        if (content, channel, fmt) not in valid:
            raise errors.bad_request(
                f"The combination content={content}, channel={channel}, format={fmt} is not supported.",
                "recordingFormatType",
            )
        ordering = [
            self._identifier(m, "audioChannelParticipantOrdering")
            for m in body.get("audioChannelParticipantOrdering") or []
        ]
        affinity: dict[str, int] = {}
        for entry in body.get("channelAffinity") or []:
            raw = self._identifier((entry or {}).get("participant"), "channelAffinity.participant")
            index = entry.get("channel", len(affinity))
            if not isinstance(index, int) or not 0 <= index < MAX_UNMIXED_CHANNELS:
                raise errors.bad_request(
                    f"channelAffinity.channel must be 0..{MAX_UNMIXED_CHANNELS - 1}.", "channelAffinity"
                )
            if index in affinity.values():
                raise errors.bad_request("Two participants cannot share a channel.", "channelAffinity")
            affinity[raw] = index
        if affinity and channel != "unmixed":
            raise errors.bad_request("channelAffinity applies only to unmixed recordings.", "channelAffinity")
        callback = (
            self._callback(body["recordingStateCallbackUri"], "recordingStateCallbackUri")
            if body.get("recordingStateCallbackUri")
            else None
        )
        recording = Recording(
            id=_recording_id(call.id),
            call=call,
            content_type=content,
            channel_type=channel,
            format_type=fmt,
            callback_uri=callback,
            ordering=ordering,
            affinity=affinity,
            external_storage=body.get("externalStorage"),
        )
        paused = bool(body.get("pauseOnStart"))
        recording.state = "inactive" if paused else "active"
        if not paused:
            recording.intervals.append([time.monotonic(), None])
        call.recordings.append(recording)
        self.recordings[recording.id] = recording
        call.timeline.add("call", f"recording {channel} {content} {fmt} starts" + (" paused" if paused else ""))
        self.spawn(self._recording_state(recording), "recording-state")
        return 200, {
            "recordingId": recording.id,
            "recordingState": recording.state,
            "recordingKind": "azureCommunicationServices",
        }

    async def _recording_state(self, recording: Recording) -> None:
        await asyncio.sleep(0.005)
        for conn in recording.call.connections:
            if conn.state in ("connected", "transferring") or recording.stopped:
                self.emit(
                    conn,
                    "RecordingStateChanged",
                    {
                        "recordingId": recording.id,
                        "state": recording.state,
                        "startDateTime": recording.started_iso,
                        "recordingKind": "azureCommunicationServices",
                        "resultInformation": rc.info(rc.RECORDING_STATE),
                    },
                    url=recording.callback_uri,
                    include_context=False,
                )
                return

    def recording(self, recording_id: str) -> Recording:
        recording = self.recordings.get(recording_id)
        if recording is None or recording.stopped:
            raise errors.recording_not_found(recording_id)
        return recording

    async def op_get_recording(self, recording_id: str) -> tuple[int, dict[str, Any]]:
        recording = self.recording(recording_id)
        return 200, {
            "recordingId": recording.id,
            "recordingState": recording.state,
            "recordingKind": "azureCommunicationServices",
        }

    async def op_pause_recording(self, recording_id: str, pause: bool) -> tuple[int, None]:
        recording = self.recording(recording_id)
        wanted = "inactive" if pause else "active"
        if recording.state != wanted:
            recording.state = wanted
            if pause and recording.intervals and recording.intervals[-1][1] is None:
                recording.intervals[-1][1] = time.monotonic()
            if not pause:
                recording.intervals.append([time.monotonic(), None])
            recording.call.timeline.add("call", f"recording {'paused' if pause else 'resumed'}")
            self.spawn(self._recording_state(recording), "recording-state")
        return 202, None

    async def op_stop_recording(self, recording_id: str) -> tuple[int, None]:
        recording = self.recording(recording_id)
        self._stop_recording(recording, reason="SessionEnded")
        return 204, None

    def _stop_recording(self, recording: Recording, reason: str) -> None:
        if recording.intervals and recording.intervals[-1][1] is None:
            recording.intervals[-1][1] = time.monotonic()
        recording.state = "inactive"
        recording.stopped = True
        recording.call.timeline.add("call", "recording stops")
        self.spawn(self._recording_state(recording), "recording-state")
        self.spawn(self._produce_files(recording, reason), "recording-files")

    def _channel_map(self, recording: Recording) -> dict[int, str]:
        """Channel index -> participant, as ACS assigns unmixed channels (affinity, ordering, join order)."""
        joined = [raw for raw in recording.call.ever_joined]
        channels: dict[int, str] = {idx: raw for raw, idx in recording.affinity.items()}
        rest = [r for r in recording.ordering + joined if r not in recording.affinity]
        seen: set[str] = set(recording.affinity)
        next_index = 0
        for raw in rest:
            if raw in seen:
                continue
            seen.add(raw)
            while next_index in channels:
                next_index += 1
            if next_index >= MAX_UNMIXED_CHANNELS:
                break
            channels[next_index] = raw
        return dict(sorted(channels.items()))

    async def _produce_files(self, recording: Recording, reason: str) -> None:
        await asyncio.sleep(0.01)
        cfg = self.config
        unmixed = recording.channel_type == "unmixed"
        channel_map = self._channel_map(recording)
        # A channel pinned by affinity beyond the participants leaves the channels before it silent.
        channels = (max(channel_map) + 1 if channel_map else 1) if unmixed else 1
        seconds = cfg.recording_seconds
        if seconds is None:
            # Wall-clock time runs faster than service time by 1/time_scale; cap it for tests.
            seconds = min(max(recording.active_seconds() / max(cfg.time_scale, 1e-6), 1.0), cfg.max_recording_seconds)
        chunks = max(cfg.recording_chunks, 1)
        start_iso = recording.started_iso
        duration_ms = int(seconds * 1000)
        pause_resume = []
        for (_, b), (c, _) in zip(recording.intervals, recording.intervals[1:], strict=False):
            paused_at = datetime.fromtimestamp(time.time() - (time.monotonic() - b), UTC) if b else datetime.now(UTC)
            start = paused_at.isoformat().replace("+00:00", "Z")  # when the pause began, not when files are written
            # In service time, like chunkDuration: wall-clock time runs 1/time_scale faster.
            paused_ms = (c - b) * 1000 / max(cfg.time_scale, 1e-6) if b else 0.0
            pause_resume.append({"startTime": start, "duration": round(paused_ms, 1)})
        chunk_infos = []
        for index in range(chunks):
            document_id = str(uuid.uuid4())
            path = self._recording_dir / f"{document_id}.{recording.format_type}"
            frames = (
                frames_for_bytes(cfg.recording_bytes, channels) if cfg.recording_bytes else int(seconds * SAMPLE_RATE)
            )
            size = await asyncio.to_thread(
                write_wav,
                path,
                channels=channels,
                frames=frames,
                mixed_sources=1 if unmixed else max(len(channel_map), 1),
                silent=frozenset(range(channels)) - set(channel_map) if unmixed else frozenset(),
            )
            participants = [
                {"participantId": raw, "channel": i} if unmixed else {"participantId": raw}
                for i, raw in channel_map.items()
            ]
            metadata = metadata_document(
                resource_id=cfg.resource_id,
                call_id=recording.call.correlation_id,
                document_id=document_id,
                index=index,
                start_time=start_iso,
                duration_ms=int(frames * 1000 / SAMPLE_RATE),
                content_type=recording.content_type,
                channel_type=recording.channel_type,
                format_type=recording.format_type,
                channels=channels,
                participants=participants,
                pause_resume=pause_resume,
            )
            doc = Document(
                document_id,
                recording.id,
                index,
                path,
                size,
                metadata,
                content_type="audio/wav" if recording.format_type == "wav" else "application/octet-stream",
            )
            self.documents[document_id] = doc
            recording.documents.append(doc)
            base = (cfg.recording_base_url or cfg.base_url).rstrip("/")
            media = "audio" if recording.content_type == "audio" else "video"
            info = {
                "documentId": document_id,
                "index": index,
                "endReason": reason if index == chunks - 1 else "ChunkIsFull",
                "contentLocation": f"{base}/v1/objects/{document_id}/content/{media}",
                "metadataLocation": f"{base}/v1/objects/{document_id}/content/acsmetadata",
                "deleteLocation": f"{base}/v1/objects/{document_id}",
            }
            container_url = (recording.external_storage or {}).get("recordingDestinationContainerUrl")
            if container_url:
                # Bring your own storage: the service writes the files into the customer's container.
                folder = f"{datetime.now(UTC):%Y%m%d}/{recording.call.correlation_id}/{recording.id[:32]}"
                content_url, metadata_url = await asyncio.to_thread(
                    write_to_customer_container, container_url, folder, doc)
                info = {"documentId": document_id, "index": index, "endReason": info["endReason"],
                        "contentLocation": content_url, "metadataLocation": metadata_url}
                recording.call.timeline.add("call", f"recording chunk {index} written into {container_url}")
            chunk_infos.append(info)
            recording.call.timeline.add("call", f"recording chunk {index} ready: {size} bytes, {channels} channel(s)")
        data = {
            "recordingStorageInfo": {"recordingChunks": chunk_infos},
            "recordingStartTime": start_iso,
            "recordingDurationMs": duration_ms * chunks,
            "recordingContentType": recording.content_type.replace("audioVideo", "AudioVideo").capitalize()
            if recording.content_type == "audio"
            else "AudioVideo",
            "recordingChannelType": recording.channel_type.capitalize(),
            "recordingFormatType": recording.format_type.capitalize(),
            "sessionEndReason": "CallEnded" if reason == "CallEnded" else "SessionEnded",
        }
        self.publish(
            recording.call,
            "RecordingFileStatusUpdated",
            f"/recording/call/{recording.call.correlation_id}/serverCallId/{recording.call.id}",
            data,
        )


AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key: it stands in for the ACS resource's managed identity, which the
# real service uses to write into a customer's container (the customer grants it Storage Blob Data Contributor).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def write_to_customer_container(container_url: str, folder: str, doc: Document) -> tuple[str, str]:
    """Upload a chunk and its metadata into the given container; return their URLs."""
    from azure.storage.blob import ContainerClient

    if f"/{AZURITE_ACCOUNT}/" not in container_url + "/":
        raise ValueError(f"the simulator can only write into Azurite containers, not {container_url}")
    container = ContainerClient.from_container_url(
        container_url, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY})
    content = container.get_blob_client(f"{folder}/{doc.document_id}.{doc.path.suffix.lstrip('.')}")
    with open(doc.path, "rb") as fh:
        content.upload_blob(fh, overwrite=True, max_concurrency=4)
    metadata = container.get_blob_client(f"{folder}/{doc.document_id}.metadata.json")
    metadata.upload_blob(json.dumps(doc.metadata).encode(), overwrite=True)
    return content.url, metadata.url


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_call_id() -> str:
    raw = json.dumps({"Id": str(uuid.uuid4()), "Region": "sim"}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _connection_id() -> str:
    return f"{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:4]}-sim-{uuid.uuid4().hex[:12]}"


def _recording_id(server_call_id: str) -> str:
    raw = json.dumps({"PlatformEndpointId": str(uuid.uuid4()), "ResourceSpecificId": server_call_id[:16]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _incoming_context(server_call_id: str) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    claims = (
        base64.urlsafe_b64encode(json.dumps({"cc": server_call_id, "n": uuid.uuid4().hex}).encode())
        .decode()
        .rstrip("=")
    )
    return f"{header}.{claims}."
