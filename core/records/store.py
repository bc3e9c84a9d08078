"""The call records' store: each row written with its call's summary folded again, and the newest-first listing.

The fold is pure (``core.records.fold``) and the layout is one module (``core.records.layout``): this module is
only the writes and reads on ``core.platform.tables``, compare-and-swap on the summary's ETag.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from core.platform import tables
from core.platform.tables import TableBacked
from core.records.events import CallRecordEvent, iso
from core.records.fold import Row, build_record, summarize
from core.records.layout import (
    FLOW_PENDING,
    INDEX_SHARDS,
    INLINE_LIMIT,
    LEGACY_PARTITION,
    RECORD_ROW,
    STALE_ROWS,
    call_key,
    dumps,
    event_entity,
    flow_entry,
    flow_mark,
    flows_of,
    index_entry,
    index_key,
    index_partition,
    index_pending,
    indexed_mark,
    row_of,
    shard_range,
    summary_entity,
    unpack_rows,
)

log = logging.getLogger("core.records.store")

_EXISTS = "EntityAlreadyExists"
_CHANGED = ("UpdateConditionNotSatisfied", "ConditionNotMet")
_MISSING = ("EntityNotFound", "ResourceNotFound")


class RecordConflict(Exception):
    """The summary kept changing under us: let the delivery fail and come again."""


def _failure(exc: Exception) -> str | None:
    """What a failed write ran into: "exists", "changed", "missing", or None (anything else)."""
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

    code = getattr(exc, "error_code", None)
    code = str(getattr(code, "value", code) or "")
    if code == _EXISTS or isinstance(exc, ResourceExistsError):
        return "exists"
    if code in _CHANGED or isinstance(exc, ResourceModifiedError):
        return "changed"
    if code in _MISSING or isinstance(exc, ResourceNotFoundError):
        return "missing"
    return None


# A row is written in one entity group transaction with the summary folded again with it, compare-and-swap on the
# summary's ETag (a conflict re-reads and refolds): the row and the summary that takes it in land together or not at
# all, and concurrent deliveries of one call's events cannot lose each other's rows. The summary carries the rows
# (``rowChunks``, ``rows0``..), so the fold needs only the summary: a new event costs a point read and one
# transaction, a redelivery the point read alone (the event is among the rows: nothing to write). Without them (no
# summary yet, rows too many for an entity, a summary written before they rode along) the rows are read with a query
# of the partition after the summary, as any row written since would have changed the summary's ETag.


class _Fold:
    """One write of ``RecordStore._fold`` as ``tables.mutate`` takes it.

    Read the summary, fold, then write the row and the summary in one entity group transaction (the summary's ETag
    guarding it)."""

    def __init__(
        self,
        store: RecordStore,
        server_call_id: str,
        entity: dict[str, Any] | None,
        create: bool,
        query: bool,
        flow: Row | None,
    ) -> None:
        self.store, self.server_call_id, self.entity, self.create = store, server_call_id, entity, create
        self.query, self.flow = query, flow
        self.partition = call_key(server_call_id)
        self.row = row_of(entity) if entity is not None else None
        self.write_row = False
        self.summary: dict[str, Any] = {}
        self.etag = ""  # the summary's, once written

    def read(self) -> tuple[Any, str | None]:
        current = tables.get(self.store._table, self.partition, RECORD_ROW)
        return current, current.metadata["etag"] if current is not None else None

    def fold(self, current: Any) -> dict[str, Any]:
        """The call's record with the row in; the summary to write (``self.summary``)."""
        entity = self.entity
        rows = None if self.query or current is None or current.get(STALE_ROWS) else unpack_rows(current)
        if rows is None:  # read after the summary: a row written since changed the summary's ETag
            rows = self.store._rows(self.partition)
        flows = flows_of(current)
        if self.flow is not None:
            flows[self.flow["id"]] = self.flow
        self.write_row = False
        if entity is not None:
            known = rows.get(entity["RowKey"])
            self.write_row = known is None if self.create else known != self.row
            if self.write_row:
                rows[entity["RowKey"]] = self.row
            elif self.create:
                log.info("%s %s is in the record already (a redelivery)", entity.get("type"), entity.get("eventId"))
        record = build_record(self.server_call_id, [*flows.values(), *rows.values()])  # the first of a key counts
        self.summary = summary_entity(self.server_call_id, record, rows, current, self.store._inline_limit, flows)
        return record

    def write(self, current: Any, etag: str | None) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import TableTransactionError

        ops: list[Any] = []
        if self.write_row:
            ops.append(("create", self.entity) if self.create else ("upsert", self.entity, {"mode": "replace"}))
        if current is None:
            ops.append(("create", self.summary))
        elif self.write_row or dict(current) != self.summary:  # a row written always moves the summary's ETag on
            guard = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            ops.append(("update", self.summary, {"mode": "replace", **guard}))
        if not ops:  # nothing new: a redelivery, or a flow outcome written again unchanged
            self.etag = etag or ""
            return
        try:
            self.etag = self.store._table.submit_transaction(ops)[-1]["etag"]
        except (TableTransactionError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            failure = _failure(exc)
            if failure is None:
                raise
            if failure == "exists" and self.write_row and self.create and getattr(exc, "index", 0) == 0:
                # The row is in but the summary did not carry it (written by an earlier version): read the rows.
                self.query = True
            raise tables.Conflict(failure) from exc


class RecordStore(TableBacked):
    """Rows per call, the folded summary with ETag concurrency, and the newest-first index.

    A row and the summary that folds it in land together or not at all (see ``_Fold``); the index is written after
    the summary, only when its key moved or is not yet known written (``indexedKey``).

    ``legacy_index`` writes and reads the listing index as earlier versions did (all in one partition, ``recent``):
    for the partition benchmark's baseline and the migration's tests, never for the app."""

    def __init__(
        self, table: Any, attempts: int = 12, inline_limit: int = INLINE_LIMIT, legacy_index: bool = False
    ) -> None:
        super().__init__(table)
        self._attempts = attempts
        self._inline_limit = inline_limit
        self._legacy_index = legacy_index
        # A call's folds in this process take turns (an Event Grid batch brings one call's events together); instances
        # still meet on the ETag.
        self._folder = tables.RowLocks()

    # -- writes -----------------------------------------------------------------------------

    def add_event(self, event: CallRecordEvent) -> dict[str, Any]:
        """Keep one Event Grid event (once, however often delivered) and refold the call's summary."""
        self._ensure()
        entity = event_entity(event, event.time or iso(datetime.now(UTC)))  # no eventTime: the moment it first came
        return self._fold(event.server_call_id, entity, create=True)

    def add_flow(self, server_call_id: str, flow: dict[str, Any]) -> None:
        """Keep (or rewrite) an app leg's flow outcome, in one request that cannot conflict.

        The call-ended hook that writes it runs in the app's ``CallDisconnected`` callback, as the call's Event Grid
        events fold into the same summary: a fold there would meet their compare-and-swap. So the outcome is merged
        onto the summary, unconditionally (a fold in flight folds again, with it), and marked ``flowPending``: the
        next fold (the next event's, or the listing's) takes it into the record; ``get`` reads it anyway. A call
        with no summary yet is folded now, so that it is listed."""
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure()
        row = flow_entry(flow)
        mark = flow_mark(server_call_id, row, iso(datetime.now(UTC)))
        try:
            self._table.update_entity(mark, mode="merge")
        except ResourceNotFoundError:
            self._fold(server_call_id, None, create=False, flow=row)  # no summary yet: the first fold of the call

    def refresh(self, server_call_id: str) -> dict[str, Any]:
        """Fold the call's rows, read from the table, into its summary again, and bring its index up to date."""
        self._ensure()
        return self._fold(server_call_id, None, create=False, query=True)

    def _fold(
        self,
        server_call_id: str,
        entity: dict[str, Any] | None,
        create: bool,
        query: bool = False,
        flow: Row | None = None,
    ) -> dict[str, Any]:
        """Write ``entity`` (a new row when ``create``, else a row to replace; None: no row) together with the
        summary that folds it in (and ``flow``, a flow outcome, when given), compare-and-swap (a conflict reads and
        folds again), then index the summary."""
        fold = _Fold(self, server_call_id, entity, create, query, flow)
        _, record = tables.mutate(
            fold.read,
            fold.fold,
            fold.write,
            attempts=self._attempts,
            what=f"record of {server_call_id}",
            gave_up=RecordConflict,
            pause=tables.jitter(0.002, 0.01, start=0),  # the first conflict folds again at once: 2 or 3 writers meet
            lock=self._folder(server_call_id),
            logger=log,
        )
        if index_pending(fold.summary):
            self._index(server_call_id, fold.summary, fold.etag)
        return record

    def _index_partition(self, key: str) -> str:
        return LEGACY_PARTITION if self._legacy_index else index_partition(key)

    def _index(self, server_call_id: str, summary: dict[str, Any], etag: str) -> None:
        """The summary's listing key into the index and the keys it left out of it (one transaction per partition
        of the index they fall in: the key's own, and rarely an older bucket's), then mark the summary indexed
        unless it changed since (whoever changed it does this)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        key, stale = summary["indexKey"], json.loads(summary["staleIndexKeys"])
        by_partition: dict[str, list[Any]] = {}  # the key's partition first: in the index before a left key goes
        if key:
            entry = index_entry(server_call_id, key, legacy=self._legacy_index)
            by_partition.setdefault(entry["PartitionKey"], []).append(("upsert", entry, {"mode": "replace"}))
        for old in stale:
            partition = self._index_partition(old)
            by_partition.setdefault(partition, []).append(("delete", {"PartitionKey": partition, "RowKey": old}))
        for ops in by_partition.values():
            self._write_index(ops)
        try:
            self._table.update_entity(
                indexed_mark(summary, key),
                mode="merge",
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceNotFoundError:
            log.info("record of %s gone while indexing", server_call_id)
        except ResourceModifiedError:
            log.info("record of %s changed while indexing: the change indexes it", server_call_id)
            self._drop_if_left(server_call_id, summary, key)

    def _drop_if_left(self, server_call_id: str, summary: dict[str, Any], key: str) -> None:
        """After a change won over this indexing: if the call's key moved on meanwhile, the row just written may
        have landed after the winner deleted it (a key it left), so delete it again (keys are never reused)."""
        if not key:
            return
        now = tables.get(self._table, summary["PartitionKey"], RECORD_ROW, select=["indexKey"])
        if now is not None and now.get("indexKey") != key:
            log.info("record of %s left listing key %s while it was indexed: deleted", server_call_id, key)
            tables.delete(self._table, self._index_partition(key), key)

    def _write_index(self, ops: list[Any]) -> None:
        """Index rows of one partition: one transaction, or one by one when they are more than a transaction takes
        (not seen: marking indexed clears left keys) or a left key's row is gone already (the listing drops
        leftovers too)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import TableTransactionError

        one_by_one = len(ops) > 100
        if not one_by_one:
            try:
                self._table.submit_transaction(ops)
            except (TableTransactionError, ResourceNotFoundError) as exc:
                if _failure(exc) != "missing":
                    raise
                one_by_one = True
        if one_by_one:
            for op, entity, *_ in ops:
                if op == "upsert":
                    self._table.upsert_entity(entity, mode="replace")
                else:
                    tables.delete(self._table, entity["PartitionKey"], entity["RowKey"])

    # -- reads ------------------------------------------------------------------------------

    def _rows(self, partition: str, flows: dict[str, Row] | None = None) -> dict[str, Row]:
        """The event and flow rows of a call, by row key; the flow outcomes its summary holds into ``flows``."""
        rows = {}
        for entity in self._table.query_entities(f"PartitionKey eq '{partition}'"):
            row = row_of(entity)
            if row is not None:
                rows[entity["RowKey"]] = row
            elif flows is not None and entity.get("RowKey") == RECORD_ROW:
                flows.update(flows_of(entity))
        return rows

    def get(self, server_call_id: str) -> dict[str, Any] | None:
        """One call's full record, folded now from its rows and flow outcomes; None when nothing is known of it."""
        self._ensure()
        flows: dict[str, Row] = {}
        rows = self._rows(call_key(server_call_id), flows)
        return build_record(server_call_id, [*flows.values(), *rows.values()]) if rows or flows else None

    def _index_streams(self, page: int) -> list[Iterator[Any]]:
        """The listing index as streams each newest first: one range read per shard (across its buckets) and the
        partition of earlier versions (empty once migrated: one request with nothing in it)."""
        select = ["PartitionKey", "RowKey", "serverCallId"]
        shards = [] if self._legacy_index else [shard_range(shard) for shard in range(INDEX_SHARDS)]
        filters = [f"PartitionKey ge '{low}' and PartitionKey lt '{high}'" for low, high in shards]
        filters.append(f"PartitionKey eq '{LEGACY_PARTITION}'")
        return [iter(self._table.query_entities(f, results_per_page=page, select=select)) for f in filters]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest calls, newest first: the shards' range reads of the index merged by key, each entry checked
        against its summary."""
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure()
        out: list[dict[str, Any]] = []
        listed: set[str] = set()
        streams = self._index_streams(min(limit + 5, 1000))
        for entry in heapq.merge(*streams, key=lambda e: (e["RowKey"], e["PartitionKey"])):
            if entry["RowKey"] in listed:  # a row and its copy, while the migration moves it: the same call
                continue
            server_call_id = entry.get("serverCallId") or ""
            try:
                current = self._table.get_entity(
                    partition_key=call_key(server_call_id),
                    row_key=RECORD_ROW,
                    select=["indexKey", "summary", STALE_ROWS, FLOW_PENDING],
                )
                if current.get(STALE_ROWS) or current.get(FLOW_PENDING):  # a flow outcome not folded in yet: now
                    # (the summary the fold writes names the key: no read again)
                    record = self._fold(server_call_id, None, create=False, query=bool(current.get(STALE_ROWS)))
                    key = index_key(record, server_call_id) or ""
                    current = {"indexKey": key, "summary": dumps(summarize(record))}
            except ResourceNotFoundError:
                current = None
            if current is None or current.get("indexKey") != entry["RowKey"]:
                # Left behind by a summary whose start moved (keys are never reused): drop it.
                tables.delete(self._table, entry["PartitionKey"], entry["RowKey"])
                continue
            listed.add(entry["RowKey"])
            out.append(json.loads(current["summary"]))
            if len(out) >= limit:
                break
        return out
