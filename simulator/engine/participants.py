"""Participants and invitations: add (and cancel the invitation), remove, mute, list and get.

An invitation rings its target as a scripted party answers, so its outcome follows the scenario's script.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..identifiers import is_phone, model_of
from .events import Events
from .model import Connection, Invite


class Participants(Events):
    """The participant operations of a call connection."""

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
        self.spawn(self._cancel_invite(conn, invite, url, context), "cancel-add")
        response: dict[str, Any] = {"invitationId": invitation_id}
        if context is not None:
            response["operationContext"] = context
        return 202, response

    async def _cancel_invite(self, conn: Connection, invite: Invite, url: str, context: str | None) -> None:
        """Stop a pending invitation; one already answered or failed can no longer be canceled."""
        await asyncio.sleep(0.005)
        if invite.state != "pending":
            self.emit(
                conn,
                "CancelAddParticipantFailed",
                {"invitationId": invite.invitation_id, "resultInformation": rc.info(rc.CANCEL_ADD_TOO_LATE)},
                url=url,
                context=context,
            )
            return
        invite.state = "canceled"
        if invite.task:
            invite.task.cancel()
        conn.call.timeline.add("party", f"{invite.raw_id} stops ringing (invitation canceled)")
        self.emit(
            conn,
            "CancelAddParticipantSucceeded",
            {"invitationId": invite.invitation_id, "resultInformation": rc.info(rc.SUCCESS)},
            url=url,
            context=context,
        )

    async def op_remove_participant(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "participantToRemove")
        target = self._identifier(body["participantToRemove"], "participantToRemove")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        context = body.get("operationContext")
        url = self._op_callback(conn, body)
        self.spawn(self._remove(conn, target, url, context), "remove")
        return 202, {"operationContext": context} if context is not None else {}

    async def _remove(self, conn: Connection, target: str, url: str, context: str | None) -> None:
        """Remove the participant, unless they left before the service got to it."""
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
