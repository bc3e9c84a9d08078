"""The flow language: call flows as JSON, validated by these models (and their JSON Schema).

A flow is a graph of named nodes with a ``start``. Each node does one thing on the call (play,
menu, collect digits, transfer, add a participant, send DTMF, mute, hold, record, hang up) and
names the node to go to next, and on failure. ``on_tone`` maps a DTMF key to a node from
anywhere in the flow (continuous DTMF, e.g. ``*`` for the operator).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

KEYS = "0123456789*#ABCD"
NodeId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
# An audio prompt's URL, which the service fetches: https, a host name (labels of letters, digits and
# dashes), an optional port, then printable ASCII without spaces or backslashes. No userinfo (it has no
# place in a host name), no http. The flows' JSON Schema states the same pattern.
AUDIO_URL_MAX = 2048
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# "$(?!\n)": the end of the text in every engine (Python's "$" also matches before a final newline).
AUDIO_URL_PATTERN = rf"^https://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?(?:[/?#][!-\[\]-~]*)?$(?!\n)"
_AUDIO_URL = re.compile(AUDIO_URL_PATTERN)


def audio_url_problem(url: str) -> str | None:
    """Why an audio prompt's URL is refused, or None."""
    if not url.startswith("https://"):
        if url.lower().startswith("http://"):
            return "audio must be an https URL, not http: the service fetches it over the internet"
        return "audio must be an https URL (https://host/file.wav)"
    if len(url) > AUDIO_URL_MAX:
        return f"audio URL is longer than {AUDIO_URL_MAX} characters"
    if not _AUDIO_URL.match(url):
        return (
            "audio must be an https URL with a host name (letters, digits, dots, dashes), an optional port "
            "(1-65535), and no credentials, spaces, backslashes or non-ASCII characters"
        )
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prompt(_Strict):
    """What the caller hears: exactly one of text (TTS), ssml, or audio (a WAV file URL).

    Text and SSML may name call variables in braces, e.g. ``"Your appointment is on {date}."``:
    they are filled from the variables given when the call was placed (or collected on it).
    """

    text: str | None = None
    voice: str | None = Field(default=None, description="Azure TTS voice name, e.g. en-US-JennyNeural")
    locale: str | None = Field(default=None, description="Source locale of the text, e.g. en-US")
    ssml: str | None = None
    audio: str | None = Field(
        default=None, max_length=AUDIO_URL_MAX, description="https URL of a 16 kHz mono WAV file (no http)"
    )

    @model_validator(mode="after")
    def _one(self) -> Prompt:
        given = [x for x in (self.text, self.ssml, self.audio) if x]
        if len(given) != 1:
            raise ValueError("a prompt has exactly one of text, ssml, audio")
        if (self.voice or self.locale) and not self.text:
            raise ValueError("voice and locale apply to text prompts only")
        problem = audio_url_problem(self.audio) if self.audio else None
        if problem:
            raise ValueError(problem)
        return self

    @property
    def uses_ai(self) -> bool:
        return bool(self.text or self.ssml)


def _keys(value: str, field: str) -> str:
    bad = [k for k in value if k not in KEYS]
    if bad:
        raise ValueError(f"{field} may only hold DTMF keys {KEYS}, not {''.join(bad)!r}")
    return value


class Target(_Strict):
    """Who to call: a phone number (+E.164) or an ACS/Teams raw id, with custom context."""

    to: str = Field(description="+E.164 phone number or raw id (8:acs:..., 8:orgid:...)")
    caller_id: str | None = Field(default=None, description="Caller id shown to a phone target (+E.164)")
    display_name: str | None = None
    sip_headers: dict[str, str] = Field(default_factory=dict, description="Custom SIP headers (X-MS-Custom-*)")
    voip_headers: dict[str, str] = Field(default_factory=dict)


class PlayNode(_Strict):
    type: Literal["play"]
    prompt: Prompt
    loop: bool = False
    next: NodeId | None = None
    on_failure: NodeId | None = None


class MenuChoice(_Strict):
    key: str | None = Field(default=None, min_length=1, max_length=1, description="DTMF key for this choice")
    phrases: list[str] = Field(default_factory=list, description="Words that pick this choice when spoken")
    label: str
    next: NodeId

    @model_validator(mode="after")
    def _some(self) -> MenuChoice:
        if self.key is not None:
            _keys(self.key, "key")
        if not self.key and not self.phrases:
            raise ValueError(f"choice {self.label!r} needs a key or phrases")
        return self


class MenuNode(_Strict):
    type: Literal["menu"]
    prompt: Prompt
    choices: list[MenuChoice] = Field(min_length=1)
    input: Literal["dtmf", "speech", "both"] = "both"
    timeout_seconds: int = Field(default=5, ge=1, le=300, description="Initial silence before no-input")
    retries: int = Field(default=2, ge=0, le=10)
    no_input_prompt: Prompt | None = None
    invalid_prompt: Prompt | None = None
    store_as: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Keep the chosen label in this call variable (e.g. for call records)",
    )
    on_failure: NodeId


class CollectDigitsNode(_Strict):
    type: Literal["collect_digits"]
    prompt: Prompt
    max_digits: int = Field(ge=1, le=60)
    stop_keys: str = "#"
    timeout_seconds: int = Field(default=5, ge=1, le=300)
    inter_digit_timeout_seconds: int = Field(default=3, ge=1, le=60)
    store_as: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    sensitive: bool = Field(
        default=False,
        description=(
            "Card numbers and the like: the recording is paused and continuous DTMF stopped while the digits are "
            "entered (on_tone keys do not act meanwhile), and only a mask of them is kept in store_as"
        ),
    )
    retries: int = Field(default=1, ge=0, le=10)
    invalid_prompt: Prompt | None = None
    next: NodeId
    on_failure: NodeId

    @model_validator(mode="after")
    def _stop(self) -> CollectDigitsNode:
        _keys(self.stop_keys, "stop_keys")
        return self


class TransferNode(_Strict):
    type: Literal["transfer"]
    target: Target
    announcement: Prompt | None = None
    on_failure: NodeId


class AddParticipantNode(_Strict):
    type: Literal["add_participant"]
    target: Target
    timeout_seconds: int = Field(default=30, ge=1, le=180)
    next: NodeId
    on_failure: NodeId


class SendDtmfNode(_Strict):
    type: Literal["send_dtmf"]
    tones: str = Field(min_length=1, max_length=18)
    to: str = Field(default="caller", description="'caller' or a participant raw id")
    next: NodeId | None = None

    @model_validator(mode="after")
    def _tones(self) -> SendDtmfNode:
        _keys(self.tones, "tones")
        return self


class MuteNode(_Strict):
    type: Literal["mute"]
    who: str = Field(default="caller", description="'caller' or a participant raw id")
    next: NodeId | None = None


class HoldNode(_Strict):
    type: Literal["hold"]
    who: str = "caller"
    music: Prompt | None = None
    next: NodeId | None = None


class UnholdNode(_Strict):
    type: Literal["unhold"]
    who: str = "caller"
    next: NodeId | None = None


class RecordNode(_Strict):
    type: Literal["record"]
    action: Literal["start", "pause", "resume", "stop"] = "start"
    announcement: Prompt | None = Field(default=None, description="Played before the recording starts")
    next: NodeId | None = None


class HangupNode(_Strict):
    """Ends the app's part of the call, after an optional prompt. ``for_everyone`` defaults to true because an
    IVR's goodbye should end the call: with false, anyone the flow brought in stays on the line with the caller."""

    type: Literal["hangup"]
    prompt: Prompt | None = Field(default=None, description="Played before hanging up")
    for_everyone: bool = Field(
        default=True,
        description=(
            "true (the default): end the call for every participant (ACS terminates the call). false: only the app "
            "leaves; participants still in the call (e.g. one an add_participant node invited) stay connected with "
            "the caller, and a call with nobody else left ends as with true"
        ),
    )


Node = Annotated[
    PlayNode
    | MenuNode
    | CollectDigitsNode
    | TransferNode
    | AddParticipantNode
    | SendDtmfNode
    | MuteNode
    | HoldNode
    | UnholdNode
    | RecordNode
    | HangupNode,
    Field(discriminator="type"),
]


def _prompts(node: object) -> list[Prompt]:
    found: list[Prompt] = []
    for name in ("prompt", "no_input_prompt", "invalid_prompt", "announcement", "music"):
        value = getattr(node, name, None)
        if isinstance(value, Prompt):
            found.append(value)
    return found


class Flow(_Strict):
    description: str = ""
    start: NodeId
    nodes: dict[NodeId, Node] = Field(min_length=1)
    on_tone: dict[str, NodeId] = Field(
        default_factory=dict, description="DTMF key -> node, from anywhere (continuous DTMF)"
    )

    def targets_of(self, node_id: str) -> list[tuple[str, str]]:
        """(field, node id) pairs a node leads to."""
        node = self.nodes[node_id]
        pairs: list[tuple[str, str]] = []
        for name in ("next", "on_failure"):
            value = getattr(node, name, None)
            if value:
                pairs.append((name, value))
        for choice in getattr(node, "choices", []) or []:
            pairs.append((f"choices[{choice.label}].next", choice.next))
        return pairs

    def check(self, name: str = "flow") -> list[str]:
        """Graph problems, each naming the flow and node: an invalid flow never reaches a caller."""
        problems: list[str] = []
        if self.start not in self.nodes:
            problems.append(f"flow {name}: start {self.start!r} is not a node")
        for node_id in self.nodes:
            for field, target in self.targets_of(node_id):
                if target not in self.nodes:
                    problems.append(f"flow {name}, node {node_id}: {field} {target!r} is not a node")
            node = self.nodes[node_id]
            if isinstance(node, MenuNode):
                keys = [c.key for c in node.choices if c.key]
                if len(keys) != len(set(keys)):
                    problems.append(f"flow {name}, node {node_id}: two choices share a key")
                if node.input == "dtmf" and any(not c.key for c in node.choices):
                    problems.append(f"flow {name}, node {node_id}: a DTMF-only menu needs a key on every choice")
                if node.input == "speech" and any(not c.phrases for c in node.choices):
                    problems.append(f"flow {name}, node {node_id}: a speech-only menu needs phrases on every choice")
        for key, target in self.on_tone.items():
            if len(key) != 1 or key not in KEYS:
                problems.append(f"flow {name}: on_tone key {key!r} is not a DTMF key")
            if target not in self.nodes:
                problems.append(f"flow {name}: on_tone[{key}] {target!r} is not a node")
        if not problems:
            reachable = self._reachable()
            for node_id in self.nodes:
                if node_id not in reachable:
                    problems.append(f"flow {name}, node {node_id}: unreachable from start or on_tone")
            problems += self._instant_loops(name)
        return problems

    def instant(self, node_id: str) -> bool:
        """Nodes that act and move on without waiting for an event from the call."""
        node = self.nodes[node_id]
        if isinstance(node, MuteNode | HoldNode | UnholdNode):
            return True
        return isinstance(node, RecordNode) and not (node.action == "start" and node.announcement)

    def _instant_loops(self, name: str) -> list[str]:
        problems: list[str] = []
        reported: set[str] = set()
        for first in self.nodes:
            path: list[str] = []
            current: str | None = first
            while current is not None and self.instant(current) and current not in path:
                path.append(current)
                current = getattr(self.nodes[current], "next", None)
            if current is not None and current in path and current not in reported:
                loop = path[path.index(current) :]
                reported.update(loop)
                problems.append(
                    f"flow {name}, node {current}: the nodes {' -> '.join(loop + [current])} finish at "
                    "once and loop forever without waiting for the caller"
                )
        return problems

    def _reachable(self) -> set[str]:
        seen: set[str] = set()
        todo = [self.start, *self.on_tone.values()]
        while todo:
            current = todo.pop()
            if current in seen or current not in self.nodes:
                continue
            seen.add(current)
            todo.extend(t for _, t in self.targets_of(current))
        return seen

    def needs_ai_services(self) -> bool:
        for node in self.nodes.values():
            if any(p.uses_ai for p in _prompts(node)):
                return True
            if isinstance(node, MenuNode) and node.input != "dtmf":
                return True
        return False


class FlowSet(RootModel[dict[NodeId, Flow]]):
    """All flows by name: the value of the FLOWS setting or FLOWS_FILE."""

    def check(self) -> list[str]:
        problems: list[str] = []
        for name, flow in self.root.items():
            problems += flow.check(name)
        return problems
