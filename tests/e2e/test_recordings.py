"""Recording end to end with the real SDK: start/stop on a live call, the RecordingFileStatusUpdated
Event Grid event, and the recording store reached over HTTPS on *.asm.skype.com (the SDK refuses any
other host): content, metadata, ranges, HMAC, delete. The WAV files are checked sample by sample."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
import wave
from array import array
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.communication.callautomation import (
    CallAutomationClient,
    ChannelAffinity,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)
from azure.communication.callautomation.aio import CallAutomationClient as AsyncCallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from simulator.engine import Config
from simulator.recording import SAMPLE_RATE, SAMPLE_WIDTH, channel_frequency
from simulator.runner import RunningSimulator, SimulatorThread
from tests.conftest import ROOT, control
from tests.support.receiver import Receiver
from tests.support.recording_host import (
    other_key,
    point_recording_host_at_loopback,
    sdk_client,
    signed_headers,
)

CALLER = "+14255550100"
BOB = "8:acs:bob"
CAROL = "8:acs:carol"
SECONDS = 2.0  # fixed audio length per chunk, so sizes are exact

MakeSim = Callable[..., RunningSimulator]


@pytest.fixture
def make_sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeSim]:
    """Start a simulator that serves its recording store over TLS as sim.asm.skype.com."""
    point_recording_host_at_loopback(monkeypatch)
    threads: list[SimulatorThread] = []

    def start(**config: Any) -> RunningSimulator:
        config.setdefault("recording_seconds", SECONDS)
        config.setdefault("recording_dir", str(tmp_path / f"recordings{len(threads)}"))
        thread = SimulatorThread(config=Config(**config), tls_port=0, recording_host="sim.asm.skype.com")
        threads.append(thread)
        return thread.__enter__()

    yield start
    for thread in threads:
        thread.__exit__(None, None, None)


class Env:
    """A TLS simulator, a receiver subscribed to its Event Grid topic, and an SDK client."""

    def __init__(self, sim: RunningSimulator, receiver: Receiver) -> None:
        self.sim = sim
        self.receiver = receiver
        self.client: CallAutomationClient = sdk_client(sim)
        self.verify = str(sim.ca_file)
        self.marks: dict[str, datetime] = {}
        sub = control(sim, "POST", "/__sim/eventgrid/subscriptions", {"endpoint": receiver.url + "/eg"})
        assert sub["provisioningState"] == "Succeeded"

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        return control(self.sim, method, path, body)

    def three_party_call(self) -> str:
        """An inbound call from a phone, answered, with two more participants added."""
        ring = self.ctl("POST", "/__sim/calls", {"from": CALLER, "to": "+18005550100"})
        props = self.client.answer_call(ring["incomingCallContext"], self.receiver.url + "/cb")
        ccid = props.call_connection_id
        self.receiver.wait_for("CallConnected", call_connection_id=ccid)
        connection = self.client.get_call_connection(ccid)
        connection.add_participant(CommunicationUserIdentifier(BOB))
        connection.add_participant(CommunicationUserIdentifier(CAROL))
        self.receiver.wait_for("AddParticipantSucceeded", count=2, call_connection_id=ccid)
        raws = sorted(p.identifier.raw_id for p in connection.list_participants())
        assert raws == sorted(["4:" + CALLER, BOB, CAROL])
        return ccid

    def record(self, ccid: str, *, pause: bool = False, **options: Any) -> tuple[str, dict[str, Any]]:
        """Record the call briefly; return the recording id and the RecordingFileStatusUpdated data."""
        seen = len(self.receiver.grid("RecordingFileStatusUpdated"))
        started = self.client.start_recording(call_connection_id=ccid, **options)
        assert started.recording_state == "active"
        time.sleep(0.02)
        if pause:
            self.marks["pause_called"] = datetime.now().astimezone()
            self.client.pause_recording(started.recording_id)
            self.marks["pause_returned"] = datetime.now().astimezone()
            assert self.client.get_recording_properties(started.recording_id).recording_state == "inactive"
            time.sleep(0.05)
            self.marks["resume_called"] = datetime.now().astimezone()
            self.client.resume_recording(started.recording_id)
            self.marks["resume_returned"] = datetime.now().astimezone()
            assert self.client.get_recording_properties(started.recording_id).recording_state == "active"
            time.sleep(0.02)
        self.client.stop_recording(started.recording_id)
        events = self.receiver.wait_for("RecordingFileStatusUpdated", count=seen + 1, grid=True)
        return started.recording_id, events[seen]["data"]

    def download(self, url: str, **kwargs: Any) -> tuple[int, bytes]:
        response = self.client.download_recording(url, connection_verify=self.verify, **kwargs)
        return response.status_code, b"".join(response.iter_bytes())


@pytest.fixture
def env(make_sim: MakeSim, receiver: Receiver) -> Env:
    return Env(make_sim(), receiver)


def channels_of(data: bytes) -> tuple[wave.Wave_read, list[array]]:
    reader = wave.open(io.BytesIO(data), "rb")
    samples = array("h", reader.readframes(reader.getnframes()))
    n = reader.getnchannels()
    return reader, [samples[c::n] for c in range(n)]


def dominant_frequency(samples: array) -> float:
    """Frequency of a steady tone from its zero crossings (two per period)."""
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / SAMPLE_RATE)


def only_chunk(data: dict[str, Any]) -> dict[str, Any]:
    chunks = data["recordingStorageInfo"]["recordingChunks"]
    assert len(chunks) == 1
    return chunks[0]


def test_unmixed_recording_with_channel_affinity_round_trip(env: Env) -> None:
    ccid = env.three_party_call()
    affinity = {CAROL: 0, "4:" + CALLER: 1, BOB: 2}
    recording_id, data = env.record(
        ccid,
        recording_content_type="audio",
        recording_channel_type="unmixed",
        recording_format_type="wav",
        channel_affinity=[
            ChannelAffinity(target_participant=CommunicationUserIdentifier(CAROL), channel=0),
            ChannelAffinity(target_participant=PhoneNumberIdentifier(CALLER), channel=1),
            ChannelAffinity(target_participant=CommunicationUserIdentifier(BOB), channel=2),
        ],
    )
    assert (data["recordingContentType"], data["recordingChannelType"], data["recordingFormatType"]) == (
        "Audio",
        "Unmixed",
        "Wav",
    )
    chunk = only_chunk(data)
    assert chunk["index"] == 0 and chunk["endReason"] == "SessionEnded"
    base = f"https://sim.asm.skype.com:{env.sim.tls_port}/v1/objects/{chunk['documentId']}"
    assert chunk["contentLocation"] == base + "/content/audio"
    assert chunk["metadataLocation"] == base + "/content/acsmetadata"
    assert chunk["deleteLocation"] == base

    # Content: one channel per participant, 16 kHz, 16-bit, each channel its own steady tone.
    status, content = env.download(chunk["contentLocation"])
    assert status == 200
    reader, channels = channels_of(content)
    assert reader.getnchannels() == 3
    assert reader.getframerate() == SAMPLE_RATE == 16000
    assert reader.getsampwidth() == SAMPLE_WIDTH == 2
    assert reader.getnframes() == int(SECONDS * SAMPLE_RATE)
    assert len(content) == 44 + reader.getnframes() * 3 * 2
    for index, samples in enumerate(channels):
        assert dominant_frequency(samples) == pytest.approx(channel_frequency(index), rel=0.02), index
        assert max(samples) > 4000  # a tone, not silence

    # Metadata: the channel map is the requested affinity.
    status, raw_metadata = env.download(chunk["metadataLocation"])
    assert status == 200
    metadata = json.loads(raw_metadata)
    assert {p["participantId"]: p["channel"] for p in metadata["participants"]} == affinity
    assert metadata["chunkDocumentId"] == chunk["documentId"]
    assert metadata["chunkIndex"] == 0
    assert metadata["chunkDuration"] == SECONDS * 1000
    assert metadata["pauseResumeIntervals"] == []
    info = metadata["recordingInfo"]
    assert (info["contentType"], info["channelType"], info["format"]) == ("audio", "unmixed", "wav")
    assert info["audioConfiguration"]["channels"] == 3
    assert info["audioConfiguration"]["sampleRate"] == SAMPLE_RATE
    call = env.ctl("GET", f"/__sim/calls/{ccid}")
    assert call["recordings"][0]["recordingId"] == recording_id
    assert call["recordings"][0]["documents"] == [chunk["documentId"]]

    # Range through the SDK (offset/length): 206 and exactly those bytes.
    response = env.client.download_recording(
        chunk["contentLocation"], offset=1000, length=4096, connection_verify=env.verify
    )
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000-5095/{len(content)}"
    assert b"".join(response.iter_bytes()) == content[1000:5096]
    status, tail = env.download(chunk["contentLocation"], offset=len(content) - 10)
    assert (status, tail) == (206, content[-10:])

    # Delete through the SDK; afterwards the store answers 404 for content, metadata and delete.
    env.client.delete_recording(chunk["deleteLocation"], connection_verify=env.verify)
    for url in (chunk["contentLocation"], chunk["metadataLocation"]):
        with pytest.raises(ResourceNotFoundError) as excinfo:
            env.download(url)
        assert excinfo.value.status_code == 404
    with pytest.raises(ResourceNotFoundError):
        env.client.delete_recording(chunk["deleteLocation"], connection_verify=env.verify)
    (stored,) = [r for r in env.ctl("GET", "/__sim/recordings") if r["recordingId"] == recording_id]
    assert stored["documents"][0]["deleted"] is True


def test_store_requires_hmac_and_honours_raw_ranges(env: Env) -> None:
    ccid = env.three_party_call()
    _, data = env.record(ccid, recording_channel_type="unmixed", recording_format_type="wav")
    chunk = only_chunk(data)
    url = chunk["contentLocation"]
    status, content = env.download(url)
    assert status == 200

    unsigned = requests.get(url, verify=env.verify, timeout=10)
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["code"] == "Denied"
    forged = requests.get(
        url, headers=signed_headers(env.sim, "GET", url, key=other_key()), verify=env.verify, timeout=10
    )
    assert forged.status_code == 401
    wrong_path = signed_headers(env.sim, "GET", chunk["metadataLocation"])  # signed for another URL
    assert requests.get(url, headers=wrong_path, verify=env.verify, timeout=10).status_code == 401
    assert requests.delete(chunk["deleteLocation"], verify=env.verify, timeout=10).status_code == 401
    # The SDK refuses a key it does not hold too: a client with the wrong key gets 401.
    stranger = CallAutomationClient(env.sim.endpoint, AzureKeyCredential(other_key()))
    with pytest.raises(ClientAuthenticationError):
        stranger.download_recording(url, connection_verify=env.verify)

    def get(range_header: str | None) -> requests.Response:
        extra = {"Range": range_header} if range_header else None
        return requests.get(
            url, headers=signed_headers(env.sim, "GET", url, extra=extra), verify=env.verify, timeout=10
        )

    whole = get(None)
    assert (whole.status_code, whole.content) == (200, content)
    assert whole.headers["Accept-Ranges"] == "bytes"
    first = get("bytes=0-99")  # the SDK never sends offset 0 (it drops the header), so check it by hand
    assert (first.status_code, first.content) == (206, content[:100])
    assert first.headers["Content-Range"] == f"bytes 0-99/{len(content)}"
    open_ended = get(f"bytes={len(content) - 500}-")
    assert (open_ended.status_code, open_ended.content) == (206, content[-500:])
    beyond = get(f"bytes=100-{len(content) + 1000}")  # an end past the file is clamped
    assert (beyond.status_code, beyond.content) == (206, content[100:])
    unsatisfiable = get(f"bytes={len(content)}-")
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(content)}"

    # Still there after all the refused attempts.
    assert env.download(url) == (200, content)


async def test_async_client_downloads_ranges_and_deletes(env: Env) -> None:
    ccid = env.three_party_call()
    _, data = env.record(ccid, recording_channel_type="unmixed", recording_format_type="wav")
    chunk = only_chunk(data)
    async with AsyncCallAutomationClient(env.sim.endpoint, AzureKeyCredential(env.sim.access_key)) as client:
        response = await client.download_recording(chunk["contentLocation"], connection_verify=env.verify)
        assert response.status_code == 200
        content = b"".join([part async for part in response.iter_bytes()])
        reader, channels = channels_of(content)
        assert reader.getnchannels() == 3
        for index, samples in enumerate(channels):
            assert dominant_frequency(samples) == pytest.approx(channel_frequency(index), rel=0.02)

        response = await client.download_recording(
            chunk["contentLocation"], offset=44, length=1000, connection_verify=env.verify
        )
        assert response.status_code == 206
        assert b"".join([part async for part in response.iter_bytes()]) == content[44:1044]

        response = await client.download_recording(chunk["metadataLocation"], connection_verify=env.verify)
        metadata = json.loads(b"".join([part async for part in response.iter_bytes()]))
        # No affinity: channels follow join order (caller, then the added participants).
        assert [(p["participantId"], p["channel"]) for p in metadata["participants"]] == [
            ("4:" + CALLER, 0),
            (BOB, 1),
            (CAROL, 2),
        ]

        await client.delete_recording(chunk["deleteLocation"], connection_verify=env.verify)
        with pytest.raises(ResourceNotFoundError):
            await client.download_recording(chunk["contentLocation"], connection_verify=env.verify)


def test_mixed_recording_is_one_channel(env: Env) -> None:
    ccid = env.three_party_call()
    _, data = env.record(
        ccid, recording_content_type="audio", recording_channel_type="mixed", recording_format_type="wav"
    )
    assert (data["recordingChannelType"], data["recordingFormatType"]) == ("Mixed", "Wav")
    chunk = only_chunk(data)
    status, content = env.download(chunk["contentLocation"])
    assert status == 200
    reader, (mono,) = channels_of(content)
    assert (reader.getnchannels(), reader.getframerate(), reader.getsampwidth()) == (1, SAMPLE_RATE, 2)
    assert reader.getnframes() == int(SECONDS * SAMPLE_RATE)
    assert max(mono) > 1000
    _, raw = env.download(chunk["metadataLocation"])
    metadata = json.loads(raw)
    assert metadata["recordingInfo"]["channelType"] == "mixed"
    assert metadata["recordingInfo"]["audioConfiguration"]["channels"] == 1
    assert sorted(p["participantId"] for p in metadata["participants"]) == sorted(["4:" + CALLER, BOB, CAROL])
    assert all("channel" not in p for p in metadata["participants"])


def test_multi_chunk_recording_announces_every_chunk(make_sim: MakeSim, receiver: Receiver) -> None:
    env = Env(make_sim(recording_chunks=3), receiver)
    ccid = env.three_party_call()
    recording_id, data = env.record(ccid, recording_channel_type="unmixed", recording_format_type="wav")
    chunks = data["recordingStorageInfo"]["recordingChunks"]
    assert [c["index"] for c in chunks] == [0, 1, 2]
    assert [c["endReason"] for c in chunks] == ["ChunkIsFull", "ChunkIsFull", "SessionEnded"]
    assert len({c["documentId"] for c in chunks}) == 3
    assert data["recordingDurationMs"] == 3 * SECONDS * 1000
    for chunk in chunks:
        status, content = env.download(chunk["contentLocation"])
        assert status == 200
        reader, _ = channels_of(content)
        assert (reader.getnchannels(), reader.getnframes()) == (3, int(SECONDS * SAMPLE_RATE))
        _, raw = env.download(chunk["metadataLocation"])
        metadata = json.loads(raw)
        assert (metadata["chunkIndex"], metadata["chunkDocumentId"]) == (chunk["index"], chunk["documentId"])
    (stored,) = [r for r in env.ctl("GET", "/__sim/recordings") if r["recordingId"] == recording_id]
    assert [d["documentId"] for d in stored["documents"]] == [c["documentId"] for c in chunks]
    assert all(d["downloads"] == 1 for d in stored["documents"])


def test_pause_and_resume_appear_in_metadata(env: Env) -> None:
    ccid = env.three_party_call()
    _, data = env.record(ccid, pause=True, recording_channel_type="unmixed", recording_format_type="wav")
    states = [e["data"]["state"] for e in env.receiver.events("RecordingStateChanged", ccid)]
    assert states == ["active", "inactive", "active", "inactive"]
    _, raw = env.download(only_chunk(data)["metadataLocation"])
    intervals = json.loads(raw)["pauseResumeIntervals"]
    assert len(intervals) == 1
    (interval,) = intervals
    # The interval starts when the pause took effect (not when the file was written) and lasts until resume.
    paused_at = datetime.fromisoformat(interval["startTime"].replace("Z", "+00:00"))
    slack = timedelta(milliseconds=5)
    assert env.marks["pause_called"] - slack <= paused_at <= env.marks["pause_returned"] + slack
    paused_for = (env.marks["resume_returned"] - env.marks["pause_called"]).total_seconds() * 1000
    # In service time, like chunkDuration: the simulator's wall clock runs 1/time_scale faster.
    scale = env.sim.sim.config.time_scale
    assert 0 < interval["duration"] <= (paused_for + 5) / scale


MEMORY_PROBE = textwrap.dedent(
    """
    import hashlib, json, resource, sys, time, tracemalloc
    import pytest
    from azure.communication.callautomation import CommunicationUserIdentifier
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tests.conftest import control
    from tests.support.receiver import Receiver
    from tests.support.recording_host import point_recording_host_at_loopback, sdk_client, wait_until

    size, directory = int(sys.argv[1]), sys.argv[2]
    point_recording_host_at_loopback(pytest.MonkeyPatch())

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    config = Config(recording_bytes=size, recording_dir=directory)
    with SimulatorThread(config=config, tls_port=0) as sim, Receiver() as rx:
        client = sdk_client(sim)
        props = client.create_call(CommunicationUserIdentifier("8:acs:agent"), rx.url + "/cb")
        rx.wait_for("CallConnected")
        started = client.start_recording(call_connection_id=props.call_connection_id)
        baseline = peak_mb()
        tracemalloc.start()
        client.stop_recording(started.recording_id)
        docs = wait_until(
            lambda: [d for r in control(sim, "GET", "/__sim/recordings") for d in r["documents"]], timeout=60
        )
        write_peak = tracemalloc.get_traced_memory()[1]
        write_rss = peak_mb() - baseline
        path = next(iter(sim.sim.engine.documents.values())).path
        disk = path.stat().st_size
        location = sim.sim.config.recording_base_url + "/v1/objects/" + docs[0]["documentId"]
        response = client.download_recording(location + "/content/audio", connection_verify=str(sim.ca_file))
        digest, received = hashlib.sha256(), 0
        for block in response.iter_bytes():
            digest.update(block)
            received += len(block)
        total_peak = tracemalloc.get_traced_memory()[1]
        total_rss = peak_mb() - baseline
        with open(path, "rb") as fh:
            expected = hashlib.file_digest(fh, "sha256").hexdigest()
        client.delete_recording(location, connection_verify=str(sim.ca_file))
        print(json.dumps({
            "size": docs[0]["size"], "disk": disk, "received": received, "same": digest.hexdigest() == expected,
            "write_traced_mb": write_peak / 2**20, "write_rss_mb": write_rss,
            "total_traced_mb": total_peak / 2**20, "total_rss_mb": total_rss, "deleted": not path.exists(),
        }))
    """
)


def test_large_recording_is_written_and_served_in_bounded_memory(tmp_path: Path) -> None:
    """A 200 MB recording is produced and downloaded (SDK, streamed) without holding it in memory."""
    size = 200 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(size), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert size - 4 < report["size"] <= size  # whole frames of a mono 16-bit file
    assert report["disk"] == report["size"] == report["received"]
    assert report["same"] is True
    assert report["write_traced_mb"] < 50, report
    assert report["write_rss_mb"] < 50, report
    assert report["total_traced_mb"] < 50, report
    assert report["total_rss_mb"] < 50, report
    assert report["deleted"] is True
