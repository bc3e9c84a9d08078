"""CommunicationIdentifierModel <-> raw id, as the service reads and writes them.

Readers are tolerant (a model may carry only ``rawId``, only the kind-specific part, or older
shapes without ``kind``); writers always emit the full model with ``rawId`` and ``kind``.
"""

from __future__ import annotations

from typing import Any

PHONE_PREFIX = "4:"


class IdentifierError(ValueError):
    """The identifier model names nobody the service could address."""


def raw_id_of(model: Any) -> str:
    if not isinstance(model, dict):
        raise IdentifierError("identifier must be an object")
    raw = model.get("rawId")
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(model.get("phoneNumber"), dict) and model["phoneNumber"].get("value"):
        return PHONE_PREFIX + model["phoneNumber"]["value"]
    if isinstance(model.get("communicationUser"), dict) and model["communicationUser"].get("id"):
        return model["communicationUser"]["id"]
    if isinstance(model.get("microsoftTeamsUser"), dict) and model["microsoftTeamsUser"].get("userId"):
        return "8:orgid:" + model["microsoftTeamsUser"]["userId"]
    if isinstance(model.get("microsoftTeamsApp"), dict) and model["microsoftTeamsApp"].get("appId"):
        return "28:orgid:" + model["microsoftTeamsApp"]["appId"]
    raise IdentifierError("identifier has neither rawId nor a known kind")


def model_of(raw_id: str) -> dict[str, Any]:
    """The full identifier model ACS writes for a raw id."""
    if raw_id.startswith(PHONE_PREFIX):
        return {"rawId": raw_id, "kind": "phoneNumber", "phoneNumber": {"value": raw_id[len(PHONE_PREFIX) :]}}
    if raw_id.startswith("8:orgid:"):
        return {
            "rawId": raw_id,
            "kind": "microsoftTeamsUser",
            "microsoftTeamsUser": {"userId": raw_id[len("8:orgid:") :], "isAnonymous": False, "cloud": "public"},
        }
    if raw_id.startswith("28:orgid:"):
        return {
            "rawId": raw_id,
            "kind": "microsoftTeamsApp",
            "microsoftTeamsApp": {"appId": raw_id[len("28:orgid:") :], "cloud": "public"},
        }
    if raw_id.startswith("8:"):
        return {"rawId": raw_id, "kind": "communicationUser", "communicationUser": {"id": raw_id}}
    return {"rawId": raw_id, "kind": "unknown"}


def normalize(value: str) -> str:
    """Accept a phone number, an ACS user id or a raw id and return the raw id."""
    if value.startswith("+"):
        return PHONE_PREFIX + value
    return value


def is_phone(raw_id: str) -> bool:
    return raw_id.startswith(PHONE_PREFIX)
