"""Relative links of the project's pages: the file each names exists, and so does the heading its ``#anchor`` names.

A renamed heading or a moved page breaks a link silently on GitHub; here it fails the doc tests with ``file:line``.
Anchors are GitHub's: the heading's text lowercased, inline markup dropped, every character but letters, digits,
spaces, ``-`` and ``_`` removed, spaces made ``-``; a repeated heading gets ``-1``, ``-2``, ...
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from tests.docs.markdown import FENCE, ROOT, display

LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target>[^()\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+).+?\1")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The page's lines outside fenced blocks, numbered from 1, with inline code spans blanked."""
    out: list[tuple[int, str]] = []
    fence = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opened = FENCE.match(line)
        if fence:
            if opened and opened["fence"][0] == fence[0] and len(opened["fence"]) >= len(fence):
                fence = ""
            continue
        if opened:
            fence = opened["fence"]
            continue
        out.append((number, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor a page's headings give."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for number, line in prose_lines(path):
        matched = HEADING.match(line)
        if not matched:
            continue
        base = slug(_raw_line(path, number))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def _raw_line(path: Path, number: int) -> str:
    """A heading's text as written (code spans kept: their text is part of the anchor)."""
    line = path.read_text(encoding="utf-8").splitlines()[number - 1]
    matched = HEADING.match(line)
    return matched["text"] if matched else line


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of ``path`` whose file or anchor does not exist, as ``file:line: what``."""
    problems: list[str] = []
    for number, line in prose_lines(path):
        for matched in LINK.finditer(line):
            target = matched["target"]
            if EXTERNAL.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{display(path)}:{number}"
            if not linked.exists():
                problems.append(f"{where}: {target}: no such file")
                continue
            try:
                linked.relative_to(root)
            except ValueError:
                problems.append(f"{where}: {target}: outside the repository")
                continue
            if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: {target}: {display(linked)} has no heading #{anchor}")
    return problems
