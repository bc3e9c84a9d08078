"""The start-up check: under a Functions host, the app does not load with bad settings or flows.

The host sets ``AZURE_FUNCTIONS_ENVIRONMENT`` for its workers (Core Tools: Development, Azure:
Production; devhost does the same). When it is set, loading the app loads and validates every
setting and flow; a ``SettingsError`` stops the worker from indexing the functions, and its
message, which names the setting or the flow and node, is what the host's log shows. Code that
only imports the app (tests of its bindings, tooling) is not a host and skips the check.
"""

from __future__ import annotations

import logging
import os

from core.platform.settings import SettingsError, get_settings

log = logging.getLogger("core.platform.startup")


def check_on_host_start() -> None:
    if not os.environ.get("AZURE_FUNCTIONS_ENVIRONMENT"):
        return
    try:
        get_settings()
    except SettingsError as exc:
        log.critical("the app cannot start: %s", exc)
        raise
