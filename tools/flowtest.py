"""Play scripted callers against the app with your own flows and routing rules, and read what happened to each call.

The helper behind ``bin/run-scenario`` and the test template (``examples/your-flow/test_your_flow.py``): it starts
what ``make demo`` starts (Azurite, the ACS simulator, the app under the local Functions host, the simulator's Event
Grid subscribed to the app), with the app settings of your choice, so a flow is tested the way it runs, not mocked::

    from tools.flowtest import run_scenario

    result = run_scenario("examples/your-flow/scenario.yaml",
                          flows=["flows/default.json", "examples/your-flow/flows"],
                          routing="examples/your-flow/routing.json")
    call = result["caller checks an order"]
    call.assert_heard("has shipped")
    call.assert_ended_by("app")

``FlowStack`` keeps one stack for several scenarios (a pytest fixture of module scope). Relative paths are the
caller's: resolved against the current directory.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Settings run-scenario wires to the local stack itself: a user's local.settings.json points them at fixed ports
# (or holds placeholders), so its values are not taken.
WIRED = frozenset(
    {
        "ACS_CONNECTION_STRING",
        "ACS_ENDPOINT",
        "ACS_RESOURCE_ID",
        "ACS_OPENID_CONFIG_URL",
        "CALLBACK_BASE_URL",
        "CALLBACK_SECRET",
        "CALLBACK_SECRET_PREVIOUS",
        "APP_STORAGE",
        "AzureWebJobsStorage",
        "AzureWebJobsFeatureFlags",
        "FUNCTIONS_WORKER_RUNTIME",
        "RECORDING_ALLOWED_HOSTS",
        "DEVHOST_FUNCTION_KEY",
        "DEVHOST_EVENTGRID_KEY",
    }
)
ENDINGS = ("app", "caller", "transfer", "rejected", "redirected", "missed", "not ended")


class FlowTestError(Exception):
    """Input the stack cannot start with (a path that does not exist, a settings file that is not JSON)."""


class AppRefused(RuntimeError):
    """The app did not start: ``reason`` is its start-up error (e.g. the flow and node of an invalid flow)."""

    def __init__(self, reason: str, log: str) -> None:
        super().__init__(f"the app did not start: {reason}")
        self.reason = reason
        self.log = log


# -- settings ---------------------------------------------------------------------------------------------------------


def app_path(path: str | Path, base: Path | None = None) -> str:
    """A user's path as an app setting names it: relative to the app root when inside it, else absolute."""
    resolved = ((base or Path.cwd()) / Path(path).expanduser()).resolve()
    if not resolved.exists():
        raise FlowTestError(f"{path}: no such file or folder")
    try:
        return resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return str(resolved)


def flows_setting(flows: str | Path | Iterable[str | Path], base: Path | None = None) -> str:
    """FLOWS_FILE for one path, a ``;``-separated list of them or a list: each file or folder checked to exist."""
    items = [flows] if isinstance(flows, str | Path) else list(flows)
    parts = [p.strip() for item in items for p in str(item).split(";") if p.strip()]
    if not parts:
        raise FlowTestError("--flows names no file or folder")
    return ";".join(app_path(p, base) for p in parts)


def routing_settings(routing: str | Path | Mapping[str, Any], base: Path | None = None) -> dict[str, str]:
    """The app settings for routing rules: a dict inline (ROUTING_RULES), a file by its path (ROUTING_RULES_FILE)."""
    if isinstance(routing, Mapping):
        return {"ROUTING_RULES": json.dumps(routing)}
    return {"ROUTING_RULES_FILE": app_path(routing, base)}


def read_settings(values: Iterable[str], base: Path | None = None) -> dict[str, str]:
    """App settings from files (local.settings.json's ``Values``, or a flat JSON object) and ``KEY=VALUE`` items,
    later ones winning. A name that is neither an existing file nor KEY=VALUE is an error naming it."""
    found: dict[str, str] = {}
    for value in values:
        path = (base or Path.cwd()) / Path(value).expanduser()
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise FlowTestError(f"--settings {value}: not valid JSON ({exc})") from None
            values_of = data.get("Values", data) if isinstance(data, dict) else None
            if not isinstance(values_of, dict):
                raise FlowTestError(f"--settings {value}: expected a JSON object (or one with 'Values')")
            for key, item in values_of.items():
                found[str(key)] = item if isinstance(item, str) else json.dumps(item)
        elif "=" in value and not value.startswith("="):
            key, _, item = value.partition("=")
            found[key.strip()] = item
        else:
            raise FlowTestError(f"--settings {value}: no such file (and not KEY=VALUE)")
    return found


def user_settings(
    *,
    flows: str | Path | Iterable[str | Path] | None = None,
    routing: str | Path | Mapping[str, Any] | None = None,
    settings: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The app settings a run adds to the stack's wiring, and the names of ``settings`` it left out (``WIRED``).
    ``flows`` and ``routing`` win over the same settings in ``settings``."""
    chosen = {k: v for k, v in (settings or {}).items() if k not in WIRED}
    ignored = sorted(k for k in settings or {} if k in WIRED)
    if flows is not None:
        chosen.pop("FLOWS", None)
        chosen["FLOWS_FILE"] = flows_setting(flows, base)
    if routing is not None:
        chosen.pop("ROUTING_RULES", None)
        chosen.pop("ROUTING_RULES_FILE", None)
        chosen.update(routing_settings(routing, base))
    return chosen, ignored


# -- what happened to a call ------------------------------------------------------------------------------------------


def _plain(raw_id: str) -> str:
    """A phone's raw id (4:+1...) as its number; other ids as they are."""
    return raw_id.removeprefix("4:")


def _source_text(source: Mapping[str, Any]) -> str:
    kind = source.get("kind")
    if kind == "text":
        return str(source.get("text", {}).get("text", ""))
    if kind == "ssml":
        return str(source.get("ssml", {}).get("ssmlText", ""))
    return str(source.get("file", {}).get("uri", ""))


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class CallResult:
    """One scripted call as the caller lived it and the app stored it. Phone numbers are plain (+1...)."""

    name: str
    server_call_id: str = field(repr=False)
    caller: str
    callee: str
    finished: bool
    outcome: str  # the simulator's: answered, transferred to ..., rejected (busy), redirected to ..., missed
    ended_by: str  # one of ENDINGS
    prompts: list[str]  # every prompt played to the caller, whole, in order
    pressed: list[str]  # the keys of each press step of the caller
    said: list[str]  # the words of each say step of the caller
    recognized: list[str]  # what the app's recognitions returned: a choice's label, the digits, the words
    failed_recognitions: int  # recognitions that ended without a result (silence, a wrong key, no match)
    transfers: list[str]  # every transfer target the app asked for, in order
    transferred_to: str | None  # the one that took the call
    timeline: str = field(repr=False)  # the simulator's timeline, as run-scenario prints it
    app_state: dict[str, Any] = field(default_factory=dict, repr=False)  # the app's call state in Table Storage

    @property
    def nodes(self) -> list[str]:
        """The flow's nodes the app entered, in order (from its call state)."""
        return [h.removeprefix("enter ") for h in self.app_state.get("history", []) if h.startswith("enter ")]

    @property
    def variables(self) -> dict[str, str]:
        """The call variables the flow stored (store_as), from the app's call state (not the app's own, ``_``)."""
        return {k: v for k, v in self.app_state.get("vars", {}).items() if not k.startswith("_")}

    def heard(self, text: str) -> bool:
        """Whether some prompt played to the caller holds ``text`` (case-insensitive)."""
        return any(text.lower() in prompt.lower() for prompt in self.prompts)

    # Assertions that say what was expected and show the call's timeline when it is not so.

    def _fail(self, message: str) -> None:
        __tracebackhide__ = True
        raise AssertionError(f"{self.name}: {message}\n\n{self.timeline}")

    def assert_heard(self, *texts: str) -> None:
        __tracebackhide__ = True
        for text in texts:
            if not self.heard(text):
                self._fail(f"the caller never heard {text!r}; prompts: {self.prompts}")

    def assert_not_heard(self, *texts: str) -> None:
        __tracebackhide__ = True
        for text in texts:
            if self.heard(text):
                self._fail(f"the caller heard {text!r}")

    def assert_transferred_to(self, target: str) -> None:
        __tracebackhide__ = True
        if self.transferred_to != _plain(target):
            self._fail(f"expected a transfer to {target}; transfers asked: {self.transfers}, "
                       f"taken by: {self.transferred_to}")

    def assert_not_transferred_to(self, target: str) -> None:
        __tracebackhide__ = True
        if _plain(target) in self.transfers:
            self._fail(f"the app transferred the caller to {target}")

    def assert_ended_by(self, who: str) -> None:
        __tracebackhide__ = True
        if who not in ENDINGS:
            raise ValueError(f"who must be one of {ENDINGS}, not {who!r}")
        if self.ended_by != who:
            self._fail(f"expected the call to end by {who!r}, it ended by {self.ended_by!r}")

    def assert_visited(self, *nodes: str) -> None:
        __tracebackhide__ = True
        for node in nodes:
            if node not in self.nodes:
                self._fail(f"the flow never entered node {node!r}; nodes: {self.nodes}")

    def assert_not_visited(self, *nodes: str) -> None:
        __tracebackhide__ = True
        for node in nodes:
            if node in self.nodes:
                self._fail(f"the flow entered node {node!r}; nodes: {self.nodes}")


@dataclass
class ScenarioResult:
    """Every scripted call of a scenario, by name (``result["caller checks an order"]``) or in order."""

    calls: list[CallResult]

    def __getitem__(self, name: str) -> CallResult:
        for call in self.calls:
            if call.name == name:
                return call
        raise KeyError(f"no call named {name!r}; calls: {[c.name for c in self.calls]}")

    def __iter__(self) -> Iterator[CallResult]:
        return iter(self.calls)

    def __len__(self) -> int:
        return len(self.calls)

    @property
    def all_finished(self) -> bool:
        return all(c.finished for c in self.calls)


def _prompts(entries: Sequence[Any]) -> list[str]:
    """The whole text of each prompt the caller heard: the timeline's 'hears:' lines, matched to the requests."""
    asked: list[str] = []
    heard: list[str] = []
    for e in entries:
        if e.kind == "request" and e.detail.get("operation") in ("Play", "Recognize") and e.detail.get("status") == 202:
            body = e.detail.get("body") or {}
            sources = body.get("playSources") or body.get("playPrompts") or (
                [body["playPrompt"]] if body.get("playPrompt") else []
            )
            texts = [_source_text(s) for s in sources]
            if texts:
                asked.append(" ".join(texts))
        elif e.kind == "party" and e.summary.startswith("hears: "):
            line = e.summary.removeprefix("hears: ").removesuffix(" (looping)")
            whole = next((t for t in asked if _short(t) == line), line)
            if whole in asked:
                asked.remove(whole)
            heard.append(whole)
    return heard


def _recognized(events: Iterable[Mapping[str, Any]], server_call_id: str) -> tuple[list[str], int]:
    from simulator.parties import TONE_CHARS

    values: list[str] = []
    failed = 0
    for event in events:
        data = event.get("data") or {}
        if data.get("serverCallId") != server_call_id:
            continue
        kind = str(event.get("type", "")).rsplit(".", 1)[-1]
        if kind == "RecognizeFailed":
            failed += 1
        elif kind == "RecognizeCompleted":
            if data.get("choiceResult"):
                values.append(str(data["choiceResult"].get("label", "")))
            elif data.get("dtmfResult"):
                values.append("".join(TONE_CHARS.get(t, t) for t in data["dtmfResult"].get("tones", [])))
            elif data.get("speechResult"):
                values.append(str(data["speechResult"].get("speech", "")))
    return values, failed


def call_result(call: Any, events: Iterable[Mapping[str, Any]], app_state: Mapping[str, Any] | None) -> CallResult:
    """What one of the simulator's calls (``ServerCall``) amounts to, for assertions."""
    from simulator.scenario import finished

    entries = list(call.timeline.entries)
    caller = call.started_by or next(iter(call.ever_joined), "")
    callee = ""
    pressed: list[str] = []
    said: list[str] = []
    transfers: list[str] = []
    transferred_to: str | None = None
    ended_by = ""
    for e in entries:
        text = e.summary
        if e.kind == "party" and text.startswith(f"{caller} calls "):
            callee = text.removeprefix(f"{caller} calls ").split(" ", 1)[0]
        elif e.kind == "party" and text.startswith(f"{caller} presses "):
            pressed.append(text.removeprefix(f"{caller} presses "))
        elif e.kind == "party" and text.startswith(f"{caller} says "):
            said.append(ast.literal_eval(text.removeprefix(f"{caller} says ")))
        elif e.kind == "call" and text.startswith("transfer to "):
            transfers.append(_plain(text.removeprefix("transfer to ").split(" ", 1)[0]))
        elif e.kind == "event" and text.startswith("CallTransferAccepted") and transfers and transferred_to is None:
            transferred_to = transfers[-1]
            ended_by = ended_by or "transfer"
        elif e.kind == "call" and text in ("the app hangs up", "the app terminates the call for everyone"):
            ended_by = ended_by or "app"
        elif e.kind == "party" and text == f"{caller} hangs up":
            ended_by = ended_by or "caller"
    outcome = call.outcome or ""
    done = finished(call)
    for prefix in ("rejected", "redirected", "missed"):
        if not ended_by and outcome.startswith(prefix):
            ended_by = prefix
    if not done:
        ended_by = "not ended"
    recognized, failed = _recognized(events, call.id)
    return CallResult(
        name=call.timeline.label,
        server_call_id=call.id,
        caller=_plain(caller),
        callee=_plain(callee),
        finished=done,
        outcome=outcome,
        ended_by=ended_by or "not ended",
        prompts=_prompts(entries),
        pressed=pressed,
        said=said,
        recognized=recognized,
        failed_recognitions=failed,
        transfers=transfers,
        transferred_to=transferred_to,
        timeline=call.timeline.render(),
        app_state=dict(app_state or {}),
    )


def app_states(connection_string: str) -> dict[str, dict[str, Any]]:
    """The app's call states in Table Storage, by server call id."""
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(connection_string, table_name="callstate")
    rows: dict[str, dict[str, Any]] = {}
    try:
        for entity in table.query_entities("RowKey eq 'state'"):
            state = json.loads(entity["data"])
            rows[state.get("server_call_id", "")] = state
    except Exception:  # noqa: BLE001 - no table yet (no call reached the app): no states
        return rows
    return rows


# -- the stack --------------------------------------------------------------------------------------------------------


def refusal(log: str) -> str:
    """The start-up error in a devhost log: the settings or flow problem, else the log's last lines."""
    for line in reversed(log.splitlines()):
        match = re.search(r"(SettingsError|ValidationError|ScenarioError): (.+)", line)
        if match:
            return match.group(2).strip()
    for line in reversed(log.splitlines()):
        if "setting " in line and ("error" in line.lower() or ":" in line):
            return line.strip()
    return "\n".join(log.strip().splitlines()[-15:])


def load_scenario(scenario: str | Path | Mapping[str, Any] | Any, base: Path | None = None) -> Any:
    """A ``Scenario``: from a file (YAML or JSON), a dict in the file's shape, or one already parsed."""
    from simulator.scenario import Scenario, load, parse

    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Mapping):
        return parse(dict(scenario))
    path = (base or Path.cwd()) / Path(scenario).expanduser()
    if not path.is_file():
        raise FlowTestError(f"{scenario}: no such scenario file")
    return load(path)


class FlowStack:
    """Azurite, the simulator and the app with your settings, for as many scenarios as you play on it.

    ``with FlowStack(flows=..., routing=...) as stack: result = stack.play("scenario.yaml")``. Raises
    ``AppRefused`` (with the app's start-up error) when the app does not start, ``FlowTestError`` on a missing
    file. ``settings`` are more app settings (e.g. ``{"RECORDING_MODE": "off"}``); relative paths are resolved
    against ``base`` (default: the current directory)."""

    def __init__(
        self,
        *,
        flows: str | Path | Iterable[str | Path] | None = None,
        routing: str | Path | Mapping[str, Any] | None = None,
        settings: Mapping[str, str] | None = None,
        base: str | Path | None = None,
        start_timeout: float = 30,
    ) -> None:
        self.base = Path(base) if base is not None else None
        self.settings, self.ignored = user_settings(flows=flows, routing=routing, settings=settings, base=self.base)
        self.start_timeout = start_timeout
        self.storage: Any = None
        self.simulator: Any = None
        self.sim: Any = None
        self.app: Any = None

    def __enter__(self) -> FlowStack:
        from simulator.engine import Config
        from simulator.runner import SimulatorThread
        from tools import azurite

        try:
            self.storage = azurite.start()
            self.simulator = SimulatorThread(config=Config())
            self.sim = self.simulator.__enter__()
            self.app = start_user_app(self.sim, self.storage.connection_string, self.settings, self.start_timeout)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.app is not None:
            self.app.stop()
            self.app.log_path.unlink(missing_ok=True)
            self.app = None
        if self.simulator is not None:
            self.simulator.__exit__(None, None, None)
            self.simulator = None
        if self.storage is not None:
            self.storage.stop()
            self.storage = None

    def app_log(self) -> str:
        return self.app.logs() if self.app is not None else ""

    def play(self, scenario: str | Path | Mapping[str, Any] | Any, *, timeout: float = 60) -> ScenarioResult:
        """Play a scenario (a file, a dict in its shape, or a parsed one) and wait until each call is over or
        ``timeout`` seconds passed; the calls as they were then."""
        from simulator.scenario import run

        parsed = load_scenario(scenario, self.base)
        calls = self.simulator.call(run(self.sim.sim, parsed, timeout=timeout), timeout=timeout + 30)
        states = app_states(self.storage.connection_string)
        events = list(self.sim.sim.engine.sent_events)
        return ScenarioResult([call_result(c, events, states.get(c.id)) for c in calls])


def start_user_app(sim: Any, storage_connection: str, settings: Mapping[str, str], timeout: float = 30) -> Any:
    """The app under devhost as ``tools.apphost.start_app`` starts it (the demo's recording on connect), with
    ``settings`` over it; ``AppRefused`` with the app's own reason if it does not start."""
    from tools.apphost import start_app

    chosen = {"RECORDING_MODE": "on_connect", **settings}
    try:
        return start_app(sim, storage_connection, timeout=timeout, **chosen)
    except RuntimeError as exc:
        log = str(exc)
        raise AppRefused(refusal(log), log) from None


def run_scenario(
    scenario: str | Path | Mapping[str, Any] | Any,
    *,
    flows: str | Path | Iterable[str | Path] | None = None,
    routing: str | Path | Mapping[str, Any] | None = None,
    settings: Mapping[str, str] | None = None,
    base: str | Path | None = None,
    timeout: float = 60,
) -> ScenarioResult:
    """Start a stack with these flows, rules and settings, play the scenario, stop the stack: the calls.
    ``flows`` default to the app's (flows/default.json), ``routing`` to the demo's rules; relative paths are
    resolved against ``base`` (default: the current directory)."""
    load_scenario(scenario, Path(base) if base is not None else None)  # a bad one fails before anything starts
    with FlowStack(flows=flows, routing=routing, settings=settings, base=base) as stack:
        return stack.play(scenario, timeout=timeout)


__all__ = [
    "AppRefused",
    "CallResult",
    "FlowStack",
    "FlowTestError",
    "ScenarioResult",
    "read_settings",
    "run_scenario",
    "user_settings",
]
