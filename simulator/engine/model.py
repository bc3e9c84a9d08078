"""The simulated service's state: its settings, calls, connections, participants, media operations and recordings.

Plain data with no behaviour beyond reading itself, so every section of the engine shares one picture of a call.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..identifiers import model_of
from ..parties import Behaviour, Step
from ..recording import Document
from ..timeline import Timeline


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Config:
    base_url: str = "http://127.0.0.1:0"
    recording_base_url: str = ""
    resource_id: str = "00000000-0000-4000-8000-000000000001"
    time_scale: float = 0.01  # service-side seconds (timeouts) are multiplied by this
    prompt_seconds: float = 0.05  # how long one prompt plays (wall clock)
    tone_seconds: float = 0.01
    ring_timeout: float = 30.0  # seconds an incoming call rings before the caller gives up
    require_https_callbacks: bool = False
    recording_dir: str = ""
    recording_seconds: float | None = None  # fixed audio length per chunk, else from the call
    recording_bytes: int | None = None  # fixed file size per chunk (benchmarks)
    recording_chunks: int = 1
    max_recording_seconds: float = 20.0
    topic: str = (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sim/providers/"
        "Microsoft.Communication/communicationServices/sim"
    )

    def scaled(self, seconds: float) -> float:
        return max(seconds * self.time_scale, 0.0)


@dataclass
class Participant:
    raw_id: str
    behaviour: Behaviour
    role: str = "participant"
    is_muted: bool = False
    is_on_hold: bool = False
    joined_at: float = field(default_factory=time.monotonic)
    script_pos: int = 0

    def model(self) -> dict[str, Any]:
        return {"identifier": model_of(self.raw_id), "isMuted": self.is_muted, "isOnHold": self.is_on_hold}

    def next_step(self, trigger: str, text: str) -> Step | None:
        """The head of the script, taken if it answers this trigger."""
        script = self.behaviour.script
        while self.script_pos < len(script) and script[self.script_pos].on == "time":
            # Timed steps run on their own clock; they do not block the reactive ones.
            self.script_pos += 1
        if self.script_pos < len(script) and script[self.script_pos].matches(trigger, text):
            self.script_pos += 1
            return script[self.script_pos - 1]
        return None


@dataclass
class MediaOp:
    kind: str  # play | recognize
    connection: Connection
    request: dict[str, Any]
    context: str | None
    callback_uri: str
    targets: list[str]
    task: asyncio.Task[None] | None = None
    done: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    input: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)


@dataclass
class Invite:
    invitation_id: str
    raw_id: str
    context: str | None
    callback_uri: str
    state: str = "pending"  # pending | accepted | failed | canceled
    task: asyncio.Task[None] | None = None


@dataclass
class Connection:
    id: str
    call: ServerCall
    callback_uri: str
    context: str | None
    cognitive_endpoint: str | None
    state: str = "connecting"
    source: str | None = None
    source_caller_id: str | None = None
    source_display_name: str | None = None
    targets: list[str] = field(default_factory=list)
    answered_by: str | None = None
    answered_for: str | None = None  # the PSTN number an inbound call was placed to
    media_queue: list[MediaOp] = field(default_factory=list)
    media_current: MediaOp | None = None
    continuous_dtmf: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    dtmf_sequence: itertools.count = field(default_factory=lambda: itertools.count(1))
    update_sequence: itertools.count = field(default_factory=lambda: itertools.count(1))
    invites: dict[str, Invite] = field(default_factory=dict)

    def properties(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "callConnectionId": self.id,
            "serverCallId": self.call.id,
            "targets": [model_of(t) for t in self.targets],
            "callConnectionState": self.state,
            "callbackUri": self.callback_uri,
            "correlationId": self.call.correlation_id,
        }
        if self.source:
            body["source"] = model_of(self.source)
        if self.source_caller_id:
            body["sourceCallerIdNumber"] = {"value": self.source_caller_id}
        if self.source_display_name:
            body["sourceDisplayName"] = self.source_display_name
        if self.answered_by:
            body["answeredBy"] = model_of(self.answered_by)["communicationUser"]
        if self.answered_for:
            body["answeredFor"] = model_of(self.answered_for)["phoneNumber"]
        return body


@dataclass
class ServerCall:
    id: str
    correlation_id: str
    timeline: Timeline
    participants: dict[str, Participant] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    state: str = "ringing"  # ringing | established | ended
    started_by: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    group_call_id: str | None = None
    room_id: str | None = None
    recordings: list[Recording] = field(default_factory=list)
    outcome: str = ""
    ever_joined: list[str] = field(default_factory=list)
    parties: dict[str, Behaviour] = field(default_factory=dict)  # this call's own scripted parties

    def live_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.state in ("connecting", "connected", "transferring")]


@dataclass
class Offer:
    context: str
    call: ServerCall
    caller: str
    callee: str
    created: float
    ttl: float
    used_by: str | None = None


@dataclass
class Recording:
    id: str
    call: ServerCall
    content_type: str
    channel_type: str
    format_type: str
    callback_uri: str | None
    ordering: list[str]
    affinity: dict[str, int]
    state: str = "active"
    started_iso: str = field(default_factory=now_iso)
    intervals: list[list[float]] = field(default_factory=list)
    stopped: bool = False
    documents: list[Document] = field(default_factory=list)
    external_storage: dict[str, Any] | None = None

    def active_seconds(self) -> float:
        end = time.monotonic()
        return sum((b if b is not None else end) - a for a, b in self.intervals)


def new_server_call_id() -> str:
    """As ACS's: standard base64 (so ``/`` and ``+`` occur) of a conversation URL with a query. Every id here holds
    a ``/``, so every test meets what a real id sometimes holds: a client must send it as ``%2F`` in a path, and
    storage keys and blob names built from it must cope."""
    conversation = f"https://conv-sim-01.conv.skype.com/conv/{uuid.uuid4().hex}"
    for pad in range(3):  # a "?" at a third byte encodes to "/" (its low six bits are all ones)
        raw = f"{conversation}{'x' * pad}?i={uuid.uuid4().int % 100}&e=~".encode()
        encoded = base64.b64encode(raw).decode()
        if "/" in encoded:
            return encoded.rstrip("=")
    raise AssertionError("unreachable: one of three alignments puts the '?' at a third byte")


def new_connection_id() -> str:
    return f"{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:4]}-sim-{uuid.uuid4().hex[:12]}"


def new_recording_id(server_call_id: str) -> str:
    raw = json.dumps({"PlatformEndpointId": str(uuid.uuid4()), "ResourceSpecificId": server_call_id[:16]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_incoming_context(server_call_id: str) -> str:
    """An opaque token shaped like ACS's (a JWT), so apps that peek at it see the same form."""
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    claims = (
        base64.urlsafe_b64encode(json.dumps({"cc": server_call_id, "n": uuid.uuid4().hex}).encode())
        .decode()
        .rstrip("=")
    )
    return f"{header}.{claims}."


def short(text: str, limit: int = 70) -> str:
    """One line of at most ``limit`` characters, for timelines people read."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
