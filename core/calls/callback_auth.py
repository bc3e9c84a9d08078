"""Authentication of mid-call callbacks: the JWT ACS signs each one with, and a per-call token.

ACS puts ``Authorization: Bearer <JWT>`` on every webhook: RS256, signed with keys listed at the ``jwks_uri`` of its
OpenID configuration, issuer ``https://acscallautomation.communication.azure.com``, audience = the ACS resource's
immutable id (keys cached, fetched again for a key not seen yet). Each callback URL also carries ``sig``, an HMAC of
the call's reference under the app's secret: a URL for one call cannot be reused for another. Neither depends on
the host name the request arrived at, so both work behind a proxy or a tunnel.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:  # PyJWT (and cryptography under it) is imported on the first callback, not at start-up
    import jwt

log = logging.getLogger("core.calls.callback_auth")
LEEWAY_SECONDS = 60
# The token does not cover the body: a captured callback (token and URL) can be sent again until the token expires.
# ``verify`` therefore says until when the delivery could be replayed (``exp`` plus the leeway), and the app
# remembers its event ids that long (``core.calls.state``). ACS documents a lifetime of 5 minutes and a new token
# for every callback; a token valid for longer than ``MAX_TOKEN_LIFETIME_SECONDS`` from now is refused, so that this
# memory stays bounded.
MAX_TOKEN_LIFETIME_SECONDS = 3600  # 12 times the lifetime ACS documents (300 s)
CONFIG_TTL_SECONDS = 24 * 3600


class AuthError(Exception):
    """A callback is not from ACS, or not for this call; the message says why (for the log)."""


def sign_call_ref(secret: bytes, call_ref: str) -> str:
    digest = hmac.new(secret, call_ref.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def callback_url(base_url: str, secret: bytes, call_ref: str) -> str:
    return f"{base_url.rstrip('/')}/callbacks/{quote(call_ref, safe='')}?sig={sign_call_ref(secret, call_ref)}"


class CallbackAuthenticator:
    def __init__(
        self,
        *,
        openid_config_url: str,
        issuer: str,
        audience: str,
        secret: bytes,
        previous_secret: bytes | None = None,
    ) -> None:
        self._openid_config_url = openid_config_url
        self._issuer = issuer
        self._audience = audience
        # New URLs are signed with the current key; during a rotation, URLs given out under the previous
        # key (calls already in progress) are still accepted until it is removed from the settings.
        self._secrets = (secret,) if previous_secret is None else (secret, previous_secret)
        self._jwks: jwt.PyJWKClient | None = None
        self._jwks_at = 0.0
        self._lock = threading.Lock()

    def _keys(self) -> jwt.PyJWKClient:
        import jwt

        with self._lock:
            if self._jwks is None or time.monotonic() - self._jwks_at > CONFIG_TTL_SECONDS:
                with urllib.request.urlopen(self._openid_config_url, timeout=10) as response:  # noqa: S310
                    config = json.load(response)
                jwks_uri = config.get("jwks_uri")
                if not jwks_uri:
                    raise AuthError(f"OpenID configuration at {self._openid_config_url} has no jwks_uri")
                # PyJWKClient caches the key set and refetches it when a token names an unknown key.
                self._jwks = jwt.PyJWKClient(jwks_uri, cache_jwk_set=True, lifespan=3600, timeout=10)
                self._jwks_at = time.monotonic()
            return self._jwks

    def verify_token(self, authorization: str | None) -> dict[str, object]:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError("no bearer token")
        token = authorization[7:].strip()
        import jwt

        try:
            key = self._keys().get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            # The key set could not be fetched: not the caller's fault; let the sender retry.
            raise ConnectionError(f"cannot fetch the callback signing keys: {exc}") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError(f"invalid token: {exc}") from None
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):  # PyJWT takes anything int() takes
            raise AuthError("invalid token: exp is not a number")
        if exp > time.time() + MAX_TOKEN_LIFETIME_SECONDS + LEEWAY_SECONDS:
            raise AuthError(f"the token is valid for longer than {MAX_TOKEN_LIFETIME_SECONDS} s")
        return claims

    def verify_call_token(self, call_ref: str, sig: str | None) -> None:
        if not sig:
            raise AuthError("the callback URL has no sig")
        # As bytes: compare_digest refuses str with characters beyond ASCII, which a forged URL may hold.
        given = sig.encode("utf-8", "surrogatepass")
        matches = [hmac.compare_digest(given, sign_call_ref(key, call_ref).encode()) for key in self._secrets]
        if not any(matches):
            raise AuthError("the callback URL's sig does not match its call")

    def verify(self, authorization: str | None, call_ref: str, sig: str | None) -> float:
        """Check a callback's URL and token; returns until when this delivery could be replayed (epoch seconds): past
        that, its token is refused."""
        self.verify_call_token(call_ref, sig)
        claims = self.verify_token(authorization)
        return float(claims["exp"]) + LEEWAY_SECONDS + 1
