"""Event emission: mid-call events to a callback URL, and Event Grid events to the subscriptions.

Both shapes are built here only, so every section sends events exactly as ACS shapes them (envelope, ids, times).
"""

from __future__ import annotations

import uuid
from typing import Any

from .. import result_codes as rc
from ..identifiers import model_of
from .base import EngineBase
from .model import Connection, ServerCall, now_iso

EVENT_PREFIX = "Microsoft.Communication."


class Events(EngineBase):
    """Sends the two kinds of events and keeps a copy of each (``sent_events``, ``sent_eventgrid``)."""

    def emit(
        self,
        conn: Connection,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        url: str | None = None,
        context: str | None = None,
        include_context: bool = True,
    ) -> None:
        """Post one mid-call event, shaped as ACS shapes it, to the app."""
        payload: dict[str, Any] = {
            "callConnectionId": conn.id,
            "serverCallId": conn.call.id,
            "correlationId": conn.call.correlation_id,
        }
        if include_context and context is not None:
            payload["operationContext"] = context
        payload.update(data or {})
        # Real payloads carry fields the spec does not list; apps must tolerate them.
        payload["version"] = "2026-03-12"
        payload["publicEventType"] = EVENT_PREFIX + name
        event = {
            "id": str(uuid.uuid4()),
            "source": f"calling/callConnections/{conn.id}",
            "type": EVENT_PREFIX + name,
            "data": payload,
            "time": now_iso(),
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "subject": f"calling/callConnections/{conn.id}",
        }
        self.sent_events.append(event)
        self.delivery.send_callback(url or conn.callback_uri, event, conn.call.timeline, key=conn.id)

    def publish(self, call: ServerCall | None, event_type: str, subject: str, data: dict[str, Any]) -> dict[str, Any]:
        """Publish one Event Grid event (IncomingCall, CallStarted, RecordingFileStatusUpdated, ...)."""
        event = {
            "id": str(uuid.uuid4()),
            "topic": self.config.topic,
            "subject": subject,
            "data": data,
            "eventType": EVENT_PREFIX + event_type,
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "eventTime": now_iso(),
        }
        self.sent_eventgrid.append(event)
        self.delivery.publish(event, call.timeline if call else None)
        return event

    def _calling_props(self, call: ServerCall) -> dict[str, Any]:
        """The fields every Event Grid calling event carries about its call."""
        starter = call.started_by or next(iter(call.participants), None) or "4:+10000000000"
        props: dict[str, Any] = {
            "startedBy": {"communicationIdentifier": model_of(starter), "role": "Attendee"},
            "serverCallId": call.id,
            "isTwoParty": len(call.ever_joined) <= 2 and call.group_call_id is None and call.room_id is None,
            "correlationId": call.correlation_id,
            "isRoomsCall": call.room_id is not None,
        }
        if call.group_call_id:
            props["group"] = {"id": call.group_call_id}
        if call.room_id:
            props["room"] = {"id": call.room_id}
        return props

    def _call_started_eg(self, call: ServerCall) -> None:
        self.publish(call, "CallStarted", f"call/{call.id}/startedBy/{call.started_by}", self._calling_props(call))

    def _participant_added_eg(self, call: ServerCall, raw: str) -> None:
        self._participant_eg(call, raw, "CallParticipantAdded")

    def _participant_removed_eg(self, call: ServerCall, raw: str) -> None:
        self._participant_eg(call, raw, "CallParticipantRemoved")

    def _participant_eg(self, call: ServerCall, raw: str, event_type: str) -> None:
        data = self._calling_props(call)
        data.update(
            {
                "user": {"communicationIdentifier": model_of(raw), "role": "Attendee"},
                "displayName": self.behaviour_of(raw).display_name or "",
                "participantId": str(uuid.uuid4()),
                "userAgent": "acs-simulator/1.0",
            }
        )
        self.publish(call, event_type, f"call/{call.id}/participant/{raw}", data)

    def _participants_updated(self, call: ServerCall) -> None:
        """Send the roster to every connected app leg (ParticipantsUpdated)."""
        roster = [p.model() for p in call.participants.values()]
        for conn in call.live_connections():
            if conn.state == "connected":
                self.emit(
                    conn,
                    "ParticipantsUpdated",
                    {
                        "sequenceNumber": next(conn.update_sequence),
                        "participants": roster,
                        "resultInformation": rc.info(rc.SUCCESS),
                    },
                    include_context=False,
                )
