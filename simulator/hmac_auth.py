"""Verification of ACS's HMAC-SHA256 request signing, as the service does it.

The client signs ``VERB\\npath?query\\n<x-ms-date>;<host>;<x-ms-content-sha256>`` with the
base64-decoded access key. The host is the one the client addressed (recording downloads, which
go to another host, name the resource's host in ``x-ms-host``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from .errors import AcsError

SIGNED_HEADERS = "x-ms-date;host;x-ms-content-sha256"
DEFAULT_MAX_SKEW = timedelta(minutes=15)


def _denied(message: str) -> AcsError:
    return AcsError(401, "Denied", message)


def content_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def sign(access_key: str, method: str, path_and_query: str, date: str, host: str, body_hash: str) -> str:
    """The signature a client computes; used by tests and by the simulator's own checks."""
    string_to_sign = f"{method.upper()}\n{path_and_query}\n{date};{host};{body_hash}"
    digest = hmac.new(base64.b64decode(access_key), string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(
    access_key: str,
    method: str,
    path_and_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> None:
    """Raise an ``AcsError`` (401) unless the request carries a valid, fresh signature."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("HMAC-SHA256 "):
        raise _denied("Missing or unsupported Authorization header; expected HMAC-SHA256.")
    params: dict[str, str] = {}
    for part in auth[len("HMAC-SHA256 ") :].split("&"):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip()
    if params.get("SignedHeaders", "").lower() != SIGNED_HEADERS:
        raise _denied(f"SignedHeaders must be '{SIGNED_HEADERS}'.")
    signature = params.get("Signature")
    if not signature:
        raise _denied("The Authorization header carries no Signature.")

    date = headers.get("x-ms-date")
    if not date:
        raise _denied("Missing x-ms-date header.")
    try:
        sent = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise _denied("x-ms-date is not an RFC 1123 date.") from None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if abs(now - sent) > max_skew:
        raise _denied(
            f"The request date {date} is outside the allowed window of {int(max_skew.total_seconds() // 60)} minutes."
        )

    body_hash = headers.get("x-ms-content-sha256", "")
    if body_hash != content_hash(body):
        raise _denied("x-ms-content-sha256 does not match the request body.")

    host = headers.get("x-ms-host") or headers.get("Host", "")
    expected = sign(access_key, method, path_and_query, date, host, body_hash)
    if not hmac.compare_digest(expected, signature):
        raise _denied("The request signature is invalid.")


def http_date(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
