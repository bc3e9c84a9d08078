"""The control API's contract: request models, the table of operations, and its OpenAPI document.

Every capability of the service's feature list is one operation here. The models validate the
JSON a caller sends (errors name the field); the table is the single list that the HTTP layer
serves, the OpenAPI document describes, and the tests compare against the registered routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.flows import actions as act
from core.flows.model import KEYS, Prompt, Target
from core.outbound import responses as out

PHONE = r"^\+[1-9]\d{6,14}$"  # E.164: + and 7 to 15 digits
# A raw id: a phone number (+E.164, or 4:+E.164: a raw id of kind 4 is a phone number and nothing else), or an id
# of another kind in printable ASCII without spaces, '/', '\\', '#' or '?' (no ACS raw id holds them, and Table
# Storage keys, which some of them become, may not).
RAW_ID = r'^(\+[1-9]\d{6,14}|4:\+[1-9]\d{6,14}|([0-35-9]|\d\d+):[!"$-.0->@-\[\]-~]+)$'
MAX_ID = 256

# Field limits, as ACS documents them where it does ("Pass contextual data between calls": up to 5 custom SIP
# headers named X-MS-Custom-*, plus User-To-User, keys up to 64 characters, values up to 256, from a small
# character set; up to 1,000 VoIP headers, keys up to 64 characters, values up to 1,024), and otherwise bounds
# that keep a call's state row within Table Storage's limits (call variables, display names).
SIP_KEY = r"^(X-MS-Custom-[A-Za-z0-9.!%*_+~-]+|User-To-User)$"
SIP_VALUE = r"^[A-Za-z0-9=;.!%*_+~-]*$"
MAX_SIP_HEADERS = 5  # X-MS-Custom-* ones; User-To-User comes on top
VOIP_KEY = r"^[A-Za-z0-9.!%*_+~-]+$"
MAX_VOIP_HEADERS = 1000
MAX_DISPLAY_NAME = 256
VAR_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"  # a leading underscore is the flow engine's own
MAX_VARS = 20
MAX_VAR_VALUE = 1000
MAX_VARS_TOTAL = 4000  # characters of names and values together
MAX_URL = 2048

SipHeaders = Annotated[
    dict[
        Annotated[str, Field(pattern=SIP_KEY, max_length=64)],
        Annotated[str, Field(pattern=SIP_VALUE, max_length=256)],
    ],
    Field(max_length=MAX_SIP_HEADERS + 1),
]
VoipHeaders = Annotated[
    dict[
        Annotated[str, Field(pattern=VOIP_KEY, max_length=64)],
        Annotated[str, Field(max_length=1024, pattern=r"^[^\x00-\x1f\x7f]*$")],
    ],
    Field(max_length=MAX_VOIP_HEADERS),
]
Vars = Annotated[
    dict[Annotated[str, Field(pattern=VAR_NAME)], Annotated[str, Field(max_length=MAX_VAR_VALUE)]],
    Field(max_length=MAX_VARS),
]
DisplayName = Annotated[str, Field(min_length=1, max_length=MAX_DISPLAY_NAME, pattern=r"^[^\x00-\x1f\x7f]*$")]


def _vars_size(values: dict[str, str]) -> dict[str, str]:
    if sum(len(k) + len(v) for k, v in values.items()) > MAX_VARS_TOTAL:
        raise ValueError(f"call variables hold at most {MAX_VARS_TOTAL} characters in all (names and values)")
    return values


def _https_audio(prompts: Any) -> Any:
    """Audio files are fetched by the service from the URL given: https only (a flow's may be http, for tests)."""
    for prompt in prompts if isinstance(prompts, list) else [prompts]:
        if prompt is not None and prompt.audio is not None:
            if not prompt.audio.startswith("https://") or len(prompt.audio) > MAX_URL:
                raise ValueError(f"audio must be an https URL of at most {MAX_URL} characters")
    return prompts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallTarget(Target):
    """A target given to the API, checked as ACS checks it (a flow's targets may name {variables} instead)."""

    to: str = Field(
        pattern=RAW_ID,
        max_length=MAX_ID,
        description="+E.164 phone number or raw id (4:+E.164, 8:acs:..., 8:orgid:...)",
    )
    caller_id: str | None = Field(default=None, pattern=PHONE, description="Caller id shown to a phone target (+E.164)")
    display_name: DisplayName | None = None
    sip_headers: SipHeaders = Field(
        default_factory=dict,
        description=f"Custom SIP headers: up to {MAX_SIP_HEADERS} named X-MS-Custom-*, and User-To-User",
    )
    voip_headers: VoipHeaders = Field(default_factory=dict, description="Custom VoIP headers")

    @field_validator("sip_headers")
    @classmethod
    def _sip_count(cls, value: dict[str, str]) -> dict[str, str]:
        if sum(1 for k in value if k != "User-To-User") > MAX_SIP_HEADERS:
            raise ValueError(f"at most {MAX_SIP_HEADERS} X-MS-Custom- headers (and User-To-User)")
        return value


class PlaceCall(_Strict):
    """Place an outbound call to one or more endpoints (a group call when several) into a flow."""

    targets: list[CallTarget] = Field(min_length=1, max_length=20)
    caller_id: str | None = Field(
        default=None,
        pattern=PHONE,
        description="Number shown to phone targets; required when calling a phone",
    )
    display_name: DisplayName | None = None
    flow: str | None = Field(default=None, description="Flow to run once connected; none: the app only joins")
    vars: Vars = Field(default_factory=dict, description="Call variables for the flow's prompts and targets")

    _vars = field_validator("vars")(lambda cls, v: _vars_size(v))

    @model_validator(mode="after")
    def _caller_id(self) -> PlaceCall:
        if any(t.to.startswith("+") for t in self.targets) and not self.caller_id:
            raise ValueError("caller_id is required to call a phone number")
        if any(t.sip_headers or t.voip_headers for t in self.targets):
            raise ValueError("custom SIP/VoIP headers go with add-participant and transfer; ACS takes none here")
        return self


class ConnectCall(_Strict):
    """Connect the app to an ongoing call or a Room (exactly one locator): a call the app placed, answered or was
    told about by Event Grid, or a room or group call listed in CONNECT_ALLOWED_ROOMS."""

    server_call_id: str | None = Field(default=None, max_length=MAX_ID)
    group_call_id: str | None = Field(default=None, max_length=MAX_ID)
    room_id: str | None = Field(default=None, max_length=MAX_ID)
    flow: str | None = None
    vars: Vars = Field(default_factory=dict)

    _vars = field_validator("vars")(lambda cls, v: _vars_size(v))

    @model_validator(mode="after")
    def _one(self) -> ConnectCall:
        if sum(bool(x) for x in (self.server_call_id, self.group_call_id, self.room_id)) != 1:
            raise ValueError("give exactly one of server_call_id, group_call_id, room_id")
        return self


class Who(_Strict):
    who: str = Field(pattern=RAW_ID, max_length=MAX_ID, description="Participant: +E.164 number or raw id")


class PlayRequest(_Strict):
    prompts: list[Prompt] = Field(min_length=1, max_length=10, description="Audio files must be https URLs")
    to: str | None = Field(
        default=None, pattern=RAW_ID, max_length=MAX_ID, description="One participant; none: everyone"
    )
    loop: bool = False

    _https = field_validator("prompts")(lambda cls, v: _https_audio(v))


class RecognizeChoice(_Strict):
    label: str
    phrases: list[str] = Field(default_factory=list)
    key: str | None = Field(default=None, min_length=1, max_length=1)


class RecognizeRequest(_Strict):
    mode: Literal["dtmf", "choices", "speech", "speech_or_dtmf"]
    target: str = Field(pattern=RAW_ID, max_length=MAX_ID)
    prompt: Prompt | None = None
    choices: list[RecognizeChoice] = Field(default_factory=list)
    max_tones: int = Field(default=1, ge=1, le=60)
    stop_keys: str = ""
    timeout_seconds: int = Field(default=5, ge=1, le=300)
    speech_language: str | None = None

    _https = field_validator("prompt")(lambda cls, v: _https_audio(v))

    @model_validator(mode="after")
    def _choices(self) -> RecognizeRequest:
        if self.mode == "choices" and not self.choices:
            raise ValueError("choices are required for mode choices")
        bad = [k for k in self.stop_keys + "".join(c.key or "" for c in self.choices) if k not in KEYS]
        if bad:
            raise ValueError(f"{''.join(bad)!r} are not DTMF keys")
        return self


class TransferRequest(_Strict):
    target: CallTarget
    transferee: str | None = Field(
        default=None, pattern=RAW_ID, max_length=MAX_ID, description="In a group call: the participant to transfer"
    )


class AddParticipantRequest(_Strict):
    target: CallTarget
    timeout_seconds: int = Field(default=30, ge=1, le=180)


class CancelAddRequest(_Strict):
    invitation_id: str = Field(min_length=1)


class HoldRequest(_Strict):
    who: str = Field(pattern=RAW_ID, max_length=MAX_ID)
    music: Prompt | None = None

    _https = field_validator("music")(lambda cls, v: _https_audio(v))


class SendDtmfRequest(_Strict):
    to: str = Field(pattern=RAW_ID, max_length=MAX_ID)
    tones: str = Field(min_length=1, max_length=18)

    @model_validator(mode="after")
    def _keys(self) -> SendDtmfRequest:
        bad = [k for k in self.tones if k not in KEYS]
        if bad:
            raise ValueError(f"{''.join(bad)!r} are not DTMF keys")
        return self


class StartRecordingRequest(_Strict):
    channel: Literal["mixed", "unmixed"] | None = None
    content: Literal["audio", "audioVideo"] | None = None
    format: Literal["wav", "mp3", "mp4"] | None = None
    pause_on_start: bool = False


class RecordingRequest(_Strict):
    # Left out: the call's own recording, the one the app started or was told of (its state's recording_id).
    recording_id: str | None = Field(default=None, min_length=1)


class Empty(_Strict):
    pass


class StartCampaign(_Strict):
    """Call a list of numbers into a flow, at most ``concurrency`` calls at a time."""

    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Your id for the campaign: a repeated request with it returns the campaign (and places any "
        "call a failed attempt left unplaced) instead of starting another",
    )
    numbers: list[Annotated[str, Field(pattern=RAW_ID, max_length=MAX_ID)]] = Field(
        min_length=1, max_length=1000, description="Who to call: +E.164 numbers or raw ids; repeats are called once"
    )
    caller_id: str | None = Field(default=None, pattern=PHONE, description="Number shown to phone targets")
    flow: str = Field(default="outage_notice", description="Flow each answered call runs")
    vars: Vars = Field(default_factory=dict, description="Call variables for the flow's prompts and targets")
    concurrency: int = Field(default=5, ge=1, le=50, description="Most calls live at once")

    _vars = field_validator("vars")(lambda cls, v: _vars_size(v))

    @model_validator(mode="after")
    def _caller_id(self) -> StartCampaign:
        if any(n.startswith(("+", "4:")) for n in self.numbers) and not self.caller_id:
            raise ValueError("caller_id is required to call a phone number")
        return self


class MaskingSessionRequest(_Strict):
    """Let two parties call each other through a masked number, neither seeing the other's number."""

    masked_number: str = Field(pattern=PHONE, description="One of your numbers, routed by a rule of type mask")
    party_a: str = Field(
        pattern=RAW_ID, max_length=MAX_ID, description="+E.164 number (or raw id) of one party, e.g. the buyer"
    )
    party_b: str = Field(pattern=RAW_ID, max_length=MAX_ID, description="The other party, e.g. the seller")
    ttl_minutes: int = Field(default=1440, ge=1, le=43200, description="How long the session lasts")

    @model_validator(mode="after")
    def _distinct(self) -> MaskingSessionRequest:
        plain = {p[2:] if p.startswith("4:") else p for p in (self.party_a, self.party_b)}
        if len(plain) != 2:
            raise ValueError("party_a and party_b must differ")
        if self.masked_number in plain:
            raise ValueError("the masked number cannot be a party")
        return self


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str  # below /api
    summary: str
    request: type[BaseModel] | None = None
    success: int = 200
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON schema type, description)
    response: type[out.Answer] = out.ActionAccepted  # the body of ``success``: the handler builds it with this model
    errors: tuple[tuple[int, str], ...] = ()  # (status, why): refusals (ErrorAnswer) but 401 and a body's 400/411/413
    acs: bool = False  # it asks Communication Services, whose 4xx passes through and whose failure is a 502


CALL = "calls/{call_connection_id}"
REFUSED_DESTINATION = "A destination the dialing policy refuses (DIAL_ALLOWED_PREFIXES, DIAL_DENIED_PREFIXES)"
REFUSED_CONNECT = "A call the app did not place, answer or hear of, or a room not in CONNECT_ALLOWED_ROOMS"
CAP_REACHED = "The day's cap on calls placed is reached (DIAL_DAILY_CAP); Retry-After says when it resets"


@dataclass(frozen=True)
class CallAction:
    """One action on a live call (POST calls/{id}/<name>): its request, and the executor's action it becomes."""

    request: type[BaseModel]
    summary: str
    build: Callable[[Any, str], act.Action]  # (the validated request, its operation context) -> the action
    rings: bool = False  # it makes the service ring someone: the dialing policy and the daily cap apply
    starts_recording: bool = False  # addressed by the server call id, which is looked up first
    response: type[out.ActionAccepted] = out.ActionAccepted  # what the 202 says: the executor's result goes in it


def _recognize(req: RecognizeRequest, context: str) -> act.Recognize:
    return act.Recognize(
        mode=req.mode,
        target=req.target,
        prompts=[req.prompt] if req.prompt else [],
        choices=[c.model_dump() for c in req.choices],
        max_tones=req.max_tones,
        stop_keys=req.stop_keys,
        silence_timeout=req.timeout_seconds,
        speech_language=req.speech_language,
        context=context,
    )


def _start_recording(req: StartRecordingRequest, context: str) -> act.Recording:
    return act.Recording(
        op="start",
        channel=req.channel or "unmixed",
        content=req.content or "audio",
        format=req.format or "wav",
        pause_on_start=req.pause_on_start,
        context=context,
    )


def _recording(op: Literal["pause", "resume", "stop"]) -> Callable[[RecordingRequest, str], act.Recording]:
    return lambda req, context: act.Recording(op=op, recording_id=req.recording_id, context=context)


# The one table of call actions: the HTTP layer serves it, the OpenAPI document describes it.
ACTIONS: dict[str, CallAction] = {
    "play": CallAction(
        PlayRequest,
        "Play audio (file, text-to-speech, SSML) to everyone or one participant",
        lambda req, context: act.Play(prompts=req.prompts, to=req.to, loop=req.loop, context=context),
    ),
    "recognize": CallAction(
        RecognizeRequest, "Recognize DTMF, choices or speech; the result is in GET calls/{id}", _recognize
    ),
    "transfer": CallAction(
        TransferRequest,
        "Blind-transfer a 1:1 call, or a participant of a group call",
        lambda req, context: act.Transfer(target=req.target, transferee=req.transferee, context=context),
        rings=True,
    ),
    "add-participant": CallAction(
        AddParticipantRequest,
        "Add an endpoint, with custom SIP/VoIP context",
        lambda req, context: act.AddParticipant(
            target=req.target, timeout_seconds=req.timeout_seconds, context=context
        ),
        rings=True,
        response=out.ParticipantInvited,
    ),
    "cancel-add-participant": CallAction(
        CancelAddRequest,
        "Cancel a pending add",
        lambda req, context: act.CancelAddParticipant(invitation_id=req.invitation_id, context=context),
    ),
    "remove-participant": CallAction(
        Who, "Remove a participant", lambda req, context: act.RemoveParticipant(who=req.who, context=context)
    ),
    "mute": CallAction(Who, "Mute a participant", lambda req, context: act.Mute(who=req.who, context=context)),
    "hold": CallAction(
        HoldRequest,
        "Put a participant on hold, with music",
        lambda req, context: act.Hold(who=req.who, music=req.music, context=context),
    ),
    "unhold": CallAction(
        Who, "Take a participant off hold", lambda req, context: act.Unhold(who=req.who, context=context)
    ),
    "send-dtmf": CallAction(
        SendDtmfRequest,
        "Send DTMF tones to a participant",
        lambda req, context: act.SendDtmf(tones=req.tones, to=req.to, context=context),
    ),
    "start-continuous-dtmf": CallAction(
        Who,
        "Start continuous DTMF recognition",
        lambda req, context: act.ContinuousDtmf(who=req.who, start=True, context=context),
    ),
    "stop-continuous-dtmf": CallAction(
        Who,
        "Stop continuous DTMF recognition",
        lambda req, context: act.ContinuousDtmf(who=req.who, start=False, context=context),
    ),
    "cancel-media": CallAction(
        Empty, "Cancel all media operations", lambda req, context: act.CancelMedia(context=context)
    ),
    "start-recording": CallAction(
        StartRecordingRequest,
        "Start recording the call",
        _start_recording,
        starts_recording=True,
        response=out.RecordingStarted,
    ),
    "pause-recording": CallAction(RecordingRequest, "Pause a recording", _recording("pause")),
    "resume-recording": CallAction(RecordingRequest, "Resume a recording", _recording("resume")),
    "stop-recording": CallAction(RecordingRequest, "Stop a recording", _recording("stop")),
    "hang-up": CallAction(
        Empty,
        "Hang up the app's leg (the call goes on for the others)",
        lambda req, context: act.Hangup(for_everyone=False, context=context),
    ),
    "terminate": CallAction(
        Empty, "End the call for everyone", lambda req, context: act.Hangup(for_everyone=True, context=context)
    ),
}
# Operations that make the service ring someone (the dialing policy and the daily cap apply) or join a call.
CAPPED = {"place_call", *(f"call_{n.replace('-', '_')}" for n, a in ACTIONS.items() if a.rings), "start_campaign"}
DIALING = {*CAPPED, "create_masking_session"}

NO_CALL = (404, "No such call or participant (the service's 404, passed through)")
RECORDING_UNKNOWN = (409, "No recording is known for the call: give recording_id")
DIAL_BUSY = (503, "The day's dial count kept changing under concurrent requests; retry after Retry-After")


def _action_errors(action: CallAction) -> tuple[tuple[int, str], ...]:
    errors = [NO_CALL]
    if action.rings:
        errors += [(403, REFUSED_DESTINATION), (429, CAP_REACHED), DIAL_BUSY]
    if action.request is RecordingRequest:
        errors.append(RECORDING_UNKNOWN)
    return tuple(errors)


# The one table of operations: the HTTP layer serves them, the OpenAPI document describes them (request and answers).
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "place_call",
        "POST",
        "calls",
        "Place an outbound call into a flow",
        PlaceCall,
        201,
        response=out.CallJoined,
        errors=((403, REFUSED_DESTINATION), (429, CAP_REACHED), DIAL_BUSY),
        acs=True,
    ),
    Operation(
        "connect_call",
        "POST",
        "connections",
        "Connect to an ongoing call or a Room",
        ConnectCall,
        201,
        response=out.CallJoined,
        errors=((403, REFUSED_CONNECT),),
        acs=True,
    ),
    Operation(
        "get_call",
        "GET",
        CALL,
        "Call state, and results of control-API actions",
        response=out.CallView,
        errors=(NO_CALL,),
        acs=True,
    ),
    Operation(
        "list_participants",
        "GET",
        CALL + "/participants",
        "List all participants",
        response=out.ParticipantList,
        errors=(NO_CALL,),
        acs=True,
    ),
    Operation(
        "get_participant",
        "GET",
        CALL + "/participants/{participant}",
        "Get one participant",
        response=out.ParticipantView,
        errors=(NO_CALL,),
        acs=True,
    ),
    *(
        Operation(
            f"call_{name.replace('-', '_')}",
            "POST",
            f"{CALL}/{name}",
            action.summary,
            action.request,
            202,
            response=action.response,
            errors=_action_errors(action),
            acs=True,
        )
        for name, action in ACTIONS.items()
    ),
    Operation(
        "start_campaign",
        "POST",
        "campaigns",
        "Call a list of numbers into a flow (default outage_notice), a bounded number at a time",
        StartCampaign,
        201,
        response=out.CampaignReport,
        errors=(
            (403, REFUSED_DESTINATION),
            (409, "A campaign with this id exists with other numbers or another flow"),
            (429, CAP_REACHED),
        ),
    ),
    Operation(
        "get_campaign",
        "GET",
        "campaigns/{campaign_id}",
        "A campaign's progress and each number's result",
        response=out.CampaignReport,
        errors=((404, "No such campaign"),),
    ),
    Operation(
        "create_masking_session",
        "POST",
        "masking",
        "Connect two parties through a masked number without revealing either",
        MaskingSessionRequest,
        201,
        response=out.MaskingSessionCreated,
        errors=((403, REFUSED_DESTINATION), (409, "A party is already in another session on this masked number")),
    ),
    Operation(
        "list_records",
        "GET",
        "records",
        "Recent calls' records, newest first",
        query=(("limit", "integer", "How many calls (1-100, default 20)"),),
        response=out.RecordList,
        errors=((400, "limit is not a whole number from 1 to 100; `fields` names it"),),
    ),
    Operation(
        "health_details",
        "GET",
        "health/details",
        "The app's settings (no secrets), versions and dependencies, probes cached; 503 when something is wrong",
        response=out.HealthReport,
    ),
    Operation(
        "get_record",
        "GET",
        "records/{server_call_id}",
        "One call's record: start, end, duration, participants, end reason and the flows' outcomes",
        response=out.CallRecord,
        errors=((404, "No record of this call"),),
    ),
)


class RequestError(ValueError):
    """A request the API refuses; ``fields`` names what is wrong; ``headers`` go with the answer (Retry-After)."""

    def __init__(
        self,
        message: str,
        fields: list[dict[str, str]] | None = None,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.fields = fields or []
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return out.ErrorAnswer.model_validate({"error": str(self), "fields": self.fields}).dump()


def parse(model: type[BaseModel], body: bytes) -> Any:
    """Validate a JSON body (depth-safe: ``core.platform.jsonsafe``); errors name each faulty field."""
    from core.platform.jsonsafe import JsonError, parse_json

    try:
        data = parse_json(body or b"{}")
    except JsonError as exc:
        raise RequestError(exc.reason, status=exc.status) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]} for e in exc.errors()]
        names = ", ".join(f["field"] for f in fields)
        raise RequestError(f"invalid request: {names}", fields) from None


SUCCESS = {200: "OK", 201: "Created", 202: "Accepted: the result arrives as an event (see GET calls/{id})"}
BODY_ERRORS = (
    (400, "Invalid request; `fields` names each problem"),
    (411, "Chunked body, which the Functions host drops: send a length"),
    (413, "Body too large (its Content-Length is checked first)"),
)
ACS_REFUSED = "Communication Services refused the request: its status and reason passed through"
ACS_FAILED = "Communication Services failed or did not answer; retry"
UNAUTHORIZED = "Missing or wrong function key (the Functions host answers, with no body)"
RETRY_AFTER = {"description": "Seconds until a retry may succeed", "schema": {"type": "integer", "minimum": 0}}


def _component(model: type[BaseModel], schemas: dict[str, Any], mode: Literal["validation", "serialization"]) -> dict:
    """``model``'s JSON schema into the document's components (each name once, one content), and a reference to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    for name, definition in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
        if schemas.setdefault(name, definition) != definition:
            raise ValueError(f"two schemas named {name} in the OpenAPI document")
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}} | (
        {"headers": headers} if headers else {}
    )


def _responses(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    """What ``op`` answers: its success's model, and the error answer for each refusal it writes."""
    error = _component(out.ErrorAnswer, schemas, "serialization")
    success = _component(op.response, schemas, "serialization")
    responses: dict[str, Any] = {str(op.success): _json(SUCCESS[op.success], success)}
    refusals = [*(BODY_ERRORS if op.request is not None else ()), *op.errors]
    if op.acs:
        refusals.append((502, ACS_FAILED))
    for status, why in sorted(refusals):
        retry = {"Retry-After": RETRY_AFTER} if status in (429, 503) else None
        responses[str(status)] = _json(why, error, retry)
    responses["401"] = {"description": UNAUTHORIZED}
    if op.acs:
        responses["4XX"] = _json(ACS_REFUSED, error)
    if op.name == "health_details":
        responses["503"] = _json(
            "Something is wrong: a dependency does not answer, or the settings do not load", success
        )
    return dict(sorted(responses.items()))


def openapi() -> dict[str, Any]:
    """The control API as OpenAPI 3.1: request schemas from the request models, response schemas from the models the
    handlers build their answers with (``core.outbound.responses``)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "security": [{"functionKey": []}],
            "responses": _responses(op, schemas),
        }
        params = [name.strip("{}") for name in op.path.split("/") if name.startswith("{")]
        if params:
            entry["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ]
        for name, kind, description in op.query:
            entry.setdefault("parameters", []).append(
                {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": kind}}
            )
        if op.request is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _component(op.request, schemas, "validation")}},
            }
        paths.setdefault(f"/api/{op.path}", {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Call workflows control API",
            "version": "1.1.0",
            "description": "Drive Azure Communication Services calls through the app. Every answer is JSON and"
            " documented here: the success's body, and for a refusal `{error, fields}` (401 excepted: no body).",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        },
    }
