"""The published JSON Schema of flow files, generated from the pydantic models.

``flows/schema.json`` is this module's output, committed so editors can validate flow files as they are written
(point the editor at the file); a unit test fails when it is out of date. Refresh it with::

    python -m core.flows.schema            # writes flows/schema.json
    python -m core.flows.schema --check    # exit 1 when flows/schema.json is stale

The graph rules JSON Schema cannot state (every ``next`` names a node, no unreachable node, menu keys unique, ...)
live in ``Flow.check()``: run ``bin/validate-flows`` (``python -m core.flows.validate``) for both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .model import AUDIO_URL_PATTERN, FlowSet

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:acs-call-workflows:flows:schema"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "flows" / "schema.json"


def _nonempty_string(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"type": "string", "minLength": 1}}}


def _prompt_rules(prompt: dict[str, Any]) -> None:
    """Prompt's validator, as schema: exactly one of text/ssml/audio; voice and locale need text; audio is an
    https URL with a host name."""
    prompt["oneOf"] = [_nonempty_string("text"), _nonempty_string("ssml"), _nonempty_string("audio")]
    prompt["allOf"] = [
        {"if": _nonempty_string(field), "then": _nonempty_string("text")} for field in ("voice", "locale")
    ]
    audio = prompt["properties"]["audio"]
    for option in audio.get("anyOf", []):
        if option.get("type") == "string":
            option["pattern"] = AUDIO_URL_PATTERN  # https only, with a host name: the model's own pattern


def _choice_rules(choice: dict[str, Any]) -> None:
    """MenuChoice's validator, as schema: a key or at least one phrase."""
    choice["anyOf"] = [
        _nonempty_string("key"),
        {"required": ["phrases"], "properties": {"phrases": {"type": "array", "minItems": 1}}},
    ]


def _key_patterns(node: Any) -> None:
    """pydantic writes a constrained dict key as ``patternProperties``, which lets any other key
    through unchecked; state it as ``propertyNames`` so a bad flow or node name is rejected."""
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
            ((pattern, value),) = patterns.items()
            del node["patternProperties"]
            node["additionalProperties"] = value
            node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
        for value in node.values():
            _key_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _key_patterns(value)


def build_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file (a FlowSet: flows by name)."""
    generated = FlowSet.model_json_schema()
    _key_patterns(generated)
    defs = generated.get("$defs", {})
    if "Prompt" in defs:
        _prompt_rules(defs["Prompt"])
    if "MenuChoice" in defs:
        _choice_rules(defs["MenuChoice"])
    # DTMF keys for single-key fields (the validators check these too).
    if "Flow" in defs:
        defs["Flow"]["properties"]["on_tone"]["propertyNames"] = {"pattern": "^[0-9*#A-D]$"}
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": "Call flows",
        "description": (
            "Call flows for the ACS Call Automation app: a JSON object of flows by name (the FLOWS "
            "setting, or one of the files FLOWS_FILE names). Generated from core/flows/model.py by "
            "`python -m core.flows.schema`; do not edit. Graph rules (targets exist, nodes reachable, "
            "menu keys unique) are checked by `bin/validate-flows` (python -m core.flows.validate)."
        ),
    }
    generated.pop("title", None)
    generated.pop("description", None)
    schema.update(generated)
    return schema


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.flows.schema", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="where to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python -m core.flows.schema", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
