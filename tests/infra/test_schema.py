"""Every resource in infra/ matches its resource type and API version as Azure Resource Manager defines
it: the generated Bicep type tables of Azure/bicep-types-az, committed verbatim in
``tests/infra/bicep-types/`` (see its README for source, commit, checksums and how to refresh).

What the Bicep compiler would say offline:

- **resource bodies**: unknown properties, read-only properties set, missing required properties, a
  value of the wrong type, a string not among a strict enum's literals, an unknown discriminator value
  (Event Grid destinations and filters, site config names), a resource declared at a scope its type
  cannot be deployed at. Literals are checked, and so are variables, both arms of `?:`, `union()`
  arguments, every `@allowed` value of a parameter, and the declared type of any other parameter.
- **property reads**: every `<resource>.a.b.c` (and `[i]`, and resource functions such as
  `listKeys()` and what they return) anywhere in a template names a property the type has, and never
  a write-only one; every `<module>.outputs.x` names an output of that module.

``test_the_check_catches_*`` prove each kind of mistake is caught, on mutated copies of the templates.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import tree_sitter as ts

from tests.infra import bicep

TYPES_DIR = Path(__file__).resolve().parent / "bicep-types"
REQUIRED, READ_ONLY, WRITE_ONLY = 1, 2, 4
BICEP_ONLY_KEYS = {"parent", "scope", "dependsOn"}
# ScopeType flags of a ResourceType.
SCOPES = {"tenant": 1, "managementGroup": 2, "subscription": 4, "resourceGroup": 8, "extension": 16}

Nodes = list[dict[str, Any]]


@cache
def type_tables(folder: Path = TYPES_DIR) -> dict[str, list[tuple[Nodes, dict[str, Any]]]]:
    """'provider/type@version' (lower case) -> [(the file's nodes, its ResourceType node)]."""
    found: dict[str, list[tuple[Nodes, dict[str, Any]]]] = {}
    for path in sorted(folder.glob("*.json")):
        nodes = json.loads(path.read_text())
        for node in nodes:
            if node.get("$type") == "ResourceType":
                found.setdefault(node["name"].lower(), []).append((nodes, node))
    return found


def resolve(nodes: Nodes, ref: dict[str, Any]) -> dict[str, Any]:
    return nodes[int(ref["$ref"].removeprefix("#/"))]


@dataclass(frozen=True)
class Typed:
    """A value known only by its declared type (a parameter without @allowed, an interpolated string)."""

    kind: str  # string, int, bool, object, array
    what: str


class Checker:
    def __init__(self, template: bicep.Template, nodes: Nodes) -> None:
        self.template = template
        self.nodes = nodes

    def values(self, expr: Any) -> list[Any]:
        """The shapes an expression can take inside this template: literals, variables, both arms of
        ?:, union() arguments, a parameter's @allowed values or else its declared type."""
        if isinstance(expr, bicep.Ref) and expr.name in self.template.variables:
            return self.values(self.template.variables[expr.name].value)
        if isinstance(expr, bicep.Ref) and expr.name in self.template.params:
            decl = self.template.params[expr.name]
            if "allowed" in decl.decorators:
                return list(decl.decorators["allowed"][0])
            return [Typed(decl.type, f"parameter {decl.name} ({decl.type})")]
        if isinstance(expr, bicep.Interp):
            return [Typed("string", bicep.src(expr))]
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

    def _typed(self, node: dict[str, Any], value: Typed, where: str) -> list[str]:
        kind = node["$type"]
        if kind == "UnionType":
            options = [resolve(self.nodes, e) for e in node["elements"]]
            if any(not self._typed(o, value, where) for o in options):
                return []
            return [f"{where}: {value.what} cannot be {[o.get('value', o['$type']) for o in options]}"]
        accepts = {
            "StringType": "string",
            "StringLiteralType": "string",
            "IntegerType": "int",
            "BooleanType": "bool",
            "ObjectType": "object",
            "DiscriminatedObjectType": "object",
            "ArrayType": "array",
        }
        if kind == "AnyType" or accepts.get(kind) == value.kind:
            return []
        return [f"{where}: {value.what} where {kind} is expected"]

    def _check(self, node: dict[str, Any], value: Any, where: str, top: bool) -> list[str]:
        kind = node["$type"]
        if value is None:
            return []  # null: the property is left out (`enablePurgeProtection ? true : null`)
        if isinstance(value, Typed):
            return self._typed(node, value, where)
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
            tags = self.values(value.get(node["discriminator"]))
            if not all(isinstance(t, str) for t in tags):
                return []  # decided at deployment
            problems = []
            for tag in tags:
                if tag not in node["elements"]:
                    problems.append(f"{where}: {node['discriminator']} {tag!r} is none of {sorted(node['elements'])}")
                    continue
                element = resolve(self.nodes, node["elements"][tag])
                merged = {**node.get("baseProperties", {}), **element.get("properties", {})}
                body = {**value, node["discriminator"]: tag}
                problems += self._object(merged, element.get("additionalProperties"), body, where, top)
            return problems
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


# ---- one template --------------------------------------------------------------------------------------


def body_problems(template: bicep.Template, decl: bicep.Decl, tables=None) -> list[str]:
    """What is wrong with one resource declaration's body (and its scope)."""
    tables = tables or type_tables()
    candidates = tables.get(decl.type.lower())
    if not candidates:
        return [f"{decl.name}: {decl.type} has no type table in {TYPES_DIR.name}/"]
    if decl.existing:
        extra = set(decl.body) - {"name", "parent", "scope"}
        return [f"{decl.name}: existing resource sets {sorted(extra)}"] if extra else []
    results = []
    for nodes, resource_type in candidates:
        problems = Checker(template, nodes).check(resource_type["body"], decl.body, decl.name, top=True)
        scope = "extension" if "scope" in decl.body else template.target_scope
        if not resource_type.get("writableScopes", 0) & SCOPES[scope]:
            problems.append(f"{decl.name}: {decl.type} cannot be deployed at {scope} scope")
        if not problems:
            return []
        results.append(problems)
    return min(results, key=len)


def _chains(root: ts.Node) -> list[ts.Node]:
    """The outermost member, index and call expressions: `a.b[0].c` once, not also `a.b`."""
    found: list[ts.Node] = []
    kinds = ("member_expression", "subscript_expression", "call_expression")

    def walk(node: ts.Node) -> None:
        if node.type in kinds:
            parent = node.parent
            inner = parent is not None and parent.type in kinds and (
                parent.child_by_field_name("object") == node or parent.child_by_field_name("function") == node
            )
            if not inner:
                found.append(node)
        for child in node.children:
            walk(child)

    walk(root)
    return found


def _steps(expr: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """(root, [('prop', name) | ('index', value) | ('call', function)]) of a.b[i].f().c."""
    steps: list[tuple[str, Any]] = []
    while True:
        if isinstance(expr, bicep.Member):
            steps.insert(0, ("prop", expr.prop))
            expr = expr.obj
        elif isinstance(expr, bicep.Index):
            steps.insert(0, ("index", expr.index))
            expr = expr.obj
        elif isinstance(expr, bicep.Call) and "." in expr.name:
            head, function = expr.name.rsplit(".", 1)
            steps.insert(0, ("call", function))
            expr = bicep.Ref(head) if re.fullmatch(r"\w+", head) else bicep.Raw("call", head)
        else:
            return expr, steps


class Reader:
    """Follows a read of a resource's properties through its type table."""

    def __init__(self, nodes: Nodes, decl: bicep.Decl) -> None:
        self.nodes = nodes
        self.decl = decl

    def properties(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """The property maps a read of `node` may use (a discriminated object: the known element, or any)."""
        if node["$type"] == "ObjectType":
            return [node.get("properties", {})]
        if node["$type"] == "DiscriminatedObjectType":
            base = node.get("baseProperties", {})
            tag = self.decl.body.get(node["discriminator"])
            names = [tag] if isinstance(tag, str) and tag in node["elements"] else list(node["elements"])
            return [{**base, **resolve(self.nodes, node["elements"][n]).get("properties", {})} for n in names]
        return []

    def follow(self, node: dict[str, Any], steps: list[tuple[str, Any]], where: str) -> list[str]:
        for position, (step, arg) in enumerate(steps):
            kind = node["$type"]
            if kind == "AnyType":
                return []
            if kind == "UnionType":
                options = [resolve(self.nodes, e) for e in node["elements"]]
                results = [self.follow(o, steps[position:], where) for o in options]
                return [] if any(not r for r in results) else min(results, key=len)
            if step == "call":
                if position != 0:
                    return [f"{where}: {arg}() is not a function of a resource"]
                version = self.decl.type.split("@")[1]
                functions = [
                    n for n in self.nodes
                    if n.get("$type") == "ResourceFunctionType" and n["name"] == arg
                    and n["resourceType"].lower() == self.decl.resource_type.lower() and n["apiVersion"] == version
                ]
                if not functions:
                    return [f"{where}: {self.decl.type} has no function {arg}()"]
                node = resolve(self.nodes, functions[0]["output"])
                continue
            if step == "index" and kind == "ArrayType":
                node = resolve(self.nodes, node["itemType"])
                continue
            name = arg if step == "prop" else arg if isinstance(arg, str) else None
            maps = self.properties(node)
            if not maps:
                return [f"{where}: {kind} has no property {name!r}"]
            if name is None:
                return []  # an index known only at deployment
            matches = [m[name] for m in maps if name in m]
            if not matches:
                additional = node.get("additionalProperties")
                if additional is not None:
                    node = resolve(self.nodes, additional)
                    continue
                known = sorted({k for m in maps for k in m})
                return [f"{where}: no property {name!r} (known: {known})"]
            prop = matches[0]
            if prop.get("flags", 0) & WRITE_ONLY:
                return [f"{where}: {name!r} is write-only: Azure never returns it"]
            node = resolve(self.nodes, prop["type"])
        return []


def read_problems(template: bicep.Template, tables=None) -> list[str]:
    """Every read of a resource's properties, and of a module's outputs, in the template."""
    tables = tables or type_tables()
    problems: list[str] = []
    root = bicep.parser().parse(template.source.encode()).root_node
    for node in _chains(root):
        expr = bicep.convert(node)
        base, steps = _steps(expr)
        if not isinstance(base, bicep.Ref) or not steps:
            continue
        where = f"{template.rel}:{node.start_point[0] + 1} {bicep.src(expr)}"
        decl = template.decls.get(base.name)
        if decl is None:
            continue
        if decl.kind == "module":
            if steps[0] == ("prop", "outputs") and len(steps) > 1 and steps[1][0] == "prop":
                module = bicep.load((template.path.parent / decl.type).resolve())
                if steps[1][1] not in module.outputs:
                    problems.append(f"{where}: module {decl.type} has no output {steps[1][1]!r}")
            continue
        if decl.kind != "resource":
            continue
        candidates = tables.get(decl.type.lower())
        if not candidates:
            problems.append(f"{where}: {decl.type} has no type table")
            continue
        results = [
            Reader(nodes, decl).follow(resolve(nodes, resource_type["body"]), steps, where)
            for nodes, resource_type in candidates
        ]
        if all(results):
            problems += min(results, key=len)
    return problems


def template_problems(template: bicep.Template, tables=None) -> list[str]:
    problems = [p for decl in template.resources.values() for p in body_problems(template, decl, tables)]
    return problems + read_problems(template, tables)


# ---- the templates -------------------------------------------------------------------------------------


TEMPLATES = [bicep.load(p) for p in bicep.bicep_files()]
RESOURCES = [(t, d) for t in TEMPLATES for d in t.resources.values()]
IDS = [f"{t.path.name}:{d.name}" for t, d in RESOURCES]


@pytest.mark.parametrize(("template", "decl"), RESOURCES, ids=IDS)
def test_resource_type_and_api_version_have_a_type_table(template, decl):
    assert decl.type.lower() in type_tables(), f"{template.rel}: {decl.type} has no type table in {TYPES_DIR}"


@pytest.mark.parametrize(("template", "decl"), RESOURCES, ids=IDS)
def test_resource_body_matches_its_type(template, decl):
    problems = body_problems(template, decl)
    assert not problems, f"{template.rel}: {decl.type}\n" + "\n".join(problems)


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.path.name for t in TEMPLATES])
def test_every_property_read_exists_in_its_type(template):
    problems = read_problems(template)
    assert not problems, "\n".join(problems)


def test_the_reads_are_found():
    """The read check above would prove nothing if it found no reads."""
    functionapp = bicep.template("modules/functionapp.bicep")
    reads = {bicep.src(bicep.convert(n)) for n in _chains(bicep.parser().parse(functionapp.source.encode()).root_node)}
    for expected in (
        "hostStorage.properties.primaryEndpoints.blob",
        "acs.properties.hostName",
        "acs.properties.immutableResourceId",
        "callbackSecret.properties.secretUriWithVersion",
        "appInsights.properties.ConnectionString",
        "functionApp.properties.defaultHostName",
        "plan.id",
    ):
        assert expected in reads, expected


# ---- the tables themselves -----------------------------------------------------------------------------


def test_the_tables_are_the_verbatim_files_the_readme_lists():
    readme = (TYPES_DIR / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+\.json)` \| [^|]+ \| ([\d,]+) \| `([0-9a-f]{64})` \|$", readme, re.M)
    listed = {name: (int(size.replace(",", "")), digest) for name, size, digest in rows}
    present = {p.name for p in TYPES_DIR.glob("*.json")}
    assert set(listed) == present, f"README lists {sorted(listed)}, folder holds {sorted(present)}"
    for name, (size, digest) in listed.items():
        data = (TYPES_DIR / name).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == digest, f"{name} is not the file listed"
    assert "1f896de2db966ad91e8f7d7d981e11d32e4f5d8d" in readme and "Azure/bicep-types-az" in readme


def test_every_table_is_used_and_every_used_type_has_one():
    used = {d.type.lower() for _, d in RESOURCES}
    files_used = set()
    for path in TYPES_DIR.glob("*.json"):
        names = {n["name"].lower() for n in json.loads(path.read_text()) if n.get("$type") == "ResourceType"}
        if names & used:
            files_used.add(path.name)
    assert files_used == {p.name for p in TYPES_DIR.glob("*.json")}, "a table nothing in infra/ uses"
    assert used <= set(type_tables())


# ---- the check catches each kind of mistake (on mutated copies) -----------------------------------------


@pytest.fixture
def infra_copy(tmp_path: Path) -> Path:
    target = tmp_path / "infra"
    shutil.copytree(bicep.INFRA, target, ignore=shutil.ignore_patterns("checks", "hooks"))
    return target


def mutated(infra_copy: Path, rel: str, old: str, new: str, count: int = 1) -> bicep.Template:
    path = infra_copy / rel
    text = path.read_text()
    assert text.count(old) >= 1, f"{rel} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, count))
    return bicep.load(path)


def test_an_unmutated_copy_is_clean(infra_copy: Path):
    for path in sorted(infra_copy.rglob("*.bicep")):
        template = bicep.load(path)
        assert template_problems(template) == [], path.name


MUTATIONS = [
    (
        "unknown property",
        "modules/storage.bicep",
        "allowSharedKeyAccess: false",
        "allowSharedKeyAcess: false",
        "storage.properties.allowSharedKeyAcess: no such property",
    ),
    (
        "wrong type",
        "modules/functionapp.bicep",
        "httpsOnly: true",
        "httpsOnly: 'yes'",
        "functionApp.properties.httpsOnly: 'yes' is not a boolean",
    ),
    (
        "wrong type of a parameter",
        "modules/functionapp.bicep",
        "maximumInstanceCount: maximumInstanceCount",
        "maximumInstanceCount: appInsightsEntraAuth",
        "parameter appInsightsEntraAuth (bool) where IntegerType is expected",
    ),
    (
        "read-only property set",
        "modules/storage.bicep",
        "    accessTier: 'Hot'",
        "    accessTier: 'Hot'\n    provisioningState: 'Succeeded'",
        "storage.properties.provisioningState: read-only",
    ),
    (
        "enum literal not allowed",
        "modules/storage.bicep",
        "publicAccess: 'None'",
        "publicAccess: 'Private'",
        "recordingsContainer.properties.publicAccess: 'Private' is none of ['Container', 'Blob', 'None']",
    ),
    (
        "enum value of a parameter not allowed",
        "modules/keyvault.bicep",
        "      name: 'standard'",
        "      name: vaultSku",
        "",  # set up below: a parameter whose @allowed holds a value the enum lacks
    ),
    (
        "missing required property",
        "modules/communication.bicep",
        "    dataLocation: dataLocation\n",
        "",
        "acs.properties: required property dataLocation is missing",
    ),
    (
        "unknown discriminator value",
        "eventgrid.bicep",
        "endpointType: 'AzureFunction'",
        "endpointType: 'AzureFunctions'",
        "endpointType 'AzureFunctions' is none of",
    ),
    (
        "wrong scope",
        "main.bicep",
        "output AZURE_LOCATION string = location",
        "resource stray 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {\n"
        "  name: 'id-stray'\n  location: location\n}\n\noutput AZURE_LOCATION string = location",
        "stray: Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31 cannot be deployed at subscription",
    ),
    (
        "unknown property read",
        "modules/functionapp.bicep",
        "hostStorage.properties.primaryEndpoints.blob}",
        "hostStorage.properties.primaryEndpoints.blobs}",
        "hostStorage.properties.primaryEndpoints.blobs: no property 'blobs'",
    ),
    (
        "unknown property read at the top",
        "modules/communication.bicep",
        "output principalId string = acs.identity.principalId",
        "output principalId string = acs.identities.principalId",
        "acs.identities.principalId: no property 'identities'",
    ),
    (
        "write-only property read",
        "modules/keyvault.bicep",
        "output id string = vault.id",
        "output id string = vault.properties.createMode",
        "vault.properties.createMode: 'createMode' is write-only",
    ),
    (
        "unknown resource function",
        "modules/storage.bicep",
        "output blobEndpoint string = storage.properties.primaryEndpoints.blob",
        "output blobEndpoint string = storage.listKeyz().keys[0].value",
        "has no function listKeyz()",
    ),
    (
        "unknown property of a function's result",
        "modules/storage.bicep",
        "output blobEndpoint string = storage.properties.primaryEndpoints.blob",
        "output blobEndpoint string = storage.listKeys().keys[0].valu",
        "storage.listKeys().keys[0].valu: no property 'valu'",
    ),
    (
        "unknown module output",
        "main.bicep",
        "functionApp.outputs.callbackBaseUrl",
        "functionApp.outputs.callbackUrl",
        "has no output 'callbackUrl'",
    ),
]


@pytest.mark.parametrize(
    ("what", "rel", "old", "new", "expected"), [pytest.param(*m, id=m[0].replace(" ", "-")) for m in MUTATIONS]
)
def test_the_check_catches(infra_copy: Path, what: str, rel: str, old: str, new: str, expected: str):
    if what == "enum value of a parameter not allowed":
        # Key Vault's sku.name is a strict enum (standard, premium): a parameter allowing another fails.
        path = infra_copy / rel
        path.write_text(
            path.read_text().replace(
                "resource vault ",
                "@description('SKU.')\n@allowed([\n  'standard'\n  'basic'\n])\nparam vaultSku string = 'standard'\n\n"
                "resource vault ",
                1,
            )
        )
        expected = "vault.properties.sku.name: 'basic' is none of ['standard', 'premium']"
    template = mutated(infra_copy, rel, old, new)
    problems = template_problems(template)
    assert any(expected in p for p in problems), f"{what}: not caught; found {problems}"
    # The same check passes the real file: the mutation alone is what it caught.
    assert template_problems(bicep.template(rel)) == []


def test_a_valid_read_of_a_function_result_passes(infra_copy: Path):
    """listKeys() and its result are followed through the table (the templates themselves read no keys)."""
    template = mutated(
        infra_copy,
        "modules/storage.bicep",
        "output blobEndpoint string = storage.properties.primaryEndpoints.blob",
        "output blobEndpoint string = storage.listKeys().keys[0].value",
    )
    assert read_problems(template) == []
