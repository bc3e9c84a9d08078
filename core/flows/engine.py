"""The flow engine: (state, event) -> actions. Pure: no SDK, no storage, no clock.

Every action the engine asks for carries an operation context ``"<node>#<seq>"`` (``seq``
grows each time a node is entered). An event whose context names an older ``seq`` is stale (a
late or out-of-order delivery) and is ignored, so it can never move the call twice.

Sensitive digits (a ``collect_digits`` node with ``sensitive``, e.g. a card number) are kept out of
the state, the call's history and its record: continuous DTMF (a flow's ``on_tone``) is stopped
before the node's recognize starts and started again once the call leaves it, and a continuous-DTMF
tone that reaches the app meanwhile (late, or sent anyway) is dropped unseen; the digits collected
are stored as a mask. The inputs of recognitions asked through the control API (tones, speech) are
kept for ``GET /api/calls/{id}`` while the call lasts and dropped when it ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..events import CallEvent
from ..state import CallState
from .actions import (
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
    SendDtmf,
    Transfer,
    Unhold,
)
from .model import (
    AddParticipantNode,
    CollectDigitsNode,
    Flow,
    HangupNode,
    HoldNode,
    MenuNode,
    MuteNode,
    PlayNode,
    Prompt,
    RecordNode,
    SendDtmfNode,
    Target,
    TransferNode,
    UnholdNode,
)

log = logging.getLogger("core.flows")

TONE_KEYS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "asterisk": "*",
    "pound": "#",
    "a": "A",
    "b": "B",
    "c": "C",
    "d": "D",
}
KEY_TONES = {v: k for k, v in TONE_KEYS.items()}
INITIAL_SILENCE_SUBCODE = 8510
MAX_CHAIN = 32
SIMRING = "simring"
API_CONTEXT = "api:"
API_RESULTS_KEPT = 20
CONTINUOUS_DTMF = "continuous-dtmf"


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str | None, values: dict[str, str], *, xml: bool = False) -> str | None:
    """``text`` with ``{name}`` replaced by the call's variables; unknown names are left as they are."""
    if not text or "{" not in text:
        return text
    from xml.sax.saxutils import escape

    safe = _Blank({k: escape(v) if xml else v for k, v in values.items()})
    try:
        return text.format_map(safe)
    except (ValueError, IndexError):
        return text  # braces that are not placeholders


def _fill_prompt(prompt: Prompt | None, values: dict[str, str]) -> Prompt | None:
    if prompt is None or not (prompt.text or prompt.ssml):
        return prompt
    return prompt.model_copy(update={"text": fill(prompt.text, values), "ssml": fill(prompt.ssml, values, xml=True)})


def render(action: Action, values: dict[str, str]) -> Action:
    """Fill call variables into an action's prompts and targets."""
    if not values:
        return action
    if isinstance(action, Play | Recognize):
        return action.model_copy(update={"prompts": [_fill_prompt(p, values) for p in action.prompts]})
    if isinstance(action, Hold) and action.music:
        return action.model_copy(update={"music": _fill_prompt(action.music, values)})
    if isinstance(action, Transfer | AddParticipant):
        target = action.target.model_copy(
            update={
                "to": fill(action.target.to, values) or action.target.to,
                "caller_id": fill(action.target.caller_id, values),
            }
        )
        return action.model_copy(update={"target": target})
    return action


@dataclass(frozen=True)
class RecordingOptions:
    mode: str = "off"
    channel: str = "unmixed"
    content: str = "audio"
    format: str = "wav"
    container_url: str | None = None  # bring your own storage: where ACS writes recordings


def context(node: str, seq: int, sub: str = "") -> str:
    return f"{node}#{seq}" + (f":{sub}" if sub else "")


def parse_context(value: str | None) -> tuple[str, int, str] | None:
    if not value or "#" not in value:
        return None
    node, _, rest = value.rpartition("#")
    seq, _, sub = rest.partition(":")
    try:
        return node, int(seq), sub
    except ValueError:
        return None


class FlowEngine:
    def __init__(self, flows: dict[str, Flow], recording: RecordingOptions | None = None) -> None:
        self.flows = flows
        self.recording = recording or RecordingOptions()

    # -- entry points ------------------------------------------------------------------------

    def handle(self, state: CallState, event: CallEvent) -> list[Action]:
        """Advance the call for one event; return what to do on the call."""
        # A CallDisconnected after a transfer carries the transfer's context: it must not replace its result.
        if (event.operation_context or "").startswith(API_CONTEXT) and event.type != "CallDisconnected":
            self._api_result(state, event)
        return [render(action, state.vars) for action in self._handle(state, event)]

    def _api_result(self, state: CallState, event: CallEvent) -> None:
        """Keep the outcome of an action taken through the control API, for GET /api/calls/{id}."""
        kind, tones, label, speech = event.recognition
        summary: dict[str, object] = {
            "event": event.type,
            "code": event.result.code,
            "subCode": event.result.sub_code,
            "message": event.result.message,
        }
        if kind:
            summary.update(recognitionType=kind, tones=tones, label=label, speech=speech)
            # Keys pressed while the flow collects sensitive digits; or a result delivered after the call ended.
            if self._in_sensitive_node(state) or state.status == "ended":
                self._drop_input(summary)
        results = state.outcome.setdefault("api", {})
        results[event.operation_context or ""] = summary
        for stale in list(results)[:-API_RESULTS_KEPT]:
            del results[stale]

    @staticmethod
    def _drop_input(summary: dict[str, object]) -> None:
        """What the caller keyed or said, out of an API recognition's result (how many tones stays)."""
        tones = summary.get("tones")
        if isinstance(tones, list) and tones:
            summary["tones"] = ["*"] * len(tones)
        if summary.get("speech"):
            summary["speech"] = None
            summary["speech_removed"] = True

    @staticmethod
    def _drop_inputs(state: CallState) -> None:
        """The call ended: the caller's inputs to API recognitions (tones, speech) are not kept past it, in its
        state row or its call record; how many tones came, the choice's label and the result codes are."""
        for summary in (state.outcome.get("api") or {}).values():
            if isinstance(summary, dict) and summary.get("recognitionType"):
                FlowEngine._drop_input(summary)

    def _handle(self, state: CallState, event: CallEvent) -> list[Action]:
        if event.call_connection_id:
            state.call_connection_id = event.call_connection_id
        if event.server_call_id:
            state.server_call_id = event.server_call_id
        if event.correlation_id:
            state.correlation_id = event.correlation_id
        kind = event.type
        if kind == "CallConnected":
            state.connected_at = state.connected_at or event.time or ""
            return self._connected(state)
        if kind == "ParticipantsUpdated":
            state.participants = event.participants
            return []
        if kind == "CallDisconnected":
            state.outcome.setdefault("ended", event.result.message or "disconnected")
            state.status = "ended"
            state.ended_at = state.ended_at or event.time or ""
            self._drop_inputs(state)
            return []
        if kind in ("ConnectFailed", "CreateCallFailed", "AnswerFailed"):
            self._drop_inputs(state)
            state.status = "ended"
            state.ended_at = state.ended_at or event.time or ""
            state.outcome["failed"] = f"{kind}: {event.result.message}"
            state.outcome["failed_code"] = event.result.code  # 408 no answer, 486 busy, 603 declined
            return []
        if kind == "RecordingStateChanged":
            state.recording_id = event.recording_id or state.recording_id
            state.recording_state = event.recording_state or state.recording_state
            return []
        if kind == "ContinuousDtmfRecognitionToneReceived":
            return self._tone(state, event)
        if state.status == "ended":
            return []
        parsed = parse_context(event.operation_context)
        if parsed is None:
            return []
        node_id, seq, sub = parsed
        if node_id == SIMRING and state.simring:  # a flow may have a node of that name
            return self._simring(state, event)
        if seq != state.seq or node_id != state.node:
            state.stale_events += 1
            state.note(f"ignored stale {kind} for {node_id}#{seq} (now at {state.node}#{state.seq})")
            return []
        flow = self.flows.get(state.flow)
        if flow is None or state.node not in flow.nodes:
            # The flow changed under a live call (a new deployment): finish the call politely.
            state.note(f"flow {state.flow} has no node {state.node} any more; hanging up")
            return [Hangup(for_everyone=True)]
        if sub == "announce" and kind in ("PlayCompleted", "PlayFailed"):
            # One announcement leads on once, even if the service reports its end twice.
            if state.vars.get("_announced") == event.operation_context:
                return []
            state.vars["_announced"] = event.operation_context or ""
        return self._on_node_event(state, flow.nodes[state.node], event, sub)

    def on_result(self, state: CallState, action: Action, result: dict[str, str]) -> None:
        """Keep what a synchronous response told us (invitation ids, recording ids)."""
        if isinstance(action, AddParticipant) and result.get("invitation_id") and action.context:
            state.invitations[action.context] = result["invitation_id"]
        if isinstance(action, Recording) and action.op == "start" and result.get("recording_id"):
            state.recording_id = result["recording_id"]
            state.recording_state = result.get("recording_state", "active")

    # -- call lifecycle ----------------------------------------------------------------------

    def _flow(self, state: CallState) -> Flow:
        return self.flows[state.flow]

    def _connected(self, state: CallState) -> list[Action]:
        if state.status not in ("answering", "dialing"):
            return []  # a second CallConnected (e.g. after a redelivery) changes nothing
        state.status = "connected"
        if state.caller and state.caller not in state.participants:
            state.participants.append(state.caller)
        if state.simring:
            return [
                AddParticipant(target=Target(to=t), timeout_seconds=state.simring_timeout, context=context(SIMRING, i))
                for i, t in enumerate(state.simring)
            ]
        actions: list[Action] = []
        if self.recording.mode == "on_connect":
            actions.append(self._recording("start", state))
        if not state.flow:
            return actions  # the app only joined (placed or connected through the API without a flow)
        # Continuous DTMF (the flow's on_tone) is started as the first node is entered, unless that node
        # collects sensitive digits: see _continuous_dtmf.
        return actions + self._enter(state, self._flow(state).start)

    def _in_sensitive_node(self, state: CallState) -> bool:
        """Whether the call is at a node that collects sensitive digits (a card number...)."""
        flow = self.flows.get(state.flow)
        node = flow.nodes.get(state.node) if flow is not None else None
        return isinstance(node, CollectDigitsNode) and node.sensitive and state.status != "ended"

    def _continuous_dtmf(self, state: CallState, node_id: str, node: object) -> list[Action]:
        """Switch continuous DTMF for the node being entered: off before a sensitive digit collection (its
        tones would otherwise reach the app as events of their own), on again for the nodes after it."""
        flow = self._flow(state)
        if not (flow.on_tone and state.caller):
            return []
        if isinstance(node, CollectDigitsNode) and node.sensitive:
            if not state.continuous_dtmf:
                return []
            state.continuous_dtmf = False
            state.note(f"continuous DTMF stopped for the sensitive digits of {node_id}")
            return [ContinuousDtmf(who=state.caller, start=False, context=CONTINUOUS_DTMF)]
        if state.continuous_dtmf or isinstance(node, HangupNode):
            return []
        if flow.instant(node_id) and getattr(node, "next", None):
            return []  # the node the chain waits at decides
        state.continuous_dtmf = True
        return [ContinuousDtmf(who=state.caller, context=CONTINUOUS_DTMF)]

    def _tone(self, state: CallState, event: CallEvent) -> list[Action]:
        if self._in_sensitive_node(state) or not state.continuous_dtmf:
            # A tone while sensitive digits are collected (a late delivery of one pressed before, or one the
            # service sent anyway), or after the app stopped listening: dropped, neither acted on nor kept.
            return []
        key = TONE_KEYS.get(str(event.tone).lower())
        flow = self.flows.get(state.flow)
        if state.status != "connected" or flow is None or key not in flow.on_tone:
            return []
        target = flow.on_tone[key]
        state.note(f"caller pressed {key} anywhere: go to {target}")
        state.outcome.setdefault("tones", []).append(key)
        actions: list[Action] = [CancelMedia()]
        actions += [CancelAddParticipant(invitation_id=i) for i in state.invitations.values()]
        state.invitations.clear()
        paused_for = state.vars.get("_paused_for")
        if paused_for and paused_for != target:  # left sensitive digit entry: record again
            state.vars.pop("_paused_for")
            actions.append(self._recording("resume", state))
        return actions + self._enter(state, target)

    def _simring(self, state: CallState, event: CallEvent) -> list[Action]:
        if event.type == "AddParticipantSucceeded" and state.status == "connected":
            winner = event.participant or ""
            state.outcome["simring_answered_by"] = winner
            state.status = "transferred"
            cancels = [
                CancelAddParticipant(invitation_id=i)
                for c, i in state.invitations.items()
                if c != event.operation_context
            ]
            state.invitations.clear()
            # The caller and the winner stay; the app leaves the call.
            return [*cancels, Hangup(for_everyone=False)]
        if event.type == "AddParticipantFailed":
            state.invitations.pop(event.operation_context or "", None)
            state.simring_failed += 1
            if state.simring_failed >= len(state.simring) and state.status == "connected":
                state.outcome["simring_answered_by"] = None
                return [Hangup(for_everyone=True)]
        return []

    # -- nodes -------------------------------------------------------------------------------

    def _enter(
        self, state: CallState, node_id: str, *, retry_prompt: Prompt | None = None, depth: int = 0
    ) -> list[Action]:
        """Enter a node: issue its action, or do it and move on for nodes that finish at once."""
        if depth > MAX_CHAIN:
            raise RuntimeError(f"flow {state.flow}: more than {MAX_CHAIN} instant nodes in a row at {node_id}")
        if retry_prompt is None:
            state.attempt = 0
        state.node = node_id
        state.seq += 1
        state.note(f"enter {node_id}")
        node = self._flow(state).nodes[node_id]
        return self._continuous_dtmf(state, node_id, node) + self._act(state, node_id, node, retry_prompt, depth)

    def _act(
        self, state: CallState, node_id: str, node: object, retry_prompt: Prompt | None, depth: int
    ) -> list[Action]:
        """The actions of a node just entered (and of the nodes after it that finish at once)."""
        ctx = context(node_id, state.seq)
        caller = state.caller

        def then(next_id: str | None, actions: list[Action]) -> list[Action]:
            return actions + (self._enter(state, next_id, depth=depth + 1) if next_id else [])

        if isinstance(node, PlayNode):
            return [Play(prompts=[node.prompt], loop=node.loop, context=ctx)]
        if isinstance(node, MenuNode):
            prompts = [retry_prompt, node.prompt] if retry_prompt else [node.prompt]
            if node.input == "dtmf":
                return [
                    Recognize(
                        mode="dtmf",
                        target=caller,
                        prompts=prompts,
                        max_tones=1,
                        silence_timeout=node.timeout_seconds,
                        context=ctx,
                    )
                ]
            choices = [{"label": c.label, "phrases": c.phrases or [c.label], "key": c.key} for c in node.choices]
            return [
                Recognize(
                    mode="choices",
                    target=caller,
                    prompts=prompts,
                    choices=choices,
                    silence_timeout=node.timeout_seconds,
                    context=ctx,
                )
            ]
        if isinstance(node, CollectDigitsNode):
            actions: list[Action] = []
            already_paused = state.vars.get("_paused_for") == node_id  # a retry: still paused
            if node.sensitive and not already_paused and state.recording_id and state.recording_state == "active":
                actions.append(self._recording("pause", state))
                state.vars["_paused_for"] = node_id
            prompts = [retry_prompt, node.prompt] if retry_prompt else [node.prompt]
            actions.append(
                Recognize(
                    mode="dtmf",
                    target=caller,
                    prompts=prompts,
                    max_tones=node.max_digits,
                    stop_keys=node.stop_keys,
                    silence_timeout=node.timeout_seconds,
                    inter_tone_timeout=node.inter_digit_timeout_seconds,
                    context=ctx,
                )
            )
            return actions
        if isinstance(node, TransferNode):
            if node.announcement:
                return [Play(prompts=[node.announcement], context=context(node_id, state.seq, "announce"))]
            return self._transfer(state, node, ctx)
        if isinstance(node, AddParticipantNode):
            return [AddParticipant(target=node.target, timeout_seconds=node.timeout_seconds, context=ctx)]
        if isinstance(node, SendDtmfNode):
            return [SendDtmf(tones=node.tones, to=self._who(state, node.to), context=ctx)]
        if isinstance(node, MuteNode):
            return then(node.next, [Mute(who=self._who(state, node.who), context=ctx)])
        if isinstance(node, HoldNode):
            return then(node.next, [Hold(who=self._who(state, node.who), music=node.music, context=ctx)])
        if isinstance(node, UnholdNode):
            return then(node.next, [Unhold(who=self._who(state, node.who), context=ctx)])
        if isinstance(node, RecordNode):
            if node.action == "start" and node.announcement:
                return [Play(prompts=[node.announcement], context=context(node_id, state.seq, "announce"))]
            return then(node.next, self._record_now(state, node))
        if isinstance(node, HangupNode):
            if node.prompt:
                return [Play(prompts=[node.prompt], context=context(node_id, state.seq, "announce"))]
            state.outcome.setdefault("ended_by_flow", node_id)
            return [Hangup(for_everyone=node.for_everyone)]
        raise TypeError(f"unknown node type {type(node).__name__}")

    @staticmethod
    def _who(state: CallState, who: str) -> str:
        return state.caller if who == "caller" else who

    def _recording(self, op: str, state: CallState) -> Recording:
        return Recording(
            op=op,
            recording_id=state.recording_id or None,
            channel=self.recording.channel,
            content=self.recording.content,
            format=self.recording.format,
            channel_order=[state.caller] if state.caller else [],
            container_url=self.recording.container_url,
            context=f"recording-{op}",
        )

    def _record_now(self, state: CallState, node: RecordNode) -> list[Action]:
        if node.action == "start":
            if state.recording_id and state.recording_state in ("active", "inactive"):
                return []
            return [self._recording("start", state)]
        if not state.recording_id:
            state.note(f"no recording to {node.action}")
            return []
        return [self._recording(node.action, state)]

    def _transfer(self, state: CallState, node: TransferNode, ctx: str) -> list[Action]:
        state.status = "transferring"
        state.outcome["transfer_target"] = node.target.to
        return [Transfer(target=node.target, context=ctx)]

    def _on_node_event(self, state: CallState, node: object, event: CallEvent, sub: str) -> list[Action]:
        kind = event.type
        ctx = context(state.node, state.seq)
        if sub == "announce":
            if kind not in ("PlayCompleted", "PlayFailed"):
                return []
            if isinstance(node, TransferNode):
                return self._transfer(state, node, ctx)
            if isinstance(node, RecordNode):
                return self._record_now(state, node) + (self._enter(state, node.next) if node.next else [])
            if isinstance(node, HangupNode):
                state.outcome.setdefault("ended_by_flow", state.node)
                return [Hangup(for_everyone=node.for_everyone)]
            return []
        if isinstance(node, PlayNode):
            if kind == "PlayCompleted":
                return self._enter(state, node.next) if node.next else []
            if kind == "PlayFailed":
                follow = node.on_failure or node.next
                state.note(f"play failed: {event.result.message}")
                return self._enter(state, follow) if follow else []
            return []
        if isinstance(node, MenuNode):
            return self._menu_event(state, node, event)
        if isinstance(node, CollectDigitsNode):
            return self._digits_event(state, node, event)
        if isinstance(node, TransferNode):
            if kind == "CallTransferAccepted":
                state.status = "transferred"
                state.outcome["transfer_result"] = "accepted"
                return []
            if kind == "CallTransferFailed":
                state.status = "connected"
                state.outcome["transfer_result"] = f"failed: {event.result.message}"
                return self._enter(state, node.on_failure)
            return []
        if isinstance(node, AddParticipantNode):
            if kind == "AddParticipantSucceeded":
                state.invitations.pop(event.operation_context or "", None)
                state.outcome.setdefault("added", []).append(event.participant)
                return self._enter(state, node.next)
            if kind in ("AddParticipantFailed", "CancelAddParticipantSucceeded"):
                state.invitations.pop(event.operation_context or "", None)
                return self._enter(state, node.on_failure)
            return []
        if isinstance(node, SendDtmfNode):
            if kind in ("SendDtmfTonesCompleted", "SendDtmfTonesFailed"):
                return self._enter(state, node.next) if node.next else []
            return []
        return []

    def _menu_event(self, state: CallState, node: MenuNode, event: CallEvent) -> list[Action]:
        if event.type == "RecognizeCompleted":
            kind, tones, label, speech = event.recognition
            choice = None
            if label:
                choice = next((c for c in node.choices if c.label == label), None)
            elif tones:
                key = TONE_KEYS.get(tones[0])
                choice = next((c for c in node.choices if c.key == key), None)
            if choice is not None:
                if node.store_as:
                    state.vars[node.store_as] = choice.label
                spoken = bool(speech or event.recognized_phrase)
                state.outcome.setdefault("menu", []).append(
                    {"node": state.node, "choice": choice.label, "by": "speech" if spoken else "dtmf"}
                )
                return self._enter(state, choice.next)
            return self._menu_retry(state, node, invalid=True)
        if event.type == "RecognizeFailed":
            invalid = event.result.sub_code != INITIAL_SILENCE_SUBCODE
            return self._menu_retry(state, node, invalid=invalid)
        return []

    def _menu_retry(self, state: CallState, node: MenuNode, *, invalid: bool) -> list[Action]:
        state.attempt += 1
        state.outcome.setdefault("menu_misses", []).append("invalid" if invalid else "no input")
        if state.attempt > node.retries:
            state.note(f"{state.node}: no valid choice after {state.attempt} attempt(s)")
            return self._enter(state, node.on_failure)
        prompt = (node.invalid_prompt if invalid else node.no_input_prompt) or Prompt(
            text="Sorry, that is not a valid choice." if invalid else "Sorry, I did not hear a choice."
        )
        attempt = state.attempt
        actions = self._enter(state, state.node, retry_prompt=prompt)
        state.attempt = attempt
        return actions

    def _digits_event(self, state: CallState, node: CollectDigitsNode, event: CallEvent) -> list[Action]:
        def leave(next_id: str) -> list[Action]:
            # Resume a recording paused for this node only when leaving it: a retry stays paused.
            resume: list[Action] = []
            if state.vars.get("_paused_for") == state.node:
                state.vars.pop("_paused_for")
                resume = [self._recording("resume", state)]
            return resume + self._enter(state, next_id)

        if event.type == "RecognizeCompleted":
            _, tones, _, _ = event.recognition
            digits = "".join(TONE_KEYS.get(t, "") for t in tones)
            if digits:
                # Sensitive digits are not kept in state (it is not a vault); the flow sees how many came.
                state.vars[node.store_as] = ("*" * len(digits)) if node.sensitive else digits
                return leave(node.next)
        if event.type in ("RecognizeCompleted", "RecognizeFailed"):
            state.attempt += 1
            if state.attempt > node.retries:
                return leave(node.on_failure)
            attempt = state.attempt
            actions = self._enter(
                state, state.node, retry_prompt=node.invalid_prompt or Prompt(text="Sorry, I did not get that.")
            )
            state.attempt = attempt
            return actions
        return []
