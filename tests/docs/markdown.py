"""Fenced blocks of the project's markdown pages and the doc-test marker on the line before each.

A marker is one HTML comment alone on its line, ``<!-- doctest: KIND ARGS -->``, on the line just before a
fence (``<!-- doctest: stack -->`` alone, once, not before a fence). Blocks of the languages in ``CHECKED``
must carry one; the marker says what the doc tests do with the block (run it, start it in the background,
validate it as flows, routing rules, a scenario or a request body, or skip it with a reason). Parsing is
kept apart from running so that a page's problems are all reported at once, each as ``file:line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = frozenset({"bash", "sh", "shell"})
CHECKED = SHELL | {"console", "json", "yaml", "yml"}
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
MARKER = re.compile(r"^\s*<!--\s*doctest:(?P<body>.*?)-->\s*$")
ANY_MARKER = re.compile(r"<!--\s*doctest\b")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
HELP = (
    "run | background wait=PORT[,PORT] | skip REASON | json flows | json routing | yaml scenario"
    " | json request METHOD /api/ROUTE"
)


@dataclass(frozen=True)
class Marker:
    """A parsed marker: its kind and arguments (``wait`` ports, ``reason``, ``method`` and ``route``)."""

    kind: str
    line: int
    ports: tuple[int, ...] = ()
    reason: str = ""
    method: str = ""
    route: str = ""


@dataclass
class Block:
    """One fenced block: where it starts (the fence's line, 1-based), its language, text and marker."""

    path: Path
    line: int
    language: str
    text: str
    marker: Marker | None

    @property
    def where(self) -> str:
        return f"{display(self.path)}:{self.line}"


@dataclass
class Page:
    """A markdown page's blocks, whether it asks for the stack, and every marker problem found in it."""

    path: Path
    blocks: list[Block] = field(default_factory=list)
    stack: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return any(b.marker is not None and b.marker.kind in ("run", "background") for b in self.blocks)


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_marker(body: str, line: int) -> Marker:
    """The marker from the text between ``doctest:`` and ``-->``; ValueError saying what is wrong."""
    words = body.split()
    if not words:
        raise ValueError(f"empty doctest marker (one of: {HELP})")
    kind, args = words[0], words[1:]
    if kind in ("run", "stack"):
        if args:
            raise ValueError(f"'{kind}' takes no arguments, got {' '.join(args)!r}")
        return Marker(kind, line)
    if kind == "background":
        if len(args) != 1 or not args[0].startswith("wait="):
            raise ValueError("'background' needs wait=PORT[,PORT...]: the ports the server listens on")
        try:
            ports = tuple(int(p) for p in args[0].removeprefix("wait=").split(","))
        except ValueError:
            raise ValueError(f"'background': ports must be numbers, got {args[0]!r}") from None
        if not ports or not all(0 < p < 65536 for p in ports):
            raise ValueError(f"'background': bad port in {args[0]!r}")
        return Marker(kind, line, ports=ports)
    if kind == "skip":
        if not args:
            raise ValueError("'skip' needs a reason, e.g. <!-- doctest: skip needs an Azure subscription -->")
        return Marker(kind, line, reason=" ".join(args))
    if kind == "json" and args in (["flows"], ["routing"]):
        return Marker(f"json {args[0]}", line)
    if kind == "yaml" and args == ["scenario"]:
        return Marker("yaml scenario", line)
    if kind == "json" and args[:1] == ["request"]:
        if len(args) != 3 or args[1].upper() not in METHODS or not args[2].startswith("/api/"):
            raise ValueError("'json request' needs METHOD /api/ROUTE, e.g. json request POST /api/calls")
        return Marker("json request", line, method=args[1].upper(), route=args[2])
    raise ValueError(f"unknown doctest marker {body.strip()!r} (one of: {HELP})")


# Which marker kinds go with which fence languages.
ALLOWED = {
    "run": SHELL,
    "background": SHELL,
    "json flows": {"json"},
    "json routing": {"json"},
    "json request": {"json"},
    "yaml scenario": {"yaml", "yml"},
}


def parse_page(path: Path) -> Page:
    """Every fenced block of ``path`` with its marker, and every marker problem (file:line: what)."""
    page = Page(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    pending: Marker | None = None  # the marker on the line just before, if any
    i = 0

    def problem(line: int, text: str) -> None:
        page.problems.append(f"{display(path)}:{line}: {text}")

    while i < len(lines):
        raw = lines[i]
        opened = FENCE.match(raw)
        if opened:
            indent, fence = opened["indent"], opened["fence"]
            info = opened["info"].strip()
            if fence[0] == "`" and "`" in info:  # an inline code span, not a fence
                opened = None
        if opened is None:
            match = MARKER.match(raw)
            if pending is not None:
                problem(pending.line, "doctest marker not followed by a fenced block on the next line")
                pending = None
            if match:
                try:
                    marker = parse_marker(match["body"], i + 1)
                except ValueError as exc:
                    problem(i + 1, str(exc))
                else:
                    if marker.kind == "stack":
                        if page.stack:
                            problem(i + 1, "'stack' given twice: once per page is enough")
                        page.stack = True
                        stack_line = i + 1
                        if i + 1 < len(lines) and FENCE.match(lines[i + 1]):
                            problem(i + 1, "'stack' is a page's marker: on a line of its own, not before a fence")
                    else:
                        pending = marker
            elif ANY_MARKER.search(re.sub(r"`[^`]*`", "", raw)):  # a marker, not one quoted in a code span
                problem(i + 1, "a doctest marker must be an HTML comment alone on its line")
            i += 1
            continue
        language = info.split()[0].lower() if info else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence[0] * len(fence)) and set(closing) == {fence[0]}:
                break
            text = lines[j]
            body.append(text[len(indent):] if text.startswith(indent) else text.lstrip())
            j += 1
        else:
            problem(i + 1, "fenced block never closed")
        block = Block(path, i + 1, language, "\n".join(body) + "\n", pending)
        page.blocks.append(block)
        if pending is None:
            if language in CHECKED:
                problem(i + 1, f"```{language} block without a doctest marker on the line before it ({HELP})")
        elif pending.kind != "skip" and language not in ALLOWED[pending.kind]:
            problem(i + 1, f"marker '{pending.kind}' does not fit a ```{language or '(no language)'} block")
        pending = None
        i = j + 1
    if pending is not None:
        problem(pending.line, "doctest marker not followed by a fenced block on the next line")
    if page.stack and not page.runs:
        problem(stack_line, "'stack' on a page without run blocks: nothing would use it")
    return page


def pages(root: Path = ROOT) -> list[Path]:
    """The pages the doc tests check: README.md, docs/*.md, infra/README.md, examples/**/README.md."""
    found = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "infra" / "README.md"]
    found += sorted((root / "examples").glob("**/README.md"))
    return [p for p in found if p.is_file()]
