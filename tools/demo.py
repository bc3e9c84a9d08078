"""``make demo``: scripted calls through the simulator against a receiver, timelines printed.

Starts the example receiver and ``python -m simulator --scenario scenarios/demo.yaml`` on free
loopback ports, waits for the scenario to finish, and stops both.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listened on port {port} within {timeout}s")


def main() -> int:
    from simulator.runner import new_access_key

    scenario = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "scenarios" / "demo.yaml")
    sim_port, rx_port, key = free_port(), free_port(), new_access_key()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.example_receiver",
            "--port",
            str(rx_port),
            "--acs-endpoint",
            f"http://127.0.0.1:{sim_port}",
            "--acs-key",
            key,
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_until_listening(rx_port)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulator",
                "--port",
                str(sim_port),
                "--access-key",
                key,
                "--eventgrid-target",
                f"http://127.0.0.1:{rx_port}/eventgrid",
                "--scenario",
                scenario,
                "--exit-when-done",
                "--timeout",
                "60",
            ],
            cwd=ROOT,
            env=env,
            timeout=120,
        )
        return result.returncode
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    urllib.request.getproxies = dict  # loopback only: never go through a proxy from the environment
    sys.exit(main())
