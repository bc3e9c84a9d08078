"""Every resource body in infra/ matches its resource type and API version as Azure Resource Manager
defines it: the generated Bicep type definitions (Azure/bicep-types-az) kept beside the repository
in ``../shared/specs/bicep-types`` (or ``$ACS_SPECS_DIR/bicep-types``).

What the Bicep compiler would say offline, for what the templates write literally: unknown
properties, read-only properties, missing required properties, a literal of the wrong type or not
among the allowed values, an unknown discriminator value (Event Grid destinations, site config
names). Expressions whose value is known only at deployment are not checked beyond their shape;
variables, `union()` arguments and both arms of `?:` are followed.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.infra import bicep

REQUIRED, READ_ONLY = 1, 2
BICEP_ONLY_KEYS = {"parent", "scope", "dependsOn"}


def specs_dir() -> Path:
    env = os.environ.get("ACS_SPECS_DIR")
    base = Path(env) if env else bicep.ROOT.parent / "shared" / "specs"
    return base / "bicep-types"


@cache
def type_tables() -> dict[str, list[tuple[list[dict[str, Any]], dict[str, Any]]]]:
    """'Provider/type@version' -> [(the file's nodes, its ResourceType node)]."""
    folder = specs_dir()
    if not folder.is_dir():
        pytest.skip(f"no Bicep type definitions at {folder} (set ACS_SPECS_DIR)")
    found: dict[str, list[tuple[list[dict[str, Any]], dict[str, Any]]]] = {}
    for path in sorted(folder.glob("*.json")):
        nodes = json.loads(path.read_text())
        for node in nodes:
            if node.get("$type") == "ResourceType":
                found.setdefault(node["name"].lower(), []).append((nodes, node))
    return found


def resolve(nodes: list[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    return nodes[int(ref["$ref"].removeprefix("#/"))]


class Checker:
    def __init__(self, template: bicep.Template, nodes: list[dict[str, Any]]) -> None:
        self.template = template
        self.nodes = nodes
        self.ctx = bicep.Context(template)

    def values(self, expr: Any) -> list[Any]:
        """The literal shapes an expression can take inside this template (variables, union(), ?:)."""
        if isinstance(expr, bicep.Ref) and expr.name in self.template.variables:
            return self.values(self.template.variables[expr.name].value)
        if isinstance(expr, bicep.Cond):
            return self.values(expr.yes) + self.values(expr.no)
        if isinstance(expr, bicep.Call) and expr.name == "union":
            return [v for arg in expr.args for v in self.values(arg)]
        return [expr]

    def check(self, type_ref: dict[str, Any], expr: Any, where: str, top: bool = False) -> list[str]:
        node = resolve(self.nodes, type_ref)
        problems: list[str] = []
        for value in self.values(expr):
            problems += self._check(node, value, where, top)
        return problems

    def _check(self, node: dict[str, Any], value: Any, where: str, top: bool) -> list[str]:
        kind = node["$type"]
        if value is None:
            return []  # null: the property is left out (`enablePurgeProtection ? true : null`)
        if not isinstance(value, str | int | bool | dict | list) or kind == "AnyType":
            return []  # known only at deployment
        if kind == "UnionType":
            options = [resolve(self.nodes, e) for e in node["elements"]]
            for option in options:
                if not self._check(option, value, where, top):
                    return []
            allowed = [o.get("value", o["$type"]) for o in options]
            return [f"{where}: {value!r} is none of {allowed}"]
        if kind == "StringLiteralType":
            return [] if value == node["value"] else [f"{where}: {value!r} is not {node['value']!r}"]
        if kind == "StringType":
            return [] if isinstance(value, str) else [f"{where}: {value!r} is not a string"]
        if kind == "IntegerType":
            ok = isinstance(value, int) and not isinstance(value, bool)
            return [] if ok else [f"{where}: {value!r} is not an integer"]
        if kind == "BooleanType":
            return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
        if kind == "ArrayType":
            if not isinstance(value, list):
                return [f"{where}: {value!r} is not an array"]
            return [p for i, item in enumerate(value) for p in self.check(node["itemType"], item, f"{where}[{i}]")]
        if kind == "DiscriminatedObjectType":
            if not isinstance(value, dict):
                return [f"{where}: not an object"]
            tag = value.get(node["discriminator"])
            if not isinstance(tag, str):
                return []  # decided at deployment
            if tag not in node["elements"]:
                return [f"{where}: {node['discriminator']} {tag!r} is none of {sorted(node['elements'])}"]
            element = resolve(self.nodes, node["elements"][tag])
            merged = {**node.get("baseProperties", {}), **element.get("properties", {})}
            return self._object(merged, element.get("additionalProperties"), value, where, top)
        if kind == "ObjectType":
            if not isinstance(value, dict):
                return [f"{where}: {value!r} is not an object"]
            return self._object(node.get("properties", {}), node.get("additionalProperties"), value, where, top)
        return [f"{where}: unhandled type node {kind}"]

    def _object(
        self, properties: dict[str, Any], additional: dict[str, Any] | None, value: dict[str, Any], where: str,
        top: bool,
    ) -> list[str]:
        problems: list[str] = []
        for key, item in value.items():
            path = f"{where}.{key}"
            if top and key in BICEP_ONLY_KEYS:
                continue
            if key in properties:
                prop = properties[key]
                if prop.get("flags", 0) & READ_ONLY and not prop.get("flags", 0) & REQUIRED:
                    problems.append(f"{path}: read-only")
                    continue
                problems += self.check(prop["type"], item, path)
            elif additional is not None:
                problems += self.check(additional, item, path)
            else:
                problems.append(f"{path}: no such property (known: {sorted(properties)})")
        for key, prop in properties.items():
            if prop.get("flags", 0) & REQUIRED and key not in value:
                problems.append(f"{where}: required property {key} is missing")
        return problems


TEMPLATES = [bicep.load(p) for p in bicep.bicep_files()]
RESOURCES = [(t, d) for t in TEMPLATES for d in t.resources.values()]
IDS = [f"{t.path.name}:{d.name}" for t, d in RESOURCES]


@pytest.mark.parametrize(("template", "decl"), RESOURCES, ids=IDS)
def test_resource_type_and_api_version_are_in_the_specs(template, decl):
    tables = type_tables()
    assert decl.type.lower() in tables, f"{template.rel}: {decl.type} has no type definition in {specs_dir()}"


@pytest.mark.parametrize(("template", "decl"), RESOURCES, ids=IDS)
def test_resource_body_matches_its_type(template, decl):
    candidates = type_tables()[decl.type.lower()]
    if decl.existing:
        extra = set(decl.body) - {"name", "parent", "scope"}
        assert not extra, f"{template.rel}: existing {decl.name} sets {sorted(extra)}"
        return
    results = []
    for nodes, resource_type in candidates:
        problems = Checker(template, nodes).check(resource_type["body"], decl.body, decl.name, top=True)
        if not problems:
            return
        results.append(problems)
    pytest.fail(f"{template.rel}: {decl.type}\n" + "\n".join(min(results, key=len)))


def test_the_checker_catches_mistakes():
    """The test above would prove nothing if the checker accepted anything."""
    storage = bicep.template("modules/storage.bicep")
    [(nodes, account_type)] = type_tables()["microsoft.storage/storageaccounts@2023-05-01"]
    checker = Checker(storage, nodes)
    good = {"name": "st1", "location": "x", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}
    assert checker.check(account_type["body"], good, "ok", top=True) == []
    bad = [
        {**good, "properties": {"allowSharedKeyAcess": False}},  # misspelt
        {**good, "properties": {"minimumTlsVersion": 12}},  # wrong type
        {**good, "properties": {"allowBlobPublicAccess": "no"}},  # wrong type
        {k: v for k, v in good.items() if k != "location"},  # required
        {**good, "id": "/subscriptions/x"},  # read-only
    ]
    for body in bad:
        assert checker.check(account_type["body"], body, "bad", top=True), body
    [(nodes, comm)] = type_tables()["microsoft.communication/communicationservices@2025-05-01"]
    checker = Checker(storage, nodes)
    body = {"name": "acs", "location": "global", "properties": {"dataLocation": "Europe", "disableLocalAuth": True}}
    assert checker.check(comm["body"], body, "acs", top=True) == []
    assert checker.check(comm["body"], {**body, "properties": {"dataLocation": "Europe", "disableLocalAuth": "yes"}},
                         "acs", top=True)
    # A discriminator value the API does not know (site config is discriminated by its name).
    [(nodes, config)] = type_tables()["microsoft.web/sites/config@2024-04-01"]
    checker = Checker(storage, nodes)
    assert checker.check(config["body"], {"name": "appsettings", "properties": {"A": "b"}}, "cfg", top=True) == []
    assert checker.check(config["body"], {"name": "appsetings", "properties": {"A": "b"}}, "cfg", top=True)
