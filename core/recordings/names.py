"""Blob names for a recording: the chunk's path, its metadata and per-participant files, and byos names.

Every name built from an event is made of [A-Za-z0-9._~=+,:-] segments joined by "/", with no empty, "." or ".."
segment, and extensions come from a fixed set: a name that would not be is refused (``RefusedName``), so that no
event field can write outside the recording's own folder of the QA container.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import unquote

from .errors import RefusedName, RefusedUrl, describe
from .urls import SEGMENT, parse_canonical

FORMAT_EXTENSIONS = {"wav": "wav", "mp3": "mp3", "mp4": "mp4"}  # ACS's recordingFormatType (any case) -> extension
MAX_BLOB_NAME = 1024


def format_extension(format_type: object) -> str:
    """The file extension for ACS's ``recordingFormatType``; wav when absent (as before).

    Any value ACS does not document is refused rather than guessed, so that a forged or changed event is noticed,
    not written.
    """
    if format_type is None or format_type == "":
        return "wav"
    ext = FORMAT_EXTENSIONS.get(format_type.lower()) if isinstance(format_type, str) else None
    if ext is None:
        raise RefusedName(f"unknown recordingFormatType {describe(format_type)}")
    return ext


def check_blob_name(name: str) -> str:
    """The name itself if every segment has the allowed shape; ``RefusedName`` otherwise."""
    segments = name.split("/")
    if (
        not name
        or len(name) > MAX_BLOB_NAME
        or not all(SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments)
    ):
        raise RefusedName(f"blob name with an empty, dot or odd segment: {describe(name)}")
    return name


def blob_name_in_container(raw: object, container_url: str) -> str:
    """Bring your own storage: the blob a URL from an event names, if it is in the QA container.

    The URL is parsed once (strictly, as ``parse_canonical``) and compared part by part with the container's
    (scheme, host, port, then the container's path segments); the rest of the path is split on its literal
    slashes, each segment percent-decoded once and then checked: an encoded slash, dot segment, backslash or
    a second level of encoding is refused, never decoded into a traversal.
    """
    from urllib3.util import parse_url

    safe = parse_canonical(raw, encoded_path=True)
    home = parse_url(container_url)
    home_port = home.port if home.port is not None else (443 if home.scheme == "https" else 80)
    if (safe.scheme, safe.host, safe.effective_port) != (home.scheme, (home.host or "").lower(), home_port):
        raise RefusedUrl(f"{safe.host!r}: not the QA container's account {container_url}")
    home_segments = [unquote(s) for s in (home.path or "").strip("/").split("/") if s]
    try:
        segments = [unquote(s, errors="strict") for s in safe.path.split("/")[1:]]
    except UnicodeDecodeError:
        raise RefusedName(f"blob URL path is not UTF-8 once decoded: {describe(raw)}") from None
    if segments[: len(home_segments)] != home_segments or len(segments) <= len(home_segments):
        raise RefusedUrl(f"{describe(raw)}: not in the QA container {container_url}")
    return check_blob_name("/".join(segments[len(home_segments) :]))


def chunk_path(start_time: str | None, server_call_id: str, recording_id: str, index: int, ext: str) -> str:
    """``YYYY/MM/DD/{serverCallId}/{recordingId}/chunk-NNN.{ext}``: every part checked or made safe."""
    if ext not in FORMAT_EXTENSIONS.values():
        raise RefusedName(f"extension {describe(ext)} is not one of {sorted(FORMAT_EXTENSIONS.values())}")
    if type(index) is not int or not 0 <= index < 100_000:
        raise RefusedName(f"chunk index {describe(index)} is not a number from 0 to 99999")
    when = _start_date(start_time)
    name = f"{when.year:04d}/{when.month:02d}/{when.day:02d}/{_safe(server_call_id)}/{_safe(recording_id)}"
    return check_blob_name(f"{name}/chunk-{index:03d}.{ext}")


def metadata_blob_name(path: str) -> str:
    """Where ACS's metadata document of the chunk at ``path`` is kept, beside it."""
    return _stem(path) + ".metadata.json"


def participant_blob_name(path: str, channel: int, role: str, participant: str) -> str:
    """The mono WAV of one channel of the chunk at ``path``, named by channel, role and participant id."""
    return _stem(path) + f"/participants/ch{channel}-{role}-{_safe(participant)}.wav"


def _safe(value: object) -> str:
    """One segment of a blob name from an id: never empty, never "." or ".." (dots alone become underscores)."""
    text = re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(value))[:120]
    return text if text.strip(".") else "_" * (len(text) or 1)


def _start_date(start_time: object) -> datetime:
    """The date folder's day: the recording's start time, or now when the event has none."""
    if start_time is None or start_time == "":
        return datetime.now(UTC)
    try:
        if not isinstance(start_time, str) or len(start_time) > 64:
            raise ValueError(start_time)
        return datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    except ValueError:
        raise RefusedName(f"recordingStartTime is not an ISO 8601 time: {describe(start_time)}") from None


def _stem(name: str) -> str:
    """A blob name without the extension of its last segment."""
    folder, _, last = name.rpartition("/")
    base = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
    return f"{folder}/{base}" if folder else base
