"""The app's moving parts (settings, stores, flow engine, executor, authenticator), assembled once per process.

The write-ahead path a mid-call event takes (plan, store, act, record) is ``core.ledger.CallLedger``; the table of
mid-call events and the hooks of a call's end are wired in ``handlers.callbacks``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from . import clients
from .callback_auth import CallbackAuthenticator, callback_url
from .executor import Executor
from .flows.engine import FlowEngine, RecordingOptions
from .ledger import LEASE_SECONDS, CallLedger
from .settings import Settings, get_settings
from .state import EventFilter, StateStore

log = logging.getLogger("core.runtime")


@dataclass
class Runtime:
    settings: Settings
    store: StateStore
    events: EventFilter
    engine: FlowEngine
    executor: Executor
    auth: CallbackAuthenticator
    lease_seconds: float = LEASE_SECONDS
    ledger: CallLedger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = CallLedger(self.store, self.engine, self.executor, self.lease_seconds)

    def callback_url(self, call_ref: str) -> str:
        return callback_url(self.settings.callback_base_url, self.settings.callback_secret, call_ref)


_runtime: Runtime | None = None
_lock = threading.Lock()


def byos_container_url(settings: Settings) -> str | None:
    """With RECORDING_STORAGE=byos, the QA container's URL, which ACS is told to write recordings into."""
    if settings.recording.storage != "byos":
        return None
    container = clients.blob_service(settings).get_container_client(settings.recording.container)
    try:  # ACS writes into it, and does not create it (the deployment does; locally, the app)
        if not container.exists():
            container.create_container()
    except Exception as exc:  # the copy path reports storage trouble; the call must go on
        log.warning("cannot check the recordings container %s: %s", container.url, exc)
    return container.url


def build(settings: Settings) -> Runtime:
    flows_engine = FlowEngine(
        settings.flows,
        RecordingOptions(
            mode=settings.recording.mode,
            channel=settings.recording.channel,
            content=settings.recording.content,
            format=settings.recording.format,
            container_url=byos_container_url(settings),
        ),
    )
    return Runtime(
        settings=settings,
        store=clients.state_store(settings),
        events=clients.event_filter(settings),
        engine=flows_engine,
        executor=Executor(clients.call_automation(settings)),
        auth=CallbackAuthenticator(
            openid_config_url=settings.openid_config_url,
            issuer=settings.jwt_issuer,
            audience=settings.acs_resource_id,
            secret=settings.callback_secret,
            previous_secret=settings.callback_secret_previous,
        ),
    )


def get_runtime() -> Runtime:
    """The process's runtime, built on first use from the app settings."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                from .observability import configure

                settings = get_settings()
                configure(settings.log_level, settings.appinsights_connection_string)
                _runtime = build(settings)
                clients.settle()
    return _runtime


def reset() -> None:
    global _runtime
    _runtime = None
    clients.reset()
