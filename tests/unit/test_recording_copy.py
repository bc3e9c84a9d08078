"""The pure parts of the recording copy: allow-list, request signing, WAV header and splitting, blocks."""

from __future__ import annotations

import io
import threading
import wave
from array import array
from urllib.parse import urlparse

import pytest

from core.recordings.auth import RecordingAuth
from core.recordings.errors import RefusedUrl
from core.recordings.upload import BlockUploader
from core.recordings.urls import HostAllowList
from core.recordings.wav import WavSplitter, pcm_wav_header
from simulator import hmac_auth
from simulator.errors import AcsError


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://us-storage.asm.skype.com/v1/objects/x/content/audio", True),
        ("https://asm.skype.com.evil.example/v1/objects/x", False),
        ("https://evil.example/?h=x.asm.skype.com", False),
        ("http://us-storage.asm.skype.com/v1/objects/x", False),  # credentials never in clear text off-box
        ("http://127.0.0.1:8090/v1/objects/x", True),
        ("ftp://127.0.0.1/x", False),
        ("not a url", False),
    ],
)
def test_allow_list(url, allowed):
    allow = HostAllowList(["*.asm.skype.com", "127.0.0.1"])
    assert allow.allows(url) is allowed
    if not allowed:
        with pytest.raises(RefusedUrl):
            allow.check(url)


def test_hmac_headers_verify_as_the_service_checks_them():
    key = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28="
    auth = RecordingAuth("https://contoso.communication.azure.com", key)
    url = "https://us-storage.asm.skype.com/v1/objects/doc-1/content/audio"
    headers = auth.headers("GET", url)
    assert headers["x-ms-host"] == "contoso.communication.azure.com"
    hmac_auth.verify(key, "GET", urlparse(url).path, {**headers, "Host": "us-storage.asm.skype.com"}, b"")
    with pytest.raises(AcsError):
        hmac_auth.verify(key, "DELETE", urlparse(url).path, headers, b"")


def test_entra_token_when_there_is_no_key():
    class Credential:
        def get_token(self, scope):
            assert scope == "https://communication.azure.com//.default"
            return type("T", (), {"token": "abc"})()

    url = HostAllowList(["*.asm.skype.com"]).check("https://us-storage.asm.skype.com/v1/objects/x/content/audio")
    headers = RecordingAuth("https://contoso.communication.azure.com", credential=Credential()).headers("GET", url)
    assert headers["Authorization"] == "Bearer abc"


def test_pcm_header_is_what_wave_reads():
    header = pcm_wav_header(1, 2, 16000, 1000)
    data = header + b"\x01\x00" * 1000
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 1000)
    assert len(header) == 44


def interleaved_wav(channels: int, frames: int) -> tuple[bytes, list[bytes]]:
    per_channel = [array("h", [(c + 1) * 100 + (i % 50) for i in range(frames)]) for c in range(channels)]
    mixed = array("h")
    for i in range(frames):
        for c in range(channels):
            mixed.append(per_channel[c][i])
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(mixed.tobytes())
    return buffer.getvalue(), [a.tobytes() for a in per_channel]


@pytest.mark.parametrize("piece", [1, 3, 7, 44, 45, 4096])
def test_splitter_gives_each_channel_its_own_wav_whatever_the_piece_size(piece):
    data, expected = interleaved_wav(3, 2000)
    outputs: dict[int, io.BytesIO] = {}

    def make(channel, fmt):
        outputs[channel] = io.BytesIO()
        return outputs[channel]

    splitter = WavSplitter(make)
    for offset in range(0, len(data), piece):
        splitter.feed(data[offset:offset + piece])
    assert splitter.failed is None
    for channel, want in enumerate(expected):
        with wave.open(io.BytesIO(outputs[channel].getvalue())) as w:
            assert w.getnchannels() == 1 and w.getnframes() == 2000
            assert w.readframes(2000) == want


def test_splitter_refuses_what_it_cannot_split():
    splitter = WavSplitter(lambda c, f: io.BytesIO())
    splitter.feed(b"ID3" + b"\x00" * 50)
    assert splitter.failed == "not a RIFF/WAVE file"


class Blob:
    """An in-memory stand-in for a block blob (unit test of the uploader's own logic only)."""

    def __init__(self):
        self.staged: dict[str, bytes] = {}
        self.committed: bytes | None = None
        self.lock = threading.Lock()

    def stage_block(self, block_id, data, validate_content=False):
        assert validate_content is True  # every block carries its MD5
        with self.lock:
            self.staged[block_id] = bytes(data)

    def commit_block_list(self, blocks, **kwargs):
        self.committed = b"".join(self.staged[b.id] for b in blocks)
        self.kwargs = kwargs


def test_uploader_stages_fixed_blocks_in_order_and_commits_the_exact_bytes():
    from concurrent.futures import ThreadPoolExecutor

    blob = Blob()
    payload = bytes(range(256)) * 1000
    with ThreadPoolExecutor(3) as pool:
        uploader = BlockUploader(blob, block_size=1000, pool=pool, gate=threading.BoundedSemaphore(2))
        for offset in range(0, len(payload), 777):
            uploader.write(payload[offset:offset + 777])
        assert blob.committed is None  # nothing visible before the commit
        uploader.commit(metadata={"a": "b"}, tags={}, content_type="audio/wav")
    assert blob.committed == payload
    assert uploader.size == len(payload)
    assert len(blob.staged) == -(-len(payload) // 1000)  # whole blocks, no empty tail block


def test_uploader_surfaces_a_staging_failure():
    from concurrent.futures import ThreadPoolExecutor

    class Failing(Blob):
        def stage_block(self, block_id, data, validate_content=False):
            raise OSError("storage down")

    with ThreadPoolExecutor(2) as pool, pytest.raises(OSError):
        uploader = BlockUploader(Failing(), block_size=10, pool=pool)
        for _ in range(50):
            uploader.write(b"x" * 10)
        uploader.commit(metadata={}, tags={}, content_type="audio/wav")


def test_the_server_call_id_is_the_rest_of_the_subject_slashes_included():
    # ACS's server call ids are standard base64 and may hold "/": taking one segment cut them short, and the
    # recording was filed under a truncated id (found once the simulator issued ids with "/").
    from handlers.recordings import server_call_id_of

    scid = "aHR0cHM6Ly9jb252LXNpbS0wMS5jb252LnNreXBlLmNvbS9jb252L2Jh/aT05MCZlPX4"
    assert server_call_id_of(f"/recording/call/5f3c-corr/serverCallId/{scid}") == scid
    assert server_call_id_of("/recording/call/5f3c-corr") == ""
