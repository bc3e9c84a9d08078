"""The published JSON Schema of flows (flows/schema.json) and the flow validator command."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from core.flows import schema as flow_schema
from core.flows import validate
from core.flows.model import FlowSet
from tests.unit.test_flow_model import BAD_AUDIO_URLS, base, with_change

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "flows" / "schema.json"
DEFAULT_FLOWS = ROOT / "flows" / "default.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_schema_file_is_up_to_date_with_the_model() -> None:
    assert SCHEMA_FILE.read_text() == flow_schema.render(), (
        "flows/schema.json is stale: run python -m core.flows.schema"
    )


def test_schema_has_its_metadata() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    assert schema["type"] == "object"


def test_schema_check_command(tmp_path: Path) -> None:
    assert flow_schema.main(["--check"]) == 0
    stale = tmp_path / "schema.json"
    stale.write_text("{}")
    assert flow_schema.main(["--check", "--output", str(stale)]) == 1
    assert flow_schema.main(["--output", str(stale)]) == 0
    assert stale.read_text() == SCHEMA_FILE.read_text()


def test_default_flows_are_valid_against_the_schema(validator: Draft202012Validator) -> None:
    data = json.loads(DEFAULT_FLOWS.read_text())
    assert list(validator.iter_errors(data)) == []


def test_a_flow_using_every_node_type_is_valid(validator: Draft202012Validator) -> None:
    data = base()
    nodes = data["ivr"]["nodes"]
    nodes["bye"] = {"type": "record", "action": "stop", "next": "hold"}
    nodes["hold"] = {"type": "hold", "music": {"audio": "https://media.example/hold.wav"}, "next": "unhold"}
    nodes["unhold"] = {"type": "unhold", "next": "mute"}
    nodes["mute"] = {"type": "mute", "who": "caller", "next": "dtmf"}
    nodes["dtmf"] = {"type": "send_dtmf", "tones": "12#", "next": "agent"}
    nodes["agent"] = {
        "type": "add_participant",
        "target": {"to": "+14255550111", "caller_id": "+18005550100", "sip_headers": {"X-MS-Custom-A": "1"}},
        "next": "end",
        "on_failure": "end",
    }
    nodes["end"] = {"type": "hangup", "prompt": {"text": "Bye", "voice": "en-US-JennyNeural"}, "for_everyone": False}
    assert FlowSet.model_validate(data).check() == []
    assert list(validator.iter_errors(data)) == []


BROKEN: list[tuple[str, dict[str, Any]]] = [
    ("unknown node type", with_change("nodes.welcome.type", "dance")),
    ("missing start", with_change("start", None)),
    ("no nodes", with_change("nodes", {})),
    ("unknown field", with_change("nodes.welcome.colour", "red")),
    ("menu without on_failure", with_change("nodes.menu.on_failure", None)),
    ("menu without choices", with_change("nodes.menu.choices", [])),
    ("two prompt sources", with_change("nodes.welcome.prompt", {"text": "a", "audio": "https://media.example/a.wav"})),
    ("no prompt source", with_change("nodes.welcome.prompt", {})),
    ("voice on audio", with_change("nodes.welcome.prompt", {"audio": "https://media.example/a.wav", "voice": "v"})),
    ("audio not a URL", with_change("nodes.welcome.prompt", {"audio": "welcome.wav"})),
    *[(f"audio {url!r}", with_change("nodes.welcome.prompt", {"audio": url})) for url in BAD_AUDIO_URLS],
    ("choice without key or phrases", with_change("nodes.menu.choices.0", {"label": "a", "next": "account"})),
    ("choice key too long", with_change("nodes.menu.choices.0.key", "12")),
    ("bad node id", with_change("nodes.bad id", {"type": "hangup"})),
    ("bad next id", with_change("nodes.welcome.next", "no spaces allowed")),
    ("bad on_tone key", with_change("on_tone", {"**": "operator"})),
    ("retries out of range", with_change("nodes.menu.retries", 11)),
    ("timeout not a number", with_change("nodes.menu.timeout_seconds", "soon")),
    ("bad store_as", with_change("nodes.account.store_as", "1st")),
    ("not an object", {"ivr": []}),
]


@pytest.mark.parametrize(("why", "data"), BROKEN, ids=[why for why, _ in BROKEN])
def test_schema_rejects_broken_flows(validator: Draft202012Validator, why: str, data: dict[str, Any]) -> None:
    assert list(validator.iter_errors(data)), f"the schema accepts a flow with {why}"
    assert validate.problems_of(data), f"the models accept a flow with {why}"


@pytest.mark.parametrize(
    "url", ["https://media.example/a.wav", "https://media.example:8443/a%20b.wav?sig=x#t", "https://cdn/a.wav"]
)
def test_schema_accepts_https_audio(validator: Draft202012Validator, url: str) -> None:
    data = with_change("nodes.welcome.prompt", {"audio": url})
    assert list(validator.iter_errors(data)) == []
    assert validate.problems_of(data) == []


def test_graph_problems_are_for_the_validator_not_the_schema(validator: Draft202012Validator) -> None:
    data = with_change("nodes.welcome.next", "nowhere")
    assert list(validator.iter_errors(data)) == []
    assert validate.problems_of(data) == ["flow ivr, node welcome: next 'nowhere' is not a node"]


def test_schema_allows_a_dtmf_key_of_every_kind_in_on_tone(validator: Draft202012Validator) -> None:
    for key in "0123456789*#ABCD":
        assert list(validator.iter_errors(with_change("on_tone", {key: "operator"}))) == []


# -- python -m core.flows.validate ----------------------------------------------------------------


def test_validate_default_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate.default_file() == DEFAULT_FLOWS
    assert validate.main([]) == 0
    assert capsys.readouterr().out == f"{DEFAULT_FLOWS}: ok\n"


def test_validate_reports_each_problem_with_file_flow_and_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    data = with_change("nodes.welcome.next", "nowhere")
    data["other"] = copy.deepcopy(base()["ivr"])
    data["other"]["nodes"]["menu"]["prompt"] = {"audio": "https://media.example/a.wav", "locale": "en-US"}
    bad.write_text(json.dumps(data))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"good": base()["ivr"]}))  # another name: the files are merged
    assert validate.main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{good}: ok",
        f"{bad}: flow ivr, node welcome: next 'nowhere' is not a node",
        f"{bad}: flow other, node menu: prompt: voice and locale apply to text prompts only",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object of flows"),
        ("{}", "no flows"),
    ],
)
def test_validate_unreadable_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "flows.json"
    path.write_text(content)
    assert validate.main([str(path)]) == 1
    assert expected in capsys.readouterr().out


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate.main([str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().out == f"{tmp_path / 'none.json'}: no such file or folder\n"


def test_validate_runs_as_a_module(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(with_change("start", "nowhere")))
    ok = subprocess.run([sys.executable, "-m", "core.flows.validate"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = subprocess.run(
        [sys.executable, "-m", "core.flows.validate", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert "flow ivr: start 'nowhere' is not a node" in failed.stdout
