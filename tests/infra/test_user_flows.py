"""A user's own flows and routing rules reach the app in Azure: from the azd environment (FLOWS_FILE,
ROUTING_RULES_FILE) through main.parameters.json and main.bicep to the Function App's app settings, and the files
they name into the package azd deploys, where the app loads them (infra/README.md, Your own flows and routing
rules)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.platform.settings import SettingsError, load
from tests.infra import azd, bicep

MAIN = bicep.template("main.bicep")
FUNCTION_APP = bicep.template("modules/functionapp.bicep")

# What azd holds in every environment: its name, the region, and the key the preprovision hook makes.
AZD_ENV = {
    "AZURE_ENV_NAME": "my-calls",
    "AZURE_LOCATION": "swedencentral",
    "CALLBACK_SECRET": base64.b64encode(b"k" * 48).decode(),
}

# Values only Azure knows (host names, the resource id, the Key Vault secret), of the right shape.
RUNTIME = {
    "ACS_ENDPOINT": "https://acs-x.communication.azure.com",
    "ACS_RESOURCE_ID": "00000000-0000-0000-0000-000000000001",
    "CALLBACK_BASE_URL": "https://func-x.azurewebsites.net/api",
    "CALLBACK_SECRET": base64.b64encode(b"s" * 48).decode(),
    "COGNITIVE_SERVICES_ENDPOINT": "https://ai-x.cognitiveservices.azure.com/",
    "APP_STORAGE__tableServiceUri": "https://stx.table.core.windows.net/",
    "APP_STORAGE__blobServiceUri": "https://stx.blob.core.windows.net/",
    "AzureWebJobsStorage__blobServiceUri": "https://sthostx.blob.core.windows.net/",
    "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000002",
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000003",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
}

# The user's own files, as infra/README.md has them: a folder of flows and a rules file at the repository root.
AFTER_HOURS = {
    "after_hours": {
        "description": "Closed: says so and hangs up.",
        "start": "closed",
        "nodes": {"closed": {"type": "hangup", "prompt": {"text": "We are closed. Please call again tomorrow."}}},
    }
}
ROUTING = {
    "rules": [
        {
            "name": "after-hours",
            "match": {"hours": {"timezone": "Europe/Stockholm", "days": ["mon-fri"], "open": "08:00",
                                "close": "17:00", "within": False}},
            "action": {"type": "answer", "flow": "after_hours"},
        }
    ],
    "default": {"type": "answer", "flow": "customer_service"},
}
USER_FILES = {
    "my-flows/after-hours.json": json.dumps(AFTER_HOURS, indent=2),
    "routing.json": json.dumps(ROUTING, indent=2),
}


def app_settings(env: dict[str, str]) -> dict[str, Any]:
    """The Function App's app settings as `azd provision` sets them for an azd environment holding ``env``."""
    ctx = bicep.with_params(MAIN, **azd.parameters(env)).module("functionApp")
    [config] = [
        d for d in FUNCTION_APP.resources_of_type("Microsoft.Web/sites/config").values()
        if d.body["name"] == "appsettings"
    ]

    def runtime(name: str, unknown: bicep.Unknown) -> str:
        assert name in RUNTIME, f"{name} has no value before deployment and no stand-in here: {unknown}"
        return RUNTIME[name]

    return bicep.object_value(ctx, config.body["properties"], runtime)


def test_the_parameters_file_maps_the_azd_environment_to_the_parameters():
    entries = azd.parameter_file()
    assert azd.references(entries["flowsFile"]["value"]) == [("FLOWS_FILE", "flows/default.json")]
    assert azd.references(entries["routingRulesFile"]["value"]) == [("ROUTING_RULES_FILE", None)]
    for name in ("flowsFile", "routingRulesFile"):
        assert MAIN.params[name].type == "string", "a string: azd substitutes inside strings on every version"
    # Unset, the Bicep defaults: the shipped flows and the inline rules.
    assert bicep.evaluate(bicep.Context(MAIN), MAIN.params["flowsFile"].value) == "flows/default.json"
    assert MAIN.params["routingRulesFile"].value == ""


def test_main_passes_both_to_the_function_app():
    params = MAIN.modules["functionApp"].body["params"]
    assert params["flowsFile"] == bicep.Ref("flowsFile")
    assert params["routingRulesFile"] == bicep.Ref("routingRulesFile")
    assert params["routingRules"] == bicep.Ref("routingRules") and params["flows"] == bicep.Ref("flows")


def test_by_default_the_shipped_flows_and_the_inline_rules():
    settings = app_settings(AZD_ENV)
    assert settings["FLOWS_FILE"] == "flows/default.json"
    assert settings["FLOWS"] == ""
    default_rules = bicep.evaluate(bicep.Context(MAIN), MAIN.params["routingRules"].value)
    assert json.loads(settings["ROUTING_RULES"]) == default_rules
    assert "ROUTING_RULES_FILE" not in settings, "one source of rules: the app refuses both"


def test_the_users_flows_and_rules_file_reach_the_app_settings():
    env = {**AZD_ENV, "FLOWS_FILE": "flows/default.json;my-flows", "ROUTING_RULES_FILE": "routing.json"}
    settings = app_settings(env)
    assert settings["FLOWS_FILE"] == "flows/default.json;my-flows"
    assert settings["ROUTING_RULES_FILE"] == "routing.json"
    assert "ROUTING_RULES" not in settings, "left out of the collection, so a provision removes an old value"


def test_an_empty_value_in_the_azd_environment_means_the_defaults():
    """`azd env set ROUTING_RULES_FILE ""` undoes a rules file: azd leaves an empty parameter out."""
    settings = app_settings({**AZD_ENV, "FLOWS_FILE": "", "ROUTING_RULES_FILE": ""})
    assert settings["FLOWS_FILE"] == "flows/default.json"
    assert "ROUTING_RULES" in settings and "ROUTING_RULES_FILE" not in settings


def test_a_flows_object_still_overrides_the_files():
    ctx = bicep.with_params(MAIN, **azd.parameters(AZD_ENV), flows=AFTER_HOURS).module("functionApp")
    [config] = [
        d for d in FUNCTION_APP.resources_of_type("Microsoft.Web/sites/config").values()
        if d.body["name"] == "appsettings"
    ]
    settings = bicep.object_value(ctx, config.body["properties"], lambda name, _: RUNTIME[name])
    assert json.loads(settings["FLOWS"]) == AFTER_HOURS


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's clone of the repository with their flows folder and rules file added."""
    return azd.checkout(tmp_path_factory.mktemp("clone") / "repo", USER_FILES)


def test_the_users_files_are_packaged(clone: Path):
    files = azd.packaged(clone)
    assert set(USER_FILES) <= files
    assert "flows/default.json" in files and "function_app.py" in files


def test_the_app_in_azure_loads_the_users_flows_and_rules(clone: Path, tmp_path: Path):
    """End to end, offline: azd's parameters -> main.bicep -> the app settings, and the package azd deploys; the
    app's own settings loader, run on that package with those settings, routes into the user's flow."""
    env = {**AZD_ENV, "FLOWS_FILE": "flows/default.json;my-flows", "ROUTING_RULES_FILE": "routing.json"}
    settings = {k: str(v) for k, v in app_settings(env).items()}
    root = azd.package(clone, tmp_path / "wwwroot")
    try:
        loaded = load(settings, root=root)
    except SettingsError as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"the app would not start on the deployed package: {exc}")
    assert "after_hours" in loaded.flows and "customer_service" in loaded.flows
    assert [rule.name for rule in loaded.routing.rules] == ["after-hours"]
    # The same settings on a package without the user's folder: the app refuses to start, naming the setting.
    shutil.rmtree(root / "my-flows")
    with pytest.raises(SettingsError, match="FLOWS_FILE.*my-flows"):
        load(settings, root=root)


@pytest.mark.parametrize(
    "path",
    ["my-flows/after-hours.json", "contact-centre/flows/sales.json", "my-flows/docs/flows.json",
     "my-flows/tests/flows.json", "examples/your-flow/flows/your_flow.json", "examples/your-flow/routing.json",
     "routing.json"],
)
def test_flows_in_any_folder_of_the_user_are_packaged(path: str, tmp_path: Path):
    tree = azd.checkout(tmp_path / "repo", {path: "{}"}, files=[])
    assert azd.packaged(tree) == {path}


@pytest.mark.parametrize(
    "path",
    ["docs/flows.json", "tests/flows.json", "tools/x.json", "infra/x.json", "bin/validate-flows",
     "my-flows/README.md", "my-flows/scenario.yaml", "my-flows/test_my_flow.py", ".venv/lib/x.json",
     "my-flows/__pycache__/x.pyc", "local.settings.json", ".azure/my-calls/.env"],
)
def test_tools_docs_tests_and_local_state_are_not_packaged(path: str, tmp_path: Path):
    tree = azd.checkout(tmp_path / "repo", {path: "{}"}, files=[])
    assert azd.packaged(tree) == set()
