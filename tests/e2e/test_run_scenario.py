"""bin/run-scenario, as a user runs it: from their own directory, with their flows, rules and scenario (paths relative
to it), against real Azurite, the simulator and the app under devhost."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bin" / "run-scenario"
EXAMPLE = ROOT / "examples" / "your-flow"


def run(cwd: Path, *args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RUN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def user_copy(tmp_path: Path) -> Path:
    """The worked example copied into a folder of the user's, as the recipe says."""
    mine = tmp_path / "my-flow"
    shutil.copytree(EXAMPLE, mine, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return mine


def test_the_example_runs_from_another_directory_and_prints_each_call(tmp_path: Path) -> None:
    user_copy(tmp_path)
    flows = f"{ROOT / 'flows' / 'default.json'};my-flow/flows"
    result = run(tmp_path, "my-flow/scenario.yaml", "--flows", flows, "--routing", "my-flow/routing.json")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "3/3 scripted call(s) finished as scripted" in out
    titles = re.findall(r"^Call \S+ \((.+)\)$", out, re.M)
    assert titles == ["caller checks an order", "caller asks for an agent", "caller presses a wrong key twice"]
    blocks = dict(zip(titles, re.split(r"^Call \S+ \(.+\)$", out, flags=re.M)[1:], strict=True))
    assert "hears: Order 123456 has shipped" in blocks["caller checks an order"]
    assert "app state in Table Storage: flow=order_status node=status" in blocks["caller checks an order"]
    assert "transfer to 4:+14255550150" in blocks["caller asks for an agent"]
    wrong = blocks["caller presses a wrong key twice"]
    assert "transfer to 4:+14255550100" in wrong and "4:+14255550150" not in wrong
    # The user's files were used, named as given (relative to their directory, not the repository).
    assert f"flows: flows/default.json;{tmp_path / 'my-flow' / 'flows'}" in out


def test_a_broken_flow_stops_the_run_with_the_problem_shown(tmp_path: Path) -> None:
    mine = user_copy(tmp_path)
    path = mine / "flows" / "order_status.json"
    flows = json.loads(path.read_text())
    flows["order_status"]["nodes"]["order_number"]["next"] = "statsu"
    path.write_text(json.dumps(flows))
    result = run(tmp_path, "my-flow/scenario.yaml", "--flows", "my-flow/flows", "--routing", "my-flow/routing.json")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "The app did not start" in result.stderr
    assert "flow order_status, node order_number" in result.stderr and "'statsu' is not a node" in result.stderr
    assert "Call " not in result.stdout  # no call was placed


def test_a_rule_into_a_flow_not_loaded_is_refused(tmp_path: Path) -> None:
    # The shipped flows left out: the default rule's customer_service is unknown, and the app says so.
    user_copy(tmp_path)
    result = run(tmp_path, "my-flow/scenario.yaml", "--flows", "my-flow/flows", "--routing", "my-flow/routing.json")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "unknown flow 'customer_service'" in result.stderr


def test_bad_input_is_refused_before_anything_starts(tmp_path: Path) -> None:
    mine = user_copy(tmp_path)
    missing = run(tmp_path, "my-flow/scenario.yaml", "--flows", "my-flow/nope")
    assert missing.returncode == 2 and "my-flow/nope: no such file or folder" in missing.stderr
    settings = run(tmp_path, "my-flow/scenario.yaml", "--settings", "local.settings.jsn")
    assert settings.returncode == 2 and "local.settings.jsn: no such file" in settings.stderr
    (mine / "bad.yaml").write_text("calls:\n  - {from: '+14255550041', to: '+18005550199', script: [{press: '?'}]}\n")
    scenario = run(tmp_path, "my-flow/bad.yaml")
    assert scenario.returncode == 2 and "'?' is not a DTMF key" in scenario.stderr
    assert "Starting Azurite" not in missing.stdout + settings.stdout + scenario.stdout
    usage = run(tmp_path)
    assert usage.returncode == 2 and "usage: bin/run-scenario SCENARIO.yaml" in usage.stderr
