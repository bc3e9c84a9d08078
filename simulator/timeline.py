"""A per-call record of what happened, in order: REST requests, events sent, parties' actions.

Tests assert on it (``entries``); people read it (``render``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    at: float
    kind: str  # request | event | eventgrid | party | call
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, origin: float) -> dict[str, Any]:
        return {"t": round(self.at - origin, 4), "kind": self.kind, "summary": self.summary, **self.detail}


@dataclass
class Timeline:
    server_call_id: str
    label: str = ""
    origin: float = field(default_factory=time.monotonic)
    entries: list[Entry] = field(default_factory=list)

    def add(self, kind: str, summary: str, **detail: Any) -> Entry:
        entry = Entry(time.monotonic(), kind, summary, detail)
        self.entries.append(entry)
        return entry

    def as_list(self) -> list[dict[str, Any]]:
        return [e.as_dict(self.origin) for e in self.entries]

    def render(self) -> str:
        arrows = {
            "request": "app -> ACS",
            "event": "ACS -> app",
            "eventgrid": "EG  -> app",
            "party": "party    ",
            "call": "call     ",
        }
        title = f"Call {self.server_call_id}" + (f" ({self.label})" if self.label else "")
        lines = [title, "-" * len(title)]
        for e in self.entries:
            lines.append(f"{e.at - self.origin:8.3f}s  {arrows.get(e.kind, e.kind):10}  {e.summary}")
        return "\n".join(lines)
