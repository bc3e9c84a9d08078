"""The flow engine, driven with CallState and synthetic ACS events: (state, event) -> actions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from core.calls.events import CallEvent, parse_call_event
from core.calls.state import CallState
from core.flows.actions import (
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
from core.flows.engine import KEY_TONES, FlowEngine, RecordingOptions, context, parse_context
from core.flows.model import Flow, FlowSet, Prompt, Target

ROOT = Path(__file__).resolve().parents[2]
CALLER = "4:+14255551234"
CALLEE = "4:+18005550100"
DEFAULT_FLOWS = dict(FlowSet.model_validate(json.loads((ROOT / "flows" / "default.json").read_text())).root)
CS = DEFAULT_FLOWS["customer_service"]
_ids = itertools.count(1)


def ev(kind: str, ctx: str | None = None, **data: Any) -> CallEvent:
    payload: dict[str, Any] = {"callConnectionId": "conn-1", "serverCallId": "server-1", "correlationId": "corr-1"}
    if ctx is not None:
        payload["operationContext"] = ctx
    payload.update(data)
    return parse_call_event({"id": f"evt-{next(_ids)}", "type": f"Microsoft.Communication.{kind}", "data": payload})


def result(code: int, sub_code: int, message: str = "") -> dict[str, Any]:
    return {"resultInformation": {"code": code, "subCode": sub_code, "message": message}}


def tones(ctx: str, *names: str) -> CallEvent:
    return ev("RecognizeCompleted", ctx, recognitionType="dtmf", dtmfResult={"tones": list(names)}, **result(200, 8531))


def choice(ctx: str, label: str, phrase: str | None = None) -> CallEvent:
    chosen: dict[str, Any] = {"label": label}
    if phrase:
        chosen["recognizedPhrase"] = phrase
    return ev("RecognizeCompleted", ctx, recognitionType="choices", choiceResult=chosen, **result(200, 8545))


def no_input(ctx: str) -> CallEvent:
    return ev("RecognizeFailed", ctx, **result(400, 8510, "Action failed, initial silence timeout reached."))


def played(ctx: str) -> CallEvent:
    return ev("PlayCompleted", ctx, **result(200, 0))


def tone_anywhere(tone: str, seq: int = 1) -> CallEvent:
    return ev("ContinuousDtmfRecognitionToneReceived", "continuous-dtmf", tone=tone, sequenceId=seq)


def flows_of(data: dict[str, Any]) -> dict[str, Flow]:
    flows = FlowSet.model_validate(data)
    assert flows.check() == [], flows.check()
    return dict(flows.root)


def new_state(flow: str = "customer_service", **fields: Any) -> CallState:
    return CallState(call_ref="call-1", flow=flow, caller=CALLER, callee=CALLEE, **fields)


def connected(engine: FlowEngine, state: CallState) -> list[Action]:
    return engine.handle(state, ev("CallConnected", "answer"))


def only(actions: list[Action], kind: type) -> Any:
    assert len(actions) == 1 and isinstance(actions[0], kind), actions
    return actions[0]


def kinds(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions]


@pytest.fixture
def engine() -> FlowEngine:
    return FlowEngine(DEFAULT_FLOWS)


@pytest.fixture
def state() -> CallState:
    return new_state()


def at_menu(engine: FlowEngine, state: CallState) -> Recognize:
    connected(engine, state)
    return only(engine.handle(state, played("welcome#1")), Recognize)


# -- contexts -------------------------------------------------------------------------------------


def test_operation_contexts() -> None:
    assert context("main_menu", 3) == "main_menu#3"
    assert context("sales", 4, "announce") == "sales#4:announce"
    assert parse_context("sales#4:announce") == ("sales", 4, "announce")
    assert parse_context("a#b#2") == ("a#b", 2, "")
    for value in (None, "", "answer", "continuous-dtmf", "node#x", "recording-start"):
        assert parse_context(value) is None


# -- the default flow -----------------------------------------------------------------------------


def test_call_connected_starts_continuous_dtmf_and_plays_welcome(engine: FlowEngine, state: CallState) -> None:
    actions = connected(engine, state)
    assert actions == [
        ContinuousDtmf(who=CALLER, context="continuous-dtmf"),
        Play(prompts=[CS.nodes["welcome"].prompt], context="welcome#1"),
    ]
    assert (state.status, state.node, state.seq) == ("connected", "welcome", 1)
    assert state.continuous_dtmf is True
    assert state.participants == [CALLER]
    assert (state.call_connection_id, state.server_call_id, state.correlation_id) == ("conn-1", "server-1", "corr-1")


def test_a_second_call_connected_changes_nothing(engine: FlowEngine, state: CallState) -> None:
    connected(engine, state)
    assert connected(engine, state) == []
    assert (state.node, state.seq) == ("welcome", 1)


def test_no_continuous_dtmf_without_on_tone() -> None:
    flows = flows_of({"f": {"start": "bye", "nodes": {"bye": {"type": "hangup"}}}})
    state = new_state("f")
    assert connected(FlowEngine(flows), state) == [Hangup(for_everyone=True)]
    assert state.continuous_dtmf is False
    assert state.outcome["ended_by_flow"] == "bye"


def test_recording_on_connect_starts_first(state: CallState) -> None:
    engine = FlowEngine(DEFAULT_FLOWS, RecordingOptions(mode="on_connect", channel="mixed", format="mp3"))
    actions = connected(engine, state)
    assert kinds(actions) == ["recording", "continuous_dtmf", "play"]
    start = actions[0]
    assert isinstance(start, Recording)
    assert (start.op, start.channel, start.format, start.channel_order) == ("start", "mixed", "mp3", [CALLER])


def test_welcome_completed_starts_the_menu(engine: FlowEngine, state: CallState) -> None:
    recognize = at_menu(engine, state)
    assert recognize.mode == "choices"
    assert recognize.target == CALLER
    assert recognize.context == "main_menu#2"
    assert recognize.prompts == [CS.nodes["main_menu"].prompt]
    assert recognize.silence_timeout == 5
    assert recognize.choices == [
        {"label": "sales", "phrases": ["sales", "buy"], "key": "1"},
        {"label": "support", "phrases": ["support", "help"], "key": "2"},
        {"label": "operator", "phrases": ["operator", "agent", "representative"], "key": "0"},
    ]


def test_menu_choice_by_tone(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    play = only(engine.handle(state, tones("main_menu#2", "two")), Play)
    assert play.context == "support#3:announce"
    assert play.prompts == [Prompt(text="Connecting you to support.")]
    assert state.outcome["menu"] == [{"node": "main_menu", "choice": "support", "by": "dtmf"}]


def test_menu_choice_by_tone_in_choices_mode(engine: FlowEngine, state: CallState) -> None:
    # A key pressed during a choices recognize comes back as the choice's label, without a phrase.
    at_menu(engine, state)
    play = only(engine.handle(state, choice("main_menu#2", "operator")), Play)
    assert play.context == "operator#3:announce"
    assert state.outcome["menu"] == [{"node": "main_menu", "choice": "operator", "by": "dtmf"}]


def test_menu_choice_by_label_spoken(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    play = only(engine.handle(state, choice("main_menu#2", "sales", "buy")), Play)
    assert play.context == "sales#3:announce"
    assert state.outcome["menu"] == [{"node": "main_menu", "choice": "sales", "by": "speech"}]


def test_no_input_retries_then_goes_to_on_failure(engine: FlowEngine, state: CallState) -> None:
    menu = CS.nodes["main_menu"]
    at_menu(engine, state)
    retry = only(engine.handle(state, no_input("main_menu#2")), Recognize)
    assert retry.prompts == [Prompt(text="Sorry, I did not hear a choice."), menu.prompt]
    assert retry.context == "main_menu#3"
    assert state.attempt == 1
    retry = only(engine.handle(state, no_input("main_menu#3")), Recognize)
    assert retry.context == "main_menu#4" and retry.prompts[0] == menu.no_input_prompt
    assert state.attempt == 2
    # retries: 2 -> the third miss goes to on_failure (the operator).
    play = only(engine.handle(state, no_input("main_menu#4")), Play)
    assert play.context == "operator#5:announce"
    assert state.attempt == 0
    assert state.outcome["menu_misses"] == ["no input", "no input", "no input"]


def test_invalid_input_uses_invalid_prompt(engine: FlowEngine, state: CallState) -> None:
    menu = CS.nodes["main_menu"]
    at_menu(engine, state)
    retry = only(engine.handle(state, tones("main_menu#2", "nine")), Recognize)
    assert retry.prompts == [menu.invalid_prompt, menu.prompt]
    retry = only(engine.handle(state, ev("RecognizeFailed", "main_menu#3", **result(400, 8534))), Recognize)
    assert retry.prompts == [menu.invalid_prompt, menu.prompt]
    assert state.outcome["menu_misses"] == ["invalid", "invalid"]
    # A valid choice after retries still counts.
    play = only(engine.handle(state, tones("main_menu#4", "one")), Play)
    assert play.context == "sales#5:announce"


def test_mixed_misses_share_the_retry_budget(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    engine.handle(state, no_input("main_menu#2"))
    engine.handle(state, choice("main_menu#3", "nonsense"))
    assert kinds(engine.handle(state, no_input("main_menu#4"))) == ["play"]
    assert state.node == "operator"


def test_built_in_retry_prompts_and_zero_retries() -> None:
    flows = flows_of(
        {
            "f": {
                "start": "menu",
                "nodes": {
                    "menu": {
                        "type": "menu",
                        "input": "dtmf",
                        "prompt": {"audio": "https://media.example/menu.wav"},
                        "choices": [{"key": "1", "label": "one", "next": "bye"}],
                        "retries": 1,
                        "timeout_seconds": 9,
                        "on_failure": "strict",
                    },
                    "strict": {
                        "type": "menu",
                        "input": "dtmf",
                        "prompt": {"audio": "https://media.example/strict.wav"},
                        "choices": [{"key": "#", "label": "pound", "next": "bye"}],
                        "retries": 0,
                        "on_failure": "bye",
                    },
                    "bye": {"type": "hangup"},
                },
            }
        }
    )
    engine, state = FlowEngine(flows), new_state("f")
    first = only(connected(engine, state), Recognize)
    assert (first.mode, first.max_tones, first.silence_timeout, first.choices) == ("dtmf", 1, 9, [])
    retry = only(engine.handle(state, no_input("menu#1")), Recognize)
    assert retry.prompts[0] == Prompt(text="Sorry, I did not hear a choice.")
    strict = only(engine.handle(state, tones("menu#2", "five")), Recognize)
    assert strict.context == "strict#3"
    assert engine.handle(state, tones("strict#3", "pound")) == [Hangup(for_everyone=True)]
    state2 = new_state("f")
    connected(engine, state2)
    engine.handle(state2, tones("menu#1", "two"))
    retry = engine.handle(state2, no_input("menu#2"))  # second miss of 'menu' -> 'strict'
    assert only(retry, Recognize).context == "strict#3"
    assert engine.handle(state2, tones("strict#3", "one")) == [Hangup(for_everyone=True)]  # retries 0


def test_transfer_announcement_then_transfer(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    engine.handle(state, tones("main_menu#2", "one"))
    transfer = only(engine.handle(state, played("sales#3:announce")), Transfer)
    assert transfer.context == "sales#3"
    assert transfer.target == Target(to="+14255550101", sip_headers={"X-MS-Custom-Queue": "sales"})
    assert state.status == "transferring"
    assert state.outcome["transfer_target"] == "+14255550101"
    assert engine.handle(state, ev("CallTransferAccepted", "sales#3", **result(202, 7015))) == []
    assert state.status == "transferred"
    assert state.outcome["transfer_result"] == "accepted"


def test_a_failed_announcement_still_transfers(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    engine.handle(state, tones("main_menu#2", "two"))
    failed = ev("PlayFailed", "support#3:announce", **result(400, 8536, "file could not be downloaded"))
    transfer = only(engine.handle(state, failed), Transfer)
    assert transfer.target.to == "8:acs:support-agent" and transfer.target.voip_headers == {"queue": "support"}


def test_transfer_failed_apologises_then_hangs_up(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    engine.handle(state, tones("main_menu#2", "one"))
    engine.handle(state, played("sales#3:announce"))
    apology = only(engine.handle(state, ev("CallTransferFailed", "sales#3", **result(486, 0, "busy"))), Play)
    assert apology.context == "apology#4:announce"
    assert apology.prompts == [CS.nodes["apology"].prompt]
    assert state.status == "connected"
    assert state.outcome["transfer_result"] == "failed: busy"
    assert engine.handle(state, played("apology#4:announce")) == [Hangup(for_everyone=True)]
    assert state.outcome["ended_by_flow"] == "apology"


def test_transfer_without_announcement() -> None:
    flows = flows_of(
        {
            "f": {
                "start": "go",
                "nodes": {
                    "go": {"type": "transfer", "target": {"to": "+1"}, "on_failure": "bye"},
                    "bye": {"type": "hangup", "for_everyone": False},
                },
            }
        }
    )
    engine, state = FlowEngine(flows), new_state("f")
    assert only(connected(engine, state), Transfer).context == "go#1"
    assert engine.handle(state, ev("CallTransferFailed", "go#1", **result(408, 0))) == [Hangup(for_everyone=False)]


# -- stale, out-of-order and duplicate events -----------------------------------------------------


def test_stale_events_cause_no_action(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    assert engine.handle(state, played("welcome#1")) == []  # a redelivery with a new id
    assert engine.handle(state, tones("main_menu#1", "one")) == []  # an old seq of the current node
    assert engine.handle(state, tones("welcome#2", "one")) == []  # the current seq, another node
    assert (state.node, state.seq, state.stale_events) == ("main_menu", 2, 3)
    assert "ignored stale PlayCompleted for welcome#1 (now at main_menu#2)" in state.history


def test_out_of_order_events_cause_no_action(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    engine.handle(state, no_input("main_menu#2"))  # now main_menu#3
    # The first attempt's late events, and the welcome's, arrive after the retry started.
    assert engine.handle(state, ev("RecognizeCanceled", "main_menu#2")) == []
    assert engine.handle(state, tones("main_menu#2", "one")) == []
    assert engine.handle(state, played("welcome#1")) == []
    assert (state.node, state.seq, state.attempt) == ("main_menu", 3, 1)
    assert only(engine.handle(state, tones("main_menu#3", "one")), Play).context == "sales#4:announce"


def test_duplicate_events_move_the_call_once(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    first = tones("main_menu#2", "one")
    assert kinds(engine.handle(state, first)) == ["play"]
    assert engine.handle(state, first) == []
    assert engine.handle(state, tones("main_menu#2", "two")) == []
    engine.handle(state, played("sales#3:announce"))
    engine.handle(state, ev("CallTransferFailed", "sales#3", **result(603, 0)))
    assert engine.handle(state, ev("CallTransferFailed", "sales#3", **result(603, 0))) == []
    assert state.node == "apology"


@pytest.mark.parametrize("ctx", [None, "answer", "continuous-dtmf", "recording-start", "main_menu#two", "#2"])
def test_events_without_a_flow_context_cause_no_action(engine: FlowEngine, state: CallState, ctx: str | None) -> None:
    at_menu(engine, state)
    assert engine.handle(state, tones(ctx, "one") if ctx else ev("RecognizeCompleted")) == []  # type: ignore[arg-type]
    assert (state.node, state.seq) == ("main_menu", 2)


def test_nothing_happens_after_the_call_ended(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    assert engine.handle(state, ev("CallDisconnected", **result(200, 0, "hung up"))) == []
    assert state.status == "ended" and state.outcome["ended"] == "hung up"
    assert engine.handle(state, tones("main_menu#2", "one")) == []
    assert engine.handle(state, tone_anywhere("asterisk")) == []


@pytest.mark.parametrize("kind", ["ConnectFailed", "CreateCallFailed", "AnswerFailed"])
def test_setup_failures_end_the_call(engine: FlowEngine, state: CallState, kind: str) -> None:
    assert engine.handle(state, ev(kind, "answer", **result(500, 8500, "no"))) == []
    assert state.status == "ended" and state.outcome["failed"] == f"{kind}: no"


def test_participants_updated(engine: FlowEngine, state: CallState) -> None:
    data = {"participants": [{"identifier": {"rawId": CALLER}}, {"identifier": {"rawId": "8:acs:agent"}}]}
    assert engine.handle(state, ev("ParticipantsUpdated", **data)) == []
    assert state.participants == [CALLER, "8:acs:agent"]


# -- continuous DTMF ------------------------------------------------------------------------------


def test_star_cancels_media_and_goes_to_the_operator(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    actions = engine.handle(state, tone_anywhere("asterisk"))
    assert kinds(actions) == ["cancel_media", "play"]
    assert actions[1].context == "operator#3:announce"
    assert state.outcome["tones"] == ["*"]
    # The canceled recognize reports back: stale, no action.
    assert engine.handle(state, ev("RecognizeCanceled", "main_menu#2")) == []
    assert engine.handle(state, no_input("main_menu#2")) == []
    assert only(engine.handle(state, played("operator#3:announce")), Transfer).target.to == "+14255550100"


def test_star_cancels_pending_invitations(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    state.invitations = {"agent#1": "inv-1", "agent#2": "inv-2"}
    actions = engine.handle(state, tone_anywhere("Asterisk"))
    assert actions[:3] == [
        CancelMedia(),
        CancelAddParticipant(invitation_id="inv-1"),
        CancelAddParticipant(invitation_id="inv-2"),
    ]
    assert state.invitations == {}


@pytest.mark.parametrize("tone", ["five", "pound", "nonsense", None])
def test_other_tones_are_ignored(engine: FlowEngine, state: CallState, tone: str | None) -> None:
    at_menu(engine, state)
    assert engine.handle(state, tone_anywhere(tone)) == []  # type: ignore[arg-type]
    assert (state.node, state.seq) == ("main_menu", 2)


def test_star_is_ignored_while_transferring(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    engine.handle(state, tones("main_menu#2", "one"))
    engine.handle(state, played("sales#3:announce"))
    assert engine.handle(state, tone_anywhere("asterisk")) == []
    assert state.node == "sales"


# -- collect digits -------------------------------------------------------------------------------


def digits_flow(sensitive: bool, retries: int = 1) -> dict[str, Flow]:
    return flows_of(
        {
            "pay": {
                "start": "card",
                "on_tone": {"*": "agent"},
                "nodes": {
                    "card": {
                        "type": "collect_digits",
                        "prompt": {"audio": "https://media.example/card.wav"},
                        "max_digits": 16,
                        "stop_keys": "#*",
                        "inter_digit_timeout_seconds": 4,
                        "store_as": "card",
                        "sensitive": sensitive,
                        "retries": retries,
                        "invalid_prompt": {"audio": "https://media.example/again.wav"},
                        "next": "thanks",
                        "on_failure": "agent",
                    },
                    "thanks": {"type": "play", "prompt": {"audio": "https://media.example/thanks.wav"}},
                    "agent": {"type": "transfer", "target": {"to": "+14255550100"}, "on_failure": "thanks"},
                },
            }
        }
    )


def test_collect_digits_stores_the_digits() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=False)), new_state("pay")
    actions = connected(engine, state)
    recognize = actions[-1]
    assert isinstance(recognize, Recognize)
    assert (recognize.mode, recognize.max_tones, recognize.stop_keys) == ("dtmf", 16, "#*")
    assert (recognize.silence_timeout, recognize.inter_tone_timeout, recognize.context) == (5, 4, "card#1")
    play = only(engine.handle(state, tones("card#1", "four", "one", "one", "one")), Play)
    assert play.context == "thanks#2"
    assert state.vars["card"] == "4111"


def test_sensitive_digits_are_masked() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=True)), new_state("pay")
    connected(engine, state)
    engine.handle(state, tones("card#1", "four", "one", "one", "one"))
    assert state.vars["card"] == "****"
    assert "4111" not in state.model_dump_json()


def test_collect_digits_retry_then_on_failure() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=False)), new_state("pay")
    connected(engine, state)
    retry = only(engine.handle(state, no_input("card#1")), Recognize)
    assert retry.prompts == [
        Prompt(audio="https://media.example/again.wav"),
        Prompt(audio="https://media.example/card.wav"),
    ]
    assert retry.context == "card#2"
    # A stop key with no digits is a miss too; retries: 1 -> on_failure.
    assert only(engine.handle(state, tones("card#2")), Transfer).context == "agent#3"
    assert "card" not in state.vars


def active_recording(state: CallState) -> None:
    state.recording_id = "rec-1"
    state.recording_state = "active"


def test_sensitive_digits_pause_and_resume_an_active_recording() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=True)), new_state("pay")
    active_recording(state)
    actions = connected(engine, state)
    # The flow starts with the sensitive node: continuous DTMF is not started before it.
    assert kinds(actions) == ["recording", "recognize"]
    assert (actions[0].op, actions[0].recording_id) == ("pause", "rec-1")
    actions = engine.handle(state, tones("card#1", "one", "two"))
    assert kinds(actions) == ["recording", "continuous_dtmf", "play"]
    assert (actions[0].op, actions[0].recording_id) == ("resume", "rec-1")
    assert actions[1] == ContinuousDtmf(who=CALLER, start=True, context="continuous-dtmf")
    assert "_paused_for" not in state.vars


def test_digits_that_are_not_sensitive_leave_the_recording_alone() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=False)), new_state("pay")
    active_recording(state)
    assert kinds(connected(engine, state)) == ["continuous_dtmf", "recognize"]
    assert kinds(engine.handle(state, tones("card#1", "one"))) == ["play"]


def test_sensitive_digits_without_a_recording_pause_nothing() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=True)), new_state("pay")
    assert kinds(connected(engine, state)) == ["recognize"]
    state.recording_id, state.recording_state = "rec-1", "inactive"  # a paused recording stays paused
    assert kinds(engine.handle(state, tones("card#1", "one"))) == ["continuous_dtmf", "play"]


def test_sensitive_retry_keeps_the_recording_paused() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=True)), new_state("pay")
    active_recording(state)
    connected(engine, state)
    # The service confirms the pause before the caller times out.
    engine.handle(state, ev("RecordingStateChanged", recordingId="rec-1", state="inactive"))
    actions = engine.handle(state, no_input("card#1"))
    assert kinds(actions) == ["recognize"], "the retry must not resume the recording while digits are entered"
    actions = engine.handle(state, tones("card#2", "one"))
    assert kinds(actions) == ["recording", "continuous_dtmf", "play"] and actions[0].op == "resume"


def test_sensitive_retry_before_the_pause_is_confirmed() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=True)), new_state("pay")
    active_recording(state)
    connected(engine, state)
    assert kinds(engine.handle(state, no_input("card#1"))) == ["recognize"]
    # on_failure: resumed, and continuous DTMF on again for the transfer's node
    assert kinds(engine.handle(state, no_input("card#2"))) == ["recording", "continuous_dtmf", "transfer"]
    assert state.node == "agent"


def card_flow() -> dict[str, Flow]:
    """A payment: a welcome (continuous DTMF on: * for an agent), a sensitive card number, a thank-you."""
    return flows_of(
        {
            "pay": {
                "start": "welcome",
                "on_tone": {"*": "agent", "4": "agent"},
                "nodes": {
                    "welcome": {"type": "play", "prompt": {"text": "Welcome."}, "next": "card"},
                    "card": {
                        "type": "collect_digits",
                        "prompt": {"text": "Your card number, then pound."},
                        "max_digits": 19,
                        "store_as": "card",
                        "sensitive": True,
                        "retries": 1,
                        "next": "expiry",
                        "on_failure": "agent",
                    },
                    "expiry": {
                        "type": "collect_digits",
                        "prompt": {"text": "The expiry date."},
                        "max_digits": 4,
                        "store_as": "expiry",
                        "sensitive": True,
                        "next": "thanks",
                        "on_failure": "agent",
                    },
                    "thanks": {"type": "play", "prompt": {"text": "Thank you."}, "next": "agent"},
                    "agent": {"type": "transfer", "target": {"to": "+14255550100"}, "on_failure": "thanks"},
                },
            }
        }
    )


CARD = "4111111111111111"
CARD_TONES = [KEY_TONES[digit] for digit in CARD]


def test_continuous_dtmf_is_stopped_before_a_sensitive_collection_and_started_after() -> None:
    engine, state = FlowEngine(card_flow()), new_state("pay")
    assert kinds(connected(engine, state)) == ["continuous_dtmf", "play"] and state.continuous_dtmf
    actions = engine.handle(state, played("welcome#1"))
    # Stopped first: no tone of the card number can come as a continuous-DTMF event of its own.
    assert actions[0] == ContinuousDtmf(who=CALLER, start=False, context="continuous-dtmf")
    assert kinds(actions) == ["continuous_dtmf", "recognize"] and actions[1].context == "card#2"
    assert state.continuous_dtmf is False
    # From one sensitive node to the next: it stays off.
    assert kinds(engine.handle(state, tones("card#2", *CARD_TONES))) == ["recognize"]
    assert state.continuous_dtmf is False
    # Out of the sensitive nodes: on again, before the next prompt.
    actions = engine.handle(state, tones("expiry#3", "one", "two", "two", "eight"))
    assert actions[0] == ContinuousDtmf(who=CALLER, start=True, context="continuous-dtmf")
    assert kinds(actions) == ["continuous_dtmf", "play"] and state.continuous_dtmf is True
    assert (state.vars["card"], state.vars["expiry"]) == ("*" * 16, "****")
    stored = state.model_dump_json()
    assert "4111" not in stored and "1228" not in stored and '"one"' not in stored and '"four"' not in stored


@pytest.mark.parametrize("tone", ["four", "one", "asterisk", "pound"])
def test_tones_during_a_sensitive_collection_are_dropped_unseen(tone: str) -> None:
    """Late deliveries (pressed before the stop took effect) or tones the service sends anyway: no action, and
    nothing of them in the state (its history, outcome or variables), even for keys the flow's on_tone has."""
    engine, state = FlowEngine(card_flow()), new_state("pay")
    connected(engine, state)
    engine.handle(state, played("welcome#1"))
    before = state.model_dump()
    for sequence in range(1, 5):
        assert engine.handle(state, tone_anywhere(tone, sequence)) == []
    assert state.model_dump() == before
    # The collection goes on as if nothing came.
    assert kinds(engine.handle(state, tones("card#2", *CARD_TONES))) == ["recognize"]


def test_a_tone_after_the_app_stopped_listening_is_dropped() -> None:
    engine, state = FlowEngine(card_flow()), new_state("pay")
    connected(engine, state)
    state.continuous_dtmf = False  # e.g. stopped through the control API
    before = state.model_dump()
    assert engine.handle(state, tone_anywhere("asterisk")) == []
    assert state.model_dump() == before


def test_a_sensitive_first_node_never_starts_continuous_dtmf() -> None:
    engine, state = FlowEngine(digits_flow(sensitive=True)), new_state("pay")
    assert kinds(connected(engine, state)) == ["recognize"]
    assert state.continuous_dtmf is False
    assert engine.handle(state, tone_anywhere("asterisk")) == []  # * is on_tone, but nobody listens now
    assert state.node == "card" and "tones" not in state.outcome


def test_instant_nodes_between_sensitive_nodes_do_not_switch_continuous_dtmf_on() -> None:
    flows = flows_of(
        {
            "f": {
                "start": "hello",
                "on_tone": {"*": "bye"},
                "nodes": {
                    "hello": {"type": "play", "prompt": {"text": "Hi."}, "next": "pin"},
                    "pin": {"type": "collect_digits", "prompt": {"text": "PIN."}, "max_digits": 4, "store_as": "pin",
                            "sensitive": True, "next": "mute", "on_failure": "bye"},
                    "mute": {"type": "mute", "next": "code"},
                    "code": {"type": "collect_digits", "prompt": {"text": "Code."}, "max_digits": 4,
                             "store_as": "code", "sensitive": True, "next": "bye", "on_failure": "bye"},
                    "bye": {"type": "hangup", "prompt": {"text": "Bye."}},
                },
            }
        }
    )
    engine, state = FlowEngine(flows), new_state("f")
    connected(engine, state)
    assert kinds(engine.handle(state, played("hello#1"))) == ["continuous_dtmf", "recognize"]
    assert kinds(engine.handle(state, tones("pin#2", "one", "two", "three", "four"))) == ["mute", "recognize"]
    # Into a hangup: no point listening again.
    assert kinds(engine.handle(state, tones("code#4", "one", "two", "three", "four"))) == ["play"]
    assert state.continuous_dtmf is False


# -- participants, DTMF, mute, hold ---------------------------------------------------------------


def participant_flow() -> dict[str, Flow]:
    return flows_of(
        {
            "f": {
                "start": "agent",
                "nodes": {
                    "agent": {
                        "type": "add_participant",
                        "target": {"to": "+14255550111", "caller_id": "+18005550100"},
                        "timeout_seconds": 20,
                        "next": "joined",
                        "on_failure": "sorry",
                    },
                    "joined": {"type": "play", "prompt": {"audio": "https://media.example/joined.wav"}},
                    "sorry": {"type": "hangup", "prompt": {"audio": "https://media.example/sorry.wav"}},
                },
            }
        }
    )


def test_add_participant_success() -> None:
    engine, state = FlowEngine(participant_flow()), new_state("f")
    add = only(connected(engine, state), AddParticipant)
    assert (add.target.to, add.target.caller_id, add.timeout_seconds, add.context) == (
        "+14255550111",
        "+18005550100",
        20,
        "agent#1",
    )
    engine.on_result(state, add, {"invitation_id": "inv-9"})
    assert state.invitations == {"agent#1": "inv-9"}
    joined = ev("AddParticipantSucceeded", "agent#1", participant={"rawId": "4:+14255550111"}, invitationId="inv-9")
    assert only(engine.handle(state, joined), Play).context == "joined#2"
    assert state.invitations == {}
    assert state.outcome["added"] == ["4:+14255550111"]


@pytest.mark.parametrize("kind", ["AddParticipantFailed", "CancelAddParticipantSucceeded"])
def test_add_participant_failure(kind: str) -> None:
    engine, state = FlowEngine(participant_flow()), new_state("f")
    engine.on_result(state, only(connected(engine, state), AddParticipant), {"invitation_id": "inv-9"})
    sorry = only(engine.handle(state, ev(kind, "agent#1", **result(408, 0))), Play)
    assert sorry.context == "sorry#2:announce"
    assert state.invitations == {}


def test_send_dtmf_then_next() -> None:
    flows = flows_of(
        {
            "f": {
                "start": "dial",
                "nodes": {
                    "dial": {"type": "send_dtmf", "tones": "12#", "next": "ext"},
                    "ext": {"type": "send_dtmf", "tones": "9", "to": "8:acs:agent", "next": "bye"},
                    "bye": {"type": "hangup"},
                },
            }
        }
    )
    engine, state = FlowEngine(flows), new_state("f")
    assert connected(engine, state) == [SendDtmf(tones="12#", to=CALLER, context="dial#1")]
    assert engine.handle(state, ev("SendDtmfTonesCompleted", "dial#1")) == [
        SendDtmf(tones="9", to="8:acs:agent", context="ext#2")
    ]
    assert engine.handle(state, ev("SendDtmfTonesFailed", "ext#2", **result(400, 0))) == [Hangup(for_everyone=True)]


def test_mute_hold_unhold_chain_to_the_next_node_at_once() -> None:
    music = {"audio": "https://media.example/music.wav"}
    flows = flows_of(
        {
            "f": {
                "start": "mute",
                "nodes": {
                    "mute": {"type": "mute", "next": "hold"},
                    "hold": {"type": "hold", "music": music, "next": "unhold"},
                    "unhold": {"type": "unhold", "who": "8:acs:agent", "next": "done"},
                    "done": {"type": "play", "prompt": music},
                },
            }
        }
    )
    engine, state = FlowEngine(flows), new_state("f")
    assert connected(engine, state) == [
        Mute(who=CALLER, context="mute#1"),
        Hold(who=CALLER, music=Prompt(**music), context="hold#2"),
        Unhold(who="8:acs:agent", context="unhold#3"),
        Play(prompts=[Prompt(**music)], context="done#4"),
    ]
    assert (state.node, state.seq) == ("done", 4)


def test_a_loop_of_instant_nodes_is_stopped() -> None:
    # Flow.check() refuses such a flow at start-up; the engine still guards against one that slipped by.
    flows = dict(FlowSet.model_validate(
        {"f": {"start": "a", "nodes": {"a": {"type": "mute", "next": "b"}, "b": {"type": "unhold", "next": "a"}}}}
    ).root)
    assert flows["f"].check("f")
    with pytest.raises(RuntimeError, match="instant nodes"):
        connected(FlowEngine(flows), new_state("f"))


# -- recording ------------------------------------------------------------------------------------


def record_flow() -> dict[str, Flow]:
    return flows_of(
        {
            "f": {
                "start": "consent",
                "nodes": {
                    "consent": {
                        "type": "record",
                        "announcement": {"audio": "https://media.example/recorded.wav"},
                        "next": "talk",
                    },
                    "talk": {"type": "play", "prompt": {"audio": "https://media.example/talk.wav"}, "next": "pause"},
                    "pause": {"type": "record", "action": "pause", "next": "private"},
                    "private": {"type": "play", "prompt": {"audio": "https://media.example/p.wav"}, "next": "resume"},
                    "resume": {"type": "record", "action": "resume", "next": "stop"},
                    "stop": {"type": "record", "action": "stop", "next": "bye"},
                    "bye": {"type": "hangup"},
                },
            }
        }
    )


def test_record_with_announcement() -> None:
    engine = FlowEngine(record_flow(), RecordingOptions(channel="mixed", content="audioVideo", format="mp4"))
    state = new_state("f")
    announce = only(connected(engine, state), Play)
    assert announce.context == "consent#1:announce"
    assert announce.prompts == [Prompt(audio="https://media.example/recorded.wav")]
    actions = engine.handle(state, played("consent#1:announce"))
    assert kinds(actions) == ["recording", "play"]
    start = actions[0]
    assert (start.op, start.recording_id, start.channel, start.content, start.format) == (
        "start",
        None,
        "mixed",
        "audioVideo",
        "mp4",
    )
    assert (start.channel_order, start.context) == ([CALLER], "recording-start")
    assert actions[1].context == "talk#2"
    engine.on_result(state, start, {"recording_id": "rec-7", "recording_state": "active"})
    assert (state.recording_id, state.recording_state) == ("rec-7", "active")
    actions = engine.handle(state, played("talk#2"))
    assert kinds(actions) == ["recording", "play"]
    assert (actions[0].op, actions[0].recording_id, actions[0].context) == ("pause", "rec-7", "recording-pause")
    actions = engine.handle(state, played("private#4"))
    assert kinds(actions) == ["recording", "recording", "hangup"]
    assert [(a.op, a.recording_id) for a in actions[:2]] == [("resume", "rec-7"), ("stop", "rec-7")]


def test_a_failed_record_announcement_still_records() -> None:
    engine, state = FlowEngine(record_flow()), new_state("f")
    connected(engine, state)
    actions = engine.handle(state, ev("PlayFailed", "consent#1:announce", **result(400, 8535)))
    assert kinds(actions) == ["recording", "play"] and actions[0].op == "start"


def test_record_start_when_already_recording_does_nothing() -> None:
    engine, state = FlowEngine(record_flow()), new_state("f")
    active_recording(state)
    connected(engine, state)
    actions = engine.handle(state, played("consent#1:announce"))
    assert kinds(actions) == ["play"]  # no second start


def test_record_without_a_recording_moves_on() -> None:
    engine, state = FlowEngine(record_flow()), new_state("f")
    connected(engine, state)
    engine.handle(state, played("consent#1:announce"))  # the start's result never came back
    assert kinds(engine.handle(state, played("talk#2"))) == ["play"]
    assert "no recording to pause" in state.history


def test_recording_state_changed_is_kept() -> None:
    engine, state = FlowEngine(record_flow()), new_state("f")
    assert engine.handle(state, ev("RecordingStateChanged", recordingId="rec-3", state="active")) == []
    assert (state.recording_id, state.recording_state) == ("rec-3", "active")
    engine.handle(state, ev("RecordingStateChanged", state="inactive"))
    assert (state.recording_id, state.recording_state) == ("rec-3", "inactive")


def test_on_result_ignores_what_it_does_not_need() -> None:
    engine, state = FlowEngine(record_flow()), new_state("f")
    engine.on_result(state, Recording(op="pause", recording_id="rec-1"), {"recording_id": "other"})
    engine.on_result(state, AddParticipant(target=Target(to="+1")), {"invitation_id": "inv"})  # no context
    engine.on_result(state, Play(prompts=[Prompt(text="x")], context="p#1"), {"invitation_id": "inv"})
    assert state.recording_id == "" and state.invitations == {}


# -- sim-ring -------------------------------------------------------------------------------------


def simring_state(*targets: str) -> CallState:
    return CallState(call_ref="call-2", caller=CALLER, callee=CALLEE, simring=list(targets))


def start_simring(engine: FlowEngine, state: CallState) -> list[AddParticipant]:
    actions = connected(engine, state)
    for index, action in enumerate(actions):
        engine.on_result(state, action, {"invitation_id": f"inv-{index}"})
    return actions  # type: ignore[return-value]


def test_simring_invites_every_target() -> None:
    engine, state = FlowEngine({}), simring_state("+14255550101", "8:acs:agent", "+14255550103")
    actions = start_simring(engine, state)
    assert [(a.target.to, a.context, a.timeout_seconds) for a in actions] == [
        ("+14255550101", "simring#0", 30),
        ("8:acs:agent", "simring#1", 30),
        ("+14255550103", "simring#2", 30),
    ]
    assert state.invitations == {"simring#0": "inv-0", "simring#1": "inv-1", "simring#2": "inv-2"}
    assert state.continuous_dtmf is False


def test_simring_first_answer_cancels_the_others_and_the_app_leaves() -> None:
    engine, state = FlowEngine({}), simring_state("+14255550101", "8:acs:agent", "+14255550103")
    start_simring(engine, state)
    answered = ev("AddParticipantSucceeded", "simring#1", participant={"rawId": "8:acs:agent"}, invitationId="inv-1")
    assert engine.handle(state, answered) == [
        CancelAddParticipant(invitation_id="inv-0"),
        CancelAddParticipant(invitation_id="inv-2"),
        Hangup(for_everyone=False),
    ]
    assert state.status == "transferred"
    assert state.outcome["simring_answered_by"] == "8:acs:agent"
    assert state.invitations == {}
    # The canceled invitations report back: nothing more to do.
    assert engine.handle(state, ev("AddParticipantFailed", "simring#0", **result(487, 0))) == []
    assert engine.handle(state, ev("AddParticipantFailed", "simring#2", **result(487, 0))) == []
    assert engine.handle(state, answered) == []


def test_simring_all_failed_hangs_up_for_everyone() -> None:
    engine, state = FlowEngine({}), simring_state("+14255550101", "+14255550102")
    start_simring(engine, state)
    assert engine.handle(state, ev("AddParticipantFailed", "simring#0", **result(486, 0))) == []
    assert state.invitations == {"simring#1": "inv-1"}
    assert engine.handle(state, ev("AddParticipantFailed", "simring#1", **result(408, 0))) == [
        Hangup(for_everyone=True)
    ]
    assert state.outcome["simring_answered_by"] is None


def test_simring_ignores_tones_and_other_events() -> None:
    engine, state = FlowEngine({}), simring_state("+14255550101")
    start_simring(engine, state)
    assert engine.handle(state, tone_anywhere("asterisk")) == []
    assert engine.handle(state, played("welcome#1")) == []
    assert state.status == "connected"


def test_a_flow_node_named_simring_is_an_ordinary_node() -> None:
    flows = flows_of(
        {
            "f": {
                "start": "simring",
                "nodes": {
                    "simring": {"type": "play", "prompt": {"audio": "https://media.example/a.wav"}, "next": "bye"},
                    "bye": {"type": "hangup"},
                },
            }
        }
    )
    engine, state = FlowEngine(flows), new_state("f")
    assert only(connected(engine, state), Play).context == "simring#1"
    assert engine.handle(state, played("simring#1")) == [Hangup(for_everyone=True)]


def test_an_announcement_reported_twice_leads_on_once(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    engine.handle(state, tones("main_menu#2", "one"))
    only(engine.handle(state, played("sales#3:announce")), Transfer)
    # The same announcement's end again, under another event id: no second transfer.
    assert engine.handle(state, played("sales#3:announce")) == []


def test_a_call_whose_flow_disappeared_is_hung_up(engine: FlowEngine, state: CallState) -> None:
    at_menu(engine, state)
    redeployed = FlowEngine({})  # a new deployment without the call's flow
    hangup = only(redeployed.handle(state, no_input("main_menu#2")), Hangup)
    assert hangup.for_everyone is True


def test_a_call_without_a_flow_only_joins(engine: FlowEngine) -> None:
    state = new_state(flow="", status="dialing")
    assert connected(engine, state) == []
    assert state.status == "connected"


# -- inputs of recognitions asked through the control API ----------------------------------------


def api_speech(ctx: str, text: str) -> CallEvent:
    return ev("RecognizeCompleted", ctx, recognitionType="speech", speechResult={"speech": text}, **result(200, 8548))


def test_api_recognition_inputs_are_kept_while_the_call_lasts_and_dropped_when_it_ends(
    engine: FlowEngine, state: CallState
) -> None:
    at_menu(engine, state)
    engine.handle(state, api_speech("api:s1", "my mother's maiden name is Quixote"))
    engine.handle(state, tones("api:t1", "four", "two"))
    engine.handle(state, choice("api:c1", "yes", "sure"))
    api = state.outcome["api"]
    assert api["api:s1"]["speech"] == "my mother's maiden name is Quixote"  # for GET /api/calls/{id} meanwhile
    assert api["api:t1"]["tones"] == ["four", "two"]
    engine.handle(state, ev("CallDisconnected", **result(200, 0, "hung up")))
    assert api["api:s1"]["speech"] is None and api["api:s1"]["speech_removed"] is True
    assert api["api:t1"]["tones"] == ["*", "*"]
    assert api["api:c1"]["label"] == "yes"  # a choice's label is the asker's, not the caller's words
    assert "Quixote" not in state.model_dump_json() and '"four"' not in state.model_dump_json()


@pytest.mark.parametrize("kind", ["ConnectFailed", "AnswerFailed"])
def test_api_recognition_inputs_are_dropped_when_the_call_fails(
    kind: str, engine: FlowEngine, state: CallState
) -> None:
    engine.handle(state, tones("api:t1", "four", "two"))
    engine.handle(state, ev(kind, "answer", **result(500, 8500, "no")))
    assert state.outcome["api"]["api:t1"]["tones"] == ["*", "*"]


def test_an_api_recognition_result_delivered_after_the_call_ended_keeps_no_input(
    engine: FlowEngine, state: CallState
) -> None:
    at_menu(engine, state)
    engine.handle(state, ev("CallDisconnected", **result(200, 0, "hung up")))
    engine.handle(state, api_speech("api:late", "Quixote"))  # late, or out of order
    assert state.outcome["api"]["api:late"]["speech"] is None and "Quixote" not in state.model_dump_json()


def test_api_recognition_during_a_sensitive_collection_keeps_no_tones() -> None:
    engine, state = FlowEngine(card_flow()), new_state("pay")
    connected(engine, state)
    engine.handle(state, played("welcome#1"))
    engine.handle(state, tones("api:t1", "four", "one", "one", "one"))
    engine.handle(state, api_speech("api:s1", "four one one one"))
    assert state.outcome["api"]["api:t1"]["tones"] == ["*"] * 4
    assert state.outcome["api"]["api:s1"]["speech"] is None
    assert '"four"' not in state.model_dump_json() and "four one" not in state.model_dump_json()
