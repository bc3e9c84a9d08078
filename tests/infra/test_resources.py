"""The resources of the deployment exist, are wired to each other, and are locked down: the
Flex Consumption app and its two identities, the host and app-data storage accounts, Key Vault,
ACS, AI services, monitoring, and a role assignment for every data-plane access, each at the
narrowest scope (the app's data roles on its container and tables, never an account; nothing of
the app's on the host storage that holds the deployment package). No key or connection string
leaves a template."""

from __future__ import annotations

import re

import pytest

from core.platform.settings import SETTINGS
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
        "modules/hoststorage.bicep",
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


def test_runtime_is_python_3_13():
    """Flex Consumption takes the language and version from functionAppConfig.runtime (no
    FUNCTIONS_WORKER_RUNTIME or linuxFxVersion), and builds the package remotely with that Python."""
    runtime = SITE.body["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "3.13"}
    assert "linuxFxVersion" not in SITE.body["properties"]["siteConfig"]
    # The code may not target a newer Python than the one deployed (ruff's target-version).
    target = re.search(r'^target-version = "py3(\d+)"', (bicep.ROOT / "pyproject.toml").read_text(), re.M)
    assert target and int(target.group(1)) <= 13, "the code targets a newer Python than the runtime"
    for text in (
        (bicep.ROOT / "azure.yaml").read_text(),
        (bicep.ROOT / "infra" / "README.md").read_text(),
        (bicep.ROOT / "README.md").read_text().split("\n## Deploy", 1)[1].split("\n## ", 1)[0],
    ):
        assert "Python 3.13" in text and "Python 3.11" not in text


def test_site_has_the_app_and_host_identities_only():
    identity = SITE.body["identity"]
    assert identity["type"] == "UserAssigned", "no system-assigned identity"
    keys = list(identity["userAssignedIdentities"])
    assert keys == ["${identityId}", "${hostIdentityId}"] or keys == [
        bicep.Interp((bicep.Ref("identityId"),), ""),
        bicep.Interp((bicep.Ref("hostIdentityId"),), ""),
    ]
    _, app, props = bicep.resource_of(FA, bicep.Ref("identityId"))
    assert app.resource_type == "Microsoft.ManagedIdentity/userAssignedIdentities" and props == ("id",)
    _, host, props = bicep.resource_of(FA, bicep.Ref("hostIdentityId"))
    assert host.resource_type == "Microsoft.ManagedIdentity/userAssignedIdentities" and props == ("id",)
    assert MAIN.modules["identity"].body["params"]["name"] != MAIN.modules["hostIdentity"].body["params"]["name"]
    # Key Vault references resolve with the host identity (the platform resolves them, not the app).
    assert SITE.body["properties"]["keyVaultReferenceIdentity"] == bicep.Ref("hostIdentityId")


def test_deployment_package_is_in_the_host_account_reached_with_the_host_identity():
    storage = SITE.body["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": bicep.Ref("hostIdentityId"),
    }
    value = storage["value"]
    assert isinstance(value, bicep.Interp) and value.parts[-1] == bicep.Ref("deploymentContainerName")
    ctx, account, props = bicep.resource_of(FA, value.parts[0])
    assert props == ("properties", "primaryEndpoints", "blob")
    assert bicep.trace(ctx, account.body["name"])[1] == HOST_ACCOUNT_NAME, "the package lives in the host account"
    container = ev(FA, bicep.Ref("deploymentContainerName"))
    assert container in container_names(HOST_ST)
    assert container not in container_names(ST), "the app-data account holds no package"


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


def scale_groups() -> set[str]:
    """The app's Flex Consumption scale groups: every HTTP trigger in `http`, Event Grid-based blob
    triggers in `blob`, Durable Functions in `durable`, every other function alone (`function:<name>`)."""
    groups = set()
    for name, function in bicep.app_functions().items():
        trigger = function.get_trigger()
        if trigger.type == "httpTrigger":
            groups.add("http")
        elif trigger.type == "blobTrigger" and getattr(trigger, "source", None) == "EventGrid":
            groups.add("blob")
        elif trigger.type in ("orchestrationTrigger", "activityTrigger", "entityTrigger"):
            groups.add("durable")
        else:
            groups.add(f"function:{name}")
    return groups


def test_always_ready_names_the_real_function_groups():
    always_ready = ev(FA, bicep.Ref("alwaysReady"))
    assert always_ready == [], "no always-ready instances by default (billed while idle)"
    expr = FA.template.variables["alwaysReady"].value
    names = {item["name"] for item in expr.yes}
    assert names == {"http", "function:incoming_call"}
    assert names <= scale_groups()


ZONE_REDUNDANT_SKUS = {"Standard_ZRS", "Standard_GZRS", "Standard_RAGZRS"}


def test_zone_redundancy_requires_zone_redundant_storage():
    """zoneRedundant=true with LRS or GRS storage fails the deployment at validation: a zone-redundant
    app whose host storage one zone can take down is not zone-redundant."""
    [allowed] = MAIN.params["storageSkuName"].decorators["allowed"]
    assert ZONE_REDUNDANT_SKUS < set(allowed)
    for sku in allowed:
        off = bicep.with_params(MAIN, zoneRedundant=False, storageSkuName=sku)
        assert ev(off, bicep.Ref("storageSku")) == sku
        on = bicep.with_params(MAIN, zoneRedundant=True, storageSkuName=sku)
        if sku in ZONE_REDUNDANT_SKUS:
            assert ev(on, bicep.Ref("storageSku")) == sku
        else:
            with pytest.raises(bicep.Invalid, match=sku):
                ev(on, bicep.Ref("storageSku"))
    # Both accounts take that checked SKU; the plan takes the parameter.
    for name in ("hostStorage", "storage"):
        assert MAIN.modules[name].body["params"]["redundancy"] == bicep.Ref("storageSku"), name
    assert MAIN.modules["functionApp"].body["params"]["zoneRedundant"] == bicep.Ref("zoneRedundant")
    assert PLAN.body["properties"]["zoneRedundant"] == bicep.Ref("zoneRedundant")
    assert ev(ROOT_CTX, bicep.Ref("zoneRedundant")) is False, "off by default: it is billed while idle"


def test_the_docs_say_what_zone_redundancy_costs():
    """With zone redundancy the platform keeps at least two always-ready instances in every scale
    group, billed while idle: the docs name the groups and the count."""
    groups = scale_groups()
    assert groups == {"http", "function:incoming_call", "function:recording_file_status", "function:call_records"}
    words = {4: "four", 8: "eight"}
    infra_readme = (bicep.ROOT / "infra" / "README.md").read_text()
    costs = infra_readme.split("## Cost notes", 1)[1].split("\n## ", 1)[0]
    for group in groups:
        assert f"`{group}`" in costs, f"infra/README.md Cost notes do not name the scale group {group}"
    assert f"{words[len(groups)]} scale groups" in costs and f"{2 * len(groups)} instances" in costs
    readme = (bicep.ROOT / "README.md").read_text()
    deploy = readme.split("\n## Deploy", 1)[1].split("\n## ", 1)[0]
    assert "zoneRedundant" in deploy and f"{2 * len(groups)} always-ready instances" in deploy


# ---- storage -----------------------------------------------------------------------------------------


ST = module("storage")
HOST_ST = module("hostStorage")
ACCOUNT = only(ST.template.resources_of_type("Microsoft.Storage/storageAccounts"))
HOST_ACCOUNT = only(HOST_ST.template.resources_of_type("Microsoft.Storage/storageAccounts"))
CONTAINERS = "Microsoft.Storage/storageAccounts/blobServices/containers"
TABLES = "Microsoft.Storage/storageAccounts/tableServices/tables"


def main_output(module_name: str, output: str) -> object:
    """What main.bicep's `<module>.outputs.<output>` comes down to (an expression in main.bicep)."""
    ref = bicep.Member(bicep.Member(bicep.Ref(module_name), "outputs", ""), output, "")
    return bicep.trace(ROOT_CTX, ref)[1]


DATA_ACCOUNT_NAME = main_output("storage", "name")
HOST_ACCOUNT_NAME = main_output("hostStorage", "name")


def container_names(ctx: bicep.Context) -> set[str]:
    return {ev(ctx, c.body["name"]) for c in ctx.template.resources_of_type(CONTAINERS).values()}


def storage_container_names() -> set[str]:
    return container_names(ST)


def test_two_accounts_host_storage_apart_from_the_apps_data():
    assert isinstance(DATA_ACCOUNT_NAME, bicep.Interp) and isinstance(HOST_ACCOUNT_NAME, bicep.Interp)
    assert bicep.src(DATA_ACCOUNT_NAME) != bicep.src(HOST_ACCOUNT_NAME)
    # Storage account names: 3-24 lowercase letters and digits (the token is 13 characters).
    for name in (DATA_ACCOUNT_NAME, HOST_ACCOUNT_NAME):
        prefix = name.parts[0]
        assert re.fullmatch(r"[a-z0-9]+", prefix) and len(prefix) + 13 <= 24, bicep.src(name)
    # The host account has the package container only (the host makes its own containers); no
    # tables, no lifecycle rules touching it.
    assert container_names(HOST_ST) == {ev(ROOT_CTX, bicep.Ref("deploymentContainerName"))}
    assert not HOST_ST.template.resources_of_type(TABLES)
    assert not HOST_ST.template.resources_of_type("Microsoft.Storage/storageAccounts/managementPolicies")


@pytest.mark.parametrize("ctx", [ST, HOST_ST], ids=["app-data", "host"])
def test_storage_accounts_are_locked_down(ctx):
    account = only(ctx.template.resources_of_type("Microsoft.Storage/storageAccounts"))
    p = account.body["properties"]
    assert p["minimumTlsVersion"] == "TLS1_2"
    assert p["supportsHttpsTrafficOnly"] is True
    assert p["allowBlobPublicAccess"] is False
    assert p["allowSharedKeyAccess"] is False, "every client uses Entra ID"
    assert p["defaultToOAuthAuthentication"] is True
    assert p["allowCrossTenantReplication"] is False
    for container in ctx.template.resources_of_type(CONTAINERS).values():
        assert container.body["properties"]["publicAccess"] == "None", container.name
    service = only(ctx.template.resources_of_type("Microsoft.Storage/storageAccounts/blobServices"))
    assert service.body["properties"]["deleteRetentionPolicy"]["enabled"] is True
    assert service.body["properties"]["containerDeleteRetentionPolicy"]["enabled"] is True


def test_app_data_containers_are_recordings_and_dead_letter():
    names = storage_container_names()
    assert names == {DEFAULTS["RECORDINGS_CONTAINER"], ev(ROOT_CTX, bicep.Ref("deadLetterContainerName"))}


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


# ---- Key Vault -----------------------------------------------------------------------------------------


KV = module("keyVault")


def test_key_vault_uses_rbac_and_is_recoverable():
    vault = only(KV.template.resources_of_type("Microsoft.KeyVault/vaults"))
    p = vault.body["properties"]
    assert p["enableRbacAuthorization"] is True
    assert p["enableSoftDelete"] is True
    assert ev(KV, p["enablePurgeProtection"]) is True, "purge protection on by default"
    assert "accessPolicies" not in p


def test_the_secret_values_are_the_secure_parameters():
    secrets = KV.template.resources_of_type("Microsoft.KeyVault/vaults/secrets")
    values = {d.name: d.body["properties"]["value"] for d in secrets.values()}
    assert sorted(map(bicep.src, values.values())) == ["callbackSecret", "callbackSecretPrevious"]
    for name in ("callbackSecret", "callbackSecretPrevious"):
        assert "secure" in KV.template.params[name].decorators
        assert "secure" in MAIN.params[name].decorators
        assert MAIN.modules["keyVault"].body["params"][name] == bicep.Ref(name)
    # The previous key is written only during a rotation.
    [previous] = [d for d in secrets.values() if values[d.name] == bicep.Ref("callbackSecretPrevious")]
    assert bicep.src(previous.condition) == "!empty(callbackSecretPrevious)"
    assert ev(KV, previous.condition) is False, "no rotation by default"
    [current] = [d for d in secrets.values() if d is not previous]
    assert current.condition is None


def test_callback_secret_has_no_random_default():
    """A random default (newGuid()) made a new key at every deployment and broke every call in
    progress: the key is a required parameter, made once by the preprovision hook."""
    assert not MAIN.params["callbackSecret"].has_default
    assert MAIN.params["callbackSecretPrevious"].value == ""
    for path in bicep.bicep_files():
        assert "newGuid(" not in path.read_text(), path.name


# ---- ACS, AI services, Event Grid topic, monitoring ---------------------------------------------------


COMM = module("communication")
AI = module("aiServices")


def test_acs_local_auth_is_off_by_default():
    acs = only(COMM.template.resources_of_type("Microsoft.Communication/communicationServices"))
    assert acs.body["properties"]["disableLocalAuth"] == bicep.Ref("disableLocalAuth")
    assert ev(COMM, acs.body["properties"]["disableLocalAuth"]) is True, "Entra ID only unless asked"
    assert MAIN.params["acsDisableLocalAuth"].value is True
    assert COMM.template.params["disableLocalAuth"].value is True


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


ROLES = module("roles")


def scope_chain(ctx: bicep.Context, decl: bicep.Decl) -> list[tuple[str, object]]:
    """The scope of a role assignment from its account (or resource) down: [(type, name)], the
    account's name as main.bicep spells it, the other names evaluated."""
    chain: list[tuple[str, object]] = []
    while True:
        parent = decl.body.get("parent")
        if parent is None:
            chain.insert(0, (decl.resource_type, bicep.trace(ctx, decl.body["name"])[1]))
            return chain
        chain.insert(0, (decl.resource_type, ev(ctx, decl.body["name"])))
        decl = ctx.template.resources[parent.name]


def role_assignments() -> list[dict[str, object]]:
    found = []
    for decl in ROLES.template.resources_of_type("Microsoft.Authorization/roleAssignments").values():
        props = decl.body["properties"]
        definition = props["roleDefinitionId"]
        assert isinstance(definition, bicep.Call) and definition.name == "subscriptionResourceId"
        assert definition.args[0] == "Microsoft.Authorization/roleDefinitions"
        guid = ev(ROLES, definition.args[1])
        assert props["principalType"] == "ServicePrincipal"
        p_ctx, principal, p_props = bicep.resource_of(ROLES, props["principalId"])
        _, scope, _ = bicep.resource_of(ROLES, decl.body["scope"])
        assert scope.existing
        # The assignment's name is a guid() over the scope, the principal and the role: stable, unique.
        name = decl.body["name"]
        assert isinstance(name, bicep.Call) and name.name == "guid" and len(name.args) == 3
        assert name.args[0] == bicep.Member(decl.body["scope"], "id", ""), f"{decl.name}: guid() of its own scope"
        assert name.args[1] == props["principalId"]
        kind = principal.resource_type
        if kind == "Microsoft.ManagedIdentity/userAssignedIdentities":
            identity_name = bicep.trace(p_ctx, principal.body["name"])[1]
            kind = {
                bicep.src(MAIN.modules["identity"].body["params"]["name"]): "app",
                bicep.src(MAIN.modules["hostIdentity"].body["params"]["name"]): "host",
            }[bicep.src(identity_name)]
        found.append(
            {
                "name": decl.name,
                "role": BUILT_IN_ROLES[guid],
                "principal": (principal.resource_type, p_props),
                "who": kind,
                "principal_module": p_ctx.template.rel,
                "scope": scope.resource_type,
                "scope_decl": scope,
                "chain": scope_chain(ROLES, scope),
                "conditional": decl.condition is not None,
            }
        )
    return found


ROLE_ASSIGNMENTS = role_assignments()
APP = ("Microsoft.ManagedIdentity/userAssignedIdentities", ("properties", "principalId"))
ACS_IDENTITY = ("Microsoft.Communication/communicationServices", ("identity", "principalId"))
TOPIC_IDENTITY = ("Microsoft.EventGrid/systemTopics", ("identity", "principalId"))
STORAGE_DATA_ROLES = {
    "Storage Blob Data Owner",
    "Storage Blob Data Contributor",
    "Storage Table Data Contributor",
}
ACCOUNT = "Microsoft.Storage/storageAccounts"
TABLE_NAMES = {DEFAULTS[name] for name in DEFAULTS if name.endswith("_TABLE")}


def on_account(assignment: dict[str, object], account_name: object) -> bool:
    chain = assignment["chain"]
    return chain[0] == (ACCOUNT, account_name)


def test_every_data_plane_access_has_its_role():
    granted = {(a["who"], a["role"], a["scope"], a["conditional"]) for a in ROLE_ASSIGNMENTS}
    assert granted == {
        ("host", "Storage Blob Data Owner", ACCOUNT, False),  # AzureWebJobsStorage, package
        ("host", "Key Vault Secrets User", "Microsoft.KeyVault/vaults/secrets", False),  # CALLBACK_SECRET
        ("host", "Key Vault Secrets User", "Microsoft.KeyVault/vaults/secrets", True),  # ..._PREVIOUS
        ("host", "Monitoring Metrics Publisher", "Microsoft.Insights/components", True),  # optional Entra telemetry
        ("app", "Storage Blob Data Owner", CONTAINERS, False),  # QA recordings (blob index tags)
        ("app", "Storage Table Data Contributor", TABLES, False),  # call state, events, records, outbound
        ("app", "Contributor", "Microsoft.Communication/communicationServices", False),  # Call Automation
        ("Microsoft.Communication/communicationServices", "Cognitive Services User",
         "Microsoft.CognitiveServices/accounts", False),  # TTS, STT
        # RECORDING_STORAGE=byos: ACS writes recordings into the QA container (account scope: the guide's)
        ("Microsoft.Communication/communicationServices", "Storage Blob Data Contributor", ACCOUNT, True),
        ("Microsoft.EventGrid/systemTopics", "Storage Blob Data Contributor", CONTAINERS, False),  # dead-letters
    }
    assert len(ROLE_ASSIGNMENTS) == 13


# Built-in roles whose permissions include another's (the data actions of the second are a subset).
INCLUDES = {
    "Storage Blob Data Owner": {"Storage Blob Data Contributor", "Storage Blob Data Reader"},
    "Storage Blob Data Contributor": {"Storage Blob Data Reader"},
    "Storage Table Data Contributor": {"Storage Table Data Reader"},
}


def redundant(assignments: list[dict[str, object]]) -> list[str]:
    """Assignments another assignment of the same principal already covers: the same or an including
    role at the same or an enclosing scope."""
    found = []
    for a in assignments:
        for b in assignments:
            if a is b or a["who"] != b["who"] or a["principal"] != b["principal"]:
                continue
            encloses = a["chain"] == b["chain"][: len(a["chain"])]
            covers = a["role"] == b["role"] or b["role"] in INCLUDES.get(a["role"], set())
            if encloses and covers and (a["chain"], a["role"]) != (b["chain"], b["role"]):
                found.append(f"{b['name']} ({b['role']}) is covered by {a['name']} ({a['role']})")
    return found


def test_no_role_assignment_is_covered_by_another():
    """E.g. Storage Blob Data Contributor beside Storage Blob Data Owner on the host account: the
    Owner already has every permission of the Contributor."""
    assert redundant(ROLE_ASSIGNMENTS) == []
    host_owner = next(a for a in ROLE_ASSIGNMENTS if a["who"] == "host" and a["role"] == "Storage Blob Data Owner")
    extra = {**host_owner, "name": "hostBlobContributor", "role": "Storage Blob Data Contributor"}
    assert redundant([host_owner, extra]) == [
        "hostBlobContributor (Storage Blob Data Contributor) is covered by hostBlobOwner (Storage Blob Data Owner)"
    ]
    narrower = {**extra, "chain": [*host_owner["chain"], ("Microsoft.Storage/storageAccounts/blobServices", "default")]}
    assert redundant([host_owner, narrower]), "a narrower scope under the Owner's is covered too"


def test_the_app_and_host_identities_in_the_roles_are_the_sites():
    for assignment in ROLE_ASSIGNMENTS:
        if assignment["principal"] == APP:
            assert assignment["principal_module"] == "infra/modules/identity.bicep"
    for site_param, roles_param in (("identityId", "appPrincipalId"), ("hostIdentityId", "hostPrincipalId")):
        # The same module instance of identity.bicep (the same resource name in main.bicep).
        site_ctx, site_identity, _ = bicep.resource_of(FA, bicep.Ref(site_param))
        role_ctx, role_identity, _ = bicep.resource_of(ROLES, bicep.Ref(roles_param))
        assert site_identity is role_identity
        site_name = bicep.trace(site_ctx, site_identity.body["name"])[1]
        assert isinstance(site_name, bicep.Interp) and site_name.parts[0].startswith("id-")
        assert bicep.src(site_name) == bicep.src(bicep.trace(role_ctx, role_identity.body["name"])[1])


# ---- least privilege on storage (issue 13, item 2) ------------------------------------------------------


def test_no_data_role_of_the_app_at_account_or_service_scope():
    """The app identity's storage roles are scoped to a container or a table, never to an account or
    a blob/table service (which would reach every container or table of the account)."""
    for a in ROLE_ASSIGNMENTS:
        if a["who"] == "app" and a["role"] in STORAGE_DATA_ROLES:
            assert a["scope"] in (CONTAINERS, TABLES), f"{a['name']}: {a['role']} at {a['scope']}"
            assert len(a["chain"]) == 3, a["chain"]
            assert a["chain"][1][1] == "default"


def test_the_apps_storage_roles_are_exactly_its_container_and_tables_in_the_data_account():
    app = [a for a in ROLE_ASSIGNMENTS if a["who"] == "app" and a["role"] in STORAGE_DATA_ROLES]
    assert all(on_account(a, DATA_ACCOUNT_NAME) for a in app), [a["chain"] for a in app]
    containers = {a["chain"][-1][1] for a in app if a["scope"] == CONTAINERS}
    tables = {a["chain"][-1][1] for a in app if a["scope"] == TABLES}
    assert containers == {DEFAULTS["RECORDINGS_CONTAINER"]}
    assert tables == TABLE_NAMES == {"callstate", "callevents", "callrecords", "outbound"}
    # One assignment per container/table: nothing granted twice at different strengths.
    assert len(app) == len(containers) + len(tables)
    assert {a["role"] for a in app if a["scope"] == TABLES} == {"Storage Table Data Contributor"}
    # Those names are the ones the app is configured with, and exist in the data account.
    assert containers <= container_names(ST)
    assert tables <= {ev(ST, t.body["name"]) for t in ST.template.resources_of_type(TABLES).values()}


def test_the_deployment_package_is_out_of_reach_of_the_app_identity():
    """No role of the app identity (the one its code runs as) on the host account or anything in it,
    and the deployment container is not in the account the app has roles in: no blob name, URL or
    event the app handles can write the package."""
    for a in ROLE_ASSIGNMENTS:
        if a["who"] == "app":
            assert not on_account(a, HOST_ACCOUNT_NAME), f"{a['name']} reaches the host account"
    package = ev(ROOT_CTX, bicep.Ref("deploymentContainerName"))
    assert package not in container_names(ST)
    assert package in container_names(HOST_ST)
    for a in ROLE_ASSIGNMENTS:
        if a["scope"] == CONTAINERS:
            assert a["chain"][-1][1] != package, f"{a['name']} is scoped to the package container"


def test_only_the_host_identity_has_a_role_on_the_host_account():
    on_host = [a for a in ROLE_ASSIGNMENTS if a["chain"][0] == (ACCOUNT, HOST_ACCOUNT_NAME)]
    assert [(a["who"], a["role"], a["scope"]) for a in on_host] == [("host", "Storage Blob Data Owner", ACCOUNT)]
    # ... and the host identity has nothing on the app's data.
    assert not [a for a in ROLE_ASSIGNMENTS if a["who"] == "host" and on_account(a, DATA_ACCOUNT_NAME)]


def test_nothing_has_a_role_on_the_whole_data_account_but_acs_with_bring_your_own_storage():
    on_account = [a for a in ROLE_ASSIGNMENTS if a["chain"] == [(ACCOUNT, DATA_ACCOUNT_NAME)]]
    assert [(a["principal"], a["role"], a["conditional"]) for a in on_account] == [
        (ACS_IDENTITY, "Storage Blob Data Contributor", True)
    ]


def test_dead_letter_role_is_scoped_to_the_dead_letter_container():
    [assignment] = [a for a in ROLE_ASSIGNMENTS if a["principal"] == TOPIC_IDENTITY]
    assert assignment["chain"] == [
        (ACCOUNT, DATA_ACCOUNT_NAME),
        ("Microsoft.Storage/storageAccounts/blobServices", "default"),
        (CONTAINERS, ev(ROOT_CTX, bicep.Ref("deadLetterContainerName"))),
    ]
    assert assignment["role"] == "Storage Blob Data Contributor"
    # The subscriptions dead-letter into that account (eventgrid.bicep, through the hook).
    assert "AZURE_STORAGE_ACCOUNT_NAME" in MAIN.outputs
    assert main_output("storage", "name") == bicep.trace(
        ROOT_CTX, MAIN.outputs["AZURE_STORAGE_ACCOUNT_NAME"].value
    )[1]


def test_acs_byos_role_is_at_the_scope_microsofts_guide_names_and_only_with_byos():
    """Bring your own storage: Microsoft's guide grants ACS's identity Storage Blob Data Contributor
    on the storage account. A container scope is not proven to work with ACS, so the guide's scope is
    used, on the app-data account (which holds no deployment package), and only in byos mode."""
    [assignment] = [a for a in ROLE_ASSIGNMENTS if a["principal"] == ACS_IDENTITY and a["scope"] == ACCOUNT]
    assert assignment["conditional"] and assignment["role"] == "Storage Blob Data Contributor"
    assert assignment["chain"] == [(ACCOUNT, DATA_ACCOUNT_NAME)], "the app-data account, never the host's"
    decl = ROLES.template.resources[assignment["name"]]
    assert bicep.src(decl.condition) == "recordingStorage == 'byos'"
    assert ev(ROLES, decl.condition) is False, "copy mode by default: ACS has no storage role"
    byos = bicep.with_params(MAIN, recordingStorage="byos").module("roles")
    assert ev(byos, decl.condition) is True
    # The QA container ACS writes to is in that account.
    assert DEFAULTS["RECORDINGS_CONTAINER"] in container_names(ST)
    readme = (bicep.ROOT / "infra" / "README.md").read_text()
    assert "bring-your-own-storage" in readme, "infra/README.md names the guide the scope comes from"


def test_secret_roles_are_scoped_to_one_secret_each():
    kv = [a for a in ROLE_ASSIGNMENTS if a["role"] == "Key Vault Secrets User"]
    assert {a["who"] for a in kv} == {"host"}
    names = sorted(a["chain"][-1][1] for a in kv)
    assert names == sorted([ev(KV, bicep.Ref("callbackSecretName")), ev(KV, bicep.Ref("previousSecretName"))])
    assert all(len(a["chain"]) == 2 for a in kv), "a secret, never the vault"
    [previous] = [a for a in kv if a["conditional"]]
    decl = ROLES.template.resources[previous["name"]]
    assert decl.condition == bicep.Ref("callbackSecretRotation")
    assert ev(ROLES, decl.condition) is False


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
