"""Hooks run when a call ends for the app (call records, campaigns), so features that care
about a call's end register here instead of growing the CallDisconnected handler.

A hook gets the final state and the runtime. Events are delivered at least once, so a hook may
run again for the same call: hooks must be idempotent (key their writes by the call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .state import CallState

log = logging.getLogger("core.lifecycle")
CallEndedHook = Callable[[CallState, Any], None]
_call_ended: list[CallEndedHook] = []


def on_call_ended(hook: CallEndedHook) -> CallEndedHook:
    """Register a hook (usable as a decorator)."""
    if hook not in _call_ended:
        _call_ended.append(hook)
    return hook


def call_ended(state: CallState, runtime: Any) -> None:
    """Run every hook; a failing hook fails the event so that it is delivered again."""
    for hook in _call_ended:
        hook(state, runtime)
