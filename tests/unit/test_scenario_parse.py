"""Scenario files are checked before anything runs, and errors name the faulty entry."""

import pytest
import yaml

from simulator.scenario import ScenarioError, parse


def test_demo_scenario_parses():
    with open("scenarios/demo.yaml") as fh:
        scenario = parse(yaml.safe_load(fh))
    assert [c.name for c in scenario.calls][0] == "caller picks sales by DTMF"
    assert scenario.calls[0].behaviour.script[0].on == "recognize"  # YAML's bare `on:` is read as True
    assert scenario.calls[-1].parties["4:+14255550101"].answer == "decline"  # this call's own agent declines


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"calls": [{"to": "+1"}]}, "calls[0]: 'from' and 'to' are required"),
        ({"calls": [{"from": "+1", "to": "+2", "script": [{"on": "dance"}]}]}, "calls[0]: step trigger"),
        ({"calls": [{"from": "+1", "to": "+2", "script": [{"press": "1x"}]}]}, "not a DTMF key"),
        ({"calls": [{"from": "+1", "to": "+2", "script": [{"press": "1", "hangup": True}]}]}, "does one thing"),
        ({"parties": {"+1": {"answer": "maybe"}}}, "parties[+1]: answer must be"),
        ({"faults": [{"kind": "request", "status": 418}]}, "faults[0]"),
        ({"eventgrid": [{}]}, "eventgrid[0]: an endpoint is required"),
        ({"settings": {"speed": 2}}, "settings: unknown keys ['speed']"),
        ({"callz": []}, "unknown top-level keys"),
    ],
)
def test_invalid_scenarios_name_the_entry(data, fragment):
    with pytest.raises(ScenarioError) as info:
        parse(data)
    assert fragment in str(info.value)
