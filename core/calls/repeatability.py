"""Requests that ACS acts on once, however often they are sent: ids derived from their cause, and the headers.

Events are delivered at least once, so a request caused by one may be sent again (a redelivery, a retry after
a crash). The service drops a repeat that carries the ``Repeatability-Request-ID`` and
``Repeatability-First-Sent`` of the first sending, so those are derived from the cause (the event, the
campaign's number), never drawn at random.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

NAMESPACE = uuid.UUID("6f1c7e8a-4d0b-4a57-9a0e-2d7f3c1b9e55")
REPEATABILITY_WINDOW = timedelta(minutes=4)  # the service keeps repeatability ids for 5 minutes


def derived_id(*parts: str) -> str:
    """A stable UUID for a request caused by something: the same on every redelivery of its cause."""
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def http_date(moment: datetime | None = None) -> str:
    return format_datetime(moment or datetime.now(UTC), usegmt=True)


def repeatability(
    request_id: str | None, first_sent: datetime | str | None, *, window: timedelta | None = None
) -> dict[str, Any]:
    """The ``Repeatability-*`` headers of a request, as the SDK's keyword arguments (none without an id).

    With ``window``, none either once the first sending is older than that: the service has forgotten the id by
    then and would refuse the date, so the request goes plain (it refuses a context already used anyway)."""
    if not request_id or not first_sent:
        return {}
    if window is not None:
        sent = first_sent if isinstance(first_sent, datetime) else parsedate_to_datetime(first_sent)
        if datetime.now(UTC) - sent > window:
            return {}
    date = first_sent if isinstance(first_sent, str) else http_date(first_sent)
    return {"headers": {"Repeatability-Request-ID": request_id, "Repeatability-First-Sent": date}}
