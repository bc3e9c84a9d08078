"""A closed little network for attacks on the recording copy: ACS's recording store, the attacker's host,
DNS that sends every other name to the attacker, and an in-memory storage account.

- ``Endpoint``: an HTTP server on a loopback address that speaks TLS (a certificate of a throwaway CA, valid
  for every name the attacks use, so a request that gets past the app's check really completes) and, on the
  same port, plain HTTP. It counts every connection (before any handshake) and every request, and keeps every
  ``Authorization`` and ``x-ms-*`` header it was sent. It serves a small WAV for any path, the recording's
  metadata for paths ending in ``acsmetadata``, answers DELETE with 200, and answers ``/v1/objects/redirect-KEY``
  with the redirect registered under KEY.
- ``closed_network``: ``socket.getaddrinfo`` as in a world where ACS's recording hosts (``*.asm.skype.com`` on
  443) and the loopback address of the store (on its port) are ACS's store, and every other well-formed name,
  address and port is the attacker's host; a name DNS could not hold (a space, a backslash, a NUL...) does not
  resolve. Nothing leaves the machine; nothing else on it is reached.
- ``Account``: Blob Storage in memory, resolving a blob name into a URL as the SDK does (``quote(name,
  safe='~/')``) and that URL as requests and the service do (dot segments removed), so that a name which
  would land in another container lands there, and every write is recorded with where it landed.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import socket
import socketserver
import ssl
import threading
import wave
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from cryptography import x509

from simulator import tls

ACS_SUFFIX = ".asm.skype.com"
CALLER = "4:+14255550123"
PACKAGE = ("scm-releases", "scm-latest-app.zip")  # where a Function App's run-from-package zip lives


def small_wav(frames: int = 800) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x01\x00" * frames)
    return buffer.getvalue()


WAV = small_wav()
METADATA = {
    "participants": [{"participantId": CALLER, "channel": 0}],
    "recordingInfo": {"contentType": "audio", "channelType": "mixed", "format": "wav"},
}


# -- certificates -------------------------------------------------------------------------------------------


def make_certificates(directory: Path, dns_names: set[str]) -> tuple[Path, ssl.SSLContext]:
    """A CA (its file: what the client trusts) and a server context valid for ``dns_names`` and loopback."""
    names = []
    for name in sorted(dns_names | {"localhost", "*" + ACS_SUFFIX}):
        try:
            x509.DNSName(name)  # a name a certificate cannot carry is left out
        except (ValueError, TypeError):
            continue
        names.append(name)
    ca_path, cert_path, key_path = tls.make_certificates(
        directory, "attacker", more_names=names, addresses=("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.2")
    )
    return ca_path, tls.server_context(cert_path, key_path)


# -- the servers ----------------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    tls: bool
    credentials: dict[str, str]


def _credentials(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() == "authorization" or k.lower().startswith("x-ms-")}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: the connection count is the request count

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _seen(self) -> None:
        endpoint = self.server.endpoint
        with endpoint.lock:
            endpoint.seen.append(
                Seen(self.command, self.path, isinstance(self.connection, ssl.SSLSocket), _credentials(self.headers))
            )

    def do_GET(self) -> None:  # noqa: N802
        self._seen()
        m = re.search(r"/v1/objects/redirect-([A-Za-z0-9_-]+)", self.path)
        if m and m.group(1) in self.server.endpoint.redirects:
            status, location = self.server.endpoint.redirects[m.group(1)]
            self._answer(status, headers={"Location": location})
        elif self.path.rstrip("/").endswith("acsmetadata"):
            self._answer(200, json.dumps(self.server.endpoint.metadata).encode(), {"Content-Type": "application/json"})
        else:
            self._answer(200, WAV, {"Content-Type": "audio/wav"})

    do_HEAD = do_GET

    def do_DELETE(self) -> None:  # noqa: N802
        self._seen()
        m = re.search(r"/v1/objects/redirect-([A-Za-z0-9_-]+)", self.path)
        if m and m.group(1) in self.server.endpoint.redirects:
            status, location = self.server.endpoint.redirects[m.group(1)]
            self._answer(status, headers={"Location": location})
        else:
            self._answer(200)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    endpoint: Endpoint

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        with self.endpoint.lock:
            self.endpoint.connections += 1  # counted before any handshake or byte of a request
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        first = request.recv(1, socket.MSG_PEEK)
        if first == b"\x16":  # a TLS ClientHello: TLS; anything else: plain HTTP on the same port
            request = self.endpoint.context.wrap_socket(request, server_side=True)
        try:
            _Handler(request, client_address, self)
        finally:
            request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        with self.endpoint.lock:
            self.endpoint.errors += 1


@dataclass
class Endpoint:
    """A host on a loopback address; ``host``/``port`` is where it listens."""

    name: str
    host: str
    context: ssl.SSLContext
    metadata: dict[str, Any] = field(default_factory=lambda: dict(METADATA))
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)
    connections: int = 0
    errors: int = 0
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Endpoint:
        self._server = _Server((self.host, 0), _Handler)
        self._server.endpoint = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"endpoint-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.connections, self.errors, self.seen = 0, 0, []
            self.metadata = dict(METADATA)

    @property
    def credentials(self) -> list[dict[str, str]]:
        return [s.credentials for s in self.seen if s.credentials]


# -- DNS ------------------------------------------------------------------------------------------------------

_DNS_NAME = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.?")


def closed_network(monkeypatch: Any, store: Endpoint, attacker: Endpoint) -> None:
    """Resolve as described in the module docstring; connections go only to ``store`` or ``attacker``."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host or "")
        name = name.lower()
        try:
            number = int(port or 0)
        except (TypeError, ValueError) as exc:
            raise socket.gaierror(socket.EAI_SERVICE, f"bad port {port!r}") from exc
        try:
            ipaddress.ip_address(name.strip("[]"))
            is_address = True
        except ValueError:
            is_address = False
        if not is_address and not _DNS_NAME.fullmatch(name):
            raise socket.gaierror(socket.EAI_NONAME, f"{name!r} does not resolve")
        if (name.rstrip(".").endswith(ACS_SUFFIX) and number == 443) or (
            name in ("127.0.0.1", "localhost", "::1") and number == store.port
        ):
            target = store
        else:
            target = attacker
        return real(target.host, target.port, socket.AF_INET, socket.SOCK_STREAM)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# -- Blob Storage in memory -----------------------------------------------------------------------------------


def _not_found() -> Exception:
    from azure.core.exceptions import ResourceNotFoundError

    return ResourceNotFoundError("BlobNotFound")


@dataclass
class StoredBlob:
    data: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    etag: str = "0"


class Account:
    """Blob Storage in memory: ``blobs[(container, name)]``; ``writes`` lists every (operation, container, name)."""

    def __init__(self, host: str = "qaacct.blob.core.windows.net") -> None:
        self.host = host
        self.blobs: dict[tuple[str, str], StoredBlob] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.reads: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def container(self, name: str) -> Container:
        return Container(self, name)

    def put(self, container: str, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self.blobs[(container, name)] = StoredBlob(data, dict(metadata or {}))

    def resolve(self, container: str, name: str) -> tuple[str, str]:
        """Where a blob name given to the SDK lands: the SDK's URL, as requests sends it, as the service reads it."""
        from urllib3.util import parse_url

        url = f"https://{self.host}/{quote(container)}/{quote(name, safe='~/')}"
        path = parse_url(url).path or "/"
        first, _, rest = path.lstrip("/").partition("/")
        return unquote(first), unquote(rest)

    def record(self, operation: str, where: tuple[str, str], *, read: bool = False) -> None:
        with self.lock:
            (self.reads if read else self.writes).append((operation, *where))


class Container:
    def __init__(self, account: Account, name: str) -> None:
        self.account = account
        self.name = name
        self.url = f"https://{account.host}/{name}"

    def create_container(self) -> None:
        pass

    def get_blob_client(self, name: str) -> Blob:
        return Blob(self.account, self.account.resolve(self.name, name), name)


class _Download:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def readall(self) -> bytes:
        return self._data

    def chunks(self) -> Any:
        for offset in range(0, len(self._data), 4096):
            yield self._data[offset : offset + 4096]


@dataclass
class _Props:
    size: int
    metadata: dict[str, str]
    etag: str


class Blob:
    def __init__(self, account: Account, where: tuple[str, str], asked: str) -> None:
        self.account = account
        self.where = where
        self.asked = asked
        self._staged: dict[str, bytes] = {}

    def _stored(self) -> StoredBlob:
        stored = self.account.blobs.get(self.where)
        if stored is None:
            raise _not_found()
        return stored

    def get_blob_properties(self) -> _Props:
        stored = self._stored()
        return _Props(len(stored.data), dict(stored.metadata), stored.etag)

    def stage_block(self, block_id: str, data: bytes, validate_content: bool = False, **_: Any) -> None:
        self._staged[block_id] = bytes(data)

    def commit_block_list(self, blocks: list[Any], metadata: dict[str, str] | None = None,
                          tags: dict[str, str] | None = None, **_: Any) -> None:
        data = b"".join(self._staged[b.id] for b in blocks)
        self.account.blobs[self.where] = StoredBlob(data, dict(metadata or {}), dict(tags or {}))
        self.account.record("commit", self.where)

    def upload_blob(self, data: bytes, overwrite: bool = False, metadata: dict[str, str] | None = None,
                    **_: Any) -> None:
        self.account.blobs[self.where] = StoredBlob(bytes(data), dict(metadata or {}))
        self.account.record("upload", self.where)

    def set_blob_metadata(self, metadata: dict[str, str], **_: Any) -> None:
        self._stored().metadata = dict(metadata)
        self.account.record("metadata", self.where)

    def set_blob_tags(self, tags: dict[str, str], **_: Any) -> None:
        self._stored().tags = dict(tags)
        self.account.record("tags", self.where)

    def download_blob(self, **_: Any) -> _Download:
        self.account.record("download", self.where, read=True)
        return _Download(self._stored().data)


# -- the app's pieces -------------------------------------------------------------------------------------------


def app_session(ca: Path) -> Any:
    """The requests session exactly as the app makes it (core/platform/clients.py), trusting the suite's CA."""
    from core.platform import clients

    clients.reset()
    try:
        session = clients.http_session()
    finally:
        clients.reset()
    session.verify = str(ca)
    return session


class NoState:
    """The call-state store: the recorded call is unknown (the ids come from the event only)."""

    def __init__(self, recording_id: str = "") -> None:
        self.recording_id = recording_id

    def find_by_server_call(self, server_call_id: str) -> Any:
        if not self.recording_id:
            return None
        return type("State", (), {"recording_id": self.recording_id, "caller": CALLER, "call_connection_id": "cc"})()


def services_for(copier: Any, state: Any = None, *, in_place: bool = False) -> Any:
    """What the recordings handler reaches: the copier, the call-state store, no duplicate filter, the storage mode."""
    from types import SimpleNamespace

    settings = SimpleNamespace(recording=SimpleNamespace(storage="byos" if in_place else "copy"))
    return SimpleNamespace(copier=copier, store=state or NoState(), events=None, settings=settings)


def recording_event(
    *,
    content: Any,
    metadata: Any,
    delete: Any = None,
    server_call_id: str = "server-call-1",
    document_id: Any = "doc-1",
    index: Any = 0,
    format_type: Any = "Wav",
    channel_type: Any = "Mixed",
    start_time: Any = "2024-05-01T10:00:00Z",
) -> Any:
    """A RecordingFileStatusUpdated event as the handler receives it, built field by field (not through the
    reader in core/calls/events.py, so that whatever the reader lets through, the copier's own checks are what is
    tested: a value the reader would drop is still a value the copier must not trip on)."""
    from core.calls.events import RecordingChunk, RecordingFileStatus

    chunk = RecordingChunk(document_id=document_id, index=index, content_location=content,
                           metadata_location=metadata, delete_location=delete, end_reason="SessionEnded")
    return RecordingFileStatus(
        event_id="event-1",
        subject=f"/recording/call/corr-1/serverCallId/{server_call_id}",
        chunks=[chunk],
        start_time=start_time,
        duration_ms=1000,
        content_type="Audio",
        channel_type=channel_type,
        format_type=format_type,
    )
