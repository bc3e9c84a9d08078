"""App settings: read once from the environment, validated into one typed object.

Every setting the app reads is declared in ``SETTINGS`` (name, whether it is required, what it
is for); the table in docs/settings.md and the infrastructure tests are checked against that list, so a
setting cannot be added in one place and forgotten in the other. A missing or malformed
setting fails start-up with a message that names it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from core.calls.routing import RedirectAction, RoutingRules
from core.flows import sources as flow_sources
from core.flows.model import Flow
from core.outbound.destinations import (
    DEFAULT_ALLOWED,
    DEFAULT_DENIED,
    DestinationPolicy,
    DestinationRefused,
    flow_targets,
)
from core.outbound.destinations import parse_prefixes as _parse_prefixes

APP_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_JWT_ISSUER = "https://acscallautomation.communication.azure.com"
DEFAULT_OPENID_CONFIG = "https://acscallautomation.communication.azure.com/calling/.well-known/acsopenidconfiguration"
DEFAULT_RECORDING_HOSTS = "*.asm.skype.com,*.asyncgw.teams.microsoft.com,*.ams.gov.teams.microsoft.us"
DEFAULT_DAILY_CAP = "1000"


@dataclass(frozen=True)
class SettingSpec:
    name: str
    description: str
    required: bool = False
    default: str | None = None
    secret: bool = False


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "ACS_ENDPOINT",
        "Communication Services endpoint, e.g. https://<name>.communication.azure.com. "
        "With no ACS_CONNECTION_STRING the app authenticates with its managed identity.",
    ),
    SettingSpec(
        "ACS_CONNECTION_STRING", "Alternative to ACS_ENDPOINT for local runs: endpoint=...;accesskey=...", secret=True
    ),
    SettingSpec(
        "ACS_RESOURCE_ID",
        "Immutable resource id (GUID) of the ACS resource: the audience of callback JWTs.",
        required=True,
    ),
    SettingSpec("ACS_JWT_ISSUER", "Issuer of callback JWTs.", default=DEFAULT_JWT_ISSUER),
    SettingSpec(
        "ACS_OPENID_CONFIG_URL",
        "OpenID configuration that lists the keys callback JWTs are signed with.",
        default=DEFAULT_OPENID_CONFIG,
    ),
    SettingSpec(
        "CALLBACK_BASE_URL",
        "Public base URL of this app's HTTP routes, e.g. https://<app>.azurewebsites.net"
        "/api (a dev tunnel's URL locally). Callback URLs are built from it.",
        required=True,
    ),
    SettingSpec(
        "CALLBACK_SECRET",
        "Key for the per-call token in callback URLs (32+ random bytes, base64). "
        "Keep it in Key Vault and reference it.",
        required=True,
        secret=True,
    ),
    SettingSpec(
        "CALLBACK_SECRET_PREVIOUS",
        "The callback key being rotated out: callback URLs signed with it are still accepted, so calls in "
        "progress survive a rotation. Remove it once those calls have ended.",
        secret=True,
    ),
    SettingSpec(
        "COGNITIVE_SERVICES_ENDPOINT",
        "Azure AI services endpoint used for text-to-speech and speech "
        "recognition. Required when a flow plays text or SSML or recognizes speech.",
    ),
    SettingSpec(
        "ROUTING_RULES",
        "JSON routing rules for IncomingCall (see docs/routing.md). This or ROUTING_RULES_FILE, not both.",
    ),
    SettingSpec(
        "ROUTING_RULES_FILE",
        "Path (relative to the app root) of a JSON file of routing rules. This or ROUTING_RULES, not both.",
    ),
    SettingSpec("FLOWS", "JSON object of flows by name; overrides FLOWS_FILE."),
    SettingSpec(
        "FLOWS_FILE",
        "Paths (relative to the app root), separated by ';', of JSON files of flows by name or folders of them "
        "(every *.json directly in a folder but schema.json); their flows are merged, a name defined twice is "
        "an error.",
        default="flows/default.json",
    ),
    SettingSpec(
        "APP_STORAGE",
        "Storage connection string (local runs, Azurite). In Azure use the identity-based "
        "APP_STORAGE__tableServiceUri / APP_STORAGE__blobServiceUri instead.",
        secret=True,
    ),
    SettingSpec("APP_STORAGE__tableServiceUri", "Table endpoint for call state and records (managed identity)."),
    SettingSpec("APP_STORAGE__blobServiceUri", "Blob endpoint for QA recordings (managed identity)."),
    SettingSpec("STATE_TABLE", "Table of per-call state.", default="callstate"),
    SettingSpec(
        "EVENTS_TABLE",
        "Table of processed Event Grid event ids (duplicate filter; mid-call callbacks use the call state).",
        default="callevents",
    ),
    SettingSpec(
        "RECORDS_TABLE",
        "Table of call records for reporting (Event Grid call events and the flows' outcomes).",
        default="callrecords",
    ),
    SettingSpec("OUTBOUND_TABLE", "Table of call campaigns and number-masking sessions.", default="outbound"),
    SettingSpec(
        "RECORDING_MODE",
        "on_connect: record every call the app answers or places from the moment it connects; off: record only "
        "when a flow's record node or the control API starts it (possible in either mode).",
        default="off",
    ),
    SettingSpec("RECORDING_CHANNEL", "unmixed (one channel per participant) or mixed.", default="unmixed"),
    SettingSpec("RECORDING_CONTENT", "audio or audioVideo.", default="audio"),
    SettingSpec("RECORDING_FORMAT", "wav, mp3 or mp4.", default="wav"),
    SettingSpec("RECORDINGS_CONTAINER", "Blob container for QA copies of recordings.", default="qa-recordings"),
    SettingSpec(
        "RECORDING_ALLOWED_HOSTS",
        "Comma-separated host patterns recordings may be downloaded from (credentials are sent only there).",
        default=DEFAULT_RECORDING_HOSTS,
    ),
    SettingSpec(
        "RECORDING_DELETE_AFTER_COPY",
        "true: delete the recording from ACS after its copy is verified.",
        default="false",
    ),
    SettingSpec(
        "RECORDING_STORAGE",
        "copy: the app streams each recording from ACS into RECORDINGS_CONTAINER; byos: ACS writes it there "
        "itself (bring your own storage, with its managed identity) and the app only verifies, indexes and splits.",
        default="copy",
    ),
    SettingSpec(
        "RECORDING_SPLIT_PARTICIPANTS",
        "true: also write one mono WAV per participant from an unmixed recording.",
        default="true",
    ),
    SettingSpec(
        "DIAL_ALLOWED_PREFIXES",
        "Comma-separated +prefixes of the phone numbers the app may ring (+ alone: any; none: no phone). "
        "The longest matching prefix of this list or DIAL_DENIED_PREFIXES decides; a tie is a denial.",
        default=",".join(DEFAULT_ALLOWED),
    ),
    SettingSpec(
        "DIAL_DENIED_PREFIXES",
        "Comma-separated +prefixes of numbers the app never rings (none: no list). Default: NANP premium rate, "
        "the NANP area codes of Caribbean and Atlantic countries (international rates), and the ITU's premium, "
        "shared-cost, satellite and international-network codes.",
        default=",".join(DEFAULT_DENIED),
    ),
    SettingSpec(
        "DIAL_DAILY_CAP",
        "Most phone numbers the app dials at a caller's request per UTC day (control API calls, added "
        "participants and transfers, campaign numbers); once reached the API answers 429. 0: none.",
        default=DEFAULT_DAILY_CAP,
    ),
    SettingSpec(
        "CONNECT_ALLOWED_ROOMS",
        "Comma-separated room ids and group call ids the control API may connect to. Server calls need no "
        "listing: the app connects only to those it placed, answered or was told about by Event Grid.",
    ),
    SettingSpec("LOG_LEVEL", "Python log level of the app's loggers.", default="INFO"),
    SettingSpec(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "Application Insights; when set, traces and logs are exported with OpenTelemetry.",
        secret=True,
    ),
)
SETTING_NAMES = frozenset(s.name for s in SETTINGS)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class StorageSettings:
    connection_string: str | None = field(repr=False)
    table_endpoint: str | None
    blob_endpoint: str | None
    state_table: str
    events_table: str
    records_table: str = "callrecords"
    outbound_table: str = "outbound"


@dataclass(frozen=True)
class RecordingSettings:
    mode: str
    channel: str
    content: str
    format: str
    container: str
    allowed_hosts: tuple[str, ...]
    delete_after_copy: bool
    split_participants: bool = True
    storage: str = "copy"


@dataclass(frozen=True)
class DialingSettings:
    """Who the app may ring, how many a day, and which rooms and group calls it may join (toll fraud)."""

    policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    daily_cap: int = int(DEFAULT_DAILY_CAP)
    connect_allowed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Settings:
    acs_endpoint: str
    acs_access_key: str | None = field(repr=False)
    acs_resource_id: str
    jwt_issuer: str
    openid_config_url: str
    callback_base_url: str
    callback_secret: bytes = field(repr=False)
    cognitive_services_endpoint: str | None
    routing: RoutingRules
    flows: dict[str, Flow]
    storage: StorageSettings
    recording: RecordingSettings
    log_level: str
    appinsights_connection_string: str | None = field(default=None, repr=False)
    callback_secret_previous: bytes | None = field(default=None, repr=False)
    dialing: DialingSettings = field(default_factory=DialingSettings)

    def describe(self) -> dict[str, Any]:
        """What the health endpoint shows: no secrets."""
        return {
            "acs_endpoint": self.acs_endpoint,
            "acs_auth": "access key" if self.acs_access_key else "managed identity",
            "acs_resource_id": self.acs_resource_id,
            "callback_base_url": self.callback_base_url,
            "cognitive_services_endpoint": self.cognitive_services_endpoint,
            "flows": sorted(self.flows),
            "routing_rules": [r.name for r in self.routing.rules],
            "storage": "connection string" if self.storage.connection_string else "managed identity",
            "recording_mode": self.recording.mode,
            "telemetry": bool(self.appinsights_connection_string),
        }


def _url(name: str, value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"setting {name}: {value!r} is not an absolute http(s) URL")
    return value.rstrip("/")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SettingsError(f"setting {name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise SettingsError(f"setting {name}: {value!r} is not true or false")


def _secret_key(name: str, value: str) -> bytes:
    """A base64 HMAC key of 32 bytes or more; the error names the setting, never its value."""
    import base64
    import binascii

    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"setting {name}: not base64") from None
    if len(key) < 32:
        raise SettingsError(f"setting {name}: must decode to at least 32 bytes")
    return key


def parse_connection_string(value: str) -> tuple[str, str]:
    """(endpoint, access key) of an ACS connection string, keeping the endpoint's scheme."""
    parts: dict[str, str] = {}
    for piece in value.split(";"):
        if "=" in piece:
            key, _, val = piece.partition("=")
            parts[key.strip().lower()] = val.strip()
    if not parts.get("endpoint") or not parts.get("accesskey"):
        raise SettingsError("setting ACS_CONNECTION_STRING: expected endpoint=...;accesskey=...")
    return _url("ACS_CONNECTION_STRING", parts["endpoint"]), parts["accesskey"]


def _json(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise SettingsError(f"setting {name}: not valid JSON ({exc})") from None


def _pydantic_message(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(top)"
        problems.append(f"{where}: {error['msg']}")
    return f"setting {name}: " + "; ".join(problems)


def _prefixes(name: str, value: str) -> tuple[str, ...]:
    try:
        return _parse_prefixes(value)
    except ValueError as exc:
        raise SettingsError(f"setting {name}: {exc}") from None


def _count(name: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = -1
    if number < 0:
        raise SettingsError(f"setting {name}: {value!r} is not a whole number (0 or more)")
    return number


def _reader(env: Mapping[str, str]) -> Callable[[str], str]:
    """A setting's value, or its declared default when it is unset or empty."""

    def get(name: str) -> str:
        spec = next(s for s in SETTINGS if s.name == name)
        return env.get(name) or spec.default or ""

    return get


def dialing(env: Mapping[str, str]) -> DialingSettings:
    """The dialing policy, the daily cap and the rooms the API may join, from the settings."""
    get = _reader(env)
    policy = DestinationPolicy(
        allowed=_prefixes("DIAL_ALLOWED_PREFIXES", get("DIAL_ALLOWED_PREFIXES")),
        denied=_prefixes("DIAL_DENIED_PREFIXES", get("DIAL_DENIED_PREFIXES")),
    )
    rooms = frozenset(r.strip() for r in get("CONNECT_ALLOWED_ROOMS").split(",") if r.strip())
    return DialingSettings(policy, _count("DIAL_DAILY_CAP", get("DIAL_DAILY_CAP")), rooms)


def refused_targets(
    policy: DestinationPolicy, routing: RoutingRules | None, flows: Mapping[str, Flow]
) -> list[tuple[str | None, str]]:
    """Every fixed target the rules and flows name that the dialing policy refuses, as (flow name, or None for a
    routing rule; why). A flow's target that names a call variable ({peer}) is known only on the call."""
    refused: list[tuple[str | None, str]] = []
    rules = [*routing.rules, routing.default_rule()] if routing is not None else []
    for rule in rules:
        if isinstance(rule.action, RedirectAction):
            for target in rule.action.targets:
                try:
                    policy.check(target)
                except DestinationRefused as exc:
                    refused.append(
                        (
                            None,
                            f"rule {rule.name!r} redirects to {target!r}, which the dialing policy refuses: "
                            f"{exc.reason}",
                        )
                    )
    for name, flow in flows.items():
        for node_id, to in flow_targets(flow):
            if "{" in to:
                continue
            try:
                policy.check(to)
            except DestinationRefused as exc:
                refused.append(
                    (
                        name,
                        f"flow {name!r} node {node_id!r} rings {to!r}, which the dialing policy refuses: {exc.reason}",
                    )
                )
    return refused


def check_destinations(
    policy: DestinationPolicy,
    routing: RoutingRules,
    flows: dict[str, Flow],
    flows_setting: str = "FLOWS",
    routing_setting: str = "ROUTING_RULES",
    origin: Mapping[str, str] | None = None,
) -> None:
    """Every target the settings name (redirect and sim-ring targets, the flows' transfer and add_participant
    targets) passes the dialing policy: an app that would ring a premium number does not start. A flow's target
    that names a call variable ({peer}) is known only on the call, and is checked then (the executor). ``origin``
    (flow name -> file) lets the error name the file a flow is in."""
    for flow, why in refused_targets(policy, routing, flows):
        if flow is None:
            raise SettingsError(f"setting {routing_setting}: {why}")
        where = f"{origin[flow]}: " if origin and flow in origin else ""
        raise SettingsError(f"setting {flows_setting}: {where}{why}")


def unknown_flows(routing: RoutingRules, flows: Collection[str]) -> list[str]:
    """A problem for each flow a routing rule answers into that is not among ``flows``."""
    problems = []
    for rule in [*routing.rules, routing.default_rule()]:
        for flow in (getattr(rule.action, "flow", None), getattr(rule.action, "unknown_flow", None)):
            if flow and flow not in flows:
                problems.append(
                    f"rule {rule.name!r} answers into unknown flow {flow!r} (flows: {', '.join(sorted(flows))})"
                )
    return problems


MAX_PROBLEMS_SHOWN = 10


def _problems(name: str, problems: Sequence[object]) -> SettingsError:
    """One error naming the setting and its problems (the first few: the validator lists every one)."""
    shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        shown += f"; and {more} more (bin/validate-flows lists every one)"
    return SettingsError(f"setting {name}: {shown}")


def app_path(value: str, root: Path = APP_ROOT) -> Path:
    """A path a setting names, resolved: relative to ``root`` (the app's folder), or absolute."""
    return (root / Path(value).expanduser()).resolve()


def flows_file_paths(value: str, root: Path = APP_ROOT) -> list[Path]:
    """The resolved paths of a FLOWS_FILE value: ';'-separated, relative to ``root`` (or absolute)."""
    return [app_path(item, root) for item in flow_sources.split_paths(value)]


def load_flows(env: Mapping[str, str], root: Path = APP_ROOT) -> dict[str, Flow]:
    """The flows: the FLOWS setting, or else every file and folder FLOWS_FILE names, merged."""
    return _flows_and_origin(env, root)[0]


def _flows_and_origin(env: Mapping[str, str], root: Path) -> tuple[dict[str, Flow], dict[str, str]]:
    """The flows and, from FLOWS_FILE, the file each is in (so later errors about a flow can name its file)."""
    if env.get("FLOWS"):
        flows, problems = flow_sources.flows_of(_json("FLOWS", env["FLOWS"]))
        if problems:
            raise _problems("FLOWS", problems)
        return flows, {}
    value = _reader(env)("FLOWS_FILE")
    paths = flows_file_paths(value, root)
    if not paths:
        raise SettingsError(f"setting FLOWS_FILE: {value!r} names no file or folder")
    found = flow_sources.read([(p, str(p)) for p in paths])
    if found.problems:
        raise _problems("FLOWS_FILE", found.problems)
    return found.flows, found.origin


def _routing(env: Mapping[str, str], root: Path) -> tuple[RoutingRules, str]:
    """The routing rules, from ROUTING_RULES or the file ROUTING_RULES_FILE names (exactly one), and which."""
    inline, file = env.get("ROUTING_RULES", "").strip(), env.get("ROUTING_RULES_FILE", "").strip()
    if inline and file:
        raise SettingsError(
            "settings ROUTING_RULES and ROUTING_RULES_FILE are both set: set one, the rules as JSON "
            "(ROUTING_RULES) or the path of a JSON file of them (ROUTING_RULES_FILE)"
        )
    if not inline and not file:
        raise SettingsError(
            "setting ROUTING_RULES or ROUTING_RULES_FILE is required: the routing rules for IncomingCall as JSON "
            "(ROUTING_RULES), or the path, relative to the app root, of a JSON file of them (ROUTING_RULES_FILE); "
            "see docs/routing.md"
        )
    if inline:
        name, raw = "ROUTING_RULES", _json("ROUTING_RULES", inline)
    else:
        name = "ROUTING_RULES_FILE"
        path = app_path(file, root)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"setting ROUTING_RULES_FILE: cannot read {path} ({exc.strerror})") from None
        except ValueError as exc:
            raise SettingsError(f"setting ROUTING_RULES_FILE: {path} is not valid JSON ({exc})") from None
    try:
        return RoutingRules.model_validate(raw), name
    except ValidationError as exc:
        raise SettingsError(_pydantic_message(name, exc)) from None


def _required(env: Mapping[str, str]) -> None:
    for spec in SETTINGS:
        if spec.required and not env.get(spec.name):
            raise SettingsError(f"setting {spec.name} is required: {spec.description}")


def _acs(env: Mapping[str, str]) -> tuple[str, str | None]:
    """The ACS endpoint and, with a connection string, its access key (None: managed identity)."""
    if env.get("ACS_CONNECTION_STRING"):
        return parse_connection_string(env["ACS_CONNECTION_STRING"])
    if env.get("ACS_ENDPOINT"):
        return _url("ACS_ENDPOINT", env["ACS_ENDPOINT"]), None
    raise SettingsError("setting ACS_ENDPOINT (managed identity) or ACS_CONNECTION_STRING is required")


def _callback_keys(env: Mapping[str, str]) -> tuple[bytes, bytes | None]:
    """The key that signs callback URLs, and the one before it while a rotation is under way."""
    secret = _secret_key("CALLBACK_SECRET", env["CALLBACK_SECRET"])
    previous = (
        _secret_key("CALLBACK_SECRET_PREVIOUS", env["CALLBACK_SECRET_PREVIOUS"])
        if env.get("CALLBACK_SECRET_PREVIOUS")
        else None
    )
    return secret, previous


@dataclass(frozen=True)
class _Sources:
    """The routing rules and flows as loaded, with where they came from (for the errors that follow)."""

    routing: RoutingRules
    flows: dict[str, Flow]
    routing_setting: str
    flows_setting: str
    origin: dict[str, str]


def _routing_and_flows(env: Mapping[str, str], root: Path) -> _Sources:
    """The routing rules and the flows, each flow a rule answers into known."""
    routing, routing_setting = _routing(env, root)
    flows, origin = _flows_and_origin(env, root)
    problems = unknown_flows(routing, flows)
    if problems:
        raise SettingsError(f"setting {routing_setting}: {problems[0]}")
    return _Sources(routing, flows, routing_setting, "FLOWS" if env.get("FLOWS") else "FLOWS_FILE", origin)


def _dialing(env: Mapping[str, str], loaded: _Sources) -> DialingSettings:
    """The dialing settings, with every target the routing rules and flows name checked against its policy."""
    dial = dialing(env)
    check_destinations(
        dial.policy, loaded.routing, loaded.flows, loaded.flows_setting, loaded.routing_setting, loaded.origin
    )
    return dial


def _cognitive(env: Mapping[str, str], flows: dict[str, Flow]) -> str | None:
    """The AI services endpoint: required when a flow speaks text or recognizes speech."""
    cognitive = (
        _url("COGNITIVE_SERVICES_ENDPOINT", env["COGNITIVE_SERVICES_ENDPOINT"])
        if env.get("COGNITIVE_SERVICES_ENDPOINT")
        else None
    )
    needs_ai = [name for name, flow in flows.items() if flow.needs_ai_services()]
    if needs_ai and not cognitive:
        raise SettingsError(
            f"setting COGNITIVE_SERVICES_ENDPOINT is required: flows {', '.join(needs_ai)} use "
            "text-to-speech or speech recognition"
        )
    return cognitive


def _storage(env: Mapping[str, str], get: Callable[[str], str]) -> StorageSettings:
    """The app's storage account (a connection string or, with managed identity, its endpoints) and its tables."""
    connection = env.get("APP_STORAGE") or None
    table_endpoint = env.get("APP_STORAGE__tableServiceUri") or None
    blob_endpoint = env.get("APP_STORAGE__blobServiceUri") or None
    if not connection and not table_endpoint:
        raise SettingsError("setting APP_STORAGE (connection string) or APP_STORAGE__tableServiceUri is required")
    return StorageSettings(
        connection,
        table_endpoint,
        blob_endpoint,
        get("STATE_TABLE"),
        get("EVENTS_TABLE"),
        records_table=get("RECORDS_TABLE"),
        outbound_table=get("OUTBOUND_TABLE"),
    )


def _recording(get: Callable[[str], str]) -> RecordingSettings:
    """How calls are recorded and where the recordings go."""
    return RecordingSettings(
        mode=_choice("RECORDING_MODE", get("RECORDING_MODE"), ("off", "on_connect")),
        channel=_choice("RECORDING_CHANNEL", get("RECORDING_CHANNEL"), ("unmixed", "mixed")),
        content=_choice("RECORDING_CONTENT", get("RECORDING_CONTENT"), ("audio", "audioVideo")),
        format=_choice("RECORDING_FORMAT", get("RECORDING_FORMAT"), ("wav", "mp3", "mp4")),
        container=get("RECORDINGS_CONTAINER"),
        allowed_hosts=tuple(h.strip().lower() for h in get("RECORDING_ALLOWED_HOSTS").split(",") if h.strip()),
        delete_after_copy=_bool("RECORDING_DELETE_AFTER_COPY", get("RECORDING_DELETE_AFTER_COPY")),
        split_participants=_bool("RECORDING_SPLIT_PARTICIPANTS", get("RECORDING_SPLIT_PARTICIPANTS")),
        storage=_choice("RECORDING_STORAGE", get("RECORDING_STORAGE"), ("copy", "byos")),
    )


def load(env: Mapping[str, str] | None = None, root: Path = APP_ROOT) -> Settings:
    """The settings from ``env`` (the process's environment by default), checked in the order the steps run."""
    env = dict(os.environ if env is None else env)
    _required(env)
    get = _reader(env)
    endpoint, access_key = _acs(env)
    secret, previous = _callback_keys(env)
    loaded = _routing_and_flows(env, root)
    routing, flows = loaded.routing, loaded.flows
    dial = _dialing(env, loaded)
    cognitive = _cognitive(env, flows)
    storage = _storage(env, get)
    recording = _recording(get)
    log_level = _choice("LOG_LEVEL", get("LOG_LEVEL").upper(), ("DEBUG", "INFO", "WARNING", "ERROR"))
    return Settings(
        acs_endpoint=endpoint,
        acs_access_key=access_key,
        acs_resource_id=env["ACS_RESOURCE_ID"],
        jwt_issuer=get("ACS_JWT_ISSUER"),
        openid_config_url=_url("ACS_OPENID_CONFIG_URL", get("ACS_OPENID_CONFIG_URL")),
        callback_base_url=_url("CALLBACK_BASE_URL", env["CALLBACK_BASE_URL"]),
        callback_secret=secret,
        cognitive_services_endpoint=cognitive,
        routing=routing,
        flows=flows,
        storage=storage,
        recording=recording,
        log_level=log_level,
        appinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or None,
        callback_secret_previous=previous,
        dialing=dial,
    )


_cached: Settings | None = None


def get_settings() -> Settings:
    """The settings of this process, loaded on first use and kept."""
    global _cached
    if _cached is None:
        _cached = load()
    return _cached


def reset_cache() -> None:
    global _cached
    _cached = None
