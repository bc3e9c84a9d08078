"""Run the simulator: on the current event loop (CLI) or in a background thread (tests)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from .engine import Config
from .server import Simulator
from .tls import make_certificates, server_context

T = TypeVar("T")


def new_access_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class RunningSimulator:
    """A simulator listening on 127.0.0.1, with what clients need to reach it."""

    def __init__(self, sim: Simulator, runner: web.AppRunner, port: int, tls_port: int | None, ca_file: Path | None):
        self.sim = sim
        self.runner = runner
        self.port = port
        self.tls_port = tls_port
        self.ca_file = ca_file

    @property
    def endpoint(self) -> str:
        return self.sim.config.base_url

    @property
    def access_key(self) -> str:
        return self.sim.access_key

    async def stop(self) -> None:
        """Stop serving and remove what the simulator wrote to temp folders."""
        await self.runner.cleanup()
        if self.ca_file is not None:
            shutil.rmtree(self.ca_file.parent, ignore_errors=True)

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.endpoint}/;accesskey={self.access_key}"


async def start(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    access_key: str | None = None,
    config: Config | None = None,
    tls_port: int | None = None,
    recording_host: str = "sim.asm.skype.com",
    **simulator_kwargs: Any,
) -> RunningSimulator:
    config = config or Config()
    sim = Simulator(config, access_key or new_access_key(), **simulator_kwargs)
    runner = web.AppRunner(sim.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config.base_url = f"http://{host}:{bound}"
    ca_file = None
    bound_tls = None
    if tls_port is not None:
        ca_file, cert, key = make_certificates(Path(tempfile.mkdtemp(prefix="acs-sim-tls-")), recording_host)
        tls_site = web.TCPSite(runner, host, tls_port, ssl_context=server_context(cert, key))
        await tls_site.start()
        bound_tls = tls_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        config.recording_base_url = f"https://{recording_host}:{bound_tls}"
    return RunningSimulator(sim, runner, bound, bound_tls, ca_file)


class SimulatorThread:
    """The simulator on its own loop in a daemon thread: tests talk to it over HTTP like the app does."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="acs-simulator", daemon=True)
        self.running: RunningSimulator | None = None

    def __enter__(self) -> RunningSimulator:
        self._thread.start()
        self.running = self.call(start(**self._kwargs))
        return self.running

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            self.call(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)
