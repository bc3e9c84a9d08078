"""How calls end: the app hangs up or terminates, a party leaves, the last one out ends the call.

One place decides when a call is over, so every section (media, recording, invitations) winds down the same way.
"""

from __future__ import annotations

import time
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..identifiers import model_of
from .events import Events
from .model import Connection, ServerCall


class Lifecycle(Events):
    """GetCall, HangUp, Terminate, and the rules for disconnecting a leg and ending a call."""

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
        """The app's leg leaves: its media and invitations stop, then CallDisconnected."""
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
        """End the call for everyone: legs disconnect, recordings stop, Event Grid hears CallEnded."""
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
        """A party leaves: what listened to them stops, and the call ends if nobody is left to talk to."""
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
