"""The simulated service: calls, connections, participants, media, recordings, and their events.

Each public ``op_*`` coroutine is one REST operation: it validates the request as the service
does, changes state, answers at once, and schedules the events that follow (in the order ACS
sends them) as tasks. Everything runs on one asyncio loop, so state needs no locks.

``Engine`` is composed of one mixin per section of the service, each in its own module:

- ``model``: the state (``Config``, ``ServerCall``, ``Connection``, ...); ``base``: tasks and request checks
- ``events``: mid-call events and Event Grid events, shaped as ACS shapes them
- ``incoming``: ring, answer, redirect, reject; ``connections``: create, connect, group calls, ringing
- ``lifecycle``: hang up, terminate, a party leaving, a call ending
- ``transfer``; ``participants``: add (and cancel), remove, mute, list, get
- ``media``: play, the media queue, cancel, hold; ``recognize``; ``dtmf``: continuous DTMF, send tones
- ``script``: scripted parties pressing, speaking and hanging up
- ``recordings``: start, pause, resume, stop; ``recording_files``: the chunks and where they are
"""

from __future__ import annotations

from .connections import Connections
from .dtmf import Dtmf
from .events import EVENT_PREFIX
from .incoming import IncomingCalls
from .lifecycle import Lifecycle
from .model import Config, Connection, Invite, MediaOp, Offer, Participant, Recording, ServerCall, now_iso
from .participants import Participants
from .recognize import VALID_TONES, Recognize
from .recordings import Recordings
from .script import Script
from .transfer import Transfer

__all__ = [
    "EVENT_PREFIX",
    "VALID_TONES",
    "Config",
    "Connection",
    "Engine",
    "Invite",
    "MediaOp",
    "Offer",
    "Participant",
    "Recording",
    "ServerCall",
    "now_iso",
]


class Engine(IncomingCalls, Connections, Lifecycle, Transfer, Participants, Recognize, Dtmf, Script, Recordings):
    """The whole service: one instance per simulator, built with ``Engine(config, delivery, faults)``."""
