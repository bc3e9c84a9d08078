"""App settings: every required setting, every malformed value, named in the error; no secrets shown;
docs/settings.md's table lists every setting."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from core.platform import settings as settings_module
from core.platform.settings import SETTING_NAMES, SETTINGS, SettingsError, load, load_flows, parse_connection_string

ROOT = Path(__file__).resolve().parents[2]
SECRET = base64.b64encode(b"k" * 32).decode()
ACCESS_KEY = base64.b64encode(b"access-key-" * 4).decode()
STORAGE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c3RvcmFnZS1rZXk=;"
INSIGHTS = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://example.invalid/"
ROUTING = {
    "rules": [
        {"name": "support", "match": {"to": "+18005550100"}, "action": {"type": "answer", "flow": "customer_service"}}
    ],
    "default": {"type": "answer", "flow": "customer_service"},
}
DTMF_FLOW = {
    "dtmf_only": {
        "start": "menu",
        "nodes": {
            "menu": {
                "type": "menu",
                "input": "dtmf",
                "prompt": {"audio": "https://media.example/menu.wav"},
                "choices": [{"key": "1", "label": "bye", "next": "bye"}],
                "on_failure": "bye",
            },
            "bye": {"type": "hangup"},
        },
    }
}
TTS_FLOW = {"tts": {"start": "bye", "nodes": {"bye": {"type": "hangup", "prompt": {"text": "Goodbye."}}}}}


def base_env(**changes: str | None) -> dict[str, str]:
    env = {
        "ACS_CONNECTION_STRING": f"endpoint=https://acs.example.communication.azure.com/;accesskey={ACCESS_KEY}",
        "ACS_RESOURCE_ID": "11111111-2222-3333-4444-555555555555",
        "CALLBACK_BASE_URL": "https://app.example.net/api/",
        "CALLBACK_SECRET": SECRET,
        "COGNITIVE_SERVICES_ENDPOINT": "https://ai.example.cognitiveservices.azure.com/",
        "ROUTING_RULES": json.dumps(ROUTING),
        "APP_STORAGE": STORAGE,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": INSIGHTS,
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def error_of(env: dict[str, str], root: Path = settings_module.APP_ROOT) -> str:
    with pytest.raises(SettingsError) as caught:
        load(env, root)
    return str(caught.value)


# -- the declared settings ------------------------------------------------------------------------


def test_a_complete_environment_loads() -> None:
    s = load(base_env())
    assert s.acs_endpoint == "https://acs.example.communication.azure.com"
    assert s.acs_access_key == ACCESS_KEY
    assert s.callback_base_url == "https://app.example.net/api"
    assert s.callback_secret == b"k" * 32
    assert s.cognitive_services_endpoint == "https://ai.example.cognitiveservices.azure.com"
    assert set(s.flows) == {
        "customer_service", "appointment_reminder", "outage_notice", "number_masking", "number_masking_unknown"
    }
    assert [r.name for r in s.routing.rules] == ["support"]
    assert s.storage.connection_string == STORAGE
    assert (s.storage.state_table, s.storage.events_table) == ("callstate", "callevents")
    assert s.storage.outbound_table == "outbound"
    assert s.recording.mode == "off" and s.recording.channel == "unmixed" and s.recording.format == "wav"
    assert s.recording.allowed_hosts == (
        "*.asm.skype.com",
        "*.asyncgw.teams.microsoft.com",
        "*.ams.gov.teams.microsoft.us",
    )
    assert s.recording.delete_after_copy is False
    assert s.log_level == "INFO"
    assert s.jwt_issuer == settings_module.DEFAULT_JWT_ISSUER


def test_setting_names_are_unique_and_required_ones_have_no_default() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names)) == len(SETTING_NAMES)
    for spec in SETTINGS:
        assert spec.description.strip(), spec.name
        assert not (spec.required and spec.default), spec.name


@pytest.mark.parametrize("name", [s.name for s in SETTINGS if s.required])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_every_required_setting_missing_is_named(name: str, how: str) -> None:
    env = base_env(**{name: None if how == "absent" else ""})
    message = error_of(env)
    assert name in message
    assert "required" in message


def test_neither_acs_endpoint_nor_connection_string() -> None:
    message = error_of(base_env(ACS_CONNECTION_STRING=None))
    assert "ACS_ENDPOINT" in message and "ACS_CONNECTION_STRING" in message


def test_acs_endpoint_alone_means_managed_identity() -> None:
    s = load(base_env(ACS_CONNECTION_STRING=None, ACS_ENDPOINT="https://acs.example.communication.azure.com/"))
    assert s.acs_endpoint == "https://acs.example.communication.azure.com"
    assert s.acs_access_key is None
    assert s.describe()["acs_auth"] == "managed identity"


def test_connection_string_wins_over_endpoint() -> None:
    s = load(base_env(ACS_ENDPOINT="https://other.communication.azure.com"))
    assert s.acs_endpoint == "https://acs.example.communication.azure.com"
    assert s.describe()["acs_auth"] == "access key"


def test_missing_storage_is_named() -> None:
    message = error_of(base_env(APP_STORAGE=None))
    assert "APP_STORAGE" in message


def test_identity_based_storage_is_enough() -> None:
    s = load(
        base_env(
            APP_STORAGE=None,
            APP_STORAGE__tableServiceUri="https://acct.table.core.windows.net",
            APP_STORAGE__blobServiceUri="https://acct.blob.core.windows.net",
        )
    )
    assert s.storage.connection_string is None
    assert s.storage.table_endpoint == "https://acct.table.core.windows.net"
    assert s.describe()["storage"] == "managed identity"


# -- malformed values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["CALLBACK_BASE_URL", "ACS_ENDPOINT", "COGNITIVE_SERVICES_ENDPOINT", "ACS_OPENID_CONFIG_URL"]
)
@pytest.mark.parametrize("value", ["not a url", "ftp://files.example/x", "/api/callbacks", "https://", "example.com"])
def test_bad_url_is_named(name: str, value: str) -> None:
    changes = {name: value}
    if name == "ACS_ENDPOINT":
        changes["ACS_CONNECTION_STRING"] = None  # type: ignore[assignment]
    message = error_of(base_env(**changes))
    assert name in message
    assert "URL" in message


@pytest.mark.parametrize("value", ["not base64!!", "a2V5", "@@@@", "a" * 43])
def test_bad_callback_secret_is_named_without_echoing_it(value: str) -> None:
    message = error_of(base_env(CALLBACK_SECRET=value))
    assert "CALLBACK_SECRET" in message
    assert value not in message


def test_callback_secret_of_31_bytes_is_too_short() -> None:
    message = error_of(base_env(CALLBACK_SECRET=base64.b64encode(b"x" * 31).decode()))
    assert "CALLBACK_SECRET" in message and "32" in message


def test_callback_secret_of_32_bytes_is_enough() -> None:
    assert load(base_env(CALLBACK_SECRET=base64.b64encode(b"y" * 32).decode())).callback_secret == b"y" * 32


@pytest.mark.parametrize("value", ["{not json", "{'rules': []}", "[1, 2"])
def test_routing_rules_bad_json_is_named(value: str) -> None:
    message = error_of(base_env(ROUTING_RULES=value))
    assert "ROUTING_RULES" in message and "JSON" in message


@pytest.mark.parametrize(
    "rules",
    [
        [],
        {"rules": []},  # no default
        {"default": {"type": "transfer"}},
        {
            "rules": [{"name": "x", "match": {"to": {"pattern": "("}}, "action": {"type": "reject"}}],
            "default": {"type": "reject"},
        },
        {"default": {"type": "reject"}, "extra": 1},
    ],
)
def test_routing_rules_invalid_model_is_named(rules: object) -> None:
    assert "ROUTING_RULES" in error_of(base_env(ROUTING_RULES=json.dumps(rules)))


def test_rule_answering_into_unknown_flow_is_named() -> None:
    rules = {
        "rules": [{"name": "vip", "match": {"from": {"prefix": "+1425"}}, "action": {"type": "answer", "flow": "vip"}}],
        "default": {"type": "answer", "flow": "customer_service"},
    }
    message = error_of(base_env(ROUTING_RULES=json.dumps(rules)))
    assert "ROUTING_RULES" in message and "'vip'" in message and "customer_service" in message


def test_default_answering_into_unknown_flow_is_named() -> None:
    rules = {"default": {"type": "answer", "flow": "missing"}}
    message = error_of(base_env(ROUTING_RULES=json.dumps(rules)))
    assert "ROUTING_RULES" in message and "default" in message and "missing" in message


def test_redirect_and_reject_rules_need_no_flow() -> None:
    rules = {
        "rules": [{"name": "ring", "action": {"type": "redirect", "targets": ["+14255550100", "+14255550101"]}}],
        "default": {"type": "reject", "reason": "busy"},
    }
    assert [r.name for r in load(base_env(ROUTING_RULES=json.dumps(rules))).routing.rules] == ["ring"]


def test_flows_bad_json_is_named() -> None:
    message = error_of(base_env(FLOWS="{nope"))
    assert "FLOWS" in message and "JSON" in message


def test_flows_invalid_model_is_named() -> None:
    flows = {"customer_service": {"start": "a", "nodes": {"a": {"type": "dance"}}}}
    message = error_of(base_env(FLOWS=json.dumps(flows)))
    assert message.startswith("setting FLOWS:")
    assert "customer_service" in message


def test_flows_graph_problem_is_named_with_flow_and_node() -> None:
    flows = {"customer_service": {"start": "a", "nodes": {"a": {"type": "play", "prompt": {"text": "x"}, "next": "b"}}}}
    message = error_of(base_env(FLOWS=json.dumps(flows)))
    assert message.startswith("setting FLOWS:")
    assert "flow customer_service, node a" in message and "'b'" in message


def test_flows_overrides_flows_file() -> None:
    flows = {"customer_service": DTMF_FLOW["dtmf_only"]}
    s = load(base_env(FLOWS=json.dumps(flows), FLOWS_FILE="does/not/exist.json"))
    assert s.flows["customer_service"].start == "menu"


def test_flows_file_missing_or_bad_is_named(tmp_path: Path) -> None:
    message = error_of(base_env(FLOWS_FILE="nowhere.json"), tmp_path)
    assert "FLOWS_FILE" in message and "nowhere.json" in message
    (tmp_path / "bad.json").write_text("{")
    message = error_of(base_env(FLOWS_FILE="bad.json"), tmp_path)
    assert "FLOWS_FILE" in message and "JSON" in message
    (tmp_path / "graph.json").write_text(
        json.dumps({"customer_service": {"start": "x", "nodes": {"a": {"type": "hangup"}}}})
    )
    message = error_of(base_env(FLOWS_FILE="graph.json"), tmp_path)
    assert message.startswith("setting FLOWS_FILE:") and "start 'x'" in message


def test_flows_file_is_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "flows.json").write_text(json.dumps({"customer_service": DTMF_FLOW["dtmf_only"]}))
    assert set(load_flows({"FLOWS_FILE": "flows.json"}, tmp_path)) == {"customer_service"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RECORDING_MODE", "always"),
        ("RECORDING_MODE", "On_Connect"),
        ("RECORDING_MODE", "after_consent"),  # values that did nothing but "off" did are gone
        ("RECORDING_MODE", "on_demand"),
        ("RECORDING_CHANNEL", "stereo"),
        ("RECORDING_CONTENT", "video"),
        ("RECORDING_FORMAT", "ogg"),
        ("RECORDING_DELETE_AFTER_COPY", "maybe"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_LEVEL", "trace"),
    ],
)
def test_bad_choice_is_named(name: str, value: str) -> None:
    message = error_of(base_env(**{name: value}))
    assert name in message and repr(value.upper() if name == "LOG_LEVEL" else value) in message


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("RECORDING_MODE", "on_connect", "mode", "on_connect"),
        ("RECORDING_CHANNEL", "mixed", "channel", "mixed"),
        ("RECORDING_CONTENT", "audioVideo", "content", "audioVideo"),
        ("RECORDING_FORMAT", "mp4", "format", "mp4"),
        ("RECORDING_DELETE_AFTER_COPY", "TRUE", "delete_after_copy", True),
        (
            "RECORDING_ALLOWED_HOSTS",
            " A.Example.com , ,*.b.example ",
            "allowed_hosts",
            ("a.example.com", "*.b.example"),
        ),
    ],
)
def test_good_recording_choices(name: str, value: str, attribute: str, expected: object) -> None:
    assert getattr(load(base_env(**{name: value})).recording, attribute) == expected


def test_log_level_is_case_insensitive() -> None:
    assert load(base_env(LOG_LEVEL="debug")).log_level == "DEBUG"


def test_text_to_speech_flows_need_cognitive_services() -> None:
    message = error_of(base_env(COGNITIVE_SERVICES_ENDPOINT=None))
    assert "COGNITIVE_SERVICES_ENDPOINT" in message and "customer_service" in message
    rules = json.dumps({"default": {"type": "answer", "flow": "dtmf_only"}})
    flows = json.dumps({**DTMF_FLOW, **TTS_FLOW})
    message = error_of(base_env(COGNITIVE_SERVICES_ENDPOINT=None, FLOWS=flows, ROUTING_RULES=rules))
    assert "COGNITIVE_SERVICES_ENDPOINT" in message and "tts" in message and "dtmf_only" not in message


def test_speech_menu_with_audio_prompts_needs_cognitive_services() -> None:
    flow = json.loads(json.dumps(DTMF_FLOW))
    flow["dtmf_only"]["nodes"]["menu"]["input"] = "both"
    rules = json.dumps({"default": {"type": "answer", "flow": "dtmf_only"}})
    message = error_of(base_env(COGNITIVE_SERVICES_ENDPOINT=None, FLOWS=json.dumps(flow), ROUTING_RULES=rules))
    assert "COGNITIVE_SERVICES_ENDPOINT" in message


def test_dtmf_only_audio_flows_need_no_cognitive_services() -> None:
    rules = {"default": {"type": "answer", "flow": "dtmf_only"}}
    s = load(base_env(COGNITIVE_SERVICES_ENDPOINT=None, FLOWS=json.dumps(DTMF_FLOW), ROUTING_RULES=json.dumps(rules)))
    assert s.cognitive_services_endpoint is None


# -- ACS connection strings -----------------------------------------------------------------------


def test_connection_string_keeps_http_for_the_simulator() -> None:
    assert parse_connection_string("endpoint=http://127.0.0.1:8090/;accesskey=abc==") == (
        "http://127.0.0.1:8090",
        "abc==",
    )
    s = load(base_env(ACS_CONNECTION_STRING="endpoint=http://127.0.0.1:8090/;accesskey=" + ACCESS_KEY))
    assert s.acs_endpoint == "http://127.0.0.1:8090"


def test_connection_string_keys_are_case_insensitive_and_spaces_ignored() -> None:
    value = " Endpoint = https://x.communication.azure.com/ ; AccessKey = k3y= ; "
    assert parse_connection_string(value) == ("https://x.communication.azure.com", "k3y=")


@pytest.mark.parametrize(
    "value",
    [
        "endpoint=https://x.communication.azure.com/",
        f"accesskey={ACCESS_KEY}",
        "garbage",
        f"endpoint=;accesskey={ACCESS_KEY}",
    ],
)
def test_incomplete_connection_string_is_named_without_the_key(value: str) -> None:
    message = error_of(base_env(ACS_CONNECTION_STRING=value))
    assert "ACS_CONNECTION_STRING" in message
    assert ACCESS_KEY not in message


def test_connection_string_with_bad_endpoint_is_named_without_the_key() -> None:
    message = error_of(base_env(ACS_CONNECTION_STRING=f"endpoint=acs.example.com;accesskey={ACCESS_KEY}"))
    assert "ACS_CONNECTION_STRING" in message and ACCESS_KEY not in message


# -- nothing secret is shown ----------------------------------------------------------------------


def test_describe_has_no_secrets() -> None:
    env = base_env()
    s = load(env)
    shown = json.dumps(s.describe())
    secrets = [env[spec.name] for spec in SETTINGS if spec.secret and env.get(spec.name)]
    assert len(secrets) == 4  # CALLBACK_SECRET and the connection strings of ACS, storage, Application Insights
    for value in [*secrets, ACCESS_KEY, SECRET, "c3RvcmFnZS1rZXk=", "InstrumentationKey"]:
        assert value not in shown
    assert s.describe()["telemetry"] is True
    assert s.describe()["flows"] == sorted(s.flows) and "customer_service" in s.flows
    assert s.describe()["routing_rules"] == ["support"]


def test_repr_has_no_secrets() -> None:
    s = load(base_env())
    shown = repr(s)
    for value in [ACCESS_KEY, SECRET, repr(b"k" * 32), STORAGE, "c3RvcmFnZS1rZXk=", INSIGHTS]:
        assert value not in shown


# -- dialing: the destination policy, the daily cap, the rooms connect may join ---------------------------------


def test_dialing_defaults_are_safe() -> None:
    d = load(base_env()).dialing
    assert d.policy.allowed == ("+1",) and "+1900" in d.policy.denied and "+1876" in d.policy.denied
    assert "+979" in d.policy.denied and "+1787" not in d.policy.denied  # Puerto Rico is domestic
    assert d.daily_cap == 1000 and d.connect_allowed == frozenset()
    assert d.policy.allows("+14255550100") and not d.policy.allows("4:+19005550100")
    assert not d.policy.allows("+442071234567")  # abroad: not in the allowed list


def test_dialing_settings_are_read() -> None:
    d = load(
        base_env(
            DIAL_ALLOWED_PREFIXES="+1, +44",
            DIAL_DENIED_PREFIXES="+449,+4470",
            DIAL_DAILY_CAP="25",
            CONNECT_ALLOWED_ROOMS="room-7, team-31",
        )
    ).dialing
    assert d.policy.allows("+442071234567") and not d.policy.allows("+449091234567")
    assert d.policy.allows("+19005550100")  # the denied list was replaced
    assert d.daily_cap == 25 and d.connect_allowed == {"room-7", "team-31"}
    none = settings_module.dialing(
        {"DIAL_ALLOWED_PREFIXES": "none", "DIAL_DENIED_PREFIXES": "none", "DIAL_DAILY_CAP": "0"}
    )
    assert not none.policy.allows("+14255550100") and none.policy.allows("8:acs:agent") and none.daily_cap == 0
    # The shipped flows ring phone numbers: with no phone allowed, the app does not start.
    assert "DIAL_ALLOWED_PREFIXES" in error_of(base_env(DIAL_ALLOWED_PREFIXES="none"))


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DIAL_ALLOWED_PREFIXES", "+1,44", "44 not a prefix"),
        ("DIAL_DENIED_PREFIXES", "+1900,+1-876", "+1-876 not a prefix"),
        ("DIAL_DAILY_CAP", "-1", "not a whole number"),
        ("DIAL_DAILY_CAP", "lots", "not a whole number"),
    ],
)
def test_bad_dialing_setting_is_named(name: str, value: str, says: str) -> None:
    message = error_of(base_env(**{name: value}))
    assert message.startswith(f"setting {name}") and says in message


@pytest.mark.parametrize("target", ["+19005550100", "4:+19005550100", "+18765550100", "+442071234567", "4:1900555"])
def test_a_redirect_to_a_refused_destination_stops_start_up(target: str) -> None:
    rules = {"rules": [{"name": "fwd", "action": {"type": "redirect", "targets": ["+14255550199", target]}}],
             "default": {"type": "answer", "flow": "customer_service"}}
    message = error_of(base_env(ROUTING_RULES=json.dumps(rules)))
    assert message.startswith("setting ROUTING_RULES"), message
    # Refused by the dialing policy, or (a 4: id that is no E.164 number) by the routing rules' own check.
    assert "policy refuses" in message or "E.164" in message, message


def test_a_flow_that_rings_a_refused_destination_stops_start_up() -> None:
    flows = {
        "customer_service": json.loads((ROOT / "flows" / "default.json").read_text())["customer_service"],
        "premium": {"start": "t", "nodes": {
            "t": {"type": "transfer", "target": {"to": "4:+19005550100"}, "on_failure": "bye"},
            "add": {"type": "add_participant", "target": {"to": "+14255550100"}, "next": "bye", "on_failure": "bye"},
            "bye": {"type": "hangup"}}},
    }
    flows["premium"]["nodes"]["t"]["on_failure"] = "add"
    message = error_of(base_env(FLOWS=json.dumps(flows)))
    assert message.startswith("setting FLOWS: flow 'premium' node 't' rings '4:+19005550100'"), message
    assert "policy refuses: +1900 numbers are denied (DIAL_DENIED_PREFIXES" in message
    # Allowed by a longer prefix: it loads. A target naming a variable is checked on the call instead.
    assert load(base_env(FLOWS=json.dumps(flows), DIAL_ALLOWED_PREFIXES="+1,+1900555")).flows["premium"]
    flows["premium"]["nodes"]["t"]["target"]["to"] = "{agent}"
    assert load(base_env(FLOWS=json.dumps(flows))).flows["premium"]


def test_the_shipped_flows_and_the_test_routing_pass_the_default_policy() -> None:
    from tools.apphost import DEFAULT_ROUTING

    assert load(base_env(ROUTING_RULES=json.dumps(DEFAULT_ROUTING))).dialing.daily_cap == 1000


# -- docs/settings.md lists every setting ---------------------------------------------------------


def readme_settings_table() -> list[str]:
    text = (ROOT / "docs" / "settings.md").read_text()
    match = re.search(r"^# Settings\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, "docs/settings.md has no '# Settings' section"
    names = []
    for line in match.group(1).splitlines():
        cell = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
        if cell:
            names.append(cell.group(1))
    return names


def test_every_setting_is_in_the_readme_table() -> None:
    names = readme_settings_table()
    missing = [s.name for s in SETTINGS if s.name not in names]
    assert not missing, f"add these settings to the table in docs/settings.md: {missing}"


def test_the_readme_table_lists_only_real_settings_once() -> None:
    names = readme_settings_table()
    assert len(names) == len(set(names))
    assert set(names) <= SETTING_NAMES, f"not settings: {sorted(set(names) - SETTING_NAMES)}"
