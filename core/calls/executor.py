"""Every request to Call Automation: one method per action kind, and one per operation that sets a call up.

Why one place: the dialing policy and the repeatability headers then apply to every request, whoever asks for it. An
action that rings someone (transfer, add participant: a flow's, a sim-ring's, the control API's) passes the policy
first (``core.outbound.destinations``): a refused destination raises ``DestinationRefused`` (403, a refusal for good
that the ledger records instead of retrying) and the service is never asked. Repeatable operations carry the
action's ``Repeatability-*`` headers (``core.calls.repeatability``): a redelivered event re-sends the same request,
and the service acts once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.calls.identifiers import check_target
from core.calls.repeatability import REPEATABILITY_WINDOW, repeatability
from core.flows import actions as act
from core.flows.engine import KEY_TONES
from core.flows.model import Prompt
from core.outbound.destinations import DEFAULT_POLICY, DestinationPolicy
from core.platform.observability import timed

if TYPE_CHECKING:
    from azure.communication.callautomation import CallAutomationClient

PERMANENT_STATUSES = {400, 403, 404, 409, 412}
RINGING_KINDS = ("transfer", "add_participant")  # actions that make the service ring someone: the policy applies
Result = dict[str, str]  # what a synchronous response told (an invitation id, a recording id)
Repeat = tuple[str, datetime | str]  # a set-up request's repeatability: its id, and when it was first sent


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


def is_permanent(exc: Exception) -> bool:
    """The service refused the request for good (the call ended, the participant left...)."""
    status = getattr(exc, "status_code", None)
    return status in PERMANENT_STATUSES


def action_repeatability(action: act.Action) -> dict[str, Any]:
    """The action's repeatability headers (kept however late it is sent again, as it always was)."""
    return repeatability(action.request_id, action.first_sent)


def operation_callback(action: act.Action) -> dict[str, Any]:
    """Where the service sends the action's events, when not to the call's callback."""
    return {"operation_callback_url": action.callback_url} if action.callback_url else {}


def check_destination(action: act.Action, policy: DestinationPolicy) -> None:
    """Raise ``DestinationRefused`` if the action would ring someone the policy does not allow."""
    if action.kind in RINGING_KINDS:
        policy.check(action.target.to)  # type: ignore[union-attr]


class Executor:
    def __init__(self, client: CallAutomationClient, *, policy: DestinationPolicy | None = None) -> None:
        self.client = client
        self.policy = policy or DEFAULT_POLICY  # the app's comes from its settings (core.services.build)
        # One method per action kind: (the call's connection, the action, its server call id) -> result or None.
        self._actions: dict[str, Callable[[Any, Any, str], Result | None]] = {
            "play": self._play,
            "recognize": self._recognize,
            "transfer": self._transfer,
            "add_participant": self._add_participant,
            "cancel_add_participant": self._cancel_add_participant,
            "remove_participant": self._remove_participant,
            "send_dtmf": self._send_dtmf,
            "mute": self._mute,
            "hold": self._hold,
            "unhold": self._unhold,
            "continuous_dtmf": self._continuous_dtmf,
            "recording": self._recording,
            "cancel_media": self._cancel_media,
            "hangup": self._hangup,
        }

    # -- actions on a call -----------------------------------------------------------------------------------

    @timed("acs")
    def run(self, call_connection_id: str, server_call_id: str, action: act.Action) -> Result:
        """Do one action; return what the synchronous response told (invitation or recording id)."""
        check_destination(action, self.policy)  # before anything reaches the service
        connection = self.client.get_call_connection(call_connection_id)
        return self._actions[action.kind](connection, action, server_call_id) or {}

    def _play(self, connection: Any, action: act.Play, _: str) -> None:
        connection.play_media(
            [play_source(p) for p in action.prompts],
            play_to=[identifier(action.to)] if action.to else "all",
            loop=action.loop,
            operation_context=action.context,
            **operation_callback(action),
        )

    def _recognize(self, connection: Any, action: act.Recognize, _: str) -> None:
        from azure.communication.callautomation import RecognizeInputType

        common: dict[str, Any] = {
            "initial_silence_timeout": action.silence_timeout,
            "operation_context": action.context,
            "play_prompt": [play_source(p) for p in action.prompts] or None,
            "interrupt_prompt": True,
            **operation_callback(action),
        }
        target = identifier(action.target)
        dtmf: dict[str, Any] = {
            "dtmf_max_tones_to_collect": action.max_tones,
            "dtmf_stop_tones": [KEY_TONES[k] for k in action.stop_keys] or None,
            "dtmf_inter_tone_timeout": action.inter_tone_timeout,
        }
        speech = {"speech_language": action.speech_language}
        if action.mode == "choices":
            choices = {"choices": recognition_choices(action)}
            connection.start_recognizing_media(RecognizeInputType.CHOICES, target, **choices, **common)
            return
        input_type, options = {
            "dtmf": (RecognizeInputType.DTMF, dtmf),
            "speech": (RecognizeInputType.SPEECH, speech),
            "speech_or_dtmf": (RecognizeInputType.SPEECH_OR_DTMF, {**speech, **dtmf}),
        }[action.mode]
        connection.start_recognizing_media(input_type, target, **options, **common)

    def _transfer(self, connection: Any, action: act.Transfer, _: str) -> None:
        target = action.target
        connection.transfer_call_to_participant(
            identifier(target.to),
            operation_context=action.context,
            sip_headers=target.sip_headers or None,
            voip_headers=target.voip_headers or None,
            transferee=identifier(action.transferee) if action.transferee else None,
            source_caller_id_number=identifier(target.caller_id) if target.caller_id else None,
            **action_repeatability(action),
            **operation_callback(action),
        )

    def _add_participant(self, connection: Any, action: act.AddParticipant, _: str) -> Result:
        target = action.target
        result = connection.add_participant(
            identifier(target.to),
            invitation_timeout=action.timeout_seconds,
            operation_context=action.context,
            source_caller_id_number=identifier(target.caller_id) if target.caller_id else None,
            source_display_name=target.display_name,
            sip_headers=target.sip_headers or None,
            voip_headers=target.voip_headers or None,
            **action_repeatability(action),
            **operation_callback(action),
        )
        return {"invitation_id": result.invitation_id or ""}

    def _cancel_add_participant(self, connection: Any, action: act.CancelAddParticipant, _: str) -> None:
        connection.cancel_add_participant_operation(
            action.invitation_id,
            operation_context=action.context,
            **action_repeatability(action),
            **operation_callback(action),
        )

    def _remove_participant(self, connection: Any, action: act.RemoveParticipant, _: str) -> None:
        connection.remove_participant(
            identifier(action.who),
            operation_context=action.context,
            **action_repeatability(action),
            **operation_callback(action),
        )

    def _send_dtmf(self, connection: Any, action: act.SendDtmf, _: str) -> None:
        connection.send_dtmf_tones(
            [KEY_TONES[k] for k in action.tones],
            identifier(action.to),
            operation_context=action.context,
            **action_repeatability(action),
            **operation_callback(action),
        )

    def _mute(self, connection: Any, action: act.Mute, _: str) -> None:
        connection.mute_participant(
            identifier(action.who), operation_context=action.context, **action_repeatability(action)
        )

    def _hold(self, connection: Any, action: act.Hold, _: str) -> None:
        connection.hold(
            identifier(action.who),
            play_source=play_source(action.music) if action.music else None,
            operation_context=action.context,
            **operation_callback(action),
        )

    def _unhold(self, connection: Any, action: act.Unhold, _: str) -> None:
        connection.unhold(identifier(action.who), operation_context=action.context, **operation_callback(action))

    def _continuous_dtmf(self, connection: Any, action: act.ContinuousDtmf, _: str) -> None:
        if action.start:
            # The SDK takes no operation callback for start; its tones go to the call's callback.
            connection.start_continuous_dtmf_recognition(identifier(action.who), operation_context=action.context)
        else:
            connection.stop_continuous_dtmf_recognition(
                identifier(action.who), operation_context=action.context, **operation_callback(action)
            )

    def _cancel_media(self, connection: Any, action: act.CancelMedia, _: str) -> None:
        connection.cancel_all_media_operations()

    def _hangup(self, connection: Any, action: act.Hangup, _: str) -> None:
        connection.hang_up(
            is_for_everyone=action.for_everyone, **(action_repeatability(action) if action.for_everyone else {})
        )

    def _recording(self, connection: Any, action: act.Recording, server_call_id: str) -> Result:
        """Recordings are addressed by the server call (to start) or their id, not by the call connection."""
        if action.op == "start":
            return self._start_recording(server_call_id, action)
        if not action.recording_id:
            return {}
        change = {
            "pause": self.client.pause_recording,
            "resume": self.client.resume_recording,
            "stop": self.client.stop_recording,
        }[action.op]
        change(action.recording_id)
        return {}

    def _start_recording(self, server_call_id: str, action: act.Recording) -> Result:
        from azure.communication.callautomation import AzureBlobContainerRecordingStorage, ChannelAffinity

        affinity = None
        if action.channel == "unmixed":  # each known party keeps the same channel in every recording (caller: 0)
            affinity = [
                ChannelAffinity(target_participant=identifier(r), channel=i) for i, r in enumerate(action.channel_order)
            ] or None
        props = self.client.start_recording(
            server_call_id=server_call_id,
            recording_content_type=action.content,
            recording_channel_type=action.channel,
            recording_format_type=action.format,
            channel_affinity=affinity,
            pause_on_start=action.pause_on_start or None,
            recording_storage=AzureBlobContainerRecordingStorage(action.container_url)
            if action.container_url
            else None,
            recording_state_callback_url=action.callback_url,
            **action_repeatability(action),
        )
        return {"recording_id": props.recording_id or "", "recording_state": str(props.recording_state or "")}

    # -- setting a call up -----------------------------------------------------------------------------------

    def create_call(
        self,
        targets: Sequence[str],
        callback_url: str,
        *,
        caller_id: str | None,
        repeat: Repeat | None = None,
        **options: Any,
    ) -> Any:
        """Place a call to one target, or a group call to several; ``repeat`` is (request id, first sent)."""
        ids = [identifier(t) for t in targets]
        return self.client.create_call(
            ids if len(ids) > 1 else ids[0],
            callback_url,
            source_caller_id_number=identifier(caller_id) if caller_id else None,
            **options,
            **self._set_up_repeatability(repeat),
        )

    def answer(self, incoming_call_context: str, callback_url: str, *, repeat: Repeat, **options: Any) -> Any:
        return self.client.answer_call(
            incoming_call_context, callback_url, **options, **self._set_up_repeatability(repeat)
        )

    def redirect(self, incoming_call_context: str, target: str, *, repeat: Repeat) -> None:
        self.client.redirect_call(incoming_call_context, identifier(target), **self._set_up_repeatability(repeat))

    def reject(self, incoming_call_context: str, reason: str, *, repeat: Repeat) -> None:
        self.client.reject_call(incoming_call_context, call_reject_reason=reason, **self._set_up_repeatability(repeat))

    def connect(self, callback_url: str, **options: Any) -> Any:
        """Join an ongoing call or a room (``options`` names one locator)."""
        return self.client.connect_call(callback_url, **options)

    @staticmethod
    def _set_up_repeatability(repeat: Repeat | None) -> dict[str, Any]:
        """A set-up request is sent plain once the service has forgotten its first sending."""
        return repeatability(*repeat, window=REPEATABILITY_WINDOW) if repeat else {}

    # -- reading a call --------------------------------------------------------------------------------------

    def call_properties(self, call_connection_id: str) -> Any:
        return self.client.get_call_connection(call_connection_id).get_call_properties()

    def participants(self, call_connection_id: str) -> list[Any]:
        return list(self.client.get_call_connection(call_connection_id).list_participants())

    def participant(self, call_connection_id: str, raw_id: str) -> Any:
        return self.client.get_call_connection(call_connection_id).get_participant(identifier(raw_id))


def recognition_choices(action: act.Recognize) -> list[Any]:
    from azure.communication.callautomation import RecognitionChoice

    return [
        RecognitionChoice(
            label=str(c["label"]),
            phrases=list(c.get("phrases") or []),  # type: ignore[arg-type]
            tone=KEY_TONES[str(c["key"])] if c.get("key") else None,
        )
        for c in action.choices
    ]
