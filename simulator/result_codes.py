"""``resultInformation`` values the service puts on mid-call events.

One table, so the codes can be checked against ACS's published troubleshooting table in one
place. Each entry is (code, subCode, message).
"""

from __future__ import annotations

from typing import Any

Result = tuple[int, int, str]

SUCCESS: Result = (200, 0, "Action completed successfully.")
CALL_CONNECTED: Result = (200, 0, "The call was answered and the application joined it.")
CALL_ENDED_BY_PARTICIPANT: Result = (200, 0, "The call was ended by a participant.")
CALL_ENDED_BY_APP: Result = (200, 0, "The application hung up.")
CALL_TERMINATED: Result = (200, 5001, "The call was terminated for everyone.")
TRANSFER_ACCEPTED: Result = (202, 7015, "The transfer operation completed successfully.")
TRANSFER_DECLINED: Result = (603, 0, "The transfer target declined the call.")
TRANSFER_NO_ANSWER: Result = (408, 0, "The transfer target did not answer in time.")
TRANSFER_BUSY: Result = (486, 0, "The transfer target is busy.")
ADD_DECLINED: Result = (603, 0, "The invited participant declined the call.")
ADD_NO_ANSWER: Result = (408, 10004, "The invitation timed out: the participant did not answer.")
ADD_BUSY: Result = (486, 0, "The invited participant is busy.")
ADD_CANCELED: Result = (487, 5300, "The invitation was canceled by the application.")
CANCEL_ADD_TOO_LATE: Result = (400, 8522, "The invitation has already completed and cannot be canceled.")
CONNECT_NOT_FOUND: Result = (404, 8522, "The call to connect to was not found.")
CREATE_DECLINED: Result = (603, 0, "The callee declined the call.")
CREATE_NO_ANSWER: Result = (408, 0, "The callee did not answer in time.")
CREATE_BUSY: Result = (486, 0, "The callee is busy.")
PLAY_FILE_UNREACHABLE: Result = (400, 8536, "Action failed, file could not be downloaded.")
PLAY_FILE_INVALID: Result = (400, 8535, "Action failed, file format is invalid.")
AI_SERVICES_MISSING: Result = (400, 8565, "Action failed, bad request to Azure AI services. Check input parameters.")
OPERATION_CANCELED: Result = (400, 8508, "Action failed, the operation was canceled.")
RECOGNIZE_STOP_TONE: Result = (200, 8514, "Action completed as stop tone was detected.")
RECOGNIZE_MAX_TONES: Result = (200, 8531, "Action completed, max digits received.")
RECOGNIZE_INTERDIGIT_TIMEOUT_COMPLETED: Result = (200, 8532, "Action completed, inter-digit silence timeout reached.")
RECOGNIZE_CHOICE_MATCHED: Result = (200, 8545, "Action completed, recognized phrase matches a valid option.")
RECOGNIZE_SPEECH: Result = (200, 8568, "Action completed, recognition completed successfully.")
RECOGNIZE_DTMF_OPTION: Result = (200, 8533, "Action completed, DTMF option matched.")
RECOGNIZE_INITIAL_SILENCE: Result = (400, 8510, "Action failed, initial silence timeout reached.")
RECOGNIZE_INCORRECT_TONE: Result = (400, 8534, "Action failed, incorrect tone entered.")
RECOGNIZE_NO_MATCH: Result = (400, 8547, "Action failed, recognized phrase does not match a valid option.")
SEND_DTMF_DONE: Result = (200, 0, "Send DTMF completed successfully.")
CONTINUOUS_DTMF_STOPPED: Result = (200, 0, "Continuous DTMF recognition stopped.")
CONTINUOUS_DTMF_TONE: Result = (200, 0, "DTMF tone received.")
RECORDING_STATE: Result = (200, 0, "Recording state changed.")
HOLD_MUSIC_FAILED: Result = (400, 8536, "Action failed, hold music file could not be downloaded.")


def info(result: Result) -> dict[str, Any]:
    code, sub_code, message = result
    return {"code": code, "subCode": sub_code, "message": message}
