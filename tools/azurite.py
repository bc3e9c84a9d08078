"""Azurite (the Azure Storage emulator) on free loopback ports, data in a temp folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tools.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
# Azurite's published development account; not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"Azurite did not listen on {port} within {timeout}s")


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen[bytes]
    location: Path
    options: tuple[str, ...] = ()  # more Azurite flags (e.g. --inMemoryPersistence), kept across a restart

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.location, ignore_errors=True)


def restart(azurite: Azurite, *, down_for: float = 0.0, timeout: float = 30.0) -> None:
    """Stop Azurite and start it again on the same ports and data (a storage outage, then recovery)."""
    import time

    if azurite.process.poll() is None:
        azurite.process.terminate()
        azurite.process.wait(timeout=10)
    time.sleep(down_for)
    azurite.process = _spawn(
        azurite.location, azurite.blob_port, azurite.queue_port, azurite.table_port, azurite.options
    )
    for port in (azurite.blob_port, azurite.queue_port, azurite.table_port):
        _wait(port, azurite.process, timeout)


def binary() -> Path:
    path = ROOT / "node_modules" / ".bin" / "azurite"
    if not path.exists():
        raise RuntimeError("Azurite is not installed: run `make setup` (npm ci)")
    return path


def _spawn(
    location: Path, blob: int, queue: int, table: int, options: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(binary()),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            # Azurite refuses a data folder with --inMemoryPersistence (nothing is written to it then).
            *(() if "--inMemoryPersistence" in options else ("--location", str(location))),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(blob),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(queue),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(table),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start(
    timeout: float = 30.0, options: tuple[str, ...] = (), ports: tuple[int, int, int] | None = None
) -> Azurite:
    """Azurite on free loopback ports (or ``ports``: blob, queue, table), its data in a new temp folder;
    ``options``: more Azurite flags."""
    location = Path(tempfile.mkdtemp(prefix="azurite-"))
    blob, queue, table = ports or (_free_port(), _free_port(), _free_port())
    azurite = Azurite(blob, queue, table, _spawn(location, blob, queue, table, options), location, options)
    try:
        for port in (blob, queue, table):
            _wait(port, azurite.process, timeout)
    except Exception:
        azurite.stop()
        raise
    return azurite
