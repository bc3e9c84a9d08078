"""Campaigns: one flow called on a list of numbers, at most ``concurrency`` calls at a time.

A campaign is one row of the outbound table (setting ``OUTBOUND_TABLE``), changed only by
ETag compare-and-swap. Recording how a call ended and claiming the next numbers happen in the
same write, so two calls that end together never place more calls than the bound allows, nor
the same number twice. Each number's call reference is derived from the campaign and the
number's position, and its CreateCall carries a repeatability id derived from that reference:
a redelivered event, or a retried request, finds the same call instead of placing another.

The models and ``call_result`` are pure; ``CampaignStore`` is the table.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from core.calls.state import CallState
from core.flows.model import CollectDigitsNode, Flow, MenuNode, Prompt
from core.outbound.responses import CampaignNumber, CampaignReport, Status
from core.platform import tables
from core.platform.tables import TableBacked

log = logging.getLogger("core.outbound.campaigns")
T = TypeVar("T")
PARTITION = "campaign"
CHUNK = 30_000  # characters per string property (Table Storage allows 64 KiB of UTF-16)
FINAL = ("answered", "confirmed", "no answer", "failed")


class CampaignCall(BaseModel):
    """One number of a campaign and how its call went."""

    number: str
    status: Status = "pending"
    call_ref: str = ""
    claimed_by: str = ""  # "start" or the call whose end freed the slot: that one places this call
    first_sent: str = ""  # Repeatability-First-Sent of this number's CreateCall
    call_connection_id: str = ""
    detail: str = ""
    results: dict[str, str] = Field(default_factory=dict)  # variables the flow set (menu choices, digits)
    started_at: str = ""
    ended_at: str = ""


class Campaign(BaseModel):
    id: str
    flow: str
    caller_id: str | None = None
    vars: dict[str, str] = Field(default_factory=dict)
    concurrency: int
    created_at: str
    finished_at: str = ""
    peak: int = 0  # most calls live at once, as the app counted them
    held: str = ""  # why the pending numbers wait (the daily dial cap), until the campaign is requested again
    calls: list[CampaignCall]

    @property
    def live(self) -> int:
        return sum(1 for c in self.calls if c.status == "calling")

    @property
    def status(self) -> Literal["running", "held", "done"]:
        if all(c.status in FINAL for c in self.calls):
            return "done"
        return "held" if self.held and not self.live else "running"

    def entry(self, call_ref: str) -> CampaignCall | None:
        return next((c for c in self.calls if c.call_ref == call_ref), None)

    def claim(self, by: str, now: str, first_sent: str, ref: Callable[[int], str]) -> list[CampaignCall]:
        """Mark the next pending numbers as calling, as many as the bound leaves room for."""
        claimed: list[CampaignCall] = []
        free = self.concurrency - self.live
        for index, entry in enumerate(self.calls):
            if len(claimed) >= free:
                break
            if entry.status == "pending":
                entry.status = "calling"
                entry.call_ref = ref(index)
                entry.claimed_by = by
                entry.first_sent = first_sent
                entry.started_at = now
                entry.detail = ""
                claimed.append(entry)
        if claimed:
            self.held = ""  # tried again: held again if the cap still holds
        self.peak = max(self.peak, self.live)
        return claimed

    def hold(self, call_ref: str, why: str) -> None:
        """Put a claimed number back among the pending ones (its call was not placed): it waits, and so do the
        numbers after it, until the campaign is requested again (``POST`` with the same id)."""
        entry = self.entry(call_ref)
        if entry is not None and entry.status == "calling" and not entry.call_connection_id:
            entry.status = "pending"
            entry.call_ref = entry.claimed_by = entry.first_sent = entry.started_at = ""
            entry.detail = why
        self.held = why

    def finish(self, call_ref: str, status: str, detail: str, results: dict[str, str], now: str) -> bool:
        """Record how a number's call ended; False when it is not ours or was recorded before."""
        entry = self.entry(call_ref)
        if entry is None or entry.status in FINAL:
            return False
        entry.status = status  # type: ignore[assignment]
        entry.detail = detail
        entry.results = results
        entry.ended_at = now
        if self.status == "done" and not self.finished_at:
            self.finished_at = now
        return True

    def describe(self) -> dict[str, Any]:
        """The campaign as the API answers (``core.outbound.responses.CampaignReport``)."""
        counts: dict[str, int] = {}
        for c in self.calls:
            counts[c.status] = counts.get(c.status, 0) + 1
        return CampaignReport(
            id=self.id,
            flow=self.flow,
            status=self.status,
            concurrency=self.concurrency,
            live=self.live,
            peak=self.peak,
            held=self.held or None,
            created_at=self.created_at,
            finished_at=self.finished_at or None,
            counts=counts,
            numbers=[
                CampaignNumber(
                    number=c.number,
                    status=c.status,
                    detail=c.detail,
                    results=c.results,
                    call_connection_id=c.call_connection_id or None,
                    started_at=c.started_at or None,
                    ended_at=c.ended_at or None,
                )
                for c in self.calls
            ],
        ).dump()


# What a failed CreateCall's result code says about the callee.
NOT_CONNECTED = {408: ("no answer", "did not answer"), 486: ("failed", "busy"), 603: ("failed", "declined")}


def call_result(state: CallState, given: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """(status, detail, results) of a campaign call that ended, from its final state.

    A call that never reached its flow did not connect: the result code of CreateCallFailed
    tells no answer from busy or declined. A connected call is ``confirmed`` when a variable the
    flow set (a menu's ``store_as``) holds the label ``confirmed``, else ``answered``.
    """
    if not state.node:
        code = state.outcome.get("failed_code")
        if code in NOT_CONNECTED:
            return (*NOT_CONNECTED[code], {})
        return "failed", str(state.outcome.get("failed") or state.outcome.get("ended") or "not connected"), {}
    results = {k: v for k, v in state.vars.items() if not k.startswith("_") and given.get(k) != v}
    status = "confirmed" if "confirmed" in results.values() else "answered"
    return status, str(state.outcome.get("ended") or ""), results


def placeholders(text: str | None) -> set[str]:
    if not text:
        return set()
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError:
        return set()


def missing_vars(flow: Flow, given: dict[str, str]) -> list[str]:
    """Call variables the flow's prompts and targets name that neither the request nor the flow sets."""
    collected = {n.store_as for n in flow.nodes.values() if isinstance(n, MenuNode | CollectDigitsNode) and n.store_as}
    used: set[str] = set()
    for node in flow.nodes.values():
        for name in ("prompt", "no_input_prompt", "invalid_prompt", "announcement", "music"):
            prompt = getattr(node, name, None)
            if isinstance(prompt, Prompt):
                used |= placeholders(prompt.text) | placeholders(prompt.ssml)
        target = getattr(node, "target", None)
        if target is not None:
            used |= placeholders(target.to) | placeholders(target.caller_id)
    return sorted(used - collected - set(given))


class CampaignNotFound(Exception):
    pass


class CampaignConflict(Exception):
    pass


def _entity(campaign: Campaign) -> dict[str, Any]:
    text = campaign.model_dump_json()
    entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": campaign.id, "status": campaign.status}
    for i in range(0, max(len(text), 1), CHUNK):
        entity["data" if i == 0 else f"data{i // CHUNK}"] = text[i : i + CHUNK]
    return entity


def _campaign(entity: dict[str, Any]) -> Campaign:
    parts, i = [entity["data"]], 1
    while f"data{i}" in entity:
        parts.append(entity[f"data{i}"])
        i += 1
    return Campaign.model_validate_json("".join(parts))


class CampaignStore(TableBacked):
    """Campaign rows, updated with ETag concurrency (one row per campaign)."""

    def create(self, campaign: Campaign) -> bool:
        self._ensure()
        try:
            tables.put(self._table, _entity(campaign), None)
        except tables.Conflict:
            return False
        return True

    def get(self, campaign_id: str) -> tuple[Campaign, str]:
        self._ensure()
        entity = tables.get(self._table, PARTITION, campaign_id)
        if entity is None:
            raise CampaignNotFound(campaign_id)
        return _campaign(entity), entity.metadata["etag"]

    def mutate(self, campaign_id: str, change: Callable[[Campaign], T], attempts: int = 30) -> tuple[Campaign, T]:
        """Read, change, write back if nobody wrote in between; else read again and redo the change."""
        return tables.mutate(
            lambda: self.get(campaign_id),
            change,
            lambda campaign, etag: tables.put(self._table, _entity(campaign), etag),
            attempts=attempts,
            what=f"progress of campaign {campaign_id}",
            gave_up=CampaignConflict,
            pause=tables.jitter(0.005, 0.02),
            logger=log,
        )
