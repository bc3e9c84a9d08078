"""Recognize: play the prompts, then listen to one participant for tones, words or a choice.

What an input makes of a recognize (done, failed, keep listening) is a pure ``Listener``, apart from the waiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from .. import result_codes as rc
from ..parties import TONE_CHARS
from .media import Media
from .model import Connection, MediaOp, short

VALID_TONES = set(TONE_CHARS)

Outcome = tuple[str, dict[str, Any]]  # the event's name and its data


@dataclass
class Listener:
    """What a recognize has heard so far, and the event each new input (or silence) ends it with."""

    input_type: str  # dtmf | speech | speechOrDtmf | choices
    options: dict[str, Any]
    collected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        dtmf = self.options.get("dtmfOptions") or {}
        self.stop_tones = set(dtmf.get("stopTones") or [])
        self.max_tones = dtmf.get("maxTonesToCollect", 1)

    def _tones(self, result: rc.Result) -> Outcome:
        return "RecognizeCompleted", {
            "resultInformation": rc.info(result),
            "recognitionType": "dtmf",
            "dtmfResult": {"tones": self.collected},
        }

    def timed_out(self) -> Outcome:
        if self.collected:
            return self._tones(rc.RECOGNIZE_INTERDIGIT_TIMEOUT_COMPLETED)
        return "RecognizeFailed", {"resultInformation": rc.info(rc.RECOGNIZE_INITIAL_SILENCE)}

    def tone(self, value: str) -> Outcome | None:
        """The outcome of one more tone; None while more tones are awaited."""
        if self.input_type == "choices":
            choice = next((c for c in self.options["choices"] if c.get("tone") == value), None)
            if choice is None:
                return "RecognizeFailed", {"resultInformation": rc.info(rc.RECOGNIZE_INCORRECT_TONE)}
            return "RecognizeCompleted", {
                "resultInformation": rc.info(rc.RECOGNIZE_DTMF_OPTION),
                "recognitionType": "choices",
                "choiceResult": {"label": choice["label"]},
            }
        if value in self.stop_tones:
            return self._tones(rc.RECOGNIZE_STOP_TONE)
        self.collected.append(value)
        if len(self.collected) >= self.max_tones:
            return self._tones(rc.RECOGNIZE_MAX_TONES)
        return None

    def speech(self, value: Any) -> Outcome:
        if self.input_type != "choices":
            return "RecognizeCompleted", {
                "resultInformation": rc.info(rc.RECOGNIZE_SPEECH),
                "recognitionType": "speech",
                "speechResult": {"speech": value, "confidence": 0.92},
            }
        said = str(value).lower()
        choice = next(
            (c for c in self.options["choices"] if any(p.lower() in said for p in c.get("phrases", []))), None
        )
        if choice is None:
            return "RecognizeFailed", {"resultInformation": rc.info(rc.RECOGNIZE_NO_MATCH)}
        phrase = next(p for p in choice["phrases"] if p.lower() in said)
        return "RecognizeCompleted", {
            "resultInformation": rc.info(rc.RECOGNIZE_CHOICE_MATCHED),
            "recognitionType": "choices",
            "choiceResult": {"label": choice["label"], "recognizedPhrase": phrase, "confidence": 0.92},
        }


class Recognize(Media):
    """StartRecognizing, run through the media queue."""

    async def op_recognize(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "recognizeInputType", "recognizeOptions")
        input_type = body["recognizeInputType"]
        if input_type not in ("dtmf", "speech", "speechOrDtmf", "choices"):
            raise errors.bad_request(
                "recognizeInputType must be dtmf, speech, speechOrDtmf or choices.", "recognizeInputType"
            )
        target = self._recognize_target(conn, input_type, body["recognizeOptions"])
        prompts = body.get("playPrompts") or ([body["playPrompt"]] if body.get("playPrompt") else [])
        if prompts:
            self._play_sources(prompts, "playPrompts")
        interrupt = bool(body.get("interruptCallMediaOperation"))
        running = [
            op for op in [conn.media_current, *conn.media_queue] if op and op.kind == "recognize" and not op.done
        ]
        if running and not interrupt:
            raise errors.recognize_running()
        op = MediaOp(
            "recognize",
            conn,
            {**body, "prompts": prompts},
            body.get("operationContext"),
            self._op_callback(conn, body),
            [target],
        )
        self._enqueue(conn, op, interrupt=interrupt)
        return 202, None

    def _recognize_target(self, conn: Connection, input_type: str, options: Any) -> str:
        """Check recognizeOptions as the service does (400 or 404); the participant listened to."""
        if not isinstance(options, dict) or not options.get("targetParticipant"):
            raise errors.bad_request("recognizeOptions.targetParticipant is required.", "recognizeOptions")
        target = self._identifier(options["targetParticipant"], "recognizeOptions.targetParticipant")
        if target not in conn.call.participants:
            raise errors.participant_not_found(target)
        if input_type == "choices" and not options.get("choices"):
            raise errors.bad_request("choices must be given for a choices recognize.", "recognizeOptions.choices")
        dtmf = options.get("dtmfOptions") or {}
        for tone in dtmf.get("stopTones") or []:
            if tone not in VALID_TONES:
                raise errors.bad_request(f"{tone!r} is not a valid tone.", "recognizeOptions.dtmfOptions.stopTones")
        max_tones = dtmf.get("maxTonesToCollect", 1)
        if not isinstance(max_tones, int) or max_tones < 1:
            raise errors.bad_request("maxTonesToCollect must be a positive integer.", "dtmfOptions.maxTonesToCollect")
        return target

    def _recognize_failure(self, conn: Connection, input_type: str, prompts: list[dict[str, Any]]) -> dict | None:
        """The RecognizeFailed data when the service cannot even start (no AI services, a bad prompt)."""
        needs_ai = input_type in ("speech", "speechOrDtmf", "choices") or any(p["kind"] != "file" for p in prompts)
        if needs_ai and not conn.cognitive_endpoint:
            return {"resultInformation": rc.info(rc.AI_SERVICES_MISSING)}
        problem = self._source_problem(conn, prompts) if prompts else None
        if problem:
            index, result = problem
            return {"resultInformation": rc.info(result), "failedPlaySourceIndex": index}
        return None

    async def _run_recognize(self, op: MediaOp) -> None:
        conn = op.connection
        body = op.request
        options = body["recognizeOptions"]
        input_type = body["recognizeInputType"]
        prompts = body["prompts"]
        failure = self._recognize_failure(conn, input_type, prompts)
        if failure:
            await asyncio.sleep(0.005)
            self.emit(conn, "RecognizeFailed", failure, url=op.callback_uri, context=op.context)
            return
        party = conn.call.participants.get(op.targets[0])
        prompt_text = " ".join(self._source_text(p) for p in prompts)
        if prompts:
            conn.call.timeline.add("party", f"hears: {short(prompt_text)}")
        step = party.next_step("recognize", f"{prompt_text} {op.context or ''}") if party else None
        if step is not None and party is not None:
            self.spawn(
                self._party_acts(conn, party, step, mode="recognize", lead=self.config.prompt_seconds * len(prompts)),
                "party",
            )
        await asyncio.sleep(self.config.prompt_seconds * len(prompts))
        silence = self.config.scaled(options.get("initialSilenceTimeoutInSeconds", 5))
        inter_tone = self.config.scaled((options.get("dtmfOptions") or {}).get("interToneTimeoutInSeconds", 2))
        await self._collect(op, input_type, options, silence, inter_tone)

    async def _collect(
        self, op: MediaOp, input_type: str, options: dict[str, Any], silence: float, inter_tone: float
    ) -> None:
        """Wait for the participant's input until the listener has an outcome; send it."""
        listener = Listener(input_type, options)
        timeout = silence
        while True:
            try:
                kind, value = await asyncio.wait_for(op.input.get(), timeout=timeout)
            except TimeoutError:
                outcome = listener.timed_out()
                break
            if kind == "gone":
                op.done = True
                return
            if kind == "tone" and input_type != "speech":
                outcome = listener.tone(value)
                if outcome is None:
                    timeout = inter_tone
                    continue
                break
            if kind == "speech" and input_type != "dtmf":
                outcome = listener.speech(value)
                break
        op.done = True
        name, data = outcome
        self.emit(op.connection, name, data, url=op.callback_uri, context=op.context)
