"""Posting events to the app: mid-call webhooks (CloudEvents) and Event Grid deliveries.

Webhooks go out in order per call connection, each request with a fresh JWT, retried with
back-off when the receiver fails (5xx, 408, 429, no connection). Event Grid deliveries follow
Event Grid's contract: a subscription is validated first, events are retried on its schedule,
and 400/403/413 are never retried (the event is dead-lettered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .faults import FaultPlan
from .signing import WebhookSigner
from .timeline import Timeline

log = logging.getLogger("simulator.delivery")

RETRYABLE_WEBHOOK = {408, 429}
EVENTGRID_NO_RETRY = {400, 403, 413}
# Event Grid's delivery schedule (seconds), scaled down by ``eventgrid_time_scale``.
EVENTGRID_SCHEDULE = [10, 30, 60, 300, 600, 1800, 3600]


@dataclass
class Outgoing:
    url: str
    event: dict[str, Any]
    timeline: Timeline | None
    key: str


@dataclass
class Subscription:
    name: str
    endpoint: str
    event_types: list[str] | None = None
    state: str = "AwaitingValidation"
    validation_code: str = field(default_factory=lambda: str(uuid.uuid4()))

    def wants(self, event_type: str) -> bool:
        return self.state == "Succeeded" and (not self.event_types or event_type in self.event_types)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "eventTypes": self.event_types,
            "provisioningState": self.state,
        }


class Delivery:
    def __init__(
        self,
        signer: WebhookSigner,
        faults: FaultPlan,
        *,
        webhook_retries: int = 3,
        webhook_backoff: float = 0.2,
        eventgrid_time_scale: float = 0.01,
        eventgrid_max_attempts: int = 6,
        timeout: float = 10.0,
    ) -> None:
        self.signer = signer
        self.faults = faults
        self.webhook_retries = webhook_retries
        self.webhook_backoff = webhook_backoff
        self.eventgrid_time_scale = eventgrid_time_scale
        self.eventgrid_max_attempts = eventgrid_max_attempts
        self.timeout = timeout
        self.subscriptions: list[Subscription] = []
        self.dead_letters: list[dict[str, Any]] = []
        self.stats = {"webhook_posts": 0, "webhook_failures": 0, "eventgrid_posts": 0, "dropped": 0}
        self._session: aiohttp.ClientSession | None = None
        self._queues: dict[str, asyncio.Queue[Outgoing | None]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: dict[str, Outgoing] = {}
        self.pending = 0
        self.webhooks_in_flight = 0  # callbacks awaiting the receiver's answer (0: it is handling none of them)
        self.flowing = asyncio.Event()  # cleared: callbacks wait before each attempt (``POST /__sim/deliveries``)
        self.flowing.set()
        self.idle = asyncio.Event()
        self.idle.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        for task in list(self._workers.values()) + list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._workers.values(), *self._tasks, return_exceptions=True)
        if self._session:
            await self._session.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _begin(self) -> None:
        self.pending += 1
        self.idle.clear()

    def _end(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.pending = 0
            self.idle.set()

    # -- mid-call webhooks -------------------------------------------------------------------

    def send_callback(self, url: str, event: dict[str, Any], timeline: Timeline | None, key: str) -> None:
        """Queue a CloudEvent for ``url``; events with the same key go out in order."""
        self._begin()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.get_running_loop().create_task(self._drain(key, queue))
        queue.put_nowait(Outgoing(url, event, timeline, key))

    async def _drain(self, key: str, queue: asyncio.Queue[Outgoing | None]) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            try:
                await self._deliver_with_faults(item, queue)
            except Exception:  # a delivery bug must not stop the call's queue
                log.exception("delivery of %s failed", item.event.get("type"))
            finally:
                self._end()

    async def _deliver_with_faults(self, item: Outgoing, queue: asyncio.Queue[Outgoing | None]) -> None:
        event_type = item.event["type"].rsplit(".", 1)[-1]
        rule = self.faults.take("callback", event_type)
        action = rule.action if rule else None
        if action == "drop":
            self.stats["dropped"] += 1
            self._note(item, f"{event_type} DROPPED (fault)", dropped=True, id=item.event["id"], type=event_type)
            return
        if action == "reorder" and item.key not in self._held:
            # Hold this event back and send it after the next one (or after a short wait).
            self._held[item.key] = item
            self._begin()
            self._spawn(self._release_held(item.key, wait=0.5))
            self._note(item, f"{event_type} held back to arrive out of order (fault)")
            return
        if action == "delay" and rule is not None:
            await asyncio.sleep(rule.delay)
        if action == "twin":
            self._note(item, f"{event_type} delivered twice at once (twin fault)")
            await asyncio.gather(self._post_callback(item), self._post_callback(item))
        else:
            await self._post_callback(item)
        if action == "duplicate":
            self._note(item, f"{event_type} delivered again (duplicate fault)")
            await self._post_callback(item)
        if item.key in self._held:
            await self._release_held(item.key, wait=0)

    async def _release_held(self, key: str, wait: float) -> None:
        if wait:
            await asyncio.sleep(wait)
        held = self._held.pop(key, None)
        if held is None:
            return
        try:
            await self._post_callback(held)
        finally:
            self._end()

    async def _post_callback(self, item: Outgoing) -> None:
        assert self._session is not None
        body = json.dumps([item.event]).encode()
        event_type = item.event["type"].rsplit(".", 1)[-1]
        attempt = 0
        while True:
            attempt += 1
            await self.flowing.wait()
            headers = {"Content-Type": "application/json", "Authorization": "Bearer " + self.signer.token()}
            status: int | None = None
            error = ""
            timing = ""
            sent = time.monotonic()
            try:
                self.stats["webhook_posts"] += 1
                self.webhooks_in_flight += 1
                async with self._session.post(item.url, data=body, headers=headers) as resp:
                    status = resp.status
                    timing = resp.headers.get("Server-Timing", "")
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = type(exc).__name__
            finally:
                self.webhooks_in_flight -= 1
            if status is not None and 200 <= status < 300:
                # The round trip as the service saw it, and the receiver's own Server-Timing (benchmarks read both).
                extra = {"round_trip_ms": round((time.monotonic() - sent) * 1000, 3)}
                if timing:
                    extra["server_timing"] = timing
                self._note(
                    item,
                    f"{event_type} -> {status}",
                    status=status,
                    attempt=attempt,
                    id=item.event["id"],
                    data=item.event.get("data"),
                    type=event_type,
                    **extra,
                )
                return
            self.stats["webhook_failures"] += 1
            retryable = status is None or status >= 500 or status in RETRYABLE_WEBHOOK
            if not retryable or attempt > self.webhook_retries:
                self._note(
                    item,
                    f"{event_type} FAILED ({status or error}) after {attempt} attempt(s)",
                    status=status,
                    attempt=attempt,
                    id=item.event["id"],
                    failed=True,
                    type=event_type,
                )
                return
            self._note(item, f"{event_type} -> {status or error}; retrying", status=status, attempt=attempt, retry=True)
            await asyncio.sleep(self.webhook_backoff * (2 ** (attempt - 1)))

    @staticmethod
    def _note(item: Outgoing, summary: str, **detail: Any) -> None:
        if item.timeline is not None:
            item.timeline.add("event", summary, url=item.url, **detail)

    # -- Event Grid --------------------------------------------------------------------------

    async def subscribe(
        self, endpoint: str, event_types: list[str] | None, name: str, validation_url: str
    ) -> Subscription:
        """Create a subscription and run Event Grid's validation handshake against it."""
        assert self._session is not None
        sub = Subscription(name=name, endpoint=endpoint, event_types=event_types)
        self.subscriptions.append(sub)
        event = {
            "id": str(uuid.uuid4()),
            "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sim/providers/"
            "Microsoft.Communication/communicationServices/sim",
            "subject": "",
            "data": {
                "validationCode": sub.validation_code,
                "validationUrl": f"{validation_url}?code={sub.validation_code}",
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": _now(),
            "metadataVersion": "1",
            "dataVersion": "2",
        }
        headers = {
            "Content-Type": "application/json",
            "aeg-event-type": "SubscriptionValidation",
            "aeg-subscription-name": name.upper(),
            "aeg-delivery-count": "0",
        }
        try:
            async with self._session.post(endpoint, data=json.dumps([event]), headers=headers) as resp:
                text = await resp.text()
                if resp.status == 200:
                    try:
                        answer = json.loads(text)
                    except ValueError:
                        answer = {}
                    if isinstance(answer, dict) and answer.get("validationResponse") == sub.validation_code:
                        sub.state = "Succeeded"
                        return sub
                sub.state = "AwaitingManualAction" if resp.status < 400 else "Failed"
        except (TimeoutError, aiohttp.ClientError, OSError):
            sub.state = "Failed"
        return sub

    def validate_manually(self, code: str) -> bool:
        for sub in self.subscriptions:
            if sub.validation_code == code:
                sub.state = "Succeeded"
                return True
        return False

    def publish(self, event: dict[str, Any], timeline: Timeline | None) -> None:
        for sub in self.subscriptions:
            if sub.wants(event["eventType"]):
                short = event["eventType"].rsplit(".", 1)[-1]
                rule = self.faults.take("eventgrid", short)
                action = rule.action if rule else None
                if action == "drop":
                    if timeline:
                        timeline.add(
                            "eventgrid", f"{short} DROPPED (fault)", subscription=sub.name, dropped=True,
                            id=event["id"], type=short,
                        )
                    continue
                delay = rule.delay if rule and action in ("delay", "reorder") else 0.0
                copies = 2 if action == "duplicate" else 1
                for _ in range(copies):
                    self._begin()
                    self._spawn(self._deliver_eventgrid(sub, event, timeline, delay))

    async def _deliver_eventgrid(
        self, sub: Subscription, event: dict[str, Any], timeline: Timeline | None, delay: float
    ) -> None:
        assert self._session is not None
        short = event["eventType"].rsplit(".", 1)[-1]
        try:
            if delay:
                await asyncio.sleep(delay)
            body = json.dumps([event])
            for attempt in range(1, self.eventgrid_max_attempts + 1):
                headers = {
                    "Content-Type": "application/json",
                    "aeg-event-type": "Notification",
                    "aeg-subscription-name": sub.name.upper(),
                    "aeg-delivery-count": str(attempt - 1),
                    "aeg-data-version": event.get("dataVersion", ""),
                    "aeg-metadata-version": "1",
                }
                status: int | None = None
                try:
                    self.stats["eventgrid_posts"] += 1
                    async with self._session.post(sub.endpoint, data=body, headers=headers) as resp:
                        status = resp.status
                        await resp.read()
                except (TimeoutError, aiohttp.ClientError, OSError):
                    status = None
                if status is not None and 200 <= status < 300:
                    if timeline:
                        timeline.add(
                            "eventgrid",
                            f"{short} -> {status}",
                            subscription=sub.name,
                            attempt=attempt,
                            id=event["id"],
                            type=short,
                            data=event.get("data"),
                        )
                    return
                if status in EVENTGRID_NO_RETRY:
                    break
                if timeline:
                    timeline.add(
                        "eventgrid",
                        f"{short} -> {status or 'no connection'}; Event Grid will retry",
                        subscription=sub.name,
                        attempt=attempt,
                        retry=True,
                    )
                step = EVENTGRID_SCHEDULE[min(attempt - 1, len(EVENTGRID_SCHEDULE) - 1)]
                await asyncio.sleep(step * self.eventgrid_time_scale)
            self.dead_letters.append({"subscription": sub.name, "event": event, "lastStatus": status})
            if timeline:
                timeline.add(
                    "eventgrid",
                    f"{short} DEAD-LETTERED (last status {status})",
                    subscription=sub.name,
                    failed=True,
                    type=short,
                )
        finally:
            self._end()


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


Clock = Callable[[], float]
