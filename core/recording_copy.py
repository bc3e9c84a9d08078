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


class RefusedUrl(Exception):
    """A recording URL outside the allow-list: never fetched, never sent credentials."""


class CopyFailed(Exception):
    """The copy could not be completed or verified; raise so that the event is delivered again."""


# -- where credentials may go -----------------------------------------------------------------------


class HostAllowList:
    """Host patterns (``*.asm.skype.com``, ``127.0.0.1``) a recording may be fetched from."""

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())

    def allows(self, url: str) -> bool:
        parsed = urlparse(url)
        host = (parsed.hostname or "").lower()
        if parsed.scheme not in ("https", "http") or not host:
            return False
        if parsed.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
            return False  # credentials never travel in clear text beyond this machine
        return any(fnmatch.fnmatchcase(host, p) for p in self.patterns)

    def check(self, url: str) -> None:
        if not self.allows(url):
            raise RefusedUrl(f"{urlparse(url).hostname or url!r} is not an allowed recording host")


# -- authentication to ACS's recording store -----------------------------------------------------------


class RecordingAuth:
    """Headers for a request to a recording URL: ACS's HMAC (access key) or an Entra token."""

    def __init__(self, endpoint: str, access_key: str | None = None, credential: Any = None) -> None:
        parsed = urlparse(endpoint)
        self._signed_host = parsed.netloc  # the resource's host, as the SDK signs it
        self._x_ms_host = parsed.hostname or ""
        self._key = base64.b64decode(access_key) if access_key else None
        self._credential = credential

    def headers(self, method: str, url: str) -> dict[str, str]:
        if self._key is None:
            token = self._credential.get_token(TOKEN_SCOPE).token
            return {"Authorization": f"Bearer {token}", "x-ms-host": self._x_ms_host}
        parsed = urlparse(url)
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        date = format_datetime(datetime.now(UTC), usegmt=True)
        content_hash = base64.b64encode(hashlib.sha256(b"").digest()).decode()
        to_sign = f"{method}\n{path}\n{date};{self._signed_host};{content_hash}"
        signature = base64.b64encode(hmac.new(self._key, to_sign.encode(), hashlib.sha256).digest()).decode()
        return {
            "x-ms-date": date,
            "x-ms-content-sha256": content_hash,
            "x-ms-host": self._x_ms_host,
            "Authorization": f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}",
        }


# -- reading a recording from ACS ------------------------------------------------------------------------


class ResumableDownload(io.RawIOBase):
    """A recording's bytes as a stream; a dropped connection resumes from where it broke (Range)."""

    def __init__(
        self, session: Any, url: str, auth: RecordingAuth, *, attempts: int = RESUME_ATTEMPTS, timeout: float = 60.0
    ) -> None:
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
        response = self._session.get(self._url, headers=headers, stream=True, timeout=self._timeout)
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


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", value)[:120]


def _tag(value: object) -> str:
    """Blob index tag values allow letters, digits, space and + - . / : = _ (256 characters)."""
    return re.sub(r"[^A-Za-z0-9 +\-./:=_]", "_", str(value))[:256]


def chunk_path(start_time: str | None, server_call_id: str, recording_id: str, index: int, ext: str) -> str:
    when = datetime.fromisoformat(start_time.replace("Z", "+00:00")) if start_time else datetime.now(UTC)
    return f"{when:%Y/%m/%d}/{_safe(server_call_id)}/{_safe(recording_id)}/chunk-{index:03d}.{ext}"


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
            from azure.core.exceptions import ResourceExistsError

            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            self._ensured = True

    def _get_json(self, url: str) -> dict[str, Any]:
        self.allow.check(url)
        response = self.session.get(url, headers=self.auth.headers("GET", url), timeout=30)
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
        """Copy one chunk (content + metadata, and the per-participant split); idempotent."""
        for url in (chunk.content_location, chunk.metadata_location, chunk.delete_location or ""):
            if url:
                self.allow.check(url)
        self._ensure_container()
        ext = (format_type or "wav").lower()
        recording = info.recording_id or chunk.document_id or "recording"
        path = chunk_path(start_time, info.server_call_id, recording, chunk.index, ext)
        content_blob = self.container.get_blob_client(path)
        done, props = is_verified(content_blob)
        if done:
            log.info("chunk %d already copied and verified at %s", chunk.index, path)
            meta = props.metadata
            result = ChunkResult(chunk.index, path, props.size, meta.get("sha256", ""), skipped=True)
            if self.delete_after_copy and chunk.delete_location and meta.get("deletedFromAcs") != "true":
                self._delete_and_mark(content_blob, chunk.delete_location)  # an earlier run died before deleting
                result.deleted_from_acs = True
            return result

        metadata_doc = self._get_json(chunk.metadata_location)
        participants = metadata_doc.get("participants") or []
        channel_of = {p.get("participantId"): p.get("channel") for p in participants if p.get("channel") is not None}
        unmixed = (channel_type or metadata_doc.get("recordingInfo", {}).get("channelType", "")).lower() == "unmixed"
        role_of = {raw: ("caller" if raw == info.caller else "participant") for raw in channel_of}

        # Constant memory: one pool for the blocks of every output of this chunk.
        gate = threading.BoundedSemaphore(MAX_BLOCKS_IN_FLIGHT)
        with ThreadPoolExecutor(max_workers=MAX_BLOCKS_IN_FLIGHT) as pool:
            content = BlockUploader(content_blob, pool=pool, gate=gate)
            split_outputs: dict[int, tuple[str, BlockUploader]] = {}

            make_output = self._participant_outputs(path, channel_of, role_of, pool, gate, split_outputs)
            splitter = WavSplitter(make_output) if (self.split and unmixed and ext == "wav") else None
            download = ResumableDownload(self.session, chunk.content_location, self.auth)
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
                "serverCallId": info.server_call_id,
                "recordingId": recording,
                "documentId": chunk.document_id,
                "chunkIndex": str(chunk.index),
                "callConnectionId": info.call_connection_id,
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
                            "participant": who,
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
        self.container.get_blob_client(path.rsplit(".", 1)[0] + ".metadata.json").upload_blob(
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
        if self.delete_after_copy and chunk.delete_location:
            self._delete_and_mark(content_blob, chunk.delete_location)
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
            name = path.rsplit(".", 1)[0] + f"/participants/ch{channel}-{role_of.get(who, 'unknown')}-{_safe(who)}.wav"
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

        Only blobs in the QA container are touched (the URL must point into it); nothing is
        downloaded from ACS and no ACS credential is used.
        """
        self._ensure_container()
        prefix = self.container.url.rstrip("/") + "/"
        for url in (chunk.content_location, chunk.metadata_location):
            if not url.split("?")[0].startswith(prefix):
                raise RefusedUrl(f"{urlparse(url).hostname or url!r}: not in the QA container {self.container.url}")
        name = unquote(chunk.content_location.split("?")[0][len(prefix) :])
        blob = self.container.get_blob_client(name)
        done, props = is_verified(blob)
        if done:
            log.info("chunk %d already verified in place at %s", chunk.index, name)
            return ChunkResult(chunk.index, name, props.size, props.metadata.get("sha256", ""), skipped=True)
        if props is None:
            raise CopyFailed(f"chunk {chunk.index}: {name} is not in the container (yet)")
        metadata_doc = json.loads(
            self.container.get_blob_client(unquote(chunk.metadata_location.split("?")[0][len(prefix) :]))
            .download_blob()
            .readall()
        )
        participants = metadata_doc.get("participants") or []
        channel_of = {p.get("participantId"): p.get("channel") for p in participants if p.get("channel") is not None}
        role_of = {raw: ("caller" if raw == info.caller else "participant") for raw in channel_of}
        unmixed = (channel_type or "").lower() == "unmixed"
        ext = (format_type or "wav").lower()
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
                            "serverCallId": info.server_call_id,
                            "channel": str(channel),
                            "participant": who,
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
                "serverCallId": info.server_call_id,
                "recordingId": recording,
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

    def _delete_and_mark(self, content_blob: Any, url: str) -> None:
        """Delete the recording at ACS; called only once the copy is verified."""
        self.allow.check(url)
        response = self.session.delete(url, headers=self.auth.headers("DELETE", url), timeout=30)
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
