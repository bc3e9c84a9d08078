"""IncomingCall: route by the rules from settings, then answer, redirect (forward or sim-ring) or reject.

Event Grid delivers at least once. The call's reference is derived from the event id, its state
row is created before answering, and every request carries a repeatability id derived from the
event, so a redelivered IncomingCall finds the same state and gets the service's first answer
back instead of answering twice.

Redirect and sim-ring targets come from the routing rules, whose targets passed the dialing policy at start-up
(``core.platform.settings.check_destinations``); they are checked again here before the service is asked to ring them
(a refused one rejects the call: the app never rings a number its policy refuses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.calls.events import IncomingCall
from core.calls.executor import is_permanent
from core.calls.repeatability import derived_id
from core.calls.routing import AnswerAction, CallFacts, MaskAction, RedirectAction, RejectAction, route
from core.calls.state import CallState
from core.outbound.destinations import DestinationRefused
from core.platform.observability import mask_id
from core.services import Services

log = logging.getLogger("handlers.incoming_call")


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


def _repeat(call: IncomingCall, what: str, sent: datetime) -> tuple[str, datetime]:
    """The repeatability of a request answering this call: an id derived from the event, first sent at its time."""
    return derived_id(call.event_id, what), sent


def handle_incoming_call(call: IncomingCall, services: Services) -> Outcome:
    settings = services.settings
    sent = _event_time(call.event_time)
    facts = CallFacts(
        to=call.to, caller=call.caller, at=sent, sip_headers=call.sip_headers, voip_headers=call.voip_headers
    )
    rule = route(settings.routing, facts)
    call_ref = derived_id("incoming", call.event_id)
    caller, called = mask_id(call.caller), mask_id(call.to)
    log.info("incoming call from %s to %s matched rule %s -> %s", caller, called, rule.name, rule.action.type)
    action, call_vars = _resolved(rule.name, rule.action, call, services)
    executor = services.executor
    try:
        if isinstance(action, RejectAction):
            executor.reject(call.incoming_call_context, action.reason, repeat=_repeat(call, "reject", sent))
            return Outcome(rule.name, "reject", call_ref, action.reason)
        if isinstance(action, RedirectAction) and len(action.targets) == 1:
            executor.redirect(call.incoming_call_context, action.targets[0], repeat=_repeat(call, "redirect", sent))
            return Outcome(rule.name, "redirect", call_ref, action.targets[0])
        return _answer(call, rule.name, action, call_vars, call_ref, sent, services)
    except Exception as exc:
        if is_permanent(exc):
            # The call was answered elsewhere, hung up, or rang out: retrying cannot help.
            log.warning("IncomingCall %s not actionable: %s", call.event_id, getattr(exc, "message", exc))
            return Outcome(rule.name, "skipped", call_ref, str(getattr(exc, "message", exc)))
        raise


def _resolved(rule: str, action: Any, call: IncomingCall, services: Services) -> tuple[Any, dict[str, str]]:
    """The rule's action once a mask rule found its session, and a redirect to a refused destination is a reject;
    with the call variables a mask rule gives."""
    call_vars: dict[str, str] = {}
    if isinstance(action, MaskAction):
        from handlers.masking import route_masked

        action, call_vars = route_masked(action, call.to, call.caller, services)
    if isinstance(action, RedirectAction):
        try:
            for target in action.targets:
                services.settings.dialing.policy.check(target)
        except DestinationRefused as exc:
            log.warning("rule %s redirects to a refused destination (%s): the call is rejected", rule, exc.reason)
            action = RejectAction(type="reject", reason="forbidden")
    return action, call_vars


def _answer(
    call: IncomingCall,
    rule: str,
    action: AnswerAction | RedirectAction,
    call_vars: dict[str, str],
    call_ref: str,
    sent: datetime,
    services: Services,
) -> Outcome:
    """Answer into a flow, or to sim-ring the targets: the call's state first, then the answer."""
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
    state.note(f"routed by rule {rule}: {kind}")
    if not services.store.create(state):
        log.info("state for %s exists: a redelivered IncomingCall", call_ref)
    props = services.executor.answer(
        call.incoming_call_context,
        services.callback_url(call_ref),
        cognitive_services_endpoint=services.settings.cognitive_services_endpoint,
        operation_context="answer",
        repeat=_repeat(call, "answer", sent),
    )
    log.info("answered: call connection %s", props.call_connection_id)
    services.store.index(props.call_connection_id or "", call_ref)  # the control API addresses it by that id
    return Outcome(rule, kind, call_ref, props.call_connection_id or "")
