"""``Repeatability-Request-ID`` / ``Repeatability-First-Sent`` handling, as the service does it.

A request repeated with the same id gets the first response back and is not acted on again,
however many times it arrives and even while the first is still being processed.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from .errors import AcsError

WINDOW = timedelta(minutes=5)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str]


class RepeatabilityCache:
    def __init__(self) -> None:
        self._responses: dict[str, StoredResponse] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.replays = 0

    @staticmethod
    def validate(request_id: str | None, first_sent: str | None, now: datetime | None = None) -> str | None:
        if request_id is None:
            if first_sent is not None:
                raise AcsError(400, "BadRequest", "Repeatability-First-Sent requires Repeatability-Request-ID.")
            return None
        if not _UUID.match(request_id):
            raise AcsError(
                400, "BadRequest", "Repeatability-Request-ID must be a UUID.", target="Repeatability-Request-ID"
            )
        if first_sent is None:
            raise AcsError(400, "BadRequest", "Repeatability-Request-ID requires Repeatability-First-Sent.")
        try:
            sent = parsedate_to_datetime(first_sent)
        except (TypeError, ValueError):
            raise AcsError(400, "BadRequest", "Repeatability-First-Sent must be an HTTP date.") from None
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=UTC)
        if (now or datetime.now(UTC)) - sent > WINDOW:
            raise AcsError(
                400, "BadRequest", "Repeatability-First-Sent is older than the repeatability window (5 minutes)."
            )
        return str(uuid.UUID(request_id))

    async def run(self, key: str | None, act: Callable[[], Awaitable[StoredResponse]]) -> tuple[StoredResponse, bool]:
        """Run ``act`` once per key; return (response, replayed)."""
        if key is None:
            return await act(), False
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._responses:
                self.replays += 1
                return self._responses[key], True
            response = await act()
            # Errors caused by the client are final; a 5xx may be retried and acted on.
            if response.status < 500:
                self._responses[key] = response
            return response, False
