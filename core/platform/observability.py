"""Logs and traces that carry the call's ids, across every trigger, and never a caller's number.

A context variable holds the current call's ids; a logging filter stamps them on every record and spans get them as
attributes, so one call's lines can be found across triggers and instances. With
APPLICATIONINSIGHTS_CONNECTION_STRING set, OpenTelemetry exports both to Application Insights (the exporter is
imported only then). A second filter masks phone and card numbers in every record (see the redaction below).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import urllib.parse
from collections import Counter
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
    counting = _open_counts()  # None unless REQUEST_COUNTS is on and no scope is open already
    try:
        with _tracer().start_as_current_span(name, attributes={f"acs.{k}": v for k, v in merged.items()}):
            yield merged
    finally:
        if counting is not None:
            _close_counts(name, *counting)  # logged with the call's ids still on
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


# -- request counts ---------------------------------------------------------------------------
#
# A benchmark's switch, not an app setting: with REQUEST_COUNTS=1 in the environment (bench/requests_per_call.py),
# every HTTP request the process sends is counted by kind: the service (table, blob, acs, other), the operation,
# the table or container, and the shape of the keys (``{id}`` for what varies per call; a fixed key such as
# ``recent`` stays as it is, which is what shows a hot partition). Requests are seen through the interpreter's audit
# event ``http.client.send`` (every SDK's HTTP ends in http.client: requests, urllib3, urllib), so no client is
# wrapped and nothing changes when the switch is off: the hook is not even installed. Within an invocation (the
# outermost ``call_scope``) they are counted together and logged when it ends, one line with the call's ids:
#
#     request counts {"scope":"callback PlayCompleted","counts":{"table replace callstate {id}/state":2,...}}
#
# A request sent outside any invocation (the worker threads of a recording copy staging blocks, the lease renewers)
# is logged on its own line, with ``"scope":null`` and the thread's name. An entity group transaction is one
# request (``table batch <table> <key>``) and one ``table batch.<op> ...`` entry per entity in it.

REQUEST_COUNTS_SETTING = "REQUEST_COUNTS"
REQUEST_COUNTS_LINE = "request counts"
_counts: contextvars.ContextVar[Counter[str] | None] = contextvars.ContextVar("request_counts", default=None)
_counting = False
_hooked = False
_counts_lock = threading.Lock()
_awaiting_body: dict[int, tuple[Counter[str] | None, str]] = {}  # connection -> a request its body completes
_counts_log = logging.getLogger("core.platform.observability")
_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|MERGE|DELETE|OPTIONS) (\S+) HTTP/1\.[01]\r\n")
_KEYS = re.compile(r"\(PartitionKey='((?:[^']|'')*)',RowKey='((?:[^']|'')*)'\)$")
_WORD = re.compile(r"[A-Za-z_.]+")
_PATH_WORD = re.compile(r"[A-Za-z_.\-]+")
_PREFIXED = re.compile(r"([g-zG-Z]{1,8})[0-9a-fA-F]+")
_BATCH_PART = re.compile(
    rb"(GET|POST|PUT|PATCH|MERGE|DELETE) (\S+) HTTP/1\.1\r\n((?:[^\r\n]+\r\n)*)\r\n(.*?)(?=\r\n--changeset|\Z)", re.S
)


def install_request_counting() -> None:
    """Count every HTTP request this process sends from now on (see above); idempotent."""
    global _counting, _hooked
    _counting = True
    if not _hooked:
        _hooked = True
        sys.addaudithook(_audit)  # cannot be removed; ``stop_request_counting`` makes it do nothing


def stop_request_counting() -> None:
    global _counting
    _counting = False


@contextlib.contextmanager
def request_counts() -> Iterator[Counter[str]]:
    """Within the block, requests are counted into the Counter given (if counting is installed), whatever scope is
    open; nothing is logged. For tests and tools; invocations count through ``call_scope``."""
    counted: Counter[str] = Counter()
    token = _counts.set(counted)
    try:
        yield counted
    finally:
        _counts.reset(token)


def _open_counts() -> tuple[contextvars.Token[Counter[str] | None], Counter[str]] | None:
    if not _counting or _counts.get() is not None:
        return None
    counted: Counter[str] = Counter()
    return _counts.set(counted), counted


def _close_counts(name: str, token: contextvars.Token[Counter[str] | None], counted: Counter[str]) -> None:
    _counts.reset(token)
    with _counts_lock:
        counts = dict(sorted(counted.items()))
    _counts_log.info("%s %s", REQUEST_COUNTS_LINE, json.dumps({"scope": name, "counts": counts}, separators=(",", ":")))


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "http.client.send" or not _counting:
        return
    try:
        _sent(args[0], args[1])
    except Exception:  # counting must never fail a request
        pass


def _sent(connection: Any, data: Any) -> None:
    """One ``send`` of an HTTP connection: a request's head (request line and headers), or a piece of its body."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return
    key = id(connection)
    head = bytes(data[:16384])
    line = _REQUEST_LINE.match(head)
    if line is None:  # a body: it completes the request that waits for it (an insert's keys, a batch's entities)
        with _counts_lock:
            waiting = _awaiting_body.pop(key, None)
        if waiting is not None:
            counter, kind = waiting
            body = bytes(data) if kind.startswith("table batch") else head
            _count(counter, _with_body(kind, body))
        return
    with _counts_lock:
        earlier = _awaiting_body.pop(key, None)
    if earlier is not None:  # its body never came
        _count(earlier[0], [earlier[1]])
    method, target = line[1].decode(), line[2].decode("latin-1")
    headers = {}
    for raw in head[line.end() :].split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    kind = request_kind(method, target, headers)
    counter = _counts.get()
    if kind.startswith(("table insert", "table batch")):
        with _counts_lock:
            _awaiting_body[key] = (counter, kind)
        return
    _count(counter, [kind])


def count(kind: str) -> None:
    """Count something that is not a request (an ETag conflict met and retried, say) beside this invocation's
    requests, when request counting is on; nothing otherwise."""
    if _counting:
        _count(_counts.get(), [kind])


def _count(counter: Counter[str] | None, kinds: list[str]) -> None:
    if counter is not None:
        with _counts_lock:
            counter.update(kinds)
        return
    counts = Counter(kind for kind in kinds if not kind.startswith("other "))
    if counts:  # outside an invocation; "other" (telemetry, say) would only make more of itself
        line = {"scope": None, "thread": threading.current_thread().name, "counts": dict(counts)}
        _counts_log.info("%s %s", REQUEST_COUNTS_LINE, json.dumps(line, separators=(",", ":")))


def key_shape(value: str) -> str:
    """A table key as counted: each ``-``-separated part that is a word stays (letters only, not all of them hex
    digits, at most 20), a word's letters before hex digits keep the letters (``i03`` is ``i{id}``, a hash ``h1f..``
    is ``h{id}``), anything else (ids, hashes, times, dates) is ``{id}``, so the keys of every call look alike and a
    key shared by all of them stands out."""
    parts: list[str] = []
    for part in value.split("-"):
        word = _WORD.fullmatch(part) and (len(part) <= 3 or len(part) <= 20 and re.search(r"[g-zG-Z_.]", part))
        prefixed = None if word else _PREFIXED.fullmatch(part)
        shaped = part if word else prefixed[1] + "{id}" if prefixed else "{id}"
        if shaped == "{id}" and parts and parts[-1] == "{id}":
            continue
        parts.append(shaped)
    return "-".join(parts)


def _path_shape(path: str) -> str:
    """An ACS path as counted: words stay (``callConnections:play``), ids and raw ids are ``{id}``."""
    out = []
    for part in path.strip("/").split("/"):
        base, _, op = part.partition(":")
        word = _PATH_WORD.fullmatch(base) and re.search(r"[g-zG-Z_.]", base)
        out.append((base if word else "{id}") + (f":{op}" if op and _PATH_WORD.fullmatch(op) else ""))
    return "/".join(out)


def request_kind(method: str, target: str, headers: dict[str, str]) -> str:
    """What a request is, by the service it goes to: ``table <op> <table> [<key shape>]``, ``blob <op> <container>``,
    ``acs <METHOD> <path shape>``, or ``other <METHOD> <host>``. ``headers`` with lowercase names."""
    url = urllib.parse.urlsplit(target)
    host = headers.get("host", url.netloc)
    path = urllib.parse.unquote(url.path)
    query = urllib.parse.parse_qs(url.query)
    if path.startswith("/calling/"):
        return f"acs {method} {_path_shape(path[len('/calling/') :])}"
    if path.startswith("/v1/objects/"):  # a recording's content or metadata, or its deletion
        return f"acs {method} {_path_shape(path[len('/v1/') :])}"
    hostname = host.rsplit(":", 1)[0].strip("[]")
    segments = path.lstrip("/").split("/")
    if hostname in ("localhost", "127.0.0.1", "::1") or re.fullmatch(r"[\d.]+", hostname):
        segments = segments[1:]  # path-style (Azurite): the account comes first
    if "dataserviceversion" in headers or "odata" in headers.get("accept", "") or ".table." in host:
        return _table_kind(method, segments, query, headers)
    if "x-ms-version" in headers or ".blob." in host:
        return _blob_kind(method, segments, query)
    return f"other {method} {host}"


def _table_kind(method: str, segments: list[str], query: dict[str, list[str]], headers: dict[str, str]) -> str:
    resource = "/".join(segments)
    if resource.startswith("$batch"):
        return "table batch"
    if resource.startswith("Tables"):
        return "table create-table" if method == "POST" else f"table {method.lower()}-tables"
    keys = _KEYS.search(resource)
    table = resource[: keys.start()] if keys else resource.removesuffix("()")
    if keys is None:
        if method == "POST":
            return f"table insert {table}"
        where = query.get("$filter", [""])[0]
        partition = re.search(r"PartitionKey eq '((?:[^']|'')*)'", where)
        if partition:
            return f"table query {table} {key_shape(partition[1])}"
        field = re.match(r"\s*\(?\s*(\w+)", where)
        return f"table scan {table} {field[1] if field else '*'}"
    shape = f"{key_shape(keys[1])}/{key_shape(keys[2])}"
    op = {"GET": "get", "DELETE": "delete"}.get(method)
    if op is None:
        merge = method in ("MERGE", "PATCH")
        if "if-match" in headers:
            op = "merge" if merge else "replace"
        else:
            op = "upsert-merge" if merge else "upsert"
    return f"table {op} {table} {shape}"


def _with_body(kind: str, body: bytes) -> list[str]:
    """An insert's kind with its keys, or a batch's request with one entry per entity, from the request's body."""
    if kind.startswith("table insert"):
        return [f"{kind} {_json_keys(body)}"]
    entries, table, partition = [], "", ""
    for method, target, head, part in _BATCH_PART.findall(body):
        headers = {}
        for raw in head.decode("latin-1").split("\r\n"):
            name, _, value = raw.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        headers["dataserviceversion"] = "3.0"
        inner = request_kind(method.decode(), target.decode("latin-1"), headers)
        _, op, table, *rest = inner.split(" ")
        if op == "insert":
            rest = [_json_keys(part)]
        partition = partition or (rest[0].split("/")[0] if rest else "")
        entries.append(" ".join(["table", f"batch.{op}", table, *rest]))
    return [f"table batch {table} {partition}".rstrip(), *entries]


def _json_keys(body: bytes) -> str:
    found = {}
    for name in ("PartitionKey", "RowKey"):
        match = re.search(rb'"' + name.encode() + rb'"\s*:\s*"((?:[^"\\]|\\.)*)"', body)
        found[name] = key_shape(json.loads(b'"' + match[1] + b'"')) if match else "?"
    return f"{found['PartitionKey']}/{found['RowKey']}"


def _blob_kind(method: str, segments: list[str], query: dict[str, list[str]]) -> str:
    container = segments[0] if segments and segments[0] else "-"
    comp = query.get("comp", [""])[0]
    if query.get("restype", [""])[0] == "container" or len(segments) < 2:
        if comp == "list":
            op = "list-blobs"
        elif comp == "blobs":
            op = "find-by-tags"
        else:
            op = {"PUT": "create-container", "DELETE": "delete-container"}.get(method, "container-properties")
        return f"blob {op} {container}"
    by_comp = {
        ("PUT", "block"): "put-block",
        ("PUT", "blocklist"): "put-block-list",
        ("GET", "blocklist"): "get-block-list",
        ("PUT", "metadata"): "set-metadata",
        ("PUT", "tags"): "set-tags",
        ("GET", "tags"): "get-tags",
        ("PUT", "properties"): "set-properties",
    }
    op = by_comp.get((method, comp)) or {
        "PUT": "put-blob",
        "GET": "get-blob",
        "HEAD": "get-properties",
        "DELETE": "delete-blob",
    }.get(method, f"{method.lower()}-{comp or 'blob'}")
    return f"blob {op} {container}"


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
    if os.environ.get(REQUEST_COUNTS_SETTING, "").lower() in ("1", "true"):
        install_request_counting()
    if appinsights_connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(connection_string=appinsights_connection_string, logger_name="")
    install_redaction()  # last, so that it also covers the exporter's handler


# The host (the Functions worker, or the local host) sets up its log handlers before it imports the app.
install_redaction()
# Counting from the start, not from ``configure``: an invocation's scope opens before it builds the services (which
# calls ``configure``), and the first invocation of a process would otherwise go uncounted as one.
if os.environ.get(REQUEST_COUNTS_SETTING, "").lower() in ("1", "true"):
    install_request_counting()
