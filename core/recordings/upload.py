"""Writing a stream into a block blob: blocks staged in parallel as they fill, visible only once committed.

Staging blocks while the recording arrives keeps memory bounded whatever its size, the service checks each
block's MD5, and a copy that dies midway leaves no blob that looks complete.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

BLOCK_SIZE = 4 * 1024 * 1024
MAX_BLOCKS_IN_FLIGHT = 6  # across all outputs of one copy: bounds memory (x BLOCK_SIZE) and sets parallelism


def _block_id(index: int) -> str:
    """Block ids of one blob must all have the same length: a fixed-width counter, base64 as the service wants."""
    return base64.b64encode(f"block-{index:08d}".encode()).decode()


class BlockUploader:
    """A write-only stream into a block blob; nothing is visible until ``commit``.

    Blocks are staged as they fill (several in parallel, each with its MD5 checked by the service). ``gate``
    bounds the blocks in flight across every uploader sharing it: that, and one partly filled block per
    uploader, is all the memory a copy holds, whatever the recording's size.
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
        """Stage what is left, wait for every block, then make the blob visible with its metadata and tags."""
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
