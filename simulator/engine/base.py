"""The engine's plumbing: its state, its background tasks, and the request checks every operation shares.

Every section of the engine is a mixin over this class, so they all see one set of calls and one task set, and
``close`` can cancel whatever any section scheduled.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from .. import errors
from ..delivery import Delivery
from ..faults import FaultPlan
from ..identifiers import IdentifierError, raw_id_of
from ..parties import Behaviour
from ..recording import Document
from ..timeline import Timeline
from .model import Config, Connection, Offer, Recording, ServerCall, new_server_call_id

log = logging.getLogger("simulator.engine")


class EngineBase:
    """State and helpers; the sections (mixins) call each other through ``self``."""

    def __init__(self, config: Config, delivery: Delivery, faults: FaultPlan) -> None:
        self.config = config
        self.delivery = delivery
        self.faults = faults
        self.calls: dict[str, ServerCall] = {}
        self.connections: dict[str, Connection] = {}
        self.offers: dict[str, Offer] = {}
        self.recordings: dict[str, Recording] = {}
        self.documents: dict[str, Document] = {}
        self.parties: dict[str, Behaviour] = {}
        self.sent_events: list[dict[str, Any]] = []
        self.sent_eventgrid: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._own_recording_dir = not config.recording_dir  # a temp dir of ours: removed on close
        self._recording_dir = Path(config.recording_dir or tempfile.mkdtemp(prefix="acs-sim-recordings-"))
        self._recording_dir.mkdir(parents=True, exist_ok=True)

    # -- tasks -------------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` in the background; the engine keeps it so ``close`` can cancel it."""
        task = asyncio.get_running_loop().create_task(self._guard(coro, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _guard(coro: Awaitable[Any], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator task %s failed", name)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_recording_dir:
            shutil.rmtree(self._recording_dir, ignore_errors=True)

    # -- lookups -----------------------------------------------------------------------------

    def behaviour_of(self, raw_id: str, call: ServerCall | None = None) -> Behaviour:
        """How a party behaves: the call's own script first, then the simulator-wide one."""
        if call is not None and raw_id in call.parties:
            return call.parties[raw_id]
        return self.parties.get(raw_id) or Behaviour()

    def new_call(self, label: str = "", *, group_call_id: str | None = None, room_id: str | None = None) -> ServerCall:
        server_call_id = new_server_call_id()
        call = ServerCall(
            id=server_call_id,
            correlation_id=str(uuid.uuid4()),
            timeline=Timeline(server_call_id, label),
            group_call_id=group_call_id,
            room_id=room_id,
        )
        self.calls[call.id] = call
        return call

    def connection(self, call_connection_id: str, *, must_be_connected: bool = True) -> Connection:
        """The connection a request names, or the error ACS answers for a missing or ended one."""
        conn = self.connections.get(call_connection_id)
        if conn is None:
            raise errors.call_not_found(call_connection_id)
        if conn.state == "disconnected":
            raise errors.call_ended(call_connection_id)
        if must_be_connected and conn.state != "connected":
            raise errors.call_not_established(call_connection_id)
        return conn

    # -- request checks ----------------------------------------------------------------------

    def _callback(self, value: Any, field_name: str = "callbackUri") -> str:
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise errors.bad_request(f"The field {field_name} is invalid: an absolute URL is required.", field_name)
        if self.config.require_https_callbacks and not value.startswith("https://"):
            raise errors.bad_request(f"The field {field_name} is invalid: Call Automation needs HTTPS.", field_name)
        return value

    def _identifier(self, value: Any, field_name: str) -> str:
        try:
            return raw_id_of(value)
        except IdentifierError as exc:
            raise errors.bad_request(f"The field {field_name} is invalid: {exc}.", field_name) from None

    @staticmethod
    def _require(body: dict[str, Any], *names: str) -> None:
        for name in names:
            if body.get(name) in (None, "", []):
                raise errors.bad_request(f"The {name} field is required.", name)

    @staticmethod
    def _caller_id(body: dict[str, Any]) -> str | None:
        value = body.get("sourceCallerIdNumber")
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            raise errors.bad_request(
                "The field sourceCallerIdNumber is invalid: a phone number model {value} is required.",
                "sourceCallerIdNumber",
            )
        return value["value"] or None

    def _op_callback(self, conn: Connection, body: dict[str, Any]) -> str:
        """Where an operation's events go: its own operationCallbackUri, else the call's callback."""
        if body.get("operationCallbackUri"):
            return self._callback(body["operationCallbackUri"], "operationCallbackUri")
        return conn.callback_uri
