"""What a recording copy refuses or fails with: a refusal is acknowledged, a failure is retried.

The handler tells the two apart: a ``Refused`` event is logged and acknowledged (sending it again would be
refused again), a ``CopyFailed`` raises so that Event Grid delivers the event again and the copy is redone.
"""

from __future__ import annotations


class Refused(Exception):
    """Input the copy will not act on (a URL, a name): logged and acknowledged, never retried."""


class RefusedUrl(Refused):
    """A recording URL not exactly and canonically on the allow-list: never fetched, never sent credentials."""


class RefusedName(Refused):
    """An event field that would make a blob name outside the allowed shape (a traversal, an unknown format)."""


class CopyFailed(Exception):
    """The copy could not be completed or verified; raise so that the event is delivered again."""


def describe(raw: object) -> str:
    """A value from an event as a refusal's message may show it: quoted, on one line, at most 200 characters."""
    text = repr(raw)  # repr: no newline or control character of the input reaches a log line
    return text if len(text) <= 200 else text[:197] + "..."
