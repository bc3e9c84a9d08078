"""The app's dependencies (settings, stores, flow engine, executor, authenticator), built once per process.

Every handler gets them with its input (``handler(input, services)``): the one way code reaches a store or a
client, so that a test hands in its own and nothing reaches for a global.

The write-ahead path a mid-call event takes (plan, store, act, record) is ``core.calls.ledger.CallLedger``; the table of
mid-call events and the hooks of a call's end are wired in ``handlers.callbacks``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from core.calls.callback_auth import CallbackAuthenticator, callback_url
from core.calls.executor import Executor
from core.calls.ledger import LEASE_SECONDS, CallLedger
from core.calls.state import EventFilter, StateStore
from core.outbound.campaigns import CampaignStore
from core.outbound.dial_cap import DialCap
from core.outbound.masking import MaskingStore
from core.platform import clients
from core.platform.settings import Settings, get_settings
from core.records.store import RecordStore

from .flows.engine import FlowEngine, RecordingOptions

log = logging.getLogger("core.services")


@dataclass
class Services:
    settings: Settings
    store: StateStore  # the calls' state (and the mid-call duplicate filter)
    events: EventFilter  # Event Grid's duplicate filter (recording events)
    engine: FlowEngine
    executor: Executor
    auth: CallbackAuthenticator
    records: RecordStore | None = None
    campaigns: CampaignStore | None = None
    masking: MaskingStore | None = None
    dial_cap: DialCap | None = None
    lease_seconds: float = LEASE_SECONDS
    ledger: CallLedger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = CallLedger(self.store, self.engine, self.executor, self.lease_seconds)

    @cached_property
    def copier(self) -> Any:
        """The recording copier (core.recordings.copier), made on first use: only the recordings function needs it,
        and its imports (Blob Storage, requests) would slow every other function's cold start."""
        return clients.recording_copier(self.settings)

    def callback_url(self, call_ref: str) -> str:
        return callback_url(self.settings.callback_base_url, self.settings.callback_secret, call_ref)


_services: Services | None = None
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


def build(settings: Settings) -> Services:
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
    return Services(
        settings=settings,
        store=clients.state_store(settings),
        events=clients.event_filter(settings),
        records=clients.call_records(settings),
        campaigns=clients.campaign_store(settings),
        masking=clients.masking_store(settings),
        dial_cap=clients.dial_cap(settings),

        engine=flows_engine,
        executor=Executor(clients.call_automation(settings), policy=settings.dialing.policy),
        auth=CallbackAuthenticator(
            openid_config_url=settings.openid_config_url,
            issuer=settings.jwt_issuer,
            audience=settings.acs_resource_id,
            secret=settings.callback_secret,
            previous_secret=settings.callback_secret_previous,
        ),
    )


def get_services() -> Services:
    """The process's services, built on first use from the app settings."""
    global _services
    if _services is None:
        with _lock:
            if _services is None:
                from core.platform.observability import configure

                settings = get_settings()
                configure(settings.log_level, settings.appinsights_connection_string)
                _services = build(settings)
                clients.freeze_long_lived_objects()
    return _services


def reset() -> None:
    global _services
    _services = None
    clients.reset()
