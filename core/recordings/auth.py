"""Request headers for ACS's recording store: the HMAC of an access key, or an Entra token.

Kept apart from the URL checks so that it signs only what they let through (a ``SafeUrl``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlparse

from .urls import SafeUrl, parse_canonical

TOKEN_SCOPE = "https://communication.azure.com//.default"


class RecordingAuth:
    """Headers for a request to a recording URL: ACS's HMAC (access key) or an Entra token."""

    def __init__(self, endpoint: str, access_key: str | None = None, credential: Any = None) -> None:
        parsed = urlparse(endpoint)
        self._signed_host = parsed.netloc  # the resource's host, as the SDK signs it
        self._x_ms_host = parsed.hostname or ""
        self._key = base64.b64decode(access_key) if access_key else None
        self._credential = credential

    def headers(self, method: str, url: SafeUrl | str) -> dict[str, str]:
        """For a ``SafeUrl`` (the copier passes nothing else); a string (tools) is parsed the one strict way."""
        safe = url if isinstance(url, SafeUrl) else parse_canonical(url)
        if self._key is None:
            token = self._credential.get_token(TOKEN_SCOPE).token
            return {"Authorization": f"Bearer {token}", "x-ms-host": self._x_ms_host}
        date = format_datetime(datetime.now(UTC), usegmt=True)
        content_hash = base64.b64encode(hashlib.sha256(b"").digest()).decode()
        to_sign = f"{method}\n{safe.target}\n{date};{self._signed_host};{content_hash}"
        signature = base64.b64encode(hmac.new(self._key, to_sign.encode(), hashlib.sha256).digest()).decode()
        return {
            "x-ms-date": date,
            "x-ms-content-sha256": content_hash,
            "x-ms-host": self._x_ms_host,
            "Authorization": f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}",
        }
