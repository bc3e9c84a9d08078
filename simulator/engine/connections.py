"""Calls and connections: the app places a call, connects to one going on, or its answered leg joins.

Ringing a scripted party is here too, since create, redirect, transfer and add-participant all ring the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..identifiers import is_phone, normalize
from .events import Events
from .model import Connection, Participant, ServerCall, new_connection_id


class Connections(Events):
    """CreateCall, Connect, group calls among scripted parties, and the app's leg becoming connected."""

    def _new_connection(self, call: ServerCall, callback: str, body: dict[str, Any]) -> Connection:
        intelligence = body.get("callIntelligenceOptions") or {}
        conn = Connection(
            id=new_connection_id(),
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
            self._call_started_eg(call)
            for raw in joined:
                self._participant_added_eg(call, raw)
        for raw in joined:
            self._schedule_timed_steps(call, raw)
            party = call.participants.get(raw)
            if party:
                step = party.next_step("connected", "")
                if step:
                    self.spawn(self._party_acts(conn, party, step, mode=None), "party")

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
        target_call = self._locate(locator)
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

    def _locate(self, locator: dict[str, Any]) -> ServerCall | None:
        """The call a callLocator names: by server call id, or a live group call or room by its id."""
        kind = locator.get("kind")
        if kind == "serverCallLocator" or (kind is None and locator.get("serverCallId")):
            return self.calls.get(locator.get("serverCallId") or "")
        if kind == "groupCallLocator":
            gid = locator.get("groupCallId") or ""
            return next((c for c in self.calls.values() if c.group_call_id == gid and c.state != "ended"), None)
        if kind == "roomCallLocator":
            rid = locator.get("roomId") or ""
            return next((c for c in self.calls.values() if c.room_id == rid and c.state != "ended"), None)
        raise errors.bad_request(
            "callLocator.kind must be serverCallLocator, groupCallLocator or roomCallLocator.", "callLocator"
        )

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
        self._call_started_eg(call)
        for raw in members:
            self._participant_added_eg(call, raw)
            self._schedule_timed_steps(call, raw)
        return call
