"""Number masking sessions: two parties who reach each other only through one of the app's numbers.

A session is two rows of the outbound table (setting ``OUTBOUND_TABLE``) in the masked number's
partition, one per party, each naming the other (the peer). An IncomingCall to the masked number
from one party is answered into the masking flow, which connects the peer with the masked number
as caller id (routing action ``mask``): neither side ever sees the other's number. Both rows are
written in one transaction, each conditional on what was read, so two requests cannot pair one
party with two peers on the same number.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from core.platform import tables
from core.platform.tables import TableBacked

PREFIX = "mask-"


def plain(raw_id: str) -> str:
    """Sessions hold numbers as +E.164 (ACS users as raw ids); events name phones as 4:+E.164."""
    return raw_id[2:] if raw_id.startswith("4:") else raw_id


class MaskingSession(BaseModel):
    id: str
    masked_number: str
    party_a: str
    party_b: str
    created_at: str
    expires_at: str

    def peer_of(self, party: str) -> str | None:
        return {self.party_a: self.party_b, self.party_b: self.party_a}.get(party)

    def expired(self, now: datetime) -> bool:
        return datetime.fromisoformat(self.expires_at) <= now


class MaskingConflict(Exception):
    """A party is already in another live session on that masked number."""

    def __init__(self, party: str) -> None:
        super().__init__(party)
        self.party = party


class MaskingStore(TableBacked):
    """Both rows of a session in one entity group transaction, each conditional on what was read: not
    ``tables.mutate``, as a lost race is a conflict to report (the party is taken), not a change to redo."""

    def _row(self, masked_number: str, party: str) -> Any | None:
        return tables.get(self._table, PREFIX + masked_number, party)

    def create(self, session: MaskingSession, now: datetime | None = None) -> None:
        """Store the session; the same pair again renews it. Raises MaskingConflict if a party is taken."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.data.tables import TableTransactionError

        self._ensure()
        now = now or datetime.now(UTC)
        operations: list[Any] = []
        for party in (session.party_a, session.party_b):
            entity = {
                "PartitionKey": PREFIX + session.masked_number,
                "RowKey": party,
                "peer": session.peer_of(party),
                "session": session.id,
                "data": session.model_dump_json(),
            }
            existing = self._row(session.masked_number, party)
            if existing is None:
                operations.append(("create", entity))
                continue
            current = MaskingSession.model_validate_json(existing["data"])
            if current.peer_of(party) != session.peer_of(party) and not current.expired(now):
                raise MaskingConflict(party)
            etag = existing.metadata["etag"]
            operations.append(
                ("update", entity, {"mode": "replace", "etag": etag, "match_condition": MatchConditions.IfNotModified})
            )
        try:
            self._table.submit_transaction(operations)
        except (TableTransactionError, ResourceExistsError, ResourceModifiedError):
            raise MaskingConflict(session.party_a) from None  # changed since read: another request won

    def find(self, masked_number: str, caller: str, now: datetime | None = None) -> MaskingSession | None:
        """The live session in which ``caller`` may call ``masked_number``, if any."""
        self._ensure()
        row = self._row(plain(masked_number), plain(caller))
        if row is None:
            return None
        session = MaskingSession.model_validate_json(row["data"])
        return None if session.expired(now or datetime.now(UTC)) else session


def new_session(session_id: str, masked: str, a: str, b: str, ttl_minutes: int, now: datetime) -> MaskingSession:
    return MaskingSession(
        id=session_id,
        masked_number=plain(masked),
        party_a=plain(a),
        party_b=plain(b),
        created_at=now.isoformat(),
        expires_at=(now + timedelta(minutes=ttl_minutes)).isoformat(),
    )
