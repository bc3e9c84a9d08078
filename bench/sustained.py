"""Benchmark: the calls per second one app instance sustains before its callback latency doubles.

    python -m bench.sustained [--rates 1,2,4,6,8,10,12,16] [--step-seconds 20] [--prompt-seconds 1]

One app instance (the local Functions host), the simulator and Azurite on this machine's loopback (see
bench/ivr_load.py). The arrival rate of scripted IVR callers is ramped step by step; each step rings
callers evenly at its rate for ``--step-seconds``, then lets them finish (steps do not overlap). Per
step: calls completed as scripted, the callback rate, p50/p99 of the round trip ACS saw per callback
(what a caller waits for: the host's queueing and the app) and of the app's own time, callbacks lost,
actions duplicated, and the CPU time per call of the app, of Azurite and of the simulator (with the
callers; this process). The baseline, measured in the same run, is the lowest p50 round trip of the
steps before; the knee is the first step whose p50 round trip is more than twice that, or that loses a
callback or a call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ivr_load import (  # noqa: E402
    CpuMeter,
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


def ramp(
    storage: Any, rates: list[float], args: argparse.Namespace, app_dir: Path | None = None, instances: int = 0
) -> list[Any]:
    """Run the steps on the app (one host, or ``instances`` HTTP instances of the Flex shape) until one past the
    knee; rows of (rate, samples, finished, cpu, base)."""
    rows: list[Any] = []
    past_knee = 0
    with stack(
        storage.connection_string, prompt_seconds=args.prompt_seconds, app_dir=app_dir, instances=instances
    ) as st:
        warm_up(st)
        wait_done(st, list(st.sim.sim.engine.calls), time.monotonic() + 60)
        cpu = CpuMeter(app_pids(st.app), storage.process.pid)
        for step, rate in enumerate(rates):
            n = max(1, round(rate * args.step_seconds))
            print(f"{rate:g} calls/s: {n} calls...", flush=True)
            cpu.mark()
            ids = place(st, n, rate, prefix=step)
            finished = wait_done(st, ids, time.monotonic() + 120 + 10 * args.prompt_seconds)
            spent = cpu.since()
            s = collect(st, ids)
            base = min([pct(r[1].round_trip, 50) for r in rows] or [pct(s.round_trip, 50)])
            rows.append((rate, s, finished, spent, base))
            if past_knee or knee_of(rows) is not None:
                past_knee += 1
                if past_knee > args.stop_after_knee:
                    break
    return rows


def knee_of(rows: list[Any]) -> float | None:
    for rate, s, finished, _, base in rows:
        if pct(s.round_trip, 50) > 2 * base or s.lost or s.completed < s.calls or not finished:
            return rate
    return None


def report(rows: list[Any]) -> None:
    knee = knee_of(rows)
    print(f"{'calls/s':>7} {'calls':>6} {'done':>5} {'peak':>5} {'cb/s':>6} | {'rtt p50':>7} {'rtt p99':>7} | "
          f"{'own p50':>7} {'own p99':>7} | {'lost':>4} {'dup':>4} | {'CPU ms/call: app':>16} {'azurite':>7} "
          f"{'sim':>5} | vs baseline")
    for rate, s, _, spent, base in rows:
        ratio = pct(s.round_trip, 50) / base
        mark = "  <- knee" if rate == knee else ""
        per_call = {k: v * 1000 / max(s.calls, 1) for k, v in spent.items()}
        print(f"{rate:7g} {s.calls:6d} {s.completed:5d} {s.peak_live:5d} {s.callbacks / s.seconds:6.1f} | "
              f"{pct(s.round_trip, 50):7.1f} {pct(s.round_trip, 99):7.1f} | {pct(s.own, 50):7.1f} "
              f"{pct(s.own, 99):7.1f} | {s.lost:4d} {s.duplicated:4d} | {per_call['app']:16.0f} "
              f"{per_call['azurite']:7.0f} {per_call['simulator']:5.0f} | {ratio:5.1f}x{mark}")
    sustained = [r for r, *_ in rows if knee is None or r < knee]
    if sustained:
        print(f"\nsustained: {max(sustained):g} calls/s (the last step before the p50 round trip doubled)"
              + ("" if knee is not None else "; the knee was not reached: ramp further with --rates"))
    else:
        print("\nthe first step is already past the knee")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="1,2,4,6,8,10,12,16", help="comma-separated calls per second, ramped")
    p.add_argument("--step-seconds", type=float, default=20.0)
    p.add_argument("--prompt-seconds", type=float, default=1.0, help="length of each prompt the callers hear")
    p.add_argument("--stop-after-knee", type=int, default=1, help="steps to run past the knee (then stop)")
    p.add_argument("--compare", type=Path, help="another checkout of the app (e.g. before a change), ramped alike")
    p.add_argument("--azurite-in-memory", action="store_true", help="Azurite without its periodic saves to disk")
    p.add_argument(
        "--instances",
        default="",
        help="comma-separated HTTP instance counts (e.g. 1,3): the ramp on the Flex shape (tools/cluster.py) with"
        " each; default: one host process",
    )
    args = p.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    shapes = [int(x) for x in args.instances.split(",") if x.strip()] or [0]
    print(f"{machine()}; Python {sys.version.split()[0]}", flush=True)
    storage = start_storage(args.azurite_in_memory)
    try:
        runs = []
        for k in shapes:
            shape = f" on {k} HTTP instance(s)" if k else ""
            print(f"app{shape}:", flush=True)
            runs.append((f"app{shape}", ramp(storage, rates, args, instances=k)))
            if args.compare:
                print(f"{args.compare}{shape}:", flush=True)
                runs.append((f"{args.compare}{shape}", ramp(storage, rates, args, args.compare.resolve(), k)))
    finally:
        storage.stop()
    print(f"\nafter the run: {machine()}")
    print("per callback, milliseconds: rtt = the round trip ACS saw; own = the app's time without ACS's")
    for name, rows in runs:
        print(f"\n{name}:\n")
        report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
