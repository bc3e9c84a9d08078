"""The local Functions host (``python -m devhost``) in its own process, serving a small throwaway app:
routes and route parameters, methods, auth levels and keys, failures, and Event Grid deliveries with the
subscription-validation handshake, as the Functions host serves them."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tools.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "custom/v1"
FUNCTION_KEY = "function-key-for-tests"
MASTER_KEY = "master-key-for-tests"
EVENTGRID_KEY = "eventgrid-key-for-tests"
SOURCE = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Communication/CommunicationServices/acs"

HOST_JSON = {"version": "2.0", "extensions": {"http": {"routePrefix": PREFIX}}}

FUNCTION_APP = '''
"""A throwaway app for the local host's tests."""

import json
import threading
from pathlib import Path

import azure.functions as func

EVENTS = Path(__file__).parent / "events.jsonl"
_lock = threading.Lock()
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def echo(req: func.HttpRequest, function: str) -> func.HttpResponse:
    body = req.get_body()
    reply = {
        "function": function,
        "method": req.method,
        "params": dict(req.params),
        "route_params": dict(req.route_params),
        "body": body.decode() if body else None,
        "header": req.headers.get("x-test"),
        "header_names": sorted(req.headers.keys()),
    }
    return func.HttpResponse(json.dumps(reply), mimetype="application/json", headers={"X-Served-By": function})


@app.route(route="hello", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "hello")


@app.route(route="secret", methods=["GET", "POST"])  # the app's default level: function
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "secret")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "admin_only")


@app.route(route="items/{id:int}/{name?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "item")


@app.route(route="items/special", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def special_item(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "special_item")


@app.route(route="files/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def files(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "files")


@app.route(route="things/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def get_thing(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "get_thing")


@app.route(route="things/{id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
def delete_thing(req: func.HttpRequest) -> func.HttpResponse:
    return echo(req, "delete_thing")


@app.route(route="async", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_hello(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps({"function": context.function_name, "invocation_id": context.invocation_id}),
        mimetype="application/json",
    )


@app.route(route="text", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def text(req: func.HttpRequest) -> str:
    return "plain words"


@app.route(route="cookies", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def cookies(req: func.HttpRequest) -> func.HttpResponse:
    response = func.HttpResponse("", status_code=204)
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")
    return response


@app.route(route="boom", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")


@app.route(route="nothing", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def nothing(req: func.HttpRequest) -> func.HttpResponse:
    return None


def record(function: str, event) -> None:
    if isinstance(event, func.CloudEvent):
        entry = {
            "kind": "CloudEvent",
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "time": event.time.isoformat() if event.time else None,
            "data": event.get_json(),
        }
    else:
        entry = {
            "kind": type(event).__name__,
            "id": event.id,
            "event_type": event.event_type,
            "topic": event.topic,
            "subject": event.subject,
            "event_time": event.event_time.isoformat() if event.event_time else None,
            "data_version": event.data_version,
            "data": event.get_json(),
        }
    entry["function"] = function
    with _lock, EVENTS.open("a") as f:
        f.write(json.dumps(entry) + "\\n")


@app.event_grid_trigger(arg_name="event")
def recorder(event: func.EventGridEvent) -> None:
    record("recorder", event)


@app.event_grid_trigger(arg_name="event")
def exploder(event: func.EventGridEvent) -> None:
    record("exploder", event)
    if (event.get_json() or {}).get("fail"):
        raise RuntimeError("this event fails")


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
def ticker(timer: func.TimerRequest) -> None:
    raise AssertionError("the local host does not run timers")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RunningHost:
    port: int
    app_dir: Path
    process: subprocess.Popen[str]
    output: Path

    def request(
        self, method: str, path: str, *, body: bytes | str | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def api(self, method: str, route: str, **kwargs: Any) -> Reply:
        return self.request(method, f"/{PREFIX}/{route}", **kwargs)

    def eventgrid(
        self,
        function: str | None,
        body: Any,
        *,
        kind: str | None = "Notification",
        raw: bytes | None = None,
        **extra: str,
    ) -> Reply:
        headers = {"Content-Type": "application/json", **extra}
        if kind is not None:
            headers["aeg-event-type"] = kind
        query = f"?functionName={function}&code={EVENTGRID_KEY}" if function is not None else f"?code={EVENTGRID_KEY}"
        return self.request(
            "POST",
            "/runtime/webhooks/eventgrid" + query,
            body=raw if raw is not None else json.dumps(body),
            headers=headers,
        )

    def records(self, *ids: str) -> list[dict[str, Any]]:
        path = self.app_dir / "events.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in entries if e["id"] in ids]

    def logs(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def write_app(app_dir: Path) -> Path:
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "function_app.py").write_text(textwrap.dedent(FUNCTION_APP))
    (app_dir / "host.json").write_text(json.dumps(HOST_JSON))
    return app_dir


def start_host(
    app_dir: Path,
    *extra_args: str,
    timeout: float = 30,
    eventgrid_key: str | None = EVENTGRID_KEY,
    function_key: str | None = FUNCTION_KEY,
    environment: dict[str, str] | None = None,
    devhost_path: Path = ROOT,
) -> RunningHost:
    """devhost on ``app_dir`` with the test keys (a key None: not given as an option), ``environment`` added to a
    clean one (no ``DEVHOST_*``), devhost itself from ``devhost_path``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVHOST_")}
    env["PYTHONPATH"] = str(devhost_path)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(environment or {})
    output = app_dir / f"devhost-{port}.log"
    with output.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devhost",
                "--app-dir",
                str(app_dir),
                "--port",
                str(port),
                *(("--function-key", function_key) if function_key else ()),
                "--master-key",
                MASTER_KEY,
                *(("--eventgrid-key", eventgrid_key) if eventgrid_key else ()),
                *extra_args,
            ],
            cwd=app_dir,  # not the repository: devhost must come from PYTHONPATH, the app from --app-dir
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    host = RunningHost(port, app_dir, process, output)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"devhost exited with {process.returncode}:\n{host.logs()}")
        try:
            if host.api("GET", "hello").status == 200:
                return host
        except OSError:
            pass
        if time.monotonic() > deadline:
            host.stop()
            raise RuntimeError(f"devhost did not start within {timeout}s:\n{host.logs()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("devhost-app"))


@pytest.fixture(scope="module")
def host(app_dir: Path) -> Iterator[RunningHost]:
    running = start_host(app_dir)
    try:
        yield running
    finally:
        running.stop()


def new_id() -> str:
    return str(uuid.uuid4())


def grid_event(event_id: str, data: Any = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": SOURCE,
        "subject": f"/things/{event_id}",
        "eventType": "Test.Thing.Happened",
        "eventTime": "2026-03-12T10:00:00.1234567Z",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "data": data if data is not None else {"n": 1},
        **fields,
    }


def cloud_event(event_id: str, data: Any = None) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": "Test.Thing.Happened",
        "subject": f"/things/{event_id}",
        "time": "2026-03-12T10:00:00.5Z",
        "datacontenttype": "application/json",
        "data": data if data is not None else {"n": 2},
    }


# -- start-up ----------------------------------------------------------------------------------------


def test_startup_lists_the_functions_it_serves(host: RunningHost) -> None:
    out = host.logs()
    assert f"route prefix /{PREFIX}" in out
    assert f"hello: [GET] /{PREFIX}/hello (anonymous)" in out
    assert f"secret: [GET,POST] /{PREFIX}/secret (function)" in out
    assert f"admin_only: [GET] /{PREFIX}/admin-only (admin)" in out
    assert "recorder: eventGridTrigger /runtime/webhooks/eventgrid?functionName=recorder" in out
    assert "ticker (timerTrigger): not served by the local host" in out
    # No local.settings.json in the app's folder: it starts without one, and says so.
    assert f"settings: no settings file read (no {host.app_dir / 'local.settings.json'})" in out


# -- the settings file and where the keys come from ---------------------------------------------------------------


def run_to_exit(app_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVHOST_")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "devhost", "--app-dir", str(app_dir), "--port", str(free_port()), *args]
    return subprocess.run(command, cwd=app_dir, env=env, capture_output=True, text=True, timeout=30)


def write_settings(path: Path, **values: str) -> Path:
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def test_a_settings_file_that_does_not_exist_stops_the_host_naming_it(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "app")
    write_settings(app_dir / "local.settings.json", DEVHOST_FUNCTION_KEY="k" * 20)  # there, but not the one asked for
    ran = run_to_exit(app_dir, "--settings", "local.setings.json")
    assert ran.returncode == 2, ran
    assert f"--settings local.setings.json: no such file: {app_dir / 'local.setings.json'}" in ran.stderr
    assert "Functions (local host) at" not in ran.stdout  # nothing served
    # Nor can a file be asked for and refused at once; a file that is not settings stops it too.
    assert run_to_exit(app_dir, "--settings", "local.settings.json", "--no-settings").returncode == 2
    (app_dir / "broken.json").write_text('{"Values": ')
    ran = run_to_exit(app_dir, "--settings", "broken.json")
    assert ran.returncode == 2 and f"settings file {app_dir / 'broken.json'}: not a JSON object" in ran.stderr


def test_settings_and_keys_come_from_the_file_asked_for_and_say_so(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "app")
    key = "key-from-the-settings-file-0123"
    write_settings(app_dir / "local.settings.json", DEVHOST_FUNCTION_KEY="k" * 20)
    other = write_settings(app_dir / "other.settings.json", DEVHOST_FUNCTION_KEY=key, SOME_SETTING="x")
    host = start_host(app_dir, "--settings", other.name, function_key=None)
    try:
        out = host.logs()
        assert f"settings: 2 value(s) from {other}" in out
        assert "function key: from DEVHOST_FUNCTION_KEY in other.settings.json (Values)" in out
        assert key not in out  # a key given is not printed
        assert host.api("GET", "secret", headers={"x-functions-key": key}).status == 200
        assert host.api("GET", "secret", headers={"x-functions-key": "k" * 20}).status == 401  # not the default file
    finally:
        host.stop()


def test_the_environment_wins_over_the_settings_file_and_says_so(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "app")
    in_file, in_env = "key-from-local-settings-0123", "key-from-the-environment-0123"
    write_settings(app_dir / "local.settings.json", DEVHOST_FUNCTION_KEY=in_file)
    host = start_host(app_dir, function_key=None, environment={"DEVHOST_FUNCTION_KEY": in_env})
    try:
        out = host.logs()
        assert f"settings: 1 value(s) from {app_dir / 'local.settings.json'}" in out
        assert "function key: from DEVHOST_FUNCTION_KEY in the environment" in out
        assert in_env not in out and in_file not in out
        assert host.api("GET", "secret", headers={"x-functions-key": in_env}).status == 200
        assert host.api("GET", "secret", headers={"x-functions-key": in_file}).status == 401
    finally:
        host.stop()


def test_no_settings_reads_no_file_and_a_key_made_is_printed_with_how_to_keep_one(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "app")
    in_file = "key-from-local-settings-0123"
    write_settings(app_dir / "local.settings.json", DEVHOST_FUNCTION_KEY=in_file)
    host = start_host(app_dir, "--no-settings", function_key=None)
    try:
        out = host.logs()
        assert "settings: no settings file read (--no-settings)" in out
        line = next(x for x in out.splitlines() if x.startswith("  function key: "))
        made = line.rsplit(": ", 1)[1].strip()
        assert len(made) >= 32 and made != in_file
        assert "to keep one, set DEVHOST_FUNCTION_KEY in the settings file's Values or the environment" in out
        assert host.api("GET", "secret", headers={"x-functions-key": made}).status == 200
        assert host.api("GET", "secret", headers={"x-functions-key": in_file}).status == 401
    finally:
        host.stop()


def test_an_older_devhost_is_launched_with_the_options_it_knows(tmp_path: Path) -> None:
    """``tools.apphost.launch_host`` and ``bench/cold_start.py --compare`` run another checkout's devhost: one from
    before ``--no-settings`` is given a settings file that does not exist instead, which it ignored."""
    from tools.apphost import no_settings

    assert no_settings(ROOT) == ["--no-settings"]
    introduced = subprocess.run(
        ["git", "log", "--format=%H", "-S--no-settings", "--", "devhost/__main__.py"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    archive = subprocess.run(
        ["git", "archive", "--format=tar", f"{introduced[-1]}~1", "devhost"], cwd=ROOT, capture_output=True
    ) if introduced else None  # fmt: skip
    if archive is None or archive.returncode != 0:
        pytest.skip("the history from before --no-settings is not in this clone")
    older = tmp_path / "older"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(older, filter="data")
    generated = ROOT / "devhost" / "rpc" / "_generated"  # built at `make setup`, not tracked
    subprocess.run(["cp", "-r", str(generated), str(older / "devhost" / "rpc")], check=True)
    assert "--no-settings" not in (older / "devhost" / "__main__.py").read_text()
    assert no_settings(older) == ["--settings", "no-local-settings.json"]
    host = start_host(write_app(tmp_path / "app"), *no_settings(older), devhost_path=older)
    try:
        assert host.api("GET", "hello").status == 200
    finally:
        host.stop()


# -- HTTP triggers: routes, parameters, methods --------------------------------------------------------


def test_anonymous_route_under_the_custom_prefix(host: RunningHost) -> None:
    reply = host.api("GET", "hello?x=1&y=two", headers={"x-test": "yes"})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Served-By"] == "hello"
    assert reply.json() | {"header_names": None} == {
        "header_names": None,
        "function": "hello",
        "method": "GET",
        "params": {"x": "1", "y": "two"},
        "route_params": {},
        "body": None,
        "header": "yes",
    }
    # Like the host: literals match case-insensitively, and a trailing slash is fine.
    assert host.request("GET", f"/{PREFIX.upper()}/HELLO").status == 200
    assert host.api("GET", "hello/").status == 200


def test_the_prefix_is_host_json_s_not_api(host: RunningHost) -> None:
    assert host.request("GET", "/api/hello").status == 404
    assert host.request("GET", "/hello").status == 404


def test_route_parameters_and_constraints(host: RunningHost) -> None:
    assert host.api("GET", "items/42/widget").json()["route_params"] == {"id": "42", "name": "widget"}
    assert host.api("GET", "items/-7").json()["route_params"] == {"id": "-7"}  # {name?} left out
    assert host.api("GET", "items/abc").status == 404  # {id:int}
    # The literal route wins over {id} for its own path, whatever the registration order.
    assert host.api("GET", "items/special").json()["function"] == "special_item"


def test_catch_all_parameter(host: RunningHost) -> None:
    assert host.api("GET", "files/a/b/c.txt").json()["route_params"] == {"path": "a/b/c.txt"}
    reply = host.api("GET", "files")
    assert reply.status == 200 and reply.json()["route_params"] == {}


def test_one_route_served_by_two_functions_for_different_methods(host: RunningHost) -> None:
    assert host.api("GET", "things/7").json() | {"params": None, "header_names": None} == {
        "header_names": None,
        "function": "get_thing",
        "method": "GET",
        "params": None,
        "route_params": {"id": "7"},
        "body": None,
        "header": None,
    }
    assert host.api("DELETE", "things/7").json()["function"] == "delete_thing"


def test_wrong_method_is_not_found_as_on_the_functions_host(host: RunningHost) -> None:
    # The Functions host treats the method as part of the route: a path served only for other methods
    # answers 404, not 405 (Azure/azure-functions-host#10098).
    assert host.api("POST", "hello").status == 404
    assert host.api("PUT", "things/7").status == 404
    assert host.api("DELETE", "secret", headers={"x-functions-key": FUNCTION_KEY}).status == 404


def test_unknown_route(host: RunningHost) -> None:
    assert host.api("GET", "no-such-function").status == 404
    assert host.request("GET", "/").status == 404


def test_request_body_reaches_the_function(host: RunningHost) -> None:
    reply = host.api("POST", f"secret?code={FUNCTION_KEY}", body=json.dumps({"a": 1}))
    assert reply.status == 200
    assert json.loads(reply.json()["body"]) == {"a": 1}


def test_async_function_with_context(host: RunningHost) -> None:
    first, second = host.api("GET", "async").json(), host.api("GET", "async").json()
    assert first["function"] == "async_hello"
    assert first["invocation_id"] != second["invocation_id"]


def test_string_return_and_repeated_headers(host: RunningHost) -> None:
    reply = host.api("GET", "text")
    assert (reply.status, reply.body) == (200, b"plain words")
    assert reply.headers["Content-Type"].startswith("text/plain")
    reply = host.api("GET", "cookies")
    assert reply.status == 204
    assert reply.headers.get_all("Set-Cookie") == ["a=1", "b=2"]


# -- HTTP triggers: keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["secret", "admin-only"])
def test_keyed_levels_refuse_no_key_and_a_wrong_key(host: RunningHost, route: str) -> None:
    assert host.api("GET", route).status == 401
    assert host.api("GET", f"{route}?code=wrong").status == 401
    assert host.api("GET", route, headers={"x-functions-key": "wrong"}).status == 401
    assert host.api("GET", f"{route}?code=").status == 401


def test_function_level_takes_the_function_key_or_the_master_key(host: RunningHost) -> None:
    reply = host.api("GET", f"secret?code={FUNCTION_KEY}&x=1")
    assert reply.status == 200
    assert reply.json()["params"]["x"] == "1"
    assert host.api("GET", "secret", headers={"x-functions-key": FUNCTION_KEY}).status == 200
    assert host.api("GET", f"secret?code={MASTER_KEY}").status == 200


def test_admin_level_takes_only_the_master_key(host: RunningHost) -> None:
    assert host.api("GET", f"admin-only?code={FUNCTION_KEY}").status == 401
    assert host.api("GET", "admin-only", headers={"x-functions-key": FUNCTION_KEY}).status == 401
    assert host.api("GET", f"admin-only?code={MASTER_KEY}").status == 200
    assert host.api("GET", "admin-only", headers={"x-functions-key": MASTER_KEY}).status == 200


# -- HTTP triggers: failures ---------------------------------------------------------------------------


def test_a_raising_function_answers_500_and_the_host_keeps_serving(host: RunningHost) -> None:
    assert host.api("GET", "boom").status == 500
    assert host.api("POST", "boom", body=b"x").status == 500
    assert host.api("GET", "nothing").status == 500  # neither HttpResponse nor str
    assert host.api("GET", "hello").status == 200
    assert "function boom failed" in host.logs()


# -- Event Grid ----------------------------------------------------------------------------------------


def test_subscription_validation_handshake(host: RunningHost) -> None:
    event_id = new_id()
    validation = {
        "id": event_id,
        "topic": "/subscriptions/0000",
        "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-03-12T10:00:00Z",
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://example.invalid"},
    }
    reply = host.eventgrid("recorder", [validation], kind="SubscriptionValidation")
    assert reply.status == 200
    assert reply.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert host.records(event_id) == []  # the handshake is not an invocation


def test_cloudevents_validation_handshakes(host: RunningHost) -> None:
    reply = host.request(
        "OPTIONS",
        f"/runtime/webhooks/eventgrid?functionName=recorder&code={EVENTGRID_KEY}",
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
    )
    assert reply.status == 200
    assert reply.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    # A CloudEvents-schema validation event carries its data JSON-encoded.
    validation = cloud_event(new_id(), data=json.dumps({"validationCode": "abc-123"}))
    reply = host.eventgrid("recorder", validation, kind="SubscriptionValidation")
    assert reply.json() == {"validationResponse": "abc-123"}


def test_notification_batch_invokes_once_per_event_with_fields_mapped(host: RunningHost) -> None:
    first, second = new_id(), new_id()
    reply = host.eventgrid("recorder", [grid_event(first, {"n": 1}), grid_event(second, {"n": 2, "s": "x"})])
    assert reply.status == 202
    records = {r["id"]: r for r in host.records(first, second)}
    assert len(host.records(first, second)) == 2
    assert records[first] == {
        "kind": "EventGridEvent",
        "id": first,
        "event_type": "Test.Thing.Happened",
        "topic": SOURCE,
        "subject": f"/things/{first}",
        "event_time": "2026-03-12T10:00:00.123456+00:00",
        "data_version": "1.0",
        "data": {"n": 1},
        "function": "recorder",
    }
    assert records[second]["data"] == {"n": 2, "s": "x"}


def test_cloudevents_schema_gives_the_function_a_cloud_event(host: RunningHost) -> None:
    # As the Python worker decodes it: an event with specversion is a func.CloudEvent.
    single, batched = new_id(), new_id()
    reply = host.eventgrid(
        "recorder", cloud_event(single), **{"Content-Type": "application/cloudevents+json; charset=utf-8"}
    )
    assert reply.status == 202
    assert host.records(single) == [
        {
            "kind": "CloudEvent",
            "id": single,
            "type": "Test.Thing.Happened",
            "source": SOURCE,
            "subject": f"/things/{single}",
            "time": "2026-03-12T10:00:00.500000+00:00",
            "data": {"n": 2},
            "function": "recorder",
        }
    ]
    assert host.eventgrid("recorder", [cloud_event(batched)]).status == 202
    assert [r["kind"] for r in host.records(batched)] == ["CloudEvent"]


def test_aeg_event_type_is_case_insensitive_and_unsubscribe_is_accepted(host: RunningHost) -> None:
    event_id = new_id()
    assert host.eventgrid("recorder", [grid_event(event_id)], kind="notification").status == 202
    assert len(host.records(event_id)) == 1
    assert host.eventgrid("recorder", [grid_event(new_id())], kind="Unsubscribe").status == 202


def test_missing_aeg_event_type_is_a_bad_request(host: RunningHost) -> None:
    event_id = new_id()
    assert host.eventgrid("recorder", [grid_event(event_id)], kind=None).status == 400
    assert host.eventgrid("recorder", [grid_event(event_id)], kind="Something").status == 400
    assert host.records(event_id) == []


def test_unknown_or_missing_function_name_is_not_found(host: RunningHost) -> None:
    event_id = new_id()
    reply = host.eventgrid("nobody", [grid_event(event_id)])
    assert reply.status == 404
    assert host.eventgrid(None, [grid_event(event_id)]).status == 404
    # HTTP functions are not Event Grid functions.
    assert host.eventgrid("hello", [grid_event(event_id)]).status == 404
    assert host.records(event_id) == []


def test_a_raising_function_fails_the_delivery_with_500_after_every_event_ran(host: RunningHost) -> None:
    ok, failing = new_id(), new_id()
    reply = host.eventgrid("exploder", [grid_event(failing, {"fail": True}), grid_event(ok, {"fail": False})])
    assert reply.status == 500  # Event Grid retries the delivery
    assert sorted(r["id"] for r in host.records(ok, failing)) == sorted([ok, failing])
    assert host.eventgrid("exploder", [grid_event(new_id(), {"fail": False})]).status == 202


def test_bodies_that_are_not_events_are_bad_requests(host: RunningHost) -> None:
    assert host.eventgrid("recorder", None, raw=b"this is not json").status == 400
    assert host.eventgrid("recorder", None, raw=b"[1, 2]").status == 400
    assert host.eventgrid("recorder", None, raw=b'"text"').status == 400
    assert host.eventgrid("recorder", None, raw=b"{not json", kind="SubscriptionValidation").status == 400
    assert host.eventgrid("recorder", [{"id": "x"}], kind="SubscriptionValidation").status == 400


def test_eventgrid_endpoint_goes_by_the_event_type_header_not_the_method(host: RunningHost) -> None:
    # The Event Grid extension never looks at the method (but OPTIONS, the CloudEvents handshake): without
    # aeg-event-type a request is a 400, with Notification its body is delivered, whatever the method
    # (Azure/azure-sdk-for-net, Microsoft.Azure.WebJobs.Extensions.EventGrid, HttpRequestProcessor.ProcessAsync).
    path = f"/runtime/webhooks/eventgrid?functionName=recorder&code={EVENTGRID_KEY}"
    assert host.request("GET", path).status == 400
    assert host.request("GET", path.replace(EVENTGRID_KEY, "wrong-key")).status == 401  # the key comes first
    event_id = new_id()
    reply = host.request(
        "PUT", path, body=json.dumps([grid_event(event_id)]), headers={"aeg-event-type": "Notification"}
    )
    assert reply.status == 202
    assert [r["id"] for r in host.records(event_id)] == [event_id]


def test_eventgrid_system_key_is_required(host: RunningHost) -> None:
    event_id = new_id()
    body = json.dumps([grid_event(event_id)])
    for query in ("", "&code=wrong", "&code="):
        reply = host.request(
            "POST",
            f"/runtime/webhooks/eventgrid?functionName=recorder{query}",
            body=body,
            headers={"aeg-event-type": "Notification"},
        )
        assert reply.status == 401, query
    assert host.records(event_id) == []
    # A function key is not the system key; the master key opens everything, as in Azure.
    reply = host.request(
        "POST",
        f"/runtime/webhooks/eventgrid?functionName=recorder&code={FUNCTION_KEY}",
        body=json.dumps([grid_event(new_id())]),
        headers={"aeg-event-type": "Notification"},
    )
    assert reply.status == 401
    other = new_id()
    reply = host.request(
        "POST",
        "/runtime/webhooks/eventgrid?functionName=recorder",
        body=json.dumps([grid_event(other)]),
        headers={"aeg-event-type": "Notification", "x-functions-key": MASTER_KEY},
    )
    assert reply.status == 202
    assert len(host.records(other)) == 1
    assert "Event Grid system key (eventgrid_extension): from --eventgrid-key" in host.logs()
    assert EVENTGRID_KEY not in host.logs()  # a key given is not printed


def test_eventgrid_system_key_is_generated_and_printed_when_not_given(app_dir: Path) -> None:
    keyless = start_host(app_dir, eventgrid_key=None)
    try:
        line = next(x for x in keyless.logs().splitlines() if "Event Grid system key (eventgrid_extension):" in x)
        key = line.rsplit(": ", 1)[1].strip()
        assert len(key) >= 32
        event_id = new_id()
        query = "/runtime/webhooks/eventgrid?functionName=recorder"
        headers = {"aeg-event-type": "Notification"}
        body = json.dumps([grid_event(event_id)])
        assert keyless.request("POST", query, body=body, headers=headers).status == 401
        assert keyless.records(event_id) == []
        assert keyless.request("POST", f"{query}&code={key}", body=body, headers=headers).status == 202
        assert len(keyless.records(event_id)) == 1
    finally:
        keyless.stop()


# -- What the host passes that a hand-written host gets wrong (each with the host's source) ------------------------


def test_an_encoded_slash_stays_encoded_in_the_route_value(host: RunningHost) -> None:
    # Kestrel decodes the request path except %2F, so an encoded "/" stays inside its segment and the route value
    # keeps it as "%2F", as sent (dotnet/aspnetcore: the path is decoded except for %2F); other escapes are
    # decoded. A server call id (base64, may hold "/") sent as %2F reaches records/{server_call_id} this way.
    reply = host.api("GET", "things/ab%2Fcd%2fef%20gh")
    assert reply.status == 200, reply.body
    assert reply.json()["route_params"] == {"id": "ab%2Fcd%2fef gh"}
    # An unencoded slash is a segment boundary: no {id} route matches two segments.
    assert host.api("GET", "things/ab/cd").status == 404


def test_the_query_keeps_code_drops_empty_values_and_joins_repeated_keys(host: RunningHost) -> None:
    # GrpcMessageConversionExtensions.ToRpcHttp (Azure/azure-functions-host): every key of request.Query, the
    # host key "code" included; StringValues.ToString() joins a repeated key's values with ","; an empty value is
    # left out (string.IsNullOrEmpty).
    reply = host.api("GET", f"secret?code={FUNCTION_KEY}&a=1&a=2&empty=&flag&sp=x+y%21")
    assert reply.status == 200
    assert reply.json()["params"] == {"code": FUNCTION_KEY, "a": "1,2", "sp": "x y!"}


def test_header_names_are_lowercased_and_repeated_headers_joined(host: RunningHost) -> None:
    # ToRpcHttp: pair.Key.ToLowerInvariant(), and the StringValues of a repeated header joined with ",".
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        conn.putrequest("GET", f"/{PREFIX}/hello")
        conn.putheader("X-Test", "one")
        conn.putheader("x-test", "two")
        conn.putheader("X-Mixed-Case", "v")
        conn.endheaders()
        reply = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert reply["header"] == "one,two"
    assert "x-mixed-case" in reply["header_names"] and "X-Mixed-Case" not in reply["header_names"]


def test_a_chunked_request_reaches_the_function_without_its_body(host: RunningHost) -> None:
    # The host reads the body only when request.ContentLength > 0 (ToRpcHttp), so a chunked request (no
    # Content-Length) arrives with an empty body: "Chunked requests are not currently supported for the OOP
    # scenarios" (Azure/azure-functions-host#7930). The same bytes with a Content-Length arrive whole.
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/{PREFIX}/secret?code={FUNCTION_KEY}",
            body=iter([b'{"a": ', b"1}"]),
            headers={"Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        chunked = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert chunked["body"] is None
    assert chunked["method"] == "POST"
    whole = host.api("POST", f"secret?code={FUNCTION_KEY}", body=b'{"a": 1}').json()
    assert whole["body"] == '{"a": 1}'
