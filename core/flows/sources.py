"""Where flows come from: one or more JSON files and folders of them, merged into one set of flows by name.

The app's ``FLOWS_FILE`` setting and ``python -m core.flows.validate`` both read flows through this module, so the
validator sees exactly what start-up sees. A path is a file of flows by name, or a folder: every ``*.json`` file
directly in it, sorted by name, except ``schema.json`` (the editor schema that may sit next to the flows). Each
flow is validated on its own, so one broken flow does not hide the problems of the others, and every problem is
kept with the file it is in: start-up refuses them, the validator prints them all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from .model import Flow, FlowSet, Node

SEPARATOR = ";"
SCHEMA_FILE_NAME = "schema.json"
# The node types, as they appear in the location of a pydantic error inside a discriminated union.
NODE_TYPES = frozenset(get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(get_args(Node)[0]))


def split_paths(value: str) -> list[str]:
    """The paths of a ``;``-separated list (FLOWS_FILE), spaces trimmed, empty items left out."""
    return [item.strip() for item in value.split(SEPARATOR) if item.strip()]


@dataclass(frozen=True)
class Problem:
    """One problem, with the file (or path) it is in, as the user named it."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class FlowSources:
    """The flows of several files merged, where each came from, and every problem met on the way."""

    flows: dict[str, Flow] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # every flow name seen (valid or not) -> its file
    files: list[str] = field(default_factory=list)  # every flow file read, in order
    named: list[str] = field(default_factory=list)  # every file read and every path that named none, in order
    problems: list[Problem] = field(default_factory=list)

    def problems_in(self, where: str) -> list[str]:
        return [p.message for p in self.problems if p.where == where]


def location(parts: Sequence[Any]) -> str:
    """A pydantic error's location as a path: ``nodes.menu.choices[0].key``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error of a FlowSet, located as 'flow F, node N: field: message'."""
    loc = list(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if not loc:
        return f"{message}"
    flow = loc.pop(0)
    if loc and loc[0] == "[key]":
        return f"flow {flow}: the flow name is not valid: {message}"
    if len(loc) >= 2 and loc[0] == "nodes":
        node = loc[1]
        rest = loc[2:]
        if rest and rest[0] == "[key]":
            return f"flow {flow}, node {node}: the node id is not valid: {message}"
        if rest and rest[0] in NODE_TYPES:
            rest = rest[1:]  # the union's tag
        where = location(rest)
        return f"flow {flow}, node {node}: " + (f"{where}: " if where else "") + message
    where = location(loc)
    return f"flow {flow}: " + (f"{where}: " if where else "") + message


def flows_of(data: Any) -> tuple[dict[str, Flow], list[str]]:
    """The valid flows of one document (parsed JSON) and the problems of the others, each naming flow and node."""
    if not isinstance(data, dict):
        return {}, ["must be a JSON object of flows by name"]
    if not data:
        return {}, ["no flows: a flow document holds at least one flow"]
    flows: dict[str, Flow] = {}
    problems: list[str] = []
    for name, raw in data.items():  # one at a time, so a broken flow does not hide the others' problems
        try:
            one = FlowSet.model_validate({name: raw})
        except ValidationError as exc:
            problems += [describe_error(e) for e in exc.errors(include_url=False)]
            continue
        graph = one.check()
        if graph:
            problems += graph
        else:
            flows[name] = one.root[name]
    return flows, problems


def flow_files(path: Path, shown: str) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """The flow files a path names (itself, or a folder's ``*.json`` but schema.json), or why it names none."""
    resolved = path.resolve()
    detail = "" if str(resolved) == shown else f" ({resolved})"
    if resolved.is_dir():
        members = sorted(
            p for p in resolved.iterdir() if p.suffix == ".json" and p.name != SCHEMA_FILE_NAME and p.is_file()
        )
        if not members:
            return [], [Problem(shown, f"the folder{detail} holds no flow file (*.json other than schema.json)")]
        return [(p, os.path.join(shown, p.name)) for p in members], []
    if resolved.is_file():
        return [(resolved, shown)], []
    if resolved.exists():
        return [], [Problem(shown, f"not a file or folder{detail}")]
    return [], [Problem(shown, f"no such file or folder{detail}")]


def read(paths: Sequence[tuple[Path, str]]) -> FlowSources:
    """Every flow of the files and folders given as ``(path, how to name it)``, merged: a flow name defined twice
    is a problem naming both files; a file named twice (directly and through its folder) is read once."""
    out = FlowSources()
    seen: set[Path] = set()
    for path, shown in paths:
        files, problems = flow_files(path, shown)
        out.problems += problems
        out.named += [p.where for p in problems]
        for file, name in files:
            if file in seen:
                continue
            seen.add(file)
            out.files.append(name)
            out.named.append(name)
            _read_file(file, name, out)
    return out


def read_json(file: Path, shown: str) -> tuple[Any, Problem | None]:
    """A JSON file's data, or the problem that it cannot be read or is not JSON."""
    try:
        return json.loads(file.read_text(encoding="utf-8")), None
    except OSError as exc:
        return None, Problem(shown, f"cannot read the file ({exc.strerror})")
    except ValueError as exc:
        return None, Problem(shown, f"not valid JSON ({exc})")


def _read_file(file: Path, shown: str, out: FlowSources) -> None:
    data, unreadable = read_json(file, shown)
    if unreadable:
        out.problems.append(unreadable)
        return
    flows, problems = flows_of(data)
    out.problems += [Problem(shown, p) for p in problems]
    for name in data if isinstance(data, dict) else ():
        if name in out.origin:
            out.problems.append(Problem(shown, f"flow {name!r} is also defined in {out.origin[name]}"))
            flows.pop(name, None)
            continue
        out.origin[name] = shown
        if name in flows:
            out.flows[name] = flows[name]
