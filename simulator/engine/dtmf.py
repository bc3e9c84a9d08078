"""DTMF: continuous recognition of a participant's keys, and tones the app sends to a participant.

Continuous DTMF only registers who is listened to; ``Script._party_input`` delivers the tones as they come.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..parties import TONE_CHARS
from .events import Events
from .model import Connection
from .recognize import VALID_TONES


class Dtmf(Events):
    """StartContinuousDtmfRecognition, StopContinuousDtmfRecognition and SendDtmfTones."""

    async def op_start_continuous_dtmf(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipant")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        party = conn.call.participants.get(target)
        if party is None:
            raise errors.participant_not_found(target)
        conn.continuous_dtmf[target] = (body.get("operationContext"), self._op_callback(conn, body))
        conn.call.timeline.add("call", f"continuous DTMF on for {target}")
        step = party.next_step("continuous_dtmf", body.get("operationContext") or "")
        if step:
            self.spawn(self._party_acts(conn, party, step, mode=None), "party")
        return 200, None

    async def op_stop_continuous_dtmf(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipant")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        conn.continuous_dtmf.pop(target, None)
        context = body.get("operationContext")
        url = self._op_callback(conn, body)
        self.spawn(self._dtmf_stopped(conn, url, context), "dtmf-stop")
        return 200, None

    async def _dtmf_stopped(self, conn: Connection, url: str, context: str | None) -> None:
        await asyncio.sleep(0.005)
        self.emit(
            conn,
            "ContinuousDtmfRecognitionStopped",
            {"resultInformation": rc.info(rc.CONTINUOUS_DTMF_STOPPED)},
            url=url,
            context=context,
        )

    async def op_send_dtmf(self, ccid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = self.connection(ccid)
        self._require(body, "tones", "targetParticipant")
        tones = body["tones"]
        if not isinstance(tones, list) or not tones or any(t not in VALID_TONES for t in tones):
            raise errors.bad_request("tones must be a non-empty list of valid tones.", "tones")
        if len(tones) > 18:
            raise errors.bad_request("At most 18 tones can be sent at a time.", "tones")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        context = body.get("operationContext")
        url = self._op_callback(conn, body)
        self.spawn(self._send_tones(conn, target, tones, url, context), "send-dtmf")
        return 202, {"operationContext": context} if context is not None else {}

    async def _send_tones(self, conn: Connection, target: str, tones: list[str], url: str, context: str | None) -> None:
        """The tones take their time to play; the target hears them, then SendDtmfTonesCompleted."""
        await asyncio.sleep(self.config.tone_seconds * len(tones))
        keys = "".join(TONE_CHARS[t] for t in tones)
        conn.call.timeline.add("party", f"{target} hears tones {keys}")
        self.emit(
            conn,
            "SendDtmfTonesCompleted",
            {"resultInformation": rc.info(rc.SEND_DTMF_DONE)},
            url=url,
            context=context,
        )
