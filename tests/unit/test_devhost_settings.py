"""devhost's settings file, in process: which file is read (``--settings`` must exist, ``--no-settings`` reads none,
else ``local.settings.json`` if it is there), the one line saying so, where a key came from, and the options the
launchers give another checkout's devhost. The host itself, started with each, is in tests/e2e/test_devhost.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from devhost.__main__ import SettingsFileError, key_source, read_settings, settings_source
from tools.apphost import ROOT, no_settings


def settings(path: Path, values: object) -> Path:
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def test_without_an_option_local_settings_is_read_if_it_is_there(tmp_path: Path) -> None:
    assert read_settings(tmp_path, None, False) == (None, {})
    assert settings_source(tmp_path, None, False, 0) == (
        f"no settings file read (no {tmp_path / 'local.settings.json'}): app settings from the environment only"
    )
    local = settings(tmp_path / "local.settings.json", {"A": "1", "FLAG": True, "N": 3})
    assert read_settings(tmp_path, None, False) == (local, {"A": "1", "FLAG": "True", "N": "3"})
    assert settings_source(tmp_path, local, False, 3).startswith(f"3 value(s) from {local}")


def test_a_file_asked_for_must_exist_and_is_named_as_resolved(tmp_path: Path) -> None:
    settings(tmp_path / "local.settings.json", {"A": "1"})
    with pytest.raises(SettingsFileError) as missing:
        read_settings(tmp_path, "local.setings.json", False)
    assert str(missing.value) == f"--settings local.setings.json: no such file: {tmp_path / 'local.setings.json'}"
    with pytest.raises(SettingsFileError, match="no such file"):
        read_settings(tmp_path, ".", False)  # a folder is not a file
    (tmp_path / "conf").mkdir()
    other = settings(tmp_path / "conf" / "dev.json", {"B": "2"})
    assert read_settings(tmp_path, "conf/dev.json", False) == (other, {"B": "2"})
    assert read_settings(tmp_path / "elsewhere", str(other), False) == (other, {"B": "2"})  # absolute: as given


@pytest.mark.parametrize(
    "text, why",
    [("{", "not a JSON object"), ("[]", "not a JSON object"), ('{"Values": [1]}', "Values must be an object")],
)
def test_a_file_that_is_not_settings_is_refused(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "local.settings.json").write_text(text)
    with pytest.raises(SettingsFileError, match=why):
        read_settings(tmp_path, None, False)


def test_no_settings_reads_none_even_where_there_is_one(tmp_path: Path) -> None:
    settings(tmp_path / "local.settings.json", {"A": "1"})
    assert read_settings(tmp_path, None, True) == (None, {})
    assert settings_source(tmp_path, None, True, 0).startswith("no settings file read (--no-settings)")


def test_where_a_key_came_from_is_told_without_the_key(tmp_path: Path) -> None:
    local = tmp_path / "local.settings.json"
    given = argparse.Namespace(function_key="a-key-given-as-an-option")
    none = argparse.Namespace(function_key=None)
    variable = "DEVHOST_FUNCTION_KEY"
    assert key_source("function_key", variable, given, {variable}, local) == "--function-key"
    assert key_source("function_key", variable, none, {variable}, local) == f"{variable} in the environment"
    assert key_source("function_key", variable, none, set(), local) == f"{variable} in local.settings.json (Values)"
    assert key_source("function_key", variable, none, set(), None) == f"{variable} in the environment"


def test_launchers_give_each_checkouts_devhost_the_options_it_knows(tmp_path: Path) -> None:
    assert no_settings(ROOT) == ["--no-settings"]
    assert no_settings(tmp_path) == ["--no-settings"]  # no devhost of its own: this checkout's serves it
    older = tmp_path / "devhost" / "__main__.py"
    older.parent.mkdir()
    older.write_text('p.add_argument("--settings", default="local.settings.json")\n')
    assert no_settings(tmp_path) == ["--settings", "no-local-settings.json"]  # ignored by a devhost of then
