"""Benchmark: copy one recording from the simulator into Azurite through the app's handler.

    python -m bench.recording_copy [--size-mib 1024] [--channels 2]

Prints MB/s and the peak memory of the process doing the copy, for the handler (streamed, verified,
split per participant), and, measured in the same run on the same bytes, the raw loopback transfer
(download only: the limit) and the naive approach of the public samples (read whole, then upload).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_worker(mode: str, event: dict, endpoint: str, key: str, storage: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.copy_worker", mode, json.dumps(event), endpoint, key, storage],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--channels", type=int, default=3, help="participants in the unmixed recording")
    p.add_argument("--skip-naive", action="store_true", help="the naive baseline needs the whole file in memory")
    args = p.parse_args()

    from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier
    from azure.core.credentials import AzureKeyCredential

    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tests.support.receiver import Receiver
    from tools import azurite

    size = args.size_mib * 1024 * 1024
    storage = azurite.start()
    try:
        with SimulatorThread(config=Config(recording_bytes=size)) as sim, Receiver() as rx:
            import urllib.request

            req = urllib.request.Request(sim.endpoint + "/__sim/eventgrid/subscriptions", method="POST",
                                         data=json.dumps({"endpoint": rx.url + "/eg"}).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).read()
            client = CallAutomationClient(sim.endpoint, AzureKeyCredential(sim.access_key))
            members = [CommunicationUserIdentifier(f"8:acs:bench-{i}") for i in range(args.channels)]
            props = client.create_call(members, rx.url + "/cb")
            rx.wait_for("CallConnected")
            recording = client.start_recording(server_call_id=props.server_call_id, recording_channel_type="unmixed",
                                               recording_content_type="audio", recording_format_type="wav")
            print(f"writing a {args.size_mib} MiB unmixed recording ({args.channels} channels) in the simulator...",
                  flush=True)
            started = time.perf_counter()
            client.stop_recording(recording.recording_id)
            (event,) = rx.wait_for("RecordingFileStatusUpdated", grid=True, timeout=600)
            print(f"  written in {time.perf_counter() - started:.1f}s\n", flush=True)
            results = {"raw": run_worker("raw", event, sim.endpoint, sim.access_key, storage.connection_string)}
            results["passthrough"] = run_worker("passthrough", event, sim.endpoint, sim.access_key,
                                                storage.connection_string)
            for mode in ("handler-nosplit", "handler"):
                results[mode] = run_worker(mode, event, sim.endpoint, sim.access_key, storage.connection_string)
            if not args.skip_naive:
                results["naive"] = run_worker("naive", event, sim.endpoint, sim.access_key,
                                              storage.connection_string)
    finally:
        storage.stop()
    limit = results["passthrough"]
    print(f"{'approach':<50} {'MB/s':>8} {'written':>8} {'seconds':>8} {'peak MiB':>9} {'vs limit':>9}")
    labels = {"raw": "download only, bytes dropped (source ceiling)",
              "passthrough": "raw transfer ACS -> Azurite blocks (the limit)",
              "handler-nosplit": "app handler: stream, verify (no split)",
              "handler": "app handler: stream, verify, split per party",
              "naive": "naive: read whole, then upload"}
    for mode, r in results.items():
        mbps = r["bytes"] / 1e6 / r["seconds"]
        written = r.get("written", r["bytes"]) / 1e6 / r["seconds"]
        ratio = (r["bytes"] / r["seconds"]) / (limit["bytes"] / limit["seconds"])
        print(f"{labels[mode]:<50} {mbps:8.1f} {written:8.1f} {r['seconds']:8.2f} {r['peak_rss_mib']:9.1f} "
              f"{ratio:9.0%}")
    print(f"\n{args.size_mib} MiB, {args.channels} channels. MB/s: recording bytes per second; written: bytes "
          "written to storage per second (the split writes every byte a second time); peak: the copying "
          "process's max RSS, imports included; vs limit: MB/s against the raw transfer.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
