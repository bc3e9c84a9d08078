"""The mid-call webhook events, as a table: what each logs, and whether it moves or ends the call.

The flow engine (through ``CallLedger.advance``) decides what an event does to the call; the table only says what
is logged of it and which events only log (``changes_state=False``: not deduplicated, they leave no trace) or end
the call (the call-ended hooks run). The table and the hooks are wired together here, once (``MID_CALL_EVENTS``),
and the callback blueprint hands them to the pipeline (``core.calls.dispatch``): nothing registers itself on import.
"""

from __future__ import annotations

import logging

from core.calls.dispatch import EventRule, MidCallEvents, Said
from core.calls.events import CallEvent, raw_id
from core.platform.observability import mask_id
from handlers.campaigns import campaign_call_ended
from handlers.records import record_flow_outcome

log = logging.getLogger("handlers.callbacks")
DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR


def _recognition(event: CallEvent) -> str:
    """The recognition's kind, and a choice's label (the flow's or the API caller's own word); of the caller's
    tones and speech, only whether any came."""
    kind, tones, label, speech = event.recognition
    if label:
        return f"{kind}: {label}"
    return f"{kind or '-'} ({'content not logged' if tones or speech else 'nothing'})"


# -- what a log line may say -----------------------------------------------------------------------------------

# What a caller keyed or said never reaches a log line, at any level: not a tone, not the digits of a recognition, not
# recognized speech (a card number may be any of them), nor the call's outcome (which may hold the results of API
# recognitions). So a line may say only the values below (``Said``): none reads a tone, speech or the outcome's
# values; participants are masked (``4:+*******1234``). The redaction filter of ``core.platform.observability`` is
# a second net under these lines.

TYPE = Said(lambda e: e.type)
MESSAGE = Said(lambda e: e.result.message)
CODE = Said(lambda e: e.result.code)
SUB_CODE = Said(lambda e: e.result.sub_code)
CONTEXT = Said(lambda e: e.operation_context)
PARTICIPANT = Said(lambda e: mask_id(e.participant))
TRANSFER_TARGET = Said(lambda e: mask_id(raw_id(e.data.get("transferTarget"))))
INVITATION = Said(lambda e: e.invitation_id)
FAILED_SOURCE = Said(lambda e: e.data.get("failedPlaySourceIndex"))
SEQUENCE = Said(lambda e: e.sequence_id)  # which tone: never said
RECOGNITION = Said(_recognition)
RECORDING = Said(lambda e: e.recording_id)
RECORDING_STATE = Said(lambda e: e.recording_state)
# Read from the call's state once the event moved it (the line is logged after):
FLOW = Said(of_state=lambda s: s.flow or "(sim-ring)")
NODE = Said(of_state=lambda s: s.node or "-")
OUTCOME_KEYS = Said(of_state=lambda s: ", ".join(sorted(s.outcome)) or "-")  # its values may hold tones
PARTICIPANTS = Said(of_state=lambda s: ", ".join(mask_id(p) for p in s.participants) or "-")

SETUP_FAILED = EventRule("%s: %s (%s/%s)", (TYPE, MESSAGE, CODE, SUB_CODE), WARNING, ends_call=True)

EVENTS: dict[str, EventRule] = {
    # call lifecycle
    "CallConnected": EventRule("call connected into flow %s at %s", (FLOW, NODE)),
    "CallDisconnected": EventRule("call disconnected: %s; outcome has %s", (MESSAGE, OUTCOME_KEYS), ends_call=True),
    "ConnectFailed": EventRule(
        "connecting to the call failed: %s (%s/%s)", (MESSAGE, CODE, SUB_CODE), WARNING, ends_call=True
    ),
    "CreateCallFailed": SETUP_FAILED,
    "AnswerFailed": SETUP_FAILED,
    "ParticipantsUpdated": EventRule("participants now %s", (PARTICIPANTS,)),
    # transfer
    "CallTransferAccepted": EventRule("transfer accepted by %s", (TRANSFER_TARGET,)),
    "CallTransferFailed": EventRule("transfer failed: %s (%s)", (MESSAGE, CODE)),
    # participants
    "AddParticipantSucceeded": EventRule("%s joined", (PARTICIPANT,)),
    "AddParticipantFailed": EventRule("%s did not join: %s (%s)", (PARTICIPANT, MESSAGE, CODE)),
    "CancelAddParticipantSucceeded": EventRule("invitation %s canceled", (INVITATION,)),
    "CancelAddParticipantFailed": EventRule("invitation %s could not be canceled: %s", (INVITATION, MESSAGE)),
    "RemoveParticipantSucceeded": EventRule("%s removed", (PARTICIPANT,)),
    "RemoveParticipantFailed": EventRule("removing %s failed: %s", (PARTICIPANT, MESSAGE), WARNING),
    # media
    "PlayStarted": EventRule("play started (%s)", (CONTEXT,), DEBUG, changes_state=False),
    "PlayCompleted": EventRule(),
    "PlayFailed": EventRule("play failed: %s (%s/%s), source %s", (MESSAGE, CODE, SUB_CODE, FAILED_SOURCE), WARNING),
    "PlayCanceled": EventRule("play canceled (%s)", (CONTEXT,)),
    "RecognizeCompleted": EventRule("recognized %s", (RECOGNITION,)),
    "RecognizeFailed": EventRule("recognize failed: %s (%s)", (MESSAGE, SUB_CODE)),
    "RecognizeCanceled": EventRule("recognize canceled (%s)", (CONTEXT,)),
    "HoldFailed": EventRule("hold music failed: %s", (MESSAGE,), WARNING, changes_state=False),
    # DTMF
    "ContinuousDtmfRecognitionToneReceived": EventRule("a continuous-DTMF tone (sequence %s)", (SEQUENCE,), DEBUG),
    "ContinuousDtmfRecognitionToneFailed": EventRule(
        "a tone could not be recognized: %s", (MESSAGE,), WARNING, changes_state=False
    ),
    "ContinuousDtmfRecognitionStopped": EventRule("continuous DTMF recognition stopped", changes_state=False),
    "SendDtmfTonesCompleted": EventRule(),
    "SendDtmfTonesFailed": EventRule("sending DTMF failed: %s", (MESSAGE,), WARNING),
    # recording
    "RecordingStateChanged": EventRule("recording %s is %s", (RECORDING, RECORDING_STATE)),
    "StartRecordingFailed": EventRule("recording could not start: %s", (MESSAGE,), ERROR, changes_state=False),
}

# What runs when a call ends for the app, in this order: the campaign's next calls, the flow's outcome into the
# call's record. The one place these hooks are wired.
CALL_ENDED_HOOKS = (campaign_call_ended, record_flow_outcome)
MID_CALL_EVENTS = MidCallEvents(EVENTS, log, call_ended=CALL_ENDED_HOOKS)
