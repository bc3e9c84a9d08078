"""The app run as Flex Consumption runs it, on one machine: several devhost processes in scale groups behind a front.

Flex Consumption scales an app per function: every HTTP-triggered function together in one group of instances, and
each other function (here each Event Grid function) in a group of its own; each instance loads the whole app
(https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#per-function-scaling). So an IncomingCall is
answered on one instance, the call's callbacks land on others, in any order, and its recording is copied on yet
another; instances come when load rises and go (drained, or recycled) while calls are in flight.

``start_cluster`` starts that shape: ``http_instances`` devhost processes for the ``http`` group and
``eventgrid_instances`` for each of ``incoming_call``, ``recording_file_status`` and ``call_records``, all with the
same app settings, function key and Event Grid key, against the same simulator and Azurite, behind one front
(``tools/front.py``) whose address is the app's (``CALLBACK_BASE_URL`` points at it). The ``Cluster`` it returns
stands in for ``tools.apphost.AppProcess`` (``base_url``, ``api``, ``call_api``, ``eventgrid_url``, ``function_key``,
``eventgrid_key``, ``env``, ``logs()``, ``stop()``: ``subscribe_eventgrid(sim, cluster)`` works unchanged), and
changes shape while calls run: ``add_instance`` (scale out), ``drain`` (scale in: the front stops placing requests on
the instance, then SIGTERM, and devhost lets what it holds finish), ``kill`` (SIGKILL), ``recycle`` (a new instance in,
the old one drained). ``placed()`` and ``counts()`` say which instance served what.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.apphost import (
    EVENTGRID_FUNCTIONS,
    ROOT,
    AppProcess,
    app_settings,
    free_port,
    host_environment,
    launch_host,
    subscribe_eventgrid,
    wait_serving,
)
from tools.front import HTTP_GROUP, MODES, Front, Placed

GROUPS = (HTTP_GROUP, *EVENTGRID_FUNCTIONS)
DRAIN_SECONDS = 30.0  # devhost's --drain-seconds for every instance, unless told otherwise
EXIT_GRACE = 5.0  # past its drain bound, the seconds an instance gets to end before it counts as hung
READY_PATH = "/.cluster/ready"  # what the launcher asks a new instance until it answers

__all__ = ["GROUPS", "MODES", "Cluster", "Instance", "Placed", "start_cluster"]


@dataclass
class Instance:
    """One devhost process of the cluster."""

    name: str  # <group>-<n>, never reused
    group: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    drain_seconds: float
    state: str = "starting"  # starting | serving | draining | stopped (drained or stopped) | killed

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """The app on several instances in scale groups behind one front; a drop-in for ``AppProcess``."""

    # The same as the single host's: they use only base_url, the keys and api.
    api = AppProcess.api
    eventgrid_url = AppProcess.eventgrid_url
    call_api = AppProcess.call_api

    def __init__(
        self,
        front: Front,
        settings: dict[str, str],
        function_key: str,
        eventgrid_key: str,
        *,
        app_dir: Path,
        log_dir: Path,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.front = front
        self.base_url = front.base_url
        self.env = settings  # the app settings every instance runs with (as AppProcess.env)
        self.function_key = function_key
        self.eventgrid_key = eventgrid_key
        self.app_dir = app_dir
        self.log_dir = log_dir
        self.drain_seconds = drain_seconds
        self._host_env = host_environment(settings, function_key, eventgrid_key, app_dir)
        self._all: list[Instance] = []
        self._numbers = dict.fromkeys(GROUPS, 0)

    # -- the front ----------------------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """How the front places requests within a group: ``round_robin`` or ``spread`` (settable while it runs)."""
        return self.front.mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self.front.mode = mode

    def placed(
        self, *, call_ref: str | None = None, function: str | None = None, group: str | None = None
    ) -> list[Placed]:
        """The requests the front placed, in order (optionally one call's callbacks, one Event Grid function's
        deliveries, or one group's requests): the instance that answered each, and what the caller got."""
        return [
            p
            for p in self.front.placed()
            if (call_ref is None or p.call_ref == call_ref)
            and (function is None or p.function == function)
            and (group is None or p.group == group)
        ]

    def counts(self, group: str | None = None) -> dict[str, int]:
        """Requests each instance answered (through the front), by instance name."""
        return self.front.counts(group)

    def in_flight(self, instance: Instance) -> int:
        """Requests the front has placed on the instance and not had answered yet."""
        return self.front.in_flight(instance.name)

    # -- the instances ------------------------------------------------------------------------------------------

    def instances(self, group: str | None = None) -> list[Instance]:
        """The instances serving (the front places requests on them), of one group or all."""
        return [i for i in self._all if i.state == "serving" and (group is None or i.group == group)]

    def all_instances(self) -> list[Instance]:
        """Every instance started, in order, whatever became of it."""
        return list(self._all)

    def instance(self, name: str) -> Instance:
        return next(i for i in self._all if i.name == name)

    def add_instance(self, group: str, *, drain_seconds: float | None = None, timeout: float = 30) -> Instance:
        """Scale out: a new instance of ``group``, started, and then given requests by the front."""
        return self._start([group], drain_seconds=drain_seconds, timeout=timeout)[0]

    def _start(
        self, groups: Iterable[str], *, drain_seconds: float | None = None, timeout: float = 30
    ) -> list[Instance]:
        """Start instances (in parallel), wait until each serves, then add them to the front."""
        started = []
        for group in groups:
            if group not in GROUPS:
                raise ValueError(f"no group {group!r}; the groups are {GROUPS}")
            self._numbers[group] += 1
            name = f"{group}-{self._numbers[group]}"
            port = free_port()
            bound = self.drain_seconds if drain_seconds is None else drain_seconds
            log_path = self.log_dir / f"{name}.log"
            process = launch_host(self.app_dir, port, self._host_env, log_path, "--drain-seconds", f"{bound:g}")
            instance = Instance(name, group, port, process, log_path, bound)
            self._all.append(instance)
            started.append(instance)
        for instance in started:
            # A path no function serves: devhost answers 404 without invoking anything, so that an instance's log
            # lists only invocations placed on it by the front.
            wait_serving(instance.base_url, instance.process, instance.log_path, timeout, path=READY_PATH)
        for instance in started:
            instance.state = "serving"
            self.front.add(instance.name, instance.group, instance.base_url)
        return started

    def drain(self, instance: Instance) -> int:
        """Scale in: the front places no new request on the instance (and waits until those it placed have reached
        it), then SIGTERM: devhost closes its listener and lets the requests in hand finish, for at most its drain
        bound. Returns its exit status (0: everything it held finished; 1: cut short at the bound).
        RuntimeError if it is still running past its bound."""
        self.front.stop_sending(instance.name)
        self.front.wait_sent(instance.name)
        instance.state = "draining"
        if instance.process.poll() is None:
            instance.process.send_signal(signal.SIGTERM)
        try:
            code = instance.process.wait(timeout=instance.drain_seconds + EXIT_GRACE)
        except subprocess.TimeoutExpired:
            instance.process.kill()
            instance.process.wait(timeout=10)
            instance.state = "killed"
            raise RuntimeError(
                f"{instance.name} did not exit within its drain bound ({instance.drain_seconds:g}s)"
            ) from None
        finally:
            self.front.remove(instance.name)
        instance.state = "stopped"
        return code

    def kill(self, instance: Instance) -> None:
        """SIGKILL, as when an instance dies: what it held is lost (the front answers those requests 502, their
        senders retry). The front is not told: the next request it places there finds the connection refused and
        goes to another instance."""
        instance.process.kill()
        instance.process.wait(timeout=10)
        instance.state = "killed"

    def recycle(self, instance: Instance, *, graceful: bool = True) -> Instance:
        """Replace an instance as the platform recycles one: a new instance of its group first, then the old one
        drained (or, with ``graceful=False``, killed). The new instance."""
        fresh = self.add_instance(instance.group, drain_seconds=instance.drain_seconds)
        if graceful:
            self.drain(instance)
        else:
            self.kill(instance)
            self.front.remove(instance.name)
        return fresh

    # -- as AppProcess ------------------------------------------------------------------------------------------

    def logs(self) -> str:
        """Every instance's log, each under a heading naming it."""
        parts = []
        for i in self._all:
            text = i.logs() if i.log_path.exists() else ""
            parts.append(f"===== {i.name} ({i.group}, port {i.port}, {i.state}) =====\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every instance (SIGTERM: each drains; killed if still there after its bound) and the front."""
        running = [i for i in self._all if i.process.poll() is None]
        for i in running:
            self.front.remove(i.name)
            i.process.send_signal(signal.SIGTERM)
        for i in running:
            try:
                i.process.wait(timeout=i.drain_seconds + EXIT_GRACE)
            except subprocess.TimeoutExpired:
                i.process.kill()
                i.process.wait(timeout=10)
            if i.state in ("starting", "serving", "draining"):
                i.state = "stopped"
        self.front.stop()


def start_cluster(
    sim: Any,
    storage_connection: str,
    *,
    http_instances: int = 3,
    eventgrid_instances: int | dict[str, int] = 1,
    mode: str = "round_robin",
    routing: dict[str, Any] | None = None,
    flows: dict[str, Any] | None = None,
    subscribe: bool = True,
    timeout: float = 30,
    app_dir: Path | None = None,
    drain_seconds: float = DRAIN_SECONDS,
    **extra: str,
) -> Cluster:
    """The app (of this checkout, or of ``app_dir``) as a cluster: ``http_instances`` for the HTTP group and
    ``eventgrid_instances`` for each Event Grid function's group (a number for each, or a number per function), behind
    a front in ``mode``; subscribed to the simulator's Event Grid through the front unless ``subscribe`` is False.
    The other arguments are ``start_app``'s."""
    app_dir = app_dir or ROOT
    host_json = json.loads((app_dir / "host.json").read_text())
    route_prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    front = Front(mode, route_prefix=route_prefix, eventgrid_functions=EVENTGRID_FUNCTIONS)
    base_url = front.start()
    port = int(base_url.rsplit(":", 1)[1])
    settings = app_settings(sim, storage_connection, port, routing=routing, flows=flows, **extra)
    cluster = Cluster(
        front,
        settings,
        secrets.token_urlsafe(24),
        secrets.token_urlsafe(24),
        app_dir=app_dir,
        log_dir=Path(tempfile.mkdtemp(prefix="cluster-")),
        drain_seconds=drain_seconds,
    )
    per_function = (
        eventgrid_instances
        if isinstance(eventgrid_instances, dict)
        else dict.fromkeys(EVENTGRID_FUNCTIONS, eventgrid_instances)
    )
    sizes = {HTTP_GROUP: http_instances, **{f: per_function.get(f, 0) for f in EVENTGRID_FUNCTIONS}}
    try:
        cluster._start([group for group, n in sizes.items() for _ in range(n)], timeout=timeout)
        if subscribe:
            subscribe_eventgrid(sim, cluster)  # type: ignore[arg-type]  # an AppProcess in all it uses
    except BaseException:
        cluster.stop()
        raise
    return cluster

