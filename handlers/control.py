"""The control API's operations: plain functions over validated requests.

Actions on a call go through the same executor the flows use, with an operation context
``api:<id>`` (so the flow engine leaves their events alone and keeps their results) and, when
the call is one of the app's, an operation callback URL back to the app.

Against toll fraud (``core.outbound.destinations``, ``core.outbound.dial_cap``): every destination a request would
ring (the targets of a call, of an add-participant or a transfer, and the flow targets its call variables fill in)
passes the dialing policy first (403 naming the field otherwise), each phone number dialed counts against the day's
cap (429 with Retry-After once reached; given back when the service refuses the call), and ``connect`` joins only
calls the app placed, answered or was told about by Event Grid, and rooms listed in a setting (403).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from core.calls.state import CallState, StateNotFound
from core.flows import actions as act
from core.flows.engine import API_CONTEXT
from core.outbound import control
from core.outbound import responses as out
from core.outbound.control import RequestError
from core.outbound.destinations import DestinationPolicy, DestinationRefused, fill_targets, flow_targets, phone_of
from core.outbound.dial_cap import DialCapBusy, DialCapReached, Taken
from core.services import Services

log = logging.getLogger("handlers.control")


def raw_id_of(number_or_id: str) -> str:
    """A phone number as its raw id (``4:+1...``); a raw id as it is."""
    return "4:" + number_or_id if number_or_id.startswith("+") else number_or_id


def _acs_error(exc: Exception) -> RequestError:
    """An SDK failure as the API's answer: the service's 4xx passes through, anything else is a 502."""
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(status, int) and 400 <= status < 500 and status not in (401, 403, 408, 429):
        return RequestError(f"Communication Services refused: {message.splitlines()[0]}", status=status)
    return RequestError(f"Communication Services failed: {message.splitlines()[0]}", status=502)


def _refused(exc: Exception, call_ref: str, services: Services, taken: Taken | None = None) -> RequestError:
    """The service did not set the call up: a refusal (4xx) means no call, so the state written ahead goes too,
    and the calls it counted against the daily cap are given back. After a failure (5xx, no answer) the call may
    exist: its state stays for its events, and it stays counted."""
    error = _acs_error(exc)
    if error.status < 500:
        if taken is not None:
            services.dial_cap.give_back(taken)
        try:
            services.store.delete(call_ref)
        except Exception as cleanup:  # storage failed too: a row for a call that never was, harmless
            log.warning("could not remove the state of refused call %s: %s", call_ref, cleanup)
    return error


# -- toll fraud: who may be rung, how many a day, which calls may be joined ----------------------------------


def policy(services: Services) -> DestinationPolicy:
    return services.settings.dialing.policy


def refused_destination(field: str, exc: DestinationRefused) -> RequestError:
    return RequestError(
        f"refused: {field} is not a destination this app may ring: {exc.reason}",
        [{"field": field, "message": exc.reason}],
        status=403,
    )


def check_destinations(services: Services, targets: list[tuple[str, str]]) -> None:
    """Each ``(field, target)`` passes the dialing policy, or the request is refused (403) naming every field
    that does not."""
    refused: list[tuple[str, DestinationRefused]] = []
    for field, target in targets:
        try:
            policy(services).check(target)
        except DestinationRefused as exc:
            refused.append((field, exc))
    if refused:
        fields = ", ".join(f for f, _ in refused)
        raise RequestError(
            f"refused: {fields} {'is not a destination' if len(refused) == 1 else 'are not destinations'} "
            f"this app may ring: {refused[0][1].reason}",
            [{"field": f, "message": e.reason} for f, e in refused],
            status=403,
        )


def check_flow_targets(services: Services, flow_name: str | None, values: dict[str, str]) -> None:
    """The targets the flow's nodes will ring once the call variables fill them in pass the policy now, so a
    request cannot smuggle a premium number in through ``vars`` (targets set on the call are checked then)."""
    flow = services.settings.flows.get(flow_name or "")
    if flow is None or not values:
        return
    templated = [(node, to) for node, to in flow_targets(flow) if "{" in to]
    for node, to in fill_targets(templated, values):
        try:
            policy(services).check(to)
        except DestinationRefused as exc:
            raise RequestError(
                f"refused: flow {flow_name} node {node} would ring a destination this app may not ring: {exc.reason}",
                [{"field": "vars", "message": f"fills in the target of node {node}: {exc.reason}"}],
                status=403,
            ) from None


def take_dials(services: Services, targets: list[str]) -> Taken:
    """Count the phone numbers among ``targets`` against the day's cap, or refuse the request (429)."""
    phones = sum(1 for t in targets if phone_of(t))
    try:
        return services.dial_cap.take(phones)
    except DialCapReached as exc:
        log.warning("daily dial cap of %d reached: a request for %d call(s) refused", exc.cap, phones)
        raise RequestError(
            f"refused: {exc.message}", status=429, headers={"Retry-After": str(exc.retry_after)}
        ) from None
    except DialCapBusy as exc:
        raise RequestError(f"busy: {exc}", status=503, headers={"Retry-After": "1"}) from None


def _known_call(services: Services, server_call_id: str) -> bool:
    """Whether the app placed, answered or connected to this call (its state), or Event Grid told it about the
    call (its record: CallStarted, participants)."""
    if services.records.get(server_call_id) is not None:
        return True
    return services.store.find_by_server_call(server_call_id) is not None


def check_connect(req: control.ConnectCall, services: Services) -> None:
    """``connect`` joins calls the app knows, and the rooms and group calls the settings list (else 403)."""
    allowed = services.settings.dialing.connect_allowed
    if req.server_call_id:
        if _known_call(services, req.server_call_id):
            return
        raise RequestError(
            "refused: the app connects only to calls it placed, answered or was told about by Event Grid",
            [{"field": "server_call_id", "message": "not a call this app knows"}],
            status=403,
        )
    field, value = ("group_call_id", req.group_call_id) if req.group_call_id else ("room_id", req.room_id)
    if value in allowed:
        return
    raise RequestError(
        f"refused: {field} is not listed in CONNECT_ALLOWED_ROOMS",
        [{"field": field, "message": "not in CONNECT_ALLOWED_ROOMS"}],
        status=403,
    )


def _check_flow(services: Services, flow: str | None) -> None:
    if flow and flow not in services.settings.flows:
        raise RequestError(
            f"unknown flow {flow!r}",
            [{"field": "flow", "message": f"not one of {', '.join(sorted(services.settings.flows))}"}],
        )


def place_call(req: control.PlaceCall, services: Services) -> dict[str, Any]:
    _check_flow(services, req.flow)
    check_destinations(services, [(f"targets.{i}.to", t.to) for i, t in enumerate(req.targets)])
    check_flow_targets(services, req.flow, req.vars)
    taken = take_dials(services, [t.to for t in req.targets])
    call_ref = str(uuid.uuid4())
    first = req.targets[0].to
    state = CallState(
        call_ref=call_ref,
        flow=req.flow or "",
        status="dialing",
        caller=raw_id_of(first),
        callee=raw_id_of(req.caller_id) if req.caller_id else "",
        vars=dict(req.vars),
    )
    state.note(f"placed through the API to {', '.join(t.to for t in req.targets)}")
    try:
        services.store.create(state)
    except Exception:
        services.dial_cap.give_back(taken)  # nothing was asked of the service
        raise
    try:
        props = services.executor.create_call(
            [t.to for t in req.targets],
            services.callback_url(call_ref),
            caller_id=req.caller_id,
            source_display_name=req.display_name,
            operation_context="place",
            cognitive_services_endpoint=services.settings.cognitive_services_endpoint,
        )
    except Exception as exc:
        raise _refused(exc, call_ref, services, taken) from exc
    return _joined(call_ref, props, services)


def connect_call(req: control.ConnectCall, services: Services) -> dict[str, Any]:
    _check_flow(services, req.flow)
    check_connect(req, services)
    check_flow_targets(services, req.flow, req.vars)
    call_ref = str(uuid.uuid4())
    state = CallState(call_ref=call_ref, flow=req.flow or "", status="dialing", vars=dict(req.vars))
    state.note("connecting through the API")
    services.store.create(state)
    locator = (
        {"server_call_id": req.server_call_id}
        if req.server_call_id
        else {"group_call_id": req.group_call_id}
        if req.group_call_id
        else {"room_id": req.room_id}
    )
    try:
        props = services.executor.connect(
            services.callback_url(call_ref),
            cognitive_services_endpoint=services.settings.cognitive_services_endpoint,
            operation_context="connect",
            **locator,
        )
    except Exception as exc:
        raise _refused(exc, call_ref, services) from exc
    return _joined(call_ref, props, services)


def _joined(call_ref: str, props: Any, services: Services) -> dict[str, Any]:
    """A call placed or connected: indexed by its connection id (the control API addresses it so), and described."""
    services.store.index(props.call_connection_id or "", call_ref)
    return out.CallJoined(
        call_ref=call_ref,
        call_connection_id=props.call_connection_id or "",
        server_call_id=props.server_call_id or None,
        state=str(props.call_connection_state or ""),
    ).dump()


def _participant(p: Any) -> out.ParticipantView:
    return out.ParticipantView(id=p.identifier.raw_id, is_muted=bool(p.is_muted), is_on_hold=bool(p.is_on_hold))


def get_call(call_connection_id: str, services: Services) -> dict[str, Any]:
    props = None
    try:
        props = services.executor.call_properties(call_connection_id)
    except Exception as exc:
        # The service forgets a call once it ends; the app's state of it (vars, outcome) remains.
        if getattr(exc, "status_code", None) != 404 or not services.store.lookup(call_connection_id):
            raise _acs_error(exc) from exc
    view = out.CallView(
        call_connection_id=call_connection_id,
        server_call_id=None,
        state="disconnected",
        correlation_id=None,
        targets=[],
        source=None,
        app=None,
    )
    if props is not None:
        view.call_connection_id = props.call_connection_id or call_connection_id
        view.server_call_id = props.server_call_id or None
        view.state = str(props.call_connection_state or "")
        view.correlation_id = props.correlation_id or None
        view.targets = [t.raw_id for t in props.targets or []]
        view.source = props.source.raw_id if props.source else None
    call_ref = services.store.lookup(call_connection_id)
    if call_ref:
        try:
            state, _ = services.store.get(call_ref)
        except StateNotFound:
            state = None
        if state is not None:
            view.server_call_id = view.server_call_id or state.server_call_id or None
            view.app = out.AppView(
                call_ref=call_ref,
                flow=state.flow,
                node=state.node,
                status=state.status,
                participants=state.participants,
                vars=state.vars,
                outcome=state.outcome,
                recording_id=state.recording_id or None,
            )
    return view.dump()


def list_participants(call_connection_id: str, services: Services) -> dict[str, Any]:
    try:
        participants = services.executor.participants(call_connection_id)
    except Exception as exc:
        raise _acs_error(exc) from exc
    return out.ParticipantList(participants=[_participant(p) for p in participants]).dump()


def get_participant(call_connection_id: str, participant: str, services: Services) -> dict[str, Any]:
    try:
        found = services.executor.participant(call_connection_id, participant)
    except Exception as exc:
        raise _acs_error(exc) from exc
    return _participant(found).dump()


def call_action(call_connection_id: str, name: str, body: bytes, services: Services) -> dict[str, Any]:
    spec = control.ACTIONS.get(name)
    if spec is None:
        raise RequestError(f"unknown action {name!r}; see /api/openapi.json", status=404)
    req = control.parse(spec.request, body)
    context = f"{API_CONTEXT}{name}:{uuid.uuid4().hex[:12]}"
    action = spec.build(req, context)
    taken: Taken | None = None
    if spec.rings:
        check_destinations(services, [("target.to", action.target.to)])  # type: ignore[union-attr]
        taken = take_dials(services, [action.target.to])  # type: ignore[union-attr]
    return _run_action(call_connection_id, name, spec, action, context, services, taken)


def _current_recording(call_ref: str | None, call_connection_id: str, services: Services) -> str:
    """The recording of the call that a pause, resume or stop without ``recording_id`` means: the one in its state."""
    state = None
    if call_ref:
        try:
            state, _ = services.store.get(call_ref)
        except StateNotFound:
            state = None
    if state is None or not state.recording_id:
        raise RequestError(
            f"no recording is known for call {call_connection_id}: give recording_id", status=409
        )
    return state.recording_id


def _run_action(
    call_connection_id: str,
    name: str,
    spec: control.CallAction,
    action: act.Action,
    context: str,
    services: Services,
    taken: Taken | None,
) -> dict[str, Any]:
    call_ref = services.store.lookup(call_connection_id)
    if call_ref:
        action.callback_url = services.callback_url(call_ref)
    if isinstance(action, act.Recording) and action.op != "start" and not action.recording_id:
        action.recording_id = _current_recording(call_ref, call_connection_id, services)
    server_call_id = ""
    if spec.starts_recording:
        server_call_id = get_call(call_connection_id, services)["server_call_id"]
        action.container_url = services.engine.recording.container_url  # bring your own storage, if configured
    try:
        result = services.executor.run(call_connection_id, server_call_id, action)
    except DestinationRefused as exc:  # checked above; the executor checks every ring again
        if taken is not None:
            services.dial_cap.give_back(taken)
        raise refused_destination("target.to", exc) from None
    except Exception as exc:
        error = _acs_error(exc)
        if taken is not None and error.status < 500:
            services.dial_cap.give_back(taken)  # the service refused: nothing rang
        raise error from exc
    if call_ref and spec.starts_recording and result.get("recording_id"):
        _keep_result(call_ref, action, result, services)
    log.info("control API %s on %s (%s)", name, call_connection_id, context)
    return spec.response(operation_context=context, **result).dump()


def _keep_result(call_ref: str, action: act.Action, result: dict[str, str], services: Services) -> None:
    """Keep the recording id the start answered with in the call's state, as a flow's start keeps it: a stop
    without ``recording_id`` right after the start must not wait for ``RecordingStateChanged``."""
    try:
        services.store.mutate(call_ref, lambda state: services.engine.on_result(state, action, result))
    except StateNotFound:
        pass  # the call's state is gone (it ended): nothing to keep
