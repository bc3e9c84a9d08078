"""The flow validator (python -m core.flows.validate, bin/validate-flows): files and folders merged as FLOWS_FILE
merges them, the routing rules checked against them, every problem reported at once with its file; the wrapper
runnable from any directory with paths relative to it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core.flows import validate

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "bin" / "validate-flows"
SHIPPED = json.loads((ROOT / "flows" / "default.json").read_text())


def flow(to: str | None = None) -> dict[str, object]:
    """A valid flow: a goodbye, or a transfer to ``to``."""
    nodes: dict[str, object] = {"bye": {"type": "hangup", "prompt": {"audio": "https://media.example/bye.wav"}}}
    if to is None:
        return {"start": "bye", "nodes": nodes}
    nodes["agent"] = {"type": "transfer", "target": {"to": to}, "on_failure": "bye"}
    return {"start": "agent", "nodes": nodes}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = validate.main(args)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test stands in a temporary folder, as a user in their own project; the dialing policy is the default."""
    monkeypatch.chdir(tmp_path)
    for name in ("DIAL_ALLOWED_PREFIXES", "DIAL_DENIED_PREFIXES"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_every_problem_of_every_file_at_once(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        here / "flows" / "a.json", {"shared": flow(), "graph": {"start": "nowhere", "nodes": {"x": {"type": "hangup"}}}}
    )
    write(here / "flows" / "b.json", {"schema": {"start": "x", "nodes": {"x": {"type": "hangup", "colour": "red"}}}})
    write(here / "flows" / "c.json", {"shared": flow(), "fine": flow()})
    write(here / "flows" / "schema.json", {"not": "a flow"})
    write(here / "other.json", {"premium": flow("+19005550100")})
    code, out, err = run(["flows", "other.json", "missing"], capsys)
    assert code == 1
    assert out == [
        "flows/a.json: flow graph: start 'nowhere' is not a node",
        "flows/b.json: flow schema, node x: colour: Extra inputs are not permitted",
        "flows/c.json: flow 'shared' is also defined in flows/a.json",
        "other.json: flow 'premium' node 'agent' rings '+19005550100', which the dialing policy refuses: "
        "+1900 numbers are denied (DIAL_DENIED_PREFIXES: premium or international)",
        f"missing: no such file or folder ({here.resolve() / 'missing'})",
    ]
    assert err == "5 problems found\n"


def test_valid_files_and_folders_print_ok(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(here / "mine" / "b.json", {"b": flow()})
    write(here / "mine" / "a.json", {"a": flow("+14255550100")})
    write(here / "one.json", {"one": flow()})
    code, out, err = run(["one.json;mine"], capsys)  # a PATH may be a FLOWS_FILE-style list
    assert (code, out, err) == (0, ["one.json: ok", "mine/a.json: ok", "mine/b.json: ok"], "")


def test_no_path_checks_the_shipped_flows(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([], capsys) == (0, [f"{ROOT / 'flows' / 'default.json'}: ok"], "")


def test_an_empty_folder_and_a_bad_document(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "empty").mkdir()
    write(here / "list.json", [])
    write(here / "broken.json", "{")
    code, out, _ = run(["empty", "list.json", "broken.json"], capsys)
    assert code == 1
    assert (
        out[0] == f"empty: the folder ({here.resolve() / 'empty'}) holds no flow file (*.json other than schema.json)"
    )
    assert out[1] == "list.json: must be a JSON object of flows by name"
    assert out[2].startswith("broken.json: not valid JSON")


def test_routing_rules_are_checked_against_the_merged_flows(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(here / "mine" / "sales.json", {"sales_line": flow()})
    rules = {
        "rules": [
            {"name": "sales", "match": {"to": "+18005550111"}, "action": {"type": "answer", "flow": "sales_line"}},
            {"name": "old", "match": {"to": "+18005550112"}, "action": {"type": "answer", "flow": "retired"}},
            {"name": "premium", "match": {"to": "+18005550113"},
             "action": {"type": "redirect", "targets": ["+19005550100"]}},
        ],
        "default": {"type": "answer", "flow": "customer_service"},
    }  # fmt: skip
    write(here / "routing.json", rules)
    code, out, _ = run(["--routing", "routing.json", str(ROOT / "flows"), "mine"], capsys)
    assert code == 1
    assert out[:2] == [f"{ROOT / 'flows' / 'default.json'}: ok", "mine/sales.json: ok"]
    names = ", ".join(sorted({*SHIPPED, "sales_line"}))
    assert out[2:] == [
        f"routing.json: rule 'old' answers into unknown flow 'retired' (flows: {names})",
        "routing.json: rule 'premium' redirects to '+19005550100', which the dialing policy refuses: "
        "+1900 numbers are denied (DIAL_DENIED_PREFIXES: premium or international)",
    ]
    del rules["rules"][1:]
    write(here / "routing.json", rules)
    code, out, _ = run(["--routing", "routing.json", str(ROOT / "flows"), "mine"], capsys)
    assert (code, out[-1]) == (0, "routing.json: ok")


def test_routing_rules_that_do_not_load(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(here / "routing.json", {"rules": [{"name": "x", "action": {"type": "dance"}}]})
    code, out, _ = run(["--routing", "routing.json"], capsys)
    assert code == 1
    assert out[1:] == [
        "routing.json: rules[0].action: Input tag 'dance' found using 'type' does not match any of the expected "
        "tags: 'answer', 'redirect', 'reject', 'mask'",
        "routing.json: default: Field required",
    ]
    code, out, _ = run(["--routing", "nowhere.json"], capsys)
    assert (code, out[1]) == (1, "nowhere.json: cannot read the file (No such file or directory)")


def test_the_dialing_policy_is_the_environments(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(here / "uk.json", {"uk": flow("+442071234567")})
    assert run(["uk.json"], capsys)[0] == 1  # the default policy rings +1 only
    monkeypatch.setenv("DIAL_ALLOWED_PREFIXES", "+1,+44")
    assert run(["uk.json"], capsys) == (0, ["uk.json: ok"], "")


# -- bin/validate-flows ---------------------------------------------------------------------------


def wrapper(args: list[str], cwd: Path, script: Path = WRAPPER) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env = {k: v for k, v in env.items() if not k.startswith("DIAL_")}
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_wrapper_runs_from_another_directory(tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(ROOT)
    write(tmp_path / "good" / "main.json", {"main": flow()})
    write(tmp_path / "good" / "extra.json", {"extra": flow()})
    write(tmp_path / "routing.json", {"default": {"type": "answer", "flow": "main"}})
    done = wrapper(["--routing", "routing.json", "good"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["good/extra.json: ok", "good/main.json: ok", "routing.json: ok"]

    write(tmp_path / "bad" / "one.json", {"one": {"start": "a", "nodes": {"a": {"type": "play", "next": "b"}}}})
    write(tmp_path / "bad" / "two.json", {"two": {"start": "x", "nodes": {"y": {"type": "hangup"}}}})
    done = wrapper(["bad"], tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "bad/one.json: flow one, node a: prompt: Field required",
        "bad/two.json: flow two: start 'x' is not a node",
    ]
    assert done.stderr == "2 problems found\n"


def test_the_wrapper_follows_a_symlink_and_needs_the_venv(tmp_path: Path) -> None:
    link = tmp_path / "bin" / "validate-flows"
    link.parent.mkdir()
    link.symlink_to(WRAPPER)
    done = wrapper([], tmp_path, link)
    assert (done.returncode, done.stdout) == (0, f"{ROOT / 'flows' / 'default.json'}: ok\n"), done.stderr

    repo = tmp_path / "fresh-clone"
    (repo / "bin").mkdir(parents=True)
    shutil.copy(WRAPPER, repo / "bin" / "validate-flows")
    done = wrapper([], tmp_path, repo / "bin" / "validate-flows")
    assert done.returncode == 2
    assert done.stderr == f"validate-flows: no Python environment at {repo}/.venv: run make setup in {repo}\n"
