"""``make demo``: scripted calls through the app, against the ACS simulator and Azurite.

Starts Azurite, the simulator and the app (function_app.py under the local Functions host),
subscribes the simulator's Event Grid to the app's triggers, plays ``scenarios/demo.yaml``, and
prints each call's timeline and what the app stored about it in Table Storage.

``python -m tools.demo --instances N`` runs the app as Flex Consumption would (``tools/cluster.py``): N instances for
its HTTP functions and one for each Event Grid function, behind a front that spreads requests over them; each call's
line says which instances served its callbacks.

Your own flows and rules (``bin/run-scenario`` wraps this): ``python -m tools.demo SCENARIO.yaml --flows
"flows/default.json;my/flows" --routing my/routing.json [--settings local.settings.json | --settings KEY=VALUE]``.
Paths are relative to the current directory. Exit code: 0 when every call ended, 1 when one did not, 2 on a bad
option or scenario, 3 when the app refused to start (its start-up error is shown, e.g. an invalid flow's node).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listened on port {port} within {timeout}s")


def qa_blobs(connection_string: str, recordings: int, timeout: float = 30.0) -> dict[str, list[tuple[str, int]]]:
    """The verified QA copies by server call id, once every recorded call's copy is there (bounded wait)."""
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(connection_string).get_container_client("qa-recordings")
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, list[tuple[str, int]]] = {}
        if container.exists():
            for blob in container.list_blobs(include=["metadata"]):
                meta = blob.metadata or {}
                if meta.get("verified") == "true":
                    found.setdefault(meta.get("serverCallId", ""), []).append((blob.name, blob.size))
        chunks = sum(1 for blobs in found.values() for name, _ in blobs if "/participants/" not in name)
        if chunks >= recordings or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def callbacks_served(app: Any, call: Any) -> str:
    """Which instances of a cluster served a call's callbacks, e.g. ``http-1 x3, http-2 x4``."""
    refs = {
        urlsplit(e.detail["url"]).path.rsplit("/", 1)[-1]
        for e in call.timeline.entries
        if e.kind == "event" and e.detail.get("url")
    }
    served = Counter(p.instance for ref in refs for p in app.placed(call_ref=ref) if p.instance)
    return ", ".join(f"{name} x{n}" for name, n in sorted(served.items())) or "none"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=os.environ.get("DEMO_PROG", "python -m tools.demo"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", type=Path, default=ROOT / "scenarios" / "demo.yaml",
                        help="scenario file of scripted calls (default: scenarios/demo.yaml; see docs/simulator.md)")
    parser.add_argument("--flows", action="append", metavar="PATHS",
                        help="flow files or folders, ';'-separated (or repeated), merged: the app's FLOWS_FILE;"
                        " include flows/default.json to keep the shipped flows (default: flows/default.json)")
    parser.add_argument("--routing", metavar="FILE",
                        help="routing rules file (the app's ROUTING_RULES_FILE; default: the demo's rules)")
    parser.add_argument("--settings", action="append", default=[], metavar="FILE|KEY=VALUE",
                        help="more app settings: a local.settings.json-style file or KEY=VALUE (repeatable); the"
                        " stack's own wiring (ACS_*, CALLBACK_*, APP_STORAGE, ...) is kept")
    parser.add_argument("--timeout", type=float, default=60, metavar="SECONDS",
                        help="how long the calls may take (default 60)")
    parser.add_argument("--instances", type=int, default=0, metavar="N",
                        help="run the app as a cluster: N instances for the HTTP functions, one per Event Grid"
                        " function (default: one local host)")
    parser.add_argument("--mode", choices=("round_robin", "spread"), default="spread",
                        help="with --instances: how the front places requests within a group (default: spread, each"
                        " callback of a call on another instance than the one before)")
    args = parser.parse_args(argv)
    if args.instances < 0:
        parser.error("--instances must be at least 1 (or 0: one local host)")
    return args


def not_ended_hint(call: Any) -> str:
    """Why a scripted call may still be going on, for the person who wrote the scenario."""
    left = ", ".join(call.participants) or "nobody"
    return (
        f"  call '{call.timeline.label}' did not end: the app's leg is still on it, with {left}. A looping prompt, a"
        " hold, or a scripted party who never hangs up keeps a call going: end it from the script, e.g. the"
        " caller's step {after: 5, hangup: true} (docs/simulator.md)"
    )


def main(argv: list[str] | None = None) -> int:
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from simulator.scenario import ScenarioError, finished, run
    from tools import azurite
    from tools.flowtest import (
        AppRefused,
        FlowTestError,
        app_states,
        load_scenario,
        read_settings,
        refusal,
        start_user_app,
        user_settings,
    )

    args = parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
        settings, ignored = user_settings(flows=args.flows, routing=args.routing,
                                          settings=read_settings(args.settings))
    except (FlowTestError, ScenarioError, OSError) as exc:
        print(f"{os.environ.get('DEMO_PROG', 'tools.demo')}: {exc}", file=sys.stderr)
        return 2
    if ignored:
        print(f"  (settings kept as the local stack wires them, not from --settings: {', '.join(ignored)})")
    what = (
        f"the app as a cluster ({args.instances} instances for its HTTP functions, one per Event Grid function;"
        " local Functions hosts)"
        if args.instances
        else "the app (local Functions host)"
    )
    print(f"Starting Azurite, the ACS simulator and {what}...", flush=True)
    if "FLOWS_FILE" in settings or "ROUTING_RULES_FILE" in settings:
        print(f"  flows: {settings.get('FLOWS_FILE', 'flows/default.json')}   routing rules: "
              f"{settings.get('ROUTING_RULES_FILE', 'from --settings' if 'ROUTING_RULES' in settings else 'the demo')}")
    storage = azurite.start()
    try:
        simulator = SimulatorThread(config=Config())
        with simulator as sim:
            try:
                if args.instances:
                    from tools.cluster import start_cluster

                    try:
                        app = start_cluster(sim, storage.connection_string, http_instances=args.instances,
                                            eventgrid_instances=1, mode=args.mode,
                                            **{"RECORDING_MODE": "on_connect", **settings})
                    except RuntimeError as exc:
                        raise AppRefused(refusal(str(exc)), str(exc)) from None
                else:
                    app = start_user_app(sim, storage.connection_string, settings)
            except AppRefused as exc:
                print(f"\nThe app did not start: {exc.reason}", file=sys.stderr)
                return 3
            try:
                print(f"  simulator {sim.endpoint}   app {app.base_url}   Azurite blob port {storage.blob_port}")
                if args.instances:
                    names = ", ".join(i.name for i in app.instances())
                    print(f"  instances behind the front ({args.mode}): {names}")
                print()
                calls = simulator.call(run(sim.sim, scenario, timeout=args.timeout), timeout=args.timeout + 30)
                outcomes = app_states(storage.connection_string)
                recorded = sum(1 for call in calls if call.recordings)
                qa = qa_blobs(storage.connection_string, recorded)
                for call in calls:
                    print(call.timeline.render())
                    state = outcomes.get(call.id)
                    if state:
                        print(
                            f"  app state in Table Storage: flow={state['flow']} node={state['node']} "
                            f"status={state['status']} outcome={json.dumps(state['outcome'])}"
                        )
                    if args.instances:
                        print(f"  callbacks served by: {callbacks_served(app, call)}")
                    copies = sorted(qa.get(call.id, []))
                    if copies:
                        folder = copies[0][0].rsplit("/", 1)[0]
                        print(f"  QA copies (verified) in qa-recordings/{folder[:40]}…/")
                    for name, size in copies:
                        print(f"    {name[len(folder) + 1:]:<60} {size:>10,} bytes")
                    print()
                done = sum(finished(c) for c in calls)
                print(f"{done}/{len(calls)} scripted call(s) finished as scripted")
                for call in calls:
                    if not finished(call):
                        print(not_ended_hint(call))
                if args.instances:
                    counts = ", ".join(f"{name} {n}" for name, n in app.counts().items())
                    print(f"requests served per instance: {counts}")
                return 0 if done == len(calls) else 1
            finally:
                app.stop()
    finally:
        storage.stop()


if __name__ == "__main__":
    sys.exit(main())
