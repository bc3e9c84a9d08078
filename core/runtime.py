"""The app's moving parts, assembled once per process, and the one way a call event moves a call.

``advance`` is the write-ahead path every mid-call event takes: plan (engine) and store the
resulting actions with the state in one compare-and-swap, then carry them out in order and
record them done in one write. If the service fails midway, the actions it took are recorded with
the failure and the redelivery carries out the rest; if the process dies midway, the redelivery
finds the event's actions still pending and carries them out; it is never planned twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from . import clients
from .callback_auth import LEEWAY_SECONDS, CallbackAuthenticator, callback_url
from .events import CallEvent, ResultInfo
from .executor import Executor
from .flows.actions import Action
from .flows.engine import FlowEngine, RecordingOptions
from .settings import Settings, get_settings
from .state import (
    AlreadyHandled,
    CallState,
    EventFilter,
    HandledElsewhere,
    Lease,
    LeaseKeeper,
    StateConflict,
    StateNotFound,
    StateStore,
)

log = logging.getLogger("core.runtime")
NAMESPACE = uuid.UUID("6f1c7e8a-4d0b-4a57-9a0e-2d7f3c1b9e55")
PERMANENT_STATUSES = {400, 403, 404, 409, 412}
# An invitation refused for good when asked for (the dialing policy, or the service's 4xx) brings no failure event
# from ACS: the runtime gives the flow the one ACS would have sent had the invitation failed later, so the flow
# takes its failure path instead of leaving the caller waiting.
FAILURE_EVENT_OF = {"transfer": "CallTransferFailed", "add_participant": "AddParticipantFailed"}
LEASE_SECONDS = 10.0  # an event's lease: renewed while its handler runs, lapses this long after its process died
RECORD_PATIENCE = 8.0  # seconds a storage outage is waited out before an action ACS took is recorded
# How long an event id is remembered when its delivery's token expiry is unknown (an event not from the callback
# endpoint): ACS's documented token lifetime (5 minutes) plus the verifier's leeway.
REPLAYABLE_SECONDS = 300 + LEEWAY_SECONDS


Sent = tuple[Action, dict[str, str], str | None]  # an action ACS took: its result, or why it refused it for good


def derived_id(*parts: str) -> str:
    """A stable UUID for an action caused by an event: the same on every redelivery."""
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def http_date(moment: datetime | None = None) -> str:
    return format_datetime(moment or datetime.now(UTC), usegmt=True)


def is_permanent(exc: Exception) -> bool:
    """The service refused the request for good (the call ended, the participant left...)."""
    status = getattr(exc, "status_code", None)
    return status in PERMANENT_STATUSES


@dataclass
class Runtime:
    settings: Settings
    store: StateStore
    events: EventFilter
    engine: FlowEngine
    executor: Executor
    auth: CallbackAuthenticator
    lease_seconds: float = LEASE_SECONDS
    leases: LeaseKeeper = field(init=False)

    def __post_init__(self) -> None:
        self.leases = LeaseKeeper(self.store, self.lease_seconds)

    def callback_url(self, call_ref: str) -> str:
        return callback_url(self.settings.callback_base_url, self.settings.callback_secret, call_ref)

    def advance(self, call_ref: str, event: CallEvent, then: Callable[[CallState], None] | None = None) -> CallState:
        """Move the call for one event: plan once, carry out what is still pending, then ``then`` (work outside
        the call's state, e.g. the call-ended hooks), and only then count the event as done.

        This is also the duplicate filter of mid-call callbacks, kept in the call's own row: the plan's write
        records the event as handled, with a lease while it has work left; marking the last action done drops
        the lease in the same write. So a callback costs one write to Table Storage, plus one for its actions: they
        are recorded as sent together after the last (after a failure, those ACS took are recorded with the release).
        ``then`` runs after the actions; with no action, before the plan's write (then the event is done in that
        one write; if the write meets a conflict, ``then`` runs again on the fresh state: it must be idempotent,
        as the call-ended hooks are, since events are delivered at least once anyway).
        A redelivery finds the event handled: without a lease, it is a duplicate (``AlreadyHandled``); with a
        live lease, another delivery is on it (``HandledElsewhere``: ask for it later); with a lapsed or
        released lease, the delivery that held it died or failed, and this one takes over what is left.

        Every delivery of an event keeps its id remembered until the delivery's token expires (``replayable_until``,
        from the callback's JWT): a captured callback replayed later is a duplicate, however many events came
        since (see ``core.state``). A redelivery with a later token costs a write to extend that, once."""
        owner = uuid.uuid4().hex
        leased = False  # whether this delivery holds a lease on the event (it has work left after the plan)
        seen: type[Exception] | None = None  # a duplicate whose later token had to be remembered (written first)
        until = event.replayable_until or time.time() + REPLAYABLE_SECONDS

        def plan(state: CallState) -> None:
            nonlocal leased, seen
            leased, seen = False, None
            lease = state.leases.get(event.id)
            now = time.time()
            if lease is not None or state.remembers(event.id):
                # A delivery whose token says it can be replayed later than known: remember the id that long too.
                extended = event.replayable_until is not None and state.remember(event.id, event.replayable_until)
                if lease is None or (lease.owner != owner and lease.until > now):
                    seen = AlreadyHandled if lease is None else HandledElsewhere
                    if not extended:
                        raise seen(event.id)
                    return  # written, then raised
                state.leases[event.id] = Lease(owner=owner, until=now + self.lease_seconds)  # take it over
                leased = True
                return
            state.mark_handled(event.id, until)  # first: it raises when the row is full, before anything is planned
            actions = self.engine.handle(state, event)
            first_sent = http_date()
            for index, action in enumerate(actions):
                action.request_id = derived_id(event.id, str(index))
                action.first_sent = first_sent
                action.origin = event.id
            if not actions and then is not None:
                then(state)  # before the write: if it fails, nothing is written and the redelivery starts afresh
            state.pending = [a for a in state.pending if not a.done] + actions
            if actions:  # work left: keep a lease on the event until it is done
                state.leases[event.id] = Lease(owner=owner, until=now + self.lease_seconds)
                leased = True

        state, _ = self.store.mutate(call_ref, plan)
        if seen is not None:
            raise seen(event.id)
        if not leased:
            return state  # nothing to carry out: planned and done in one write
        self.leases.hold(call_ref, event.id, owner)
        sent: list[Sent] = []  # taken by ACS, not yet recorded
        refused: list[Sent] = []  # invitations refused for good: their failure event follows
        try:
            todo = [a for a in state.pending if a.origin == event.id and not a.done]
            for action in todo:
                sent.append((action, *self._send(state, action)))
                if sent[-1][2] is not None and action.kind in FAILURE_EVENT_OF:
                    refused.append(sent[-1])
            if todo:  # all recorded as sent in one write (with the event done, unless work follows)
                taken, sent = sent, []
                state = self._record(call_ref, self._marker(taken, event.id if then is None else None))
            if then is not None:
                then(state)
            if then is not None or not todo:
                state = self._record(call_ref, lambda current: current.leases.pop(event.id, None))
        except BaseException:
            self._release(call_ref, event.id, owner, sent)
            raise
        finally:
            self.leases.drop(call_ref, event.id)
        for action, _result, error in refused:
            state = self._refused_invitation(call_ref, event, action, error or "") or state
        return state

    def _refused_invitation(self, call_ref: str, cause: CallEvent, action: Action, error: str) -> CallState | None:
        """Handle the failure event ACS sends for an invitation that fails, for one refused before it rang.
        Its id derives from the action's, so that a redelivery of ``cause`` that sends the action again finds it
        handled."""
        failure = CallEvent(
            id=derived_id(action.request_id or cause.id, "refused"),
            type=FAILURE_EVENT_OF[action.kind],
            call_connection_id=cause.call_connection_id,
            server_call_id=cause.server_call_id,
            correlation_id=cause.correlation_id,
            operation_context=action.context,
            result=ResultInfo(code=403, sub_code=None, message=error),
            data={},
            time=cause.time,
        )
        try:
            return self.advance(call_ref, failure)
        except (AlreadyHandled, HandledElsewhere):
            return None

    def _send(self, state: CallState, action: Action) -> tuple[dict[str, str], str | None]:
        """Send one action to ACS: its result, or why the service refused it for good (a transient fault raises)."""
        try:
            return self.executor.run(state.call_connection_id, state.server_call_id, action), None
        except Exception as exc:
            if not is_permanent(exc):
                raise
            error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            log.warning("%s refused for good, skipped: %s", action.kind, error)
            return {}, error

    def _marker(self, sent: list[Sent], finishing: str | None) -> Callable[[CallState], None]:
        """The change that records actions as sent (and, with ``finishing``, their event as done)."""

        def mark(current: CallState) -> None:
            for action, result, error in sent:
                for pending in current.pending:
                    if pending.request_id == action.request_id:
                        pending.done = True
                        pending.error = error
                if error is None:
                    self.engine.on_result(current, action, result)
                else:
                    current.note(f"{action.kind} failed: {error}")
            current.pending = [a for a in current.pending if not a.done]
            if finishing:
                current.leases.pop(finishing, None)

        return mark

    def _release(self, call_ref: str, event_id: str, owner: str, sent: list[Sent]) -> None:
        """Handling failed: record the actions ACS took before the failure (``sent``), so that the redelivery does
        not send them again, and let it take over now rather than when the lease lapses, in one write. With actions
        to record, a storage outage is waited out as when recording them normally; without, if storage fails here
        too, the lease lapses on its own."""
        mark = self._marker(sent, None)

        def lapse(current: CallState) -> None:
            mark(current)
            lease = current.leases.get(event_id)
            if lease is not None and lease.owner == owner:
                lease.until = 0.0

        try:
            if sent:
                self._record(call_ref, lapse)
            else:
                self.store.mutate(call_ref, lapse)
        except Exception as exc:
            log.warning("could not release %s of %s (%s); its lease lapses instead", event_id, call_ref, exc)

    def _record(self, call_ref: str, mark: Any, patience: float = RECORD_PATIENCE) -> CallState:
        """Record that ACS took an action. Storage failing now is retried here for a while rather than failing the
        event: its redelivery would send the action again, and a Play or a Recognize has no repeatability id."""
        deadline = time.monotonic() + patience
        pause = 0.1
        while True:
            try:
                state, _ = self.store.mutate(call_ref, mark)
                return state
            except (StateConflict, StateNotFound):
                raise
            except Exception as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("recording an action of %s failed (%s); trying again", call_ref, type(exc).__name__)
                time.sleep(pause)
                pause = min(pause * 2, 1.0)


_runtime: Runtime | None = None
_lock = threading.Lock()


def byos_container_url(settings: Settings) -> str | None:
    """With RECORDING_STORAGE=byos, the QA container's URL, which ACS is told to write recordings into."""
    if settings.recording.storage != "byos":
        return None
    container = clients.blob_service(settings).get_container_client(settings.recording.container)
    try:  # ACS writes into it, and does not create it (the deployment does; locally, the app)
        if not container.exists():
            container.create_container()
    except Exception as exc:  # the copy path reports storage trouble; the call must go on
        log.warning("cannot check the recordings container %s: %s", container.url, exc)
    return container.url


def build(settings: Settings) -> Runtime:
    flows_engine = FlowEngine(
        settings.flows,
        RecordingOptions(
            mode=settings.recording.mode,
            channel=settings.recording.channel,
            content=settings.recording.content,
            format=settings.recording.format,
            container_url=byos_container_url(settings),
        ),
    )
    return Runtime(
        settings=settings,
        store=clients.state_store(settings),
        events=clients.event_filter(settings),
        engine=flows_engine,
        executor=Executor(clients.call_automation(settings)),
        auth=CallbackAuthenticator(
            openid_config_url=settings.openid_config_url,
            issuer=settings.jwt_issuer,
            audience=settings.acs_resource_id,
            secret=settings.callback_secret,
            previous_secret=settings.callback_secret_previous,
        ),
    )


def get_runtime() -> Runtime:
    """The process's runtime, built on first use from the app settings."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                from .observability import configure

                settings = get_settings()
                configure(settings.log_level, settings.appinsights_connection_string)
                _runtime = build(settings)
                clients.settle()
    return _runtime


def reset() -> None:
    global _runtime
    _runtime = None
    clients.reset()
