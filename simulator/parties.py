"""Scripted parties: the callers and agents on the far end of a simulated call.

A party's script is a list of steps taken in order. Each step waits for its trigger (a prompt
played to the party, a recognize aimed at it, continuous DTMF being switched on, the call
connecting, or a time since it joined) and then presses tones, says something, stays silent or
hangs up. When the head step does not match what the app asks, the party stays silent, as a
real caller who did not hear what they expected would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TONES = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "*": "asterisk",
    "#": "pound",
    "A": "a",
    "B": "b",
    "C": "c",
    "D": "d",
}
TONE_CHARS = {v: k for k, v in TONES.items()}
TRIGGERS = {"recognize", "play", "connected", "continuous_dtmf", "time", "hold"}
ANSWERS = {"accept", "decline", "no_answer", "busy"}


def tones_of(keys: str) -> list[str]:
    try:
        return [TONES[k.upper() if k.isalpha() else k] for k in keys]
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]!r} is not a DTMF key (0-9, *, #, A-D)") from None


@dataclass
class Step:
    on: str = "recognize"
    match: str | None = None
    press: str | None = None
    say: str | None = None
    silence: bool = False
    hangup: bool = False
    delay: float = 0.0
    after: float | None = None

    def matches(self, trigger: str, text: str) -> bool:
        if self.on != trigger:
            return False
        return self.match is None or self.match.lower() in text.lower()

    def describe(self) -> str:
        if self.hangup:
            return "hangs up"
        if self.press:
            return f"presses {self.press}"
        if self.say:
            return f"says {self.say!r}"
        return "stays silent"


@dataclass
class Behaviour:
    answer: str = "accept"
    delay: float = 0.05
    display_name: str | None = None
    script: list[Step] = field(default_factory=list)


def parse_step(data: dict[str, Any]) -> Step:
    """One script step (docs/simulator.md): a trigger, an optional match, and one thing to do."""
    if not isinstance(data, dict):
        raise ValueError(f"a script step is a mapping such as {{on: recognize, press: '1'}}, not {data!r}")
    # YAML 1.1 reads a bare ``on:`` key as the boolean True.
    data = {("on" if key is True else key): value for key, value in data.items()}
    unknown = set(data) - {"on", "match", "press", "say", "silence", "hangup", "delay", "after"}
    if unknown:
        raise ValueError(
            f"unknown step keys: {sorted(unknown)} (known: on, match, press, say, silence, hangup, delay, after)"
        )
    step = Step(
        on=str(data.get("on", "time" if "after" in data else "recognize")),
        match=data.get("match"),
        press=str(data["press"]) if data.get("press") is not None else None,
        say=data.get("say"),
        silence=bool(data.get("silence", False)),
        hangup=bool(data.get("hangup", False)),
        delay=float(data.get("delay", 0.0)),
        after=float(data["after"]) if data.get("after") is not None else None,
    )
    if step.on not in TRIGGERS:
        raise ValueError(f"step trigger 'on' must be one of {sorted(TRIGGERS)}, not {step.on!r}")
    if step.on == "time" and step.after is None:
        raise ValueError("a step 'on: time' needs 'after' (seconds)")
    if step.press:
        tones_of(step.press)
    if sum(bool(x) for x in (step.press, step.say, step.silence, step.hangup)) > 1:
        raise ValueError("a step does one thing: press, say, silence or hangup")
    return step


BEHAVIOUR_KEYS = {"answer", "delay", "display_name", "script"}


def parse_behaviour(data: dict[str, Any]) -> Behaviour:
    """A party's answer and script (docs/simulator.md); a key it does not know is an error, not a silent default."""
    if not isinstance(data, dict):
        raise ValueError(f"a party is a mapping of {sorted(BEHAVIOUR_KEYS)}, not {data!r}")
    unknown = set(data) - BEHAVIOUR_KEYS
    if unknown:
        raise ValueError(f"unknown party keys: {sorted(unknown)} (known: {sorted(BEHAVIOUR_KEYS)})")
    answer = data.get("answer", "accept")
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {sorted(ANSWERS)}, not {answer!r}")
    return Behaviour(
        answer=answer,
        delay=float(data.get("delay", 0.05)),
        display_name=data.get("display_name"),
        script=[parse_step(s) for s in data.get("script", [])],
    )
