"""How call records lie in their table: keys, the rows, and the summary entity with the properties it carries.

One place for the storage layout, so the store reads as an algorithm and the layout can be checked row by row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from core.calls.events import parse_time
from core.platform.tables import row_key
from core.records.events import CallRecordEvent
from core.records.fold import Row, summarize

log = logging.getLogger("core.records.layout")

# One table (``RECORDS_TABLE``):
#
#     PartitionKey                RowKey                              what
#     c<hash of server call id>   ev-<event id>                       one Event Grid event's fields
#     c<hash of server call id>   flow-<call ref>                     one app leg's flow outcome (written by
#                                                                     earlier versions; still read)
#     c<hash of server call id>   record                              the folded summary (ETag-guarded), the
#                                                                     rows it was folded from while they fit,
#                                                                     and the app legs' flow outcomes
#     i<shard>-<inverted bucket>  <inverted start time>-<s|e>-<hash>  the listing index: newest first
#     recent                      <inverted start time>-<s|e>-<hash>  the listing index as earlier versions wrote
#                                                                     it (one partition); read until migrated
#                                                                     (``core.records.migrate``)
#
# An event row is keyed by the event's id, so a redelivery writes nothing new. An app leg's flow outcome is keyed
# by the call's reference (a rerun of the call-ended hook rewrites the same outcome) and kept on the summary itself,
# in a ``flow_<hash>`` property. The summary carries the rows (``rowChunks``, ``rows0``..) while they fit, so a
# fold needs only the summary.
#
# The summary names its listing key: the call's start (``s``: from CallStarted) or, until CallStarted arrives, the
# earliest moment known of it (``e``). Keys only move to new values (an ``e`` estimate only ever goes down, an ``s``
# key is never an ``e`` key), so a key the summary has left is never used again and can be deleted.
# ``indexKey`` is the record's listing key; ``indexedKey`` the key whose index row is known to be written (set
# after the index row is, so a key new to the summary starts unconfirmed); ``staleIndexKeys`` the keys the summary
# has left whose index rows may still be there.
#
# The listing index is spread over partitions (docs/call-records.md has the arithmetic): a listing key's partition
# is its shard (the call's hash mod INDEX_SHARDS: every call start spreads evenly) and the BUCKET_SECONDS bucket of
# its start, inverted, so that one shard's rows, read as one range of partition keys (``i03-`` .. ``i03.``), come
# newest first across its buckets. The partition follows from the row key alone (``index_partition``), so the
# summary's keys name index rows as before. A listing merges the shards' ranges (and the earlier versions' partition,
# until it is empty) by row key.

EVENT_ROW = "ev-"
FLOW_ROW = "flow-"
RECORD_ROW = "record"
LEGACY_PARTITION = "recent"  # the listing index of earlier versions: one partition
INDEX_PREFIX = "i"  # the listing index's partitions: i<shard>-<inverted bucket>
INDEX_SHARDS = 8  # 1,000 call starts/s x up to 5 index entities each / 8 = 625 entities/s a partition at most
BUCKET_SECONDS = 300  # a partition holds the starts of one 5-minute bucket of one shard
MAX_MICROS = 9_999_999_999_999_999  # inverted timestamps: 19 digits, good for centuries
STALE_ROWS = "staleRows"  # on a summary (from earlier versions): a row was written without folding it in; query
FLOW_PENDING = "flowPending"  # on a summary: a flow outcome was merged onto it and is not in its record yet
FLOW_PROPERTY = "flow_"  # the summary's properties that hold flow outcomes: flow_<hash of the row key>
INLINE_CHUNK = 30_000  # characters a property holds: Table Storage takes 32K UTF-16 units, and the JSON is ASCII
INLINE_LIMIT = 240_000  # the most row text a summary carries (~480 KB of an entity's 1 MiB); beyond, a query


def dumps(value: Any) -> str:
    """JSON as the records store it: compact, keys sorted (so equal values compare equal as text)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# -- keys -------------------------------------------------------------------------------------


def _micros(moment: datetime) -> int:
    """Microseconds since 1970, within what a 19-digit inverted key holds."""
    return min(max((moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1), 0), MAX_MICROS)


def call_key(server_call_id: str) -> str:
    """The partition of a call: a hash, since server call ids may hold characters keys cannot."""
    return "c" + hashlib.sha256(server_call_id.encode()).hexdigest()[:40]


def index_key(record: dict[str, Any], server_call_id: str) -> str | None:
    """The listing key of a record: newest first, ``s`` when the start is known, ``e`` while estimated."""
    moment = parse_time(record.get("started_at"))
    if moment is None:
        return None
    flag = "s" if record.get("started_at_source") == "CallStarted" else "e"
    return f"{MAX_MICROS - _micros(moment):019d}-{flag}-{call_key(server_call_id)}"


def index_shard(key: str) -> int:
    """The shard of a listing key: its call's hash (the key's last part) mod INDEX_SHARDS; a key of another shape
    (none is written: a leftover of something else) by its own hash."""
    call = key.rpartition("-")[2]
    digits = call[1:9]
    if call.startswith("c") and len(digits) == 8 and all(c in "0123456789abcdef" for c in digits):
        return int(digits, 16) % INDEX_SHARDS
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % INDEX_SHARDS


def index_partition(key: str) -> str:
    """The partition of a listing key: ``i<shard>-<inverted start of its bucket>``, so that a shard's partitions,
    in key order, go from the newest bucket to the oldest (and its rows, in each, newest first)."""
    inverted = key.partition("-")[0]
    micros = MAX_MICROS - int(inverted) if len(inverted) == 19 and inverted.isdigit() else 0
    bucket = micros - micros % (BUCKET_SECONDS * 1_000_000)
    return f"{INDEX_PREFIX}{index_shard(key):02d}-{MAX_MICROS - bucket:019d}"


def shard_range(shard: int) -> tuple[str, str]:
    """The partition keys of one shard of the listing index, as a range: from (inclusive) and to (exclusive)."""
    return f"{INDEX_PREFIX}{shard:02d}-", f"{INDEX_PREFIX}{shard:02d}."


def is_index_partition(partition: str) -> bool:
    """Whether a partition key is one of the listing index's (either layout)."""
    if partition == LEGACY_PARTITION:
        return True
    return partition.startswith(INDEX_PREFIX) and partition[1:3].isdigit() and partition[3:4] == "-"


def flow_property(key: str) -> str:
    """The summary property that holds the flow outcome with this row key (property names are identifiers)."""
    return FLOW_PROPERTY + hashlib.sha256(key.encode()).hexdigest()[:32]


# -- rows -------------------------------------------------------------------------------------


def event_entity(event: CallRecordEvent, time: str | None) -> dict[str, Any]:
    """The row of one Event Grid event, keyed by its id; ``time`` is the event's (or when it first came)."""
    return {
        "PartitionKey": call_key(event.server_call_id),
        "RowKey": EVENT_ROW + row_key(event.id),
        "kind": "event",
        "eventId": event.id,
        "type": event.type,
        "time": time,
        "serverCallId": event.server_call_id,
        "data": dumps(event.fields),
    }


def row_of(entity: dict[str, Any]) -> Row | None:
    """An event or flow row as build_record takes it; None for any other row (the summary)."""
    kind = entity.get("kind")
    if kind not in ("event", "flow"):
        return None
    return {
        "kind": kind,
        "id": entity.get("eventId") or entity["RowKey"],
        "type": entity.get("type"),
        "time": entity.get("time") or None,
        "data": json.loads(entity.get("data") or "{}"),
    }


def flow_entry(flow: dict[str, Any]) -> Row:
    """An app leg's flow outcome as build_record takes it, keyed by its leg.

    One too large for a property (a very long call's tones, say) keeps its plain fields and says it was cut."""
    key = FLOW_ROW + row_key(flow.get("call_ref") or flow.get("call_connection_id") or "app")
    time = flow.get("connected_at") or flow.get("ended_at") or None
    if len(dumps(flow)) > INLINE_CHUNK - 1_000:
        flow = {k: v for k, v in flow.items() if not isinstance(v, (list, dict))} | {"truncated": True}
    return {"kind": "flow", "id": key, "type": None, "time": time, "data": flow}


# -- the summary ------------------------------------------------------------------------------


def flows_of(summary: dict[str, Any] | None) -> dict[str, Row]:
    """The flow outcomes a summary holds, as build_record takes them, by row key.

    One that does not parse is left out (and logged) rather than failing the whole record."""
    flows: dict[str, Row] = {}
    for name, value in (summary or {}).items():
        if not name.startswith(FLOW_PROPERTY) or not isinstance(value, str):
            continue
        try:
            row = json.loads(value)
            flows[row["id"]] = row
        except (ValueError, TypeError, KeyError):
            log.warning("flow outcome %s of a call record does not parse; left out", name)
    return flows


def flow_mark(server_call_id: str, row: Row, now: str | None) -> dict[str, Any]:
    """A flow outcome merged onto the call's summary, marked ``flowPending`` (not in its record yet)."""
    return {
        "PartitionKey": call_key(server_call_id),
        "RowKey": RECORD_ROW,
        flow_property(row["id"]): dumps(row),
        FLOW_PENDING: now,
    }


def pack_rows(rows: dict[str, Row], limit: int = INLINE_LIMIT) -> dict[str, Any]:
    """A call's rows (by row key) as properties of its summary: ``rowChunks`` and ``rows0``, ``rows1``..

    Each of at most INLINE_CHUNK characters; ``rowChunks`` 0 and no rows when they come to more than ``limit``."""
    text = dumps(rows)
    if len(text) > limit:
        return {"rowChunks": 0}
    chunks = [text[at : at + INLINE_CHUNK] for at in range(0, len(text), INLINE_CHUNK)]
    return {"rowChunks": len(chunks), **{f"rows{n}": chunk for n, chunk in enumerate(chunks)}}


def unpack_rows(summary: dict[str, Any]) -> dict[str, Row] | None:
    """The rows a summary carries, by row key; None when it carries none (too many, or an older summary)."""
    count = summary.get("rowChunks")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return None
    return json.loads("".join(summary[f"rows{n}"] for n in range(count)))


def summary_entity(
    server_call_id: str,
    record: dict[str, Any],
    rows: dict[str, Row],
    current: dict[str, Any] | None,
    inline_limit: int = INLINE_LIMIT,
    flows: dict[str, Row] | None = None,
) -> dict[str, Any]:
    """The summary row of a call folded into ``record`` from ``rows`` and ``flows``, following ``current``.

    ``flows`` are the flow outcomes it carries; ``current`` the row it replaces, whose listing keys it inherits."""
    key = index_key(record, server_call_id) or ""
    before = current or {}
    stale = set(json.loads(before.get("staleIndexKeys") or "[]"))
    stale.update(k for k in (before.get("indexKey"), before.get("indexedKey")) if k and k != key)
    stale.discard(key)
    return {
        "PartitionKey": call_key(server_call_id),
        "RowKey": RECORD_ROW,
        "serverCallId": server_call_id,
        "status": record["status"],
        "startedAt": record.get("started_at") or "",
        "indexKey": key,
        "indexedKey": key if key and before.get("indexedKey") == key else "",
        "staleIndexKeys": dumps(sorted(stale)),
        "summary": dumps(summarize(record)),
        **pack_rows(rows, inline_limit),
        **{flow_property(key): dumps(row) for key, row in (flows or {}).items()},
    }


def index_pending(summary: dict[str, Any]) -> bool:
    """Whether the listing index may lag a summary: its key's row not known written, or a left key's row not gone."""
    key = summary.get("indexKey") or ""
    return bool(json.loads(summary.get("staleIndexKeys") or "[]")) or bool(key and summary.get("indexedKey") != key)


def index_entry(server_call_id: str, key: str, legacy: bool = False) -> dict[str, Any]:
    """The listing index's row for a call's listing key (``legacy``: where earlier versions wrote it)."""
    partition = LEGACY_PARTITION if legacy else index_partition(key)
    return {"PartitionKey": partition, "RowKey": key, "serverCallId": server_call_id}


def indexed_mark(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """Merged onto a summary once its index is written: the key known written, no left keys outstanding."""
    return {"PartitionKey": summary["PartitionKey"], "RowKey": RECORD_ROW, "indexedKey": key, "staleIndexKeys": "[]"}
