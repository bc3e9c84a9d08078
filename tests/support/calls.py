"""Helpers for end-to-end tests that drive the real Call Automation client against the simulator.

Both the sync and the ``aio`` client tests use them: placing an inbound call (the simulator's
control API), answering it with the client, and reading back what the service side recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.receiver import Receiver

CALLER = "+14255550100"
CALLER_RAW = "4:" + CALLER
OUR_NUMBER = "+18005550123"

Ctl = Callable[..., Any]


@dataclass
class Inbound:
    """An inbound call, as the simulator placed it: the context the app answers with."""

    server_call_id: str
    correlation_id: str
    incoming_call_context: str


def ring(
    ctl: Ctl,
    *,
    script: list[dict[str, Any]] | None = None,
    caller: str = CALLER,
    to: str = OUR_NUMBER,
    **extra: Any,
) -> Inbound:
    """A (scripted) caller dials one of the resource's numbers."""
    placed = ctl("POST", "/__sim/calls", {"from": caller, "to": to, "script": script or [], **extra})
    return Inbound(placed["serverCallId"], placed["correlationId"], placed["incomingCallContext"])


def parties(ctl: Ctl, behaviours: dict[str, dict[str, Any]]) -> None:
    """Say how invitees/targets behave when the service rings them."""
    ctl("POST", "/__sim/parties", behaviours)


def timeline(ctl: Ctl, key: str) -> list[dict[str, Any]]:
    """The service-side record of a call (key: server call id or call connection id)."""
    return ctl("GET", f"/__sim/calls/{key}/timeline")


def requests_seen(ctl: Ctl, key: str) -> list[tuple[str, int]]:
    """(operation, status) of every REST request the service tied to this call, in order."""
    return [(e["operation"], e["status"]) for e in timeline(ctl, key) if e["kind"] == "request"]


def operations(ctl: Ctl, key: str) -> list[str]:
    return [op for op, _ in requests_seen(ctl, key)]


def request_body(ctl: Ctl, key: str, operation: str) -> dict[str, Any]:
    """The JSON body the service received for the (last) request of this operation."""
    bodies = [e["body"] for e in timeline(ctl, key) if e["kind"] == "request" and e["operation"] == operation]
    assert bodies, f"the service never saw {operation}"
    return bodies[-1]


def summaries(ctl: Ctl, key: str, kind: str) -> list[str]:
    """Timeline lines of one kind: request | event | party | call | eventgrid."""
    return [e["summary"] for e in timeline(ctl, key) if e["kind"] == kind]


def call_state(ctl: Ctl, key: str) -> dict[str, Any]:
    """The simulator's summary of a call: state, outcome, participants, connections, recordings."""
    return ctl("GET", f"/__sim/calls/{key}")


def result(event_or_data: dict[str, Any]) -> tuple[int, int]:
    """(code, subCode) of an event's resultInformation; takes the event or its data."""
    payload = event_or_data if "resultInformation" in event_or_data else event_or_data["data"]
    info = payload["resultInformation"]
    return info["code"], info["subCode"]


def data(receiver: Receiver, event_type: str, ccid: str, **wait: Any) -> dict[str, Any]:
    """Wait for one event of this type on this call connection and return its data."""
    return receiver.wait_for(event_type, call_connection_id=ccid, **wait)[-1]["data"]


# -- async flavours (the receiver and control API are blocking; keep them off the loop) ------------


async def actl(ctl: Ctl, method: str, path: str, body: Any = None) -> Any:
    return await asyncio.to_thread(ctl, method, path, body)


async def await_event(receiver: Receiver, event_type: str, ccid: str | None = None, **wait: Any) -> list[dict]:
    return await asyncio.to_thread(receiver.wait_for, event_type, call_connection_id=ccid, **wait)


async def adata(receiver: Receiver, event_type: str, ccid: str, **wait: Any) -> dict[str, Any]:
    return (await await_event(receiver, event_type, ccid, **wait))[-1]["data"]


@dataclass
class Answered:
    """An inbound call the app answered and that is now connected."""

    inbound: Inbound
    props: Any  # CallConnectionProperties returned by answer_call
    connection: Any  # CallConnectionClient (sync or aio)

    @property
    def ccid(self) -> str:
        return self.props.call_connection_id

    @property
    def server_call_id(self) -> str:
        return self.inbound.server_call_id


def answer(
    client: Any,
    receiver: Receiver,
    ctl: Ctl,
    *,
    script: list[dict[str, Any]] | None = None,
    cognitive: bool = True,
    context: str = "answered",
    path: str = "/cb",
) -> Answered:
    """Place an inbound call and answer it with the sync client; return once CallConnected arrived."""
    from tests.conftest import AI_ENDPOINT

    inbound = ring(ctl, script=script)
    props = client.answer_call(
        inbound.incoming_call_context,
        receiver.url + path,
        cognitive_services_endpoint=AI_ENDPOINT if cognitive else None,
        operation_context=context,
    )
    receiver.wait_for("CallConnected", call_connection_id=props.call_connection_id)
    return Answered(inbound, props, client.get_call_connection(props.call_connection_id))


async def aanswer(
    client: Any,
    receiver: Receiver,
    ctl: Ctl,
    *,
    script: list[dict[str, Any]] | None = None,
    cognitive: bool = True,
    context: str = "answered",
    path: str = "/cb",
) -> Answered:
    """The same with the aio client."""
    from tests.conftest import AI_ENDPOINT

    inbound = await asyncio.to_thread(ring, ctl, script=script)
    props = await client.answer_call(
        inbound.incoming_call_context,
        receiver.url + path,
        cognitive_services_endpoint=AI_ENDPOINT if cognitive else None,
        operation_context=context,
    )
    await await_event(receiver, "CallConnected", props.call_connection_id)
    return Answered(inbound, props, client.get_call_connection(props.call_connection_id))


def idle(ctl: Ctl) -> None:
    """Wait until the simulator has no delivery in flight (before asserting something did NOT arrive)."""
    assert ctl("GET", "/__sim/idle?timeout=5")["idle"]


class QuickReceiver(Receiver):
    """The shared Receiver, polling for shutdown every 20 ms instead of http.server's 500 ms.

    Tests that start one receiver each (most e2e tests) otherwise spend half a second per test
    in teardown.
    """

    def __enter__(self) -> QuickReceiver:
        import threading

        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        super().__enter__()
        return self


class ServiceView:
    """The same helpers for async tests: the simulator's record and the receiver, off the event loop.

    The control API and ``Receiver.wait_for`` block; run them in a worker thread so the aio
    client's requests on the test's loop are never starved.
    """

    def __init__(self, ctl: Ctl, receiver: Receiver) -> None:
        self.sync_ctl = ctl
        self.receiver = receiver

    async def ctl(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.sync_ctl, method, path, body)

    async def ring(self, **kwargs: Any) -> Inbound:
        return await asyncio.to_thread(ring, self.sync_ctl, **kwargs)

    async def parties(self, behaviours: dict[str, dict[str, Any]]) -> None:
        await asyncio.to_thread(parties, self.sync_ctl, behaviours)

    async def group_call(self, members: list[str], **extra: Any) -> dict[str, Any]:
        return await self.ctl("POST", "/__sim/group-calls", {"members": members, **extra})

    async def requests_seen(self, key: str) -> list[tuple[str, int]]:
        return await asyncio.to_thread(requests_seen, self.sync_ctl, key)

    async def operations(self, key: str) -> list[str]:
        return await asyncio.to_thread(operations, self.sync_ctl, key)

    async def request_body(self, key: str, operation: str) -> dict[str, Any]:
        return await asyncio.to_thread(request_body, self.sync_ctl, key, operation)

    async def summaries(self, key: str, kind: str) -> list[str]:
        return await asyncio.to_thread(summaries, self.sync_ctl, key, kind)

    async def call_state(self, key: str) -> dict[str, Any]:
        return await asyncio.to_thread(call_state, self.sync_ctl, key)

    async def idle(self) -> None:
        await asyncio.to_thread(idle, self.sync_ctl)

    async def wait(self, event_type: str, ccid: str | None = None, **wait: Any) -> list[dict[str, Any]]:
        return await await_event(self.receiver, event_type, ccid, **wait)

    async def data(self, event_type: str, ccid: str, **wait: Any) -> dict[str, Any]:
        return (await self.wait(event_type, ccid, **wait))[-1]["data"]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll a condition on the service side (one without an event to wait for)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def until(what: Callable[[], Any], timeout: float = 10.0, message: str = "") -> Any:
    """Poll ``what`` until it gives something truthy, and give that (or fail, naming ``message``)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message}")
        time.sleep(0.05)
