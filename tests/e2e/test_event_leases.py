"""The mid-call duplicate filter kept in the call's own state row (``CallLedger.advance``), against real Table
Storage (Azurite): one write per event plus one for its actions, duplicates dropped, a delivery in flight answered
"come back later", a dead or failed delivery taken over with only what it left undone.

The flow engine and the executor are stand-ins here (they are not what is under test, and the app's e2e tests
drive the real ones through the simulator): the engine plans a fixed list of actions per event, the executor
records what it was asked to send and can be told to fail or to wait.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from core.calls.events import CallEvent, ResultInfo
from core.calls.ledger import CallLedger
from core.calls.state import AlreadyHandled, CallState, HandledElsewhere, StateStore
from core.flows.actions import CancelMedia, ContinuousDtmf, Hangup, Mute, Play
from core.flows.model import Prompt


class CountingPolicy(SansIOHTTPPolicy):
    """Counts the requests the state store sends to Table Storage, by method."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def on_request(self, request: Any) -> None:
        self.methods.append(request.http_request.method)


class Engine:
    def __init__(self, plans: dict[str, list[Any]]) -> None:
        self.plans = plans
        self.results: list[str] = []

    def handle(self, state: CallState, event: CallEvent) -> list[Any]:
        state.node = event.type
        return [a.model_copy() for a in self.plans.get(event.type, [])]

    def on_result(self, state: CallState, action: Any, result: dict[str, str]) -> None:
        self.results.append(action.context)


class Executor:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail: set[str] = set()
        self.gate: dict[str, threading.Event] = {}

    def run(self, call_connection_id: str, server_call_id: str, action: Any) -> dict[str, str]:
        if action.context in self.gate:
            self.gate[action.context].wait(20)
        if action.context in self.fail:
            self.fail.discard(action.context)
            raise ConnectionError(f"ACS unreachable for {action.context}")
        self.sent.append(action.context)
        return {}


@pytest.fixture
def counter() -> CountingPolicy:
    return CountingPolicy()


@pytest.fixture
def store(azurite, counter) -> StateStore:
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(
        azurite.connection_string, table_name=f"leases{uuid.uuid4().hex[:10]}", per_call_policies=[counter]
    )
    store = StateStore(table)
    store.create(CallState(call_ref="call", status="connected", call_connection_id="ccid"))
    counter.methods.clear()
    return store


PLANS = {
    "PlayCompleted": [Mute(context="first", who="4:+14255550123"), Hangup(context="second")],
    "RecognizeCompleted": [CancelMedia(context="only")],
    "CallDisconnected": [],
    "CallConnected": [
        ContinuousDtmf(context="dtmf", who="4:+14255550123"),
        Play(context="welcome", prompts=[Prompt(text="Hello")]),
    ],
    "PlayStarted": [Play(context="a", prompts=[Prompt(text="A")]), Play(context="b", prompts=[Prompt(text="B")])],
    "ParticipantsUpdated": [],
}


def ledger(store: StateStore, executor: Executor | None = None, lease_seconds: float = 10.0) -> CallLedger:
    return CallLedger(store, Engine(PLANS), executor or Executor(), lease_seconds)


def event(kind: str, event_id: str | None = None) -> CallEvent:
    return CallEvent(
        id=event_id or str(uuid.uuid4()),
        type=kind,
        call_connection_id="ccid",
        server_call_id="",
        correlation_id="",
        operation_context=None,
        result=ResultInfo.of({}),
        data={},
        time=None,
    )


def test_an_event_with_no_action_costs_one_write_and_its_duplicate_none(store, counter):
    rt = ledger(store)
    e = event("ParticipantsUpdated")
    rt.advance("call", e)
    assert counter.methods == ["PUT"]  # planned and done in the same write; no read (the state was remembered)
    counter.methods.clear()
    with pytest.raises(AlreadyHandled):
        rt.advance("call", e)
    assert counter.methods == ["GET"]  # the remembered copy said "done": confirmed on the row, nothing written
    state, _ = store.get("call")
    assert e.id in state.handled and state.leases == {}


def test_a_redelivery_with_a_later_token_costs_one_write_to_be_remembered_longer(store, counter):
    """A duplicate whose token expires later than the one it was planned with (ACS redelivers with a new token)
    extends how long its id is remembered (a replay of that delivery stays refused): one write, once; the same
    token again costs none, as before."""
    from dataclasses import replace

    rt = ledger(store)
    first = replace(event("ParticipantsUpdated"), replayable_until=time.time() + 361)
    rt.advance("call", first)
    counter.methods.clear()
    with pytest.raises(AlreadyHandled):
        rt.advance("call", first)
    assert counter.methods == ["GET"]  # as any duplicate: confirmed on the row, nothing written
    counter.methods.clear()
    later = replace(first, replayable_until=time.time() + 600)
    with pytest.raises(AlreadyHandled):
        rt.advance("call", later)
    assert counter.methods == ["PUT"]
    state, _ = store.get("call")
    assert state.handled_until[state.handled.index(first.id)] >= later.replayable_until


@pytest.mark.parametrize("kind", ["RecognizeCompleted", "PlayCompleted", "CallConnected", "PlayStarted"])
def test_an_event_costs_one_write_for_its_plan_and_one_for_its_actions(store, counter, kind):
    executor = Executor()
    rt = ledger(store, executor)
    rt.advance("call", event(kind))
    assert counter.methods == ["PUT", "PUT"]  # the plan; every action recorded as sent, which ends the event
    assert executor.sent == [a.context for a in PLANS[kind]]
    state, _ = store.get("call")
    assert state.pending == [] and state.leases == {}


def test_a_duplicate_while_the_first_delivery_works_is_asked_to_come_back(store):
    executor = Executor()
    executor.gate["only"] = threading.Event()
    first, second = ledger(store, executor), ledger(store, executor)  # two instances of the app
    e = event("RecognizeCompleted")
    worker = threading.Thread(target=first.advance, args=("call", e))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while e.id not in store.get("call")[0].leases and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(HandledElsewhere):
            second.advance("call", e)
    finally:
        executor.gate["only"].set()
        worker.join(10)
    with pytest.raises(AlreadyHandled):
        second.advance("call", e)
    assert executor.sent == ["only"]


@pytest.mark.parametrize(("kind", "failing"), [("PlayStarted", "b"), ("CallConnected", "welcome")])
def test_a_failed_delivery_is_taken_over_at_once_and_redoes_only_what_is_left(store, counter, kind, failing):
    executor = Executor()
    executor.fail.add(failing)
    rt = ledger(store, executor)
    e = event(kind)
    with pytest.raises(ConnectionError):
        rt.advance("call", e)
    assert counter.methods == ["PUT", "PUT"]  # the plan; the release, which records what ACS took before the failure
    state, _ = store.get("call")
    assert state.leases[e.id].until == 0.0  # released: no need to wait for the lease to lapse
    assert [a.context for a in state.pending] == [failing]  # the first is recorded as sent: not replayed
    rt.advance("call", e)  # the redelivery
    assert executor.sent == [a.context for a in PLANS[kind]]  # nothing sent twice
    state, _ = store.get("call")
    assert state.pending == [] and state.leases == {}
    with pytest.raises(AlreadyHandled):
        rt.advance("call", e)


def test_a_failure_on_the_first_action_releases_the_event_with_nothing_recorded(store):
    executor = Executor()
    executor.fail.add("a")
    rt = ledger(store, executor)
    e = event("PlayStarted")
    with pytest.raises(ConnectionError):
        rt.advance("call", e)
    state, _ = store.get("call")
    assert [a.context for a in state.pending] == ["a", "b"] and state.leases[e.id].until == 0.0
    rt.advance("call", e)
    assert executor.sent == ["a", "b"]


def test_a_dead_deliverys_lease_lapses_and_is_taken_over(store):
    executor = Executor()
    e = event("PlayCompleted")

    def plan_then_die(state: CallState) -> None:  # what a host killed right after the plan's write leaves
        state.pending = [a.model_copy(update={"origin": e.id, "request_id": a.context}) for a in PLANS[e.type]]
        state.mark_handled(e.id)
        from core.calls.state import Lease

        state.leases[e.id] = Lease(owner="dead", until=time.time() + 0.6)

    store.mutate("call", plan_then_die)
    rt = ledger(store, executor)
    with pytest.raises(HandledElsewhere):
        rt.advance("call", e)  # the lease is live: it may still be working
    time.sleep(0.7)
    rt.advance("call", e)
    assert executor.sent == ["first", "second"]
    state, _ = store.get("call")
    assert state.pending == [] and state.leases == {}


def test_a_slow_delivery_keeps_its_lease_by_renewing_it(store):
    executor = Executor()
    executor.gate["only"] = threading.Event()
    slow, other = ledger(store, executor, lease_seconds=0.6), ledger(store, executor, lease_seconds=0.6)
    e = event("RecognizeCompleted")
    worker = threading.Thread(target=slow.advance, args=("call", e))
    worker.start()
    try:
        time.sleep(2.0)  # more than three leases: renewed meanwhile
        with pytest.raises(HandledElsewhere):
            other.advance("call", e)
    finally:
        executor.gate["only"].set()
        worker.join(10)
    assert executor.sent == ["only"]


def test_work_after_the_actions_is_redone_on_redelivery_until_it_succeeds(store):
    executor = Executor()
    rt = ledger(store, executor)
    e = event("CallDisconnected")
    calls: list[str] = []

    def hooks(state: CallState) -> None:
        calls.append(state.node)
        if len(calls) == 1:
            raise ConnectionError("the records table is down")

    with pytest.raises(ConnectionError):
        rt.advance("call", e, after_actions=hooks)
    rt.advance("call", e, after_actions=hooks)
    with pytest.raises(AlreadyHandled):
        rt.advance("call", e, after_actions=hooks)
    assert calls == ["CallDisconnected", "CallDisconnected"]
    assert store.get("call")[0].leases == {}


def test_concurrent_deliveries_of_one_event_act_once(store):
    executor = Executor()
    e = event("PlayCompleted")
    outcomes: list[str] = []

    def deliver() -> None:
        try:
            ledger(store, executor).advance("call", e)
            outcomes.append("handled")
        except (AlreadyHandled, HandledElsewhere) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert outcomes.count("handled") == 1, outcomes
    assert executor.sent == ["first", "second"]


def test_work_after_an_event_with_no_action_joins_its_one_write_on_the_row_itself(store, counter):
    # The hooks run inside the change, so it starts from the row (one read), never from the process's own copy,
    # which another instance may have moved past (see tests/e2e/test_cluster_concurrency.py); then one write.
    rt = ledger(store)
    seen: list[str] = []
    rt.advance("call", event("CallDisconnected"), after_actions=lambda state: seen.append(state.node))
    assert seen == ["CallDisconnected"] and counter.methods == ["GET", "PUT"]


def test_work_after_actions_runs_after_them_and_holds_the_event_until_done(store, counter):
    executor = Executor()
    rt = ledger(store, executor)
    e = event("RecognizeCompleted")
    seen: list[tuple[list[str], bool]] = []

    def hooks(state: CallState) -> None:
        seen.append((list(executor.sent), e.id in store.get("call")[0].leases))

    rt.advance("call", e, after_actions=hooks)
    assert seen == [(["only"], True)]  # the action was sent, and the event still leased while the hooks ran
    assert store.get("call")[0].leases == {}
