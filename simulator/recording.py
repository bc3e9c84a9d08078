"""Recording files: real WAV audio written in bounded blocks, and ACS's metadata document.

Unmixed audio gets one channel per participant (each a steady tone at its own pitch, so a test
can tell the channels apart after splitting); mixed audio is the sum on one channel. Files are
written block by block to disk, so gigabytes cost no more memory than a second of audio.
"""

from __future__ import annotations

import math
import wave
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16000
SAMPLE_WIDTH = 2
MAX_UNMIXED_CHANNELS = 5
WAV_HEADER_BYTES = 44


def channel_frequency(channel: int) -> int:
    """A whole number of Hz, so a one-second block repeats without a seam."""
    return 300 + 200 * channel


def _block(channels: int, mixed_sources: int, silent: frozenset[int] = frozenset()) -> bytes:
    """One second of audio, interleaved; channels in ``silent`` carry zeros."""
    samples = array("h")
    amplitude = 8000
    sources = max(mixed_sources, 1)
    for n in range(SAMPLE_RATE):
        t = n / SAMPLE_RATE
        if channels == 1 and mixed_sources > 1:
            value = sum(math.sin(2 * math.pi * channel_frequency(c) * t) for c in range(sources)) / sources
            samples.append(int(amplitude * value))
        else:
            for c in range(channels):
                level = 0 if c in silent else amplitude
                samples.append(int(level * math.sin(2 * math.pi * channel_frequency(c) * t)))
    return samples.tobytes()


def write_wav(
    path: Path, *, channels: int, frames: int, mixed_sources: int = 1, silent: frozenset[int] = frozenset()
) -> int:
    """Write ``frames`` frames of audio and return the file size in bytes."""
    block = _block(channels, mixed_sources, silent)
    frame_bytes = channels * SAMPLE_WIDTH
    per_block = len(block) // frame_bytes
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(SAMPLE_RATE)
        out.setnframes(frames)
        remaining = frames
        while remaining > 0:
            take = min(remaining, per_block)
            out.writeframesraw(block[: take * frame_bytes])
            remaining -= take
    return path.stat().st_size


def frames_for_bytes(total_bytes: int, channels: int) -> int:
    return max((total_bytes - WAV_HEADER_BYTES) // (channels * SAMPLE_WIDTH), 1)


@dataclass
class Document:
    """One recording chunk as ACS stores it: content, metadata, and whether it was deleted."""

    document_id: str
    recording_id: str
    index: int
    path: Path
    size: int
    metadata: dict[str, Any]
    content_type: str = "audio/wav"
    deleted: bool = False
    downloads: int = field(default=0)


def metadata_document(
    *,
    resource_id: str,
    call_id: str,
    document_id: str,
    index: int,
    start_time: str,
    duration_ms: int,
    content_type: str,
    channel_type: str,
    format_type: str,
    channels: int,
    participants: list[dict[str, Any]],
    pause_resume: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "resourceId": resource_id,
        "callId": call_id,
        "chunkDocumentId": document_id,
        "chunkIndex": index,
        "chunkStartTime": start_time,
        "chunkDuration": float(duration_ms),
        "pauseResumeIntervals": pause_resume,
        "recordingInfo": {
            "contentType": content_type,
            "channelType": channel_type,
            "format": format_type,
            "audioConfiguration": {
                "sampleRate": SAMPLE_RATE,
                "bitRate": SAMPLE_RATE * SAMPLE_WIDTH * 8 * channels,
                "channels": channels,
            },
        },
        "participants": participants,
    }
