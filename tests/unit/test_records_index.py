"""The call records' listing index spread over partitions: the key, bucket and shard arithmetic (partitions that
follow from the row key alone, buckets on the clock's 5-minute marks, shards even over calls, each shard's range
newest first), the sizing against Table Storage's per-partition target, and the listing's merge of the shards'
streams with the earlier versions' partition (newest first, limits, ties, leftovers, a row and its copy)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from core.records.events import CallRecordEvent, iso
from core.records.layout import (
    BUCKET_SECONDS,
    INDEX_SHARDS,
    LEGACY_PARTITION,
    MAX_MICROS,
    call_key,
    index_entry,
    index_key,
    index_partition,
    index_shard,
    is_index_partition,
    shard_range,
)
from core.records.store import RecordStore
from tests.unit.test_records import FakeTable

T0 = datetime(2026, 3, 12, 9, 0, 0, tzinfo=UTC)


def key_at(moment: datetime, server_call_id: str = "call-a", source: str = "CallStarted") -> str:
    key = index_key({"started_at": iso(moment), "started_at_source": source}, server_call_id)
    assert key is not None
    return key


# -- the arithmetic ---------------------------------------------------------------------------------------------------


def test_the_shards_absorb_a_thousand_call_starts_a_second_within_half_a_partitions_target():
    # docs/call-records.md: Table Storage targets 2,000 entities/s a partition; a call start writes the index at most
    # 5 times (its row, then two moves of an estimated start: a new row and a delete each).
    starts_per_second, worst_entities_per_start, partition_target = 1_000, 5, 2_000
    assert starts_per_second * worst_entities_per_start / INDEX_SHARDS <= partition_target / 2
    assert INDEX_SHARDS & (INDEX_SHARDS - 1) == 0 and INDEX_SHARDS <= 100, "equal slices of the hash; two digits"
    assert BUCKET_SECONDS == 300


def test_a_partition_is_the_shard_and_the_inverted_start_of_the_5_minute_bucket():
    key = key_at(T0 + timedelta(minutes=2, seconds=30, microseconds=7))
    partition = index_partition(key)
    shard = int(call_key("call-a")[1:9], 16) % INDEX_SHARDS
    assert partition == f"i{shard:02d}-{MAX_MICROS - int(T0.timestamp()) * 1_000_000:019d}"
    assert index_shard(key) == shard
    assert index_entry("call-a", key) == {"PartitionKey": partition, "RowKey": key, "serverCallId": "call-a"}
    assert index_entry("call-a", key, legacy=True)["PartitionKey"] == LEGACY_PARTITION == "recent"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (T0, T0 + timedelta(minutes=4, seconds=59, microseconds=999_999), True),
        (T0 - timedelta(microseconds=1), T0, False),
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=9, seconds=59), True),
        (T0 + timedelta(minutes=4, seconds=59), T0 + timedelta(minutes=5), False),
    ],
)
def test_buckets_fall_on_the_clocks_5_minute_marks(a, b, same):
    assert (index_partition(key_at(a)) == index_partition(key_at(b))) is same
    if not same:
        assert index_partition(key_at(b)) < index_partition(key_at(a)), "a newer bucket sorts first"


def test_estimated_and_known_starts_of_a_call_share_its_shard():
    known, estimate = key_at(T0, source="CallStarted"), key_at(T0 + timedelta(hours=3), source="estimated")
    assert "-s-" in known and "-e-" in estimate
    assert index_shard(known) == index_shard(estimate)
    assert index_partition(known)[:4] == index_partition(estimate)[:4] and index_partition(known) != index_partition(
        estimate
    )


def test_calls_spread_evenly_over_the_shards():
    counts = Counter(index_shard(key_at(T0, f"server-call-{n}")) for n in range(8_000))
    assert set(counts) == set(range(INDEX_SHARDS))
    assert max(counts.values()) < 1.1 * 8_000 / INDEX_SHARDS < 1.2 * min(counts.values())


def test_a_shards_range_read_comes_newest_first_across_its_buckets():
    chance = random.Random(16)
    moments = [T0 + timedelta(microseconds=chance.randrange(-(10**11), 10**11)) for _ in range(3_000)]
    rows = [(index_partition(k), k) for k in (key_at(m, f"c{n}") for n, m in enumerate(moments))]
    for shard in range(INDEX_SHARDS):
        low, high = shard_range(shard)
        in_range = sorted(row for row in rows if low <= row[0] < high)  # the service's order: partition, then row
        assert in_range and all(index_shard(rk) == shard for _, rk in in_range)
        assert [rk for _, rk in in_range] == sorted(rk for _, rk in in_range), "the row keys' order: newest first"
    assert len({pk for pk, _ in rows}) > 8 * INDEX_SHARDS, "about 55 hours: hundreds of buckets"


def test_the_index_partitions_are_apart_from_every_other_partition():
    ranges = [shard_range(s) for s in range(INDEX_SHARDS)]
    for other in (LEGACY_PARTITION, call_key("x"), "ccid-1", "health", "campaign", "dialcap"):
        assert not any(low <= other < high for low, high in ranges), other
    assert is_index_partition(LEGACY_PARTITION) and is_index_partition(index_partition(key_at(T0)))
    assert not is_index_partition(call_key("x")) and not is_index_partition("i-x") and not is_index_partition("ix1-")


@pytest.mark.parametrize(
    "moment", [datetime(1960, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC), T0], ids=str
)
def test_keys_out_of_the_epoch_range_keep_their_shape(moment):
    key = key_at(moment)
    inverted = key.split("-")[0]
    assert len(inverted) == 19 and inverted.isdigit()
    partition = index_partition(key)
    assert len(partition) == len("i00-") + 19


@pytest.mark.parametrize("odd", ["0000000000000000000-e-x", "nonsense", "", "12-s-cZZZZZZZZ"])
def test_a_key_of_another_shape_still_has_a_partition(odd):
    partition = index_partition(odd)
    assert is_index_partition(partition) and 0 <= int(partition[1:3]) < INDEX_SHARDS
    expected = int(hashlib.sha256(odd.encode()).hexdigest()[:8], 16) % INDEX_SHARDS
    assert index_shard(odd) == expected


# -- the merge of the shards' streams ----------------------------------------------------------------------------------


def started(store: RecordStore, server_call_id: str, moment: datetime) -> None:
    store.add_event(CallRecordEvent(f"s-{server_call_id}", "CallStarted", server_call_id, iso(moment), {}))


def expected_order(store: RecordStore, calls: list[str]) -> list[str]:
    return sorted(calls, key=lambda c: index_key(store.get(c), c) or "")


def test_the_listing_merges_the_shards_newest_first_for_any_limit():
    table = FakeTable()
    store = RecordStore(table)
    chance = random.Random(3)
    calls = [f"call-{n}" for n in range(90)]
    for scid in chance.sample(calls, k=len(calls)):  # written in any order
        started(store, scid, T0 - timedelta(seconds=chance.randrange(0, 6 * 3600)))
    for scid in ("tie-a", "tie-b", "tie-c"):
        started(store, scid, T0 - timedelta(hours=1))
        calls.append(scid)
    partitions = {pk for pk, _ in table.index_rows()}
    assert {pk[:4] for pk in partitions} == {f"i{s:02d}-" for s in range(INDEX_SHARDS)} and len(partitions) > 40
    expected = expected_order(store, calls)
    for limit in (1, 3, 8, 9, 50, 93, 100):
        assert [r["server_call_id"] for r in store.recent(limit)] == expected[:limit]
    ties = [c for c in expected if c.startswith("tie-")]
    assert ties == sorted(ties, key=call_key) and expected.index(ties[-1]) - expected.index(ties[0]) == 2


def test_the_listing_interleaves_the_earlier_versions_partition_by_start():
    table = FakeTable()
    old, new = RecordStore(table, legacy_index=True), RecordStore(table)
    for n in range(10):
        started(old if n % 2 else new, f"call-{n}", T0 - timedelta(minutes=7 * n))
    assert sum(pk == LEGACY_PARTITION for pk, _ in table.index_rows()) == 5
    assert [r["server_call_id"] for r in new.recent(10)] == [f"call-{n}" for n in range(10)]
    assert [r["server_call_id"] for r in old.recent(10)] == [f"call-{n}" for n in range(1, 10, 2)], (
        "the earlier layout reads its partition only"
    )


def test_a_row_and_its_copy_are_one_call_and_stay_while_leftovers_go():
    table = FakeTable()
    store = RecordStore(table)
    for n in range(3):
        started(store, f"call-{n}", T0 - timedelta(minutes=n))
    key = index_key(store.get("call-1"), "call-1") or ""
    table.upsert_entity({"PartitionKey": LEGACY_PARTITION, "RowKey": key, "serverCallId": "call-1"})  # mid-migration
    gone = key_at(T0 - timedelta(minutes=1), "call-2", source="estimated")  # a key call-2 left
    table.upsert_entity({"PartitionKey": LEGACY_PARTITION, "RowKey": gone, "serverCallId": "call-2"})
    table.upsert_entity({"PartitionKey": index_partition(gone), "RowKey": gone, "serverCallId": "call-2"})
    before = len(table.index_rows())
    assert [r["server_call_id"] for r in store.recent(10)] == ["call-0", "call-1", "call-2"]
    assert (LEGACY_PARTITION, key) in table.index_rows() and (index_partition(key), key) in table.index_rows()
    assert gone not in table.index() and len(table.index_rows()) == before - 2


def test_a_key_move_across_buckets_writes_each_partition_once():
    table = FakeTable()
    store = RecordStore(table)
    store.add_event(
        CallRecordEvent("a-1", "CallParticipantAdded", "call-x", iso(T0), {"participant": {"id": "4:+1425"}})
    )
    estimate = table.index_rows()
    table.calls.clear()
    started(store, "call-x", T0 - timedelta(minutes=20))  # four buckets earlier
    assert table.calls == ["get", "transaction", "transaction", "transaction", "update"]
    [(partition, key)] = table.index_rows()
    assert key == index_key(store.get("call-x"), "call-x") and partition == index_partition(key) != estimate[0][0]
