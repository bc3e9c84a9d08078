"""The control API's answers as models: the handlers build every JSON body through one of these, and the OpenAPI
document's response schemas are generated from the same classes, so the two cannot drift apart.

Strict writer: a model refuses a field it does not declare (``extra="forbid"``), and every field is written, with
``null`` when it is not known (so the schema lists each as required). Answers folded from stored rows that older
versions wrote (call records, campaign numbers) are read tolerantly: a field missing from the stored row takes its
default, a field no longer written is dropped, and the answer is written in today's shape.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from core.outbound.masking import MaskingSession

Status = Literal["pending", "calling", "answered", "confirmed", "no answer", "failed"]  # a campaign number's


class Answer(BaseModel):
    """A JSON body the API writes: every field, nothing else."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, json_schema_serialization_defaults_required=True
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Folded(Answer):
    """An answer built from stored rows: unknown stored fields are dropped, not refused (rows outlive versions);
    what is written is still exactly the declared fields."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": False})

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Self:
        return cls.model_validate(stored)


class Open(Answer):
    """A free-form object (call variables and outcomes a flow sets, a stored flow's outcome): declared fields are
    written, any other is kept."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})


# -- errors ----------------------------------------------------------------------------------------------------


class FieldProblem(Answer):
    field: str = Field(description="Where in the request (dotted path, e.g. targets.0.to; (body): the whole body)")
    message: str


class ErrorAnswer(Answer):
    """Every refusal the app itself writes (4xx and 5xx other than 401, which the Functions host answers empty)."""

    error: str = Field(description="Why, in one line")
    fields: list[FieldProblem] = Field(description="Each field at fault; empty when the request as a whole is")


# -- calls -----------------------------------------------------------------------------------------------------


class CallJoined(Answer):
    """A call placed or connected: address it by `call_connection_id` from then on."""

    call_ref: str = Field(description="The app's id of its leg in the call (its state, its callbacks)")
    call_connection_id: str = Field(description="The app's connection to the call: calls/{call_connection_id}/...")
    server_call_id: str | None = Field(description="The call itself, as Event Grid and recordings name it")
    state: str = Field(description="The connection's state as the service reported it (e.g. connecting)")


class AppView(Answer):
    """What the app keeps of its leg in the call."""

    call_ref: str
    flow: str = Field(description="The flow the leg runs; empty: none (the app only joined)")
    node: str = Field(description="The flow's current node")
    status: str = Field(description="answering, dialing, connected, transferring, transferred or ended")
    participants: list[str] = Field(description="Raw ids of the participants, as the last ParticipantsUpdated said")
    vars: dict[str, str] = Field(description="Call variables")
    outcome: dict[str, Any] = Field(
        description="What happened: the flow's results, and under api the result of each control-API action by its"
        " operation_context"
    )
    recording_id: str | None = Field(description="The call's recording, if one was started or reported")


class CallView(Answer):
    call_connection_id: str
    server_call_id: str | None
    state: str = Field(description="The connection's state (disconnected once the service forgot the call)")
    correlation_id: str | None
    targets: list[str] = Field(description="Raw ids the call was placed to (empty once the service forgot it)")
    source: str | None = Field(description="Raw id the call came from")
    app: AppView | None = Field(description="The app's own view of the call; null for a call it has no state of")


class ParticipantView(Answer):
    id: str = Field(description="Raw id (4:+E.164 for a phone)")
    is_muted: bool
    is_on_hold: bool


class ParticipantList(Answer):
    participants: list[ParticipantView]


class ActionAccepted(Answer):
    """The service took the action; its result arrives as an event, kept under `app.outcome.api` of
    `GET calls/{id}` by this operation context."""

    operation_context: str = Field(description="api:<action>:<id>: names this action's result")


class ParticipantInvited(ActionAccepted):
    invitation_id: str = Field(description="For cancel-add-participant")


class RecordingStarted(ActionAccepted):
    recording_id: str = Field(description="For pause-, resume- and stop-recording (which default to it)")
    recording_state: str = Field(description="e.g. active, or inactive with pause_on_start")


# -- campaigns and masking ----------------------------------------------------------------------------------------


class CampaignNumber(Answer):
    number: str
    status: Status
    detail: str = Field(description="How the call went (e.g. busy), or why the number waits")
    results: dict[str, str] = Field(description="Variables the flow set (menu choices, digits)")
    call_connection_id: str | None
    started_at: str | None
    ended_at: str | None


class CampaignReport(Answer):
    id: str
    flow: str
    status: Literal["running", "held", "done"]
    concurrency: int
    live: int = Field(description="Calls in progress")
    peak: int = Field(description="Most calls live at once, as the app counted them")
    held: str | None = Field(description="Why the pending numbers wait (the daily dial cap), until requested again")
    created_at: str
    finished_at: str | None
    counts: dict[str, int] = Field(description="Numbers by status")
    numbers: list[CampaignNumber]


class MaskingSessionCreated(Answer, MaskingSession):
    """The session as stored, written strictly: the stored model's fields are the answer's."""


# -- call records ------------------------------------------------------------------------------------------------


class Party(Folded):
    """Who started or ended a call, as its event named them."""

    id: str
    role: str | None = None
    kind: str | None = None
    name: str | None = None


class EndReason(Folded):
    code: int | None = None
    sub_code: int | None = None
    phrase: str = ""


class Session(Folded):
    joined_at: str | None = None
    left_at: str | None = None


class RecordParticipant(Folded):
    id: str
    role: str | None = None
    display_name: str | None = None
    user_agent: str | None = None
    participant_ids: list[str] = Field(default_factory=list)
    joined_at: str | None = None
    left_at: str | None = None
    sessions: list[Session] = Field(default_factory=list)


class RecordEvent(Folded):
    id: str
    type: str
    time: str | None = None


class FlowOutcome(Open):
    """An app leg's flow, as its final state left it (stored when the leg ended: older versions wrote fewer or
    other fields, kept as stored)."""

    flow: str | None = None
    call_connection_id: str | None = None


class CallRecord(Folded):
    """One call's record, folded from Event Grid's calling events and the flows' outcomes."""

    server_call_id: str
    correlation_id: str | None = None
    status: Literal["active", "ended"]
    complete: bool = Field(description="Both CallStarted and CallEnded are in")
    group_call_id: str | None = None
    room_id: str | None = None
    is_two_party: bool | None = None
    is_rooms_call: bool = False
    started_by: Party | None = None
    started_at: str | None = None
    started_at_source: str | None = Field(default=None, description="CallStarted, or estimated from other rows")
    ended_at: str | None = None
    duration_seconds: float | None = None
    ended_by: Party | None = None
    end_reason: EndReason | None = None
    participants: list[RecordParticipant] = Field(default_factory=list)
    flows: list[FlowOutcome] = Field(default_factory=list)
    events: list[RecordEvent] = Field(default_factory=list)


class SummaryFlow(Folded):
    flow: str | None = None
    call_connection_id: str | None = None
    menu_choices: list[Any] = Field(default_factory=list)
    transfer_target: str | None = None
    transfer_result: str | None = None
    ended_reason: str | None = None


class RecordSummary(Folded):
    """A call as the listing shows it (bounded in size; stored with the record when it changed)."""

    server_call_id: str
    correlation_id: str | None = None
    status: str | None = None
    complete: bool | None = None
    started_at: str | None = None
    started_at_source: str | None = None
    ended_at: str | None = None
    duration_seconds: float | None = None
    started_by: Party | None = None
    end_reason: EndReason | None = None
    participant_count: int = 0
    participants: list[str] = Field(default_factory=list, description="The first few participants' raw ids")
    flows: list[SummaryFlow] = Field(default_factory=list)


class RecordList(Answer):
    records: list[RecordSummary] = Field(description="Newest first")


# -- health ------------------------------------------------------------------------------------------------------


class Probe(Answer):
    ok: bool
    ms: float | None = Field(default=None, description="How long the probe took, when it succeeded")
    error: str | None = Field(default=None, description="Why it failed")


class HealthReport(Answer):
    python: str
    callautomation_sdk: str
    status: Literal["ok", "degraded", "error"] = Field(description="200 when ok, else 503")
    settings: dict[str, Any] | None = Field(default=None, description="The settings as loaded, no secrets")
    settings_error: str | None = Field(default=None, description="Why the settings do not load (status error)")
    dependencies: dict[str, Probe] | None = None
    dependencies_age_s: float | None = Field(default=None, description="Age of the cached probe results")
