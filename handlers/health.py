"""What the health endpoint reports."""

from __future__ import annotations

import platform
from importlib.metadata import version
from typing import Any


def health_report() -> dict[str, Any]:
    return {
        "status": "ok",
        "python": platform.python_version(),
        "callautomation_sdk": version("azure-communication-callautomation"),
    }
