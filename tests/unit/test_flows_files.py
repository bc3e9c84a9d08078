"""FLOWS_FILE as several files and folders merged, and ROUTING_RULES_FILE: what start-up loads from disk, and the
errors that name the setting, the file (its resolved path) and the flow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.platform.settings import SettingsError, load, load_flows
from tests.unit.test_settings import ROUTING, base_env

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "flows" / "default.json").read_text())


def flow(text: str = "Goodbye.") -> dict[str, object]:
    """A valid one-node flow (an audio prompt: no AI services needed)."""
    return {"start": "bye", "nodes": {"bye": {"type": "hangup", "prompt": {"audio": f"https://media.example/{text}"}}}}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def error_of(env: dict[str, str], root: Path) -> str:
    with pytest.raises(SettingsError) as caught:
        load_flows(env, root)
    return str(caught.value)


# -- FLOWS_FILE: files, folders, lists ------------------------------------------------------------


def test_one_file_as_before(tmp_path: Path) -> None:
    write(tmp_path / "flows.json", {"a": flow()})
    assert set(load_flows({"FLOWS_FILE": "flows.json"}, tmp_path)) == {"a"}


def test_a_list_of_files_is_merged_spaces_and_empty_items_ignored(tmp_path: Path) -> None:
    write(tmp_path / "one.json", {"a": flow(), "b": flow()})
    write(tmp_path / "more" / "two.json", {"c": flow()})
    flows = load_flows({"FLOWS_FILE": " one.json ;; more/two.json ; "}, tmp_path)
    assert sorted(flows) == ["a", "b", "c"]


def test_a_folder_takes_every_json_file_in_it_but_schema_json(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    write(folder / "b.json", {"b": flow()})
    write(folder / "a.json", {"a": flow()})
    write(folder / "schema.json", {"$schema": "not a flow"})  # the editor schema that sits next to the flows
    write(folder / "notes.txt", "not json")
    write(folder / "nested" / "c.json", {"c": flow()})  # only files directly in the folder
    flows = load_flows({"FLOWS_FILE": "flows"}, tmp_path)
    assert list(flows) == ["a", "b"]  # sorted by file name


def test_the_shipped_folder_alone_is_the_shipped_flows() -> None:
    assert set(load_flows({"FLOWS_FILE": "flows"})) == set(SHIPPED)


def test_the_shipped_file_and_a_folder_of_ones_own(tmp_path: Path) -> None:
    mine = tmp_path / "my-flows"
    write(mine / "sales.json", {"sales_line": flow()})
    flows = load_flows({"FLOWS_FILE": f"flows/default.json;{mine}"})  # an absolute path: anywhere on disk
    assert set(flows) == {*SHIPPED, "sales_line"}


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    write(tmp_path / "flows" / "a.json", {"a": flow()})
    assert list(load_flows({"FLOWS_FILE": "flows;flows/a.json"}, tmp_path)) == ["a"]


def test_a_flow_defined_twice_names_the_flow_and_both_files(tmp_path: Path) -> None:
    write(tmp_path / "flows" / "a.json", {"shared": flow(), "a": flow()})
    write(tmp_path / "flows" / "b.json", {"shared": flow("other")})
    message = error_of({"FLOWS_FILE": "flows"}, tmp_path)
    first, second = tmp_path.resolve() / "flows" / "a.json", tmp_path.resolve() / "flows" / "b.json"
    assert message == f"setting FLOWS_FILE: {second}: flow 'shared' is also defined in {first}"


def test_a_missing_path_is_named_resolved(tmp_path: Path) -> None:
    write(tmp_path / "a.json", {"a": flow()})
    message = error_of({"FLOWS_FILE": "a.json; sub/../missing"}, tmp_path)
    assert message == f"setting FLOWS_FILE: {tmp_path.resolve() / 'missing'}: no such file or folder"


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "empty" / "schema.json", {})
    message = error_of({"FLOWS_FILE": "empty"}, tmp_path)
    assert message.startswith(f"setting FLOWS_FILE: {tmp_path.resolve() / 'empty'}: the folder holds no flow file")


def test_a_value_naming_nothing_is_an_error(tmp_path: Path) -> None:
    assert "names no file or folder" in error_of({"FLOWS_FILE": " ; "}, tmp_path)


def test_an_empty_value_is_the_default() -> None:
    assert set(load_flows({"FLOWS_FILE": ""})) == set(SHIPPED)


def test_problems_in_several_files_each_name_their_file_flow_and_node(tmp_path: Path) -> None:
    write(tmp_path / "flows" / "a.json", {"a": {"start": "nowhere", "nodes": {"x": {"type": "hangup"}}}})
    write(tmp_path / "flows" / "b.json", {"b": {"start": "x", "nodes": {"x": {"type": "dance"}}}})
    write(tmp_path / "flows" / "c.json", "{")
    message = error_of({"FLOWS_FILE": "flows"}, tmp_path)
    folder = tmp_path.resolve() / "flows"
    assert message.startswith("setting FLOWS_FILE: ")
    assert f"{folder / 'a.json'}: flow a: start 'nowhere' is not a node" in message
    assert f"{folder / 'b.json'}: flow b, node x: " in message and "dance" in message
    assert f"{folder / 'c.json'}: not valid JSON" in message


def test_many_problems_are_cut_short_with_a_pointer_to_the_validator(tmp_path: Path) -> None:
    broken = {f"f{i}": {"start": "nowhere", "nodes": {"x": {"type": "hangup"}}} for i in range(12)}
    write(tmp_path / "flows.json", broken)
    message = error_of({"FLOWS_FILE": "flows.json"}, tmp_path)
    assert message.count("is not a node") == 10
    assert message.endswith("; and 2 more (bin/validate-flows lists every one)")


def test_flows_still_overrides_flows_file(tmp_path: Path) -> None:
    flows = load_flows({"FLOWS": json.dumps({"inline": flow()}), "FLOWS_FILE": "does/not/exist"}, tmp_path)
    assert list(flows) == ["inline"]


def test_the_app_loads_merged_flows_a_rule_answers_into(tmp_path: Path) -> None:
    shutil.copy(ROOT / "flows" / "default.json", tmp_path / "default.json")
    write(tmp_path / "mine" / "sales.json", {"sales_line": flow()})
    rules = {"rules": [{"name": "sales", "match": {"to": "+18005550111"}, "action": {"type": "answer",
             "flow": "sales_line"}}], "default": {"type": "answer", "flow": "customer_service"}}  # fmt: skip
    settings = load(base_env(FLOWS_FILE="default.json;mine", ROUTING_RULES=json.dumps(rules)), tmp_path)
    assert "sales_line" in settings.flows and "customer_service" in settings.flows


# -- ROUTING_RULES_FILE ---------------------------------------------------------------------------


def test_routing_rules_file_is_used(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    write(tmp_path / "config" / "routing.json", ROUTING)
    settings = load(base_env(ROUTING_RULES=None, ROUTING_RULES_FILE="config/routing.json"), tmp_path)
    assert [r.name for r in settings.routing.rules] == ["support"]


def test_routing_rules_file_may_be_absolute(tmp_path: Path) -> None:
    path = write(tmp_path / "routing.json", ROUTING)
    settings = load(base_env(ROUTING_RULES="", ROUTING_RULES_FILE=str(path)))
    assert [r.name for r in settings.routing.rules] == ["support"]


def test_both_routing_settings_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "routing.json", ROUTING)
    with pytest.raises(SettingsError) as caught:
        load(base_env(ROUTING_RULES_FILE=str(path)))
    message = str(caught.value)
    assert "ROUTING_RULES and ROUTING_RULES_FILE are both set" in message and "set one" in message


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_neither_routing_setting_is_an_error(empty: str | None) -> None:
    with pytest.raises(SettingsError) as caught:
        load(base_env(ROUTING_RULES=empty, ROUTING_RULES_FILE=empty))
    message = str(caught.value)
    assert message.startswith("setting ROUTING_RULES or ROUTING_RULES_FILE is required")
    assert "docs/routing.md" in message


def test_routing_rules_file_missing_is_named_resolved(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load(base_env(ROUTING_RULES=None, ROUTING_RULES_FILE="conf/../routing.json"), tmp_path)
    assert str(caught.value) == f"setting ROUTING_RULES_FILE: cannot read {tmp_path.resolve() / 'routing.json'} " + (
        "(No such file or directory)"
    )


def test_routing_rules_file_invalid_json_is_named(tmp_path: Path) -> None:
    write(tmp_path / "routing.json", "{'rules': []}")
    with pytest.raises(SettingsError) as caught:
        load(base_env(ROUTING_RULES=None, ROUTING_RULES_FILE="routing.json"), tmp_path)
    message = str(caught.value)
    assert message.startswith(f"setting ROUTING_RULES_FILE: {tmp_path.resolve() / 'routing.json'} is not valid JSON")


def test_routing_rules_file_invalid_rules_and_unknown_flows_name_that_setting(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    write(tmp_path / "routing.json", {"rules": []})
    with pytest.raises(SettingsError) as caught:
        load(base_env(ROUTING_RULES=None, ROUTING_RULES_FILE="routing.json"), tmp_path)
    assert str(caught.value) == "setting ROUTING_RULES_FILE: default: Field required"
    write(tmp_path / "routing.json", {"default": {"type": "answer", "flow": "nope"}})
    with pytest.raises(SettingsError) as caught:
        load(base_env(ROUTING_RULES=None, ROUTING_RULES_FILE="routing.json"), tmp_path)
    assert str(caught.value).startswith("setting ROUTING_RULES_FILE: rule 'default' answers into unknown flow 'nope'")
    write(tmp_path / "routing.json", {"default": {"type": "redirect", "targets": ["+19005550100"]}})
    with pytest.raises(SettingsError) as caught:
        load(base_env(ROUTING_RULES=None, ROUTING_RULES_FILE="routing.json"), tmp_path)
    assert str(caught.value).startswith("setting ROUTING_RULES_FILE: rule 'default' redirects to '+19005550100'")


def test_a_refused_target_names_the_file_of_its_flow(tmp_path: Path) -> None:
    shutil.copy(ROOT / "flows" / "default.json", tmp_path / "default.json")
    premium = {
        "start": "agent",
        "nodes": {
            "agent": {"type": "transfer", "target": {"to": "+19005550100"}, "on_failure": "bye"},
            "bye": {"type": "hangup"},
        },
    }
    write(tmp_path / "mine" / "premium.json", {"premium": premium})
    with pytest.raises(SettingsError) as caught:
        load(base_env(FLOWS_FILE="default.json;mine"), tmp_path)
    assert str(caught.value).startswith(
        f"setting FLOWS_FILE: {tmp_path.resolve() / 'mine' / 'premium.json'}: flow 'premium' node 'agent' rings "
        "'+19005550100', which the dialing policy refuses"
    )
