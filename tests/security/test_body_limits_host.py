"""Oversized and deeply nested bodies against the local Functions host (``python -m devhost``).

The host refuses a body over its cap before reading it: by Content-Length (413 at once, with no byte of the
body sent), and, for a chunked body, as soon as more than the cap arrived (413 although the body never ends).
HTTP triggers take up to FUNCTIONS_REQUEST_BODY_SIZE_LIMIT bytes (Azure's default: 100 MB), the Event Grid
webhook up to what Event Grid can send (1 MiB and a margin). A delivery whose JSON nests too deep is a 400,
never a crash. Nothing reaches a function in any of these cases.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devhost.host import DEFAULT_REQUEST_BODY_LIMIT, EVENTGRID_BODY_LIMIT, EVENTGRID_MAX_DEPTH
from tools.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 65_536  # FUNCTIONS_REQUEST_BODY_SIZE_LIMIT of the host under test
EVENTGRID_KEY = "eventgrid-key-for-body-tests"
PROMPT = 5.0  # seconds: a refusal must come well before this (the old host waited for the body forever)
WEBHOOK = f"/runtime/webhooks/eventgrid?functionName=recorder&code={EVENTGRID_KEY}"

FUNCTION_APP = """
import json
import threading
from pathlib import Path

import azure.functions as func

CALLS = Path(__file__).parent / "calls.jsonl"
_lock = threading.Lock()
app = func.FunctionApp()


def note(entry):
    with _lock, CALLS.open("a") as f:
        f.write(json.dumps(entry) + "\\n")


@app.route(route="echo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    note({"function": "echo", "size": len(req.get_body())})
    return func.HttpResponse(json.dumps({"size": len(req.get_body())}), mimetype="application/json")


@app.event_grid_trigger(arg_name="event")
def recorder(event: func.EventGridEvent) -> None:
    note({"function": "recorder", "id": event.id})
"""


@dataclass
class Host:
    port: int
    app_dir: Path
    process: subprocess.Popen[bytes]
    output: Path

    def calls(self) -> list[dict[str, object]]:
        path = self.app_dir / "calls.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def logs(self) -> str:
        return self.output.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    app_dir = tmp_path_factory.mktemp("body-limits-app")
    (app_dir / "function_app.py").write_text(textwrap.dedent(FUNCTION_APP))
    (app_dir / "host.json").write_text(json.dumps({"version": "2.0"}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVHOST_")}
    env.update(PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost", FUNCTIONS_REQUEST_BODY_SIZE_LIMIT=str(LIMIT))
    output = app_dir / "devhost.log"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--app-dir", str(app_dir), "--port", str(port)]
            + ["--eventgrid-key", EVENTGRID_KEY],
            cwd=app_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Host(port, app_dir, process, output)
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"devhost exited:\n{running.logs()}")
            try:
                if exchange(running, post("/api/echo", b"{}"))[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        (app_dir / "calls.jsonl").unlink(missing_ok=True)
        yield running
    finally:
        stop_process(process)


def post(path: str, body: bytes | None, *, length: int | None = None, **headers: str) -> bytes:
    """An HTTP/1.1 POST as raw bytes: the headers, then ``body`` (none at all when it is None)."""
    fields = {"Host": "127.0.0.1", "Content-Type": "application/json", **headers}
    if "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body or b"") if length is None else length)
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode() + (body or b"")


def chunked(total: int, size: int = 16_384, *, end: bool) -> bytes:
    """A chunked body of ``total`` bytes of JSON-ish filler; without its last (zero) chunk unless ``end``."""
    out, sent = bytearray(), 0
    while sent < total:
        n = min(size, total - sent)
        out += f"{n:x}\r\n".encode() + b" " * n + b"\r\n"
        sent += n
    return bytes(out) + (b"0\r\n\r\n" if end else b"")


def exchange(host: Host, request: bytes, timeout: float = PROMPT) -> tuple[int, bytes, float]:
    """Send ``request`` and read one response (status, body, seconds), keeping the socket open meanwhile: a
    host that waits for the rest of the body times out here."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", host.port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the host may stop reading (and answer) before everything is sent
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65_536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        lines = head.split(b"\r\n")
        length = next((int(x.split(b":", 1)[1]) for x in lines if x.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            chunk = s.recv(65_536)
            if not chunk:
                break
            rest += chunk
    return status, rest, time.monotonic() - started


def grid_event(**data: object) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Communication/CommunicationServices/acs",
        "subject": "/x",
        "eventType": "Microsoft.Communication.IncomingCall",
        "eventTime": "2026-03-12T10:00:00Z",
        "dataVersion": "1.0",
        "data": data or {"n": 1},
    }


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- Content-Length over the cap: refused before any byte of the body is read ----------------------------------


def test_http_trigger_refuses_a_declared_huge_body_without_reading_it(host: Host) -> None:
    """Worked before f82571e: the host read the body before any check (aiohttp's 100 MB cap counted bytes as
    they came), so a client that declared a terabyte and sent nothing held the request open: no answer here
    within 5 s."""
    status, body, seconds = exchange(host, post("/api/echo", None, length=10**12))
    assert status == 413 and seconds < PROMPT
    assert str(LIMIT) in json.loads(body)["error"]
    assert host.calls() == []


def test_eventgrid_webhook_refuses_a_declared_huge_body_without_reading_it(host: Host) -> None:
    """Worked before f82571e: the webhook read the whole body first (up to 100 MB); headers only with a huge
    Content-Length got no answer within 5 s."""
    status, _, seconds = exchange(host, post(WEBHOOK, None, length=10**9, **{"aeg-event-type": "Notification"}))
    assert status == 413 and seconds < PROMPT
    assert host.calls() == []


def test_expect_100_continue_over_the_cap_is_refused_before_the_body_is_sent(host: Host) -> None:
    """Worked before f82571e: the host answered 100 Continue to any Expect, inviting the terabyte, then waited."""
    status, _, seconds = exchange(host, post("/api/echo", None, length=10**12, Expect="100-continue"))
    assert status == 413 and seconds < PROMPT
    assert host.calls() == []


def test_eventgrid_webhook_refuses_a_real_body_over_its_cap(host: Host) -> None:
    """Worked before f82571e: a 1.5 MiB delivery (more than Event Grid ever sends) was read whole and its event
    invoked (202)."""
    event = grid_event(padding="x" * (EVENTGRID_BODY_LIMIT + 1))
    raw = json.dumps([event]).encode()
    status, _, _ = exchange(host, post(WEBHOOK, raw, **{"aeg-event-type": "Notification"}))
    assert status == 413
    assert host.calls() == []


# -- chunked bodies: never read for an HTTP trigger; refused past the cap on the Event Grid webhook -----------------


def test_an_endless_chunked_body_cannot_hold_an_http_trigger(host: Host) -> None:
    """Worked before f82571e: a chunked body was read to its end before any check; one that never ends (no last
    chunk) held the request open: no answer within 5 s. Now, as the Functions host, devhost reads no body of a
    request without Content-Length (Azure/azure-functions-host#7930): the function runs at once with an empty one
    (the app's own endpoints then refuse it with 411)."""
    request = post("/api/echo", chunked(LIMIT + 40_000, end=False), **{"Transfer-Encoding": "chunked"})
    status, body, seconds = exchange(host, request)
    assert (status, json.loads(body)) == (200, {"size": 0}) and seconds < PROMPT
    assert [c["size"] for c in host.calls()] == [0]
    (host.app_dir / "calls.jsonl").unlink()


def test_eventgrid_webhook_refuses_an_endless_chunked_body_once_past_its_cap(host: Host) -> None:
    """Worked before f82571e: no answer within 5 s to a chunked delivery that never ends."""
    headers = {"Transfer-Encoding": "chunked", "aeg-event-type": "Notification"}
    request = post(WEBHOOK, chunked(EVENTGRID_BODY_LIMIT + 100_000, 65_536, end=False), **headers)
    status, _, seconds = exchange(host, request)
    assert status == 413 and seconds < PROMPT
    assert host.calls() == []


def test_bodies_up_to_the_cap_still_reach_the_function(host: Host) -> None:
    status, body, _ = exchange(host, post("/api/echo", b" " * LIMIT))
    assert (status, json.loads(body)) == (200, {"size": LIMIT})
    # A chunked body is not passed on (as by the Functions host): the function sees none.
    status, body, _ = exchange(host, post("/api/echo", chunked(LIMIT, end=True), **{"Transfer-Encoding": "chunked"}))
    assert (status, json.loads(body)) == (200, {"size": 0})
    status, _, _ = exchange(host, post("/api/echo", b" " * (LIMIT + 1)))
    assert status == 413
    assert [c["size"] for c in host.calls()] == [LIMIT, 0]
    (host.app_dir / "calls.jsonl").unlink()


def test_the_default_cap_is_azure_s_100_mb() -> None:
    assert DEFAULT_REQUEST_BODY_LIMIT == 104_857_600
    assert EVENTGRID_BODY_LIMIT >= 1_048_576 + 2  # one 1 MB event in its batch's brackets always fits


def test_the_host_prints_its_caps(host: Host) -> None:
    assert f"request bodies up to {LIMIT} bytes (Event Grid: {EVENTGRID_BODY_LIMIT})" in host.logs()


# -- deeply nested JSON on the Event Grid webhook -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["Notification", "SubscriptionValidation"])
def test_eventgrid_webhook_answers_deeply_nested_json_with_400(host: Host, kind: str) -> None:
    """Worked before f82571e: json.loads raised RecursionError, which the webhook did not catch: 500 (and for a
    notification, Event Grid retries a 500 for 24 hours)."""
    status, body, _ = exchange(host, post(WEBHOOK, nested(100_000).encode(), **{"aeg-event-type": kind}))
    assert status == 400, body
    assert host.calls() == []
    # The host is unharmed.
    sound = json.dumps([grid_event(validationCode="abc")]).encode()
    status, _, _ = exchange(host, post(WEBHOOK, sound, **{"aeg-event-type": kind}))
    assert status in (200, 202)
    (host.app_dir / "calls.jsonl").unlink(missing_ok=True)


def test_an_event_nested_deeper_than_the_host_reads_is_refused_and_not_invoked(host: Host) -> None:
    """Before f82571e an event 65 levels deep (parseable, but deeper than .NET's JSON readers take) was invoked."""
    deep: object = "leaf"
    for _ in range(EVENTGRID_MAX_DEPTH):
        deep = [deep]
    raw = json.dumps([grid_event(deep=deep)]).encode()  # batch + event + data + the nesting: > the maximum
    status, _, _ = exchange(host, post(WEBHOOK, raw, **{"aeg-event-type": "Notification"}))
    assert status == 400
    assert host.calls() == []
    shallow: object = "leaf"
    for _ in range(EVENTGRID_MAX_DEPTH - 4):
        shallow = [shallow]
    raw = json.dumps([grid_event(deep=shallow)]).encode()
    status, _, _ = exchange(host, post(WEBHOOK, raw, **{"aeg-event-type": "Notification"}))
    assert status == 202
    assert [c["function"] for c in host.calls()] == ["recorder"]
    (host.app_dir / "calls.jsonl").unlink()
