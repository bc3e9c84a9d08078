"""The test template: keeps a flow of your own tested in your CI, the way it runs (no mocks).

Copy this file into your tests (e.g. tests/test_my_flows.py), point FLOWS, ROUTING and SCENARIO at your files, and
rewrite the tests for your flow (docs/your-own-flow.md). Each run starts Azurite, the ACS simulator and the app under
the local Functions host (tools/flowtest.py) with your flows and routing rules, plays scripted callers, and checks
what each heard, pressed and where the call went. Run it with ``.venv/bin/python -m pytest path/to/this_file.py``
(``make test`` runs this one). Needs ``make setup`` (Python 3.13 venv, Azurite from npm), nothing in Azure.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "function_app.py").is_file())  # the repository
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.flowtest import FlowStack, ScenarioResult  # noqa: E402

# Your flows, rules and callers, relative to the repository root, as bin/run-scenario takes them. Keep
# flows/default.json while your rules still answer into its flows (here the default rule's customer_service).
FLOWS = "flows/default.json;examples/your-flow/flows"
ROUTING = "examples/your-flow/routing.json"
SCENARIO = "examples/your-flow/scenario.yaml"

ORDER_LINE = "+18005550199"  # the number routing.json answers into order_status
AGENT = "+14255550150"  # order_status's "agent" transfer target
OPERATOR = "+14255550100"  # order_status's "operator" transfer target


@pytest.fixture(scope="module")
def stack() -> Iterator[FlowStack]:
    """One app with your flows and rules for this module's tests (the app refusing to start fails them all)."""
    with FlowStack(flows=FLOWS, routing=ROUTING, base=ROOT) as running:
        yield running


@pytest.fixture(scope="module")
def calls(stack: FlowStack) -> ScenarioResult:
    """The scenario file's callers, played once."""
    result = stack.play(SCENARIO)  # relative to the stack's base (ROOT)
    assert result.all_finished, "\n\n".join(c.timeline for c in result if not c.finished)
    return result


def test_caller_hears_their_order_status(calls: ScenarioResult) -> None:
    call = calls["caller checks an order"]
    call.assert_heard("For your order status, press 1", "order number", "Order 123456 has shipped")
    assert call.recognized == ["1", "123456"]  # the menu's key, then the digits without the closing '#'
    assert call.variables["order_number"] == "123456"
    call.assert_visited("menu", "order_number", "status")
    assert call.transfers == []
    call.assert_ended_by("app")


def test_two_reaches_the_agent(calls: ScenarioResult) -> None:
    call = calls["caller asks for an agent"]
    call.assert_heard("Connecting you to an agent")
    call.assert_transferred_to(AGENT)
    call.assert_not_heard("order number")
    call.assert_ended_by("transfer")


def test_a_wrong_key_does_not_reach_the_agent(calls: ScenarioResult) -> None:
    call = calls["caller presses a wrong key twice"]
    call.assert_heard("not one of the choices")
    call.assert_not_transferred_to(AGENT)
    call.assert_transferred_to(OPERATOR)
    call.assert_not_visited("agent", "order_number")


def test_silence_reaches_the_operator(stack: FlowStack) -> None:
    # A scenario can also be written in the test, in the scenario file's shape.
    result = stack.play(
        {
            "parties": {OPERATOR: {"answer": "accept", "script": [{"after": 0.3, "hangup": True}]}},
            "calls": [{"name": "silent caller", "from": "+14255550034", "to": ORDER_LINE, "script": []}],
        }
    )
    call = result["silent caller"]
    call.assert_heard("I did not hear a choice")
    assert call.failed_recognitions == 2  # the first try and one retry ("retries": 1)
    call.assert_transferred_to(OPERATOR)


def test_other_numbers_keep_the_shipped_menu(stack: FlowStack) -> None:
    result = stack.play(
        {
            "parties": {"+14255550101": {"answer": "accept", "script": [{"after": 0.3, "hangup": True}]}},
            "calls": [
                {
                    "name": "sales caller",
                    "from": "+14255550035",
                    "to": "+18005550123",
                    "script": [{"on": "recognize", "press": "1"}],
                }
            ],
        }
    )
    call = result["sales caller"]
    call.assert_heard("Thank you for calling Contoso")
    call.assert_not_heard("Contoso orders")
    call.assert_transferred_to("+14255550101")
