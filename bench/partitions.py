"""Benchmark: how the app's partition-heavy writes spread over Table Storage partitions, at the highest rate this
machine drives them into Azurite, with the listing index as it is (sharded) and as earlier versions wrote it (one
partition, ``recent``), in the same run.

    python -m bench.partitions [--seconds 20] [--rounds 1] [--processes 2] [--concurrency 8]
                               [--out-of-order 0.3] [--state-writes 4] [--layouts sharded,legacy]

Each layout gets fresh tables in one Azurite (in memory: no persistence pauses) and the same load for ``--seconds``
(``--rounds`` times, the layouts taking turns, so that the machine's other load falls on both):
``--processes`` worker processes of ``--concurrency`` threads, each placing calls back to back through core's
stores, as the app's functions would write them:

- the call's record (``core.records.store.RecordStore``): CallStarted, two CallParticipantAdded, two
  CallParticipantRemoved and CallEnded, each ``add_event`` (a point read and one transaction: the event's row and
  the summary), in a random order for ``--out-of-order`` of the calls (Event Grid does not keep order: the start
  is estimated, then its listing key moves), and the app leg's flow outcome (``add_flow``, among the call's last
  three events, as its CallDisconnected callback comes with them); the listing index row each key needs;
- the call's state (``core.calls.state.StateStore``, unless ``--state-writes 0``): created, its call connection
  indexed, then ``--state-writes`` compare-and-swap changes, as callbacks make them;
- the listing (``recent(20)``, one thread of the first process, every ``--list-every`` seconds): its requests and
  latency (reads; not counted among the writes).

Every request is counted where the store meets the SDK (a wrapper of the TableClient: core is not changed), by
table, partition and second: a transaction counts its entities on its partition. The highest rate on this 2-CPU
machine came with 2 processes of 6 to 16 threads (the SDK's CPU per request, not Azurite, is the limit: about
50 ms of client CPU a call); more processes or threads only add contention. Printed per layout: calls and
writes per second achieved, the distinct partitions written, the hottest partition's share of each second's entity
writes (max and p99 over the seconds) and of the listing index's, the index's hottest partition per call and what
it comes to at 1,000 call starts a second against Table Storage's target of 2,000 entities a second a partition,
and the listing's reads. Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ivr_load import cpu_seconds, machine, pct, start_storage  # noqa: E402

PARTITION_TARGET = 2_000  # entities/s a partition (learn.microsoft.com/azure/storage/tables/scalability-targets)
ACCOUNT_TARGET = 20_000  # transactions/s an account (1 KiB entities), same page
DESIGN_STARTS = 1_000  # call starts a second (issue 16)
WRITES = ("create_entity", "upsert_entity", "update_entity", "delete_entity", "submit_transaction")
READS = ("get_entity", "query_entities")


@dataclass
class Tally:
    """Requests by (table, partition, second): entity writes, write requests, reads; and what the worker did."""

    entities: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    writes: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    reads: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    calls: int = 0
    events: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    listings: list[float] = field(default_factory=list)  # seconds each
    listing_requests: list[int] = field(default_factory=list)
    cpu: float = 0.0

    def window(self, seconds: int, offset: int) -> Tally:
        """The requests of the run's whole seconds (the last, partial one and any after left out), shifted by
        ``offset`` seconds (so rounds of a layout add up second after second)."""
        out = Tally(calls=self.calls, events=self.events, failures=self.failures, cpu=self.cpu)
        out.listings, out.listing_requests = self.listings, self.listing_requests
        for name in ("entities", "writes", "reads"):
            counter = getattr(out, name)
            for (table, partition, second), n in getattr(self, name).items():
                if 0 <= second < seconds:
                    counter[(table, partition, second + offset)] += n
        return out

    def merge(self, other: Tally) -> None:
        for name in ("entities", "writes", "reads", "failures"):
            getattr(self, name).update(getattr(other, name))
        self.calls += other.calls
        self.events += other.events
        self.listings += other.listings
        self.listing_requests += other.listing_requests
        self.cpu += other.cpu


class Counted:
    """A TableClient whose requests are tallied by partition and second (from ``start``), then passed on."""

    def __init__(self, client: Any, table: str, tally: Tally, start: float, lock: threading.Lock) -> None:
        self._client, self._table, self._tally, self._start, self._lock = client, table, tally, start, lock
        self.requests = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _note(self, kind: str, partition: str, entities: int = 1) -> None:
        key = (self._table, partition, int(time.time() - self._start))
        with self._lock:
            if kind == "write":
                self._tally.writes[key] += 1
                self._tally.entities[key] += entities
            else:
                self._tally.reads[key] += 1
        self.requests.count = getattr(self.requests, "count", 0) + 1

    def create_entity(self, entity: Any, **kw: Any) -> Any:
        self._note("write", entity["PartitionKey"])
        return self._client.create_entity(entity, **kw)

    def upsert_entity(self, entity: Any, *a: Any, **kw: Any) -> Any:
        self._note("write", entity["PartitionKey"])
        return self._client.upsert_entity(entity, *a, **kw)

    def update_entity(self, entity: Any, *a: Any, **kw: Any) -> Any:
        self._note("write", entity["PartitionKey"])
        return self._client.update_entity(entity, *a, **kw)

    def delete_entity(self, *a: Any, **kw: Any) -> Any:
        self._note("write", kw.get("partition_key") or a[0])
        return self._client.delete_entity(*a, **kw)

    def submit_transaction(self, operations: Any, **kw: Any) -> Any:
        operations = list(operations)
        self._note("write", operations[0][1]["PartitionKey"], len(operations))
        return self._client.submit_transaction(operations, **kw)

    def get_entity(self, *a: Any, **kw: Any) -> Any:
        self._note("read", kw.get("partition_key") or a[0])
        return self._client.get_entity(*a, **kw)

    def query_entities(self, query_filter: str, **kw: Any) -> Any:
        self._note("read", query_filter)  # a query is tallied by its filter (the partitions it reads)
        return self._client.query_entities(query_filter, **kw)


# -- one worker process ----------------------------------------------------------------------------------------------


def _events(server_call_id: str, now: datetime, shuffle: bool, chance: random.Random) -> list[Any]:
    from core.records.events import CallRecordEvent, iso

    def event(kind: str, offset: float, **fields: Any) -> CallRecordEvent:
        return CallRecordEvent(uuid.uuid4().hex, kind, server_call_id, iso(now + timedelta(seconds=offset)), fields)

    caller, agent = {"id": "4:+14255550100"}, {"id": "4:+14255550101"}
    events = [
        event("CallStarted", 0, correlation_id=server_call_id[:36]),
        event("CallParticipantAdded", 0.2, participant=caller, display_name="Caller"),
        event("CallParticipantAdded", 12, participant=agent),
        event("CallParticipantRemoved", 40, participant=caller),
        event("CallParticipantRemoved", 40, participant=agent),
        event("CallEnded", 40, duration_seconds=40.0),
    ]
    if shuffle:
        chance.shuffle(events)
    return events


def _flow(records: Any, server_call_id: str, call_ref: str, now: datetime) -> None:
    from core.records.events import iso

    ended = iso(now + timedelta(seconds=13))
    flow = {"call_ref": call_ref, "flow": "customer_service", "connected_at": iso(now), "ended_at": ended}
    records.add_flow(server_call_id, {**flow, "transfer_target": "+14255550101", "transfer_result": "accepted"})


def _call(records: Any, state: Any, args: argparse.Namespace, chance: random.Random) -> int:
    """One call's writes, as the app makes them; how many record events."""
    from core.calls.state import CallState

    server_call_id = f"bench/{uuid.uuid4()}"  # server call ids hold '/' (base64 of a URL)
    call_ref = uuid.uuid4().hex
    now = datetime.now(UTC)
    if state is not None:
        state.create(CallState(call_ref=call_ref, status="connected", server_call_id=server_call_id))
        state.index(f"conn-{call_ref}", call_ref)
    events = _events(server_call_id, now, chance.random() < args.out_of_order, chance)
    # The app's flow outcome comes with its CallDisconnected callback, as the call's last events reach Event Grid.
    flow_at = len(events) - chance.randrange(0, 3)
    for n, event in enumerate(events):
        if n == flow_at:
            _flow(records, server_call_id, call_ref, now)
        records.add_event(event)
    if flow_at == len(events):
        _flow(records, server_call_id, call_ref, now)
    for step in range(args.state_writes if state is not None else 0):
        state.mutate(call_ref, lambda s, step=step: s.note(f"step {step}"))
    return len(events)


def worker(job: tuple[int, str, str, str, bool, float, argparse.Namespace]) -> Tally:
    """One process: ``concurrency`` threads placing calls until the deadline; its tally."""
    number, connection, records_table, state_table, legacy, start, args = job
    from azure.data.tables import TableClient

    from core.calls.state import StateStore
    from core.platform.transport import transport
    from core.records.store import RecordStore

    tally, lock = Tally(), threading.Lock()
    cpu_before = cpu_seconds()

    def client(name: str, kind: str) -> Counted:
        sdk = TableClient.from_connection_string(connection, table_name=name, **transport())
        return Counted(sdk, kind, tally, start, lock)

    records = RecordStore(client(records_table, "records"), legacy_index=legacy)
    state = StateStore(client(state_table, "state")) if args.state_writes > 0 else None
    deadline = start + args.seconds
    while time.time() < start:
        time.sleep(0.001)

    def place(thread: int) -> None:
        chance = random.Random(number * 1000 + thread)
        while time.time() < deadline:
            try:
                events = _call(records, state, args, chance)
                with lock:
                    tally.calls += 1
                    tally.events += events
            except Exception as exc:  # counted, then on: a benchmark reports failures, it does not stop on one
                with lock:
                    tally.failures[type(exc).__name__] += 1

    def listing() -> None:
        counted: Counted = records._table
        while time.time() < deadline:
            counted.requests.count = 0
            began = time.perf_counter()
            try:
                records.recent(20)
            except Exception as exc:
                tally.failures[f"listing {type(exc).__name__}"] += 1
            tally.listings.append(time.perf_counter() - began)
            tally.listing_requests.append(counted.requests.count)
            time.sleep(args.list_every)

    threads = [threading.Thread(target=place, args=(t,)) for t in range(args.concurrency)]
    if number == 0 and args.list_every > 0:
        threads.append(threading.Thread(target=listing))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.cpu = cpu_seconds() - cpu_before
    return tally


# -- the figures ------------------------------------------------------------------------------------------------------


def _kind(table: str, partition: str) -> str:
    from core.records.layout import is_index_partition

    if table == "state":
        return "state"
    return "index" if is_index_partition(partition) else "record"


@dataclass
class Figures:
    layout: str
    seconds: int
    calls: int
    events: int
    entities: int
    write_requests: int
    read_requests: int
    partitions: dict[str, int]
    hottest_share_max: float
    hottest_share_p99: float
    hottest_share_p50: float
    hottest_kind: str
    index_share_max: float
    index_share_p99: float
    index_share_p50: float
    index_partitions: int
    index_peak_per_second: int
    index_per_call: float  # the listing index's entity writes a call
    index_hottest_share: float  # of them, the hottest shard's (its buckets together) over the run
    failures: Counter[str]
    listing_ms_p50: float
    listing_requests: float
    cpu: float
    storage_cpu: float = float("nan")  # Azurite's CPU seconds over the run


def figures(layout: str, tally: Tally, seconds: int) -> Figures:
    """The tally over the whole seconds of the run (the last, partial one left out)."""
    per_second: dict[int, Counter[tuple[str, str]]] = defaultdict(Counter)
    for (table, partition, second), n in tally.entities.items():
        if 0 <= second < seconds:
            per_second[second][(table, partition)] += n
    shares, index_shares, peaks, kinds = [], [], [], Counter()
    index_total: Counter[str] = Counter()  # by shard (a bucket boundary crossed in the run splits no shard)
    for counts in per_second.values():
        total = sum(counts.values())
        (table, partition), top = counts.most_common(1)[0]
        shares.append(top / total)
        kinds[_kind(table, partition)] += 1
        index = Counter({k: v for k, v in counts.items() if _kind(*k) == "index"})
        for (_, partition), n in index.items():
            index_total[partition[:3] if partition.startswith("i") else partition] += n
        if index:
            index_top = index.most_common(1)[0][1]
            index_shares.append(index_top / sum(index.values()))
            peaks.append(index_top)
    partitions = Counter(_kind(t, p) for (t, p) in {(t, p) for (t, p, _) in tally.entities})
    hottest_index = index_total.most_common(1)[0][1] if index_total else 0
    index_writes = sum(index_total.values())
    return Figures(
        layout=layout,
        seconds=seconds,
        calls=tally.calls,
        events=tally.events,
        entities=sum(n for (_, _, s), n in tally.entities.items() if s < seconds),
        write_requests=sum(n for (_, _, s), n in tally.writes.items() if s < seconds),
        read_requests=sum(n for (_, _, s), n in tally.reads.items() if s < seconds),
        partitions=dict(partitions),
        hottest_share_max=max(shares, default=0.0),
        hottest_share_p99=pct(shares, 99),
        hottest_share_p50=pct(shares, 50),
        hottest_kind=kinds.most_common(1)[0][0] if kinds else "-",
        index_share_max=max(index_shares, default=0.0),
        index_share_p99=pct(index_shares, 99),
        index_share_p50=pct(index_shares, 50),
        index_partitions=partitions.get("index", 0),
        index_peak_per_second=max(peaks, default=0),
        index_per_call=index_writes / max(1, tally.calls),
        index_hottest_share=hottest_index / max(1, index_writes),
        failures=tally.failures,
        listing_ms_p50=pct(tally.listings, 50) * 1000,
        listing_requests=pct([float(n) for n in tally.listing_requests], 50),
        cpu=tally.cpu,
    )


def report(rows: list[Figures], args: argparse.Namespace) -> None:
    print()
    print(f"{args.rounds} x {args.seconds} s per layout, {args.processes} process(es) x {args.concurrency} threads, "
          f"{args.out_of_order:.0%} of calls' events out of order, {args.state_writes} state writes a call; "
          f"{machine()}")
    width = 34
    print(f"{'':{width}}" + "".join(f"{f.layout:>14}" for f in rows))

    def line(label: str, values: list[str]) -> None:
        print(f"{label:{width}}" + "".join(f"{v:>14}" for v in values))

    line("calls/s", [f"{f.calls / f.seconds:.1f}" for f in rows])
    line("record events/s", [f"{f.events / f.seconds:.0f}" for f in rows])
    line("write requests/s", [f"{f.write_requests / f.seconds:.0f}" for f in rows])
    line("entity writes/s", [f"{f.entities / f.seconds:.0f}" for f in rows])
    line("read requests/s", [f"{f.read_requests / f.seconds:.0f}" for f in rows])
    line("partitions written", [str(sum(f.partitions.values())) for f in rows])
    line("  of them the listing index's", [str(f.index_partitions) for f in rows])
    line("hottest partition, share/s: max", [f"{f.hottest_share_max:.1%}" for f in rows])
    line("                            p99", [f"{f.hottest_share_p99:.1%}" for f in rows])
    line("                            p50", [f"{f.hottest_share_p50:.1%}" for f in rows])
    line("  most often hottest", [f.hottest_kind for f in rows])
    line("index's hottest, share of its/s: max", [f"{f.index_share_max:.1%}" for f in rows])
    line("                                 p99", [f"{f.index_share_p99:.1%}" for f in rows])
    line("                                 p50", [f"{f.index_share_p50:.1%}" for f in rows])
    line("index's hottest: entities/s peak", [str(f.index_peak_per_second) for f in rows])
    line("index: entity writes a call", [f"{f.index_per_call:.2f}" for f in rows])
    line("index: hottest shard's share, run", [f"{f.index_hottest_share:.1%}" for f in rows])
    at_design = [f.index_per_call * f.index_hottest_share * DESIGN_STARTS for f in rows]
    line(f"  so at {DESIGN_STARTS:,} starts/s: entities/s", [f"{v:.0f}" for v in at_design])
    line(f"  of the {PARTITION_TARGET:,}/s target", [f"{v / PARTITION_TARGET:.0%}" for v in at_design])
    line("listing: requests (p50)", [f"{f.listing_requests:.0f}" for f in rows])
    line("listing: ms (p50)", [f"{f.listing_ms_p50:.1f}" for f in rows])
    line("client CPU per call", [f"{f.cpu / max(1, f.calls) * 1000:.1f} ms" for f in rows])
    line("Azurite CPU busy", [f"{f.storage_cpu / f.seconds:.0%}" for f in rows])
    line("failures", [str(sum(f.failures.values())) for f in rows])
    for f in rows:
        if f.failures:
            print(f"  {f.layout}: {dict(f.failures)}")


def run(connection: str, layout: str, args: argparse.Namespace, storage_pid: int | None) -> tuple[Tally, float]:
    """One round of a layout on fresh tables: its tally (whole seconds only) and Azurite's CPU seconds."""
    suffix = uuid.uuid4().hex[:8]
    records_table, state_table = f"records{suffix}", f"state{suffix}"
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(connection)
    for name in (records_table, state_table):
        service.create_table(name)
    start = time.time() + 5.0  # every process starts together, once spawned and its clients built
    jobs = [(n, connection, records_table, state_table, layout == "legacy", start, args) for n in range(args.processes)]
    print(f"{layout}: {args.seconds} s ...", flush=True)
    total = Tally()
    with ProcessPoolExecutor(max_workers=args.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        running = pool.map(worker, jobs)
        while time.time() < start:
            time.sleep(0.01)
        storage_before = cpu_seconds(storage_pid) if storage_pid else float("nan")
        for tally in running:
            total.merge(tally)
        storage_cpu = cpu_seconds(storage_pid) - storage_before if storage_pid else float("nan")
    return total, storage_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.partitions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="of load per layout and round")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the layouts in turn")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (the SDK is CPU-bound)")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker process")
    parser.add_argument("--out-of-order", type=float, default=0.3, help="share of calls whose events come shuffled")
    parser.add_argument("--state-writes", type=int, default=4, help="state changes a call (0: no state table)")
    parser.add_argument("--list-every", type=float, default=1.0, help="seconds between listings (0: none)")
    parser.add_argument("--layouts", default="sharded,legacy", help="which listing layouts, in this order")
    parser.add_argument("--connection-string", help="a running Azurite's (default: one started for the run)")
    args = parser.parse_args(argv)
    args.seconds = max(1, min(args.seconds, 600))
    args.rounds = max(1, min(args.rounds, 10))
    layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    if not set(layouts) <= {"sharded", "legacy"}:
        parser.error("--layouts: sharded and/or legacy")
    storage = None if args.connection_string else start_storage(in_memory=True)
    connection = args.connection_string or storage.connection_string
    try:
        pid = storage.process.pid if storage is not None else None
        totals = {layout: Tally() for layout in layouts}
        storage_cpu = dict.fromkeys(layouts, 0.0)
        for round_ in range(args.rounds):  # the layouts take turns: the machine's other load falls on both
            for layout in layouts:
                tally, cpu = run(connection, layout, args, pid)
                totals[layout].merge(tally.window(args.seconds, round_ * args.seconds))
                storage_cpu[layout] += cpu
        rows = []
        for layout in layouts:
            rows.append(figures(layout, totals[layout], args.seconds * args.rounds))
            rows[-1].storage_cpu = storage_cpu[layout]
    finally:
        if storage is not None:
            storage.stop()
    report(rows, args)


if __name__ == "__main__":
    main()
