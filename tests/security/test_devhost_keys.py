"""Forged Event Grid deliveries against the app under the local Functions host (``python -m devhost``).

As in Azure, the Event Grid webhook takes the ``eventgrid_extension`` system key (``code=`` or
``x-functions-key``; the master key opens it too) on every request, handshakes included, and answers 401
otherwise before it looks at anything else. The key is given (argument, environment, or ``local.settings.json``
Values), or generated and printed at start-up. A forged IncomingCall for a call that is really ringing is the
attack: without the key it is refused and the app does nothing (the simulator sees no answer, no table row is
written); with the key the same delivery is answered, which is what a forger got before.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from simulator.engine import Config
from simulator.runner import RunningSimulator, SimulatorThread
from tests.conftest import control
from tests.support.receiver import Receiver
from tools.apphost import AppProcess, start_app
from tools.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK = "/runtime/webhooks/eventgrid"
TABLES = ("callstate", "callevents", "callrecords")


@dataclass
class Stack:
    sim: RunningSimulator
    app: AppProcess
    rx: Receiver
    tables: TableServiceClient
    server_call_id: str = ""
    event: dict[str, Any] | None = None

    def rows(self) -> int:
        total = 0
        for name in TABLES:
            try:
                total += sum(1 for _ in self.tables.get_table_client(name).list_entities())
            except ResourceNotFoundError:
                pass
        return total

    def answers(self) -> list[dict[str, Any]]:
        entries = control(self.sim, "GET", f"/__sim/calls/{self.server_call_id}/timeline")
        return [e for e in entries if e["kind"] == "request" and e.get("operation") == "AnswerCall"]

    def post(self, query: str, body: Any, *, method: str = "POST", **headers: str) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.app.base_url}{WEBHOOK}{query}",
            data=data if method == "POST" else None,
            method=method,
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[Stack]:
    """The app (not subscribed to the simulator: the forger delivers), the simulator, and a call ringing the
    app's number whose genuine IncomingCall a receiver captured: the forger's raw material."""
    with SimulatorThread(config=Config(ring_timeout=120.0)) as sim, Receiver() as rx:
        app = start_app(sim, azurite.connection_string, subscribe=False)
        try:
            control(
                sim,
                "POST",
                "/__sim/eventgrid/subscriptions",
                {"endpoint": rx.url + "/eg", "eventTypes": ["Microsoft.Communication.IncomingCall"], "name": "rx"},
            )
            running = Stack(sim, app, rx, TableServiceClient.from_connection_string(azurite.connection_string))
            call = control(sim, "POST", "/__sim/calls", {"from": "+14255550123", "to": "+18005550123"})
            running.server_call_id = call["serverCallId"]
            (running.event,) = rx.wait_for("IncomingCall", grid=True)
            yield running
        finally:
            app.stop()


def forged(stack: Stack, **changes: Any) -> dict[str, Any]:
    assert stack.event is not None
    return {**stack.event, "id": str(uuid.uuid4()), **changes}


# Each way a forger may present (or not) a key: (query after functionName=incoming_call, headers, body change).
WRONG = {
    "no key": ("", {}, {}),
    "wrong key": ("&code=not-the-system-key-0123456789", {}, {}),
    "empty key": ("&code=", {}, {}),
    "the function key": ("&code={function_key}", {}, {}),
    "the key upper-cased": ("&code={upper_key}", {}, {}),
    "the key as a bearer token": ("", {"Authorization": "Bearer {key}"}, {}),
    "the key in aeg-sas-key": ("", {"aeg-sas-key": "{key}"}, {}),
    "the key as key=": ("&key={key}", {}, {}),
    "the key in the event": ("", {}, {"code": "{key}"}),
    "a wrong x-functions-key beside the right code=": ("&code={key}", {"x-functions-key": "wrong-key-0123456789"}, {}),
}


def fill(text: str, stack: Stack) -> str:
    return text.format(
        key=stack.app.eventgrid_key, upper_key=stack.app.eventgrid_key.upper(), function_key=stack.app.function_key
    )


@pytest.mark.parametrize("way", list(WRONG))
def test_a_forged_incoming_call_without_the_system_key_is_refused_and_nothing_happens(stack: Stack, way: str) -> None:
    """Worked before f82571e: devhost required no key unless --eventgrid-key was given, and nothing gave it, so a
    forged IncomingCall posted by anyone who could reach the host (a dev tunnel) was answered into a flow."""
    query, headers, change = WRONG[way]
    rows = stack.rows()
    body = [forged(stack, **{k: fill(v, stack) for k, v in change.items()})]
    status, _ = stack.post(
        "?functionName=incoming_call" + fill(query, stack), body, **{k: fill(v, stack) for k, v in headers.items()}
    )
    assert status == 401
    time.sleep(0.2)
    assert stack.answers() == []
    assert stack.rows() == rows
    assert f"IncomingCall {body[0]['id']}" not in stack.app.logs()


@pytest.mark.parametrize("how", ["SubscriptionValidation", "OPTIONS", "Unsubscribe"])
def test_handshakes_without_the_system_key_are_refused(stack: Stack, how: str) -> None:
    """Worked before f82571e: anyone could validate a subscription to the app's triggers (200 with the code)."""
    validation = {
        **forged(stack),
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "data": {"validationCode": "forged-code", "validationUrl": "https://attacker.invalid/validate"},
    }
    if how == "OPTIONS":
        status, body = stack.post(
            "?functionName=incoming_call", b"", method="OPTIONS", **{"WebHook-Request-Origin": "eventgrid.azure.net"}
        )
    else:
        status, body = stack.post("?functionName=incoming_call", [validation], **{"aeg-event-type": how})
    assert status == 401
    assert b"forged-code" not in body


def test_the_simulator_cannot_subscribe_without_the_key_and_can_with_it(stack: Stack) -> None:
    """Worked before f82571e: a subscription to the bare webhook URL passed the validation handshake."""
    bare = f"{stack.app.base_url}{WEBHOOK}?functionName=recording_file_status"
    sub = control(stack.sim, "POST", "/__sim/eventgrid/subscriptions", {"endpoint": bare, "name": "bare"})
    assert sub["provisioningState"] == "Failed"
    keyed = stack.app.eventgrid_url("recording_file_status")
    assert f"code={stack.app.eventgrid_key}" in keyed
    sub = control(stack.sim, "POST", "/__sim/eventgrid/subscriptions", {"endpoint": keyed, "name": "keyed"})
    assert sub["provisioningState"] == "Succeeded"


def test_with_the_system_key_the_same_delivery_is_answered(stack: Stack) -> None:
    """The control: with the key (code=), the same forged delivery is answered, as every one above was
    before f82571e."""
    assert stack.answers() == []
    status, _ = stack.post(f"?functionName=incoming_call&code={stack.app.eventgrid_key}", [forged(stack)])
    assert status == 202
    deadline = time.monotonic() + 20
    while not stack.answers():
        assert time.monotonic() < deadline, stack.app.logs()[-3000:]
        time.sleep(0.05)
    assert len(stack.answers()) == 1


# -- where the key comes from ----------------------------------------------------------------------------------

SMALL_APP = """
import json
import os

import azure.functions as func

app = func.FunctionApp()


@app.route(route="env", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def env(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(sorted(k for k in os.environ if k.startswith("DEVHOST_"))))


@app.event_grid_trigger(arg_name="event")
def recorder(event: func.EventGridEvent) -> None:
    pass
"""


def run_devhost(app_dir: Path, values: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    (app_dir / "function_app.py").write_text(textwrap.dedent(SMALL_APP))
    (app_dir / "host.json").write_text(json.dumps({"version": "2.0"}))
    (app_dir / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVHOST_")}
    env.update(PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost")
    log = app_dir / f"devhost-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--app-dir", str(app_dir), "--port", str(port), *args],
            cwd=app_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, port, log


def wait_up(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/env", timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


def deliver(port: int, query: str) -> int:
    event = {"id": "e1", "subject": "s", "eventType": "T", "eventTime": "2026-03-12T10:00:00Z", "dataVersion": "1"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{WEBHOOK}?functionName=recorder{query}",
        data=json.dumps([{**event, "data": {}}]).encode(),
        headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_key_is_read_from_local_settings_and_kept_from_the_app(tmp_path: Path) -> None:
    key = "local-settings-eventgrid-key-0123"
    process, port, log = run_devhost(tmp_path, {"DEVHOST_EVENTGRID_KEY": key, "DEVHOST_FUNCTION_KEY": "f" * 20})
    try:
        wait_up(process, port, log)
        assert deliver(port, "") == 401
        assert deliver(port, f"&code={key}") == 202
        text = log.read_text()
        assert "Event Grid system key (eventgrid_extension): from DEVHOST_EVENTGRID_KEY" in text
        assert key not in text and "f" * 20 not in text  # keys given are not printed
        # The host's keys are not app settings: the functions do not see them (as in Azure).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/env", timeout=5) as response:
            assert json.loads(response.read()) == []
    finally:
        stop_process(process)


def test_without_a_key_one_is_generated_and_printed(tmp_path: Path) -> None:
    process, port, log = run_devhost(tmp_path, {})
    try:
        wait_up(process, port, log)
        line = next(x for x in log.read_text().splitlines() if "Event Grid system key (eventgrid_extension):" in x)
        key = line.rsplit(": ", 1)[1].strip()
        assert len(key) >= 32
        assert deliver(port, "") == 401
        assert deliver(port, f"&code={key}") == 202
    finally:
        stop_process(process)


@pytest.mark.parametrize(
    "values, args",
    [
        ({"DEVHOST_EVENTGRID_KEY": "<a key of your own>"}, ()),  # a placeholder left in place
        ({"DEVHOST_EVENTGRID_KEY": "short"}, ()),
        ({}, ("--eventgrid-key", "short")),
        ({"DEVHOST_MASTER_KEY": "with space in it 0123"}, ()),
    ],
)
def test_a_weak_or_placeholder_key_stops_the_host(tmp_path: Path, values: dict[str, str], args: tuple[str]) -> None:
    process, _, log = run_devhost(tmp_path, values, *args)
    try:
        assert process.wait(timeout=30) != 0
        assert "at least 16 characters" in log.read_text()
    finally:
        stop_process(process)
