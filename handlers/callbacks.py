"""One handler per mid-call webhook event. Each says what the event means for the call; the
flow engine (through ``runtime.advance``) decides what happens next.

What a caller keyed or said never reaches a log line, at any level: not a tone, not the digits of a
recognition, not recognized speech (a card number may be any of them), nor the call's outcome (which may
hold the results of API recognitions). Participants are logged masked (``4:+*******1234``); the
redaction filter of ``core.observability`` is a second net under these lines.
"""

from __future__ import annotations

import logging

from core.dispatch import callbacks
from core.events import CallEvent, raw_id
from core.lifecycle import call_ended
from core.observability import mask_id
from core.runtime import Runtime

log = logging.getLogger("handlers.callbacks")


# -- call lifecycle ------------------------------------------------------------------------------


@callbacks.on("CallConnected")
def call_connected(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    state = runtime.advance(call_ref, event)
    log.info("call connected into flow %s at %s", state.flow or "(sim-ring)", state.node or "-")


@callbacks.on("CallDisconnected")
def call_disconnected(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    state = runtime.advance(call_ref, event, then=lambda ended: call_ended(ended, runtime))
    # The outcome's keys only: its values may hold a transfer target, tones or an API recognition's result.
    log.info("call disconnected: %s; outcome has %s", event.result.message, ", ".join(sorted(state.outcome)) or "-")


@callbacks.on("ConnectFailed")
def connect_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.warning(
        "connecting to the call failed: %s (%s/%s)", event.result.message, event.result.code, event.result.sub_code
    )
    runtime.advance(call_ref, event, then=lambda ended: call_ended(ended, runtime))


@callbacks.on("CreateCallFailed", "AnswerFailed")
def call_setup_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.warning("%s: %s (%s/%s)", event.type, event.result.message, event.result.code, event.result.sub_code)
    runtime.advance(call_ref, event, then=lambda ended: call_ended(ended, runtime))


@callbacks.on("ParticipantsUpdated")
def participants_updated(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    state = runtime.advance(call_ref, event)
    log.info("participants now %s", ", ".join(mask_id(p) for p in state.participants) or "-")


# -- transfer ------------------------------------------------------------------------------------


@callbacks.on("CallTransferAccepted")
def call_transfer_accepted(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("transfer accepted by %s", mask_id(raw_id(event.data.get("transferTarget"))))
    runtime.advance(call_ref, event)


@callbacks.on("CallTransferFailed")
def call_transfer_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("transfer failed: %s (%s)", event.result.message, event.result.code)
    runtime.advance(call_ref, event)


# -- participants --------------------------------------------------------------------------------


@callbacks.on("AddParticipantSucceeded")
def add_participant_succeeded(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("%s joined", mask_id(event.participant))
    runtime.advance(call_ref, event)


@callbacks.on("AddParticipantFailed")
def add_participant_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("%s did not join: %s (%s)", mask_id(event.participant), event.result.message, event.result.code)
    runtime.advance(call_ref, event)


@callbacks.on("CancelAddParticipantSucceeded")
def cancel_add_participant_succeeded(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("invitation %s canceled", event.invitation_id)
    runtime.advance(call_ref, event)


@callbacks.on("CancelAddParticipantFailed")
def cancel_add_participant_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("invitation %s could not be canceled: %s", event.invitation_id, event.result.message)
    runtime.advance(call_ref, event)


@callbacks.on("RemoveParticipantSucceeded")
def remove_participant_succeeded(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("%s removed", mask_id(event.participant))
    runtime.advance(call_ref, event)


@callbacks.on("RemoveParticipantFailed")
def remove_participant_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.warning("removing %s failed: %s", mask_id(event.participant), event.result.message)
    runtime.advance(call_ref, event)


# -- media ---------------------------------------------------------------------------------------


@callbacks.on("PlayStarted", dedupe=False)  # only logs
def play_started(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.debug("play started (%s)", event.operation_context)


@callbacks.on("PlayCompleted")
def play_completed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    runtime.advance(call_ref, event)


@callbacks.on("PlayFailed")
def play_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.warning(
        "play failed: %s (%s/%s), source %s",
        event.result.message,
        event.result.code,
        event.result.sub_code,
        event.data.get("failedPlaySourceIndex"),
    )
    runtime.advance(call_ref, event)


@callbacks.on("PlayCanceled")
def play_canceled(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("play canceled (%s)", event.operation_context)
    runtime.advance(call_ref, event)


@callbacks.on("RecognizeCompleted")
def recognize_completed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    kind, tones, label, speech = event.recognition
    # A choice's label is the flow's (or the API caller's) own word; the tones and speech are the caller's.
    if label:
        log.info("recognized %s: %s", kind, label)
    else:
        log.info("recognized %s (%s)", kind or "-", "content not logged" if tones or speech else "nothing")
    runtime.advance(call_ref, event)


@callbacks.on("RecognizeFailed")
def recognize_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("recognize failed: %s (%s)", event.result.message, event.result.sub_code)
    runtime.advance(call_ref, event)


@callbacks.on("RecognizeCanceled")
def recognize_canceled(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("recognize canceled (%s)", event.operation_context)
    runtime.advance(call_ref, event)


@callbacks.on("HoldFailed", dedupe=False)  # only logs
def hold_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.warning("hold music failed: %s", event.result.message)


# -- DTMF ----------------------------------------------------------------------------------------


@callbacks.on("ContinuousDtmfRecognitionToneReceived")
def continuous_dtmf_tone_received(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.debug("a continuous-DTMF tone (sequence %s)", event.sequence_id)  # which tone: never logged
    runtime.advance(call_ref, event)


@callbacks.on("ContinuousDtmfRecognitionToneFailed", dedupe=False)  # only logs
def continuous_dtmf_tone_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.warning("a tone could not be recognized: %s", event.result.message)


@callbacks.on("ContinuousDtmfRecognitionStopped", dedupe=False)  # only logs
def continuous_dtmf_stopped(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("continuous DTMF recognition stopped")


@callbacks.on("SendDtmfTonesCompleted")
def send_dtmf_completed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    runtime.advance(call_ref, event)


@callbacks.on("SendDtmfTonesFailed")
def send_dtmf_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.warning("sending DTMF failed: %s", event.result.message)
    runtime.advance(call_ref, event)


# -- recording -----------------------------------------------------------------------------------


@callbacks.on("RecordingStateChanged")
def recording_state_changed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.info("recording %s is %s", event.recording_id, event.recording_state)
    runtime.advance(call_ref, event)


@callbacks.on("StartRecordingFailed", dedupe=False)  # only logs
def start_recording_failed(event: CallEvent, runtime: Runtime, call_ref: str) -> None:
    log.error("recording could not start: %s", event.result.message)
