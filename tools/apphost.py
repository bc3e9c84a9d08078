"""The app under test or in the demo: function_app.py served by the local Functions host (devhost) in its own
process, configured only through environment variables (app settings), wired to the simulator
(ACS) and Azurite (storage), with the simulator's Event Grid subscribed to its triggers."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devhost.host import eventgrid_url
from tools.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
AI_ENDPOINT = "https://ai-sim.cognitiveservices.azure.com/"
CALL_RECORD_EVENTS = ("CallStarted", "CallEnded", "CallParticipantAdded", "CallParticipantRemoved")

DEFAULT_ROUTING: dict[str, Any] = {
    "rules": [
        {
            "name": "blocked",
            "match": {"from": {"prefix": "+1900"}},
            "action": {"type": "reject", "reason": "forbidden"},
        },
        {
            "name": "vip-forward",
            "match": {"sip_headers": {"X-MS-Custom-Tier": "vip"}},
            "action": {"type": "redirect", "targets": ["+14255550199"]},
        },
        {
            "name": "sim-ring",
            "match": {"to": "+18005550199"},
            "action": {"type": "redirect", "targets": ["8:acs:agent-a", "8:acs:agent-b"]},
        },
    ],
    "default": {"type": "answer", "flow": "customer_service"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    function_key: str = ""
    eventgrid_key: str = ""  # the host's eventgrid_extension system key: Event Grid subscriptions carry it

    @property
    def api(self) -> str:
        return self.base_url + "/api"

    def eventgrid_url(self, function_name: str) -> str:
        """The webhook URL of an Event Grid trigger, with the system key (``code=``) as Azure's subscriptions
        carry it."""
        return eventgrid_url(self.base_url, function_name, self.eventgrid_key)

    def call_api(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> tuple[int, Any]:
        """Call the control API (function-key auth) and return (status, JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "x-functions-key": self.function_key if key is None else key}
        request = urllib.request.Request(f"{self.api}/{path.lstrip('/')}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw else None
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def app_settings(
    sim: Any,
    storage_connection: str,
    port: int,
    *,
    routing: dict[str, Any] | None = None,
    flows: dict[str, Any] | None = None,
    **extra: str,
) -> dict[str, str]:
    settings = {
        "ACS_CONNECTION_STRING": f"endpoint={sim.endpoint}/;accesskey={sim.access_key}",
        "ACS_RESOURCE_ID": sim.sim.config.resource_id,
        "ACS_OPENID_CONFIG_URL": f"{sim.endpoint}/calling/.well-known/acsopenidconfiguration",
        "CALLBACK_BASE_URL": f"http://127.0.0.1:{port}/api",
        "CALLBACK_SECRET": base64.b64encode(os.urandom(32)).decode(),
        "COGNITIVE_SERVICES_ENDPOINT": AI_ENDPOINT,
        "ROUTING_RULES": json.dumps(routing or DEFAULT_ROUTING),
        "APP_STORAGE": storage_connection,
        "RECORDING_ALLOWED_HOSTS": "127.0.0.1",
    }
    if flows is not None:
        settings["FLOWS"] = json.dumps(flows)
    if extra.get("ROUTING_RULES_FILE"):  # the app takes one of the two
        del settings["ROUTING_RULES"]
    settings.update(extra)
    return settings


def start_app(
    sim: Any,
    storage_connection: str,
    *,
    routing: dict[str, Any] | None = None,
    flows: dict[str, Any] | None = None,
    subscribe: bool = True,
    timeout: float = 30,
    app_dir: Path | None = None,
    **extra: str,
) -> AppProcess:
    """The app (of this checkout, or of ``app_dir``: another checkout, e.g. for a benchmark's comparison)."""
    app_dir = app_dir or ROOT
    port = free_port()
    settings = app_settings(sim, storage_connection, port, routing=routing, flows=flows, **extra)
    function_key, eventgrid_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    log_path = Path(tempfile.mkstemp(prefix="app-", suffix=".log")[1])
    process = launch_host(app_dir, port, host_environment(settings, function_key, eventgrid_key, app_dir), log_path)
    app = AppProcess(f"http://127.0.0.1:{port}", process, log_path, settings, function_key, eventgrid_key)
    try:
        wait_serving(app.base_url, process, log_path, timeout)
    except RuntimeError:
        app.stop()
        raise
    if subscribe:
        subscribe_eventgrid(sim, app)
    return app


def restart_app(app: AppProcess, *, kill: bool = True, down_for: float = 0.0, timeout: float = 30) -> None:
    """Stop the app's host (SIGKILL by default: requests in flight are lost, as when an instance dies) and start
    it again on the same port with the same settings and keys, so that callback URLs and Event Grid
    subscriptions still reach it and the call state comes back from Table Storage."""
    if app.process.poll() is None:
        if kill:
            app.process.kill()
        else:
            app.process.terminate()
        app.process.wait(timeout=10)
    time.sleep(down_for)
    port = int(app.base_url.rsplit(":", 1)[1])
    with open(app.log_path, "ab") as log:
        log.write(f"\n--- host restarted ({'killed' if kill else 'stopped'}) ---\n".encode())
    env = host_environment(app.env, app.function_key, app.eventgrid_key, ROOT)
    app.process = launch_host(ROOT, port, env, app.log_path)
    wait_serving(app.base_url, app.process, app.log_path, timeout)


def host_environment(settings: dict[str, str], function_key: str, eventgrid_key: str, app_dir: Path) -> dict[str, str]:
    """The environment a devhost process of the app runs in, as ``start_app`` builds it: this process's, less any app
    settings it carries, plus ``settings`` and the host's keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACS_", "CALLBACK_", "ROUTING_", "FLOWS"))}
    env.update(settings)
    env["DEVHOST_FUNCTION_KEY"] = function_key
    env["DEVHOST_EVENTGRID_KEY"] = eventgrid_key
    env["PYTHONPATH"] = str(app_dir)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def no_settings(app_dir: Path) -> list[str]:
    """The devhost options that read no settings file (the environment carries every setting), for the devhost that
    serves ``app_dir``: its own (``PYTHONPATH`` is the app's folder), else this checkout's. ``--no-settings`` where
    that devhost knows it; an older one (another checkout, e.g. a benchmark's comparison) does not, and is given a
    settings file that does not exist, which it ignores (today's devhost refuses that)."""
    source = Path(app_dir) / "devhost" / "__main__.py"
    if not source.is_file() or "--no-settings" in source.read_text(errors="replace"):
        return ["--no-settings"]
    return ["--settings", "no-local-settings.json"]


def launch_host(app_dir: Path, port: int, env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """A devhost process serving the app on 127.0.0.1:``port`` (its output appended to ``log_path``), every setting
    from ``env`` (no settings file read); ``args`` are more devhost options (e.g. ``--drain-seconds``)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devhost",
                "--app-dir",
                str(app_dir),
                "--port",
                str(port),
                *no_settings(app_dir),
                *args,
            ],
            cwd=app_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_serving(
    base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30, path: str = "/api/health"
) -> None:
    """Until the host at ``base_url`` answers HTTP at ``path`` (any status: devhost listens once the app is indexed
    and loaded); RuntimeError, with its log, if it exits first or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the host exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(base_url + path, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error: the host is up
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the host did not start within {timeout}s:\n{log_path.read_text(errors='replace')[-4000:]}"
                ) from None
            time.sleep(0.05)


EVENTGRID_FUNCTIONS = {
    "incoming_call": ["Microsoft.Communication.IncomingCall"],
    "recording_file_status": ["Microsoft.Communication.RecordingFileStatusUpdated"],
    "call_records": [f"Microsoft.Communication.{t}" for t in CALL_RECORD_EVENTS],
}


def subscribe_eventgrid(sim: Any, app: AppProcess, functions: tuple[str, ...] = tuple(EVENTGRID_FUNCTIONS)) -> None:
    """Subscribe the simulator's Event Grid to the app's Event Grid functions (all of them, or ``functions``)."""
    for function in functions:
        types = EVENTGRID_FUNCTIONS[function]
        body = json.dumps({"endpoint": app.eventgrid_url(function), "eventTypes": types, "name": function}).encode()
        request = urllib.request.Request(
            sim.endpoint + "/__sim/eventgrid/subscriptions",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            state = json.loads(response.read())["provisioningState"]
        if state != "Succeeded":
            raise RuntimeError(f"Event Grid subscription to {function} is {state}")
