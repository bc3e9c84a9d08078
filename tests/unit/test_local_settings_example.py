"""local.settings.example.json: the settings a local run needs, pointing at the local simulator and
Azurite, with placeholders (never real secrets) where a secret goes, and loadable once they are filled."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.platform import settings
from tools.azurite import ACCOUNT, ACCOUNT_KEY

ROOT = Path(__file__).resolve().parents[2]
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "AzureWebJobsFeatureFlags"}
# Read by the local host (devhost) for itself, and kept from the app's environment; Core Tools ignores them.
DEVHOST_KEYS = {"DEVHOST_EVENTGRID_KEY", "DEVHOST_FUNCTION_KEY", "DEVHOST_MASTER_KEY"}
PLACEHOLDER = re.compile(r"<[^<>]+>")
SIMULATOR = "127.0.0.1:8090"


@pytest.fixture(scope="module")
def values() -> dict[str, str]:
    document = json.loads((ROOT / "local.settings.example.json").read_text())
    assert document["IsEncrypted"] is False
    return document["Values"]


def test_values_are_strings(values: dict[str, str]) -> None:
    assert values and all(isinstance(v, str) for v in values.values())


def test_host_settings_are_kept(values: dict[str, str]) -> None:
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_every_name_is_a_host_setting_or_declared_in_settings(values: dict[str, str]) -> None:
    assert set(values) - HOST_SETTINGS - DEVHOST_KEYS <= settings.SETTING_NAMES


def test_every_required_setting_is_there(values: dict[str, str]) -> None:
    missing = [s.name for s in settings.SETTINGS if s.required and s.name not in values]
    assert missing == []
    # The "one of the two" pairs: the local run takes the connection-string halves.
    assert "ACS_CONNECTION_STRING" in values
    assert "APP_STORAGE" in values


def test_secrets_are_placeholders_or_azurite_s_published_development_key(values: dict[str, str]) -> None:
    for spec in settings.SETTINGS:
        if not spec.secret or spec.name not in values:
            continue
        value = values[spec.name]
        if spec.name == "APP_STORAGE":
            # Azurite's one well-known account and key, documented by Microsoft: not a secret.
            assert f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};" in value
            continue
        assert PLACEHOLDER.search(value), f"{spec.name} must be a <placeholder>, not a value"


def test_services_are_the_local_simulator_and_azurite(values: dict[str, str]) -> None:
    assert values["ACS_CONNECTION_STRING"].startswith(f"endpoint=http://{SIMULATOR}/;accesskey=")
    assert urlparse(values["ACS_OPENID_CONFIG_URL"]).netloc == SIMULATOR
    assert urlparse(values["CALLBACK_BASE_URL"]).netloc == "127.0.0.1:7071"
    assert values["CALLBACK_BASE_URL"].endswith("/api")
    storage = dict(p.split("=", 1) for p in values["APP_STORAGE"].split(";") if p)
    assert storage["BlobEndpoint"] == f"http://127.0.0.1:10000/{ACCOUNT}"
    assert storage["QueueEndpoint"] == f"http://127.0.0.1:10001/{ACCOUNT}"
    assert storage["TableEndpoint"] == f"http://127.0.0.1:10002/{ACCOUNT}"


def test_loads_once_the_placeholders_are_filled(values: dict[str, str]) -> None:
    filled = {
        "<the simulator's --access-key (base64)>": base64.b64encode(os.urandom(32)).decode(),
        "<base64 of 32 random bytes>": base64.b64encode(os.urandom(32)).decode(),
        "<a key of your own for devhost's Event Grid webhook>": secrets.token_urlsafe(32),
    }
    env = {}
    for name, value in values.items():
        for placeholder, real in filled.items():
            value = value.replace(placeholder, real)
        assert not PLACEHOLDER.search(value), f"{name}: a placeholder this test does not know"
        env[name] = value
    loaded = settings.load(env)
    assert loaded.acs_endpoint == f"http://{SIMULATOR}"
    assert loaded.storage.connection_string == values["APP_STORAGE"]
    assert loaded.callback_base_url == "http://127.0.0.1:7071/api"


def test_devhost_keys_are_placeholders_devhost_refuses_until_filled(values: dict[str, str]) -> None:
    from devhost.host import check_key

    assert "DEVHOST_EVENTGRID_KEY" in values  # Event Grid subscriptions keep working across restarts
    for name in DEVHOST_KEYS & set(values):
        assert PLACEHOLDER.fullmatch(values[name]), f"{name} must be a <placeholder>, not a key"
        with pytest.raises(ValueError, match="placeholder"):
            check_key(name, values[name])
