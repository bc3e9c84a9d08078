"""Copying recordings from ACS into Blob Storage: streamed, verified, resumable, idempotent.

Memory stays constant whatever the size: the content is read from ACS in bounded pieces and
staged as blocks (each with its MD5, checked by the storage service) while it arrives; only the
final commit makes the blob visible, so a copy that dies midway never leaves a blob that looks
complete. The copy counts once its size matches what ACS announced and its SHA-256 is recorded
(``verified=true`` in the blob's metadata); a redelivered event finds that and does nothing.
Credentials go only to hosts on the allow-list from settings.

An unmixed WAV is also split, in the same pass, into one mono WAV per participant.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import io
import json
import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote, urlparse

log = logging.getLogger("core.recording_copy")

BLOCK_SIZE = 4 * 1024 * 1024
READ_SIZE = 1024 * 1024
MAX_BLOCKS_IN_FLIGHT = 6  # across all outputs of one copy: bounds memory (x BLOCK_SIZE) and sets parallelism
RESUME_ATTEMPTS = 5  # consecutive failures without progress
MAX_RESUMES = 8  # resumes in one download, however much each made progress
TOKEN_SCOPE = "https://communication.azure.com//.default"


class Refused(Exception):
    """Input the copy will not act on (a URL, a name): logged and acknowledged, never retried."""


class RefusedUrl(Refused):
    """A recording URL that is not, exactly and canonically, on the allow-list: never fetched, never sent
    credentials."""


class RefusedName(Refused):
    """An event field that would make a blob name outside the allowed shape (a traversal, an unknown format)."""


class CopyFailed(Exception):
    """The copy could not be completed or verified; raise so that the event is delivered again."""


# -- where credentials may go -----------------------------------------------------------------------
#
# One parse, by the parser the HTTP client uses (urllib3's ``parse_url``, which requests prepares every
# URL with), and only a URL already in its canonical form: what is checked is rebuilt from the checked
# parts, must equal the input character for character, and must come out of requests' own preparation
# unchanged. Anything a second parser could read differently (userinfo, backslashes, percent-encoding,
# non-ASCII, whitespace, fragments, odd ports or IP spellings) is refused before it is looked at twice.

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
MAX_URL_LENGTH = 2048
_URL_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SEGMENT = re.compile(r"[A-Za-z0-9._~=+,:-]+")  # one path segment, and one blob-name segment once decoded
_ENCODED_SEGMENT = re.compile(r"(?:[A-Za-z0-9._~=+,:-]|%[0-9A-F]{2})+")
_QUERY = re.compile(r"[A-Za-z0-9._~=&+,:-]+")
_ENCODED_QUERY = re.compile(r"(?:[A-Za-z0-9._~=&+,:/-]|%[0-9A-F]{2})+")  # a blob URL's (a SAS), never sent


@dataclass(frozen=True)
class SafeUrl:
    """A URL whose every part was checked; ``url`` is rebuilt from those parts and is what is sent."""

    scheme: str
    host: str
    port: int | None
    path: str
    query: str | None = None

    @property
    def url(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        query = "" if self.query is None else f"?{self.query}"
        return f"{self.scheme}://{self.host}{port}{self.path}{query}"

    @property
    def target(self) -> str:
        """The request target (path and query), as the server sees it and ACS's HMAC signs it."""
        return self.path + ("" if self.query is None else f"?{self.query}")

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (443 if self.scheme == "https" else 80)

    def __str__(self) -> str:
        return self.url


def _describe(raw: object) -> str:
    text = repr(raw)  # repr: no newline or control character of the input reaches a log line
    return text if len(text) <= 200 else text[:197] + "..."


def _valid_host(host: str) -> bool:
    """``[a-z0-9.-]`` labels of a DNS name (no IDNA ``xn--`` or other ``??--`` labels), a canonical dotted-quad
    IPv4 address, or a loopback name."""
    if host in LOOPBACK_HOSTS:
        return True
    if len(host) > 253:
        return False
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) and label[2:4] != "--" for label in labels):
        return False
    if labels[-1].isdigit():  # an address: only in its one canonical spelling (no 127.1, 0x7f.0.0.1, 0177...)
        import ipaddress

        try:
            return str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            return False
    return True


def parse_canonical(raw: object, *, encoded_path: bool = False) -> SafeUrl:
    """Parse a URL once, as urllib3 (and so requests) does, and accept it only in its canonical form.

    ``encoded_path`` allows percent-encoded octets in the path (blob URLs, which are never fetched, only
    read for a blob name; see ``blob_name_in_container``). Any failure, including the parser's own, is a
    ``RefusedUrl``.
    """
    if not isinstance(raw, str):
        raise RefusedUrl(f"not a URL: {_describe(raw)}")
    if not raw or len(raw) > MAX_URL_LENGTH:
        raise RefusedUrl(f"URL empty or longer than {MAX_URL_LENGTH} characters: {_describe(raw)}")
    if not raw.isascii() or not _URL_CHARS.fullmatch(raw):
        raise RefusedUrl(f"URL with whitespace, a control or a non-ASCII character: {_describe(raw)}")
    for char, what in (("\\", "a backslash"), ("@", "userinfo or an @"), ("#", "a fragment")):
        if char in raw:
            raise RefusedUrl(f"URL with {what}: {_describe(raw)}")
    if "%" in raw and not encoded_path:
        raise RefusedUrl(f"URL with percent-encoding: {_describe(raw)}")
    try:
        from urllib3.util import parse_url

        parsed = parse_url(raw)
    except Exception as exc:  # the parser's own failure is a refusal, never a crash
        raise RefusedUrl(f"unparsable URL ({type(exc).__name__}): {_describe(raw)}") from None
    scheme, host, port, path, query = parsed.scheme, parsed.host, parsed.port, parsed.path, parsed.query
    if parsed.auth is not None or parsed.fragment is not None:
        raise RefusedUrl(f"URL with userinfo or a fragment: {_describe(raw)}")
    if scheme not in ("https", "http"):
        raise RefusedUrl(f"URL scheme is not https: {_describe(raw)}")
    if not host or not _valid_host(host):
        raise RefusedUrl(f"URL host is not a plain lowercase name or address: {_describe(raw)}")
    if port is not None and not 0 < port < 65536:
        raise RefusedUrl(f"URL port out of range: {_describe(raw)}")
    segment = _ENCODED_SEGMENT if encoded_path else _SEGMENT
    segments = (path or "").split("/")
    if not path or segments[0] != "" or not all(segment.fullmatch(s) and s not in (".", "..") for s in segments[1:]):
        raise RefusedUrl(f"URL path empty, with an empty, dot or odd segment: {_describe(raw)}")
    if query is not None and not (_ENCODED_QUERY if encoded_path else _QUERY).fullmatch(query):
        raise RefusedUrl(f"URL query with odd characters: {_describe(raw)}")
    safe = SafeUrl(scheme, host, port, path, query)
    if safe.url != raw:
        raise RefusedUrl(f"URL not in canonical form (read as {safe.url!r}): {_describe(raw)}")
    return safe


def _sendable(safe: SafeUrl) -> SafeUrl:
    """The URL requests will send is the URL that was checked, character for character."""
    try:
        from requests.models import PreparedRequest

        prepared = PreparedRequest()
        prepared.prepare_url(safe.url, None)
        same = prepared.url == safe.url
    except Exception:
        same = False
    if not same:
        raise RefusedUrl(f"URL that requests would send differently: {safe.url!r}")
    return safe


@dataclass(frozen=True)
class _HostPattern:
    host: str
    port: int | None  # None: the default port (any port on a loopback host, as the simulator needs)

    @classmethod
    def parse(cls, text: str) -> _HostPattern:
        text = text.strip().lower()
        if text in ("::1", "[::1]"):
            return cls("[::1]", None)
        host, port = text, None
        if text.startswith("[") and "]:" in text:
            host, _, digits = text.rpartition(":")
            port = int(digits)
        elif text.count(":") == 1:
            host, _, digits = text.partition(":")
            port = int(digits)
        return cls(host, port)

    def matches(self, safe: SafeUrl) -> bool:
        if self.port is not None and safe.effective_port != self.port:
            return False
        if self.host.startswith("*.") and not any(c in self.host[2:] for c in "*?["):
            return safe.host.endswith(self.host[1:])  # at least one label before the suffix
        if any(c in self.host for c in "*?["):
            return fnmatch.fnmatchcase(safe.host, self.host)  # over a host already reduced to [a-z0-9.-]
        return safe.host == self.host


class HostAllowList:
    """Host patterns (``*.asm.skype.com``, ``127.0.0.1``, ``127.0.0.1:8090``) a recording may be fetched from.

    https only, on the default port; a loopback host (127.0.0.1, localhost, [::1]: the local simulator) may
    also be reached over http and on any port, unless its pattern names one.
    """

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())
        parsed = []
        for pattern in self.patterns:
            try:
                parsed.append(_HostPattern.parse(pattern))
            except ValueError:
                log.warning("recording host pattern %r ignored: not host or host:port", pattern)
        self._patterns = tuple(parsed)

    def check(self, url: object) -> SafeUrl:
        """The URL, checked and rebuilt from its checked parts; ``RefusedUrl`` otherwise."""
        safe = parse_canonical(url)
        loopback = safe.host in LOOPBACK_HOSTS
        if safe.scheme != "https" and not loopback:
            raise RefusedUrl(f"{safe.host!r}: credentials never travel in clear text beyond this machine")
        if not loopback and safe.port not in (None, 443):
            raise RefusedUrl(f"{safe.host!r}: port {safe.port} is not the default port")
        if not any(p.matches(safe) for p in self._patterns):
            raise RefusedUrl(f"{safe.host!r} is not an allowed recording host")
        return _sendable(safe)

    def allows(self, url: object) -> bool:
        try:
            self.check(url)
        except RefusedUrl:
            return False
        return True


def checked_url(raw: object, allow: HostAllowList) -> SafeUrl:
    """The one gate in front of every request that carries ACS credentials."""
    return allow.check(raw)


def recording_session() -> Any:
    """The requests session for recording hosts: no proxies from the environment, and never a redirect: the
    session finds no redirect target in any answer, every call passes ``allow_redirects=False`` too, and the
    copier refuses a 3xx (``_refuse_redirect``)."""
    import requests

    class NoRedirectSession(requests.Session):
        def get_redirect_target(self, resp: Any) -> None:
            return None

    session = NoRedirectSession()
    session.trust_env = False  # recording downloads carry credentials: no proxies from the environment
    return session


def _refuse_redirect(response: Any, safe: SafeUrl) -> None:
    if 300 <= response.status_code < 400:
        status, location = response.status_code, response.headers.get("Location", "")
        response.close()
        raise RefusedUrl(f"{safe.url} answered {status} to {_describe(location)}: redirects are never followed")


# -- authentication to ACS's recording store -----------------------------------------------------------


class RecordingAuth:
    """Headers for a request to a recording URL: ACS's HMAC (access key) or an Entra token."""

    def __init__(self, endpoint: str, access_key: str | None = None, credential: Any = None) -> None:
        parsed = urlparse(endpoint)
        self._signed_host = parsed.netloc  # the resource's host, as the SDK signs it
        self._x_ms_host = parsed.hostname or ""
        self._key = base64.b64decode(access_key) if access_key else None
        self._credential = credential

    def headers(self, method: str, url: SafeUrl | str) -> dict[str, str]:
        """For a ``SafeUrl`` (the copier passes nothing else); a string (tools) is parsed the one strict way."""
        safe = url if isinstance(url, SafeUrl) else parse_canonical(url)
        if self._key is None:
            token = self._credential.get_token(TOKEN_SCOPE).token
            return {"Authorization": f"Bearer {token}", "x-ms-host": self._x_ms_host}
        date = format_datetime(datetime.now(UTC), usegmt=True)
        content_hash = base64.b64encode(hashlib.sha256(b"").digest()).decode()
        to_sign = f"{method}\n{safe.target}\n{date};{self._signed_host};{content_hash}"
        signature = base64.b64encode(hmac.new(self._key, to_sign.encode(), hashlib.sha256).digest()).decode()
        return {
            "x-ms-date": date,
            "x-ms-content-sha256": content_hash,
            "x-ms-host": self._x_ms_host,
            "Authorization": f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}",
        }


# -- blob names ----------------------------------------------------------------------------------------------
#
# Every name built from an event is made of [A-Za-z0-9._~=+,:-] segments joined by "/", with no empty,
# "." or ".." segment; extensions come from a fixed set. A name that would not be is refused.

FORMAT_EXTENSIONS = {"wav": "wav", "mp3": "mp3", "mp4": "mp4"}  # ACS's recordingFormatType (any case) -> extension
MAX_BLOB_NAME = 1024


def format_extension(format_type: object) -> str:
    """The file extension for ACS's ``recordingFormatType``: wav when absent (as before); any value ACS does not
    document is refused rather than guessed, so that a forged or changed event is noticed, not written."""
    if format_type is None or format_type == "":
        return "wav"
    ext = FORMAT_EXTENSIONS.get(format_type.lower()) if isinstance(format_type, str) else None
    if ext is None:
        raise RefusedName(f"unknown recordingFormatType {_describe(format_type)}")
    return ext


def check_blob_name(name: str) -> str:
    segments = name.split("/")
    if (
        not name
        or len(name) > MAX_BLOB_NAME
        or not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments)
    ):
        raise RefusedName(f"blob name with an empty, dot or odd segment: {_describe(name)}")
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
        raise RefusedName(f"blob URL path is not UTF-8 once decoded: {_describe(raw)}") from None
    if segments[: len(home_segments)] != home_segments or len(segments) <= len(home_segments):
        raise RefusedUrl(f"{_describe(raw)}: not in the QA container {container_url}")
    return check_blob_name("/".join(segments[len(home_segments) :]))


# -- reading a recording from ACS ------------------------------------------------------------------------


class ResumableDownload(io.RawIOBase):
    """A recording's bytes as a stream; a dropped connection resumes from where it broke (Range)."""

    def __init__(
        self, session: Any, url: SafeUrl, auth: RecordingAuth, *, attempts: int = RESUME_ATTEMPTS, timeout: float = 60.0
    ) -> None:
        if not isinstance(url, SafeUrl):
            raise TypeError("ResumableDownload takes a checked SafeUrl (HostAllowList.check)")
        self._session = session
        self._url = url
        self._auth = auth
        self._attempts = attempts
        self._timeout = timeout
        self._response: Any = None
        self.offset = 0
        self.size: int | None = None
        self.resumes = 0

    def _open(self) -> None:
        headers = self._auth.headers("GET", self._url)
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        response = self._session.get(
            self._url.url, headers=headers, stream=True, timeout=self._timeout, allow_redirects=False
        )
        _refuse_redirect(response, self._url)
        if response.status_code not in (200, 206):
            status = response.status_code
            response.close()
            raise CopyFailed(f"GET {self._url} answered {status}")
        if self.offset and response.status_code != 206:
            response.close()
            raise CopyFailed("the recording host ignored the Range header on resume")
        if response.status_code == 206:
            m = re.match(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != self.offset:
                response.close()
                raise CopyFailed(f"resumed at the wrong offset: {response.headers.get('Content-Range')!r}")
            self.size = int(m.group(2))
        elif response.headers.get("Content-Length"):
            self.size = int(response.headers["Content-Length"])
        self._response = response

    def readable(self) -> bool:
        return True

    def read(self, n: int = READ_SIZE) -> bytes:  # type: ignore[override]
        import requests
        import urllib3

        failures = 0
        while True:
            if self.size is not None and self.offset >= self.size:
                return b""
            try:
                if self._response is None:
                    self._open()
                data = self._response.raw.read(n)
                if not data:
                    if self.size is None or self.offset >= self.size:
                        return b""
                    raise urllib3.exceptions.ProtocolError("connection closed early")
                self.offset += len(data)
                return data
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                failures += 1
                self.close_response()
                if failures > self._attempts or self.resumes >= MAX_RESUMES:
                    raise CopyFailed(f"download kept failing at byte {self.offset}: {exc}") from exc
                self.resumes += 1
                log.warning("recording download broke at byte %d (%s); resuming", self.offset, exc)
                time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))

    def close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self.close_response()
        super().close()


# -- writing to Blob Storage -----------------------------------------------------------------------------


def _block_id(index: int) -> str:
    return base64.b64encode(f"block-{index:08d}".encode()).decode()


class BlockUploader:
    """A write-only stream into a block blob: blocks are staged as they fill (several in parallel, each
    with its MD5 checked by the service), and nothing is visible until ``commit``.

    ``gate`` bounds the blocks in flight across every uploader sharing it: that, and one partly
    filled block per uploader, is all the memory a copy holds, whatever the recording's size.
    """

    def __init__(
        self,
        blob: Any,
        *,
        block_size: int = BLOCK_SIZE,
        pool: ThreadPoolExecutor | None = None,
        gate: threading.BoundedSemaphore | None = None,
        digest: bool = True,
    ) -> None:
        self._blob = blob
        self._block_size = block_size
        self._parts: list[bytes] = []
        self._buffered = 0
        self._ids: list[str] = []
        self._pool = pool
        self._gate = gate or threading.BoundedSemaphore(MAX_BLOCKS_IN_FLIGHT)
        self._inflight: list[Future[None]] = []
        self.size = 0
        self.sha256 = hashlib.sha256() if digest else None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= self._block_size:
            joined = b"".join(self._parts)
            cut = len(joined) - len(joined) % self._block_size
            for offset in range(0, cut, self._block_size):
                self._stage(joined[offset : offset + self._block_size])
            rest = joined[cut:]
            self._parts = [rest] if rest else []
            self._buffered = len(rest)

    def _stage(self, block: bytes) -> None:
        block_id = _block_id(len(self._ids))
        self._ids.append(block_id)
        if self._pool is None:
            self._blob.stage_block(block_id, block, validate_content=True)
            return
        self._gate.acquire()  # waits while the shared limit of blocks in flight is reached
        try:
            future = self._pool.submit(self._blob.stage_block, block_id, block, validate_content=True)
        except BaseException:
            self._gate.release()
            raise
        future.add_done_callback(lambda _f: self._gate.release())
        # Keep the blocks still going and any that failed; a failure surfaces here, not only at commit.
        self._inflight = [f for f in [*self._inflight, future] if not f.done() or f.exception() is not None]
        for done in self._inflight:
            if done.done():
                done.result()

    def commit(self, *, metadata: dict[str, str], tags: dict[str, str], content_type: str) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        if self._parts or not self._ids:
            self._stage(b"".join(self._parts))
            self._parts, self._buffered = [], 0
        for future in self._inflight:
            future.result()
        self._inflight.clear()
        self._blob.commit_block_list(
            [BlobBlock(block_id=i) for i in self._ids],
            metadata=metadata,
            tags=tags,
            content_settings=ContentSettings(content_type=content_type),
        )


# -- splitting unmixed audio -------------------------------------------------------------------------------


@dataclass
class WavFormat:
    channels: int
    sample_width: int
    rate: int
    data_size: int


class WavSplitter:
    """Reads an interleaved WAV as it streams by and writes each channel to its own mono WAV."""

    def __init__(self, make_output: Callable[[int, WavFormat], Any]) -> None:
        self._make_output = make_output
        self._head = bytearray()
        self._format: WavFormat | None = None
        self._outputs: list[Any] = []
        self._pending = bytearray()
        self._data_left = 0
        self.failed: str | None = None

    @property
    def format(self) -> WavFormat | None:
        return self._format

    def feed(self, data: bytes) -> None:
        if self.failed:
            return
        if self._format is None:
            self._head += data
            parsed = self._parse_header()
            if parsed is None:
                return
            fmt, offset = parsed
            self._start(fmt)
            data = bytes(self._head[offset:])
            self._head.clear()
        self._write_frames(data)

    def _parse_header(self) -> tuple[WavFormat, int] | None:
        head = self._head
        if len(head) < 12:
            return None
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            self.failed = "not a RIFF/WAVE file"
            return None
        pos, fmt_info = 12, None
        while len(head) >= pos + 8:
            chunk_id, chunk_size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
            if chunk_id == b"data":
                if fmt_info is None:
                    self.failed = "data chunk before fmt chunk"
                    return None
                channels, rate, width = fmt_info
                return WavFormat(channels, width, rate, chunk_size), pos + 8
            if len(head) < pos + 8 + chunk_size:
                return None
            if chunk_id == b"fmt ":
                audio_format, channels, rate = struct.unpack("<HHI", head[pos + 8 : pos + 16])
                bits = struct.unpack("<H", head[pos + 22 : pos + 24])[0]
                if audio_format != 1 or bits != 16:
                    self.failed = f"only 16-bit PCM can be split (format {audio_format}, {bits} bits)"
                    return None
                fmt_info = (channels, rate, bits // 8)
            pos += 8 + chunk_size + (chunk_size & 1)
        return None

    def _start(self, fmt: WavFormat) -> None:
        self._format = fmt
        self._data_left = fmt.data_size
        frames = fmt.data_size // (fmt.channels * fmt.sample_width)
        for channel in range(fmt.channels):
            output = self._make_output(channel, fmt)
            header = pcm_wav_header(1, fmt.sample_width, fmt.rate, frames)
            output.write(header)
            self._outputs.append(output)

    def _write_frames(self, data: bytes) -> None:
        assert self._format is not None
        data = data[: self._data_left]
        self._data_left -= len(data)
        frame = self._format.channels * self._format.sample_width
        if self._pending:
            self._pending += data
            data = bytes(self._pending)
            self._pending.clear()
        usable = len(data) - len(data) % frame
        if usable < len(data):
            self._pending += data[usable:]  # a frame split across reads waits for its other half
        if not usable:
            return
        frames = memoryview(data)[:usable].cast("h")
        channels = self._format.channels
        for channel, output in enumerate(self._outputs):
            output.write(frames[channel::channels].tobytes())


def pcm_wav_header(channels: int, sample_width: int, rate: int, frames: int) -> bytes:
    """The 44-byte header of a PCM WAV whose size is known before its samples are (stdlib ``wave``
    only writes a header together with the frames, and patches it on close when they differ)."""
    data = frames * channels * sample_width
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data,
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        rate,
        rate * channels * sample_width,
        channels * sample_width,
        sample_width * 8,
        b"data",
        data,
    )


# -- the copy ----------------------------------------------------------------------------------------------


@dataclass
class CallInfo:
    """What the app knows of the recorded call (from its state), for names and tags."""

    server_call_id: str
    recording_id: str = ""
    caller: str = ""
    call_connection_id: str = ""


@dataclass
class ChunkResult:
    index: int
    blob: str
    size: int
    sha256: str
    skipped: bool = False
    resumes: int = 0
    participants: list[str] = field(default_factory=list)
    deleted_from_acs: bool = False


def _safe(value: object) -> str:
    """One segment of a blob name from an id: never empty, never "." or ".." (dots alone become underscores)."""
    text = re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(value))[:120]
    return text if text.strip(".") else "_" * (len(text) or 1)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _meta(value: object) -> str:
    """A blob metadata value (an HTTP header): printable ASCII only."""
    return re.sub(r"[^ -~]", "_", str(value))[:1024]


def _tag(value: object) -> str:
    """Blob index tag values allow letters, digits, space and + - . / : = _ (256 characters)."""
    return re.sub(r"[^A-Za-z0-9 +\-./:=_]", "_", str(value))[:256]


def _start_date(start_time: object) -> datetime:
    if start_time is None or start_time == "":
        return datetime.now(UTC)
    try:
        if not isinstance(start_time, str) or len(start_time) > 64:
            raise ValueError(start_time)
        return datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    except ValueError:
        raise RefusedName(f"recordingStartTime is not an ISO 8601 time: {_describe(start_time)}") from None


def chunk_path(start_time: str | None, server_call_id: str, recording_id: str, index: int, ext: str) -> str:
    """``YYYY/MM/DD/{serverCallId}/{recordingId}/chunk-NNN.{ext}``: every part checked or made safe."""
    if ext not in FORMAT_EXTENSIONS.values():
        raise RefusedName(f"extension {_describe(ext)} is not one of {sorted(FORMAT_EXTENSIONS.values())}")
    if type(index) is not int or not 0 <= index < 100_000:
        raise RefusedName(f"chunk index {_describe(index)} is not a number from 0 to 99999")
    when = _start_date(start_time)
    name = f"{when.year:04d}/{when.month:02d}/{when.day:02d}/{_safe(server_call_id)}/{_safe(recording_id)}"
    return check_blob_name(f"{name}/chunk-{index:03d}.{ext}")


def _stem(name: str) -> str:
    """A blob name without the extension of its last segment."""
    folder, _, last = name.rpartition("/")
    base = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
    return f"{folder}/{base}" if folder else base


def is_verified(blob: Any) -> tuple[bool, Any]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        return False, None
    metadata = props.metadata or {}
    return metadata.get("verified") == "true" and str(props.size) == metadata.get("size"), props


class RecordingCopier:
    def __init__(
        self,
        *,
        container: Any,
        session: Any,
        auth: RecordingAuth,
        allow: HostAllowList,
        delete_after_copy: bool = False,
        split: bool = True,
    ) -> None:
        self.container = container
        self.session = session
        self.auth = auth
        self.allow = allow
        self.delete_after_copy = delete_after_copy
        self.split = split
        self._ensured = False

    def _ensure_container(self) -> None:
        if not self._ensured:
            from ..state import provisioned

            try:
                self.container.create_container()
            except Exception as exc:
                if not provisioned(exc):
                    raise
            self._ensured = True

    def _get_json(self, url: SafeUrl) -> dict[str, Any]:
        response = self.session.get(url.url, headers=self.auth.headers("GET", url), timeout=30, allow_redirects=False)
        _refuse_redirect(response, url)
        if response.status_code != 200:
            raise CopyFailed(f"GET {url} answered {response.status_code}")
        return response.json()

    def copy_chunk(
        self,
        chunk: Any,
        info: CallInfo,
        *,
        start_time: str | None,
        channel_type: str | None,
        format_type: str | None,
        duration_ms: int | None,
    ) -> ChunkResult:
        """Copy one chunk (content + metadata, and the per-participant split); idempotent.

        Every URL is checked before anything is fetched or written, and only the checked URLs are used.
        """
        content_url = self.allow.check(chunk.content_location)
        metadata_url = self.allow.check(chunk.metadata_location)
        delete_url = self.allow.check(chunk.delete_location) if chunk.delete_location else None
        ext = format_extension(format_type)
        recording = info.recording_id or chunk.document_id or "recording"
        path = chunk_path(start_time, info.server_call_id, recording, chunk.index, ext)
        self._ensure_container()
        content_blob = self.container.get_blob_client(path)
        done, props = is_verified(content_blob)
        if done:
            log.info("chunk %d already copied and verified at %s", chunk.index, path)
            meta = props.metadata
            result = ChunkResult(chunk.index, path, props.size, meta.get("sha256", ""), skipped=True)
            if self.delete_after_copy and delete_url and meta.get("deletedFromAcs") != "true":
                self._delete_and_mark(content_blob, delete_url)  # an earlier run died before deleting
                result.deleted_from_acs = True
            return result

        metadata_doc = self._get_json(metadata_url)
        participants = metadata_doc.get("participants") or []
        channel_of = {p.get("participantId"): p.get("channel") for p in participants if p.get("channel") is not None}
        channel = _text(channel_type) or _text((metadata_doc.get("recordingInfo") or {}).get("channelType"))
        unmixed = channel.lower() == "unmixed"
        role_of = {raw: ("caller" if raw == info.caller else "participant") for raw in channel_of}

        # Constant memory: one pool for the blocks of every output of this chunk.
        gate = threading.BoundedSemaphore(MAX_BLOCKS_IN_FLIGHT)
        with ThreadPoolExecutor(max_workers=MAX_BLOCKS_IN_FLIGHT) as pool:
            content = BlockUploader(content_blob, pool=pool, gate=gate)
            split_outputs: dict[int, tuple[str, BlockUploader]] = {}

            make_output = self._participant_outputs(path, channel_of, role_of, pool, gate, split_outputs)
            splitter = WavSplitter(make_output) if (self.split and unmixed and ext == "wav") else None
            download = ResumableDownload(self.session, content_url, self.auth)
            try:
                for block in iter(lambda: download.read(READ_SIZE), b""):
                    content.write(block)
                    if splitter is not None:
                        splitter.feed(block)
            finally:
                download.close()
            if download.size is not None and content.size != download.size:
                raise CopyFailed(f"chunk {chunk.index}: copied {content.size} bytes of {download.size}")
            digest = content.sha256.hexdigest()
            tags = {
                "serverCallId": _tag(info.server_call_id),
                "recordingId": _tag(recording),
                "chunk": str(chunk.index),
                "startTime": _tag(start_time or ""),
                "durationMs": _tag(duration_ms if duration_ms is not None else ""),
                "format": _tag(ext),
                "channelType": _tag(channel_type or ""),
                "channels": str(len(channel_of) or 1),
                "participants": _tag(
                    ",".join(channel_of) or ",".join(p.get("participantId", "") for p in participants)
                ),
            }
            base_metadata = {
                "serverCallId": _meta(info.server_call_id),
                "recordingId": _meta(recording),
                "documentId": _meta(chunk.document_id),
                "chunkIndex": str(chunk.index),
                "callConnectionId": _meta(info.call_connection_id),
                "channelMap": json.dumps(channel_of, separators=(",", ":")),
            }
            content.commit(
                metadata={**base_metadata, "size": str(content.size), "sha256": digest},
                tags=tags,
                content_type="audio/wav" if ext == "wav" else "application/octet-stream",
            )
            participant_blobs = []
            if splitter is not None and splitter.failed is None and splitter.format is not None:
                for channel, (name, uploader) in sorted(split_outputs.items()):
                    who = next((raw for raw, ch in channel_of.items() if ch == channel), "")
                    uploader.commit(
                        metadata={
                            **base_metadata,
                            "channel": str(channel),
                            "participant": _meta(who),
                            "role": role_of.get(who, "unknown"),
                            "size": str(uploader.size),
                        },
                        tags={
                            **{
                                k: v for k, v in tags.items() if k not in ("participants", "channels")
                            },  # 10 tags at most
                            "participant": _tag(who),
                            "channel": str(channel),
                        },
                        content_type="audio/wav",
                    )
                    participant_blobs.append(name)
            elif splitter is not None:
                log.warning("chunk %d not split: %s", chunk.index, splitter.failed)

        # Verify, then mark: only now does the copy count.
        stored = content_blob.get_blob_properties()
        if stored.size != content.size or (download.size is not None and stored.size != download.size):
            raise CopyFailed(f"chunk {chunk.index}: stored {stored.size} bytes, expected {download.size}")
        self.container.get_blob_client(_stem(path) + ".metadata.json").upload_blob(
            json.dumps(metadata_doc, indent=2).encode(), overwrite=True, metadata=base_metadata
        )
        for name, uploader in split_outputs.values():
            marked = self.container.get_blob_client(name)
            if marked.get_blob_properties().size != uploader.size:
                raise CopyFailed(f"{name}: stored size differs from what was written")
            marked.set_blob_metadata({**marked.get_blob_properties().metadata, "verified": "true"})
        content_blob.set_blob_metadata({**stored.metadata, "verified": "true"})
        result = ChunkResult(
            chunk.index, path, content.size, digest, resumes=download.resumes, participants=participant_blobs
        )
        if self.delete_after_copy and delete_url:
            self._delete_and_mark(content_blob, delete_url)
            result.deleted_from_acs = True
        log.info(
            "chunk %d copied to %s (%d bytes, sha256 %s, %d resume(s))",
            chunk.index,
            path,
            content.size,
            digest[:12],
            download.resumes,
        )
        return result

    def _participant_outputs(
        self,
        path: str,
        channel_of: dict[str, int],
        role_of: dict[str, str],
        pool: Any,
        gate: threading.BoundedSemaphore,
        outputs: dict[int, tuple[str, BlockUploader]],
    ) -> Callable[[int, WavFormat], Any]:
        """The splitter's factory: one mono WAV per channel, named by channel, role and participant id."""

        def make_output(channel: int, fmt: WavFormat) -> BlockUploader:
            who = next((raw for raw, ch in channel_of.items() if ch == channel), f"channel-{channel}")
            name = _stem(path) + f"/participants/ch{channel}-{role_of.get(who, 'unknown')}-{_safe(who)}.wav"
            # Derived audio: its blocks are MD5-checked by the service; no SHA-256 of its own (CPU is the limit here).
            uploader = BlockUploader(self.container.get_blob_client(name), pool=pool, gate=gate, digest=False)
            outputs[channel] = (name, uploader)
            return uploader

        return make_output

    def index_in_place(
        self,
        chunk: Any,
        info: CallInfo,
        *,
        start_time: str | None,
        channel_type: str | None,
        format_type: str | None,
        duration_ms: int | None,
    ) -> ChunkResult:
        """Bring your own storage: ACS wrote the chunk into our container; verify it, tag it, split it.

        Only blobs in the QA container are touched (each URL must name one, see ``blob_name_in_container``);
        nothing is downloaded from ACS and no ACS credential is used.
        """
        name = blob_name_in_container(chunk.content_location, self.container.url)
        metadata_name = blob_name_in_container(chunk.metadata_location, self.container.url)
        ext = format_extension(format_type)
        self._ensure_container()
        blob = self.container.get_blob_client(name)
        done, props = is_verified(blob)
        if done:
            log.info("chunk %d already verified in place at %s", chunk.index, name)
            return ChunkResult(chunk.index, name, props.size, props.metadata.get("sha256", ""), skipped=True)
        if props is None:
            raise CopyFailed(f"chunk {chunk.index}: {name} is not in the container (yet)")
        metadata_doc = json.loads(self.container.get_blob_client(metadata_name).download_blob().readall())
        participants = metadata_doc.get("participants") or []
        channel_of = {p.get("participantId"): p.get("channel") for p in participants if p.get("channel") is not None}
        role_of = {raw: ("caller" if raw == info.caller else "participant") for raw in channel_of}
        unmixed = _text(channel_type).lower() == "unmixed"
        digest = hashlib.sha256()
        read = 0
        gate = threading.BoundedSemaphore(MAX_BLOCKS_IN_FLIGHT)
        outputs: dict[int, tuple[str, BlockUploader]] = {}
        with ThreadPoolExecutor(max_workers=MAX_BLOCKS_IN_FLIGHT) as pool:
            make_output = self._participant_outputs(name, channel_of, role_of, pool, gate, outputs)
            splitter = WavSplitter(make_output) if (self.split and unmixed and ext == "wav") else None
            # Read once, in pieces: the checksum, the size and the split come from the same pass.
            for piece in blob.download_blob(etag=props.etag, match_condition=_if_unmodified()).chunks():
                digest.update(piece)
                read += len(piece)
                if splitter is not None:
                    splitter.feed(piece)
            if read != props.size:
                raise CopyFailed(f"chunk {chunk.index}: read {read} bytes of {props.size}")
            if splitter is not None and splitter.format is not None and splitter.failed is None:
                expected = splitter.format.data_size
                if read < expected:
                    raise CopyFailed(
                        f"chunk {chunk.index}: the WAV says {expected} bytes of audio, the blob is shorter"
                    )
                for channel, (_name, uploader) in sorted(outputs.items()):
                    who = next((raw for raw, ch in channel_of.items() if ch == channel), "")
                    uploader.commit(
                        metadata={
                            "serverCallId": _meta(info.server_call_id),
                            "channel": str(channel),
                            "participant": _meta(who),
                            "role": role_of.get(who, "unknown"),
                            "size": str(uploader.size),
                            "verified": "true",
                        },
                        tags={
                            "serverCallId": _tag(info.server_call_id),
                            "chunk": str(chunk.index),
                            "participant": _tag(who),
                            "channel": str(channel),
                            "format": "wav",
                        },
                        content_type="audio/wav",
                    )
        recording = info.recording_id or chunk.document_id or "recording"
        blob.set_blob_tags(
            {
                "serverCallId": _tag(info.server_call_id),
                "recordingId": _tag(recording),
                "chunk": str(chunk.index),
                "startTime": _tag(start_time or ""),
                "durationMs": _tag(duration_ms if duration_ms is not None else ""),
                "format": _tag(ext),
                "channelType": _tag(channel_type or ""),
                "channels": str(len(channel_of) or 1),
                "participants": _tag(",".join(channel_of)),
                "storage": "byos",
            }
        )
        blob.set_blob_metadata(
            {
                **(props.metadata or {}),
                "serverCallId": _meta(info.server_call_id),
                "recordingId": _meta(recording),
                "chunkIndex": str(chunk.index),
                "channelMap": json.dumps(channel_of, separators=(",", ":")),
                "size": str(read),
                "sha256": digest.hexdigest(),
                "verified": "true",
            },
            etag=props.etag,
            match_condition=_if_unmodified(),
        )
        log.info("chunk %d verified in place at %s (%d bytes)", chunk.index, name, read)
        return ChunkResult(chunk.index, name, read, digest.hexdigest(), participants=[o for o, _ in outputs.values()])

    def _delete_and_mark(self, content_blob: Any, url: SafeUrl) -> None:
        """Delete the recording at ACS; called only once the copy is verified."""
        response = self.session.delete(
            url.url, headers=self.auth.headers("DELETE", url), timeout=30, allow_redirects=False
        )
        _refuse_redirect(response, url)
        if response.status_code not in (200, 202, 204, 404):
            raise CopyFailed(f"DELETE {url} answered {response.status_code}")
        metadata = content_blob.get_blob_properties().metadata
        content_blob.set_blob_metadata({**metadata, "deletedFromAcs": "true"})


def _if_unmodified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def iter_blocks(stream: Any, size: int = READ_SIZE) -> Iterator[bytes]:
    while True:
        block = stream.read(size)
        if not block:
            return
        yield block
