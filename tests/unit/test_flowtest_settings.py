"""bin/run-scenario's settings: a user's local.settings.json and KEY=VALUE items, their paths (relative to where they
run it), and what the local stack keeps wiring itself."""

import json
from pathlib import Path

import pytest

from tools.flowtest import ROOT, FlowTestError, read_settings, user_settings


def test_a_local_settings_file_and_key_values_later_ones_winning(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": {"RECORDING_MODE": "on_connect", "LOG_LEVEL": "INFO",
                                                     "DIAL_DAILY_CAP": 5}})
    )
    found = read_settings(["local.settings.json", "RECORDING_MODE=off", "X=a=b"], base=tmp_path)
    assert found == {"RECORDING_MODE": "off", "LOG_LEVEL": "INFO", "DIAL_DAILY_CAP": "5", "X": "a=b"}


def test_a_missing_settings_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FlowTestError, match="local.settings.jsn: no such file"):
        read_settings(["local.settings.jsn"], base=tmp_path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(FlowTestError, match="broken.json: not valid JSON"):
        read_settings(["broken.json"], base=tmp_path)


def test_the_stack_keeps_its_wiring_and_the_options_win(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "rules.json").write_text("{}")
    chosen, ignored = user_settings(
        flows=f"flows/default.json;{tmp_path / 'flows'}",
        routing=tmp_path / "rules.json",
        settings={"ACS_CONNECTION_STRING": "endpoint=http://127.0.0.1:8090/;accesskey=x", "ROUTING_RULES": "{}",
                  "FLOWS": "{}", "RECORDING_MODE": "off"},
        base=ROOT,
    )
    assert ignored == ["ACS_CONNECTION_STRING"]
    assert chosen["FLOWS_FILE"] == f"flows/default.json;{tmp_path / 'flows'}"  # inside the repo: relative to it
    assert chosen["ROUTING_RULES_FILE"] == str(tmp_path / "rules.json")
    assert "ROUTING_RULES" not in chosen and "FLOWS" not in chosen
    assert chosen["RECORDING_MODE"] == "off"
    with pytest.raises(FlowTestError, match="nope: no such file or folder"):
        user_settings(flows="nope", base=tmp_path)
