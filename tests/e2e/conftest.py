"""Fixtures for end-to-end tests of the app: the simulator, Azurite and the app under the local host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from simulator.engine import Config
from simulator.runner import RunningSimulator, SimulatorThread
from tests.conftest import control
from tools.apphost import AppProcess, start_app


class AppStack:
    """The simulator (in a thread), the app (its own process) and helpers to drive calls."""

    def __init__(self, sim: RunningSimulator, app: AppProcess) -> None:
        self.sim = sim
        self.app = app

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        return control(self.sim, method, path, body)

    def place(self, **call: Any) -> dict[str, Any]:
        return self.ctl("POST", "/__sim/calls", {"to": "+18005550123", **call})

    def timeline(self, call_id: str) -> str:
        return self.ctl("GET", f"/__sim/calls/{call_id}/timeline?format=text")

    def entries(self, call_id: str) -> list[dict[str, Any]]:
        return self.ctl("GET", f"/__sim/calls/{call_id}/timeline")

    def requests(self, call_id: str, operation: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries(call_id)
            if e["kind"] == "request" and (operation is None or e["operation"] == operation)
        ]

    def summary(self, call_id: str) -> dict[str, Any]:
        return self.ctl("GET", f"/__sim/calls/{call_id}")

    def wait_finished(self, call_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Until the call ended or the app's leg left it, and every event is delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            summary = self.summary(call_id)
            connections = summary["connections"]
            if summary["state"] == "ended" or (connections and all(c["state"] == "disconnected" for c in connections)):
                self.ctl("GET", "/__sim/idle?timeout=5")
                return summary
            time.sleep(0.05)
        raise AssertionError(f"call did not finish in {timeout}s:\n{self.timeline(call_id)}\n{self.app.logs()[-4000:]}")

    def wait_for(self, call_id: str, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            timeline = self.timeline(call_id)
            if text in timeline:
                return timeline
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in timeline:\n{self.timeline(call_id)}\n{self.app.logs()[-4000:]}")

    def connection_id(self, call_id: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            connections = self.summary(call_id)["connections"]
            if connections:
                return connections[0]["callConnectionId"]
            time.sleep(0.05)
        raise AssertionError("the app never answered")


def _stack(azurite: Any, **app_kwargs: Any) -> Iterator[AppStack]:
    with SimulatorThread(config=Config()) as sim:
        app = start_app(sim, azurite.connection_string, **app_kwargs)
        try:
            yield AppStack(sim, app)
        finally:
            app.stop()


@pytest.fixture(scope="module")
def stack(azurite: Any) -> Iterator[AppStack]:
    """The default app (customer-service flow, default routing rules), shared by a module's tests."""
    yield from _stack(azurite)


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").ctl("DELETE", "/__sim/faults")
