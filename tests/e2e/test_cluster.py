"""The app run as Flex Consumption runs it (``tools/cluster.py``): several devhost instances in scale groups behind one
front, against the simulator and Azurite; and devhost's drain on SIGTERM, on which scale-in rests.

Calls are the reliability suite's scripted callers (``bench.reliability``), checked as it checks them: completed as
scripted (the actions ACS accepted, the app's final state), no action carried out twice, no event lost, each
recording copied and verified. Behaviour is asserted, never timings: which instance served what comes from the front
(``Cluster.placed``), what each instance invoked from its own log, what a failure left from Table Storage.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.data.tables import TableClient

from bench.reliability import SCRIPTS, Report, Suite, simulator_kwargs
from core.calls.ledger import LEASE_SECONDS
from core.platform.tables import row_key
from simulator.engine import Config
from simulator.runner import SimulatorThread
from tests.support.calls import until
from tools.apphost import EVENTGRID_FUNCTIONS, free_port
from tools.cluster import Cluster, Instance, start_cluster

ROOT = Path(__file__).resolve().parents[2]
SALES = next(s for s in SCRIPTS if s.name == "sales_by_dtmf")  # answer, menu, DTMF 1, transfer to sales
SILENCE = next(s for s in SCRIPTS if s.name == "silence_to_operator")  # three menus unanswered, then the operator
FUNCTION_LINE = re.compile(r"azure\.functions Function name: (\w+), Function Type")


# -- the stack -----------------------------------------------------------------------------------------------------


@contextmanager
def running(azurite: Any, **cluster: Any) -> Iterator[tuple[Cluster, Suite]]:
    """The simulator (redelivering as the reliability suite has it: webhooks 8 times, Event Grid 8 attempts on its
    schedule scaled to 1/100) and the app as a cluster, every call recorded; the suite that plays and checks calls."""
    with SimulatorThread(config=Config(recording_seconds=1.0), **simulator_kwargs()) as sim:
        app = start_cluster(sim, azurite.connection_string, RECORDING_MODE="on_connect", **cluster)
        try:
            yield app, Suite(sim, app, azurite)
        finally:
            app.stop()


def finish(suite: Suite, results: list[Any]) -> Report:
    """Every delivery done and recording copied; the calls counted as the reliability suite counts them."""
    suite.settle(timeout=60)
    suite.count(results)
    return suite.report


def assert_all_completed(report: Report, app: Cluster) -> None:
    details = "\n".join(report.problems[:20] + report.failed_timelines[:1]) + "\n" + app.logs()[-6000:]
    assert report.completed == report.placed, details
    assert report.duplicated == 0, details
    assert report.lost == 0, details
    assert report.recordings == report.placed and report.recordings_verified == report.recordings, details


def call_ref_of(suite: Suite, server_call_id: str) -> str:
    """The call's reference, from the callback URL ACS posts its events to (``…/callbacks/{call_ref}?sig=…``)."""
    for entry in suite.timeline(server_call_id):
        if entry["kind"] == "event" and entry.get("url"):
            return urlsplit(entry["url"]).path.rsplit("/", 1)[-1]
    raise AssertionError(f"no callback was sent for {server_call_id}")


def state_row(azurite: Any, server_call_id: str) -> dict[str, Any]:
    table = TableClient.from_connection_string(azurite.connection_string, table_name="callstate")
    for entity in table.query_entities(f"serverCallId eq '{server_call_id}'"):
        return json.loads(entity["data"])
    raise AssertionError(f"no state for {server_call_id}")


def recording_claims(azurite: Any) -> dict[str, dict[str, Any]]:
    """The duplicate filter's rows of recording events (their claims), by row key."""
    table = TableClient.from_connection_string(azurite.connection_string, table_name="callevents")
    rows = table.query_entities("PartitionKey ge 'recordings-' and PartitionKey lt 'recordings.'")  # every shard
    return {e["RowKey"]: dict(e) for e in rows}


def the_call(suite: Suite) -> str:
    """The server call id of the one call placed on this simulator."""
    calls = until(lambda: suite.ctl("GET", "/__sim/calls"), 5, "a call placed")
    assert len(calls) == 1, calls
    return calls[0]["serverCallId"]


def holding(app: Cluster, group: str) -> Instance:
    """The one instance of the group the front has a request in flight on."""
    busy = until(lambda: [i for i in app.instances(group) if app.in_flight(i)], 10, f"a request in flight on {group}")
    assert len(busy) == 1, [i.name for i in busy]
    return busy[0]


def invoked(instance: Instance) -> set[str]:
    """The functions the instance's worker invoked (the runtime logs each function's first invocation)."""
    return set(FUNCTION_LINE.findall(instance.logs()))


# -- the front, against an echo upstream -----------------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[str]:
    """An upstream that answers with what it received: method, raw path and query, headers, body, framing."""
    import asyncio

    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "method": request.method,
            "path_qs": request.rel_url.raw_path_qs,
            "host": request.headers.get("Host"),
            "x_test": request.headers.getall("X-Test", []),
            "body": body.decode(),
            "chunked": request.headers.get("Transfer-Encoding", "").lower() == "chunked",
        }, headers={"X-Upstream": "echo"})

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_front_passes_requests_through_unchanged_and_fails_over_only_before_sending(echo):
    """The request an instance gets is the caller's (raw path with %2F, query, Host, repeated headers, body, chunked
    framing) and the caller gets the instance's answer; an instance that refuses the connection is skipped (nothing
    was sent) and left out afterwards; a group with nobody in it is a 503; an unknown Event Grid function a 404."""
    import http.client

    from tools.front import Front

    front = Front("round_robin", eventgrid_functions=["incoming_call"])
    base = front.start()
    try:
        front.add("gone", "http", f"http://127.0.0.1:{free_port()}")  # nothing listens there: refused
        front.add("echo", "http", echo)
        port = urlsplit(base).port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", "/api/calls/a%2Fb?x=1&x=2&code=k", skip_accept_encoding=True)
        connection.putheader("X-Test", "one")
        connection.putheader("X-Test", "two")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for chunk in (b"4\r\nabcd\r\n", b"2\r\nef\r\n", b"0\r\n\r\n"):
            connection.send(chunk)
        response = connection.getresponse()
        seen = json.loads(response.read())
        assert response.status == 200 and response.getheader("X-Upstream") == "echo"
        assert seen == {"method": "POST", "path_qs": "/api/calls/a%2Fb?x=1&x=2&code=k", "host": f"127.0.0.1:{port}",
                        "x_test": ["one", "two"], "body": "abcdef", "chunked": True}
        first = front.placed()[-1]
        assert (first.instance, first.refused_by, first.outcome) == ("echo", ("gone",), "answered")
        assert next(m for m in front.members() if m.name == "gone").down

        with urllib.request.urlopen(base + "/api/health", timeout=10) as again:
            assert json.loads(again.read())["path_qs"] == "/api/health"
        assert front.placed()[-1].refused_by == ()  # the refusing instance is no longer tried
        assert front.counts() == {"gone": 0, "echo": 2}

        for url, status, outcome in (
            (base + "/runtime/webhooks/eventgrid?functionName=incoming_call", 503, "no_instance"),
            (base + "/runtime/webhooks/eventgrid?functionName=nope", 404, "not_found"),
        ):
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(urllib.request.Request(url, data=b"[]", method="POST"), timeout=10)
            assert failed.value.code == status and front.placed()[-1].outcome == outcome
    finally:
        front.stop()


# -- spread, scale-out, isolation ---------------------------------------------------------------------------------


def test_spread_puts_one_calls_callbacks_on_several_instances_and_the_call_completes(azurite):
    """IncomingCall answered on the incoming_call group, every callback of the call on another HTTP instance than the
    one before it, the recording copied on its own group: the call completes as scripted."""
    with running(azurite, http_instances=3, mode="spread") as (app, suite):
        result = suite.play(0, SALES)
        report = finish(suite, [result])
        assert_all_completed(report, app)

        callbacks = app.placed(call_ref=call_ref_of(suite, result.server_call_id))
        served = [p.instance for p in callbacks]
        assert all(p.outcome == "answered" and 200 <= p.status < 300 for p in callbacks), callbacks
        assert len(set(served)) >= 2, served
        assert all(a != b for a, b in zip(served, served[1:], strict=False)), served  # never twice in a row
        assert {app.instance(name).group for name in served} == {"http"}
        for function in EVENTGRID_FUNCTIONS:  # the handshake and every delivery, on the function's own group
            deliveries = app.placed(function=function)
            assert deliveries and {app.instance(p.instance).group for p in deliveries} == {function}


def test_scale_out_mid_call_the_new_instance_serves_the_calls_callbacks(azurite):
    """One HTTP instance; mid-menu a second is added (callbacks held back by ACS meanwhile), and the front gives it
    the call's next callbacks: the call completes as scripted."""
    with running(azurite, http_instances=1, mode="round_robin") as (app, suite), ThreadPoolExecutor(1) as pool:
        first = app.instances("http")[0]
        call = pool.submit(suite.play, 0, SILENCE)
        assert suite.wait_mid_menu(), "the call never reached its menu"
        suite.ctl("POST", "/__sim/deliveries", {"paused": True})
        try:
            added = app.add_instance("http")
        finally:
            suite.ctl("POST", "/__sim/deliveries", {"paused": False})
        result = call.result(timeout=60)
        report = finish(suite, [result])
        assert_all_completed(report, app)

        callbacks = app.placed(call_ref=call_ref_of(suite, result.server_call_id))
        served = [p.instance for p in callbacks]
        assert served[0] == first.name  # before the scale-out there was only the first
        assert added.name in served, served  # after it, the new instance took its turns
        assert all(p.outcome == "answered" and 200 <= p.status < 300 for p in callbacks), callbacks


def test_an_event_grid_delivery_reaches_only_its_own_functions_group(azurite):
    """Two instances in every group; calls run through. The front placed each function's deliveries on that
    function's group only, and each instance's own log shows it invoked nothing of another group; a delivery for a
    function no group serves reaches no instance."""
    with running(azurite, http_instances=2, eventgrid_instances=2, mode="round_robin") as (app, suite):
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda i: suite.play(i, SCRIPTS[i]), range(2)))
        report = finish(suite, results)
        assert_all_completed(report, app)

        for p in app.placed():
            group = app.instance(p.instance).group
            assert group == (p.function or "http"), p
        for instance in app.all_instances():
            functions = invoked(instance)
            assert functions, f"{instance.name} invoked nothing: both instances of a group take turns"
            if instance.group == "http":
                assert not functions & set(EVENTGRID_FUNCTIONS), (instance.name, functions)
            else:
                assert functions == {instance.group}, (instance.name, functions)

        before = app.counts()
        request = urllib.request.Request(
            app.eventgrid_url("no_such_function"), data=b"[]", method="POST",
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 404
        assert app.counts() == before
        assert app.placed()[-1].outcome == "not_found" and app.placed()[-1].instance is None


# -- scale-in: drains and kills mid-call --------------------------------------------------------------------------


def test_graceful_drain_mid_call_and_mid_copy_loses_nothing_and_leaves_no_lease(azurite):
    """The HTTP instance holding a callback (its transfer to ACS slowed) is drained: the front sends it nothing more,
    devhost finishes the callback, answers it and exits 0. Later the instance copying the recording (its download
    slowed) is drained the same way. ACS and Event Grid never see a failure, nothing is lost or done twice, and the
    drained instances left no lease: the call's row holds none, the recording's claim is marked done."""
    with (
        running(azurite, http_instances=2, eventgrid_instances={"incoming_call": 1, "recording_file_status": 2,
                                                                 "call_records": 1}, mode="spread",
                drain_seconds=20) as (app, suite),
        ThreadPoolExecutor(1) as pool,
    ):
        suite.ctl("POST", "/__sim/faults", [{"kind": "request", "match": "TransferToParticipant", "latency": 1.0},
                                            {"kind": "download", "latency": 1.0}])
        call = pool.submit(suite.play, 0, SALES)
        assert suite.wait_fault_fired("request", "TransferToParticipant", 0), "the transfer was never sent"
        callback_holder = holding(app, "http")
        assert app.drain(callback_holder) == 0, callback_holder.logs()[-3000:]
        result = call.result(timeout=60)

        assert suite.wait_fault_fired("download", None, 0), "the recording was never downloaded"
        copy_holder = holding(app, "recording_file_status")
        assert app.drain(copy_holder) == 0, copy_holder.logs()[-3000:]
        report = finish(suite, [result])
        assert_all_completed(report, app)

        for drained in (callback_holder, copy_holder):
            assert "draining, 1 request(s) in hand" in drained.logs()  # it held the work when told to go
            assert "devhost: drained: every request in hand finished" in drained.logs()
            assert drained not in app.instances()
        # Invisible to the senders: every request through the front was answered by an instance, at the first try,
        # and no callback or delivery of the call was retried.
        assert all(p.outcome == "answered" and p.status < 500 for p in app.placed()), app.placed()
        retried = [e for e in suite.timeline(result.server_call_id) if e.get("retry") or e.get("failed")]
        assert not retried, retried
        # What each held when drained (the last request placed on it) it answered itself: finished, not redone.
        for drained in (callback_holder, copy_holder):
            last = [p for p in app.placed() if p.instance == drained.name][-1]
            assert last.outcome == "answered" and 200 <= last.status < 300, last
        # No live lease left for work they finished.
        state = state_row(azurite, result.server_call_id)
        assert state["leases"] == {} and state["pending"] == [], state
        recording_events = [e["id"] for e in suite.ctl("GET", "/__sim/events")["eventgrid"]
                            if e["eventType"].endswith("RecordingFileStatusUpdated")]
        claims = recording_claims(azurite)
        assert recording_events and all(claims[row_key(i)]["status"] == "done" for i in recording_events), claims


def test_hard_kill_mid_call_the_call_completes_through_acs_retries(azurite):
    """The HTTP instance holding a callback (its transfer to ACS slowed) is killed. The front answers ACS 502; ACS
    retries on the other instance, which is told to come back (503) while the dead instance's lease on the event
    lives (at most LEASE_SECONDS past the kill), then takes the event over and sends the transfer again with its
    repeatability id (ACS acts once). The dead instance's connections are refused and its requests go elsewhere. The
    call completes as scripted, nothing done twice, nothing lost, no lease left."""
    with running(azurite, http_instances=2, mode="spread") as (app, suite), ThreadPoolExecutor(1) as pool:
        suite.ctl("POST", "/__sim/faults", {"kind": "request", "match": "TransferToParticipant", "latency": 2.0})
        call = pool.submit(suite.play, 0, SALES)
        assert suite.wait_fault_fired("request", "TransferToParticipant", 0), "the transfer was never sent"
        victim = holding(app, "http")
        killed_at = time.time()
        app.kill(victim)
        server_call_id = the_call(suite)
        leases = state_row(azurite, server_call_id)["leases"]
        assert len(leases) == 1, leases  # the event whose handler died: its lease outlives the process...
        (lease,) = leases.values()
        assert killed_at < lease["until"] <= killed_at + LEASE_SECONDS  # ...by at most one lease
        result = call.result(timeout=90)
        report = finish(suite, [result])
        assert_all_completed(report, app)

        callbacks = app.placed(call_ref=call_ref_of(suite, server_call_id))
        lost = [p for p in callbacks if p.outcome == "lost"]
        assert [(p.instance, p.status) for p in lost] == [(victim.name, 502)], callbacks
        assert any(p.status == 503 for p in callbacks), callbacks  # the lease lived: "come back later"
        assert any(victim.name in p.refused_by for p in app.placed()), app.placed()  # refused, placed elsewhere
        assert all(p.instance != victim.name for p in app.placed() if p.outcome == "answered" and p.seq > lost[0].seq)
        state = state_row(azurite, server_call_id)
        assert state["leases"] == {} and state["pending"] == [], state


def test_a_drain_cut_short_by_its_bound_leaves_a_lease_that_lapses_within_one_lease(azurite):
    """A drain whose bound is shorter than the work in hand (a transfer ACS is slow to answer): devhost exits 1 at
    the bound, abandoning the handler, as a kill would. What it leaves today: the event's lease, live for at most
    LEASE_SECONDS after the exit (its renewals stopped with the process); until it lapses, ACS's redeliveries are
    answered 503 by the other instance; nothing was recorded as done."""
    with (
        running(azurite, http_instances=2, mode="spread", drain_seconds=0.5) as (app, suite),
        ThreadPoolExecutor(1) as pool,
    ):
        suite.ctl("POST", "/__sim/faults", {"kind": "request", "match": "TransferToParticipant", "latency": 4.0})
        call = pool.submit(suite.play, 0, SALES)
        assert suite.wait_fault_fired("request", "TransferToParticipant", 0), "the transfer was never sent"
        holder = holding(app, "http")
        assert app.drain(holder) == 1  # cut short at its bound
        exited_at = time.time()
        assert "drain cut short by the drain bound" in holder.logs()
        server_call_id = the_call(suite)
        ref = call_ref_of(suite, server_call_id)
        state = state_row(azurite, server_call_id)
        (event_id, lease), *others = state["leases"].items()
        assert not others, state["leases"]
        assert exited_at < lease["until"] <= exited_at + LEASE_SECONDS, lease
        assert [a["kind"] for a in state["pending"]] == ["transfer"], state["pending"]
        # The sent request was lost (502); its redeliveries meet the live lease on the other instance.
        until(lambda: any(p.status == 503 for p in app.placed(call_ref=ref)), 10, "a redelivery answered 503")
        assert [p.outcome for p in app.placed(call_ref=ref) if p.instance == holder.name][-1] == "lost"
        # Its recovery (the lease lapses, a redelivery takes the event over) is the kill test's: the caller hangs up.
        try:
            suite.ctl("POST", f"/__sim/calls/{server_call_id}/hangup", {})
        except urllib.error.HTTPError:
            pass
        call.result(timeout=30)


# -- devhost's drain, on a throwaway app --------------------------------------------------------------------------

SLOW_APP = '''
"""A function that holds its request until the test opens a gate."""

import time
from pathlib import Path

import azure.functions as func

HERE = Path(__file__).parent
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hold", methods=["GET"])
def hold(req: func.HttpRequest) -> func.HttpResponse:
    (HERE / "started").touch()
    deadline = time.monotonic() + 30
    while not (HERE / "gate").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return func.HttpResponse("finished")
'''


class Held:
    """A request to the slow app, in a thread: its answer, or why it got none."""

    def __init__(self, url: str) -> None:
        self.result: Any = None
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                self.result = (response.status, response.read().decode())
        except Exception as exc:
            self.result = exc

    def join(self) -> Any:
        self._thread.join(timeout=30)
        return self.result

    @property
    def pending(self) -> bool:
        return self._thread.is_alive()


@pytest.fixture
def slow_host(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "function_app.py").write_text(SLOW_APP)
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(drain_seconds: float) -> tuple[subprocess.Popen[bytes], str, Path]:
        port = free_port()
        log = tmp_path / f"host-{port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost"}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "devhost", "--app-dir", str(tmp_path), "--port", str(port),
                 "--no-settings", "--drain-seconds", str(drain_seconds)],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        started.append((process, log))
        until(lambda: process.poll() is not None or _answers(port), 30, "devhost listening")
        assert process.poll() is None, log.read_text()
        return process, f"http://127.0.0.1:{port}", log

    yield start
    for process, _ in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/none", timeout=1)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _refuses(url: str) -> bool:
    host, port = urlsplit(url).hostname, urlsplit(url).port
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_devhost_drain_finishes_the_request_in_hand_and_takes_no_new_one(slow_host, tmp_path):
    process, url, log = slow_host(drain_seconds=20)
    held = Held(url + "/api/hold")
    until(lambda: (tmp_path / "started").exists(), 10, "the function started")
    process.send_signal(signal.SIGTERM)
    until(lambda: _refuses(url), 5, "the listener closed")
    assert held.pending and process.poll() is None  # the request in hand goes on while new connections are refused
    (tmp_path / "gate").touch()
    assert held.join() == (200, "finished")
    assert process.wait(timeout=25) == 0
    assert "devhost: drained: every request in hand finished" in log.read_text()


def test_devhost_drain_is_cut_short_by_its_bound_and_by_a_second_signal(slow_host, tmp_path):
    process, url, log = slow_host(drain_seconds=0.5)
    held = Held(url + "/api/hold")
    until(lambda: (tmp_path / "started").exists(), 10, "the function started")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 1  # the gate never opens: the bound ends it
    assert isinstance(held.join(), Exception)  # the request in hand got no answer
    assert "drain cut short by the drain bound (0.5s): 1 request(s) abandoned" in log.read_text()

    (tmp_path / "started").unlink()
    process, url, log = slow_host(drain_seconds=60)
    held = Held(url + "/api/hold")
    until(lambda: (tmp_path / "started").exists(), 10, "the function started")
    process.send_signal(signal.SIGTERM)
    until(lambda: "draining, 1 request(s) in hand" in log.read_text(), 5, "the drain began")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 1  # long before its 60 s bound
    assert "drain cut short by a second SIGTERM" in log.read_text()
    assert isinstance(held.join(), Exception)


def test_devhost_without_requests_in_hand_exits_0_at_once(slow_host):
    process, _, log = slow_host(drain_seconds=60)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert "draining, 0 request(s) in hand" in log.read_text()
