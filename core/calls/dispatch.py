"""The one path of a mid-call event: check the request, authenticate it, parse the batch, then each event by its
type's rule (``EventRule``, in the table ``MidCallEvents`` built once, explicitly, with the hooks of a call's end)
through the duplicate filter and the call's state machine (``CallLedger.advance``: the duplicate is found in the
same write that moves the call).

Answers: 413 for a body declared (Content-Length) or found larger than the cap, before anything else
is looked at; 401 for anything not from ACS for this call; 400/415 for bodies that can never be
processed (with the reason: not JSON, nested too deeply, malformed events), 200 when every event
is handled, ignored as a duplicate, or acknowledged as unknown, and 500/503 when a handler or a
dependency fails, so the sender delivers again. A transient fault is never answered with a 4xx:
Event Grid and ACS do not retry those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.calls.callback_auth import AuthError
from core.calls.events import CallEvent, EventFormatError, parse_call_event
from core.calls.state import AlreadyHandled, CallState, HandledElsewhere, StateNotFound, TooManyEvents
from core.platform.jsonsafe import JsonError, check_length, parse_json
from core.platform.observability import annotate, call_scope

log = logging.getLogger("core.calls.dispatch")
MAX_BODY_BYTES = 1024 * 1024
JSON_TYPES = ("application/json", "application/cloudevents-batch+json", "application/cloudevents+json")

# A hook run when a call ends for the app (campaign bookkeeping, the flow's outcome into the call's record): it
# gets the final state and the services. Events come at least once, so a hook may run again for the same call: it
# must be idempotent (key its writes by the call). A failing hook fails the event, which is delivered again.
CallEndedHook = Callable[[CallState, Any], None]


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Said:
    """One value a log line says: read from the event, or (``of_state``) from the call's state once it moved."""

    of_event: Callable[[CallEvent], object] | None = None
    of_state: Callable[[CallState], object] | None = None

    def value(self, event: CallEvent, state: CallState | None) -> object:
        if self.of_event is not None:
            return self.of_event(event)
        assert self.of_state is not None and state is not None
        return self.of_state(state)


@dataclass(frozen=True)
class EventRule:
    """What one type of mid-call event does, as data: its log line, and whether it moves or ends the call.

    ``changes_state=False`` declares an event that only logs: it leaves no trace in the call's state, so it is not
    deduplicated (a duplicate is harmless); the reliability bench reads this to know which events to find done.
    ``ends_call``: the call-ended hooks run once the event's actions are carried out."""

    log: str | None = None  # "%s" filled by ``says``, in order
    says: tuple[Said, ...] = ()
    level: int = logging.INFO
    changes_state: bool = True
    ends_call: bool = False

    @property
    def logs_after(self) -> bool:
        """A line that says something of the call's state is logged once the event moved it; others before."""
        return any(said.of_state is not None for said in self.says)


class MidCallEvents:
    """The mid-call event types the app knows (type -> rule) and the hooks of a call's end, given at start-up."""

    def __init__(
        self, rules: Mapping[str, EventRule], logger: logging.Logger, call_ended: Sequence[CallEndedHook] = ()
    ) -> None:
        for event_type, rule in rules.items():
            if rule.log is not None and rule.log.count("%s") != len(rule.says):
                raise ValueError(f"{event_type}: its log line says {rule.log.count('%s')} values, not {len(rule.says)}")
            if rule.logs_after and not rule.changes_state:
                raise ValueError(f"{event_type}: a line about the call's state needs an event that moves it")
        self.rules = dict(rules)
        self.logger = logger
        self.call_ended = tuple(call_ended)

    def handle(self, call_ref: str, event: CallEvent, rule: EventRule, services: Any) -> None:
        """Log the event and move the call by it (raising ``AlreadyHandled`` for a duplicate, see the ledger)."""
        if not rule.logs_after:
            self._log(rule, event, None)
        state = None
        if rule.changes_state:
            after = (lambda ended: self.end_call(ended, services)) if rule.ends_call else None
            state = services.ledger.advance(call_ref, event, after_actions=after)
        if rule.logs_after:
            self._log(rule, event, state)

    def end_call(self, state: CallState, services: Any) -> None:
        """Run every call-ended hook, in order; a failing hook fails the event so that it is delivered again."""
        for hook in self.call_ended:
            hook(state, services)

    def _log(self, rule: EventRule, event: CallEvent, state: CallState | None) -> None:
        if rule.log is not None:
            self.logger.log(rule.level, rule.log, *(said.value(event, state) for said in rule.says))


def _refuse(status: int, reason: str, **context: Any) -> Reply:
    log.warning("callback refused with %d: %s %s", status, reason, context or "")
    return Reply(status, {"error": reason})


def handle_callback(
    call_ref: str,
    sig: str | None,
    headers: Mapping[str, str],
    body: bytes | Callable[[], bytes],
    services: Any,
    mid_call: MidCallEvents | None = None,
) -> Reply:
    """One POST to /callbacks/{call_ref}: every check, then each event by its rule in ``mid_call`` (the table the
    blueprint gives: ``handlers.callbacks.MID_CALL_EVENTS``; a request refused before its events are read needs
    none). ``body`` may be a function that reads it: it is called only once the declared size (Content-Length) is
    within the cap."""
    events = _authentic_events(call_ref, sig, headers, body, services)
    if isinstance(events, Reply):
        return events
    if mid_call is None:
        raise TypeError("handle_callback needs the table of mid-call events to handle them")
    counts = {"handled": 0, "duplicates": 0, "unknown": 0}
    for event in events:
        with call_scope(
            f"callback {event.type}",
            call_ref=call_ref,
            call_connection_id=event.call_connection_id,
            server_call_id=event.server_call_id,
            correlation_id=event.correlation_id,
        ):
            outcome = _dispatch_one(call_ref, event, services, mid_call)
            if isinstance(outcome, Reply):
                return outcome
            counts[outcome] += 1
    return Reply(200, counts)


def _authentic_events(
    call_ref: str, sig: str | None, headers: Mapping[str, str], body: bytes | Callable[[], bytes], services: Any
) -> list[CallEvent] | Reply:
    """The batch's events, once the body is within the cap, JSON, from ACS for this call and well formed."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        check_length(lowered, MAX_BODY_BYTES)
    except JsonError as exc:
        return _refuse(exc.status, exc.reason, call_ref=call_ref)
    if callable(body):
        body = body()
    if len(body) > MAX_BODY_BYTES:
        return _refuse(413, f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}", call_ref=call_ref)
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        return _refuse(415, f"content type {content_type or '(none)'} is not JSON", call_ref=call_ref)
    try:
        replayable_until = services.auth.verify(lowered.get("authorization"), call_ref, sig)
    except AuthError as exc:
        return _refuse(401, f"unauthenticated: {exc}", call_ref=call_ref)
    except (ConnectionError, OSError) as exc:
        log.error("cannot verify callback tokens now: %s", exc)
        return Reply(503, {"error": "cannot verify the callback now; retry"}, {"Retry-After": "5"})
    try:
        payload = parse_json(body)
    except JsonError as exc:
        return _refuse(exc.status, exc.reason, call_ref=call_ref)
    batch = payload if isinstance(payload, list) else [payload]
    if not isinstance(replayable_until, int | float) or isinstance(replayable_until, bool):
        replayable_until = None  # an authenticator that does not say: the ledger's default applies
    try:
        events = [parse_call_event(item, replayable_until) for item in batch]
    except EventFormatError as exc:
        return _refuse(400, f"malformed event: {exc}", call_ref=call_ref)
    if not events:
        return _refuse(400, "empty event batch", call_ref=call_ref)
    return events


def _dispatch_one(call_ref: str, event: CallEvent, services: Any, mid_call: MidCallEvents) -> str | Reply:
    rule = mid_call.rules.get(event.type)
    if rule is None:
        log.warning("unknown event type %s (id %s) acknowledged and ignored", event.type, event.id)
        return "unknown"
    try:
        annotate(call_connection_id=event.call_connection_id)
        mid_call.handle(call_ref, event, rule, services)
    except AlreadyHandled:
        log.info("duplicate %s %s dropped", event.type, event.id)
        return "duplicates"
    except HandledElsewhere:
        # Another delivery of it is being handled, or its handler died less than a lease ago (a host killed
        # mid-call): acknowledging it would lose it if that handler never finishes. Ask for it again.
        log.info("%s %s is being handled by another delivery; asking for redelivery", event.type, event.id)
        return Reply(503, {"error": "this event is being handled; retry"}, {"Retry-After": "2"})
    except StateNotFound:
        # A callback can outrun the write of the call's state on another instance: ask for it again.
        log.warning("%s for a call with no state yet; asking for redelivery", event.type)
        return Reply(503, {"error": "call state not found yet; retry"}, {"Retry-After": "1"})
    except TooManyEvents as exc:
        # The call's row holds all the replayable ids it can (only a sender flooding it with valid tokens gets
        # here): forgetting one early would let its replay act; the event comes again once older ids expire.
        log.warning("%s %s refused for now: %s", event.type, event.id, exc)
        return Reply(503, {"error": "too many recent events for this call; retry"}, {"Retry-After": "30"})
    except Exception:
        log.exception("handler for %s failed; the event will be redelivered", event.type)
        return Reply(500, {"error": f"handling {event.type} failed; retry"})
    return "handled"
