"""One Table Storage layer for every store: the table client, safe keys, a table made on first use, and one ETag
compare-and-swap.

The stores (``core.calls.state``, ``core.records.store``, ``core.outbound.campaigns``, ``core.outbound.masking``,
``core.outbound.dial_cap``) say what a row holds; how a row is read, written only if unchanged, and written again
after a conflict is said here once. The SDK is imported on first use, not at module import (a cold start pays for
what it uses).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Self

from core.platform.observability import count
from core.platform.transport import transport

log = logging.getLogger("core.platform.tables")
UNSAFE_KEY_CHARS = frozenset("/\\#?")


def table_client(connection_string: str | None, endpoint: str | None, table: str) -> Any:
    """A TableClient: by connection string (Azurite, or a key), else by endpoint with the managed identity."""
    from azure.data.tables import TableClient

    if connection_string:
        return TableClient.from_connection_string(connection_string, table_name=table, **transport())
    from azure.identity import DefaultAzureCredential

    return TableClient(endpoint=endpoint or "", table_name=table, credential=DefaultAzureCredential(), **transport())


def row_key(value: str) -> str:
    """A Table Storage key for an id: the id itself (ACS's are GUIDs), or its hash when the id holds what keys
    may not (``/ \\ # ?``, control characters) or is too long, so an odd id is handled, never a 500."""
    if value and len(value) <= 200 and value.isprintable() and not UNSAFE_KEY_CHARS & set(value):
        return value
    return "h" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def provisioned(exc: Exception) -> bool:
    """Whether creating a table or container failed only because it is there already, or because the app may not
    create it: in Azure its role is scoped to the table or container itself, which the deployment made (a 403)."""
    from azure.core.exceptions import ResourceExistsError

    return isinstance(exc, ResourceExistsError) or getattr(exc, "status_code", None) == 403


def create_if_missing(create: Callable[[], Any]) -> None:
    """Create a table or container; one that is there already, or that the deployment made, is no failure."""
    try:
        create()
    except Exception as exc:
        if not provisioned(exc):
            raise


class TableBacked:
    """A store over one Table Storage table, which it creates on first use (locally; Azure's is deployed)."""

    _table: Any
    _ensured: bool = False

    def __init__(self, table: Any = None) -> None:
        self._table = table
        self._ensured = False

    @classmethod
    def connect(cls, connection_string: str | None, endpoint: str | None, table: str) -> Self:
        return cls(table_client(connection_string, endpoint, table))

    def _ensure(self) -> None:
        if not self._ensured:
            create_if_missing(self._table.create_table)
            self._ensured = True


class RowLocks:
    """A lock per row key, for one process's changes of a row to take turns (``mutate``'s ``lock``): waiting for the
    other change costs one write, where meeting it on the ETag costs a failed write, a read and the write again.
    A key's lock lives while some change holds it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    def __call__(self, key: str) -> Any:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.RLock()
            return lock


class Conflict(Exception):
    """A conditional write lost: the row changed, appeared or went since it was read."""


def get(table: Any, partition: str, row: str, **options: Any) -> Any | None:
    """One entity (its ETag in ``.metadata``), or None when there is no such row."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return table.get_entity(partition_key=partition, row_key=row, **options)
    except ResourceNotFoundError:
        return None


def put(table: Any, entity: dict[str, Any], etag: str | None, delete: bool = False) -> Any:
    """Write a row read with ``etag`` only if it is unchanged (If-Match): replace it, or remove it when ``delete``;
    with no ETag (no row was read), create it. The SDK's answer (the new ETag); ``Conflict`` when the row moved on."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

    if etag is None:
        try:
            return table.create_entity(entity)
        except ResourceExistsError:
            raise Conflict() from None
    guard = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
    try:
        if delete:
            return table.delete_entity(partition_key=entity["PartitionKey"], row_key=entity["RowKey"], **guard)
        return table.update_entity(entity, mode="replace", **guard)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise Conflict() from None


def delete(table: Any, partition: str, row: str) -> None:
    """Remove a row, unconditionally; one that is not there is fine."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        table.delete_entity(partition_key=partition, row_key=row)
    except ResourceNotFoundError:
        pass


def jitter(low: float, high: float, start: int = 1) -> Callable[[int], float]:
    """A pause before the next try that grows with the tries: uniform in [low, high], times (attempt + start)."""
    return lambda attempt: random.uniform(low, high) * (attempt + start)


def mutate[V, R](
    read: Callable[[], tuple[V, str | None]],
    change: Callable[[V], R],
    write: Callable[[V, str | None], Any],
    *,
    attempts: int,
    what: str,
    gave_up: Callable[[str], Exception],
    pause: Callable[[int], float],
    recall: Callable[[], tuple[V, str] | None] | None = None,
    recheck: type[Exception] | tuple[type[Exception], ...] = (),
    lock: AbstractContextManager[Any] | None = None,
    logger: logging.Logger = log,
) -> tuple[V, R]:
    """Read, change, write back if nobody wrote in between; else read again and redo the change, ``attempts`` times
    at most, then raise ``gave_up(message)``. The value and what ``change`` returned.

    ``read`` gives a value and its ETag (None: no row yet, for ``write`` to create); ``write`` (usually ``put``)
    raises ``Conflict`` when the row moved on. ``recall`` gives a copy known without a read (StateStore's
    per-process cache) for the first try: a conflict on it, or a ``recheck`` the change raised seeing it, reads the
    row and tries again at once. ``lock`` is held throughout (one process's changes of a row take turns)."""
    with lock if lock is not None else nullcontext():
        for attempt in range(attempts):
            known = recall() if recall is not None and attempt == 0 else None
            value, etag = known or read()
            try:
                result = change(value)
            except recheck:
                if known:
                    continue  # decided on the remembered copy: make sure on the row itself
                raise
            try:
                write(value, etag)
            except Conflict as exc:
                # Counted as what was written without the row's id ("state of <ref>" -> "state").
                count(f"conflict {what.split(' of ', 1)[0]}" + (" (cached copy)" if known else ""))
                if known:
                    continue  # written elsewhere since this process last saw the row: read it now
                reason = f" ({exc})" if str(exc) else ""
                logger.info("%s changed concurrently%s; retrying (%d)", what, reason, attempt + 1)
                wait = pause(attempt)
                if wait > 0:
                    time.sleep(wait)
                continue
            return value, result
    raise gave_up(f"{what}: gave up after {attempts} conflicting updates")
