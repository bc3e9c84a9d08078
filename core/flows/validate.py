"""Check flows and routing rules before they reach a caller: ``bin/validate-flows [--routing FILE] [PATH ...]``.

``bin/validate-flows`` runs ``python -m core.flows.validate`` from any directory, paths relative to it.

The PATHs are flow files and folders, merged as the ``FLOWS_FILE`` setting merges them (``core/flows/sources.py``;
a PATH may itself be a ``;``-separated list, as the setting is). Every problem is reported at once, each prefixed by
the file it is in: each flow's schema problems (the pydantic models) and graph problems (``Flow.check()``), a flow
name defined in two files, a path that names no flow file, and the fixed transfer and invitation targets the dialing
policy refuses (``DIAL_*_PREFIXES`` from the environment, else their defaults), as start-up checks them. With
``--routing FILE``, the routing rules are checked with the app's own model, and every flow a rule answers into must
be among the merged flows. With no PATH, the FLOWS_FILE default (``flows/default.json``) is checked. A file with no
problem prints ``FILE: ok``. Exit code 0 when everything is valid, 1 when anything is not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import sources
from .sources import Problem, split_paths

APP_ROOT = Path(__file__).resolve().parents[2]
__all__ = ["default_file", "main", "problems_of", "validate"]


def default_file() -> Path:
    from core.platform.settings import SETTINGS

    spec = next(s for s in SETTINGS if s.name == "FLOWS_FILE")
    return APP_ROOT / (spec.default or "flows/default.json")


def problems_of(data: Any) -> list[str]:
    """Every problem of a flow document (already parsed JSON), each naming its flow and node."""
    return sources.flows_of(data)[1]


def _routing(path: Path, shown: str, flow_names: list[str]) -> tuple[Any, list[Problem]]:
    """The routing rules of a file (None when they do not load), and their problems."""
    from core.calls.routing import RoutingRules
    from core.platform.settings import unknown_flows

    data, unreadable = sources.read_json(path, shown)
    if unreadable:
        return None, [unreadable]
    try:
        routing = RoutingRules.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = sources.location(error["loc"])
            problems.append(
                Problem(shown, (f"{where}: " if where else "") + error["msg"].removeprefix("Value error, "))
            )
        return None, problems
    return routing, [Problem(shown, p) for p in unknown_flows(routing, flow_names)]


def _dialing(routing: Any, routing_shown: str | None, found: sources.FlowSources) -> list[Problem]:
    """The fixed targets the dialing policy refuses, as start-up refuses them."""
    from core.platform.settings import SettingsError, dialing, refused_targets

    try:
        policy = dialing(os.environ).policy
    except SettingsError as exc:
        return [Problem("environment", str(exc))]
    problems = []
    for flow, why in refused_targets(policy, routing, found.flows):
        where = routing_shown if flow is None else found.origin[flow]
        problems.append(Problem(where or "", why))
    return problems


def validate(paths: list[str], routing: str | None = None) -> tuple[list[str], list[Problem]]:
    """Every file checked (flow files, then the routing file), in order, and every problem found in them."""
    items = [item for arg in paths for item in split_paths(arg)]
    found = sources.read([(Path(item).expanduser(), item) for item in items])
    places = list(found.named)
    problems = list(found.problems)
    rules = None
    if routing is not None:
        places.append(routing)
        rules, routing_problems = _routing(Path(routing).expanduser(), routing, list(found.origin))
        problems += routing_problems
    problems += _dialing(rules, routing, found)
    return places, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="validate-flows",
        description="Validate flow files and folders (merged as FLOWS_FILE merges them) and, with --routing, the "
        "routing rules: every problem is printed, prefixed by its file. Exit code 0: valid; 1: not.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="a flow file or a folder of them (every *.json but schema.json); default: flows/default.json",
    )
    parser.add_argument("--routing", metavar="FILE", help="a JSON file of routing rules (ROUTING_RULES_FILE)")
    args = parser.parse_args(argv)
    places, problems = validate(args.paths or [str(default_file())], args.routing)
    for place in places:
        mine = [p.message for p in problems if p.where == place]
        for message in mine:
            print(f"{place}: {message}")
        if not mine:
            print(f"{place}: ok")
    for problem in problems:
        if problem.where not in places:
            print(problem)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
