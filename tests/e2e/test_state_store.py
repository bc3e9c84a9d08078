"""Call state and the duplicate filter against real Table Storage (Azurite)."""

from __future__ import annotations

import math
import threading
import time
import uuid

import pytest

from core.calls.state import CallState, EventFilter, StateConflict, StateNotFound, StateStore


@pytest.fixture
def store(azurite):
    return StateStore.connect(azurite.connection_string, None, f"state{uuid.uuid4().hex[:10]}")


@pytest.fixture
def events(azurite):
    return EventFilter.connect(azurite.connection_string, None, f"events{uuid.uuid4().hex[:10]}")


def test_create_is_idempotent_and_get_round_trips(store):
    state = CallState(call_ref="r1", flow="customer_service", caller="4:+1")
    assert store.create(state) is True
    assert store.create(CallState(call_ref="r1", flow="other")) is False  # a redelivery finds the first
    loaded, etag = store.get("r1")
    assert loaded.flow == "customer_service" and etag
    with pytest.raises(StateNotFound):
        store.get("nobody")


def test_a_stale_etag_is_a_conflict(store):
    store.create(CallState(call_ref="r2"))
    state, etag = store.get("r2")
    state.node = "a"
    store.replace(state, etag)
    state.node = "b"
    with pytest.raises(StateConflict):
        store.replace(state, etag)
    assert store.get("r2")[0].node == "a"


def test_racing_updates_are_all_kept(azurite):
    name = f"state{uuid.uuid4().hex[:10]}"
    instances = [StateStore.connect(azurite.connection_string, None, name) for _ in range(2)]
    instances[0].create(CallState(call_ref="r3"))

    def bump(state: CallState) -> None:
        state.seq += 1

    def worker(store: StateStore) -> None:
        for _ in range(15):
            store.mutate("r3", bump, attempts=50)

    threads = [threading.Thread(target=worker, args=(instances[n % 2],)) for n in range(4)]  # 2 threads each
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert instances[1].get("r3")[0].seq == 60


def test_changes_of_one_call_in_one_process_take_turns_instead_of_conflicting(azurite):
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.data.tables import TableClient

    methods: list[str] = []

    class Counting(SansIOHTTPPolicy):
        def on_request(self, request) -> None:  # type: ignore[no-untyped-def]
            methods.append(request.http_request.method)

    table = TableClient.from_connection_string(
        azurite.connection_string, table_name=f"state{uuid.uuid4().hex[:10]}", per_call_policies=[Counting()]
    )
    store = StateStore(table)
    store.create(CallState(call_ref="r4"))
    methods.clear()
    inside = threading.Event()

    def slow_bump(state: CallState) -> None:
        inside.set()
        time.sleep(0.2)  # the other thread's change comes meanwhile
        state.seq += 1

    def bump(state: CallState) -> None:
        state.seq += 1

    first = threading.Thread(target=store.mutate, args=("r4", slow_bump))
    first.start()
    assert inside.wait(5)
    store.mutate("r4", bump)
    first.join(5)
    assert store.get("r4")[0].seq == 2
    assert methods == ["PUT", "PUT", "GET"]  # one write each, from the remembered state: no conflict, no read


def test_event_filter_claims_once_and_releases_on_failure(events):
    assert events.claim("call", "e1") is True
    assert events.claim("call", "e1") is False  # being handled right now
    events.release("call", "e1")  # the handler failed: the redelivery must get through
    assert events.claim("call", "e1") is True
    events.done("call", "e1")
    assert events.claim("call", "e1") is False  # done: a duplicate


def test_an_expired_claim_is_taken_over(azurite):
    events = EventFilter.connect(azurite.connection_string, None, f"events{uuid.uuid4().hex[:10]}")
    events._lease = -1.0  # every claim is already expired: as if its handler died
    assert events.claim("call", "e2") is True
    assert events.claim("call", "e2") is True
    events.done("call", "e2")
    assert events.claim("call", "e2") is False


def test_a_claim_being_handled_is_busy_not_a_duplicate(events):
    # A redelivery while the first delivery's handler runs (or after its process died, within the lease) must be
    # asked to come back: answering it as a duplicate would lose the event if that handler never finishes.
    assert events.try_claim("call", "e3") == "claimed"
    assert events.try_claim("call", "e3") == "busy"
    events.done("call", "e3")
    assert events.try_claim("call", "e3") == "done"


def test_a_claim_left_by_a_dead_process_lapses_with_its_lease(azurite):
    table = f"events{uuid.uuid4().hex[:10]}"
    dead = EventFilter(EventFilter.connect(azurite.connection_string, None, table)._table, lease_seconds=0.5)
    assert dead.try_claim("call", "e4") == "claimed"
    dead.drop(EventFilter.partition("call", "e4"), "e4")  # its process is gone: nothing renews the claim any more
    alive = EventFilter.connect(azurite.connection_string, None, table)
    assert alive.try_claim("call", "e4") == "busy"
    time.sleep(0.6)
    assert alive.try_claim("call", "e4") == "claimed"  # taken over, and handled this time


def test_a_slow_handler_keeps_its_claim_by_renewing_it(azurite):
    table = f"events{uuid.uuid4().hex[:10]}"
    slow = EventFilter(EventFilter.connect(azurite.connection_string, None, table)._table, lease_seconds=0.6)
    assert slow.try_claim("call", "e5") == "claimed"
    other = EventFilter.connect(azurite.connection_string, None, table)
    time.sleep(1.5)  # well past the lease: renewed in the background meanwhile
    assert other.try_claim("call", "e5") == "busy"
    slow.done("call", "e5")
    assert other.try_claim("call", "e5") == "done"


def test_odd_event_ids_are_claimed_under_a_safe_key(events):
    for odd in ("a/b", "x#y?z", "\x1f", "é" * 300):
        assert events.try_claim("call", odd) == "claimed"
        events.done("call", odd)
        assert events.try_claim("call", odd) == "done"


def test_replayable_event_ids_beyond_the_latest_ride_in_the_row_and_come_back(store):
    """The ids a call must still remember (until their tokens expire) beyond the latest ``HANDLED_LIMIT`` are kept in
    binary properties of the state's row: 6,000 (72 KB, two properties) round-trip through Table Storage, through
    this process's remembered copy and through another process's read, and a write that forgets some drops them."""
    from core.calls.state import HANDLED_LIMIT

    store.create(CallState(call_ref="r9"))
    until = time.time() + 600

    def many(state: CallState) -> None:
        for n in range(6_000 + HANDLED_LIMIT):
            state.mark_handled(f"event-{n}", until)

    store.mutate("r9", many)
    for reader in (store, StateStore(store._table)):  # this process's copy, then a fresh read of the row
        state, _ = reader.mutate("r9", lambda s: None)
        assert state.remembers("event-0") and state.remembers(f"event-{6_000 + HANDLED_LIMIT - 1}")
        assert len(state.remembered) == 6_000 * 12 and not state.remembers("event-never")
    entity = store._table.get_entity(partition_key="r9", row_key="state")
    assert {k for k in entity if k.startswith("handled")} == {"handled0", "handled1"}

    def forget(state: CallState) -> None:
        state.remembered = state.remembered[: 12 * 10]

    store.mutate("r9", forget)
    entity = store._table.get_entity(partition_key="r9", row_key="state")
    assert {k for k in entity if k.startswith("handled")} == {"handled0"} and len(entity["handled0"]) == 120


def test_a_call_is_found_by_its_server_call_id_through_the_index(store):
    # Recording events and connect requests carry only the server call id (standard base64: it may hold "/", which
    # Table keys may not): found by two point reads, not by scanning the table by a column.
    scid = "aHR0cHM6Ly9jb252LXNpbS0wMS5jb252/aT05MCZlPX4"
    store.create(CallState(call_ref="r-index", caller="4:+1"))
    assert store.find_by_server_call(scid) is None  # not known yet
    state, etag = store.get("r-index")
    state.server_call_id = scid
    store.replace(state, etag)
    found = store.find_by_server_call(scid)
    assert found is not None and found.call_ref == "r-index" and found.caller == "4:+1"
    # Another instance (its own process memory) finds it too, and a different id is not found.
    other = StateStore(store._table)
    assert other.find_by_server_call(scid).call_ref == "r-index"
    assert other.find_by_server_call(scid + "x") is None
    # A call created with its server call id already set is indexed at once.
    store.create(CallState(call_ref="r-index-2", server_call_id="c2VydmVy/Y2FsbA"))
    assert other.find_by_server_call("c2VydmVy/Y2FsbA").call_ref == "r-index-2"


def test_a_process_stops_starting_from_its_copy_while_other_instances_keep_writing_the_call(azurite):
    # Behind a front that spreads a call's events over instances, a process's remembered copy of the call is mostly
    # stale: starting from it costs a failed write before the read. Each store learns that and reads first, trying
    # its copy again now and then; alone on a call, a store keeps saving the read.
    from core.calls.state import PROBE_EVERY, STALE_LIMIT, STALE_WEIGHT
    from core.platform import observability

    name = f"state{uuid.uuid4().hex[:10]}"
    a, b, single = (StateStore.connect(azurite.connection_string, None, name) for _ in range(3))
    a.create(CallState(call_ref="spread"))
    single.create(CallState(call_ref="alone"))

    def bump(state: CallState) -> None:
        state.seq += 1

    observability.install_request_counting()
    try:
        with observability.request_counts() as alternating:
            for n in range(64):
                (a if n % 2 else b).mutate("spread", bump)
        with observability.request_counts() as alone:  # one instance: its copy is never stale
            for _ in range(32):
                single.mutate("alone", bump)
    finally:
        observability.stop_request_counting()
    assert a.get("spread")[0].seq == 64 and a.get("alone")[0].seq == 32  # nothing lost either way
    stale = alternating["conflict state (cached copy)"]
    # Without learning every change but the first would have met a stale copy (63); with it, each store meets the few
    # it takes its average to pass STALE_LIMIT, then one in PROBE_EVERY of its changes.
    learning = math.ceil(math.log(1 - STALE_LIMIT) / math.log(1 - STALE_WEIGHT))
    assert learning <= stale <= 2 * learning + 64 // PROBE_EVERY + 2, alternating
    assert a.stale_rate > STALE_LIMIT or b.stale_rate > STALE_LIMIT
    assert alone["conflict state (cached copy)"] == 0
    reads = sum(n for kind, n in alone.items() if kind.startswith("table get"))
    assert reads == 0 and single.stale_rate == 0.0, alone  # every change from its copy: no read at all


def test_claims_of_one_kind_of_event_spread_over_partitions(events):
    # One partition per kind of event took every claim, renewal and release of, say, every recording event: a hot
    # partition at scale. Claims go to <scope>-<shard>, by the event id's hash.
    from core.calls.state import CLAIM_SHARDS

    ids = [str(uuid.uuid4()) for _ in range(200)]
    for event_id in ids:
        assert events.try_claim("recordings", event_id) == "claimed"
        events.done("recordings", event_id)
    rows = list(events._table.query_entities("PartitionKey ge 'recordings-' and PartitionKey lt 'recordings.'"))
    assert sorted(r["RowKey"] for r in rows) == sorted(ids) and all(r["status"] == "done" for r in rows)
    partitions = {r["PartitionKey"] for r in rows}
    assert len(partitions) > CLAIM_SHARDS * 3 // 4  # 200 ids over 32 shards: nearly all used
    assert all(events.try_claim("recordings", event_id) == "done" for event_id in ids[:20])


def test_the_server_call_index_is_written_once_per_call_whichever_instance_writes(azurite):
    from core.platform import observability

    name = f"state{uuid.uuid4().hex[:10]}"
    stores = [StateStore.connect(azurite.connection_string, None, name) for _ in range(3)]
    stores[0].create(CallState(call_ref="once"))

    def connected(state: CallState) -> None:
        state.server_call_id = "c2VydmVy/b25jZQ"
        state.seq += 1

    observability.install_request_counting()
    try:
        with observability.request_counts() as counted:
            for n in range(9):  # the call's events on three instances in turn, each with the id in its state
                stores[n % 3].mutate("once", connected)
    finally:
        observability.stop_request_counting()
    index_writes = sum(v for k, v in counted.items() if k.startswith("table upsert") and "scid-" in k)
    assert index_writes == 1, counted
    assert stores[1].find_by_server_call("c2VydmVy/b25jZQ").seq == 9
