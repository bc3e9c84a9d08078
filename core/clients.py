"""Clients for ACS and storage, made once per process and kept (with their connection pools).

The SDKs are imported here, on first use, not at module import: a cold start that only has to
answer an IncomingCall pays for the Call Automation SDK and nothing else.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .settings import Settings

if TYPE_CHECKING:
    from azure.communication.callautomation import CallAutomationClient

    from .state import EventFilter, StateStore

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def _once(key: str, make: Any) -> Any:
    value = _cache.get(key)
    if value is None:
        with _lock:
            value = _cache.get(key)
            if value is None:
                value = _cache[key] = make()
    return value


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
            return CallAutomationClient(settings.acs_endpoint, AzureKeyCredential(settings.acs_access_key))
        return CallAutomationClient(settings.acs_endpoint, credential())

    return _once("acs", make)


def state_store(settings: Settings) -> StateStore:
    from .state import StateStore

    s = settings.storage
    return _once("state", lambda: StateStore.connect(s.connection_string, s.table_endpoint, s.state_table))


def event_filter(settings: Settings) -> EventFilter:
    from .state import EventFilter

    s = settings.storage
    return _once("events", lambda: EventFilter.connect(s.connection_string, s.table_endpoint, s.events_table))


def reset() -> None:
    """Forget every client (tests that change settings)."""
    with _lock:
        _cache.clear()
