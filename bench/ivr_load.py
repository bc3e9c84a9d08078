"""Load of scripted IVR calls on one app instance, and what the simulator saw of it (shared by
bench/callback_latency.py and bench/sustained.py).

The app runs under the local Functions host in its own process (tools/apphost.py, default routing:
the customer_service flow), the simulator in this process, Azurite in its own. Each scripted caller
(``POST /__sim/calls``) hears the welcome, presses 1 at the menu, hears "Connecting you to sales." and
is transferred to sales, who answers: 1 IncomingCall (Event Grid) and 9 mid-call callbacks per call.

Per callback the simulator records the round trip it saw (request sent to response read: the host's
queueing and the app) and the app's ``Server-Timing`` (blueprints/callbacks.py): ``handler`` (the app's
time on the request), of which ``acs`` (waiting on ACS, i.e. on the simulator) and ``storage`` (waiting
on Table Storage, i.e. on Azurite). The app's own time is ``handler - acs``: the simulator's latency
taken out, storage left in (it is the app's own dependency).
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = [{"on": "recognize", "press": "1"}]
# What the app asks of ACS on each such call; anything more is a duplicated action.
EXPECTED_REQUESTS = Counter(
    {"AnswerCall": 1, "StartContinuousDtmfRecognition": 1, "Play": 2, "Recognize": 1, "TransferToParticipant": 1}
)


def start_storage(in_memory: bool = False) -> Any:
    """Azurite as the tests run it (tools/azurite.py: data on disk), or with ``in_memory`` without persistence:
    Azurite's table store then never pauses to save itself to disk. With data on disk it writes its whole
    database every 5 seconds, stalling every request meanwhile: pauses that grow with the rows a long benchmark
    leaves (about 200 ms at 15,000 rows here), which real Table Storage does not have."""
    from tools import azurite

    return azurite.start(options=("--inMemoryPersistence",) if in_memory else ())


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@dataclass
class Stack:
    sim: Any  # RunningSimulator
    thread: Any  # SimulatorThread
    app: Any  # AppProcess


@contextmanager
def stack(
    storage: str, *, prompt_seconds: float, app_dir: Path | None = None, instances: int = 0, **settings: str
) -> Iterator[Stack]:
    """A fresh simulator (prompts of ``prompt_seconds``) and a fresh app (of this checkout, or of ``app_dir``)
    subscribed to it: one host process, or with ``instances`` the Flex shape (``tools/cluster.py``): that many HTTP
    instances behind the front, each call's callbacks spread over them, one instance per Event Grid function."""
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tools.apphost import start_app
    from tools.cluster import start_cluster

    thread = SimulatorThread(config=Config(prompt_seconds=prompt_seconds, ring_timeout=600))
    sim = thread.__enter__()
    try:
        if instances:
            app = start_cluster(
                sim, storage, http_instances=instances, mode="spread", timeout=60, app_dir=app_dir, **settings
            )
        else:
            app = start_app(sim, storage, timeout=60, app_dir=app_dir, **settings)
        try:
            yield Stack(sim, thread, app)
        finally:
            app.stop()
            if not instances:
                os.unlink(app.log_path)
    finally:
        thread.__exit__(None, None, None)


def app_pids(app: Any) -> list[int]:
    """The app's host processes: one, or every instance of a cluster."""
    if hasattr(app, "all_instances"):
        return [instance.process.pid for instance in app.all_instances()]
    return [app.process.pid]


def place(st: Stack, n: int, rate: float, *, prefix: int = 0) -> list[str]:
    """Ring ``n`` scripted callers, ``rate`` per second (evenly spaced); their server call ids."""
    ids = []
    started = time.monotonic()
    for i in range(n):
        due = started + i / rate if rate else started
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        caller = f"+1425{prefix:03d}{i:04d}"
        ids.append(post(st.sim.endpoint + "/__sim/calls", {"from": caller, "to": "+18005550123", "script": SCRIPT})[
            "serverCallId"])
    return ids


def _done(call: Any) -> bool:
    return call.state == "ended" or bool(call.connections) and all(c.state == "disconnected" for c in call.connections)


def wait_done(st: Stack, ids: list[str], deadline: float) -> bool:
    """Until every call is over for the app (or the deadline passes); then until deliveries are idle."""
    calls = st.sim.sim.engine.calls
    while time.monotonic() < deadline:
        if all(_done(calls[i]) for i in ids):
            break
        time.sleep(0.25)
    else:
        return False
    delivery = st.sim.sim.delivery
    while delivery.pending and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def warm_up(st: Stack, timeout: float = 60) -> None:
    """One call until the app has handled its first callbacks (clients made, connections open); it is left
    going and counted nowhere."""
    (cid,) = place(st, 1, 0, prefix=999)
    timeline = st.sim.sim.engine.calls[cid].timeline
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.kind == "event" and e.detail.get("type") == "PlayStarted" for e in list(timeline.entries)):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the warm-up call did not get going:\n{timeline.render()}\n{st.app.logs()[-3000:]}")


def parse_server_timing(value: str) -> dict[str, float]:
    out = {}
    for part in value.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if rest:
            out[name] = float(rest)
    return out


@dataclass
class Samples:
    """What the simulator recorded for a set of calls."""

    calls: int = 0
    completed: int = 0  # transferred to sales and the app's leg left, as scripted
    callbacks: int = 0
    own: list[float] = field(default_factory=list)  # handler - acs, ms
    handler: list[float] = field(default_factory=list)
    storage: list[float] = field(default_factory=list)
    acs: list[float] = field(default_factory=list)
    round_trip: list[float] = field(default_factory=list)
    rows: list[tuple[float, str, float, float, float, float]] = field(default_factory=list)  # (at, type, own, ...)
    lost: int = 0  # callbacks the simulator gave up on
    retried: int = 0  # callback attempts that failed and were retried
    duplicated: int = 0  # requests to ACS beyond what the script calls for
    repeated: int = 0  # of which: repeats the service recognised (Repeatability-Request-ID) and acted on once
    peak_live: int = 0  # most calls connected to the app at once
    first: float = 0.0
    last: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.last - self.first, 1e-9)


def collect(st: Stack, ids: list[str]) -> Samples:
    s = Samples(calls=len(ids))
    edges: list[tuple[float, int]] = []
    firsts, lasts = [], []
    for cid in ids:
        call = st.sim.sim.engine.calls[cid]
        entries = list(call.timeline.entries)
        requests: Counter[str] = Counter()
        answered = left = None
        transferred = disconnected = False
        for e in entries:
            d = e.detail
            if e.kind == "request":
                requests[d.get("operation", "")] += 1
                if "repeated request" in e.summary:
                    s.repeated += 1
                if d.get("operation") == "AnswerCall" and d.get("status") == 200:
                    answered = e.at
            elif e.kind == "event":
                if d.get("failed") or d.get("dropped"):
                    s.lost += 1
                elif d.get("retry"):
                    s.retried += 1
                elif "round_trip_ms" in d:
                    s.callbacks += 1
                    firsts.append(e.at)
                    lasts.append(e.at)
                    s.round_trip.append(d["round_trip_ms"])
                    timing = parse_server_timing(d.get("server_timing", ""))
                    if "handler" in timing:
                        s.handler.append(timing["handler"])
                        s.acs.append(timing.get("acs", 0.0))
                        s.storage.append(timing.get("storage", 0.0))
                        s.own.append(timing["handler"] - timing.get("acs", 0.0))
                        s.rows.append(
                            (e.at, d.get("type", "?"), s.own[-1], s.storage[-1], s.acs[-1], d["round_trip_ms"])
                        )
                    if d.get("type") == "CallTransferAccepted":
                        transferred = True
                    if d.get("type") == "CallDisconnected":
                        disconnected = True
                        left = e.at
        s.duplicated += sum(max(0, n - EXPECTED_REQUESTS.get(op, 0)) for op, n in requests.items())
        if transferred and disconnected:
            s.completed += 1
        if answered is not None:
            edges.append((answered, 1))
            edges.append((left if left is not None else float("inf"), -1))
    live = 0
    for _, step in sorted(edges):
        live += step
        s.peak_live = max(s.peak_live, live)
    if firsts:
        s.first, s.last = min(firsts), max(lasts)
    return s


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of a process so far: this one when ``pid`` is None (Linux /proc otherwise)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by the app (all its host processes), Azurite and this process (the simulator, the callers
    and a cluster's front) between marks."""

    def __init__(self, app_pid: int | list[int], azurite_pid: int) -> None:
        apps = app_pid if isinstance(app_pid, list) else [app_pid]
        self.pids: dict[str, list[int | None]] = {"app": list(apps), "azurite": [azurite_pid], "simulator": [None]}
        self.mark()

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.pids.items()}

    def mark(self) -> None:
        self._at = self._now()

    def since(self) -> dict[str, float]:
        now = self._now()
        spent = {name: now[name] - self._at[name] for name in self.pids}
        self._at = now
        return spent


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
