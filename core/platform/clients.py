"""Clients for ACS and storage, made once per process and kept (with their connection pools).

The SDKs are imported here, on first use, not at module import: a cold start that only has to
answer an IncomingCall pays for the Call Automation SDK and nothing else.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from core.platform.settings import Settings
from core.platform.transport import transport

if TYPE_CHECKING:
    from azure.communication.callautomation import CallAutomationClient

    from core.calls.state import EventFilter, StateStore
    from core.outbound.campaigns import CampaignStore
    from core.outbound.dial_cap import DialCap
    from core.outbound.masking import MaskingStore
    from core.records.store import RecordStore

_lock = threading.RLock()  # factories call each other (the copier makes a blob client)
_cache: dict[str, Any] = {}


def _once(key: str, make: Any) -> Any:
    value = _cache.get(key)
    if value is None:
        with _lock:
            value = _cache.get(key)
            if value is None:
                value = _cache[key] = make()
                freeze_long_lived_objects()
    return value


def freeze_long_lived_objects() -> None:
    """Put what the process holds now (modules, SDK clients and their imports, settings, flows: kept for its
    life) out of the garbage collector's way. A full collection otherwise walks all of it while every request
    in flight waits: about 30 ms each time, found in the tail of bench/callback_latency.py. Called when such
    long-lived things have just been made; what was frozen is never freed (a request's objects in flight at
    that moment included: a one-time few kilobytes)."""
    import gc

    gc.freeze()


def credential() -> Any:
    def make() -> Any:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    return _once("credential", make)


def call_automation(settings: Settings) -> CallAutomationClient:
    def make() -> CallAutomationClient:
        from azure.communication.callautomation import CallAutomationClient
        from azure.core.credentials import AzureKeyCredential

        if settings.acs_access_key:
            # Not from_connection_string: it would rewrite an http:// endpoint (the local simulator) to https.
            return CallAutomationClient(
                settings.acs_endpoint, AzureKeyCredential(settings.acs_access_key), **transport()
            )
        return CallAutomationClient(settings.acs_endpoint, credential(), **transport())

    return _once("acs", make)


def state_store(settings: Settings) -> StateStore:
    from core.calls.state import StateStore

    s = settings.storage
    return _once("state", lambda: StateStore.connect(s.connection_string, s.table_endpoint, s.state_table))


def event_filter(settings: Settings) -> EventFilter:
    from core.calls.state import EventFilter

    s = settings.storage
    return _once("events", lambda: EventFilter.connect(s.connection_string, s.table_endpoint, s.events_table))


def blob_service(settings: Settings) -> Any:
    def make() -> Any:
        from azure.storage.blob import BlobServiceClient

        s = settings.storage
        if s.connection_string:
            return BlobServiceClient.from_connection_string(s.connection_string)
        return BlobServiceClient(s.blob_endpoint or "", credential=credential())

    return _once("blob", make)


def http_session() -> Any:
    """One requests session (the HTTP library the SDKs use), pooling connections to ACS's recording hosts."""

    def make() -> Any:
        from core.recordings.urls import recording_session

        return recording_session()  # no proxies from the environment, never a redirect

    return _once("http", make)


def recording_copier(settings: Settings) -> Any:
    def make() -> Any:
        from core.recordings.auth import RecordingAuth
        from core.recordings.copier import RecordingCopier
        from core.recordings.urls import HostAllowList

        rec = settings.recording
        auth = RecordingAuth(settings.acs_endpoint, settings.acs_access_key,
                             None if settings.acs_access_key else credential())
        container = blob_service(settings).get_container_client(rec.container)
        return RecordingCopier(container=container, session=http_session(), auth=auth,
                               allow=HostAllowList(rec.allowed_hosts), delete_after_copy=rec.delete_after_copy,
                               split=rec.split_participants)

    return _once("copier", make)


def outbound_table(settings: Settings) -> Any:
    """The table of campaigns, number-masking sessions and the daily dial count (OUTBOUND_TABLE)."""
    from core.platform.tables import table_client

    s = settings.storage
    return _once("outbound", lambda: table_client(s.connection_string, s.table_endpoint, s.outbound_table))


def campaign_store(settings: Settings) -> CampaignStore:
    from core.outbound.campaigns import CampaignStore

    return _once("campaigns", lambda: CampaignStore(outbound_table(settings)))


def masking_store(settings: Settings) -> MaskingStore:
    from core.outbound.masking import MaskingStore

    return _once("masking", lambda: MaskingStore(outbound_table(settings)))


def dial_cap(settings: Settings) -> DialCap:
    """The daily cap on calls placed (DIAL_DAILY_CAP), one per process and cap."""
    from core.outbound.dial_cap import DialCap

    cap = settings.dialing.daily_cap
    return _once(f"dial_cap:{cap}", lambda: DialCap(outbound_table(settings), cap))


def call_records(settings: Settings) -> RecordStore:
    from core.records.store import RecordStore

    s = settings.storage
    return _once("records", lambda: RecordStore.connect(s.connection_string, s.table_endpoint, s.records_table))


def reset() -> None:
    """Forget every client (tests that change settings)."""
    with _lock:
        _cache.clear()
