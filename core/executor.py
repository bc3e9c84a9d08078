"""Carries out the flow engine's actions on a call with the Call Automation SDK.

Operations the service makes repeatable get the action's ``Repeatability-Request-ID`` (derived
from the event that caused it) and ``Repeatability-First-Sent`` (fixed when the action was
queued): a redelivered event re-sends the same request, and the service acts once.

Every action that makes the service ring someone (``Transfer``, ``AddParticipant``) passes the dialing
policy here first (``core.destinations``), whoever asked for it: a flow (whose target may have been filled in
from a call variable just now), a sim-ring, the control API. A refused destination raises
``DestinationRefused`` (status 403: a refusal for good, which the runtime records instead of retrying), and
the service is never asked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .destinations import DEFAULT_POLICY, DestinationPolicy
from .flows.actions import (
    Action,
    AddParticipant,
    CancelAddParticipant,
    CancelMedia,
    ContinuousDtmf,
    Hangup,
    Hold,
    Mute,
    Play,
    Recognize,
    Recording,
    RemoveParticipant,
    SendDtmf,
    Transfer,
    Unhold,
)
from .flows.engine import KEY_TONES
from .flows.model import Prompt
from .identifiers import check_target
from .observability import timed

if TYPE_CHECKING:
    from azure.communication.callautomation import CallAutomationClient

log = logging.getLogger("core.executor")


def identifier(raw_id: str) -> Any:
    from azure.communication.callautomation import PhoneNumberIdentifier
    from azure.communication.callautomation._shared.models import identifier_from_raw_id

    check_target(raw_id)  # a 4: id that is no E.164 number, or no raw id at all, never reaches the service
    if raw_id.startswith("+"):
        return PhoneNumberIdentifier(raw_id)
    return identifier_from_raw_id(raw_id)


def play_source(prompt: Prompt) -> Any:
    from azure.communication.callautomation import FileSource, SsmlSource, TextSource

    if prompt.text:
        return TextSource(text=prompt.text, voice_name=prompt.voice, source_locale=prompt.locale)
    if prompt.ssml:
        return SsmlSource(ssml_text=prompt.ssml)
    return FileSource(url=prompt.audio or "")


def repeatability(action: Action) -> dict[str, Any]:
    if not action.request_id or not action.first_sent:
        return {}
    return {"headers": {"Repeatability-Request-ID": action.request_id, "Repeatability-First-Sent": action.first_sent}}


def settings_policy() -> DestinationPolicy:
    """The dialing policy of this process's settings (the safe defaults where there are none, as in a test)."""
    from .settings import SettingsError, get_settings

    try:
        return get_settings().dialing.policy
    except SettingsError:
        return DEFAULT_POLICY


def check_destination(action: Action, policy: DestinationPolicy) -> None:
    """Raise ``DestinationRefused`` if the action would ring someone the policy does not allow."""
    if isinstance(action, Transfer | AddParticipant):
        policy.check(action.target.to)


class Executor:
    def __init__(
        self,
        client: CallAutomationClient,
        *,
        callback_url: str | None = None,
        policy: DestinationPolicy | None = None,
    ) -> None:
        self.client = client
        self.callback_url = callback_url
        self._policy = policy

    @property
    def policy(self) -> DestinationPolicy:
        if self._policy is None:
            self._policy = settings_policy()
        return self._policy

    @timed("acs")
    def run(self, call_connection_id: str, server_call_id: str, action: Action) -> dict[str, str]:
        """Do one action; return what the synchronous response told (invitation or recording id)."""
        from azure.communication.callautomation import RecognitionChoice, RecognizeInputType

        check_destination(action, self.policy)  # before anything reaches the service
        conn = self.client.get_call_connection(call_connection_id)
        ctx = action.context
        rep = repeatability(action)
        cb = {"operation_callback_url": action.callback_url} if action.callback_url else {}
        if isinstance(action, Play):
            conn.play_media(
                [play_source(p) for p in action.prompts],
                play_to=[identifier(action.to)] if action.to else "all",
                loop=action.loop,
                operation_context=ctx,
                **cb,
            )
        elif isinstance(action, Recognize):
            prompts = [play_source(p) for p in action.prompts]
            common: dict[str, Any] = {
                "initial_silence_timeout": action.silence_timeout,
                "operation_context": ctx,
                "play_prompt": prompts or None,
                "interrupt_prompt": True,
                **cb,
            }
            target = identifier(action.target)
            dtmf: dict[str, Any] = {
                "dtmf_max_tones_to_collect": action.max_tones,
                "dtmf_stop_tones": [KEY_TONES[k] for k in action.stop_keys] or None,
                "dtmf_inter_tone_timeout": action.inter_tone_timeout,
            }
            if action.mode == "dtmf":
                conn.start_recognizing_media(RecognizeInputType.DTMF, target, **dtmf, **common)
            elif action.mode == "speech":
                conn.start_recognizing_media(
                    RecognizeInputType.SPEECH, target, speech_language=action.speech_language, **common
                )
            elif action.mode == "speech_or_dtmf":
                conn.start_recognizing_media(
                    RecognizeInputType.SPEECH_OR_DTMF, target, speech_language=action.speech_language, **dtmf, **common
                )
            else:
                choices = [
                    RecognitionChoice(
                        label=str(c["label"]),
                        phrases=list(c.get("phrases") or []),  # type: ignore[arg-type]
                        tone=KEY_TONES[str(c["key"])] if c.get("key") else None,
                    )
                    for c in action.choices
                ]
                conn.start_recognizing_media(RecognizeInputType.CHOICES, target, choices=choices, **common)
        elif isinstance(action, Transfer):
            t = action.target
            conn.transfer_call_to_participant(
                identifier(t.to),
                operation_context=ctx,
                sip_headers=t.sip_headers or None,
                voip_headers=t.voip_headers or None,
                transferee=identifier(action.transferee) if action.transferee else None,
                source_caller_id_number=identifier(t.caller_id) if t.caller_id else None,
                **rep,
                **cb,
            )
        elif isinstance(action, AddParticipant):
            t = action.target
            result = conn.add_participant(
                identifier(t.to),
                invitation_timeout=action.timeout_seconds,
                operation_context=ctx,
                source_caller_id_number=identifier(t.caller_id) if t.caller_id else None,
                source_display_name=t.display_name,
                sip_headers=t.sip_headers or None,
                voip_headers=t.voip_headers or None,
                **rep,
                **cb,
            )
            return {"invitation_id": result.invitation_id or ""}
        elif isinstance(action, CancelAddParticipant):
            conn.cancel_add_participant_operation(action.invitation_id, operation_context=ctx, **rep, **cb)
        elif isinstance(action, RemoveParticipant):
            conn.remove_participant(identifier(action.who), operation_context=ctx, **rep, **cb)
        elif isinstance(action, SendDtmf):
            conn.send_dtmf_tones(
                [KEY_TONES[k] for k in action.tones], identifier(action.to), operation_context=ctx, **rep, **cb
            )
        elif isinstance(action, Mute):
            conn.mute_participant(identifier(action.who), operation_context=ctx, **rep)
        elif isinstance(action, Hold):
            conn.hold(
                identifier(action.who),
                play_source=play_source(action.music) if action.music else None,
                operation_context=ctx,
                **cb,
            )
        elif isinstance(action, Unhold):
            conn.unhold(identifier(action.who), operation_context=ctx, **cb)
        elif isinstance(action, ContinuousDtmf):
            if action.start:
                # The SDK takes no operation callback for start; its tones go to the call's callback.
                conn.start_continuous_dtmf_recognition(identifier(action.who), operation_context=ctx)
            else:
                conn.stop_continuous_dtmf_recognition(identifier(action.who), operation_context=ctx, **cb)
        elif isinstance(action, Recording):
            return self._recording(server_call_id, action, rep)
        elif isinstance(action, CancelMedia):
            conn.cancel_all_media_operations()
        elif isinstance(action, Hangup):
            conn.hang_up(is_for_everyone=action.for_everyone, **(rep if action.for_everyone else {}))
        else:  # pragma: no cover - the Action union is closed
            raise TypeError(f"unknown action {action!r}")
        return {}

    def _recording(self, server_call_id: str, action: Recording, rep: dict[str, Any]) -> dict[str, str]:
        from azure.communication.callautomation import AzureBlobContainerRecordingStorage, ChannelAffinity

        if action.op == "start":
            props = self.client.start_recording(
                server_call_id=server_call_id,
                recording_content_type=action.content,
                recording_channel_type=action.channel,
                recording_format_type=action.format,
                # Channel affinity: each known party keeps the same channel in every recording (the caller: 0).
                channel_affinity=[
                    ChannelAffinity(target_participant=identifier(r), channel=i)
                    for i, r in enumerate(action.channel_order)
                ]
                or None
                if action.channel == "unmixed"
                else None,
                pause_on_start=action.pause_on_start or None,
                recording_storage=AzureBlobContainerRecordingStorage(action.container_url)
                if action.container_url
                else None,
                recording_state_callback_url=action.callback_url,
                **rep,
            )
            return {"recording_id": props.recording_id or "", "recording_state": str(props.recording_state or "")}
        if not action.recording_id:
            return {}
        if action.op == "pause":
            self.client.pause_recording(action.recording_id)
        elif action.op == "resume":
            self.client.resume_recording(action.recording_id)
        else:
            self.client.stop_recording(action.recording_id)
        return {}
