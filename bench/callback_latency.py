"""Benchmark: the app's own time per mid-call callback, with 1, 100 and 1,000 concurrent calls.

    python -m bench.callback_latency [--calls 1,100,1000] [--rate 6] [--sequential 30] [--repeat N] [--dump f.csv]

Scripted callers go through the IVR (default routing, customer_service flow: welcome, menu, press 1,
announcement, transfer to sales) on one app instance (the local Functions host, its default thread
pool), with the simulator and Azurite on this machine's loopback (see bench/ivr_load.py for what is
measured and how). Levels:

- ``1``: one call at a time, ``--sequential`` calls in a row (the unloaded baseline, same run);
- ``N`` > 1: N callers ring ``--rate`` per second, and every prompt lasts long enough
  (``prompt_seconds`` = N / rate / 2, at least 2 s; a call hears three) that the first caller is still in
  the IVR when the last one rings: all N calls are live at once (the table shows the peak the simulator
  saw). Keep the rate below the knee bench/sustained.py finds, or the figures measure a saturated host.

For each level: p50/p99 of the app's own time per callback (``handler - acs``: the simulator's latency
taken out), of the handler, of its Table Storage share, and of the round trip ACS saw (which adds the
host's queueing); callbacks lost (the simulator gave up after its retries; must be 0), actions
duplicated (requests to ACS beyond the script's; must be 0), calls completed as scripted.
Each level is bounded by ``--time-limit`` seconds.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ivr_load import (  # noqa: E402
    CpuMeter,
    Samples,
    app_pids,
    collect,
    machine,
    pct,
    place,
    stack,
    start_storage,
    wait_done,
    warm_up,
)

HEADER = (
    f"{'calls':>8} {'peak':>5} {'done':>5} {'callbacks':>9} {'cb/s':>6} | {'own p50':>7} {'own p99':>7} | "
    f"{'hdl p50':>7} {'hdl p99':>7} | {'stor p50':>8} {'stor p99':>8} | {'rtt p50':>7} {'rtt p99':>7} | "
    f"{'lost':>4} {'dup':>4} {'retry':>5} | {'app CPU':>7}"
)


def row(label: str, s: Samples, spent: dict[str, float]) -> str:
    return (
        f"{label:>8} {s.peak_live:5d} {s.completed:5d} {s.callbacks:9d} {s.callbacks / s.seconds:6.1f} | "
        f"{pct(s.own, 50):7.1f} {pct(s.own, 99):7.1f} | {pct(s.handler, 50):7.1f} {pct(s.handler, 99):7.1f} | "
        f"{pct(s.storage, 50):8.1f} {pct(s.storage, 99):8.1f} | {pct(s.round_trip, 50):7.1f} "
        f"{pct(s.round_trip, 99):7.1f} | {s.lost:4d} {s.duplicated:4d} {s.retried:5d} | "
        f"{spent['app'] * 1000 / max(s.calls, 1):7.0f}"
    )


def run_level(
    storage: Any, n: int, args: argparse.Namespace, app_dir: Path | None = None, instances: int = 0
) -> tuple[Samples, dict[str, float]]:
    if n == 1:
        with stack(
            storage.connection_string, prompt_seconds=args.prompt_seconds, app_dir=app_dir, instances=instances
        ) as st:
            warm_up(st)
            wait_done(st, list(st.sim.sim.engine.calls), time.monotonic() + 60)
            cpu = CpuMeter(app_pids(st.app), storage.process.pid)
            ids = []
            deadline = time.monotonic() + args.time_limit
            for i in range(args.sequential):
                (cid,) = place(st, 1, 0, prefix=i)
                ids.append(cid)
                if not wait_done(st, [cid], deadline):
                    break
            return collect(st, ids), cpu.since()
    prompt = max(2.0, 0.5 * n / args.rate)
    with stack(storage.connection_string, prompt_seconds=prompt, app_dir=app_dir, instances=instances) as st:
        warm_up(st)
        cpu = CpuMeter(app_pids(st.app), storage.process.pid)
        deadline = time.monotonic() + args.time_limit
        ids = place(st, n, args.rate)
        finished = wait_done(st, ids, deadline)
        spent = cpu.since()
        samples = collect(st, ids)
        if not finished:
            print(f"  {n} calls: not all finished within {args.time_limit:.0f}s", flush=True)
        return samples, spent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", default="1,100,1000", help="comma-separated levels of concurrent calls")
    p.add_argument("--rate", type=float, default=6.0, help="calls ringing per second at levels above 1")
    p.add_argument("--sequential", type=int, default=30, help="calls one after another at level 1")
    p.add_argument("--prompt-seconds", type=float, default=0.2, help="prompt length at level 1")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds per level at most")
    p.add_argument("--compare", type=Path, help="another checkout of the app (e.g. before a change), measured alike")
    p.add_argument("--repeat", type=int, default=1, help="run each level this many times (a row per run: the spread)")
    p.add_argument("--dump", type=Path, help="write every callback's figures to this CSV (level, at, type, ms...)")
    p.add_argument("--azurite-in-memory", action="store_true", help="Azurite without its periodic saves to disk")
    p.add_argument(
        "--instances",
        default="",
        help="comma-separated HTTP instance counts (e.g. 1,3): each level on the Flex shape (tools/cluster.py,"
        " callbacks spread over the instances, one instance per Event Grid function); default: one host process",
    )
    args = p.parse_args()
    levels = [int(x) for x in args.calls.split(",") if x.strip()]
    shapes = [int(x) for x in args.instances.split(",") if x.strip()] or [0]
    print(f"{machine()}; Python {sys.version.split()[0]}", flush=True)
    results = []

    def measure(label: str, n: int, app_dir: Path | None = None, instances: int = 0) -> None:
        # A fresh Azurite for every run: its periodic saves write the whole database and stall every request
        # meanwhile, longer the more rows earlier runs left (a second 1,000-call run on the same Azurite had a
        # p99 several times the first's), so no run inherits another's.
        storage = start_storage(args.azurite_in_memory)
        try:
            results.append((label, *run_level(storage, n, args, app_dir, instances)))
        finally:
            storage.stop()

    for n in levels:
        for run in range(1, args.repeat + 1):
            for k in shapes:
                shape = f" on {k} HTTP instance(s)" if k else ""
                print(f"level {n}{shape}{f' (run {run})' if args.repeat > 1 else ''}...", flush=True)
                measure(f"{n}/{k}i" if k else str(n), n, instances=k)
                if args.compare:
                    print(f"level {n}{shape}, {args.compare}...", flush=True)
                    measure(f"{n}/{k}i*" if k else f"{n}*", n, args.compare.resolve(), k)
    print(f"\nafter the run: {machine()}")
    print("milliseconds per callback: own = the app's time without ACS's (handler - acs); hdl = handler;")
    print("stor = Table Storage within it; rtt = the round trip ACS saw (adds the host's queueing);")
    print("app CPU = the app process's CPU milliseconds per call (all its functions)")
    if args.compare:
        print(f"* = {args.compare}")
    if shapes != [0]:
        print("N/Ki = N concurrent calls on K HTTP instances (the Flex shape: tools/cluster.py, callbacks spread)")
    print()
    print(HEADER)
    for label, s, spent in results:
        print(row(label, s, spent))
    if args.dump:
        with args.dump.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["level", "at", "type", "own_ms", "storage_ms", "acs_ms", "round_trip_ms"])
            for label, s, _ in results:
                out.writerows((label, f"{at:.4f}", *rest) for at, *rest in sorted(s.rows))
        print(f"every callback's figures: {args.dump}")
    print("\nper event type at the highest level: own p50/p99, of which Table Storage (state), and the rest")
    print("(the rest: the app's CPU, and storage not timed as state: the call-ended hooks' call records)")
    for label, s, _ in results:
        if label.rstrip("*").split("/")[0] == str(max(levels)):
            print(f"level {label}:")
            by_type: dict[str, list[tuple[float, float]]] = {}  # event type -> (own, storage) per callback
            for _at, kind, own_ms, storage_ms, *_ in s.rows:
                by_type.setdefault(kind, []).append((own_ms, storage_ms))
            for kind, pairs in sorted(by_type.items()):
                own = [o for o, _ in pairs]
                stor = [t for _, t in pairs]
                rest = [o - t for o, t in pairs]
                print(
                    f"  {kind:30} {len(pairs):6d} | {pct(own, 50):6.1f} {pct(own, 99):6.1f} | "
                    f"{pct(stor, 50):6.1f} {pct(stor, 99):6.1f} | {pct(rest, 50):6.1f} {pct(rest, 99):6.1f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
