"""Request counts (core/platform/observability.py, REQUEST_COUNTS=1): every HTTP request the process sends, counted
by kind per invocation and logged when the outermost call_scope ends; nothing counted or logged when off.

Requests go through http.client to a local server here, as the SDKs' do (requests and urllib3 end in http.client),
so the audit hook sees them as it sees the app's."""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.platform import observability
from core.platform.observability import call_scope, key_shape, request_counts, request_kind

ACCOUNT = "/devstoreaccount1"
REF = "6b1d2c3e-aaaa-4bbb-8ccc-0123456789ab"  # a call's reference (a UUID, as the app derives it)
CALL = "c0123456789abcdef0123456789abcdef01234567"  # a call record's partition (a hash)
EVENT = "3f2a1b4c-1111-2222-3333-444455556666"
TABLE = {"DataServiceVersion": "3.0", "Accept": "application/json;odata=minimalmetadata"}
BLOB = {"x-ms-version": "2025-01-05"}


class _Any(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_MERGE = do_PATCH = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Any)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[:2]
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(observability.REQUEST_COUNTS_LINE + " "):
            self.lines.append(json.loads(text[len(observability.REQUEST_COUNTS_LINE) + 1 :]))


@pytest.fixture
def logged() -> Iterator[_Lines]:
    logger = logging.getLogger("core.platform.observability")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def counting() -> Iterator[None]:
    observability.install_request_counting()
    try:
        yield
    finally:
        observability.stop_request_counting()


def row(table: str, partition: str, row_key: str) -> str:
    return f"{ACCOUNT}/{table}(PartitionKey='{partition}',RowKey='{row_key}')"


def send(address: tuple[str, int], method: str, path: str, body: bytes | None = None, **headers: str) -> None:
    connection = http.client.HTTPConnection(*address, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers)
        connection.getresponse().read()
    finally:
        connection.close()


def batch_body(address: tuple[str, int]) -> bytes:
    base = f"http://{address[0]}:{address[1]}{ACCOUNT}"
    parts = [
        f"POST {base}/callrecords HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        f'{{"PartitionKey": "{CALL}", "RowKey": "ev-{EVENT}"}}',
        f"PUT {base}/callrecords(PartitionKey='{CALL}',RowKey='record') HTTP/1.1\r\n"
        'If-Match: W/"datetime\'1\'"\r\nContent-Type: application/json\r\n\r\n{"summary": "{}"}',
    ]
    inner = "".join(f"--changeset_1\r\nContent-Type: application/http\r\n\r\n{part}\r\n" for part in parts)
    return (
        "--batch_1\r\nContent-Type: multipart/mixed; boundary=changeset_1\r\n\r\n"
        f"{inner}--changeset_1--\r\n--batch_1--\r\n"
    ).encode()


# -- what a request is --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        ("recent", "recent"),
        ("recordings", "recordings"),
        ("dialcap", "dialcap"),
        ("state", "state"),
        ("c0123456789abcdef0123456789abcdef01234567", "{id}"),
        ("ccid-3f2a1b4c-1111-2222-3333-444455556666", "ccid-{id}"),
        ("ev-3f2a1b4c-1111-2222-3333-444455556666", "ev-{id}"),
        ("8999999999999999999-s-c0123456789abcdef", "{id}-s-{id}"),
        ("2026-12-05", "{id}"),
        ("deadbeef-dead-beef-dead-beefdeadbeef", "{id}"),  # a uuid of hex letters only is no word either
        ("h" + "ab" * 32, "h{id}"),  # too long for a word: a hash
        ("h" + "0a" * 32, "h{id}"),
        ("i03-8999999998234567890", "i{id}-{id}"),  # the records' listing index: shard and time bucket
        ("a1b2c3d4-1111-2222-3333-444455556666", "{id}"),  # a UUID's letters are hex digits: no prefix
    ],
)
def test_a_key_is_counted_by_its_shape(value: str, shape: str) -> None:
    assert key_shape(value) == shape


@pytest.mark.parametrize(
    ("method", "target", "headers", "kind"),
    [
        ("GET", row("callstate", EVENT, "state"), TABLE, "table get callstate {id}/state"),
        (
            "GET",
            f"{ACCOUNT}/callstate(PartitionKey=%27{EVENT}%27,RowKey=%27state%27)",
            TABLE,
            "table get callstate {id}/state",
        ),
        (
            "PUT",
            row("callstate", REF, "state"),
            {**TABLE, "If-Match": 'W/"x"'},
            "table replace callstate {id}/state",
        ),
        ("PUT", row("callevents", "recordings", EVENT), TABLE, "table upsert callevents recordings/{id}"),
        (
            "MERGE",
            row("callrecords", CALL, "record"),
            {**TABLE, "If-Match": "*"},
            "table merge callrecords {id}/record",
        ),
        ("PATCH", row("callstate", f"ccid-{EVENT}", "ref"), TABLE, "table upsert-merge callstate ccid-{id}/ref"),
        ("DELETE", row("callrecords", "recent", f"9-s-{CALL}"), TABLE, "table delete callrecords recent/{id}-s-{id}"),
        ("GET", f"{ACCOUNT}/callrecords()?$filter=PartitionKey eq 'recent'", TABLE, "table query callrecords recent"),
        ("GET", f"{ACCOUNT}/callstate()?$filter=serverCallId%20eq%20'x'", TABLE, "table scan callstate serverCallId"),
        ("POST", f"{ACCOUNT}/Tables", TABLE, "table create-table"),
        ("POST", f"{ACCOUNT}/$batch", TABLE, "table batch"),
        ("POST", f"{ACCOUNT}/callstate", TABLE, "table insert callstate"),
        # Azure's endpoints: the account is the host, not the first segment of the path.
        (
            "GET",
            f"/callstate(PartitionKey='{REF}',RowKey='state')",
            {"Host": "app.table.core.windows.net", "DataServiceVersion": "3.0"},
            "table get callstate {id}/state",
        ),
        (
            "PUT",
            "/qa-recordings/2026/11/27/x/chunk-000.wav?comp=block&blockid=AA",
            {"Host": "app.blob.core.windows.net"},
            "blob put-block qa-recordings",
        ),
        ("PUT", f"{ACCOUNT}/qa-recordings/a/b.wav?comp=blocklist", BLOB, "blob put-block-list qa-recordings"),
        ("PUT", f"{ACCOUNT}/qa-recordings/a/b.wav?comp=tags", BLOB, "blob set-tags qa-recordings"),
        ("PUT", f"{ACCOUNT}/qa-recordings/a/b.wav?comp=metadata", BLOB, "blob set-metadata qa-recordings"),
        ("HEAD", f"{ACCOUNT}/qa-recordings/a/b.wav", BLOB, "blob get-properties qa-recordings"),
        ("PUT", f"{ACCOUNT}/qa-recordings?restype=container", BLOB, "blob create-container qa-recordings"),
        ("POST", "/calling/callConnections:answer?api-version=2026-03-12", {}, "acs POST callConnections:answer"),
        ("POST", f"/calling/callConnections/{EVENT}:play?api-version=1", {}, "acs POST callConnections/{id}:play"),
        ("DELETE", f"/calling/callConnections/{EVENT}", {}, "acs DELETE callConnections/{id}"),
        # A raw id in the path (a phone number) is never part of a kind.
        (
            "GET",
            f"/calling/callConnections/{EVENT}/participants/4:+14255550123",
            {},
            "acs GET callConnections/{id}/participants/{id}",
        ),
        ("POST", "/calling/recordings?api-version=1", {}, "acs POST recordings"),
        ("GET", "/v1/objects/0-eus-d2-abc/content/audio", {}, "acs GET objects/{id}/content/audio"),
        ("GET", "/calling/.well-known/acsopenidconfiguration", {}, "acs GET .well-known/acsopenidconfiguration"),
        ("POST", "/v2.1/track", {"Host": "dc.services.visualstudio.com"}, "other POST dc.services.visualstudio.com"),
    ],
)
def test_a_request_is_counted_by_its_kind(method: str, target: str, headers: dict[str, str], kind: str) -> None:
    lowered = {"host": "127.0.0.1:10002", **{k.lower(): v for k, v in headers.items()}}
    assert request_kind(method, target, lowered) == kind


# -- counted per invocation ------------------------------------------------------------------------


def test_an_invocation_logs_its_requests_by_kind_once_when_it_ends(
    server: tuple[str, int], logged: _Lines, counting: None
) -> None:
    state = row("callstate", REF, "state")
    with call_scope("callback PlayCompleted", call_ref="ref-1"):
        with call_scope("nested"):  # the outermost scope counts; an inner one adds to it
            send(server, "GET", state, **TABLE)
        send(server, "PUT", state, b"{}", **TABLE, **{"If-Match": 'W/"1"'})
        send(server, "PUT", state, b"{}", **TABLE, **{"If-Match": 'W/"2"'})
        send(server, "POST", "/calling/callConnections/c-1:play?api-version=1", b"{}")
        assert logged.lines == []  # nothing before the invocation ends
    assert logged.lines == [
        {
            "scope": "callback PlayCompleted",
            "counts": {
                "acs POST callConnections/{id}:play": 1,
                "table get callstate {id}/state": 1,
                "table replace callstate {id}/state": 2,
            },
        }
    ]


def test_an_insert_and_a_batch_are_completed_from_their_bodies(
    server: tuple[str, int], logged: _Lines, counting: None
) -> None:
    with call_scope("CallStarted"):
        claim = json.dumps({"PartitionKey": "recordings", "RowKey": EVENT, "status": "processing"}).encode()
        send(server, "POST", f"{ACCOUNT}/callevents", claim, **TABLE)
        send(server, "POST", f"{ACCOUNT}/$batch", batch_body(server), **TABLE)
    (line,) = logged.lines
    assert line["counts"] == {
        "table insert callevents recordings/{id}": 1,
        "table batch callrecords {id}": 1,  # one request...
        "table batch.insert callrecords {id}/ev-{id}": 1,  # ...and each entity it holds
        "table batch.replace callrecords {id}/record": 1,
    }


def test_an_invocation_with_no_request_logs_zero(logged: _Lines, counting: None) -> None:
    with call_scope("callback PlayStarted"):
        pass
    assert logged.lines == [{"scope": "callback PlayStarted", "counts": {}}]


def test_a_request_outside_an_invocation_is_logged_with_its_thread(
    server: tuple[str, int], logged: _Lines, counting: None
) -> None:
    worker = threading.Thread(
        target=send, args=(server, "PUT", f"{ACCOUNT}/qa-recordings/a/b.wav?comp=block&blockid=AA", b"x"),
        kwargs=BLOB, name="copy-worker",
    )
    worker.start()
    worker.join()
    assert logged.lines == [{"scope": None, "thread": "copy-worker", "counts": {"blob put-block qa-recordings": 1}}]


def test_request_counts_collects_without_logging(server: tuple[str, int], logged: _Lines, counting: None) -> None:
    with request_counts() as counted:
        send(server, "GET", row("callstate", REF, "state"), **TABLE)
        with call_scope("IncomingCall"):  # a scope inside it neither counts apart nor logs
            send(server, "POST", "/calling/callConnections:answer", b"{}")
    assert dict(counted) == {"table get callstate {id}/state": 1, "acs POST callConnections:answer": 1}
    assert logged.lines == []


def test_off_nothing_is_counted_or_logged(server: tuple[str, int], logged: _Lines) -> None:
    observability.stop_request_counting()
    with request_counts() as counted, call_scope("callback PlayCompleted"):
        send(server, "GET", row("callstate", REF, "state"), **TABLE)
    send(server, "PUT", f"{ACCOUNT}/qa-recordings/a/b.wav?comp=block", b"x", **BLOB)
    assert counted == {}
    assert logged.lines == []


def test_configure_installs_counting_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = []
    monkeypatch.setattr(observability, "install_request_counting", lambda: installed.append(True))
    monkeypatch.setattr(observability, "install_redaction", lambda: None)
    for value, expected in (("", []), ("0", []), ("1", [True])):
        installed.clear()
        monkeypatch.setattr(observability, "_configured", False)
        monkeypatch.setenv("REQUEST_COUNTS", value)
        monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
        observability.configure("INFO")
        assert installed == expected


def test_counting_is_on_from_import_when_asked() -> None:
    """The first invocation of a process is counted too: its scope opens before the services (and ``configure``)."""
    probe = "import core.platform.observability as o; print(o._counting)"
    root = str(Path(__file__).resolve().parents[2])
    for value, expected in (("1", "True"), ("", "False")):
        env = {**os.environ, "REQUEST_COUNTS": value, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected
