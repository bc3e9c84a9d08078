"""Recording files: the chunks a stopped recording leaves, their metadata, and RecordingFileStatusUpdated.

Chunks are real WAV files (see ``simulator/recording.py``) served by the simulator's recording store, or written
into the customer's own container when the recording asked for external storage.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..recording import (
    MAX_UNMIXED_CHANNELS,
    SAMPLE_RATE,
    Document,
    frames_for_bytes,
    metadata_document,
    write_wav,
)
from .events import Events
from .model import Recording

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key: it stands in for the ACS resource's managed identity, which the
# real service uses to write into a customer's container (the customer grants it Storage Blob Data Contributor).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Shape:
    """What every chunk of one recording shares: who is on which channel, how long, when it paused."""

    channel_map: dict[int, str]
    channels: int
    unmixed: bool
    seconds: float
    pause_resume: list[dict[str, Any]]


class RecordingFiles(Events):
    """Writes a stopped recording's chunks and tells Event Grid where they are."""

    def _channel_map(self, recording: Recording) -> dict[int, str]:
        """Channel index -> participant, as ACS assigns unmixed channels (affinity, ordering, join order)."""
        joined = [raw for raw in recording.call.ever_joined]
        channels: dict[int, str] = {idx: raw for raw, idx in recording.affinity.items()}
        rest = [r for r in recording.ordering + joined if r not in recording.affinity]
        seen: set[str] = set(recording.affinity)
        next_index = 0
        for raw in rest:
            if raw in seen:
                continue
            seen.add(raw)
            while next_index in channels:
                next_index += 1
            if next_index >= MAX_UNMIXED_CHANNELS:
                break
            channels[next_index] = raw
        return dict(sorted(channels.items()))

    def _shape(self, recording: Recording) -> Shape:
        cfg = self.config
        unmixed = recording.channel_type == "unmixed"
        channel_map = self._channel_map(recording)
        # A channel pinned by affinity beyond the participants leaves the channels before it silent.
        channels = (max(channel_map) + 1 if channel_map else 1) if unmixed else 1
        seconds = cfg.recording_seconds
        if seconds is None:
            # Wall-clock time runs faster than service time by 1/time_scale; cap it for tests.
            seconds = min(max(recording.active_seconds() / max(cfg.time_scale, 1e-6), 1.0), cfg.max_recording_seconds)
        pause_resume = []
        for (_, b), (c, _) in zip(recording.intervals, recording.intervals[1:], strict=False):
            paused_at = datetime.fromtimestamp(time.time() - (time.monotonic() - b), UTC) if b else datetime.now(UTC)
            start = paused_at.isoformat().replace("+00:00", "Z")  # when the pause began, not when files are written
            # In service time, like chunkDuration: wall-clock time runs 1/time_scale faster.
            paused_ms = (c - b) * 1000 / max(cfg.time_scale, 1e-6) if b else 0.0
            pause_resume.append({"startTime": start, "duration": round(paused_ms, 1)})
        return Shape(channel_map, channels, unmixed, seconds, pause_resume)

    async def _produce_files(self, recording: Recording, reason: str) -> None:
        await asyncio.sleep(0.01)
        shape = self._shape(recording)
        chunks = max(self.config.recording_chunks, 1)
        chunk_infos = []
        for index in range(chunks):
            doc = await self._write_chunk(recording, shape, index)
            end_reason = reason if index == chunks - 1 else "ChunkIsFull"
            chunk_infos.append(await self._chunk_info(recording, doc, end_reason))
            recording.call.timeline.add(
                "call", f"recording chunk {index} ready: {doc.size} bytes, {shape.channels} channel(s)"
            )
        data = {
            "recordingStorageInfo": {"recordingChunks": chunk_infos},
            "recordingStartTime": recording.started_iso,
            "recordingDurationMs": int(shape.seconds * 1000) * chunks,
            "recordingContentType": recording.content_type.replace("audioVideo", "AudioVideo").capitalize()
            if recording.content_type == "audio"
            else "AudioVideo",
            "recordingChannelType": recording.channel_type.capitalize(),
            "recordingFormatType": recording.format_type.capitalize(),
            "sessionEndReason": "CallEnded" if reason == "CallEnded" else "SessionEnded",
        }
        self.publish(
            recording.call,
            "RecordingFileStatusUpdated",
            f"/recording/call/{recording.call.correlation_id}/serverCallId/{recording.call.id}",
            data,
        )

    async def _write_chunk(self, recording: Recording, shape: Shape, index: int) -> Document:
        """Write one chunk's audio and metadata; the recording store serves it from then on."""
        cfg = self.config
        document_id = str(uuid.uuid4())
        path = self._recording_dir / f"{document_id}.{recording.format_type}"
        channels = shape.channels
        if cfg.recording_bytes:
            frames = frames_for_bytes(cfg.recording_bytes, channels)
        else:
            frames = int(shape.seconds * SAMPLE_RATE)
        size = await asyncio.to_thread(
            write_wav,
            path,
            channels=channels,
            frames=frames,
            mixed_sources=1 if shape.unmixed else max(len(shape.channel_map), 1),
            silent=frozenset(range(channels)) - set(shape.channel_map) if shape.unmixed else frozenset(),
        )
        participants = [
            {"participantId": raw, "channel": i} if shape.unmixed else {"participantId": raw}
            for i, raw in shape.channel_map.items()
        ]
        metadata = metadata_document(
            resource_id=cfg.resource_id,
            call_id=recording.call.correlation_id,
            document_id=document_id,
            index=index,
            start_time=recording.started_iso,
            duration_ms=int(frames * 1000 / SAMPLE_RATE),
            content_type=recording.content_type,
            channel_type=recording.channel_type,
            format_type=recording.format_type,
            channels=channels,
            participants=participants,
            pause_resume=shape.pause_resume,
        )
        doc = Document(
            document_id,
            recording.id,
            index,
            path,
            size,
            metadata,
            content_type="audio/wav" if recording.format_type == "wav" else "application/octet-stream",
        )
        self.documents[document_id] = doc
        recording.documents.append(doc)
        return doc

    async def _chunk_info(self, recording: Recording, doc: Document, end_reason: str) -> dict[str, Any]:
        """Where the chunk is: the recording store's URLs, or the blobs written into the customer's container."""
        cfg = self.config
        container_url = (recording.external_storage or {}).get("recordingDestinationContainerUrl")
        if container_url:
            # Bring your own storage: the service writes the files into the customer's container.
            folder = f"{datetime.now(UTC):%Y%m%d}/{recording.call.correlation_id}/{recording.id[:32]}"
            content_url, metadata_url = await asyncio.to_thread(write_to_customer_container, container_url, folder, doc)
            recording.call.timeline.add("call", f"recording chunk {doc.index} written into {container_url}")
            return {
                "documentId": doc.document_id,
                "index": doc.index,
                "endReason": end_reason,
                "contentLocation": content_url,
                "metadataLocation": metadata_url,
            }
        base = (cfg.recording_base_url or cfg.base_url).rstrip("/")
        media = "audio" if recording.content_type == "audio" else "video"
        return {
            "documentId": doc.document_id,
            "index": doc.index,
            "endReason": end_reason,
            "contentLocation": f"{base}/v1/objects/{doc.document_id}/content/{media}",
            "metadataLocation": f"{base}/v1/objects/{doc.document_id}/content/acsmetadata",
            "deleteLocation": f"{base}/v1/objects/{doc.document_id}",
        }


def write_to_customer_container(container_url: str, folder: str, doc: Document) -> tuple[str, str]:
    """Upload a chunk and its metadata into the given container; return their URLs."""
    from azure.storage.blob import ContainerClient

    if f"/{AZURITE_ACCOUNT}/" not in container_url + "/":
        raise ValueError(f"the simulator can only write into Azurite containers, not {container_url}")
    container = ContainerClient.from_container_url(
        container_url, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    )
    content = container.get_blob_client(f"{folder}/{doc.document_id}.{doc.path.suffix.lstrip('.')}")
    with open(doc.path, "rb") as fh:
        content.upload_blob(fh, overwrite=True, max_concurrency=4)
    metadata = container.get_blob_client(f"{folder}/{doc.document_id}.metadata.json")
    metadata.upload_blob(json.dumps(doc.metadata).encode(), overwrite=True)
    return content.url, metadata.url
