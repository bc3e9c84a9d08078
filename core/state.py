"""Per-call state and the duplicate-event filter, in Azure Table Storage.

State is one entity per call (partition = the call's reference from its callback URL), stored
as JSON with the entity's ETag: every change is a compare-and-swap, so two callbacks that race
cannot corrupt it, and any instance of a scaled-out app can take the next callback.

The event filter claims an event id before its handler runs and marks it done after; a
failed handler releases the claim, so the redelivery is processed rather than swallowed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from .flows.actions import Action
from .observability import timed

log = logging.getLogger("core.state")
T = TypeVar("T")
HISTORY_LIMIT = 60
INDEX_PREFIX = "ccid-"


class CallState(BaseModel):
    """Everything the app remembers about one call between callbacks."""

    call_ref: str
    flow: str = ""
    node: str = ""
    seq: int = 0
    attempt: int = 0
    status: Literal["answering", "dialing", "connected", "transferring", "transferred", "ended"] = "answering"
    caller: str = ""
    callee: str = ""
    call_connection_id: str = ""
    server_call_id: str = ""
    correlation_id: str = ""
    participants: list[str] = Field(default_factory=list)
    vars: dict[str, str] = Field(default_factory=dict)
    invitations: dict[str, str] = Field(default_factory=dict)  # operation context -> invitation id
    simring: list[str] = Field(default_factory=list)
    simring_failed: int = 0
    simring_timeout: int = 30
    campaign: str = ""  # id of the campaign that placed this call, if any
    recording_id: str = ""
    recording_state: str = ""
    continuous_dtmf: bool = False
    handled: list[str] = Field(default_factory=list)  # ids of the latest events already planned
    pending: list[Action] = Field(default_factory=list)
    outcome: dict[str, Any] = Field(default_factory=dict)
    history: list[str] = Field(default_factory=list)
    stale_events: int = 0
    connected_at: str = ""  # times of the app's leg (CallConnected, and the event that ended it)
    ended_at: str = ""

    def mark_handled(self, event_id: str) -> None:
        self.handled.append(event_id)
        del self.handled[:-HISTORY_LIMIT]

    def note(self, text: str) -> None:
        self.history.append(text)
        del self.history[:-HISTORY_LIMIT]


class StateConflict(Exception):
    """Someone else changed the state since it was read."""


class StateNotFound(Exception):
    """No state for this call: the callback is for a call this app did not set up (yet)."""


def _table_client(connection_string: str | None, endpoint: str | None, table: str) -> Any:
    from azure.data.tables import TableClient

    if connection_string:
        return TableClient.from_connection_string(connection_string, table_name=table)
    from azure.identity import DefaultAzureCredential

    return TableClient(endpoint=endpoint or "", table_name=table, credential=DefaultAzureCredential())


class StateStore:
    """CallState rows keyed by call reference, updated with ETag concurrency."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._ensured = False

    @classmethod
    def connect(cls, connection_string: str | None, endpoint: str | None, table: str) -> StateStore:
        return cls(_table_client(connection_string, endpoint, table))

    def _ensure(self) -> None:
        if not self._ensured:
            from azure.core.exceptions import ResourceExistsError

            try:
                self._table.create_table()
            except ResourceExistsError:
                pass
            self._ensured = True

    def ping(self) -> None:
        """Reach the table (creating it if needed): raises when storage is not there."""
        self._ensure()
        next(iter(self._table.query_entities("PartitionKey eq 'health'", results_per_page=1)), None)

    @timed("storage")
    def get(self, call_ref: str) -> tuple[CallState, str]:
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure()
        try:
            entity = self._table.get_entity(partition_key=call_ref, row_key="state")
        except ResourceNotFoundError:
            raise StateNotFound(call_ref) from None
        return CallState.model_validate_json(entity["data"]), entity.metadata["etag"]

    @timed("storage")
    def create(self, state: CallState) -> bool:
        """Insert; False when a row already exists (a redelivered event set it up before)."""
        from azure.core.exceptions import ResourceExistsError

        self._ensure()
        try:
            self._table.create_entity(self._entity(state))
        except ResourceExistsError:
            return False
        return True

    @timed("storage")
    def replace(self, state: CallState, etag: str) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            meta = self._table.update_entity(
                self._entity(state), mode="replace", etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise StateConflict(state.call_ref) from None
        return meta["etag"]

    def mutate(self, call_ref: str, change: Callable[[CallState], T], attempts: int = 8) -> tuple[CallState, T]:
        """Read, change, write back; on a conflict read again and redo the change."""
        for attempt in range(attempts):
            state, etag = self.get(call_ref)
            result = change(state)
            try:
                self.replace(state, etag)
                return state, result
            except StateConflict:
                log.info("state of %s changed concurrently; retrying (%d)", call_ref, attempt + 1)
                time.sleep(0.005 * (attempt + 1))
        raise StateConflict(f"{call_ref}: gave up after {attempts} conflicting updates")

    @timed("storage")
    def find_by_server_call(self, server_call_id: str) -> CallState | None:
        """The app's state of a call, by the service's server call id (recording events carry only that)."""
        self._ensure()
        escaped = server_call_id.replace("'", "''")
        for entity in self._table.query_entities(f"serverCallId eq '{escaped}'"):
            return CallState.model_validate_json(entity["data"])
        return None

    @timed("storage")
    def index(self, call_connection_id: str, call_ref: str) -> None:
        """Remember which call a call connection id belongs to (the control API is addressed by it)."""
        if call_connection_id:
            self._ensure()
            self._table.upsert_entity(
                {"PartitionKey": INDEX_PREFIX + call_connection_id, "RowKey": "ref", "callRef": call_ref}
            )

    @timed("storage")
    def lookup(self, call_connection_id: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure()
        try:
            return self._table.get_entity(partition_key=INDEX_PREFIX + call_connection_id, row_key="ref")["callRef"]
        except ResourceNotFoundError:
            return None

    @staticmethod
    def _entity(state: CallState) -> dict[str, Any]:
        return {
            "PartitionKey": state.call_ref,
            "RowKey": "state",
            "data": state.model_dump_json(),
            "status": state.status,
            "callConnectionId": state.call_connection_id,
            "serverCallId": state.server_call_id,
        }


class EventFilter:
    """Drops events already handled; lets a redelivery of a failed event through."""

    def __init__(self, table: Any, lease_seconds: float = 60.0) -> None:
        self._table = table
        self._lease = lease_seconds
        self._ensured = False

    @classmethod
    def connect(cls, connection_string: str | None, endpoint: str | None, table: str) -> EventFilter:
        return cls(_table_client(connection_string, endpoint, table))

    def _ensure(self) -> None:
        if not self._ensured:
            from azure.core.exceptions import ResourceExistsError

            try:
                self._table.create_table()
            except ResourceExistsError:
                pass
            self._ensured = True

    @timed("storage")
    def claim(self, scope: str, event_id: str) -> bool:
        """True: go ahead. False: done already, or being handled right now by another delivery."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        self._ensure()
        entity = {"PartitionKey": scope, "RowKey": event_id, "status": "processing", "until": time.time() + self._lease}
        try:
            self._table.create_entity(entity)
            return True
        except ResourceExistsError:
            pass
        existing = self._table.get_entity(partition_key=scope, row_key=event_id)
        if existing["status"] == "done" or existing.get("until", 0) > time.time():
            return False
        # The earlier claim expired (its handler died): take it over.
        try:
            self._table.update_entity(
                entity, mode="replace", etag=existing.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            return False
        return True

    @timed("storage")
    def done(self, scope: str, event_id: str) -> None:
        self._table.upsert_entity({"PartitionKey": scope, "RowKey": event_id, "status": "done", "until": 0.0})

    @timed("storage")
    def release(self, scope: str, event_id: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._table.delete_entity(partition_key=scope, row_key=event_id)
        except ResourceNotFoundError:
            pass


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
