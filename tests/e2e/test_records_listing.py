"""The call records' listing index against Azurite: calls spread over time buckets and shards are listed newest
first whatever the limit, calls that started at the same moment all come (in key order), and a listing costs one
range read per shard and one of the earlier versions' partition, whatever the buckets in between."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables import TableClient

from core.records.events import CallRecordEvent, iso
from core.records.layout import (
    BUCKET_SECONDS,
    INDEX_SHARDS,
    LEGACY_PARTITION,
    call_key,
    index_key,
    index_partition,
    index_shard,
)
from core.records.store import RecordStore
from tests.e2e.test_call_records import CountingTransport, new_table, table_client

T0 = datetime(2026, 3, 12, 9, 0, 0, tzinfo=UTC)
INDEX_FILTER = f"(PartitionKey ge 'i' and PartitionKey lt 'j') or PartitionKey eq '{LEGACY_PARTITION}'"


def started(server_call_id: str, when: datetime) -> CallRecordEvent:
    return CallRecordEvent(f"s-{server_call_id}", "CallStarted", server_call_id, iso(when), {})


def joined(server_call_id: str, when: datetime) -> CallRecordEvent:
    """A participant's join: with no CallStarted yet, the call's start is estimated from it."""
    return CallRecordEvent(
        f"a-{server_call_id}", "CallParticipantAdded", server_call_id, iso(when), {"participant": {"id": "4:+1425"}}
    )


def index_rows(client: TableClient) -> list[tuple[str, str]]:
    return sorted((e["PartitionKey"], e["RowKey"]) for e in client.query_entities(INDEX_FILTER))


def newest_first(store: RecordStore, calls: list[str]) -> list[str]:
    """The calls in the order the listing owes them: by listing key (start, newest first; then the call's key)."""
    return sorted(calls, key=lambda c: index_key(store.get(c), c) or "")


def listed(store: RecordStore, limit: int) -> list[str]:
    return [r["server_call_id"] for r in store.recent(limit)]


def test_calls_over_buckets_and_shards_are_listed_newest_first_with_ties_and_any_limit(azurite):
    name = new_table()
    client = table_client(azurite, name)
    store = RecordStore(table_client(azurite, name))
    run = uuid.uuid4().hex[:6]
    calls: list[str] = []

    def call(label: str, *events: Any) -> None:
        scid = f"call-{run}-{label}"
        for make, when in events:
            store.add_event(make(scid, when))
        calls.append(scid)

    for n in range(60):  # one every 97 s: over an hour and a half, about 20 buckets
        call(f"spread-{n}", (started, T0 - timedelta(seconds=97 * n)))
    tie = T0 - timedelta(seconds=97 * 10)  # five more calls started at the very moment call 10 did
    for n in range(5):
        call(f"tie-{n}", (started, tie))
    for n in range(4):  # starts still estimated (only a join seen), between the others
        call(f"estimated-{n}", (joined, T0 - timedelta(seconds=97 * (3 + 11 * n) + 40)))
    call("moved", (joined, T0 - timedelta(seconds=30)), (started, T0 - timedelta(seconds=97 * 40 + 5)))
    call("last-month", (started, T0 - timedelta(days=30)))
    call("clock-ahead", (started, T0 + timedelta(hours=2)))  # a start later than the others (a skewed clock)

    rows = index_rows(client)
    partitions = {pk for pk, _ in rows}
    assert len(rows) == len(calls), "one index row per call: the moved call's first key went"
    assert all(pk == index_partition(rk) for pk, rk in rows) and LEGACY_PARTITION not in partitions
    assert {int(pk[1:3]) for pk in partitions} == set(range(INDEX_SHARDS)), "every shard has calls"
    assert len({pk[4:] for pk in partitions}) >= 97 * 60 // BUCKET_SECONDS, "about one bucket per 5 minutes"

    expected = newest_first(store, calls)
    assert expected[0].endswith("clock-ahead") and expected[-1].endswith("last-month")
    for limit in (1, 2, 7, 20, 33, 69, 71, 100):
        assert listed(store, limit) == expected[:limit], limit
    ties = [c for c in expected if c.endswith("-spread-10") or "-tie-" in c]
    assert len(ties) == 6 and ties == sorted(ties, key=call_key), "same start: each listed, by the call's key"
    at = expected.index(ties[0])
    assert expected[at : at + 6] == ties, "side by side, between the calls before and after them"
    # The listing reads one range per shard and the earlier versions' partition, then each listed call's summary.
    transport = CountingTransport()
    counted = RecordStore(table_client(azurite, name, transport))
    counted.recent(1)
    sent = transport.during(lambda: counted.recent(20))
    assert sorted(sent) == sorted(["GET query"] * (INDEX_SHARDS + 1) + ["GET record"] * 20), sent


def test_a_quiet_table_is_listed_in_the_same_few_reads(azurite):
    # A call a day for a month: the buckets between are empty, and no read goes through them one by one.
    name = new_table()
    store = RecordStore(table_client(azurite, name))
    calls = [f"call-quiet-{n}" for n in range(30)]
    for n, scid in enumerate(calls):
        store.add_event(started(scid, T0 - timedelta(days=n, minutes=n)))
    transport = CountingTransport()
    counted = RecordStore(table_client(azurite, name, transport))
    counted.recent(1)
    sent = transport.during(lambda: counted.recent(25))
    assert sent.count("GET query") == INDEX_SHARDS + 1 and sent.count("GET record") == 25
    assert listed(store, 100) == calls


def test_a_call_listed_in_both_layouts_mid_migration_is_listed_once_and_kept(azurite):
    name = new_table()
    client = table_client(azurite, name)
    store = RecordStore(table_client(azurite, name))
    store.add_event(started("call-both", T0))
    store.add_event(started("call-after", T0 - timedelta(seconds=1)))
    [(partition, key)] = [row for row in index_rows(client) if row[1].endswith(call_key("call-both"))]
    client.upsert_entity({"PartitionKey": LEGACY_PARTITION, "RowKey": key, "serverCallId": "call-both"})
    assert listed(store, 10) == ["call-both", "call-after"]
    assert (LEGACY_PARTITION, key) in index_rows(client) and (partition, key) in index_rows(client)
    assert index_shard(key) == int(partition[1:3])
