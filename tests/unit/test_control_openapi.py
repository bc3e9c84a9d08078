"""The control API's OpenAPI document against itself (OpenAPI 3.1 structure, unique operation ids,
resolvable references) and against the HTTP functions function_app.py registers: every documented
path and method is served by exactly one function, and every function-key function is documented."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from jsonschema import Draft202012Validator

from core.outbound import control
from devhost.functions import HttpFunction
from tests.unit.app_index import served as served_by_devhost

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# A value for each path parameter, as a caller would send it (raw ids keep their ':' and '+').
SAMPLES = {"call_connection_id": "411f0b00-a3c1-4b9e-sim-6a1b2c3d4e5f", "participant": "4:+14255550100"}


def fresh_app() -> func.FunctionApp:
    """function_app.py's FunctionApp, executed anew (``get_functions()`` works once per app)."""
    return runpy.run_path(str(ROOT / "function_app.py"), run_name="function_app")["app"]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return control.openapi()


@pytest.fixture(scope="module")
def served() -> list[HttpFunction]:
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    return served_by_devhost(prefix).http


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]


def sample(name: str) -> str:
    return SAMPLES.get(name, f"sample-{name.replace('_', '-')}")


def sample_path(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: sample(m[1]), path)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


# -- the document ------------------------------------------------------------------------------------


def test_document_is_openapi_3_1(doc):
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert set(doc) <= {"openapi", "info", "jsonSchemaDialect", "servers", "paths", "webhooks", "components",
                        "security", "tags", "externalDocs"}  # fmt: skip
    assert json.loads(json.dumps(doc)) == doc  # plain JSON
    assert doc["paths"]
    for path, item in doc["paths"].items():
        assert path.startswith("/api/"), path
        assert item and set(item) <= METHODS, (path, set(item))


def test_every_operation_is_complete(doc):
    schemes = doc["components"]["securitySchemes"]
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert op["operationId"] and op["summary"], where
        assert op["responses"] and all(re.fullmatch(r"[1-5]\d\d|default", code) for code in op["responses"]), where
        assert all(r.get("description") for r in op["responses"].values()), where
        assert any(code.startswith("2") for code in op["responses"]), where
        for requirement in op["security"]:
            assert set(requirement) <= set(schemes), where
        # Path parameters: exactly the template's, each required, in the path.
        template = re.findall(r"\{(\w+)\}", path)
        declared = [p for p in op.get("parameters", []) if p["in"] == "path"]
        assert [p["name"] for p in declared] == template, where
        assert all(p["required"] is True and p["schema"] for p in declared), where
        if method in ("get", "delete", "head"):
            assert "requestBody" not in op, where
        if "requestBody" in op:
            assert op["requestBody"]["content"]["application/json"]["schema"], where


def test_operation_ids_are_unique(doc):
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)) == len(control.OPERATIONS)
    assert set(ids) == {op.name for op in control.OPERATIONS}


def test_every_reference_resolves(doc):
    found = refs(doc)
    assert found  # request bodies refer to component schemas
    for ref in found:
        resolve(doc, ref)


def test_component_schemas_are_json_schema_2020_12(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["functionKey"] == {"type": "apiKey", "in": "header", "name": "x-functions-key"}
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert schema.get("type") == "object" or "$ref" in schema or "anyOf" in schema, name


def test_request_schemas_accept_what_the_models_accept(doc):
    # The documented schema and the model that validates the request agree on a valid example.
    example = {"targets": [{"to": "+14255550100"}, {"to": "8:orgid:teams-user"}], "caller_id": "+18005550100"}
    control.PlaceCall.model_validate(example)
    # Its references ("#/components/schemas/...") resolve against the document's components.
    schema = {**doc["components"]["schemas"]["PlaceCall"], "components": doc["components"]}
    Draft202012Validator(schema).validate(example)
    assert not Draft202012Validator(schema).is_valid({"targets": []})


# -- the document against the registered functions ---------------------------------------------------


def serving(functions: list[HttpFunction], method: str, path: str) -> list[tuple[HttpFunction, dict[str, str]]]:
    found = []
    for function in functions:
        m = function.pattern.match(path)
        if m and method.upper() in function.methods:
            found.append((function, {k: v for k, v in m.groupdict().items() if v}))
    return found


def test_every_documented_operation_is_served_by_exactly_one_function(doc, served):
    for path, method, op in operations(doc):
        concrete = sample_path(path)
        matches = serving(served, method, concrete)
        assert len(matches) == 1, (method, path, [f.name for f, _ in matches])
        function, params = matches[0]
        assert function.auth_level == "function", (path, function.name)
        for name in re.findall(r"\{(\w+)\}", path):
            assert params.get(name) == sample(name), (path, params)
        if function.name == "call_action":
            # The action comes from the path: it must be one the handler knows.
            assert params["action"] == path.rsplit("/", 1)[-1]
            assert params["action"] in control.ACTIONS
            assert op["operationId"] == "call_" + params["action"].replace("-", "_")


def test_every_function_key_function_is_documented(doc, served):
    documented = {(method.upper(), sample_path(path)) for path, method, _ in operations(doc)}
    keyed = [f for f in served if f.auth_level != "anonymous"]
    assert keyed
    for function in keyed:
        covered = [
            (method, path) for method, path in documented if method in function.methods and function.pattern.match(path)
        ]
        assert covered, f"{function.name} ({function.route}) is not in the OpenAPI document"
        assert {method for method, _ in covered} == function.methods, function.name


def test_every_action_is_documented(doc):
    documented = {path.rsplit("/", 1)[-1] for path in doc["paths"] if path.startswith("/api/calls/{")}
    assert set(control.ACTIONS) <= documented


def test_readme_feature_table_names_tests_that_exist():
    import ast

    text = (ROOT / "README.md").read_text()
    section = text.split("## Feature coverage", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) == 27  # the rows of the service's feature list
    for file, name in {m for row in rows for m in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)}:
        tree = ast.parse((ROOT / file).read_text())
        assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{file}::{name}"
