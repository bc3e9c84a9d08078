"""The health endpoints.

- ``GET /api/health`` (anonymous): liveness. The function answered, so the host and the worker are up and the
  app loaded (under a host, bad settings stop the app before any function is served: ``core/platform/startup.py``). It
  says nothing else: no versions, no settings, no endpoints, no error text, and it calls nothing, so anyone can
  poll it and learn nothing, and a flood of it costs no outbound request.
- ``GET /api/health/details`` (function key): the settings as loaded (no secrets), the versions, and whether
  each dependency answers. The dependency probes are cached for ``PROBE_TTL_SECONDS`` and run by one caller at
  a time, so however many requests arrive, each dependency is probed at most once per TTL.
"""

from __future__ import annotations

import platform
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from core.outbound.responses import HealthReport
from core.platform.settings import Settings, SettingsError, get_settings

PROBE_TTL_SECONDS = 30.0
LIVENESS: dict[str, str] = {"status": "ok"}


def liveness() -> dict[str, str]:
    return dict(LIVENESS)


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
    from core.platform import clients

    return {
        "acs": lambda: _http_reachable(settings.acs_endpoint),
        "callback_keys": lambda: _http_reachable(settings.openid_config_url),
        "state_table": lambda: clients.state_store(settings).ping(),
    }


class ProbeCache:
    """The last probe results, for ``ttl`` seconds. One caller probes while the others wait for its results
    (thread-safe), so a burst of requests makes one round of probes, not one per request."""

    def __init__(self, ttl: float = PROBE_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._key: object = None
        self._at = 0.0
        self._results: dict[str, dict[str, Any]] | None = None

    def get(self, key: object, probe: Callable[[], dict[str, dict[str, Any]]]) -> tuple[dict[str, Any], float]:
        """The results for ``key`` (what is probed: other settings are probed anew) and their age in seconds."""
        with self._lock:
            if self._results is None or key != self._key or self._clock() - self._at >= self.ttl:
                self._results = probe()
                self._key, self._at = key, self._clock()
            return self._results, self._clock() - self._at

    def clear(self) -> None:
        with self._lock:
            self._results = None


_probes = ProbeCache()


def _probe_key(settings: Settings) -> tuple[object, ...]:
    """What the probes reach: other settings are probed anew."""
    return (settings.acs_endpoint, settings.openid_config_url, settings.storage)


def health_report(load: Callable[[], Settings] = get_settings, cache: ProbeCache | None = None) -> dict[str, Any]:
    """What ``GET /api/health/details`` shows (behind the function key)."""
    cache = cache or _probes
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "callautomation_sdk": version("azure-communication-callautomation"),
    }
    try:
        settings = load()
    except SettingsError as exc:
        report.update(status="error", settings_error=str(exc))
        return HealthReport.model_validate(report).dump()
    report["settings"] = settings.describe()
    checks, age = cache.get(
        _probe_key(settings),
        lambda: {name: _probe(check) for name, check in dependency_checks(settings).items()},
    )
    report["dependencies"] = checks
    report["dependencies_age_s"] = round(age, 1)
    report["status"] = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
    return HealthReport.model_validate(report).dump()
