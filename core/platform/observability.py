"""Logs and traces that carry the call's ids, across every trigger, and never a caller's number.

A context variable holds the current call's ids; a logging filter stamps them on every record and spans get them as
attributes, so one call's lines can be found across triggers and instances. With
APPLICATIONINSIGHTS_CONNECTION_STRING set, OpenTelemetry exports both to Application Insights (the exporter is
imported only then). A second filter masks phone and card numbers in every record (see the redaction below).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time
import traceback
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


# -- redaction --------------------------------------------------------------------------------

# A filter on every handler of the root logger (installed when this module is imported and again by ``configure``)
# masks what must not reach a log in the rendered text of every record (message with its arguments, traceback,
# stack): phone numbers (``+14255550123``, raw ids ``4:+14255550123``, percent-encoded ``%2B14255550123``) keep
# their last four digits (``+*******0123``), and a run of 13 to 19 digits that passes the Luhn check (a card number)
# keeps its last four. It is a net under the log calls, which carry no tone, digit or speech content in the first
# place (``handlers/callbacks.py``).

# A phone number: "+" (or its percent-encoding, or a raw id's "4:"), then 7 to 15 digits, which may be
# grouped by spaces, dots, dashes or parentheses. Not inside a word (a base64 id may hold "+123...").
_PHONE = re.compile(
    r"(?P<lead>(?<![A-Za-z0-9])(?:4:\+?|\+)|(?:4%3[Aa])?%2[Bb]|(?<![A-Za-z0-9])4%3[Aa]\+?)"
    r"(?P<number>\d(?:[ .()\-]{0,2}\d){6,14})(?!\d)"
)
# A card number: 13 to 19 digits, maybe grouped by single spaces or dashes; masked only if it passes Luhn.
_PAN = re.compile(r"(?<![A-Za-z0-9*])\d(?:[ -]?\d){12,18}(?![A-Za-z0-9])")
_MAYBE_PHONE = re.compile(r"\+|%2[Bb]|4:|4%3[Aa]")  # a cheap test: most lines hold none of these


def _masked(digits: str) -> str:
    return "*" * (len(digits) - 4) + digits[-4:]


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match["number"])
    return match["lead"] + _masked(digits)


def _pan(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match[0])
    return _masked(digits) if _luhn(digits) else match[0]


def redact(text: str) -> str:
    """``text`` with every phone number and card number masked but for their last four digits."""
    if not text:
        return text
    if _MAYBE_PHONE.search(text):
        text = _PHONE.sub(_phone, text)
    return _PAN.sub(_pan, text)


def mask_id(value: object) -> str:
    """A participant (raw id, phone number, or anything else) as it may appear in a log line."""
    return redact(str(value)) if value is not None else "-"


class RedactFilter(logging.Filter):
    """Masks phone and card numbers in a record's rendered text (message with its arguments, traceback, stack).

    The message is rendered here (``msg % args``) and kept as the record's message with no arguments, so every
    handler and sink after this one (a formatter, Application Insights) sees the masked text only. A traceback
    that holds a number is folded, masked, into the message (and the exception dropped from the record): an
    exception's own text cannot be changed.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: logging would print them raw to stderr
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            masked = redact(text)
            if masked != text:
                record.msg = f"{record.msg}\n{masked}"
                record.exc_info = None
                record.exc_text = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_redact_filter = RedactFilter()


def install_redaction() -> None:
    """Put the redaction filter last on every handler of the root logger (idempotent)."""
    for handler in logging.getLogger().handlers:
        for existing in [f for f in handler.filters if isinstance(f, RedactFilter)]:
            handler.removeFilter(existing)
        handler.addFilter(_redact_filter)


FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str = "INFO", appinsights_connection_string: str | None = None) -> None:
    """Once per process: the ids and redaction filters on the root handlers, and the exporter when configured."""
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
    install_redaction()  # last, so that it also covers the exporter's handler


# The host (the Functions worker, or the local host) sets up its log handlers before it imports the app.
install_redaction()
