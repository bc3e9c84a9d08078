"""Copying one recording chunk into the QA container: streamed, split per participant, verified; idempotent.

Memory stays constant whatever the size: the content is read from ACS in bounded pieces and staged as blocks
while it arrives; only the final commit makes the blob visible, so a copy that dies midway never leaves a blob
that looks complete. The copy counts once its size matches what ACS announced and its SHA-256 is recorded
(``verified=true`` in the blob's metadata); a redelivered event finds that and does nothing. With
bring-your-own-storage ACS has written the chunk into the container already: it is read, split and tagged there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .auth import RecordingAuth
from .download import READ_SIZE, ResumableDownload
from .errors import CopyFailed
from .names import blob_name_in_container, chunk_path, format_extension, metadata_blob_name, participant_blob_name
from .upload import MAX_BLOCKS_IN_FLIGHT, BlockUploader
from .urls import HostAllowList, SafeUrl, refuse_redirect
from .wav import WavFormat, WavSplitter

log = logging.getLogger("core.recordings")


@dataclass
class CallInfo:
    """What the app knows of the recorded call (from its state), for names and tags."""

    server_call_id: str
    recording_id: str = ""
    caller: str = ""
    call_connection_id: str = ""


@dataclass
class ChunkResult:
    """What became of one chunk: its blob, size and SHA-256, and what else was done or found done."""

    index: int
    blob: str
    size: int
    sha256: str
    skipped: bool = False
    resumes: int = 0
    participants: list[str] = field(default_factory=list)
    deleted_from_acs: bool = False


@dataclass(frozen=True)
class Channels:
    """Who is on which channel of the recording, and as what, from ACS's metadata document."""

    participants: list[Any]
    channel_of: dict[str, int]
    role_of: dict[str, str]

    @classmethod
    def of(cls, metadata_doc: dict[str, Any], caller: str) -> Channels:
        participants = metadata_doc.get("participants") or []
        channel_of = {p.get("participantId"): p.get("channel") for p in participants if p.get("channel") is not None}
        role_of = {raw: ("caller" if raw == caller else "participant") for raw in channel_of}
        return cls(participants, channel_of, role_of)

    def who(self, channel: int, default: str = "") -> str:
        """The participant id on ``channel``."""
        return next((raw for raw, ch in self.channel_of.items() if ch == channel), default)

    def role(self, who: str) -> str:
        return self.role_of.get(who, "unknown")

    @property
    def map_json(self) -> str:
        return json.dumps(self.channel_of, separators=(",", ":"))


@dataclass(frozen=True)
class ChunkFields:
    """One chunk as the event and the call's state describe it: what its names and tags are made of."""

    index: int
    document_id: str
    info: CallInfo
    start_time: str | None
    channel_type: str | None
    duration_ms: int | None
    ext: str

    @property
    def recording(self) -> str:
        return self.info.recording_id or self.document_id or "recording"

    def tags(self, channels: Channels, participants: str) -> dict[str, str]:
        """The chunk's blob index tags (a blob has 10 at most)."""
        return {
            "serverCallId": _tag(self.info.server_call_id),
            "recordingId": _tag(self.recording),
            "chunk": str(self.index),
            "startTime": _tag(self.start_time or ""),
            "durationMs": _tag(self.duration_ms if self.duration_ms is not None else ""),
            "format": _tag(self.ext),
            "channelType": _tag(self.channel_type or ""),
            "channels": str(len(channels.channel_of) or 1),
            "participants": _tag(participants),
        }


class ParticipantSplit:
    """One mono WAV blob per channel of an unmixed chunk, written as the chunk streams by."""

    def __init__(
        self, container: Any, path: str, channels: Channels, pool: ThreadPoolExecutor, gate: threading.BoundedSemaphore
    ) -> None:
        self._container = container
        self._path = path
        self._channels = channels
        self._pool = pool
        self._gate = gate
        self.outputs: dict[int, tuple[str, BlockUploader]] = {}
        self.splitter = WavSplitter(self._output)

    def _output(self, channel: int, fmt: WavFormat) -> BlockUploader:
        """The splitter's factory: one mono WAV per channel, named by channel, role and participant id."""
        who = self._channels.who(channel, f"channel-{channel}")
        name = participant_blob_name(self._path, channel, self._channels.role(who), who)
        # Derived audio: its blocks are MD5-checked by the service; no SHA-256 of its own (CPU is the limit here).
        uploader = BlockUploader(self._container.get_blob_client(name), pool=self._pool, gate=self._gate, digest=False)
        self.outputs[channel] = (name, uploader)
        return uploader

    def feed(self, data: bytes) -> None:
        self.splitter.feed(data)

    @property
    def complete(self) -> bool:
        """The WAV's header was read and its audio can be split (16-bit PCM)."""
        return self.splitter.failed is None and self.splitter.format is not None

    def commit(self, *, metadata: dict[str, str], tags: dict[str, str]) -> list[str]:
        """Make each participant's WAV visible, labelled with its channel, participant and role; their names."""
        names = []
        for channel, (name, uploader) in sorted(self.outputs.items()):
            who = self._channels.who(channel)
            uploader.commit(
                metadata={
                    **metadata,
                    "channel": str(channel),
                    "participant": _meta(who),
                    "role": self._channels.role(who),
                    "size": str(uploader.size),
                },
                tags={**tags, "participant": _tag(who), "channel": str(channel)},
                content_type="audio/wav",
            )
            names.append(name)
        return names


@dataclass
class _Written:
    """What one pass over a chunk from ACS wrote, for the checks that make it count."""

    content: BlockUploader
    download: ResumableDownload
    digest: str
    metadata: dict[str, str]
    outputs: dict[int, tuple[str, BlockUploader]]
    participants: list[str]


class RecordingCopier:
    """Copies recording chunks from ACS into the QA container, or indexes them where ACS wrote them (byos)."""

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
            from core.platform.tables import create_if_missing

            create_if_missing(self.container.create_container)
            self._ensured = True

    def _get_json(self, url: SafeUrl) -> dict[str, Any]:
        response = self.session.get(url.url, headers=self.auth.headers("GET", url), timeout=30, allow_redirects=False)
        refuse_redirect(response, url)
        if response.status_code != 200:
            raise CopyFailed(f"GET {url} answered {response.status_code}")
        return response.json()

    def _split(
        self,
        path: str,
        channels: Channels,
        pool: ThreadPoolExecutor,
        gate: threading.BoundedSemaphore,
        *,
        unmixed: bool,
        ext: str,
    ) -> ParticipantSplit | None:
        """The per-participant split of an unmixed WAV when splitting is on; None otherwise."""
        if not (self.split and unmixed and ext == "wav"):
            return None
        return ParticipantSplit(self.container, path, channels, pool, gate)

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
        fields = ChunkFields(
            chunk.index, chunk.document_id, info, start_time, channel_type, duration_ms, format_extension(format_type)
        )
        path = chunk_path(start_time, info.server_call_id, fields.recording, chunk.index, fields.ext)
        self._ensure_container()
        content_blob = self.container.get_blob_client(path)
        done, props = is_verified(content_blob)
        if done:
            return self._already_copied(content_blob, props, path, chunk.index, delete_url)

        metadata_doc = self._get_json(metadata_url)
        channels = Channels.of(metadata_doc, info.caller)
        channel = _text(channel_type) or _text((metadata_doc.get("recordingInfo") or {}).get("channelType"))
        written = self._copy_content(content_url, content_blob, path, fields, channels, channel.lower() == "unmixed")
        self._verify_and_mark(written, content_blob, path, chunk.index, metadata_doc)
        content, download = written.content, written.download
        result = ChunkResult(
            chunk.index, path, content.size, written.digest, resumes=download.resumes, participants=written.participants
        )
        if self.delete_after_copy and delete_url:
            self._delete_and_mark(content_blob, delete_url)
            result.deleted_from_acs = True
        log.info(
            "chunk %d copied to %s (%d bytes, sha256 %s, %d resume(s))",
            chunk.index,
            path,
            content.size,
            written.digest[:12],
            download.resumes,
        )
        return result

    def _already_copied(
        self, content_blob: Any, props: Any, path: str, index: int, delete_url: SafeUrl | None
    ) -> ChunkResult:
        """A redelivered event: the copy is done; at most the deletion at ACS is left to do."""
        log.info("chunk %d already copied and verified at %s", index, path)
        meta = props.metadata
        result = ChunkResult(index, path, props.size, meta.get("sha256", ""), skipped=True)
        if self.delete_after_copy and delete_url and meta.get("deletedFromAcs") != "true":
            self._delete_and_mark(content_blob, delete_url)  # an earlier run died before deleting
            result.deleted_from_acs = True
        return result

    def _copy_content(
        self, url: SafeUrl, content_blob: Any, path: str, fields: ChunkFields, channels: Channels, unmixed: bool
    ) -> _Written:
        """Stream the content from ACS into its blob and each participant's, and commit them (not yet verified)."""
        with _block_pool() as (pool, gate):
            content = BlockUploader(content_blob, pool=pool, gate=gate)
            split = self._split(path, channels, pool, gate, unmixed=unmixed, ext=fields.ext)
            download = ResumableDownload(self.session, url, self.auth)
            try:
                for block in iter(lambda: download.read(READ_SIZE), b""):
                    content.write(block)
                    if split is not None:
                        split.feed(block)
            finally:
                download.close()
            if download.size is not None and content.size != download.size:
                raise CopyFailed(f"chunk {fields.index}: copied {content.size} bytes of {download.size}")
            digest = content.sha256.hexdigest()
            participants = ",".join(channels.channel_of) or ",".join(
                p.get("participantId", "") for p in channels.participants
            )
            tags = fields.tags(channels, participants)
            metadata = {
                "serverCallId": _meta(fields.info.server_call_id),
                "recordingId": _meta(fields.recording),
                "documentId": _meta(fields.document_id),
                "chunkIndex": str(fields.index),
                "callConnectionId": _meta(fields.info.call_connection_id),
                "channelMap": channels.map_json,
            }
            content.commit(
                metadata={**metadata, "size": str(content.size), "sha256": digest},
                tags=tags,
                content_type="audio/wav" if fields.ext == "wav" else "application/octet-stream",
            )
            names: list[str] = []
            if split is not None and split.complete:
                per_participant = {k: v for k, v in tags.items() if k not in ("participants", "channels")}
                names = split.commit(metadata=metadata, tags=per_participant)  # 10 tags at most
            elif split is not None:
                log.warning("chunk %d not split: %s", fields.index, split.splitter.failed)
        outputs = split.outputs if split is not None else {}
        return _Written(content, download, digest, metadata, outputs, names)

    def _verify_and_mark(
        self, written: _Written, content_blob: Any, path: str, index: int, metadata_doc: dict[str, Any]
    ) -> None:
        """Verify, then mark: only now does the copy count."""
        content, download = written.content, written.download
        stored = content_blob.get_blob_properties()
        if stored.size != content.size or (download.size is not None and stored.size != download.size):
            raise CopyFailed(f"chunk {index}: stored {stored.size} bytes, expected {download.size}")
        self.container.get_blob_client(metadata_blob_name(path)).upload_blob(
            json.dumps(metadata_doc, indent=2).encode(), overwrite=True, metadata=written.metadata
        )
        for name, uploader in written.outputs.values():
            marked = self.container.get_blob_client(name)
            if marked.get_blob_properties().size != uploader.size:
                raise CopyFailed(f"{name}: stored size differs from what was written")
            marked.set_blob_metadata({**marked.get_blob_properties().metadata, "verified": "true"})
        content_blob.set_blob_metadata({**stored.metadata, "verified": "true"})

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
        fields = ChunkFields(
            chunk.index, chunk.document_id, info, start_time, channel_type, duration_ms, format_extension(format_type)
        )
        self._ensure_container()
        blob = self.container.get_blob_client(name)
        done, props = is_verified(blob)
        if done:
            log.info("chunk %d already verified in place at %s", chunk.index, name)
            return ChunkResult(chunk.index, name, props.size, props.metadata.get("sha256", ""), skipped=True)
        if props is None:
            raise CopyFailed(f"chunk {chunk.index}: {name} is not in the container (yet)")
        metadata_doc = json.loads(self.container.get_blob_client(metadata_name).download_blob().readall())
        channels = Channels.of(metadata_doc, info.caller)
        unmixed = _text(channel_type).lower() == "unmixed"
        read, digest, participants = self._read_in_place(blob, props, name, fields, channels, unmixed)
        self._mark_in_place(blob, props, fields, channels, read, digest)
        log.info("chunk %d verified in place at %s (%d bytes)", chunk.index, name, read)
        return ChunkResult(chunk.index, name, read, digest, participants=participants)

    def _read_in_place(
        self, blob: Any, props: Any, name: str, fields: ChunkFields, channels: Channels, unmixed: bool
    ) -> tuple[int, str, list[str]]:
        """Read the chunk once, in pieces: its size, its SHA-256 and its split come from the same pass."""
        digest = hashlib.sha256()
        read = 0
        with _block_pool() as (pool, gate):
            split = self._split(name, channels, pool, gate, unmixed=unmixed, ext=fields.ext)
            for piece in blob.download_blob(etag=props.etag, match_condition=_if_unmodified()).chunks():
                digest.update(piece)
                read += len(piece)
                if split is not None:
                    split.feed(piece)
            if read != props.size:
                raise CopyFailed(f"chunk {fields.index}: read {read} bytes of {props.size}")
            if split is not None and split.complete:
                expected = split.splitter.format.data_size
                if read < expected:
                    raise CopyFailed(
                        f"chunk {fields.index}: the WAV says {expected} bytes of audio, the blob is shorter"
                    )
                split.commit(
                    metadata={"serverCallId": _meta(fields.info.server_call_id), "verified": "true"},
                    tags={
                        "serverCallId": _tag(fields.info.server_call_id),
                        "chunk": str(fields.index),
                        "format": "wav",
                    },
                )
        participants = [o for o, _ in split.outputs.values()] if split is not None else []
        return read, digest.hexdigest(), participants

    def _mark_in_place(
        self, blob: Any, props: Any, fields: ChunkFields, channels: Channels, read: int, digest: str
    ) -> None:
        """Tag the chunk and record its size and SHA-256 as verified, unless it changed since it was read."""
        blob.set_blob_tags({**fields.tags(channels, ",".join(channels.channel_of)), "storage": "byos"})
        blob.set_blob_metadata(
            {
                **(props.metadata or {}),
                "serverCallId": _meta(fields.info.server_call_id),
                "recordingId": _meta(fields.recording),
                "chunkIndex": str(fields.index),
                "channelMap": channels.map_json,
                "size": str(read),
                "sha256": digest,
                "verified": "true",
            },
            etag=props.etag,
            match_condition=_if_unmodified(),
        )

    def _delete_and_mark(self, content_blob: Any, url: SafeUrl) -> None:
        """Delete the recording at ACS; called only once the copy is verified."""
        response = self.session.delete(
            url.url, headers=self.auth.headers("DELETE", url), timeout=30, allow_redirects=False
        )
        refuse_redirect(response, url)
        if response.status_code not in (200, 202, 204, 404):
            raise CopyFailed(f"DELETE {url} answered {response.status_code}")
        metadata = content_blob.get_blob_properties().metadata
        content_blob.set_blob_metadata({**metadata, "deletedFromAcs": "true"})


def is_verified(blob: Any) -> tuple[bool, Any]:
    """Whether the blob was copied and verified (its size is the one recorded); its properties, None if absent."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        return False, None
    metadata = props.metadata or {}
    return metadata.get("verified") == "true" and str(props.size) == metadata.get("size"), props


@contextmanager
def _block_pool() -> Iterator[tuple[ThreadPoolExecutor, threading.BoundedSemaphore]]:
    """Constant memory: one pool, and one limit of blocks in flight, for every output of a chunk."""
    gate = threading.BoundedSemaphore(MAX_BLOCKS_IN_FLIGHT)
    with ThreadPoolExecutor(max_workers=MAX_BLOCKS_IN_FLIGHT) as pool:
        yield pool, gate


def _if_unmodified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _meta(value: object) -> str:
    """A blob metadata value (an HTTP header): printable ASCII only."""
    return re.sub(r"[^ -~]", "_", str(value))[:1024]


def _tag(value: object) -> str:
    """Blob index tag values allow letters, digits, space and + - . / : = _ (256 characters)."""
    return re.sub(r"[^A-Za-z0-9 +\-./:=_]", "_", str(value))[:256]
