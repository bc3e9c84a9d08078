"""A scripted IVR scenario runs from IncomingCall to CallDisconnected, through the CLI."""

import re
import subprocess
import sys
import time
from pathlib import Path

from simulator.runner import new_access_key
from tools.demo import free_port, wait_until_listening

ROOT = Path(__file__).resolve().parents[2]


def test_cli_plays_demo_scenario_against_receiver(tmp_path):
    sim_port, rx_port, key = free_port(), free_port(), new_access_key()
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
    )
    try:
        wait_until_listening(rx_port)
        started = time.monotonic()
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
                "scenarios/demo.yaml",
                "--exit-when-done",
                "--timeout",
                "30",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert time.monotonic() - started < 60
    assert "Event Grid subscription to" in out and "Succeeded" in out
    assert "5/5 scripted call(s) finished" in out
    blocks = {
        m.group(1): m.group(0) for m in re.finditer(r"Call \S+ \((.+?)\)\n.*?(?=\nCall |\n\d+/\d+ scripted)", out, re.S)
    }
    assert set(blocks) == {
        "caller picks sales by DTMF",
        "caller says support",
        "caller presses nothing and reaches the operator",
        "caller hangs up mid-menu",
        "agent declines the transfer",
    }
    for block in blocks.values():
        # Every call starts with IncomingCall over Event Grid and ends with the app's leg disconnected.
        assert "EG  -> app  IncomingCall -> 200" in block
        assert "ACS -> app  CallDisconnected -> 200" in block
    assert "4:+14255550001 presses 1" in blocks["caller picks sales by DTMF"]
    assert "CallTransferAccepted" in blocks["caller picks sales by DTMF"]
    assert "says 'I need support please'" in blocks["caller says support"]
    assert "transfer to 8:acs:support-agent" in blocks["caller says support"]
    assert blocks["caller presses nothing and reaches the operator"].count("RecognizeFailed -> 200") == 3
    assert "transfer to 4:+14255550100" in blocks["caller presses nothing and reaches the operator"]
    assert "4:+14255550004 hangs up" in blocks["caller hangs up mid-menu"]
    assert "CallEnded -> 200" in blocks["caller hangs up mid-menu"]
    declined = blocks["agent declines the transfer"]
    assert "4:+14255550101 declines" in declined and "CallTransferFailed -> 200" in declined
    assert "TerminateCall -> 204" in declined
