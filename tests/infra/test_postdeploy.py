"""The postdeploy hook (infra/hooks/postdeploy.sh, and postdeploy.ps1 on Windows) deploys the Event
Grid subscriptions once the functions exist: every az call names the subscription azd deployed to,
a missing resource group stops it at once, the deployment is retried with back-off (creating an
AzureFunction endpoint fails now and then while Event Grid lists the host's keys), and giving up
prints az's last error.

The shell hook runs against a stand-in `az` (which records its arguments and fails the first N
calls of a kind) and a stand-in `sleep` (which records how long it was asked to wait). The
PowerShell hook runs the same way where `pwsh` is installed; everywhere, it is checked structurally
like the shell one."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra import bicep

ROOT = bicep.ROOT
MAIN = bicep.template("main.bicep")
EG = bicep.template("eventgrid.bicep")
AZURE_YAML = yaml.safe_load((ROOT / "azure.yaml").read_text())
SH = ROOT / "infra/hooks/postdeploy.sh"
PS1 = ROOT / "infra/hooks/postdeploy.ps1"
HOOKS = {"sh": SH, "pwsh": PS1}
# Values azd itself puts in the environment (not outputs of main.bicep).
AZD_VALUES = {"AZURE_SUBSCRIPTION_ID"}
OPTIONS = {"INCOMING_CALL_NUMBERS", "DEPLOY_CALL_RECORDS_SUBSCRIPTION", "POSTDEPLOY_RETRY_SECONDS"}


# ---- both hooks, read ------------------------------------------------------------------------------


def logical_lines(text: str, continuation: str) -> list[str]:
    """The script's commands, continuation lines joined, comments dropped."""
    joined = re.sub(re.escape(continuation) + r"\n", " ", text)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def az_invocations(shell: str) -> list[str]:
    """Every command line of a hook that runs the az CLI itself."""
    if shell == "sh":
        lines = logical_lines(SH.read_text(), "\\")
        pattern = r"(?:^\s*|(?:\bif|\buntil|\bwhile|!|;|&&|\|\||\||\$\()\s*)az\s+[a-z]"
    else:
        lines = logical_lines(PS1.read_text(), "`")
        pattern = r"(?:^\s*|&\s*)az\s+[@a-z]"
    return [line for line in lines if re.search(pattern, line) and "command -v az" not in line]


def test_postdeploy_hook_is_wired_and_passes_every_parameter():
    hook = AZURE_YAML["hooks"]["postdeploy"]
    for platform, shell, script in (("posix", "sh", SH), ("windows", "pwsh", PS1)):
        assert hook[platform]["run"] == f"./{script.relative_to(ROOT)}"
        assert hook[platform]["shell"] == shell
        assert hook[platform]["continueOnError"] is False
        text = script.read_text()
        assert re.search(r"--template-file['\",\s]+infra/eventgrid\.bicep", text), script.name
        for param in EG.params:
            if not EG.params[param].has_default or param in (
                "incomingCallNumbers",
                "deployCallRecordsSubscription",
                "deadLetterContainerName",
            ):
                assert re.search(rf"\b{param}\b", text), f"{script.name} does not pass {param}"
    assert os.access(SH, os.X_OK)


@pytest.mark.parametrize("shell", ["sh", "pwsh"])
def test_hooks_read_only_outputs_of_main_azd_values_or_documented_options(shell):
    text = HOOKS[shell].read_text()
    if shell == "sh":
        used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text))
    else:
        used = set(re.findall(r"\$env:([A-Z][A-Z0-9_]+)", text))
        used |= set(re.findall(r"'([A-Z][A-Z0-9_]+)'", text))  # the names checked up front
    unknown = used - OPTIONS - AZD_VALUES - set(MAIN.outputs)
    assert not unknown, sorted(unknown)
    readme = (ROOT / "infra" / "README.md").read_text()
    for option in OPTIONS:
        assert option in readme, f"infra/README.md does not document {option}"
        assert option in text, f"{HOOKS[shell].name} does not read {option}"


@pytest.mark.parametrize("shell", ["sh", "pwsh"])
def test_every_az_call_of_both_hooks_names_the_subscription(shell):
    calls = az_invocations(shell)
    assert calls, f"no az call found in {HOOKS[shell].name}"
    expected = {
        "sh": '--subscription "$AZURE_SUBSCRIPTION_ID"',
        "pwsh": "--subscription $env:AZURE_SUBSCRIPTION_ID",
    }[shell]
    for call in calls:
        assert expected in call, f"{HOOKS[shell].name}: {call.strip()}"
    if shell == "pwsh":
        # One place runs az; every command goes through it.
        assert len(calls) == 1 and "function Invoke-Az" in PS1.read_text()
        commands = re.findall(r"Invoke-Az\s+@\(\s*'([a-z]+)',\s*'([a-z]+)'", PS1.read_text())
        assert {" ".join(c) for c in commands} == {"group show", "functionapp function"}
        assert re.search(r"Invoke-Az \$deployment\b", PS1.read_text())
        assert re.search(r"\$deployment = @\(\s*'deployment', 'group', 'create'", PS1.read_text())
    else:
        verbs = {" ".join(re.search(r"\baz\s+([a-z]+(?:\s+[a-z]+){1,2})", c).group(1).split()[:3]) for c in calls}
        assert verbs == {"group show", "functionapp function show", "deployment group create"}, verbs


def test_both_hooks_wait_retry_and_give_up_alike():
    """The same numbers and the same behaviour in both scripts: 30 looks for each function, `pause`
    apart; five deployment attempts, the pause doubling; az's last error printed when giving up."""
    sh, ps1 = SH.read_text(), PS1.read_text()
    assert 'pause="${POSTDEPLOY_RETRY_SECONDS:-10}"' in sh
    assert "$env:POSTDEPLOY_RETRY_SECONDS } else { '10' }" in ps1
    assert '"$tries" -ge 30' in sh and "$tries -ge 30" in ps1
    assert '"$attempt" -ge 5' in sh and "$attempt -ge 5" in ps1
    assert "wait_for=$((wait_for * 2))" in sh and "$waitFor *= 2" in ps1
    assert 'sleep "$wait_for"' in sh and "Start-Sleep -Seconds $waitFor" in ps1
    assert 'sleep "$pause"' in sh and "Start-Sleep -Seconds $pause" in ps1
    for text in (sh, ps1):
        assert "the last az error" in text
        assert "not found in subscription" in text
    # Every way of giving up shows az's error: three in each script.
    assert sh.count("show_last_error\n") == 3 and ps1.count("Exit-WithAzError \"") == 3


# ---- running them ------------------------------------------------------------------------------------


FAKE_AZ = r"""#!/bin/sh
# A stand-in az: logs its arguments (and the content of any @file), fails the first
# $FAKE_AZ_FAIL_<KIND> calls of a kind with an error on stderr, succeeds otherwise.
dir="__DIR__"
printf '%s\n' "$*" >> "$dir/az.log"
for arg in "$@"; do
  case "$arg" in
    @*) if [ -f "${arg#@}" ]; then printf '@file %s\n' "$(tr -d '\n' < "${arg#@}")" >> "$dir/az.log"; fi ;;
  esac
done
case "$1 $2 $3" in
  "deployment group create") kind=DEPLOY ;;
  "functionapp function show") kind=SHOW ;;
  "group show"*) kind=GROUP ;;
  *) kind=OTHER ;;
esac
eval "limit=\${FAKE_AZ_FAIL_$kind:-0}"
count=$(cat "$dir/count.$kind" 2>/dev/null || echo 0)
count=$((count + 1))
echo "$count" > "$dir/count.$kind"
if [ "$count" -le "$limit" ]; then
  echo "WARNING: something az says first" >&2
  echo "ERROR: (Fake) $kind call $count failed" >&2
  exit 1
fi
exit 0
"""

FAKE_SLEEP = '#!/bin/sh\nprintf "%s\\n" "$1" >> "__DIR__/sleep.log"\n'


def available(shell: str) -> bool:
    return shutil.which(shell) is not None


@pytest.fixture(params=["sh", "pwsh"])
def shell(request) -> str:
    if not available(request.param):
        pytest.skip(f"{request.param} is not installed")
    return request.param


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("az", FAKE_AZ), ("sleep", FAKE_SLEEP)):
        script = bin_dir / name
        script.write_text(text.replace("__DIR__", str(tmp_path)))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return tmp_path


class Run:
    def __init__(self, tmp: Path, result: subprocess.CompletedProcess[str]) -> None:
        self.returncode, self.stdout, self.stderr = result.returncode, result.stdout, result.stderr
        log = tmp / "az.log"
        self.calls = log.read_text().splitlines() if log.exists() else []
        sleeps = tmp / "sleep.log"
        self.sleeps = [int(s) for s in sleeps.read_text().split()] if sleeps.exists() else []

    def of(self, prefix: str) -> list[str]:
        return [c for c in self.calls if c.startswith(prefix)]


def run_hook(tmp: Path, shell: str = "sh", **extra: str) -> Run:
    env = {
        "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp),
        "AZURE_SUBSCRIPTION_ID": "sub-test",
        "AZURE_RESOURCE_GROUP": "rg-test",
        "AZURE_FUNCTION_APP_NAME": "func-test",
        "AZURE_STORAGE_ACCOUNT_NAME": "sttest",
        "EVENTGRID_SYSTEM_TOPIC_NAME": "evgt-test",
        "EVENTGRID_DEADLETTER_CONTAINER": "eventgrid-deadletter",
        **extra,
    }
    if shell == "pwsh":
        env.setdefault("POSTDEPLOY_RETRY_SECONDS", "0")  # Start-Sleep is not the stand-in sleep
        command = ["pwsh", "-NoProfile", "-NonInteractive", "-File", str(PS1)]
    else:
        command = ["sh", str(SH)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return Run(tmp, result)


def test_hook_waits_for_the_functions_then_deploys_the_subscriptions(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell)
    assert run.returncode == 0, run.stderr
    shown = run.of("functionapp function show")
    assert [re.search(r"--function-name (\S+)", c).group(1) for c in shown] == [
        "incoming_call",
        "recording_file_status",
        "call_records",
    ]
    [deploy] = run.of("deployment group create")
    assert "--resource-group rg-test" in deploy and "--template-file infra/eventgrid.bicep" in deploy
    for expected in (
        "systemTopicName=evgt-test",
        "functionAppName=func-test",
        "storageAccountName=sttest",
        "deadLetterContainerName=eventgrid-deadletter",
        "deployCallRecordsSubscription=true",
    ):
        assert expected in deploy
    if shell == "sh":
        assert "incomingCallNumbers=[]" in deploy
    else:
        [numbers] = [c for c in run.calls if c.startswith("@file ")]
        assert json.loads(numbers.removeprefix("@file "))["parameters"]["incomingCallNumbers"]["value"] == []
    assert run.calls.index(deploy) > run.calls.index(shown[-1]), "subscriptions only once the functions exist"
    assert run.calls[0].startswith("group show"), "the resource group is looked up first"
    assert run.sleeps == [], "nothing failed: no waiting"


def test_every_az_call_names_the_subscription_azd_deployed_to(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell, FAKE_AZ_FAIL_SHOW="2", FAKE_AZ_FAIL_DEPLOY="1")
    assert run.returncode == 0, run.stderr
    az_calls = [c for c in run.calls if not c.startswith("@file ")]
    assert len(az_calls) == 1 + 3 + 2 + 2, az_calls
    for call in az_calls:
        assert re.search(r"(^| )--subscription sub-test( |$)", call), call


def test_hook_stops_at_once_when_the_resource_group_is_not_in_that_subscription(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell, FAKE_AZ_FAIL_GROUP="99")
    assert run.returncode != 0
    assert "resource group rg-test not found in subscription sub-test" in run.stderr
    assert "ERROR: (Fake) GROUP call 1 failed" in run.stderr, "az's own error is shown"
    assert len(run.calls) == 1 and run.sleeps == []


def test_hook_waits_for_a_function_the_host_has_not_indexed_yet(stand_ins: Path):
    run = run_hook(stand_ins, FAKE_AZ_FAIL_SHOW="2")
    assert run.returncode == 0, run.stderr
    assert [c.split("--function-name ")[1].split()[0] for c in run.of("functionapp function show")] == [
        "incoming_call", "incoming_call", "incoming_call", "recording_file_status", "call_records"]
    assert run.sleeps == [10, 10]


def test_hook_gives_up_on_a_missing_function_with_azs_last_error(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell, FAKE_AZ_FAIL_SHOW="99")
    assert run.returncode != 0
    assert len(run.of("functionapp function show")) == 30 and not run.of("deployment group create")
    assert "function incoming_call is not listed on func-test after 30 tries" in run.stderr
    assert "ERROR: (Fake) SHOW call 30 failed" in run.stderr, "the last error, not the first"
    assert "SHOW call 29 failed" not in run.stderr
    if shell == "sh":
        assert run.sleeps == [10] * 29


def test_deployment_is_retried_with_back_off(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell, FAKE_AZ_FAIL_DEPLOY="3")
    assert run.returncode == 0, run.stderr
    assert len(run.of("deployment group create")) == 4
    assert run.stderr.count("the Event Grid deployment failed (attempt") == 3
    assert "ERROR: (Fake) DEPLOY call 3 failed" in run.stderr, "each failure says why"
    assert "postdeploy: done" in run.stdout
    if shell == "sh":
        assert run.sleeps == [10, 20, 40], "the pause doubles"


def test_the_back_off_base_is_configurable(stand_ins: Path):
    run = run_hook(stand_ins, FAKE_AZ_FAIL_DEPLOY="3", FAKE_AZ_FAIL_SHOW="1", POSTDEPLOY_RETRY_SECONDS="1")
    assert run.returncode == 0, run.stderr
    assert run.sleeps == [1, 1, 2, 4]


def test_hook_gives_up_after_five_attempts_and_prints_the_last_az_error(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell, FAKE_AZ_FAIL_DEPLOY="99")
    assert run.returncode != 0
    assert len(run.of("deployment group create")) == 5
    assert "the Event Grid deployment failed 5 times" in run.stderr
    tail = run.stderr.split("the last az error:")[-1]
    assert "ERROR: (Fake) DEPLOY call 5 failed" in tail and "WARNING: something az says first" in tail
    assert "postdeploy: done" not in run.stdout
    if shell == "sh":
        assert run.sleeps == [10, 20, 40, 80]


def test_hook_passes_the_number_filter_and_the_call_records_switch(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell, INCOMING_CALL_NUMBERS='["+14255550100"]', DEPLOY_CALL_RECORDS_SUBSCRIPTION="false")
    assert run.returncode == 0, run.stderr
    assert not any("--function-name call_records" in c for c in run.calls)
    [deploy] = run.of("deployment group create")
    assert "deployCallRecordsSubscription=false" in deploy
    if shell == "sh":
        assert 'incomingCallNumbers=["+14255550100"]' in deploy
    else:
        [numbers] = [c for c in run.calls if c.startswith("@file ")]
        value = json.loads(numbers.removeprefix("@file "))["parameters"]["incomingCallNumbers"]["value"]
        assert value == ["+14255550100"]


@pytest.mark.parametrize("missing", ["AZURE_SUBSCRIPTION_ID", "AZURE_FUNCTION_APP_NAME"])
def test_hook_refuses_to_run_outside_azd(stand_ins: Path, shell: str, missing: str):
    run = run_hook(stand_ins, shell, **{missing: ""})
    assert run.returncode != 0 and missing in run.stderr
    assert run.calls == []


def test_hook_refuses_a_pause_that_is_not_a_number(stand_ins: Path, shell: str):
    run = run_hook(stand_ins, shell, POSTDEPLOY_RETRY_SECONDS="ten")
    assert run.returncode != 0 and "POSTDEPLOY_RETRY_SECONDS" in run.stderr
    assert run.calls == []
