"""A stand-in for the app's HTTP endpoints: it records what the simulator posts to it.

It answers Event Grid's validation handshake like the Functions host does, can be told to fail
the next N deliveries, and lets tests wait for a given event type.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.callbacks: list[dict[str, Any]] = []
        self.eventgrid: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.fail_status = 500
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._cond:
                    receiver.requests.append({"path": self.path, "headers": headers, "body": body})
                    if headers.get("aeg-event-type") == "SubscriptionValidation":
                        code = body[0]["data"]["validationCode"]
                        self._reply(200, {"validationResponse": code})
                        return
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        self._reply(receiver.fail_status, {"error": "injected by test"})
                        return
                    target = receiver.eventgrid if headers.get("aeg-event-type") else receiver.callbacks
                    for event in body:
                        target.append({"path": self.path, "headers": headers, "event": event})
                    receiver._cond.notify_all()
                self._reply(200, None)

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def types(self, call_connection_id: str | None = None) -> list[str]:
        with self._cond:
            return [
                c["event"]["type"].rsplit(".", 1)[-1]
                for c in self.callbacks
                if call_connection_id is None or c["event"]["data"].get("callConnectionId") == call_connection_id
            ]

    def events(self, event_type: str, call_connection_id: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                c["event"]
                for c in self.callbacks
                if c["event"]["type"].endswith("." + event_type)
                and (call_connection_id is None or c["event"]["data"].get("callConnectionId") == call_connection_id)
            ]

    def grid(self, event_type: str) -> list[dict[str, Any]]:
        with self._cond:
            return [c["event"] for c in self.eventgrid if c["event"]["eventType"].endswith("." + event_type)]

    def wait_for(
        self,
        event_type: str,
        *,
        count: int = 1,
        timeout: float = 10.0,
        call_connection_id: str | None = None,
        grid: bool = False,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.grid(event_type) if grid else self.events(event_type, call_connection_id)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e["event"]["eventType"] for e in self.eventgrid] if grid else self.types()
                    raise AssertionError(f"timed out waiting for {count} x {event_type}; saw {seen}")
                self._cond.wait(left)
