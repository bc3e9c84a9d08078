"""The caller-scripting vocabulary is the documented one (docs/simulator.md): a mistyped key is refused with the
known ones named, instead of being ignored (a party told to 'anwser: decline' would silently accept)."""

import pytest

from simulator.parties import parse_behaviour
from simulator.scenario import ScenarioError, parse


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"calls": [{"from": "+1", "to": "+2", "scrpit": []}]}, "calls[0]: unknown keys ['scrpit']"),
        ({"calls": [{"from": "+1", "to": "+2", "members": ["+3"]}]}, "unknown keys ['members']"),
        ({"parties": {"+1": {"anwser": "decline"}}}, "parties[+1]: unknown party keys: ['anwser']"),
        ({"calls": [{"from": "+1", "to": "+2", "parties": {"+3": {"answer": "busy", "after": 1}}}]}, "['after']"),
        ({"calls": [{"from": "+1", "to": "+2", "script": [{"on": "recognize", "keys": "1"}]}]}, "['keys']"),
        ({"calls": [{"from": "+1", "to": "+2", "script": ["press 1"]}]}, "a script step is a mapping"),
        ({"parties": {"+1": "decline"}}, "a party is a mapping"),
    ],
)
def test_a_mistyped_key_is_refused_naming_it(data, fragment):
    with pytest.raises(ScenarioError) as info:
        parse(data)
    assert fragment in str(info.value)


def test_every_documented_key_is_read():
    scenario = parse(
        {
            "settings": {"time_scale": 0.01, "prompt_seconds": 0.05, "tone_seconds": 0.01, "ring_timeout": 30},
            "parties": {"+14255550150": {"answer": "accept", "delay": 0.1, "display_name": "Agent",
                                         "script": [{"after": 0.5, "hangup": True}]}},
            "calls": [
                {
                    "name": "n",
                    "from": "+14255550031",
                    "to": "+18005550199",
                    "at": 0.2,
                    "display_name": "Caller",
                    "custom_context": {"sipHeaders": {"X-MS-Custom-Account": "42"}},
                    "ring_timeout": 5,
                    "parties": {"+14255550100": {"answer": "no_answer"}},
                    "script": [
                        {"on": "recognize", "match": "order", "press": "1", "delay": 0.1},
                        {"on": "recognize", "silence": True},
                        {"on": "play", "match": "goodbye", "say": "thanks"},
                        {"on": "time", "after": 5, "hangup": True},
                    ],
                }
            ],
        }
    )
    call = scenario.calls[0]
    assert (call.at, call.display_name, call.ring_timeout) == (0.2, "Caller", 5)
    assert [s.on for s in call.behaviour.script] == ["recognize", "recognize", "play", "time"]
    assert scenario.parties["4:+14255550150"].script[0].on == "time"  # 'after' alone means on: time
    assert parse_behaviour({"answer": "busy"}).answer == "busy"
