"""The JWTs the service puts on webhook callbacks, and the keys it publishes to verify them.

ACS signs each mid-call callback with a short-lived RS256 JWT (issuer
``https://acscallautomation.communication.azure.com``, audience = the ACS resource's immutable id)
and publishes an OpenID configuration at ``/calling/.well-known/acsopenidconfiguration`` whose
``jwks_uri`` lists the keys. The simulator does the same with its own key pair, so the app's
verification code runs unchanged against it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

DEFAULT_ISSUER = "https://acscallautomation.communication.azure.com"
OPENID_PATH = "/calling/.well-known/acsopenidconfiguration"
JWKS_PATH = "/calling/keys"
TOKEN_LIFETIME_SECONDS = 300


class WebhookSigner:
    def __init__(self, issuer: str = DEFAULT_ISSUER, audience: str = "") -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex

    def token(
        self, *, lifetime: int = TOKEN_LIFETIME_SECONDS, audience: str | None = None, now: float | None = None
    ) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.issuer,
            "aud": audience if audience is not None else self.audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": str(uuid.uuid4()),  # every delivery attempt gets a token of its own
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        public.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [public]}

    def openid_configuration(self, base_url: str) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": base_url.rstrip("/") + JWKS_PATH,
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }
