"""One measured transfer, in a process of its own so its peak memory is its own.

    python -m bench.copy_worker MODE EVENT_JSON ENDPOINT ACCESS_KEY STORAGE_CONNECTION

MODE: handler (the app's real copy: streamed, hashed, block MD5s, verified, split per participant),
passthrough (the same bytes streamed from ACS into a block blob with nothing else done: the transport's
limit for this path), naive (what public samples do: download the whole recording into memory, then
upload it), raw (download only, bytes discarded: the source's limit).
Prints one JSON line: seconds, bytes, peak RSS in MiB.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import uuid

import requests


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    mode, event_json, endpoint, key, storage = sys.argv[1:6]
    event = json.loads(event_json)
    from core.calls.events import RecordingFileStatus
    from core.recordings.auth import RecordingAuth
    from core.recordings.copier import RecordingCopier
    from core.recordings.urls import HostAllowList

    status = RecordingFileStatus.parse(event["id"], event["subject"], event["data"])
    chunk = status.chunks[0]
    auth = RecordingAuth(endpoint, key)
    session = requests.Session()
    session.trust_env = False
    baseline_rss = peak_rss_mib()
    started = time.perf_counter()
    copied = 0
    written = None
    if mode == "raw":
        with session.get(chunk.content_location, headers=auth.headers("GET", chunk.content_location), stream=True,
                         timeout=60) as response:
            for block in response.iter_content(1024 * 1024):
                copied += len(block)
    elif mode == "passthrough":
        import base64
        from concurrent.futures import ThreadPoolExecutor

        from azure.storage.blob import BlobBlock, BlobServiceClient

        container = BlobServiceClient.from_connection_string(storage).get_container_client("bench-passthrough")
        if not container.exists():
            container.create_container()
        blob = container.get_blob_client(f"pass-{uuid.uuid4().hex}.wav")
        ids, futures, buffer = [], [], b""
        with ThreadPoolExecutor(6) as pool, session.get(chunk.content_location, stream=True, timeout=60,
                                                        headers=auth.headers("GET", chunk.content_location)) as r:
            for piece in r.iter_content(1024 * 1024):
                buffer += piece
                copied += len(piece)
                if len(buffer) >= 4 * 1024 * 1024:
                    ids.append(base64.b64encode(f"{len(ids):08d}".encode()).decode())
                    futures.append(pool.submit(blob.stage_block, ids[-1], buffer))
                    buffer = b""
                    while len([f for f in futures if not f.done()]) >= 6:
                        time.sleep(0.001)
            if buffer:
                ids.append(base64.b64encode(f"{len(ids):08d}".encode()).decode())
                futures.append(pool.submit(blob.stage_block, ids[-1], buffer))
            for f in futures:
                f.result()
        blob.commit_block_list([BlobBlock(i) for i in ids])
    elif mode == "naive":
        from azure.storage.blob import BlobServiceClient

        data = session.get(chunk.content_location, headers=auth.headers("GET", chunk.content_location),
                           timeout=600).content
        copied = len(data)
        container = BlobServiceClient.from_connection_string(storage).get_container_client("bench-naive")
        if not container.exists():
            container.create_container()
        container.upload_blob(f"naive-{uuid.uuid4().hex}.wav", data, overwrite=True)
    else:  # handler, handler-nosplit
        from azure.storage.blob import BlobServiceClient

        from core.recordings.copier import CallInfo

        container = BlobServiceClient.from_connection_string(storage).get_container_client("bench-handler")
        copier = RecordingCopier(container=container, session=session, auth=auth,
                                 allow=HostAllowList(["127.0.0.1"]), split=mode == "handler")
        result = copier.copy_chunk(chunk, CallInfo(server_call_id=f"bench-{uuid.uuid4().hex}"),
                                   start_time=status.start_time, channel_type=status.channel_type,
                                   format_type=status.format_type, duration_ms=status.duration_ms)
        copied = result.size
        written = copied * (2 if result.participants else 1)  # the split writes every byte once more
    seconds = time.perf_counter() - started
    print(json.dumps({"mode": mode, "seconds": seconds, "bytes": copied, "written": written or copied,
                      "peak_rss_mib": peak_rss_mib(),
                      "rss_before_mib": baseline_rss}))


if __name__ == "__main__":
    main()
