"""The flow language: every rule of the models and of Flow.check(), each problem naming its flow and node."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.flows.model import Flow, FlowSet, Prompt
from core.flows.validate import problems_of

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict[str, Any]:
    """A small valid flow that uses most node types."""
    return {
        "ivr": {
            "start": "welcome",
            "on_tone": {"0": "operator"},
            "nodes": {
                "welcome": {"type": "play", "prompt": {"audio": "https://media.example/welcome.wav"}, "next": "menu"},
                "menu": {
                    "type": "menu",
                    "input": "dtmf",
                    "prompt": {"audio": "https://media.example/menu.wav"},
                    "choices": [
                        {"key": "1", "label": "account", "next": "account"},
                        {"key": "2", "label": "operator", "next": "operator"},
                    ],
                    "on_failure": "operator",
                },
                "account": {
                    "type": "collect_digits",
                    "prompt": {"audio": "https://media.example/account.wav"},
                    "max_digits": 8,
                    "store_as": "account",
                    "next": "bye",
                    "on_failure": "operator",
                },
                "operator": {"type": "transfer", "target": {"to": "+14255550100"}, "on_failure": "bye"},
                "bye": {"type": "hangup"},
            },
        }
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """base() with one value set (or removed, for value None) at a dotted path under flow 'ivr'."""
    data = copy.deepcopy(base())
    target: Any = data["ivr"]
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        target = target[key]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


def only_problem(data: dict[str, Any]) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def test_the_base_flow_and_the_shipped_flows_are_valid() -> None:
    assert problems_of(base()) == []
    assert problems_of(json.loads((ROOT / "flows" / "default.json").read_text())) == []
    assert FlowSet.model_validate(base()).check() == []


# -- graph problems (Flow.check) ------------------------------------------------------------------


def test_dangling_next() -> None:
    problem = only_problem(with_change("nodes.welcome.next", "nowhere"))
    assert problem == "flow ivr, node welcome: next 'nowhere' is not a node"


def test_dangling_on_failure() -> None:
    problem = only_problem(with_change("nodes.operator.on_failure", "apology"))
    assert problem == "flow ivr, node operator: on_failure 'apology' is not a node"


def test_dangling_choice_next() -> None:
    problem = only_problem(with_change("nodes.menu.choices.0.next", "acount"))
    assert problem == "flow ivr, node menu: choices[account].next 'acount' is not a node"


def test_missing_start() -> None:
    problem = only_problem(with_change("start", "hello"))
    assert problem == "flow ivr: start 'hello' is not a node"


def test_start_is_required() -> None:
    problem = only_problem(with_change("start", None))
    assert problem.startswith("flow ivr: start:") and "required" in problem


def test_dangling_on_tone() -> None:
    problem = only_problem(with_change("on_tone", {"*": "agent"}))
    assert problem == "flow ivr: on_tone[*] 'agent' is not a node"


def test_duplicate_menu_keys() -> None:
    problem = only_problem(with_change("nodes.menu.choices.1.key", "1"))
    assert problem.startswith("flow ivr, node menu:") and "share a key" in problem


def test_dtmf_only_menu_choice_without_key() -> None:
    data = with_change("nodes.menu.choices.1", {"phrases": ["operator"], "label": "operator", "next": "operator"})
    problem = only_problem(data)
    assert problem.startswith("flow ivr, node menu:") and "key on every choice" in problem


def test_speech_only_menu_choice_without_phrases() -> None:
    data = with_change("nodes.menu.input", "speech")
    data["ivr"]["nodes"]["menu"]["prompt"] = {"text": "Say account or operator."}
    data["ivr"]["nodes"]["menu"]["choices"][0]["phrases"] = ["account"]
    problem = only_problem(data)
    assert problem.startswith("flow ivr, node menu:") and "phrases on every choice" in problem


def test_unreachable_node() -> None:
    data = with_change("nodes.orphan", {"type": "hangup"})
    assert only_problem(data) == "flow ivr, node orphan: unreachable from start or on_tone"


def test_node_reachable_only_from_on_tone_is_reachable() -> None:
    data = with_change("nodes.menu.choices.1.next", "bye")
    data["ivr"]["nodes"]["menu"]["on_failure"] = "bye"
    data["ivr"]["nodes"]["account"]["on_failure"] = "bye"
    assert problems_of(data) == []  # operator is reached by on_tone 0 only
    del data["ivr"]["on_tone"]
    assert only_problem(data) == "flow ivr, node operator: unreachable from start or on_tone"


def test_every_graph_problem_is_reported_and_names_its_flow() -> None:
    data = with_change("nodes.welcome.next", "x")
    data["ivr"]["nodes"]["operator"]["on_failure"] = "y"
    data["other"] = {"start": "a", "nodes": {"a": {"type": "hangup"}, "b": {"type": "hangup"}}}
    assert problems_of(data) == [
        "flow ivr, node welcome: next 'x' is not a node",
        "flow ivr, node operator: on_failure 'y' is not a node",
        "flow other, node b: unreachable from start or on_tone",
    ]


# -- DTMF keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["x", "E", "#1", "", " "])
def test_bad_choice_key(key: str) -> None:
    problem = only_problem(with_change("nodes.menu.choices.0.key", key))
    assert problem.startswith("flow ivr, node menu: choices[0]")


@pytest.mark.parametrize("stop_keys", ["x", "#!", "12e"])
def test_bad_stop_keys(stop_keys: str) -> None:
    problem = only_problem(with_change("nodes.account.stop_keys", stop_keys))
    assert problem.startswith("flow ivr, node account:") and "DTMF keys" in problem


@pytest.mark.parametrize("tones", ["12E", "1-2", "", "1" * 19])
def test_bad_send_dtmf_tones(tones: str) -> None:
    data = with_change("nodes.welcome.next", "dial")
    data["ivr"]["nodes"]["dial"] = {"type": "send_dtmf", "tones": tones, "next": "menu"}
    problem = only_problem(data)
    assert problem.startswith("flow ivr, node dial: tones")


@pytest.mark.parametrize("key", ["x", "**", "", "#0"])
def test_bad_on_tone_key(key: str) -> None:
    problem = only_problem(with_change("on_tone", {key: "operator"}))
    assert problem.startswith("flow ivr: on_tone key") and "not a DTMF key" in problem


@pytest.mark.parametrize("key", list("0123456789*#ABCD"))
def test_every_dtmf_key_is_allowed(key: str) -> None:
    data = with_change("on_tone", {key: "operator"})
    data["ivr"]["nodes"]["account"]["stop_keys"] = key
    assert problems_of(data) == []


# -- prompts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        {"text": "Hello", "ssml": "<speak>Hello</speak>"},
        {"text": "Hello", "audio": "https://media.example/a.wav"},
        {"ssml": "<speak/>", "audio": "https://media.example/a.wav"},
        {"text": "Hello", "ssml": "<speak/>", "audio": "https://media.example/a.wav"},
        {},
        {"text": ""},
    ],
)
def test_prompt_needs_exactly_one_source(prompt: dict[str, str]) -> None:
    problem = only_problem(with_change("nodes.welcome.prompt", prompt))
    assert problem.startswith("flow ivr, node welcome: prompt:") and "exactly one of text, ssml, audio" in problem


@pytest.mark.parametrize("extra", [{"voice": "en-US-JennyNeural"}, {"locale": "en-US"}])
def test_voice_or_locale_on_audio_prompt(extra: dict[str, str]) -> None:
    problem = only_problem(with_change("nodes.welcome.prompt", {"audio": "https://media.example/a.wav", **extra}))
    assert problem == "flow ivr, node welcome: prompt: voice and locale apply to text prompts only"


def test_voice_on_ssml_prompt() -> None:
    problem = only_problem(with_change("nodes.welcome.prompt", {"ssml": "<speak/>", "voice": "en-US-JennyNeural"}))
    assert "voice and locale apply to text prompts only" in problem


def test_audio_must_be_a_url() -> None:
    problem = only_problem(with_change("nodes.welcome.prompt", {"audio": "welcome.wav"}))
    assert problem.startswith("flow ivr, node welcome: prompt:") and "https URL" in problem


BAD_AUDIO_URLS = [
    "http://media.example/a.wav",  # plain http: anyone on the path can swap the prompt
    "HTTP://media.example/a.wav",
    "ftp://media.example/a.wav",
    "//media.example/a.wav",
    "media.example/a.wav",
    "https://",
    "https:///a.wav",  # no host
    "https://:443/a.wav",
    "https://user:secret@media.example/a.wav",  # credentials in the URL
    "https://media.example@attacker.example/a.wav",
    "https://media.example\\@attacker.example/a.wav",
    "https://media.example/a b.wav",
    "https://media.example/a.wav\n",
    "https://médiа.example/a.wav",  # non-ASCII host
    "https://-media.example/a.wav",
    "https://media..example/a.wav",
    "https://media.example:99999/a.wav",
    "https://media.example:0/a.wav",
    "https://media.example:/a.wav",
    "https://media.example/" + "a" * 2048,
]


@pytest.mark.parametrize("url", BAD_AUDIO_URLS)
def test_audio_must_be_https_with_a_host(url: str) -> None:
    problem = only_problem(with_change("nodes.welcome.prompt", {"audio": url}))
    assert problem.startswith("flow ivr, node welcome: prompt") and ("audio" in problem or "2048" in problem)


@pytest.mark.parametrize(
    "url",
    [
        "https://media.example/a.wav",
        "https://media.example:8443/prompts/a%20b.wav?sv=2024&sig=x#t",
        "https://cdn/a.wav",
        "https://10.1.2.3/a.wav",
    ],
)
def test_audio_https_urls_are_accepted(url: str) -> None:
    assert problems_of(with_change("nodes.welcome.prompt", {"audio": url})) == []


@pytest.mark.parametrize("field", ["nodes.menu.invalid_prompt", "nodes.menu.no_input_prompt"])
def test_http_audio_in_any_prompt_of_a_node_is_refused(field: str) -> None:
    problem = only_problem(with_change(field, {"audio": "http://media.example/a.wav"}))
    assert problem.startswith(f"flow ivr, node menu: {field.rsplit('.', 1)[1]}:") and "not http" in problem


def test_http_audio_in_hold_music_is_refused() -> None:
    data = base()
    data["ivr"]["nodes"]["welcome"]["next"] = "hold"
    data["ivr"]["nodes"]["hold"] = {"type": "hold", "music": {"audio": "http://media.example/hold.wav"}, "next": "menu"}
    assert only_problem(data).startswith("flow ivr, node hold: music:")


def test_the_app_does_not_load_a_flow_with_http_audio() -> None:
    """At load (the FLOWS setting), the error names the flow and the node."""
    from core.platform.settings import SettingsError, load_flows

    data = with_change("nodes.welcome.prompt", {"audio": "http://media.example/a.wav"})
    with pytest.raises(SettingsError) as raised:
        load_flows({"FLOWS": json.dumps(data)})
    message = str(raised.value)
    assert "ivr" in message and "welcome" in message and "not http" in message


def test_prompt_problem_in_a_retry_prompt_names_the_field() -> None:
    problem = only_problem(with_change("nodes.menu.invalid_prompt", {"text": "a", "ssml": "b"}))
    assert problem.startswith("flow ivr, node menu: invalid_prompt:")


def test_text_prompt_with_voice_and_locale() -> None:
    prompt = Prompt(text="Hello", voice="en-US-JennyNeural", locale="en-US")
    assert prompt.uses_ai
    assert not Prompt(audio="https://media.example/a.wav").uses_ai


# -- other model rules ----------------------------------------------------------------------------


def test_choice_without_key_or_phrases() -> None:
    problem = only_problem(with_change("nodes.menu.choices.0", {"label": "account", "next": "account"}))
    assert problem.startswith("flow ivr, node menu: choices[0]:") and "needs a key or phrases" in problem


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("nodes.welcome.type", "dance", "flow ivr, node welcome:"),
        ("nodes.welcome.colour", "red", "flow ivr, node welcome: colour:"),
        ("nodes.menu.choices", [], "flow ivr, node menu: choices:"),
        ("nodes.menu.retries", 11, "flow ivr, node menu: retries:"),
        ("nodes.menu.on_failure", None, "flow ivr, node menu: on_failure:"),
        ("nodes.account.max_digits", 0, "flow ivr, node account: max_digits:"),
        ("nodes.account.store_as", "1st", "flow ivr, node account: store_as:"),
        ("nodes.operator.target", {"number": "+1"}, "flow ivr, node operator: target"),
        ("nodes.welcome.next", "has space", "flow ivr, node welcome: next:"),
        ("nodes", {}, "flow ivr: nodes:"),
    ],
)
def test_model_problems_name_the_node_and_field(path: str, value: Any, where: str) -> None:
    problems = problems_of(with_change(path, value))
    assert problems and all(p.startswith(where) for p in problems), problems


def test_bad_node_id_is_named() -> None:
    data = base()
    data["ivr"]["nodes"]["bad id"] = {"type": "hangup"}
    problems = problems_of(data)
    assert problems == [
        "flow ivr, node bad id: the node id is not valid: String should match pattern '^[A-Za-z0-9_.-]+$'"
    ]


def test_a_broken_flow_does_not_hide_the_graph_problems_of_another() -> None:
    data = base()
    data["broken"] = {"start": "a", "nodes": {"a": {"type": "play"}}}
    data["ivr"]["nodes"]["welcome"]["next"] = "nowhere"
    problems = problems_of(data)
    assert "flow ivr, node welcome: next 'nowhere' is not a node" in problems
    assert any(p.startswith("flow broken, node a: prompt:") for p in problems)


def test_flow_check_names_the_flow() -> None:
    flow = Flow.model_validate({"start": "x", "nodes": {"a": {"type": "hangup"}}})
    assert flow.check("sales") == ["flow sales: start 'x' is not a node"]


def test_targets_of() -> None:
    flow = FlowSet.model_validate(base()).root["ivr"]
    assert flow.targets_of("menu") == [
        ("on_failure", "operator"),
        ("choices[account].next", "account"),
        ("choices[operator].next", "operator"),
    ]
    assert flow.targets_of("bye") == []


def test_needs_ai_services() -> None:
    flow = FlowSet.model_validate(base()).root["ivr"]
    assert not flow.needs_ai_services()  # audio prompts, DTMF menu
    data = with_change("nodes.menu.input", "both")
    assert FlowSet.model_validate(data).root["ivr"].needs_ai_services()  # speech recognition
    data = with_change("nodes.operator.announcement", {"text": "Connecting you."})
    assert FlowSet.model_validate(data).root["ivr"].needs_ai_services()  # text-to-speech
    data = with_change("nodes.bye.prompt", {"ssml": "<speak>Bye</speak>"})
    assert FlowSet.model_validate(data).root["ivr"].needs_ai_services()


def test_flowset_model_validate_raises_for_model_problems() -> None:
    with pytest.raises(ValidationError):
        FlowSet.model_validate(with_change("nodes.welcome.prompt", {}))


def test_a_loop_of_instant_nodes_is_refused():
    from core.flows.model import Flow

    flow = Flow.model_validate({"start": "a", "nodes": {
        "a": {"type": "mute", "next": "b"},
        "b": {"type": "hold", "next": "a"},
    }})
    problems = flow.check("loopy")
    assert problems == ["flow loopy, node a: the nodes a -> b -> a finish at once and loop forever without waiting "
                        "for the caller"]
    # A loop through a node that waits for the caller (a menu, a play) is fine.
    flow = Flow.model_validate({"start": "a", "nodes": {
        "a": {"type": "mute", "next": "b"},
        "b": {"type": "play", "prompt": {"audio": "https://x/y.wav"}, "next": "a"},
    }})
    assert flow.check("fine") == []
