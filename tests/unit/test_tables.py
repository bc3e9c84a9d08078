"""The table layer's one compare-and-swap (``core.platform.tables.mutate``) and its row helpers, against Table Storage
(Azurite): a lost write is redone on a fresh read, a row created by someone else in between is updated instead,
and a row that keeps changing ends in the caller's error after the attempts allowed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from core.platform import tables


class Counting(SansIOHTTPPolicy):
    """The requests sent to Table Storage, as "METHOD" strings."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def on_request(self, request: Any) -> None:
        self.methods.append(request.http_request.method)


class GaveUp(Exception):
    pass


@pytest.fixture
def counter() -> Counting:
    return Counting()


@pytest.fixture
def table(azurite, counter) -> Any:
    from azure.data.tables import TableClient

    client = TableClient.from_connection_string(
        azurite.connection_string, table_name=f"cas{uuid.uuid4().hex[:10]}", per_call_policies=[counter]
    )
    client.create_table()
    counter.methods.clear()
    return client


def read(table: Any) -> Any:
    def read_row() -> tuple[dict[str, Any], str | None]:
        entity = tables.get(table, "p", "r")
        if entity is None:
            return {"PartitionKey": "p", "RowKey": "r", "n": 0}, None
        return {"PartitionKey": "p", "RowKey": "r", "n": entity["n"]}, entity.metadata["etag"]

    return read_row


def bump(table: Any, change: Any, attempts: int = 5) -> tuple[dict[str, Any], Any]:
    return tables.mutate(
        read(table),
        change,
        lambda row, etag: tables.put(table, row, etag),
        attempts=attempts,
        what="row p/r",
        gave_up=GaveUp,
        pause=lambda attempt: 0.0,
    )


def test_a_lost_write_is_redone_on_a_fresh_read(table, counter) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 0})
    counter.methods.clear()
    seen: list[int] = []

    def add_one(row: dict[str, Any]) -> int:
        seen.append(row["n"])
        if len(seen) == 1:  # another instance writes between this read and this write
            other, etag = read(table)()
            tables.put(table, other | {"n": 10}, etag)
        row["n"] += 1
        return row["n"]

    row, result = bump(table, add_one)
    assert seen == [0, 10] and result == 11 and row["n"] == 11
    # read, (the other's read and write), the lost write, read again, write
    assert counter.methods == ["GET", "GET", "PUT", "PUT", "GET", "PUT"]
    assert table.get_entity("p", "r")["n"] == 11


def test_a_row_created_in_between_is_updated_not_created_twice(table, counter) -> None:
    tries: list[str | None] = []

    def add_one(row: dict[str, Any]) -> None:
        tries.append(row["n"])
        if len(tries) == 1:  # absent when read: another instance creates it before this one does
            tables.put(table, {"PartitionKey": "p", "RowKey": "r", "n": 5}, None)
        row["n"] += 1

    bump(table, add_one)
    assert tries == [0, 5]
    # read (absent), the other's create, this create refused, read again, update
    assert counter.methods == ["GET", "POST", "POST", "GET", "PUT"]
    assert table.get_entity("p", "r")["n"] == 6


def test_a_row_that_keeps_changing_ends_in_the_callers_error(table) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 0})
    calls: list[int] = []

    def always_overtaken(row: dict[str, Any]) -> None:
        calls.append(row["n"])
        other, etag = read(table)()
        tables.put(table, other | {"n": other["n"] + 100}, etag)
        row["n"] += 1

    with pytest.raises(GaveUp, match=r"row p/r: gave up after 3 conflicting updates"):
        bump(table, always_overtaken, attempts=3)
    assert calls == [0, 100, 200]  # each try redid the change on what it read
    assert table.get_entity("p", "r")["n"] == 300  # none of the lost writes landed


def no_pause_expected(attempt: int) -> float:
    raise AssertionError(f"paused after attempt {attempt}")


def test_a_remembered_copy_is_tried_without_a_read_and_checked_on_the_row(table, counter) -> None:
    etag = table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 0})["etag"]
    table.update_entity({"PartitionKey": "p", "RowKey": "r", "n": 7}, mode="replace")  # the copy is stale now
    counter.methods.clear()

    class Doubt(Exception):
        pass

    seen: list[int] = []

    def add_one(row: dict[str, Any]) -> None:
        seen.append(row["n"])
        row["n"] += 1

    row, _ = tables.mutate(
        read(table),
        add_one,
        lambda row, etag: tables.put(table, row, etag),
        attempts=2,
        what="row p/r",
        gave_up=GaveUp,
        pause=no_pause_expected,  # a conflict on the remembered copy is retried at once
        recall=lambda: ({"PartitionKey": "p", "RowKey": "r", "n": 0}, etag),
    )
    assert seen == [0, 7] and row["n"] == 8
    assert counter.methods == ["PUT", "GET", "PUT"]  # no read first; the stale copy's write lost

    def refuse_on_copy(row: dict[str, Any]) -> None:
        if row["n"] == 0:
            raise Doubt()  # decided on the remembered copy only: the row itself is read
        row["n"] += 1

    counter.methods.clear()
    row, _ = tables.mutate(
        read(table),
        refuse_on_copy,
        lambda row, etag: tables.put(table, row, etag),
        attempts=2,
        what="row p/r",
        gave_up=GaveUp,
        pause=lambda attempt: 0.0,
        recall=lambda: ({"PartitionKey": "p", "RowKey": "r", "n": 0}, etag),
        recheck=Doubt,
    )
    assert row["n"] == 9 and counter.methods == ["GET", "PUT"]
    with pytest.raises(Doubt):  # on the row itself, the refusal stands
        tables.mutate(
            lambda: ({"PartitionKey": "p", "RowKey": "r", "n": 0}, "x"),
            refuse_on_copy,
            lambda row, etag: None,
            attempts=2,
            what="row p/r",
            gave_up=GaveUp,
            pause=lambda attempt: 0.0,
            recheck=Doubt,
        )


def test_put_and_delete_are_conditional_and_absent_rows_are_none(table) -> None:
    assert tables.get(table, "p", "nobody") is None
    tables.delete(table, "p", "nobody")  # not there: fine
    etag = tables.put(table, {"PartitionKey": "p", "RowKey": "d", "n": 1}, None)["etag"]
    with pytest.raises(tables.Conflict):
        tables.put(table, {"PartitionKey": "p", "RowKey": "d", "n": 1}, None)  # exists
    newer = tables.put(table, {"PartitionKey": "p", "RowKey": "d", "n": 2}, etag)["etag"]
    with pytest.raises(tables.Conflict):
        tables.put(table, {"PartitionKey": "p", "RowKey": "d", "n": 0}, etag, delete=True)  # stale ETag
    tables.put(table, {"PartitionKey": "p", "RowKey": "d", "n": 0}, newer, delete=True)
    assert tables.get(table, "p", "d") is None
    with pytest.raises(tables.Conflict):
        tables.put(table, {"PartitionKey": "p", "RowKey": "d", "n": 3}, newer)  # gone since it was read


def test_row_keys_are_the_id_or_its_hash() -> None:
    assert tables.row_key("0f1e-22") == "0f1e-22"
    for odd in ("a/b", "a#b", "q?", "back\\slash", "tab\there", "x" * 201, "", "\ud800"):
        key = tables.row_key(odd)
        assert key.startswith("h") and len(key) == 65 and not set("/\\#?") & set(key), odd
