"""The write-ahead path every mid-call event takes: plan once, store the plan with the state, carry it out.

Why: a callback may be delivered twice, concurrently, or again after its process died midway. The plan (the
engine's actions) is written with the call's state and the event's id in one compare-and-swap before anything is
sent; the actions are recorded done in one more write. If the service fails midway, the actions it took are
recorded with the failure and the redelivery carries out the rest; if the process dies midway, the redelivery
finds the event's actions still pending and carries them out; an event is never planned twice. The call's own row
is also the duplicate filter: a callback costs one write to Table Storage, plus one for its actions.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.calls.callback_auth import LEEWAY_SECONDS
from core.calls.events import CallEvent, ResultInfo
from core.calls.executor import is_permanent
from core.calls.repeatability import derived_id, http_date
from core.calls.state import (
    AlreadyHandled,
    CallState,
    HandledElsewhere,
    Lease,
    LeaseKeeper,
    StateConflict,
    StateNotFound,
    StateStore,
)
from core.flows.actions import Action
from core.platform.observability import mask_id

log = logging.getLogger("core.calls.ledger")
# An invitation refused for good when asked for (the dialing policy, or the service's 4xx) brings no failure event
# from ACS: the ledger gives the flow the one ACS would have sent had the invitation failed later, so the flow
# takes its failure path instead of leaving the caller waiting.
FAILURE_EVENT_OF = {"transfer": "CallTransferFailed", "add_participant": "AddParticipantFailed"}
LEASE_SECONDS = 10.0  # an event's lease: renewed while its handler runs, lapses this long after its process died
RECORD_PATIENCE = 8.0  # seconds a storage outage is waited out before an action ACS took is recorded
# How long an event id is remembered when its delivery's token expiry is unknown (an event not from the callback
# endpoint): ACS's documented token lifetime (5 minutes) plus the verifier's leeway.
REPLAYABLE_SECONDS = 300 + LEEWAY_SECONDS

Sent = tuple[Action, dict[str, str], str | None]  # an action ACS took: its result, or why it refused it for good
AfterActions = Callable[[CallState], None]


@dataclass
class _Delivery:
    """One delivery of an event: its lease's owner, and what the plan's write found (set on each try of it)."""

    event: CallEvent
    until: float  # the event's id is remembered until then (its token's expiry)
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    leased: bool = False  # it holds a lease on the event: it has work left after the plan
    seen: type[Exception] | None = None  # a duplicate whose later token had to be remembered (written first)


class CallLedger:
    """Moves a call for one event: the engine plans, the executor acts, the call's row keeps the books."""

    def __init__(self, store: StateStore, engine: Any, executor: Any, lease_seconds: float = LEASE_SECONDS) -> None:
        self.store = store
        self.engine = engine
        self.executor = executor
        self.lease_seconds = lease_seconds
        self.leases = LeaseKeeper(store, lease_seconds)

    def advance(self, call_ref: str, event: CallEvent, after_actions: AfterActions | None = None) -> CallState:
        """Plan once, carry out what is still pending, then ``after_actions``, and only then count the event done.

        ``after_actions`` (the call-ended hooks) runs after the actions, or, with none, before the plan's write (again
        if that write meets a conflict: it must be idempotent). A redelivery finds the event handled: without a
        lease it is a duplicate (``AlreadyHandled``); with a live lease another delivery is on it
        (``HandledElsewhere``: ask for it later); with a lapsed or released one, this delivery takes over what is
        left. The event's id is remembered until the delivery's token expires, so a replay later is a duplicate."""
        delivery = _Delivery(event, until=event.replayable_until or time.time() + REPLAYABLE_SECONDS)
        # A call-ending event's plan may run the call-ended hooks (campaign results, the flow's outcome) in its change:
        # on the row itself, never on this process's copy, which another instance may have moved past.
        state, _ = self.store.mutate(
            call_ref, lambda current: self._plan(current, delivery, after_actions), fresh=after_actions is not None
        )
        if delivery.seen is not None:
            raise delivery.seen(event.id)
        if not delivery.leased:
            return state  # nothing to carry out: planned and done in one write
        state, refused = self._carry_out(call_ref, state, delivery, after_actions)
        for action, _result, error in refused:
            state = self._refused_invitation(call_ref, event, action, error or "") or state
        return state

    # -- the plan's write ------------------------------------------------------------------------------------

    def _plan(self, state: CallState, delivery: _Delivery, after_actions: AfterActions | None) -> None:
        """The change of the plan's write: the event marked handled, its actions pending, a lease if any."""
        event = delivery.event
        delivery.leased, delivery.seen = False, None
        now = time.time()
        if state.leases.get(event.id) is not None or state.remembers(event.id):
            self._redelivered(state, delivery, now)
            return
        state.mark_handled(event.id, delivery.until)  # first: it raises when the row is full, before any plan
        actions = self._planned_actions(state, event)
        if not actions and after_actions is not None:
            after_actions(state)  # before the write: if it fails, nothing is written and the redelivery starts afresh
        state.pending = [a for a in state.pending if not a.done] + actions
        if actions:  # work left: keep a lease on the event until it is done
            state.leases[event.id] = Lease(owner=delivery.owner, until=now + self.lease_seconds)
            delivery.leased = True

    def _redelivered(self, state: CallState, delivery: _Delivery, now: float) -> None:
        """An event handled before: a duplicate (or in hand elsewhere), or one whose delivery died: taken over."""
        event = delivery.event
        lease = state.leases.get(event.id)
        # A delivery whose token says it can be replayed later than known: remember the id that long too.
        extended = event.replayable_until is not None and state.remember(event.id, event.replayable_until)
        if lease is None or (lease.owner != delivery.owner and lease.until > now):
            delivery.seen = AlreadyHandled if lease is None else HandledElsewhere
            if not extended:
                raise delivery.seen(event.id)
            return  # written, then raised
        state.leases[event.id] = Lease(owner=delivery.owner, until=now + self.lease_seconds)  # take it over
        delivery.leased = True

    def _planned_actions(self, state: CallState, event: CallEvent) -> list[Action]:
        """The engine's actions for the event, each with a repeatability id derived from the event."""
        actions = self.engine.handle(state, event)
        first_sent = http_date()
        for index, action in enumerate(actions):
            action.request_id = derived_id(event.id, str(index))
            action.first_sent = first_sent
            action.origin = event.id
        return actions

    # -- carrying it out -------------------------------------------------------------------------------------

    def _carry_out(
        self, call_ref: str, state: CallState, delivery: _Delivery, after_actions: AfterActions | None
    ) -> tuple[CallState, list[Sent]]:
        """Send the event's pending actions, record them sent in one write (with the event done, unless work
        follows), run ``after_actions``; on any failure, record what ACS took and release the lease. Returns the
        state and the invitations refused for good (their failure event follows)."""
        event_id, owner = delivery.event.id, delivery.owner
        self.leases.hold(call_ref, event_id, owner)
        sent: list[Sent] = []  # taken by ACS, not yet recorded
        refused: list[Sent] = []
        try:
            todo = [a for a in state.pending if a.origin == event_id and not a.done]
            for action in todo:
                sent.append((action, *self._send(state, action)))
                if sent[-1][2] is not None and action.kind in FAILURE_EVENT_OF:
                    refused.append(sent[-1])
            if todo:
                taken, sent = sent, []
                state = self._record(call_ref, self._marker(taken, event_id if after_actions is None else None))
            if after_actions is not None:
                after_actions(state)
            if after_actions is not None or not todo:
                state = self._record(call_ref, lambda current: current.leases.pop(event_id, None))
        except BaseException:
            self._release(call_ref, event_id, owner, sent)
            raise
        finally:
            self.leases.drop(call_ref, event_id)
        return state, refused

    def _send(self, state: CallState, action: Action) -> tuple[dict[str, str], str | None]:
        """Send one action to ACS: its result, or why the service refused it for good (a transient fault raises)."""
        try:
            return self.executor.run(state.call_connection_id, state.server_call_id, action), None
        except Exception as exc:
            if not is_permanent(exc):
                raise
            error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            log.warning("%s refused for good, skipped: %s", action.kind, mask_id(error))
            return {}, error

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

    # -- the books -------------------------------------------------------------------------------------------

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
