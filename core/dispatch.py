"""The callback pipeline: check the request, authenticate it, parse the batch, and dispatch each
event type to its handler (registered with ``callbacks.on``). Duplicates are dropped where the
call's state changes (``Runtime.advance``), in the same write.

Answers: 413 for a body declared (Content-Length) or found larger than the cap, before anything else
is looked at; 401 for anything not from ACS for this call; 400/415 for bodies that can never be
processed (with the reason: not JSON, nested too deeply, malformed events), 200 when every event
is handled, ignored as a duplicate, or acknowledged as unknown, and 500/503 when a handler or a
dependency fails, so the sender delivers again. A transient fault is never answered with a 4xx:
Event Grid and ACS do not retry those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .callback_auth import AuthError
from .events import CallEvent, EventFormatError, parse_call_event
from .jsonsafe import JsonError, check_length, parse_json
from .observability import annotate, call_scope
from .state import AlreadyHandled, HandledElsewhere, StateNotFound, TooManyEvents

log = logging.getLogger("core.dispatch")
MAX_BODY_BYTES = 1024 * 1024
JSON_TYPES = ("application/json", "application/cloudevents-batch+json", "application/cloudevents+json")

Handler = Callable[[CallEvent, Any, str], None]


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class CallbackRouter:
    """Event type -> handler; the dispatch table of mid-call events."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.undeduplicated: set[str] = set()

    def on(self, *event_types: str, dedupe: bool = True) -> Callable[[Handler], Handler]:
        """Register a handler. A handler that changes something goes through ``runtime.advance``, which drops
        duplicates in the call's state (raising ``AlreadyHandled``, answered as a duplicate). ``dedupe=False``
        declares a handler that changes nothing (it only logs): it leaves no trace in the call's state, and a
        duplicate is harmless there. The reliability suite reads the declaration to know which events to find."""

        def register(handler: Handler) -> Handler:
            for event_type in event_types:
                if event_type in self.handlers:
                    raise ValueError(f"{event_type} already has a handler ({self.handlers[event_type].__name__})")
                self.handlers[event_type] = handler
                if not dedupe:
                    self.undeduplicated.add(event_type)
            return handler

        return register


callbacks = CallbackRouter()


def _refuse(status: int, reason: str, **context: Any) -> Reply:
    log.warning("callback refused with %d: %s %s", status, reason, context or "")
    return Reply(status, {"error": reason})


def handle_callback(
    call_ref: str, sig: str | None, headers: Mapping[str, str], body: bytes | Callable[[], bytes], runtime: Any
) -> Reply:
    """One POST to /callbacks/{call_ref}: every check, then each event to its handler. ``body`` may be a function
    that reads it: it is called only once the declared size (Content-Length) is within the cap."""
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
        replayable_until = runtime.auth.verify(lowered.get("authorization"), call_ref, sig)
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
        replayable_until = None  # an authenticator that does not say: the runtime's default applies
    try:
        events = [parse_call_event(item, replayable_until) for item in batch]
    except EventFormatError as exc:
        return _refuse(400, f"malformed event: {exc}", call_ref=call_ref)
    if not events:
        return _refuse(400, "empty event batch", call_ref=call_ref)

    counts = {"handled": 0, "duplicates": 0, "unknown": 0}
    for event in events:
        with call_scope(
            f"callback {event.type}",
            call_ref=call_ref,
            call_connection_id=event.call_connection_id,
            server_call_id=event.server_call_id,
            correlation_id=event.correlation_id,
        ):
            outcome = _dispatch_one(call_ref, event, runtime)
            if isinstance(outcome, Reply):
                return outcome
            counts[outcome] += 1
    return Reply(200, counts)


def _dispatch_one(call_ref: str, event: CallEvent, runtime: Any) -> str | Reply:
    handler = callbacks.handlers.get(event.type)
    if handler is None:
        log.warning("unknown event type %s (id %s) acknowledged and ignored", event.type, event.id)
        return "unknown"
    try:
        annotate(call_connection_id=event.call_connection_id)
        handler(event, runtime, call_ref)
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
