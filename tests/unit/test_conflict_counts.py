"""ETag conflicts are counted (by what was written, without its id) beside an invocation's requests when request
counting is on, so a benchmark can report them per call; nothing is counted when it is off."""

from __future__ import annotations

from typing import Any

import pytest

from core.platform import observability, tables


def _racing_row(conflicts: int, *, cached: bool) -> tuple[Any, ...]:
    """read/write/recall for a row that another writer moves on ``conflicts`` times."""
    left = {"n": conflicts}

    def write(value: Any, etag: Any) -> None:
        if left["n"] > 0:
            left["n"] -= 1
            raise tables.Conflict("moved on")

    return (lambda: ({}, "etag"), write, (lambda: ({}, "old")) if cached else None)


@pytest.mark.parametrize(("cached", "expected"), [(False, "conflict state"), (True, "conflict state (cached copy)")])
def test_conflicts_are_counted_when_counting_is_on(cached: bool, expected: str) -> None:
    read, write, recall = _racing_row(1, cached=cached)
    observability.install_request_counting()
    try:
        with observability.request_counts() as counted:
            tables.mutate(read, lambda v: None, write, attempts=5, what="state of call-123", gave_up=RuntimeError,
                          pause=lambda attempt: 0.0, recall=recall)
    finally:
        observability.stop_request_counting()
    assert counted[expected] == 1
    assert not any("call-123" in kind for kind in counted)


def test_nothing_is_counted_when_counting_is_off() -> None:
    read, write, recall = _racing_row(2, cached=False)
    with observability.request_counts() as counted:
        tables.mutate(read, lambda v: None, write, attempts=5, what="record of x", gave_up=RuntimeError,
                      pause=lambda attempt: 0.0)
    assert counted == {}
