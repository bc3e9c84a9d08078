"""Transfer: the app hands its caller (or one member of a group call) to another party.

In a two-party call the app's leg leaves once the target answers; in a group call only the transferee does.
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..identifiers import model_of
from .events import Events
from .model import Connection, ServerCall


class Transfer(Events):
    """TransferCallToParticipant and the events that follow it."""

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
            self._swap_in_group(conn, call, transferee, target)
            return
        self._join(call, target)
        call.outcome = f"transferred to {target}"
        self._participant_added_eg(call, target)
        conn.state = "connected"  # so the disconnect below is sent
        self._disconnect(conn, rc.TRANSFER_ACCEPTED, context=context)
        self._schedule_timed_steps(call, target)

    def _swap_in_group(self, conn: Connection, call: ServerCall, transferee: str, target: str) -> None:
        """A participant of a group call: they leave, the target takes their place, the app stays."""
        conn.state = "connected"
        call.timeline.add("party", f"{transferee} leaves: transferred to {target}")
        self._leave(call, transferee, rc.TRANSFER_ACCEPTED)
        self._join(call, target)
        self._participant_added_eg(call, target)
        self._participants_updated(call)
        self._schedule_timed_steps(call, target)
