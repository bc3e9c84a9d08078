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
        assert op["responses"] and all(re.fullmatch(r"[1-5](\d\d|XX)", code) for code in op["responses"]), where
        assert all(r.get("description") for r in op["responses"].values()), where
        assert any(code.startswith("2") for code in op["responses"]), where
        # Every answer is described: a JSON body with a schema, or (401, from the host) no body at all.
        for code, response in op["responses"].items():
            if code == "401":
                assert "content" not in response, where
            else:
                assert list(response["content"]) == ["application/json"], (where, code)
                assert response["content"]["application/json"]["schema"]["$ref"], (where, code)
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


# -- the answers: documented from the models the handlers build them with --------------------------------


def answer_schema(doc: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({**doc["components"]["schemas"][name], "components": doc["components"]})


def response_models(doc: dict[str, Any]) -> set[str]:
    """The component schemas the responses refer to, and those they refer to in turn."""
    found: set[str] = set()
    todo = [r for _, _, op in operations(doc) for r in refs(op["responses"])]
    while todo:
        name = todo.pop().rsplit("/", 1)[-1]
        if name not in found:
            found.add(name)
            todo += refs(doc["components"]["schemas"][name])
    return found


def test_every_success_is_the_model_its_handler_builds(doc):
    by_id = {op.name: op for op in control.OPERATIONS}
    for path, method, op in operations(doc):
        model = by_id[op["operationId"]].response
        [success] = [code for code in op["responses"] if code.startswith("2")]
        schema = op["responses"][success]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model.__name__}"}, (method, path)
    actions = {f"call_{name.replace('-', '_')}": action.response.__name__ for name, action in control.ACTIONS.items()}
    assert actions["call_add_participant"] == "ParticipantInvited"
    assert actions["call_start_recording"] == "RecordingStarted"
    assert by_id["place_call"].response.__name__ == by_id["connect_call"].response.__name__ == "CallJoined"


def test_answers_have_a_fixed_shape(doc):
    """Every field is written (required), and no other (additionalProperties false), but where the content is the
    caller's or a flow's own (variables, outcomes) or stored by an older version (a flow's outcome in a record)."""
    open_models = {"FlowOutcome"}
    for name in response_models(doc):
        schema = doc["components"]["schemas"][name]
        assert schema["type"] == "object", name
        assert sorted(schema.get("required", [])) == sorted(schema["properties"]), name
        assert schema["additionalProperties"] is (name in open_models), name


def test_the_refusals_each_operation_writes_are_documented(doc):
    by_id = {op["operationId"]: op["responses"] for _, _, op in operations(doc)}
    for op_id, responses in by_id.items():
        assert "401" in responses and "content" not in responses["401"], op_id
        for code, response in responses.items():
            if code[0] in "45" and code != "401" and not (op_id == "health_details" and code == "503"):
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorAnswer"
                }, (op_id, code)
    for op in control.OPERATIONS:
        codes = set(by_id[op.name])
        if op.request is not None:
            assert {"400", "411", "413"} <= codes, op.name
        if op.acs:  # the service's refusal passes through; its failure is a 502
            assert {"4XX", "502"} <= codes, op.name
        if op.name in control.CAPPED:
            assert {"403", "429"} <= codes, op.name
            assert by_id[op.name]["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    for action in ("pause", "resume", "stop"):
        assert "409" in by_id[f"call_{action}_recording"]
    assert {"403", "409"} <= set(by_id["create_masking_session"])
    assert {"403", "409", "429"} <= set(by_id["start_campaign"])
    assert set(by_id["get_campaign"]) == set(by_id["get_record"]) == {"200", "401", "404"}
    assert set(by_id["list_records"]) == {"200", "400", "401"}
    health = by_id["health_details"]
    assert set(health) == {"200", "401", "503"} and health["503"]["content"] == health["200"]["content"]


def test_refusals_are_error_answers(doc):
    schema = answer_schema(doc, "ErrorAnswer")
    refused = control.RequestError("refused: targets.0.to", [{"field": "targets.0.to", "message": "premium"}], 403)
    schema.validate(refused.body())
    schema.validate(control.RequestError("no campaign x", status=404).body())
    with pytest.raises(control.RequestError) as invalid:
        control.parse(control.PlaceCall, b'{"targets": [], "extra": 1}')
    schema.validate(invalid.value.body())
    assert {f["field"] for f in invalid.value.body()["fields"]} == {"targets", "extra"}
    with pytest.raises(ValueError):  # the writer is strict: a field without its message is a bug, not an answer
        control.RequestError("x", [{"field": "a"}]).body()


def test_answers_built_by_the_handlers_match_their_schemas(doc):
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from core.outbound.campaigns import Campaign, CampaignCall
    from core.outbound.masking import new_session
    from core.outbound.responses import MaskingSessionCreated
    from handlers import control as ops
    from handlers.health import ProbeCache, health_report

    campaign = Campaign(
        id="c-1", flow="outage_notice", vars={"area": "north"}, concurrency=2, created_at="2026-03-12T09:00:00Z",
        calls=[CampaignCall(number="+14255550100", status="answered", results={"choice": "1"}),
               CampaignCall(number="+14255550101")],
    )  # fmt: skip
    answer_schema(doc, "CampaignReport").validate(campaign.describe())
    session = new_session("s-1", "+14255550900", "+14255550901", "+14255550902", 60, datetime.now(UTC))
    created = MaskingSessionCreated.model_validate(session.model_dump()).dump()
    answer_schema(doc, "MaskingSessionCreated").validate(created)
    props = SimpleNamespace(call_connection_id="cc-1", server_call_id=None, call_connection_state="connecting")
    services = SimpleNamespace(store=SimpleNamespace(index=lambda *_: None))
    joined = ops._joined("ref-1", props, services)  # type: ignore[arg-type]
    answer_schema(doc, "CallJoined").validate(joined)
    assert joined == {"call_ref": "ref-1", "call_connection_id": "cc-1", "server_call_id": None, "state": "connecting"}

    def broken() -> Any:
        from core.platform.settings import SettingsError

        raise SettingsError("setting ROUTING_RULES: not valid JSON")

    answer_schema(doc, "HealthReport").validate(health_report(load=broken, cache=ProbeCache()))


def test_records_are_answered_in_todays_shape_whatever_version_stored_them(doc):
    """Tolerant reader, strict writer: a summary an older version stored (a field missing, one no longer written)
    is answered with every documented field and nothing else."""
    from types import SimpleNamespace

    from handlers import records

    old = {"server_call_id": "call-1", "status": "ended", "participants": ["4:+14255550100"], "retired_field": 1}
    store = SimpleNamespace(recent=lambda limit: [old], get=lambda sid: {**old, "participants": []} if sid else None)
    listing = records.list_records("5", SimpleNamespace(records=store))  # type: ignore[arg-type]
    answer_schema(doc, "RecordList").validate(listing)
    [summary] = listing["records"]
    assert "retired_field" not in summary and summary["participant_count"] == 0 and summary["flows"] == []

    from core.records.fold import build_record
    from tests.unit.test_records import SERVER_CALL, a_call, rows_of

    folded = build_record(SERVER_CALL, rows_of(a_call()))
    folded["flows"] = [{"flow": "greet", "call_connection_id": "cc-1", "outcome": {"menu": []}, "older": True}]
    store = SimpleNamespace(get=lambda sid: folded if sid == SERVER_CALL else None)
    record = records.get_record(SERVER_CALL, SimpleNamespace(records=store))  # type: ignore[arg-type]
    answer_schema(doc, "CallRecord").validate(record)
    assert record["started_by"] == {"id": "4:+14255550001", "role": "Attendee", "kind": None, "name": None}
    assert record["flows"] == folded["flows"]  # a flow's outcome is kept as stored, whatever version wrote it


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
