"""Logs and traces that carry the call's ids, across every trigger.

A context variable holds the current call's ids (call connection id, server call id,
correlation id, call reference); a logging filter stamps them on every record, and spans get
them as attributes. With APPLICATIONINSIGHTS_CONNECTION_STRING set, OpenTelemetry exports both
to Application Insights (the exporter is imported only then).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Any

_EMPTY: dict[str, str] = {}
_ids: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("call_ids", default=_EMPTY)  # noqa: B039 - never mutated
IDS = ("call_connection_id", "server_call_id", "correlation_id", "call_ref")
_configured = False
_timings: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("timings", default=None)


class CallIdsFilter(logging.Filter):
    """Stamps the call's ids on a record, as attributes and in the message text.

    In the message because that is what reaches every sink (the Functions host's log stream,
    Application Insights traces, a terminal) whatever formatter it uses.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_call_ids", False):
            return True
        ids = _ids.get()
        for name in IDS:
            setattr(record, name, ids.get(name, "-"))
        record._call_ids = True
        if ids:
            suffix = " ".join(f"{short}={ids[name]}" for name, short in _SHORT.items() if ids.get(name))
            record.msg = f"{record.msg} [{suffix.replace('%', '%%')}]"
        return True


_SHORT = {
    "call_connection_id": "call",
    "server_call_id": "server_call",
    "correlation_id": "correlation",
    "call_ref": "ref",
}


@contextlib.contextmanager
def call_scope(name: str, **ids: str | None) -> Iterator[dict[str, str]]:
    """Within the block, logs and the span named ``name`` carry these ids (empty ones are skipped)."""
    merged = {**_ids.get(), **{k: v for k, v in ids.items() if v}}
    token = _ids.set(merged)
    try:
        with _tracer().start_as_current_span(name, attributes={f"acs.{k}": v for k, v in merged.items()}):
            yield merged
    finally:
        _ids.reset(token)


def annotate(**ids: str | None) -> None:
    """Add ids learnt midway (e.g. the call connection id once an event is parsed)."""
    current = dict(_ids.get())
    current.update({k: v for k, v in ids.items() if v})
    _ids.set(current)
    try:
        from opentelemetry import trace

        span = trace.get_current_span()
        for key, value in ids.items():
            if value:
                span.set_attribute(f"acs.{key}", value)
    except ImportError:
        pass


def current_ids() -> dict[str, str]:
    return dict(_ids.get())


def _tracer() -> Any:
    try:
        from opentelemetry import trace

        return trace.get_tracer("acs-call-workflows")
    except ImportError:  # pragma: no cover - opentelemetry-api is a pinned dependency
        return _NoTracer()


class _NoTracer:
    @contextlib.contextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        yield None


@contextlib.contextmanager
def timings() -> Iterator[dict[str, float]]:
    """Within the block, ``timed`` sections add their milliseconds here, by name."""
    spent: dict[str, float] = {}
    token = _timings.set(spent)
    try:
        yield spent
    finally:
        _timings.reset(token)


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Count the block's (or, as a decorator, the call's) wall time under ``name`` in the current ``timings``."""
    spent = _timings.get()
    if spent is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        spent[name] = spent.get(name, 0.0) + (time.perf_counter() - started) * 1000


def server_timing(spent: dict[str, float]) -> str:
    """A ``Server-Timing`` header value (``name;dur=<ms>``, comma-separated)."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in spent.items())


FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str = "INFO", appinsights_connection_string: str | None = None) -> None:
    """Once per process: the ids filter on the root handlers, and the exporter when configured."""
    global _configured
    if _configured:
        return
    _configured = True
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    for handler in root.handlers:
        handler.addFilter(CallIdsFilter())
    for name in ("core", "handlers", "blueprints"):
        logging.getLogger(name).setLevel(level)
    # The SDKs log every request and response at INFO: too much for a call's log.
    logging.getLogger("azure").setLevel(logging.WARNING)
    if appinsights_connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(connection_string=appinsights_connection_string, logger_name="")
