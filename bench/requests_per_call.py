"""Benchmark: the requests the app makes per call to Table Storage, Blob Storage and ACS, by event type.

    python -m bench.requests_per_call [--calls 300] [--concurrency 12] [--mix demo|sales] [--recording on_connect|off]
                                      [--recording-seconds 1] [--azurite-debug] [--scale-rate 1000] [--instances 1]

Scripted callers play the shipped customer-service flow against the ACS simulator and Azurite on this machine, every
call recorded by default (``RECORDING_MODE=on_connect``, as ``make demo``). ``--mix demo`` (the default) rotates the
five callers of the demo and of bench/reliability.py (sales by DTMF, support by speech, silence until the operator, a
hang-up mid-menu, a transfer the agent declines); ``--mix sales`` plays only the first (bench/callback_latency.py's
call). No fault is injected: every event is delivered once. One app instance by default; ``--instances N`` runs the
app as Flex Consumption places it (tools/cluster.py: N instances for the callbacks, taking turns, one per Event Grid
function), where a call's state is often changed on an instance that did not change it last.

What is counted, and where:

- **at the app** (the source of the per-event figures): the app runs with ``REQUEST_COUNTS=1``
  (core/platform/observability.py), which counts every HTTP request it sends by kind and logs, when an invocation
  ends, one line with its counts and the call's ids; requests sent outside an invocation (a recording copy's worker
  threads staging blocks, the lease renewers) are logged one by one. The bench reads those lines from the app's log.
- **at the simulator** (a cross-check of the ACS figures, and the events sent): its log of every ACS request
  (``GET /__sim/requests``) and of every event it sent (``GET /__sim/events``).
- **at Azurite**, with ``--azurite-debug`` (a cross-check of the storage totals): its debug log names the operation of
  every request it served. Slower: Azurite writes ~20 lines per request.

A warm-up call goes first (clients made, tables created); everything is counted from its end. Printed: per call, the
requests of each event type by dependency (Table Storage reads and writes, entities written, Blob Storage, ACS),
every kind of request with its key shape (a partition key that is the same for every call is a shared partition: it
does not spread with the calls), the cross-checks, and each figure times ``--scale-rate`` new calls per second.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.reliability import SCRIPTS, Script  # noqa: E402

LINE = "request counts "
READS = ("get", "query", "scan", "get-tables")
CALLBACK = "callback "
BACKGROUND = "(outside an invocation)"


# -- the stack --------------------------------------------------------------------------------------------------


def start_storage(debug_log: Path | None) -> Any:
    """Azurite as the tests run it (tools/azurite.py), with its debug log when asked."""
    from tools import azurite

    return azurite.start(options=("--debug", str(debug_log)) if debug_log is not None else ())


def ctl(sim: Any, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sim.endpoint + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def play(sim: Any, index: int, script: Script, timeout: float = 120.0) -> str:
    """Ring the app as ``script``'s caller and wait until the call is over; when the app has left it (a transfer),
    the caller and the agent hang up, which ends the call and its recording. The server call id."""
    caller = f"+1425557{index:04d}"
    server_call_id = ctl(sim, "POST", "/__sim/calls", {"to": "+18005550123", "from": caller, **script.body})[
        "serverCallId"]
    call = sim.sim.engine.calls[server_call_id]
    deadline = time.monotonic() + timeout
    hung_up = False
    while time.monotonic() < deadline:
        if call.state == "ended":
            break
        connections = list(call.connections)
        if connections and all(c.state == "disconnected" for c in connections) and not hung_up:
            try:
                ctl(sim, "POST", f"/__sim/calls/{server_call_id}/hangup", {})
                hung_up = True
            except urllib.error.HTTPError:
                pass
        time.sleep(0.1)
    return server_call_id


def log_files(app: Any) -> list[Path]:
    """The app's log: one host's, or every instance's of a cluster (tools/cluster.py)."""
    if hasattr(app, "all_instances"):
        return [i.log_path for i in app.all_instances()]
    return [app.log_path]


def log_sizes(app: Any) -> dict[Path, int]:
    return {path: path.stat().st_size if path.exists() else 0 for path in log_files(app)}


def read_logs(app: Any, offsets: dict[Path, int] | None = None) -> str:
    """What the app logged after ``offsets`` (by file; from the start when None), every file one after another."""
    parts = []
    for path in log_files(app):
        with open(path, "rb") as f:
            f.seek((offsets or {}).get(path, 0))
            parts.append(f.read().decode("utf-8", "replace"))
    return "\n".join(parts)


def settle(sim: Any, app: Any, timeout: float = 120.0) -> bool:
    """Until the simulator has nothing left to deliver, every RecordingFileStatusUpdated it sent has been handled to
    its end (a line of counts in the app's log), and the log has been quiet for a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        idle = ctl(sim, "GET", "/__sim/idle?timeout=5")["idle"]
        sent = sum(1 for e in ctl(sim, "GET", "/__sim/events")["eventgrid"]
                   if e["eventType"].endswith("RecordingFileStatusUpdated"))
        copied = read_logs(app).count('request counts {"scope":"RecordingFileStatusUpdated"')
        if idle and copied >= sent:
            sizes = log_sizes(app)
            time.sleep(1.0)
            if log_sizes(app) == sizes and ctl(sim, "GET", "/__sim/idle?timeout=1")["idle"]:
                return True
        time.sleep(0.3)
    return False


# -- what the app logged -------------------------------------------------------------------------------------------


@dataclass
class Counted:
    """Requests by kind, per event type (and the events seen), and outside any invocation."""

    events: Counter[str] = field(default_factory=Counter)  # event type -> invocations
    by_event: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # type -> kind -> n
    background: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # thread -> kind -> n
    by_call: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # server call id -> kind


def parse_log(text: str, calls: set[str]) -> Counted:
    """The request-count lines of the app's log, for the calls in ``calls`` (and every line outside an invocation)."""
    decoder = json.JSONDecoder()
    out = Counted()
    for line in text.splitlines():
        at = line.find(LINE)
        if at < 0:
            continue
        try:
            entry, end = decoder.raw_decode(line, at + len(LINE))
        except ValueError:
            continue
        counts = Counter({k: int(v) for k, v in entry["counts"].items()})
        if entry.get("scope") is None:
            thread = re.sub(r"[-_]\d+(_\d+)?$", "", entry.get("thread") or "?")  # ThreadPoolExecutor-3_1 -> one name
            out.background[thread].update(counts)
            continue
        ids = re.search(r"server_call=(\S+?)[\] ]", line[end:] + " ")
        server_call_id = ids[1] if ids else ""
        if server_call_id not in calls:
            continue
        kind = entry["scope"].removeprefix(CALLBACK)
        label = f"{kind} (callback)" if entry["scope"].startswith(CALLBACK) else kind
        out.events[label] += 1
        out.by_event[label].update(counts)
        out.by_call[server_call_id].update(counts)
    return out


def split(kind: str) -> tuple[str, str]:
    """(service, operation) of a kind: ``table get callstate {id}/state`` -> (table, get)."""
    parts = kind.split(" ")
    return parts[0], parts[1] if len(parts) > 1 else ""


@dataclass
class Tally:
    table_reads: float = 0.0
    table_writes: float = 0.0  # requests that write (an entity group transaction is one)
    entities: float = 0.0  # entities written (each entity of a transaction counts)
    blob: float = 0.0
    acs: float = 0.0
    other: float = 0.0
    conflicts: float = 0.0  # ETag conflicts met and retried (observability.count): not requests, their cost is

    def add(self, kind: str, n: float) -> None:
        service, op = split(kind)
        if service == "conflict":
            self.conflicts += n
        elif service == "table":
            if op.startswith("batch."):
                self.entities += n
            elif op in READS:
                self.table_reads += n
            else:
                self.table_writes += n
                if op not in ("batch", "create-table"):
                    self.entities += n
        elif service == "blob":
            self.blob += n
        elif service == "acs":
            self.acs += n
        else:
            self.other += n

    @property
    def storage(self) -> float:
        return self.table_reads + self.table_writes + self.blob


FIELDS = ("table_reads", "table_writes", "entities", "blob", "acs", "other", "conflicts")


def tally(counts: Counter[str], per: float) -> Tally:
    t = Tally()
    for kind, n in counts.items():
        t.add(kind, n / per)
    return t


# -- cross-checks ------------------------------------------------------------------------------------------------


def azurite_operations(debug_log: Path, offset: int) -> Counter[str]:
    """Requests Azurite served after ``offset`` in its debug log, by its name of the operation."""
    found: Counter[str] = Counter()
    with open(debug_log, "rb") as f:
        f.seek(offset)
        for raw in f:
            at = raw.find(b"DispatchMiddleware: Operation=")
            if at >= 0:
                found[raw[at + 30 :].strip().decode(errors="replace")] += 1
    return found


def census(connection_string: str) -> dict[str, Counter[str]]:
    """Rows per partition of every table the app wrote: a partition holding the rows of many calls is shared."""
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(connection_string)
    out = {}
    for table in service.list_tables():
        client = service.get_table_client(table.name)
        out[table.name] = Counter(e["PartitionKey"] for e in client.list_entities(select=["PartitionKey"]))
    return out


def blob_bytes(connection_string: str) -> tuple[int, int]:
    """Blobs the app wrote (every container of the account) and their bytes, after the run."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(connection_string)
    count = size = 0
    for container in service.list_containers():
        for blob in service.get_container_client(container.name).list_blobs():
            count += 1
            size += blob.size or 0
    return count, size


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


# -- the run ------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    calls: list[tuple[Script, str]]
    counted: Counted
    acs_requests: Counter[str]  # the simulator's log, by operation
    events_sent: Counter[str]  # the simulator's, by type (callbacks and Event Grid)
    azurite: Counter[str] | None
    partitions: dict[str, Counter[str]]  # table -> partition key -> rows, after the run
    blobs: tuple[int, int]  # blobs and bytes in Blob Storage after the run (the warm-up's included)
    settled: bool
    seconds: float


def run(args: argparse.Namespace) -> Run:
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tools.apphost import start_app

    scripts = SCRIPTS if args.mix == "demo" else SCRIPTS[:1]
    workdir = Path(tempfile.mkdtemp(prefix="requests-per-call-"))
    debug_log = workdir / "azurite-debug.log" if args.azurite_debug else None
    storage = start_storage(debug_log)
    try:
        config = Config(recording_seconds=args.recording_seconds, ring_timeout=600)
        with SimulatorThread(config=config) as sim:
            settings = {"REQUEST_COUNTS": "1", "RECORDING_MODE": args.recording, "LOG_LEVEL": "INFO"}
            if args.instances > 1:  # as Flex Consumption places the app: a call's callbacks over several instances
                from tools.cluster import start_cluster

                app = start_cluster(sim, storage.connection_string, http_instances=args.instances,
                                    eventgrid_instances=1, mode="round_robin", timeout=60, **settings)
            else:
                app = start_app(sim, storage.connection_string, timeout=60, **settings)
            try:
                warm = play(sim, 9999, scripts[0])
                settle(sim, app)
                log_from = log_sizes(app)
                acs_from = len(ctl(sim, "GET", "/__sim/requests"))
                sent_before = ctl(sim, "GET", "/__sim/events")
                seen = {e["id"] for e in sent_before["webhook"]} | {e["id"] for e in sent_before["eventgrid"]}
                azurite_from = debug_log.stat().st_size if debug_log else 0
                started = time.monotonic()
                plan = [scripts[i % len(scripts)] for i in range(args.calls)]
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    ids = list(pool.map(lambda job: play(sim, job[0], job[1]), enumerate(plan)))
                settled = settle(sim, app, timeout=args.time_limit)
                seconds = time.monotonic() - started
                calls = list(zip(plan, ids, strict=True))
                counted = parse_log(read_logs(app, log_from), set(ids) - {warm})
                acs = Counter(e.get("operation", f"{e.get('method')} {e.get('path')}")
                              for e in ctl(sim, "GET", "/__sim/requests")[acs_from:])
                sent = ctl(sim, "GET", "/__sim/events")
                events: Counter[str] = Counter()
                for e in sent["webhook"]:
                    if e["id"] not in seen:
                        events[e["type"].rsplit(".", 1)[-1] + " (callback)"] += 1
                for e in sent["eventgrid"]:
                    if e["id"] not in seen:
                        events[e["eventType"].rsplit(".", 1)[-1]] += 1
                azurite = azurite_operations(debug_log, azurite_from) if debug_log else None
                partitions = census(storage.connection_string)
                blobs = blob_bytes(storage.connection_string)
                return Run(calls, counted, acs, events, azurite, partitions, blobs, settled, seconds)
            finally:
                files = log_files(app)
                app.stop()
                for path in files:
                    path.unlink(missing_ok=True)
    finally:
        storage.stop()
        if debug_log is not None:
            debug_log.unlink(missing_ok=True)
        workdir.rmdir()


# -- the report -------------------------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return "-" if value == 0 else f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def report(r: Run, args: argparse.Namespace) -> None:
    n = len(r.calls)
    c = r.counted
    scripts = Counter(script.name for script, _ in r.calls)
    print(f"\n{n} calls ({', '.join(f'{k} x{v}' for k, v in scripts.items())}), RECORDING_MODE={args.recording}, "
          f"{args.recording_seconds:g} s of audio per recording; "
          f"{f'{args.instances} HTTP instances (round robin); ' if args.instances > 1 else 'one instance; '}"
          f"{r.seconds:.0f} s; "
          f"{datetime.now(UTC):%Y-%m-%d}, commit {git_commit()}")
    if not r.settled:
        print("  ! not everything settled within the time limit: the figures may be short")

    print("\nPer call, by event type (requests per call; an entity group transaction is one write, its entities count "
          "apart;\n'per event': requests per invocation; 'conflicts': ETag conflicts met and retried, whose extra "
          "requests are in the counts):")
    head = (f"  {'event':36} {'per call':>8} | {'tbl read':>8} {'tbl write':>9} {'entities':>8} | {'blob':>6} | "
            f"{'ACS':>5} | {'all':>6} | {'per event':>9} | {'conflicts':>9}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    total = Tally()
    order = sorted(c.events, key=lambda k: (k.endswith("(callback)"), k))
    for label in order:
        t = tally(c.by_event[label], n)
        requests = sum(v for k, v in c.by_event[label].items() if not k.startswith(("conflict ", "table batch.")))
        per_event = requests / max(c.events[label], 1)
        for name in FIELDS:
            setattr(total, name, getattr(total, name) + getattr(t, name))
        all_requests = t.table_reads + t.table_writes + t.blob + t.acs + t.other
        print(f"  {label:36} {c.events[label] / n:8.2f} | {fmt(t.table_reads):>8} {fmt(t.table_writes):>9} "
              f"{fmt(t.entities):>8} | {fmt(t.blob):>6} | {fmt(t.acs):>5} | {fmt(all_requests):>6} | "
              f"{per_event:9.2f} | {fmt(t.conflicts):>9}")
    background: Counter[str] = Counter()
    for counts in c.background.values():
        background.update(counts)
    if background:
        t = tally(background, n)
        for name in FIELDS:
            setattr(total, name, getattr(total, name) + getattr(t, name))
        print(f"  {BACKGROUND:36} {'':8} | {fmt(t.table_reads):>8} {fmt(t.table_writes):>9} {fmt(t.entities):>8} | "
              f"{fmt(t.blob):>6} | {fmt(t.acs):>5} | {fmt(t.table_reads + t.table_writes + t.blob + t.acs):>6} | "
              f"{'':9} | {fmt(t.conflicts):>9}")
    print("  " + "-" * (len(head) - 2))
    events_per_call = sum(c.events.values()) / n
    all_total = total.table_reads + total.table_writes + total.blob + total.acs + total.other
    print(f"  {'per call':36} {events_per_call:8.2f} | {fmt(total.table_reads):>8} {fmt(total.table_writes):>9} "
          f"{fmt(total.entities):>8} | {fmt(total.blob):>6} | {fmt(total.acs):>5} | {fmt(all_total):>6} | "
          f"{'':9} | {fmt(total.conflicts):>9}")
    rate = args.scale_rate
    print(f"  {f'x {rate:,} new calls/s (requests/s)':36} {events_per_call * rate:8,.0f} | "
          f"{total.table_reads * rate:8,.0f} {total.table_writes * rate:9,.0f} {total.entities * rate:8,.0f} | "
          f"{total.blob * rate:6,.0f} | {total.acs * rate:5,.0f} | {all_total * rate:6,.0f} | {'':9} | "
          f"{total.conflicts * rate:9,.0f}")

    print("\nEvery kind of request, per call (key shape: {id} varies per call; a fixed key is one partition for "
          "every call):")
    kinds: Counter[str] = Counter()
    where: dict[str, set[str]] = defaultdict(set)
    for label, counts in c.by_event.items():
        kinds.update(counts)
        for kind in counts:
            where[kind].add(label)
    for thread, counts in c.background.items():
        kinds.update(counts)
        for kind in counts:
            where[kind].add(f"{BACKGROUND}: {thread}")
    for kind in sorted(kinds, key=lambda k: (split(k)[0], k)):
        per_call = kinds[kind] / n
        print(f"  {per_call:7.2f}  {rate * per_call:9,.0f}/s  {kind:60} {', '.join(sorted(where[kind]))}")

    print("\nShared partitions (a key that does not vary with the call), per call and at the scale rate:")
    shared: Counter[str] = Counter()
    for kind, count in kinds.items():
        service, op = split(kind)
        parts = kind.split(" ")
        if service != "table" or len(parts) < 4 or op in ("batch",):
            continue
        partition = parts[3].split("/")[0]
        if "{id}" not in partition:
            entities = count if op not in READS else 0
            shared[f"{parts[2]} PartitionKey={partition!r} ({'read' if op in READS else 'write'})"] += (
                count if op in READS else entities)
    for name, count in sorted(shared.items()):
        print(f"  {count / n:7.2f}  {rate * count / n:9,.0f}/s  {name}")
    if not shared:
        print("  none")

    print(f"\nRows per partition after the run ({n} calls and the warm-up; by key shape: partitions, rows, most rows "
          "in one):")
    from core.platform.observability import key_shape

    for table, rows in sorted(r.partitions.items()):
        shapes: dict[str, list[int]] = defaultdict(list)
        for partition, count in rows.items():
            shapes[key_shape(partition)].append(count)
        for shape, counts in sorted(shapes.items()):
            # Fewer partitions than half the calls, rows from more than one: a partition the calls share.
            flag = "  <- shared by many calls" if len(counts) < (n + 1) / 2 and max(counts) > 1 else ""
            print(f"  {table:14} {shape:24} {len(counts):6} partitions {sum(counts):7} rows  {max(counts):5} most"
                  f"{flag}")

    count, size = r.blobs
    print(f"\nBlob Storage after the run: {count} blobs, {size:,} bytes ({size / (n + 1):,.0f} bytes a call, the "
          "warm-up's included)")

    print("\nACS requests per call: the simulator's log (all requests it received) against the app's count:")
    app_acs = Counter()
    for kind, count in kinds.items():
        if kind.startswith("acs "):
            app_acs[kind] += count
    for op, count in sorted(r.acs_requests.items()):
        print(f"  {count / n:7.2f}  {op}")
    print(f"  {sum(r.acs_requests.values()) / n:7.2f}  all (simulator)  against {sum(app_acs.values()) / n:.2f} "
          "counted by the app (the app's count adds the recording downloads and the token keys, which the "
          "simulator serves apart)")

    print("\nEvents the simulator sent per call, against the invocations that logged counts:")
    for label in sorted(set(r.events_sent) | set(c.events)):
        print(f"  {label:36} sent {r.events_sent[label] / n:6.2f}  handled {c.events[label] / n:6.2f}")

    if r.azurite is not None:
        table = sum(v for k, v in r.azurite.items() if k.startswith("Table_"))
        blob = sum(v for k, v in r.azurite.items() if not k.startswith(("Table_", "Queue_")))
        counted_table = sum(v for k, v in kinds.items() if k.startswith("table ") and not split(k)[1].startswith(
            "batch."))
        counted_blob = sum(v for k, v in kinds.items() if k.startswith("blob "))
        print("\nStorage requests served by Azurite (its debug log) against those the app counted:")
        print(f"  Table Storage: {table} served, {counted_table} counted;  Blob Storage: {blob} served, "
              f"{counted_blob} counted")
        for op, count in sorted(r.azurite.items()):
            print(f"  {count / n:7.2f}  {op}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=12, help="calls going at once")
    p.add_argument("--mix", choices=("demo", "sales"), default="demo", help="the five demo callers, or sales only")
    p.add_argument("--recording", choices=("on_connect", "off"), default="on_connect", help="RECORDING_MODE")
    p.add_argument("--recording-seconds", type=float, default=1.0, help="audio per recording (its size)")
    p.add_argument("--azurite-debug", action="store_true", help="cross-check the storage totals in Azurite's log")
    p.add_argument("--scale-rate", type=int, default=1000, help="new calls per second to scale the figures to")
    p.add_argument("--instances", type=int, default=1,
                   help="instances of the HTTP group (callbacks spread over them, tools/cluster.py); 1: one host")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds to wait for the last events")
    args = p.parse_args()
    result = run(args)
    report(result, args)
    return 0 if result.settled else 1


if __name__ == "__main__":
    sys.exit(main())
