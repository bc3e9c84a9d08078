"""Incoming calls: a party rings one of the resource's numbers, and the app answers, redirects or rejects it.

The offer (an IncomingCall event and its incomingCallContext) can be used once and expires, as in ACS.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..identifiers import is_phone, model_of, normalize
from ..parties import Behaviour
from .events import Events
from .model import Offer, Participant, ServerCall, new_incoming_context


class IncomingCalls(Events):
    """The scenario side (``ring``) and the three pre-call answers to it (answer, redirect, reject)."""

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
            self._group_call_going_on(call, caller, members)
        offer = self._new_offer(call, caller, callee, ring_timeout)
        call.timeline.add(
            "party", f"{caller} calls {callee}" + (f" from a call with {', '.join(members)}" if members else "")
        )
        data: dict[str, Any] = {
            "to": model_of(callee),
            "from": model_of(caller),
            "serverCallId": call.id,
            "callerDisplayName": display_name or party.behaviour.display_name or "",
            "incomingCallContext": offer.context,
            "correlationId": call.correlation_id,
        }
        if custom_context:
            data["customContext"] = custom_context
        self.publish(call, "IncomingCall", f"/caller/{caller}/recipient/{callee}", data)
        self.spawn(self._ring_out(offer), "ring")
        return call, offer

    def _group_call_going_on(self, call: ServerCall, caller: str, members: list[str]) -> None:
        """The members are in the call already, so Event Grid has seen it start before the app is asked."""
        call.state = "established"  # the group call goes on whether or not the app answers
        for raw in members:
            self._join(call, raw, quiet=True)
        self._call_started_eg(call)
        for raw in [caller, *members]:
            self._participant_added_eg(call, raw)
        for raw in members:
            self._schedule_timed_steps(call, raw)

    def _new_offer(self, call: ServerCall, caller: str, callee: str, ring_timeout: float | None) -> Offer:
        """The incomingCallContext and how long it lives (a fault can shorten it)."""
        ttl = ring_timeout if ring_timeout is not None else self.config.ring_timeout
        rule = self.faults.take("incoming_context")
        if rule is not None:
            ttl = rule.ttl
        context = new_incoming_context(call.id)
        offer = Offer(context, call, caller, callee, time.monotonic(), ttl)
        self.offers[context] = offer
        return offer

    async def _ring_out(self, offer: Offer) -> None:
        await asyncio.sleep(offer.ttl)
        if offer.used_by is None and offer.call.state == "ringing":
            offer.call.timeline.add("call", f"nobody answered within {offer.ttl:g}s: the caller gave up")
            offer.call.outcome = "missed"
            self._end_call(offer.call, reason=None, notify=False)

    def _take_offer(self, context: Any, action: str) -> Offer:
        """Use up an incomingCallContext, or raise the error ACS gives for a bad, used or expired one."""
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
        self._call_started_eg(call)
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
