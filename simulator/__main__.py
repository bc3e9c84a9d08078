"""Run the ACS Call Automation simulator: ``python -m simulator --help``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .engine import Config
from .runner import new_access_key, start
from .scenario import ScenarioError, finished, load, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A local Azure Communication Services Call Automation service (REST API 2026-03-12) for "
        "tests and demos. Point CallAutomationClient(endpoint, AzureKeyCredential(key)) at it.",
        epilog="Control API (every route, the scenario format and the caller-scripting vocabulary: docs/simulator.md): "
        "POST /__sim/calls (a scripted caller), GET /__sim/calls, GET /__sim/calls/{id}/timeline?format=text, "
        "POST /__sim/calls/{id}/hangup, POST /__sim/parties, POST /__sim/faults, POST /__sim/eventgrid/subscriptions, "
        "GET /__sim/events.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port for the REST API (0 = any free port; default 8090)")
    p.add_argument(
        "--access-key",
        default=None,
        help="base64 HMAC access key clients sign with (default: a new random key, printed)",
    )
    p.add_argument(
        "--resource-id",
        default=Config.resource_id,
        help="the ACS resource's immutable id: the audience of webhook JWTs",
    )
    p.add_argument(
        "--eventgrid-target",
        action="append",
        default=[],
        metavar="URL",
        help="Event Grid webhook subscription endpoint (repeatable); validated with the handshake first",
    )
    p.add_argument(
        "--scenario", help="YAML/JSON scenario file of scripted calls and parties (see simulator/scenario.py)"
    )
    p.add_argument(
        "--exit-when-done",
        action="store_true",
        help="with --scenario: exit once every scripted call is over, after printing the timelines",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="upper bound in seconds for a scenario run")
    p.add_argument(
        "--time-scale",
        type=float,
        default=Config.time_scale,
        help="service timeouts (silence, ringing) are multiplied by this (default 0.01)",
    )
    p.add_argument("--prompt-seconds", type=float, default=Config.prompt_seconds, help="how long one prompt plays")
    p.add_argument("--callback-retries", type=int, default=3, help="webhook delivery retries on failure")
    p.add_argument("--recording-dir", default="", help="where recording files are written (default: a temp dir)")
    p.add_argument(
        "--tls-port",
        type=int,
        default=None,
        help="also serve over HTTPS on this port with a throwaway CA, and advertise recording URLs on "
        "--recording-host (needed by the SDK's download_recording)",
    )
    p.add_argument("--recording-host", default="sim.asm.skype.com", help="host name used in recording URLs with TLS")
    p.add_argument("-v", "--verbose", action="store_true", help="log deliveries and errors")
    return p


async def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    config = Config(
        resource_id=args.resource_id,
        time_scale=args.time_scale,
        prompt_seconds=args.prompt_seconds,
        recording_dir=args.recording_dir,
    )
    scenario = None
    if args.scenario:
        try:
            scenario = load(args.scenario)
        except (OSError, ScenarioError) as exc:
            print(f"scenario {args.scenario}: {exc}", file=sys.stderr)
            return 2
    key = args.access_key or new_access_key()
    running = await start(
        host=args.host,
        port=args.port,
        access_key=key,
        config=config,
        tls_port=args.tls_port,
        recording_host=args.recording_host,
        webhook_retries=args.callback_retries,
    )
    sim = running.sim
    print(f"ACS simulator listening on {running.endpoint}", flush=True)
    print(f"  endpoint:   {running.endpoint}", flush=True)
    print(f"  access key: {key}", flush=True)
    if running.ca_file:
        print(f"  TLS:        port {running.tls_port}, CA file {running.ca_file}", flush=True)
    base = running.endpoint
    for target in args.eventgrid_target:
        sub = await sim.delivery.subscribe(target, None, "cli", base + "/__sim/eventgrid/validate")
        print(f"  Event Grid subscription to {target}: {sub.state}", flush=True)
    try:
        if scenario is not None:
            calls = await run(sim, scenario, timeout=args.timeout)
            print()
            for call in calls:
                print(call.timeline.render())
                print()
            done = sum(finished(c) for c in calls)
            print(f"{done}/{len(calls)} scripted call(s) finished", flush=True)
            if args.exit_when_done:
                return 0 if done == len(calls) else 1
        await asyncio.Event().wait()  # serve until interrupted
    finally:
        await running.stop()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
