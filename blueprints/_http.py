"""What the Functions host hands an HTTP trigger, read once: route values."""

import re

import azure.functions as func

_ENCODED_SLASH = re.compile("%2F", re.IGNORECASE)


def route_value(req: func.HttpRequest, name: str, default: str | None = None) -> str | None:
    """A route parameter with its ``/`` restored: the host decodes every escape of the path but ``%2F``, which
    stays in the value as sent (so an id holding ``/``, such as a base64 server call id, is sent as ``%2F``).
    Only that escape is decoded here: decoding everything again would decode twice."""
    value = req.route_params.get(name)
    return default if value is None else _ENCODED_SLASH.sub("/", value)
