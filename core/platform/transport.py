"""The HTTP transport every SDK client of the app is given (a leaf module: the table layer and the clients use it)."""

from __future__ import annotations

from typing import Any


def transport() -> dict[str, Any]:
    """Keyword arguments for an SDK client: an HTTP transport that does not read the environment on every request.

    requests, the SDKs' transport, looks up proxy variables, a CA bundle and ~/.netrc on each request unless told
    to ignore the environment: about a sixth of the CPU of a Table Storage call (bench/callback_latency.py). They
    are read once here instead: with a proxy or NETRC configured, the SDK's default transport is kept; a CA bundle
    (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, as requests reads them) is passed on.
    """
    import os
    import urllib.request

    if any(kind != "no" for kind in urllib.request.getproxies()) or os.environ.get("NETRC"):
        return {}
    from azure.core.pipeline.transport import RequestsTransport

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    verify: dict[str, Any] = {"connection_verify": bundle} if bundle else {}
    return {"transport": RequestsTransport(use_env_settings=False, **verify)}
