"""The upgrade from the listing index of earlier versions (one partition, ``recent``) to the sharded one, against
Azurite: calls indexed by the earlier layout stay listed after the upgrade, during the migration (with an instance of
the earlier version still writing) and after it; a second run does nothing; a run killed at any step, in process or
by SIGKILL, is finished by running it again, with nothing lost, duplicated or left behind."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient

from core.records import migrate
from core.records.layout import LEGACY_PARTITION, index_key, index_partition, is_index_partition
from core.records.store import RecordStore
from tests.e2e.test_call_records import new_table, table_client
from tests.e2e.test_records_listing import T0, index_rows, joined, listed, newest_first, started

ROOT = Path(__file__).resolve().parents[2]


def legacy_calls(old: RecordStore, client: TableClient, count: int) -> list[str]:
    """Calls as an earlier version indexed them: every listing key in ``recent``, some of them moved (an estimated
    start, then CallStarted), some still estimated (no CallStarted yet), and two leftovers such a version could
    leave (a crash before its index was cleaned)."""
    run = uuid.uuid4().hex[:6]
    calls = []
    for n in range(count):
        scid = f"call-{run}-{n}"
        when = T0 - timedelta(seconds=131 * n)
        if n % 5 in (0, 3):
            old.add_event(joined(scid, when + timedelta(seconds=3)))
        if n % 5 != 3:
            old.add_event(started(scid, when))
        calls.append(scid)
    leave_leftovers(client, calls[1])
    assert {pk for pk, _ in index_rows(client)} == {LEGACY_PARTITION}
    return calls


def leave_leftovers(client: TableClient, server_call_id: str) -> None:
    """What a crash of an earlier version could leave in ``recent``: a key its call has left, and a row whose call has
    no summary (the listing drops such rows when it meets them, and so does the migration)."""
    estimate = "0000000000000000000-e-" + index_key({"started_at": T0.isoformat()}, server_call_id).rsplit("-")[-1]
    client.upsert_entity({"PartitionKey": LEGACY_PARTITION, "RowKey": estimate, "serverCallId": server_call_id})
    client.upsert_entity({"PartitionKey": LEGACY_PARTITION, "RowKey": "0000000000000000001-e-cnone"})


def assert_migrated(client: TableClient, store: RecordStore, calls: list[str]) -> None:
    """Nothing left in ``recent``, exactly one index row per call where its key belongs, and every call listed."""
    assert migrate.left(client) == 0
    keys = {index_key(store.get(c), c) or "" for c in calls}
    assert index_rows(client) == sorted((index_partition(k), k) for k in keys)
    assert listed(store, 100) == newest_first(store, calls)[:100]


def test_an_upgrade_keeps_every_call_listed_before_during_and_after_the_migration(azurite):
    name = new_table()
    client = table_client(azurite, name)
    old = RecordStore(table_client(azurite, name), legacy_index=True)  # an instance of the earlier version
    calls = legacy_calls(old, client, 40)
    new = RecordStore(table_client(azurite, name))
    assert listed(new, 100) == newest_first(new, calls), "the upgrade lists the earlier layout's calls"

    # The new version takes over: new calls, then a legacy call whose start moves (its legacy row is left behind)
    # and more leftovers of the earlier version.
    for n in range(6):
        calls.append(f"call-new-{n}")
        new.add_event(started(calls[-1], T0 - timedelta(seconds=200 * n + 7)))
    assert listed(new, 100) == newest_first(new, calls)
    new.add_event(started(calls[3], T0 - timedelta(seconds=1)))  # its start comes, before its estimate: key moves
    leave_leftovers(client, calls[2])

    during: list[list[str]] = []

    def check(report: migrate.Report) -> None:
        during.append(listed(new, 100))
        assert during[-1] == newest_first(new, calls), f"after {report.read} rows"
        if report.batches == 2:  # the earlier version still runs somewhere: a call it indexes in `recent`
            calls.append("call-late-old")
            old.add_event(started("call-late-old", T0 + timedelta(seconds=5)))

    first = migrate.migrate(table_client(azurite, name), batch=7, workers=4, progress=check)
    assert len(during) == first.batches >= 6
    assert first.dropped == 3 and first.copied + first.dropped + first.changed == first.read
    assert migrate.left(client) == 1, "the late call came in behind the run's cursor"
    assert listed(new, 100) == newest_first(new, calls)
    second = migrate.migrate(table_client(azurite, name))
    assert (second.read, second.copied) == (1, 1)
    assert_migrated(client, new, calls)

    before = index_rows(client)
    again = migrate.migrate(table_client(azurite, name))
    assert again == migrate.Report(), "a run over an empty partition does nothing"
    assert index_rows(client) == before
    assert_migrated(client, new, calls)


class Killed(BaseException):
    """The process died here."""


class DiesAfter:
    """A table client that dies right after the ``count``-th request of a kind has landed."""

    def __init__(self, client: TableClient, kind: str, count: int) -> None:
        self._client, self._kind, self._left = client, kind, count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _landed(self, kind: str) -> None:
        if kind == self._kind:
            self._left -= 1
            if self._left == 0:
                raise Killed(kind)

    def submit_transaction(self, operations: Any) -> Any:
        operations = list(operations)
        result = self._client.submit_transaction(operations)
        first = operations[0][1]["PartitionKey"]
        self._landed("deleted" if first == LEGACY_PARTITION else "copied")
        return result

    def get_entity(self, *args: Any, **kwargs: Any) -> Any:
        result = self._client.get_entity(*args, **kwargs)
        if is_index_partition(kwargs.get("partition_key") or args[0]):
            self._landed("read back")
        return result


@pytest.mark.parametrize(
    ("kind", "count"),
    [("copied", 1), ("copied", 9), ("read back", 3), ("read back", 20), ("deleted", 1), ("deleted", 2)],
)
def test_a_run_killed_at_any_step_is_finished_by_the_next(azurite, kind, count):
    name = new_table()
    client = table_client(azurite, name)
    calls = legacy_calls(RecordStore(table_client(azurite, name), legacy_index=True), client, 25)
    store = RecordStore(table_client(azurite, name))
    with pytest.raises(Killed):
        migrate.migrate(DiesAfter(table_client(azurite, name), kind, count), batch=10, workers=3)
    assert 0 < migrate.left(client) <= 27
    assert listed(store, 100) == newest_first(store, calls), "listed as before while half moved"
    migrate.migrate(table_client(azurite, name), batch=10)
    assert_migrated(client, store, calls)


def test_the_command_killed_mid_way_and_run_again_finishes_the_move(azurite):
    name = new_table()
    client = table_client(azurite, name)
    calls = legacy_calls(RecordStore(table_client(azurite, name), legacy_index=True), client, 120)
    store = RecordStore(table_client(azurite, name))
    command = [sys.executable, "-m", "core.records.migrate", "--connection-string", azurite.connection_string]
    command += ["--table", name, "--batch", "2", "--workers", "2"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert "batch(es)" in (process.stdout.readline() if process.stdout else "")  # its first batch is done
    finally:
        process.kill()  # SIGKILL: no cleanup of any kind
        process.communicate(timeout=30)
    remaining = migrate.left(client)
    assert 0 < remaining < 122, "killed mid-way"
    assert listed(store, 100) == newest_first(store, calls)[:100]

    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines()[-1] == f"0 legacy index row(s) left in table {name}"
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.startswith("0 legacy index row(s) read"), again.stdout
    checked = subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout.strip() == f"0 legacy index row(s) left in table {name}"
    assert_migrated(client, store, calls)


def test_a_legacy_row_without_its_server_call_id_is_copied_with_the_summarys(azurite):
    name = new_table()
    client = table_client(azurite, name)
    old = RecordStore(table_client(azurite, name), legacy_index=True)
    old.add_event(started("call-bare", T0))
    [(_, key)] = index_rows(client)
    client.upsert_entity({"PartitionKey": LEGACY_PARTITION, "RowKey": key}, mode="replace")  # the property lost
    report = migrate.migrate(table_client(azurite, name))
    assert (report.copied, report.dropped) == (1, 0)
    assert client.get_entity(index_partition(key), key)["serverCallId"] == "call-bare"
    assert_migrated(client, RecordStore(table_client(azurite, name)), ["call-bare"])
