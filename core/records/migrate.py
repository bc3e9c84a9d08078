"""Moving the listing index of earlier versions (one partition, ``recent``) into the sharded layout, with no downtime.

    python -m core.records.migrate [--connection-string CS | --endpoint URL] [--table NAME] [--batch N] [--check]

Storage as the app is given it (``APP_STORAGE``, or ``APP_STORAGE__tableServiceUri`` with the signed-in identity)
and ``RECORDS_TABLE`` (``callrecords``) by default. Run it once no instance of an earlier version is left (they
write to ``recent``); until then and during it, the listing reads ``recent`` beside the shards, so every call stays
listed (docs/call-records.md, "Migration").

Each legacy row, in key order, a batch at a time:

1. its call's summary is read: a row whose call's listing key is another one (the start moved on) or that has no
   summary is a leftover, which the listing would drop too: it is deleted, not copied;
2. any other row is copied to its partition of the sharded layout (one transaction per partition; an upsert, so a
   copy written before is written again unchanged) and read back;
3. the legacy row is deleted only once its copy has been read back (or it is a leftover), and only if it is unchanged
   since it was read (If-Match its ETag): a row rewritten meanwhile is left for the next run.

The legacy partition is its own work list: what is done is gone from it, so a run killed at any point is resumed by
running it again (a row copied but not yet deleted is copied again: the same row), and a run over an empty partition
does nothing. Keys are never reused (core.records.layout), so deleting a leftover can never unlist a call.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from core.platform import tables
from core.records.layout import LEGACY_PARTITION, RECORD_ROW, call_key, index_entry


@dataclass
class Report:
    """What a run did: legacy rows read, copied (and read back), dropped as leftovers, and left for the next run."""

    read: int = 0
    copied: int = 0
    dropped: int = 0
    changed: int = 0  # rewritten (or their copy gone) since read: left in place for the next run
    batches: int = 0

    def line(self) -> str:
        return (
            f"{self.read} legacy index row(s) read in {self.batches} batch(es): {self.copied} copied and deleted, "
            f"{self.dropped} leftover(s) deleted, {self.changed} changed meanwhile (left for the next run)"
        )


def _summary_of(table: Any, row: Any) -> tuple[str, str] | None:
    """The listing key the row's call's summary names now, and the call's server call id; None when the call has
    no summary."""
    server_call_id = row.get("serverCallId")
    partition = call_key(server_call_id) if server_call_id else row["RowKey"].rpartition("-")[2]
    summary = tables.get(table, partition, RECORD_ROW, select=["indexKey", "serverCallId"])
    if summary is None:
        return None
    return summary.get("indexKey") or "", summary.get("serverCallId") or server_call_id or ""


def _copy(table: Any, rows: list[tuple[Any, str]]) -> list[dict[str, Any]]:
    """The rows (each with its call's server call id, as its summary has it) into their partitions of the sharded
    layout: one transaction per partition (at most 100 rows)."""
    copies = [index_entry(server_call_id, row["RowKey"]) for row, server_call_id in rows]
    by_partition: dict[str, list[dict[str, Any]]] = {}
    for copy in copies:
        by_partition.setdefault(copy["PartitionKey"], []).append(copy)
    for group in by_partition.values():
        for at in range(0, len(group), 100):
            table.submit_transaction([("upsert", copy, {"mode": "replace"}) for copy in group[at : at + 100]])
    return copies


def _read_back(table: Any, copy: dict[str, Any]) -> bool:
    found = tables.get(table, copy["PartitionKey"], copy["RowKey"])
    return found is not None and (found.get("serverCallId") or "") == copy["serverCallId"]


def _delete(table: Any, rows: list[Any]) -> set[str]:
    """Delete legacy rows if unchanged since read (If-Match): one transaction, else one by one. The keys of those
    that changed (left in place)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import TableTransactionError

    def guard(row: Any) -> dict[str, Any]:
        return {"etag": row.metadata["etag"], "match_condition": MatchConditions.IfNotModified}

    if not rows:
        return set()
    try:
        table.submit_transaction([("delete", row, guard(row)) for row in rows])
        return set()
    except (TableTransactionError, ResourceModifiedError, ResourceNotFoundError):
        pass  # one of them changed or is gone already: each alone
    changed = set()
    for row in rows:
        try:
            table.delete_entity(partition_key=LEGACY_PARTITION, row_key=row["RowKey"], **guard(row))
        except ResourceModifiedError:
            changed.add(row["RowKey"])
        except ResourceNotFoundError:
            pass
    return changed


def migrate(
    table: Any, *, batch: int = 100, workers: int = 8, progress: Callable[[Report], None] | None = None
) -> Report:
    """Move every row of the legacy listing partition into the sharded layout (see the module's doc). Idempotent and
    resumable: a second run, or a run after one that was killed, does only what is left."""
    from azure.core.exceptions import ResourceNotFoundError

    batch = max(1, min(batch, 100))  # one delete transaction per batch
    report = Report()
    after = ""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while True:
            cursor = after.replace("'", "''")
            query = table.query_entities(
                f"PartitionKey eq '{LEGACY_PARTITION}' and RowKey gt '{cursor}'", results_per_page=batch
            )
            try:
                rows = list(itertools.islice(query, batch))
            except ResourceNotFoundError:  # no table: nothing was ever written
                rows = []
            if not rows:
                return report
            report.batches += 1
            report.read += len(rows)
            after = rows[-1]["RowKey"]
            current = list(pool.map(lambda row: _summary_of(table, row), rows))
            keep = [(row, now[1]) for row, now in zip(rows, current, strict=True) if now and now[0] == row["RowKey"]]
            leftovers = [row for row, now in zip(rows, current, strict=True) if not now or now[0] != row["RowKey"]]
            copies = _copy(table, keep)
            verified = list(pool.map(lambda copy: _read_back(table, copy), copies))
            done = [row for (row, _), ok in zip(keep, verified, strict=True) if ok]
            unverified = len(keep) - len(done)  # the copy went (the call's key moved on): the next run drops the row
            changed = _delete(table, done + leftovers)
            report.copied += sum(1 for row in done if row["RowKey"] not in changed)
            report.dropped += sum(1 for row in leftovers if row["RowKey"] not in changed)
            report.changed += unverified + len(changed)
            if progress is not None:
                progress(report)


def left(table: Any, count: bool = True) -> int:
    """Rows still in the legacy listing partition (with ``count`` False: 0 or 1, whether any is)."""
    from azure.core.exceptions import ResourceNotFoundError

    query = table.query_entities(
        f"PartitionKey eq '{LEGACY_PARTITION}'", results_per_page=1000 if count else 1, select=["RowKey"]
    )
    try:
        return sum(1 for _ in query) if count else len(list(itertools.islice(query, 1)))
    except ResourceNotFoundError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.records.migrate",
        description="Move the call records' listing index of earlier versions (partition 'recent') into the "
        "sharded layout. Idempotent and resumable: run it again after an interruption.",
    )
    parser.add_argument("--connection-string", default=os.environ.get("APP_STORAGE") or None)
    parser.add_argument("--endpoint", default=os.environ.get("APP_STORAGE__tableServiceUri") or None)
    parser.add_argument("--table", default=os.environ.get("RECORDS_TABLE") or "callrecords")
    parser.add_argument("--batch", type=int, default=100, help="legacy rows per step (1-100)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent reads within a step")
    parser.add_argument("--check", action="store_true", help="only count the legacy rows left")
    args = parser.parse_args(argv)
    if not args.connection_string and not args.endpoint:
        parser.error("storage: --connection-string or --endpoint (or APP_STORAGE / APP_STORAGE__tableServiceUri)")
    table = tables.table_client(args.connection_string, args.endpoint, args.table)
    if not args.check:
        report = migrate(table, batch=args.batch, workers=args.workers, progress=lambda r: print(r.line(), flush=True))
        print(report.line(), flush=True)
    remaining = left(table)
    print(f"{remaining} legacy index row(s) left in table {args.table}", flush=True)
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
