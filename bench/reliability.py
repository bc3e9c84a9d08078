"""Reliability suite: scripted IVR calls through the app while things go wrong, and what survived.

    python -m bench.reliability [--calls 60] [--concurrency 6] [--seed 1] [--host-kills 3] [--storage-restarts 3]
                                [--instances N [--scale-events 3]] [--rounds 1] [--verbose]

A mix of scripted callers plays the shipped customer-service flow (every call recorded:
``RECORDING_MODE=on_connect``): sales by DTMF, support by speech, silence until the operator,
a hang-up mid-menu, and a transfer the agent declines. Meanwhile:

- ACS answers bursts of 429, 503 and 500 (with and without ``Retry-After``) on the operations the flow uses;
- callbacks and Event Grid events arrive twice, late, out of order, or not at all (drops of events
  the flow must not depend on: ``PlayStarted``, ``ParticipantsUpdated``, ``CallStarted``);
- Azurite is restarted mid-call and mid-copy of a recording (a slowed download);
- the app's host is killed (SIGKILL) mid-call, mid-request and mid-copy, and started again with the
  same settings: the call state comes back from Table Storage; the simulator redelivers what failed.
  Kills fall between callbacks, but for the handler a kill aims at (see ``kill_between_callbacks``).

With ``--instances N`` the app runs as Flex Consumption runs it (``tools/cluster.py``): N HTTP instances behind a
front that sends each callback of a call to another instance than the one before, and one instance for each Event
Grid function's group. A host kill is then one instance killed (mid-call, the one holding the transfer request, the
one copying a recording) and replaced, and ``--scale-events`` adds, per round of them, a drain with a replacement
(the platform recycling an instance), a scale-out and a scale-in (a drain), all mid-call.

Printed at the end (``tests/e2e/test_reliability.py`` runs a short form of each shape and asserts them):

- calls placed, and completed as scripted: each script names the transfer target it must reach (or
  that the call ends), the number of each action ACS must have carried out, and the app's final state;
- actions duplicated: actions ACS carried out more than once (accepted requests with the same
  operation context, or more of an operation than the script calls for), must be 0;
- events lost: events the simulator sent that were never acknowledged with a 2xx, or acknowledged
  but never handled by the app (no "done" mark in its tables), must be 0 (events dropped on purpose
  are counted apart);
- recordings copied and verified: each recording chunk the simulator wrote has a verified copy in
  Blob Storage with the same size and SHA-256;
- ETag conflicts met and retried, by what was written (a call's state, its record, a campaign's progress), per call:
  each instance counts them (``REQUEST_COUNTS=1``) and logs them with the call's ids. "(cached copy)" are the
  conflicts on an instance's remembered copy of a call's state, written meanwhile by another instance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

ACK = range(200, 300)


# -- the scripts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """A scripted caller and what must come of the call."""

    name: str
    body: dict[str, Any]  # POST /__sim/calls, less "from"
    transfer_to: str | None  # raw id the call must be transferred to (accepted), or None
    expect: dict[str, int]  # accepted requests per operation (exactly)
    outcome: dict[str, Any]  # the app's final state: outcome fields (exact values)
    transfer_failed: bool = False


COMMON = {"AnswerCall": 1, "StartRecording": 1, "StartContinuousDtmfRecognition": 1}
SCRIPTS: tuple[Script, ...] = (
    Script(
        "sales_by_dtmf",
        {"script": [{"on": "recognize", "press": "1"}]},
        "4:+14255550101",
        {**COMMON, "Recognize": 1, "TransferToParticipant": 1, "TerminateCall": 0},
        {"transfer_target": "+14255550101", "transfer_result": "accepted"},
    ),
    Script(
        "support_by_speech",
        {"script": [{"on": "recognize", "say": "I need support please"}]},
        "8:acs:support-agent",
        {**COMMON, "Recognize": 1, "TransferToParticipant": 1, "TerminateCall": 0},
        {"transfer_target": "8:acs:support-agent", "transfer_result": "accepted"},
    ),
    Script(
        "silence_to_operator",
        {"script": []},
        "4:+14255550100",
        {**COMMON, "Recognize": 3, "TransferToParticipant": 1, "TerminateCall": 0},
        {"transfer_target": "+14255550100", "transfer_result": "accepted",
         "menu_misses": ["no input", "no input", "no input"]},
    ),
    Script(
        "hangup_mid_menu",
        {"script": [{"on": "recognize", "hangup": True, "delay": 0.02}]},
        None,
        {**COMMON, "Recognize": 1, "TransferToParticipant": 0, "TerminateCall": 0},
        {},
    ),
    Script(
        "declined_transfer",
        {"script": [{"on": "recognize", "press": "1"}], "parties": {"+14255550101": {"answer": "decline"}}},
        None,
        {**COMMON, "Recognize": 1, "TransferToParticipant": 1, "TerminateCall": 1},
        {"transfer_target": "+14255550101", "ended_by_flow": "apology"},
        transfer_failed=True,
    ),
)
COUNTED = ("AnswerCall", "StartRecording", "StartContinuousDtmfRecognition", "Recognize", "TransferToParticipant",
           "AddParticipant", "TerminateCall", "Play")

# -- faults ------------------------------------------------------------------------------------------------


def fault_plan(calls: int) -> list[dict[str, Any]]:
    """Request, callback and Event Grid faults, each spent on whichever calls come first."""
    n = max(1, calls // 5)
    return [
        # Bursts of throttling and unavailability from ACS.
        {"kind": "request", "match": "*", "status": 429, "retry_after": 0.05, "count": 2 * n},
        {"kind": "request", "match": "Recognize", "status": 429, "retry_after": None, "count": n},
        {"kind": "request", "match": "Play", "status": 503, "retry_after": 0.05, "count": n},
        {"kind": "request", "match": "TransferToParticipant", "status": 503, "retry_after": None, "count": n},
        {"kind": "request", "match": "AnswerCall", "status": 503, "retry_after": 0.1, "count": n},
        {"kind": "request", "match": "StartRecording", "status": 429, "retry_after": None, "count": n},
        {"kind": "request", "match": "TerminateCall", "status": 500, "retry_after": None, "count": n},
        # Mid-call callbacks: twice, late, out of order, dropped (events the flow must not depend on).
        {"kind": "callback", "match": "RecognizeCompleted", "action": "duplicate", "count": n},
        {"kind": "callback", "match": "RecognizeFailed", "action": "duplicate", "count": n},
        {"kind": "callback", "match": "CallConnected", "action": "duplicate", "count": n},
        {"kind": "callback", "match": "PlayCompleted", "action": "reorder", "count": n},
        {"kind": "callback", "match": "CallTransferAccepted", "action": "delay", "delay": 0.3, "count": n},
        {"kind": "callback", "match": "CallTransferFailed", "action": "duplicate", "count": n},
        {"kind": "callback", "match": "CallDisconnected", "action": "duplicate", "count": n},
        {"kind": "callback", "match": "PlayStarted", "action": "drop", "count": n},
        {"kind": "callback", "match": "ParticipantsUpdated", "action": "drop", "count": n},
        # Event Grid: twice, late, dropped.
        {"kind": "eventgrid", "match": "IncomingCall", "action": "duplicate", "count": n},
        {"kind": "eventgrid", "match": "IncomingCall", "action": "delay", "delay": 0.3, "count": n},
        {"kind": "eventgrid", "match": "RecordingFileStatusUpdated", "action": "duplicate", "count": n},
        {"kind": "eventgrid", "match": "RecordingFileStatusUpdated", "action": "delay", "delay": 0.5, "count": n},
        {"kind": "eventgrid", "match": "CallEnded", "action": "duplicate", "count": n},
        {"kind": "eventgrid", "match": "CallStarted", "action": "drop", "count": n},
    ]


# -- the run -------------------------------------------------------------------------------------------------


@dataclass
class CallResult:
    index: int
    script: Script
    server_call_id: str = ""
    problems: list[str] = field(default_factory=list)
    duplicated: int = 0
    duplicates: list[str] = field(default_factory=list)


@dataclass
class Report:
    placed: int = 0
    completed: int = 0
    duplicated: int = 0
    lost: int = 0
    dropped_on_purpose: int = 0
    recordings: int = 0
    recordings_verified: int = 0
    disruptions: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)  # disruptions whose moment never came
    faults_fired: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    failed_timelines: list[str] = field(default_factory=list)
    app_log: str = ""
    seconds: float = 0.0
    shape: str = "one host"
    conflicts: Counter[str] = field(default_factory=Counter)  # ETag conflicts retried, by what was written
    conflicts_per_call: list[int] = field(default_factory=list)  # for each call placed

    def conflict_line(self) -> str:
        if not self.conflicts_per_call:
            return "ETag conflicts retried:        not counted"
        per_call = sorted(self.conflicts_per_call)
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(self.conflicts.items())) or "none"
        return (
            f"ETag conflicts retried:        {sum(self.conflicts.values())} ({kinds}); per call: "
            f"mean {sum(per_call) / len(per_call):.2f}, max {per_call[-1]}, "
            f"{sum(1 for n in per_call if n)} of {len(per_call)} calls met one"
        )

    def lines(self) -> list[str]:
        return [
            f"shape:                         {self.shape}",
            f"calls placed:                  {self.placed}",
            f"completed as scripted:         {self.completed}",
            f"actions duplicated:            {self.duplicated}",
            f"events lost:                   {self.lost}",
            f"events dropped on purpose:     {self.dropped_on_purpose}",
            f"recordings copied and verified: {self.recordings_verified} of {self.recordings}",
            "disruptions:                   " + (", ".join(f"{k} x{v}" for k, v in sorted(self.disruptions.items()))
                                                 or "none"),
            *([f"disruptions missed:            {dict(self.missed)}"] if self.missed else []),
            f"faults fired:                  {sum(self.faults_fired.values())} "
            f"({', '.join(f'{k} x{v}' for k, v in sorted(self.faults_fired.items()))})",
            self.conflict_line(),
            f"seconds:                       {self.seconds:.1f}",
        ]


class Suite:
    """One run: a simulator, Azurite and the app; calls placed in parallel while a chaos thread disrupts."""

    def __init__(self, sim: Any, app: Any, storage: Any, *, seed: int = 1, call_timeout: float = 90.0) -> None:
        self.sim = sim
        self.app = app
        self.cluster = app if hasattr(app, "add_instance") else None  # tools.cluster.Cluster: the Flex shape
        self.storage = storage
        self.random = random.Random(seed)
        self.call_timeout = call_timeout
        self.report = Report()
        self._lock = threading.Lock()  # guards _started (calls are placed from several threads)
        self._started: list[str] = []  # server call ids in the order placed

    # -- simulator control API -----------------------------------------------------------------------

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.sim.endpoint + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return json.loads(raw) if raw and "json" in response.headers.get("Content-Type", "") else raw.decode()

    def timeline(self, server_call_id: str) -> list[dict[str, Any]]:
        return self.ctl("GET", f"/__sim/calls/{server_call_id}/timeline")

    def text(self, server_call_id: str) -> str:
        return self.ctl("GET", f"/__sim/calls/{server_call_id}/timeline?format=text")

    # -- one call ---------------------------------------------------------------------------------------------

    def play(self, index: int, script: Script) -> CallResult:
        result = CallResult(index, script)
        caller = f"+1425556{index:04d}"
        call = self.ctl("POST", "/__sim/calls", {"to": "+18005550123", "from": caller, **script.body})
        result.server_call_id = call["serverCallId"]
        with self._lock:
            self._started.append(result.server_call_id)
        deadline = time.monotonic() + self.call_timeout
        while True:
            summary = self.ctl("GET", f"/__sim/calls/{result.server_call_id}")
            connections = summary["connections"]
            if summary["state"] == "ended":
                break
            if connections and all(c["state"] == "disconnected" for c in connections):
                # The app left (a transfer): the caller and the agent talk, then hang up, which ends the
                # call and its recording.
                try:
                    self.ctl("POST", f"/__sim/calls/{result.server_call_id}/hangup", {})
                except urllib.error.HTTPError:
                    pass
            if time.monotonic() > deadline:
                result.problems.append(f"did not finish in {self.call_timeout:g}s")
                break
            time.sleep(0.1)
        return result

    # -- disruptions --------------------------------------------------------------------------------------

    def wait_mid_menu(self, timeout: float = 30.0) -> bool:
        """Until some call placed is in its menu (a Recognize accepted, the call still going)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                started = list(self._started[-8:])
            for server_call_id in reversed(started):
                summary = self.ctl("GET", f"/__sim/calls/{server_call_id}")
                if summary["state"] != "ended" and any(
                    e["kind"] == "request" and e.get("operation") == "Recognize" and e.get("status") == 202
                    for e in self.timeline(server_call_id)
                ):
                    return True
            time.sleep(0.02)
        return False

    def transfers_answered(self) -> int:
        return sum(1 for r in self.ctl("GET", "/__sim/requests") if r.get("operation") == "TransferToParticipant")

    def kill_between_callbacks(self, down_for: float, but: int = 0, unless: Callable[[], bool] | None = None) -> None:
        """Kill the host while it handles no callback (``but`` the ones a disruption aims at, ``unless`` the aim
        is gone meanwhile): the simulator holds new ones back until those on their way are answered. Then let
        the callbacks go on, to fail against the dead host and be redelivered, and start it again."""
        self.ctl("POST", "/__sim/deliveries", {"paused": True})
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if unless is not None and unless():
                    but = 0
                if self.ctl("GET", "/__sim/health")["webhooksInFlight"] <= but:
                    break
                time.sleep(0.01)
            if self.cluster is None:
                self.app.process.kill()
                self.app.process.wait(timeout=10)
            else:
                victim = self.busiest("http") if but else self.random.choice(self.cluster.instances("http"))
                self.cluster.kill(victim)
        finally:
            self.ctl("POST", "/__sim/deliveries", {"paused": False})
        if self.cluster is None:
            self.restart_host(down_for=down_for)
        else:
            time.sleep(down_for)
            self.cluster.add_instance(victim.group)  # the platform places a new instance for the lost one

    def busiest(self, group: str) -> Any:
        """The instance of the group holding the most requests (the one a disruption aims at), else any."""
        serving = self.cluster.instances(group)
        return max(serving, key=lambda i: (self.cluster.in_flight(i), self.random.random()))

    def wait_fault_fired(self, kind: str, name: str | None, before: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fired(kind, name) > before:
                return True
            time.sleep(0.02)
        return False

    def fired(self, kind: str, name: str | None) -> int:
        """How many faults of this kind (on this operation or event, or on any) have fired."""
        return len([f for f in self.ctl("GET", "/__sim/faults")["fired"]
                    if f["kind"] == kind and name in (None, f["name"])])

    def restart_storage(self, down_for: float) -> None:
        from tools import azurite

        azurite.restart(self.storage, down_for=down_for)

    def restart_host(self, down_for: float) -> None:
        from tools.apphost import restart_app

        restart_app(self.app, kill=True, down_for=down_for)

    def disrupt(self, kind: str) -> bool:
        """One disruption, at a moment that makes it hurt: whether that moment came (and the disruption struck)."""
        struck = False
        if kind == "storage_mid_call":
            if struck := self.wait_mid_menu():
                self.restart_storage(down_for=self.random.uniform(0.2, 1.0))
        elif kind == "host_kill_mid_call":
            # Between callbacks: the events ACS sends while the host is down fail and are redelivered to the new
            # host. (Killed inside a handler, just after ACS accepted a Play or Recognize and before the app
            # recorded it, the redelivery would send it again: those operations have no repeatability id. See
            # host_kill_mid_request for a kill mid-action on one that has.)
            if struck := self.wait_mid_menu():
                self.kill_between_callbacks(down_for=self.random.uniform(0.0, 0.5))
        elif kind == "host_kill_mid_request":
            # The transfer request is on its way (ACS is slow to answer it) when the host dies: the event that
            # planned it is redelivered to the new host, which sends it again with the same repeatability id.
            before = self.fired("request", "TransferToParticipant")
            self.ctl("POST", "/__sim/faults", {"kind": "request", "match": "TransferToParticipant", "latency": 5.0})
            if struck := self.wait_fault_fired("request", "TransferToParticipant", before):
                answered = self.transfers_answered()
                # The one handler left is the one waiting on the transfer, as long as ACS has not answered it.
                self.kill_between_callbacks(down_for=0.1, but=1, unless=lambda: self.transfers_answered() > answered)
        elif kind in ("storage_mid_copy", "host_kill_mid_copy"):
            # A slowed recording download: the copy is under way when storage (or the host) goes away.
            before = self.fired("download", None)
            self.ctl("POST", "/__sim/faults", {"kind": "download", "latency": 1.0})
            if struck := self.wait_fault_fired("download", None, before):
                time.sleep(0.3)
                if kind == "storage_mid_copy":
                    self.restart_storage(down_for=0.5)
                elif self.cluster is None:
                    self.kill_between_callbacks(down_for=0.1)  # the copy is an Event Grid delivery
                else:  # the instance of the recordings group that is copying dies, another takes its place
                    copying = self.busiest("recording_file_status")
                    self.cluster.kill(copying)
                    self.cluster.add_instance(copying.group)
        elif kind in ("drain_mid_call", "scale_out_mid_call", "scale_in_mid_call"):
            if self.cluster is None:
                raise ValueError(f"{kind} needs the cluster shape (--instances)")
            if struck := self.wait_mid_menu():
                http = self.cluster.instances("http")
                if kind == "drain_mid_call":  # the platform recycles an instance: a new one in, the old one drained
                    self.cluster.recycle(self.random.choice(http), graceful=True)
                elif kind == "scale_out_mid_call":
                    self.cluster.add_instance("http")
                elif len(http) > 1:  # scale in: one fewer, drained
                    self.cluster.drain(self.random.choice(http))
                else:
                    struck = False
        else:
            raise ValueError(f"unknown disruption {kind}")
        return struck

    # -- the whole run --------------------------------------------------------------------------------------------

    def run(self, calls: int, concurrency: int, disruptions: list[str]) -> Report:
        started = time.monotonic()
        self.ctl("POST", "/__sim/faults", fault_plan(calls))
        scripts = [SCRIPTS[i % len(SCRIPTS)] for i in range(calls)]
        self.random.shuffle(scripts)
        plan = list(disruptions)
        self.random.shuffle(plan)
        # Each disruption is set off as a call starts, spread over the first four fifths of the calls, so that
        # calls are still going (and recordings still being copied) when it strikes.
        trigger = {int((j + 0.5) * calls * 0.8 / len(plan)): [] for j in range(len(plan))} if plan else {}
        for j, kind in enumerate(plan):
            trigger[int((j + 0.5) * calls * 0.8 / len(plan))].append(kind)
        pending: queue.Queue[str | None] = queue.Queue()
        errors: list[BaseException] = []
        begun = [0]  # calls started so far
        begun_lock = threading.Lock()

        def chaos() -> None:
            while (kind := pending.get()) is not None:
                try:
                    struck = self.disrupt(kind)
                except BaseException as exc:  # reported, not swallowed
                    errors.append(exc)
                    continue
                if not struck and begun[0] < calls:
                    # Its moment passed while the calls under way went on (a slow machine): the calls still to
                    # come give it another.
                    pending.put(kind)
                    continue
                (self.report.disruptions if struck else self.report.missed)[kind] += 1

        def start(index: int, script: Script) -> CallResult:
            # Calls wait while disruptions are queued behind the one under way, so that calls are still
            # going when each strikes.
            while not pending.empty():
                time.sleep(0.02)
            for kind in trigger.get(index, []):
                pending.put(kind)
            with begun_lock:
                begun[0] += 1
            return self.play(index, script)

        chaos_thread = threading.Thread(target=chaos, name="chaos", daemon=True)
        chaos_thread.start()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(start, i, script) for i, script in enumerate(scripts)]
            results = [f.result() for f in futures]
        pending.put(None)
        chaos_thread.join(timeout=300)
        if errors:
            raise errors[0]
        self.settle()
        self.count(results)
        self.report.seconds = time.monotonic() - started
        return self.report

    def settle(self, timeout: float = 90.0) -> None:
        """Until the simulator has nothing left to deliver and every recording is copied (or time is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            idle = self.ctl("GET", "/__sim/idle?timeout=5")
            if idle["idle"] and self.recordings_left() == 0:
                return
            time.sleep(0.2)

    # -- counting ------------------------------------------------------------------------------------------------

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        from azure.data.tables import TableServiceClient

        service = TableServiceClient.from_connection_string(self.storage.connection_string)
        out = {}
        for name in ("callstate", "callevents", "callrecords"):
            try:
                out[name] = list(service.get_table_client(name).list_entities())
            except Exception:  # a table never created: nothing in it
                out[name] = []
        return out

    def blobs(self) -> list[Any]:
        from azure.storage.blob import BlobServiceClient

        container = BlobServiceClient.from_connection_string(self.storage.connection_string).get_container_client(
            self.app.env.get("RECORDINGS_CONTAINER", "qa-recordings")
        )
        try:
            return list(container.list_blobs(include=["metadata"]))
        except Exception:
            return []

    def recordings_left(self) -> int:
        documents = [d for r in self.ctl("GET", "/__sim/recordings") for d in r["documents"]]
        verified = {
            (b.metadata or {}).get("documentId")
            for b in self.blobs()
            if (b.metadata or {}).get("verified") == "true" and "sha256" in (b.metadata or {})
        }
        return len([d for d in documents if d["documentId"] not in verified])

    def count(self, results: list[CallResult]) -> None:
        from core.calls.repeatability import derived_id
        from core.calls.state import EventFilter
        from handlers.callbacks import EVENTS

        # Events that change nothing (only logged) leave no trace: no "done" mark to look for.
        unclaimed = {kind for kind, rule in EVENTS.items() if not rule.changes_state}

        report = self.report
        tables = self.tables()
        states = {e.get("serverCallId"): json.loads(e["data"]) for e in tables["callstate"] if e.get("data")}
        done = {(e["PartitionKey"], e["RowKey"]) for e in tables["callevents"] if e.get("status") == "done"}
        done_ids = {rk for _, rk in done}
        # A mid-call event is done when its call's state lists it as handled and holds no lease on it.
        claims: dict[str, Any] = {}
        for state in (json.loads(e["data"]) for e in tables["callstate"] if e.get("data")):
            for event_id, lease in state.get("leases", {}).items():
                claims[event_id] = ("leased", round(float(lease.get("until") or 0) - time.time(), 1))
            done_ids.update(i for i in state.get("handled", []) if i not in state.get("leases", {}))
        record_ids = {e.get("eventId") for e in tables["callrecords"] if e.get("kind") == "event"}
        state_refs = {e["PartitionKey"] for e in tables["callstate"]}

        report.placed = len(results)
        timelines = {r.server_call_id: self.timeline(r.server_call_id) for r in results if r.server_call_id}
        for r in results:
            entries = timelines.get(r.server_call_id, [])
            self.check_call(r, entries, states.get(r.server_call_id))
            report.duplicated += r.duplicated
            if r.duplicated:
                report.problems.append(f"call {r.index} ({r.script.name}): duplicated {', '.join(r.duplicates)}")
                report.failed_timelines.append(self.text(r.server_call_id))
            if not r.problems:
                report.completed += 1
            else:
                report.failed_timelines.append(self.text(r.server_call_id))
                report.problems.append(f"call {r.index} ({r.script.name}, {r.server_call_id}): "
                                       + "; ".join(r.problems))

        # Events: every one sent was acknowledged (2xx) and handled, unless dropped on purpose.
        sent = self.ctl("GET", "/__sim/events")
        acked: dict[str, set[str]] = {}
        dropped: set[str] = set()
        for entries in timelines.values():
            for e in entries:
                if e["kind"] in ("event", "eventgrid") and e.get("id"):
                    if e.get("dropped"):
                        dropped.add(e["id"])
                    elif not e.get("failed") and (e["kind"] == "eventgrid" or e.get("status") in ACK):
                        acked.setdefault(e["id"], set()).add(e.get("subscription", "webhook"))
        subscriptions = {s["name"]: s.get("eventTypes") for s in self.ctl("GET", "/__sim/eventgrid/subscriptions")}
        for event in sent["webhook"]:
            kind = event["type"].rsplit(".", 1)[-1]
            if event["id"] in dropped:
                report.dropped_on_purpose += 1
            elif "webhook" not in acked.get(event["id"], set()):
                report.lost += 1
                claim = claims.get(event["id"])
                report.problems.append(f"webhook {kind} {event['id']} never acknowledged (claim: {claim})")
            elif kind not in unclaimed and event["id"] not in done_ids:
                report.lost += 1
                report.problems.append(f"webhook {kind} {event['id']} acknowledged but never handled")
        for event in sent["eventgrid"]:
            kind = event["eventType"].rsplit(".", 1)[-1]
            if event["id"] in dropped:
                report.dropped_on_purpose += 1
                continue
            wanted = [n for n, types in subscriptions.items() if not types or event["eventType"] in types]
            missing = [n for n in wanted if n not in acked.get(event["id"], set())]
            if missing:
                report.lost += 1
                report.problems.append(f"Event Grid {kind} {event['id']} never acknowledged by {missing}")
                continue
            handled = (
                derived_id("incoming", event["id"]) in state_refs
                if kind == "IncomingCall"
                else (EventFilter.partition("recordings", event["id"]), event["id"]) in done
                if kind == "RecordingFileStatusUpdated"
                else event["id"] in record_ids
            )
            if not handled:
                report.lost += 1
                report.problems.append(f"Event Grid {kind} {event['id']} acknowledged but never handled")

        # Recordings: each chunk written has a verified copy, byte for byte.
        documents = {d["documentId"]: d for r in self.ctl("GET", "/__sim/recordings") for d in r["documents"]}
        report.recordings = len(documents)
        copies = {}
        for blob in self.blobs():
            meta = blob.metadata or {}
            if meta.get("verified") == "true" and "sha256" in meta and "channel" not in meta:
                copies[meta.get("documentId")] = (blob, meta)
        engine_docs = self.sim.sim.engine.documents
        for document_id, doc in documents.items():
            copy = copies.get(document_id)
            if copy is None:
                report.problems.append(f"recording {document_id} not copied")
                continue
            blob, meta = copy
            source = engine_docs[document_id].path
            digest = hashlib.sha256(source.read_bytes()).hexdigest() if source.exists() else meta["sha256"]
            if blob.size == doc["size"] and meta["sha256"] == digest:
                report.recordings_verified += 1
            else:
                report.problems.append(f"recording {document_id}: copy differs ({blob.size} vs {doc['size']})")
        for f in self.ctl("GET", "/__sim/faults")["fired"]:
            report.faults_fired[f["kind"]] += 1
        if self.app.env.get("REQUEST_COUNTS") == "1":
            per_call, report.conflicts = conflicts_in(self.app.logs())
            report.conflicts_per_call = [per_call.get(r.server_call_id, 0) for r in results]

    def check_call(self, r: CallResult, entries: list[dict[str, Any]], state: dict[str, Any] | None) -> None:
        script = r.script
        requests = [e for e in entries if e["kind"] == "request"]
        accepted = [
            e for e in requests if 200 <= e.get("status", 0) < 300 and "repeated request" not in e["summary"]
        ]
        by_op: Counter[str] = Counter(e["operation"] for e in accepted)
        by_ctx: Counter[tuple[str, str]] = Counter(
            (e["operation"], str((e.get("body") or {}).get("operationContext") or "")) for e in accepted
        )
        for op in COUNTED:
            same_context = sum(n - 1 for (o, _), n in by_ctx.items() if o == op and n > 1)
            extra = max(by_op[op] - script.expect[op], 0) if op in script.expect else 0
            dup = max(same_context, extra)
            if dup:
                r.duplicated += dup
                r.duplicates.append(f"{op} x{by_op[op]}")
        for op, n in script.expect.items():
            if by_op[op] != n:
                r.problems.append(f"{op}: {by_op[op]} accepted, expected {n}")
        transfers = [e for e in accepted if e["operation"] == "TransferToParticipant"]
        events = [e for e in entries if e["kind"] == "event" and e.get("status") in ACK]
        if script.transfer_to:
            targets = {((e.get("body") or {}).get("targetParticipant") or {}).get("rawId") for e in transfers}
            if targets != {script.transfer_to}:
                r.problems.append(f"transferred to {targets or 'nobody'}, expected {script.transfer_to}")
            if not any(e.get("type") == "CallTransferAccepted" for e in events):
                r.problems.append("no CallTransferAccepted handled")
        if script.transfer_failed and not any(e.get("type") == "CallTransferFailed" for e in events):
            r.problems.append("no CallTransferFailed handled")
        if not any(e.get("type") == "CallDisconnected" for e in events):
            r.problems.append("the app never handled its CallDisconnected")
        if state is None:
            r.problems.append("no state in Table Storage")
            return
        if state.get("status") != "ended":
            r.problems.append(f"app state {state.get('status')!r}, expected 'ended'")
        if state.get("pending"):
            r.problems.append(f"actions left pending: {[a.get('kind') for a in state['pending']]}")
        outcome = state.get("outcome") or {}
        for key, value in script.outcome.items():
            if outcome.get(key) != value:
                r.problems.append(f"outcome {key}={outcome.get(key)!r}, expected {value!r}")
        if script.transfer_failed and not str(outcome.get("transfer_result", "")).startswith("failed"):
            r.problems.append(f"transfer_result {outcome.get('transfer_result')!r}, expected a failure")


# -- set-up ------------------------------------------------------------------------------------------------------


DISRUPTIONS = ("storage_mid_call", "storage_mid_copy", "host_kill_mid_call", "host_kill_mid_request",
               "host_kill_mid_copy")
SCALE_EVENTS = ("drain_mid_call", "scale_out_mid_call", "scale_in_mid_call")  # the cluster shape's own
_COUNTS_LINE = re.compile(r"request counts (\{.*\})(?: \[([^\]]*)\])?$")


def conflicts_in(logs: str) -> tuple[Counter[str], Counter[str]]:
    """ETag conflicts retried, from the app's ``request counts`` log lines: per server call id, and by kind."""
    per_call: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for line in logs.splitlines():
        m = _COUNTS_LINE.search(line)
        if m is None:
            continue
        counts = json.loads(m.group(1)).get("counts", {})
        conflicts = {k.removeprefix("conflict "): n for k, n in counts.items() if k.startswith("conflict ")}
        if not conflicts:
            continue
        by_kind.update(conflicts)
        ids = dict(part.split("=", 1) for part in (m.group(2) or "").split() if "=" in part)
        if ids.get("server_call"):
            per_call[ids["server_call"]] += sum(conflicts.values())
    return per_call, by_kind


def simulator_kwargs() -> dict[str, Any]:
    """Redelivery that outlasts a host restart and an expired claim: webhooks retried 8 times (0.2 s doubling,
    about 50 s in all), Event Grid on its schedule scaled to 1/100 for 8 attempts (about 64 s)."""
    return {"webhook_retries": 8, "eventgrid_time_scale": 0.01, "eventgrid_max_attempts": 8}


def run(
    calls: int,
    concurrency: int,
    disruptions: list[str],
    *,
    seed: int = 1,
    settings: dict[str, str] | None = None,
    on_report: Callable[[Report], None] | None = None,
    instances: int = 0,
) -> Report:
    """One run; with ``instances``, on the cluster shape (that many HTTP instances, callbacks spread)."""
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tools import azurite
    from tools.apphost import start_app
    from tools.cluster import start_cluster

    storage = azurite.start()
    try:
        with SimulatorThread(config=Config(recording_seconds=1.0), **simulator_kwargs()) as sim:
            app_settings = {"RECORDING_MODE": "on_connect", "REQUEST_COUNTS": "1", **(settings or {})}
            if instances:
                app = start_cluster(
                    sim, storage.connection_string, http_instances=instances, mode="spread", **app_settings
                )
            else:
                app = start_app(sim, storage.connection_string, **app_settings)
            try:
                suite = Suite(sim, app, storage, seed=seed)
                suite.report.shape = (
                    f"{instances} HTTP instance(s), callbacks spread, 1 per Event Grid function" if instances else
                    "one host"
                )
                suite.report.app_log = str(app.log_dir if instances else app.log_path)
                report = suite.run(calls, concurrency, disruptions)
                if on_report:
                    on_report(report)
                return report
            finally:
                app.stop()
    finally:
        storage.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=60)
    p.add_argument("--concurrency", type=int, default=6)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--storage-restarts", type=int, default=3, help="Azurite restarts mid-call (and as many mid-copy)")
    p.add_argument("--host-kills", type=int, default=3, help="host kills mid-call (and as many mid-request, mid-copy)")
    p.add_argument("--instances", type=int, default=0, help="the cluster shape: this many HTTP instances (0: one host)")
    p.add_argument("--scale-events", type=int, default=3, help="with --instances: drains, scale-outs and scale-ins")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole run (fresh stack), seeds seed, seed+1, ...")
    p.add_argument("--verbose", action="store_true", help="print the timelines of calls that went wrong")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still stop the host and Azurite it started
    disruptions = (
        ["storage_mid_call", "storage_mid_copy"] * args.storage_restarts
        + ["host_kill_mid_call", "host_kill_mid_request", "host_kill_mid_copy"] * args.host_kills
        + (list(SCALE_EVENTS) * args.scale_events if args.instances else [])
    )
    failed = False
    for round_ in range(args.rounds):
        report = run(args.calls, args.concurrency, disruptions, seed=args.seed + round_, instances=args.instances)
        print(f"round {round_ + 1} (seed {args.seed + round_})")
        print("\n".join("  " + line for line in report.lines()))
        for problem in report.problems[:40]:
            print("  !", problem)
        if args.verbose and report.problems:
            print(f"  app log: {report.app_log}")
            for text in report.failed_timelines[:5]:
                print("\n" + text)
        failed |= bool(report.duplicated or report.lost or report.completed != report.placed
                       or report.recordings_verified != report.recordings)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
