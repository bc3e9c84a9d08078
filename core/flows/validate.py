"""Check flow files before they reach a caller: ``python -m core.flows.validate [FILE ...]``.

Each file is read as the app reads it (the pydantic models, then ``Flow.check()`` for the
graph), and every problem is printed with the file, flow and node it is in. With no FILE, the
FLOWS_FILE default (``flows/default.json``) is checked. Exit code 0 when every file is valid,
1 when any is not.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from .model import FlowSet, Node

APP_ROOT = Path(__file__).resolve().parents[2]
# The node types, as they appear in the location of a pydantic error inside a discriminated union.
NODE_TYPES = frozenset(get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(get_args(Node)[0]))


def default_file() -> Path:
    from core.platform.settings import SETTINGS

    spec = next(s for s in SETTINGS if s.name == "FLOWS_FILE")
    return APP_ROOT / (spec.default or "flows/default.json")


def _path(parts: Sequence[Any]) -> str:
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
        where = _path(rest)
        return f"flow {flow}, node {node}: " + (f"{where}: " if where else "") + message
    where = _path(loc)
    return f"flow {flow}: " + (f"{where}: " if where else "") + message


def problems_of(data: Any) -> list[str]:
    """Every problem of a flow document (already parsed JSON), each naming its flow and node."""
    if not isinstance(data, dict):
        return ["the file must hold a JSON object of flows by name"]
    if not data:
        return ["no flows: the file must hold at least one flow"]
    problems: list[str] = []
    for name, flow in data.items():  # one at a time, so a broken flow does not hide the others' problems
        try:
            problems += FlowSet.model_validate({name: flow}).check()
        except ValidationError as exc:
            problems += [describe_error(e) for e in exc.errors(include_url=False)]
    return problems


def problems_of_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [f"cannot read the file ({exc.strerror})"]
    try:
        data = json.loads(text)
    except ValueError as exc:
        return [f"not valid JSON ({exc})"]
    return problems_of(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.flows.validate",
        description="Validate flow files with the flow models and the graph checks.",
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="flow files (default: flows/default.json)")
    args = parser.parse_args(argv)
    files: list[Path] = args.files or [default_file()]
    failed = False
    for path in files:
        problems = problems_of_file(path)
        if problems:
            failed = True
            for problem in problems:
                print(f"{path}: {problem}")
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
