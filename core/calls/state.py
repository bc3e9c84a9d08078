"""Per-call state in Azure Table Storage, which is also the mid-call callbacks' duplicate filter; and the duplicate
filter of Event Grid events.

State is one entity per call (partition = the call's reference from its callback URL), stored as JSON with the
entity's ETag: every change is a compare-and-swap, so two callbacks that race cannot corrupt it, and any instance of
a scaled-out app can take the next callback.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, model_validator

from core.flows.actions import Action
from core.platform import tables
from core.platform.observability import timed
from core.platform.tables import TableBacked, row_key

log = logging.getLogger("core.calls.state")
T = TypeVar("T")
KNOWN_STATES = 4096  # calls whose last known state (and ETag) a process keeps, least recently used dropped
# How often a remembered copy turned out stale (another instance wrote the row since): a moving average over the
# process's recent changes from one. On one instance it stays near 0 and each change saves a read. Behind a front that
# spreads a call's events over N instances it nears 1 - 1/N, and then a copy costs a failed write before the read it
# was to save: above STALE_LIMIT the process reads first, and still starts from its copy one change in PROBE_EVERY, to
# notice when that changes (instances scaled in, a front that keeps a call on one instance).
STALE_LIMIT = 0.5
STALE_WEIGHT = 0.1  # the weight of the latest outcome in the average
PROBE_EVERY = 8
HISTORY_LIMIT = 60
# A mid-call callback is deduplicated in its call's own row (``handled`` and ``leases``, see
# ``core.calls.ledger.CallLedger.advance``), so that marking it planned, and later done, joins the writes the call's
# state needs anyway: a separate filter row would add two round trips to every callback.
#
# An ACS token does not cover the body of its callback, so a captured callback can be replayed for as long as its
# token is accepted (its ``exp`` plus the verifier's leeway). An event id is therefore remembered until the latest
# token it came with can no longer be replayed, however many events the call has had since: the latest
# ``HANDLED_LIMIT`` ids in ``handled`` (with ``handled_until``), older ids that are still replayable as 8-byte
# digests with their time in binary properties of the same row (``handled0``..., ``remembered`` in the model): no
# extra round trip, and a row that stays within Table Storage's limits (``REMEMBERED_CAPACITY``). A call with that
# many replayable ids (only a sender holding valid tokens flooding it) gets new events refused for a while
# (``TooManyEvents``: retried by the sender), never an id forgotten early.
HANDLED_LIMIT = 100  # event ids a call keeps in the clear (at least this many, whatever their age)
REMEMBERED_ENTRY = struct.Struct("<8sI")  # an older id still replayable: its digest, and until when (epoch s)
REMEMBERED_PER_PROPERTY = 65_532 // REMEMBERED_ENTRY.size  # a binary property holds 64 KiB
REMEMBERED_PROPERTIES = 12  # 12 x 64 KiB, with the state's JSON (a string of at most 64 KiB): under 1 MiB an entity
REMEMBERED_CAPACITY = REMEMBERED_PER_PROPERTY * REMEMBERED_PROPERTIES  # 65,532 ids
REMEMBERED_CACHED = 64 * 1024  # bytes of them a process keeps with a call's last known state (else reads the row)
ClaimResult = Literal["claimed", "done", "busy"]
INDEX_PREFIX = "ccid-"
# The server call id -> call reference index (recording events and connect requests carry only the server call id):
# one point read instead of a scan of the whole table by a column, which grows with every call ever kept.
SERVER_CALL_PREFIX = "scid-"


class Lease(BaseModel):
    """An event being handled: by which delivery, until when (epoch seconds) unless renewed."""

    owner: str
    until: float


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
    server_call_indexed: str = ""  # the server call id whose index row is written (see StateStore._index_server_call)
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
    handled_until: list[int] = Field(default_factory=list)  # per id of ``handled``: replayable until (epoch s)
    remembered: bytes = Field(default=b"", exclude=True, repr=False)  # older replayable ids (binary properties)
    leases: dict[str, Lease] = Field(default_factory=dict)  # planned events not finished yet, by event id
    pending: list[Action] = Field(default_factory=list)
    outcome: dict[str, Any] = Field(default_factory=dict)
    history: list[str] = Field(default_factory=list)
    stale_events: int = 0
    connected_at: str = ""  # times of the app's leg (CallConnected, and the event that ended it)
    ended_at: str = ""

    @model_validator(mode="after")
    def _aligned(self) -> CallState:
        missing = len(self.handled) - len(self.handled_until)
        if missing:  # a row from before the times were kept: those ids are kept by count only
            self.handled_until = [0] * missing + self.handled_until if missing > 0 else self.handled_until[-missing:]
        return self

    def remembers(self, event_id: str) -> bool:
        """Whether this event was planned before and may still come again (a redelivery, or a replay)."""
        return event_id in self.handled or (bool(self.remembered) and _find(self.remembered, _digest(event_id)) >= 0)

    def mark_handled(self, event_id: str, until: float = 0.0) -> None:
        """Remember a planned event: among the latest ``HANDLED_LIMIT`` ids whatever their age, and after that until
        ``until`` (when the token it came with stops being accepted). Raises ``TooManyEvents`` when the row cannot
        hold one more id that must be remembered (before changing anything)."""
        now = time.time()
        pushed = len(self.handled) + 1 - HANDLED_LIMIT
        if pushed > 0:
            out = zip(self.handled[:pushed], self.handled_until[:pushed], strict=True)
            self.remembered = _spilled(self.remembered, [(i, u) for i, u in out if u > now], now)
        elif self.remembered and _expired_first(self.remembered, now):
            self.remembered = _spilled(self.remembered, [], now)
        self.handled.append(event_id)
        self.handled_until.append(math.ceil(until))
        if pushed > 0:
            del self.handled[:pushed]
            del self.handled_until[:pushed]

    def remember(self, event_id: str, until: float) -> bool:
        """A planned event came again (with another token): remember it until that token expires too. True when
        that changed the state (it must then be written)."""
        until = math.ceil(until)
        try:
            index = self.handled.index(event_id)
        except ValueError:
            pass
        else:
            if self.handled_until[index] >= until:
                return False
            self.handled_until[index] = until
            return True
        digest = _digest(event_id)
        at = _find(self.remembered, digest) if self.remembered else -1
        if at < 0:
            self.mark_handled(event_id, until)
            return True
        _, known = REMEMBERED_ENTRY.unpack_from(self.remembered, at)
        if known >= until:
            return False
        self.remembered = self.remembered[:at] + REMEMBERED_ENTRY.pack(digest, until) + self.remembered[at + 12 :]
        return True

    def note(self, text: str) -> None:
        self.history.append(text)
        del self.history[:-HISTORY_LIMIT]


def _digest(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _find(remembered: bytes, digest: bytes) -> int:
    """The offset of an id's entry among the remembered ones, or -1."""
    at = remembered.find(digest)
    while at >= 0 and at % REMEMBERED_ENTRY.size:
        at = remembered.find(digest, at + 1)
    return at


def _expired_first(remembered: bytes, now: float) -> bool:
    return REMEMBERED_ENTRY.unpack_from(remembered, 0)[1] <= now


def _spilled(remembered: bytes, spill: list[tuple[str, int]], now: float) -> bytes:
    """The remembered ids without those no longer replayable, and with ``spill`` (ids pushed out of ``handled``)."""
    kept = [entry for entry in REMEMBERED_ENTRY.iter_unpack(remembered) if entry[1] > now]
    kept += [(_digest(i), u) for i, u in spill]
    if len(kept) > REMEMBERED_CAPACITY:
        raise TooManyEvents(f"{len(kept)} replayable event ids; the row holds {REMEMBERED_CAPACITY}")
    return b"".join(REMEMBERED_ENTRY.pack(*entry) for entry in kept)


class StateConflict(tables.Conflict):
    """Someone else changed the state since it was read."""


class TooManyEvents(Exception):
    """A call's row holds as many replayable event ids as it can: a new event must come again later."""


class StateNotFound(Exception):
    """No state for this call: the callback is for a call this app did not set up (yet)."""


class SeenBefore(Exception):
    """Raised by a change that refuses to go on given the state it saw: if that state was this process's
    remembered copy, ``StateStore.mutate`` reads the row and tries again before letting it through."""


class AlreadyHandled(SeenBefore):
    """A duplicate: this event was handled to the end before."""


class HandledElsewhere(SeenBefore):
    """Another delivery of this event holds a live lease on it (or its process died less than a lease ago)."""


# A change starts from the state this process last read or wrote (with its ETag) instead of reading the row again;
# if another instance changed the row meanwhile, the write fails on the ETag and the change is redone on a fresh read.
class StateStore(TableBacked):
    """CallState rows keyed by call reference, updated with ETag concurrency."""

    def __init__(self, table: Any, known_states: int = KNOWN_STATES) -> None:
        super().__init__(table)
        # call_ref -> (state JSON as stored, its remembered ids, its ETag): what this process last read or wrote.
        self._known: OrderedDict[str, tuple[str, bytes, str]] = OrderedDict()
        self._known_limit = known_states
        self._known_lock = threading.Lock()
        self._writer = tables.RowLocks()  # a call's changes in this process take turns
        self._stale_rate = 0.0  # see STALE_LIMIT
        self._recalls = 0
        self._recalled = threading.local()  # (call_ref, etag) of the copy this thread's change started from

    def _remember(self, call_ref: str, data: str, remembered: bytes, etag: str) -> None:
        if len(remembered) > REMEMBERED_CACHED:  # a call flooded with events: its row is read for each change
            self._forget(call_ref)
            return
        with self._known_lock:
            self._known[call_ref] = (data, remembered, etag)
            self._known.move_to_end(call_ref)
            while len(self._known) > self._known_limit:
                self._known.popitem(last=False)

    def _forget(self, call_ref: str) -> None:
        with self._known_lock:
            self._known.pop(call_ref, None)

    def _recall(self, call_ref: str) -> tuple[CallState, str] | None:
        """The copy this process last read or wrote, for a change to start from; None (read the row) while copies
        have mostly been stale lately, but for one change in PROBE_EVERY."""
        with self._known_lock:
            self._recalls += 1
            if self._stale_rate > STALE_LIMIT and self._recalls % PROBE_EVERY:
                return None
            known = self._known.get(call_ref)
        if not known:
            return None
        self._recalled.copy = (call_ref, known[2])
        return _load(known[0], known[1]), known[2]

    def _learn(self, call_ref: str, etag: str, stale: bool) -> None:
        """After a write: if it started from a recalled copy, whether that copy was stale goes into the average."""
        recalled = getattr(self._recalled, "copy", None)
        if recalled is None:
            return
        self._recalled.copy = None
        if recalled == (call_ref, etag):
            with self._known_lock:
                self._stale_rate += STALE_WEIGHT * ((1.0 if stale else 0.0) - self._stale_rate)

    @property
    def stale_rate(self) -> float:
        """How often, lately, this process's remembered copy of a call was stale when a change started from it."""
        return self._stale_rate

    def ping(self) -> None:
        """Reach the table (creating it if needed): raises when storage is not there."""
        self._ensure()
        next(iter(self._table.query_entities("PartitionKey eq 'health'", results_per_page=1)), None)

    @timed("storage")
    def get(self, call_ref: str) -> tuple[CallState, str]:
        self._ensure()
        entity = tables.get(self._table, call_ref, "state")
        if entity is None:
            self._forget(call_ref)
            raise StateNotFound(call_ref)
        remembered = _remembered_of(entity)
        self._remember(call_ref, entity["data"], remembered, entity.metadata["etag"])
        return _load(entity["data"], remembered), entity.metadata["etag"]

    @timed("storage")
    def create(self, state: CallState) -> bool:
        """Insert; False when a row already exists (a redelivered event set it up before)."""
        self._ensure()
        self._index_server_call(state)
        entity = self._entity(state)
        try:
            meta = tables.put(self._table, entity, None)
        except tables.Conflict:
            return False
        if meta and meta.get("etag"):
            self._remember(state.call_ref, entity["data"], state.remembered, meta["etag"])
        return True

    @timed("storage")
    def delete(self, call_ref: str) -> None:
        """Remove a call's state: for a call that never came to be (the service refused to place it)."""
        self._forget(call_ref)
        tables.delete(self._table, call_ref, "state")

    @timed("storage")
    def replace(self, state: CallState, etag: str) -> str:
        self._index_server_call(state)
        entity = self._entity(state)
        try:
            meta = tables.put(self._table, entity, etag)
        except tables.Conflict:
            self._learn(state.call_ref, etag, stale=True)
            self._forget(state.call_ref)
            raise StateConflict(state.call_ref) from None
        self._learn(state.call_ref, etag, stale=False)
        self._remember(state.call_ref, entity["data"], state.remembered, meta["etag"])
        return meta["etag"]

    def _index_server_call(self, state: CallState) -> None:
        """Once the state holds its server call id, the index row that finds it by that id, written before the state
        row that records it done (``server_call_indexed``): once per call, by whichever instance writes the state
        first with the id in it (an upsert of the same row: a write redone after a conflict does no harm)."""
        scid = state.server_call_id
        if not scid or state.server_call_indexed == scid:
            return
        self._table.upsert_entity(
            {"PartitionKey": SERVER_CALL_PREFIX + tables.row_key(scid), "RowKey": "ref", "callRef": state.call_ref}
        )
        state.server_call_indexed = scid

    def mutate(
        self, call_ref: str, change: Callable[[CallState], T], attempts: int = 8, *, fresh: bool = False
    ) -> tuple[CallState, T]:
        """Read, change, write back; on a conflict read again and redo the change (``tables.mutate``).

        ``fresh``: start from the row, never from this process's copy, for a change with an effect outside the row
        (a call-ended hook writing a campaign's results): a change redone after a conflict cannot take back what it
        did on a stale copy, and an idempotent effect keeps the first, stale, version.

        The first try starts from the state this process last read or wrote, when it has one (no read):
        if the row changed since, the write fails on the ETag and the change is redone on a fresh read.
        Changes of one call in this process take turns (a call's events come close together: ``CallConnected``
        and ``ParticipantsUpdated``, a transfer's three): waiting for the other write costs one write, where
        meeting it costs a failed write, a read and the write again. Instances still meet on the ETag."""
        return tables.mutate(
            lambda: self.get(call_ref),
            change,
            self.replace,
            attempts=attempts,
            what=f"state of {call_ref}",
            gave_up=StateConflict,
            pause=tables.jitter(0.005, 0.005),
            recall=None if fresh else (lambda: self._recall(call_ref)),
            recheck=SeenBefore,
            lock=self._writer(call_ref),
            logger=log,
        )

    @timed("storage")
    def find_by_server_call(self, server_call_id: str) -> CallState | None:
        """The app's state of a call, by the service's server call id (recording events carry only that): two point
        reads through the index row. A call whose state was last written before the index existed is not found (its
        recording is still copied, with fewer fields): a scan by column would read the whole table at every event."""
        self._ensure()
        entry = tables.get(self._table, SERVER_CALL_PREFIX + tables.row_key(server_call_id), "ref")
        if entry is None:
            return None
        entity = tables.get(self._table, entry["callRef"], "state")
        if entity is None or entity.get("serverCallId") != server_call_id:
            return None
        return _load(entity["data"], _remembered_of(entity))

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
        self._ensure()
        entity = tables.get(self._table, INDEX_PREFIX + call_connection_id, "ref")
        return None if entity is None else entity["callRef"]

    @staticmethod
    def _entity(state: CallState) -> dict[str, Any]:
        entity = {
            "PartitionKey": state.call_ref,
            "RowKey": "state",
            "data": state.model_dump_json(),
            "status": state.status,
            "callConnectionId": state.call_connection_id,
            "serverCallId": state.server_call_id,
        }
        remembered, step = state.remembered, REMEMBERED_PER_PROPERTY * REMEMBERED_ENTRY.size
        for n, start in enumerate(range(0, len(remembered), step)):  # a write replaces the row: no stale parts
            entity[f"{REMEMBERED_PROPERTY}{n}"] = remembered[start : start + step]
        return entity


REMEMBERED_PROPERTY = "handled"  # binary properties handled0, handled1...: the older replayable ids


def _remembered_of(entity: Any) -> bytes:
    parts = []
    for n in range(REMEMBERED_PROPERTIES):
        part = entity.get(f"{REMEMBERED_PROPERTY}{n}")
        if part is None:
            break
        parts.append(bytes(part))
    return b"".join(parts)


def _load(data: str, remembered: bytes) -> CallState:
    state = CallState.model_validate_json(data)
    state.remembered = remembered
    return state


class Renewer:
    """Leases this process holds, renewed by a background thread while held (every third of the lease), so a
    slow handler keeps what it holds however long it takes, and what a dead process held lapses within the lease.
    A subclass says how one lease is renewed (``_renew``)."""

    _lease: float
    _thread_name = "leases"

    def _start_renewing(self, lease_seconds: float) -> None:
        self._lease = lease_seconds
        self._held: dict[tuple[str, str], tuple[str, float]] = {}  # (scope, event id) -> (token, renewed at)
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def hold(self, scope: str, event_id: str, token: str) -> None:
        with self._held_lock:
            self._held[(scope, event_id)] = (token, time.monotonic())
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_forever, name=self._thread_name, daemon=True)
                self._renewer.start()

    def drop(self, scope: str, event_id: str) -> None:
        with self._held_lock:
            self._held.pop((scope, event_id), None)

    def _renew_forever(self) -> None:
        period = max(self._lease / 3, 0.05)
        while True:
            time.sleep(period / 2)
            self.renew_due(period)

    def renew_due(self, period: float) -> None:
        """Renew the leases held for ``period`` seconds or more (their handlers are still running)."""
        now = time.monotonic()
        with self._held_lock:
            due = [(key, token) for key, (token, renewed) in self._held.items() if now - renewed >= period]
        for (scope, event_id), token in due:
            try:
                renewed = self._renew(scope, event_id, token)
            except Exception as exc:  # storage unreachable: try again next round
                log.warning("could not renew the lease on %s/%s: %s", scope, event_id, exc)
                continue
            with self._held_lock:
                if renewed is None:
                    self._held.pop((scope, event_id), None)  # done, released or taken over meanwhile: not ours
                elif (scope, event_id) in self._held:
                    self._held[(scope, event_id)] = (renewed, time.monotonic())

    def _renew(self, scope: str, event_id: str, token: str) -> str | None:
        """Extend one lease: the token to renew it with next time, or None when it is no longer this process's."""
        raise NotImplementedError


class LeaseKeeper(Renewer):
    """Renews the leases this process holds on events in call states (see ``CallLedger.advance``): a
    compare-and-swap on the call's row, one per lease every third of the lease (handlers rarely run long
    enough to need one). The token is the delivery's owner id."""

    _thread_name = "event-leases"

    def __init__(self, store: StateStore, lease_seconds: float) -> None:
        self._store = store
        self._start_renewing(lease_seconds)

    def _renew(self, call_ref: str, event_id: str, owner: str) -> str | None:
        def extend(state: CallState) -> bool:
            lease = state.leases.get(event_id)
            if lease is None or lease.owner != owner:
                return False
            lease.until = time.time() + self._lease
            return True

        _, ours = self._store.mutate(call_ref, extend)
        return owner if ours else None


# The event filter (for Event Grid events, which have no call state of their own) claims an event id before its
# handler runs and marks it done after; a failed handler releases the claim, so the redelivery is processed rather
# than swallowed. Until a claim left by a process that died expires, a redelivery is told to come back later
# (``busy``), never that it is done.
CLAIM_SHARDS = 32  # partitions a scope's claims spread over (see EventFilter.partition)


class EventFilter(TableBacked, Renewer):
    """Drops events already handled; lets a redelivery of a failed event through.

    A claim holds for ``lease_seconds`` and is renewed (a background thread, every third of the lease)
    while its handler runs, so a slow handler keeps it however long it takes, and a claim whose process
    died (a host killed mid-handler, its storage gone before it could release) lapses within the lease.
    """

    _thread_name = "event-claims"

    def __init__(self, table: Any, lease_seconds: float = 10.0) -> None:
        super().__init__(table)
        self._start_renewing(lease_seconds)  # the token of a claim is its row's ETag

    def claim(self, scope: str, event_id: str) -> bool:
        """True: go ahead. False: done already, or being handled right now by another delivery."""
        return self.try_claim(scope, event_id) == "claimed"

    @staticmethod
    def partition(scope: str, event_id: str) -> str:
        """The partition of an event's claim: ``<scope>-<shard>``, the shard from the event id's hash. One partition
        per scope took every claim, renewal and release of that kind of event: 2 to 3 writes per recording, past a
        partition's 2,000 entities per second at about 800 recorded calls a second. (Claims written in the single
        partition by earlier versions are not looked at: a redelivery of such an event copies it again, which the
        copy's fixed blob names make harmless.)"""
        shard = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:4], "big") % CLAIM_SHARDS
        return f"{scope}-{shard:02d}"

    @timed("storage")
    def try_claim(self, scope: str, event_id: str) -> ClaimResult:
        """``claimed``: go ahead. ``done``: a duplicate, drop it. ``busy``: another delivery holds a live claim
        (or its process died less than a lease ago): ask the sender to deliver it again later."""
        self._ensure()
        event_id = row_key(event_id)
        partition = self.partition(scope, event_id)
        for _ in range(3):  # a lease, not tables.mutate: create first (no read), and a lost takeover is "busy"
            entity = {"PartitionKey": partition, "RowKey": event_id, "status": "processing", "until": self._until()}
            try:
                meta = tables.put(self._table, entity, None)
                self.hold(partition, event_id, meta["etag"])
                return "claimed"
            except tables.Conflict:
                pass
            existing = tables.get(self._table, partition, event_id)
            if existing is None:
                continue  # released in between: claim it afresh
            if existing["status"] == "done":
                return "done"
            if existing.get("until", 0) > time.time():
                return "busy"
            # The earlier claim expired (its handler died): take it over.
            try:
                meta = tables.put(self._table, entity, existing.metadata["etag"])
            except tables.Conflict:
                return "busy"  # another delivery took it over first
            self.hold(partition, event_id, meta["etag"])
            return "claimed"
        return "busy"

    @timed("storage")
    def done(self, scope: str, event_id: str) -> None:
        event_id = row_key(event_id)
        partition = self.partition(scope, event_id)
        self.drop(partition, event_id)
        self._table.upsert_entity({"PartitionKey": partition, "RowKey": event_id, "status": "done", "until": 0.0})

    @timed("storage")
    def release(self, scope: str, event_id: str) -> None:
        event_id = row_key(event_id)
        partition = self.partition(scope, event_id)
        self.drop(partition, event_id)
        tables.delete(self._table, partition, event_id)

    # -- the lease ------------------------------------------------------------------------------------------

    def _until(self) -> float:
        return time.time() + self._lease

    def _renew(self, partition: str, event_id: str, etag: str) -> str | None:
        entity = {"PartitionKey": partition, "RowKey": event_id, "status": "processing", "until": self._until()}
        try:
            return tables.put(self._table, entity, etag)["etag"]
        except tables.Conflict:
            return None
