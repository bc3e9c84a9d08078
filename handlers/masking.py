"""Number masking: sessions created through the API, and the lookup the routing action ``mask`` makes.

Each party of a session is a destination the app will ring (the masking flow transfers a caller to the other
party): both pass the dialing policy when the session is created (403 naming the party otherwise), and the
executor checks the transfer again when it happens."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from core.calls.routing import AnswerAction, MaskAction, RejectAction, resolve_mask
from core.outbound import control
from core.outbound.control import RequestError
from core.outbound.masking import MaskingConflict, new_session
from core.outbound.responses import MaskingSessionCreated
from core.platform.observability import mask_id
from core.services import Services
from handlers.control import check_destinations

log = logging.getLogger("handlers.masking")


def create_session(req: control.MaskingSessionRequest, services: Services) -> dict[str, Any]:
    check_destinations(services, [("party_a", req.party_a), ("party_b", req.party_b)])
    session = new_session(
        str(uuid.uuid4()), req.masked_number, req.party_a, req.party_b, req.ttl_minutes, datetime.now(UTC)
    )
    try:
        services.masking.create(session)
    except MaskingConflict as exc:
        raise RequestError(
            f"{exc.party} is already in another masking session on {session.masked_number}",
            [{"field": "party_a" if exc.party == session.party_a else "party_b", "message": "in another session"}],
            status=409,
        ) from None
    log.info("masking session %s on %s", session.id, mask_id(session.masked_number))
    return MaskingSessionCreated.model_validate(session.model_dump()).dump()


def route_masked(
    action: MaskAction, to: str, caller: str, services: Services
) -> tuple[AnswerAction | RejectAction, dict[str, str]]:
    """The answer (with the call variables) or rejection a mask rule gives this caller."""
    session = services.masking.find(to, caller)
    peer = session.peer_of(caller[2:] if caller.startswith("4:") else caller) if session else None
    if session is None:
        log.info("no masking session on %s for this caller", mask_id(to))
    return resolve_mask(action, to, peer)
