"""Errors in the service's envelope: ``{"error": {"code", "message", ...}}`` (common.json)."""

from __future__ import annotations

from typing import Any


class AcsError(Exception):
    """An error the simulated service answers with, in ACS's error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return {"error": error}


# The usual mistakes, with the codes ACS answers them with.
def bad_request(message: str, target: str | None = None) -> AcsError:
    return AcsError(400, "BadRequest", message, target=target)


def unauthorized(message: str) -> AcsError:
    return AcsError(401, "Unauthorized", message)


def call_not_found(call_connection_id: str) -> AcsError:
    return AcsError(404, "8522", f"Call connection {call_connection_id} was not found.")


def call_not_established(call_connection_id: str) -> AcsError:
    return AcsError(400, "8501", f"Action is not valid when the call {call_connection_id} is not in Established state.")


def call_ended(call_connection_id: str) -> AcsError:
    return AcsError(404, "8522", f"Call {call_connection_id} has ended; no further actions are possible.")


def participant_not_found(raw_id: str) -> AcsError:
    return AcsError(404, "8523", f"Participant {raw_id} was not found in the call.", target="participant")


def incoming_context_invalid() -> AcsError:
    return AcsError(400, "8523", "Invalid request: incomingCallContext is malformed or unknown.")


def incoming_context_used() -> AcsError:
    return AcsError(
        400,
        "8527",
        "The incoming call has already been answered, redirected or rejected.",
        target="incomingCallContext",
    )


def incoming_context_expired() -> AcsError:
    return AcsError(
        400, "8528", "The incoming call has expired: it was not answered in time.", target="incomingCallContext"
    )


def recognize_running() -> AcsError:
    return AcsError(400, "8507", "Another recognize operation is already running or queued on this call.")


def recording_not_found(recording_id: str) -> AcsError:
    return AcsError(404, "8562", f"Recording {recording_id} was not found.")


def throttled(retry_after: float) -> AcsError:
    return AcsError(
        429, "TooManyRequests", "Too many requests; retry later.", headers={"Retry-After": f"{retry_after:g}"}
    )


def unavailable(retry_after: float) -> AcsError:
    return AcsError(
        503,
        "ServiceUnavailable",
        "The service is temporarily unavailable.",
        headers={"Retry-After": f"{retry_after:g}"},
    )
