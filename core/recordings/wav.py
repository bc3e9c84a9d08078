"""Splitting an interleaved 16-bit PCM WAV, as it streams by, into one mono WAV per channel.

An unmixed recording has one channel per participant; QA listens to each on its own, and splitting in the same
pass as the copy reads the recording once.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class WavFormat:
    """What a WAV's header says of its audio: channels, bytes per sample, samples per second, bytes of data."""

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
    """The 44-byte header of a PCM WAV whose size is known before its samples are.

    Stdlib ``wave`` only writes a header together with the frames, and patches it on close when they differ.
    """
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
