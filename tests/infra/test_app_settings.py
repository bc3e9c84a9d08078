"""The Function App's app settings in Bicep are exactly the settings the code reads
(core.platform.settings.SETTINGS), plus the platform's own; their values are the code's defaults or
wired to the resources they name; and together they make a configuration the app loads."""

from __future__ import annotations

import base64
import json

import pytest

from core.platform.settings import SETTINGS, SettingsError, load
from tests.infra import bicep

# Read by the code, deliberately not set in Azure (with the reason).
NOT_SET_IN_AZURE = {
    "ACS_CONNECTION_STRING": "local runs only: in Azure the app uses ACS_ENDPOINT with its managed identity",
    "APP_STORAGE": "local runs only (Azurite): in Azure the app uses APP_STORAGE__tableServiceUri / "
    "APP_STORAGE__blobServiceUri with its managed identity",
}

# Not read by core/platform/settings.py, read by the Functions platform or the Azure SDKs.
PLATFORM = {
    "AzureWebJobsStorage__blobServiceUri": "Functions host storage (the host account), identity-based. Blob only: "
    "no queue, Durable or table-based trigger needs the queue or table endpoint",
    "AzureWebJobsStorage__credential": "Functions host storage: use a managed identity",
    "AzureWebJobsStorage__clientId": "Functions host storage: which (user-assigned) identity: the host identity",
    "AZURE_CLIENT_ID": "azure-identity's DefaultAzureCredential (core/platform/clients.py, core/platform/tables.py) "
    "picks the app identity by it; without it the app has no identity on a site with no system-assigned one",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "optional (appInsightsEntraAuth): Entra ID for the host's telemetry",
}

# Settings the Flex Consumption plan rejects or ignores (runtime and version are in functionAppConfig).
NOT_ON_FLEX = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "AzureWebJobsStorage",
}

MAIN = bicep.template("main.bicep")
FUNCTION_APP = bicep.template("modules/functionapp.bicep")
CTX = bicep.Context(MAIN).module("functionApp")
SPECS = {s.name: s for s in SETTINGS}


def app_settings() -> dict[str, list[tuple[bicep.Context, object, bool]]]:
    configs = [
        d
        for d in FUNCTION_APP.resources_of_type("Microsoft.Web/sites/config").values()
        if d.body["name"] == "appsettings"
    ]
    assert len(configs) == 1, "one Microsoft.Web/sites/config 'appsettings' resource holds every app setting"
    sites = FUNCTION_APP.resources_of_type("Microsoft.Web/sites")
    for site in sites.values():
        assert "appSettings" not in site.body["properties"].get("siteConfig", {}), "app settings live in one place"
    return bicep.object_entries(CTX, configs[0].body["properties"])


SETTINGS_IN_BICEP = app_settings()


def value(name: str) -> object:
    [(ctx, expr, _)] = SETTINGS_IN_BICEP[name]
    return bicep.evaluate(ctx, expr)


def source_resource(name: str) -> tuple[bicep.Context, bicep.Decl, tuple[str, ...]]:
    [(ctx, expr, _)] = SETTINGS_IN_BICEP[name]
    return bicep.resource_of(ctx, expr)


def test_the_reasons_name_real_settings():
    assert set(NOT_SET_IN_AZURE) <= set(SPECS), "a setting listed as not set in Azure is no longer read by the code"
    assert not set(PLATFORM) & set(SPECS), "a platform setting is now read by the code: move it out of PLATFORM"


def test_bicep_sets_exactly_the_settings_the_code_reads_plus_the_platforms():
    in_bicep = set(SETTINGS_IN_BICEP)
    expected_app = set(SPECS) - set(NOT_SET_IN_AZURE)
    app_part = in_bicep - set(PLATFORM)
    missing = expected_app - app_part
    unknown = app_part - expected_app
    assert not missing, f"read by the code (core/platform/settings.py) but not set in Bicep: {sorted(missing)}"
    assert not unknown, f"set in Bicep but not read by the code nor a known platform setting: {sorted(unknown)}"
    assert set(PLATFORM) <= in_bicep, f"platform settings missing: {sorted(set(PLATFORM) - in_bicep)}"


def test_local_only_and_flex_rejected_settings_are_not_set():
    assert not set(NOT_SET_IN_AZURE) & set(SETTINGS_IN_BICEP)
    assert not NOT_ON_FLEX & set(SETTINGS_IN_BICEP)


def test_only_the_entra_telemetry_setting_and_the_source_of_the_rules_are_optional():
    optional = {name for name, arms in SETTINGS_IN_BICEP.items() if not all(always for _, _, always in arms)}
    assert optional == {"APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "ROUTING_RULES", "ROUTING_RULES_FILE"}
    default = bicep.evaluate(CTX, bicep.Ref("appInsightsEntraAuth"))
    assert default is False
    # ROUTING_RULES or ROUTING_RULES_FILE, never both (the app refuses both): test_user_flows.py evaluates each case.
    [(_, rules, _)] = SETTINGS_IN_BICEP["ROUTING_RULES"]
    [(_, rules_file, _)] = SETTINGS_IN_BICEP["ROUTING_RULES_FILE"]
    default_rules = bicep.evaluate(bicep.Context(MAIN), MAIN.params["routingRules"].value)
    assert json.loads(bicep.evaluate(CTX, rules)) == default_rules
    assert rules_file == bicep.Ref("routingRulesFile")


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.default is not None], ids=lambda s: s.name)
def test_settings_with_a_code_default_get_that_default(spec):
    assert value(spec.name) == spec.default, (
        f"{spec.name}: Bicep sets {value(spec.name)!r}, the code's default is {spec.default!r}"
    )


def test_acs_settings_come_from_the_acs_resource():
    [(ctx, endpoint, _)] = SETTINGS_IN_BICEP["ACS_ENDPOINT"]
    assert isinstance(endpoint, bicep.Interp) and endpoint.parts[0] == "https://" and len(endpoint.parts) == 2
    _, resource, props = bicep.resource_of(ctx, endpoint.parts[1])
    assert resource.resource_type == "Microsoft.Communication/communicationServices"
    assert props == ("properties", "hostName")
    _, resource, props = source_resource("ACS_RESOURCE_ID")
    assert resource.resource_type == "Microsoft.Communication/communicationServices"
    assert props == ("properties", "immutableResourceId"), "the JWT audience is the immutable resource id (a GUID)"


def test_callback_base_url_is_the_apps_https_host_and_route_prefix():
    [(_, expr, _)] = SETTINGS_IN_BICEP["CALLBACK_BASE_URL"]
    assert isinstance(expr, bicep.Interp)
    assert expr.parts[0] == "https://" and expr.parts[-1] == "/api"
    root, props = expr.parts[1].chain()
    assert props == ("properties", "defaultHostName")
    assert FUNCTION_APP.resources[root.name].resource_type == "Microsoft.Web/sites"
    host = json.loads((bicep.ROOT / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == "api"


def key_vault_reference(ctx: bicep.Context, expr: object, secret_name_param: str) -> None:
    """expr is '@Microsoft.KeyVault(SecretUri=<versioned URI of the secret keyvault.bicep names so>)'."""
    assert isinstance(expr, bicep.Interp), bicep.src(expr)
    assert expr.parts[0] == "@Microsoft.KeyVault(SecretUri=" and expr.parts[-1] == ")"
    _, secret, props = bicep.resource_of(ctx, expr.parts[1])
    assert secret.resource_type == "Microsoft.KeyVault/vaults/secrets" and secret.existing
    # A versioned URI: every instance resolves the same version, and a new value (a rotation)
    # changes the setting, which restarts the app on it.
    assert props == ("properties", "secretUriWithVersion")
    assert bicep.evaluate(ctx, secret.body["name"]) == bicep.evaluate(
        bicep.Context(MAIN).module("keyVault"), bicep.Ref(secret_name_param)
    )


def test_callback_secret_is_a_key_vault_reference_to_the_secret_set_once():
    [(ctx, expr, _)] = SETTINGS_IN_BICEP["CALLBACK_SECRET"]
    key_vault_reference(ctx, expr, "callbackSecretName")
    # main.bicep's @secure() parameter has no default: no newGuid(), so a deployment never makes a
    # new key by itself (that broke every call in progress). The preprovision hook sets it once.
    param = MAIN.params["callbackSecret"]
    assert "secure" in param.decorators
    assert not param.has_default, "a default (newGuid()) would change the key at every deployment"
    assert "newGuid" not in MAIN.source


def test_callback_secret_previous_is_empty_unless_a_rotation_is_in_progress():
    [(ctx, expr, always)] = SETTINGS_IN_BICEP["CALLBACK_SECRET_PREVIOUS"]
    assert always, "always set: an empty value is how the app reads 'no rotation in progress'"
    assert isinstance(expr, bicep.Cond)
    assert bicep.evaluate(ctx, expr) == "", "no rotation by default"
    assert expr.no == ""
    key_vault_reference(ctx, expr.yes, "previousSecretName")
    # The switch is main.bicep's (secure) callbackSecretPrevious: set, the reference is used.
    assert "secure" in MAIN.params["callbackSecretPrevious"].decorators
    assert MAIN.params["callbackSecretPrevious"].value == ""
    rotating = bicep.Context(MAIN, (("callbackSecretPrevious", "old-key"),), bicep.Context(MAIN))
    fa = rotating.module("functionApp")
    assert bicep.evaluate(fa, expr.test) is True
    assert bicep.evaluate(bicep.Context(MAIN).module("functionApp"), expr.test) is False


def module_output(module: str, output: str) -> object:
    """What main.bicep's `module.outputs.output` comes down to (an expression in main.bicep)."""
    ref = bicep.Member(bicep.Member(bicep.Ref(module), "outputs", ""), output, "")
    return bicep.trace(bicep.Context(MAIN), ref)[1]


def account_of(name: str) -> object:
    """The storage account a setting's endpoint is read from, as main.bicep names it."""
    ctx, resource, _ = source_resource(name)
    assert resource.resource_type == "Microsoft.Storage/storageAccounts", name
    return bicep.trace(ctx, resource.body["name"])[1]


def identity_of(name: str) -> object:
    """The user-assigned identity a setting's client id is read from, as main.bicep names it."""
    ctx, identity, props = source_resource(name)
    assert identity.resource_type == "Microsoft.ManagedIdentity/userAssignedIdentities", name
    assert props == ("properties", "clientId"), name
    assert ctx.template.rel == "infra/modules/identity.bicep"
    return bicep.trace(ctx, identity.body["name"])[1]


def test_storage_settings_are_identity_based_endpoints_of_the_right_account():
    for name, endpoint in [
        ("APP_STORAGE__tableServiceUri", "table"),
        ("APP_STORAGE__blobServiceUri", "blob"),
        ("AzureWebJobsStorage__blobServiceUri", "blob"),
    ]:
        _, _, props = source_resource(name)
        assert props == ("properties", "primaryEndpoints", endpoint), name
    data, host = module_output("storage", "name"), module_output("hostStorage", "name")
    assert bicep.src(data) != bicep.src(host), "two accounts: host storage apart from the app's data"
    # The app's data in the app-data account, the host's storage in the host account.
    assert account_of("APP_STORAGE__tableServiceUri") == data
    assert account_of("APP_STORAGE__blobServiceUri") == data
    assert account_of("AzureWebJobsStorage__blobServiceUri") == host
    for unused in ("AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__tableServiceUri"):
        assert unused not in SETTINGS_IN_BICEP, f"{unused}: the host has no queue or table role"
    # Nothing of the host's storage but the blob endpoint and the identity: no queue or table URI
    # that no trigger uses (the app has no queue, Durable or table-based trigger).
    host_storage = {name for name in SETTINGS_IN_BICEP if name.startswith("AzureWebJobsStorage")}
    assert host_storage == {
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
    }
    triggers = {f.get_trigger().type for f in bicep.app_functions().values()}
    assert triggers <= {"httpTrigger", "eventGridTrigger"}, f"a trigger may need queues or tables: {triggers}"
    assert value("AzureWebJobsStorage__credential") == "managedidentity"


def test_the_app_code_and_the_host_use_different_identities():
    """The app's code (DefaultAzureCredential, AZURE_CLIENT_ID) runs as the app identity; the host's
    storage, the package and the Key Vault references use the host identity."""
    app_name = MAIN.modules["identity"].body["params"]["name"]
    host_name = MAIN.modules["hostIdentity"].body["params"]["name"]
    assert bicep.src(app_name) != bicep.src(host_name)
    assert identity_of("AZURE_CLIENT_ID") == app_name
    assert identity_of("AzureWebJobsStorage__clientId") == host_name
    site = next(iter(FUNCTION_APP.resources_of_type("Microsoft.Web/sites").values()))
    assert site.body["properties"]["keyVaultReferenceIdentity"] == bicep.Ref("hostIdentityId")
    assert MAIN.modules["functionApp"].body["params"]["hostIdentityId"] == bicep.Member(
        bicep.Member(bicep.Ref("hostIdentity"), "outputs", ""), "id", ""
    )


def test_cognitive_services_endpoint_is_the_ai_services_account():
    _, resource, props = source_resource("COGNITIVE_SERVICES_ENDPOINT")
    assert resource.resource_type == "Microsoft.CognitiveServices/accounts"
    assert props == ("properties", "endpoint")


def test_app_insights_connection_string_comes_from_the_component_not_a_parameter():
    ctx, resource, props = source_resource("APPLICATIONINSIGHTS_CONNECTION_STRING")
    assert resource.resource_type == "Microsoft.Insights/components" and resource.existing
    assert props == ("properties", "ConnectionString")
    assert ctx.template is FUNCTION_APP, "read in place: never passed through a parameter or an output"


def test_no_setting_carries_a_key_or_connection_string():
    secret_specs = {s.name for s in SETTINGS if s.secret}
    # Secrets the code reads are either not set in Azure or come from Key Vault.
    for name in secret_specs & set(SETTINGS_IN_BICEP):
        [(_, expr, _)] = SETTINGS_IN_BICEP[name]
        if name == "APPLICATIONINSIGHTS_CONNECTION_STRING":
            continue  # an ingestion address, not a credential (checked above: read from the component)
        # A Key Vault reference, or (CALLBACK_SECRET_PREVIOUS) a choice between one and nothing.
        arms = [expr.yes, expr.no] if isinstance(expr, bicep.Cond) else [expr]
        for arm in arms:
            text = bicep.src(arm)
            assert arm == "" or text.startswith("'@Microsoft.KeyVault("), (
                f"{name} is a secret: it must be a Key Vault reference"
            )
    for name, arms in SETTINGS_IN_BICEP.items():
        for _, expr, _ in arms:
            text = bicep.src(expr).lower()
            for marker in ("listkeys", "accountkey", "accesskey", "connectionstrings", "sharedaccess"):
                assert marker not in text, f"{name}: {text}"


def test_the_settings_bicep_sets_are_a_configuration_the_app_loads():
    """Evaluate every setting as deployed (parameter defaults); runtime values (host names,
    the resource id, the secret) get stand-ins of the right shape. core.platform.settings.load must accept it."""
    stand_ins = {
        "ACS_ENDPOINT": "https://acs-x.communication.azure.com",
        "ACS_RESOURCE_ID": "00000000-0000-0000-0000-000000000001",
        "CALLBACK_BASE_URL": "https://func-x.azurewebsites.net/api",
        "CALLBACK_SECRET": base64.b64encode(b"s" * 72).decode(),
        "COGNITIVE_SERVICES_ENDPOINT": "https://ai-x.cognitiveservices.azure.com/",
        "APP_STORAGE__tableServiceUri": "https://stx.table.core.windows.net/",
        "APP_STORAGE__blobServiceUri": "https://stx.blob.core.windows.net/",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
    }
    [config] = [
        d for d in FUNCTION_APP.resources_of_type("Microsoft.Web/sites/config").values()
        if d.body["name"] == "appsettings"
    ]

    def stand_in(name: str, unknown: bicep.Unknown) -> object:
        assert name in stand_ins or name not in SPECS, f"{name} has no static value and no stand-in here: {unknown}"
        return stand_ins.get(name)

    deployed = bicep.object_value(CTX, config.body["properties"], stand_in)
    env = {name: str(v) for name, v in deployed.items() if name in SPECS}
    assert ("ROUTING_RULES" in env) != ("ROUTING_RULES_FILE" in env), "exactly one source of routing rules"
    try:
        settings = load(env)
    except SettingsError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"the app rejects the Bicep settings: {exc}")
    assert settings.storage.state_table == "callstate" and settings.storage.events_table == "callevents"
    assert settings.describe()["acs_auth"] == "managed identity"
    assert settings.describe()["storage"] == "managed identity"
