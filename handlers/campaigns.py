"""Campaigns: start one, report on it, and place the next call whenever one of its calls ends.

The first ``concurrency`` numbers are called when the campaign starts; each call's end (a call-ended hook, wired in
``core.services``) records its result and claims the next numbers in one compare-and-swap on the campaign's row
(``core.outbound.campaigns``), then places them. Placing is idempotent (the call reference and the CreateCall
repeatability id derive from the campaign and the number's position): a redelivered event, a repeated request or
another call's end places again only what is still unplaced, and a number is never called twice.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from core.calls.executor import is_permanent
from core.calls.repeatability import derived_id, http_date
from core.calls.state import CallState, StateNotFound
from core.outbound import control
from core.outbound.campaigns import Campaign, CampaignCall, CampaignNotFound, CampaignStore, call_result, missing_vars
from core.outbound.control import RequestError
from core.outbound.destinations import phone_of
from core.outbound.dial_cap import DialCap, DialCapReached, Taken, seconds_to_midnight
from core.platform.observability import mask_id
from core.services import Services
from handlers.control import check_destinations, check_flow_targets, raw_id_of

log = logging.getLogger("handlers.campaigns")
START = "start"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _ref(campaign_id: str):  # noqa: ANN202 - a small closure
    return lambda index: derived_id("campaign", campaign_id, str(index))


def _claim(campaign: Campaign, by: str) -> list[CampaignCall]:
    return campaign.claim(by, _now(), http_date(), _ref(campaign.id))


def start_campaign(req: control.StartCampaign, services: Services) -> dict[str, Any]:
    flow = services.settings.flows.get(req.flow)
    if flow is None:
        raise RequestError(
            f"unknown flow {req.flow!r}",
            [{"field": "flow", "message": f"not one of {', '.join(sorted(services.settings.flows))}"}],
        )
    missing = missing_vars(flow, req.vars)
    if missing:
        raise RequestError(
            f"flow {req.flow} needs call variables {', '.join(missing)}",
            [{"field": f"vars.{name}", "message": f"flow {req.flow} says {{{name}}}"} for name in missing],
        )
    numbers = list(dict.fromkeys(req.numbers))  # each number once, in order
    check_destinations(services, [(f"numbers.{req.numbers.index(n)}", n) for n in numbers])
    check_flow_targets(services, req.flow, req.vars)
    campaigns = services.campaigns
    if any(phone_of(n) for n in numbers) and not _exists(campaigns, req.id):
        cap = services.dial_cap
        if cap.used() >= cap.cap:  # a new campaign while the day's calls are all placed: nothing is written
            raise _cap_reached(cap.cap)
    campaign = Campaign(
        id=req.id or str(uuid.uuid4()),
        flow=req.flow,
        caller_id=req.caller_id,
        vars=dict(req.vars),
        concurrency=req.concurrency,
        created_at=_now(),
        calls=[CampaignCall(number=n) for n in numbers],
    )
    if not campaigns.create(campaign):
        existing, _ = campaigns.get(campaign.id)
        if [c.number for c in existing.calls] != numbers or existing.flow != req.flow:
            raise RequestError(
                f"campaign {campaign.id} exists with other numbers or another flow",
                [{"field": "id", "message": "already used"}],
                status=409,
            )
        log.info("campaign %s requested again: placing what is still unplaced", campaign.id)
    campaigns.mutate(campaign.id, lambda c: _claim(c, START))
    log.info("campaign %s: %d numbers, %d at a time, flow %s", campaign.id, len(numbers), req.concurrency, req.flow)
    placed = _place_claimed(services, campaign.id, START)
    if placed.status == "held":  # requested again while the cap holds: nothing more could be placed
        raise _cap_reached(services.dial_cap.cap)
    return placed.describe()


def _exists(campaigns: CampaignStore, campaign_id: str | None) -> bool:
    if not campaign_id:
        return False
    try:
        campaigns.get(campaign_id)
    except CampaignNotFound:
        return False
    return True


# Against toll fraud: every number passes the dialing policy when the campaign is requested (403 naming each refused
# number) and again when it is dialed (a number refused then fails), and each number dialed counts against the day's
# cap (``DIAL_DAILY_CAP``). When the cap is reached the campaign is ``held``: the numbers not yet called wait as
# ``pending`` (their detail says why) until the campaign is requested again with the same id after the cap resets
# at 00:00 UTC; a request while the cap is reached is answered 429.
def _cap_reached(cap: int) -> RequestError:
    retry = seconds_to_midnight(datetime.now(UTC))
    return RequestError(
        f"refused: {DialCapReached(cap, retry).message}; the campaign's numbers not yet called wait (pending) "
        "until it is requested again",
        status=429,
        headers={"Retry-After": str(retry)},
    )


def get_campaign(campaign_id: str, services: Services) -> dict[str, Any]:
    try:
        campaign, _ = services.campaigns.get(campaign_id)
    except CampaignNotFound:
        raise RequestError(f"no campaign {campaign_id}", status=404) from None
    return campaign.describe()


def campaign_call_ended(state: CallState, services: Services) -> None:
    """A campaign's call ended (a call-ended hook, ``core.services``): record its result and call the next numbers
    the freed slot allows."""
    if not state.campaign:
        return

    def change(campaign: Campaign) -> list[CampaignCall]:
        status, detail, results = call_result(state, campaign.vars)
        if campaign.finish(state.call_ref, status, detail, results, _now()):
            log.info("campaign %s: %s -> %s %s", campaign.id, mask_id(state.caller), status, mask_id(detail))
        return _claim(campaign, state.call_ref)

    try:
        services.campaigns.mutate(state.campaign, change)
    except CampaignNotFound:
        log.warning("call %s names campaign %s, which does not exist", state.call_ref, state.campaign)
        return
    _place_claimed(services, state.campaign, state.call_ref)


def _place_claimed(services: Services, campaign_id: str, by: str) -> Campaign:
    """Place every claimed call not placed yet: those ``by`` just claimed, and any an earlier attempt left
    unplaced (placing is idempotent, so two placers of one number make one call). A number the service
    refuses for good counts as failed and frees its slot for the next, claimed by ``by``."""
    campaigns = services.campaigns
    while True:
        campaign, _ = campaigns.get(campaign_id)
        todo = [c for c in campaign.calls if c.status == "calling" and not c.call_connection_id]
        if not todo:
            return campaign
        placed: dict[str, str] = {}
        refused: dict[str, str] = {}
        held: list[str] = []
        why_held = ""
        transient: Exception | None = None
        for index, entry in enumerate(todo):
            try:
                placed[entry.call_ref] = _dial(services, campaign, entry)
            except DialCapReached as exc:  # the day's calls are placed: this number and the rest wait
                why_held = f"waiting: {exc.message}"
                held = [e.call_ref for e in todo[index:]]
                log.warning("campaign %s held: %s", campaign_id, exc.message)
                break
            except Exception as exc:
                if not is_permanent(exc):  # a destination refused (403) is permanent: the number fails
                    transient = exc  # the request (or the event) fails and is retried: nothing is lost
                    break
                refused[entry.call_ref] = str(getattr(exc, "message", exc)).splitlines()[0]
                log.warning("campaign %s: a number refused: %s", campaign_id, mask_id(refused[entry.call_ref]))

        def record(
            c: Campaign,
            placed: dict[str, str] = placed,
            refused: dict[str, str] = refused,
            held: list[str] = held,
            why_held: str = why_held,
        ) -> None:
            for entry in c.calls:
                if entry.call_ref in placed and not entry.call_connection_id:
                    entry.call_connection_id = placed[entry.call_ref]
            for call_ref, why in refused.items():
                c.finish(call_ref, "failed", why, {}, _now())
            for call_ref in held:
                c.hold(call_ref, why_held)
            if refused and not held:
                _claim(c, by)

        campaign, _ = campaigns.mutate(campaign_id, record)
        if transient is not None:
            raise transient
        if not refused or held:
            return campaign


def _dial(services: Services, campaign: Campaign, entry: CampaignCall) -> str:
    """Place one number's call (idempotent: one state row and one repeatability id per number). The number
    passes the dialing policy again (the settings may have changed since the request) and counts against the
    day's cap, once: a retry that finds the state of an earlier attempt gives its count back."""
    services.settings.dialing.policy.check(entry.number)  # DestinationRefused: 403, the number fails
    cap = services.dial_cap
    try:
        taken = cap.take(1 if phone_of(entry.number) else 0)
    except DialCapReached as reached:
        try:  # an earlier attempt counted this number (and may have placed it): it goes on, uncounted again
            services.store.get(entry.call_ref)
        except StateNotFound:
            raise reached from None  # this number waits, and the rest with it
        taken = Taken(DialCap.day(), 0)
    state = CallState(
        call_ref=entry.call_ref,
        flow=campaign.flow,
        status="dialing",
        caller=raw_id_of(entry.number),
        callee=raw_id_of(campaign.caller_id) if campaign.caller_id else "",
        vars=dict(campaign.vars),
        campaign=campaign.id,
    )
    state.note(f"campaign {campaign.id}: calling {entry.number}")
    try:
        created = services.store.create(state)
    except Exception:
        cap.give_back(taken)
        raise
    if not created:
        cap.give_back(taken)  # an earlier attempt counted this number
        try:
            existing, _ = services.store.get(entry.call_ref)
        except StateNotFound:  # pragma: no cover - created a moment ago
            existing = state
        if existing.call_connection_id:
            return existing.call_connection_id  # placed before: its events have arrived
    try:
        props = services.executor.create_call(
            [entry.number],
            services.callback_url(entry.call_ref),
            caller_id=campaign.caller_id,
            operation_context=f"campaign:{campaign.id}",
            cognitive_services_endpoint=services.settings.cognitive_services_endpoint,
            repeat=(derived_id(entry.call_ref, "create"), entry.first_sent),
        )
    except Exception as exc:
        if created and is_permanent(exc):
            cap.give_back(taken)  # the service refused: nothing rang
        raise
    services.store.index(props.call_connection_id or "", entry.call_ref)
    return props.call_connection_id or ""
