"""The official ACS specs (Swagger 2.0) as JSON Schemas, and validators for what the simulator sends.

The specs live beside the repository in ``../shared/specs`` (or wherever ``ACS_SPECS_DIR`` points):

- the Call Automation REST API 2026-03-12: operations, their responses, and every callback event model;
- the Communication common types 2025-06-30: identifier models and the error envelope (the Call
  Automation swagger ``$ref``s them as ``../../../Common/stable/2025-06-30/common.json``);
- the Event Grid data schemas for ACS (2018-01-01): ``data`` of ``IncomingCall``, ``CallStarted``, ...
  It ``$ref``s a 2023-11-15 common.json that is not copied; the 2025-06-30 one stands in for it.

Swagger 2.0 is close to JSON Schema draft 4 but not equal to it. The conversion here:

- every ``$ref`` is rewritten into one combined document (``#/definitions/<file>.<Name>``); siblings of a
  ``$ref`` (descriptions, ``x-ms-client-name``, ``readOnly``) are annotations in Swagger and are dropped;
- ``x-ms-*`` extensions and ``readOnly`` are dropped (``x-ms-enum`` only names the ``enum``, which stays and is
  enforced even when ``modelAsString`` says clients should tolerate new values: the simulator must not invent any);
- ``format: int32``/``int64`` become bounds; ``integer`` never accepts ``5.0``; ``date-time`` and ``uuid`` are
  checked; other formats (``uri``, ``double``, ``date-time-rfc1123`` of headers) are not;
- ``additionalProperties: false`` becomes ``unevaluatedProperties: false`` so that Swagger's ``allOf`` inheritance
  keeps the parent's properties; a ``discriminator`` dispatches on its property to the models that extend the base
  (``x-ms-discriminator-value`` or the model name);
- the common ``CommunicationIdentifierModel`` gets the rules its description states for responses: ``kind`` and
  ``rawId`` are present and only the property named by ``kind`` is set.

Properties a model does not list are allowed unless the model says ``additionalProperties: false`` (every Call
Automation model does). The only exception: the real service adds ``version`` and ``publicEventType`` to the
``data`` of every callback although no model lists them; they are checked (a string, and the event's own type)
and then set aside.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker

CALL_AUTOMATION_FILE = "communicationservicescallautomation-2026-03-12.json"
COMMON_FILE = "communication-common-2025-06-30.json"
EVENTGRID_FILE = "eventgrid-AzureCommunicationServices-2018-01-01.json"
API_VERSION = "2026-03-12"
EVENT_PREFIX = "Microsoft.Communication."

# Fields in the data of every real callback that no Call Automation model lists.
CALLBACK_WIRE_EXTRAS = ("version", "publicEventType")

_NAMESPACES = {"ca": CALL_AUTOMATION_FILE, "common": COMMON_FILE, "eg": EVENTGRID_FILE}
_SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties")
_SCHEMA_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf")
_SCHEMA_KEYWORDS = ("items", "additionalProperties", "not")
_DROPPED = {"readOnly", "discriminator", "description", "example", "title", "x-nullable"}
_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_CHECKED_FORMATS = {"date-time", "uuid"}


class SpecViolation(AssertionError):
    """A payload does not conform to the spec; the message lists every problem found."""


def specs_dir() -> Path:
    env = os.environ.get("ACS_SPECS_DIR")
    if env:
        return Path(env)
    # tests/support/spec.py -> repo root (/work/main) -> its parent -> shared/specs
    return Path(__file__).resolve().parents[2].parent / "shared" / "specs"


@cache
def load(name: str) -> dict[str, Any]:
    path = specs_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"spec {name} not found in {path.parent} (set ACS_SPECS_DIR to the specs folder)")
    return json.loads(path.read_text(encoding="utf-8"))


# -- Swagger 2.0 -> JSON Schema ---------------------------------------------------------------------


def _ref_target(ref: str, ns: str) -> str:
    """``[file]#/definitions/Name`` -> the combined document's ``#/definitions/<ns>.Name``."""
    file_part, _, pointer = ref.partition("#")
    m = re.fullmatch(r"/definitions/([^/]+)", pointer)
    if not m:
        raise ValueError(f"unsupported $ref {ref!r}")
    if file_part:
        # Every cross-file reference in these specs is to a Communication common.json (2025-06-30 or 2023-11-15).
        if not file_part.endswith("common.json"):
            raise ValueError(f"$ref to an unknown file: {ref!r}")
        ns = "common"
    return f"#/definitions/{ns}.{m.group(1)}"


def _convert(node: Any, ns: str) -> Any:
    if isinstance(node, list):
        return [_convert(x, ns) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = {"$ref": _ref_target(node["$ref"], ns)}
        return {"anyOf": [ref, {"type": "null"}]} if node.get("x-nullable") is True else ref
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-") or key in _DROPPED:
            continue
        if key in _SCHEMA_MAP_KEYWORDS:
            out[key] = {name: _convert(sub, ns) for name, sub in value.items()}
        elif key in _SCHEMA_LIST_KEYWORDS:
            out[key] = [_convert(sub, ns) for sub in value]
        elif key in _SCHEMA_KEYWORDS:
            if key == "additionalProperties" and value is False:
                out["unevaluatedProperties"] = False
            else:
                out[key] = _convert(value, ns)
        elif key == "format":
            if value in _INT_BOUNDS:
                low, high = _INT_BOUNDS[value]
                out.setdefault("minimum", low)
                out.setdefault("maximum", high)
            elif value in _CHECKED_FORMATS:
                out["format"] = value
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _parents(definition: dict[str, Any]) -> list[str]:
    return [
        part["$ref"].rsplit("/", 1)[-1]
        for part in definition.get("allOf", [])
        if isinstance(part, dict) and "$ref" in part
    ]


def _open_ref(part: Any, ns: str) -> Any:
    if isinstance(part, dict) and set(part) == {"$ref"} and part["$ref"].startswith(f"#/definitions/{ns}."):
        return {"$ref": part["$ref"] + "@open"}
    return part


def _identifier_rules() -> dict[str, Any]:
    """What CommunicationIdentifierModel's description asks of a response: kind, rawId, one matching part."""
    kinds = load(COMMON_FILE)["definitions"]["CommunicationIdentifierModelKind"]["enum"]
    specific = [k for k in kinds if k != "unknown"]
    rules: list[dict[str, Any]] = []
    for kind in kinds:
        others = [o for o in specific if o != kind]
        then: dict[str, Any] = {"not": {"anyOf": [{"required": [o]} for o in others]}}
        if kind != "unknown":
            then["required"] = [kind]
        rules.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": then})
    return {"required": ["kind", "rawId"], "allOf": rules}


@cache
def schema_document() -> dict[str, Any]:
    """All definitions of the three specs, converted, in one document."""
    definitions: dict[str, Any] = {}
    for ns, name in _NAMESPACES.items():
        source = load(name)["definitions"]
        bases = {n: d["discriminator"] for n, d in source.items() if isinstance(d, dict) and "discriminator" in d}
        extended = {parent for d in source.values() if isinstance(d, dict) for parent in _parents(d)}
        for def_name, definition in source.items():
            if "$ref" in definition and len(definition) == 1:
                # An alias, e.g. Call Automation's CommunicationIdentifierModel -> common.json.
                definitions[f"{ns}.{def_name}"] = {"$ref": _ref_target(definition["$ref"], ns)}
                continue
            converted = _convert(definition, ns)
            closed = converted.get("unevaluatedProperties") is False
            parents = _parents(definition)
            if parents:
                # Swagger inheritance: the parent's properties are the child's own. Refer to the parent's open form
                # (no unevaluatedProperties, no dispatch); a closed parent makes the child closed.
                converted["allOf"] = [_open_ref(part, ns) for part in converted["allOf"]]
                if any(source.get(p, {}).get("additionalProperties") is False for p in parents):
                    converted["unevaluatedProperties"] = False
            if def_name in extended:
                definitions[f"{ns}.{def_name}@open"] = {
                    k: v for k, v in converted.items() if k != "unevaluatedProperties"
                }
            if def_name in bases and def_name in extended:
                prop = bases[def_name]
                dispatch = [
                    {
                        "if": {
                            "properties": {prop: {"const": sub.get("x-ms-discriminator-value", sub_name)}},
                            "required": [prop],
                        },
                        "then": {"$ref": f"#/definitions/{ns}.{sub_name}"},
                    }
                    for sub_name, sub in source.items()
                    if isinstance(sub, dict) and def_name in _parents(sub)
                ]
                converted = {"allOf": [{"$ref": f"#/definitions/{ns}.{def_name}@open"}, *dispatch]}
                if closed:
                    converted["unevaluatedProperties"] = False
            definitions[f"{ns}.{def_name}"] = converted
    identifier = definitions["common.CommunicationIdentifierModel"]
    definitions["common.CommunicationIdentifierModel"] = {**identifier, **_identifier_rules()}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "definitions": definitions}


def _is_strict_integer(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError("not an RFC 3339 date-time")
    datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00")))
    return True


@_FORMATS.checks("uuid", raises=ValueError)
def _uuid(value: object) -> bool:
    if isinstance(value, str):
        uuid.UUID(value)
    return True


_Validator = jsonschema.validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)


@cache
def _validator(ref: str) -> Any:
    document = schema_document()
    schema = {**document, "$ref": ref}
    return _Validator(schema, format_checker=_FORMATS)


def definition_errors(namespace: str, name: str, instance: Any) -> list[str]:
    """Every way ``instance`` fails the definition (``namespace``: ca | common | eg)."""
    key = f"{namespace}.{name}"
    if key not in schema_document()["definitions"]:
        raise KeyError(f"no definition {name} in {_NAMESPACES[namespace]}")
    errors = sorted(_validator(f"#/definitions/{key}").iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [_describe(e) for e in errors]


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    best = jsonschema.exceptions.best_match(error.context) if error.context else None
    detail = error.message if best is None else f"{error.message} ({best.message})"
    return f"{where}: {detail}"


def check(namespace: str, name: str, instance: Any, what: str = "") -> None:
    problems = definition_errors(namespace, name, instance)
    if problems:
        raise SpecViolation(f"{what or name} does not conform to {name}:\n  " + "\n  ".join(problems))


# -- events -----------------------------------------------------------------------------------------


def _path_reachable_definitions() -> set[str]:
    """Call Automation definitions used by some operation (requests, responses), transitively."""
    spec = load(CALL_AUTOMATION_FILE)
    definitions = spec["definitions"]
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/definitions/"):
                name = ref.rsplit("/", 1)[-1]
                if name not in found:
                    found.add(name)
                    walk(definitions.get(name))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec["paths"])
    walk(spec.get("parameters"))
    return found


@cache
def callback_event_types() -> dict[str, str]:
    """Wire type -> Call Automation definition, for every callback event model in the spec.

    The spec names no wire types for callbacks. Its event models are the definitions no operation uses that
    carry ``callConnectionId`` (``IncomingCall`` has none: it comes over Event Grid). The service sends each as
    ``Microsoft.Communication.<model name>``, e.g. ``SendDtmfTonesCompleted``.
    """
    definitions = load(CALL_AUTOMATION_FILE)["definitions"]
    used = _path_reachable_definitions()
    return {
        EVENT_PREFIX + name: name
        for name, d in definitions.items()
        if name not in used and "callConnectionId" in d.get("properties", {})
    }


@cache
def eventgrid_event_types() -> dict[str, str]:
    """Wire type -> Event Grid data definition, read from the definitions' own descriptions.

    ("Schema of the Data property of an EventGridEvent for a Microsoft.Communication.CallParticipantAdded event.")
    Only the calling and recording events, the ones Call Automation apps subscribe to.
    """
    mapping: dict[str, str] = {}
    for name, d in load(EVENTGRID_FILE)["definitions"].items():
        m = re.search(r"EventGridEvent for an? (Microsoft\.Communication\.\w+) event", d.get("description", ""))
        if m and (name.startswith("AcsCall") or name.startswith("AcsIncomingCall") or name.startswith("AcsRecording")):
            mapping[m.group(1)] = name
    return mapping


CLOUD_EVENT_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "source", "type", "specversion", "time", "data"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "pattern": r"^Microsoft\.Communication\.\w+$"},
        "specversion": {"const": "1.0"},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string"},
        "datacontenttype": {"const": "application/json"},
        "data": {"type": "object"},
    },
}

EVENTGRID_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "topic", "subject", "data", "eventType", "eventTime", "dataVersion", "metadataVersion"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "topic": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "data": {"type": "object"},
        "eventType": {"type": "string", "pattern": r"^Microsoft\.Communication\.\w+$"},
        "eventTime": {"type": "string", "format": "date-time"},
        "dataVersion": {"type": "string", "minLength": 1},
        "metadataVersion": {"const": "1"},
    },
}


def _envelope_errors(schema: dict[str, Any], event: Any) -> list[str]:
    validator = _Validator(schema, format_checker=_FORMATS)
    return [_describe(e) for e in validator.iter_errors(event)]


def validate_callback_event(event: Any) -> str:
    """Check one mid-call CloudEvent against the spec; returns its model name."""
    problems = _envelope_errors(CLOUD_EVENT_ENVELOPE, event)
    if problems:
        raise SpecViolation(
            f"callback envelope {event.get('type') if isinstance(event, dict) else event!r}:\n  "
            + "\n  ".join(problems)
        )
    event_type = event["type"]
    name = callback_event_types().get(event_type)
    if name is None:
        raise SpecViolation(f"{event_type} is not a callback event of the Call Automation spec")
    data = dict(event["data"])
    wrong: list[str] = []
    if "publicEventType" in data and data["publicEventType"] != event_type:
        wrong.append(f"publicEventType: {data['publicEventType']!r} is not the event's type {event_type!r}")
    if "version" in data and not isinstance(data["version"], str):
        wrong.append(f"version: {data['version']!r} is not a string")
    for extra in CALLBACK_WIRE_EXTRAS:
        data.pop(extra, None)
    wrong += definition_errors("ca", name, data)
    if wrong:
        raise SpecViolation(f"{event_type} data does not conform to {name}:\n  " + "\n  ".join(wrong))
    return name


def validate_eventgrid_event(event: Any) -> str:
    """Check one Event Grid (Event Grid schema) event against the spec; returns its data model name."""
    problems = _envelope_errors(EVENTGRID_ENVELOPE, event)
    if problems:
        raise SpecViolation(
            f"Event Grid envelope {event.get('eventType') if isinstance(event, dict) else event!r}:\n  "
            + "\n  ".join(problems)
        )
    event_type = event["eventType"]
    name = eventgrid_event_types().get(event_type)
    if name is None:
        raise SpecViolation(f"{event_type} is not an ACS calling/recording event of the Event Grid spec")
    check("eg", name, event["data"], f"{event_type} data")
    if name == "AcsIncomingCallEventData":
        # The Call Automation spec models the same payload too, closed to other properties.
        check("ca", "IncomingCall", event["data"], f"{event_type} data")
    return name


# -- operations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    responses: dict[str, Any]

    @property
    def short_name(self) -> str:
        return self.operation_id.rsplit("_", 1)[-1]


@cache
def operations() -> tuple[Operation, ...]:
    spec = load(CALL_AUTOMATION_FILE)
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                found.append(Operation(method.upper(), path, op["operationId"], op["responses"]))
    return tuple(found)


def operation(name: str) -> Operation:
    """By operationId (``CallConnection_GetCall``) or its last part (``GetCall``), as the simulator names them."""
    matches = [op for op in operations() if name in (op.operation_id, op.short_name)]
    if len(matches) != 1:
        raise KeyError(f"no single operation named {name!r}")
    return matches[0]


def api_version_values() -> list[str]:
    return list(load(CALL_AUTOMATION_FILE)["parameters"]["ApiVersionParameter"].get("enum", [API_VERSION]))


def _body_of(body: Any) -> Any:
    if isinstance(body, bytes | bytearray):
        body = body.decode()
    if isinstance(body, str):
        return json.loads(body) if body.strip() else None
    return body


def validate_response(operation_id: str, status: int, body: Any) -> str:
    """Check a response (status and JSON body) against the operation's responses; returns the model name.

    A status the operation does not declare must be an error (answered with ``default``: the error envelope).
    A declared response without a schema has no body. ``body`` may be bytes, text, parsed JSON or None.
    """
    op = operation(operation_id)
    data = _body_of(body)
    response = op.responses.get(str(status))
    if response is None:
        if status < 400:
            declared = sorted(k for k in op.responses if k != "default")
            raise SpecViolation(f"{op.operation_id} answered {status}; the spec declares {declared}")
        response = op.responses["default"]
    schema = response.get("schema")
    if schema is None:
        if data not in (None, ""):
            raise SpecViolation(f"{op.operation_id} {status} has no body in the spec, but the simulator sent {data!r}")
        return ""
    if "$ref" not in schema:
        raise ValueError(f"{op.operation_id} {status}: inline response schemas are not supported")
    target = _ref_target(schema["$ref"], "ca")
    namespace, _, name = target.rsplit("/", 1)[-1].partition(".")
    if data is None:
        raise SpecViolation(f"{op.operation_id} {status} must carry a {name} body, but has none")
    check(namespace, name, data, f"{op.operation_id} {status} body")
    return name


def path_regex(path: str) -> re.Pattern[str]:
    """A swagger path template as a regex over concrete paths."""
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", r"[^/]+", re.escape(path)) + "$")


def validate_all(events: Iterable[dict[str, Any]], validate: Any) -> list[str]:
    """Validate many events; returns every failure message (empty when all conform)."""
    failures = []
    for event in events:
        try:
            validate(event)
        except SpecViolation as exc:
            failures.append(str(exc))
    return failures
