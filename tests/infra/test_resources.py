"""The resources of the deployment exist, are wired to each other, and are locked down: the
Flex Consumption app and its identity, storage, Key Vault, ACS, AI services, monitoring, and a
role assignment for every data-plane access. No key or connection string leaves a template."""

from __future__ import annotations

import re

import pytest

from core.settings import SETTINGS
from tests.infra import bicep

MAIN = bicep.template("main.bicep")
ROOT_CTX = bicep.Context(MAIN)
DEFAULTS = {s.name: s.default for s in SETTINGS}

BUILT_IN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "a97b65f3-24c7-4388-baec-2e87135dc908": "Cognitive Services User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}


def module(name: str) -> bicep.Context:
    return ROOT_CTX.module(name)


def only(decls: dict[str, bicep.Decl]) -> bicep.Decl:
    assert len(decls) == 1, list(decls)
    return next(iter(decls.values()))


def ev(ctx: bicep.Context, expr: object) -> object:
    return bicep.evaluate(ctx, expr)


# ---- main.bicep ------------------------------------------------------------------------------------


def test_main_is_subscription_scoped_and_makes_the_resource_group():
    assert MAIN.target_scope == "subscription"
    rg = only(MAIN.resources_of_type("Microsoft.Resources/resourceGroups"))
    for mod in MAIN.modules.values():
        assert mod.body["scope"] == bicep.Ref(rg.name), f"module {mod.name} deploys into the resource group"
    assert {"environmentName", "location"} <= set(MAIN.params)


def test_main_deploys_every_module():
    paths = {m.type for m in MAIN.modules.values()}
    assert paths == {
        "modules/identity.bicep",
        "modules/monitoring.bicep",
        "modules/storage.bicep",
        "modules/keyvault.bicep",
        "modules/communication.bicep",
        "modules/aiservices.bicep",
        "modules/roles.bicep",
        "modules/functionapp.bicep",
    }
    # eventgrid.bicep is not a module of main: it runs after the code is deployed.
    assert "eventgrid.bicep" not in {p.split("/")[-1] for p in paths}


def test_function_app_waits_for_its_role_assignments():
    assert bicep.Ref("roles") in MAIN.modules["functionApp"].body.get("dependsOn", [])


# ---- Function App ------------------------------------------------------------------------------------


FA = module("functionApp")
SITE = only(FA.template.resources_of_type("Microsoft.Web/sites"))
PLAN = only(FA.template.resources_of_type("Microsoft.Web/serverfarms"))


def test_plan_is_flex_consumption():
    assert PLAN.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert PLAN.body["properties"]["reserved"] is True  # Linux
    assert SITE.body["kind"] == "functionapp,linux"
    assert SITE.body["properties"]["serverFarmId"] == bicep.Member(bicep.Ref(PLAN.name), "id", "")


def test_runtime_is_python_3_11():
    runtime = SITE.body["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "3.11"}
    assert 'target-version = "py311"' in (bicep.ROOT / "pyproject.toml").read_text()


def test_site_has_only_the_user_assigned_identity():
    identity = SITE.body["identity"]
    assert identity["type"] == "UserAssigned"
    [(key, _)] = identity["userAssignedIdentities"].items()
    assert key == "${identityId}" or key == bicep.Interp((bicep.Ref("identityId"),), "")
    ctx, resource, props = bicep.resource_of(FA, bicep.Ref("identityId"))
    assert resource.resource_type == "Microsoft.ManagedIdentity/userAssignedIdentities" and props == ("id",)
    # Key Vault references resolve with it (there is no system-assigned identity to fall back to).
    assert SITE.body["properties"]["keyVaultReferenceIdentity"] == bicep.Ref("identityId")


def test_deployment_package_container_is_reached_with_the_identity():
    storage = SITE.body["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": bicep.Ref("identityId"),
    }
    container = bicep.evaluate(FA, bicep.Ref("deploymentContainerName"))
    assert isinstance(storage["value"], bicep.Interp) and storage["value"].parts[-1] == bicep.Ref(
        "deploymentContainerName"
    )
    assert container in storage_container_names()


def test_site_is_https_only_tls12_no_ftp_no_basic_auth():
    properties = SITE.body["properties"]
    assert properties["httpsOnly"] is True
    site_config = properties["siteConfig"]
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["ftpsState"] == "Disabled"
    policies = FA.template.resources_of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p.body["name"]: p.body["properties"]["allow"] for p in policies.values()} == {"ftp": False, "scm": False}
    assert all(p.body["parent"] == bicep.Ref(SITE.name) for p in policies.values())


def test_site_is_tagged_for_azd_and_azure_yaml_names_that_service():
    import yaml

    tags = SITE.body["tags"]
    assert isinstance(tags, bicep.Call) and tags.name == "union"
    assert {"azd-service-name": "api"} in tags.args
    azure_yaml = yaml.safe_load((bicep.ROOT / "azure.yaml").read_text())
    assert azure_yaml["services"]["api"]["host"] == "function"


def test_always_ready_names_the_real_function_groups():
    always_ready = ev(FA, bicep.Ref("alwaysReady"))
    assert always_ready == [], "no always-ready instances by default (billed while idle)"
    expr = FA.template.variables["alwaysReady"].value
    names = {item["name"] for item in expr.yes}
    assert names == {"http", "function:incoming_call"}


# ---- storage -----------------------------------------------------------------------------------------


ST = module("storage")
ACCOUNT = only(ST.template.resources_of_type("Microsoft.Storage/storageAccounts"))


def storage_container_names() -> set[str]:
    return {
        ev(ST, c.body["name"])
        for c in ST.template.resources_of_type("Microsoft.Storage/storageAccounts/blobServices/containers").values()
    }


def test_storage_account_is_locked_down():
    p = ACCOUNT.body["properties"]
    assert p["minimumTlsVersion"] == "TLS1_2"
    assert p["supportsHttpsTrafficOnly"] is True
    assert p["allowBlobPublicAccess"] is False
    assert p["allowSharedKeyAccess"] is False, "every client uses Entra ID"
    assert p["defaultToOAuthAuthentication"] is True
    for container in ST.template.resources_of_type(
        "Microsoft.Storage/storageAccounts/blobServices/containers"
    ).values():
        assert container.body["properties"]["publicAccess"] == "None", container.name


def test_containers_deployment_recordings_and_dead_letter():
    names = storage_container_names()
    assert DEFAULTS["RECORDINGS_CONTAINER"] in names
    assert ev(ROOT_CTX, bicep.Ref("deadLetterContainerName")) in names
    assert ev(ROOT_CTX, bicep.Ref("deploymentContainerName")) in names
    assert len(names) == 3


def test_tables_match_the_code_defaults():
    tables = {
        ev(ST, t.body["name"])
        for t in ST.template.resources_of_type("Microsoft.Storage/storageAccounts/tableServices/tables").values()
    }
    table_settings = {name for name in DEFAULTS if name.endswith("_TABLE")}
    assert {"STATE_TABLE", "EVENTS_TABLE"} <= table_settings
    assert tables == {DEFAULTS[name] for name in table_settings}, "one table per *_TABLE setting, by its default name"


def test_recordings_have_a_lifecycle_policy():
    policy = only(ST.template.resources_of_type("Microsoft.Storage/storageAccounts/managementPolicies"))
    assert policy.body["name"] == "default"
    rules = ev(ST, policy.body["properties"]["policy"]["rules"])
    by_prefix = {prefix: rule for rule in rules for prefix in rule["definition"]["filters"]["prefixMatch"]}
    recordings = by_prefix[f"{DEFAULTS['RECORDINGS_CONTAINER']}/"]
    actions = recordings["definition"]["actions"]["baseBlob"]
    assert actions["tierToCool"]["daysAfterModificationGreaterThan"] == 30
    assert actions["delete"]["daysAfterModificationGreaterThan"] == 365
    dead_letter = by_prefix[f"{ev(ROOT_CTX, bicep.Ref('deadLetterContainerName'))}/"]
    assert "delete" in dead_letter["definition"]["actions"]["baseBlob"]
    assert all(rule["enabled"] for rule in rules)


def test_blob_soft_delete_is_on():
    service = only(ST.template.resources_of_type("Microsoft.Storage/storageAccounts/blobServices"))
    assert service.body["properties"]["deleteRetentionPolicy"]["enabled"] is True
    assert service.body["properties"]["containerDeleteRetentionPolicy"]["enabled"] is True


# ---- Key Vault -----------------------------------------------------------------------------------------


KV = module("keyVault")


def test_key_vault_uses_rbac_and_is_recoverable():
    vault = only(KV.template.resources_of_type("Microsoft.KeyVault/vaults"))
    p = vault.body["properties"]
    assert p["enableRbacAuthorization"] is True
    assert p["enableSoftDelete"] is True
    assert ev(KV, p["enablePurgeProtection"]) is True, "purge protection on by default"
    assert "accessPolicies" not in p


def test_the_secret_value_is_the_secure_parameter():
    secret = only(KV.template.resources_of_type("Microsoft.KeyVault/vaults/secrets"))
    assert secret.body["properties"]["value"] == bicep.Ref("callbackSecret")
    assert "secure" in KV.template.params["callbackSecret"].decorators
    assert MAIN.modules["keyVault"].body["params"]["callbackSecret"] == bicep.Ref("callbackSecret")


# ---- ACS, AI services, Event Grid topic, monitoring ---------------------------------------------------


COMM = module("communication")
AI = module("aiServices")


def test_acs_has_a_system_identity_and_a_system_topic():
    acs = only(COMM.template.resources_of_type("Microsoft.Communication/communicationServices"))
    assert acs.body["identity"] == {"type": "SystemAssigned"}
    assert acs.body["location"] == "global"
    topic = only(COMM.template.resources_of_type("Microsoft.EventGrid/systemTopics"))
    assert topic.body["properties"]["source"] == bicep.Member(bicep.Ref(acs.name), "id", "")
    assert topic.body["properties"]["topicType"] == "Microsoft.Communication.CommunicationServices"
    assert topic.body["identity"] == {"type": "SystemAssigned"}, "it dead-letters with its identity"
    assert topic.body["location"] == "global"


def test_ai_services_is_entra_only_with_a_custom_subdomain():
    account = only(AI.template.resources_of_type("Microsoft.CognitiveServices/accounts"))
    assert account.body["kind"] == "AIServices"
    assert account.body["properties"]["disableLocalAuth"] is True
    assert account.body["properties"]["customSubDomainName"] == bicep.Ref("name")


def test_app_insights_is_workspace_based():
    mon = module("monitoring")
    ai = only(mon.template.resources_of_type("Microsoft.Insights/components"))
    law = only(mon.template.resources_of_type("Microsoft.OperationalInsights/workspaces"))
    assert ai.body["properties"]["WorkspaceResourceId"] == bicep.Member(bicep.Ref(law.name), "id", "")


# ---- role assignments ----------------------------------------------------------------------------------


def role_assignments() -> list[dict[str, object]]:
    roles = module("roles")
    found = []
    for decl in roles.template.resources_of_type("Microsoft.Authorization/roleAssignments").values():
        props = decl.body["properties"]
        definition = props["roleDefinitionId"]
        assert isinstance(definition, bicep.Call) and definition.name == "subscriptionResourceId"
        assert definition.args[0] == "Microsoft.Authorization/roleDefinitions"
        guid = ev(roles, definition.args[1])
        assert props["principalType"] == "ServicePrincipal"
        p_ctx, principal, p_props = bicep.resource_of(roles, props["principalId"])
        _, scope, _ = bicep.resource_of(roles, decl.body["scope"])
        # The assignment's name is a guid() over the scope, the principal and the role: stable, unique.
        name = decl.body["name"]
        assert isinstance(name, bicep.Call) and name.name == "guid" and len(name.args) == 3
        found.append(
            {
                "name": decl.name,
                "role": BUILT_IN_ROLES[guid],
                "principal": (principal.resource_type, p_props),
                "principal_module": p_ctx.template.rel,
                "scope": scope.resource_type,
                "scope_decl": scope,
                "conditional": decl.condition is not None,
            }
        )
    return found


ROLE_ASSIGNMENTS = role_assignments()
APP = ("Microsoft.ManagedIdentity/userAssignedIdentities", ("properties", "principalId"))
ACS_IDENTITY = ("Microsoft.Communication/communicationServices", ("identity", "principalId"))
TOPIC_IDENTITY = ("Microsoft.EventGrid/systemTopics", ("identity", "principalId"))


def test_every_data_plane_access_has_its_role():
    granted = {(a["principal"], a["role"], a["scope"], a["conditional"]) for a in ROLE_ASSIGNMENTS}
    assert granted == {
        (APP, "Storage Blob Data Owner", "Microsoft.Storage/storageAccounts", False),  # host storage, package
        (APP, "Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts", False),  # recordings
        (APP, "Storage Table Data Contributor", "Microsoft.Storage/storageAccounts", False),  # call state
        (APP, "Key Vault Secrets User", "Microsoft.KeyVault/vaults/secrets", False),  # CALLBACK_SECRET
        (APP, "Contributor", "Microsoft.Communication/communicationServices", False),  # Call Automation
        (ACS_IDENTITY, "Cognitive Services User", "Microsoft.CognitiveServices/accounts", False),  # TTS, STT
        # RECORDING_STORAGE=byos: ACS writes recordings into the QA container
        (ACS_IDENTITY, "Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/blobServices/containers",
         True),
        (
            TOPIC_IDENTITY,
            "Storage Blob Data Contributor",
            "Microsoft.Storage/storageAccounts/blobServices/containers",
            False,
        ),  # dead-letters
        (APP, "Monitoring Metrics Publisher", "Microsoft.Insights/components", True),  # optional Entra telemetry
    }
    assert len(ROLE_ASSIGNMENTS) == 9


def test_the_app_identity_in_the_roles_is_the_sites_identity():
    for assignment in ROLE_ASSIGNMENTS:
        if assignment["principal"] == APP:
            assert assignment["principal_module"] == "infra/modules/identity.bicep"
    _, site_identity, _ = bicep.resource_of(FA, bicep.Ref("identityId"))
    _, role_identity, _ = bicep.resource_of(module("roles"), bicep.Ref("appPrincipalId"))
    assert site_identity is role_identity


def test_dead_letter_role_is_scoped_to_the_dead_letter_container():
    roles = module("roles")
    [assignment] = [a for a in ROLE_ASSIGNMENTS if a["principal"] == TOPIC_IDENTITY]
    container = assignment["scope_decl"]
    assert ev(roles, container.body["name"]) == ev(ROOT_CTX, bicep.Ref("deadLetterContainerName"))
    service = roles.template.resources[container.body["parent"].name]
    assert service.body["name"] == "default"
    account = roles.template.resources[service.body["parent"].name]
    assert account.resource_type == "Microsoft.Storage/storageAccounts"
    assert (
        bicep.trace(roles, account.body["name"])[1]
        == bicep.trace(ROOT_CTX, bicep.Member(bicep.Member(bicep.Ref("storage"), "outputs", ""), "name", ""))[1]
    )


def test_secret_role_is_scoped_to_the_callback_secret():
    roles = module("roles")
    [assignment] = [a for a in ROLE_ASSIGNMENTS if a["role"] == "Key Vault Secrets User"]
    assert ev(roles, assignment["scope_decl"].body["name"]) == ev(KV, bicep.Ref("callbackSecretName"))


# ---- outputs -------------------------------------------------------------------------------------------


SECRET_MARKERS = re.compile(
    r"listkeys|listconnectionstrings|connectionstring|instrumentationkey|accountkey|accesskey|primarykey|"
    r"secondarykey|sas\b|secretvalue|\.value\b|callbacksecret",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: str(p.relative_to(bicep.INFRA)))
def test_no_output_carries_a_key_or_connection_string(path):
    template = bicep.load(path)
    secure_params = {n for n, d in template.params.items() if "secure" in d.decorators}
    for output in template.outputs.values():
        text = bicep.src(output.value)
        assert not SECRET_MARKERS.search(text), f"{path.name}: output {output.name} = {text}"
        assert not any(re.search(rf"\b{p}\b", text) for p in secure_params), f"{path.name}: output {output.name}"
        assert "secure" not in output.decorators


def test_no_template_reads_keys_at_all():
    for path in bicep.bicep_files():
        text = path.read_text()
        assert "listKeys(" not in text and "listConnectionStrings(" not in text, path.name
