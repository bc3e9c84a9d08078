"""The doc tests: every command and request example of the README and docs/ checked or run (``-m docs`` selects
them; they are part of the default suite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docs.runner import Stack, start_stack


@pytest.fixture(scope="module")
def doc_stack() -> Iterator[Stack]:
    """Azurite, the simulator and the app on the documented fixed ports, for the pages marked ``stack``."""
    stack = start_stack()
    try:
        yield stack
    finally:
        stack.stop()
