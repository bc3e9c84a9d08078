"""What the azure-functions library indexes from function_app.py (the Functions host indexes the same)
against what the deployment expects; what the local host (devhost) serves of it; the shape of
function_app.py; the rule that only blueprints import the Functions runtime; and route templates."""

from __future__ import annotations

import ast
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import azure.functions as func
import pytest

from devhost.functions import ALL_METHODS
from devhost.routes import route_pattern, route_precedence
from tests.unit.app_index import served as served_by_devhost

ROOT = Path(__file__).resolve().parents[2]
ROUTE_PREFIX = "api"

# name: (trigger type, route, methods, auth level); routes and methods only for HTTP triggers.
# Infrastructure (Event Grid subscriptions to ?functionName=..., health probes, ACS callback URLs)
# refers to these names and routes: change them here and there together.
EXPECTED: dict[str, tuple[str, str | None, frozenset[str] | None, str | None]] = {
    "incoming_call": ("eventGridTrigger", None, None, None),
    "recording_file_status": ("eventGridTrigger", None, None, None),
    "callbacks": ("httpTrigger", "callbacks/{call_ref}", frozenset({"POST"}), "anonymous"),
    "health": ("httpTrigger", "health", frozenset({"GET"}), "anonymous"),
    "health_details": ("httpTrigger", "health/details", frozenset({"GET"}), "function"),
    "place_call": ("httpTrigger", "calls", frozenset({"POST"}), "function"),
    "connect_call": ("httpTrigger", "connections", frozenset({"POST"}), "function"),
    "get_call": ("httpTrigger", "calls/{call_connection_id}", frozenset({"GET"}), "function"),
    "participants": (
        "httpTrigger",
        "calls/{call_connection_id}/participants/{participant?}",
        frozenset({"GET"}),
        "function",
    ),
    "call_action": ("httpTrigger", "calls/{call_connection_id}/{action}", frozenset({"POST"}), "function"),
    "openapi": ("httpTrigger", "openapi.json", frozenset({"GET"}), "anonymous"),
    "call_records": ("eventGridTrigger", None, None, None),
    "list_records": ("httpTrigger", "records", frozenset({"GET"}), "function"),
    "get_record": ("httpTrigger", "records/{server_call_id}", frozenset({"GET"}), "function"),
    "start_campaign": ("httpTrigger", "campaigns", frozenset({"POST"}), "function"),
    "get_campaign": ("httpTrigger", "campaigns/{campaign_id}", frozenset({"GET"}), "function"),
    "create_masking_session": ("httpTrigger", "masking", frozenset({"POST"}), "function"),
}
# A request path each HTTP function must serve, and the route parameters it gets.
SAMPLE_PATHS = {
    "callbacks": ("POST", "/api/callbacks/call-ref-123", {"call_ref": "call-ref-123"}),
    "health": ("GET", "/api/health", {}),
    "health_details": ("GET", "/api/health/details", {}),
    "place_call": ("POST", "/api/calls", {}),
    "connect_call": ("POST", "/api/connections", {}),
    "get_call": ("GET", "/api/calls/abc-1", {"call_connection_id": "abc-1"}),
    "participants": (
        "GET",
        "/api/calls/abc-1/participants/4:+1425",
        {"call_connection_id": "abc-1", "participant": "4:+1425"},
    ),
    "call_action": ("POST", "/api/calls/abc-1/play", {"call_connection_id": "abc-1", "action": "play"}),
    "openapi": ("GET", "/api/openapi.json", {}),
    "list_records": ("GET", "/api/records", {}),
    "get_record": ("GET", "/api/records/c2VydmVyLWNhbGw", {"server_call_id": "c2VydmVyLWNhbGw"}),
    "start_campaign": ("POST", "/api/campaigns", {}),
    "get_campaign": ("GET", "/api/campaigns/c-1", {"campaign_id": "c-1"}),
    "create_masking_session": ("POST", "/api/masking", {}),
}


def _value(x: object) -> str:
    return str(getattr(x, "value", x))


def fresh_app() -> func.FunctionApp:
    """function_app.py's FunctionApp, executed anew. ``FunctionApp.get_functions()`` can be called only
    once per app (a second call fails its duplicate-name check), so each test indexes its own app and
    leaves ``function_app.app`` to whoever imports it."""
    return runpy.run_path(str(ROOT / "function_app.py"), run_name="function_app")["app"]


def indexed() -> dict[str, tuple[str, str | None, frozenset[str] | None, str | None]]:
    found = {}
    for function in fresh_app().get_functions():
        trigger = function.get_trigger()
        if trigger.type == "httpTrigger":
            methods = frozenset(_value(m).upper() for m in trigger.methods or ()) or frozenset(ALL_METHODS)
            found[function.get_function_name()] = (
                trigger.type,
                trigger.route or function.get_function_name(),
                methods,
                _value(trigger.auth_level).lower(),
            )
        else:
            found[function.get_function_name()] = (trigger.type, None, None, None)
    return found


def test_host_json_route_prefix_is_what_the_deployment_expects() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ROUTE_PREFIX


def test_indexed_functions_are_exactly_the_expected_ones() -> None:
    assert indexed() == EXPECTED


def test_function_json_bindings_carry_the_same_triggers() -> None:
    # What the worker reports to the host at indexing time.
    for function in fresh_app().get_functions():
        name = function.get_function_name()
        bindings = json.loads(function.get_function_json())["bindings"]
        triggers = [b for b in bindings if b["type"].endswith("Trigger")]
        assert len(triggers) == 1, name
        trigger_type, route, methods, level = EXPECTED[name]
        assert triggers[0]["type"] == trigger_type
        assert triggers[0]["direction"] == "IN"
        if trigger_type == "httpTrigger":
            assert triggers[0]["route"] == route
            assert {m.upper() for m in triggers[0]["methods"]} == methods
            assert triggers[0]["authLevel"].lower() == level
            assert {"type": "http", "direction": "OUT", "name": "$return"} in bindings


def test_devhost_serves_exactly_the_expected_functions() -> None:
    served = served_by_devhost(ROUTE_PREFIX)
    assert served.other == []
    assert set(served.eventgrid) == {n for n, e in EXPECTED.items() if e[0] == "eventGridTrigger"}
    http = {f.name: (f.route, frozenset(f.methods), f.auth_level) for f in served.http}
    assert http == {n: (e[1], e[2], e[3]) for n, e in EXPECTED.items() if e[0] == "httpTrigger"}
    for function in served.http:
        method, path, params = SAMPLE_PATHS[function.name]
        assert method in function.methods
        match = function.pattern.match(path)
        assert match, (function.name, path)
        assert {k: v for k, v in match.groupdict().items() if v} == params
        # ... and no other HTTP function claims that path for that method.
        others = [f.name for f in served.http if f is not function and method in f.methods and f.pattern.match(path)]
        assert others == []


RUNTIME_INDEX = """
import asyncio, json, sys
from pathlib import Path
from devhost.functions import entries_from_metadata
from devhost.rpc.worker import InProcessWorker

worker = InProcessWorker(Path(sys.argv[1]))
metadata = asyncio.run(worker.start())
print(json.dumps([[e.name, list(e.bindings)] for e in entries_from_metadata(metadata)]))
"""


def test_azure_functions_runtime_indexes_function_app_as_the_sdk_describes_it() -> None:
    # The index devhost serves comes from Microsoft's runtime (worker init + functions metadata): the same
    # functions and bindings as the SDK's raw bindings above, on the app as it starts under a host.
    from tests.unit.app_index import entries, fresh_app
    from tests.unit.test_lazy_imports import host_settings

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DEVHOST_")}, **host_settings()}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", RUNTIME_INDEX, str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    from_runtime = {name: bindings for name, bindings in json.loads(out.stdout.strip().splitlines()[-1])}
    from_sdk = {e.name: list(e.bindings) for e in entries(fresh_app())}
    assert from_runtime == from_sdk
    assert set(from_runtime) == set(EXPECTED)


# -- function_app.py holds the FunctionApp and its blueprints, nothing else -------------------------


def test_function_app_py_only_registers_blueprints() -> None:
    tree = ast.parse((ROOT / "function_app.py").read_text())
    body = list(tree.body)
    assert ast.get_docstring(tree), "function_app.py starts with a docstring"
    body = body[1:]
    apps = []
    registered = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Assign):
            assert len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), ast.unparse(node)
            call = node.value
            assert isinstance(call, ast.Call) and ast.unparse(call.func) == "func.FunctionApp", ast.unparse(node)
            apps.append(node.targets[0].id)
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            assert isinstance(call.func, ast.Attribute) and call.func.attr == "register_blueprint", ast.unparse(node)
            assert isinstance(call.func.value, ast.Name) and call.func.value.id in apps, ast.unparse(node)
            assert len(call.args) == 1 and not call.keywords, ast.unparse(node)
            registered.append(ast.unparse(call.args[0]))
            continue
        pytest.fail(f"function_app.py line {node.lineno}: only imports, the FunctionApp and register_blueprint calls")
    assert apps == ["app"]
    assert len(registered) == len(set(registered)) >= 1
    # Every blueprint it registers comes from blueprints/.
    imported = {
        alias.asname or alias.name: node.module
        for node in body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert all((imported.get(name) or "").startswith("blueprints.") for name in registered), imported


# -- only blueprints import the Functions runtime --------------------------------------------------------


def imports_azure_functions(path: Path) -> list[int]:
    """Lines of ``path`` that import azure.functions (in any spelling)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            if any(a.name == "azure.functions" or a.name.startswith("azure.functions.") for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "azure.functions" or node.module.startswith("azure.functions."):
                lines.append(node.lineno)
            elif node.module == "azure" and any(a.name == "functions" for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("__import__", "importlib.import_module"):
            if (
                node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith("azure.functions")
            ):
                lines.append(node.lineno)
    return lines


def test_imports_azure_functions_sees_every_spelling(tmp_path: Path) -> None:
    spellings = [
        "import azure.functions as func",
        "import azure.functions",
        "from azure.functions import HttpRequest",
        "from azure import functions",
        "from azure.functions.decorators import FunctionApp",
        "importlib.import_module('azure.functions')",
    ]
    source = tmp_path / "x.py"
    source.write_text("\n".join(spellings + ["import azure.core", "from azure.identity import X"]))
    assert imports_azure_functions(source) == list(range(1, len(spellings) + 1))


@pytest.mark.parametrize("package", ["core", "handlers"])
def test_core_and_handlers_never_import_the_functions_runtime(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): lines for f in files if (lines := imports_azure_functions(f))}
    assert offenders == {}, "handlers and core never import azure.functions; blueprints do"


def test_only_blueprints_import_the_functions_runtime_in_the_app() -> None:
    app_files = [ROOT / "function_app.py"]
    for package in ("blueprints", "core", "handlers"):
        app_files += sorted((ROOT / package).rglob("*.py"))
    importing = {str(f.relative_to(ROOT)) for f in app_files if imports_azure_functions(f)}
    allowed = {"function_app.py"} | {str(f.relative_to(ROOT)) for f in (ROOT / "blueprints").glob("*.py")}
    assert importing <= allowed
    assert "function_app.py" in importing


def test_core_and_handlers_do_not_pull_in_the_functions_runtime_indirectly() -> None:
    # In a fresh interpreter: import every module of core/ and handlers/, then look at sys.modules.
    script = (
        "import importlib, pkgutil, sys\n"
        "for pkg in ('core', 'handlers'):\n"
        "    for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m == 'azure.functions' or m.startswith('azure.functions.')"
        " or m == 'blueprints' or m.startswith('blueprints.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- route templates ---------------------------------------------------------------------------------------


def params(pattern, path: str) -> dict[str, str] | None:
    m = pattern.match(path)
    return None if m is None else {k: v for k, v in m.groupdict().items() if v}


@pytest.mark.parametrize(("prefix", "base"), [("api", "/api"), ("", ""), ("/api/", "/api"), ("a/b", "/a/b")])
def test_route_pattern_prefix(prefix: str, base: str) -> None:
    pattern = route_pattern(prefix, "health")
    assert params(pattern, f"{base}/health") == {}
    assert params(pattern, f"{base}/health/") == {}
    assert params(pattern, "/health-check") is None
    assert params(pattern, f"{base}/health/x") is None
    if base:
        assert params(pattern, "/health") is None
        assert params(pattern, "/other/health") is None


def test_route_pattern_parameter() -> None:
    pattern = route_pattern("api", "callbacks/{call_ref}")
    assert params(pattern, "/api/callbacks/abc-123") == {"call_ref": "abc-123"}
    assert params(pattern, "/api/callbacks/") is None
    assert params(pattern, "/api/callbacks") is None
    assert params(pattern, "/api/callbacks/a/b") is None
    assert params(pattern, "/API/Callbacks/AbC") == {"call_ref": "AbC"}  # literals case-insensitive, values kept


def test_route_pattern_int_constraint() -> None:
    pattern = route_pattern("api", "items/{id:int}")
    assert params(pattern, "/api/items/42") == {"id": "42"}
    assert params(pattern, "/api/items/-1") == {"id": "-1"}
    assert params(pattern, "/api/items/4x") is None
    assert params(pattern, "/api/items/x") is None
    # Constraints the host knows but this host does not enforce still match one segment.
    assert params(route_pattern("api", "items/{id:min(1)}"), "/api/items/abc") == {"id": "abc"}


def test_route_pattern_optional_parameter() -> None:
    pattern = route_pattern("api", "items/{id:int}/{name?}")
    assert params(pattern, "/api/items/1/widget") == {"id": "1", "name": "widget"}
    assert params(pattern, "/api/items/1") == {"id": "1"}
    assert params(pattern, "/api/items/1/") == {"id": "1"}
    assert params(pattern, "/api/items/1/a/b") is None
    assert params(route_pattern("", "{opt?}"), "/") == {}
    assert params(route_pattern("", "{opt?}"), "/x") == {"opt": "x"}


def test_route_pattern_catch_all() -> None:
    pattern = route_pattern("api", "files/{*rest}")
    assert params(pattern, "/api/files/a/b/c.txt") == {"rest": "a/b/c.txt"}
    assert params(pattern, "/api/files/x") == {"rest": "x"}
    assert params(pattern, "/api/files") == {}
    assert params(pattern, "/api/filesx") is None
    assert params(route_pattern("", "{*rest}"), "/anything/at/all") == {"rest": "anything/at/all"}


def test_route_pattern_literal_text_is_not_a_regex() -> None:
    pattern = route_pattern("api", "v1.0/files/{name}.{ext}")
    # Delimiters are matched from the right, as ASP.NET Core routing does.
    assert params(pattern, "/api/v1.0/files/report.final.pdf") == {"name": "report.final", "ext": "pdf"}
    assert params(pattern, "/api/v1x0/files/a.b") is None


def test_route_precedence_puts_literals_before_parameters() -> None:
    routes = ["items/{*rest}", "items/{id}", "items/{id:int}", "items/special"]
    assert sorted(routes, key=route_precedence) == ["items/special", "items/{id:int}", "items/{id}", "items/{*rest}"]
