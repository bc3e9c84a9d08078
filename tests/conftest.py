"""Shared fixtures: the ACS simulator (in a background thread, reached over HTTP on 127.0.0.1),
a receiver that stands in for the app's endpoints, and a real Call Automation client."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient
from azure.core.credentials import AzureKeyCredential

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simulator.engine import Config  # noqa: E402
from simulator.runner import RunningSimulator, SimulatorThread  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402
from tools import azurite as azurite_support  # noqa: E402

AI_ENDPOINT = "https://ai-sim.cognitiveservices.azure.com/"


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with SimulatorThread(config=Config()) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture
def client(sim: RunningSimulator) -> CallAutomationClient:
    # Not from_connection_string: it rewrites http:// to https://.
    return CallAutomationClient(sim.endpoint, AzureKeyCredential(sim.access_key))


def control(sim: RunningSimulator, method: str, path: str, body: Any = None) -> Any:
    """Call the simulator's control API (/__sim/...)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        sim.endpoint + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        ctype = response.headers.get("Content-Type", "")
        return json.loads(raw) if raw and "json" in ctype else raw.decode()


@pytest.fixture
def ctl(sim: RunningSimulator):
    def call(method: str, path: str, body: Any = None) -> Any:
        return control(sim, method, path, body)

    return call


@pytest.fixture(scope="session")
def azurite() -> Iterator[azurite_support.Azurite]:
    """Azurite on free loopback ports for the whole session, data in a temp folder."""
    running = azurite_support.start()
    try:
        yield running
    finally:
        running.stop()
