"""What GET /api/health reports: the settings as loaded (no secrets) and whether each dependency
answers. A settings error is reported by name rather than crashing the endpoint."""

from __future__ import annotations

import platform
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from core.settings import Settings, SettingsError, get_settings


def _probe(check: Callable[[], object]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _http_reachable(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=3):  # noqa: S310 - URLs come from settings
            pass
    except urllib.error.HTTPError:
        pass  # any HTTP answer means the service is there


def dependency_checks(settings: Settings) -> dict[str, Callable[[], object]]:
    from core import clients

    return {
        "acs": lambda: _http_reachable(settings.acs_endpoint),
        "callback_keys": lambda: _http_reachable(settings.openid_config_url),
        "state_table": lambda: clients.state_store(settings).ping(),
    }


def health_report(load: Callable[[], Settings] = get_settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "callautomation_sdk": version("azure-communication-callautomation"),
    }
    try:
        settings = load()
    except SettingsError as exc:
        report.update(status="error", settings_error=str(exc))
        return report
    report["settings"] = settings.describe()
    checks = {name: _probe(check) for name, check in dependency_checks(settings).items()}
    report["dependencies"] = checks
    report["status"] = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
    return report
