"""Recordings for QA, end to end: a recorded three-party call is copied from the simulator into
Azurite by the app, verified and split per participant; redelivery, a cut download, a storage
outage, a URL outside the allow-list, and deletion only after verification."""

from __future__ import annotations

import hashlib
import io
import json
import time
import wave
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from simulator.engine import Config
from simulator.recording import SAMPLE_RATE, channel_frequency
from simulator.runner import SimulatorThread
from tests.conftest import control
from tests.e2e.conftest import AppStack
from tools import azurite as azurite_tools
from tools.apphost import start_app

AGENT_A, AGENT_B = "8:acs:qa-agent-a", "8:acs:qa-agent-b"
FLOWS = {
    "recorded": {
        "start": "record",
        "nodes": {
            "record": {"type": "record", "action": "start", "announcement": {"text": "This call is recorded."},
                       "next": "agent_a"},
            "agent_a": {"type": "add_participant", "target": {"to": AGENT_A}, "next": "agent_b",
                        "on_failure": "bye"},
            "agent_b": {"type": "add_participant", "target": {"to": AGENT_B}, "next": "talk", "on_failure": "bye"},
            "talk": {"type": "play", "prompt": {"text": "You are all connected."}, "next": "bye"},
            "bye": {"type": "hangup", "prompt": {"text": "Goodbye."}, "for_everyone": True},
        },
    }
}
ROUTING = {"rules": [], "default": {"type": "answer", "flow": "recorded"}}


def make_stack(storage: Any, **settings: str) -> Iterator[AppStack]:
    with SimulatorThread(config=Config(recording_seconds=2.0)) as sim:
        app = start_app(sim, storage.connection_string, routing=ROUTING, flows=FLOWS, **settings)
        try:
            yield AppStack(sim, app)
        finally:
            app.stop()


@pytest.fixture
def storage() -> Iterator[Any]:
    """Azurite of this test's own: some tests take it down."""
    running = azurite_tools.start()
    try:
        yield running
    finally:
        running.stop()


def container(storage: Any) -> Any:
    return BlobServiceClient.from_connection_string(storage.connection_string).get_container_client("qa-recordings")


def record_a_call(stack: AppStack, caller: str = "+14255550301") -> dict[str, Any]:
    call = stack.place(**{"from": caller})
    stack.wait_finished(call["serverCallId"])
    return call


def wait_blobs(storage: Any, predicate: Any, timeout: float = 20.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            blobs = list(container(storage).list_blobs(include=["metadata", "tags"]))
        except Exception:
            blobs = []
        if predicate(blobs):
            return blobs
        time.sleep(0.2)
    raise AssertionError(f"blobs never as expected: {[b.name for b in blobs]}")


def verified(blobs: list[Any]) -> list[Any]:
    return [b for b in blobs if (b.metadata or {}).get("verified") == "true"]


def dominant_frequency(samples: bytes) -> float:
    values = memoryview(samples).cast("h")
    crossings = sum(1 for a, b in zip(values, values[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(values) / SAMPLE_RATE)


def source_documents(stack: AppStack) -> list[dict[str, Any]]:
    return [d for r in stack.ctl("GET", "/__sim/recordings") for d in r["documents"]]


def test_three_party_unmixed_recording_is_copied_verified_and_split(storage):
    for stack in make_stack(storage):
        call = record_a_call(stack)
        blobs = wait_blobs(storage, lambda bs: len(verified(bs)) == 4)  # the recording + three participants
        names = sorted(b.name for b in blobs)
        chunk = next(b for b in blobs if b.name.endswith("chunk-000.wav"))
        assert chunk.metadata["verified"] == "true"
        assert chunk.metadata["serverCallId"] == call["serverCallId"]
        assert chunk.tags["channels"] == "3" and chunk.tags["format"] == "wav" and chunk.tags["chunk"] == "0"
        assert "4:+14255550301" in chunk.tags["participants"]
        assert any(n.endswith("chunk-000.metadata.json") for n in names)
        # The copy is the source, byte for byte.
        data = container(storage).get_blob_client(chunk.name).download_blob().readall()
        assert hashlib.sha256(data).hexdigest() == chunk.metadata["sha256"]
        assert len(data) == source_documents(stack)[0]["size"]
        # One mono WAV per participant, each carrying its own channel's tone, named by role and id.
        channel_map = json.loads(chunk.metadata["channelMap"])
        parts = [b for b in blobs if "/participants/" in b.name]
        assert len(parts) == 3
        for part in parts:
            wav = wave.open(io.BytesIO(container(storage).get_blob_client(part.name).download_blob().readall()))
            assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, SAMPLE_RATE, 2)
            channel = int(part.metadata["channel"])
            assert channel_map[part.metadata["participant"]] == channel
            frequency = dominant_frequency(wav.readframes(SAMPLE_RATE // 2))
            assert abs(frequency - channel_frequency(channel)) < channel_frequency(channel) * 0.03
        roles = sorted(p.metadata["role"] for p in parts)
        assert roles == ["caller", "participant", "participant"]
        assert any("ch0-caller-4_14255550301.wav" in p.name for p in parts)
        # QA can find it by tag.
        service = BlobServiceClient.from_connection_string(storage.connection_string)
        found = list(service.find_blobs_by_tags("\"format\"='wav' AND \"chunk\"='0'"))
        assert {f.name for f in found} >= {chunk.name}


def test_redelivery_finds_the_verified_copy_and_does_nothing(storage):
    for stack in make_stack(storage):
        stack.ctl("POST", "/__sim/faults", {"kind": "eventgrid", "match": "RecordingFileStatusUpdated",
                                            "action": "duplicate"})
        record_a_call(stack, "+14255550302")
        wait_blobs(storage, lambda bs: len(verified(bs)) == 4)
        wait_log(stack, "duplicate recording event")
        assert source_documents(stack)[0]["downloads"] == 1  # the duplicate fetched nothing
        # The same recording announced again under another event id: the verified copy is found, nothing is redone.
        (event,) = [e for e in stack.ctl("GET", "/__sim/events")["eventgrid"]
                    if e["eventType"].endswith("RecordingFileStatusUpdated")]
        status, _ = post_event(stack, "recording_file_status", {**event, "id": "another-delivery"})
        assert status in (200, 202)
        wait_log(stack, "already copied and verified")
        assert source_documents(stack)[0]["downloads"] == 1


def wait_log(stack: AppStack, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in stack.app.logs():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the app's log")
        time.sleep(0.1)


def post_event(stack: AppStack, function: str, event: dict[str, Any]) -> tuple[int, bytes]:
    import urllib.request

    request = urllib.request.Request(stack.app.eventgrid_url(function), data=json.dumps([event]).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "aeg-event-type": "Notification"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def test_a_download_cut_midway_resumes_and_the_copy_is_identical(storage):
    for stack in make_stack(storage):
        stack.ctl("POST", "/__sim/faults", {"kind": "download", "cut_after_bytes": 50_000, "count": 2})
        record_a_call(stack, "+14255550303")
        blobs = wait_blobs(storage, lambda bs: len(verified(bs)) == 4)
        chunk = next(b for b in blobs if b.name.endswith("chunk-000.wav"))
        data = container(storage).get_blob_client(chunk.name).download_blob().readall()
        assert len(data) == source_documents(stack)[0]["size"]
        assert hashlib.sha256(data).hexdigest() == chunk.metadata["sha256"]
        assert "resuming" in stack.app.logs()


def test_a_storage_outage_is_retried_until_storage_is_back(storage):
    for stack in make_stack(storage):
        # The recording's event arrives a little late; by then storage is down.
        stack.ctl("POST", "/__sim/faults", {"kind": "eventgrid", "match": "RecordingFileStatusUpdated",
                                            "action": "delay", "delay": 1.0})
        call = stack.place(**{"from": "+14255550304"})
        stack.wait_for(call["serverCallId"], "recording chunk 0 ready")
        storage.process.terminate()
        storage.process.wait(timeout=10)
        stack.wait_for(call["serverCallId"], "RecordingFileStatusUpdated -> 500", timeout=30)
        azurite_tools.restart(storage)
        blobs = wait_blobs(storage, lambda bs: len(verified(bs)) == 4, timeout=40)
        assert any(b.name.endswith("chunk-000.wav") for b in blobs)
        assert "Event Grid will retry" in stack.timeline(call["serverCallId"])


def test_a_url_outside_the_allow_list_is_refused_and_never_fetched(storage):
    for stack in make_stack(storage, RECORDING_ALLOWED_HOSTS="*.asm.skype.com"):
        record_a_call(stack, "+14255550305")
        deadline = time.monotonic() + 15
        while "is not an allowed recording host" not in stack.app.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "'127.0.0.1' is not an allowed recording host" in stack.app.logs()
        assert all(d["downloads"] == 0 for d in source_documents(stack))
        assert not list(container(storage).list_blobs()) if _exists(storage) else True


def _exists(storage: Any) -> bool:
    return container(storage).exists()


def test_the_recording_is_deleted_from_acs_only_after_a_verified_copy(storage):
    for stack in make_stack(storage, RECORDING_DELETE_AFTER_COPY="true"):
        # Every download is cut: each copy attempt fails, Event Grid keeps redelivering, nothing may be deleted.
        stack.ctl("POST", "/__sim/faults", {"kind": "download", "cut_after_bytes": 10_000, "count": -1})
        call = record_a_call(stack, "+14255550306")
        deadline = time.monotonic() + 30
        while stack.timeline(call["serverCallId"]).count("RecordingFileStatusUpdated -> 500") < 2:
            assert time.monotonic() < deadline, stack.timeline(call["serverCallId"])
            time.sleep(0.1)
        assert all(not d["deleted"] for d in source_documents(stack))
        assert not verified(list(container(storage).list_blobs(include=["metadata"])))
        stack.ctl("DELETE", "/__sim/faults")  # the network heals: the next redelivery copies, verifies, deletes
        blobs = wait_blobs(storage, lambda bs: len(verified(bs)) == 4, timeout=40)
        chunk = next(b for b in blobs if b.name.endswith("chunk-000.wav"))
        deadline = time.monotonic() + 10
        while not all(d["deleted"] for d in source_documents(stack)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(d["deleted"] for d in source_documents(stack))
        chunk_props = container(storage).get_blob_client(chunk.name).get_blob_properties()
        assert chunk_props.metadata["deletedFromAcs"] == "true"
        text = control(stack.sim, "GET", f"/__sim/calls/{call['serverCallId']}/timeline?format=text")
        assert "deleted from the service" in text


def test_bring_your_own_storage_is_verified_indexed_and_split_in_place(storage):
    for stack in make_stack(storage, RECORDING_STORAGE="byos"):
        call = record_a_call(stack, "+14255550307")
        blobs = wait_blobs(storage, lambda bs: len(verified(bs)) == 4)
        text = stack.timeline(call["serverCallId"])
        assert "written into http://127.0.0.1" in text  # the service wrote the file into the QA container itself
        start = next(r for r in stack.requests(call["serverCallId"], "StartRecording"))
        assert start["body"]["externalStorage"]["recordingStorageKind"] == "azureBlobStorage"
        assert start["body"]["externalStorage"]["recordingDestinationContainerUrl"].endswith("/qa-recordings")
        assert all(d["downloads"] == 0 for d in source_documents(stack))  # nothing fetched from ACS
        chunk = next(b for b in blobs if b.name.endswith(".wav") and "/participants/" not in b.name)
        assert chunk.tags["storage"] == "byos" and chunk.tags["channels"] == "3"
        data = container(storage).get_blob_client(chunk.name).download_blob().readall()
        assert hashlib.sha256(data).hexdigest() == chunk.metadata["sha256"]
        assert len([b for b in blobs if "/participants/" in b.name]) == 3
