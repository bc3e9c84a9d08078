"""The health endpoints against an anonymous caller and a flood.

``GET /api/health`` is anonymous liveness and says ``{"status": "ok"}``, nothing more: no endpoint, resource id,
flow or rule name, version or error text, and it calls nothing. ``GET /api/health/details`` needs the function
key; its dependency probes are cached (30 s) and run once for any number of concurrent callers. A local server
stands in for ACS, its OpenID configuration and the state table, and counts every request the app makes.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from tools.apphost import AppProcess, start_app
from tools.azurite import ACCOUNT, ACCOUNT_KEY

RESOURCE_ID = "5f1a2b3c-0000-4000-8000-health0000001"


class Dependencies:
    """ACS, the OpenID configuration and the table endpoint in one: answers everything (slowly, so that
    concurrent probes would overlap) and counts what reached it, by dependency."""

    def __init__(self, delay: float = 0.2) -> None:
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        deps = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                kind = (
                    "callback_keys"
                    if ".well-known" in self.path
                    else "state_table"
                    if self.path.startswith(f"/{ACCOUNT}/")
                    else "acs"
                )
                with deps._lock:
                    deps.hits[kind] += 1
                time.sleep(delay)
                body = json.dumps({"value": []} if kind == "state_table" else {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json;odata=nometadata")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - the table client creates its table once, on first use
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with deps._lock:
                    deps.hits["table_created"] += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def total(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.hits)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def deps() -> Iterator[Dependencies]:
    running = Dependencies()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def app(deps: Dependencies) -> Iterator[AppProcess]:
    fake_sim = SimpleNamespace(
        endpoint=deps.endpoint,
        access_key=base64.b64encode(os.urandom(32)).decode(),
        sim=SimpleNamespace(config=SimpleNamespace(resource_id=RESOURCE_ID)),
    )
    storage = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint={deps.endpoint}/{ACCOUNT};BlobEndpoint={deps.endpoint}/{ACCOUNT};"
    )
    running = start_app(fake_sim, storage, subscribe=False)
    try:
        yield running
    finally:
        running.stop()


def get(url: str, **headers: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_anonymous_liveness_says_nothing_and_calls_nothing(app: AppProcess, deps: Dependencies) -> None:
    """Worked before f82571e: anonymous GET /api/health showed the ACS endpoint, the ACS resource id, the
    callback URL, flow and routing-rule names, Python and SDK versions, and probed ACS and its OpenID
    configuration on every request."""
    before = deps.total()
    status, body = get(app.api + "/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    text = body.decode()
    for secret in (RESOURCE_ID, deps.endpoint, "127.0.0.1", "customer_service", "blocked", "vip-forward", "python"):
        assert secret not in text
    time.sleep(0.3)
    assert deps.total() == before


def test_a_flood_of_anonymous_health_requests_makes_no_outbound_request(app: AppProcess, deps: Dependencies) -> None:
    """Worked before f82571e: each anonymous GET /api/health made two outbound HTTP probes (ACS and the
    OpenID configuration) and a table query, so 60 requests made 180 outbound requests."""
    before = deps.total()
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: get(app.api + "/health")[0], range(60)))
    assert statuses == [200] * 60
    time.sleep(0.3)
    assert deps.total() == before


@pytest.mark.parametrize(
    "how",
    ["no key", "wrong key", "empty code", "key as a bearer token"],
)
def test_details_need_the_function_key(app: AppProcess, deps: Dependencies, how: str) -> None:
    """Worked before f82571e: the details (settings, endpoints, resource id, flows, rules, versions, dependency
    results) were served to anyone at GET /api/health; there was no key to ask for."""
    url, headers = app.api + "/health/details", {}
    if how == "wrong key":
        headers["x-functions-key"] = "not-the-function-key-0123456789"
    elif how == "empty code":
        url += "?code="
    elif how == "key as a bearer token":
        headers["Authorization"] = f"Bearer {app.function_key}"
    before = deps.total()
    status, body = get(url, **headers)
    assert status == 401
    assert RESOURCE_ID.encode() not in body and b"customer_service" not in body
    assert deps.total() == before


def test_a_flood_of_details_requests_probes_each_dependency_at_most_once(app: AppProcess, deps: Dependencies) -> None:
    """Worked before f82571e (as the anonymous flood above): every request probed every dependency."""
    before = deps.snapshot()
    url = app.api + "/health/details"
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: get(url, **{"x-functions-key": app.function_key}), range(40)))
    replies += [get(f"{url}?code={app.function_key}") for _ in range(20)]
    assert {status for status, _ in replies} <= {200, 503}
    reports = [json.loads(body) for _, body in replies]
    assert all(r["settings"]["acs_resource_id"] == RESOURCE_ID for r in reports)  # the details are there
    assert all(set(r["dependencies"]) == {"acs", "callback_keys", "state_table"} for r in reports)
    assert all(r["dependencies_age_s"] < 30 for r in reports)
    made = deps.snapshot() - before
    del made["table_created"]
    # One round of probes (the stand-in counts them: the probes did run), whatever the number of requests.
    assert made == Counter({"acs": 1, "callback_keys": 1, "state_table": 1}), made


# -- the cache and liveness, in process --------------------------------------------------------------------


def test_the_probe_cache_runs_once_per_ttl_for_concurrent_callers() -> None:
    from handlers.health import ProbeCache

    now = [1000.0]
    cache = ProbeCache(ttl=30, clock=lambda: now[0])
    calls = []

    def probe() -> dict[str, dict[str, Any]]:
        calls.append(1)
        time.sleep(0.1)
        return {"acs": {"ok": True}}

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: cache.get("k", probe)[0], range(64)))
    assert len(calls) == 1 and all(r == {"acs": {"ok": True}} for r in results)
    now[0] += 29.9
    assert cache.get("k", probe)[1] == pytest.approx(29.9)
    assert len(calls) == 1
    now[0] += 0.1
    cache.get("k", probe)
    assert len(calls) == 2  # expired: probed again
    cache.get("other settings", probe)
    assert len(calls) == 3  # other endpoints: probed anew


def test_liveness_loads_no_settings_and_shows_no_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy
    from pathlib import Path

    import azure.functions as func

    import core.platform.settings
    import handlers.health

    def broken() -> Any:
        raise core.platform.settings.SettingsError("setting CALLBACK_SECRET: secret-looking text")

    monkeypatch.setattr(core.platform.settings, "get_settings", broken)
    monkeypatch.setattr(handlers.health, "get_settings", broken)
    monkeypatch.setattr(handlers.health, "dependency_checks", lambda settings: pytest.fail("liveness probed"))
    app = runpy.run_path(str(Path(__file__).resolve().parents[2] / "function_app.py"), run_name="function_app")["app"]
    liveness = next(f for f in app.get_functions() if f.get_function_name() == "health").get_user_function()
    response = liveness(func.HttpRequest("GET", "http://localhost/api/health", body=b""))
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "ok"}


def test_details_name_a_settings_error_behind_the_key() -> None:
    from core.platform.settings import SettingsError
    from handlers.health import ProbeCache, health_report

    def broken() -> Any:
        raise SettingsError("setting ROUTING_RULES: not valid JSON")

    report = health_report(load=broken, cache=ProbeCache())
    assert report["status"] == "error"
    assert report["settings_error"] == "setting ROUTING_RULES: not valid JSON"
