"""Media: play, the per-connection media queue that plays and recognizes run through, cancel, and hold.

A connection runs one media operation at a time, as ACS does; later ones wait in the queue unless they interrupt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from .. import errors
from .. import result_codes as rc
from .events import Events
from .model import Connection, MediaOp, short


class Media(Events):
    """Play, CancelAllMediaOperations, Hold and Unhold, and the queue shared with Recognize."""

    # -- play sources ------------------------------------------------------------------------

    def _play_sources(self, sources: Any, field_name: str) -> list[dict[str, Any]]:
        """Refuse the request (400) if a play source lacks what its kind needs."""
        if not isinstance(sources, list) or not sources:
            raise errors.bad_request(f"{field_name} must list at least one play source.", field_name)
        for source in sources:
            kind = source.get("kind") if isinstance(source, dict) else None
            part = source.get(kind) if kind in ("file", "text", "ssml") else None
            part = part if isinstance(part, dict) else {}
            if kind == "file" and not (isinstance(part.get("uri"), str) and part["uri"]):
                raise errors.bad_request("A file play source needs file.uri.", field_name)
            elif kind == "text" and not (isinstance(part.get("text"), str) and part["text"]):
                raise errors.bad_request("A text play source needs text.text.", field_name)
            elif kind == "ssml" and not (isinstance(part.get("ssmlText"), str) and part["ssmlText"]):
                raise errors.bad_request("An ssml play source needs ssml.ssmlText.", field_name)
            elif kind not in ("file", "text", "ssml"):
                raise errors.bad_request("Play source kind must be file, text or ssml.", field_name)
        return sources

    @staticmethod
    def _source_text(source: dict[str, Any]) -> str:
        kind = source.get("kind")
        if kind == "text":
            return source["text"]["text"]
        if kind == "ssml":
            return source["ssml"]["ssmlText"]
        return source["file"]["uri"]

    def _source_problem(self, conn: Connection, sources: list[dict[str, Any]]) -> tuple[int, rc.Result] | None:
        """Why the service could not play one of these sources, as PlayFailed reports it."""
        for index, source in enumerate(sources):
            kind = source["kind"]
            if kind in ("text", "ssml") and not conn.cognitive_endpoint:
                return index, rc.AI_SERVICES_MISSING
            if kind == "file":
                uri = source["file"]["uri"]
                if not uri.startswith(("http://", "https://")) or "unreachable" in uri:
                    return index, rc.PLAY_FILE_UNREACHABLE
                if not uri.lower().split("?")[0].endswith(".wav"):
                    return index, rc.PLAY_FILE_INVALID
        return None

    def _targets(self, conn: Connection, models: Any, field_name: str) -> list[str]:
        if not models:
            return list(conn.call.participants)
        targets = [self._identifier(m, field_name) for m in models]
        for t in targets:
            if t not in conn.call.participants:
                raise errors.participant_not_found(t)
        return targets

    # -- play --------------------------------------------------------------------------------

    async def op_play(self, ccid: str, body: dict[str, Any]) -> tuple[int, None]:
        conn = self.connection(ccid)
        sources = self._play_sources(body.get("playSources"), "playSources")
        targets = self._targets(conn, body.get("playTo"), "playTo")
        op = MediaOp(
            "play",
            conn,
            {**body, "playSources": sources},
            body.get("operationContext"),
            self._op_callback(conn, body),
            targets,
        )
        self._enqueue(conn, op, interrupt=bool(body.get("interruptCallMediaOperation")))
        return 202, None

    async def _run_play(self, op: MediaOp) -> None:
        conn = op.connection
        sources = op.request["playSources"]
        problem = self._source_problem(conn, sources)
        if problem:
            index, result = problem
            await asyncio.sleep(0.005)
            self.emit(
                conn,
                "PlayFailed",
                {"resultInformation": rc.info(result), "failedPlaySourceIndex": index},
                url=op.callback_uri,
                context=op.context,
            )
            return
        loop = bool((op.request.get("playOptions") or {}).get("loop"))
        text = " ".join(self._source_text(s) for s in sources)
        self.emit(
            conn, "PlayStarted", {"resultInformation": rc.info(rc.SUCCESS)}, url=op.callback_uri, context=op.context
        )
        conn.call.timeline.add("party", f"hears: {short(text)}" + (" (looping)" if loop else ""))
        while True:
            await asyncio.sleep(self.config.prompt_seconds * len(sources))
            if not loop:
                break
        op.done = True
        self.emit(
            conn, "PlayCompleted", {"resultInformation": rc.info(rc.SUCCESS)}, url=op.callback_uri, context=op.context
        )
        for raw in op.targets:
            party = conn.call.participants.get(raw)
            if party:
                step = party.next_step("play", f"{text} {op.context or ''}")
                if step:
                    self.spawn(self._party_acts(conn, party, step, mode=None), "party")

    # -- the queue ---------------------------------------------------------------------------

    def _enqueue(self, conn: Connection, op: MediaOp, *, interrupt: bool) -> None:
        if interrupt:
            self._cancel_media(conn, emit=True)
        conn.media_queue.append(op)
        if conn.media_current is None:
            self._next_media(conn)

    def _next_media(self, conn: Connection) -> None:
        if conn.media_current is not None or not conn.media_queue or conn.state != "connected":
            return
        op = conn.media_queue.pop(0)
        conn.media_current = op
        runner = self._run_play(op) if op.kind == "play" else self._run_recognize(op)
        op.task = self.spawn(self._media_wrapper(op, runner), op.kind)

    async def _media_wrapper(self, op: MediaOp, runner: Awaitable[None]) -> None:
        try:
            await runner
        finally:
            op.done = True
            op.finished.set()
            conn = op.connection
            if conn.media_current is op:
                conn.media_current = None
                self._next_media(conn)

    def _cancel_media(self, conn: Connection, *, emit: bool, context_filter: str | None = None) -> None:
        ops = [op for op in [conn.media_current, *conn.media_queue] if op is not None and not op.done]
        conn.media_queue.clear()
        for op in ops:
            op.done = True
            if op.task and not op.task.done():
                op.task.cancel()
            if emit:
                name = "PlayCanceled" if op.kind == "play" else "RecognizeCanceled"
                self.emit(
                    conn,
                    name,
                    {"resultInformation": rc.info(rc.OPERATION_CANCELED)},
                    url=op.callback_uri,
                    context=op.context,
                )
        conn.media_current = None

    async def op_cancel_all_media(self, ccid: str) -> tuple[int, None]:
        conn = self.connection(ccid)
        conn.call.timeline.add("call", "all media operations canceled")
        self._cancel_media(conn, emit=True)
        return 202, None

    # -- hold --------------------------------------------------------------------------------

    async def op_hold(self, ccid: str, body: dict[str, Any], hold: bool) -> tuple[int, None]:
        conn = self.connection(ccid)
        self._require(body, "targetParticipant")
        target = self._identifier(body["targetParticipant"], "targetParticipant")
        party = conn.call.participants.get(target)
        if party is None:
            raise errors.participant_not_found(target)
        context = body.get("operationContext")
        music = body.get("playSourceInfo") if hold else None
        if music:
            self._play_sources([music], "playSourceInfo")  # a refused request must not put anyone on hold
        party.is_on_hold = hold
        conn.call.timeline.add(
            "call",
            f"{target} {'on hold' if hold else 'taken off hold'}"
            + (f" with music {short(self._source_text(music))}" if music else ""),
        )
        if music:
            problem = self._source_problem(conn, [music])
            if problem:
                # The same cause as PlayFailed would give (no AI services for TTS, not a .wav, ...).
                failure = rc.HOLD_MUSIC_FAILED if problem[1] == rc.PLAY_FILE_UNREACHABLE else problem[1]
                self.emit(
                    conn,
                    "HoldFailed",
                    {"resultInformation": rc.info(failure)},
                    url=self._op_callback(conn, body),
                    context=context,
                )
        self._participants_updated(conn.call)
        if hold:
            step = party.next_step("hold", context or "")
            if step:
                self.spawn(self._party_acts(conn, party, step, mode=None), "party")
        return 200, None
