"""The app, end to end: IncomingCall through Event Grid, the IVR through callbacks, state in Azurite."""

from __future__ import annotations

import time

import pytest

from tools.apphost import start_app


@pytest.fixture(scope="module")
def app_env(azurite):
    from simulator.engine import Config
    from simulator.runner import SimulatorThread

    with SimulatorThread(config=Config()) as sim:
        app = start_app(sim, azurite.connection_string)
        try:
            yield sim, app
        finally:
            app.stop()


def place(ctl, **call):
    return ctl("POST", "/__sim/calls", {"to": "+18005550123", **call})


def wait_finished(ctl, server_call_id, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = ctl("GET", f"/__sim/calls/{server_call_id}")
        connections = summary["connections"]
        if summary["state"] == "ended" or (connections and all(c["state"] == "disconnected" for c in connections)):
            ctl("GET", "/__sim/idle?timeout=5")
            return summary
        time.sleep(0.05)
    raise AssertionError(f"call did not finish: {ctl('GET', f'/__sim/calls/{server_call_id}/timeline?format=text')}")


@pytest.fixture
def ctl(app_env):
    from tests.conftest import control

    sim, _ = app_env
    return lambda method, path, body=None: control(sim, method, path, body)


def test_caller_picks_sales_by_dtmf(app_env, ctl):
    sim, app = app_env
    call = place(ctl, **{"from": "+14255550001", "script": [{"on": "recognize", "press": "1"}]})
    wait_finished(ctl, call["serverCallId"])
    text = ctl("GET", f"/__sim/calls/{call['serverCallId']}/timeline?format=text")
    print(text)
    assert "AnswerCall [answer] -> 200" in text, text + app.logs()[-3000:]
    assert "4:+14255550001 presses 1" in text
    assert "TransferToParticipant" in text and "transfer to 4:+14255550101" in text
    assert "CallTransferAccepted -> 200" in text
