"""The flow engine: (state, event) -> actions. Pure: no SDK, no storage, no clock.

Every action the engine asks for carries an operation context ``"<node>#<seq>"`` (``seq`` grows each time a node is
entered). An event whose context names an older ``seq`` is stale (a late or out-of-order delivery) and is ignored,
so it can never move the call twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.calls.events import CallEvent
from core.calls.state import CallState

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


def _fill_prompts(action: Any, values: dict[str, str]) -> Action:
    return action.model_copy(update={"prompts": [_fill_prompt(p, values) for p in action.prompts]})


def _fill_music(action: Any, values: dict[str, str]) -> Action:
    if not action.music:
        return action
    return action.model_copy(update={"music": _fill_prompt(action.music, values)})


def _fill_target(action: Any, values: dict[str, str]) -> Action:
    target = action.target.model_copy(
        update={
            "to": fill(action.target.to, values) or action.target.to,
            "caller_id": fill(action.target.caller_id, values),
        }
    )
    return action.model_copy(update={"target": target})


# Action kind -> how call variables fill into it (its prompts, its music, its target); other kinds take none.
_FILLERS = {
    "play": _fill_prompts,
    "recognize": _fill_prompts,
    "hold": _fill_music,
    "transfer": _fill_target,
    "add_participant": _fill_target,
}


def render(action: Action, values: dict[str, str]) -> Action:
    """Fill call variables into an action's prompts and targets."""
    filler = _FILLERS.get(action.kind)
    if not values or filler is None:
        return action
    return filler(action, values)


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
    """The call's state machine: a table of the events that concern the call itself, and per node type a table of
    what entering the node does and how it reacts to its own events (found by the event's operation context)."""

    def __init__(self, flows: dict[str, Flow], recording: RecordingOptions | None = None) -> None:
        self.flows = flows
        self.recording = recording or RecordingOptions()
        Reaction = Callable[[CallState, CallEvent], list[Action]]
        # Events about the call, whatever node it is at.
        self._call_events: dict[str, Reaction] = {
            "CallConnected": self._connected,
            "ParticipantsUpdated": self._participants_updated,
            "CallDisconnected": self._disconnected,
            "ConnectFailed": self._failed,
            "CreateCallFailed": self._failed,
            "AnswerFailed": self._failed,
            "RecordingStateChanged": self._recording_changed,
            "ContinuousDtmfRecognitionToneReceived": self._tone,
        }
        # Node type -> what entering it does: (state, node id, node, retry prompt, depth) -> actions.
        self._entering: dict[str, Callable[..., list[Action]]] = {
            "play": self._enter_play,
            "menu": self._enter_menu,
            "collect_digits": self._enter_collect_digits,
            "transfer": self._enter_transfer,
            "add_participant": self._enter_add_participant,
            "send_dtmf": self._enter_send_dtmf,
            "mute": self._enter_mute,
            "hold": self._enter_hold,
            "unhold": self._enter_unhold,
            "record": self._enter_record,
            "hangup": self._enter_hangup,
        }
        # Node type -> its reaction to an event of its own: (state, node, event) -> actions (other types: none).
        self._node_events: dict[str, Callable[..., list[Action]]] = {
            "play": self._play_event,
            "menu": self._menu_event,
            "collect_digits": self._digits_event,
            "transfer": self._transfer_event,
            "add_participant": self._add_participant_event,
            "send_dtmf": self._send_dtmf_event,
        }
        # Node type -> what follows its announcement (a prompt played before the node acts): (state, node).
        self._after_announcement: dict[str, Callable[..., list[Action]]] = {
            "transfer": lambda state, node: self._transfer(state, node, context(state.node, state.seq)),
            "record": lambda state, node: self._record_now(state, node) + self._maybe_enter(state, node.next),
            "hangup": self._flow_hangs_up,
        }

    # -- entry points ------------------------------------------------------------------------

    def handle(self, state: CallState, event: CallEvent) -> list[Action]:
        """Advance the call for one event; return what to do on the call."""
        # A CallDisconnected after a transfer carries the transfer's context: it must not replace its result.
        if (event.operation_context or "").startswith(API_CONTEXT) and event.type != "CallDisconnected":
            self._api_result(state, event)
        return [render(action, state.vars) for action in self._react(state, event)]

    def on_result(self, state: CallState, action: Action, result: dict[str, str]) -> None:
        """Keep what a synchronous response told us (invitation ids, recording ids)."""
        if action.kind == "add_participant" and result.get("invitation_id") and action.context:
            state.invitations[action.context] = result["invitation_id"]
        if action.kind == "recording" and action.op == "start" and result.get("recording_id"):
            state.recording_id = result["recording_id"]
            state.recording_state = result.get("recording_state", "active")

    def _react(self, state: CallState, event: CallEvent) -> list[Action]:
        if event.call_connection_id:
            state.call_connection_id = event.call_connection_id
        if event.server_call_id:
            state.server_call_id = event.server_call_id
        if event.correlation_id:
            state.correlation_id = event.correlation_id
        about_the_call = self._call_events.get(event.type)
        if about_the_call is not None:
            return about_the_call(state, event)
        if state.status == "ended":
            return []
        return self._node_event(state, event)

    def _node_event(self, state: CallState, event: CallEvent) -> list[Action]:
        """An event of an action a node asked for: to the node the call is at, unless it is stale."""
        parsed = parse_context(event.operation_context)
        if parsed is None:
            return []
        node_id, seq, sub = parsed
        if node_id == SIMRING and state.simring:  # a flow may have a node of that name
            return self._simring(state, event)
        if seq != state.seq or node_id != state.node:
            state.stale_events += 1
            state.note(f"ignored stale {event.type} for {node_id}#{seq} (now at {state.node}#{state.seq})")
            return []
        flow = self.flows.get(state.flow)
        if flow is None or state.node not in flow.nodes:
            # The flow changed under a live call (a new deployment): finish the call politely.
            state.note(f"flow {state.flow} has no node {state.node} any more; hanging up")
            return [Hangup(for_everyone=True)]
        node = flow.nodes[state.node]
        if sub == "announce":
            return self._announced(state, node, event)
        reaction = self._node_events.get(node.type)
        return reaction(state, node, event) if reaction is not None else []

    def _announced(self, state: CallState, node: Any, event: CallEvent) -> list[Action]:
        if event.type not in ("PlayCompleted", "PlayFailed"):
            return []
        # One announcement leads on once, even if the service reports its end twice.
        if state.vars.get("_announced") == event.operation_context:
            return []
        state.vars["_announced"] = event.operation_context or ""
        after = self._after_announcement.get(node.type)
        return after(state, node) if after is not None else []

    # -- API results -------------------------------------------------------------------------

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

    # -- events about the call --------------------------------------------------------------

    def _flow(self, state: CallState) -> Flow:
        return self.flows[state.flow]

    def _connected(self, state: CallState, event: CallEvent) -> list[Action]:
        state.connected_at = state.connected_at or event.time or ""
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

    @staticmethod
    def _participants_updated(state: CallState, event: CallEvent) -> list[Action]:
        state.participants = event.participants
        return []

    def _disconnected(self, state: CallState, event: CallEvent) -> list[Action]:
        state.outcome.setdefault("ended", event.result.message or "disconnected")
        state.status = "ended"
        state.ended_at = state.ended_at or event.time or ""
        self._drop_inputs(state)
        return []

    def _failed(self, state: CallState, event: CallEvent) -> list[Action]:
        """The call could not be set up or joined (ConnectFailed, CreateCallFailed, AnswerFailed)."""
        self._drop_inputs(state)
        state.status = "ended"
        state.ended_at = state.ended_at or event.time or ""
        state.outcome["failed"] = f"{event.type}: {event.result.message}"
        state.outcome["failed_code"] = event.result.code  # 408 no answer, 486 busy, 603 declined
        return []

    @staticmethod
    def _recording_changed(state: CallState, event: CallEvent) -> list[Action]:
        state.recording_id = event.recording_id or state.recording_id
        state.recording_state = event.recording_state or state.recording_state
        return []

    # Sensitive digits (a ``collect_digits`` node with ``sensitive``, e.g. a card number) are kept out of the state,
    # the call's history and its record: continuous DTMF (a flow's ``on_tone``) is stopped before the node's
    # recognize starts and started again once the call leaves it, and a continuous-DTMF tone that reaches the app
    # meanwhile (late, or sent anyway) is dropped unseen; the digits collected are stored as a mask. The inputs of
    # recognitions asked through the control API (tones, speech) are kept for ``GET /api/calls/{id}`` while the
    # call lasts and dropped when it ends.
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

    def _act(self, state: CallState, node_id: str, node: Any, retry_prompt: Prompt | None, depth: int) -> list[Action]:
        """The actions of a node just entered (and of the nodes after it that finish at once)."""
        entering = self._entering.get(node.type)
        if entering is None:
            raise TypeError(f"unknown node type {type(node).__name__}")
        return entering(state, node_id, node, retry_prompt, depth)

    def _then(self, state: CallState, next_id: str | None, actions: list[Action], depth: int) -> list[Action]:
        """A node that finishes at once: its actions, then those of the node after it."""
        return actions + (self._enter(state, next_id, depth=depth + 1) if next_id else [])

    def _maybe_enter(self, state: CallState, next_id: str | None) -> list[Action]:
        return self._enter(state, next_id) if next_id else []

    @staticmethod
    def _announce(state: CallState, node_id: str, prompt: Prompt) -> list[Action]:
        """Play a node's announcement first; the node acts once it has played (``_announced``)."""
        return [Play(prompts=[prompt], context=context(node_id, state.seq, "announce"))]

    def _enter_play(self, state: CallState, node_id: str, node: PlayNode, *_: object) -> list[Action]:
        return [Play(prompts=[node.prompt], loop=node.loop, context=context(node_id, state.seq))]

    def _enter_menu(
        self, state: CallState, node_id: str, node: MenuNode, retry_prompt: Prompt | None, _: int
    ) -> list[Action]:
        prompts = [retry_prompt, node.prompt] if retry_prompt else [node.prompt]
        common = {"target": state.caller, "prompts": prompts, "silence_timeout": node.timeout_seconds}
        if node.input == "dtmf":
            return [Recognize(mode="dtmf", max_tones=1, context=context(node_id, state.seq), **common)]
        choices = [{"label": c.label, "phrases": c.phrases or [c.label], "key": c.key} for c in node.choices]
        return [Recognize(mode="choices", choices=choices, context=context(node_id, state.seq), **common)]

    def _enter_collect_digits(
        self, state: CallState, node_id: str, node: CollectDigitsNode, retry_prompt: Prompt | None, _: int
    ) -> list[Action]:
        actions: list[Action] = []
        already_paused = state.vars.get("_paused_for") == node_id  # a retry: still paused
        if node.sensitive and not already_paused and state.recording_id and state.recording_state == "active":
            actions.append(self._recording("pause", state))
            state.vars["_paused_for"] = node_id
        prompts = [retry_prompt, node.prompt] if retry_prompt else [node.prompt]
        actions.append(
            Recognize(
                mode="dtmf",
                target=state.caller,
                prompts=prompts,
                max_tones=node.max_digits,
                stop_keys=node.stop_keys,
                silence_timeout=node.timeout_seconds,
                inter_tone_timeout=node.inter_digit_timeout_seconds,
                context=context(node_id, state.seq),
            )
        )
        return actions

    def _enter_transfer(self, state: CallState, node_id: str, node: TransferNode, *_: object) -> list[Action]:
        if node.announcement:
            return self._announce(state, node_id, node.announcement)
        return self._transfer(state, node, context(node_id, state.seq))

    def _enter_add_participant(
        self, state: CallState, node_id: str, node: AddParticipantNode, *_: object
    ) -> list[Action]:
        ctx = context(node_id, state.seq)
        return [AddParticipant(target=node.target, timeout_seconds=node.timeout_seconds, context=ctx)]

    def _enter_send_dtmf(self, state: CallState, node_id: str, node: SendDtmfNode, *_: object) -> list[Action]:
        return [SendDtmf(tones=node.tones, to=self._who(state, node.to), context=context(node_id, state.seq))]

    def _enter_mute(self, state: CallState, node_id: str, node: MuteNode, _: object, depth: int) -> list[Action]:
        mute = Mute(who=self._who(state, node.who), context=context(node_id, state.seq))
        return self._then(state, node.next, [mute], depth)

    def _enter_hold(self, state: CallState, node_id: str, node: HoldNode, _: object, depth: int) -> list[Action]:
        hold = Hold(who=self._who(state, node.who), music=node.music, context=context(node_id, state.seq))
        return self._then(state, node.next, [hold], depth)

    def _enter_unhold(self, state: CallState, node_id: str, node: UnholdNode, _: object, depth: int) -> list[Action]:
        unhold = Unhold(who=self._who(state, node.who), context=context(node_id, state.seq))
        return self._then(state, node.next, [unhold], depth)

    def _enter_record(self, state: CallState, node_id: str, node: RecordNode, _: object, depth: int) -> list[Action]:
        if node.action == "start" and node.announcement:
            return self._announce(state, node_id, node.announcement)
        return self._then(state, node.next, self._record_now(state, node), depth)

    def _enter_hangup(self, state: CallState, node_id: str, node: HangupNode, *_: object) -> list[Action]:
        if node.prompt:
            return self._announce(state, node_id, node.prompt)
        return self._flow_hangs_up(state, node)

    @staticmethod
    def _flow_hangs_up(state: CallState, node: HangupNode) -> list[Action]:
        state.outcome.setdefault("ended_by_flow", state.node)
        return [Hangup(for_everyone=node.for_everyone)]

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

    # -- a node's reactions to its own events --------------------------------------------------

    def _play_event(self, state: CallState, node: PlayNode, event: CallEvent) -> list[Action]:
        if event.type == "PlayCompleted":
            return self._maybe_enter(state, node.next)
        if event.type == "PlayFailed":
            state.note(f"play failed: {event.result.message}")
            return self._maybe_enter(state, node.on_failure or node.next)
        return []

    def _transfer_event(self, state: CallState, node: TransferNode, event: CallEvent) -> list[Action]:
        if event.type == "CallTransferAccepted":
            state.status = "transferred"
            state.outcome["transfer_result"] = "accepted"
            return []
        if event.type == "CallTransferFailed":
            state.status = "connected"
            state.outcome["transfer_result"] = f"failed: {event.result.message}"
            return self._enter(state, node.on_failure)
        return []

    def _add_participant_event(self, state: CallState, node: AddParticipantNode, event: CallEvent) -> list[Action]:
        if event.type == "AddParticipantSucceeded":
            state.invitations.pop(event.operation_context or "", None)
            state.outcome.setdefault("added", []).append(event.participant)
            return self._enter(state, node.next)
        if event.type in ("AddParticipantFailed", "CancelAddParticipantSucceeded"):
            state.invitations.pop(event.operation_context or "", None)
            return self._enter(state, node.on_failure)
        return []

    def _send_dtmf_event(self, state: CallState, node: SendDtmfNode, event: CallEvent) -> list[Action]:
        if event.type in ("SendDtmfTonesCompleted", "SendDtmfTonesFailed"):
            return self._maybe_enter(state, node.next)
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
