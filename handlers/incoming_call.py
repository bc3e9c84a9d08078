"""IncomingCall: route by the rules from settings, then answer, redirect (forward or sim-ring) or reject.

Event Grid delivers at least once. The call's reference is derived from the event id, its state
row is created before answering, and every request carries a repeatability id derived from the
event, so a redelivered IncomingCall finds the same state and gets the service's first answer
back instead of answering twice.

Redirect and sim-ring targets come from the routing rules, whose targets passed the dialing policy at start-up
(``core.settings.check_destinations``); they are checked again here before the service is asked to ring them
(a refused one rejects the call: the app never rings a number its policy refuses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.destinations import DestinationRefused
from core.events import IncomingCall
from core.executor import identifier
from core.observability import mask_id
from core.routing import AnswerAction, CallFacts, MaskAction, RedirectAction, RejectAction, route
from core.runtime import Runtime, derived_id, http_date, is_permanent
from core.state import CallState

log = logging.getLogger("handlers.incoming_call")
REPEATABILITY_WINDOW = timedelta(minutes=4)  # the service keeps repeatability ids for 5 minutes


@dataclass(frozen=True)
class Outcome:
    rule: str
    action: str  # answer | redirect | simring | reject | skipped
    call_ref: str
    detail: str = ""


def _event_time(value: str | None) -> datetime:
    if value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(UTC)


def _repeatability(call: IncomingCall, what: str, sent: datetime) -> dict[str, Any]:
    if datetime.now(UTC) - sent > REPEATABILITY_WINDOW:
        return {}  # too old for the service to remember: a plain request (it refuses a used context anyway)
    return {
        "headers": {
            "Repeatability-Request-ID": derived_id(call.event_id, what),
            "Repeatability-First-Sent": http_date(sent),
        }
    }


def handle_incoming_call(call: IncomingCall, runtime: Runtime) -> Outcome:
    settings = runtime.settings
    sent = _event_time(call.event_time)
    facts = CallFacts(
        to=call.to, caller=call.caller, at=sent, sip_headers=call.sip_headers, voip_headers=call.voip_headers
    )
    rule = route(settings.routing, facts)
    call_ref = derived_id("incoming", call.event_id)
    action = rule.action
    client = runtime.executor.client
    caller, called = mask_id(call.caller), mask_id(call.to)
    log.info("incoming call from %s to %s matched rule %s -> %s", caller, called, rule.name, action.type)
    call_vars: dict[str, str] = {}
    if isinstance(action, MaskAction):
        from handlers.masking import route_masked

        action, call_vars = route_masked(action, call.to, call.caller, runtime)
    if isinstance(action, RedirectAction):
        try:
            for target in action.targets:
                settings.dialing.policy.check(target)
        except DestinationRefused as exc:
            log.warning("rule %s redirects to a refused destination (%s): the call is rejected", rule.name, exc.reason)
            action = RejectAction(type="reject", reason="forbidden")
    try:
        if isinstance(action, RejectAction):
            client.reject_call(
                call.incoming_call_context, call_reject_reason=action.reason, **_repeatability(call, "reject", sent)
            )
            return Outcome(rule.name, "reject", call_ref, action.reason)
        if isinstance(action, RedirectAction) and len(action.targets) == 1:
            client.redirect_call(
                call.incoming_call_context, identifier(action.targets[0]), **_repeatability(call, "redirect", sent)
            )
            return Outcome(rule.name, "redirect", call_ref, action.targets[0])
        state = CallState(
            call_ref=call_ref,
            caller=call.caller,
            callee=call.to,
            server_call_id=call.server_call_id,
            correlation_id=call.correlation_id,
            vars=call_vars,
        )
        if isinstance(action, AnswerAction):
            state.flow = action.flow
            kind = "answer"
        else:
            state.simring = list(action.targets)
            state.simring_timeout = action.timeout_seconds
            kind = "simring"
        state.note(f"routed by rule {rule.name}: {kind}")
        if not runtime.store.create(state):
            log.info("state for %s exists: a redelivered IncomingCall", call_ref)
        props = client.answer_call(
            call.incoming_call_context,
            runtime.callback_url(call_ref),
            cognitive_services_endpoint=settings.cognitive_services_endpoint,
            operation_context="answer",
            **_repeatability(call, "answer", sent),
        )
        log.info("answered: call connection %s", props.call_connection_id)
        runtime.store.index(props.call_connection_id or "", call_ref)  # the control API addresses it by that id
        return Outcome(rule.name, kind, call_ref, props.call_connection_id or "")
    except Exception as exc:
        if is_permanent(exc):
            # The call was answered elsewhere, hung up, or rang out: retrying cannot help.
            log.warning("IncomingCall %s not actionable: %s", call.event_id, getattr(exc, "message", exc))
            return Outcome(rule.name, "skipped", call_ref, str(getattr(exc, "message", exc)))
        raise
