"""Reaching the simulator's recording store the way the SDK insists on: HTTPS on *.asm.skype.com.

The simulator serves the store over TLS (a throwaway CA) and advertises https://sim.asm.skype.com:PORT
URLs; ``point_recording_host_at_loopback`` makes such names resolve to 127.0.0.1 in this process (a DNS
override: the SDK, azure-core, requests/aiohttp and TLS all run unmodified, and the certificate is still
checked against the name). SDK calls pass ``connection_verify=str(ca_file)`` to trust the CA.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import urllib.parse
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient
from azure.core.credentials import AzureKeyCredential

from simulator import hmac_auth
from simulator.runner import RunningSimulator

RECORDING_SUFFIX = ".asm.skype.com"


def point_recording_host_at_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.lower().rstrip(".").endswith(RECORDING_SUFFIX):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def sdk_client(sim: RunningSimulator) -> CallAutomationClient:
    return CallAutomationClient(sim.endpoint, AzureKeyCredential(sim.access_key))


def signed_headers(
    sim: RunningSimulator, method: str, url: str, *, key: str | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """HMAC headers for a hand-made request to the store, signed for the resource host (x-ms-host)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host = urllib.parse.urlsplit(sim.endpoint).netloc
    date = hmac_auth.http_date()
    body_hash = hmac_auth.content_hash(b"")
    signature = hmac_auth.sign(key or sim.access_key, method, path, date, host, body_hash)
    return {
        "x-ms-date": date,
        "x-ms-host": host,
        "x-ms-content-sha256": body_hash,
        "Authorization": f"HMAC-SHA256 SignedHeaders={hmac_auth.SIGNED_HEADERS}&Signature={signature}",
        **(extra or {}),
    }


def other_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
