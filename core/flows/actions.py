"""What the flow engine asks to be done on a call: plain data, carried out by the executor (one method per ``kind``).

Keeping actions as data lets the engine be a pure function (state, event) -> (state, actions),
tested without the SDK, and lets the ledger (``core.calls.ledger``) store pending actions with the state so an
action interrupted by a crash is carried out on redelivery instead of being lost.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from .model import Prompt, Target


class _Action(BaseModel):
    context: str | None = None
    done: bool = False
    # Set when the action is queued: the service sees a repeat of this action as the same request.
    request_id: str | None = None
    first_sent: str | None = None
    origin: str | None = None  # id of the event whose handling queued this action
    error: str | None = None  # set when the service refused it for good
    callback_url: str | None = None  # operationCallbackUri, where the service supports one


class Play(_Action):
    kind: Literal["play"] = "play"
    prompts: list[Prompt]
    loop: bool = False
    to: str | None = None  # raw id; None plays to everyone


class Recognize(_Action):
    kind: Literal["recognize"] = "recognize"
    mode: Literal["choices", "dtmf", "speech", "speech_or_dtmf"]
    target: str
    prompts: list[Prompt] = Field(default_factory=list)
    choices: list[dict[str, object]] = Field(default_factory=list)  # {label, phrases, key}
    max_tones: int = 1
    stop_keys: str = ""
    silence_timeout: int = 5
    inter_tone_timeout: int = 3
    speech_language: str | None = None


class Transfer(_Action):
    kind: Literal["transfer"] = "transfer"
    target: Target
    transferee: str | None = None


class AddParticipant(_Action):
    kind: Literal["add_participant"] = "add_participant"
    target: Target
    timeout_seconds: int = 30


class CancelAddParticipant(_Action):
    kind: Literal["cancel_add_participant"] = "cancel_add_participant"
    invitation_id: str


class RemoveParticipant(_Action):
    kind: Literal["remove_participant"] = "remove_participant"
    who: str


class SendDtmf(_Action):
    kind: Literal["send_dtmf"] = "send_dtmf"
    tones: str
    to: str


class Mute(_Action):
    kind: Literal["mute"] = "mute"
    who: str


class Hold(_Action):
    kind: Literal["hold"] = "hold"
    who: str
    music: Prompt | None = None


class Unhold(_Action):
    kind: Literal["unhold"] = "unhold"
    who: str


class ContinuousDtmf(_Action):
    kind: Literal["continuous_dtmf"] = "continuous_dtmf"
    who: str
    start: bool = True


class Recording(_Action):
    kind: Literal["recording"] = "recording"
    op: Literal["start", "pause", "resume", "stop"]
    recording_id: str | None = None
    channel: str = "unmixed"
    content: str = "audio"
    format: str = "wav"
    channel_order: list[str] = Field(default_factory=list)  # raw ids pinned to channels 0, 1, ... (unmixed)
    pause_on_start: bool = False
    container_url: str | None = None  # bring your own storage: ACS writes the files into this container


class CancelMedia(_Action):
    kind: Literal["cancel_media"] = "cancel_media"


class Hangup(_Action):
    kind: Literal["hangup"] = "hangup"
    for_everyone: bool = True


Action = Annotated[
    Play
    | Recognize
    | Transfer
    | AddParticipant
    | CancelAddParticipant
    | RemoveParticipant
    | SendDtmf
    | Mute
    | Hold
    | Unhold
    | ContinuousDtmf
    | Recording
    | CancelMedia
    | Hangup,
    Field(discriminator="kind"),
]
