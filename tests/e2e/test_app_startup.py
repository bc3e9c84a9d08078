"""Under a Functions host, bad settings or an invalid flow stop the app from starting, with a message
that names the setting or the flow and node."""

from __future__ import annotations

import json

import pytest

from simulator.engine import Config
from simulator.runner import SimulatorThread
from tools.apphost import start_app


@pytest.fixture(scope="module")
def sim():
    with SimulatorThread(config=Config()) as running:
        yield running


def refused(sim, azurite, **settings) -> str:
    with pytest.raises(RuntimeError) as info:
        app = start_app(sim, azurite.connection_string, subscribe=False, timeout=20, **settings)
        app.stop()
    return str(info.value)


def test_an_invalid_flow_stops_start_up_naming_the_node(sim, azurite):
    flows = json.load(open("flows/default.json"))
    flows["customer_service"]["nodes"]["main_menu"]["choices"][0]["next"] = "salse"
    message = refused(sim, azurite, flows=flows)
    assert "the host exited with" in message
    assert "flow customer_service, node main_menu: choices[sales].next 'salse' is not a node" in message


def test_a_malformed_setting_stops_start_up_naming_it(sim, azurite):
    message = refused(sim, azurite, CALLBACK_SECRET="c2hvcnQ=")
    assert "setting CALLBACK_SECRET: must decode to at least 32 bytes" in message


def test_a_rule_into_an_unknown_flow_stops_start_up(sim, azurite):
    routing = {"rules": [], "default": {"type": "answer", "flow": "nope"}}
    message = refused(sim, azurite, routing=routing)
    assert "answers into unknown flow 'nope'" in message
