"""Benchmark: cold start, from a fresh process to the first IncomingCall answered.

    python -m bench.cold_start [--runs 7] [--compare DIR [--compare-python PYTHON]]

Each run starts a fresh local Functions host (``python -m devhost``) on the app, with a fresh simulator
(in this process) and one Azurite for the whole benchmark. As soon as the host accepts connections, Event
Grid is subscribed and a caller rings; the cold start is the time from spawning the process to the
simulator logging the app's AnswerCall. Measured in the same run, in fresh interpreters:

- the floor: ``python -c "import azure.functions"`` (the worker must load that library to index the app);
- every SDK the app uses, imported eagerly (``python -c "import azure.functions, azure.communication...."``);
- ``import function_app`` itself, as a Functions host loads it (settings and flows validated);
- the same cold start with every SDK imported eagerly before the app is loaded (what an app that imports its
  SDKs at module level pays);
- with ``--compare DIR``, the same cold start of another checkout of the app (e.g. before a change), its host run
  by ``--compare-python`` (e.g. that checkout's own venv on another Python version; default: this interpreter).

Runs are interleaved (variant by variant within a run) so drift affects every variant alike; medians shown,
of wall-clock time and of the process's CPU time (user + system: steadier than wall time on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# Every SDK the app depends on at run time (requirements.txt), as an app that imports them at module level would.
EAGER_SDKS = (
    "azure.functions",
    "azure.communication.callautomation",
    "azure.core",
    "azure.data.tables",
    "azure.storage.blob",
    "azure.identity",
    "azure.eventgrid",
    "jwt",
    "cryptography.x509",
    "pydantic",
    "requests",
    "opentelemetry.trace",
    "azure.monitor.opentelemetry",
)
EAGER_IMPORT = "import " + ", ".join(EAGER_SDKS)


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_process(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[float, float]:
    """Wall and CPU seconds of a process run to its end."""
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, _children_cpu() - cpu


def _host_env(app_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACS_", "CALLBACK_", "ROUTING_", "FLOWS"))}
    env.update(settings)
    env["AZURE_FUNCTIONS_ENVIRONMENT"] = "Development"  # as the host sets it for its workers
    env["PYTHONPATH"] = f"{app_dir}{os.pathsep}{ROOT}"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def import_function_app(app_dir: Path, settings: dict[str, str], python: str = PY) -> tuple[float, float]:
    """Wall and CPU seconds ``import function_app`` takes in a fresh interpreter, loaded as under a Functions host."""
    code = ("import time; t, c = time.perf_counter(), time.process_time(); import function_app; "
            "print(time.perf_counter() - t, time.process_time() - c)")
    out = subprocess.run([python, "-c", code], check=True, env=_host_env(app_dir, settings), cwd=app_dir,
                         capture_output=True, text=True)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.monotonic()
        if process.poll() is not None:
            raise SystemExit(f"the host exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.002)
    raise SystemExit(f"the host did not listen within {timeout}s:\n{log.read_text()[-3000:]}")


def cold_start(app_dir: Path, storage: str, *, eager: bool, python: str = PY) -> dict[str, float]:
    """One fresh host on ``app_dir`` (its own devhost, run by ``python``): seconds to listening, to IncomingCall
    answered, the first call's share, and the host's CPU seconds until it answered."""
    from bench.ivr_load import cpu_seconds
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tools.apphost import app_settings, free_port, no_settings

    with SimulatorThread(config=Config(prompt_seconds=5.0)) as sim:
        port = free_port()
        env = _host_env(app_dir, app_settings(sim, storage, port))
        env["DEVHOST_FUNCTION_KEY"] = secrets.token_urlsafe(24)
        env["DEVHOST_EVENTGRID_KEY"] = eventgrid_key = secrets.token_urlsafe(24)
        # Every setting from the environment; an older checkout's devhost (--compare) does not know --no-settings.
        host_args = ["--app-dir", str(app_dir), "--port", str(port), *no_settings(app_dir)]
        if eager:
            code = (f"{EAGER_IMPORT}\nimport runpy, sys\nsys.argv = ['devhost', *{host_args!r}]\n"
                    "runpy.run_module('devhost', run_name='__main__', alter_sys=True)")
            cmd = [python, "-c", code]
        else:
            cmd = [python, "-m", "devhost", *host_args]
        log = Path(tempfile.mkstemp(prefix="cold-start-", suffix=".log")[1])
        with open(log, "wb") as out:
            started = time.monotonic()
            process = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            listening = _wait_listening(port, process, log)
            base = f"http://127.0.0.1:{port}"
            from devhost.host import eventgrid_url

            sub = _post(sim.endpoint + "/__sim/eventgrid/subscriptions",
                        {"endpoint": eventgrid_url(base, "incoming_call", eventgrid_key), "name": "incoming_call",
                         "eventTypes": ["Microsoft.Communication.IncomingCall"]})
            if sub["provisioningState"] != "Succeeded":
                raise SystemExit(f"subscription failed: {sub}")
            rang = time.monotonic()
            call = _post(sim.endpoint + "/__sim/calls", {"from": "+14255550001", "to": "+18005550123"})
            timeline = sim.sim.engine.calls[call["serverCallId"]].timeline
            deadline = time.monotonic() + 60
            answered = None
            while answered is None:
                for entry in list(timeline.entries):
                    if entry.kind == "request" and entry.detail.get("operation") == "AnswerCall":
                        if entry.detail.get("status") != 200:
                            raise SystemExit(f"AnswerCall failed: {entry.summary}\n{log.read_text()[-3000:]}")
                        answered = entry.at
                        cpu = cpu_seconds(process.pid)
                if time.monotonic() > deadline:
                    raise SystemExit(f"the app never answered:\n{log.read_text()[-3000:]}")
                time.sleep(0.001)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.unlink(missing_ok=True)
    return {"listening": listening - started, "answered": answered - started, "first_call": answered - rang,
            "cpu": cpu}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--compare", type=Path, help="another checkout of the app (e.g. before a change), measured alike")
    p.add_argument("--compare-python", default=PY, help="interpreter for --compare's host (default: this one)")
    args = p.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.ivr_load import machine
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tools import azurite
    from tools.apphost import app_settings

    print(machine(), flush=True)
    apps = {"app": (ROOT, PY)}
    if args.compare:
        apps["compare"] = (args.compare.resolve(), args.compare_python)
    pythons = {name: _version(python) for name, (_, python) in apps.items()}
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    storage = azurite.start()
    try:
        with SimulatorThread(config=Config()) as sim:
            settings = app_settings(sim, storage.connection_string, 7071)
        for app_dir, python in apps.values():  # warm the OS file cache (and create the tables)
            cold_start(app_dir, storage.connection_string, eager=False, python=python)
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}...", flush=True)
            for key, cmd in (("floor", "import azure.functions"), ("eager_imports", EAGER_IMPORT)):
                wall, cpu = _timed_process([PY, "-c", cmd])
                add(f"{key}:answered", wall)
                add(f"{key}:cpu", cpu)
            for name, (app_dir, python) in apps.items():
                wall, cpu = import_function_app(app_dir, settings, python)
                add(f"{name}:import", wall)
                add(f"{name}:import_cpu", cpu)
                for key, value in cold_start(app_dir, storage.connection_string, eager=False, python=python).items():
                    add(f"{name}:{key}", value)
            for key, value in cold_start(ROOT, storage.connection_string, eager=True).items():
                add(f"eager:{key}", value)
    finally:
        storage.stop()

    def ms(name: str) -> str:
        return f"{statistics.median(results[name]) * 1000:.0f}" if name in results else ""

    print(f"\nmedian of {args.runs} runs, milliseconds; {machine()}; Python {sys.version.split()[0]}\n")
    print(f"{'process':<60} {'listening':>9} {'answered':>9} {'1st call':>9} {'CPU':>6}")
    for label, key in (('python -c "import azure.functions" (the floor; to its exit)', "floor"),
                       ('python -c "import <every SDK>" (to its exit)', "eager_imports")):
        print(f"{label:<60} {'':>9} {ms(key + ':answered'):>9} {'':>9} {ms(key + ':cpu'):>6}")
    rows = [(f"app (Python {pythons['app']}): fresh host to IncomingCall answered", "app")]
    if args.compare:
        rows.append((f"{args.compare} (Python {pythons['compare']}): the same", "compare"))
    rows.append(("app, every SDK imported eagerly before it loads", "eager"))
    for label, key in rows:
        print(f"{label:<60} {ms(key + ':listening'):>9} {ms(key + ':answered'):>9} {ms(key + ':first_call'):>9} "
              f"{ms(key + ':cpu'):>6}")
    print(f"\n{'import function_app (fresh interpreter, as under a host)':<60} {'wall':>9} {'':>9} {'':>9} {'CPU':>6}")
    print(f"{'  app':<60} {ms('app:import'):>9} {'':>9} {'':>9} {ms('app:import_cpu'):>6}")
    if args.compare:
        print(f"{'  ' + str(args.compare):<60} {ms('compare:import'):>9} {'':>9} {'':>9} {ms('compare:import_cpu'):>6}")
        for key in ("answered", "cpu"):
            if f"compare:{key}" in results:
                ratio = statistics.median(results[f"app:{key}"]) / statistics.median(results[f"compare:{key}"])
                print(f"ratio app / compare, {key}: {ratio:.2f}")
    return 0


def _version(python: str) -> str:
    out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
