"""Scripted parties acting: pressing keys, speaking, hanging up, on a trigger or after a time.

A party's input goes to whatever in the call listens to it (a recognize, or continuous DTMF), as a phone would.
"""

from __future__ import annotations

import asyncio

from .. import result_codes as rc
from ..parties import Step, tones_of
from .events import Events
from .model import Connection, Participant, ServerCall


class Script(Events):
    """Carries out the parties' scripts (see ``simulator/parties.py``)."""

    async def _party_acts(
        self, conn: Connection, party: Participant, step: Step, *, mode: str | None, lead: float = 0.0
    ) -> None:
        """Carry out one script step of a party: press, say, stay silent or hang up."""
        await asyncio.sleep(lead + step.delay)
        call = conn.call
        if party.raw_id not in call.participants:
            return
        if step.hangup:
            self.party_hangs_up(call, party.raw_id)
            return
        call.timeline.add("party", f"{party.raw_id} {step.describe()}")
        if step.press:
            for tone in tones_of(step.press):
                self._party_input(call, party.raw_id, "tone", tone)
                await asyncio.sleep(self.config.tone_seconds)
        elif step.say:
            self._party_input(call, party.raw_id, "speech", step.say)

    def _party_input(self, call: ServerCall, raw: str, kind: str, value: str) -> None:
        """Route a party's keypress or words to whatever in the call is listening."""
        for conn in call.live_connections():
            current = conn.media_current
            if current and current.kind == "recognize" and raw in current.targets and not current.done:
                current.input.put_nowait((kind, value))
                return
            if kind == "tone" and raw in conn.continuous_dtmf:
                context, url = conn.continuous_dtmf[raw]
                self.emit(
                    conn,
                    "ContinuousDtmfRecognitionToneReceived",
                    {
                        "tone": value,
                        "sequenceId": next(conn.dtmf_sequence),
                        "resultInformation": rc.info(rc.CONTINUOUS_DTMF_TONE),
                    },
                    url=url,
                    context=context,
                )
                return
        call.timeline.add("call", f"nobody listens to {raw}'s {kind} {value!r}")

    def _schedule_timed_steps(self, call: ServerCall, raw: str) -> None:
        """Start the clock of each timed step (``after: n``) of a party who just joined."""
        party = call.participants.get(raw)
        if party is None:
            return
        for step in party.behaviour.script:
            if step.on == "time":
                self.spawn(self._timed(call, raw, step), "timed-step")

    async def _timed(self, call: ServerCall, raw: str, step: Step) -> None:
        await asyncio.sleep(step.after or 0)
        party = call.participants.get(raw)
        if party is None or call.state == "ended":
            return
        conns = call.live_connections()
        if step.hangup or not conns:
            if step.hangup:
                call.timeline.add("party", f"{raw} hangs up")
                self._leave(call, raw, rc.CALL_ENDED_BY_PARTICIPANT)
            return
        await self._party_acts(conns[0], party, Step(on="time", press=step.press, say=step.say), mode=None)
