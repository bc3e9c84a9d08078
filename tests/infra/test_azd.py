"""`azd up` wiring: azure.yaml (and the azd version it needs), main.parameters.json, the
preprovision hook that makes CALLBACK_SECRET once, the package's .funcignore, the workflow for users
with internet, and `make test` running the infra checks. The postdeploy hook: test_postdeploy.py."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra import azd, bicep

ROOT = bicep.ROOT
MAIN = bicep.template("main.bicep")
AZURE_YAML = yaml.safe_load((ROOT / "azure.yaml").read_text())
PARAMETERS = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]


def test_azure_yaml_provisions_main_and_deploys_the_function_app():
    assert AZURE_YAML["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    [(name, service)] = AZURE_YAML["services"].items()
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert name == "api"  # the azd-service-name tag on the site (test_resources)


def test_azd_is_new_enough_to_leave_an_unset_value_out():
    """azd 1.14 and older pass `${CALLBACK_SECRET}` as an empty string when the environment has no
    such value; azure.yaml refuses those versions."""
    constraint = AZURE_YAML["requiredVersions"]["azd"]
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", constraint)
    assert found, f"requiredVersions.azd: {constraint!r} is not a lower bound"
    assert tuple(map(int, found.groups())) >= (1, 15, 0)
    readme = (ROOT / "README.md").read_text()
    deploy = readme.split("\n## Deploy", 1)[1].split("\n## ", 1)[0]
    assert "1.15.0" in deploy, "the README's Deploy section names the minimum azd version"


def test_an_empty_or_short_callback_secret_fails_validation():
    """Whatever passes an empty CALLBACK_SECRET (an old azd, a hand-run deployment), ARM refuses it
    before deploying anything, instead of an app that cannot start. The minimum refuses no key the
    app accepts: its shortest, 32 bytes, is 44 base64 characters."""
    shortest = base64.b64encode(bytes(32)).decode()
    assert len(shortest) == 44
    keyvault = bicep.template("modules/keyvault.bicep")
    for template in (MAIN, keyvault):
        decl = template.params["callbackSecret"]
        assert "secure" in decl.decorators and not decl.has_default
        assert decl.decorators["minLength"] == (44,), template.rel
        assert bicep.param_errors(decl, ""), f"{template.rel}: an empty secret passes validation"
        assert bicep.param_errors(decl, shortest[:-1])
        assert not bicep.param_errors(decl, shortest)
        assert not bicep.param_errors(decl, base64.b64encode(bytes(48)).decode()), "what the hook makes"


# The regions of the official Flex Consumption azd quickstart (Azure-Samples/functions-quickstart-python-http-azd,
# infra/main.bicep, commit 7ed4638bc03858a3b2657f0dbbdd1db0af103ebb). Refresh: copy its @allowed list, or
# compare with `az functionapp list-flexconsumption-locations`.
FLEX_CONSUMPTION_REGIONS = {
    "australiaeast", "australiasoutheast", "brazilsouth", "canadacentral", "centralindia", "centralus",
    "eastasia", "eastus", "eastus2", "eastus2euap", "francecentral", "germanywestcentral", "italynorth",
    "japaneast", "koreacentral", "northcentralus", "northeurope", "norwayeast", "southafricanorth",
    "southcentralus", "southeastasia", "southindia", "spaincentral", "swedencentral", "uaenorth", "uksouth",
    "ukwest", "westcentralus", "westeurope", "westus", "westus2", "westus3",
}


def test_location_is_a_flex_consumption_region_and_azd_offers_only_those():
    decl = MAIN.params["location"]
    assert decl.decorators["metadata"] == ({"azd": {"type": "location"}},), "azd's region prompt"
    [allowed] = decl.decorators["allowed"]
    assert set(allowed) == FLEX_CONSUMPTION_REGIONS and sorted(allowed) == allowed == sorted(set(allowed))
    assert bicep.param_errors(decl, "japanwest"), "a region without Flex Consumption fails at validation"
    assert not bicep.param_errors(decl, "swedencentral")
    # The regions the docs and the workflow's what-if use are among them.
    readme = (ROOT / "infra" / "README.md").read_text()
    for region in re.findall(r"azd env set AZURE_LOCATION (\S+)", readme):
        assert region in allowed, region
    workflow = (ROOT / ".github/workflows/infra.yml").read_text()
    for region in re.findall(r"AZURE_LOCATION \|\| '([a-z0-9]+)'", workflow):
        assert region in allowed, region
    assert "functions-quickstart-python-http-azd" in readme, "infra/README.md names the list's source"


def test_main_parameters_match_main_bicep():
    assert set(PARAMETERS) <= set(MAIN.params), sorted(set(PARAMETERS) - set(MAIN.params))
    required = {n for n, d in MAIN.params.items() if not d.has_default}
    assert required <= set(PARAMETERS), f"azd would prompt for {sorted(required - set(PARAMETERS))}"
    assert PARAMETERS["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert PARAMETERS["location"]["value"] == "${AZURE_LOCATION}"
    # Required, from the azd environment, where the preprovision hook puts it once: stable across
    # deployments. The previous key (a rotation) is optional: empty, azd leaves it out.
    assert PARAMETERS["callbackSecret"]["value"] == "${CALLBACK_SECRET}"
    assert not MAIN.params["callbackSecret"].has_default
    assert PARAMETERS["callbackSecretPrevious"]["value"] == "${CALLBACK_SECRET_PREVIOUS}"
    assert MAIN.params["callbackSecretPrevious"].value == ""
    for name, entry in PARAMETERS.items():
        default = re.fullmatch(r"\$\{[A-Z_]+=(.*)\}", str(entry["value"]))
        if default and MAIN.params[name].has_default:
            assert default.group(1) == bicep.evaluate(bicep.Context(MAIN), MAIN.params[name].value), name


def test_every_main_output_is_a_plain_name_or_endpoint():
    for name in MAIN.outputs:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", name), f"azd env names are UPPER_CASE: {name}"


APP = {"function_app.py", "host.json", "requirements.txt", "blueprints", "core", "handlers", "flows"}


def test_the_package_holds_exactly_the_app(tmp_path: Path):
    # Every file of the repository, through .funcignore as git applies it: what azd uploads is the app and nothing
    # beside it (no benchmark, simulator, local host, docs or tools: they are not needed in Azure, and every file
    # there is attack surface). examples/ goes too, JSON only, so FLOWS_FILE may name an example's flows in place.
    files = azd.packaged(azd.checkout(tmp_path / "repo"))
    assert azd.project_folder() == ROOT
    top = {path.split("/")[0] for path in files}
    assert top - {"examples"} == APP, sorted(top ^ APP)
    assert all(path.endswith(".json") for path in files if path.startswith("examples/")), sorted(files)
    assert not [p for p in files if p.endswith((".md", ".yaml", ".yml", ".pyc")) or "/test_" in p], sorted(files)


def test_funcignore_anchors_the_projects_own_folders():
    """The project's folders are left out at the root only (`/docs/`), so a user's `my-flows/docs/` still goes;
    local state and caches at any depth."""
    patterns = [
        line.strip()
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for folder in ("bench", "bin", "devhost", "docs", "infra", "scenarios", "simulator", "tests", "tools"):
        assert f"/{folder}/" in patterns and f"{folder}/" not in patterns, folder
    for anywhere in (".venv/", "__pycache__/", "node_modules/", "local.settings.json", ".azure/"):
        assert anywhere in patterns, anywhere


def test_workflow_builds_every_template_and_runs_a_what_if():
    workflow = yaml.safe_load((ROOT / ".github/workflows/infra.yml").read_text())
    text = (ROOT / ".github/workflows/infra.yml").read_text()
    assert "az bicep build" in text
    assert "az deployment sub what-if" in text and "infra/main.bicep" in text
    assert "az deployment group what-if" in text and "infra/eventgrid.bicep" in text
    assert "jobs" in workflow and len(workflow["jobs"]) >= 2


def test_make_test_runs_the_infra_checks():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^infra-check:", makefile, re.M)
    assert re.search(r"^test:.*\binfra-check\b", makefile, re.M), "make test must run make infra-check"
    gate = (ROOT / "infra/checks/run_checkov.py").read_text()
    assert re.search(r'"--framework",\s*"bicep"', gate) and '"--skip-download"' in gate
    assert re.search(
        r"^\tpython.*run_checkov|\$\(CHECKOV_VENV\)/bin/python infra/checks/run_checkov.py", makefile, re.M
    )
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".venv-checkov/" in ignored


# ---- preprovision: CALLBACK_SECRET made once ----------------------------------------------------------


def test_preprovision_hook_is_wired_for_both_shells():
    hook = AZURE_YAML["hooks"]["preprovision"]
    for platform, script, shell in (
        ("posix", "infra/hooks/preprovision.sh", "sh"),
        ("windows", "infra/hooks/preprovision.ps1", "pwsh"),
    ):
        assert hook[platform]["run"] == f"./{script}"
        assert hook[platform]["shell"] == shell
        assert hook[platform]["continueOnError"] is False, "no provision without a key"
        assert hook[platform]["interactive"] is False
        text = (ROOT / script).read_text()
        assert "azd env get-value CALLBACK_SECRET" in text and "azd env set CALLBACK_SECRET" in text
    assert os.access(ROOT / "infra/hooks/preprovision.sh", os.X_OK)
    ps1 = (ROOT / "infra/hooks/preprovision.ps1").read_text()
    assert "RandomNumberGenerator" in ps1 and "[byte[]]::new(48)" in ps1, "48 bytes from the system CSPRNG"


@pytest.fixture
def fake_azd(tmp_path: Path) -> Path:
    """An `azd` that keeps its environment in a file and logs every call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "azd"
    script.write_text(
        "#!/bin/sh\n"
        f'store="{tmp_path}/env"; log="{tmp_path}/azd.log"\n'
        'printf "%s\\n" "$1 $2 $3" >> "$log"\n'
        'touch "$store"\n'
        'if [ "$1 $2" = "env get-value" ]; then\n'
        '  line=$(grep "^$3=" "$store" | tail -n 1)\n'
        '  if [ -z "$line" ]; then echo "ERROR: key \'$3\' not found in the environment values" >&2; exit 1; fi\n'
        '  printf "%s\\n" "${line#*=}"; exit 0\n'
        "fi\n"
        'if [ "$1 $2" = "env set" ]; then printf "%s=%s\\n" "$3" "$4" >> "$store"; exit 0; fi\n'
        "exit 2\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def run_preprovision(tmp: Path, path: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path or f"{tmp / 'bin'}:{os.environ['PATH']}", **extra}
    return subprocess.run(
        ["sh", str(ROOT / "infra/hooks/preprovision.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )


def stored(tmp: Path) -> dict[str, str]:
    lines = (tmp / "env").read_text().splitlines() if (tmp / "env").exists() else []
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_preprovision_makes_a_key_once_and_keeps_it(fake_azd: Path):
    first = run_preprovision(fake_azd)
    assert first.returncode == 0, first.stderr
    key = stored(fake_azd)["CALLBACK_SECRET"]
    assert len(base64.b64decode(key, validate=True)) == 48, "48 random bytes, base64 (the app wants 32+)"
    assert key not in first.stdout + first.stderr, "the key is never printed"
    second = run_preprovision(fake_azd)
    assert second.returncode == 0, second.stderr
    assert stored(fake_azd)["CALLBACK_SECRET"] == key, "a second provision keeps the key"
    sets = [c for c in (fake_azd / "azd.log").read_text().splitlines() if c.startswith("env set")]
    assert len(sets) == 1


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_preprovision_keeps_a_key_set_by_hand(fake_azd: Path):
    (fake_azd / "env").write_text("CALLBACK_SECRET=bXkta2V5LW15LWtleS1teS1rZXktbXkta2V5LW15LWtleQ==\n")
    result = run_preprovision(fake_azd)
    assert result.returncode == 0, result.stderr
    assert stored(fake_azd)["CALLBACK_SECRET"] == "bXkta2V5LW15LWtleS1teS1rZXktbXkta2V5LW15LWtleQ=="
    assert not [c for c in (fake_azd / "azd.log").read_text().splitlines() if c.startswith("env set")]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_preprovision_makes_distinct_keys_without_openssl(fake_azd: Path, tmp_path_factory):
    # A PATH with the tools the fallback needs and no openssl.
    tools = tmp_path_factory.mktemp("tools")
    for tool in ("sh", "head", "base64", "tr", "grep", "tail", "touch", "cat"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"no {tool}")
        (tools / tool).symlink_to(found)
    path = f"{fake_azd / 'bin'}:{tools}"
    keys = set()
    for _ in range(2):
        (fake_azd / "env").write_text("")
        result = run_preprovision(fake_azd, path=path)
        assert result.returncode == 0, result.stderr
        keys.add(stored(fake_azd)["CALLBACK_SECRET"])
    assert len(keys) == 2 and all(len(base64.b64decode(k)) == 48 for k in keys)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_preprovision_fails_without_azd(tmp_path: Path):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "sh").symlink_to(shutil.which("sh"))
    result = run_preprovision(tmp_path, path=str(tools))
    assert result.returncode != 0 and "azd" in result.stderr


def test_infra_readme_documents_the_rotation():
    readme = (ROOT / "infra" / "README.md").read_text()
    for needed in ("CALLBACK_SECRET_PREVIOUS", "preprovision", "azd env set CALLBACK_SECRET_PREVIOUS"):
        assert needed in readme, needed
